//! What the commands print: one line per message, gap, page end or health
//! result, as text for people or as one JSON object per line for programs.
//!
//! This is the only module that writes to standard output. It writes with
//! `writeln!` on a `Write` it is given (never `println!`), so the formatting
//! is unit-tested against a buffer and a closed pipe (`fastchat tail | head`)
//! is an error the caller handles instead of a panic. Each line is written
//! in one call, so a line is never split between two outputs.

use std::io::{self, Write};

use fastchat_proto::{
    prost_types::Timestamp,
    v1::{ChatMessage, Gap},
};
use serde::Serialize;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

/// Text for people or JSON lines for programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned, readable text.
    Human,
    /// One JSON object per line, each with a `"type"`.
    Json,
}

/// One service's health, as `fastchat health` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthLine {
    /// Deployment name, e.g. `send-service`.
    pub service: &'static str,
    /// Address asked.
    pub addr: String,
    /// `SERVING`, `NOT_SERVING`, … or `unreachable`.
    pub status: String,
    /// Why it is unreachable, if it is.
    pub error: Option<String>,
}

/// The JSON lines, one variant per kind of line.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum JsonLine<'a> {
    /// A message was stored by `send`.
    Sent {
        #[serde(flatten)]
        message: JsonMessage<'a>,
        duplicate: bool,
    },
    /// A message from `tail` or `history`.
    Message(JsonMessage<'a>),
    /// Asked-for sequences no longer retained.
    Gap {
        from_sequence: u64,
        to_sequence: u64,
    },
    /// The end of a `history` page.
    Page {
        room: &'a str,
        count: usize,
        /// `--before` for the next (older) page; null when there is none.
        next_before: Option<u64>,
    },
    /// One service's health.
    Health {
        service: &'a str,
        addr: &'a str,
        status: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<&'a str>,
    },
}

#[derive(Debug, Serialize)]
struct JsonMessage<'a> {
    room: &'a str,
    sequence: u64,
    id: &'a str,
    author: &'a str,
    text: &'a str,
    /// RFC 3339 with full precision; null if the service sent none.
    sent_at: Option<String>,
    client_time_ms: i64,
}

impl<'a> From<&'a ChatMessage> for JsonMessage<'a> {
    fn from(m: &'a ChatMessage) -> Self {
        Self {
            room: &m.room,
            sequence: m.sequence,
            id: &m.id,
            author: &m.author,
            text: &m.text,
            sent_at: m.sent_at.as_ref().and_then(|t| rfc3339(t, false)),
            client_time_ms: m.client_time_ms,
        }
    }
}

/// Writes the commands' output lines to `out`.
#[derive(Debug)]
pub struct Printer<W> {
    out: W,
    format: Format,
}

impl<W: Write> Printer<W> {
    /// A printer writing `format` to `out`.
    pub fn new(out: W, format: Format) -> Self {
        Self { out, format }
    }

    /// The writer back, e.g. a test's buffer.
    pub fn into_inner(self) -> W {
        self.out
    }

    /// The answer to `send`.
    ///
    /// # Errors
    /// Writing failed.
    pub fn sent(&mut self, message: &ChatMessage, duplicate: bool) -> io::Result<()> {
        let line = match self.format {
            Format::Human => human_sent(message, duplicate),
            Format::Json => json(&JsonLine::Sent {
                message: message.into(),
                duplicate,
            })?,
        };
        self.line(&line)
    }

    /// A message from `tail` or `history`.
    ///
    /// # Errors
    /// Writing failed.
    pub fn message(&mut self, message: &ChatMessage) -> io::Result<()> {
        let line = match self.format {
            Format::Human => human_message(message),
            Format::Json => json(&JsonLine::Message(message.into()))?,
        };
        self.line(&line)
    }

    /// A gap in the history.
    ///
    /// # Errors
    /// Writing failed.
    pub fn gap(&mut self, gap: &Gap) -> io::Result<()> {
        let line = match self.format {
            Format::Human => human_gap(gap),
            Format::Json => json(&JsonLine::Gap {
                from_sequence: gap.from_sequence,
                to_sequence: gap.to_sequence,
            })?,
        };
        self.line(&line)
    }

    /// The end of a history page: `next_before` 0 means no older messages;
    /// `limit` is repeated in the hint for the next page.
    ///
    /// # Errors
    /// Writing failed.
    pub fn page_end(
        &mut self,
        room: &str,
        count: usize,
        next_before: u64,
        limit: Option<u32>,
    ) -> io::Result<()> {
        let line = match self.format {
            Format::Human => match human_page_end(room, count, next_before, limit) {
                Some(line) => line,
                None => return Ok(()),
            },
            Format::Json => json(&JsonLine::Page {
                room,
                count,
                next_before: (next_before != 0).then_some(next_before),
            })?,
        };
        self.line(&line)
    }

    /// One service's health.
    ///
    /// # Errors
    /// Writing failed.
    pub fn health(&mut self, health: &HealthLine) -> io::Result<()> {
        let line = match self.format {
            Format::Human => human_health(health),
            Format::Json => json(&JsonLine::Health {
                service: health.service,
                addr: &health.addr,
                status: &health.status,
                error: health.error.as_deref(),
            })?,
        };
        self.line(&line)
    }

    /// A token from `fastchat token`: the token alone, in either format, so
    /// `$(fastchat token …)` is the token.
    ///
    /// # Errors
    /// Writing failed.
    pub fn token(&mut self, token: &str) -> io::Result<()> {
        self.line(token)
    }

    fn line(&mut self, line: &str) -> io::Result<()> {
        // One write per line (text and newline together), then flush, so a
        // follower such as `tail` shows each message as soon as it arrives.
        let mut buf = String::with_capacity(line.len() + 1);
        buf.push_str(line);
        buf.push('\n');
        self.out.write_all(buf.as_bytes())?;
        self.out.flush()
    }
}

fn json(line: &JsonLine<'_>) -> io::Result<String> {
    serde_json::to_string(line).map_err(io::Error::other)
}

/// `stored #12 in general, id 0190…`.
#[must_use]
pub fn human_sent(m: &ChatMessage, duplicate: bool) -> String {
    if duplicate {
        format!(
            "duplicate: already stored as #{} in {}, id {}",
            m.sequence, m.room, m.id
        )
    } else {
        format!("stored #{} in {}, id {}", m.sequence, m.room, m.id)
    }
}

/// `[general] #12 2025-01-31T12:00:00.123Z ann: hello`.
///
/// Control characters in the text (a newline, an escape sequence) are shown
/// escaped, so one message is always one line and cannot fake another.
#[must_use]
pub fn human_message(m: &ChatMessage) -> String {
    let at = m
        .sent_at
        .as_ref()
        .and_then(|t| rfc3339(t, true))
        .unwrap_or_else(|| "-".into());
    format!(
        "[{}] #{} {} {}: {}",
        m.room,
        m.sequence,
        at,
        escape_controls(&m.author),
        escape_controls(&m.text)
    )
}

/// `-- gap: #5..#9 no longer retained --`.
#[must_use]
pub fn human_gap(g: &Gap) -> String {
    if g.from_sequence == g.to_sequence {
        format!("-- gap: #{} no longer retained --", g.from_sequence)
    } else {
        format!(
            "-- gap: #{}..#{} no longer retained --",
            g.from_sequence, g.to_sequence
        )
    }
}

/// The line after a history page, if there is one to print: the command
/// for the next (older) page, or a note that the room has no messages.
#[must_use]
pub fn human_page_end(
    room: &str,
    count: usize,
    next_before: u64,
    limit: Option<u32>,
) -> Option<String> {
    let limit = limit.map(|n| format!(" --limit {n}")).unwrap_or_default();
    match (count, next_before) {
        (0, 0) => Some(format!("(no messages in {room})")),
        (_, 0) => None,
        (_, before) => Some(format!(
            "-- older messages: fastchat history --room {room}{limit} --before {before}"
        )),
    }
}

/// `send-service          http://127.0.0.1:50051  SERVING`.
#[must_use]
pub fn human_health(h: &HealthLine) -> String {
    let head = format!("{:<21} {:<24} {}", h.service, h.addr, h.status);
    match &h.error {
        Some(error) => format!("{head}: {error}"),
        None => head,
    }
}

/// A timestamp as RFC 3339 UTC, in milliseconds when `millis`; `None` when it
/// is outside what RFC 3339 can write (years 0–9999) or malformed.
#[must_use]
pub fn rfc3339(t: &Timestamp, millis: bool) -> Option<String> {
    let nanos = u32::try_from(t.nanos).ok().filter(|n| *n < 1_000_000_000)?;
    let at = OffsetDateTime::from_unix_timestamp(t.seconds).ok()?;
    if !millis {
        return at.replace_nanosecond(nanos).ok()?.format(&Rfc3339).ok();
    }
    // Always three digits (`time` trims trailing zeros), so the columns of
    // `tail` line up. In UTC the formatted time ends with `Z`.
    let seconds = at.format(&Rfc3339).ok()?;
    let stem = seconds.strip_suffix('Z')?;
    Some(format!("{stem}.{:03}Z", nanos / 1_000_000))
}

fn escape_controls(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> ChatMessage {
        ChatMessage {
            id: "0190a1b2-0000-7000-8000-000000000001".into(),
            room: "general".into(),
            author: "ann".into(),
            text: "hello".into(),
            sent_at: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 123_456_789,
            }),
            client_time_ms: 0,
            sequence: 12,
            author_verified: false,
        }
    }

    fn printed(
        format: Format,
        print: impl FnOnce(&mut Printer<Vec<u8>>) -> io::Result<()>,
    ) -> String {
        let mut printer = Printer::new(Vec::new(), format);
        print(&mut printer).expect("writes to a buffer");
        String::from_utf8(printer.into_inner()).expect("utf-8")
    }

    #[test]
    fn messages_as_text() {
        assert_eq!(
            human_message(&message()),
            "[general] #12 2023-11-14T22:13:20.123Z ann: hello"
        );
        let mut m = message();
        m.text = "two\nlines\u{1b}[31m".into();
        m.sent_at = Some(Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        });
        assert_eq!(
            human_message(&m),
            "[general] #12 2023-11-14T22:13:20.000Z ann: two\\nlines\\u{1b}[31m"
        );
        m.sent_at = None;
        assert!(human_message(&m).starts_with("[general] #12 - ann: "));
    }

    #[test]
    fn messages_as_json_lines() {
        let line = printed(Format::Json, |p| p.message(&message()));
        assert_eq!(
            line,
            "{\"type\":\"message\",\"room\":\"general\",\"sequence\":12,\
             \"id\":\"0190a1b2-0000-7000-8000-000000000001\",\"author\":\"ann\",\
             \"text\":\"hello\",\"sent_at\":\"2023-11-14T22:13:20.123456789Z\",\
             \"client_time_ms\":0}\n"
        );
        let value: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(value["sequence"], 12);
    }

    #[test]
    fn sent_as_text_and_json() {
        assert_eq!(
            printed(Format::Human, |p| p.sent(&message(), false)),
            "stored #12 in general, id 0190a1b2-0000-7000-8000-000000000001\n"
        );
        assert_eq!(
            human_sent(&message(), true),
            "duplicate: already stored as #12 in general, id 0190a1b2-0000-7000-8000-000000000001"
        );
        let line = printed(Format::Json, |p| p.sent(&message(), true));
        let value: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(value["type"], "sent");
        assert_eq!(value["duplicate"], true);
        assert_eq!(value["sequence"], 12);
        assert_eq!(value["room"], "general");
    }

    #[test]
    fn gaps() {
        let gap = Gap {
            from_sequence: 5,
            to_sequence: 9,
        };
        assert_eq!(human_gap(&gap), "-- gap: #5..#9 no longer retained --");
        assert_eq!(
            human_gap(&Gap {
                from_sequence: 4,
                to_sequence: 4
            }),
            "-- gap: #4 no longer retained --"
        );
        assert_eq!(
            printed(Format::Json, |p| p.gap(&gap)),
            "{\"type\":\"gap\",\"from_sequence\":5,\"to_sequence\":9}\n"
        );
    }

    #[test]
    fn page_ends() {
        assert_eq!(
            human_page_end("dev", 10, 42, None).as_deref(),
            Some("-- older messages: fastchat history --room dev --before 42")
        );
        assert_eq!(
            human_page_end("dev", 10, 42, Some(10)).as_deref(),
            Some("-- older messages: fastchat history --room dev --limit 10 --before 42")
        );
        assert_eq!(human_page_end("dev", 3, 0, None), None);
        assert_eq!(
            human_page_end("dev", 0, 0, None).as_deref(),
            Some("(no messages in dev)")
        );
        assert_eq!(
            printed(Format::Human, |p| p.page_end("dev", 3, 0, None)),
            ""
        );
        assert_eq!(
            printed(Format::Json, |p| p.page_end("dev", 3, 0, None)),
            "{\"type\":\"page\",\"room\":\"dev\",\"count\":3,\"next_before\":null}\n"
        );
        assert_eq!(
            printed(Format::Json, |p| p.page_end("dev", 3, 7, None)),
            "{\"type\":\"page\",\"room\":\"dev\",\"count\":3,\"next_before\":7}\n"
        );
    }

    #[test]
    fn health_lines() {
        let serving = HealthLine {
            service: "send-service",
            addr: "http://127.0.0.1:50051".into(),
            status: "SERVING".into(),
            error: None,
        };
        assert_eq!(
            human_health(&serving),
            "send-service          http://127.0.0.1:50051   SERVING"
        );
        let down = HealthLine {
            service: "all-messages-service",
            addr: "http://127.0.0.1:1".into(),
            status: "unreachable".into(),
            error: Some("connection refused".into()),
        };
        assert_eq!(
            human_health(&down),
            "all-messages-service  http://127.0.0.1:1       unreachable: connection refused"
        );
        assert_eq!(
            printed(Format::Json, |p| p.health(&serving)),
            "{\"type\":\"health\",\"service\":\"send-service\",\
             \"addr\":\"http://127.0.0.1:50051\",\"status\":\"SERVING\"}\n"
        );
    }

    #[test]
    fn timestamps_out_of_range_are_not_formatted() {
        let t = |seconds, nanos| Timestamp { seconds, nanos };
        assert_eq!(
            rfc3339(&t(0, 0), false).as_deref(),
            Some("1970-01-01T00:00:00Z")
        );
        assert_eq!(
            rfc3339(&t(0, 5_000_000), true).as_deref(),
            Some("1970-01-01T00:00:00.005Z")
        );
        assert_eq!(
            rfc3339(&t(0, 120_999_999), true).as_deref(),
            Some("1970-01-01T00:00:00.120Z")
        );
        assert_eq!(
            rfc3339(&t(0, 120_000_000), false).as_deref(),
            Some("1970-01-01T00:00:00.12Z")
        );
        assert_eq!(rfc3339(&t(0, -1), false), None);
        assert_eq!(rfc3339(&t(0, 1_000_000_000), false), None);
        assert_eq!(rfc3339(&t(i64::MAX, 0), false), None);
        assert_eq!(rfc3339(&t(300_000_000_000, 0), false), None);
    }

    #[test]
    fn tokens_are_printed_alone() {
        for format in [Format::Human, Format::Json] {
            assert_eq!(printed(format, |p| p.token("a.b.c")), "a.b.c\n");
        }
    }

    #[test]
    fn a_closed_pipe_is_an_error_not_a_panic() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut printer = Printer::new(Closed, Format::Human);
        let err = printer.message(&message()).expect_err("closed");
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}
