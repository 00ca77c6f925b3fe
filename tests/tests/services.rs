//! Both services in-process against a real nats-server, with real gRPC
//! clients over loopback sockets.

use std::time::Duration;

use fastchat_e2e::*;
use fastchat_proto::{seed, v1};
use rand::RngExt as _;
use tonic::Code;
use tonic_health::ServingStatus;
use v1::subscribe_request::Start;
use v1::subscribe_response::Event;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn seed_api_round_trip_history_then_live() {
    let nats = NatsServer::start();
    let send = start_send(send_config(&nats.url())).await;
    let all = start_all(all_config(&nats.url())).await;
    let mut sender = seed_send(&send).await;
    for i in 0..3 {
        sender
            .send(seed::ChatMessage {
                author: "ann".into(),
                text: format!("hello {i}"),
                time: 1_700_000_000_000 + i,
            })
            .await
            .expect("seed send");
    }
    let mut stream = seed_all(&all)
        .await
        .all(seed::Empty {})
        .await
        .expect("seed all")
        .into_inner();
    for i in 0..3 {
        let m = tokio::time::timeout(WAIT, stream.message())
            .await
            .expect("history in time")
            .expect("stream ok")
            .expect("a message");
        assert_eq!(
            (m.author.as_str(), m.text.clone(), m.time),
            ("ann", format!("hello {i}"), 1_700_000_000_000 + i)
        );
    }
    sender
        .send(seed::ChatMessage {
            author: "bob".into(),
            text: "live".into(),
            time: 0,
        })
        .await
        .expect("seed send");
    let m = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("live in time")
        .expect("stream ok")
        .expect("a message");
    assert_eq!((m.author.as_str(), m.text.as_str()), ("bob", "live"));
    assert!(
        m.time > 1_700_000_000_000,
        "time defaults to the server's: {}",
        m.time
    );
}

#[tokio::test]
async fn invalid_messages_are_refused_and_not_stored() {
    let nats = NatsServer::start();
    let send = start_send(send_config(&nats.url())).await;
    let all = start_all(all_config(&nats.url())).await;
    let mut client = v1_send(&send).await;
    let long = "x".repeat(4097);
    let cases = [
        (message("", "", "hi"), "author"),
        (message("", "  ", "hi"), "author"),
        (message("", &"a".repeat(65), "hi"), "author"),
        (message("", "ann", ""), "text"),
        (message("", "ann", " \n "), "text"),
        (message("", "ann", &long), "text"),
        (message("no spaces", "ann", "hi"), "room"),
        (message(&"r".repeat(65), "ann", "hi"), "room"),
        (message("a.b", "ann", "hi"), "room"),
    ];
    for (request, field) in cases {
        let status = client.send_message(request).await.expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status}");
        assert!(
            status.message().starts_with(field),
            "{field}: {}",
            status.message()
        );
    }
    let status = seed_send(&send)
        .await
        .send(seed::ChatMessage {
            author: String::new(),
            text: "hi".into(),
            time: 0,
        })
        .await
        .expect_err("seed refuses an empty author");
    assert_eq!(status.code(), Code::InvalidArgument);

    // A request frame over grpc.max_request_bytes is refused before decoding.
    let huge = message("", "ann", &"y".repeat(100 * 1024));
    let status = client.send_message(huge).await.expect_err("too large");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    assert!(
        status.message().contains("grpc.max_request_bytes"),
        "{status}"
    );

    // Nothing of the above was stored.
    let mut reader = v1_all(&all).await;
    let page = reader
        .list_messages(v1::ListMessagesRequest {
            room: "general".into(),
            before_sequence: 0,
            limit: 10,
        })
        .await
        .expect("list")
        .into_inner();
    assert!(page.messages.is_empty(), "{:?}", page.messages);
    let stored = client
        .send_message(message("", "ann", "ok"))
        .await
        .expect("valid send")
        .into_inner();
    assert_eq!(
        stored.message.expect("message").sequence,
        1,
        "nothing was stored before"
    );

    let status = reader
        .subscribe(subscribe("bad room", None))
        .await
        .expect_err("bad room");
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = reader
        .list_messages(v1::ListMessagesRequest::default())
        .await
        .expect_err("room required");
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn send_stamps_id_time_sequence_and_deduplicates() {
    let nats = NatsServer::start();
    let send = start_send(send_config(&nats.url())).await;
    let mut client = v1_send(&send).await;
    let mut request = message("dev", "ann", "once");
    request.client_message_id = "key-1".into();
    request.client_time_ms = 42;
    let first = client
        .send_message(request.clone())
        .await
        .expect("send")
        .into_inner();
    assert!(!first.duplicate);
    let stored = first.message.expect("message");
    assert_eq!(stored.id.len(), 36, "a UUID: {}", stored.id);
    assert!(stored.sent_at.is_some());
    assert_eq!(
        (stored.room.as_str(), stored.client_time_ms, stored.sequence),
        ("dev", 42, 1)
    );

    request.text = "retry".into();
    let again = client
        .send_message(request.clone())
        .await
        .expect("retry")
        .into_inner();
    assert!(again.duplicate);
    assert_eq!(
        again.message.expect("message"),
        stored,
        "the first message, as stored"
    );

    request.author = "bob".into();
    let other = client
        .send_message(request)
        .await
        .expect("other author")
        .into_inner();
    assert!(!other.duplicate, "keys are scoped per author");
}

/// 10 subscribers join at random moments during a 2,000-message burst; each
/// must receive exactly the room's sequence: no gap, no duplicate, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_joining_during_a_burst_get_exactly_the_rooms_sequence() {
    const MESSAGES: usize = 2000;
    let nats = NatsServer::start();
    let send = start_send(send_config(&nats.url())).await;
    let all = start_all(all_config(&nats.url())).await;
    let client = v1_send(&send).await;
    // Noise in another room must not reach the subscribers.
    let noise = {
        let mut client = client.clone();
        tokio::spawn(async move {
            for i in 0..200 {
                client
                    .send_message(message("other", "zed", &format!("n{i}")))
                    .await
                    .expect("noise");
            }
        })
    };
    let burst = tokio::spawn(async move {
        let mut acked = Vec::with_capacity(MESSAGES);
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..8 {
            let mut client = client.clone();
            tasks.spawn(async move {
                let mut seqs = Vec::new();
                for i in (worker..MESSAGES).step_by(8) {
                    let r = client
                        .send_message(message("burst", "ann", &format!("m{i}")))
                        .await
                        .expect("send");
                    seqs.push(r.into_inner().message.expect("message").sequence);
                }
                seqs
            });
        }
        while let Some(seqs) = tasks.join_next().await {
            acked.extend(seqs.expect("worker"));
        }
        acked.sort_unstable();
        acked
    });
    let mut subscribers = Vec::new();
    for _ in 0..10 {
        let delay = Duration::from_millis(rand::rng().random_range(0..400));
        let all_addr = all.endpoint();
        subscribers.push(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let channel = tonic::transport::Endpoint::from_shared(all_addr)
                .expect("endpoint")
                .connect()
                .await
                .expect("connect");
            let mut client =
                v1::all_messages_service_client::AllMessagesServiceClient::new(channel);
            let mut stream = client
                .subscribe(subscribe("burst", None))
                .await
                .expect("subscribe")
                .into_inner();
            sequences(&take(&mut stream, MESSAGES, Duration::from_secs(60)).await)
        }));
    }
    let acked = burst.await.expect("burst");
    noise.await.expect("noise");
    assert_eq!(acked.len(), MESSAGES);
    for subscriber in subscribers {
        let got = subscriber.await.expect("subscriber");
        assert_eq!(got, acked, "a subscriber saw a different sequence");
    }
}

#[tokio::test]
async fn every_start_position_and_room_filter() {
    let nats = NatsServer::start();
    let send = start_send(send_config(&nats.url())).await;
    let all = start_all(all_config(&nats.url())).await;
    let mut client = v1_send(&send).await;
    let mut seqs = Vec::new();
    for i in 0..6 {
        let room = if i % 2 == 0 { "a" } else { "b" };
        let r = client
            .send_message(message(room, "ann", &format!("{i}")))
            .await
            .expect("send");
        seqs.push(r.into_inner().message.expect("message").sequence);
    }
    let since = std::time::SystemTime::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let r = client
        .send_message(message("a", "ann", "6"))
        .await
        .expect("send");
    seqs.push(r.into_inner().message.expect("message").sequence);
    assert_eq!(seqs, vec![1, 2, 3, 4, 5, 6, 7]);

    // What the station holds, as (sequence, room); live messages are added
    // as the cases go, so each case's expectation is computed from it.
    let mut log: Vec<(u64, &str)> = seqs
        .iter()
        .map(|&s| (s, if s % 2 == 1 { "a" } else { "b" }))
        .collect();
    let in_room = |log: &[(u64, &str)], room: &str| -> Vec<u64> {
        log.iter()
            .filter(|(_, r)| room.is_empty() || *r == room)
            .map(|(s, _)| *s)
            .collect()
    };
    let last = |v: Vec<u64>, n: usize| v[v.len().saturating_sub(n)..].to_vec();
    let mut reader = v1_all(&all).await;
    let cases: Vec<(&str, Option<Start>)> = vec![
        ("", None),
        ("a", None),
        ("", Some(Start::AfterSequence(4))),
        ("b", Some(Start::AfterSequence(2))),
        ("a", Some(Start::Last(2))),
        ("", Some(Start::Last(3))),
        ("b", Some(Start::Last(100))),
        ("", Some(Start::Since(since.into()))),
    ];
    for (room, start) in cases {
        let everything = in_room(&log, room);
        let want: Vec<u64> = match &start {
            None => everything,
            Some(Start::AfterSequence(n)) => everything.into_iter().filter(|s| s > n).collect(),
            Some(Start::Last(n)) => last(everything, *n as usize),
            Some(Start::Since(_)) => everything.into_iter().filter(|s| *s >= 7).collect(),
            Some(other) => panic!("not a case: {other:?}"),
        };
        let mut stream = reader
            .subscribe(subscribe(room, start))
            .await
            .expect("subscribe")
            .into_inner();
        let got = sequences(&take(&mut stream, want.len(), WAIT).await);
        assert_eq!(got, want, "room {room:?} start {start:?}");
        // Then live: the next message of the room, nothing else in between.
        let live_room = if room.is_empty() { "a" } else { room };
        let r = client
            .send_message(message(live_room, "ann", "live"))
            .await
            .expect("send")
            .into_inner();
        let sequence = r.message.expect("message").sequence;
        log.push((sequence, live_room));
        let live = sequences(&take(&mut stream, 1, WAIT).await);
        assert_eq!(live, vec![sequence], "room {room:?} start {start:?}");
    }
    // new_only: nothing old, only what comes after.
    let mut stream = reader
        .subscribe(subscribe("", Some(Start::NewOnly(true))))
        .await
        .expect("subscribe")
        .into_inner();
    let r = client
        .send_message(message("b", "ann", "new"))
        .await
        .expect("send")
        .into_inner();
    assert_eq!(
        sequences(&take(&mut stream, 1, WAIT).await),
        vec![r.message.expect("message").sequence]
    );

    // A cursor from the future is refused, not silently waited on.
    let mut stream = reader
        .subscribe(subscribe("", Some(Start::AfterSequence(10_000))))
        .await
        .expect("subscribe")
        .into_inner();
    let status = stream.message().await.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status}");
}

#[tokio::test]
async fn list_messages_pages_back_to_the_first() {
    let nats = NatsServer::start();
    let send = start_send(send_config(&nats.url())).await;
    let all = start_all(all_config(&nats.url())).await;
    let mut client = v1_send(&send).await;
    let mut want = Vec::new();
    for i in 0..25 {
        client
            .send_message(message("noise", "zed", &format!("{i}")))
            .await
            .expect("send");
        let r = client
            .send_message(message("paged", "ann", &format!("{i}")))
            .await
            .expect("send");
        want.push(r.into_inner().message.expect("message").sequence);
    }
    let mut reader = v1_all(&all).await;
    let mut got = Vec::new();
    let mut before = 0;
    let mut pages = 0;
    loop {
        let page = reader
            .list_messages(v1::ListMessagesRequest {
                room: "paged".into(),
                before_sequence: before,
                limit: 10,
            })
            .await
            .expect("list")
            .into_inner();
        pages += 1;
        let seqs: Vec<u64> = page.messages.iter().map(|m| m.sequence).collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "oldest first: {seqs:?}"
        );
        assert!(page.messages.iter().all(|m| m.room == "paged"));
        got.splice(0..0, seqs);
        if page.next_before_sequence == 0 {
            break;
        }
        before = page.next_before_sequence;
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(got, want);
    assert_eq!(pages, 3);
}

#[tokio::test]
async fn two_instances_each_see_every_message_and_a_new_one_serves_history() {
    let nats = NatsServer::start();
    let send = start_send(send_config(&nats.url())).await;
    let first = start_all(all_config(&nats.url())).await;
    let second = start_all(all_config(&nats.url())).await;
    let mut streams = Vec::new();
    for service in [&first, &second] {
        streams.push(
            v1_all(service)
                .await
                .subscribe(subscribe("", None))
                .await
                .expect("subscribe")
                .into_inner(),
        );
    }
    let mut client = v1_send(&send).await;
    let mut want = Vec::new();
    for i in 0..50 {
        let r = client
            .send_message(message("r", "ann", &format!("{i}")))
            .await
            .expect("send");
        want.push(r.into_inner().message.expect("message").sequence);
    }
    for stream in &mut streams {
        assert_eq!(sequences(&take(stream, 50, WAIT).await), want);
    }
    drop(streams);
    first.stop().await.expect("clean stop");
    second.stop().await.expect("clean stop");

    let restarted = start_all(all_config(&nats.url())).await;
    let mut stream = v1_all(&restarted)
        .await
        .subscribe(subscribe("", None))
        .await
        .expect("subscribe")
        .into_inner();
    assert_eq!(
        sequences(&take(&mut stream, 50, WAIT).await),
        want,
        "history survives the instance"
    );
}

#[tokio::test]
async fn broker_restart_is_survived_without_restarting_services() {
    let mut nats = NatsServer::start();
    let send = start_send(send_config(&nats.url())).await;
    let all = start_all(all_config(&nats.url())).await;
    let mut client = v1_send(&send).await;
    let mut stream = v1_all(&all)
        .await
        .subscribe(subscribe("", None))
        .await
        .expect("subscribe")
        .into_inner();
    let r = client
        .send_message(message("r", "ann", "before"))
        .await
        .expect("send")
        .into_inner();
    let before = r.message.expect("message").sequence;
    assert_eq!(sequences(&take(&mut stream, 1, WAIT).await), vec![before]);

    nats.stop();
    send.wait_health(ServingStatus::NotServing, WAIT).await;
    all.wait_health(ServingStatus::NotServing, WAIT).await;
    // Not ready, but alive: nothing should restart the services.
    for service in [&send, &all] {
        let alive = fastchat_runtime::health::check_service(
            service.addr,
            fastchat_runtime::health::LIVENESS,
            Duration::from_secs(2),
            None,
        )
        .await
        .expect("health answers");
        assert_eq!(alive, ServingStatus::Serving);
    }
    let started = tokio::time::Instant::now();
    let status = client
        .send_message(message("r", "ann", "lost?"))
        .await
        .expect_err("broker down");
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "answered within send.timeout"
    );

    nats.restart();
    send.wait_health(ServingStatus::Serving, WAIT).await;
    all.wait_health(ServingStatus::Serving, WAIT).await;
    let after = tokio::time::timeout(WAIT, async {
        loop {
            match client.send_message(message("r", "ann", "after")).await {
                Ok(r) => break r.into_inner().message.expect("message").sequence,
                Err(status) => {
                    assert_eq!(status.code(), Code::Unavailable, "{status}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
    .await
    .expect("sending works again");
    assert!(after > before);

    // The open subscription either continues, or ends with UNAVAILABLE and a
    // resume cursor; either way a client gets every acknowledged message.
    // (CaughtUp and Heartbeat events carry no message: read past them.)
    let next = tokio::time::timeout(WAIT, async {
        loop {
            match stream.message().await {
                Ok(Some(v1::SubscribeResponse {
                    event: Some(Event::CaughtUp(_) | Event::Heartbeat(_)),
                })) => {}
                other => break other,
            }
        }
    })
    .await
    .expect("answer in time");
    let got = match next {
        Ok(Some(v1::SubscribeResponse {
            event: Some(Event::Message(m)),
        })) => m.sequence,
        Err(status) => {
            assert_eq!(status.code(), Code::Unavailable, "{status}");
            let mut resumed = v1_all(&all)
                .await
                .subscribe(subscribe("", Some(Start::AfterSequence(before))))
                .await
                .expect("resubscribe")
                .into_inner();
            sequences(&take(&mut resumed, 1, WAIT).await)[0]
        }
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(got, after);
}

#[tokio::test]
async fn a_service_starts_before_its_broker() {
    let port = fastchat_test_support::free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let listener_config = send_config(&url);
    // Started with no broker: it runs, NOT_SERVING, and refuses sends clearly.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let cancel = tokio_util::sync::CancellationToken::new();
    let handle = tokio::spawn(send_service::run(listener_config, listener, cancel.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let health = fastchat_runtime::health::check(addr, Duration::from_secs(2))
        .await
        .expect("health answers");
    assert_eq!(health, ServingStatus::NotServing);
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut client = v1::send_message_service_client::SendMessageServiceClient::new(channel);
    let status = client
        .send_message(message("", "ann", "early"))
        .await
        .expect_err("no broker");
    assert_eq!(status.code(), Code::Unavailable);

    let _nats = NatsServer::start_with(NatsOptions {
        port: Some(port),
        ..NatsOptions::default()
    });
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if client
            .send_message(message("", "ann", "later"))
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never became usable"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cancel.cancel();
    handle.await.expect("task").expect("clean stop");
}

/// The names reflection lists on a port, asked with `ListServices` over
/// both reflection protocols (v1 and the older v1alpha).
async fn reflected_services(addr: std::net::SocketAddr) -> (Vec<String>, Vec<String>) {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    // The two protocols' generated types are distinct but alike.
    macro_rules! list {
        ($pb:ident) => {{
            use tonic_reflection::pb::$pb as r;
            let request = r::ServerReflectionRequest {
                host: String::new(),
                message_request: Some(
                    r::server_reflection_request::MessageRequest::ListServices(String::new()),
                ),
            };
            let mut answers = r::server_reflection_client::ServerReflectionClient::new(
                channel.clone(),
            )
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .expect(stringify!(reflection $pb))
            .into_inner();
            match answers
                .message()
                .await
                .expect("answer")
                .and_then(|a| a.message_response)
            {
                Some(r::server_reflection_response::MessageResponse::ListServicesResponse(
                    list,
                )) => list.service.into_iter().map(|s| s.name).collect(),
                other => panic!("not a service list: {other:?}"),
            }
        }};
    }
    (list!(v1), list!(v1alpha))
}

/// Reflection lists what the port serves (a client browsing the send port
/// is not invited to call Subscribe there), over v1 and v1alpha; an
/// operator can turn it off.
#[tokio::test]
async fn reflection_lists_only_the_ports_own_services() {
    let nats = NatsServer::start();
    let send = start_send(send_config(&nats.url())).await;
    let all = start_all(all_config(&nats.url())).await;
    let sorted = |mut names: Vec<String>| {
        names.sort();
        names
    };
    for (service, own) in [
        (
            &send,
            [
                "ChatMessage.SendMessageService",
                "fastchat.v1.SendMessageService",
            ],
        ),
        (
            &all,
            [
                "ChatMessage.AllMessagesService",
                "fastchat.v1.AllMessagesService",
            ],
        ),
    ] {
        let (v1_names, alpha_names) = reflected_services(service.addr).await;
        let want = |reflection: &str| {
            let mut want: Vec<String> = own.iter().map(|s| (*s).to_owned()).collect();
            want.push("grpc.health.v1.Health".to_owned());
            want.push(reflection.to_owned());
            sorted(want)
        };
        assert_eq!(
            sorted(v1_names),
            want("grpc.reflection.v1.ServerReflection"),
            "v1 at {}",
            service.addr
        );
        assert_eq!(
            sorted(alpha_names),
            want("grpc.reflection.v1alpha.ServerReflection"),
            "v1alpha at {}",
            service.addr
        );
    }

    let mut config = send_config(&nats.url());
    config.grpc.reflection = false;
    let quiet = start_send(config).await;
    let channel = tonic::transport::Endpoint::from_shared(quiet.endpoint())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let status =
        tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(channel)
            .server_reflection_info(tokio_stream::iter(Vec::<
                tonic_reflection::pb::v1::ServerReflectionRequest,
            >::new()))
            .await
            .expect_err("reflection is off");
    assert_eq!(status.code(), Code::Unimplemented);
}

/// `grpc.max_request_bytes` bounds every service on the port, health
/// included (it used to accept 4 MiB requests), before anything is decoded.
#[tokio::test]
async fn oversized_requests_are_refused_by_every_service_on_the_port() {
    let nats = NatsServer::start();
    let send = start_send(send_config(&nats.url())).await;
    let channel = tonic::transport::Endpoint::from_shared(send.endpoint())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "x".repeat(100_000),
        })
        .await
        .expect_err("too large");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("grpc.max_request_bytes"),
        "{}",
        status.message()
    );
    // A normal one still works on the same connection.
    let ok = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("small request");
    assert_eq!(
        ok.into_inner().status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
}
