//! Structured gRPC statuses: every status FastChat sends carries a
//! `google.rpc.ErrorInfo` (domain `fastchat`) whose `reason` tells clients
//! what happened without parsing text, plus a `google.rpc.BadRequest` for
//! field errors and a `google.rpc.RetryInfo` where waiting helps. The
//! reasons are documented in `proto/fastchat/v1/chat.proto` and the README.

use std::{collections::HashMap, time::Duration};

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

/// The ErrorInfo domain of every FastChat status.
pub const DOMAIN: &str = fastchat_auth::DOMAIN;

/// ErrorInfo reasons (beyond the authentication ones of
/// [`fastchat_auth::reason`]).
pub mod reason {
    /// INVALID_ARGUMENT: a field breaks a rule (see the BadRequest detail).
    pub const INVALID_FIELD: &str = "INVALID_FIELD";
    /// INVALID_ARGUMENT: `after_sequence` is beyond the newest stored message.
    pub const BEYOND_NEWEST: &str = "BEYOND_NEWEST";
    /// UNAVAILABLE: the broker cannot be used right now.
    pub const BROKER_UNAVAILABLE: &str = "BROKER_UNAVAILABLE";
    /// UNAVAILABLE: the server is shutting down.
    pub const SHUTTING_DOWN: &str = "SHUTTING_DOWN";
    /// RESOURCE_EXHAUSTED: too many calls for the caller's identity.
    pub const RATE_LIMITED: &str = "RATE_LIMITED";
    /// RESOURCE_EXHAUSTED: a subscription cap (metadata `limit` names it).
    pub const TOO_MANY_SUBSCRIPTIONS: &str = "TOO_MANY_SUBSCRIPTIONS";
    /// RESOURCE_EXHAUSTED: no history read slot within the queue time.
    pub const HISTORY_BUSY: &str = "HISTORY_BUSY";
    /// RESOURCE_EXHAUSTED: a subscriber read nothing for the stall timeout.
    pub const SUBSCRIBER_STALLED: &str = "SUBSCRIBER_STALLED";
    /// RESOURCE_EXHAUSTED: the broker's store is full.
    pub const STORE_FULL: &str = "STORE_FULL";
    /// RESOURCE_EXHAUSTED: the broker is at a limit (e.g. consumers).
    pub const BROKER_BUSY: &str = "BROKER_BUSY";
    /// RESOURCE_EXHAUSTED: a request message over `grpc.max_request_bytes`.
    pub const REQUEST_TOO_LARGE: &str = "REQUEST_TOO_LARGE";
    /// RESOURCE_EXHAUSTED: too many health Watch streams.
    pub const TOO_MANY_WATCHES: &str = "TOO_MANY_WATCHES";
    /// DEADLINE_EXCEEDED: the request body did not arrive in time.
    pub const REQUEST_BODY_TIMEOUT: &str = "REQUEST_BODY_TIMEOUT";
    /// INTERNAL: anything else (logged, not described).
    pub const INTERNAL: &str = "INTERNAL";
}

/// A status being built: code, message, reason, and optional details.
#[derive(Debug)]
#[must_use]
pub struct Problem {
    code: Code,
    message: String,
    reason: &'static str,
    metadata: HashMap<String, String>,
    retry_after: Option<Duration>,
    violations: Vec<(String, String)>,
}

impl Problem {
    /// A status with `code`, ErrorInfo `reason` and a `message` a person can
    /// act on.
    pub fn new(code: Code, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            reason,
            metadata: HashMap::new(),
            retry_after: None,
            violations: Vec::new(),
        }
    }

    /// An ErrorInfo metadata entry.
    pub fn meta(mut self, key: &str, value: impl ToString) -> Self {
        self.metadata.insert(key.to_owned(), value.to_string());
        self
    }

    /// A RetryInfo: retrying before `delay` will not help.
    pub fn retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }

    /// Says in the message, too, where a stream should resume (unless it
    /// already does): the metadata is for programs, this for people.
    pub fn resume_hint(mut self, cursor: u64) -> Self {
        if !self.message.contains("after_sequence") {
            self.message = format!(
                "{}; resubscribe with after_sequence = {cursor}",
                self.message
            );
        }
        self
    }

    /// A BadRequest field violation.
    pub fn field(mut self, field: &str, description: impl Into<String>) -> Self {
        self.violations.push((field.to_owned(), description.into()));
        self
    }

    /// The status.
    #[must_use]
    pub fn status(self) -> Status {
        let mut details = ErrorDetails::new();
        details.set_error_info(self.reason, DOMAIN, self.metadata);
        if let Some(delay) = self.retry_after {
            details.set_retry_info(Some(delay));
        }
        for (field, description) in self.violations {
            details.add_bad_request_violation(field, description);
        }
        Status::with_error_details(self.code, self.message, details)
    }
}

impl From<Problem> for Status {
    fn from(problem: Problem) -> Self {
        problem.status()
    }
}

/// An authentication or authorization failure as a status, counted in
/// `fastchat_auth_failures_total{reason}`.
pub fn auth(error: &fastchat_auth::AuthError) -> Problem {
    let code = match error.code() {
        fastchat_auth::Code::Unauthenticated => Code::Unauthenticated,
        fastchat_auth::Code::PermissionDenied => Code::PermissionDenied,
    };
    metrics::counter!("fastchat_auth_failures_total", "reason" => error.reason()).increment(1);
    error.metadata().into_iter().fold(
        Problem::new(code, error.reason(), error.to_string()),
        |p, (k, v)| p.meta(k, v),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_carries_its_reason_retry_and_violations() {
        let status = Problem::new(Code::ResourceExhausted, reason::RATE_LIMITED, "slow down")
            .meta("limit", "limits.send_per_second")
            .retry_after(Duration::from_millis(1500))
            .field("text", "too long")
            .status();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(status.message(), "slow down");
        let info = status.get_details_error_info().expect("ErrorInfo");
        assert_eq!(info.reason, "RATE_LIMITED");
        assert_eq!(info.domain, "fastchat");
        assert_eq!(
            info.metadata.get("limit").map(String::as_str),
            Some("limits.send_per_second")
        );
        let retry = status.get_details_retry_info().expect("RetryInfo");
        assert_eq!(retry.retry_delay, Some(Duration::from_millis(1500)));
        let bad = status.get_details_bad_request().expect("BadRequest");
        assert_eq!(bad.field_violations[0].field, "text");
    }
}
