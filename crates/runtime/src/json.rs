//! The HTTP/JSON face of the gRPC API: proto3 canonical JSON made from the
//! protos' own descriptors (prost-reflect; no serializer written by hand),
//! gRPC statuses as HTTP errors, and requests turned into the `tonic`
//! requests the gRPC handlers take — same metadata (the bearer token, a
//! traceparent), same peer address, so the same authentication, grants and
//! limits apply.

use std::{sync::LazyLock, time::Duration};

use axum::{
    body::Body,
    http::{HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};
use http_body_util::BodyExt as _;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use tonic::{Code, Status};
use tonic_types::StatusExt as _;

use crate::status::{Problem, reason};

/// Every FastChat message type, by full name.
static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(fastchat_proto::FILE_DESCRIPTOR_SET)
        .expect("the embedded descriptor set is valid (checked by the tests)")
});

/// A message as proto3 canonical JSON (lowerCamelCase names, 64-bit
/// integers as strings, timestamps as RFC 3339).
///
/// # Panics
/// If `type_name` is not a message of the protos (a programming error).
#[must_use]
pub fn to_json<M: prost::Message>(message: &M, type_name: &str) -> serde_json::Value {
    let descriptor = POOL
        .get_message_by_name(type_name)
        .unwrap_or_else(|| panic!("{type_name} is a message of the protos"));
    let mut dynamic = DynamicMessage::new(descriptor);
    dynamic
        .transcode_from(message)
        .expect("a message transcodes to its own descriptor");
    dynamic
        .serialize_with_options(
            serde_json::value::Serializer,
            &SerializeOptions::new().skip_default_fields(false),
        )
        .expect("a message serializes to JSON")
}

/// `bytes` (JSON) as a `type_name` message; proto3 JSON parsing accepts
/// both the lowerCamelCase and the proto field names. Errors are
/// INVALID_ARGUMENT saying what is wrong.
///
/// # Errors
/// The body is not JSON of that message.
pub fn from_json<M: prost::Message + Default>(bytes: &[u8], type_name: &str) -> Result<M, Status> {
    let descriptor = POOL
        .get_message_by_name(type_name)
        .ok_or_else(|| Status::internal(format!("unknown message type {type_name}")))?;
    let invalid = |e: &dyn std::fmt::Display| {
        Problem::new(
            Code::InvalidArgument,
            reason::INVALID_FIELD,
            format!("the request body is not a JSON {type_name}: {e}"),
        )
        .field("body", e.to_string())
        .status()
    };
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let dynamic =
        DynamicMessage::deserialize(descriptor, &mut deserializer).map_err(|e| invalid(&e))?;
    deserializer.end().map_err(|e| invalid(&e))?;
    dynamic.transcode_to().map_err(|e| invalid(&e))
}

/// The body of `request`, at most `max` bytes, complete within `timeout`.
///
/// # Errors
/// RESOURCE_EXHAUSTED (too large) or DEADLINE_EXCEEDED (too slow), naming
/// the key; INVALID_ARGUMENT if the body broke off.
pub async fn read_body(body: Body, max: usize, timeout: Duration) -> Result<Vec<u8>, Status> {
    let limited = http_body_util::Limited::new(body, max);
    match tokio::time::timeout(timeout, limited.collect()).await {
        Err(_) => Err(Problem::new(
            Code::DeadlineExceeded,
            reason::REQUEST_BODY_TIMEOUT,
            format!(
                "the request body did not arrive within {timeout:?} (grpc.request_body_timeout)"
            ),
        )
        .status()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(Problem::new(
            Code::ResourceExhausted,
            reason::REQUEST_TOO_LARGE,
            format!("the request body is over {max} bytes (grpc.max_request_bytes)"),
        )
        .meta("limit", "grpc.max_request_bytes")
        .status()),
        Ok(Err(e)) => Err(Status::invalid_argument(format!(
            "reading the request body: {e}"
        ))),
        Ok(Ok(collected)) => Ok(collected.to_bytes().to_vec()),
    }
}

/// A gRPC request carrying `message` with the HTTP request's headers as
/// metadata and its extensions (the peer address): what a gRPC handler
/// would have been given.
#[must_use]
pub fn grpc_request<T>(parts: Parts, message: T) -> tonic::Request<T> {
    tonic::Request::from_http(axum::http::Request::from_parts(parts, message))
}

/// `value` as a JSON response.
#[must_use]
pub fn ok(value: serde_json::Value) -> Response {
    axum::Json(value).into_response()
}

/// The HTTP status for a gRPC code (as Google's HTTP mapping has it).
#[must_use]
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The JSON body of an error: `{"code", "message", "reason", "details"}`,
/// `details` as google.rpc.Status has them in JSON (ErrorInfo, BadRequest,
/// RetryInfo, each with its `@type`).
#[must_use]
pub fn error_body(status: &Status) -> serde_json::Value {
    let details = status.get_error_details();
    let mut list = Vec::new();
    let mut reason = String::new();
    if let Some(info) = details.error_info() {
        reason.clone_from(&info.reason);
        list.push(serde_json::json!({
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": info.reason,
            "domain": info.domain,
            "metadata": info.metadata,
        }));
    }
    if let Some(bad) = details.bad_request() {
        let violations: Vec<_> = bad
            .field_violations
            .iter()
            .map(|v| serde_json::json!({ "field": v.field, "description": v.description }))
            .collect();
        list.push(serde_json::json!({
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": violations,
        }));
    }
    if let Some(delay) = details.retry_info().and_then(|r| r.retry_delay) {
        list.push(serde_json::json!({
            "@type": "type.googleapis.com/google.rpc.RetryInfo",
            "retryDelay": format!("{:.3}s", delay.as_secs_f64()),
        }));
    }
    serde_json::json!({
        "code": code_name(status.code()),
        "message": status.message(),
        "reason": reason,
        "details": list,
    })
}

/// `status` as an HTTP error response, with `Retry-After` (whole seconds,
/// rounded up) when it carries a RetryInfo.
#[must_use]
pub fn error(status: &Status) -> Response {
    let mut response = (http_status(status.code()), axum::Json(error_body(status))).into_response();
    if let Some(delay) = status.get_details_retry_info().and_then(|r| r.retry_delay) {
        let seconds = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
        if let Ok(value) = HeaderValue::from_str(&seconds.max(1).to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }
    response
}

pub use fastchat_proto::code_name;

#[cfg(test)]
mod tests {
    use super::*;
    use fastchat_proto::v1;

    #[test]
    fn messages_round_trip_as_canonical_json() {
        let message = v1::ChatMessage {
            id: "id-1".into(),
            room: "general".into(),
            author: "ann".into(),
            text: "hi".into(),
            sent_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 5_000_000,
            }),
            client_time_ms: 0,
            sequence: 42,
            author_verified: true,
        };
        let json = to_json(&message, "fastchat.v1.ChatMessage");
        assert_eq!(json["sequence"], "42", "uint64 as a string");
        assert_eq!(json["sentAt"], "2023-11-14T22:13:20.005Z");
        assert_eq!(json["authorVerified"], true);
        assert_eq!(json["clientTimeMs"], "0", "defaults are written");
        let back: v1::ChatMessage =
            from_json(json.to_string().as_bytes(), "fastchat.v1.ChatMessage").expect("parses");
        assert_eq!(back, message);
        // Proto field names are accepted too.
        let request: v1::SendMessageRequest = from_json(
            br#"{"text": "hi", "client_message_id": "k1", "clientTimeMs": 5}"#,
            "fastchat.v1.SendMessageRequest",
        )
        .expect("parses");
        assert_eq!(
            (
                request.text.as_str(),
                request.client_message_id.as_str(),
                request.client_time_ms
            ),
            ("hi", "k1", 5)
        );
        let error =
            from_json::<v1::SendMessageRequest>(br#"{"txt": 1}"#, "fastchat.v1.SendMessageRequest")
                .expect_err("unknown field");
        assert_eq!(error.code(), Code::InvalidArgument);
    }

    #[test]
    fn statuses_map_to_http_with_their_reasons() {
        let status = Problem::new(Code::ResourceExhausted, reason::RATE_LIMITED, "slow down")
            .retry_after(Duration::from_millis(1500))
            .status();
        let response = error(&status);
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let body = error_body(&status);
        assert_eq!(body["code"], "RESOURCE_EXHAUSTED");
        assert_eq!(body["reason"], "RATE_LIMITED");
        assert_eq!(body["message"], "slow down");
        assert_eq!(body["details"][1]["retryDelay"], "1.500s");
        for (code, http) in [
            (Code::InvalidArgument, 400),
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::NotFound, 404),
            (Code::Unavailable, 503),
        ] {
            assert_eq!(http_status(code).as_u16(), http, "{code:?}");
        }
    }
}
