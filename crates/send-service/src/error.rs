//! send-service's domain errors and the one place they become gRPC statuses.

use broker_client::ErrorKind;
use fastchat_runtime::unavailable::Unavailable;
use std::time::Duration;

use fastchat_runtime::status::{Problem, reason};
use tonic::{Code, Status};

/// Why a message was not stored.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// A field breaks a rule; nothing was stored.
    #[error("{field}: {reason}")]
    Invalid {
        /// Field name as in the proto.
        field: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// The broker could not be reached or did not answer in time. The
    /// message may be retried with the same `client_message_id`.
    #[error("{0}; retry with the same client_message_id")]
    Unavailable(#[from] Unavailable),
    /// The broker has no room: its store is full (or a broker limit is
    /// reached). Nothing was stored.
    #[error(
        "the broker has no room for the message ({source}); the station keeps at most {} \
         (station.max_bytes), which must stay below the broker's store (max_file_store) so that \
         old messages make room; retry later with the same client_message_id",
        limit(*max_bytes)
    )]
    StoreFull {
        /// The station's byte limit, if known (0 = none).
        max_bytes: Option<u64>,
        /// What the broker said.
        #[source]
        source: broker_client::Error,
    },
    /// The caller may not send this (no or a bad token, a forbidden room,
    /// another author).
    #[error(transparent)]
    Denied(#[from] fastchat_auth::AuthError),
    /// The caller's token did not check out (the status is the gate's).
    #[error("{}", .0.message())]
    Unauthenticated(Status),
    /// The caller's identity sends faster than `limits.send_per_second`.
    #[error(
        "too many messages: at most {per_second} per second ({burst} at once) per sender \
         (limits.send_per_second, limits.send_burst); retry in {retry_after:?}"
    )]
    RateLimited {
        /// When the next send can succeed.
        retry_after: Duration,
        /// The configured rate.
        per_second: u32,
        /// The configured burst.
        burst: u32,
    },
    /// Anything else; details are logged, not sent.
    #[error("internal error")]
    Internal(#[source] broker_client::Error),
}

fn limit(max_bytes: Option<u64>) -> String {
    match max_bytes {
        Some(0) => "no byte limit".to_owned(),
        Some(bytes) => format!("{bytes} bytes"),
        None => "its configured bytes".to_owned(),
    }
}

impl SendError {
    /// A broker error while using a station limited to `max_bytes`.
    pub(crate) fn broker(e: broker_client::Error, max_bytes: Option<u64>) -> Self {
        match e.kind() {
            ErrorKind::Unavailable | ErrorKind::Timeout => Unavailable::broker(e).into(),
            ErrorKind::ResourceExhausted => {
                tracing::warn!(error = %e.report(), "the broker has no room; answering RESOURCE_EXHAUSTED");
                Self::StoreFull {
                    max_bytes,
                    source: e,
                }
            }
            _ => Self::Internal(e),
        }
    }

    /// Unavailable for a reason other than a broker error.
    pub(crate) fn unavailable(why: &'static str) -> Self {
        Self::Unavailable(Unavailable::because(why))
    }
}

impl From<broker_client::Error> for SendError {
    fn from(e: broker_client::Error) -> Self {
        Self::broker(e, None)
    }
}

impl From<SendError> for Status {
    fn from(e: SendError) -> Self {
        let message = e.to_string();
        match e {
            SendError::Invalid { field, reason } => {
                Problem::new(Code::InvalidArgument, reason::INVALID_FIELD, message)
                    .meta("field", field)
                    .field(field, reason)
                    .status()
            }
            SendError::Unavailable(_) => {
                Problem::new(Code::Unavailable, reason::BROKER_UNAVAILABLE, message)
                    .retry_after(Duration::from_secs(1))
                    .status()
            }
            SendError::StoreFull { .. } => {
                Problem::new(Code::ResourceExhausted, reason::STORE_FULL, message)
                    .meta("limit", "station.max_bytes")
                    .retry_after(Duration::from_secs(10))
                    .status()
            }
            SendError::Denied(e) => fastchat_runtime::gate::denied(&e),
            SendError::Unauthenticated(status) => status,
            SendError::RateLimited { retry_after, .. } => {
                Problem::new(Code::ResourceExhausted, reason::RATE_LIMITED, message)
                    .meta("limit", "limits.send_per_second")
                    .retry_after(retry_after)
                    .status()
            }
            SendError::Internal(source) => {
                tracing::error!(error = %source.report(), "send failed");
                Problem::new(
                    Code::Internal,
                    reason::INTERNAL,
                    "internal error; the message was not confirmed",
                )
                .status()
            }
        }
    }
}
