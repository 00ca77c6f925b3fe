//! all-messages-service errors and the one place they become gRPC statuses.

use std::time::Duration;

use broker_client::ErrorKind;
use fastchat_runtime::{
    status::{Problem, reason},
    unavailable::Unavailable,
};
use tonic::{Code, Status};

use crate::shares::{Cap, Refused};

/// What a client may hold only a fair share of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scarce {
    /// Open subscriptions.
    Subscriptions,
    /// Concurrent history reads (pages, subscription replays).
    HistoryReads,
}

fn over_cap(what: Scarce, refused: Refused, queue_timeout: Option<Duration>) -> String {
    let limit = refused.limit;
    match (what, refused.cap) {
        (Scarce::Subscriptions, Cap::Total) => format!(
            "this instance already serves {limit} subscriptions (subscriptions.max); retry later \
             or on another replica"
        ),
        (Scarce::Subscriptions, Cap::Connection) => format!(
            "this connection already has {limit} open subscriptions \
             (subscriptions.max_per_connection); close one or open another connection"
        ),
        (Scarce::Subscriptions, Cap::Address) => format!(
            "your address already has {limit} open subscriptions (subscriptions.max_per_address); \
             close some first"
        ),
        (Scarce::HistoryReads, Cap::Total) => format!(
            "history reads are busy ({limit} at once, history.max_concurrent) and none was free \
             within {:?} (history.queue_timeout); retry shortly",
            queue_timeout.unwrap_or_default()
        ),
        (Scarce::HistoryReads, Cap::Connection) => format!(
            "this connection kept {limit} history reads running \
             (history.max_concurrent_per_connection) for {:?} (history.queue_timeout); read \
             fewer pages at once",
            queue_timeout.unwrap_or_default()
        ),
        (Scarce::Subscriptions, Cap::Identity) => format!(
            "you already have {limit} open subscriptions (limits.subscriptions_per_identity); \
             close one first"
        ),
        (Scarce::HistoryReads, Cap::Identity) => {
            format!("you already have {limit} history reads running; wait for one to finish")
        }
        (Scarce::HistoryReads, Cap::Address) => format!(
            "your address kept {limit} history reads running \
             (history.max_concurrent_per_address) for {:?} (history.queue_timeout); read fewer \
             pages at once",
            queue_timeout.unwrap_or_default()
        ),
    }
}

/// Why a request could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A field breaks a rule.
    #[error("{field}: {reason}")]
    Invalid {
        /// Field name as in the proto.
        field: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// A resume cursor beyond the newest stored message.
    #[error(
        "after_sequence: {after} is beyond the newest stored message ({newest}); resume from a \
         sequence this station delivered"
    )]
    BeyondNewest {
        /// The cursor asked for.
        after: u64,
        /// The newest stored sequence.
        newest: u64,
    },
    /// The caller may not do this (no or a bad token, a forbidden room).
    #[error(transparent)]
    Denied(#[from] fastchat_auth::AuthError),
    /// The caller's token did not check out (the status is the gate's).
    #[error("{}", .0.message())]
    Unauthenticated(Status),
    /// The token a stream was opened with expired.
    #[error("the token expired; resubscribe with a new one and after_sequence = {cursor}")]
    TokenExpired {
        /// Where to resume.
        cursor: u64,
    },
    /// The server is shutting down.
    #[error(
        "server shutting down; resubscribe (to another replica) with after_sequence = {cursor}"
    )]
    ShuttingDown {
        /// Where to resume.
        cursor: u64,
    },
    /// A fair-share cap: too many open subscriptions or history reads, on
    /// the instance, the client's connection or its address.
    #[error("{}", over_cap(*what, *refused, *queue_timeout))]
    OverCap {
        /// What ran out.
        what: Scarce,
        /// Which cap, and its value.
        refused: Refused,
        /// How long a history read waited for its turn.
        queue_timeout: Option<Duration>,
    },
    /// A subscriber read nothing for `after` while messages waited for it.
    #[error(
        "this subscriber read nothing for {after:?} while messages waited for it \
         (subscriptions.stall_timeout); resubscribe with after_sequence = {cursor} once it reads \
         again"
    )]
    Stalled {
        /// The stall timeout.
        after: Duration,
        /// Where to resume.
        cursor: u64,
    },
    /// The broker is out of resources (e.g. at its consumer limit).
    #[error("the broker is out of resources ({0}); retry shortly")]
    BrokerBusy(#[source] broker_client::Error),
    /// The broker cannot be used right now.
    #[error("{0}; retry, resuming from the last sequence seen")]
    Unavailable(#[from] Unavailable),
    /// Anything else; details are logged, not sent.
    #[error("internal error")]
    Internal(#[source] broker_client::Error),
}

impl ApiError {
    /// Unavailable for a reason other than a broker error.
    pub(crate) fn unavailable(why: &'static str) -> Self {
        Self::Unavailable(Unavailable::because(why))
    }
}

impl From<broker_client::Error> for ApiError {
    fn from(e: broker_client::Error) -> Self {
        match e.kind() {
            ErrorKind::Unavailable | ErrorKind::Timeout => Unavailable::broker(e).into(),
            ErrorKind::ResourceExhausted => {
                tracing::warn!(error = %e.report(), "the broker is out of resources; answering RESOURCE_EXHAUSTED");
                Self::BrokerBusy(e)
            }
            _ => Self::Internal(e),
        }
    }
}

impl ApiError {
    /// The status, with `after_sequence` (where a stream should resume) in
    /// its ErrorInfo when the error ends a stream.
    pub(crate) fn into_status(self, cursor: Option<u64>) -> Status {
        let message = self.to_string();
        let problem = match self {
            ApiError::Invalid { field, reason } => {
                Problem::new(Code::InvalidArgument, reason::INVALID_FIELD, message)
                    .meta("field", field)
                    .field(field, reason)
            }
            ApiError::BeyondNewest { newest, .. } => {
                Problem::new(Code::InvalidArgument, reason::BEYOND_NEWEST, message)
                    .meta("newest_sequence", newest)
                    .field("after_sequence", "beyond the newest stored message")
            }
            ApiError::OverCap { what, refused, .. } => {
                let (reason, key) = limit_key(what, refused.cap);
                Problem::new(Code::ResourceExhausted, reason, message)
                    .meta("limit", key)
                    .retry_after(Duration::from_secs(1))
            }
            ApiError::Stalled { after, .. } => {
                Problem::new(Code::ResourceExhausted, reason::SUBSCRIBER_STALLED, message)
                    .meta("limit", "subscriptions.stall_timeout")
                    .meta("after_seconds", after.as_secs())
            }
            ApiError::BrokerBusy(_) => {
                Problem::new(Code::ResourceExhausted, reason::BROKER_BUSY, message)
                    .retry_after(Duration::from_secs(1))
            }
            ApiError::Unavailable(_) => {
                Problem::new(Code::Unavailable, reason::BROKER_UNAVAILABLE, message)
                    .retry_after(Duration::from_secs(1))
            }
            ApiError::ShuttingDown { .. } => {
                Problem::new(Code::Unavailable, reason::SHUTTING_DOWN, message)
                    .retry_after(Duration::from_millis(100))
            }
            ApiError::TokenExpired { .. } => Problem::new(
                Code::Unauthenticated,
                fastchat_auth::reason::TOKEN_EXPIRED,
                message,
            ),
            ApiError::Denied(e) => fastchat_runtime::status::auth(&e),
            ApiError::Unauthenticated(status) => return status,
            ApiError::Internal(source) => {
                tracing::error!(error = %source.report(), "request failed");
                Problem::new(Code::Internal, reason::INTERNAL, "internal error")
            }
        };
        match cursor {
            Some(cursor) => problem.meta("after_sequence", cursor).resume_hint(cursor),
            None => problem,
        }
        .status()
    }
}

/// The ErrorInfo reason and the configuration key of a fair-share cap.
fn limit_key(what: Scarce, cap: Cap) -> (&'static str, &'static str) {
    match (what, cap) {
        (Scarce::Subscriptions, Cap::Total) => {
            (reason::TOO_MANY_SUBSCRIPTIONS, "subscriptions.max")
        }
        (Scarce::Subscriptions, Cap::Connection) => (
            reason::TOO_MANY_SUBSCRIPTIONS,
            "subscriptions.max_per_connection",
        ),
        (Scarce::Subscriptions, Cap::Address) => (
            reason::TOO_MANY_SUBSCRIPTIONS,
            "subscriptions.max_per_address",
        ),
        (Scarce::Subscriptions, Cap::Identity) => (
            reason::TOO_MANY_SUBSCRIPTIONS,
            "limits.subscriptions_per_identity",
        ),
        (Scarce::HistoryReads, Cap::Total) => (reason::HISTORY_BUSY, "history.max_concurrent"),
        (Scarce::HistoryReads, Cap::Connection) => (
            reason::HISTORY_BUSY,
            "history.max_concurrent_per_connection",
        ),
        (Scarce::HistoryReads, Cap::Address | Cap::Identity) => {
            (reason::HISTORY_BUSY, "history.max_concurrent_per_address")
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        e.into_status(None)
    }
}
