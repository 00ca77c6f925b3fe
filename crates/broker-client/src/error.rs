//! Typed broker errors, and the one place async-nats errors are classified.
//!
//! Every [`Error`] carries an [`ErrorKind`] so callers decide by kind (retry a
//! time-out, report a conflict) and keeps the async-nats error as its source.
//! The kind is read from the typed kinds async-nats gives for each operation
//! ([`Classify`]), falling back to the typed errors found down the source
//! chain (JetStream API error codes, request and I/O errors); nothing here
//! looks at message text.

use std::{error::Error as StdError, fmt, io};

use async_nats::jetstream::{
    self,
    consumer::{StreamError, StreamErrorKind, pull, push},
    context::{
        CreateStreamError, CreateStreamErrorKind, GetStreamError, GetStreamErrorKind, PublishError,
        PublishErrorKind, RequestError, RequestErrorKind,
    },
    stream::{
        ConsumerError, ConsumerErrorKind, DeleteMessageError, DeleteMessageErrorKind,
        DirectGetError, DirectGetErrorKind,
    },
};

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
    /// The broker is out of a resource: its store is full, or a limit
    /// (consumers, streams, memory) is reached. Retrying at once will not
    /// help; retrying later, once space is made, may.
    ResourceExhausted,
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
            Self::ResourceExhausted => "broker out of resources",
            Self::Other => "broker error",
        };
        f.write_str(text)
    }
}

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

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
    /// The broker cannot hold the station as defined: it refused to reserve
    /// its byte limit (its store or the account's limit is smaller).
    #[error(
        "the broker cannot reserve station.max_bytes = {max_bytes} bytes ({replicas} replica(s)) \
         for station `{station}`: its store (max_file_store) or the account's limit is smaller; \
         lower station.max_bytes or give the broker more room"
    )]
    StationDoesNotFit {
        /// Station (stream) name.
        station: String,
        /// The byte limit asked for.
        max_bytes: u64,
        /// Replicas asked for.
        replicas: usize,
        /// What the broker said.
        #[source]
        source: Box<Error>,
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
            Self::StationDoesNotFit { .. } => ErrorKind::InvalidInput,
            Self::Config(_) => ErrorKind::InvalidInput,
        }
    }

    /// Whether retrying the same idempotent call later may succeed.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self.kind(), ErrorKind::Unavailable | ErrorKind::Timeout)
    }

    /// The error with every source down its chain, for logs: what a
    /// person needs to see the broker's own words (its `Display` alone says
    /// only the operation and the kind, which is what clients may see).
    #[must_use]
    pub fn report(&self) -> Report<'_> {
        Report(self)
    }

    /// `operation` failed with the async-nats error `source`, classified by
    /// its typed kind.
    pub(crate) fn nats<E: Classify>(operation: impl Into<String>, source: E) -> Self {
        Self::Broker {
            operation: operation.into(),
            kind: source.classify(),
            source: Some(Box::new(source)),
        }
    }

    /// `operation` failed with an untyped async-nats error (a boxed
    /// `async_nats::Error`, as acks and batch items give): its kind is that
    /// of the first typed error inside it, else `fallback`.
    pub(crate) fn nats_untyped(
        operation: impl Into<String>,
        source: BoxError,
        fallback: ErrorKind,
    ) -> Self {
        Self::Broker {
            operation: operation.into(),
            kind: from_chain(source.as_ref(), fallback),
            source: Some(source),
        }
    }

    /// `operation` failed with `source`, of a kind the caller knows.
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

/// [`Error::report`]: the error and its sources, `: `-separated.
#[derive(Debug)]
pub struct Report<'a>(&'a Error);

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        // async-nats errors print their own source after their kind; a
        // source already shown that way is not repeated (presentation only:
        // nothing decides by this text).
        let mut shown = String::new();
        let mut source = StdError::source(self.0);
        while let Some(e) = source {
            let text = e.to_string();
            if !shown.ends_with(&text) {
                write!(f, ": {text}")?;
            }
            shown = text;
            source = e.source();
        }
        Ok(())
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An async-nats error whose [`ErrorKind`] can be told from its type.
pub(crate) trait Classify: StdError + Send + Sync + 'static {
    /// The kind, from the error's own kind or its typed sources.
    fn classify(&self) -> ErrorKind;
}

/// The kind of the first typed error down `err`'s source chain (itself
/// included), or `fallback` when none is recognised. async-nats often wraps
/// the informative error (a JetStream API error with its code, a request
/// time-out, an I/O error) under an opaque `Request` or `Other` kind.
fn from_chain(err: &(dyn StdError + 'static), fallback: ErrorKind) -> ErrorKind {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(api) = e.downcast_ref::<jetstream::Error>() {
            return api_kind(api);
        }
        if let Some(request) = e.downcast_ref::<RequestError>() {
            match request.kind() {
                RequestErrorKind::NoResponders => return ErrorKind::Unavailable,
                RequestErrorKind::TimedOut => return ErrorKind::Timeout,
                RequestErrorKind::InvalidSubject => return ErrorKind::InvalidInput,
                RequestErrorKind::Other => {}
            }
        }
        if let Some(request) = e.downcast_ref::<async_nats::RequestError>() {
            match request.kind() {
                async_nats::RequestErrorKind::NoResponders => return ErrorKind::Unavailable,
                async_nats::RequestErrorKind::TimedOut => return ErrorKind::Timeout,
                async_nats::RequestErrorKind::InvalidSubject
                | async_nats::RequestErrorKind::MaxPayloadExceeded => {
                    return ErrorKind::InvalidInput;
                }
                // "Client/io related": the connection is not usable.
                async_nats::RequestErrorKind::Other => {}
            }
        }
        if e.is::<tokio::time::error::Elapsed>() {
            return ErrorKind::Timeout;
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return match io.kind() {
                io::ErrorKind::TimedOut => ErrorKind::Timeout,
                io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
                _ => ErrorKind::Unavailable,
            };
        }
        next = e.source();
    }
    fallback
}

/// The kind of `err`'s source chain below itself, or `fallback`.
fn from_source(err: &(dyn StdError + 'static), fallback: ErrorKind) -> ErrorKind {
    err.source().map_or(fallback, |s| from_chain(s, fallback))
}

/// Classifies a JetStream API error by its code (see the NATS server's
/// `jetstream_errors.json`).
fn api_kind(err: &jetstream::Error) -> ErrorKind {
    use jetstream::ErrorCode as C;
    let code = err.error_code();
    if code == C::STREAM_NOT_FOUND || code == C::CONSUMER_NOT_FOUND || code == C::NO_MESSAGE_FOUND {
        ErrorKind::NotFound
    } else if code == C::INSUFFICIENT_RESOURCES
        || code == C::STORAGE_RESOURCES_EXCEEDED
        || code == C::MEMORY_RESOURCES_EXCEEDED
        || code == C::ACCOUNT_RESOURCES_EXCEEDED
        || code == C::MAXIMUM_CONSUMERS_LIMIT
        || code == C::MAXIMUM_STREAMS_LIMIT
    {
        ErrorKind::ResourceExhausted
    } else if code == C::CLUSTER_NOT_AVAILABLE
        // "duplicate message id is in process" (409): a publish with the
        // same dedup id is still being stored (a retry overtook its first
        // attempt, e.g. after a leader change). Retrying later gets the
        // duplicate's ack or stores it: transient, not a failure.
        || code == C::STREAM_DUPLICATE_MESSAGE_CONFLICT
        || code == C::STREAM_OFFLINE
        || code == C::JETSTREAM_NOT_ENABLED
        || code == C::CLUSTER_NO_PEERS
    {
        ErrorKind::Unavailable
    } else if err.code() == 403 {
        ErrorKind::PermissionDenied
    } else if err.code() == 408 {
        ErrorKind::Timeout
    } else if err.code() == 503 {
        ErrorKind::Unavailable
    } else if err.code() == 404 {
        ErrorKind::NotFound
    } else if err.code() == 400 {
        ErrorKind::InvalidInput
    } else {
        ErrorKind::Other
    }
}

impl Classify for jetstream::Error {
    fn classify(&self) -> ErrorKind {
        api_kind(self)
    }
}

impl Classify for RequestError {
    fn classify(&self) -> ErrorKind {
        // Other: the source says more (an API error, a core request error).
        from_chain(self, ErrorKind::Other)
    }
}

impl Classify for GetStreamError {
    fn classify(&self) -> ErrorKind {
        match self.kind() {
            GetStreamErrorKind::EmptyName | GetStreamErrorKind::InvalidStreamName => {
                ErrorKind::InvalidInput
            }
            GetStreamErrorKind::JetStream(api) => api_kind(&api),
            GetStreamErrorKind::Request => from_source(self, ErrorKind::Unavailable),
        }
    }
}

impl Classify for CreateStreamError {
    fn classify(&self) -> ErrorKind {
        match self.kind() {
            CreateStreamErrorKind::JetStream(api) => api_kind(&api),
            CreateStreamErrorKind::TimedOut => ErrorKind::Timeout,
            CreateStreamErrorKind::JetStreamUnavailable => ErrorKind::Unavailable,
            CreateStreamErrorKind::NotFound => ErrorKind::NotFound,
            CreateStreamErrorKind::EmptyStreamName
            | CreateStreamErrorKind::InvalidStreamName
            | CreateStreamErrorKind::DomainAndExternalSet => ErrorKind::InvalidInput,
            CreateStreamErrorKind::Response | CreateStreamErrorKind::ResponseParse => {
                from_source(self, ErrorKind::Other)
            }
        }
    }
}

impl Classify for ConsumerError {
    fn classify(&self) -> ErrorKind {
        match self.kind() {
            ConsumerErrorKind::TimedOut => ErrorKind::Timeout,
            ConsumerErrorKind::JetStream(api) => api_kind(&api),
            ConsumerErrorKind::InvalidConsumerType | ConsumerErrorKind::InvalidName => {
                ErrorKind::InvalidInput
            }
            ConsumerErrorKind::Request => from_source(self, ErrorKind::Unavailable),
            ConsumerErrorKind::Other => from_source(self, ErrorKind::Other),
        }
    }
}

impl Classify for DirectGetError {
    fn classify(&self) -> ErrorKind {
        match self.kind() {
            DirectGetErrorKind::NotFound => ErrorKind::NotFound,
            DirectGetErrorKind::InvalidSubject => ErrorKind::InvalidInput,
            DirectGetErrorKind::TimedOut => ErrorKind::Timeout,
            DirectGetErrorKind::ErrorResponse(status, _) => match status.as_u16() {
                404 => ErrorKind::NotFound,
                408 => ErrorKind::Timeout,
                403 => ErrorKind::PermissionDenied,
                503 => ErrorKind::Unavailable,
                400 => ErrorKind::InvalidInput,
                _ => ErrorKind::Other,
            },
            DirectGetErrorKind::Request => from_source(self, ErrorKind::Unavailable),
            DirectGetErrorKind::Other => from_source(self, ErrorKind::Other),
        }
    }
}

impl Classify for DeleteMessageError {
    fn classify(&self) -> ErrorKind {
        match self.kind() {
            DeleteMessageErrorKind::TimedOut => ErrorKind::Timeout,
            DeleteMessageErrorKind::JetStream(api) => api_kind(&api),
            DeleteMessageErrorKind::Request => from_source(self, ErrorKind::Unavailable),
        }
    }
}

impl Classify for PublishError {
    fn classify(&self) -> ErrorKind {
        match self.kind() {
            PublishErrorKind::TimedOut => ErrorKind::Timeout,
            PublishErrorKind::BrokenPipe | PublishErrorKind::MaxAckPending => {
                ErrorKind::Unavailable
            }
            // "No responders": the station was ensured at start-up, so this
            // means no stream leader right now (a JetStream cluster electing
            // one), not a missing station.
            PublishErrorKind::StreamNotFound => ErrorKind::Unavailable,
            PublishErrorKind::MaxPayloadExceeded => ErrorKind::InvalidInput,
            PublishErrorKind::WrongLastMessageId | PublishErrorKind::WrongLastSequence => {
                ErrorKind::Conflict
            }
            // The broker's answer (e.g. its store is full) is the source.
            PublishErrorKind::Other => from_source(self, ErrorKind::Other),
        }
    }
}

impl Classify for StreamError {
    fn classify(&self) -> ErrorKind {
        match self.kind() {
            StreamErrorKind::TimedOut => ErrorKind::Timeout,
            StreamErrorKind::Other => from_source(self, ErrorKind::Unavailable),
        }
    }
}

impl Classify for push::OrderedError {
    fn classify(&self) -> ErrorKind {
        match self.kind() {
            push::OrderedErrorKind::PullBasedConsumer => ErrorKind::InvalidInput,
            // Heartbeats missed, consumer gone or not re-creatable: the
            // broker (or our route to it) is not serving this consumer.
            push::OrderedErrorKind::MissingHeartbeat
            | push::OrderedErrorKind::ConsumerDeleted
            | push::OrderedErrorKind::Recreate
            | push::OrderedErrorKind::Other => from_source(self, ErrorKind::Unavailable),
        }
    }
}

impl Classify for pull::MessagesError {
    fn classify(&self) -> ErrorKind {
        match self.kind() {
            pull::MessagesErrorKind::PushBasedConsumer
            | pull::MessagesErrorKind::RequestLimitExceeded => ErrorKind::InvalidInput,
            pull::MessagesErrorKind::MissingHeartbeat
            | pull::MessagesErrorKind::ConsumerDeleted
            | pull::MessagesErrorKind::NoResponders => ErrorKind::Unavailable,
            pull::MessagesErrorKind::Pull | pull::MessagesErrorKind::Other => {
                from_source(self, ErrorKind::Unavailable)
            }
        }
    }
}

impl Classify for pull::BatchError {
    fn classify(&self) -> ErrorKind {
        match self.kind() {
            pull::BatchErrorKind::Serialize => ErrorKind::Other,
            // Subscribing, sending the pull request or flushing it failed:
            // the connection is not usable right now.
            _ => from_source(self, ErrorKind::Unavailable),
        }
    }
}

impl Classify for async_nats::ConnectError {
    fn classify(&self) -> ErrorKind {
        match self.kind() {
            async_nats::ConnectErrorKind::Authentication
            | async_nats::ConnectErrorKind::AuthorizationViolation => ErrorKind::PermissionDenied,
            async_nats::ConnectErrorKind::ServerParse | async_nats::ConnectErrorKind::Tls => {
                ErrorKind::InvalidInput
            }
            async_nats::ConnectErrorKind::TimedOut => ErrorKind::Timeout,
            async_nats::ConnectErrorKind::Dns
            | async_nats::ConnectErrorKind::Io
            | async_nats::ConnectErrorKind::MaxReconnects => ErrorKind::Unavailable,
        }
    }
}

impl Classify for async_nats::client::FlushError {
    fn classify(&self) -> ErrorKind {
        // Either kind means the connection could not take or confirm it.
        from_source(self, ErrorKind::Unavailable)
    }
}

impl Classify for async_nats::client::DrainError {
    fn classify(&self) -> ErrorKind {
        // Draining fails only when the connection is already gone.
        from_source(self, ErrorKind::Unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, err_code: u64) -> jetstream::Error {
        serde_json::from_value(serde_json::json!({
            "code": code,
            "err_code": err_code,
            "description": "from the broker",
        }))
        .expect("a JetStream API error")
    }

    #[test]
    fn api_errors_are_classified_by_code() {
        assert_eq!(api(404, 10059).classify(), ErrorKind::NotFound); // stream not found
        assert_eq!(api(404, 10014).classify(), ErrorKind::NotFound); // consumer not found
        assert_eq!(api(503, 10023).classify(), ErrorKind::ResourceExhausted); // insufficient resources
        assert_eq!(api(400, 10026).classify(), ErrorKind::ResourceExhausted); // max consumers
        assert_eq!(api(503, 10008).classify(), ErrorKind::Unavailable); // cluster not available
        // Duplicate message id in process: retried (the chaos test met it).
        assert_eq!(api(409, 10158).classify(), ErrorKind::Unavailable);
        let in_process = PublishError::with_source(PublishErrorKind::Other, api(409, 10158));
        assert!(Error::nats("publish", in_process).is_transient());
        assert_eq!(api(400, 10058).classify(), ErrorKind::InvalidInput); // stream name in use
        assert_eq!(api(500, 10999).classify(), ErrorKind::Other);
    }

    #[test]
    fn opaque_kinds_are_classified_by_their_typed_source() {
        // A publish the broker answered with an error: the API error is the
        // source of an `Other` publish error.
        let full = PublishError::with_source(PublishErrorKind::Other, api(503, 10023));
        assert_eq!(full.classify(), ErrorKind::ResourceExhausted);
        // A consumer creation whose request timed out.
        let timed_out = ConsumerError::with_source(
            ConsumerErrorKind::Request,
            RequestError::new(RequestErrorKind::TimedOut),
        );
        assert_eq!(timed_out.classify(), ErrorKind::Timeout);
        // No responders: JetStream is not there (or no leader right now).
        let no_js = GetStreamError::with_source(
            GetStreamErrorKind::Request,
            RequestError::new(RequestErrorKind::NoResponders),
        );
        assert_eq!(no_js.classify(), ErrorKind::Unavailable);
        // An I/O error under a request.
        let broken = RequestError::with_source(
            RequestErrorKind::Other,
            io::Error::new(io::ErrorKind::BrokenPipe, "gone"),
        );
        assert_eq!(broken.classify(), ErrorKind::Unavailable);
        // Nothing typed below: the kind's own fallback.
        assert_eq!(
            PublishError::new(PublishErrorKind::Other).classify(),
            ErrorKind::Other
        );
    }

    #[test]
    fn own_kinds_decide_first() {
        assert_eq!(
            PublishError::new(PublishErrorKind::TimedOut).classify(),
            ErrorKind::Timeout
        );
        assert_eq!(
            PublishError::new(PublishErrorKind::StreamNotFound).classify(),
            ErrorKind::Unavailable
        );
        assert_eq!(
            PublishError::new(PublishErrorKind::MaxPayloadExceeded).classify(),
            ErrorKind::InvalidInput
        );
        assert_eq!(
            DirectGetError::new(DirectGetErrorKind::NotFound).classify(),
            ErrorKind::NotFound
        );
        assert_eq!(
            ConsumerError::new(ConsumerErrorKind::JetStream(api(404, 10059))).classify(),
            ErrorKind::NotFound
        );
    }

    #[test]
    fn errors_keep_their_source() {
        let err = Error::nats(
            "publish to `chat.messages.general`",
            PublishError::with_source(PublishErrorKind::Other, api(503, 10008)),
        );
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(err.is_transient());
        assert_eq!(
            err.report().to_string(),
            "publish to `chat.messages.general`: broker unavailable: publish failed: from the \
             broker (code 503, error code 10008)"
        );
        let source = StdError::source(&err).expect("the async-nats error is kept");
        assert!(source.is::<PublishError>());
        let api = source.source().expect("and its own source");
        assert!(api.is::<jetstream::Error>());
    }
}
