//! One subscription: replay from its start position out of the station, then
//! live from its inbox in the hub (messages of its rooms only); if it falls
//! too far behind, catch up from the station again and rejoin. Messages go
//! out in sequence order, each exactly once, never skipped.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime},
};

use broker_client::{OffsetDateTime, StartPosition, Station, Subjects};
use fastchat_backoff::ExponentialBackoff;
use fastchat_proto::station;
use prost::Message as _;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::Instrument as _;

use crate::{
    error::ApiError,
    hub::{Hub, Joined, Shared},
    newest::{HistoryReads, ReadError},
    trace::{self, Delivery},
};

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Every retained message.
    All,
    /// Messages with sequence > this.
    After(u64),
    /// Messages stored at or after this time.
    Since(OffsetDateTime),
    /// The last N messages.
    Last(u32),
    /// Only messages stored after subscribing.
    New,
}

pub use crate::hub::Rooms;

/// What a subscription emits.
#[derive(Debug, Clone)]
pub enum Event {
    /// A message, shared with every other subscriber that gets it.
    Message(Shared),
    /// Sequences asked for but no longer retained.
    Gap { from: u64, to: u64 },
    /// The history replay is done: live from `sequence` on.
    CaughtUp { sequence: u64 },
    /// Nothing was sent for the heartbeat interval; the stream is at
    /// `sequence`.
    Heartbeat { sequence: u64, time: SystemTime },
}

impl Event {
    /// What the event weighs in a subscriber's queue (its encoded size).
    pub fn bytes(&self) -> usize {
        match self {
            Self::Message(message) => message.encoded_len(),
            Self::Gap { .. } => 16,
            Self::CaughtUp { .. } => 8,
            Self::Heartbeat { .. } => 24,
        }
    }
}

/// A subscriber's queue, counted in bytes as well as in items: the sink
/// adds what it queues, the response stream takes off what it hands to the
/// transport.
#[derive(Debug)]
pub struct Queue {
    bytes: AtomicUsize,
    taken: Notify,
    budget: usize,
}

impl Queue {
    /// A queue that holds at most `budget` bytes (always at least one event).
    pub fn new(budget: usize) -> Arc<Self> {
        Arc::new(Self {
            bytes: AtomicUsize::new(0),
            taken: Notify::new(),
            budget,
        })
    }

    /// The response stream took `event` off the queue.
    pub fn took(&self, event: &Event) {
        self.bytes.fetch_sub(event.bytes(), Ordering::AcqRel);
        self.taken.notify_one();
    }

    /// Waits until `bytes` more fit (or the queue is empty), then counts them.
    async fn reserve(&self, bytes: usize) {
        loop {
            let queued = self.bytes.load(Ordering::Acquire);
            if queued == 0 || queued + bytes <= self.budget {
                self.bytes.fetch_add(bytes, Ordering::AcqRel);
                return;
            }
            // `notify_one` keeps a permit if nobody waits yet, so a take
            // between the check and here is not lost.
            self.taken.notified().await;
        }
    }

    fn unreserve(&self, bytes: usize) {
        self.bytes.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// A subscription request, validated.
#[derive(Debug, Clone)]
pub struct Request {
    /// The rooms.
    pub rooms: Rooms,
    /// Start position (`Last` counts per room).
    pub start: Start,
    /// The client's connection, if known: its history reads take turns in
    /// the connection's and its address's shares of the history slots, so
    /// one client's subscriptions (that may never read) cannot hold them
    /// all.
    pub peer: Option<SocketAddr>,
}

/// What flows from a subscription task to its gRPC stream. Kept small (a
/// pointer or two): every subscriber's queue allocates room for a block of
/// them up front.
pub type Item = Result<Event, Box<Status>>;

/// Messages fetched at a time while a subscriber that fell behind catches
/// up: it is slow by definition, so the broker should not send ahead of it
/// (a push read would, by megabytes, in bursts that compete with everyone
/// else's live feed).
const CATCH_UP_BATCH: usize = 256;

/// Sends events to the client, stopping on shutdown or when it hangs up.
///
/// A stream must never end with OK by accident: if the sink is dropped
/// without [`Sink::close`] or [`Sink::client_gone`] (the task panicked, or a
/// path forgot to say why), the client gets INTERNAL with its resume cursor.
///
/// A subscriber that reads nothing while its queue is full (in items or in
/// bytes) for `stall_timeout` is ended with RESOURCE_EXHAUSTED: it would
/// otherwise hold its queue and the transport's buffers for ever.
#[derive(Debug)]
pub struct Sink {
    tx: mpsc::Sender<Item>,
    queue: Arc<Queue>,
    stall_timeout: Duration,
    cancel: CancellationToken,
    /// Sequence up to which everything matching was sent: the resume cursor.
    cursor: u64,
    delivered: metrics::Counter,
    /// Whether the end was reported (or nobody is left to tell).
    ended: bool,
}

impl Sink {
    /// A sink into `tx` (counted in `queue`) that stops when `cancel`
    /// fires and gives up on a reader stalled for `stall_timeout`.
    pub fn new(
        tx: mpsc::Sender<Item>,
        queue: Arc<Queue>,
        stall_timeout: Duration,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            tx,
            queue,
            stall_timeout,
            cancel,
            cursor: 0,
            delivered: metrics::counter!("fastchat_messages_delivered_total"),
            ended: false,
        }
    }

    async fn send(&mut self, event: Event) -> Result<(), End> {
        let bytes = event.bytes();
        let deadline = tokio::time::Instant::now() + self.stall_timeout;
        let reserved = tokio::select! {
            () = self.cancel.cancelled() => return Err(End::Stopped),
            reserved = tokio::time::timeout_at(deadline, self.queue.reserve(bytes)) => reserved,
        };
        if reserved.is_err() {
            return Err(self.stalled());
        }
        let sent = tokio::select! {
            () = self.cancel.cancelled() => Err(End::Stopped),
            sent = tokio::time::timeout_at(deadline, self.tx.send(Ok(event))) => match sent {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(End::Stopped),
                Err(_) => Err(self.stalled()),
            },
        };
        if sent.is_err() {
            self.queue.unreserve(bytes);
        }
        sent
    }

    fn stalled(&self) -> End {
        metrics::counter!("fastchat_subscriptions_stalled_total").increment(1);
        End::Failed(ApiError::Stalled {
            after: self.stall_timeout,
            cursor: self.cursor,
        })
    }

    async fn message(&mut self, message: Shared) -> Result<(), End> {
        let sequence = message.sequence;
        self.send(Event::Message(message)).await?;
        self.cursor = sequence;
        self.delivered.increment(1);
        Ok(())
    }

    /// Ends the stream with `status` (best effort: a client gone has no
    /// use for it).
    fn close(&mut self, status: Status) {
        self.ended = true;
        let _ = self.tx.try_send(Err(Box::new(status)));
    }

    /// The client hung up: nothing to report.
    fn client_gone(&mut self) {
        self.ended = true;
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if !self.ended {
            tracing::error!(cursor = self.cursor, "subscription ended without a status");
            let _ = self.tx.try_send(Err(Box::new(Status::internal(format!(
                "the subscription stopped unexpectedly; resubscribe with after_sequence = {}",
                self.cursor
            )))));
        }
    }
}

/// Why a subscription ended.
enum End {
    /// The client went away, or the server is shutting down.
    Stopped,
    /// A failure to report to the client.
    Failed(ApiError),
}

impl From<broker_client::Error> for End {
    fn from(e: broker_client::Error) -> Self {
        Self::Failed(e.into())
    }
}

/// Counts a subscription in `fastchat_subscriptions_active` for as long as
/// it lives, however it ends (a panic included).
struct Active(metrics::Gauge);

impl Active {
    fn new() -> Self {
        let gauge = metrics::gauge!("fastchat_subscriptions_active");
        gauge.increment(1.0);
        metrics::counter!("fastchat_subscriptions_total").increment(1);
        Self(gauge)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// One subscriber's stream of the station: its history, then live.
pub struct Subscription {
    hub: Arc<Hub>,
    /// When the stream must end because its token does.
    deadline: Option<SystemTime>,
    station: Station,
    /// History reads: the first replay waits for a slot; `last = N` of
    /// one filter shares its read with the filter's other joiners.
    history: Arc<HistoryReads>,
    rooms: Rooms,
    /// The station subjects of `rooms`.
    filter: Subjects,
    start: Start,
    peer: Option<SocketAddr>,
    /// For `last` over several rooms: the first sequence to send of each
    /// room (their starts differ).
    room_starts: BTreeMap<String, u64>,
    /// An event at least this often while live.
    heartbeat: Duration,
    sink: Sink,
}

impl Subscription {
    /// A subscription of `request` on `station`, sending into `sink`.
    pub fn new(
        hub: Arc<Hub>,
        deadline: Option<SystemTime>,
        station: Station,
        history: Arc<HistoryReads>,
        request: Request,
        heartbeat: Duration,
        sink: Sink,
    ) -> Self {
        Self {
            hub,
            deadline,
            station,
            history,
            filter: request.rooms.subjects(),
            rooms: request.rooms,
            start: request.start,
            peer: request.peer,
            room_starts: BTreeMap::new(),
            heartbeat,
            sink,
        }
    }

    /// Runs until the client goes away, the server shuts down, or the
    /// broker fails (reported as UNAVAILABLE with the resume cursor).
    ///
    /// `joined` is taken from [`Hub::join`] before the RPC answers, so a
    /// `new_only` subscriber gets everything stored after its call returned.
    pub async fn run(mut self, joined: Joined) {
        let _active = Active::new();
        let outcome = match self.deadline {
            // A stream lives no longer than the token it was opened with.
            Some(deadline) => {
                let left = deadline
                    .duration_since(SystemTime::now())
                    .unwrap_or_default();
                tokio::select! {
                    outcome = self.serve(joined) => outcome,
                    () = tokio::time::sleep(left) => Err(End::Failed(ApiError::TokenExpired { cursor: 0 })),
                }
            }
            None => self.serve(joined).await,
        };
        let cursor = self.sink.cursor;
        let error = match outcome {
            Ok(()) | Err(End::Stopped) if !self.sink.cancel.is_cancelled() => {
                self.sink.client_gone();
                return;
            }
            Ok(()) | Err(End::Stopped) => ApiError::ShuttingDown { cursor },
            Err(End::Failed(ApiError::TokenExpired { .. })) => ApiError::TokenExpired { cursor },
            Err(End::Failed(e)) => e,
        };
        self.sink.close(error.into_status(Some(cursor)));
    }

    // The rare, large steps (replays, station requests) are boxed: a waiting
    // subscription's future then holds only the live loop's state (1.6 KiB
    // instead of 11 KiB per subscriber; make bench measures memory).
    async fn serve(&mut self, joined: Joined) -> Result<(), End> {
        if self.start != Start::New {
            // The newest n of one filter is read with the filter's other
            // joiners, in a slot taken by whoever reads; any other history
            // read waits for a slot of its own (every subscriber gets its
            // history, a burst of joiners just takes turns, within its
            // connection's and address's shares), but not past shutdown or
            // the client leaving.
            let shared = self.shared_last();
            let _share = match shared {
                Some(_) => None,
                None => {
                    let history = Arc::clone(self.history.slots());
                    let share = tokio::select! {
                        () = self.sink.cancel.cancelled() => return Err(End::Stopped),
                        () = self.sink.tx.closed() => return Err(End::Stopped),
                        share = history.take(self.peer, None) => share,
                    };
                    Some(share.map_err(|_| End::Stopped)?)
                }
            };
            // A broker at its consumer limit frees consumers within seconds:
            // wait and go on from the cursor rather than fail the subscriber.
            let mut backoff =
                ExponentialBackoff::doubling(Duration::from_millis(100), Duration::from_secs(2))
                    .stream();
            loop {
                let attempt = match shared {
                    Some(n) => Box::pin(self.newest(n, joined.after)).await,
                    None => Box::pin(self.history(joined.after)).await,
                };
                match attempt {
                    Err(End::Failed(ApiError::BrokerBusy(_))) => {
                        let delay = backoff.next_delay();
                        tokio::select! {
                            () = self.sink.cancel.cancelled() => return Err(End::Stopped),
                            () = self.sink.tx.closed() => return Err(End::Stopped),
                            () = tokio::time::sleep(delay) => {}
                        }
                    }
                    done => break done?,
                }
            }
        }
        self.sink.cursor = self.sink.cursor.max(joined.after);
        self.room_starts.clear();
        let caught_up = Event::CaughtUp {
            sequence: self.sink.cursor,
        };
        self.sink.send(caught_up).await?;
        self.live(joined).await
    }

    /// `Some(n)` for a `last = n` start of a single filter (one room, or
    /// every room): the start joiners share reads for.
    fn shared_last(&self) -> Option<u32> {
        match (self.start, &self.rooms) {
            (Start::Last(n), Rooms::Every) => Some(n),
            (Start::Last(n), Rooms::Only(rooms)) if rooms.len() == 1 => Some(n),
            _ => None,
        }
    }

    /// Sends the newest `n` messages up to `joined_at` (see
    /// [`HistoryReads::newest`]), stopping early on shutdown or when the
    /// client leaves.
    async fn newest(&mut self, n: u32, joined_at: u64) -> Result<(), End> {
        let read = self
            .history
            .newest(&self.station, &self.filter, n, joined_at, self.peer);
        let messages = tokio::select! {
            () = self.sink.cancel.cancelled() => return Err(End::Stopped),
            () = self.sink.tx.closed() => return Err(End::Stopped),
            read = read => match read {
                Ok(messages) => messages,
                Err(ReadError::Broker(e)) => return Err(e.into()),
                Err(ReadError::Stopped) => return Err(End::Stopped),
            },
        };
        for message in messages {
            if message.sequence <= self.sink.cursor {
                continue;
            }
            // trace: a replay, linked to the send
            let span = trace::deliver(&message, Delivery::History);
            self.sink.message(message).instrument(span).await?;
        }
        Ok(())
    }

    /// The history up to `joined_at`, from the start position.
    async fn history(&mut self, joined_at: u64) -> Result<(), End> {
        if let Some(start) = self.first_position(joined_at).await? {
            self.replay(start, joined_at, None).await?;
        }
        Ok(())
    }

    /// Where the history replay starts, or `None` for none (`new_only`).
    /// History runs up to `joined_at`, where the live feed takes over.
    async fn first_position(&mut self, joined_at: u64) -> Result<Option<StartPosition>, End> {
        Ok(match self.start {
            Start::New => None,
            Start::All => Some(StartPosition::All),
            Start::Since(t) => Some(StartPosition::Since(t)),
            Start::After(after) => {
                self.sink.cursor = after;
                let newest = self.report_gap().await?;
                if after > newest {
                    return Err(End::Failed(ApiError::BeyondNewest { after, newest }));
                }
                Some(StartPosition::after(after))
            }
            Start::Last(n) => Some(self.last_position(n, joined_at).await?),
        })
    }

    /// Where the last `n` messages start: of the stream's rooms together
    /// when it has one filter (one room, or every room), of each room when
    /// it has several (each room's start is kept in `room_starts`).
    async fn last_position(&mut self, n: u32, joined_at: u64) -> Result<StartPosition, End> {
        let before = Some(joined_at.saturating_add(1));
        let Rooms::Only(rooms) = &self.rooms else {
            return Ok(self.nth_last(&self.filter, n, before).await?);
        };
        if rooms.len() == 1 {
            return Ok(self.nth_last(&self.filter, n, before).await?);
        }
        let mut first = u64::MAX;
        for room in rooms {
            let start = match self
                .nth_last(&station::subject(room).into(), n, before)
                .await?
            {
                StartPosition::FromSequence(sequence) => sequence,
                _ => 0,
            };
            first = first.min(start);
            self.room_starts.insert(room.clone(), start);
        }
        Ok(match first {
            0 | u64::MAX => StartPosition::All,
            first => StartPosition::FromSequence(first),
        })
    }

    async fn nth_last(
        &self,
        filter: &Subjects,
        n: u32,
        before: Option<u64>,
    ) -> Result<StartPosition, broker_client::Error> {
        Ok(
            match self
                .station
                .nth_last_sequence(filter, u64::from(n), before)
                .await?
            {
                Some(sequence) => StartPosition::FromSequence(sequence),
                None => StartPosition::All,
            },
        )
    }

    /// Follows the live feed; a subscriber too slow for it catches up from
    /// the station and rejoins.
    async fn live(&mut self, mut joined: Joined) -> Result<(), End> {
        let idle = tokio::time::sleep(self.heartbeat);
        tokio::pin!(idle);
        loop {
            let received = tokio::select! {
                () = self.sink.cancel.cancelled() => return Err(End::Stopped),
                // An idle subscription would otherwise notice a vanished client
                // only at its next message, holding its place meanwhile.
                () = self.sink.tx.closed() => return Err(End::Stopped),
                () = &mut idle => {
                    // Nothing of ours is waiting: everything the feed passed on
                    // so far was sent, so the stream is at the feed's position.
                    let position = self.hub.position();
                    if joined.is_empty() {
                        self.sink.cursor = self.sink.cursor.max(position);
                    }
                    let heartbeat = Event::Heartbeat {
                        sequence: self.sink.cursor,
                        time: SystemTime::now(),
                    };
                    self.sink.send(heartbeat).await?;
                    idle.as_mut().reset(tokio::time::Instant::now() + self.heartbeat);
                    continue;
                }
                received = joined.recv() => received,
            };
            match received {
                Some(message) => {
                    if message.sequence <= self.sink.cursor {
                        continue;
                    }
                    // trace: a live delivery, a child of the send
                    let span = trace::deliver(&message, Delivery::Live);
                    self.sink.message(message).instrument(span).await?;
                    idle.as_mut()
                        .reset(tokio::time::Instant::now() + self.heartbeat);
                }
                None if joined.lagged() => {
                    joined = Box::pin(self.catch_up()).await?;
                }
                None => {
                    return Err(End::Failed(ApiError::unavailable("live feed stopped")));
                }
            }
        }
    }

    /// Too slow for the live feed: rejoin it, read what was missed from the
    /// station (paced), and return the new membership. Nobody else waits.
    async fn catch_up(&mut self) -> Result<Joined, End> {
        metrics::counter!("fastchat_subscription_catchups_total").increment(1);
        tracing::debug!(
            cursor = self.sink.cursor,
            "subscriber lagged; catching up from the station"
        );
        let rejoined = self.hub.join(&self.rooms);
        self.report_gap().await?;
        let start = StartPosition::after(self.sink.cursor);
        self.replay(start, rejoined.after, Some(CATCH_UP_BATCH))
            .await?;
        self.sink.cursor = self.sink.cursor.max(rejoined.after);
        Ok(rejoined)
    }

    /// Sends the stored messages from `start` up to at least `until`; read
    /// `batch` at a time if given, else as fast as the broker pushes them.
    async fn replay(
        &mut self,
        start: StartPosition,
        until: u64,
        batch: Option<usize>,
    ) -> Result<(), End> {
        let mut read = match batch {
            Some(batch) => self.station.read_paced(&self.filter, start, batch).await?,
            None => self.station.read(&self.filter, start).await?,
        };
        loop {
            let next = tokio::select! {
                () = self.sink.cancel.cancelled() => return Err(End::Stopped),
                next = read.next() => next?,
            };
            let Some(delivered) = next else {
                return Ok(());
            };
            if delivered.sequence > self.sink.cursor
                // trace: decoded with its stored trace context
                && let Some(message) = trace::decode(&delivered)
                && self
                    .room_starts
                    .get(&message.room)
                    .is_none_or(|start| delivered.sequence >= *start)
            {
                // trace: a replay or catch-up, linked to the send
                let how = if batch.is_some() {
                    Delivery::CatchUp
                } else {
                    Delivery::History
                };
                let span = trace::deliver(&message, how);
                self.sink
                    .message(Arc::new(message))
                    .instrument(span)
                    .await?;
            }
            if delivered.sequence >= until {
                return Ok(());
            }
        }
    }

    /// Reports, as a [`Event::Gap`], messages after the cursor that the
    /// station no longer retains. Returns the newest stored sequence.
    async fn report_gap(&mut self) -> Result<u64, End> {
        let state = self.station.state().await?;
        let wanted = self.sink.cursor.saturating_add(1);
        if state.first_sequence > wanted && state.last_sequence >= wanted {
            let to = state.first_sequence - 1;
            self.sink.send(Event::Gap { from: wanted, to }).await?;
            self.sink.cursor = to;
        }
        Ok(state.last_sequence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// However a subscription task ends without saying why (a panic, a
    /// forgotten path), its client gets a status, not a clean end.
    #[tokio::test]
    async fn a_sink_dropped_without_an_end_reports_internal() {
        let (tx, mut rx) = mpsc::channel(4);
        let mut sink = Sink::new(
            tx,
            Queue::new(64 * 1024),
            Duration::from_secs(30),
            CancellationToken::new(),
        );
        sink.cursor = 41;
        let task = tokio::spawn(async move {
            let _sink = sink;
            panic!("a bug in the subscription task");
        });
        assert!(task.await.is_err(), "the task panicked");
        match rx.recv().await {
            Some(Err(status)) => {
                assert_eq!(status.code(), tonic::Code::Internal);
                assert!(
                    status.message().contains("after_sequence = 41"),
                    "{status:?}"
                );
            }
            other => panic!("expected a status, got {other:?}"),
        }
        assert!(rx.recv().await.is_none());
    }

    /// A reader that takes nothing is ended once its queue has stayed full
    /// for the stall timeout, with a status that says why and where to
    /// resume; the queue is bounded in bytes, not only in items.
    #[tokio::test(start_paused = true)]
    async fn a_reader_that_takes_nothing_is_ended_after_the_stall_timeout() {
        use fastchat_proto::v1;
        let (tx, mut rx) = mpsc::channel(100);
        let queue = Queue::new(10_000);
        let mut sink = Sink::new(
            tx,
            Arc::clone(&queue),
            Duration::from_secs(30),
            CancellationToken::new(),
        );
        let message = |sequence| {
            Arc::new(trace::Live::from(v1::ChatMessage {
                text: "x".repeat(3000),
                sequence,
                ..v1::ChatMessage::default()
            }))
        };
        // Three 3 KB messages fit in 10,000 bytes; the fourth waits.
        for sequence in 1..=3 {
            sink.message(message(sequence))
                .await
                .map_err(|_| "sent")
                .expect("fits");
        }
        let started = tokio::time::Instant::now();
        match sink.message(message(4)).await {
            Err(End::Failed(ApiError::Stalled { cursor, .. })) => assert_eq!(cursor, 3),
            Err(_) => panic!("ended for another reason"),
            Ok(()) => panic!("a fourth message fitted the byte budget"),
        }
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        // Taking one makes room again.
        let Some(Ok(first)) = rx.recv().await else {
            panic!("the first message is queued");
        };
        queue.took(&first);
        sink.message(message(4))
            .await
            .map_err(|_| "sent")
            .expect("room again");
        sink.client_gone();
    }

    #[tokio::test]
    async fn a_sink_that_reported_its_end_adds_nothing() {
        let (tx, mut rx) = mpsc::channel(4);
        let mut sink = Sink::new(
            tx,
            Queue::new(64 * 1024),
            Duration::from_secs(30),
            CancellationToken::new(),
        );
        sink.close(Status::unavailable("shutting down"));
        drop(sink);
        assert!(matches!(rx.recv().await, Some(Err(s)) if s.code() == tonic::Code::Unavailable));
        assert!(rx.recv().await.is_none());
    }
}
