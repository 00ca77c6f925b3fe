//! Typed broker errors.
//!
//! Every error carries an [`ErrorKind`] so callers decide by kind (retry a
//! timeout, report a conflict) and keeps the async-nats error as its source.

use std::fmt;

/// What went wrong, coarsely enough to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The broker is not connected (or went away during the call). Retry later.
    Unavailable,
    /// The broker did not answer in time. The operation may or may not have
    /// happened; retry only what is idempotent.
    Timeout,
    /// An existing station differs from the configured definition.
    Conflict,
    /// The asked-for station, consumer or message does not exist.
    NotFound,
    /// The request was refused as invalid (bad subject, message too large...).
    InvalidInput,
    /// The broker refused for lack of permission.
    PermissionDenied,
    /// Anything else the broker reported.
    Other,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Self::Unavailable => "broker unavailable",
            Self::Timeout => "broker timed out",
            Self::Conflict => "conflicting station definition",
            Self::NotFound => "not found",
            Self::InvalidInput => "invalid input",
            Self::PermissionDenied => "permission denied",
            Self::Other => "broker error",
        };
        f.write_str(text)
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error from the stations layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A broker operation failed.
    #[error("{operation}: {kind}")]
    Broker {
        /// What we were doing, e.g. `publish to chat.messages.general`.
        operation: String,
        /// Classification for callers.
        kind: ErrorKind,
        /// The underlying async-nats error.
        #[source]
        source: Option<BoxError>,
    },
    /// The station exists on the broker with a different definition.
    #[error(
        "station `{station}` already exists with a different {field}: the broker has {existing}, \
         the configuration asks for {wanted}; change the configuration to match, or migrate the \
         stream deliberately (FastChat never changes an existing station by itself)"
    )]
    StationConflict {
        /// Station (stream) name.
        station: String,
        /// The first differing field, as named in the configuration.
        field: &'static str,
        /// Value on the broker.
        existing: String,
        /// Value in the configuration.
        wanted: String,
    },
    /// The configuration is unusable (bad URL, unreadable credentials...).
    #[error("invalid broker configuration: {0}")]
    Config(String),
}

impl Error {
    /// The kind of failure, for deciding what to do about it.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Broker { kind, .. } => *kind,
            Self::StationConflict { .. } => ErrorKind::Conflict,
            Self::Config(_) => ErrorKind::InvalidInput,
        }
    }

    /// Whether retrying the same idempotent call later may succeed.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self.kind(), ErrorKind::Unavailable | ErrorKind::Timeout)
    }

    pub(crate) fn broker(
        operation: impl Into<String>,
        kind: ErrorKind,
        source: impl Into<BoxError>,
    ) -> Self {
        Self::Broker {
            operation: operation.into(),
            kind,
            source: Some(source.into()),
        }
    }

    pub(crate) fn unavailable(operation: impl Into<String>) -> Self {
        Self::Broker {
            operation: operation.into(),
            kind: ErrorKind::Unavailable,
            source: None,
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Classifies a JetStream API error code (see the NATS server's
/// `jetstream_errors.json`).
pub(crate) fn kind_of_api_error(err: &async_nats::jetstream::Error) -> ErrorKind {
    use async_nats::jetstream::ErrorCode;
    let code = err.error_code();
    if code == ErrorCode::STREAM_NOT_FOUND
        || code == ErrorCode::CONSUMER_NOT_FOUND
        || code == ErrorCode::NO_MESSAGE_FOUND
    {
        ErrorKind::NotFound
    } else if code == ErrorCode::CLUSTER_NOT_AVAILABLE
        || code == ErrorCode::STREAM_OFFLINE
        || code == ErrorCode::JETSTREAM_NOT_ENABLED
        || code == ErrorCode::INSUFFICIENT_RESOURCES
    {
        ErrorKind::Unavailable
    } else if err.code() == 400 {
        ErrorKind::InvalidInput
    } else {
        ErrorKind::Other
    }
}

/// Classifies an error whose kind is only known by its text: async-nats error
/// kinds differ per operation, but all spell time-outs and missing responders
/// the same way.
pub(crate) fn kind_from_text(text: &str) -> ErrorKind {
    let text = text.to_ascii_lowercase();
    if text.contains("timed out") || text.contains("timeout") {
        ErrorKind::Timeout
    } else if text.contains("no responders")
        || text.contains("broken pipe")
        || text.contains("disconnected")
        || text.contains("connection")
    {
        ErrorKind::Unavailable
    } else if text.contains("permission") || text.contains("authorization") {
        ErrorKind::PermissionDenied
    } else if text.contains("not found") {
        ErrorKind::NotFound
    } else {
        ErrorKind::Other
    }
}
