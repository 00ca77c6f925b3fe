//! `fastchat tail`: follow one room or all rooms, reconnecting by itself.
//!
//! The [`Cursor`] remembers the last sequence printed. After a lost
//! connection (or a service restart, which ends subscriptions with
//! `UNAVAILABLE`), tail connects again with back-off and subscribes with
//! `after_sequence` = that sequence, so nothing is skipped; it also drops any
//! message at or below it, so nothing is printed twice.

use std::{
    future::Future,
    io::{self, Write},
    time::Duration,
};

use fastchat_proto::v1::{
    self, Gap, all_messages_service_client::AllMessagesServiceClient, subscribe_request::Start,
    subscribe_response::Event,
};
use humantime_serde::re::humantime::format_duration;
use tokio::time::Instant;

use super::Context;
use crate::{
    addr::Target,
    args::TailArgs,
    backoff::Backoff,
    connect::{self, Use},
    error::{CliError, code_name, is_retryable},
    output::Printer,
};

/// A subscription that lasted this long counts as a success, so the next
/// reconnect starts again from the shortest delay.
const STABLE_AFTER: Duration = Duration::from_secs(1);

/// Where the subscription starts and how far it has got.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    room: String,
    start: Option<Start>,
    last: Option<u64>,
}

impl Cursor {
    /// The cursor `args` ask for; nothing printed yet.
    #[must_use]
    pub fn new(args: &TailArgs) -> Self {
        let start = if let Some(after) = args.after {
            Some(Start::AfterSequence(after))
        } else if let Some(since) = args.since {
            Some(Start::Since(since))
        } else if let Some(last) = args.last {
            Some(Start::Last(last))
        } else if args.new {
            Some(Start::NewOnly(true))
        } else {
            None
        };
        Self {
            // Empty = every room, which is also what --all says.
            room: args.room.clone().unwrap_or_default(),
            start,
            last: None,
        }
    }

    /// The subscription to open now: after the last sequence printed, or
    /// the asked-for start while nothing has been printed.
    ///
    /// (With `--new`, messages stored while disconnected before the first
    /// one arrived are not shown: there is no sequence to resume from yet.)
    #[must_use]
    pub fn request(&self) -> v1::SubscribeRequest {
        v1::SubscribeRequest {
            room: self.room.clone(),
            start: match self.last {
                Some(sequence) => Some(Start::AfterSequence(sequence)),
                None => self.start,
            },
        }
    }

    /// The last sequence printed (or skipped as a gap).
    #[must_use]
    pub fn last(&self) -> Option<u64> {
        self.last
    }

    /// Whether to print a message with `sequence`; moves the cursor if so.
    pub fn accept_message(&mut self, sequence: u64) -> bool {
        if self.last.is_some_and(|last| sequence <= last) {
            return false;
        }
        self.last = Some(sequence);
        true
    }

    /// Whether to print `gap`; moves the cursor past it, since those
    /// sequences will never come.
    pub fn accept_gap(&mut self, gap: &Gap) -> bool {
        if self.last.is_some_and(|last| gap.to_sequence <= last) {
            return false;
        }
        self.last = Some(gap.to_sequence);
        true
    }
}

/// Follows messages until `shutdown` completes (Ctrl-C), which is success.
///
/// # Errors
/// all-messages-service unreachable at the first attempt (later it is
/// retried for ever), a refused subscription (e.g. `--after` beyond the
/// newest message), or writing the output failed.
pub async fn run<W: Write>(
    ctx: &Context,
    args: &TailArgs,
    out: &mut Printer<W>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), CliError> {
    tokio::select! {
        result = follow(ctx, Cursor::new(args), out) => result,
        () = shutdown => Ok(()),
    }
}

/// Subscribes, prints, and on connection trouble reconnects and resumes.
async fn follow<W: Write>(
    ctx: &Context,
    mut cursor: Cursor,
    out: &mut Printer<W>,
) -> Result<(), CliError> {
    let addr = &ctx.all_addr;
    let mut backoff = Backoff::default();
    // Until the service has been reached once, "unreachable" most likely
    // means a wrong address: say so and exit instead of waiting for ever.
    let mut reached = false;
    let mut resuming = false;
    loop {
        let channel = match connect::connect(Target::All, addr, ctx.timeout, Use::Stream).await {
            Ok(channel) => channel,
            Err(e) if !reached => return Err(e),
            Err(e) => {
                notice(&format!(
                    "{e}; retrying in {}",
                    format_duration(backoff.peek())
                ));
                backoff.wait().await;
                continue;
            }
        };
        reached = true;
        let mut client = AllMessagesServiceClient::new(channel);
        let mut stream = match client.subscribe(cursor.request()).await {
            Ok(response) => response.into_inner(),
            Err(status) if is_retryable(status.code()) => {
                notice(&format!(
                    "all-messages-service at {addr} refused the subscription for now ({}: {}); \
                     retrying in {}",
                    code_name(status.code()),
                    status.message(),
                    format_duration(backoff.peek())
                ));
                backoff.wait().await;
                resuming = true;
                continue;
            }
            Err(status) => return Err(CliError::status(Target::All, addr, &status)),
        };
        if resuming {
            notice(&match cursor.last() {
                Some(sequence) => format!(
                    "reconnected to all-messages-service at {addr}; resuming after sequence {sequence}"
                ),
                None => format!(
                    "reconnected to all-messages-service at {addr}; nothing printed yet, starting as asked"
                ),
            });
        }
        let opened = Instant::now();
        let ended = loop {
            match stream.message().await {
                Ok(Some(response)) => print_new(&mut cursor, response.event, out)?,
                Ok(None) => break "the service ended the stream".to_owned(),
                Err(status) if is_retryable(status.code()) => {
                    break format!("{}: {}", code_name(status.code()), status.message());
                }
                Err(status) => return Err(CliError::status(Target::All, addr, &status)),
            }
        };
        if opened.elapsed() >= STABLE_AFTER {
            backoff.reset();
        }
        notice(&format!(
            "lost all-messages-service at {addr} ({ended}); reconnecting in {}",
            format_duration(backoff.peek())
        ));
        backoff.wait().await;
        resuming = true;
    }
}

/// Prints `event` unless the cursor is already past it (a replay after a
/// reconnect), moving the cursor.
fn print_new<W: Write>(
    cursor: &mut Cursor,
    event: Option<Event>,
    out: &mut Printer<W>,
) -> io::Result<()> {
    match event {
        Some(Event::Message(message)) if cursor.accept_message(message.sequence) => {
            out.message(&message)
        }
        Some(Event::Gap(gap)) if cursor.accept_gap(&gap) => out.gap(&gap),
        // Already printed, or an event of a kind this client does not know.
        _ => Ok(()),
    }
}

/// A progress note for people: on stderr, so stdout stays only messages.
fn notice(text: &str) {
    eprintln!("fastchat: {text}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use fastchat_proto::prost_types::Timestamp;

    fn args() -> TailArgs {
        TailArgs {
            room: None,
            all: false,
            after: None,
            since: None,
            last: None,
            new: false,
        }
    }

    #[test]
    fn the_first_request_is_what_was_asked() {
        let cursor = Cursor::new(&args());
        assert_eq!(cursor.request(), v1::SubscribeRequest::default());

        let since = Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        };
        let cases = [
            (
                TailArgs {
                    after: Some(7),
                    ..args()
                },
                Start::AfterSequence(7),
            ),
            (
                TailArgs {
                    since: Some(since),
                    ..args()
                },
                Start::Since(since),
            ),
            (
                TailArgs {
                    last: Some(20),
                    ..args()
                },
                Start::Last(20),
            ),
            (
                TailArgs {
                    new: true,
                    ..args()
                },
                Start::NewOnly(true),
            ),
        ];
        for (args, start) in cases {
            assert_eq!(Cursor::new(&args).request().start, Some(start));
        }
        let room = Cursor::new(&TailArgs {
            room: Some("dev".into()),
            ..args()
        });
        assert_eq!(room.request().room, "dev");
    }

    #[test]
    fn resumes_after_the_last_printed_and_never_prints_twice() {
        let mut cursor = Cursor::new(&TailArgs {
            last: Some(5),
            ..args()
        });
        assert!(cursor.accept_message(10));
        assert!(cursor.accept_message(12));
        assert_eq!(cursor.request().start, Some(Start::AfterSequence(12)));
        // A replay overlapping what was printed is dropped.
        assert!(!cursor.accept_message(12));
        assert!(!cursor.accept_message(11));
        assert!(cursor.accept_message(13));
        assert_eq!(cursor.last(), Some(13));
    }

    #[test]
    fn gaps_move_the_cursor_past_them() {
        let mut cursor = Cursor::new(&args());
        let gap = Gap {
            from_sequence: 1,
            to_sequence: 4,
        };
        assert!(cursor.accept_gap(&gap));
        assert_eq!(cursor.request().start, Some(Start::AfterSequence(4)));
        assert!(!cursor.accept_gap(&gap), "the same gap is reported once");
        assert!(!cursor.accept_message(3));
        assert!(cursor.accept_message(5));
    }
}
