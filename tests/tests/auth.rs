//! Identity and access on the real services, both APIs, real tokens over
//! real sockets: the token matrix, room grants, authors bound to identity,
//! anonymous grants, a stream ended by its token's expiry, per-identity
//! limits, JWKS rotation while running.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::Engine as _;
use fastchat_auth::{AuthConfig, Grant, MintClaims, Mode, mint_hs256, parse_grants};
use fastchat_e2e::*;
use fastchat_proto::{seed, v1};
use tonic::{Code, Status};
use tonic_types::StatusExt as _;
use v1::subscribe_request::Start;

const SECRET: &[u8] = b"a development secret of at least thirty-two bytes!!";

/// A temporary directory with the HMAC secret file.
struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        // With a trailing newline, as `echo … > file` writes it.
        let mut secret = SECRET.to_vec();
        secret.push(b'\n');
        std::fs::write(dir.path().join("hmac"), secret).expect("write secret");
        Self { dir }
    }

    fn hmac(&self) -> PathBuf {
        self.dir.path().join("hmac")
    }

    fn jwks(&self) -> PathBuf {
        self.dir.path().join("jwks.json")
    }
}

fn grants(text: &str) -> Vec<Grant> {
    parse_grants(text).expect("grants")
}

/// An auth configuration with the HMAC key of `keys`.
fn jwt(keys: &Keys) -> AuthConfig {
    let mut config = AuthConfig::default();
    config.jwt.hmac_secret_file = Some(keys.hmac());
    config
}

fn token(sub: &str, rooms: &str, ttl: Duration) -> String {
    let mut claims = MintClaims::new(sub, ttl);
    claims.rooms = grants(rooms);
    mint_hs256(SECRET, &claims).expect("mint")
}

fn with<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii"),
        );
    }
    request
}

fn reason(status: &Status) -> String {
    status
        .get_details_error_info()
        .map(|info| info.reason)
        .unwrap_or_default()
}

fn assert_refused(status: &Status, code: Code, want: &str, what: &str) {
    assert_eq!(status.code(), code, "{what}: {status:?}");
    assert_eq!(reason(status), want, "{what}: {status:?}");
}

/// Both services with `auth`, and clients of both APIs.
struct System {
    _nats: NatsServer,
    send: Service,
    all: Service,
}

impl System {
    async fn start(auth: AuthConfig) -> Self {
        Self::start_with(auth, fastchat_e2e::unlimited()).await
    }

    async fn start_with(auth: AuthConfig, limits: fastchat_runtime::config::LimitsConfig) -> Self {
        let nats = NatsServer::start();
        let mut config = send_config(&nats.url());
        config.auth = auth.clone();
        config.limits = limits.clone();
        let send = start_send(config).await;
        let mut config = all_config(&nats.url());
        config.auth = auth;
        config.limits = limits;
        let all = start_all(config).await;
        Self {
            _nats: nats,
            send,
            all,
        }
    }

    /// Every RPC of both APIs with `token`, each one's outcome.
    async fn every_rpc(&self, token: Option<&str>) -> Vec<(&'static str, Result<(), Status>)> {
        let mut out = Vec::new();
        let sent = v1_send(&self.send)
            .await
            .send_message(with(message("general", "", "hi"), token))
            .await
            .map(drop);
        out.push(("v1 SendMessage", sent));
        let sent = seed_send(&self.send)
            .await
            .send(with(
                seed::ChatMessage {
                    author: "ann".into(),
                    text: "hi".into(),
                    time: 0,
                },
                token,
            ))
            .await
            .map(drop);
        out.push(("seed send", sent));
        let listed = v1_all(&self.all)
            .await
            .list_messages(with(
                v1::ListMessagesRequest {
                    room: "general".into(),
                    before_sequence: 0,
                    limit: 5,
                },
                token,
            ))
            .await
            .map(drop);
        out.push(("v1 ListMessages", listed));
        let subscribed = first_event(
            v1_all(&self.all)
                .await
                .subscribe(with(
                    subscribe("general", Some(Start::NewOnly(true))),
                    token,
                ))
                .await,
        );
        out.push(("v1 Subscribe", subscribed));
        let all = seed_all(&self.all)
            .await
            .all(with(seed::Empty {}, token))
            .await
            .map(drop);
        out.push(("seed all", all));
        out
    }
}

/// The outcome of opening a stream: refused at once, or open.
fn first_event<T>(opened: Result<tonic::Response<T>, Status>) -> Result<(), Status> {
    opened.map(drop)
}

/// The whole token matrix, on every RPC of both APIs: each bad token is
/// UNAUTHENTICATED with its reason, never served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_of_both_apis_refuses_bad_tokens_with_their_reason() {
    let keys = Keys::new();
    let mut auth = jwt(&keys);
    auth.jwt.issuer = Some("https://id.example".into());
    auth.jwt.audience = Some("fastchat".into());
    auth.jwt.leeway = Duration::from_secs(0);
    let system = System::start(auth).await;
    let good = |sub: &str| {
        let mut claims = MintClaims::new(sub, Duration::from_secs(600));
        claims.rooms = grants("*=read,write");
        claims.issuer = Some("https://id.example".into());
        claims.audience = Some("fastchat".into());
        claims
    };
    let valid = mint_hs256(SECRET, &good("ann")).expect("mint");
    for (what, outcome) in system.every_rpc(Some(&valid)).await {
        outcome.unwrap_or_else(|s| panic!("{what} with a valid token: {s:?}"));
    }

    let b64 = |json: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let unsigned = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT"}"#),
        b64(&format!(
            r#"{{"sub":"ann","exp":{},"iss":"https://id.example","aud":"fastchat"}}"#,
            now + 600
        ))
    );
    let other_key =
        mint_hs256(b"another secret that is also long enough!", &good("ann")).expect("mint");
    let expired = {
        let mut claims = good("ann");
        claims.ttl = Duration::from_secs(1);
        let token = mint_hs256(SECRET, &claims).expect("mint");
        tokio::time::sleep(Duration::from_secs(3)).await;
        token
    };
    let wrong_issuer = {
        let mut claims = good("ann");
        claims.issuer = Some("https://evil.example".into());
        mint_hs256(SECRET, &claims).expect("mint")
    };
    let wrong_audience = {
        let mut claims = good("ann");
        claims.audience = Some("other".into());
        mint_hs256(SECRET, &claims).expect("mint")
    };
    let not_yet = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({
            "sub": "ann",
            "exp": now + 7200,
            "nbf": now + 3600,
            "iss": "https://id.example",
            "aud": "fastchat",
        }),
        &jsonwebtoken::EncodingKey::from_secret(SECRET).expect("key"),
    )
    .expect("sign");
    let cases: Vec<(&str, String, &str)> = vec![
        ("malformed", "not-a-jwt".into(), "TOKEN_INVALID"),
        ("bad signature", other_key, "TOKEN_INVALID"),
        ("alg none", unsigned, "TOKEN_INVALID"),
        ("expired", expired, "TOKEN_EXPIRED"),
        ("nbf in the future", not_yet, "TOKEN_EXPIRED"),
        ("wrong issuer", wrong_issuer, "TOKEN_INVALID"),
        ("wrong audience", wrong_audience, "TOKEN_INVALID"),
    ];
    for (case, token, want) in &cases {
        for (what, outcome) in system.every_rpc(Some(token)).await {
            let status = outcome.expect_err(&format!("{case} on {what}"));
            assert_refused(
                &status,
                Code::Unauthenticated,
                want,
                &format!("{case} on {what}"),
            );
            assert!(
                !status.message().contains(token.as_str()),
                "echoed the token"
            );
        }
    }
    // Without a token, and nothing granted anonymously.
    for (what, outcome) in system.every_rpc(None).await {
        let status = outcome.expect_err(what);
        assert_refused(&status, Code::Unauthenticated, "TOKEN_MISSING", what);
    }
}

/// An Ed25519 key as a JWK, and its signing key.
fn ed25519(kid: &str) -> (serde_json::Value, jsonwebtoken::EncodingKey) {
    use ed25519_dalek::pkcs8::EncodePrivateKey as _;
    let signing = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let public =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signing.verifying_key().as_bytes());
    let pem = signing
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .expect("pem");
    let key = jsonwebtoken::EncodingKey::from_ed_pem(pem.as_bytes()).expect("key");
    (
        serde_json::json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "alg": "EdDSA", "x": public}),
        key,
    )
}

fn eddsa_token(kid: &str, key: &jsonwebtoken::EncodingKey) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(kid.into());
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 600;
    let claims = serde_json::json!({
        "sub": "ann",
        "exp": exp,
        "rooms": [{"rooms": ["*"], "allow": ["read", "write"]}],
    });
    jsonwebtoken::encode(&header, &claims, key).expect("sign")
}

fn write_jwks(path: &Path, keys: &[&serde_json::Value]) {
    let set = serde_json::json!({ "keys": keys });
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, set.to_string()).expect("write");
    std::fs::rename(tmp, path).expect("rename");
}

/// A JWKS-only service: an HMAC token is refused (no HMAC key, so no
/// algorithm confusion), an unknown `kid` is refused, and a key added to
/// the file while the services run is accepted within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_keys_are_chosen_by_kid_and_rotate_without_a_restart() {
    let keys = Keys::new();
    let (first, first_key) = ed25519("k1");
    let (second, second_key) = ed25519("k2");
    write_jwks(&keys.jwks(), &[&first]);
    let mut auth = AuthConfig::default();
    auth.jwt.jwks_file = Some(keys.jwks());
    let system = System::start(auth).await;
    let mut client = v1_send(&system.send).await;
    let send = |token: String| {
        let mut client = client.clone();
        async move {
            client
                .send_message(with(message("general", "", "hi"), Some(&token)))
                .await
        }
    };
    send(eddsa_token("k1", &first_key))
        .await
        .expect("a JWKS token");
    let hmac = token("ann", "*=read,write", Duration::from_secs(600));
    assert_refused(
        &send(hmac).await.expect_err("HMAC on a JWKS-only service"),
        Code::Unauthenticated,
        "TOKEN_INVALID",
        "hmac",
    );
    assert_refused(
        &send(eddsa_token("k2", &second_key))
            .await
            .expect_err("unknown kid"),
        Code::Unauthenticated,
        "TOKEN_INVALID",
        "unknown kid",
    );
    write_jwks(&keys.jwks(), &[&first, &second]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match send(eddsa_token("k2", &second_key)).await {
            Ok(_) => break,
            Err(status) if tokio::time::Instant::now() < deadline => {
                assert_eq!(reason(&status), "TOKEN_INVALID");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(status) => panic!("the added key was never accepted: {status:?}"),
        }
    }
    client
        .send_message(with(
            message("general", "", "old key still fine"),
            Some(&eddsa_token("k1", &first_key)),
        ))
        .await
        .expect("the first key still works");
}

/// Room grants: exact, glob, `*`, the first matching grant decides, an
/// empty allow denies; reading every room needs `*`; config grants apply
/// after the token's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_grants_decide_who_reads_and_writes_where() {
    let keys = Keys::new();
    let mut auth = jwt(&keys);
    auth.authenticated = grants("lobby=read");
    let system = System::start(auth).await;
    let ann = token(
        "ann",
        "secret=;team-*=read,write;general=write;news=read",
        Duration::from_secs(600),
    );
    let sender = v1_send(&system.send).await;
    let mut reader = v1_all(&system.all).await;
    let send = |room: &str| {
        let mut sender = sender.clone();
        let request = with(message(room, "", "hi"), Some(&ann));
        async move { sender.send_message(request).await }
    };
    let list = |room: &str| {
        let mut reader = reader.clone();
        let request = with(
            v1::ListMessagesRequest {
                room: room.into(),
                before_sequence: 0,
                limit: 5,
            },
            Some(&ann),
        );
        async move { reader.list_messages(request).await }
    };
    send("team-a").await.expect("glob write");
    list("team-a").await.expect("glob read");
    send("general").await.expect("exact write");
    let status = list("general").await.expect_err("general is write-only");
    assert_refused(
        &status,
        Code::PermissionDenied,
        "ROOM_FORBIDDEN",
        "read general",
    );
    assert!(status.message().contains("general"), "{}", status.message());
    list("news").await.expect("exact read");
    let status = send("news").await.expect_err("news is read-only");
    assert_refused(
        &status,
        Code::PermissionDenied,
        "ROOM_FORBIDDEN",
        "write news",
    );
    for op in ["send", "list"] {
        let refused = if op == "send" {
            send("secret").await.map(drop)
        } else {
            list("secret").await.map(drop)
        };
        let status = refused.expect_err("an empty allow denies");
        assert_refused(&status, Code::PermissionDenied, "ROOM_FORBIDDEN", "secret");
    }
    list("lobby")
        .await
        .expect("auth.authenticated grants apply after the token's");
    let status = send("elsewhere").await.expect_err("no grant");
    assert_refused(
        &status,
        Code::PermissionDenied,
        "ROOM_FORBIDDEN",
        "elsewhere",
    );
    let status = reader
        .subscribe(with(subscribe("", None), Some(&ann)))
        .await
        .expect_err("every room needs a * grant");
    assert_refused(
        &status,
        Code::PermissionDenied,
        "ROOM_FORBIDDEN",
        "every room",
    );

    let everyone = token("bob", "*=read", Duration::from_secs(600));
    let mut stream = reader
        .subscribe(with(subscribe("", None), Some(&everyone)))
        .await
        .expect("a * read grant reads every room")
        .into_inner();
    let events = take(&mut stream, 2, Duration::from_secs(10)).await;
    assert_eq!(sequences(&events).len(), 2);
}

/// Authors are bound to the token's identity (and marked verified); a
/// different author is AUTHOR_MISMATCH; anonymous callers, where granted,
/// keep the author they give, unverified — the seed's own client works
/// unchanged with `auth.anonymous` granting write on general and read on
/// every room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authors_are_the_tokens_identity_and_anonymous_grants_serve_the_seed_client() {
    let keys = Keys::new();
    let mut auth = jwt(&keys);
    auth.anonymous = grants("general=read,write;*=read");
    let system = System::start(auth).await;
    let ann = token("ann", "*=read,write", Duration::from_secs(600));
    let mut sender = v1_send(&system.send).await;
    let stored = sender
        .send_message(with(message("general", "", "from ann"), Some(&ann)))
        .await
        .expect("send")
        .into_inner()
        .message
        .expect("message");
    assert_eq!(stored.author, "ann");
    assert!(stored.author_verified);
    sender
        .send_message(with(message("general", "ann", "same author"), Some(&ann)))
        .await
        .expect("the identity itself is fine");
    let status = sender
        .send_message(with(message("general", "bob", "spoofed"), Some(&ann)))
        .await
        .expect_err("another author");
    assert_refused(&status, Code::PermissionDenied, "AUTHOR_MISMATCH", "spoof");

    // The seed client, as built from the seed proto: no token.
    seed_send(&system.send)
        .await
        .send(seed::ChatMessage {
            author: "guest".into(),
            text: "hello from the seed client".into(),
            time: 1,
        })
        .await
        .expect("anonymous write on general");
    let mut all = seed_all(&system.all)
        .await
        .all(seed::Empty {})
        .await
        .expect("anonymous read of every room")
        .into_inner();
    let mut authors = Vec::new();
    for _ in 0..3 {
        let message = tokio::time::timeout(Duration::from_secs(10), all.message())
            .await
            .expect("in time")
            .expect("a message")
            .expect("not the end");
        authors.push(message.author);
    }
    assert_eq!(authors, ["ann", "ann", "guest"]);
    let page = v1_all(&system.all)
        .await
        .list_messages(v1::ListMessagesRequest {
            room: "general".into(),
            before_sequence: 0,
            limit: 5,
        })
        .await
        .expect("anonymous read")
        .into_inner();
    let guest = page.messages.last().expect("messages");
    assert_eq!(guest.author, "guest");
    assert!(!guest.author_verified, "anonymous authors are not verified");
    let status = sender
        .send_message(message("other", "guest", "elsewhere"))
        .await
        .expect_err("anonymous write elsewhere");
    assert_refused(
        &status,
        Code::Unauthenticated,
        "TOKEN_MISSING",
        "anonymous elsewhere",
    );
}

/// A subscription lives no longer than its token: it ends with
/// UNAUTHENTICATED TOKEN_EXPIRED and the cursor to resume from with a new
/// token, which then gets exactly what followed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_when_its_token_expires_with_the_cursor_to_resume() {
    let keys = Keys::new();
    let mut auth = jwt(&keys);
    auth.jwt.leeway = Duration::from_secs(0);
    let system = System::start(auth).await;
    let writer = token("w", "*=write", Duration::from_secs(600));
    let mut sender = v1_send(&system.send).await;
    let short = token("ann", "r=read", Duration::from_secs(2));
    let mut stream = v1_all(&system.all)
        .await
        .subscribe(with(subscribe("r", None), Some(&short)))
        .await
        .expect("subscribe")
        .into_inner();
    sender
        .send_message(with(message("r", "", "one"), Some(&writer)))
        .await
        .expect("send");
    let events = take(&mut stream, 1, Duration::from_secs(5)).await;
    assert_eq!(sequences(&events), [1]);
    // (CaughtUp and Heartbeat events may come first: read past them.)
    let status = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.message().await {
                Ok(Some(v1::SubscribeResponse {
                    event:
                        Some(
                            v1::subscribe_response::Event::CaughtUp(_)
                            | v1::subscribe_response::Event::Heartbeat(_),
                        ),
                })) => {}
                other => break other,
            }
        }
    })
    .await
    .expect("ended in time")
    .expect_err("ended by the expiry");
    assert_refused(&status, Code::Unauthenticated, "TOKEN_EXPIRED", "expiry");
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(
        info.metadata.get("after_sequence").map(String::as_str),
        Some("1")
    );
    sender
        .send_message(with(message("r", "", "two"), Some(&writer)))
        .await
        .expect("send");
    let fresh = token("ann", "r=read", Duration::from_secs(600));
    let mut resumed = v1_all(&system.all)
        .await
        .subscribe(with(
            subscribe("r", Some(Start::AfterSequence(1))),
            Some(&fresh),
        ))
        .await
        .expect("resubscribe")
        .into_inner();
    assert_eq!(
        sequences(&take(&mut resumed, 1, Duration::from_secs(5)).await),
        [2]
    );
}

/// Per-identity limits: sends beyond the rate get RESOURCE_EXHAUSTED
/// RATE_LIMITED with a RetryInfo (and succeed after it), subscriptions
/// beyond `limits.subscriptions_per_identity` get TOO_MANY_SUBSCRIPTIONS,
/// and each identity has its own share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_identity_has_its_own_rate_and_subscription_share() {
    let keys = Keys::new();
    let limits = fastchat_runtime::config::LimitsConfig {
        send_per_second: 2,
        send_burst: 2,
        subscriptions_per_identity: 2,
    };
    let system = System::start_with(jwt(&keys), limits).await;
    let ann = token("ann", "*=read,write", Duration::from_secs(600));
    let bob = token("bob", "*=read,write", Duration::from_secs(600));
    let mut sender = v1_send(&system.send).await;
    for i in 0..2 {
        sender
            .send_message(with(message("r", "", &format!("burst {i}")), Some(&ann)))
            .await
            .expect("within the burst");
    }
    let status = sender
        .send_message(with(message("r", "", "one too many"), Some(&ann)))
        .await
        .expect_err("over the rate");
    assert_refused(&status, Code::ResourceExhausted, "RATE_LIMITED", "rate");
    let retry = status
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .expect("a RetryInfo");
    assert!(
        retry > Duration::ZERO && retry <= Duration::from_secs(1),
        "{retry:?}"
    );
    sender
        .send_message(with(message("r", "", "bob's own"), Some(&bob)))
        .await
        .expect("another identity's bucket");
    tokio::time::sleep(retry + Duration::from_millis(50)).await;
    sender
        .send_message(with(message("r", "", "after waiting"), Some(&ann)))
        .await
        .expect("after the RetryInfo delay");

    let mut reader = v1_all(&system.all).await;
    let mut open = Vec::new();
    for _ in 0..2 {
        open.push(
            reader
                .subscribe(with(subscribe("r", None), Some(&ann)))
                .await
                .expect("within the share"),
        );
    }
    let status = reader
        .subscribe(with(subscribe("r", None), Some(&ann)))
        .await
        .expect_err("over the per-identity cap");
    assert_refused(
        &status,
        Code::ResourceExhausted,
        "TOO_MANY_SUBSCRIPTIONS",
        "cap",
    );
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(
        info.metadata.get("limit").map(String::as_str),
        Some("limits.subscriptions_per_identity")
    );
    reader
        .subscribe(with(subscribe("r", None), Some(&bob)))
        .await
        .expect("another identity's share");
}

/// `auth.mode = "none"` is visible to probes: health service
/// `auth-disabled` is SERVING (and NOT_SERVING with tokens checked).
#[tokio::test]
async fn an_unchecked_service_says_so_in_its_health() {
    let keys = Keys::new();
    let checked = System::start(jwt(&keys)).await;
    let open = System::start(AuthConfig {
        mode: Mode::None,
        ..AuthConfig::default()
    })
    .await;
    for (system, want) in [
        (&checked, tonic_health::ServingStatus::NotServing),
        (&open, tonic_health::ServingStatus::Serving),
    ] {
        for service in [&system.send, &system.all] {
            let status = fastchat_runtime::health::check_service(
                service.addr,
                fastchat_runtime::health::AUTH_DISABLED,
                Duration::from_secs(2),
                None,
            )
            .await
            .expect("health answers");
            assert_eq!(status, want);
        }
    }
}
