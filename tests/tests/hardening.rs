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

/// Opens a raw HTTP/2 connection that asks for one ListMessages page of
/// `room` and never lets the answer through: a client that does not read.
fn non_reading_list(addr: std::net::SocketAddr, room: &str) -> fastchat_test_support::h2raw::Conn {
    use prost::Message as _;
    let request = v1::ListMessagesRequest {
        room: room.into(),
        before_sequence: 0,
        limit: 1000,
    };
    fastchat_test_support::attack::non_reading_call(
        addr,
        "/fastchat.v1.AllMessagesService/ListMessages",
        &request.encode_to_vec(),
    )
    .expect("a non-reading ListMessages")
}

/// B5: pages are bounded in bytes (a stock grpcio client could not read a
/// full page of maximum-size messages: 4.49 MB over its 4 MiB), and a page
/// nobody reads keeps its history slot until it is sent, so unread pages
/// cannot pile up (40 of them pinned 216 MiB): past the per-address cap the
/// next one waits its turn and, its queue time over, is refused with
/// RESOURCE_EXHAUSTED naming the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_are_bounded_in_bytes_and_unread_ones_hold_their_slot() {
    let nats = NatsServer::start();
    let send = start_send(send_config(&nats.url())).await;
    let mut config = all_config(&nats.url());
    config.history.max_concurrent_per_address = 2;
    config.history.queue_timeout = Duration::from_secs(1);
    let all = start_all(config).await;
    let mut sender = v1_send(&send).await;
    let text = "y".repeat(4096);
    for i in 0..600 {
        sender
            .send_message(message("big", &format!("author{i}"), &text))
            .await
            .expect("send");
    }
    let mut client = v1_all(&all).await;
    let page = client
        .list_messages(v1::ListMessagesRequest {
            room: "big".into(),
            before_sequence: 0,
            limit: 1000,
        })
        .await
        .expect("a page")
        .into_inner();
    let bytes: usize = page.messages.iter().map(prost::Message::encoded_len).sum();
    assert!(bytes <= 1024 * 1024, "{bytes} bytes");
    assert!(
        page.messages.len() > 200 && page.messages.len() < 600,
        "{}",
        page.messages.len()
    );
    let oldest = page.messages.first().expect("messages").sequence;
    assert_eq!(page.next_before_sequence, oldest, "says where to continue");
    let newest = page.messages.last().expect("messages").sequence;
    assert_eq!(newest, 600);
    // The rest comes in the next page, with no gap.
    let next = client
        .list_messages(v1::ListMessagesRequest {
            room: "big".into(),
            before_sequence: page.next_before_sequence,
            limit: 1000,
        })
        .await
        .expect("the next page")
        .into_inner();
    assert_eq!(next.messages.last().map(|m| m.sequence), Some(oldest - 1));

    // Two pages that nobody reads hold both of this address's slots.
    let addr = all.addr;
    let held = tokio::task::spawn_blocking(move || {
        let held = [non_reading_list(addr, "big"), non_reading_list(addr, "big")];
        std::thread::sleep(Duration::from_millis(500));
        held
    })
    .await
    .expect("raw clients");
    let status = client
        .list_messages(v1::ListMessagesRequest {
            room: "big".into(),
            before_sequence: 0,
            limit: 10,
        })
        .await
        .expect_err("over the per-address cap");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status
            .message()
            .contains("history.max_concurrent_per_address"),
        "{}",
        status.message()
    );
    drop(held);
    // Once those clients are gone, their slots come back.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = client
            .list_messages(v1::ListMessagesRequest {
                room: "big".into(),
                before_sequence: 0,
                limit: 10,
            })
            .await;
        match answer {
            Ok(page) => {
                assert_eq!(page.into_inner().messages.len(), 10);
                break;
            }
            Err(status) if tokio::time::Instant::now() < deadline => {
                assert_eq!(status.code(), Code::ResourceExhausted);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("slots never came back: {status:?}"),
        }
    }
}

/// Subscription replays take turns in their client's shares of the history
/// slots, like pages: subscriptions from one address that never read (each
/// holds its slot while its replay cannot be sent) hold at most that
/// address's share, and a client on another address gets its replay at
/// once, not after `subscriptions.stall_timeout` (before, a replay took a
/// slot whatever its client held: the chaos test's non-reading attack
/// stalled well-behaved resumes by 8 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_that_never_read_hold_only_their_address_share_of_history() {
    let nats = NatsServer::start();
    let send = start_send(send_config(&nats.url())).await;
    let mut config = all_config(&nats.url());
    config.history.max_concurrent = 2;
    config.history.max_concurrent_per_address = 1;
    config.subscriptions.stall_timeout = Duration::from_secs(60);
    let all = start_all(config).await;
    let mut sender = v1_send(&send).await;
    // 2.4 MB of history: more than a zero window and the server's buffers
    // take, so a replay into a client that never reads cannot finish.
    let text = "z".repeat(4096);
    for i in 0..600 {
        sender
            .send_message(message("deep", &format!("author{i}"), &text))
            .await
            .expect("send");
    }
    let request = prost::Message::encode_to_vec(&subscribe("deep", None));
    let addr = all.addr;
    let held = tokio::task::spawn_blocking(move || {
        let held: Vec<_> = (0..4)
            .map(|_| {
                fastchat_test_support::attack::non_reading_call(
                    addr,
                    "/fastchat.v1.AllMessagesService/Subscribe",
                    &request,
                )
                .expect("a non-reading Subscribe")
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        held
    })
    .await
    .expect("raw clients");

    // From another address: the whole replay, then CaughtUp, promptly.
    let channel = tonic::transport::Endpoint::from_shared(all.endpoint())
        .expect("endpoint")
        .local_address(Some([127, 0, 0, 2].into()))
        .connect()
        .await
        .expect("connect from 127.0.0.2");
    let mut client = v1::all_messages_service_client::AllMessagesServiceClient::new(channel);
    let replay = async {
        let mut stream = client
            .subscribe(subscribe("deep", None))
            .await
            .expect("subscribe")
            .into_inner();
        let mut messages = 0;
        loop {
            match stream.message().await.expect("the stream").map(|r| r.event) {
                Some(Some(v1::subscribe_response::Event::Message(_))) => messages += 1,
                Some(Some(v1::subscribe_response::Event::CaughtUp(_))) => break messages,
                Some(_) => {}
                None => panic!("the stream ended after {messages} messages"),
            }
        }
    };
    let messages = tokio::time::timeout(Duration::from_secs(10), replay)
        .await
        .expect("the replay is not held up behind the other address's non-readers");
    assert_eq!(messages, 600);
    drop(held);
}

/// B8: a burst of 2,000 concurrent history reads from one client no longer
/// fails everyone's (1,829 INTERNAL before, and other clients' reads failed
/// meanwhile): the burst takes turns (what cannot be served within the
/// queue time gets RESOURCE_EXHAUSTED, never INTERNAL), and a bystander's
/// read during the burst succeeds. 2,000 `Subscribe(last = 10)` at once (all
/// INTERNAL before) each get their 10.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_history_reads_is_queued_or_refused_never_internal() {
    let nats = NatsServer::start();
    let send = start_send(send_config(&nats.url())).await;
    let mut config = all_config(&nats.url());
    config.subscriptions.max_per_address = 5_000;
    config.subscriptions.max_per_connection = 200;
    let all = start_all(config).await;
    let mut sender = v1_send(&send).await;
    for i in 0..50 {
        sender
            .send_message(message(&format!("room{}", i % 5), "ann", &format!("m{i}")))
            .await
            .expect("send");
    }
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(v1_all(&all).await);
    }
    let mut pages = tokio::task::JoinSet::new();
    for i in 0..2_000 {
        let mut client = clients[i % clients.len()].clone();
        pages.spawn(async move {
            client
                .list_messages(v1::ListMessagesRequest {
                    room: format!("room{}", i % 5),
                    before_sequence: 0,
                    limit: 5,
                })
                .await
                .map(|page| page.into_inner().messages.len())
        });
    }
    let mut bystander = v1_all(&all).await;
    let meanwhile = bystander
        .list_messages(v1::ListMessagesRequest {
            room: "room1".into(),
            before_sequence: 0,
            limit: 5,
        })
        .await;
    let (mut served, mut refused) = (0, 0);
    while let Some(answer) = pages.join_next().await {
        match answer.expect("task") {
            Ok(n) => {
                assert_eq!(n, 5);
                served += 1;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                refused += 1;
            }
        }
    }
    eprintln!("2,000 pages at once: {served} served, {refused} RESOURCE_EXHAUSTED");
    assert!(served > 0);
    // The burst's connections each hold at most their own share of the
    // instance's slots, so the bystander's turn comes soon.
    assert_eq!(
        meanwhile
            .expect("the bystander's page")
            .into_inner()
            .messages
            .len(),
        5
    );

    let mut streams = tokio::task::JoinSet::new();
    for i in 0..2_000 {
        let mut client = clients[i % clients.len()].clone();
        streams.spawn(async move {
            let mut stream = client
                .subscribe(subscribe(&format!("room{}", i % 5), Some(Start::Last(10))))
                .await
                .expect("subscribe")
                .into_inner();
            sequences(&take(&mut stream, 10, Duration::from_secs(120)).await)
        });
    }
    let mut complete = 0;
    while let Some(got) = streams.join_next().await {
        assert_eq!(got.expect("subscriber").len(), 10);
        complete += 1;
    }
    assert_eq!(complete, 2_000);
}

/// Fair shares of subscriptions and health Watch streams: one connection
/// cannot take every slot (one client took all 10,000 in 2.8 s), and health
/// Watch streams are counted too.
#[tokio::test]
async fn one_client_cannot_take_every_stream() {
    let nats = NatsServer::start();
    let mut config = all_config(&nats.url());
    config.subscriptions.max_per_connection = 2;
    config.grpc.max_health_watches = 2;
    let all = start_all(config).await;
    let mut client = v1_all(&all).await;
    let mut open = Vec::new();
    for _ in 0..2 {
        open.push(
            client
                .subscribe(subscribe("", None))
                .await
                .expect("subscribe"),
        );
    }
    let status = client
        .subscribe(subscribe("", None))
        .await
        .expect_err("over the per-connection cap");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status
            .message()
            .contains("subscriptions.max_per_connection"),
        "{}",
        status.message()
    );
    // Another connection still may.
    let _other = v1_all(&all)
        .await
        .subscribe(subscribe("", None))
        .await
        .expect("another connection");

    let channel = tonic::transport::Endpoint::from_shared(all.endpoint())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let watch = || tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    };
    let first = health.watch(watch()).await.expect("watch 1");
    let second = health.watch(watch()).await.expect("watch 2");
    let status = health
        .watch(watch())
        .await
        .expect_err("over grpc.max_health_watches");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status.message().contains("grpc.max_health_watches"),
        "{}",
        status.message()
    );
    drop((first, second));
    tokio::time::sleep(Duration::from_millis(200)).await;
    health.watch(watch()).await.expect("slots come back");
}

/// A subscriber that reads nothing while messages pile up is ended, with a
/// status naming why and where to resume (a non-reading subscriber used to
/// be held for ever, about 0.5 MB each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_reads_nothing_is_ended_after_the_stall_timeout() {
    let nats = NatsServer::start();
    let send = start_send(send_config(&nats.url())).await;
    let mut config = all_config(&nats.url());
    config.subscriptions.stall_timeout = Duration::from_secs(2);
    let all = start_all(config).await;
    let mut stream = v1_all_small_window(&all)
        .await
        .subscribe(subscribe("stall", Some(Start::NewOnly(true))))
        .await
        .expect("subscribe")
        .into_inner();
    let mut sender = v1_send(&send).await;
    let text = "z".repeat(4000);
    for i in 0..400 {
        sender
            .send_message(message("stall", "ann", &format!("{i} {text}")))
            .await
            .expect("send");
    }
    // Read nothing for longer than the stall timeout, then drain.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut got = 0;
    let status = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => got += 1,
                Ok(None) => panic!("ended with OK after {got} messages"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("the stream ends");
    assert!(got < 400, "all {got} delivered: it never stalled");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("subscriptions.stall_timeout")
            && status.message().contains("after_sequence = "),
        "{}",
        status.message()
    );
}

/// Sends `bytes` as the request message of `path`, whatever they are.
async fn raw_unary(
    endpoint: String,
    path: &'static str,
    bytes: Vec<u8>,
) -> Result<fastchat_proto::seed::Empty, tonic::Status> {
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

    #[derive(Debug, Default)]
    struct Raw;
    #[derive(Debug, Default)]
    struct RawEncoder;
    impl Encoder for RawEncoder {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
            bytes::BufMut::put_slice(dst, &item);
            Ok(())
        }
    }
    #[derive(Debug, Default)]
    struct EmptyDecoder;
    impl Decoder for EmptyDecoder {
        type Item = fastchat_proto::seed::Empty;
        type Error = tonic::Status;
        fn decode(&mut self, _: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, tonic::Status> {
            Ok(Some(fastchat_proto::seed::Empty {}))
        }
    }
    impl Codec for Raw {
        type Encode = Vec<u8>;
        type Decode = fastchat_proto::seed::Empty;
        type Encoder = RawEncoder;
        type Decoder = EmptyDecoder;
        fn encoder(&mut self) -> RawEncoder {
            RawEncoder
        }
        fn decoder(&mut self) -> EmptyDecoder {
            EmptyDecoder
        }
    }
    let channel = tonic::transport::Endpoint::from_shared(endpoint)
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    grpc.unary(
        tonic::Request::new(bytes),
        tonic::codegen::http::uri::PathAndQuery::from_static(path),
        Raw,
    )
    .await
    .map(tonic::Response::into_inner)
}

/// B10: errors name the fields of the API that was called (the seed API's
/// `time`, not v1's `client_time_ms`), and a request that is not a valid
/// protobuf message is INVALID_ARGUMENT naming the expected type (tonic's
/// default is INTERNAL, which reads as a server fault).
#[tokio::test]
async fn errors_name_the_callers_fields_and_bad_bytes_are_invalid_argument() {
    let nats = NatsServer::start();
    let send = start_send(send_config(&nats.url())).await;
    let status = seed_send(&send)
        .await
        .send(fastchat_proto::seed::ChatMessage {
            author: "ann".into(),
            text: "hi".into(),
            time: -1,
        })
        .await
        .expect_err("a negative time");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("time: "),
        "{}",
        status.message()
    );

    // Field 1 with wire type 7, which does not exist.
    for path in [
        "/ChatMessage.SendMessageService/send",
        "/fastchat.v1.SendMessageService/SendMessage",
    ] {
        let status = raw_unary(send.endpoint(), path, vec![0x0f, 0xff, 0xff])
            .await
            .expect_err("not protobuf");
        assert_eq!(status.code(), Code::InvalidArgument, "{path}: {status:?}");
        assert!(
            status.message().starts_with("the message is not a valid "),
            "{path}: {}",
            status.message()
        );
    }
}
