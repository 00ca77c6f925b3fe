//! The HTTP/JSON and Server-Sent Events API with a real HTTP/1.1 client
//! (ureq, as curl would): every route, its errors as HTTP statuses with the
//! same reasons, SSE resume with Last-Event-ID, the seed's `POST /client`.

use std::{
    io::{BufRead as _, BufReader},
    net::SocketAddr,
    time::Duration,
};

use fastchat_auth::{MintClaims, mint_hs256, parse_grants};
use fastchat_e2e::*;
use serde_json::{Value, json};

const SECRET: &[u8] = b"a development secret of at least thirty-two bytes!!";

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .max_idle_connections(0)
        .build()
        .new_agent()
}

fn token(sub: &str, rooms: &str) -> String {
    let mut claims = MintClaims::new(sub, Duration::from_secs(600));
    claims.rooms = parse_grants(rooms).expect("grants");
    mint_hs256(SECRET, &claims).expect("mint")
}

/// Both services checking tokens, anonymous callers allowed to read and
/// write `lobby`; each with a short heartbeat.
async fn start_with_auth(nats: &NatsServer, dir: &tempfile::TempDir) -> (Service, Service) {
    let secret = dir.path().join("hmac");
    std::fs::write(&secret, SECRET).expect("write secret");
    let mut auth = fastchat_auth::AuthConfig::default();
    auth.jwt.hmac_secret_file = Some(secret);
    auth.anonymous = parse_grants("lobby=read,write").expect("grants");
    let mut send = send_config(&nats.url());
    send.auth = auth.clone();
    let mut all = all_config(&nats.url());
    all.auth = auth;
    all.subscriptions.heartbeat_interval = Duration::from_millis(500);
    (start_send(send).await, start_all(all).await)
}

/// A POST with a JSON body: status, Retry-After, body.
fn post(
    addr: SocketAddr,
    path: &str,
    body: &Value,
    token: Option<&str>,
) -> (u16, Option<String>, Value) {
    let mut request = agent()
        .post(format!("http://{addr}{path}"))
        .header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let mut response = request
        .send(body.to_string().as_bytes())
        .expect("an HTTP answer");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = response.body_mut().read_to_string().expect("a body");
    (
        status,
        retry_after,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = agent().get(format!("http://{addr}{path}"));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let mut response = request.call().expect("an HTTP answer");
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().expect("a body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// One Server-Sent Event (or a comment, as `event` "comment").
#[derive(Debug, Clone, PartialEq)]
struct Sse {
    id: Option<String>,
    event: String,
    data: String,
}

/// Opens an event stream and reads events until `done` says so (or fails
/// after the agent's timeout).
fn events(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    done: impl Fn(&[Sse]) -> bool,
) -> (u16, String, Vec<Sse>) {
    let mut request = agent().get(format!("http://{addr}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.call().expect("an HTTP answer");
    let status = response.status().as_u16();
    let kind = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if status != 200 {
        return (status, kind, Vec::new());
    }
    let mut reader = BufReader::new(response.into_body().into_reader());
    let mut got = Vec::new();
    let mut current = Sse {
        id: None,
        event: "message".into(),
        data: String::new(),
    };
    let mut line = String::new();
    while !done(&got) {
        line.clear();
        if reader.read_line(&mut line).expect("a line") == 0 {
            break;
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            if !current.data.is_empty() {
                got.push(current.clone());
            }
            current = Sse {
                id: None,
                event: "message".into(),
                data: String::new(),
            };
        } else if let Some(comment) = line.strip_prefix(':') {
            got.push(Sse {
                id: None,
                event: "comment".into(),
                data: comment.trim().to_owned(),
            });
        } else if let Some((field, value)) = line.split_once(':') {
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => current.id = Some(value.to_owned()),
                "event" => value.clone_into(&mut current.event),
                "data" => current.data.push_str(value),
                _ => {}
            }
        }
    }
    (status, kind, got)
}

fn messages(events: &[Sse]) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|e| e.event == "message")
        .map(|e| {
            let data: Value = serde_json::from_str(&e.data).expect("JSON data");
            (
                e.id.clone().unwrap_or_default(),
                data["text"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work).await.expect("no panic")
}

#[tokio::test]
async fn json_routes_send_page_and_refuse_with_http_statuses() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let (send, all) = start_with_auth(&nats, &dir).await;
    let (send_addr, all_addr) = (send.addr, all.addr);
    blocking(move || {
        let alice = token("alice", "team=read,write");
        // Send: the author is the token's identity.
        let (status, _, body) = post(
            send_addr,
            "/v1/rooms/team/messages",
            &json!({"text": "hello", "client_message_id": "k1", "client_time_ms": 1700000000000_i64}),
            Some(&alice),
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["message"]["author"], "alice");
        assert_eq!(body["message"]["authorVerified"], true);
        assert_eq!(body["message"]["room"], "team");
        assert_eq!(body["message"]["sequence"], "1", "uint64 as a string");
        assert_eq!(body["message"]["clientTimeMs"], "1700000000000");
        assert_eq!(body["duplicate"], false);
        // A retry with the same key is stored once.
        let (_, _, again) = post(
            send_addr,
            "/v1/rooms/team/messages",
            &json!({"text": "hello", "client_message_id": "k1"}),
            Some(&alice),
        );
        assert_eq!(again["duplicate"], true);
        assert_eq!(again["message"]["sequence"], "1");
        for i in 2..=4 {
            post(send_addr, "/v1/rooms/team/messages", &json!({"text": format!("m{i}")}), Some(&alice));
        }

        // History pages.
        let (status, page) = get(all_addr, "/v1/rooms/team/messages?limit=2", Some(&alice));
        assert_eq!(status, 200, "{page}");
        let texts: Vec<&str> = page["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .filter_map(|m| m["text"].as_str())
            .collect();
        assert_eq!(texts, ["m3", "m4"]);
        assert_eq!(page["nextBeforeSequence"], "3");
        let (_, older) = get(all_addr, "/v1/rooms/team/messages?before_sequence=3&limit=10", Some(&alice));
        assert_eq!(older["messages"].as_array().map(Vec::len), Some(2));
        assert_eq!(older["nextBeforeSequence"], "0");

        // Errors: HTTP status, the gRPC code's name, the same reasons.
        let cases = [
            (post(send_addr, "/v1/rooms/team/messages", &json!({"text": "x"}), None), 401, "TOKEN_MISSING"),
            (post(send_addr, "/v1/rooms/team/messages", &json!({"text": "x"}), Some("not.a.token")), 401, "TOKEN_INVALID"),
            (post(send_addr, "/v1/rooms/other/messages", &json!({"text": "x"}), Some(&alice)), 403, "ROOM_FORBIDDEN"),
            (post(send_addr, "/v1/rooms/team/messages", &json!({"text": "x", "author": "bob"}), Some(&alice)), 403, "AUTHOR_MISMATCH"),
            (post(send_addr, "/v1/rooms/team/messages", &json!({"text": ""}), Some(&alice)), 400, "INVALID_FIELD"),
            (post(send_addr, "/v1/rooms/team/messages", &json!({"txt": "typo"}), Some(&alice)), 400, "INVALID_FIELD"),
        ];
        for ((status, _, body), want_status, want_reason) in cases {
            assert_eq!(status, want_status, "{body}");
            assert_eq!(body["reason"], want_reason, "{body}");
            assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
            assert!(body["code"].is_string() && body["details"].is_array(), "{body}");
        }
        let (status, body) = get(all_addr, "/v1/rooms/team/messages", None);
        assert_eq!((status, body["reason"].as_str()), (401, Some("TOKEN_MISSING")));
        let (status, body) = get(all_addr, "/v1/rooms/team/messages", Some(&token("bob", "lobby=read")));
        assert_eq!((status, body["reason"].as_str()), (403, Some("ROOM_FORBIDDEN")));
        let (status, _, body) = post(send_addr, "/v1/rooms/team/messages", &json!({"text": "x"}), Some(&alice));
        assert_eq!(status, 200, "{body}");
    })
    .await;
}

#[tokio::test]
async fn rate_limits_say_when_to_retry() {
    let nats = NatsServer::start();
    let mut config = send_config(&nats.url());
    config.limits.send_per_second = 1;
    config.limits.send_burst = 1;
    let send = start_send(config).await;
    let addr = send.addr;
    blocking(move || {
        let body = json!({"author": "ann", "text": "hi"});
        let (first, _, _) = post(addr, "/v1/rooms/general/messages", &body, None);
        assert_eq!(first, 200);
        let (status, retry_after, refused) = post(addr, "/v1/rooms/general/messages", &body, None);
        assert_eq!(status, 429, "{refused}");
        assert_eq!(refused["reason"], "RATE_LIMITED");
        assert_eq!(
            retry_after.as_deref(),
            Some("1"),
            "whole seconds, rounded up"
        );
        let delay = refused["details"]
            .as_array()
            .and_then(|d| {
                d.iter()
                    .find(|d| d["@type"] == "type.googleapis.com/google.rpc.RetryInfo")
            })
            .map(|d| d["retryDelay"].clone());
        assert!(
            delay.is_some_and(|d| d.as_str().is_some_and(|s| s.ends_with('s'))),
            "{refused}"
        );
    })
    .await;
}

#[tokio::test]
async fn the_seed_test_route_takes_the_seed_body() {
    let nats = NatsServer::start();
    let send = start_send(send_config(&nats.url())).await;
    let all = start_all(all_config(&nats.url())).await;
    let addr = send.addr;
    let (status, _, body) = blocking(move || {
        post(
            addr,
            "/client",
            &json!({"author": "ann", "text": "from curl", "time": 1700000000000_i64}),
            None,
        )
    })
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"status": true, "message": "Acknowledged"}));
    let mut reader = v1_all(&all).await;
    let page = reader
        .list_messages(fastchat_proto::v1::ListMessagesRequest {
            room: "general".into(),
            before_sequence: 0,
            limit: 10,
        })
        .await
        .expect("list")
        .into_inner();
    let stored = &page.messages[0];
    assert_eq!(
        (
            stored.author.as_str(),
            stored.text.as_str(),
            stored.client_time_ms
        ),
        ("ann", "from curl", 1_700_000_000_000)
    );
    let (status, _, body) = blocking(move || {
        post(
            addr,
            "/client",
            &json!({"author": "ann", "text": "", "time": 0}),
            None,
        )
    })
    .await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (400, Some("INVALID_FIELD")),
        "{body}"
    );
}

#[tokio::test]
async fn event_streams_resume_exactly_after_last_event_id() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let (send, all) = start_with_auth(&nats, &dir).await;
    let (send_addr, all_addr) = (send.addr, all.addr);
    blocking(move || {
        let ann = token("ann", "a,b=read,write");
        for (room, text) in [
            ("a", "a1"),
            ("b", "b2"),
            ("lobby", "l3"),
            ("a", "a4"),
            ("b", "b5"),
        ] {
            let path = format!("/v1/rooms/{room}/messages");
            // The lobby is written anonymously (a token gets only its grants).
            let (status, _, body) = if room == "lobby" {
                post(
                    send_addr,
                    &path,
                    &json!({"text": text, "author": "guest"}),
                    None,
                )
            } else {
                post(send_addr, &path, &json!({"text": text}), Some(&ann))
            };
            assert_eq!(status, 200, "{body}");
        }
        let bearer = format!("Bearer {ann}");
        let auth = [("authorization", bearer.as_str())];

        // One room: history, caught_up with the position, then heartbeats.
        let (status, kind, got) = events(all_addr, "/v1/rooms/a/events", &auth, |got| {
            got.iter().any(|e| e.event == "comment")
        });
        assert_eq!(status, 200);
        assert!(kind.starts_with("text/event-stream"), "{kind}");
        assert_eq!(
            messages(&got),
            [("1".into(), "a1".into()), ("4".into(), "a4".into())]
        );
        let caught_up = got
            .iter()
            .find(|e| e.event == "caught_up")
            .expect("caught_up");
        assert_eq!(
            caught_up.id.as_deref(),
            Some("5"),
            "the position counts other rooms"
        );
        let heartbeat = got
            .iter()
            .find(|e| e.event == "comment")
            .expect("a heartbeat");
        assert!(heartbeat.data.starts_with("heartbeat"), "{heartbeat:?}");

        // Several rooms, resumed with Last-Event-ID: exactly what follows.
        let after_two = [("authorization", bearer.as_str()), ("last-event-id", "2")];
        let (_, _, got) = events(all_addr, "/v1/events?rooms=a,b", &after_two, |got| {
            got.iter().any(|e| e.event == "caught_up")
        });
        assert_eq!(
            messages(&got),
            [("4".into(), "a4".into()), ("5".into(), "b5".into())]
        );
        // ?after_sequence= does the same; `last` and `since` as in the proto.
        let (_, _, got) = events(
            all_addr,
            "/v1/events?rooms=a,b&after_sequence=4",
            &auth,
            |got| got.iter().any(|e| e.event == "caught_up"),
        );
        assert_eq!(messages(&got), [("5".into(), "b5".into())]);
        let (_, _, got) = events(all_addr, "/v1/events?rooms=a,b&last=1", &auth, |got| {
            got.iter().any(|e| e.event == "caught_up")
        });
        assert_eq!(
            messages(&got),
            [("4".into(), "a4".into()), ("5".into(), "b5".into())]
        );
        let (_, _, got) = events(
            all_addr,
            "/v1/events?rooms=b&since=2000-01-01T00:00:00Z",
            &auth,
            |got| got.iter().any(|e| e.event == "caught_up"),
        );
        assert_eq!(messages(&got).len(), 2);

        // EventSource cannot send headers: the token as ?access_token=.
        let path = format!("/v1/rooms/b/events?access_token={ann}");
        let (status, _, got) = events(all_addr, &path, &[], |got| {
            got.iter().any(|e| e.event == "caught_up")
        });
        assert_eq!(status, 200);
        assert_eq!(messages(&got).len(), 2);

        // Anonymous callers get their grants; every room needs `*`.
        let (status, _, got) = events(all_addr, "/v1/rooms/lobby/events", &[], |got| {
            got.iter().any(|e| e.event == "caught_up")
        });
        assert_eq!(status, 200);
        assert_eq!(messages(&got), [("3".into(), "l3".into())]);
        let (status, body) = get(all_addr, "/v1/events", None);
        assert_eq!(
            (status, body["reason"].as_str()),
            (401, Some("TOKEN_MISSING"))
        );
        let (status, body) = get(all_addr, "/v1/events", Some(&ann));
        assert_eq!(
            (status, body["reason"].as_str()),
            (403, Some("ROOM_FORBIDDEN")),
            "every room needs a * grant"
        );
        let (status, body) = get(all_addr, "/v1/rooms/a/events", None);
        assert_eq!(
            (status, body["reason"].as_str()),
            (401, Some("TOKEN_MISSING"))
        );
        let (status, body) = get(all_addr, "/v1/events?rooms=a&since=yesterday", Some(&ann));
        assert_eq!(status, 400, "{body}");
    })
    .await;

    // Live: a new message arrives on an open stream with its id.
    let reader = tokio::task::spawn_blocking(move || {
        let ann = token("ann", "a,b=read,write");
        let bearer = format!("Bearer {ann}");
        events(
            all_addr,
            "/v1/rooms/a/events?new_only=true",
            &[("authorization", &bearer)],
            |got| got.iter().any(|e| e.event == "message"),
        )
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut sender = v1_send(&send).await;
    let mut request = tonic::Request::new(message("a", "", "live"));
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", token("ann", "a=write"))
            .parse()
            .expect("ascii"),
    );
    sender.send_message(request).await.expect("send");
    let (_, _, got) = reader.await.expect("no panic");
    assert_eq!(messages(&got), [("6".into(), "live".into())]);
}
