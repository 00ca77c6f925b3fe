//! The soak's clients: paced senders (with retries and planned duplicate
//! retries under the same `client_message_id`), subscriber slots that join
//! and leave all the time with mixed start positions, and a history reader
//! paging ListMessages.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use anyhow::Context as _;
use fastchat_proto::v1::{
    self, all_messages_service_client::AllMessagesServiceClient,
    send_message_service_client::SendMessageServiceClient, subscribe_request,
    subscribe_response::Event,
};
use tokio::time::{Instant, timeout};
use tonic::{Code, transport::Channel};

use crate::ledger::{Acks, Rng, Start, Subscription};

/// What the load looks like.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub rate: u64,
    pub rooms: u64,
    pub senders: u64,
    pub min_life: Duration,
    pub max_life: Duration,
    pub duplicate_share: f64,
    pub pages_per_second: u64,
    pub seed: u64,
}

/// Counters shared by every client.
#[derive(Debug, Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub send_retries: AtomicU64,
    pub send_failed: AtomicU64,
    pub duplicate_retries: AtomicU64,
    /// Planned retries not answered `duplicate = true` with the first one's
    /// sequence.
    pub duplicate_mismatches: AtomicU64,
    pub live_subscribers: AtomicU64,
    pub joins: AtomicU64,
    pub pages: AtomicU64,
    pub page_errors: AtomicU64,
}

/// Everything the clients share.
#[derive(Debug, Default)]
pub struct Shared {
    pub counters: Counters,
    pub acks: Mutex<Acks>,
    pub subscriptions: Mutex<Vec<Subscription>>,
    /// (room, position) left behind by subscribers, for later ones to resume
    /// from with `after_sequence`.
    pub resume: Mutex<VecDeque<(String, u64)>>,
    pub errors: Mutex<Vec<String>>,
    /// Milliseconds from a send's first attempt to its acknowledgement.
    pub send_ms: Mutex<Vec<u32>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn error(&self, what: String) {
        let mut errors = lock(&self.errors);
        if errors.len() < 100 {
            errors.push(what);
        }
    }
}

/// A connection of its own to `endpoint`.
pub async fn channel(endpoint: &str) -> anyhow::Result<Channel> {
    tonic::transport::Endpoint::from_shared(endpoint.to_owned())?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .with_context(|| format!("connect to {endpoint}"))
}

pub fn room_name(i: u64) -> String {
    format!("soak{i}")
}

/// One sender: `rate` sends per second until `until`, each in a task of its
/// own (at most 64 in flight), over one connection.
pub async fn sender(
    id: u64,
    endpoint: String,
    config: LoadConfig,
    shared: Arc<Shared>,
    until: Instant,
) -> anyhow::Result<()> {
    let client = SendMessageServiceClient::new(channel(&endpoint).await?);
    let per_sender = (config.rate / config.senders).max(1);
    let mut ticks = tokio::time::interval(Duration::from_nanos(1_000_000_000 / per_sender));
    let in_flight = Arc::new(tokio::sync::Semaphore::new(64));
    let mut rng = Rng::new(config.seed ^ (id + 1).wrapping_mul(0xA5A5_A5A5));
    let mut tasks = tokio::task::JoinSet::new();
    let mut n = 0u64;
    while Instant::now() < until {
        ticks.tick().await;
        n += 1;
        let room = room_name(rng.below(config.rooms));
        let key = format!("s{id}-{n}");
        let duplicate = rng.chance(config.duplicate_share);
        let permit = in_flight.clone().acquire_owned().await?;
        let (client, shared) = (client.clone(), shared.clone());
        tasks.spawn(async move {
            send_one(client, &shared, &room, &key, duplicate).await;
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Sends one message, retrying (same `client_message_id`) what may not have
/// been stored; records the acknowledgement; then, if `duplicate`, sends it
/// once more and checks the answer is the first one, marked duplicate.
async fn send_one(
    mut client: SendMessageServiceClient<Channel>,
    shared: &Shared,
    room: &str,
    key: &str,
    duplicate: bool,
) {
    let request = v1::SendMessageRequest {
        room: room.to_owned(),
        author: "soak".to_owned(),
        text: key.to_owned(),
        client_message_id: key.to_owned(),
        client_time_ms: 0,
    };
    let counters = &shared.counters;
    counters.sent.fetch_add(1, Relaxed);
    let began = Instant::now();
    let Some(first) = send_with_retries(&mut client, shared, &request).await else {
        counters.send_failed.fetch_add(1, Relaxed);
        return;
    };
    let took = u32::try_from(began.elapsed().as_millis()).unwrap_or(u32::MAX);
    lock(&shared.send_ms).push(took);
    let sequence = first.message.as_ref().map_or(0, |m| m.sequence);
    lock(&shared.acks).record(room, sequence, key);
    counters.acked.fetch_add(1, Relaxed);
    if duplicate {
        counters.duplicate_retries.fetch_add(1, Relaxed);
        // Retried like any send (a slow answer is retried, again with the
        // same id); what counts is that the answer, when it comes, is the
        // first send's, marked duplicate.
        let answer = send_with_retries(&mut client, shared, &request).await;
        let same = answer.as_ref().is_some_and(|r| {
            r.duplicate && r.message.as_ref().map(|m| m.sequence) == Some(sequence)
        });
        if !same {
            counters.duplicate_mismatches.fetch_add(1, Relaxed);
            shared.error(format!(
                "duplicate retry of {key} (first: sequence {sequence}): {answer:?}"
            ));
        }
    }
}

/// Sends `request`, retrying (same `client_message_id`) up to 5 attempts
/// while the answer says it may not have been stored (UNAVAILABLE,
/// RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED, no answer in 10 s).
async fn send_with_retries(
    client: &mut SendMessageServiceClient<Channel>,
    shared: &Shared,
    request: &v1::SendMessageRequest,
) -> Option<v1::SendMessageResponse> {
    for attempt in 0..5u32 {
        if attempt > 0 {
            shared.counters.send_retries.fetch_add(1, Relaxed);
            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
        }
        match timeout(
            Duration::from_secs(10),
            client.send_message(request.clone()),
        )
        .await
        {
            Ok(Ok(response)) => return Some(response.into_inner()),
            Ok(Err(status))
                if matches!(
                    status.code(),
                    Code::Unavailable | Code::ResourceExhausted | Code::DeadlineExceeded
                ) => {}
            Ok(Err(status)) => {
                shared.error(format!("send {}: {status}", request.client_message_id));
                return None;
            }
            Err(_) => {}
        }
    }
    None
}

/// One subscriber slot: joins, stays for a random while, leaves, again,
/// until `until`.
pub async fn slot(
    id: u64,
    endpoints: Vec<String>,
    config: LoadConfig,
    shared: Arc<Shared>,
    until: Instant,
) {
    let mut rng = Rng::new(config.seed ^ (id + 1).wrapping_mul(0x5EED_5EED_5EED));
    // Each slot keeps to one replica, so each one's subscriber count stays
    // steady (its fds series is then flat unless something leaks).
    let endpoint = &endpoints[(id % endpoints.len() as u64) as usize];
    // Spread the first joins over the shortest life.
    let spread = config.min_life.as_millis() as u64;
    tokio::time::sleep(Duration::from_millis(rng.below(spread.max(1)))).await;
    while Instant::now() < until {
        let resume = if rng.chance(1.0 / 3.0) {
            lock(&shared.resume).pop_front()
        } else {
            None
        };
        let (room, start) = match resume {
            Some((room, position)) => (room, Start::After(position)),
            None if rng.chance(0.5) => (room_name(rng.below(config.rooms)), Start::NewOnly),
            None => (
                room_name(rng.below(config.rooms)),
                Start::Last(1 + rng.below(50) as u32),
            ),
        };
        let span = config.max_life.saturating_sub(config.min_life).as_millis() as u64;
        let life = config.min_life + Duration::from_millis(rng.below(span.max(1)));
        let leave_at = (Instant::now() + life).min(until);
        shared.counters.joins.fetch_add(1, Relaxed);
        shared.counters.live_subscribers.fetch_add(1, Relaxed);
        let sub = subscribe(endpoint, room, start, leave_at, &shared).await;
        shared.counters.live_subscribers.fetch_sub(1, Relaxed);
        if sub.error.is_none() && rng.chance(0.5) {
            let position = sub
                .live
                .last()
                .map(|(s, _)| *s)
                .unwrap_or(0)
                .max(sub.end)
                .max(sub.caught_up.unwrap_or(0));
            let mut pool = lock(&shared.resume);
            if pool.len() < 1000 {
                pool.push_back((sub.room.clone(), position));
            }
        }
        lock(&shared.subscriptions).push(sub);
    }
}

/// How long a leaving subscriber may take to see the room's newest
/// acknowledged message (beyond which it counts as an error).
const REACH_END_WITHIN: Duration = Duration::from_secs(30);

/// One subscription on a connection of its own: replay, live until
/// `leave_at`, then on until the room's newest acknowledged message then.
async fn subscribe(
    endpoint: &str,
    room: String,
    start: Start,
    leave_at: Instant,
    shared: &Shared,
) -> Subscription {
    let mut sub = Subscription {
        room,
        start,
        caught_up: None,
        history: Vec::new(),
        live: Vec::new(),
        end: 0,
        foreign: 0,
        error: None,
    };
    if let Err(e) = follow(endpoint, &mut sub, leave_at, shared).await {
        sub.error = Some(format!("{e:#}"));
    }
    sub
}

async fn follow(
    endpoint: &str,
    sub: &mut Subscription,
    leave_at: Instant,
    shared: &Shared,
) -> anyhow::Result<()> {
    let mut client = AllMessagesServiceClient::new(channel(endpoint).await?);
    let start = match sub.start {
        Start::NewOnly => subscribe_request::Start::NewOnly(true),
        Start::Last(n) => subscribe_request::Start::Last(n),
        Start::After(after) => subscribe_request::Start::AfterSequence(after),
    };
    let mut stream = timeout(
        Duration::from_secs(10),
        client.subscribe(v1::SubscribeRequest {
            room: sub.room.clone(),
            start: Some(start),
            rooms: Vec::new(),
        }),
    )
    .await
    .context("Subscribe: no answer in 10 s")?
    .context("Subscribe")?
    .into_inner();
    let mut position = 0u64;
    let mut leaving: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if leaving.is_none() && now >= leave_at {
            sub.end = lock(&shared.acks).newest(&sub.room);
            leaving = Some(now + REACH_END_WITHIN);
        }
        if let Some(deadline) = leaving {
            if sub.caught_up.is_some() && position >= sub.end {
                return Ok(());
            }
            if now >= deadline {
                anyhow::bail!(
                    "did not see sequence {} within {REACH_END_WITHIN:?} (at {position})",
                    sub.end
                );
            }
        }
        let wait_until = leaving.unwrap_or(leave_at);
        let event = match tokio::time::timeout_at(wait_until, stream.message()).await {
            Err(_) => continue,
            Ok(event) => event.context("stream")?,
        };
        let Some(v1::SubscribeResponse { event: Some(event) }) = event else {
            anyhow::bail!("the stream ended");
        };
        match event {
            Event::Message(message) => {
                position = position.max(message.sequence);
                if message.room != sub.room {
                    sub.foreign += 1;
                    continue;
                }
                let entry = (message.sequence, message.text);
                if sub.caught_up.is_some() {
                    sub.live.push(entry);
                } else {
                    sub.history.push(entry);
                }
            }
            Event::CaughtUp(caught_up) => {
                sub.caught_up = Some(caught_up.sequence);
                position = position.max(caught_up.sequence);
            }
            Event::Heartbeat(heartbeat) => position = position.max(heartbeat.sequence),
            Event::Gap(gap) => anyhow::bail!("gap {}..{}", gap.from_sequence, gap.to_sequence),
        }
    }
}

/// Pages through room histories: a random room's newest page, then up to
/// two older ones, `pages_per_second` pages a second until `until`, each
/// page checked (oldest first, of the room, the acknowledged key at each
/// acknowledged sequence).
pub async fn pager(
    endpoints: Vec<String>,
    config: LoadConfig,
    shared: Arc<Shared>,
    until: Instant,
) {
    let mut rng = Rng::new(config.seed ^ 0x00C0_FFEE);
    let mut ticks =
        tokio::time::interval(Duration::from_millis(1000 / config.pages_per_second.max(1)));
    let mut clients = Vec::new();
    for endpoint in &endpoints {
        match channel(endpoint).await {
            Ok(channel) => clients.push(AllMessagesServiceClient::new(channel)),
            Err(e) => shared.error(format!("pager: {e:#}")),
        }
    }
    if clients.is_empty() {
        return;
    }
    let mut before = 0u64;
    let mut room = room_name(0);
    let mut depth = 0;
    while Instant::now() < until {
        ticks.tick().await;
        if depth == 0 || before == 0 {
            room = room_name(rng.below(config.rooms));
            before = 0;
            depth = 1 + rng.below(3);
        }
        let pick = rng.below(clients.len() as u64) as usize;
        let client = &mut clients[pick];
        let request = v1::ListMessagesRequest {
            room: room.clone(),
            before_sequence: before,
            limit: 50,
        };
        let page = match timeout(Duration::from_secs(10), client.list_messages(request)).await {
            Ok(Ok(page)) => page.into_inner(),
            Ok(Err(status)) => {
                shared.counters.page_errors.fetch_add(1, Relaxed);
                shared.error(format!("ListMessages {room}: {status}"));
                depth = 0;
                continue;
            }
            Err(_) => {
                shared.counters.page_errors.fetch_add(1, Relaxed);
                shared.error(format!("ListMessages {room}: no answer in 10 s"));
                depth = 0;
                continue;
            }
        };
        shared.counters.pages.fetch_add(1, Relaxed);
        let acks = lock(&shared.acks);
        let acked = acks.by_room.get(&room);
        let ordered = page
            .messages
            .windows(2)
            .all(|w| w[0].sequence < w[1].sequence);
        let below = before == 0 || page.messages.iter().all(|m| m.sequence < before);
        let right = page.messages.iter().all(|m| {
            m.room == room
                && acked
                    .and_then(|a| a.get(&m.sequence))
                    .is_none_or(|key| *key == m.text)
        });
        drop(acks);
        if !(ordered && below && right) {
            shared.counters.page_errors.fetch_add(1, Relaxed);
            shared.error(format!(
                "ListMessages {room} before {before}: ordered {ordered}, below {below}, right {right}"
            ));
        }
        before = page.next_before_sequence;
        depth -= 1;
    }
}
