//! all-messages-service errors and the one place they become gRPC statuses.

use broker_client::ErrorKind;
use fastchat_runtime::unavailable::Unavailable;
use tonic::{Code, Status};

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
    /// Too many open subscriptions on this instance.
    #[error("this instance already serves {0} subscriptions; retry later or on another replica")]
    TooManySubscriptions(usize),
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
            _ => Self::Internal(e),
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        let code = match &e {
            ApiError::Invalid { .. } => Code::InvalidArgument,
            ApiError::TooManySubscriptions(_) => Code::ResourceExhausted,
            ApiError::Unavailable(_) => Code::Unavailable,
            ApiError::Internal(source) => {
                tracing::error!(error = %source.report(), "request failed");
                return Status::new(Code::Internal, "internal error");
            }
        };
        Status::new(code, e.to_string())
    }
}
