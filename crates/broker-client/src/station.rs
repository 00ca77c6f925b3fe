//! Stations: creation or verification at start-up, state, and random access.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use futures::StreamExt;

use async_nats::jetstream::{
    self,
    consumer::DeliverPolicy,
    context::{CreateStreamErrorKind, GetStreamErrorKind},
    stream::{self, DirectGetErrorKind},
};

use crate::{
    Broker, Delivered, Error, FanOut, Producer, Read, Result, StartPosition, StationConfig,
    Storage,
    error::{ErrorKind, kind_from_text, kind_of_api_error},
};

/// A station that exists on the broker with the configured definition.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct Station {
    broker: Broker,
    name: String,
    config: Arc<StationConfig>,
}

/// A snapshot of what a station retains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StationState {
    /// Sequence of the oldest retained message (last + 1 when empty).
    pub first_sequence: u64,
    /// Sequence of the newest message ever stored (0 if none ever was).
    pub last_sequence: u64,
    /// Number of retained messages.
    pub messages: u64,
}

pub(crate) async fn ensure(broker: Broker, config: &StationConfig) -> Result<Station> {
    let wanted = stream_config(config);
    let js = broker.js().clone();
    let existing = match js.get_stream(&config.name).await {
        Ok(mut s) => Some(
            s.info()
                .await
                .map_err(|e| {
                    Error::broker(
                        format!("read station `{}`", config.name),
                        kind_from_text(&e.to_string()),
                        e,
                    )
                })?
                .config
                .clone(),
        ),
        Err(e) => match e.kind() {
            GetStreamErrorKind::JetStream(api)
                if kind_of_api_error(&api) == ErrorKind::NotFound =>
            {
                None
            }
            GetStreamErrorKind::JetStream(api) => {
                let kind = kind_of_api_error(&api);
                return Err(Error::broker(
                    format!("read station `{}`", config.name),
                    kind,
                    e,
                ));
            }
            _ => {
                return Err(Error::broker(
                    format!("read station `{}`", config.name),
                    kind_from_text(&e.to_string()),
                    e,
                ));
            }
        },
    };
    let existing = match existing {
        Some(existing) => existing,
        None => match js.create_stream(wanted.clone()).await {
            Ok(_) => {
                tracing::info!(station = %config.name, "station created");
                return Ok(Station::new(broker, config));
            }
            // Another instance created it first: verify theirs below.
            Err(e) if matches!(e.kind(), CreateStreamErrorKind::JetStream(ref api) if api.error_code() == jetstream::ErrorCode::STREAM_NAME_EXIST) => {
                js.get_stream(&config.name)
                    .await
                    .map_err(|e| {
                        Error::broker(
                            format!("read station `{}`", config.name),
                            kind_from_text(&e.to_string()),
                            e,
                        )
                    })?
                    .cached_info()
                    .config
                    .clone()
            }
            Err(e) => {
                let kind = match e.kind() {
                    CreateStreamErrorKind::JetStream(api) => kind_of_api_error(&api),
                    CreateStreamErrorKind::TimedOut => ErrorKind::Timeout,
                    CreateStreamErrorKind::JetStreamUnavailable => ErrorKind::Unavailable,
                    _ => kind_from_text(&e.to_string()),
                };
                return Err(Error::broker(
                    format!("create station `{}`", config.name),
                    kind,
                    e,
                ));
            }
        },
    };
    compare(&config.name, &existing, &wanted)?;
    tracing::info!(station = %config.name, "station exists with the configured definition");
    Ok(Station::new(broker, config))
}

fn stream_config(config: &StationConfig) -> stream::Config {
    let limit = |v: u64| {
        if v == 0 {
            -1
        } else {
            i64::try_from(v).unwrap_or(i64::MAX)
        }
    };
    stream::Config {
        name: config.name.clone(),
        subjects: config.subjects.clone(),
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        max_age: config.max_age,
        max_messages: limit(config.max_messages),
        max_bytes: limit(config.max_bytes),
        max_messages_per_subject: limit(config.max_messages_per_subject),
        storage: match config.storage {
            Storage::File => stream::StorageType::File,
            Storage::Memory => stream::StorageType::Memory,
        },
        num_replicas: config.replicas,
        duplicate_window: config.duplicate_window,
        max_message_size: if config.max_message_size == 0 {
            -1
        } else {
            i32::try_from(config.max_message_size).unwrap_or(i32::MAX)
        },
        allow_direct: true,
        ..Default::default()
    }
}

/// Reports the first field where the broker's stream differs from ours.
fn compare(station: &str, existing: &stream::Config, wanted: &stream::Config) -> Result<()> {
    fn conflict(station: &str, field: &'static str, existing: String, wanted: String) -> Error {
        Error::StationConflict {
            station: station.to_owned(),
            field,
            existing,
            wanted,
        }
    }
    let limit = |v: i64| {
        if v <= 0 {
            "unlimited".to_owned()
        } else {
            v.to_string()
        }
    };
    let dur = |d: Duration| {
        if d.is_zero() {
            "unlimited".to_owned()
        } else {
            humantime_serde::re::humantime::format_duration(d).to_string()
        }
    };
    let subjects = |s: &[String]| s.iter().cloned().collect::<BTreeSet<_>>();
    if subjects(&existing.subjects) != subjects(&wanted.subjects) {
        return Err(conflict(
            station,
            "subjects",
            format!("{:?}", existing.subjects),
            format!("{:?}", wanted.subjects),
        ));
    }
    if existing.retention != wanted.retention {
        return Err(conflict(
            station,
            "retention policy",
            format!("{:?}", existing.retention),
            format!("{:?}", wanted.retention),
        ));
    }
    let checks: [(&'static str, String, String); 8] = [
        ("max_age", dur(existing.max_age), dur(wanted.max_age)),
        (
            "max_messages",
            limit(existing.max_messages),
            limit(wanted.max_messages),
        ),
        (
            "max_bytes",
            limit(existing.max_bytes),
            limit(wanted.max_bytes),
        ),
        (
            "max_messages_per_subject",
            limit(existing.max_messages_per_subject),
            limit(wanted.max_messages_per_subject),
        ),
        (
            "storage",
            format!("{:?}", existing.storage).to_lowercase(),
            format!("{:?}", wanted.storage).to_lowercase(),
        ),
        (
            "replicas",
            existing.num_replicas.max(1).to_string(),
            wanted.num_replicas.to_string(),
        ),
        (
            "duplicate_window",
            dur(existing.duplicate_window),
            dur(wanted.duplicate_window),
        ),
        (
            "max_message_size",
            limit(i64::from(existing.max_message_size)),
            limit(i64::from(wanted.max_message_size)),
        ),
    ];
    for (field, has, wants) in checks {
        if has != wants {
            return Err(conflict(station, field, has, wants));
        }
    }
    Ok(())
}

impl Station {
    fn new(broker: Broker, config: &StationConfig) -> Self {
        Self {
            broker,
            name: config.name.clone(),
            config: Arc::new(config.clone()),
        }
    }

    /// The definition the station was ensured with.
    #[must_use]
    pub fn config(&self) -> &StationConfig {
        &self.config
    }

    /// The station (stream) name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The broker this station lives on.
    #[must_use]
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// A producer for this station.
    #[must_use]
    pub fn producer(&self) -> Producer {
        Producer::new(self.clone())
    }

    /// A handle on the stream that makes no request (the name was checked
    /// when the station was ensured).
    pub(crate) async fn stream_handle(&self) -> Result<stream::Stream<()>> {
        self.handle_on(self.broker.js()).await
    }

    /// The same, on the connection reserved for history reads.
    pub(crate) async fn reader_stream_handle(&self) -> Result<stream::Stream<()>> {
        self.handle_on(self.broker.reader().1).await
    }

    async fn handle_on(&self, js: &jetstream::Context) -> Result<stream::Stream<()>> {
        js.get_stream_no_info(&self.name).await.map_err(|e| {
            Error::broker(
                format!("station `{}`", self.name),
                ErrorKind::InvalidInput,
                e,
            )
        })
    }

    /// What the station retains now.
    ///
    /// # Errors
    /// Transient errors when the broker is unreachable.
    pub async fn state(&self) -> Result<StationState> {
        let op = || format!("read state of station `{}`", self.name);
        self.broker.ensure_connected(op())?;
        let info = self
            .broker
            .js()
            .get_stream(&self.name)
            .await
            .map_err(|e| Error::broker(op(), get_stream_kind(&e), e))?;
        let state = &info.cached_info().state;
        Ok(StationState {
            first_sequence: state.first_sequence,
            last_sequence: state.last_sequence,
            messages: state.messages,
        })
    }

    /// The message stored at `sequence`, or `None` if there is none (never
    /// stored, deleted or expired).
    ///
    /// # Errors
    /// Transient errors when the broker is unreachable.
    pub async fn get(&self, sequence: u64) -> Result<Option<Delivered>> {
        let op = || format!("get message {sequence} of station `{}`", self.name);
        self.broker.ensure_connected(op())?;
        match self.stream_handle().await?.direct_get(sequence).await {
            Ok(m) => Ok(Some(Delivered {
                sequence: m.sequence,
                subject: m.subject.to_string(),
                headers: m.headers,
                payload: m.payload,
                published: m.time,
                pending: 0,
            })),
            Err(e) => match e.kind() {
                DirectGetErrorKind::NotFound => Ok(None),
                DirectGetErrorKind::TimedOut => Err(Error::broker(op(), ErrorKind::Timeout, e)),
                _ => Err(Error::broker(op(), kind_from_text(&e.to_string()), e)),
            },
        }
    }

    /// A fan-out consumer over `filter` (a subject, wildcards allowed) from
    /// `start`: an ordered, ephemeral consumer that this process alone reads,
    /// so every process sees every message. It never ends by itself: after a
    /// broker outage it resumes after the last message it yielded.
    ///
    /// # Errors
    /// Transient errors when the first consumer cannot be created.
    pub async fn fan_out(&self, filter: &str, start: StartPosition) -> Result<FanOut> {
        FanOut::start(self.clone(), filter.to_owned(), start).await
    }

    /// A bounded read of history over `filter` from `start`: yields every
    /// matching message stored at the moment of the call, in order, then ends.
    ///
    /// # Errors
    /// Transient errors when the consumer cannot be created.
    pub async fn read(&self, filter: &str, start: StartPosition) -> Result<Read> {
        Read::start(self.clone(), filter.to_owned(), start).await
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
        filter: &str,
        start: StartPosition,
        batch: usize,
    ) -> Result<Read> {
        Read::start_paced(self.clone(), filter.to_owned(), start, batch).await
    }

    /// Number of messages matching `filter` with sequence ≥ `from`.
    ///
    /// # Errors
    /// Transient errors when the broker is unreachable.
    pub async fn count_from(&self, filter: &str, from: u64) -> Result<u64> {
        let op = || format!("count messages of `{filter}` in station `{}`", self.name);
        self.broker.ensure_connected(op())?;
        let consumer = self
            .stream_handle()
            .await?
            .create_consumer(crate::consumer::scratch_pull(
                filter,
                DeliverPolicy::ByStartSequence {
                    start_sequence: from.max(1),
                },
                Duration::from_secs(5),
            ))
            .await
            .map_err(|e| Error::broker(op(), consumer_kind(&e), e))?;
        let pending = consumer.cached_info().num_pending;
        let name = consumer.cached_info().name.clone();
        // Best effort and off the caller's path: the inactive threshold
        // removes it anyway.
        if let Ok(stream) = self.stream_handle().await {
            tokio::spawn(async move {
                let _ = stream.delete_consumer(&name).await;
            });
        }
        Ok(pending)
    }

    /// Number of messages matching `filter` in the whole station, from the
    /// broker's per-subject counts (no scan).
    async fn count_all(&self, filter: &str) -> Result<u64> {
        let op = || format!("count messages of `{filter}` in station `{}`", self.name);
        let stream = self.stream_handle().await?;
        let mut subjects = stream
            .info_with_subjects(filter)
            .await
            .map_err(|e| Error::broker(op(), kind_from_text(&e.to_string()), e))?;
        let mut total = 0u64;
        while let Some(entry) = subjects.next().await {
            let (_, count) =
                entry.map_err(|e| Error::broker(op(), kind_from_text(&e.to_string()), e))?;
            total += u64::try_from(count).unwrap_or(0);
        }
        Ok(total)
    }

    /// The sequence of the `n`-th newest message matching `filter` among
    /// those with sequence < `before` (`None` = all), or `None` if fewer than
    /// `n` match (then "from the first" is the answer).
    ///
    /// Cost: the broker's per-subject counts give the filter's density, from
    /// which one window is usually enough; each window costs one consumer
    /// creation (the broker counts, we do not scan), plus reading at most a
    /// few times `n` matching messages.
    ///
    /// # Errors
    /// Transient errors when the broker is unreachable.
    pub async fn nth_last_sequence(
        &self,
        filter: &str,
        n: u64,
        before: Option<u64>,
    ) -> Result<Option<u64>> {
        if n == 0 {
            return Ok(None);
        }
        let state = self.state().await?;
        let end = before
            .unwrap_or(state.last_sequence + 1)
            .min(state.last_sequence + 1);
        if end <= state.first_sequence || state.messages == 0 {
            return Ok(None);
        }
        let total = self.count_all(filter).await?;
        let after_end = if end > state.last_sequence {
            0
        } else {
            self.count_from(filter, end).await?
        };
        if total.saturating_sub(after_end) < n {
            return Ok(None);
        }
        // Expected stream span holding n matches, with a margin.
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        let mut window =
            ((n as f64) * (state.messages as f64) / (total.max(1) as f64) * 1.25) as u64 + 16;
        loop {
            let from = end.saturating_sub(window).max(state.first_sequence);
            let in_range = self
                .count_from(filter, from)
                .await?
                .saturating_sub(after_end);
            if in_range >= n || from == state.first_sequence {
                if in_range < n {
                    return Ok(None);
                }
                // Skip the oldest (in_range - n) matches of [from, end).
                let skip = in_range - n;
                let mut read = self.read(filter, StartPosition::FromSequence(from)).await?;
                let mut index = 0;
                while let Some(message) = read.next().await? {
                    if index == skip {
                        return Ok(Some(message.sequence));
                    }
                    index += 1;
                }
                return Ok(None);
            }
            // Grow by what the shortfall suggests (at least double).
            window = window.saturating_mul((n / in_range.max(1)).clamp(2, 16));
        }
    }
}

fn get_stream_kind(e: &async_nats::jetstream::context::GetStreamError) -> ErrorKind {
    match e.kind() {
        GetStreamErrorKind::JetStream(api) => kind_of_api_error(&api),
        _ => kind_from_text(&e.to_string()),
    }
}

pub(crate) fn consumer_kind(e: &async_nats::jetstream::stream::ConsumerError) -> ErrorKind {
    match e.kind() {
        stream::ConsumerErrorKind::TimedOut => ErrorKind::Timeout,
        stream::ConsumerErrorKind::JetStream(api) => kind_of_api_error(&api),
        _ => kind_from_text(&e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_names_the_first_differing_field() {
        let base = stream_config(&StationConfig::default());
        assert!(compare("chat", &base, &base).is_ok());
        let mut other = base.clone();
        other.num_replicas = 3;
        let err = compare("chat", &base, &other).expect_err("replicas differ");
        assert!(
            matches!(
                err,
                Error::StationConflict {
                    field: "replicas",
                    ..
                }
            ),
            "{err}"
        );
        let mut other = base.clone();
        other.max_age = Duration::from_secs(60);
        let err = compare("chat", &base, &other).expect_err("max_age differs");
        assert!(
            matches!(
                err,
                Error::StationConflict {
                    field: "max_age",
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(err.kind(), ErrorKind::Conflict);
    }

    #[test]
    fn zero_limits_mean_unlimited() {
        let config = stream_config(&StationConfig::default());
        assert_eq!(config.max_messages, -1);
        assert_eq!(config.max_bytes, -1);
        assert_eq!(config.max_message_size, 64 * 1024);
    }
}
