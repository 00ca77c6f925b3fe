//! The broker's disk fills under load and empties again (`AUDIT.md` B7,
//! under load): a nats-server with a small JetStream store
//! (`max_file_store`), send-service and all-messages-service in-process,
//! senders sending all the time (each send with a `client_message_id`,
//! retried with the same id until acknowledged) and a subscriber following
//! the room. Another stream on the same broker is filled by raw publishes
//! until the store is full; sends must then be refused RESOURCE_EXHAUSTED or
//! UNAVAILABLE with a message saying why (never INTERNAL, never OK for a
//! message that is not stored); the filler is deleted and sends succeed
//! again without a restart. Then nothing acknowledged is lost or
//! duplicated: the station holds exactly the acknowledged messages, once,
//! and the subscriber received each exactly once, in order.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use fastchat_e2e::*;
use fastchat_proto::v1;
use tokio::time::{Instant, MissedTickBehavior};
use tonic::{Code, transport::Channel};
use v1::{
    send_message_service_client::SendMessageServiceClient, subscribe_request::Start,
    subscribe_response::Event,
};

const ROOM: &str = "disk";
const SENDERS: usize = 4;
/// Sends per second per sender, at most (one at a time each).
const RATE: u64 = 25;
/// The broker's whole store, and the station's share of it (well below,
/// so the station itself never fills it: only the filler stream does).
const STORE: &str = "8MB";
const STATION_BYTES: u64 = 2 << 20;
/// How long the store stays full.
const FULL_FOR: Duration = Duration::from_secs(4);
/// A message not acknowledged this long after its first attempt fails the
/// test (inside the station's 2-minute duplicate window).
const MESSAGE_WITHIN: Duration = Duration::from_secs(30);
/// Pause before retrying a refused send.
const RETRY_AFTER: Duration = Duration::from_millis(100);

/// One answer a sender got.
#[derive(Debug)]
enum Answer {
    Ack {
        sequence: u64,
        text: String,
        duplicate: bool,
    },
    Refused {
        code: Code,
        message: String,
    },
}

/// What one sender saw: every answer, when it came.
#[derive(Debug, Default)]
struct SendLog {
    answers: Vec<(Instant, Answer)>,
    /// The longest time from a message's first attempt to its
    /// acknowledgement.
    worst_stall: Duration,
    /// A message never acknowledged in time (the test fails).
    gave_up: Option<String>,
}

/// Sends `<author>-0`, `<author>-1`, ... until `stop`, each with its text as
/// `client_message_id`, retrying any failure with the same id.
async fn send_load(
    author: String,
    mut client: SendMessageServiceClient<Channel>,
    stop: Arc<AtomicBool>,
) -> SendLog {
    let mut log = SendLog::default();
    let mut ticks = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut index = 0usize;
    while !stop.load(Ordering::Relaxed) {
        ticks.tick().await;
        let text = format!("{author}-{index}");
        let request = v1::SendMessageRequest {
            room: ROOM.into(),
            author: author.clone(),
            text: text.clone(),
            client_message_id: text.clone(),
            client_time_ms: 0,
        };
        let first_attempt = Instant::now();
        loop {
            let outcome = tokio::time::timeout(
                Duration::from_secs(10),
                client.send_message(request.clone()),
            )
            .await;
            let answer = match outcome {
                Ok(Ok(response)) => {
                    let response = response.into_inner();
                    let Some(stored) = response.message else {
                        log.gave_up = Some(format!("{text}: an OK send without the message"));
                        return log;
                    };
                    Answer::Ack {
                        sequence: stored.sequence,
                        text: stored.text,
                        duplicate: response.duplicate,
                    }
                }
                Ok(Err(status)) => Answer::Refused {
                    code: status.code(),
                    message: status.message().to_owned(),
                },
                Err(_) => Answer::Refused {
                    code: Code::DeadlineExceeded,
                    message: "no answer within 10 s (client time-out)".into(),
                },
            };
            let acked = matches!(answer, Answer::Ack { .. });
            log.answers.push((Instant::now(), answer));
            if acked {
                log.worst_stall = log.worst_stall.max(first_attempt.elapsed());
                break;
            }
            if first_attempt.elapsed() > MESSAGE_WITHIN {
                log.gave_up = Some(format!("{text} not acknowledged within {MESSAGE_WITHIN:?}"));
                return log;
            }
            tokio::time::sleep(RETRY_AFTER).await;
        }
        index += 1;
    }
    log
}

/// What the subscriber received: (sequence, text) in arrival order, and how
/// its streams ended.
#[derive(Debug, Default)]
struct Delivery {
    messages: Vec<(u64, String)>,
    /// Statuses that ended a stream (it resumed with `after_sequence`).
    ends: Vec<String>,
    gaps: Vec<String>,
}

/// Follows the room from its first message, resuming after the last
/// sequence received whenever a stream ends, until `target` (the last
/// acknowledged sequence, once known) has arrived or 30 s after it is known.
async fn follow(all: String, target: tokio::sync::watch::Receiver<Option<u64>>) -> Delivery {
    let mut delivery = Delivery::default();
    let mut deadline: Option<Instant> = None;
    let channel = tonic::transport::Endpoint::from_shared(all)
        .expect("endpoint")
        .connect_lazy();
    let mut client = v1::all_messages_service_client::AllMessagesServiceClient::new(channel);
    loop {
        let last = delivery.messages.last().map_or(0, |m| m.0);
        let done = |last: u64, deadline: &mut Option<Instant>| {
            let want = *target.borrow();
            want.is_some_and(|want| {
                let at = *deadline.get_or_insert_with(|| Instant::now() + Duration::from_secs(30));
                last >= want || Instant::now() > at
            })
        };
        if done(last, &mut deadline) {
            return delivery;
        }
        let request = subscribe(ROOM, (last > 0).then_some(Start::AfterSequence(last)));
        let mut stream = match client.subscribe(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => {
                delivery.ends.push(format!("subscribe: {status:?}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        loop {
            let last = delivery.messages.last().map_or(0, |m| m.0);
            if done(last, &mut deadline) {
                return delivery;
            }
            match tokio::time::timeout(Duration::from_millis(500), stream.message()).await {
                Err(_) => {}
                Ok(Ok(Some(response))) => match response.event {
                    Some(Event::Message(m)) => delivery.messages.push((m.sequence, m.text)),
                    Some(Event::Gap(gap)) => delivery.gaps.push(format!("{gap:?}")),
                    Some(Event::CaughtUp(_) | Event::Heartbeat(_)) | None => {}
                },
                Ok(Ok(None)) => {
                    delivery.ends.push("ended with OK".into());
                    break;
                }
                Ok(Err(status)) => {
                    delivery
                        .ends
                        .push(format!("{:?}: {}", status.code(), status.message()));
                    break;
                }
            }
        }
    }
}

/// Fills the broker's store with a stream of its own (`filler`, no limits)
/// by raw publishes, smaller and smaller ones once big ones no longer fit,
/// until not even 64 bytes are taken. Returns the bytes it stored and the
/// broker's last refusal.
async fn fill_the_store(js: &async_nats::jetstream::Context) -> (usize, String) {
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "filler".into(),
        subjects: vec!["filler.>".into()],
        ..Default::default()
    })
    .await
    .expect("the filler stream");
    let mut stored = 0;
    let mut refusal = String::new();
    for size in [64 * 1024, 4096, 256, 64] {
        let payload = bytes::Bytes::from(vec![b'f'; size]);
        loop {
            let ack = match js.publish("filler.x", payload.clone()).await {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match ack {
                Ok(_) => stored += size,
                Err(e) => {
                    refusal = e.to_string();
                    break;
                }
            }
        }
    }
    (stored, refusal)
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[expect(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
async fn a_full_store_under_load_is_refused_clearly_and_recovers_without_a_restart() {
    let test_started = Instant::now();
    let nats = NatsServer::start_with(NatsOptions {
        config: Some(format!("jetstream {{ max_file_store: {STORE} }}\n")),
        monitor_port: Some(0),
        ..NatsOptions::default()
    });
    let mut config = send_config(&nats.url());
    config.station.max_bytes = STATION_BYTES;
    let send = start_send(config).await;
    let mut config = all_config(&nats.url());
    config.station.max_bytes = STATION_BYTES;
    let all = start_all(config).await;

    let (target_tx, target_rx) = tokio::sync::watch::channel(None);
    let subscriber = tokio::spawn(follow(all.endpoint(), target_rx));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for i in 0..SENDERS {
        let client = v1_send(&send).await;
        senders.push(tokio::spawn(send_load(
            format!("sender{i}"),
            client,
            Arc::clone(&stop),
        )));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The store fills: another stream on the same broker takes what is left.
    let js = async_nats::jetstream::new(
        async_nats::connect(nats.url())
            .await
            .expect("connect the filler"),
    );
    let fill_started = Instant::now();
    let (filled, refusal) = tokio::time::timeout(Duration::from_secs(30), fill_the_store(&js))
        .await
        .expect("the store fills within 30 s");
    let full_at = Instant::now();
    eprintln!(
        "full disk: the filler stored {filled} bytes in {:?}, then: {refusal}",
        full_at - fill_started
    );
    tokio::time::sleep(FULL_FOR).await;

    // Space returns: the filler goes; the services are not touched.
    js.delete_stream("filler")
        .await
        .expect("delete the filler stream");
    let returned_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let mut logs = Vec::new();
    for sender in senders {
        logs.push(
            tokio::time::timeout(MESSAGE_WITHIN + Duration::from_secs(15), sender)
                .await
                .expect("senders stop")
                .expect("sender task"),
        );
    }

    // Every answer, checked.
    let mut violations: Vec<String> = logs.iter().filter_map(|l| l.gave_up.clone()).collect();
    let mut by_sequence: BTreeMap<u64, String> = BTreeMap::new();
    let mut refused: BTreeMap<String, usize> = BTreeMap::new();
    let (mut acked_while_full, mut duplicates) = (0, 0);
    let mut recovery = Duration::ZERO;
    for (sender, log) in logs.iter().enumerate() {
        let mut next = 0;
        let mut recovered = false;
        for (at, answer) in &log.answers {
            match answer {
                Answer::Ack {
                    sequence,
                    text,
                    duplicate,
                } => {
                    let want = format!("sender{sender}-{next}");
                    if *text != want {
                        violations.push(format!("the ack of {want} is {text:?} at {sequence}"));
                    }
                    next += 1;
                    duplicates += usize::from(*duplicate);
                    if let Some(other) = by_sequence.insert(*sequence, text.clone()) {
                        violations
                            .push(format!("sequence {sequence} acked for {other} and {text}"));
                    }
                    // The last second before space returned: the store was full.
                    if *at > returned_at - Duration::from_secs(1) && *at < returned_at {
                        acked_while_full += 1;
                    }
                    if *at >= returned_at && !recovered {
                        recovered = true;
                        recovery = recovery.max(*at - returned_at);
                    }
                }
                Answer::Refused { code, message } => {
                    *refused.entry(format!("{code:?}")).or_default() += 1;
                    let clear = match code {
                        Code::ResourceExhausted => {
                            message.contains("the broker has no room")
                                && message.contains("station.max_bytes")
                                && message.contains("retry later with the same client_message_id")
                        }
                        Code::Unavailable => {
                            message.contains("retry with the same client_message_id")
                        }
                        _ => false,
                    };
                    if !clear {
                        violations.push(format!("sender{sender}: refused {code:?}: {message}"));
                    }
                    if *at > returned_at + Duration::from_secs(2) {
                        violations.push(format!(
                            "sender{sender}: still refused {:?} after space returned: {code:?}: \
                             {message}",
                            *at - returned_at
                        ));
                    }
                }
            }
        }
        if !recovered {
            violations.push(format!(
                "sender{sender}: no send acknowledged after space returned"
            ));
        }
    }
    let acknowledged = by_sequence.len() as u64;
    let expected: Vec<u64> = by_sequence.keys().copied().collect();
    if expected != (1..=acknowledged).collect::<Vec<_>>() {
        violations.push(format!(
            "acknowledged sequences are not 1..={acknowledged}: {:?}..",
            &expected[..expected.len().min(20)]
        ));
    }
    if refused.values().sum::<usize>() == 0 {
        violations.push("no send was refused: the store never filled for them".into());
    }
    if acked_while_full > 0 {
        violations.push(format!(
            "{acked_while_full} send(s) acknowledged in the last second of a full store"
        ));
    }

    // The station holds exactly the acknowledged messages.
    let station = tokio::task::block_in_place(|| nats.stream_report("chat"))
        .expect("the broker's monitoring")
        .expect("the station");
    if station.messages != acknowledged
        || station.first_sequence != 1
        || station.last_sequence != acknowledged
    {
        violations.push(format!(
            "the station holds {} messages ({}..={}), {acknowledged} were acknowledged",
            station.messages, station.first_sequence, station.last_sequence
        ));
    }

    // The subscriber received each acknowledged message once, in order.
    target_tx.send_replace(Some(acknowledged));
    let delivery = tokio::time::timeout(Duration::from_secs(45), subscriber)
        .await
        .expect("the subscriber stops")
        .expect("subscriber task");
    let got: Vec<u64> = delivery.messages.iter().map(|m| m.0).collect();
    if got != expected {
        violations.push(format!(
            "the subscriber received {} messages, not the {acknowledged} acknowledged once in \
             order (first {:?})",
            got.len(),
            &got[..got.len().min(10)]
        ));
    }
    if let Some((sequence, text)) = delivery
        .messages
        .iter()
        .find(|(s, t)| by_sequence.get(s).is_some_and(|want| want != t))
    {
        violations.push(format!("sequence {sequence} delivered as {text:?}"));
    }
    violations.extend(delivery.gaps.iter().map(|g| format!("subscriber: {g}")));

    let worst_stall = logs.iter().map(|l| l.worst_stall).max().unwrap_or_default();
    eprintln!(
        "full disk report: acknowledged {acknowledged} ({duplicates} answered as duplicates of \
         an earlier attempt), refused attempts (retried) by code {refused:?}; store full for \
         {:?}; first acknowledgement per sender after space returned: worst {}; worst send \
         stall (first attempt to acknowledgement) {}; subscriber received {}, its stream ended \
         {} time(s) {:?}; test took {:?}",
        returned_at - full_at,
        ms(recovery),
        ms(worst_stall),
        delivery.messages.len(),
        delivery.ends.len(),
        delivery.ends.iter().take(3).collect::<Vec<_>>(),
        test_started.elapsed()
    );
    assert!(
        violations.is_empty(),
        "{} violation(s):\n  {}",
        violations.len(),
        violations.join("\n  ")
    );
    assert!(acknowledged > 0, "nothing was acknowledged");
}
