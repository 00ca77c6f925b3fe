//! Stations: creation or verification at start-up ([`Broker::ensure_station`]),
//! state, random access, and the short-lived consumers that reads and counts
//! use. Producing and consuming build on this in their own modules.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use async_nats::jetstream::{
    self,
    consumer::DeliverPolicy,
    context::CreateStreamErrorKind,
    stream::{self, DirectGetErrorKind},
};
use fastchat_backoff::ExponentialBackoff;

use crate::{
    Broker, ConnectionState, Delivered, Error, ErrorKind, Result, StationConfig, Storage, Subjects,
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

impl Broker {
    /// Creates the station if it does not exist, or checks that the existing
    /// one matches `config`. Idempotent: every service that uses a station
    /// calls this at start-up.
    ///
    /// # Errors
    /// [`Error::StationConflict`] naming the first differing field if the
    /// station exists with another definition; a transient error
    /// ([`Error::is_transient`]) if the broker is unreachable.
    pub async fn ensure_station(&self, config: &StationConfig) -> Result<Station> {
        config.validate().map_err(Error::Config)?;
        let op = || format!("ensure station `{}`", config.name);
        if self.state() != ConnectionState::Connected {
            return Err(Error::unavailable(op()));
        }
        let wanted = stream_config(config);
        let js = self.js();
        let existing = match js.get_stream(&config.name).await {
            Ok(mut stream) => Some(
                stream
                    .info()
                    .await
                    .map_err(|e| Error::nats(op(), e))?
                    .config
                    .clone(),
            ),
            Err(e) => match Error::nats(op(), e) {
                e if e.kind() == ErrorKind::NotFound => None,
                e => return Err(e),
            },
        };
        let existing = match existing {
            Some(existing) => existing,
            None => match js.create_stream(wanted.clone()).await {
                Ok(_) => {
                    tracing::info!(station = %config.name, "station created");
                    return Ok(Station::new(self.clone(), config));
                }
                // Another instance created it first: verify theirs below.
                Err(e) if matches!(e.kind(), CreateStreamErrorKind::JetStream(ref api) if api.error_code() == jetstream::ErrorCode::STREAM_NAME_EXIST) => {
                    js.get_stream(&config.name)
                        .await
                        .map_err(|e| Error::nats(op(), e))?
                        .cached_info()
                        .config
                        .clone()
                }
                Err(e) => {
                    let e = Error::nats(op(), e);
                    if e.kind() == ErrorKind::ResourceExhausted {
                        return Err(Error::StationDoesNotFit {
                            station: config.name.clone(),
                            max_bytes: config.max_bytes,
                            replicas: config.replicas,
                            source: Box::new(e),
                        });
                    }
                    return Err(e);
                }
            },
        };
        compare(&config.name, &existing, &wanted)?;
        tracing::info!(station = %config.name, "station exists with the configured definition");
        Ok(Station::new(self.clone(), config))
    }

    /// Like [`Broker::ensure_station`], but waits for the broker and retries
    /// transient failures for ever with back-off. Returns only a permanent
    /// error (a conflict or an invalid definition). Cancel by dropping the
    /// future.
    ///
    /// # Errors
    /// A non-transient error from [`Broker::ensure_station`].
    pub async fn ensure_station_retrying(&self, config: &StationConfig) -> Result<Station> {
        let mut backoff =
            ExponentialBackoff::doubling(Duration::from_millis(50), Duration::from_secs(5))
                .stream();
        loop {
            self.wait_connected().await;
            match self.ensure_station(config).await {
                Ok(station) => return Ok(station),
                Err(e) if e.is_transient() => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e.report(), ?delay, "station not ready; retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
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

/// `d` as one would write it in the configuration: `7d`, `2m`, `90s`,
/// `1500ms` (the largest unit that divides it).
fn config_duration(d: Duration) -> String {
    const UNITS: [(u128, &str); 5] = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1_000, "s"),
        (1, "ms"),
    ];
    let millis = d.as_millis();
    match UNITS
        .iter()
        .find(|(unit, _)| millis.is_multiple_of(*unit) && millis >= *unit)
    {
        Some((unit, suffix)) => format!("{}{suffix}", millis / unit),
        None => format!("{}ns", d.as_nanos()),
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
            config_duration(d)
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
        js.get_stream_no_info(&self.name)
            .await
            .map_err(|e| Error::nats(format!("station `{}`", self.name), e))
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
            .map_err(|e| Error::nats(op(), e))?;
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
            Ok(m) => Ok(Some(Delivered::from_raw(m))),
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::nats(op(), e)),
        }
    }

    /// Creates a [`Scratch`] consumer over `filter` from `deliver_policy`
    /// on the connection reserved for history reads.
    pub(crate) async fn scratch(
        &self,
        filter: &Subjects,
        deliver_policy: DeliverPolicy,
    ) -> Result<Scratch> {
        let operation = || format!("read `{filter}` from station `{}`", self.name);
        let (filter_subject, filter_subjects) = filter.consumer_filters();
        self.broker.ensure_connected(operation())?;
        let consumer = self
            .reader_stream_handle()
            .await?
            .create_consumer(jetstream::consumer::pull::Config {
                filter_subject,
                filter_subjects,
                deliver_policy,
                ack_policy: jetstream::consumer::AckPolicy::None,
                inactive_threshold: SCRATCH_INACTIVE,
                memory_storage: true,
                num_replicas: 1,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::nats(operation(), e))?;
        let delete = DeleteOnDrop::new(consumer.cached_info(), self.broker.reader().1.clone());
        Ok(Scratch {
            consumer,
            _delete: delete,
        })
    }
}

/// How long the broker keeps a [`Scratch`] consumer nobody uses: the
/// fallback when its owner could not delete it (a crash, no runtime).
const SCRATCH_INACTIVE: Duration = Duration::from_secs(30);

/// Deletes a short-lived consumer from the broker when dropped (else each
/// would linger until its inactivity threshold: one per page, per count,
/// per replay, per catch-up — enough, in a burst, to reach the broker's
/// consumer limit).
pub(crate) struct DeleteOnDrop {
    name: String,
    stream: String,
    js: jetstream::Context,
}

impl DeleteOnDrop {
    pub(crate) fn new(info: &jetstream::consumer::Info, js: jetstream::Context) -> Self {
        Self {
            name: info.name.clone(),
            stream: info.stream_name.clone(),
            js,
        }
    }
}

impl Drop for DeleteOnDrop {
    fn drop(&mut self) {
        let (name, stream) = (
            std::mem::take(&mut self.name),
            std::mem::take(&mut self.stream),
        );
        let js = self.js.clone();
        // Best effort, off the caller's path; outside a runtime the
        // inactivity threshold removes it.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = js.delete_consumer_from_stream(name, stream).await;
            });
        }
    }
}

/// An unacknowledged, in-memory, single-replica pull consumer for one read
/// or count, deleted from the broker when dropped.
pub(crate) struct Scratch {
    consumer: jetstream::consumer::PullConsumer,
    _delete: DeleteOnDrop,
}

impl Scratch {
    /// The consumer.
    pub(crate) fn consumer(&self) -> &jetstream::consumer::PullConsumer {
        &self.consumer
    }

    /// Messages matching the consumer that it has not delivered yet: at
    /// creation, the count from its start position.
    pub(crate) fn pending(&self) -> u64 {
        self.consumer.cached_info().num_pending
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
    fn durations_are_named_as_in_the_configuration() {
        assert_eq!(config_duration(Duration::from_secs(7 * 86_400)), "7d");
        assert_eq!(config_duration(Duration::from_secs(120)), "2m");
        assert_eq!(config_duration(Duration::from_secs(90)), "90s");
        assert_eq!(config_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(config_duration(Duration::from_nanos(10)), "10ns");
    }

    #[test]
    fn zero_limits_mean_unlimited() {
        let config = stream_config(&StationConfig::default());
        assert_eq!(config.max_messages, -1);
        assert_eq!(config.max_bytes, 4 << 30);
        assert_eq!(config.max_message_size, 64 * 1024);
    }
}
