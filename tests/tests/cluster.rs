//! Failover on a 3-node NATS JetStream cluster (the prod overlay's topology, on
//! loopback) with the station at R3: killing the stream leader under a steady
//! send load loses no acknowledged message, subscribers on both all-messages
//! replicas get every acknowledged message exactly once and in order, and the
//! restarted node catches up.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use fastchat_e2e::*;
use fastchat_proto::v1;
use fastchat_test_support::NatsCluster;
use tokio::{
    sync::watch,
    task::block_in_place,
    time::{Instant, MissedTickBehavior},
};
use tonic::{Code, transport::Channel};
use v1::{
    all_messages_service_client::AllMessagesServiceClient,
    send_message_service_client::SendMessageServiceClient, subscribe_request::Start,
    subscribe_response::Event,
};

const STATION: &str = "chat";
const ROOM: &str = "failover";
/// Sends per second, at most (one sender, one send at a time).
const RATE: u64 = 300;
/// Load before the leader is killed, and after sends have resumed.
const BEFORE_KILL: Duration = Duration::from_secs(2);
const AFTER_RECOVERY: Duration = Duration::from_secs(2);
/// Generous bounds for a loaded 2-core machine; a JetStream election takes
/// seconds (raft election timeouts are 4-9 s in nats-server).
const RECOVERY_WITHIN: Duration = Duration::from_secs(30);
const MESSAGE_WITHIN: Duration = Duration::from_secs(30);
const DELIVERY_WITHIN: Duration = Duration::from_secs(30);
const CATCH_UP_WITHIN: Duration = Duration::from_secs(30);

/// One acknowledged message.
#[derive(Debug)]
struct Ack {
    sequence: u64,
    duplicate: bool,
}

/// What the sender saw.
#[derive(Debug, Default)]
struct SendReport {
    acks: Vec<Ack>,
    /// Failed attempts, each retried with the same client message id.
    failures: Vec<(Code, String)>,
    /// Longest time between two consecutive acknowledgements.
    longest_pause: Duration,
}

/// Sends `m-0`, `m-1`, ... one at a time until `stop`, retrying each failed
/// send with the same client message id until it is stored. Reports in
/// `recovered` when the first send attempted after the kill (`killed`) was
/// acknowledged.
async fn send_load(
    mut client: SendMessageServiceClient<Channel>,
    stop: Arc<AtomicBool>,
    killed: watch::Receiver<Option<Instant>>,
    recovered: watch::Sender<Option<Instant>>,
) -> SendReport {
    let mut report = SendReport::default();
    let mut ticks = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_ack = Instant::now();
    let mut index = 0usize;
    while !stop.load(Ordering::Relaxed) {
        ticks.tick().await;
        let mut request = message(ROOM, "load", &format!("m-{index}"));
        request.client_message_id = format!("m-{index}");
        let deadline = Instant::now() + MESSAGE_WITHIN;
        loop {
            let started = Instant::now();
            // send.timeout (3 s) bounds the service's answer; this is a backstop.
            let outcome = tokio::time::timeout(
                Duration::from_secs(15),
                client.send_message(request.clone()),
            )
            .await
            .unwrap_or_else(|_| panic!("send-service did not answer m-{index} in 15 s"));
            match outcome {
                Ok(response) => {
                    let response = response.into_inner();
                    let stored = response.message.expect("a send answers the stored message");
                    let now = Instant::now();
                    report.longest_pause = report.longest_pause.max(now - last_ack);
                    last_ack = now;
                    let killed_at = *killed.borrow();
                    if killed_at.is_some_and(|k| started > k) && recovered.borrow().is_none() {
                        recovered.send_replace(Some(now));
                    }
                    report.acks.push(Ack {
                        sequence: stored.sequence,
                        duplicate: response.duplicate,
                    });
                    break;
                }
                Err(status) => {
                    report
                        .failures
                        .push((status.code(), status.message().to_owned()));
                    assert!(
                        Instant::now() < deadline,
                        "m-{index} not stored within {MESSAGE_WITHIN:?}; last error: {status}"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        index += 1;
    }
    report
}

/// What one subscriber received.
#[derive(Debug, Default)]
struct Delivery {
    sequences: Vec<u64>,
    texts: Vec<String>,
    /// Why each resubscription was needed.
    resubscribes: Vec<String>,
}

/// Reads `stream` until the message with sequence `target` (known once the
/// load has stopped, with a deadline) has arrived, or the deadline passes. A
/// stream that ends
/// (UNAVAILABLE with a resume cursor, as documented) is resumed with
/// `after_sequence` = the last sequence received.
async fn receive(
    mut client: AllMessagesServiceClient<Channel>,
    stream: tonic::Streaming<v1::SubscribeResponse>,
    target: watch::Receiver<Option<(u64, Instant)>>,
) -> Delivery {
    let mut delivery = Delivery::default();
    let mut stream = Some(stream);
    // Bounded even if the test never sets the target.
    let backstop = Instant::now() + Duration::from_secs(120);
    let done = |d: &Delivery| {
        let target = *target.borrow();
        let now = Instant::now();
        now > backstop
            || target.is_some_and(|(last, deadline)| {
                d.sequences.last().copied().unwrap_or(0) >= last || now > deadline
            })
    };
    while !done(&delivery) {
        let Some(current) = stream.as_mut() else {
            assert!(
                delivery.resubscribes.len() < 100,
                "resubscribed 100 times: {:?}",
                delivery.resubscribes
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            let after = delivery.sequences.last().copied().unwrap_or(0);
            let request = v1::SubscribeRequest {
                rooms: Vec::new(),
                room: ROOM.into(),
                start: (after > 0).then_some(Start::AfterSequence(after)),
            };
            match tokio::time::timeout(Duration::from_secs(10), client.subscribe(request)).await {
                Ok(Ok(response)) => stream = Some(response.into_inner()),
                Ok(Err(status)) => {
                    assert_eq!(status.code(), Code::Unavailable, "resubscribe: {status}");
                    delivery.resubscribes.push(format!("refused: {status}"));
                }
                Err(_) => delivery.resubscribes.push("subscribe timed out".into()),
            }
            continue;
        };
        match tokio::time::timeout(Duration::from_millis(500), current.message()).await {
            Err(_) => {} // nothing for a while: check the target and the deadline
            Ok(Ok(Some(response))) => match response.event {
                Some(Event::Message(m)) => {
                    delivery.sequences.push(m.sequence);
                    delivery.texts.push(m.text);
                }
                Some(Event::Gap(gap)) => panic!("unexpected gap {gap:?}: nothing expires here"),
                Some(Event::CaughtUp(_) | Event::Heartbeat(_)) | None => {}
            },
            Ok(Ok(None)) => {
                delivery.resubscribes.push("stream ended".into());
                stream = None;
            }
            Ok(Err(status)) => {
                assert_eq!(
                    status.code(),
                    Code::Unavailable,
                    "a subscription ends only with UNAVAILABLE: {status}"
                );
                delivery.resubscribes.push(status.message().to_owned());
                stream = None;
            }
        }
    }
    delivery
}

/// How `got` differs from `want` (both sequence lists), briefly.
fn difference(want: &[u64], got: &[u64]) -> Option<String> {
    if want == got {
        return None;
    }
    let first = want
        .iter()
        .zip(got)
        .position(|(w, g)| w != g)
        .unwrap_or(want.len().min(got.len()));
    let around = |v: &[u64]| v[first.saturating_sub(2)..(first + 3).min(v.len())].to_vec();
    Some(format!(
        "{} expected, {} received; first difference at index {first}: expected {:?}, received \
         {:?}",
        want.len(),
        got.len(),
        around(want),
        around(got)
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_stream_leader_under_load_loses_no_acknowledged_message() {
    let test_started = Instant::now();
    let mut cluster = block_in_place(|| NatsCluster::start(3));
    let urls = cluster.urls();
    eprintln!("cluster of 3 up in {:?}: {urls}", test_started.elapsed());

    // The test nodes have a 1 GB store (the station's 4 GiB default would not
    // fit; the prod overlay's nodes have 40 GB).
    let mut config = send_config(&urls);
    config.station.replicas = 3;
    config.station.max_bytes = 256 << 20;
    let send = start_send(config).await;
    let mut config = all_config(&urls);
    config.station.replicas = 3;
    config.station.max_bytes = 256 << 20;
    let replicas = [start_all(config.clone()).await, start_all(config).await];
    block_in_place(|| cluster.wait_stream_leader(STATION, Duration::from_secs(15)));

    // Subscribers on both replicas, subscribed before any message is sent.
    let (target_tx, target_rx) = watch::channel(None);
    let mut subscribers = Vec::new();
    for service in &replicas {
        let mut client = v1_all(service).await;
        let stream = client
            .subscribe(v1::SubscribeRequest {
                rooms: Vec::new(),
                room: ROOM.into(),
                start: None,
            })
            .await
            .expect("subscribe")
            .into_inner();
        subscribers.push(tokio::spawn(receive(client, stream, target_rx.clone())));
    }

    // Steady load; kill the stream leader in the middle of it.
    let stop = Arc::new(AtomicBool::new(false));
    let (killed_tx, killed_rx) = watch::channel(None);
    let (recovered_tx, mut recovered_rx) = watch::channel(None);
    let sender = tokio::spawn(send_load(
        v1_send(&send).await,
        Arc::clone(&stop),
        killed_rx,
        recovered_tx,
    ));
    tokio::time::sleep(BEFORE_KILL).await;
    let leader = block_in_place(|| cluster.wait_stream_leader(STATION, Duration::from_secs(10)));
    let leader_name = cluster.node(leader).name().unwrap_or("?").to_owned();
    let killed_at = Instant::now();
    block_in_place(|| cluster.node_mut(leader).stop());
    killed_tx.send_replace(Some(killed_at));

    let recovered = tokio::time::timeout(RECOVERY_WITHIN, recovered_rx.wait_for(Option::is_some))
        .await
        .map(|r| r.ok().and_then(|at| *at));
    let Ok(Some(recovered_at)) = recovered else {
        stop.store(true, Ordering::Relaxed);
        // A panic in the sender explains more than "no recovery".
        let report = sender.await.expect("sender task");
        panic!(
            "no send succeeded within {RECOVERY_WITHIN:?} after killing {leader_name}; last \
             failures: {:?}",
            report.failures.iter().rev().take(3).collect::<Vec<_>>()
        );
    };
    let gap = recovered_at - killed_at;
    let new_leader =
        block_in_place(|| cluster.wait_stream_leader(STATION, Duration::from_secs(10)));
    tokio::time::sleep(AFTER_RECOVERY).await;
    stop.store(true, Ordering::Relaxed);
    let report = tokio::time::timeout(Duration::from_secs(40), sender)
        .await
        .expect("the sender stops")
        .expect("sender task");

    let acked: Vec<u64> = report.acks.iter().map(|a| a.sequence).collect();
    let acknowledged = acked.len();
    let last = acked.last().copied().unwrap_or(0);
    target_tx.send_replace(Some((last, Instant::now() + DELIVERY_WITHIN)));
    let mut deliveries = Vec::new();
    for subscriber in subscribers {
        deliveries.push(
            tokio::time::timeout(DELIVERY_WITHIN + Duration::from_secs(15), subscriber)
                .await
                .expect("subscribers stop by their deadline")
                .expect("subscriber task"),
        );
    }

    let failed_attempts = report.failures.len();
    let duplicates = report.acks.iter().filter(|a| a.duplicate).count();
    eprintln!(
        "killed stream leader {leader_name}; new leader {}; failover gap (kill -> first send \
         attempted after it acknowledged) {gap:?}; longest pause between acks {:?}",
        cluster.node(new_leader).name().unwrap_or("?"),
        report.longest_pause,
    );
    eprintln!(
        "sent {acknowledged} messages in {} attempts ({failed_attempts} failed attempts, \
         retried with the same client_message_id); acknowledged {acknowledged} ({duplicates} \
         answered as duplicates of an earlier attempt); delivered {:?} (per all-messages \
         replica); resubscriptions {:?}",
        acknowledged + failed_attempts,
        deliveries
            .iter()
            .map(|d| d.sequences.len())
            .collect::<Vec<_>>(),
        deliveries
            .iter()
            .map(|d| d.resubscribes.clone())
            .collect::<Vec<_>>(),
    );

    assert!(acknowledged > 0, "nothing was acknowledged");
    // One sender, one send at a time, each retried with its id until stored:
    // the station holds exactly the acknowledged messages, in send order.
    let expected: Vec<u64> = (1..=u64::try_from(acknowledged).expect("fits")).collect();
    if let Some(difference) = difference(&expected, &acked) {
        panic!(
            "acknowledged sequences must be 1..=n in send order (a gap or a repeat means a \
             message was stored twice or lost): {difference}"
        );
    }
    let state = block_in_place(|| cluster.node(new_leader).stream_report(STATION))
        .expect("leader's /jsz")
        .expect("the leader holds the station");
    assert_eq!(
        (state.messages, state.last_sequence),
        (last, last),
        "the station holds exactly the acknowledged messages"
    );
    for (replica, delivery) in deliveries.iter().enumerate() {
        if let Some(difference) = difference(&acked, &delivery.sequences) {
            panic!(
                "replica {replica} did not deliver every acknowledged message exactly once, in \
                 order: {difference}"
            );
        }
        for (i, text) in delivery.texts.iter().enumerate() {
            assert_eq!(text, &format!("m-{i}"), "replica {replica}: message {i}");
        }
    }

    // The killed node comes back and catches up from the others.
    let restarted_at = Instant::now();
    block_in_place(|| cluster.node_mut(leader).restart());
    let caught_up = loop {
        let report = block_in_place(|| cluster.node(leader).stream_report(STATION));
        if let Ok(Some(report)) = &report
            && report.last_sequence == last
            && report.messages == last
        {
            break restarted_at.elapsed();
        }
        assert!(
            restarted_at.elapsed() < CATCH_UP_WITHIN,
            "{leader_name} did not catch up to sequence {last} within {CATCH_UP_WITHIN:?}: \
             {report:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!(
        "{leader_name} restarted and caught up to sequence {last} in {caught_up:?}; test took \
         {:?}",
        test_started.elapsed()
    );

    send.stop().await.expect("send-service stops cleanly");
    for service in replicas {
        service
            .stop()
            .await
            .expect("all-messages-service stops cleanly");
    }

    // Checked last so that a wrong status code does not hide the checks above.
    let mut unexpected: Vec<(Code, &str, usize)> = Vec::new();
    for (code, text) in &report.failures {
        if *code == Code::Unavailable {
            continue;
        }
        match unexpected
            .iter_mut()
            .find(|(c, t, _)| c == code && *t == text.as_str())
        {
            Some((_, _, count)) => *count += 1,
            None => unexpected.push((*code, text, 1)),
        }
    }
    assert!(
        unexpected.is_empty(),
        "failed sends must be UNAVAILABLE (retry with the same client_message_id); got (code, \
         message, count): {unexpected:?}"
    );
}
