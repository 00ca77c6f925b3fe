//! `fastchat tail`: follow one room or all rooms, reconnecting by itself.
//!
//! The [`Cursor`] remembers the last sequence printed. After a lost
//! connection (or a service restart, which ends subscriptions with
//! `UNAVAILABLE`), tail connects again with back-off and subscribes with
//! `after_sequence` = that sequence, so nothing is skipped; it also drops any
//! message at or below it, so nothing is printed twice. The delays between
//! attempts follow FastChat's one retry policy (`fastchat_backoff`), unless
//! the service says how long to wait (a `google.rpc.RetryInfo`, e.g. with
//! `RATE_LIMITED`): then tail waits that long.
//!
//! A refusal that waiting cannot fix (`UNAUTHENTICATED`, such as an expired
//! token, or `PERMISSION_DENIED`) ends tail with that error instead, naming
//! the `--after` to resume from once a new token is at hand.

use std::{
    future::Future,
    io::{self, Write},
    time::Duration,
};

use fastchat_backoff::{Backoff, ExponentialBackoff};
use fastchat_proto::v1::{
    self, Gap, all_messages_service_client::AllMessagesServiceClient, subscribe_request::Start,
    subscribe_response::Event,
};
use tokio::time::Instant;
use tonic::Status;

use super::Context;
use crate::{
    addr::Target,
    args::TailArgs,
    connect::Use,
    error::{CliError, code_name, is_retryable, retry_delay, whole_millis},
    output::Printer,
};

/// A subscription that lasted this long counts as a success, so the next
/// reconnect starts again from the shortest delay.
const STABLE_AFTER: Duration = Duration::from_secs(1);

/// First delay after a lost connection.
pub const RECONNECT_MIN: Duration = Duration::from_millis(100);
/// Ceiling of the delay, so a returning service is noticed within seconds.
pub const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// Bounds on a delay the service asks for (`RetryInfo`): at least
/// [`RECONNECT_MIN`], so a zero delay does not spin, and at most this, so a
/// wrong one does not stall tail for hours.
pub const RETRY_INFO_MAX: Duration = Duration::from_secs(10 * 60);

/// How long `tail` waits between attempts: doubling from [`RECONNECT_MIN`]
/// to [`RECONNECT_MAX`], each delay up to a quarter shorter at random, so
/// many `tail`s do not all come back in the same instant.
#[must_use]
pub fn reconnect_policy() -> ExponentialBackoff {
    ExponentialBackoff::doubling(RECONNECT_MIN, RECONNECT_MAX)
}

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
    /// (The service's CaughtUp and Heartbeat events give a position even
    /// before the first message, so `--new` resumes exactly too.)
    #[must_use]
    pub fn request(&self) -> v1::SubscribeRequest {
        v1::SubscribeRequest {
            room: self.room.clone(),
            start: match self.last {
                Some(sequence) => Some(Start::AfterSequence(sequence)),
                None => self.start,
            },
            rooms: Vec::new(),
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

    /// The stream is at `sequence` (a CaughtUp or Heartbeat event): nothing
    /// to print, but a resume starts there.
    pub fn accept_position(&mut self, sequence: u64) {
        if self.last.is_none_or(|last| sequence > last) {
            self.last = Some(sequence);
        }
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
    let mut backoff = reconnect_policy().stream();
    // Until the service has been reached once, "unreachable" most likely
    // means a wrong address: say so and exit instead of waiting for ever.
    let mut reached = false;
    // Likewise a subscription that never opened over TLS because of how the
    // connection is secured (e.g. no client certificate) will not open later.
    let mut subscribed = false;
    let mut resuming = false;
    loop {
        let channel = match ctx.connect(Target::All, Use::Stream).await {
            Ok(channel) => channel,
            Err(e) if !reached => return Err(e.into()),
            Err(e) => {
                pause(&mut backoff, &e.to_string(), "retrying", None).await;
                continue;
            }
        };
        reached = true;
        let mut client = AllMessagesServiceClient::new(channel);
        let mut stream = match client.subscribe(ctx.request(cursor.request())).await {
            Ok(response) => response.into_inner(),
            Err(status) if !subscribed && ctx.tls.call_hint(addr, &status).is_some() => {
                return Err(refused(ctx, &cursor, &status));
            }
            Err(status) if is_retryable(status.code()) => {
                let what = format!(
                    "all-messages-service at {addr} refused the subscription for now ({}: {})",
                    code_name(status.code()),
                    status.message(),
                );
                let what = redact(ctx, &what);
                pause(&mut backoff, &what, "retrying", retry_delay(&status)).await;
                resuming = true;
                continue;
            }
            Err(status) => return Err(refused(ctx, &cursor, &status)),
        };
        subscribed = true;
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
        let (ended, asked_delay) = loop {
            match stream.message().await {
                Ok(Some(response)) => print_new(&mut cursor, response.event, out)?,
                Ok(None) => break ("the service ended the stream".to_owned(), None),
                Err(status) if is_retryable(status.code()) => {
                    break (
                        format!("{}: {}", code_name(status.code()), status.message()),
                        retry_delay(&status),
                    );
                }
                Err(status) => return Err(refused(ctx, &cursor, &status)),
            }
        };
        if opened.elapsed() >= STABLE_AFTER {
            backoff.reset();
        }
        let what = redact(
            ctx,
            &format!("lost all-messages-service at {addr} ({ended})"),
        );
        pause(&mut backoff, &what, "reconnecting", asked_delay).await;
        resuming = true;
    }
}

/// The error that ends tail for `status`, which waiting would not change;
/// once something was printed, it says how to resume.
fn refused(ctx: &Context, cursor: &Cursor, status: &Status) -> CliError {
    let error = ctx.status_error(Target::All, status);
    let error = match cursor.last() {
        Some(sequence) => error.with_hint(&format!("resume with tail --after {sequence}")),
        None => error,
    };
    ctx.redact(error)
}

/// `text` without the token, should the server have quoted it.
fn redact(ctx: &Context, text: &str) -> String {
    match &ctx.bearer {
        Some(bearer) => bearer.redact(text).into_owned(),
        None => text.to_owned(),
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
        Some(
            Event::CaughtUp(v1::CaughtUp { sequence })
            | Event::Heartbeat(v1::Heartbeat { sequence, .. }),
        ) => {
            cursor.accept_position(sequence);
            Ok(())
        }
        // Already printed, or an event of a kind this client does not know.
        _ => Ok(()),
    }
}

/// Tells the user `what` happened and when the `next` attempt comes, then
/// waits for exactly the delay announced: the one the service `asked` for
/// (bounded by [`RECONNECT_MIN`] and [`RETRY_INFO_MAX`]), or else the
/// back-off's next.
async fn pause(backoff: &mut Backoff, what: &str, next: &str, asked: Option<Duration>) {
    match asked {
        Some(delay) => {
            let delay = delay.clamp(RECONNECT_MIN, RETRY_INFO_MAX);
            notice(&format!(
                "{}, as the service asked",
                retry_note(what, next, delay)
            ));
            tokio::time::sleep(delay).await;
        }
        None => {
            notice(&retry_note(what, next, backoff.peek()));
            backoff.wait().await;
        }
    }
}

/// `what; next in 87ms`. The delay is shown in whole milliseconds: with
/// jitter it is exact to the nanosecond, which nobody needs to read.
fn retry_note(what: &str, next: &str, delay: Duration) -> String {
    format!("{what}; {next} in {}", whole_millis(delay))
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

    /// The delays before jitter: 100 ms doubling, capped at 5 s.
    const BASES_MS: [u64; 9] = [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000];

    #[test]
    fn reconnect_delays_stay_within_the_policy_grow_and_reset() {
        // The jitter is random: look at many sequences.
        for _ in 0..200 {
            let mut backoff = reconnect_policy().stream();
            let delays: Vec<Duration> = BASES_MS.iter().map(|_| backoff.next_delay()).collect();
            for (delay, base) in delays.iter().zip(BASES_MS) {
                let base = Duration::from_millis(base);
                // At most the un-jittered delay, at most a quarter shorter.
                assert!(
                    *delay <= base && *delay >= base.mul_f64(0.75),
                    "{delay:?} for {base:?}"
                );
                assert!(*delay <= RECONNECT_MAX);
            }
            // Below the ceiling each delay is longer than the one before
            // (a doubled delay minus a quarter still beats the last one).
            for pair in delays[..7].windows(2) {
                assert!(pair[1] > pair[0], "{delays:?}");
            }
            assert_eq!(backoff.attempts(), 9);
            backoff.reset();
            assert_eq!(backoff.attempts(), 0);
            let first = backoff.peek();
            assert!(
                first <= RECONNECT_MIN && first >= RECONNECT_MIN.mul_f64(0.75),
                "{first:?}"
            );
            assert_eq!(backoff.next_delay(), first, "peek is what comes next");
        }
    }

    /// tokio's timer counts whole milliseconds, so a sleep ends on the
    /// first tick at or after its deadline.
    const TICK: Duration = Duration::from_millis(1);

    #[tokio::test(start_paused = true)]
    async fn each_pause_takes_the_announced_delay() {
        let waited = |before: Instant, delay: Duration| {
            let elapsed = before.elapsed();
            assert!(
                elapsed >= delay && elapsed < delay + TICK,
                "waited {elapsed:?}, announced {delay:?}"
            );
        };
        let mut backoff = reconnect_policy().stream();
        let mut announced = Duration::ZERO;
        for _ in 0..8 {
            let delay = backoff.peek();
            let before = Instant::now();
            pause(&mut backoff, "lost it", "reconnecting", None).await;
            waited(before, delay);
            announced += delay;
        }
        // 100 + 200 + 400 + 800 + 1600 + 3200 + 5000 + 5000 ms before
        // jitter, which takes off at most a quarter of each.
        let most = Duration::from_millis(16_300);
        assert!(
            announced <= most && announced >= most.mul_f64(0.75),
            "{announced:?}"
        );

        backoff.reset();
        let delay = backoff.peek();
        assert!(delay <= RECONNECT_MIN, "{delay:?}");
        let before = Instant::now();
        pause(&mut backoff, "lost it again", "reconnecting", None).await;
        waited(before, delay);

        // A delay the service asks for is taken as asked, within bounds, and
        // leaves the back-off where it was.
        let attempts = backoff.attempts();
        for (asked, expected) in [
            (Duration::from_millis(1500), Duration::from_millis(1500)),
            (Duration::ZERO, RECONNECT_MIN),
            (Duration::from_secs(86_400), RETRY_INFO_MAX),
        ] {
            let before = Instant::now();
            pause(&mut backoff, "rate limited", "retrying", Some(asked)).await;
            waited(before, expected);
        }
        assert_eq!(backoff.attempts(), attempts);
    }

    #[test]
    fn retry_notes_show_whole_milliseconds() {
        assert_eq!(
            retry_note("lost it", "reconnecting", Duration::from_nanos(87_654_321)),
            "lost it; reconnecting in 87ms"
        );
        assert_eq!(
            retry_note("refused", "retrying", Duration::from_nanos(3_217_900_000)),
            "refused; retrying in 3s 217ms"
        );
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
