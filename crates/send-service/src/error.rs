//! send-service's domain errors and the one place they become gRPC statuses.

use broker_client::ErrorKind;
use fastchat_runtime::unavailable::Unavailable;
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
    /// Anything else; details are logged, not sent.
    #[error("internal error")]
    Internal(#[source] broker_client::Error),
}

impl SendError {
    /// Unavailable for a reason other than a broker error.
    pub(crate) fn unavailable(why: &'static str) -> Self {
        Self::Unavailable(Unavailable::because(why))
    }
}

impl From<broker_client::Error> for SendError {
    fn from(e: broker_client::Error) -> Self {
        match e.kind() {
            ErrorKind::Unavailable | ErrorKind::Timeout => Unavailable::broker(e).into(),
            _ => Self::Internal(e),
        }
    }
}

impl From<SendError> for Status {
    fn from(e: SendError) -> Self {
        match &e {
            SendError::Invalid { .. } => Status::new(Code::InvalidArgument, e.to_string()),
            SendError::Unavailable(_) => Status::new(Code::Unavailable, e.to_string()),
            SendError::Internal(source) => {
                tracing::error!(error = %source, "send failed");
                Status::new(
                    Code::Internal,
                    "internal error; the message was not confirmed",
                )
            }
        }
    }
}
