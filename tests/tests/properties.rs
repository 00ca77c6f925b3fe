//! Property test of the replay→live merge: for random histories across
//! rooms, random start positions and room filters, and messages arriving
//! after subscribing, a subscription delivers exactly what a simple model
//! says — the asked-for history then the live messages, in sequence order,
//! each once.

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
        proptest::collection::vec(0usize..3, 0..40),
        proptest::collection::vec(0usize..3, 0..15),
        proptest::option::of(0usize..3),
        start_case(),
    );
    let case = std::sync::atomic::AtomicUsize::new(0);
    let result = runner.run(&strategy, |(history, live, filter, start)| {
        let case = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        world
            .runtime
            .block_on(check(&world, case, &history, &live, filter, &start))
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

async fn check(
    world: &World,
    case: usize,
    history: &[usize],
    live: &[usize],
    filter: Option<usize>,
    start: &StartCase,
) -> Result<(), TestCaseError> {
    let rooms: Vec<String> = (0..3).map(|i| format!("p{case}-r{i}")).collect();
    let stored = send_all(world, &rooms, history).await;
    let room = filter.map(|i| rooms[i].clone()).unwrap_or_default();

    // The model: every stored message matching the filter, from the start.
    let log = world.log.lock().expect("log").clone();
    let matching: Vec<u64> = log
        .iter()
        .filter(|(_, r)| room.is_empty() || *r == room)
        .map(|(s, _)| *s)
        .collect();
    let (proto_start, mut want) = match *start {
        StartCase::All => (None, matching.clone()),
        StartCase::After(k) => {
            let after = if k == 0 || stored.is_empty() {
                log.first().map_or(0, |(s, _)| s - 1)
            } else {
                stored[(k - 1).min(stored.len() - 1)].0
            };
            (
                Some(Start::AfterSequence(after)),
                matching.iter().copied().filter(|s| *s > after).collect(),
            )
        }
        StartCase::Last(n) => (
            Some(Start::Last(n)),
            matching[matching.len().saturating_sub(n as usize)..].to_vec(),
        ),
        StartCase::New => (Some(Start::NewOnly(true)), Vec::new()),
    };

    let mut stream = v1_all(&world.all)
        .await
        .subscribe(v1::SubscribeRequest {
            rooms: Vec::new(),
            room: room.clone(),
            start: proto_start,
        })
        .await
        .expect("subscribe")
        .into_inner();
    let mut got = sequences(&take(&mut stream, want.len(), Duration::from_secs(20)).await);
    let later = send_all(world, &rooms, live).await;
    let live_want: Vec<u64> = later
        .iter()
        .filter(|(_, r)| room.is_empty() || *r == room)
        .map(|(s, _)| *s)
        .collect();
    got.extend(sequences(
        &take(&mut stream, live_want.len(), Duration::from_secs(20)).await,
    ));
    want.extend(live_want);
    prop_assert_eq!(got, want, "room {:?} start {:?}", room, start);
    Ok(())
}
