//! The command line: clap definitions, help text, and the parsers that turn
//! addresses, durations and times into values the commands can use as is.

use std::time::{Duration, SystemTime};

use clap::{ArgGroup, Args, Parser, Subcommand};
use fastchat_proto::prost_types::Timestamp;
use humantime_serde::re::humantime;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use crate::addr::{ALL_ADDR_ENV, DEFAULT_ALL_ADDR, DEFAULT_SEND_ADDR, SEND_ADDR_ENV, ServiceAddr};

const EXAMPLES: &str = "\
Examples:
  fastchat send --author ann \"hello\"
  fastchat send --room dev --author bob --id retry-1 \"deploy done\"
  fastchat tail                      # every room: all retained messages, then live
  fastchat tail --room dev --last 20
  fastchat tail --all --since 10m    # also: --since 2025-01-31T12:00:00Z
  fastchat history --room dev --limit 10
  fastchat history --room dev --before 120
  fastchat --json tail --new | jq .text
  FASTCHAT_ALL_ADDR=chat.internal:50052 fastchat health

Exit status: 0 success, 1 the service refused or failed the request,
2 bad usage, 69 a service is unreachable or not serving.";

/// `fastchat`: try FastChat from a terminal.
#[derive(Debug, Parser)]
#[command(
    name = "fastchat",
    version,
    about = "Command-line client for FastChat: send, tail, page history, check health",
    after_help = EXAMPLES
)]
pub struct Cli {
    /// send-service address (`http://host:port` or `host:port`).
    #[arg(
        long,
        global = true,
        env = SEND_ADDR_ENV,
        default_value = DEFAULT_SEND_ADDR,
        value_parser = ServiceAddr::parse,
        value_name = "ADDR"
    )]
    pub send_addr: ServiceAddr,

    /// all-messages-service address (`http://host:port` or `host:port`).
    #[arg(
        long,
        global = true,
        env = ALL_ADDR_ENV,
        default_value = DEFAULT_ALL_ADDR,
        value_parser = ServiceAddr::parse,
        value_name = "ADDR"
    )]
    pub all_addr: ServiceAddr,

    /// Print one JSON object per line instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    /// Limit for connecting and for each request/answer (`tail` streams are not
    /// limited, only their connecting).
    #[arg(
        long,
        global = true,
        default_value = "10s",
        value_parser = parse_duration,
        value_name = "DURATION"
    )]
    pub timeout: Duration,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send one message; prints its sequence and id.
    #[command(after_help = "\
Examples:
  fastchat send --author ann hello everyone
  fastchat send --room dev --author bob --id deploy-42 \"deploy done\"

A retry with the same --id (and author and room) within the station's duplicate
window is stored once and reported as a duplicate of the first.")]
    Send(SendArgs),

    /// Print messages as they arrive (history first, as asked), reconnecting by itself.
    #[command(after_help = "\
Examples:
  fastchat tail                       # every room, every retained message, then live
  fastchat tail --room dev --after 41 # resume after sequence 41
  fastchat tail --room dev --last 20
  fastchat tail --since 2025-01-31T12:00:00Z
  fastchat tail --since 15m           # the last 15 minutes
  fastchat tail --new

When the connection is lost, tail reconnects with back-off (100 ms doubling to
5 s, each delay up to a quarter shorter at random) and resumes after the last
sequence it printed, so no message is printed twice. Ctrl-C ends it with exit
status 0.")]
    Tail(TailArgs),

    /// Print one page of a room's history, oldest first.
    #[command(after_help = "\
Examples:
  fastchat history --room general
  fastchat history --room general --limit 10 --before 120

When older messages exist, the last line names the --before value for the next page.")]
    History(HistoryArgs),

    /// Check the gRPC health of both services.
    #[command(after_help = "\
Examples:
  fastchat health
  fastchat --send-addr 10.0.0.5:50051 --all-addr 10.0.0.6:50052 health

Each service is asked about its own gRPC service (fastchat.v1.SendMessageService,
fastchat.v1.AllMessagesService), so an address of the wrong service shows as
missing. Exit status 0 only when both services are SERVING.")]
    Health,
}

/// `fastchat send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Room (1-64 of A-Z a-z 0-9 _ -); the service's default room `general` if not given.
    #[arg(long, value_name = "ROOM")]
    pub room: Option<String>,

    /// Author name.
    #[arg(long, value_name = "NAME")]
    pub author: String,

    /// Idempotency key: a retry with the same key is stored once.
    #[arg(long, value_name = "KEY")]
    pub id: Option<String>,

    /// Client time in milliseconds since the Unix epoch, stored as given.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub time_ms: Option<i64>,

    /// Message text; several words are joined with spaces.
    #[arg(required = true, num_args = 1.., value_name = "TEXT")]
    pub text: Vec<String>,
}

/// `fastchat tail`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("rooms").args(["room", "all"])))]
#[command(group(ArgGroup::new("start").args(["after", "since", "last", "new"])))]
pub struct TailArgs {
    /// Only this room.
    #[arg(long, value_name = "ROOM")]
    pub room: Option<String>,

    /// Every room (the default).
    #[arg(long)]
    pub all: bool,

    /// Start after this sequence (resume).
    #[arg(long, value_name = "SEQ")]
    pub after: Option<u64>,

    /// Start at this time: RFC 3339 (`2025-01-31T12:00:00Z`) or a duration ago (`10m`, `2h`).
    #[arg(long, value_name = "TIME", value_parser = parse_since)]
    pub since: Option<Timestamp>,

    /// Start with the last N messages.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub last: Option<u32>,

    /// Only messages stored from now on.
    #[arg(long)]
    pub new: bool,
}

/// `fastchat history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Room to page through.
    #[arg(long, value_name = "ROOM")]
    pub room: String,

    /// Only messages with a sequence below this (default: from the newest).
    #[arg(long, value_name = "SEQ")]
    pub before: Option<u64>,

    /// Page size (the service's default is 50; at most 1000).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: Option<u32>,
}

/// Parses `500ms`, `5s`, `2m`, ….
///
/// # Errors
/// A message for clap when `s` is not a duration.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (expected e.g. 500ms, 5s, 2m)"))
}

/// Parses `--since`: an RFC 3339 time, or a duration meaning that long ago.
///
/// # Errors
/// A message for clap naming both accepted forms.
pub fn parse_since(s: &str) -> Result<Timestamp, String> {
    parse_since_at(s, SystemTime::now())
}

/// [`parse_since`] with an explicit "now", for tests.
///
/// # Errors
/// As [`parse_since`].
pub fn parse_since_at(s: &str, now: SystemTime) -> Result<Timestamp, String> {
    let s = s.trim();
    if let Ok(at) = OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(Timestamp {
            seconds: at.unix_timestamp(),
            nanos: i32::try_from(at.nanosecond()).unwrap_or(0),
        });
    }
    if let Ok(ago) = humantime::parse_duration(s) {
        let at = now
            .checked_sub(ago)
            .ok_or_else(|| format!("{s} ago is too far in the past"))?;
        return Ok(Timestamp::from(at));
    }
    Err(format!(
        "'{s}' is neither an RFC 3339 time (2025-01-31T12:00:00Z) nor a duration (10m, 2h)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::Target;
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn address_flags_variables_and_defaults_are_those_of_addr() {
        let command = Cli::command();
        for (id, target) in [("send_addr", Target::Send), ("all_addr", Target::All)] {
            let arg = command
                .get_arguments()
                .find(|a| a.get_id() == id)
                .expect("address argument");
            let long = arg.get_long().map(|l| format!("--{l}"));
            assert_eq!(long.as_deref(), Some(target.flag()));
            assert_eq!(arg.get_env().and_then(|e| e.to_str()), Some(target.env()));
            let defaults: Vec<_> = arg.get_default_values().iter().collect();
            assert_eq!(defaults, [target.default_addr()]);
        }
    }

    #[test]
    fn since_accepts_rfc3339_with_offsets_and_durations_ago() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let t = parse_since_at("2023-11-14T22:13:20Z", now).expect("rfc3339");
        assert_eq!((t.seconds, t.nanos), (1_700_000_000, 0));
        let t = parse_since_at("2023-11-14T23:13:20.5+01:00", now).expect("offset");
        assert_eq!((t.seconds, t.nanos), (1_700_000_000, 500_000_000));
        let t = parse_since_at("10m", now).expect("duration");
        assert_eq!((t.seconds, t.nanos), (1_700_000_000 - 600, 0));
        let err = parse_since_at("yesterday", now).expect_err("refused");
        assert!(
            err.contains("RFC 3339") && err.contains("duration"),
            "{err}"
        );
    }

    #[test]
    fn start_options_exclude_each_other() {
        let err = Cli::try_parse_from(["fastchat", "tail", "--after", "3", "--new"])
            .expect_err("two starts");
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
        let err = Cli::try_parse_from(["fastchat", "tail", "--room", "dev", "--all"])
            .expect_err("room and all");
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn globals_go_before_or_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "fastchat",
            "send",
            "--author",
            "ann",
            "hello",
            "world",
            "--json",
            "--send-addr",
            "localhost:6000",
        ])
        .expect("parses");
        assert!(cli.json);
        assert_eq!(cli.send_addr.as_str(), "http://localhost:6000");
        let Command::Send(send) = cli.command else {
            panic!("send expected");
        };
        assert_eq!(send.text, ["hello", "world"]);
    }

    #[test]
    fn limits_are_checked_before_calling() {
        let err = Cli::try_parse_from(["fastchat", "history", "--room", "a", "--limit", "0"])
            .expect_err("limit 0");
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
        let err = Cli::try_parse_from(["fastchat", "history", "--room", "a", "--limit", "1001"])
            .expect_err("limit too large");
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
    }
}
