//! Property test of the replay→live merge: for random histories across
//! many rooms, random start positions and room sets (one room, several, or
//! every room), messages arriving after subscribing and while subscribing,
//! a subscription delivers exactly what a simple model says — the asked-for
//! history then the live messages, in sequence order, each once. Several
//! subscriptions of one case run at once, so each room's live feed serves
//! several members and some rooms none.

use std::{sync::Mutex, time::Duration};

use fastchat_e2e::*;
use fastchat_proto::v1;
use proptest::{
    prelude::*,
    test_runner::{Config, TestCaseError, TestRunner},
};
use v1::subscribe_request::Start;

/// One broker and one instance of each service, shared by every case: cases
/// use their own rooms, and the model keeps the whole station's log. Owned
/// by the test (not a static), so the broker is killed when it ends.
struct World {
    runtime: tokio::runtime::Runtime,
    _nats: NatsServer,
    send: Service,
    all: Service,
    /// (sequence, room) of everything stored, in order.
    log: Mutex<Vec<(u64, String)>>,
}

impl World {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let nats = NatsServer::start();
        let (send, all) = runtime.block_on(async {
            (
                start_send(send_config(&nats.url())).await,
                start_all(all_config(&nats.url())).await,
            )
        });
        Self {
            runtime,
            _nats: nats,
            send,
            all,
            log: Mutex::new(Vec::new()),
        }
    }
}

#[derive(Debug, Clone)]
enum StartCase {
    All,
    /// After the k-th stored message of this case (0 = before the first).
    After(usize),
    Last(u32),
    New,
}

fn start_case() -> impl Strategy<Value = StartCase> {
    prop_oneof![
        Just(StartCase::All),
        (0usize..40).prop_map(StartCase::After),
        (1u32..30).prop_map(StartCase::Last),
        Just(StartCase::New),
    ]
}

async fn send_all(world: &World, rooms: &[String], picks: &[usize]) -> Vec<(u64, String)> {
    let mut client = v1_send(&world.send).await;
    let mut stored = Vec::new();
    for &pick in picks {
        let room = &rooms[pick];
        let r = client
            .send_message(message(room, "prop", "x"))
            .await
            .expect("send")
            .into_inner();
        let sequence = r.message.expect("message").sequence;
        world
            .log
            .lock()
            .expect("log")
            .push((sequence, room.clone()));
        stored.push((sequence, room.clone()));
    }
    stored
}

#[test]
fn a_subscription_delivers_exactly_the_model() {
    let world = World::start();
    let mut runner = TestRunner::new(Config {
        cases: 24,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        proptest::collection::vec(0usize..ROOMS, 0..60),
        proptest::collection::vec(0usize..ROOMS, 0..20),
        proptest::collection::vec(
            (
                proptest::collection::btree_set(0usize..ROOMS, 0..4),
                start_case(),
            ),
            1..4,
        ),
    );
    let case = std::sync::atomic::AtomicUsize::new(0);
    let result = runner.run(&strategy, |(history, live, subscribers)| {
        let case = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        world
            .runtime
            .block_on(check(&world, case, &history, &live, &subscribers))
    });
    // Services first, while the runtime that runs them is still here.
    world.runtime.block_on(async {
        drop(world.send);
        drop(world.all);
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

/// Rooms of one case.
const ROOMS: usize = 8;

/// A subscriber of a case: its rooms (indexes; none = every room) and start.
type Subscriber = (std::collections::BTreeSet<usize>, StartCase);

async fn check(
    world: &World,
    case: usize,
    history: &[usize],
    live: &[usize],
    subscribers: &[Subscriber],
) -> Result<(), TestCaseError> {
    let rooms: Vec<String> = (0..ROOMS).map(|i| format!("p{case}-r{i}")).collect();
    let stored = send_all(world, &rooms, history).await;
    let log = world.log.lock().expect("log").clone();

    // Open every subscriber, with what the model says its history is.
    let mut open = Vec::new();
    for (picked, start) in subscribers {
        let names: Vec<String> = picked.iter().map(|i| rooms[*i].clone()).collect();
        let wants = |room: &str| names.is_empty() || names.iter().any(|n| n == room);
        let matching: Vec<(u64, String)> = log.iter().filter(|(_, r)| wants(r)).cloned().collect();
        let (proto_start, want) = model(start, &matching, &log, &stored, names.len() > 1);
        let (room, more) = match names.split_first() {
            Some((first, more)) => (first.clone(), more.to_vec()),
            None => (String::new(), Vec::new()),
        };
        let stream = v1_all(&world.all)
            .await
            .subscribe(v1::SubscribeRequest {
                room,
                rooms: more,
                start: proto_start,
            })
            .await
            .expect("subscribe")
            .into_inner();
        open.push((names, start.clone(), stream, want));
    }
    // Half the live messages are sent while the histories are read, the
    // rest once each subscriber has had its history.
    let (during, after) = live.split_at(live.len() / 2);
    let later = send_all(world, &rooms, during).await;
    let mut got = Vec::new();
    for (_, _, stream, want) in &mut open {
        got.push(sequences(
            &take(stream, want.len(), Duration::from_secs(20)).await,
        ));
    }
    let mut later = later;
    later.extend(send_all(world, &rooms, after).await);
    for ((names, start, stream, want), got) in open.iter_mut().zip(got) {
        let wants = |room: &str| names.is_empty() || names.iter().any(|n| n == room);
        let live_want: Vec<u64> = later
            .iter()
            .filter(|(_, r)| wants(r))
            .map(|(s, _)| *s)
            .collect();
        let mut got = got;
        got.extend(sequences(
            &take(stream, live_want.len(), Duration::from_secs(20)).await,
        ));
        let mut want = want.clone();
        want.extend(live_want);
        prop_assert_eq!(got, want, "rooms {:?} start {:?}", names, start);
    }
    Ok(())
}

/// The start as sent, and the history it asks for: of `matching` (the
/// subscriber's rooms' messages in the log), given the whole `log` and this
/// case's `stored` messages. With several rooms, `last` counts per room.
fn model(
    start: &StartCase,
    matching: &[(u64, String)],
    log: &[(u64, String)],
    stored: &[(u64, String)],
    several_rooms: bool,
) -> (Option<Start>, Vec<u64>) {
    let sequences = |m: &[(u64, String)]| m.iter().map(|(s, _)| *s).collect::<Vec<_>>();
    match *start {
        StartCase::All => (None, sequences(matching)),
        StartCase::After(k) => {
            let after = if k == 0 || stored.is_empty() {
                log.first().map_or(0, |(s, _)| s - 1)
            } else {
                stored[(k - 1).min(stored.len() - 1)].0
            };
            (
                Some(Start::AfterSequence(after)),
                sequences(matching)
                    .into_iter()
                    .filter(|s| *s > after)
                    .collect(),
            )
        }
        StartCase::Last(n) if several_rooms => {
            let mut per_room: std::collections::BTreeMap<&str, Vec<u64>> = Default::default();
            for (s, r) in matching {
                per_room.entry(r.as_str()).or_default().push(*s);
            }
            let mut want: Vec<u64> = per_room
                .values()
                .flat_map(|seqs| seqs[seqs.len().saturating_sub(n as usize)..].to_vec())
                .collect();
            want.sort_unstable();
            (Some(Start::Last(n)), want)
        }
        StartCase::Last(n) => (
            Some(Start::Last(n)),
            sequences(&matching[matching.len().saturating_sub(n as usize)..]),
        ),
        StartCase::New => (Some(Start::NewOnly(true)), Vec::new()),
    }
}
