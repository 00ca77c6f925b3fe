//! all-messages-service errors and the one place they become gRPC statuses.

use std::time::Duration;

use broker_client::ErrorKind;
use fastchat_runtime::unavailable::Unavailable;
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

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        let code = match &e {
            ApiError::Invalid { .. } => Code::InvalidArgument,
            ApiError::OverCap { .. } | ApiError::Stalled { .. } | ApiError::BrokerBusy(_) => {
                Code::ResourceExhausted
            }
            ApiError::Unavailable(_) => Code::Unavailable,
            ApiError::Internal(source) => {
                tracing::error!(error = %source.report(), "request failed");
                return Status::new(Code::Internal, "internal error");
            }
        };
        Status::new(code, e.to_string())
    }
}
