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
    /// The W3C trace context stored with the message, if it has one.
    #[must_use]
    pub fn trace_context(&self) -> Option<TraceContext> {
        TraceContext::from_headers(&self.headers)
    }

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

/// W3C Trace Context (<https://www.w3.org/TR/trace-context/>) as stored in a
/// message's headers: `traceparent` and, if there is one, `tracestate`,
/// lowercase, as the specification names them. What the values hold is the
/// producer's business; this only carries them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// The `traceparent` value: `version-traceid-parentid-flags`.
    pub traceparent: String,
    /// The `tracestate` value, vendor entries; `None` when there are none.
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// The header holding [`TraceContext::traceparent`].
    pub const TRACEPARENT: &'static str = "traceparent";
    /// The header holding [`TraceContext::tracestate`].
    pub const TRACESTATE: &'static str = "tracestate";

    /// The trace context in `headers`, if they have a `traceparent`.
    #[must_use]
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let traceparent = headers.get(Self::TRACEPARENT)?.as_str().to_owned();
        let tracestate = headers
            .get(Self::TRACESTATE)
            .map(|v| v.as_str().to_owned())
            .filter(|v| !v.is_empty());
        Some(Self {
            traceparent,
            tracestate,
        })
    }

    /// Adds the trace context to `headers` (replacing any there).
    pub fn insert_into(&self, headers: &mut HeaderMap) {
        headers.insert(Self::TRACEPARENT, self.traceparent.as_str());
        if let Some(tracestate) = &self.tracestate {
            headers.insert(Self::TRACESTATE, tracestate.as_str());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_context_round_trips_through_headers() {
        let with_state = TraceContext {
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            tracestate: Some("vendor=opaque".into()),
        };
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", "x");
        with_state.insert_into(&mut headers);
        assert_eq!(
            headers.get("traceparent").map(|v| v.as_str()),
            Some(with_state.traceparent.as_str())
        );
        assert_eq!(TraceContext::from_headers(&headers), Some(with_state));

        let without = TraceContext {
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00".into(),
            tracestate: None,
        };
        let mut headers = HeaderMap::new();
        without.insert_into(&mut headers);
        assert!(headers.get("tracestate").is_none());
        assert_eq!(TraceContext::from_headers(&headers), Some(without));
        assert_eq!(TraceContext::from_headers(&HeaderMap::new()), None);
    }
}
