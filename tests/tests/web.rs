//! Browsers' ways in, with a real HTTP/1.1 client (ureq) over real sockets:
//! gRPC-web unary and server streaming, CORS preflights for allowed and
//! refused origins, statuses a script can read, the web page and its
//! configuration.

use std::{net::SocketAddr, time::Duration};

use fastchat_e2e::*;
use fastchat_proto::v1;
use prost::Message as _;

const ORIGIN: &str = "http://chat.example.test";

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .max_idle_connections(0)
        .build()
        .new_agent()
}

/// A gRPC-web request body: one length-prefixed message.
fn frame(message: &impl prost::Message) -> Vec<u8> {
    let body = message.encode_to_vec();
    let mut framed = vec![0];
    framed.extend_from_slice(&u32::try_from(body.len()).expect("small").to_be_bytes());
    framed.extend_from_slice(&body);
    framed
}

/// One gRPC-web response frame: messages (flag 0) or the trailers (flag 0x80).
#[derive(Debug)]
enum WebFrame {
    Message(Vec<u8>),
    Trailers(String),
}

/// Reads the next frame; `None` at the end of the body.
fn next_frame(body: &mut impl std::io::Read) -> Option<WebFrame> {
    let mut header = [0u8; 5];
    if body.read_exact(&mut header).is_err() {
        return None;
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    let mut data = vec![0; len];
    body.read_exact(&mut data).expect("a whole frame");
    Some(if header[0] & 0x80 != 0 {
        WebFrame::Trailers(String::from_utf8(data).expect("trailers are text"))
    } else {
        WebFrame::Message(data)
    })
}

fn url(addr: SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}

/// A gRPC-web POST over HTTP/1.1: the response's headers and its frames.
fn grpc_web(
    addr: SocketAddr,
    path: &str,
    body: Vec<u8>,
    token: Option<&str>,
) -> (u16, Vec<(String, String)>, Vec<WebFrame>) {
    let mut request = agent()
        .post(url(addr, path))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("origin", ORIGIN);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let mut response = request.send(&body[..]).expect("an HTTP answer");
    assert_eq!(response.version(), ureq::http::Version::HTTP_11);
    let headers = headers(&response);
    let mut reader = response.body_mut().as_reader();
    let mut frames = Vec::new();
    while let Some(frame) = next_frame(&mut reader) {
        frames.push(frame);
    }
    (response.status().as_u16(), headers, frames)
}

fn headers(response: &ureq::http::Response<ureq::Body>) -> Vec<(String, String)> {
    response
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
        .collect()
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn web_config(allowed: &[&str]) -> fastchat_runtime::config::WebConfig {
    fastchat_runtime::config::WebConfig {
        allowed_origins: allowed.iter().map(|o| (*o).to_owned()).collect(),
        ..Default::default()
    }
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work).await.expect("no panic")
}

#[tokio::test]
async fn grpc_web_unary_and_streaming_over_http1() {
    let nats = NatsServer::start();
    let mut send_config = send_config(&nats.url());
    send_config.web = web_config(&[ORIGIN]);
    let send = start_send(send_config).await;
    let mut all_config = all_config(&nats.url());
    all_config.web = web_config(&[ORIGIN]);
    let all = start_all(all_config).await;
    let (send_addr, all_addr) = (send.addr, all.addr);

    // Unary: SendMessage.
    let stored: Vec<v1::ChatMessage> = blocking(move || {
        (1..=3)
            .map(|i| {
                let (status, headers, frames) = grpc_web(
                    send_addr,
                    "/fastchat.v1.SendMessageService/SendMessage",
                    frame(&message("web", "ann", &format!("hello {i}"))),
                    None,
                );
                assert_eq!(status, 200);
                assert_eq!(
                    header(&headers, "access-control-allow-origin"),
                    Some(ORIGIN)
                );
                let [WebFrame::Message(body), WebFrame::Trailers(trailers)] = &frames[..] else {
                    panic!("one message and trailers: {frames:?}");
                };
                assert!(trailers.contains("grpc-status:0"), "{trailers}");
                v1::SendMessageResponse::decode(&body[..])
                    .expect("a SendMessageResponse")
                    .message
                    .expect("stored")
            })
            .collect()
    })
    .await;
    assert_eq!(
        stored.iter().map(|m| m.sequence).collect::<Vec<_>>(),
        [1, 2, 3]
    );

    // Server streaming: Subscribe, read as the frames arrive (the stream
    // stays open: history, CaughtUp, then a live message).
    let reader = blocking(move || {
        let response = agent()
            .post(url(all_addr, "/fastchat.v1.AllMessagesService/Subscribe"))
            .header("content-type", "application/grpc-web+proto")
            .header("x-grpc-web", "1")
            .send(&frame(&subscribe("web", None))[..])
            .expect("an HTTP answer");
        assert_eq!(response.status().as_u16(), 200);
        let mut body = response.into_body().into_reader();
        let mut events = Vec::new();
        while events.len() < 4 {
            match next_frame(&mut body) {
                Some(WebFrame::Message(data)) => events.push(
                    v1::SubscribeResponse::decode(&data[..])
                        .expect("a SubscribeResponse")
                        .event
                        .expect("an event"),
                ),
                other => panic!("the stream ended early: {other:?}"),
            }
        }
        (events, body)
    })
    .await;
    let (events, body) = reader;
    use v1::subscribe_response::Event;
    assert_eq!(sequences(&events), [1, 2, 3]);
    assert!(matches!(
        events[3],
        Event::CaughtUp(v1::CaughtUp { sequence: 3 })
    ));
    let mut sender = v1_send(&send).await;
    sender
        .send_message(message("web", "bob", "live"))
        .await
        .expect("send");
    let live = blocking(move || {
        let mut body = body;
        match next_frame(&mut body) {
            Some(WebFrame::Message(data)) => {
                v1::SubscribeResponse::decode(&data[..])
                    .expect("a SubscribeResponse")
                    .event
            }
            other => panic!("expected the live message: {other:?}"),
        }
    })
    .await;
    let Some(Event::Message(m)) = live else {
        panic!("a message: {live:?}");
    };
    assert_eq!((m.sequence, m.text.as_str()), (4, "live"));
}

#[tokio::test]
async fn cors_preflights_answer_allowed_origins_only_and_never_reach_auth() {
    let nats = NatsServer::start();
    let mut config = send_config(&nats.url());
    config.web = web_config(&[ORIGIN]);
    // Tokens are checked (a key is set): a preflight carries none.
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = dir.path().join("hmac");
    std::fs::write(&secret, [7u8; 32]).expect("write secret");
    config.auth = fastchat_auth::AuthConfig::default();
    config.auth.jwt.hmac_secret_file = Some(secret);
    let send = start_send(config).await;
    let addr = send.addr;
    blocking(move || {
        let preflight = |origin: &str| {
            let response = agent()
                .options(url(addr, "/fastchat.v1.SendMessageService/SendMessage"))
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header(
                    "access-control-request-headers",
                    "authorization,content-type,x-grpc-web",
                )
                .call()
                .expect("an HTTP answer");
            (response.status().as_u16(), headers(&response))
        };
        let (status, allowed) = preflight(ORIGIN);
        assert_eq!(status, 200, "{allowed:?}");
        assert_eq!(
            header(&allowed, "access-control-allow-origin"),
            Some(ORIGIN)
        );
        let allowed_headers = header(&allowed, "access-control-allow-headers").unwrap_or_default();
        assert!(
            allowed_headers.contains("authorization"),
            "{allowed_headers}"
        );
        assert!(header(&allowed, "grpc-status").is_none(), "not a gRPC call");

        let (_, refused) = preflight("http://evil.example.test");
        assert!(
            header(&refused, "access-control-allow-origin").is_none(),
            "{refused:?}"
        );

        // The real call without a token: a status the page's script can read.
        let (status, headers, _) = grpc_web(
            addr,
            "/fastchat.v1.SendMessageService/SendMessage",
            frame(&message("general", "ann", "hi")),
            None,
        );
        assert_eq!(status, 200);
        assert_eq!(header(&headers, "grpc-status"), Some("16"), "{headers:?}");
        let exposed = header(&headers, "access-control-expose-headers").unwrap_or_default();
        for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
            assert!(exposed.contains(name), "{name} exposed: {exposed}");
        }
    })
    .await;
}

#[tokio::test]
async fn the_web_page_and_its_configuration_are_served_when_configured() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("index.html"),
        "<!doctype html><title>FastChat</title>",
    )
    .expect("write page");
    std::fs::write(dir.path().join("app.js"), "console.log('hi')").expect("write script");
    let mut config = all_config(&nats.url());
    config.web.static_dir = Some(dir.path().to_owned());
    config.web.send_url = "http://127.0.0.1:50051".into();
    let all = start_all(config).await;
    let bare = start_all(all_config(&nats.url())).await;
    let (addr, bare_addr) = (all.addr, bare.addr);
    blocking(move || {
        let get = |addr, path: &str| {
            let mut response = agent().get(url(addr, path)).call().expect("an HTTP answer");
            let status = response.status().as_u16();
            let kind = header(&headers(&response), "content-type")
                .unwrap_or_default()
                .to_owned();
            let body = response.body_mut().read_to_string().expect("text");
            (status, kind, body)
        };
        let (status, kind, page) = get(addr, "/");
        assert_eq!(status, 200);
        assert!(kind.starts_with("text/html"), "{kind}");
        assert!(page.contains("<title>FastChat"), "{page}");
        let (_, kind, _) = get(addr, "/app.js");
        assert!(kind.contains("javascript"), "{kind}");
        // A path of the page's own (a deep link) gets the page.
        let (status, _, page) = get(addr, "/rooms/general");
        assert_eq!(status, 200);
        assert!(page.contains("<title>FastChat"));
        let (status, _, _) = get(addr, "/missing.js");
        assert_eq!(status, 404, "a missing file is not the page");
        let (status, _, config) = get(addr, "/web-config.json");
        assert_eq!(status, 200);
        let config: serde_json::Value = serde_json::from_str(&config).expect("JSON");
        assert_eq!(config["send_url"], "http://127.0.0.1:50051");

        // Without static_dir there is no page.
        let (status, _, _) = get(bare_addr, "/");
        assert_eq!(status, 404);

        // A gRPC-web call of an unknown method is UNIMPLEMENTED, not a file.
        let (status, headers, _) =
            grpc_web(addr, "/no.Such/Method", frame(&v1::Gap::default()), None);
        assert_eq!(status, 200);
        assert_eq!(header(&headers, "grpc-status"), Some("12"), "{headers:?}");
    })
    .await;
}
