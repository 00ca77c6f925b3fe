//! The command line: clap definitions, help text, and the parsers that turn
//! addresses, durations, times and grants into values the commands can use
//! as is.

use std::{
    fmt,
    path::PathBuf,
    time::{Duration, SystemTime},
};

use clap::{
    ArgGroup, ArgMatches, Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand,
    parser::ValueSource,
};
use fastchat_auth::{Grant, parse_grants};
use fastchat_proto::prost_types::Timestamp;
use humantime_serde::re::humantime;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use crate::{
    addr::{ALL_ADDR_ENV, DEFAULT_ALL_ADDR, DEFAULT_SEND_ADDR, SEND_ADDR_ENV, ServiceAddr},
    connect::{CA_FILE_ENV, CERT_FILE_ENV, KEY_FILE_ENV, TOKEN_ENV},
};

const EXAMPLES: &str = "\
Examples:
  fastchat send --author ann \"hello\"
  export FASTCHAT_TOKEN=$(fastchat token --secret-file hmac.key --sub ann --rooms '*=read,write')
  fastchat send \"hello as ann\"       # the service takes the author from the token
  fastchat --send-addr https://chat.example:443 --ca-file ca.pem send \"over TLS\"
  fastchat send --room dev --author bob --id retry-1 \"deploy done\"
  fastchat tail                      # every room: all retained messages, then live
  fastchat tail --room dev --last 20
  fastchat tail --all --since 10m    # also: --since 2025-01-31T12:00:00Z
  fastchat history --room dev --limit 10
  fastchat history --room dev --before 120
  fastchat --json tail --new | jq .text
  FASTCHAT_ALL_ADDR=chat.internal:50052 fastchat health

Tokens: --token or FASTCHAT_TOKEN, or --token-file FILE (not visible in `ps`;
on the command line it wins over FASTCHAT_TOKEN) is sent as `authorization: Bearer
<token>` with send, tail and history (not health). It is never printed.

TLS: https:// addresses use TLS, trusting the system's CA certificates, or only
those of --ca-file; --cert-file and --key-file add a client certificate (mutual
TLS). http:// and bare host:port addresses are plaintext.

Exit status: 0 success, 1 the service refused or failed the request,
2 bad usage (also: a file given cannot be used), 69 a service is unreachable or
not serving, 75 the service is rate limiting or at capacity (try again later),
77 no usable token, or the token does not allow it (UNAUTHENTICATED,
PERMISSION_DENIED).";

/// `fastchat`: try FastChat from a terminal.
#[derive(Debug, Parser)]
#[command(
    name = "fastchat",
    version,
    about = "Command-line client for FastChat: send, tail, page history, check health",
    after_help = EXAMPLES
)]
pub struct Cli {
    /// send-service address (`http://host:port` or `host:port`; `https://host:port` for TLS).
    #[arg(
        long,
        global = true,
        env = SEND_ADDR_ENV,
        default_value = DEFAULT_SEND_ADDR,
        value_parser = ServiceAddr::parse,
        value_name = "ADDR"
    )]
    pub send_addr: ServiceAddr,

    /// all-messages-service address (`http://host:port` or `host:port`; `https://host:port` for TLS).
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

    /// Bearer token sent with send, tail and history.
    #[arg(
        long,
        global = true,
        env = TOKEN_ENV,
        hide_env_values = true,
        value_parser = Token::parse,
        value_name = "TOKEN"
    )]
    pub token: Option<Token>,

    /// Read the bearer token from FILE (surrounding whitespace ignored);
    /// instead of --token, and preferred to it: argv is visible to others.
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// For https:// addresses: trust the CA certificates in FILE (PEM)
    /// instead of the system's.
    #[arg(long, global = true, env = CA_FILE_ENV, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,

    /// For https:// addresses: present this client certificate (PEM, with
    /// its chain) to services that require mutual TLS; needs --key-file.
    #[arg(
        long,
        global = true,
        env = CERT_FILE_ENV,
        requires = "key_file",
        value_name = "FILE"
    )]
    pub cert_file: Option<PathBuf>,

    /// The private key (PEM) of --cert-file.
    #[arg(
        long,
        global = true,
        env = KEY_FILE_ENV,
        requires = "cert_file",
        value_name = "FILE"
    )]
    pub key_file: Option<PathBuf>,

    /// Whether `token` came from `FASTCHAT_TOKEN` rather than `--token`
    /// (set by [`Cli::from_matches`]): a `--token-file` then wins over it,
    /// while `--token` with `--token-file` is a usage error.
    #[arg(skip)]
    pub token_from_env: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses the process's arguments (and environment); prints help,
    /// version or a usage error and exits as clap does.
    #[must_use]
    pub fn parse_process_args() -> Self {
        let matches = Self::command().get_matches();
        Self::from_matches(&matches).unwrap_or_else(|e| e.exit())
    }

    /// The command line `matches` describe, knowing where the token came
    /// from.
    ///
    /// # Errors
    /// clap's, should `matches` not be of [`Cli`]'s command.
    pub fn from_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut cli = Self::from_arg_matches(matches)?;
        cli.token_from_env = matches.value_source("token") == Some(ValueSource::EnvVariable);
        Ok(cli)
    }
}

/// A bearer token as given on the command line or in `FASTCHAT_TOKEN`;
/// checked when used ([`Bearer::new`](crate::connect::Bearer::new)), so that
/// no parse error of clap's can quote it. `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(pub String);

impl Token {
    /// Takes any text: see the type's documentation.
    ///
    /// # Errors
    /// Never.
    pub fn parse(s: &str) -> Result<Self, std::convert::Infallible> {
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
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

    /// Print a development token (HS256, signed with the service's HMAC secret).
    #[command(after_help = "\
Examples:
  export FASTCHAT_TOKEN=$(fastchat token --secret-file hmac.key --sub ann)
  fastchat token --secret-file hmac.key --sub ann --rooms 'general,team-*=read,write;*=read' --ttl 8h
  fastchat token --secret-file hmac.key --sub ann --issuer fastchat-dev --audience fastchat

Prints only the token and a newline on stdout (with --json too). --secret-file
is read as the service reads auth.jwt.hmac_secret_file (one trailing newline
dropped); --issuer, --audience and --user-claim must match its auth.jwt.issuer,
auth.jwt.audience and auth.jwt.user_claim. --rooms grants PATTERNS=OPERATIONS,
several separated by ';' (the first matching grant decides; 'secret=' denies);
without it the token has no rooms claim and the service's auth.authenticated
grants apply.

For development and tests only: whoever can read the secret file can sign any
token for anyone. Production tokens come from an identity provider.")]
    Token(TokenArgs),

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

    /// Author name; with a token, a service that checks tokens takes it from
    /// the token (and refuses another).
    #[arg(long, value_name = "NAME")]
    pub author: Option<String>,

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

/// `fastchat token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The service's HMAC secret (its auth.jwt.hmac_secret_file).
    #[arg(long, value_name = "FILE")]
    pub secret_file: PathBuf,

    /// The identity the token is for.
    #[arg(long, value_name = "NAME")]
    pub sub: String,

    /// Room grants, e.g. `general,team-*=read,write;*=read`.
    #[arg(long, value_name = "GRANTS", value_parser = parse_rooms)]
    pub rooms: Option<Grants>,

    /// How long the token is valid.
    #[arg(long, default_value = "1h", value_parser = parse_duration, value_name = "DURATION")]
    pub ttl: Duration,

    /// `iss`, for a service with auth.jwt.issuer.
    #[arg(long, value_name = "ISSUER")]
    pub issuer: Option<String>,

    /// `aud`, for a service with auth.jwt.audience.
    #[arg(long, value_name = "AUDIENCE")]
    pub audience: Option<String>,

    /// The claim that holds the identity (the service's auth.jwt.user_claim).
    #[arg(long, default_value = "sub", value_name = "CLAIM")]
    pub user_claim: String,
}

/// The grants of `--rooms`, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grants(pub Vec<Grant>);

/// Parses `--rooms`: `PATTERNS=OPERATIONS` grants separated by `;`.
///
/// # Errors
/// fastchat-auth's message naming the grant and what is wrong with it.
pub fn parse_rooms(s: &str) -> Result<Grants, String> {
    parse_grants(s).map(Grants).map_err(|e| e.to_string())
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
    fn the_token_is_global_hidden_in_help_and_not_checked_by_clap() {
        let cli = Cli::try_parse_from(["fastchat", "tail", "--token", "a b\u{7}"])
            .expect("any text parses; Bearer::new checks it");
        assert_eq!(cli.token, Some(Token("a b\u{7}".into())));
        assert!(!cli.token_from_env);
        assert_eq!(format!("{:?}", cli.token), "Some(Token(<redacted>))");
        let command = Cli::command();
        let token = command
            .get_arguments()
            .find(|a| a.get_id() == "token")
            .expect("--token");
        assert!(token.is_hide_env_values_set());
        assert_eq!(token.get_env().and_then(|e| e.to_str()), Some(TOKEN_ENV));
        assert!(token.is_global_set());
        let help = Cli::command().render_long_help().to_string();
        for needed in [
            "--token-file",
            "--ca-file",
            "--cert-file",
            "--key-file",
            "77",
            "75",
        ] {
            assert!(help.contains(needed), "{needed} in {help}");
        }
    }

    #[test]
    fn a_client_certificate_needs_its_key() {
        let err = Cli::try_parse_from(["fastchat", "--cert-file", "c.pem", "health"])
            .expect_err("no key");
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let err = Cli::try_parse_from(["fastchat", "--key-file", "k.pem", "health"])
            .expect_err("no certificate");
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let cli = Cli::try_parse_from([
            "fastchat",
            "health",
            "--ca-file",
            "ca.pem",
            "--cert-file",
            "c.pem",
            "--key-file",
            "k.pem",
        ])
        .expect("both");
        assert_eq!(cli.ca_file.as_deref(), Some(std::path::Path::new("ca.pem")));
        assert!(cli.cert_file.is_some() && cli.key_file.is_some());
    }

    #[test]
    fn the_author_is_optional() {
        let cli = Cli::try_parse_from(["fastchat", "send", "hi"]).expect("parses");
        let Command::Send(send) = cli.command else {
            panic!("send expected");
        };
        assert_eq!(send.author, None);
        let err =
            Cli::try_parse_from(["fastchat", "send", "--author", "ann"]).expect_err("no text");
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn rooms_take_several_grants() {
        let grants = parse_rooms("general,team-*=read,write;*=read").expect("grants");
        assert_eq!(grants.0.len(), 2);
        assert_eq!(
            fastchat_auth::format_grants(&grants.0),
            "general,team-*=read,write;*=read"
        );
        assert!(parse_rooms("general").is_err());
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
