//! fastchat.v1 semantics beyond the basics: slow subscribers, expired
//! history (Gap), resuming on another replica, and subscription limits.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use fastchat_e2e::*;
use fastchat_proto::v1;
use tonic::Code;
use v1::subscribe_request::Start;
use v1::subscribe_response::Event;

const WAIT: Duration = Duration::from_secs(30);

async fn send_burst(send: &Service, room: &str, count: usize, workers: usize) -> Vec<u64> {
    let client = v1_send(send).await;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..workers {
        let mut client = client.clone();
        let room = room.to_owned();
        tasks.spawn(async move {
            let mut seqs = Vec::new();
            for i in (worker..count).step_by(workers) {
                let r = client
                    .send_message(message(&room, "ann", &format!("m{i}")))
                    .await
                    .expect("send");
                seqs.push(r.into_inner().message.expect("message").sequence);
            }
            seqs
        });
    }
    let mut acked = Vec::with_capacity(count);
    while let Some(seqs) = tasks.join_next().await {
        acked.extend(seqs.expect("worker"));
    }
    acked.sort_unstable();
    acked
}

/// A deliberately slow reader during a 10,000-message burst receives every
/// message, in order, although it falls far further behind than the live
/// buffer holds; a fast reader is not held back by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_catches_up_from_the_station_and_misses_nothing() {
    const MESSAGES: usize = 10_000;
    // The service's own count of catch-ups proves the slow reader really
    // fell behind the live feed on the server (not just in its transport).
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only metrics recorder of this test process");
    let nats = NatsServer::start();
    let send = start_send(send_config(&nats.url())).await;
    let mut config = all_config(&nats.url());
    config.subscriptions.live_buffer = 64;
    config.subscriptions.client_buffer = 16;
    let all = start_all(config).await;

    let mut fast = v1_all(&all)
        .await
        .subscribe(subscribe("flood", None))
        .await
        .expect("subscribe")
        .into_inner();
    let mut slow = v1_all_small_window(&all)
        .await
        .subscribe(subscribe("flood", None))
        .await
        .expect("subscribe")
        .into_inner();
    let slow_count = Arc::new(AtomicUsize::new(0));
    let slow_task = {
        let slow_count = Arc::clone(&slow_count);
        tokio::spawn(async move {
            let mut seqs = Vec::with_capacity(MESSAGES);
            tokio::time::timeout(Duration::from_secs(120), async {
                while seqs.len() < MESSAGES {
                    let response = slow
                        .message()
                        .await
                        .expect("slow stream ok")
                        .expect("not ended");
                    if let Some(Event::Message(m)) = response.event {
                        seqs.push(m.sequence);
                        slow_count.store(seqs.len(), Ordering::Relaxed);
                    }
                    // The slow part: a reader that needs a millisecond per message.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
            .await
            .unwrap_or_else(|_| panic!("slow reader got only {} messages", seqs.len()));
            seqs
        })
    };
    let fast_task = tokio::spawn(async move {
        sequences(&take(&mut fast, MESSAGES, Duration::from_secs(120)).await)
    });

    let acked = send_burst(&send, "flood", MESSAGES, 16).await;
    let fast_seqs = fast_task.await.expect("fast reader");
    let slow_when_fast_done = slow_count.load(Ordering::Relaxed);
    assert_eq!(fast_seqs, acked, "fast reader: every message, in order");
    let slow_seqs = slow_task.await.expect("slow reader");
    assert_eq!(slow_seqs, acked, "slow reader: every message, in order");
    eprintln!("when the fast reader had all {MESSAGES}, the slow one had {slow_when_fast_done}");
    let catch_ups: u64 = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == "fastchat_subscription_catchups_total")
        .map(|(.., value)| match value {
            metrics_util::debugging::DebugValue::Counter(n) => n,
            _ => 0,
        })
        .sum();
    eprintln!("the slow reader caught up from the station {catch_ups} times");
    assert!(
        catch_ups >= 1,
        "the slow reader never fell behind the live feed"
    );
    assert!(
        slow_when_fast_done + 64 * 4 < MESSAGES,
        "the slow reader was never far behind ({slow_when_fast_done}); the test proves nothing"
    );
}

#[tokio::test]
async fn expired_history_is_reported_as_a_gap_never_skipped_silently() {
    let nats = NatsServer::start();
    let mut send_cfg = send_config(&nats.url());
    let mut all_cfg = all_config(&nats.url());
    for station in [&mut send_cfg.station, &mut all_cfg.station] {
        station.max_age = Duration::from_secs(1);
        station.duplicate_window = Duration::from_secs(1);
    }
    let send = start_send(send_cfg).await;
    let all = start_all(all_cfg).await;
    let mut client = v1_send(&send).await;
    for i in 0..5 {
        client
            .send_message(message("r", "ann", &format!("old {i}")))
            .await
            .expect("send");
    }
    // Wait until the station has expired them.
    let mut reader = v1_all(&all).await;
    tokio::time::timeout(WAIT, async {
        loop {
            let page = reader
                .list_messages(v1::ListMessagesRequest {
                    room: "r".into(),
                    before_sequence: 0,
                    limit: 10,
                })
                .await
                .expect("list")
                .into_inner();
            if page.messages.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("messages expire");
    let r6 = client
        .send_message(message("r", "ann", "new"))
        .await
        .expect("send")
        .into_inner();
    let six = r6.message.expect("message").sequence;
    assert_eq!(six, 6);

    let mut stream = reader
        .subscribe(subscribe("r", Some(Start::AfterSequence(2))))
        .await
        .expect("subscribe")
        .into_inner();
    let events = take(&mut stream, 2, WAIT).await;
    match &events[0] {
        Event::Gap(gap) => assert_eq!((gap.from_sequence, gap.to_sequence), (3, 5)),
        other => panic!("expected a gap first, got {other:?}"),
    }
    assert_eq!(sequences(&events[1..]), vec![six]);
}

#[tokio::test]
async fn a_subscriber_resumes_on_another_replica_exactly_once() {
    let nats = NatsServer::start();
    let send = start_send(send_config(&nats.url())).await;
    let first = start_all(all_config(&nats.url())).await;
    let second = start_all(all_config(&nats.url())).await;
    let acked = send_burst(&send, "hop", 100, 4).await;

    let mut stream = v1_all(&first)
        .await
        .subscribe(subscribe("hop", None))
        .await
        .expect("subscribe")
        .into_inner();
    let head = sequences(&take(&mut stream, 40, WAIT).await);
    drop(stream);
    first.stop().await.expect("stop");
    let last_seen = *head.last().expect("some");
    let mut resumed = v1_all(&second)
        .await
        .subscribe(subscribe("hop", Some(Start::AfterSequence(last_seen))))
        .await
        .expect("subscribe")
        .into_inner();
    let tail = sequences(&take(&mut resumed, 60, WAIT).await);
    let whole: Vec<u64> = head.into_iter().chain(tail).collect();
    assert_eq!(whole, acked);
}

#[tokio::test]
async fn too_many_subscriptions_are_refused_with_resource_exhausted() {
    let nats = NatsServer::start();
    let mut config = all_config(&nats.url());
    config.subscriptions.max = 2;
    let all = start_all(config).await;
    let mut client = v1_all(&all).await;
    let a = client.subscribe(subscribe("", None)).await.expect("first");
    let b = client.subscribe(subscribe("", None)).await.expect("second");
    let status = client
        .subscribe(subscribe("", None))
        .await
        .expect_err("third refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    // Closing one frees its place.
    drop(a);
    tokio::time::timeout(WAIT, async {
        loop {
            if client.subscribe(subscribe("", None)).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("a place frees up");
    drop(b);
}
