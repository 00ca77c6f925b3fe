//! Which W3C `traceparent` values may be stored with a message: the Trace
//! Context format (<https://www.w3.org/TR/trace-context/#traceparent-header>),
//! checked exactly, so that only well-formed trace context reaches the
//! station and the services that read it back.
//!
//! A value that fails is not an error: trace context is advisory, so the
//! caller drops it and stores the message without one.

use broker_client::TraceContext;
use tonic::Request;

use crate::{SendError, store::Stored};

/// The `send` span of one request of either API (gRPC, gRPC-web, HTTP/JSON:
/// all come here as gRPC requests with their headers as metadata), a child
/// of the client's `traceparent` if it sent one, and the trace context to
/// store with the message.
///
/// With traces on, what is stored is the `send` span's own context (so
/// deliveries are its children), with the client's `tracestate`. With
/// traces off, it is the client's `traceparent` as it came, if well-formed
/// ([`traceparent`]): passed through for whoever reads the station.
pub fn send_span<T>(
    api: &'static str,
    request: &Request<T>,
) -> (tracing::Span, Option<TraceContext>) {
    let span = tracing::info_span!(
        "send",
        otel.kind = "producer",
        fastchat.api = api,
        fastchat.room = tracing::field::Empty,
        fastchat.sequence = tracing::field::Empty,
        fastchat.message_id = tracing::field::Empty,
        fastchat.duplicate = tracing::field::Empty,
        fastchat.outcome = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    if fastchat_runtime::propagation::enabled() {
        fastchat_runtime::propagation::set_request_parent(&span, request.metadata());
        let trace = fastchat_runtime::propagation::of_span(&span);
        return (span, trace);
    }
    let passed_through = request
        .metadata()
        .get(fastchat_wire::HEADER_TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(traceparent)
        .map(|traceparent| TraceContext {
            traceparent: traceparent.to_owned(),
            tracestate: None,
        });
    (span, passed_through)
}

/// Records the outcome of a send on the current (`send`) span: the stored
/// message's room, sequence and id, never its text.
pub fn record(result: &Result<Stored, SendError>, outcome: &'static str) {
    let span = tracing::Span::current();
    span.record("fastchat.outcome", outcome);
    match result {
        Ok(stored) => {
            span.record("fastchat.room", stored.message.room.as_str());
            span.record("fastchat.sequence", stored.message.sequence);
            span.record("fastchat.message_id", stored.message.id.as_str());
            span.record("fastchat.duplicate", stored.duplicate);
        }
        Err(SendError::Internal(_) | SendError::Unavailable(_)) => {
            span.record("otel.status_code", "ERROR");
        }
        Err(_) => {}
    }
}

/// Length of a version `00` value: `vv-` + 32 + `-` + 16 + `-` + `ff`.
const LEN: usize = 55;

/// The part of a `traceparent` header value to store, or `None` if `value`
/// is not a `traceparent` as W3C Trace Context defines it:
/// `version-traceid-parentid-flags`, all lowercase hex, where
///
/// - `version` is 2 hex digits and not `ff`;
/// - `traceid` is 32 hex digits, not all `0`;
/// - `parentid` is 16 hex digits, not all `0`;
/// - `flags` is 2 hex digits;
/// - for version `00` the value is exactly these 55 characters; a higher
///   version may add fields, so it is at least 55 characters and, if
///   longer, has a `-` right after the flags.
///
/// For version `00` that is the whole value. For a higher version it is
/// the first 55 characters, the four fields this version of the format
/// defines (itself a valid value of that version): the specification lets
/// a reader use only the fields it knows, and it keeps what is stored
/// 55 bytes long whatever a client sends.
pub fn traceparent(value: &str) -> Option<&str> {
    let b = value.as_bytes();
    if b.len() < LEN {
        return None;
    }
    let version = &b[0..2];
    let trace_id = &b[3..35];
    let parent_id = &b[36..52];
    let flags = &b[53..55];
    let well_formed = b[2] == b'-'
        && b[35] == b'-'
        && b[52] == b'-'
        && is_lower_hex(version)
        && version != b"ff"
        && is_lower_hex(trace_id)
        && !is_all_zeros(trace_id)
        && is_lower_hex(parent_id)
        && !is_all_zeros(parent_id)
        && is_lower_hex(flags);
    let length_fits = if version == b"00" {
        b.len() == LEN
    } else {
        b.len() == LEN || b[LEN] == b'-'
    };
    // Every byte checked so far is ASCII, so `LEN` is a char boundary.
    (well_formed && length_fits).then(|| &value[..LEN])
}

fn is_lower_hex(digits: &[u8]) -> bool {
    digits
        .iter()
        .all(|d| matches!(d, b'0'..=b'9' | b'a'..=b'f'))
}

fn is_all_zeros(digits: &[u8]) -> bool {
    digits.iter().all(|&d| d == b'0')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The specification's examples of a sampled and a not sampled trace.
    const SAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const NOT_SAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";

    #[test]
    fn accepts_the_specifications_examples_as_they_are() {
        for value in [SAMPLED, NOT_SAMPLED] {
            assert_eq!(traceparent(value), Some(value));
            assert!(traceparent(value).is_some());
        }
        // Flags other than the sampled bit are kept: they are a bit field
        // that later levels of the format extend (e.g. 02 = random trace id).
        let other_flags = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff";
        assert_eq!(traceparent(other_flags), Some(other_flags));
    }

    #[test]
    fn a_higher_version_may_add_fields_and_is_stored_without_them() {
        let v1 = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(traceparent(v1), Some(v1));
        let extended = format!("{v1}-what-the-future-holds");
        assert_eq!(traceparent(&extended), Some(v1));
        let fe = "fe-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-x";
        assert_eq!(traceparent(fe), Some(&fe[..55]));
        // 16 KB of fields after the flags are still bounded when stored.
        let long = format!("{v1}-{}", "a".repeat(16 * 1024));
        assert_eq!(traceparent(&long), Some(v1));
    }

    #[test]
    fn refuses_everything_else() {
        let s = SAMPLED;
        let junk = "x".repeat(16 * 1024);
        let junk_after_v00 = format!("{s}{junk}");
        let uppercase = s.to_uppercase();
        let cases: Vec<(&str, String)> = vec![
            ("empty", String::new()),
            ("16 KB of junk", junk),
            ("16 KB after a version 00 value", junk_after_v00),
            ("uppercase", uppercase),
            ("uppercase trace-id", s.replace("4bf92f", "4BF92F")),
            ("uppercase parent-id", s.replace("00f067aa", "00F067AA")),
            ("uppercase version", format!("0A{}", &s[2..])),
            ("version ff", s.replacen("00-", "ff-", 1)),
            ("version 00 with a field more", format!("{s}-00")),
            ("version 00 one character longer", format!("{s}0")),
            ("trailing space", format!("{s} ")),
            ("leading space", format!(" {s}")),
            ("one character short", s[..54].to_owned()),
            (
                "higher version without a dash after the flags",
                format!("{}x", &s.replacen("00-", "01-", 1)),
            ),
            (
                "higher version one character short",
                s.replacen("00-", "01-", 1)[..54].to_owned(),
            ),
            (
                "all-zero trace-id",
                s.replace("4bf92f3577b34da6a3ce929d0e0e4736", &"0".repeat(32)),
            ),
            (
                "all-zero parent-id",
                s.replace("00f067aa0ba902b7", &"0".repeat(16)),
            ),
            (
                "trace-id one short",
                s.replace(
                    "4bf92f3577b34da6a3ce929d0e0e4736",
                    "4bf92f3577b34da6a3ce929d0e0e473",
                ),
            ),
            (
                "parent-id one long",
                s.replace("00f067aa0ba902b7", "00f067aa0ba902b70"),
            ),
            ("trace-id not hex", s.replace("4bf92f", "4bg92f")),
            ("parent-id not hex", s.replace("00f067aa", "00f067za")),
            ("flags not hex", s.replace("-01", "-0x")),
            ("version not hex", s.replacen("00-", "0g-", 1)),
            ("one-digit flags", format!("{}1", &s[..53])),
            ("underscores for dashes", s.replace('-', "_")),
            ("no dashes", s.replace('-', "")),
            (
                "a dash moved",
                "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01".to_owned(),
            ),
            ("a non-ASCII digit", s.replace("4bf9", "4bf\u{0669}")),
            (
                "a multi-byte character at the cut",
                format!("{}é", &s.replacen("00-", "01-", 1)),
            ),
        ];
        for (why, value) in &cases {
            assert_eq!(traceparent(value), None, "{why}: {value:?}");
            assert!(traceparent(value).is_none(), "{why}");
        }
    }
}
