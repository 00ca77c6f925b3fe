//! The `chat` station's wire format, in one place: how send-service turns a
//! chat message into what it publishes ([`encode`]) and how
//! all-messages-service turns what it reads back into a message
//! ([`decode`]).
//!
//! A message is published to `chat.messages.<room>`; its payload is the
//! protobuf-encoded `fastchat.v1.ChatMessage` (without its `sequence`, which
//! only the station knows), and its headers carry the server-assigned id,
//! the content type and, when the sender had one, the W3C trace context.
//! Ordering is per room, by stream sequence.
//!
//! Layers: one module, on `fastchat-proto` (the message) and
//! `broker-client` (headers, what a read yields).

#![forbid(unsafe_code)]

use broker_client::{Delivered, HeaderMap, TraceContext};
use bytes::Bytes;
use fastchat_proto::{station, v1};
use prost::Message as _;

/// Header carrying the server-assigned message id.
pub const HEADER_MESSAGE_ID: &str = "FastChat-Message-Id";
/// Header naming the payload encoding.
pub const HEADER_CONTENT_TYPE: &str = "Content-Type";
/// Value of [`HEADER_CONTENT_TYPE`]: a protobuf `fastchat.v1.ChatMessage`.
pub const CONTENT_TYPE: &str = "application/protobuf; proto=fastchat.v1.ChatMessage";
/// W3C trace context, passed through from the request that sent it.
pub const HEADER_TRACEPARENT: &str = TraceContext::TRACEPARENT;

/// A chat message ready to publish to the station.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// `chat.messages.<room>`.
    pub subject: String,
    /// Message id, content type, trace context.
    pub headers: HeaderMap,
    /// The encoded message.
    pub payload: Bytes,
}

/// Encodes `message` for the station. Its `sequence` is not sent: the
/// station assigns it, and [`decode`] fills it in.
#[must_use]
pub fn encode(message: &v1::ChatMessage, trace: Option<&TraceContext>) -> Outgoing {
    let mut headers = HeaderMap::new();
    // The id is in the payload too; the header is only a convenience for
    // broker-side tools, so an id a header cannot carry (send-service makes
    // UUIDs, but the type allows anything) is left out of it rather than
    // breaking the header block (found by fuzzing: async-nats panics on CR/LF).
    if message
        .id
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        headers.insert(HEADER_MESSAGE_ID, message.id.as_str());
    }
    headers.insert(HEADER_CONTENT_TYPE, CONTENT_TYPE);
    if let Some(trace) = trace {
        trace.insert_into(&mut headers);
    }
    let payload = if message.sequence == 0 {
        message.encode_to_vec()
    } else {
        v1::ChatMessage {
            sequence: 0,
            ..message.clone()
        }
        .encode_to_vec()
    };
    Outgoing {
        subject: station::subject(&message.room),
        headers,
        payload: Bytes::from(payload),
    }
}

/// Why a stored message could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// It was not published to a room subject.
    #[error("subject `{0}` is not a chat room's")]
    NotARoom(String),
    /// Its payload is not a `fastchat.v1.ChatMessage`.
    #[error("payload is not a fastchat.v1.ChatMessage: {0}")]
    Payload(#[from] prost::DecodeError),
}

/// The seconds of a protobuf `Timestamp`'s range, 0001-01-01T00:00:00Z to
/// 9999-12-31T23:59:59Z: what RFC 3339 (and so the JSON mapping) can carry.
const TIMESTAMP_SECONDS: std::ops::RangeInclusive<i64> = -62_135_596_800..=253_402_300_799;

/// Decodes a message read from the station: the payload, with `sequence`
/// set from the station and the room taken from the subject (the subject is
/// what subscribers filter on, so it is the room that counts). A `sent_at`
/// outside a protobuf `Timestamp`'s range (send-service never stores one,
/// but anyone who may publish to the station could) is clamped into it, so
/// that every API can carry the message (found by fuzzing: its JSON
/// serialization failed).
///
/// # Errors
/// [`DecodeError`] for a message that is not a FastChat chat message.
pub fn decode(delivered: &Delivered) -> Result<v1::ChatMessage, DecodeError> {
    let room = station::room_of(&delivered.subject)
        .filter(|room| station::is_valid_room(room))
        .ok_or_else(|| DecodeError::NotARoom(delivered.subject.clone()))?;
    let mut message = v1::ChatMessage::decode(delivered.payload.as_ref())?;
    message.sequence = delivered.sequence;
    if message.room != room {
        message.room = room.to_owned();
    }
    if let Some(time) = &mut message.sent_at {
        time.nanos = time.nanos.clamp(0, 999_999_999);
        if time.seconds < *TIMESTAMP_SECONDS.start() {
            time.seconds = *TIMESTAMP_SECONDS.start();
            time.nanos = 0;
        } else if time.seconds > *TIMESTAMP_SECONDS.end() {
            time.seconds = *TIMESTAMP_SECONDS.end();
            time.nanos = 999_999_999;
        }
    }
    Ok(message)
}

/// The trace context a stored message carries, if any.
#[must_use]
pub fn traceparent(headers: &HeaderMap) -> Option<&str> {
    headers.get(HEADER_TRACEPARENT).map(|v| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use broker_client::OffsetDateTime;
    use fastchat_proto::prost_types::Timestamp;

    fn message() -> v1::ChatMessage {
        v1::ChatMessage {
            id: "0190a5d2-7b1c-7000-8000-000000000001".into(),
            room: "team-a".into(),
            author: "ann".into(),
            text: "hello\nworld".into(),
            sent_at: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 5,
            }),
            client_time_ms: 1_699_999_999_000,
            sequence: 0,
            author_verified: true,
        }
    }

    /// Regression (fuzz target wire_decode): a stored `sent_at` beyond what
    /// a `Timestamp` may hold made the message's JSON serialization panic.
    #[test]
    fn a_stored_time_out_of_range_is_clamped_into_it() {
        let decode_with = |seconds, nanos| {
            let mut m = message();
            m.sent_at = Some(Timestamp { seconds, nanos });
            let out = encode(&m, None);
            decode(&stored(out, 7))
                .expect("decodes")
                .sent_at
                .map(|t| (t.seconds, t.nanos))
        };
        assert_eq!(
            decode_with(i64::MAX, 3),
            Some((253_402_300_799, 999_999_999))
        );
        assert_eq!(decode_with(i64::MIN, 3), Some((-62_135_596_800, 0)));
        assert_eq!(decode_with(1_700_000_000, -1), Some((1_700_000_000, 0)));
        assert_eq!(
            decode_with(1_700_000_000, 2_000_000_000),
            Some((1_700_000_000, 999_999_999))
        );
        // In range: as stored.
        assert_eq!(decode_with(1_700_000_000, 5), Some((1_700_000_000, 5)));
    }

    /// What the broker hands back for a published message.
    fn stored(out: Outgoing, sequence: u64) -> Delivered {
        Delivered {
            sequence,
            subject: out.subject,
            headers: out.headers,
            payload: out.payload,
            published: OffsetDateTime::UNIX_EPOCH,
            pending: 0,
        }
    }

    #[test]
    fn a_message_survives_the_round_trip_with_its_sequence() {
        let sent = message();
        let trace = TraceContext {
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            tracestate: Some("vendor=1".into()),
        };
        let out = encode(&sent, Some(&trace));
        assert_eq!(out.subject, "chat.messages.team-a");
        assert_eq!(
            out.headers.get(HEADER_MESSAGE_ID).map(|v| v.as_str()),
            Some(sent.id.as_str())
        );
        assert_eq!(
            out.headers.get(HEADER_CONTENT_TYPE).map(|v| v.as_str()),
            Some(CONTENT_TYPE)
        );
        let back = stored(out, 42);
        assert_eq!(
            traceparent(&back.headers),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
        assert_eq!(back.trace_context(), Some(trace));
        let decoded = decode(&back).expect("decodes");
        assert_eq!(
            decoded,
            v1::ChatMessage {
                sequence: 42,
                ..sent
            }
        );
    }

    #[test]
    fn the_sequence_is_never_stored_and_the_subject_names_the_room() {
        let mut sent = message();
        sent.sequence = 7;
        let out = encode(&sent, None);
        assert!(traceparent(&out.headers).is_none());
        let payload = v1::ChatMessage::decode(out.payload.as_ref()).expect("protobuf");
        assert_eq!(payload.sequence, 0);
        // A payload whose room disagrees with its subject: the subject wins.
        let mut back = stored(out, 9);
        back.subject = "chat.messages.other".into();
        assert_eq!(decode(&back).expect("decodes").room, "other");
    }

    #[test]
    fn foreign_messages_are_refused_with_a_reason() {
        let mut back = stored(encode(&message(), None), 1);
        back.subject = "elsewhere.team-a".into();
        assert!(matches!(decode(&back), Err(DecodeError::NotARoom(_))));
        let mut back = stored(encode(&message(), None), 1);
        back.payload = Bytes::from_static(&[0xff, 0xff, 0xff]);
        assert!(matches!(decode(&back), Err(DecodeError::Payload(_))));
    }

    /// Found by `fuzz/fuzz_targets/wire_decode.rs`: an id with a line break
    /// made async-nats panic when the header was inserted. It stays in the
    /// payload and is left out of the header.
    #[test]
    fn an_id_no_header_can_carry_is_kept_in_the_payload_only() {
        let message = v1::ChatMessage {
            id: "a\r\nb".into(),
            room: "general".into(),
            ..v1::ChatMessage::default()
        };
        let out = encode(&message, None);
        assert!(out.headers.get(HEADER_MESSAGE_ID).is_none());
        let decoded = v1::ChatMessage::decode(out.payload.as_ref()).expect("payload");
        assert_eq!(decoded.id, "a\r\nb");
    }
}
