//! Hooks for the fuzz targets in `fuzz/` (not an API: they change with the
//! targets). Each is the service's own code path, without a broker or a
//! server: what a request is turned into and what validation says of it.

use fastchat_proto::{seed, v1};
use tonic::Status;

use crate::{SendError, config::SendConfig};

pub use crate::validate::NewMessage;

/// `SendMessage`'s validation of a fastchat.v1 request.
///
/// # Errors
/// [`SendError::Invalid`] naming the first offending field.
pub fn validate_v1(
    request: v1::SendMessageRequest,
    limits: &SendConfig,
) -> Result<NewMessage, SendError> {
    crate::validate::validate(request, limits)
}

/// The seed API's `send`: its message as a fastchat.v1 request, validated,
/// errors naming the seed's fields.
///
/// # Errors
/// [`SendError::Invalid`] naming the first offending field as the seed
/// API names it.
pub fn validate_seed(
    message: seed::ChatMessage,
    limits: &SendConfig,
) -> Result<NewMessage, SendError> {
    crate::validate::validate(crate::service::seed_request(message), limits)
        .map_err(crate::service::seed_field)
}

/// The request of `POST /v1/rooms/{room}/messages`, from the path's room
/// and the JSON body.
///
/// # Errors
/// INVALID_ARGUMENT for a body that is not a JSON `SendMessageRequest`.
pub fn http_send_request(room: String, body: &[u8]) -> Result<v1::SendMessageRequest, Status> {
    crate::http::send_request(room, body)
}

/// The message of `POST /client` (the seed API over HTTP).
///
/// # Errors
/// INVALID_ARGUMENT for a body that is not a JSON seed `ChatMessage`.
pub fn http_seed_message(body: &[u8]) -> Result<seed::ChatMessage, Status> {
    crate::http::seed_message(body)
}

/// The part of a `traceparent` header that is stored, if it is valid.
#[must_use]
pub fn traceparent(value: &str) -> Option<&str> {
    crate::trace::traceparent(value)
}

/// The gRPC status a send error answers with.
#[must_use]
pub fn status(error: SendError) -> Status {
    error.into()
}
