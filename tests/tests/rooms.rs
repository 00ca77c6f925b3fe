//! Rooms at scale: history pages and replays that create no broker
//! consumer, and a join storm in which every subscriber gets exactly its
//! history and then live.

use std::{collections::BTreeMap, time::Duration};

use fastchat_e2e::*;
use fastchat_proto::v1;
use v1::subscribe_request::Start;
use v1::subscribe_response::Event;

const WAIT: Duration = Duration::from_secs(60);

/// Consumers the broker holds for the station now.
async fn consumers(nats: &NatsServer) -> usize {
    let js = async_nats::jetstream::new(
        async_nats::connect(nats.url())
            .await
            .expect("connect an observer"),
    );
    js.get_stream("chat")
        .await
        .expect("station")
        .info()
        .await
        .expect("info")
        .state
        .consumer_count
}

/// Stores `per_room` messages in each of `rooms`, interleaved; returns each
/// room's sequences.
async fn fill(send: &Service, rooms: &[String], per_room: usize) -> BTreeMap<String, Vec<u64>> {
    let mut stored: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut tasks = Vec::new();
    for chunk in rooms.chunks(rooms.len().div_ceil(8).max(1)) {
        let mut sender = v1_send(send).await;
        let chunk = chunk.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..per_room {
                for room in &chunk {
                    let stored = sender
                        .send_message(message(room, "ann", &format!("{room} {i}")))
                        .await
                        .expect("send")
                        .into_inner()
                        .message
                        .expect("stored");
                    got.push((room.clone(), stored.sequence));
                }
            }
            got
        }));
    }
    for task in tasks {
        for (room, sequence) in task.await.expect("sender") {
            stored.entry(room).or_default().push(sequence);
        }
    }
    for sequences in stored.values_mut() {
        sequences.sort_unstable();
    }
    stored
}

/// A burst of ListMessages pages (newest and deeper ones, many rooms at
/// once) is served without the broker ever holding a consumer beyond the
/// live feed's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_create_no_consumer() {
    let nats = NatsServer::start();
    let send = start_send(send_config(&nats.url())).await;
    let all = start_all(all_config(&nats.url())).await;
    let rooms: Vec<String> = (0..20).map(|i| format!("page-{i}")).collect();
    let stored = fill(&send, &rooms, 30).await;
    let baseline = consumers(&nats).await;
    assert_eq!(baseline, 1, "the live feed's fan-out consumer only");

    let mut pages = Vec::new();
    for (i, room) in rooms.iter().cycle().take(400).enumerate() {
        let mut client = v1_all(&all).await;
        let room = room.clone();
        let want = stored[&room].clone();
        pages.push(tokio::spawn(async move {
            // Newest page, then the page before it.
            let newest = client
                .list_messages(v1::ListMessagesRequest {
                    room: room.clone(),
                    before_sequence: 0,
                    limit: 10,
                })
                .await
                .expect("newest page")
                .into_inner();
            let seqs: Vec<u64> = newest.messages.iter().map(|m| m.sequence).collect();
            assert_eq!(seqs, want[20..], "newest page of {room} (call {i})");
            let older = client
                .list_messages(v1::ListMessagesRequest {
                    room: room.clone(),
                    before_sequence: newest.next_before_sequence,
                    limit: 10,
                })
                .await
                .expect("older page")
                .into_inner();
            let seqs: Vec<u64> = older.messages.iter().map(|m| m.sequence).collect();
            assert_eq!(seqs, want[10..20], "second page of {room}");
        }));
    }
    let mut most = baseline;
    let watch = async {
        loop {
            most = most.max(consumers(&nats).await);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        () = watch => unreachable!("the watch never ends"),
        () = async {
            for page in pages {
                page.await.expect("pages served");
            }
        } => {}
    }
    assert_eq!(most, baseline, "800 pages, no consumer created for them");
    drop(all);
}

/// 1,000 subscribers join at once (100 rooms, 10 each, over 20
/// connections), each asking for the last 20 messages of its room: every
/// one gets exactly its history, CaughtUp, and then the live messages of
/// its room — and the broker holds no consumer for their replays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_subscribers_joining_at_once_each_get_their_history_then_live() {
    const ROOMS: usize = 100;
    const PER_ROOM: usize = 10;
    const HISTORY: usize = 30;
    const LAST: u32 = 20;
    let nats = NatsServer::start();
    let send = start_send(send_config(&nats.url())).await;
    let all = start_all(all_config(&nats.url())).await;
    let rooms: Vec<String> = (0..ROOMS).map(|i| format!("storm-{i}")).collect();
    let stored = fill(&send, &rooms, HISTORY).await;
    let baseline = consumers(&nats).await;

    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(v1_all(&all).await);
    }
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(ROOMS * PER_ROOM);
    let mut subscribers = Vec::new();
    for (i, room) in rooms.iter().cycle().take(ROOMS * PER_ROOM).enumerate() {
        let mut client = clients[i % clients.len()].clone();
        let room = room.clone();
        let history = stored[&room][HISTORY - LAST as usize..].to_vec();
        let ready = ready_tx.clone();
        subscribers.push(tokio::spawn(async move {
            let mut stream = client
                .subscribe(subscribe(&room, Some(Start::Last(LAST))))
                .await
                .expect("subscribe")
                .into_inner();
            let mut got = Vec::new();
            loop {
                match take_events(&mut stream, 1, WAIT).await.pop() {
                    Some(Event::Message(m)) => got.push(m.sequence),
                    Some(Event::CaughtUp(_)) => break,
                    Some(Event::Heartbeat(_)) => {}
                    other => panic!("{room}: unexpected {other:?} before CaughtUp"),
                }
            }
            assert_eq!(got, history, "{room}: exactly its last {LAST}");
            ready.send(()).await.expect("report ready");
            // Then live: the one message sent to its room after everyone
            // caught up.
            loop {
                match take_events(&mut stream, 1, WAIT).await.pop() {
                    Some(Event::Message(m)) => return (room, m.sequence),
                    Some(Event::Heartbeat(_)) => {}
                    other => panic!("{room}: unexpected {other:?} when live"),
                }
            }
        }));
    }
    drop(ready_tx);
    let mut most = baseline;
    let mut ready = 0;
    let started = tokio::time::Instant::now();
    while ready < ROOMS * PER_ROOM {
        tokio::select! {
            got = ready_rx.recv() => {
                got.expect("every subscriber reports");
                ready += 1;
            }
            () = tokio::time::sleep(Duration::from_millis(50)) => {
                most = most.max(consumers(&nats).await);
            }
        }
        assert!(
            started.elapsed() < WAIT,
            "{ready} of 1,000 caught up within {WAIT:?}"
        );
    }
    most = most.max(consumers(&nats).await);
    assert_eq!(most, baseline, "the replays held no broker consumer");
    let live = fill(&send, &rooms, 1).await;
    for subscriber in subscribers {
        let (room, sequence) = subscriber.await.expect("subscriber");
        assert_eq!(live[&room], [sequence], "{room}: its live message");
    }
    drop(all);
}
