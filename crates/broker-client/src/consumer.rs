//! Reading stations: never-ending fan-out consumers ([`Station::fan_out`])
//! and bounded history reads ([`Station::read`], [`Station::read_paced`]).

use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{DeliverPolicy, push},
};
use fastchat_backoff::{Backoff, ExponentialBackoff};
use futures::StreamExt;
use tokio::sync::OwnedSemaphorePermit;

use crate::{
    Delivered, Error, ErrorKind, Result, StartPosition, Station, Subjects,
    direct::{self, Direct},
    station::{DeleteOnDrop, Scratch},
};

/// Silence after which a fan-out consumer checks whether it is stalled.
const FAN_OUT_IDLE_CHECK: Duration = Duration::from_secs(10);
/// Silence after which a history read (which knows messages are pending)
/// gives up with a time-out.
const READ_IDLE_LIMIT: Duration = Duration::from_secs(10);

impl Station {
    /// A fan-out consumer over `filter` (a subject, wildcards allowed) from
    /// `start`: an ordered, ephemeral consumer that this process alone reads,
    /// so every process sees every message. It never ends by itself: after a
    /// broker outage it resumes after the last message it yielded.
    ///
    /// # Errors
    /// Transient errors when the first consumer cannot be created.
    pub async fn fan_out(&self, filter: &str, start: StartPosition) -> Result<FanOut> {
        let messages = FanOut::create(self, filter, start).await?;
        Ok(FanOut {
            station: self.clone(),
            filter: filter.to_owned(),
            last: None,
            start,
            messages: Some(messages),
            backoff: ExponentialBackoff::doubling(
                Duration::from_millis(50),
                Duration::from_secs(2),
            )
            .stream(),
            errors: 0,
            state: self.broker().watch_state(),
        })
    }

    /// A bounded read of history over `filter` from `start`: yields every
    /// matching message stored at the moment of the call, in order, then ends.
    ///
    /// On the connection reserved for reads, so a replay never queues ahead
    /// of the live feed. Batched direct gets where the broker has them
    /// (nats-server ≥ 2.11): no consumer is created, each batch is asked for
    /// once the previous one was taken. Otherwise a push consumer: about
    /// twice the throughput of a pull one, but the broker sends ahead up to
    /// its flow-control window (megabytes) whatever the reader's pace.
    ///
    /// # Errors
    /// Transient errors when the consumer cannot be created.
    pub async fn read(&self, filter: impl Into<Subjects>, start: StartPosition) -> Result<Read> {
        let filter = filter.into();
        if let Some(read) = self
            .direct_read(&filter, start, direct::READ_BATCH, true, None)
            .await?
        {
            return Ok(read);
        }
        Ok(
            match self.pushed(&filter, start.deliver_policy(), None).await? {
                Some(pushed) => Read {
                    source: Source::Push(Box::new(pushed)),
                },
                None => Read::empty(),
            },
        )
    }

    /// An ordered push consumer over `filter` from `policy` on the reader
    /// connection, deleted (and its replay-consumer `place`, if any, freed)
    /// when dropped; `None` if nothing matches from there.
    async fn pushed(
        &self,
        filter: &Subjects,
        policy: DeliverPolicy,
        place: Option<OwnedSemaphorePermit>,
    ) -> Result<Option<Pushed>> {
        let op = || format!("read `{filter}` from station `{}`", self.name());
        let (filter_subject, filter_subjects) = filter.consumer_filters();
        self.broker().ensure_connected(op())?;
        let consumer = self
            .reader_stream_handle()
            .await?
            .create_consumer(push::OrderedConfig {
                deliver_subject: self.broker().reader().0.new_inbox(),
                filter_subject,
                filter_subjects,
                deliver_policy: policy,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::nats(op(), e))?;
        let delete = DeleteOnDrop::new(consumer.cached_info(), self.broker().reader().1.clone());
        if consumer.cached_info().num_pending == 0 {
            return Ok(None);
        }
        let messages = consumer
            .messages()
            .await
            .map_err(|e| Error::nats(op(), e))?;
        Ok(Some(Pushed {
            messages,
            _delete: delete,
            _place: place,
        }))
    }

    /// Like [`Station::read`], but fetched `batch` messages at a time, the
    /// next batch only once the previous one was taken: at most `batch`
    /// messages are held for a slow reader, and the broker does no work
    /// ahead of it. Slower than [`Station::read`] for a fast reader.
    ///
    /// # Errors
    /// Transient errors when the consumer cannot be created.
    pub async fn read_paced(
        &self,
        filter: impl Into<Subjects>,
        start: StartPosition,
        batch: usize,
    ) -> Result<Read> {
        let filter = filter.into();
        if let Some(read) = self.direct_read(&filter, start, batch, false, None).await? {
            return Ok(read);
        }
        let scratch = self.scratch(&filter, start.deliver_policy()).await?;
        if scratch.pending() == 0 {
            return Ok(Read::empty());
        }
        Ok(Read {
            source: Source::Paced(Box::new(Paced {
                scratch,
                batch: None,
                size: batch.max(1),
                got: false,
            })),
        })
    }
}

impl Station {
    /// The messages matching `filter` with sequences in `from..before`
    /// (and possibly a few after: callers stop at `before`), about
    /// `expected` of them: by batched direct gets of that size that make the
    /// broker look no further than `before`, else as [`Station::read`].
    ///
    /// # Errors
    /// Transient errors when the broker is unreachable.
    pub async fn read_window(
        &self,
        filter: impl Into<Subjects>,
        from: u64,
        before: u64,
        expected: usize,
    ) -> Result<Read> {
        let filter = filter.into();
        let batch = expected.clamp(16, direct::READ_BATCH);
        let start = StartPosition::FromSequence(from);
        let up_to = Some(before.saturating_sub(1));
        match self
            .direct_read(&filter, start, batch, false, up_to)
            .await?
        {
            Some(read) => Ok(read),
            None => self.read(filter, start).await,
        }
    }

    /// A read by batched direct gets, or `None` if the broker has none. The
    /// first batch is asked for at once, so a read of a station that is gone
    /// fails here, as a consumer's creation would. With `ahead`, each
    /// subject's next batch is asked for while the last one is being taken;
    /// with `up_to`, the broker looks no further than that sequence.
    async fn direct_read(
        &self,
        filter: &Subjects,
        start: StartPosition,
        batch: usize,
        ahead: bool,
        up_to: Option<u64>,
    ) -> Result<Option<Read>> {
        if !self.broker().batch_reads() {
            return Ok(None);
        }
        let from = match start {
            StartPosition::All => direct::From::Sequence(1),
            StartPosition::FromSequence(sequence) => direct::From::Sequence(sequence),
            StartPosition::Since(time) => direct::From::Time(time),
            StartPosition::New => return Ok(Some(Read::empty())),
        };
        let mut direct = Direct::new(self.clone(), filter.iter(), from, batch, ahead, up_to);
        if !direct.fill().await? {
            return Ok(Some(Read::empty()));
        }
        Ok(Some(Read {
            source: Source::Direct(Box::new(direct)),
        }))
    }
}

/// A never-ending, per-process ordered consumer (see [`Station::fan_out`]).
pub struct FanOut {
    station: Station,
    filter: String,
    /// Sequence of the last message yielded, to resume after an outage.
    last: Option<u64>,
    start: StartPosition,
    messages: Option<push::Ordered>,
    /// Paces re-creations of the consumer; reset by every message.
    backoff: Backoff,
    /// Errors from the current consumer since its last message.
    errors: u32,
    /// The connection state: after a reconnect the consumer is made anew
    /// here (a fresh, unnamed ephemeral consumer from our position) rather
    /// than by async-nats, which re-creates it under a name — something a
    /// broker user allowed only ephemeral consumers may not do.
    state: tokio::sync::watch::Receiver<crate::ConnectionState>,
}

impl FanOut {
    fn resume_position(&self) -> StartPosition {
        match self.last {
            Some(last) => StartPosition::after(last),
            None => self.start,
        }
    }

    // Takes its inputs by reference rather than `&self`: a `&FanOut` held
    // across an await would make the future require `FanOut: Sync`, which the
    // async-nats stream inside is not.
    async fn create(
        station: &Station,
        filter: &str,
        start: StartPosition,
    ) -> Result<push::Ordered> {
        let op = || format!("fan-out consumer on `{filter}`");
        let broker = station.broker();
        broker.ensure_connected(op())?;
        let consumer = station
            .stream_handle()
            .await?
            .create_consumer(push::OrderedConfig {
                deliver_subject: broker.client().new_inbox(),
                filter_subject: filter.to_owned(),
                deliver_policy: start.deliver_policy(),
                ..Default::default()
            })
            .await
            .map_err(|e| Error::nats(op(), e))?;
        consumer.messages().await.map_err(|e| Error::nats(op(), e))
    }

    /// Drops the current consumer; the next call of [`FanOut::next`]
    /// creates a fresh one after a back-off delay.
    fn recreate_later(&mut self) {
        self.messages = None;
        self.errors = 0;
    }

    /// The next message. Waits as long as it takes; after a broker outage it
    /// resumes after the last message it returned, so nothing is skipped or
    /// repeated. Cancel by dropping the future.
    pub async fn next(&mut self) -> Delivered {
        loop {
            if self.messages.is_none() {
                let start = self.resume_position();
                match Self::create(&self.station, &self.filter, start).await {
                    Ok(m) => {
                        tracing::info!(filter = %self.filter, last = ?self.last, "fan-out consumer (re)created");
                        self.messages = Some(m);
                    }
                    Err(e) => {
                        let delay = self.backoff.next_delay();
                        tracing::warn!(error = %e.report(), ?delay, "fan-out consumer not available; retrying");
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                }
            }
            let Some(messages) = self.messages.as_mut() else {
                continue;
            };
            let next = tokio::select! {
                next = tokio::time::timeout(FAN_OUT_IDLE_CHECK, messages.next()) => next,
                changed = self.state.changed() => {
                    let disconnected = changed.is_ok()
                        && *self.state.borrow_and_update() == crate::ConnectionState::Disconnected;
                    if disconnected {
                        tracing::info!(filter = %self.filter, last = ?self.last, "broker connection lost; the fan-out consumer is made anew once it is back");
                        self.messages = None;
                        self.station.broker().wait_connected().await;
                    }
                    continue;
                }
            };
            let next = match next {
                Ok(next) => next,
                Err(_) => {
                    if stalled(&self.station, self.last, self.start).await {
                        tracing::warn!(filter = %self.filter, last = ?self.last, "fan-out consumer stalled behind the station; recreating it");
                        self.recreate_later();
                    }
                    continue;
                }
            };
            match next {
                Some(Ok(message)) => match Delivered::from_jetstream(&message) {
                    Ok(delivered) => {
                        // The ordered consumer guarantees order; this guards
                        // the resume position against anything else.
                        if self.last.is_some_and(|last| delivered.sequence <= last) {
                            continue;
                        }
                        self.backoff.reset();
                        self.errors = 0;
                        self.last = Some(delivered.sequence);
                        return delivered;
                    }
                    Err(e) => tracing::warn!(error = %e, "skipping a non-JetStream message"),
                },
                Some(Err(e)) => {
                    // async-nats recreates ordered consumers itself on most
                    // errors; we only step in when they keep coming.
                    let e = Error::nats(format!("fan-out consumer on `{}`", self.filter), e);
                    tracing::warn!(error = %e.report(), "fan-out consumer error");
                    self.errors += 1;
                    if self.errors > 3 {
                        self.recreate_later();
                    }
                }
                None => self.recreate_later(),
            }
        }
    }

    /// Sequence of the last message returned, if any.
    #[must_use]
    pub fn last_sequence(&self) -> Option<u64> {
        self.last
    }
}

/// Whether the station holds messages this consumer should have
/// delivered by now. async-nats re-creates an ordered consumer under a
/// fixed name; in a cluster that has just lost a node, the re-creation
/// can wait for ever on the dead node without reporting an error. A fresh
/// consumer (a new name) from our position gets going again.
///
/// A free function: a `&FanOut` held across the await would make the
/// future require `FanOut: Sync`.
async fn stalled(station: &Station, last: Option<u64>, start: StartPosition) -> bool {
    let next = match (last, start) {
        (Some(last), _) => last + 1,
        (None, StartPosition::FromSequence(s)) => s.max(1),
        (None, StartPosition::All) => 1,
        (None, StartPosition::Since(_) | StartPosition::New) => return false,
    };
    match tokio::time::timeout(Duration::from_secs(5), station.state()).await {
        Ok(Ok(state)) => state.last_sequence >= next.max(state.first_sequence),
        _ => false,
    }
}

/// A bounded read of history (see [`Station::read`] and
/// [`Station::read_paced`]).
pub struct Read {
    source: Source,
}

enum Source {
    /// Nothing (more) to read.
    Empty,
    /// Batched direct gets: no consumer.
    Direct(Box<Direct>),
    /// Pushed by the broker as fast as flow control allows; the consumer is
    /// deleted when the read ends.
    Push(Box<Pushed>),
    /// Fetched `size` messages at a time, the next batch only once the
    /// reader has taken the last one.
    Paced(Box<Paced>),
}

/// An ordered push consumer's messages; the consumer is deleted, and the
/// replay-consumer place it may hold freed, when this is dropped.
struct Pushed {
    messages: push::Ordered,
    _delete: DeleteOnDrop,
    _place: Option<OwnedSemaphorePermit>,
}

/// Messages still to go past which a direct-get read moves to a push
/// consumer, where a place is free (`nats.replay_consumers`): a replay
/// this long is worth a consumer's creation and deletion, and the short
/// ones a join storm is made of never take one.
const LONG_READ: u64 = 4096;

struct Paced {
    scratch: Scratch,
    batch: Option<jetstream::consumer::pull::Batch>,
    size: usize,
    /// Whether the current batch yielded anything.
    got: bool,
}

impl Read {
    fn empty() -> Self {
        Self {
            source: Source::Empty,
        }
    }

    /// The next message, or `None` once the read has caught up with the
    /// station.
    ///
    /// # Errors
    /// Transient errors if the broker goes away during the read; the caller
    /// may start a new read after the last sequence it got.
    pub async fn next(&mut self) -> Result<Option<Delivered>> {
        let next = match tokio::time::timeout(READ_IDLE_LIMIT, self.source.next()).await {
            Ok(next) => next,
            Err(elapsed) => Err(Error::broker("read history", ErrorKind::Timeout, elapsed)),
        };
        match next {
            Ok(Some(delivered)) => {
                if delivered.pending == 0 {
                    self.finish();
                } else if delivered.pending > LONG_READ {
                    self.move_to_consumer().await;
                }
                Ok(Some(delivered))
            }
            other => {
                self.finish();
                other
            }
        }
    }

    /// A long direct-get read, between two batches, goes on from a push
    /// consumer where the process has a replay-consumer place free; else,
    /// or if the consumer cannot be made, with direct gets.
    async fn move_to_consumer(&mut self) {
        let Source::Direct(direct) = &mut self.source else {
            return;
        };
        let Some((station, subject, from)) = direct.between_batches() else {
            return;
        };
        let Some(place) = station.broker().replay_consumer() else {
            return;
        };
        let policy = DeliverPolicy::ByStartSequence {
            start_sequence: from,
        };
        match station
            .pushed(&Subjects::from(subject), policy, Some(place))
            .await
        {
            Ok(Some(pushed)) => self.source = Source::Push(Box::new(pushed)),
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(error = %e, "a long read stays on direct gets");
                direct.stay_direct();
            }
        }
    }

    /// Ends the read: drops the consumer (a paced read's is deleted).
    fn finish(&mut self) {
        self.source = Source::Empty;
    }
}

impl Source {
    async fn next(&mut self) -> Result<Option<Delivered>> {
        let op = "read history";
        match self {
            Self::Empty => Ok(None),
            Self::Direct(direct) => direct.next().await,
            Self::Push(push) => push
                .messages
                .next()
                .await
                .transpose()
                .map_err(|e| Error::nats(op, e))?
                .map(|m| Delivered::from_jetstream(&m))
                .transpose(),
            Self::Paced(paced) => loop {
                let Paced {
                    scratch,
                    batch,
                    size,
                    got,
                } = &mut **paced;
                let current = match batch {
                    Some(current) => current,
                    None => {
                        *got = false;
                        batch.insert(
                            scratch
                                .consumer()
                                .fetch()
                                .max_messages(*size)
                                .messages()
                                .await
                                .map_err(|e| Error::nats(op, e))?,
                        )
                    }
                };
                match current.next().await {
                    Some(Ok(message)) => {
                        *got = true;
                        return Delivered::from_jetstream(&message).map(Some);
                    }
                    Some(Err(e)) => {
                        return Err(Error::nats_untyped(op, e, ErrorKind::Unavailable));
                    }
                    // An empty batch: nothing stored beyond what was read.
                    None if !*got => return Ok(None),
                    None => *batch = None,
                }
            },
        }
    }
}

impl std::fmt::Debug for FanOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanOut")
            .field("station", &self.station.name())
            .field("filter", &self.filter)
            .field("last", &self.last)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Read {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Read")
            .field("done", &matches!(self.source, Source::Empty))
            .finish_non_exhaustive()
    }
}
