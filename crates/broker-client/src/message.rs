//! What a station read yields and where a read starts: plain data shared by
//! the station, consumer and group layers.

use async_nats::{
    HeaderMap,
    jetstream::{self, consumer::DeliverPolicy},
};
use bytes::Bytes;
use time::OffsetDateTime;

use crate::{Error, ErrorKind, Result};

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
            Self::All | Self::FromSequence(0 | 1) => DeliverPolicy::All,
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
        // async-nats gives no kind here: the reply subject of a JetStream
        // delivery did not parse, which only a non-JetStream message causes.
        let info = message
            .info()
            .map_err(|e| Error::broker("read message metadata", ErrorKind::Other, e))?;
        Ok(Self {
            sequence: info.stream_sequence,
            subject: message.subject.to_string(),
            headers: message.headers.clone().unwrap_or_default(),
            payload: message.payload.clone(),
            published: info.published,
            pending: info.pending,
        })
    }

    pub(crate) fn from_raw(message: jetstream::message::StreamMessage) -> Self {
        Self {
            sequence: message.sequence,
            subject: message.subject.to_string(),
            headers: message.headers,
            payload: message.payload,
            published: message.time,
            pending: 0,
        }
    }
}
