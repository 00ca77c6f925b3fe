//! Group consumers and dead letters: work shared by every instance of a
//! group, with explicit acknowledgement, redelivery, and a dead-letter
//! station for messages that keep failing.
//!
//! Fan-out or group? A *fan-out* consumer ([`Station::fan_out`]) is per
//! process: every instance sees every message (a chat subscriber feed). A
//! *group* ([`Station::group`]) is durable and shared: each message goes to
//! one instance of the group, which must acknowledge it (a worker pool, e.g.
//! push notifications). Both can read the same station at once.
//!
//! Dead letters: a message delivered more than `max_deliveries` times, or
//! explicitly given up on ([`GroupMessage::dead_letter`]), is copied to the
//! station `<station>-dls` on subject `<station>-dls.<group>` with headers
//! giving the reason, the original subject and sequence, the group and the
//! delivery count, then acknowledged. [`Station::dead_letters`] lists them;
//! [`Station::republish_dead_letter`] sends one back to its original subject.

use std::time::Duration;

use async_nats::{
    HeaderMap,
    jetstream::{
        self, AckKind,
        consumer::{AckPolicy, pull},
    },
};
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::{
    Delivered, Error, ErrorKind, PublishAck, Result, StartPosition, Station, StationConfig,
};

/// Header: why the message was dead-lettered.
pub const HEADER_DLS_REASON: &str = "FastChat-DLS-Reason";
/// Header: the subject the message was first published to.
pub const HEADER_DLS_SUBJECT: &str = "FastChat-DLS-Subject";
/// Header: its sequence in the original station.
pub const HEADER_DLS_SEQUENCE: &str = "FastChat-DLS-Sequence";
/// Header: the group that gave up on it.
pub const HEADER_DLS_GROUP: &str = "FastChat-DLS-Group";
/// Header: how many times it was delivered.
pub const HEADER_DLS_DELIVERIES: &str = "FastChat-DLS-Deliveries";

/// A consumer group definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupConfig {
    /// Durable name shared by every instance of the group.
    pub name: String,
    /// Subject filter, e.g. `chat.messages.>`.
    pub filter: String,
    /// A delivered message not acknowledged within this time is redelivered.
    #[serde(with = "humantime_serde")]
    pub ack_wait: Duration,
    /// Deliveries before a message is dead-lettered.
    pub max_deliveries: u32,
    /// Unacknowledged messages allowed in flight across the group.
    pub max_ack_pending: u32,
    /// Where a *new* group starts (an existing group resumes where it was).
    #[serde(skip)]
    pub start: Option<StartPosition>,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            filter: ">".to_owned(),
            ack_wait: Duration::from_secs(30),
            max_deliveries: 5,
            max_ack_pending: 1000,
            start: None,
        }
    }
}

/// One instance's handle on a consumer group.
pub struct Group {
    station: Station,
    config: GroupConfig,
    messages: pull::Stream,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("station", &self.station.name())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A message handed to one member of a group. Settle it with
/// [`ack`](Self::ack), [`nak`](Self::nak), [`fail`](Self::fail) or
/// [`dead_letter`](Self::dead_letter); one left unsettled is redelivered
/// after the group's `ack_wait`.
pub struct GroupMessage {
    /// The message.
    pub message: Delivered,
    /// Which delivery this is (1 = first).
    pub deliveries: u64,
    inner: jetstream::Message,
    station: Station,
    group: String,
    max_deliveries: u32,
}

impl std::fmt::Debug for GroupMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupMessage")
            .field("message", &self.message)
            .field("deliveries", &self.deliveries)
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl Station {
    /// Joins (or creates) the consumer group `config.name`.
    ///
    /// # Errors
    /// Transient errors when the broker is unreachable; a conflict if the
    /// group exists with a different filter.
    pub async fn group(&self, config: &GroupConfig) -> Result<Group> {
        let op = || format!("join group `{}` on station `{}`", config.name, self.name());
        if config.name.is_empty() || config.max_deliveries == 0 {
            return Err(Error::Config(
                "a group needs a name and max_deliveries of at least 1".into(),
            ));
        }
        self.broker().ensure_connected(op())?;
        let stream = self.stream_handle().await?;
        let consumer = stream
            .get_or_create_consumer(
                &config.name,
                pull::Config {
                    durable_name: Some(config.name.clone()),
                    filter_subject: config.filter.clone(),
                    deliver_policy: config.start.unwrap_or(StartPosition::All).deliver_policy(),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: config.ack_wait,
                    // Unlimited on the broker: we count deliveries ourselves so
                    // that the last one is dead-lettered, never silently dropped.
                    max_deliver: -1,
                    max_ack_pending: i64::from(config.max_ack_pending),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| Error::nats(op(), e))?;
        let existing = &consumer.cached_info().config;
        if existing.filter_subject != config.filter {
            return Err(Error::broker(
                op(),
                ErrorKind::Conflict,
                format!(
                    "the group exists with filter `{}`, not `{}`",
                    existing.filter_subject, config.filter
                ),
            ));
        }
        let messages = consumer
            .messages()
            .await
            .map_err(|e| Error::nats(op(), e))?;
        Ok(Group {
            station: self.clone(),
            config: config.clone(),
            messages,
        })
    }

    fn dls_config(&self) -> StationConfig {
        let own = self.config();
        StationConfig {
            name: format!("{}-dls", own.name),
            subjects: vec![format!("{}-dls.>", own.name)],
            max_age: Duration::from_secs(30 * 24 * 3600),
            max_messages: 0,
            // An eighth of the station's room, so dead letters cannot fill
            // the broker's store either.
            max_bytes: own.max_bytes / 8,
            max_messages_per_subject: 0,
            storage: own.storage,
            replicas: own.replicas,
            duplicate_window: Duration::from_secs(120),
            max_message_size: 0,
        }
    }

    /// The dead-letter station of this station, created if missing.
    ///
    /// # Errors
    /// As [`crate::Broker::ensure_station`].
    pub async fn dead_letter_station(&self) -> Result<Station> {
        self.broker().ensure_station(&self.dls_config()).await
    }

    /// Dead letters, oldest first, at most `limit`.
    ///
    /// # Errors
    /// Transient errors when the broker is unreachable.
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        let dls = self.dead_letter_station().await?;
        let mut read = dls
            .read(&format!("{}.>", dls.name()), StartPosition::All)
            .await?;
        let mut letters = Vec::new();
        while letters.len() < limit
            && let Some(delivered) = read.next().await?
        {
            letters.push(DeadLetter::from(delivered));
        }
        Ok(letters)
    }

    /// Publishes dead letter `sequence` back to its original subject (as a
    /// new message, with a new sequence) and removes it from the dead-letter
    /// station. Safe to retry: the re-publication is deduplicated.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] if there is no such dead letter.
    pub async fn republish_dead_letter(&self, sequence: u64) -> Result<PublishAck> {
        let op = || format!("republish dead letter {sequence}");
        let dls = self.dead_letter_station().await?;
        let letter = dls
            .get(sequence)
            .await?
            .map(DeadLetter::from)
            .ok_or_else(|| Error::broker(op(), ErrorKind::NotFound, "no such dead letter"))?;
        let mut headers = HeaderMap::new();
        for (name, values) in letter.headers.iter() {
            let name: &str = name.as_ref();
            if name.starts_with("FastChat-DLS-") || name.eq_ignore_ascii_case("Nats-Msg-Id") {
                continue;
            }
            for value in values {
                headers.append(name, value.as_str());
            }
        }
        let ack = self
            .producer()
            .publish(
                &letter.subject,
                headers,
                letter.payload.clone(),
                &format!("{}-dls-redo-{sequence}", self.name()),
            )
            .await?;
        let stream = dls.stream_handle().await?;
        stream
            .delete_message(sequence)
            .await
            .map_err(|e| Error::nats(op(), e))?;
        Ok(ack)
    }
}

impl Group {
    /// The next message for this member. Messages past `max_deliveries` are
    /// moved to the dead-letter station here, before any handler sees them
    /// again (a message that crashes its consumer cannot loop for ever).
    ///
    /// # Errors
    /// Transient errors when the broker goes away; call again to continue.
    pub async fn next(&mut self) -> Result<GroupMessage> {
        loop {
            let message = match self.messages.next().await {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    return Err(Error::nats(format!("group `{}`", self.config.name), e));
                }
                None => {
                    return Err(Error::unavailable(format!(
                        "group `{}`: message stream ended",
                        self.config.name
                    )));
                }
            };
            let delivered = Delivered::from_jetstream(&message)?;
            let deliveries = message
                .info()
                .map(|i| u64::try_from(i.delivered).unwrap_or(0))
                .unwrap_or(0);
            let item = GroupMessage {
                message: delivered,
                deliveries,
                inner: message,
                station: self.station.clone(),
                group: self.config.name.clone(),
                max_deliveries: self.config.max_deliveries,
            };
            if deliveries > u64::from(self.config.max_deliveries) {
                item.dead_letter(&format!(
                    "not acknowledged after {} deliveries",
                    self.config.max_deliveries
                ))
                .await?;
                continue;
            }
            return Ok(item);
        }
    }
}

impl GroupMessage {
    /// Acknowledgements fail with an untyped async-nats error; most often
    /// the connection is gone.
    fn settle_error(&self, e: async_nats::Error) -> Error {
        Error::nats_untyped(
            format!(
                "settle message {} of group `{}`",
                self.message.sequence, self.group
            ),
            e,
            ErrorKind::Unavailable,
        )
    }

    /// Done: the group will not see it again.
    ///
    /// # Errors
    /// If the broker did not confirm; the message may then be redelivered.
    pub async fn ack(self) -> Result<()> {
        self.inner
            .double_ack()
            .await
            .map_err(|e| self.settle_error(e))
    }

    /// Not now: redeliver (to any member) after `delay`, or at once.
    ///
    /// # Errors
    /// If the broker did not take it; it is redelivered after `ack_wait` anyway.
    pub async fn nak(self, delay: Option<Duration>) -> Result<()> {
        self.inner
            .ack_with(AckKind::Nak(delay))
            .await
            .map_err(|e| self.settle_error(e))
    }

    /// The handler failed with `reason`: redeliver after `delay`, or move to
    /// the dead-letter station if this was the last delivery allowed.
    ///
    /// # Errors
    /// As [`GroupMessage::nak`] / [`GroupMessage::dead_letter`].
    pub async fn fail(self, reason: &str, delay: Option<Duration>) -> Result<()> {
        if self.deliveries >= u64::from(self.max_deliveries) {
            self.dead_letter(reason).await
        } else {
            self.nak(delay).await
        }
    }

    /// Gives up on the message: copies it to the dead-letter station with
    /// `reason`, then acknowledges it.
    ///
    /// # Errors
    /// If the copy was not stored (the message is then left unacknowledged
    /// and comes back after `ack_wait`).
    pub async fn dead_letter(self, reason: &str) -> Result<()> {
        let dls = self.station.dead_letter_station().await?;
        let mut headers = self.message.headers.clone();
        headers.insert(HEADER_DLS_REASON, reason);
        headers.insert(HEADER_DLS_SUBJECT, self.message.subject.as_str());
        headers.insert(
            HEADER_DLS_SEQUENCE,
            self.message.sequence.to_string().as_str(),
        );
        headers.insert(HEADER_DLS_GROUP, self.group.as_str());
        headers.insert(HEADER_DLS_DELIVERIES, self.deliveries.to_string().as_str());
        dls.producer()
            .publish(
                &format!("{}.{}", dls.name(), self.group),
                headers,
                self.message.payload.clone(),
                &format!("{}:{}", self.group, self.message.sequence),
            )
            .await?;
        tracing::warn!(
            group = %self.group,
            sequence = self.message.sequence,
            deliveries = self.deliveries,
            reason,
            "message dead-lettered"
        );
        self.inner
            .ack_with(AckKind::Term)
            .await
            .map_err(|e| self.settle_error(e))
    }
}

/// A message in a dead-letter station.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Its sequence in the dead-letter station (for republishing).
    pub sequence: u64,
    /// Why it was given up on.
    pub reason: String,
    /// Where it was first published.
    pub subject: String,
    /// Its sequence in the original station.
    pub original_sequence: u64,
    /// The group that gave up on it.
    pub group: String,
    /// Deliveries before it was given up on.
    pub deliveries: u64,
    /// Headers (the original ones plus the `FastChat-DLS-*` ones).
    pub headers: HeaderMap,
    /// The original payload.
    pub payload: Bytes,
}

impl From<Delivered> for DeadLetter {
    fn from(d: Delivered) -> Self {
        let header = |name: &str| {
            d.headers
                .get(name)
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default()
        };
        Self {
            sequence: d.sequence,
            reason: header(HEADER_DLS_REASON),
            subject: header(HEADER_DLS_SUBJECT),
            original_sequence: header(HEADER_DLS_SEQUENCE).parse().unwrap_or(0),
            group: header(HEADER_DLS_GROUP),
            deliveries: header(HEADER_DLS_DELIVERIES).parse().unwrap_or(0),
            headers: d.headers,
            payload: d.payload,
        }
    }
}
