//! Why a command failed, as one line for stderr and an exit status.
//!
//! gRPC statuses become errors here and only here, so every command words the
//! same failure the same way. The services explain refusals with
//! `google.rpc.ErrorInfo` details (domain `fastchat`, a stable reason such as
//! `TOKEN_EXPIRED`) and, for "try again later", a `google.rpc.RetryInfo`;
//! [`reason`] and [`retry_delay`] read them, and [`CliError::status`] turns
//! them into advice (which flag to set, when to retry).
//!
//! Exit statuses: 0 success, [`EXIT_FAILED`] (1) the request was refused or
//! failed, [`EXIT_USAGE`] (2) bad usage, including files named on the command
//! line that cannot be used, [`EXIT_UNAVAILABLE`] (69) a service is unreachable
//! or not serving, [`EXIT_TEMPFAIL`] (75) the service is rate limiting or out
//! of capacity for now, [`EXIT_NOPERM`] (77) no usable token, or the token does
//! not allow the request.

use std::{error::Error as StdError, fmt, io, time::Duration};

use fastchat_auth::reason as auth_reason;
use tonic::{Code, Status};
use tonic_types::StatusExt as _;

use crate::addr::{ServiceAddr, Target};

/// Exit status when the service refused or failed the request.
pub const EXIT_FAILED: u8 = 1;
/// Exit status for bad usage (what clap uses too).
pub const EXIT_USAGE: u8 = 2;
/// `EX_UNAVAILABLE` from sysexits.h: a service is unreachable or not serving.
pub const EXIT_UNAVAILABLE: u8 = 69;
/// `EX_TEMPFAIL` from sysexits.h: the service refused for now
/// (`RESOURCE_EXHAUSTED`: rate limited, too many subscriptions); try again
/// later.
pub const EXIT_TEMPFAIL: u8 = 75;
/// `EX_NOPERM` from sysexits.h: the service did not accept the caller
/// (`UNAUTHENTICATED`: no token, or an invalid or expired one) or the token
/// does not allow the request (`PERMISSION_DENIED`).
pub const EXIT_NOPERM: u8 = 77;

/// The `google.rpc.ErrorInfo` domain of FastChat's reasons.
pub const DOMAIN: &str = fastchat_auth::DOMAIN;
/// Reason: too many requests from this caller; a `RetryInfo` says when to
/// try again.
pub const RATE_LIMITED: &str = "RATE_LIMITED";
/// Reason: this caller has as many open subscriptions as it may.
pub const TOO_MANY_SUBSCRIPTIONS: &str = "TOO_MANY_SUBSCRIPTIONS";

/// Where a token is given, for advice.
const TOKEN_FLAGS: &str = "--token, --token-file or FASTCHAT_TOKEN";

/// What kind of failure, which decides the exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request was refused or failed (e.g. `INVALID_ARGUMENT`).
    Failed,
    /// The command line could not be used.
    Usage,
    /// A service could not be reached, timed out, or is not serving.
    Unavailable,
    /// The service is rate limiting or out of capacity: try again later.
    TryLater,
    /// No usable token, or the token does not allow the request.
    Denied,
    /// Our standard output went away (e.g. `fastchat tail | head`): not
    /// worth a message.
    OutputClosed,
    /// Writing our output failed otherwise.
    Output,
}

/// A failed command.
#[derive(Debug)]
pub struct CliError {
    kind: ErrorKind,
    message: String,
}

impl CliError {
    /// An error of `kind` with a one-line `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// `target` answered a call with `status`.
    pub fn status(target: Target, addr: &ServiceAddr, status: &Status) -> Self {
        let message = status.message().trim();
        let message = if message.is_empty() {
            status.code().description()
        } else {
            message
        };
        let reason = reason(status);
        let reason = reason.as_deref();
        let error = match status.code() {
            // The server's message starts with the field name, e.g.
            // "author: must not be empty or blank".
            Code::InvalidArgument => {
                Self::new(ErrorKind::Failed, format!("invalid input: {message}"))
            }
            Code::Unavailable => Self::new(
                ErrorKind::Unavailable,
                format!("{target} at {addr} is unavailable: {message}"),
            ),
            Code::DeadlineExceeded => Self::new(
                ErrorKind::Unavailable,
                format!("{target} at {addr} did not answer in time: {message}"),
            ),
            // Most likely the other service (or something else) listens
            // there: say which service was expected and where it usually is.
            Code::Unimplemented => Self::new(
                ErrorKind::Unavailable,
                format!(
                    "no {target} at {addr}: the server there answered UNIMPLEMENTED for {}; {}",
                    target.grpc_service(),
                    target.addr_hint(addr)
                ),
            ),
            Code::Unauthenticated => {
                let (what, hint) = match reason {
                    Some(auth_reason::TOKEN_MISSING) => (
                        "refused the request without a token",
                        format!("set {TOKEN_FLAGS}"),
                    ),
                    Some(auth_reason::TOKEN_EXPIRED) => (
                        "refused the token",
                        format!("get a fresh token and set {TOKEN_FLAGS}"),
                    ),
                    Some(auth_reason::TOKEN_INVALID) => {
                        ("refused the token", format!("check {TOKEN_FLAGS}"))
                    }
                    _ => (
                        "did not authenticate the request (UNAUTHENTICATED)",
                        format!("set {TOKEN_FLAGS}; a fresh token if it expired"),
                    ),
                };
                Self::new(ErrorKind::Denied, format!("{target} {what}: {message}")).with_hint(&hint)
            }
            Code::PermissionDenied => {
                let error = Self::new(
                    ErrorKind::Denied,
                    format!("{target} denied the request: {message}"),
                );
                if reason == Some(auth_reason::AUTHOR_MISMATCH) {
                    error.with_hint("leave out --author to send as the token's identity")
                } else {
                    error
                }
            }
            Code::ResourceExhausted => {
                let what = match reason {
                    Some(RATE_LIMITED) => "is limiting the rate of requests".to_owned(),
                    Some(TOO_MANY_SUBSCRIPTIONS) => {
                        "refused another subscription (TOO_MANY_SUBSCRIPTIONS)".to_owned()
                    }
                    _ => "refused the request for now (RESOURCE_EXHAUSTED)".to_owned(),
                };
                Self::new(ErrorKind::TryLater, format!("{target} {what}: {message}"))
            }
            code => Self::new(
                ErrorKind::Failed,
                format!(
                    "{target} failed the request ({}): {message}",
                    code_name(code)
                ),
            ),
        };
        match retry_delay(status) {
            Some(delay) => error.with_hint(&format!("retry in {}", whole_millis(delay))),
            None if status.code() == Code::ResourceExhausted => error.with_hint("retry later"),
            None => error,
        }
    }

    /// Writing to standard output failed.
    #[must_use]
    pub fn output(e: &io::Error) -> Self {
        if e.kind() == io::ErrorKind::BrokenPipe {
            Self::new(ErrorKind::OutputClosed, "standard output closed")
        } else {
            Self::new(ErrorKind::Output, format!("cannot write output: {e}"))
        }
    }

    /// The kind, which decides the exit status.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The process exit status for this error.
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        match self.kind {
            ErrorKind::Failed | ErrorKind::Output => EXIT_FAILED,
            ErrorKind::Usage => EXIT_USAGE,
            ErrorKind::Unavailable => EXIT_UNAVAILABLE,
            ErrorKind::TryLater => EXIT_TEMPFAIL,
            ErrorKind::Denied => EXIT_NOPERM,
            ErrorKind::OutputClosed => 0,
        }
    }

    /// Appends advice to the message.
    #[must_use]
    pub fn with_hint(mut self, hint: &str) -> Self {
        self.message.push_str(" (");
        self.message.push_str(hint);
        self.message.push(')');
        self
    }

    /// Replaces every occurrence of `secret` (a token) in the message, so a
    /// server that quotes what it was sent cannot make us print it.
    #[must_use]
    pub fn redact(mut self, secret: &str) -> Self {
        if !secret.is_empty() && self.message.contains(secret) {
            self.message = self.message.replace(secret, "<redacted>");
        }
        self
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for CliError {}

impl From<io::Error> for CliError {
    fn from(e: io::Error) -> Self {
        Self::output(&e)
    }
}

impl From<Unreachable> for CliError {
    fn from(e: Unreachable) -> Self {
        Self::new(ErrorKind::Unavailable, e.to_string())
    }
}

/// No connection to a service could be made: which service, where, and why,
/// kept apart so a caller that already names the service and address (such
/// as `health`) can show only the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreachable {
    target: Target,
    addr: ServiceAddr,
    reason: String,
}

impl Unreachable {
    /// `target` at `addr` could not be reached because of `cause`.
    #[must_use]
    pub fn new(target: Target, addr: &ServiceAddr, cause: &(dyn StdError + 'static)) -> Self {
        Self {
            target,
            addr: addr.clone(),
            reason: error_chain(cause),
        }
    }

    /// The service that could not be reached.
    #[must_use]
    pub fn target(&self) -> Target {
        self.target
    }

    /// Why, e.g. `tcp connect error: Connection refused (os error 111)`.
    #[must_use]
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Appends advice to the reason, e.g. which flag would help.
    #[must_use]
    pub fn with_hint(mut self, hint: &str) -> Self {
        self.reason.push_str(" (");
        self.reason.push_str(hint);
        self.reason.push(')');
        self
    }
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot reach {} at {}: {}",
            self.target, self.addr, self.reason
        )
    }
}

impl StdError for Unreachable {}

/// The reason of the status's `google.rpc.ErrorInfo` in FastChat's domain
/// (`TOKEN_EXPIRED`, `RATE_LIMITED`, …); `None` without one, or for
/// another domain's reason.
#[must_use]
pub fn reason(status: &Status) -> Option<String> {
    status
        .get_details_error_info()
        .filter(|info| info.domain == DOMAIN && !info.reason.is_empty())
        .map(|info| info.reason)
}

/// How long the service asks to wait before trying again: the status's
/// `google.rpc.RetryInfo`, if it has one.
#[must_use]
pub fn retry_delay(status: &Status) -> Option<Duration> {
    status.get_details_retry_info()?.retry_delay
}

/// `delay` as humantime text in whole milliseconds (`1s 500ms`, `87ms`):
/// finer is noise to a reader.
#[must_use]
pub fn whole_millis(delay: Duration) -> String {
    let millis = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
    humantime_serde::re::humantime::format_duration(Duration::from_millis(millis)).to_string()
}

/// Whether a subscription that ended with `code` is worth opening again:
/// connection trouble and server restarts are; a refused request is not.
#[must_use]
pub fn is_retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::Unknown
            | Code::Internal
            | Code::Cancelled
            | Code::Aborted
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
    )
}

pub use fastchat_proto::code_name;

/// `e` and its sources as one line.
#[must_use]
pub fn error_chain(e: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(e);
    while let Some(err) = current {
        current = err.source();
        // A tonic transport error's own text only names its kind ("transport
        // error"); when it has a source, that says what actually went wrong.
        if current.is_some() && err.downcast_ref::<tonic::transport::Error>().is_some() {
            continue;
        }
        let text = err.to_string();
        // Text on purpose: some errors print their source in their own
        // message and also return it from `source()`, and `std::error::Error`
        // has no way to ask which do. A cause an outer message already
        // contains would only repeat it.
        if !text.is_empty() && !parts.iter().any(|p| p.contains(text.as_str())) {
            parts.push(text);
        }
    }
    if parts.is_empty() {
        "unknown error".into()
    } else {
        parts.join(": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use tonic_types::ErrorDetails;

    fn addr() -> ServiceAddr {
        ServiceAddr::parse("127.0.0.1:1").expect("valid")
    }

    #[test]
    fn statuses_become_one_line_errors_with_exit_codes() {
        let e = CliError::status(
            Target::Send,
            &addr(),
            &Status::invalid_argument("author: must not be empty or blank"),
        );
        assert_eq!(
            e.to_string(),
            "invalid input: author: must not be empty or blank"
        );
        assert_eq!(e.exit_code(), EXIT_FAILED);

        let e = CliError::status(Target::All, &addr(), &Status::unavailable("broker down"));
        assert_eq!(
            e.to_string(),
            "all-messages-service at http://127.0.0.1:1 is unavailable: broker down"
        );
        assert_eq!(e.exit_code(), EXIT_UNAVAILABLE);

        let wrong = ServiceAddr::parse("127.0.0.1:50052").expect("valid");
        let e = CliError::status(Target::Send, &wrong, &Status::unimplemented(""));
        assert_eq!(
            e.to_string(),
            "no send-service at http://127.0.0.1:50052: the server there answered UNIMPLEMENTED \
             for fastchat.v1.SendMessageService; port 50052 is all-messages-service's default; \
             send-service listens on http://127.0.0.1:50051 by default; set --send-addr or \
             FASTCHAT_SEND_ADDR"
        );
        assert_eq!(e.exit_code(), EXIT_UNAVAILABLE);

        let e = CliError::status(Target::Send, &addr(), &Status::internal(""));
        assert_eq!(
            e.to_string(),
            "send-service failed the request (INTERNAL): Internal error"
        );
    }

    /// A status as the services send it: `code`, `message`, an ErrorInfo
    /// with `reason` in FastChat's domain, and a RetryInfo if `retry`.
    fn refusal(code: Code, message: &str, reason: &str, retry: Option<Duration>) -> Status {
        let mut details = ErrorDetails::with_error_info(reason, DOMAIN, HashMap::new());
        if retry.is_some() {
            details.set_retry_info(retry);
        }
        Status::with_error_details(code, message, details)
    }

    #[test]
    fn unauthenticated_says_which_flag_to_set_and_exits_77() {
        let cases = [
            (
                auth_reason::TOKEN_MISSING,
                "read on room `general` needs a token",
                "all-messages-service refused the request without a token: read on room \
                 `general` needs a token (set --token, --token-file or FASTCHAT_TOKEN)",
            ),
            (
                auth_reason::TOKEN_EXPIRED,
                "the token expired at 2026-01-01T00:00:00Z; get a new one",
                "all-messages-service refused the token: the token expired at \
                 2026-01-01T00:00:00Z; get a new one (get a fresh token and set --token, \
                 --token-file or FASTCHAT_TOKEN)",
            ),
            (
                auth_reason::TOKEN_INVALID,
                "the token's signature does not verify",
                "all-messages-service refused the token: the token's signature does not \
                 verify (check --token, --token-file or FASTCHAT_TOKEN)",
            ),
        ];
        for (reason_name, message, expected) in cases {
            let status = refusal(Code::Unauthenticated, message, reason_name, None);
            assert_eq!(reason(&status).as_deref(), Some(reason_name));
            let e = CliError::status(Target::All, &addr(), &status);
            assert_eq!(e.to_string(), expected);
            assert_eq!((e.kind(), e.exit_code()), (ErrorKind::Denied, EXIT_NOPERM));
        }
        // Without details (another server, an older one): still the hint.
        let e = CliError::status(Target::Send, &addr(), &Status::unauthenticated("no"));
        assert_eq!(
            e.to_string(),
            "send-service did not authenticate the request (UNAUTHENTICATED): no (set \
             --token, --token-file or FASTCHAT_TOKEN; a fresh token if it expired)"
        );
        assert_eq!(e.exit_code(), EXIT_NOPERM);
        // A reason of another domain is not ours to interpret.
        let foreign = Status::with_error_details(
            Code::Unauthenticated,
            "no",
            ErrorDetails::with_error_info(
                auth_reason::TOKEN_EXPIRED,
                "example.com",
                HashMap::new(),
            ),
        );
        assert_eq!(reason(&foreign), None);
    }

    #[test]
    fn permission_denied_shows_the_servers_message_and_exits_77() {
        let status = refusal(
            Code::PermissionDenied,
            "write on room `secret` is denied by the token's grant `secret=`",
            auth_reason::ROOM_FORBIDDEN,
            None,
        );
        let e = CliError::status(Target::Send, &addr(), &status);
        assert_eq!(
            e.to_string(),
            "send-service denied the request: write on room `secret` is denied by the \
             token's grant `secret=`"
        );
        assert_eq!(e.exit_code(), EXIT_NOPERM);

        let status = refusal(
            Code::PermissionDenied,
            "the author `bob` is not this token's identity `ann`: send `ann` or leave the author empty",
            auth_reason::AUTHOR_MISMATCH,
            None,
        );
        let e = CliError::status(Target::Send, &addr(), &status);
        assert!(
            e.to_string()
                .ends_with("(leave out --author to send as the token's identity)"),
            "{e}"
        );
        assert_eq!(e.exit_code(), EXIT_NOPERM);
    }

    #[test]
    fn resource_exhausted_says_when_to_retry_and_exits_75() {
        let status = refusal(
            Code::ResourceExhausted,
            "too many messages from ann",
            RATE_LIMITED,
            Some(Duration::from_millis(1500)),
        );
        assert_eq!(retry_delay(&status), Some(Duration::from_millis(1500)));
        let e = CliError::status(Target::Send, &addr(), &status);
        assert_eq!(
            e.to_string(),
            "send-service is limiting the rate of requests: too many messages from ann \
             (retry in 1s 500ms)"
        );
        assert_eq!(
            (e.kind(), e.exit_code()),
            (ErrorKind::TryLater, EXIT_TEMPFAIL)
        );

        let status = refusal(
            Code::ResourceExhausted,
            "ann has 8 subscriptions open, the most allowed",
            TOO_MANY_SUBSCRIPTIONS,
            None,
        );
        let e = CliError::status(Target::All, &addr(), &status);
        assert_eq!(
            e.to_string(),
            "all-messages-service refused another subscription (TOO_MANY_SUBSCRIPTIONS): \
             ann has 8 subscriptions open, the most allowed (retry later)"
        );
        assert_eq!(e.exit_code(), EXIT_TEMPFAIL);
        assert!(is_retryable(status.code()));

        // UNAVAILABLE with a RetryInfo: the delay is advice too.
        let status = Status::with_error_details(
            Code::Unavailable,
            "draining",
            ErrorDetails::with_retry_info(Some(Duration::from_secs(2))),
        );
        assert_eq!(retry_delay(&status), Some(Duration::from_secs(2)));
        assert_eq!(reason(&status), None);
        let e = CliError::status(Target::All, &addr(), &status);
        assert_eq!(
            e.to_string(),
            "all-messages-service at http://127.0.0.1:1 is unavailable: draining (retry in 2s)"
        );
        assert_eq!(retry_delay(&Status::unavailable("x")), None);
    }

    #[test]
    fn tokens_quoted_by_a_server_are_redacted() {
        let status = refusal(
            Code::Unauthenticated,
            "the token is not a JWT: eyJ.abc",
            auth_reason::TOKEN_INVALID,
            None,
        );
        let e = CliError::status(Target::All, &addr(), &status).redact("eyJ.abc");
        assert!(!e.to_string().contains("eyJ.abc"), "{e}");
        assert!(e.to_string().contains("not a JWT: <redacted>"), "{e}");
        assert_eq!(e.exit_code(), EXIT_NOPERM);
        let e = CliError::new(ErrorKind::Failed, "nothing").redact("");
        assert_eq!(e.to_string(), "nothing");
    }

    #[test]
    fn io_errors_on_output() {
        let closed = CliError::output(&io::Error::from(io::ErrorKind::BrokenPipe));
        assert_eq!(
            (closed.kind(), closed.exit_code()),
            (ErrorKind::OutputClosed, 0)
        );
        let other = CliError::output(&io::Error::other("disk full"));
        assert_eq!(other.exit_code(), EXIT_FAILED);
    }

    #[test]
    fn error_chains_skip_repeats() {
        #[derive(Debug)]
        struct Outer(io::Error);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("tcp connect error")
            }
        }
        impl StdError for Outer {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(io::Error::new(io::ErrorKind::ConnectionRefused, "refused"));
        assert_eq!(error_chain(&e), "tcp connect error: refused");
    }

    #[tokio::test]
    async fn transport_errors_give_way_to_their_cause() {
        // Nothing listens on port 1 of the loopback interface.
        let e = tonic::transport::Endpoint::from_static("http://127.0.0.1:1")
            .connect()
            .await
            .expect_err("refused");
        assert!(e.source().is_some(), "{e:?}");
        let chain = error_chain(&e);
        assert!(!chain.contains("transport error"), "{chain}");
        assert!(chain.starts_with("tcp connect error: "), "{chain}");
    }

    #[test]
    fn unreachable_keeps_its_parts() {
        let cause = io::Error::new(io::ErrorKind::ConnectionRefused, "refused");
        let e = Unreachable::new(Target::All, &addr(), &cause);
        assert_eq!(e.target(), Target::All);
        assert_eq!(e.reason(), "refused");
        let e = CliError::from(e);
        assert_eq!(
            e.to_string(),
            "cannot reach all-messages-service at http://127.0.0.1:1: refused"
        );
        assert_eq!(e.exit_code(), EXIT_UNAVAILABLE);
    }

    #[test]
    fn only_connection_trouble_is_retried() {
        assert!(is_retryable(Code::Unavailable));
        assert!(is_retryable(Code::Unknown));
        assert!(!is_retryable(Code::InvalidArgument));
        assert!(!is_retryable(Code::Unauthenticated));
        assert!(!is_retryable(Code::PermissionDenied));
        assert!(!is_retryable(Code::Unimplemented));
    }
}
