//! Why a command failed, as one line for stderr and an exit status.
//!
//! gRPC statuses become errors here and only here, so every command words the
//! same failure the same way.

use std::{error::Error as StdError, fmt, io};

use tonic::{Code, Status};

use crate::addr::{ServiceAddr, Target};

/// Exit status when the service refused or failed the request.
pub const EXIT_FAILED: u8 = 1;
/// Exit status for bad usage (what clap uses too).
pub const EXIT_USAGE: u8 = 2;
/// `EX_UNAVAILABLE` from sysexits.h: a service is unreachable or not serving.
pub const EXIT_UNAVAILABLE: u8 = 69;

/// What kind of failure, which decides the exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request was refused or failed (e.g. `INVALID_ARGUMENT`).
    Failed,
    /// The command line could not be used.
    Usage,
    /// A service could not be reached, timed out, or is not serving.
    Unavailable,
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
        match status.code() {
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
            code => Self::new(
                ErrorKind::Failed,
                format!(
                    "{target} failed the request ({}): {message}",
                    code_name(code)
                ),
            ),
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

/// The gRPC name of a status code, e.g. `INVALID_ARGUMENT`.
#[must_use]
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

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
        assert!(!is_retryable(Code::Unimplemented));
    }
}
