//! Reading stations: never-ending fan-out consumers and bounded history reads.

use std::time::Duration;

use async_nats::{
    HeaderMap,
    jetstream::{
        self,
        consumer::{DeliverPolicy, push},
    },
};
use bytes::Bytes;
use futures::StreamExt;
use time::OffsetDateTime;

use crate::{
    Error, Result, Station,
    connection::backoff,
    error::{ErrorKind, kind_from_text},
    station::consumer_kind,
};

/// Where a consumer starts in the station.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartPosition {
    /// The oldest retained message.
    All,
    /// The first message with sequence ≥ this.
    FromSequence(u64),
    /// The first message stored at or after this time.
    Since(OffsetDateTime),
    /// Only messages stored after the consumer is created.
    New,
}

impl StartPosition {
    /// Messages with sequence > `sequence`: the resume position.
    #[must_use]
    pub fn after(sequence: u64) -> Self {
        Self::FromSequence(sequence.saturating_add(1))
    }

    pub(crate) fn deliver_policy(self) -> DeliverPolicy {
        match self {
            Self::All => DeliverPolicy::All,
            Self::FromSequence(0 | 1) => DeliverPolicy::All,
            Self::FromSequence(start_sequence) => DeliverPolicy::ByStartSequence { start_sequence },
            Self::Since(start_time) => DeliverPolicy::ByStartTime { start_time },
            Self::New => DeliverPolicy::New,
        }
    }
}

/// A message read from a station.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// Stream sequence: position in the station, the resume cursor.
    pub sequence: u64,
    /// Subject it was published to.
    pub subject: String,
    /// Headers as published.
    pub headers: HeaderMap,
    /// Payload as published.
    pub payload: Bytes,
    /// When the broker stored it.
    pub published: OffsetDateTime,
    /// Messages matching the consumer still after this one (0 = caught up).
    pub pending: u64,
}

impl Delivered {
    pub(crate) fn from_jetstream(message: &jetstream::Message) -> Result<Self> {
        let info = message
            .info()
            .map_err(|e| Error::broker("read message metadata", ErrorKind::Other, e.to_string()))?;
        Ok(Self {
            sequence: info.stream_sequence,
            subject: message.subject.to_string(),
            headers: message.headers.clone().unwrap_or_default(),
            payload: message.payload.clone(),
            published: info.published,
            pending: info.pending,
        })
    }
}

type OrderedPush = push::Ordered;

/// Silence after which a fan-out consumer checks whether it is stalled.
const FAN_OUT_IDLE_CHECK: Duration = Duration::from_secs(10);
/// Silence after which a history read (which knows messages are pending)
/// gives up with a time-out.
const READ_IDLE_LIMIT: Duration = Duration::from_secs(10);

/// A never-ending, per-process ordered consumer (see [`Station::fan_out`]).
pub struct FanOut {
    station: Station,
    filter: String,
    /// Sequence of the last message yielded, to resume after an outage.
    last: Option<u64>,
    start: StartPosition,
    messages: Option<OrderedPush>,
    failures: usize,
}

impl FanOut {
    pub(crate) async fn start(
        station: Station,
        filter: String,
        start: StartPosition,
    ) -> Result<Self> {
        let mut fan_out = Self {
            station,
            filter,
            last: None,
            start,
            messages: None,
            failures: 0,
        };
        fan_out.messages =
            Some(Self::create(&fan_out.station, &fan_out.filter, fan_out.resume_position()).await?);
        Ok(fan_out)
    }

    fn resume_position(&self) -> StartPosition {
        match self.last {
            Some(last) => StartPosition::after(last),
            None => self.start,
        }
    }

    // Takes its inputs by reference rather than `&self`: a `&FanOut` held
    // across an await would make the future require `FanOut: Sync`, which the
    // async-nats stream inside is not.
    async fn create(station: &Station, filter: &str, start: StartPosition) -> Result<OrderedPush> {
        let op = || format!("fan-out consumer on `{filter}`");
        let broker = station.broker();
        broker.ensure_connected(op())?;
        let stream = station.stream_handle().await?;
        let consumer = stream
            .create_consumer(push::OrderedConfig {
                deliver_subject: broker.client().new_inbox(),
                filter_subject: filter.to_owned(),
                deliver_policy: start.deliver_policy(),
                ..Default::default()
            })
            .await
            .map_err(|e| Error::broker(op(), consumer_kind(&e), e))?;
        consumer
            .messages()
            .await
            .map_err(|e| Error::broker(op(), kind_from_text(&e.to_string()), e))
    }

    /// The next message. Waits as long as it takes; after a broker outage it
    /// resumes after the last message it returned, so nothing is skipped or
    /// repeated. Cancel by dropping the future.
    pub async fn next(&mut self) -> Delivered {
        loop {
            if self.messages.is_none() {
                if self.failures > 0 {
                    tokio::time::sleep(backoff(self.failures, Duration::from_secs(2))).await;
                }
                let start = self.resume_position();
                match Self::create(&self.station, &self.filter, start).await {
                    Ok(m) => {
                        tracing::info!(filter = %self.filter, last = ?self.last, "fan-out consumer (re)created");
                        self.messages = Some(m);
                    }
                    Err(e) => {
                        self.failures += 1;
                        tracing::warn!(error = %e, "fan-out consumer not available; retrying");
                        continue;
                    }
                }
            }
            let Some(messages) = self.messages.as_mut() else {
                continue;
            };
            let next = match tokio::time::timeout(FAN_OUT_IDLE_CHECK, messages.next()).await {
                Ok(next) => next,
                Err(_) => {
                    if stalled(&self.station, self.last, self.start).await {
                        tracing::warn!(filter = %self.filter, last = ?self.last, "fan-out consumer stalled behind the station; recreating it");
                        self.messages = None;
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
                        self.failures = 0;
                        self.last = Some(delivered.sequence);
                        return delivered;
                    }
                    Err(e) => tracing::warn!(error = %e, "skipping a non-JetStream message"),
                },
                Some(Err(e)) => {
                    // async-nats recreates ordered consumers itself on most
                    // errors; we only log and go on.
                    tracing::warn!(error = %e, "fan-out consumer error");
                    self.failures += 1;
                    if self.failures > 3 {
                        self.messages = None;
                    }
                }
                None => {
                    self.failures += 1;
                    self.messages = None;
                }
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
    done: bool,
}

enum Source {
    /// Nothing (more) to read.
    Empty,
    /// Pushed by the broker as fast as flow control allows.
    Push(Box<push::Ordered>),
    /// Fetched `size` messages at a time, the next batch only once the
    /// reader has taken the last one.
    Paced(Box<Paced>),
}

struct Paced {
    consumer: Scratch,
    batch: Option<jetstream::consumer::pull::Batch>,
    size: usize,
    /// Whether the current batch yielded anything.
    got: bool,
}

impl Read {
    pub(crate) async fn start(
        station: Station,
        filter: String,
        start: StartPosition,
    ) -> Result<Self> {
        // On the reader connection, so a replay never queues ahead of the
        // live feed. A push consumer: about twice the throughput of a pull
        // one, but the broker sends ahead up to its flow-control window
        // (megabytes) whatever the reader's pace.
        let config = push::OrderedConfig {
            deliver_subject: station.broker().reader().0.new_inbox(),
            filter_subject: filter.clone(),
            deliver_policy: start.deliver_policy(),
            ..Default::default()
        };
        let Some(consumer) = reading_consumer(&station, &filter, config).await? else {
            return Ok(Self::empty());
        };
        let messages = consumer.messages().await.map_err(|e| {
            let op = format!("read `{filter}` from station `{}`", station.name());
            Error::broker(op, kind_from_text(&e.to_string()), e)
        })?;
        Ok(Self {
            source: Source::Push(Box::new(messages)),
            done: false,
        })
    }

    pub(crate) async fn start_paced(
        station: Station,
        filter: String,
        start: StartPosition,
        size: usize,
    ) -> Result<Self> {
        // Removed by the broker once the read is dropped.
        let config = scratch_pull(&filter, start.deliver_policy(), Duration::from_secs(30));
        let Some(consumer) = reading_consumer(&station, &filter, config).await? else {
            return Ok(Self::empty());
        };
        let js = station.broker().reader().1.clone();
        Ok(Self {
            source: Source::Paced(Box::new(Paced {
                consumer: Scratch { consumer, js },
                batch: None,
                size: size.max(1),
                got: false,
            })),
            done: false,
        })
    }

    fn empty() -> Self {
        Self {
            source: Source::Empty,
            done: true,
        }
    }

    /// The next message, or `None` once the read has caught up with the
    /// station.
    ///
    /// # Errors
    /// Transient errors if the broker goes away during the read; the caller
    /// may start a new read after the last sequence it got.
    pub async fn next(&mut self) -> Result<Option<Delivered>> {
        if self.done {
            return Ok(None);
        }
        let next = match tokio::time::timeout(READ_IDLE_LIMIT, self.source.next()).await {
            Ok(next) => next,
            Err(_) => Err(Error::broker(
                "read history",
                ErrorKind::Timeout,
                format!("no message for {READ_IDLE_LIMIT:?} although some are pending"),
            )),
        };
        match next {
            Ok(Some(message)) => {
                let delivered = Delivered::from_jetstream(&message)?;
                if delivered.pending == 0 {
                    self.finish();
                }
                Ok(Some(delivered))
            }
            Ok(None) => {
                self.finish();
                Ok(None)
            }
            Err(e) => {
                self.finish();
                Err(e)
            }
        }
    }

    fn finish(&mut self) {
        self.done = true;
        self.source = Source::Empty;
    }
}

/// A paced read's consumer, deleted from the broker when the read ends or
/// is dropped (else it would linger until its inactivity threshold: one per
/// catch-up of every slow subscriber).
struct Scratch {
    consumer: jetstream::consumer::PullConsumer,
    js: jetstream::Context,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let info = self.consumer.cached_info();
        let (name, stream) = (info.name.clone(), info.stream_name.clone());
        let js = self.js.clone();
        // Best effort, off the reader's path; outside a runtime the
        // inactivity threshold removes it.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = js.delete_consumer_from_stream(name, stream).await;
            });
        }
    }
}

/// An unacknowledged, in-memory, single-replica pull consumer over
/// `filter`, for reads and counts; the broker forgets it after `inactive`.
pub(crate) fn scratch_pull(
    filter: &str,
    deliver_policy: DeliverPolicy,
    inactive: Duration,
) -> jetstream::consumer::pull::Config {
    jetstream::consumer::pull::Config {
        filter_subject: filter.to_owned(),
        deliver_policy,
        ack_policy: jetstream::consumer::AckPolicy::None,
        inactive_threshold: inactive,
        memory_storage: true,
        num_replicas: 1,
        ..Default::default()
    }
}

/// Creates a consumer for a read on the reader connection; `None` when
/// nothing matches from its start.
async fn reading_consumer<C>(
    station: &Station,
    filter: &str,
    config: C,
) -> Result<Option<jetstream::consumer::Consumer<C>>>
where
    C: jetstream::consumer::IntoConsumerConfig + jetstream::consumer::FromConsumer,
{
    let op = || format!("read `{filter}` from station `{}`", station.name());
    station.broker().ensure_connected(op())?;
    let consumer = station
        .reader_stream_handle()
        .await?
        .create_consumer(config)
        .await
        .map_err(|e| Error::broker(op(), consumer_kind(&e), e))?;
    Ok((consumer.cached_info().num_pending > 0).then_some(consumer))
}

impl Source {
    async fn next(&mut self) -> Result<Option<jetstream::Message>> {
        let failed = |e: String| Error::broker("read history", kind_from_text(&e), e);
        match self {
            Self::Empty => Ok(None),
            Self::Push(messages) => messages
                .next()
                .await
                .transpose()
                .map_err(|e| failed(e.to_string())),
            Self::Paced(paced) => loop {
                let Paced {
                    consumer,
                    batch,
                    size,
                    got,
                } = &mut **paced;
                let current = match batch {
                    Some(current) => current,
                    None => {
                        *got = false;
                        batch.insert(
                            consumer
                                .consumer
                                .fetch()
                                .max_messages(*size)
                                .messages()
                                .await
                                .map_err(|e| failed(e.to_string()))?,
                        )
                    }
                };
                match current.next().await {
                    Some(Ok(message)) => {
                        *got = true;
                        return Ok(Some(message));
                    }
                    Some(Err(e)) => return Err(failed(e.to_string())),
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
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}
