//! Property test of the replay→live merge: for random histories across
//! rooms, random start positions and room filters, and messages arriving
//! after subscribing, a subscription delivers exactly what a simple model
//! says — the asked-for history then the live messages, in sequence order,
//! each once.

use std::{
    sync::{Mutex, OnceLock},
    time::Duration,
};

use fastchat_e2e::*;
use fastchat_proto::v1;
use proptest::prelude::*;
use v1::subscribe_request::Start;

/// One broker and one instance of each service, shared by every case: cases
/// use their own rooms, and the model keeps the whole station's log.
struct World {
    runtime: tokio::runtime::Runtime,
    _nats: NatsServer,
    send: Service,
    all: Service,
    /// (sequence, room) of everything stored, in order.
    log: Mutex<Vec<(u64, String)>>,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
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
        World {
            runtime,
            _nats: nats,
            send,
            all,
            log: Mutex::new(Vec::new()),
        }
    })
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_subscription_delivers_exactly_the_model(
        history in proptest::collection::vec(0usize..3, 0..40),
        live in proptest::collection::vec(0usize..3, 0..15),
        filter in proptest::option::of(0usize..3),
        start in start_case(),
    ) {
        let world = world();
        world.runtime.block_on(async {
            static CASE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let case = CASE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let rooms: Vec<String> = (0..3).map(|i| format!("p{case}-r{i}")).collect();
            let stored = send_all(world, &rooms, &history).await;
            let room = filter.map(|i| rooms[i].clone()).unwrap_or_default();

            // The model: every stored message matching the filter, from the start.
            let log = world.log.lock().expect("log").clone();
            let matching: Vec<u64> = log
                .iter()
                .filter(|(_, r)| room.is_empty() || *r == room)
                .map(|(s, _)| *s)
                .collect();
            let (proto_start, mut want) = match start {
                StartCase::All => (None, matching.clone()),
                StartCase::After(k) => {
                    let after = if k == 0 || stored.is_empty() {
                        log.first().map_or(0, |(s, _)| s - 1)
                    } else {
                        stored[(k - 1).min(stored.len() - 1)].0
                    };
                    (Some(Start::AfterSequence(after)), matching.iter().copied().filter(|s| *s > after).collect())
                }
                StartCase::Last(n) => (
                    Some(Start::Last(n)),
                    matching[matching.len().saturating_sub(n as usize)..].to_vec(),
                ),
                StartCase::New => (Some(Start::NewOnly(true)), Vec::new()),
            };

            let mut stream = v1_all(&world.all)
                .await
                .subscribe(v1::SubscribeRequest { room: room.clone(), start: proto_start })
                .await
                .expect("subscribe")
                .into_inner();
            let mut got = sequences(&take(&mut stream, want.len(), Duration::from_secs(20)).await);
            let later = send_all(world, &rooms, &live).await;
            let live_want: Vec<u64> = later
                .iter()
                .filter(|(_, r)| room.is_empty() || *r == room)
                .map(|(s, _)| *s)
                .collect();
            got.extend(sequences(&take(&mut stream, live_want.len(), Duration::from_secs(20)).await));
            want.extend(live_want);
            assert_eq!(got, want, "room {room:?} start {start:?}");
        });
    }
}
