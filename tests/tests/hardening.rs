//! The hostile-client audit (`AUDIT.md`, B1–B11) as tests: each reproduces
//! what a client could do to the services, and asserts what must happen
//! instead. Real services, a real nats-server, real sockets.

use std::time::Duration;

use fastchat_e2e::*;
use fastchat_proto::{prost_types::Timestamp, v1};
use tonic::Code;
use v1::subscribe_request::Start;

/// B1, B2: a `since` the broker cannot represent (it keeps times as i64
/// nanoseconds: 1677-09-21 to 2262-04-11) is INVALID_ARGUMENT naming the
/// range. Before, a year before 0 panicked the subscription task and ended
/// the stream with OK; 9999-12-31 returned every message, 1653 none.
#[tokio::test]
async fn a_since_the_broker_cannot_represent_is_invalid() {
    let nats = NatsServer::start();
    let send = start_send(send_config(&nats.url())).await;
    let all = start_all(all_config(&nats.url())).await;
    v1_send(&send)
        .await
        .send_message(message("r", "ann", "hello"))
        .await
        .expect("send");
    let mut client = v1_all(&all).await;
    for (seconds, what) in [
        (-62_200_000_000, "a year before 0"),
        (-9_999_999_999, "1653"),
        (253_402_300_799, "9999-12-31"),
        (9_300_000_000, "2264"),
    ] {
        let request = subscribe("r", Some(Start::Since(Timestamp { seconds, nanos: 0 })));
        let status = match client.subscribe(request).await {
            Err(status) => status,
            Ok(stream) => match stream.into_inner().message().await {
                Err(status) => status,
                Ok(event) => panic!("{what}: a stream instead of an error: {event:?}"),
            },
        };
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        assert!(
            status.message().starts_with("since: ") && status.message().contains("1677"),
            "{what}: {}",
            status.message()
        );
    }
    // Nanoseconds out of range are a malformed Timestamp.
    let request = subscribe(
        "r",
        Some(Start::Since(Timestamp {
            seconds: 1_700_000_000,
            nanos: -1,
        })),
    );
    let status = client.subscribe(request).await.expect_err("bad nanos");
    assert_eq!(status.code(), Code::InvalidArgument);
    // A time the broker can represent works.
    let request = subscribe(
        "r",
        Some(Start::Since(Timestamp {
            seconds: 1_000_000_000,
            nanos: 0,
        })),
    );
    let mut stream = client.subscribe(request).await.expect("valid").into_inner();
    let events = take(&mut stream, 1, Duration::from_secs(10)).await;
    assert_eq!(sequences(&events), [1]);
}

/// B9: readiness follows whether the broker answers, not only whether the
/// TCP connection to it is up. Before, both services stayed SERVING 6.5 s
/// into a SIGSTOP of the broker while sends failed.
#[tokio::test]
async fn readiness_turns_not_serving_when_the_broker_stops_answering() {
    use tonic_health::ServingStatus;
    let nats = NatsServer::start();
    let send = start_send(send_config(&nats.url())).await;
    let all = start_all(all_config(&nats.url())).await;
    nats.pause();
    let frozen = tokio::time::Instant::now();
    send.wait_health(ServingStatus::NotServing, Duration::from_secs(10))
        .await;
    all.wait_health(ServingStatus::NotServing, Duration::from_secs(10))
        .await;
    let noticed = frozen.elapsed();
    nats.resume();
    send.wait_health(ServingStatus::Serving, Duration::from_secs(20))
        .await;
    all.wait_health(ServingStatus::Serving, Duration::from_secs(20))
        .await;
    eprintln!("a frozen broker was noticed after {noticed:?}");
    // Sending works again.
    v1_send(&send)
        .await
        .send_message(message("r", "ann", "after the freeze"))
        .await
        .expect("send after resume");
}

/// The stored headers of message `sequence` of the `chat` station.
async fn stored_headers(nats: &NatsServer, sequence: u64) -> async_nats::HeaderMap {
    let client = async_nats::connect(nats.url()).await.expect("connect");
    async_nats::jetstream::new(client)
        .get_stream_no_info("chat")
        .await
        .expect("stream")
        .direct_get(sequence)
        .await
        .expect("stored message")
        .headers
}

/// Display safety and trace context: an author with a bidi override is
/// refused naming the code point; a valid `traceparent` is stored with the
/// message, a malformed one (16 KB of junk used to be stored; the header
/// list limit now refuses more than 16 KiB of headers) is dropped while the
/// send itself succeeds.
#[tokio::test]
async fn what_people_and_tracers_see_is_validated() {
    let nats = NatsServer::start();
    let send = start_send(send_config(&nats.url())).await;
    let mut client = v1_send(&send).await;
    let status = client
        .send_message(message("r", "ann\u{202e}nimda", "hi"))
        .await
        .expect_err("a bidi override in an author");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("author: ") && status.message().contains("U+202E"),
        "{}",
        status.message()
    );

    let good = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let mut request = tonic::Request::new(message("r", "ann", "traced"));
    request
        .metadata_mut()
        .insert("traceparent", good.parse().expect("ascii"));
    let sequence = client
        .send_message(request)
        .await
        .expect("send")
        .into_inner()
        .message
        .expect("message")
        .sequence;
    let headers = stored_headers(&nats, sequence).await;
    assert_eq!(headers.get("traceparent").map(|v| v.as_str()), Some(good));

    let mut request = tonic::Request::new(message("r", "ann", "junk trace"));
    request
        .metadata_mut()
        .insert("traceparent", "x".repeat(4_000).parse().expect("ascii"));
    let sequence = client
        .send_message(request)
        .await
        .expect("a bad trace context does not fail the send")
        .into_inner()
        .message
        .expect("message")
        .sequence;
    let headers = stored_headers(&nats, sequence).await;
    assert!(headers.get("traceparent").is_none(), "{headers:?}");
}

/// B7: a broker whose store is full. With a station limited in bytes below
/// the broker's store (the default is below what deploy/ gives the broker),
/// old messages make room and every send succeeds; a station without a
/// byte limit on a full store answers RESOURCE_EXHAUSTED naming the limit,
/// never INTERNAL, and nothing acknowledged is lost.
#[tokio::test]
async fn a_full_broker_store_is_resource_exhausted_and_a_bounded_station_never_fills_it() {
    let nats = NatsServer::start_with(NatsOptions {
        config: Some("jetstream { max_file_store: 2MB }\n".into()),
        ..NatsOptions::default()
    });
    let text = "x".repeat(4000);
    // Bounded below the store: 1 MiB of a 2 MB store.
    let mut config = send_config(&nats.url());
    config.station.max_bytes = 1024 * 1024;
    let send = start_send(config).await;
    let mut client = v1_send(&send).await;
    for i in 0..1500 {
        client
            .send_message(message("r", "ann", &format!("{i} {text}")))
            .await
            .unwrap_or_else(|s| panic!("send {i} into a bounded station: {s:?}"));
    }
    drop(client);
    send.stop().await.expect("stop");

    // The same broker, a second station with no byte limit, fills the rest.
    let mut config = send_config(&nats.url());
    config.station.name = "unbounded".into();
    config.station.subjects = vec!["elsewhere.>".into()];
    config.station.max_bytes = 0;
    let refused = tokio::time::timeout(Duration::from_secs(30), async {
        let nats_url = nats.url();
        let client = async_nats::connect(nats_url).await.expect("connect");
        let js = async_nats::jetstream::new(client);
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "unbounded".into(),
            subjects: vec!["elsewhere.>".into()],
            ..Default::default()
        })
        .await
        .expect("stream");
        let mut acked = 0u32;
        loop {
            match js.publish("elsewhere.x", text.clone().into()).await {
                Ok(ack) => match ack.await {
                    Ok(_) => acked += 1,
                    Err(e) => return (acked, e.to_string()),
                },
                Err(e) => return (acked, e.to_string()),
            }
        }
    })
    .await
    .expect("the store fills");
    eprintln!(
        "store full after {} more messages: {}",
        refused.0, refused.1
    );

    // Now a send into the bounded station: the broker has no room at all.
    let send = start_send(send_config_with_max_bytes(&nats.url())).await;
    let status = v1_send(&send)
        .await
        .send_message(message("r", "ann", "one more"))
        .await
        .expect_err("the store is full");
    assert!(
        matches!(status.code(), Code::ResourceExhausted | Code::Unavailable),
        "{status:?}"
    );
    assert!(
        status.message().contains("station.max_bytes"),
        "{}",
        status.message()
    );
}

fn send_config_with_max_bytes(url: &str) -> send_service::Config {
    let mut config = send_config(url);
    config.station.max_bytes = 1024 * 1024;
    config
}
