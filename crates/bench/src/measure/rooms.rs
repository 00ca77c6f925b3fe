//! Rooms at scale: what a delivery costs all-messages-service with many
//! rooms of a few members against one big room, the highest station rate
//! one replica keeps up with, and a join storm (10,000 subscribers joining
//! at once, each replaying the last 1,000 messages of its room).

use std::time::{Duration, Instant};

use anyhow::bail;
use async_nats::jetstream;
use bytes::Bytes;
use fastchat_proto::v1::{
    self, all_messages_service_client::AllMessagesServiceClient, subscribe_request::Start,
    subscribe_response::Event,
};
use prost::Message as _;
use tokio::task::JoinSet;
use tonic::transport::Channel;

use super::common::{AckWindow, LIMIT, channel, jetstream, pacer, publish_raw, rate};
use crate::{
    raw::sample_message,
    report::Report,
    system::{Process, System},
};

/// Connections the subscribers share (100 streams each at most, the
/// service's default per connection).
const CONNECTIONS: usize = 100;

/// The subscribers' setup: `rooms` rooms of `per_room` subscribers each.
#[derive(Debug, Clone, Copy)]
struct Setup {
    rooms: usize,
    per_room: usize,
}

impl Setup {
    fn subscribers(self) -> usize {
        self.rooms * self.per_room
    }

    fn room(self, i: usize) -> String {
        format!("r{}", i % self.rooms)
    }
}

/// Opens `setup`'s subscribers (new_only) over [`CONNECTIONS`] connections;
/// each reports every message it receives on the returned channel. Waits
/// until the service counts them all open.
async fn open_subscribers(
    all: &Process,
    setup: Setup,
    tasks: &mut JoinSet<anyhow::Result<()>>,
) -> anyhow::Result<tokio::sync::mpsc::UnboundedReceiver<u64>> {
    let mut channels = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        channels.push(channel(&all.endpoint()).await?);
    }
    let already = all.metric("fastchat_subscriptions_active")?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..setup.subscribers() {
        let mut client = AllMessagesServiceClient::new(channels[i % CONNECTIONS].clone());
        let room = setup.room(i);
        let tx = tx.clone();
        tasks.spawn(async move {
            let mut stream = client
                .subscribe(v1::SubscribeRequest {
                    room,
                    rooms: Vec::new(),
                    start: Some(Start::NewOnly(true)),
                })
                .await?
                .into_inner();
            while let Some(response) = stream.message().await? {
                if let Some(Event::Message(m)) = response.event
                    && tx.send(m.sequence).is_err()
                {
                    break;
                }
            }
            Ok(())
        });
    }
    wait_metric(all, "fastchat_subscriptions_active", |v| {
        #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
        let want = already + setup.subscribers() as f64;
        v >= want
    })
    .await?;
    Ok(rx)
}

async fn wait_metric(
    process: &Process,
    name: &str,
    done: impl Fn(f64) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + LIMIT;
    while !done(process.metric(name)?) {
        if Instant::now() > deadline {
            bail!("{name} never reached its goal");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Waits for `want` deliveries (each within [`LIMIT`] of the last).
async fn receive_all(
    deliveries: &mut tokio::sync::mpsc::UnboundedReceiver<u64>,
    want: usize,
) -> anyhow::Result<()> {
    let mut got = 0;
    while got < want {
        match tokio::time::timeout(LIMIT, deliveries.recv()).await {
            Ok(Some(_)) => got += 1,
            Ok(None) => bail!("subscribers ended after {got} of {want} deliveries"),
            Err(_) => bail!("{got} of {want} deliveries within {LIMIT:?}"),
        }
    }
    Ok(())
}

/// Publishes `messages` spread evenly over `setup`'s rooms at `per_second`,
/// and waits for their acknowledgements (1,024 in flight at most).
async fn publish_paced(
    js: &jetstream::Context,
    setup: Setup,
    per_second: u64,
    messages: usize,
) -> anyhow::Result<()> {
    let mut ticker = pacer(per_second);
    let mut acks = AckWindow::new(1024);
    for i in 0..messages {
        ticker.tick().await;
        let room = setup.room(i);
        let payload = Bytes::from(sample_message(&room, 0, "x".repeat(64)).encode_to_vec());
        acks.push(js.publish(format!("chat.messages.{room}"), payload).await?)
            .await?;
    }
    acks.drain().await?;
    Ok(())
}

/// Publishes `messages` spread evenly over `setup`'s rooms as fast as
/// JetStream takes them, and waits for every delivery. Returns the wall
/// time from the first publish to the last delivery and the deliveries.
async fn burst(
    js: &jetstream::Context,
    setup: Setup,
    messages: usize,
    deliveries: &mut tokio::sync::mpsc::UnboundedReceiver<u64>,
) -> anyhow::Result<(Duration, usize)> {
    let want = messages * setup.per_room;
    let started = Instant::now();
    let publish = publish_raw(js, messages, |i| setup.room(i), || "x".repeat(64));
    let (published, received) = tokio::join!(publish, receive_all(deliveries, want));
    published?;
    received?;
    let elapsed = started.elapsed();
    Ok((elapsed, want))
}

/// Deliveries per second both setups of the CPU comparison are paced at:
/// far below what either keeps up with, so neither falls back to catching
/// up from the station and both run the live path.
const PACED_DELIVERIES_PER_S: u64 = 20_000;

/// Seconds the paced comparison publishes for (300,000 deliveries).
const PACED_SECONDS: u64 = 15;

/// Publishes messages evenly over `setup`'s rooms at
/// [`PACED_DELIVERIES_PER_S`] deliveries a second for [`PACED_SECONDS`],
/// and waits for every delivery. Returns all-messages-service's CPU seconds
/// over that time and the deliveries made; fails if any subscriber caught up
/// from the station meanwhile (the comparison is of the live path).
async fn paced(
    js: &jetstream::Context,
    all: &Process,
    setup: Setup,
    deliveries: &mut tokio::sync::mpsc::UnboundedReceiver<u64>,
) -> anyhow::Result<(f64, usize)> {
    let per_second = PACED_DELIVERIES_PER_S / setup.per_room as u64;
    let messages = usize::try_from(per_second * PACED_SECONDS)?;
    let want = messages * setup.per_room;
    let catchups = all.metric("fastchat_subscription_catchups_total")?;
    eprintln!(
        "[rooms] {} subscribers in {} rooms: {PACED_DELIVERIES_PER_S} deliveries/s for {PACED_SECONDS} s",
        setup.subscribers(),
        setup.rooms
    );
    let cpu_before = all.cpu_seconds()?;
    let publish = publish_paced(js, setup, per_second, messages);
    let (published, received) = tokio::join!(publish, receive_all(deliveries, want));
    published?;
    received?;
    let cpu = all.cpu_seconds()? - cpu_before;
    if all.metric("fastchat_subscription_catchups_total")? > catchups {
        bail!("subscribers caught up from the station at {PACED_DELIVERIES_PER_S} deliveries/s");
    }
    Ok((cpu, want))
}

/// For `setup`: all-messages-service's CPU seconds per million deliveries
/// at [`PACED_DELIVERIES_PER_S`], and the deliveries/s of a burst of
/// `burst` messages published as fast as JetStream takes them.
async fn cost(setup: Setup, burst_messages: usize) -> anyhow::Result<(f64, f64)> {
    let system = System::start()?;
    let js = jetstream(&system.nats.url()).await?;
    let mut tasks = JoinSet::new();
    let mut deliveries = open_subscribers(&system.all, setup, &mut tasks).await?;
    // The burst also warms up every path.
    let (elapsed, count) = burst(&js, setup, burst_messages, &mut deliveries).await?;
    let (cpu, delivered) = paced(&js, &system.all, setup, &mut deliveries).await?;
    tasks.abort_all();
    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    let per_million = cpu / delivered as f64 * 1e6;
    Ok((per_million, rate(count, elapsed)))
}

/// Whether one replica with `setup`'s subscribers keeps up with a station
/// rate of `per_second` for `seconds`: its live feed at the newest message
/// and every delivery made within 2 s of the last publish, no subscriber
/// caught up from the station.
async fn keeps_up(
    js: &jetstream::Context,
    all: &Process,
    setup: Setup,
    per_second: u64,
    seconds: u64,
    deliveries: &mut tokio::sync::mpsc::UnboundedReceiver<u64>,
) -> anyhow::Result<bool> {
    let total = usize::try_from(per_second * seconds)?;
    let catchups = all.metric("fastchat_subscription_catchups_total")?;
    let started = Instant::now();
    publish_paced(js, setup, per_second, total).await?;
    let publishing = started.elapsed();
    let last = js
        .get_stream("chat")
        .await?
        .info()
        .await?
        .state
        .last_sequence;
    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    let achieved = total as f64 / publishing.as_secs_f64();
    #[expect(clippy::cast_precision_loss, reason = "rates far below 2^52")]
    if achieved < per_second as f64 * 0.95 {
        eprintln!("[rooms] publisher reached only {achieved:.0} of {per_second} msg/s");
        return Ok(false);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    let want = total * setup.per_room;
    let mut got = 0;
    while got < want {
        match tokio::time::timeout_at(deadline.into(), deliveries.recv()).await {
            Ok(Some(_)) => got += 1,
            Ok(None) => bail!("subscribers ended"),
            Err(_) => break,
        }
    }
    #[expect(clippy::cast_precision_loss, reason = "sequences far below 2^52")]
    let fed = all.metric("fastchat_live_feed_sequence")? >= last as f64;
    let caught_up = all.metric("fastchat_subscription_catchups_total")? > catchups;
    // Whatever is still due arrives before the next step starts.
    while got < want {
        match tokio::time::timeout(LIMIT, deliveries.recv()).await {
            Ok(Some(_)) => got += 1,
            _ => bail!("{got} of {want} deliveries never came"),
        }
    }
    wait_metric(all, "fastchat_live_feed_sequence", |v| {
        #[expect(clippy::cast_precision_loss, reason = "sequences far below 2^52")]
        let last = last as f64;
        v >= last
    })
    .await?;
    let kept_up = fed && !caught_up && got == want && Instant::now() <= deadline;
    eprintln!(
        "[rooms] {} subscribers, {per_second} msg/s: {}",
        setup.subscribers(),
        if kept_up { "kept up" } else { "fell behind" }
    );
    Ok(kept_up)
}

/// The highest of doubling station rates (from 1,000 msg/s) that one
/// replica with `setup`'s subscribers keeps up with for 5 s; 0 if none.
async fn ingest_ceiling(setup: Setup) -> anyhow::Result<u64> {
    let system = System::start()?;
    let js = jetstream(&system.nats.url()).await?;
    let mut tasks = JoinSet::new();
    let mut deliveries = if setup.subscribers() > 0 {
        open_subscribers(&system.all, setup, &mut tasks).await?
    } else {
        tokio::sync::mpsc::unbounded_channel().1
    };
    let mut best = 0;
    let mut per_second = 1000;
    while per_second <= 64_000 {
        if !keeps_up(&js, &system.all, setup, per_second, 5, &mut deliveries).await? {
            break;
        }
        best = per_second;
        per_second *= 2;
    }
    tasks.abort_all();
    Ok(best)
}

/// Outcome of one join storm.
struct Storm {
    complete: f64,
    seconds: f64,
    consumers_max: usize,
}

/// Rooms of the join storm's station.
const STORM_ROOMS: usize = 1000;

/// 10,000 subscribers (10 per room, [`STORM_ROOMS`] rooms, 100
/// connections) join at once, each asking for the last `per_room` messages
/// of its room; then one live message per room. Counts those that got
/// exactly their room's history, CaughtUp, then that message. `log` holds
/// each room's stored sequences, and gets the live ones.
async fn join_storm(
    system: &System,
    js: &jetstream::Context,
    per_room: u32,
    log: &mut [Vec<u64>],
) -> anyhow::Result<Storm> {
    const PER_ROOM: usize = 10;
    let mut channels: Vec<Channel> = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        channels.push(channel(&system.all.endpoint()).await?);
    }
    let last = js
        .get_stream("chat")
        .await?
        .info()
        .await?
        .state
        .last_sequence;
    let (caught_tx, mut caught_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..STORM_ROOMS * PER_ROOM {
        let mut client = AllMessagesServiceClient::new(channels[i % CONNECTIONS].clone());
        let index = i % STORM_ROOMS;
        let caught = caught_tx.clone();
        tasks.spawn(async move {
            let room = format!("room{index}");
            let mut stream = client
                .subscribe(v1::SubscribeRequest {
                    room: room.clone(),
                    rooms: Vec::new(),
                    start: Some(Start::Last(per_room)),
                })
                .await?
                .into_inner();
            let mut history = Vec::with_capacity(per_room as usize);
            loop {
                match stream.message().await?.and_then(|r| r.event) {
                    Some(Event::Message(m)) => history.push(m.sequence),
                    Some(Event::CaughtUp(_)) => break,
                    Some(_) => {}
                    None => bail!("{room}: the stream ended during its history"),
                }
            }
            let _ = caught.send(Instant::now());
            loop {
                match stream.message().await?.and_then(|r| r.event) {
                    Some(Event::Message(m)) => return Ok((index, history, m.sequence)),
                    Some(_) => {}
                    None => bail!("{room}: the stream ended before its live message"),
                }
            }
        });
    }
    drop(caught_tx);
    let mut consumers_max = 0;
    let mut caught = 0;
    let mut last_caught = started;
    let deadline = started + LIMIT * 2;
    while caught < STORM_ROOMS * PER_ROOM && Instant::now() < deadline {
        tokio::select! {
            at = caught_rx.recv() => match at {
                Some(at) => { caught += 1; last_caught = at; }
                None => break,
            },
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                let count = js.get_stream("chat").await?.info().await?.state.consumer_count;
                consumers_max = consumers_max.max(count);
            }
        }
    }
    let seconds = last_caught.duration_since(started).as_secs_f64();
    eprintln!(
        "[rooms] join storm: {caught} of 10,000 caught up in {seconds:.1} s, at most {consumers_max} consumers"
    );
    let wants: Vec<Vec<u64>> = log
        .iter()
        .map(|room| room[room.len().saturating_sub(per_room as usize)..].to_vec())
        .collect();
    // One live message per room, stored in order: room i's is last + 1 + i.
    publish_raw(js, STORM_ROOMS, |i| format!("room{i}"), || "live".into()).await?;
    for (i, room) in log.iter_mut().enumerate() {
        room.push(last + 1 + i as u64);
    }
    // Those not live by the storm's deadline (plus a moment for the live
    // message) count as incomplete.
    let mut complete = 0usize;
    let give_up = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let joined = match tokio::time::timeout_at(give_up, tasks.join_next()).await {
            Ok(Some(joined)) => joined,
            Ok(None) | Err(_) => break,
        };
        let Ok(Ok((index, history, live))) = joined else {
            continue;
        };
        if history == wants[index] && live == last + 1 + index as u64 {
            complete += 1;
        }
    }
    tasks.abort_all();
    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    let complete = complete as f64 / (STORM_ROOMS * PER_ROOM) as f64;
    Ok(Storm {
        complete,
        seconds,
        consumers_max,
    })
}

/// Rooms at scale (see the module docs).
pub async fn rooms(report: &mut Report) -> anyhow::Result<()> {
    let one = Setup {
        rooms: 1,
        per_room: 1000,
    };
    let many = Setup {
        rooms: 1000,
        per_room: 10,
    };
    let (mut one_cost, mut many_cost, mut many_rate) = (vec![], vec![], vec![]);
    for run in 1..=report.runs {
        eprintln!("[rooms] run {run}/{}", report.runs);
        // Bursts of 500,000 deliveries each.
        let (cost, _) = cost(one, 500).await?;
        one_cost.push(cost);
        let (cost, rate) = cost_many(many).await?;
        many_cost.push(cost);
        many_rate.push(rate);
    }
    let one = report.figure(
        "rooms",
        "all-messages-service CPU per 1M deliveries at 20,000/s, 1,000 subscribers in 1 room",
        "s",
        &one_cost,
    );
    let many_stats = report.figure(
        "rooms",
        "all-messages-service CPU per 1M deliveries at 20,000/s, 10,000 subscribers in 1,000 rooms",
        "s",
        &many_cost,
    );
    let rate_stats = report.figure(
        "rooms",
        "deliveries/s, a burst of 50,000 messages, 10,000 subscribers in 1,000 rooms (100 connections)",
        "deliveries/s",
        &many_rate,
    );
    report.summary(
        "rooms_cpu_per_delivery_ratio",
        many_stats.median / one.median,
    );
    report.summary("rooms_deliveries_per_s", rate_stats.median);

    // The ingest ceiling of one replica, with 0, 1,000 and 10,000
    // subscribers (the last is the summary's).
    for (label, setup) in [
        (
            "no subscribers",
            Setup {
                rooms: 1000,
                per_room: 0,
            },
        ),
        (
            "1,000 subscribers in 1,000 rooms",
            Setup {
                rooms: 1000,
                per_room: 1,
            },
        ),
        ("10,000 subscribers in 1,000 rooms", many),
    ] {
        let mut ceilings = Vec::new();
        for run in 1..=report.runs {
            eprintln!("[rooms] ingest ceiling, {label}, run {run}/{}", report.runs);
            #[expect(clippy::cast_precision_loss, reason = "rates far below 2^52")]
            ceilings.push(ingest_ceiling(setup).await? as f64);
        }
        let stats = report.figure(
            "rooms",
            format!("highest station rate one replica keeps up with, {label}"),
            "msg/s",
            &ceilings,
        );
        if setup.per_room == many.per_room {
            report.summary("replica_ingest_msgs_per_s", stats.median);
        }
    }

    // The join storm, on a station of 1,000 messages in each of 1,000 rooms.
    let system = System::start()?;
    let js = jetstream(&system.nats.url()).await?;
    eprintln!("[rooms] storing 1,000,000 messages across 1,000 rooms for the join storm ...");
    const STORED: usize = 1_000_000;
    let first = js
        .get_stream("chat")
        .await?
        .info()
        .await?
        .state
        .last_sequence
        + 1;
    publish_raw(
        &js,
        STORED,
        |i| format!("room{}", i % STORM_ROOMS),
        || "x".repeat(64),
    )
    .await?;
    let mut log: Vec<Vec<u64>> = (0..STORM_ROOMS)
        .map(|k| {
            (0..STORED / STORM_ROOMS)
                .map(|j| first + (k + j * STORM_ROOMS) as u64)
                .collect()
        })
        .collect();
    let (mut complete, mut seconds, mut consumers) = (vec![], vec![], vec![]);
    for run in 1..=report.runs {
        eprintln!("[rooms] join storm run {run}/{}", report.runs);
        let storm = join_storm(&system, &js, 1000, &mut log).await?;
        complete.push(storm.complete);
        seconds.push(storm.seconds);
        #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
        consumers.push(storm.consumers_max as f64);
    }
    let complete = report.figure(
        "rooms",
        "join storm: share of 10,000 joiners with exactly their last 1,000, then live",
        "ratio",
        &complete,
    );
    let seconds = report.figure(
        "rooms",
        "join storm: seconds until the last of 10,000 joiners is live",
        "s",
        &seconds,
    );
    let consumers = report.figure(
        "rooms",
        "join storm: most broker consumers held for the station",
        "consumers",
        &consumers,
    );
    report.summary("join_storm_complete_ratio", complete.median);
    report.summary("join_storm_seconds", seconds.median);
    report.summary("join_storm_broker_consumers_max", consumers.median);
    Ok(())
}

/// The 1,000-room setup's cost: 50,000 messages, 500,000 deliveries.
async fn cost_many(setup: Setup) -> anyhow::Result<(f64, f64)> {
    cost(setup, 50_000).await
}
