//! Writes the committed seed corpus, `fuzz/seeds/<target>/`: valid
//! requests of every kind encoded from the protos, real tokens signed with
//! the fuzz key, grants, HTTP requests and the example configurations, each
//! in its target's input format (see the targets' docs). Run by
//! `make fuzz-seeds`; the fuzzers mutate from there.

use std::path::Path;

use fastchat_auth::{Grant, MintClaims, Operation, mint_hs256_at};
use fastchat_fuzz::{AUDIENCE, HMAC_KEY, ISSUER, join, now};
use fastchat_proto::{prost_types::Timestamp, seed, v1};
use prost::Message;

fn write(target: &str, name: &str, data: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target);
    std::fs::create_dir_all(&dir).expect("seeds directory");
    std::fs::write(dir.join(name), data).expect("seed written");
}

fn rpc(name: &str, selector: u8, message: &impl Message) {
    let mut data = vec![selector];
    data.extend(message.encode_to_vec());
    write("rpc_request", name, &data);
}

fn stored() -> v1::ChatMessage {
    v1::ChatMessage {
        id: "0190a5d2-7b1c-7000-8000-000000000001".into(),
        room: "team-a".into(),
        author: "ann".into(),
        text: "hello\nworld".into(),
        sent_at: Some(Timestamp {
            seconds: 1_796_083_200,
            nanos: 5_000_000,
        }),
        client_time_ms: 1_796_083_199_000,
        sequence: 0,
        author_verified: true,
    }
}

fn token(rooms: Vec<Grant>) -> String {
    let claims = MintClaims {
        rooms,
        issuer: Some(ISSUER.into()),
        audience: Some(AUDIENCE.into()),
        ..MintClaims::new("ann", std::time::Duration::from_secs(3600))
    };
    mint_hs256_at(HMAC_KEY, &claims, now()).expect("a token")
}

fn without_comments(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/config")
        .join(file);
    std::fs::read_to_string(path)
        .expect("example configuration")
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .map(|l| format!("{l}\n"))
        .collect()
}

fn main() {
    use v1::subscribe_request::Start;
    // rpc_request: selector % 5 picks the request.
    rpc(
        "seed-send",
        0,
        &seed::ChatMessage {
            author: "ann".into(),
            text: "hello".into(),
            time: 1_700_000_000_000,
        },
    );
    rpc(
        "seed-send-unicode",
        0,
        &seed::ChatMessage {
            author: "Zoë 🎉".into(),
            text: "👨\u{200D}👩\u{200D}👧 مرحبا \u{200F}!".into(),
            time: 0,
        },
    );
    rpc("seed-all", 1, &seed::Empty {});
    rpc(
        "send",
        2,
        &v1::SendMessageRequest {
            room: "team-a".into(),
            author: "ann".into(),
            text: "hi\r\nthere cafe\u{301}".into(),
            client_message_id: "k1".into(),
            client_time_ms: 5,
        },
    );
    rpc(
        "send-emoji-author",
        2,
        &v1::SendMessageRequest {
            room: String::new(),
            author: "👩🏽\u{200D}💻 فاطمه\u{200C}زهرا".into(),
            text: "🏴\u{E0067}\u{E0062}\u{E0077}\u{E006C}\u{E0073}\u{E007F}".into(),
            client_message_id: String::new(),
            client_time_ms: 0,
        },
    );
    for (name, room, rooms, start) in [
        (
            "subscribe-after",
            "general",
            vec![],
            Some(Start::AfterSequence(41)),
        ),
        (
            "subscribe-since",
            "",
            vec!["a".to_owned(), "b-2".to_owned()],
            Some(Start::Since(Timestamp {
                seconds: 1_796_083_200,
                nanos: 0,
            })),
        ),
        (
            "subscribe-last",
            "team-a",
            vec!["general".into()],
            Some(Start::Last(10)),
        ),
        ("subscribe-new", "", vec![], Some(Start::NewOnly(true))),
    ] {
        rpc(
            name,
            3,
            &v1::SubscribeRequest {
                room: room.into(),
                start,
                rooms,
            },
        );
    }
    rpc(
        "list",
        4,
        &v1::ListMessagesRequest {
            room: "general".into(),
            before_sequence: 100,
            limit: 20,
        },
    );

    // wire_decode: sequence, subject length, subject, payload.
    for (name, message) in [
        ("message", stored()),
        (
            "message-unverified",
            v1::ChatMessage {
                author_verified: false,
                sent_at: None,
                client_time_ms: 0,
                ..stored()
            },
        ),
    ] {
        let out = fastchat_wire::encode(&message, None);
        let mut data = 42u64.to_le_bytes().to_vec();
        data.push(u8::try_from(out.subject.len()).expect("short subject"));
        data.extend(out.subject.as_bytes());
        data.extend(out.payload.as_ref());
        write("wire_decode", name, &data);
    }

    // jwt: bit 0 clear = a header value; set = header, claims, room, grants.
    let grants = vec![
        Grant::new(["secret"], []).expect("grant"),
        Grant::new(["team-*", "general"], [Operation::Read, Operation::Write]).expect("grant"),
    ];
    let bearer = format!("Bearer {}", token(grants));
    write("jwt", "header", &join(0, &[bearer.as_bytes(), b"team-a"]));
    write(
        "jwt",
        "header-no-grants",
        &join(
            8,
            &[
                format!("bearer {}", token(Vec::new())).as_bytes(),
                b"general",
            ],
        ),
    );
    let claims = serde_json::json!({
        "sub": "ann",
        "iss": ISSUER,
        "aud": [AUDIENCE, "other"],
        "exp": 1_796_086_800,
        "nbf": 1_796_083_100,
        "iat": 1_796_083_200,
        "rooms": [{"rooms": ["secret"], "allow": []}, {"rooms": ["team-*"], "allow": ["read", "write"]}],
    });
    for (name, selector, header) in [
        ("signed-hs256", 1, r#"{"alg":"HS256","typ":"JWT"}"#),
        ("signed-hs384", 3 | 8, r#"{"alg":"HS384"}"#),
        (
            "signed-hs512",
            5,
            r#"{"typ":"JWT","alg":"HS512","kid":"k1"}"#,
        ),
    ] {
        write(
            "jwt",
            name,
            &join(
                selector,
                &[
                    header.as_bytes(),
                    claims.to_string().as_bytes(),
                    b"team-a",
                    b"general=read,write;*=read",
                ],
            ),
        );
    }

    // grants: bit 0 = write; grants, room, pattern.
    for (name, selector, parts) in [
        (
            "teams",
            0u8,
            ["general,team-*=read,write;*=read", "team-a", "team-*"],
        ),
        ("deny-first", 1, ["secret=;*=read,write", "secret", "*"]),
        ("globs", 1, [" a*b*c = write ; *-x = ", "a-b-c-x", "*a**b*"]),
    ] {
        let parts: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
        write("grants", name, &join(selector, &parts));
    }

    // http_json: selector % 6 picks the route.
    let send_body = br#"{"text": "hi", "client_message_id": "k1", "clientTimeMs": "5"}"#;
    write("http_json", "send", &join(0, &[b"team-a", send_body]));
    write(
        "http_json",
        "send-anonymous",
        &join(
            0,
            &[
                b"general",
                br#"{"author":"ann","text":"hello\r\nthere","clientMessageId":"x"}"#,
            ],
        ),
    );
    write(
        "http_json",
        "seed-send",
        &join(
            1,
            &[br#"{"author": "ann", "text": "hello", "time": "1700000000000"}"#],
        ),
    );
    for (name, selector, parts) in [
        (
            "room-events",
            2u8,
            vec!["team-a", "last=5&access_token=abc.def.ghi", ""],
        ),
        (
            "room-events-resume",
            2,
            vec!["general", "new_only=true", "42"],
        ),
        (
            "events-since",
            3,
            vec!["rooms=a,b&since=2026-12-01T10:00:00Z", ""],
        ),
        ("events-after", 3, vec!["after_sequence=10", " 7 "]),
        ("list", 4, vec!["general", "before_sequence=100&limit=20"]),
        (
            "traceparent",
            5,
            vec!["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"],
        ),
        (
            "traceparent-v1",
            5,
            vec!["01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-extra"],
        ),
    ] {
        let parts: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
        write("http_json", name, &join(selector, &parts));
    }

    // config: bit 0 = all-messages-service; TOML, then NAME=value lines.
    let env = "FASTCHAT_AUTH__MODE=none\nFASTCHAT_GRPC__LISTEN=127.0.0.1:6000\nNATS_URL=nats://127.0.0.1:4333\nFASTCHAT_SEND__MAX_TEXT_BYTES=2048\n";
    for (name, selector, file) in [
        ("send-service", 0u8, "send-service.example.toml"),
        (
            "all-messages-service",
            1,
            "all-messages-service.example.toml",
        ),
    ] {
        let toml = without_comments(file);
        write(
            "config",
            name,
            &join(selector, &[toml.as_bytes(), env.as_bytes()]),
        );
    }
    write(
        "config",
        "grants",
        &join(
            0,
            &[
                b"[auth]\nmode = \"none\"\nanonymous = [{ rooms = [\"lobby\"], allow = [\"read\"] }]\n[send]\ntimeout = \"2s\"\n",
                b"FASTCHAT_LIMITS__SEND_PER_SECOND=5\n",
            ],
        ),
    );
}
