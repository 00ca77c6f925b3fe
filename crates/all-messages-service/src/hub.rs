//! The live feed: one fan-out consumer per process, dispatched in-process
//! to the subscriptions of each message's room.
//!
//! Every subscription has its own bounded inbox. The hub keeps, per room,
//! the inboxes of the subscriptions that want it (plus those that want every
//! room), so a message wakes only its room's subscribers: with many rooms of
//! a few members each, delivery costs what the room has, not what the
//! process has. A room nobody follows has no entry; the last member leaving
//! removes it.
//!
//! A subscription joins by taking, atomically, its inbox and the sequence
//! `h` of the last message dispatched so far ([`Hub::join`]): every message
//! of its rooms after `h` will arrive in the inbox, every message up to `h`
//! must come from the station. That is what makes the replay→live switch
//! exact, with no gap and no duplicate.
//!
//! An inbox that is full when a message comes (its subscriber fell
//! `live_buffer` messages, or `max_queued_bytes` of them, behind) is dropped
//! from the hub: the subscriber drains what it holds, sees it was dropped,
//! and catches up from the station before rejoining. Nobody else waits for
//! it, and what a slow subscriber holds is bounded in bytes.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use broker_client::{Delivered, StartPosition, Subjects};
use fastchat_backoff::ExponentialBackoff;
use fastchat_proto::{station, v1};
use fastchat_runtime::service::Context;
use prost::Message as _;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// A stored chat message, shared by every subscriber that gets it: it is
/// copied into a response only when a client's stream is written.
// trace: the message travels with its stored trace context
pub type Shared = Arc<crate::trace::Live>;

/// Decodes a station message; `None` (logged) for one that is not a
/// FastChat chat message, which subscribers then skip.
pub fn decode(delivered: &Delivered) -> Option<v1::ChatMessage> {
    fastchat_wire::decode(delivered)
        .inspect_err(|e| {
            tracing::warn!(sequence = delivered.sequence, subject = %delivered.subject, error = %e, "skipping undecodable message");
        })
        .ok()
}

/// How often the live feed's lag behind the station is measured.
const LAG_EVERY: Duration = Duration::from_secs(5);

/// The rooms of a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rooms {
    /// Every room.
    Every,
    /// These rooms (at least one).
    Only(BTreeSet<String>),
}

impl Rooms {
    /// The station subjects of the rooms.
    pub fn subjects(&self) -> Subjects {
        match self {
            Self::Every => Subjects::from(station::ALL_ROOMS),
            Self::Only(rooms) => Subjects::any(rooms.iter().map(|r| station::subject(r)))
                .unwrap_or_else(|| Subjects::from(station::ALL_ROOMS)),
        }
    }
}

/// The live feed as a subscription joined it. Dropping it leaves the hub.
#[derive(Debug)]
pub struct Joined {
    /// Every message of the subscription's rooms dispatched after `after`,
    /// until the inbox is dropped for lagging.
    inbox: mpsc::Receiver<Shared>,
    /// Messages up to this sequence must come from the station.
    pub after: u64,
    membership: Membership,
}

impl Joined {
    /// The next message of the inbox; `None` once it was dropped (see
    /// [`Joined::lagged`]).
    pub async fn recv(&mut self) -> Option<Shared> {
        let message = self.inbox.recv().await?;
        self.membership
            .bytes
            .fetch_sub(message.encoded_len(), Ordering::AcqRel);
        Some(message)
    }

    /// Whether nothing is waiting in the inbox.
    pub fn is_empty(&self) -> bool {
        self.inbox.is_empty()
    }

    /// Why the inbox ended (once it yields `None`): `true` if the hub
    /// dropped it because the subscriber fell behind, `false` if the live
    /// feed stopped.
    pub fn lagged(&self) -> bool {
        self.membership.lagged.load(Ordering::Acquire)
    }
}

/// A subscription's place in the hub, given back when dropped.
#[derive(Debug)]
struct Membership {
    hub: Arc<Hub>,
    id: u64,
    lagged: Arc<AtomicBool>,
    /// Bytes of the messages in the inbox.
    bytes: Arc<AtomicUsize>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.hub.registry().remove(self.id);
    }
}

/// One subscription's entry: its inbox and rooms.
struct Member {
    inbox: mpsc::Sender<Shared>,
    rooms: Rooms,
    lagged: Arc<AtomicBool>,
    bytes: Arc<AtomicUsize>,
}

/// Who wants which room, and where the feed is.
#[derive(Default)]
struct Registry {
    /// Sequence of the last message dispatched. Updated while dispatching
    /// and read while joining, under the same lock, so the two cannot
    /// interleave (see the module docs).
    last: u64,
    next_id: u64,
    members: HashMap<u64, Member>,
    /// Members by room (only rooms someone follows).
    rooms: HashMap<String, Vec<u64>>,
    /// Members that follow every room.
    every: Vec<u64>,
}

impl Registry {
    fn remove(&mut self, id: u64) {
        let Some(member) = self.members.remove(&id) else {
            return;
        };
        match &member.rooms {
            Rooms::Every => self.every.retain(|m| *m != id),
            Rooms::Only(rooms) => {
                for room in rooms {
                    if let Some(ids) = self.rooms.get_mut(room) {
                        ids.retain(|m| *m != id);
                        if ids.is_empty() {
                            self.rooms.remove(room);
                        }
                    }
                }
            }
        }
    }

    /// Hands `message` to every member that wants its room; drops the
    /// members whose inbox is full, in messages or in `max_bytes` (they
    /// catch up from the station), or gone.
    fn dispatch(&mut self, message: &Shared, max_bytes: usize) {
        let size = message.encoded_len();
        let mut dropped = Vec::new();
        let members = &self.members;
        let wanting = self
            .rooms
            .get(message.room.as_str())
            .into_iter()
            .flatten()
            .chain(&self.every);
        for id in wanting {
            let Some(member) = members.get(id) else {
                continue;
            };
            let queued = member.bytes.load(Ordering::Acquire);
            if queued > 0 && queued + size > max_bytes {
                member.lagged.store(true, Ordering::Release);
                dropped.push(*id);
                continue;
            }
            match member.inbox.try_send(Arc::clone(message)) {
                Ok(()) => {
                    member.bytes.fetch_add(size, Ordering::AcqRel);
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    member.lagged.store(true, Ordering::Release);
                    dropped.push(*id);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => dropped.push(*id),
            }
        }
        for id in dropped {
            self.remove(id);
        }
    }
}

/// The in-process live feed.
pub struct Hub {
    /// A std mutex: nothing is awaited under it, and it is held for
    /// non-blocking sends and map updates only.
    registry: Mutex<Registry>,
    /// Messages an inbox holds before its subscriber counts as lagging.
    capacity: usize,
    /// Bytes of messages an inbox holds at most (always at least one).
    max_bytes: usize,
    started: watch::Sender<bool>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let registry = self.registry();
        f.debug_struct("Hub")
            .field("last", &registry.last)
            .field("members", &registry.members.len())
            .field("rooms", &registry.rooms.len())
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// A hub whose subscribers may fall `capacity` messages of their rooms,
    /// and at most `max_bytes` of them, behind before they are switched to
    /// catching up from the station.
    pub fn new(capacity: usize, max_bytes: usize) -> Arc<Self> {
        Arc::new(Self {
            registry: Mutex::new(Registry::default()),
            capacity: capacity.max(1),
            max_bytes,
            started: watch::Sender::new(false),
        })
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the live feed is running (the station is ready).
    pub fn is_started(&self) -> bool {
        *self.started.borrow()
    }

    /// Turns true once the live feed runs.
    pub fn started(&self) -> watch::Receiver<bool> {
        self.started.subscribe()
    }

    /// Joins the live feed for `rooms`.
    pub fn join(self: &Arc<Self>, rooms: &Rooms) -> Joined {
        let (tx, inbox) = mpsc::channel(self.capacity);
        let lagged = Arc::new(AtomicBool::new(false));
        let bytes = Arc::new(AtomicUsize::new(0));
        let mut registry = self.registry();
        let id = registry.next_id;
        registry.next_id += 1;
        match rooms {
            Rooms::Every => registry.every.push(id),
            Rooms::Only(names) => {
                for room in names {
                    registry.rooms.entry(room.clone()).or_default().push(id);
                }
            }
        }
        registry.members.insert(
            id,
            Member {
                inbox: tx,
                rooms: rooms.clone(),
                lagged: Arc::clone(&lagged),
                bytes: Arc::clone(&bytes),
            },
        );
        let after = registry.last;
        drop(registry);
        Joined {
            inbox,
            after,
            membership: Membership {
                hub: Arc::clone(self),
                id,
                lagged,
                bytes,
            },
        }
    }

    /// Sequence of the last message the live feed passed on.
    pub fn position(&self) -> u64 {
        self.registry().last
    }

    /// Rooms someone in this process follows now.
    #[cfg(test)]
    fn followed_rooms(&self) -> usize {
        self.registry().rooms.len()
    }

    /// Publishes how far the live feed is behind the station, every
    /// [`LAG_EVERY`], until shutdown: `fastchat_live_feed_lag_messages`
    /// (0 when it keeps up; growing when this replica cannot keep up with
    /// the station's rate, or its broker connection is stuck).
    async fn report_lag(
        self: Arc<Self>,
        station: broker_client::Station,
        cancel: CancellationToken,
    ) {
        let lag = metrics::gauge!("fastchat_live_feed_lag_messages");
        let mut tick = tokio::time::interval(LAG_EVERY);
        while cancel.run_until_cancelled(tick.tick()).await.is_some() {
            // A broker that does not answer is readiness's business; the
            // gauge keeps its last value meanwhile.
            if let Some(Ok(state)) = cancel.run_until_cancelled(station.state()).await {
                #[expect(
                    clippy::cast_precision_loss,
                    reason = "a gauge; exact below 2^53 messages"
                )]
                lag.set(state.last_sequence.saturating_sub(self.position()) as f64);
            }
        }
    }

    fn dispatch(&self, sequence: u64, message: Option<crate::trace::Live>) {
        let mut registry = self.registry();
        registry.last = sequence;
        if let Some(message) = message {
            registry.dispatch(&Arc::new(message), self.max_bytes);
        }
    }

    /// Ends every inbox: the live feed stopped (subscribers end, saying so).
    fn stop(&self) {
        let mut registry = self.registry();
        registry.members.clear();
        registry.rooms.clear();
        registry.every.clear();
    }

    /// Feeds the hub from the station until shutdown.
    pub async fn run(self: Arc<Self>, context: Context) {
        let Some(station) = context.station_ready().await else {
            return;
        };
        // Start after the newest stored message: everything up to it is
        // history, served from the station.
        let mut backoff =
            ExponentialBackoff::doubling(Duration::from_millis(100), Duration::from_secs(5))
                .stream();
        let (start, mut fan_out) = loop {
            let attempt = async {
                let state = station.state().await?;
                let fan_out = station
                    .fan_out(
                        station::ALL_ROOMS,
                        StartPosition::after(state.last_sequence),
                    )
                    .await?;
                Ok::<_, broker_client::Error>((state.last_sequence, fan_out))
            };
            match context.cancel.run_until_cancelled(attempt).await {
                None => return,
                Some(Ok(started)) => break started,
                Some(Err(e)) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e.report(), ?delay, "live feed not started; retrying");
                    if context
                        .cancel
                        .run_until_cancelled(tokio::time::sleep(delay))
                        .await
                        .is_none()
                    {
                        return;
                    }
                }
            }
        };
        self.dispatch(start, None);
        self.started.send_replace(true);
        context
            .tracker
            .spawn(Arc::clone(&self).report_lag(station.clone(), context.cancel.clone()));
        tracing::info!(after_sequence = start, "live feed started");
        let sequence_gauge = metrics::gauge!("fastchat_live_feed_sequence");
        while let Some(delivered) = context.cancel.run_until_cancelled(fan_out.next()).await {
            // trace: decoded with its stored trace context
            self.dispatch(delivered.sequence, crate::trace::decode(&delivered));
            #[expect(
                clippy::cast_precision_loss,
                reason = "a gauge; exact below 2^53, which no station reaches"
            )]
            sequence_gauge.set(delivered.sequence as f64);
        }
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(sequence: u64, room: &str) -> Option<crate::trace::Live> {
        Some(crate::trace::Live::from(v1::ChatMessage {
            sequence,
            room: room.into(),
            ..v1::ChatMessage::default()
        }))
    }

    fn rooms(names: &[&str]) -> Rooms {
        Rooms::Only(names.iter().map(|n| (*n).to_owned()).collect())
    }

    fn drain(joined: &mut Joined) -> Vec<u64> {
        let mut got = Vec::new();
        while let Ok(m) = joined.inbox.try_recv() {
            got.push(m.sequence);
        }
        got
    }

    /// A message reaches the subscribers of its room, of every room, and of
    /// a set holding its room; nobody else's inbox sees it.
    #[test]
    fn a_message_reaches_only_the_subscribers_that_want_its_room() {
        let hub = Hub::new(16, 1 << 20);
        let mut a = hub.join(&rooms(&["a"]));
        let mut b = hub.join(&rooms(&["b"]));
        let mut ab = hub.join(&rooms(&["a", "b"]));
        let mut every = hub.join(&Rooms::Every);
        assert_eq!(a.after, 0);
        hub.dispatch(1, message(1, "a"));
        hub.dispatch(2, message(2, "b"));
        hub.dispatch(3, message(3, "c"));
        hub.dispatch(4, None);
        hub.dispatch(5, message(5, "a"));
        assert_eq!(drain(&mut a), [1, 5]);
        assert_eq!(drain(&mut b), [2]);
        assert_eq!(drain(&mut ab), [1, 2, 5]);
        assert_eq!(drain(&mut every), [1, 2, 3, 5]);
        // A join after them starts after the last dispatched, skipped or not.
        assert_eq!(hub.join(&rooms(&["c"])).after, 5);
    }

    /// Rooms nobody follows have no entry: the last member leaving a room
    /// releases it.
    #[test]
    fn a_room_is_released_when_its_last_subscriber_leaves() {
        let hub = Hub::new(16, 1 << 20);
        let a1 = hub.join(&rooms(&["a"]));
        let a2 = hub.join(&rooms(&["a", "b"]));
        assert_eq!(hub.followed_rooms(), 2);
        drop(a2);
        assert_eq!(hub.followed_rooms(), 1);
        drop(a1);
        assert_eq!(hub.followed_rooms(), 0);
        assert_eq!(hub.registry().members.len(), 0);
    }

    /// A subscriber whose inbox is full is dropped (and told it lagged);
    /// the others keep getting everything.
    #[test]
    fn a_full_inbox_is_dropped_as_lagging_and_nobody_else_waits() {
        let hub = Hub::new(2, 1 << 20);
        let mut slow = hub.join(&rooms(&["a"]));
        let mut fast = hub.join(&rooms(&["a"]));
        hub.dispatch(1, message(1, "a"));
        hub.dispatch(2, message(2, "a"));
        assert_eq!(drain(&mut fast), [1, 2]);
        hub.dispatch(3, message(3, "a"));
        assert_eq!(drain(&mut fast), [3]);
        // slow holds 1, 2 and was dropped at 3.
        assert_eq!(drain(&mut slow), [1, 2]);
        assert!(matches!(
            slow.inbox.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
        assert!(slow.lagged());
        assert!(!fast.lagged());
    }

    /// An inbox is bounded in bytes too: one big message fits, the next
    /// that would pass the budget drops the subscriber as lagging; taking
    /// messages out makes room again.
    #[test]
    fn an_inbox_is_bounded_in_bytes() {
        let hub = Hub::new(100, 2500);
        let big = |sequence| {
            Some(crate::trace::Live::from(v1::ChatMessage {
                sequence,
                room: "a".into(),
                text: "x".repeat(1000),
                ..v1::ChatMessage::default()
            }))
        };
        let mut reader = hub.join(&rooms(&["a"]));
        let mut idle = hub.join(&rooms(&["a"]));
        hub.dispatch(1, big(1));
        hub.dispatch(2, big(2));
        // The reader takes both (now in a runtime-free way: try_recv does
        // not give the bytes back, recv does).
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            assert_eq!(reader.recv().await.map(|m| m.sequence), Some(1));
            assert_eq!(reader.recv().await.map(|m| m.sequence), Some(2));
        });
        hub.dispatch(3, big(3));
        runtime.block_on(async {
            assert_eq!(reader.recv().await.map(|m| m.sequence), Some(3));
        });
        assert!(!reader.lagged());
        // The idle one held 2 × ~1 KB; the third passed 2,500 bytes.
        assert!(idle.lagged());
        assert_eq!(drain(&mut idle), [1, 2]);
    }

    /// The feed stopping ends every inbox without calling it lag.
    #[test]
    fn a_stopped_feed_ends_every_inbox() {
        let hub = Hub::new(2, 1 << 20);
        let mut joined = hub.join(&Rooms::Every);
        hub.stop();
        assert!(matches!(
            joined.inbox.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
        assert!(!joined.lagged());
    }
}
