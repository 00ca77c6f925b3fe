//! all-messages-service over HTTP: history as JSON and Server-Sent Events,
//! through the same handlers as the gRPC API (same tokens, grants, limits,
//! errors), in proto3 canonical JSON.
//!
//! - `GET /v1/rooms/{room}/messages?before_sequence=&limit=` → the
//!   `ListMessagesResponse`;
//! - `GET /v1/rooms/{room}/events` and `GET /v1/events?rooms=a,b` (every
//!   room when `rooms` is omitted) → `text/event-stream`: `event: message`
//!   (`id:` its sequence, `data:` the `ChatMessage`), `event: gap`,
//!   `event: caught_up` (`id:` the position), heartbeats as comments, and a
//!   last `event: error` with the error body if the stream fails. Start as
//!   in the proto (`after_sequence`, `last`, `since`, `new_only`); a
//!   `Last-Event-ID` header (what EventSource sends when it reconnects)
//!   resumes after that id exactly.
//!
//! EventSource cannot send an `Authorization` header: these two routes also
//! take the token as `?access_token=` (RFC 6750). Tokens are never logged,
//! wherever they travel; prefer `fetch()` with the header where possible.

use std::{convert::Infallible, str::FromStr as _};

use axum::{
    Router,
    extract::{Path, Query, Request, State},
    http::{HeaderValue, header},
    response::{
        IntoResponse as _, Response,
        sse::{Event as SseEvent, Sse},
    },
    routing::get,
};
use fastchat_proto::{prost_types, v1};
use fastchat_runtime::json;
use futures::{Stream, StreamExt as _};
use serde::Deserialize;
use tonic::Status;

use crate::service::Api;

/// The HTTP routes, calling `api`.
pub fn routes(api: Api) -> Router {
    Router::new()
        .route("/v1/rooms/{room}/messages", get(list))
        .route("/v1/rooms/{room}/events", get(room_events))
        .route("/v1/events", get(events))
        .with_state(api)
}

#[derive(Debug, Deserialize)]
pub(crate) struct Page {
    #[serde(default)]
    pub(crate) before_sequence: u64,
    #[serde(default)]
    pub(crate) limit: u32,
}

async fn list(
    State(api): State<Api>,
    Path(room): Path<String>,
    Query(page): Query<Page>,
    request: Request,
) -> Response {
    use v1::all_messages_service_server::AllMessagesService as _;
    let (parts, _) = request.into_parts();
    let message = v1::ListMessagesRequest {
        room,
        before_sequence: page.before_sequence,
        limit: page.limit,
    };
    match api.list_messages(json::grpc_request(parts, message)).await {
        Ok(response) => json::ok(json::to_json(
            response.get_ref(),
            "fastchat.v1.ListMessagesResponse",
        )),
        Err(status) => json::error(&status),
    }
}

/// Where an event stream starts, and its token for EventSource.
#[derive(Debug, Deserialize)]
pub(crate) struct Events {
    pub(crate) rooms: Option<String>,
    after_sequence: Option<u64>,
    last: Option<u32>,
    since: Option<String>,
    #[serde(default)]
    new_only: bool,
    access_token: Option<String>,
}

async fn room_events(
    State(api): State<Api>,
    Path(room): Path<String>,
    Query(query): Query<Events>,
    request: Request,
) -> Response {
    stream(api, vec![room], query, request).await
}

async fn events(State(api): State<Api>, Query(query): Query<Events>, request: Request) -> Response {
    let rooms = rooms_param(query.rooms.as_deref());
    stream(api, rooms, query, request).await
}

/// The rooms of `?rooms=a,b` (none when it is omitted or empty).
pub(crate) fn rooms_param(rooms: Option<&str>) -> Vec<String> {
    rooms
        .map(|rooms| {
            rooms
                .split(',')
                .filter(|r| !r.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

async fn stream(api: Api, rooms: Vec<String>, query: Events, request: Request) -> Response {
    use v1::all_messages_service_server::AllMessagesService as _;
    let (mut parts, _) = request.into_parts();
    let start = match start_param(&query, parts.headers.get("last-event-id")) {
        Ok(start) => start,
        Err(status) => return json::error(&status),
    };
    if let Some(token) = &query.access_token
        && !parts.headers.contains_key(header::AUTHORIZATION)
        && let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}"))
    {
        parts.headers.insert(header::AUTHORIZATION, value);
    }
    let message = v1::SubscribeRequest {
        room: String::new(),
        start,
        rooms,
    };
    match api.subscribe(json::grpc_request(parts, message)).await {
        Ok(response) => {
            let mut response = Sse::new(sse(response.into_inner())).into_response();
            let headers = response.headers_mut();
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            // nginx and others would otherwise buffer the stream.
            headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
            response
        }
        Err(status) => json::error(&status),
    }
}

/// Where an event stream starts: after the `Last-Event-ID` header's id
/// (EventSource resuming) if it is a number, else as the query says.
///
/// # Errors
/// INVALID_ARGUMENT for a `since` that is not an RFC 3339 time.
pub(crate) fn start_param(
    query: &Events,
    last_event_id: Option<&HeaderValue>,
) -> Result<Option<v1::subscribe_request::Start>, Status> {
    use v1::subscribe_request::Start;
    let resume = last_event_id
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    Ok(if let Some(after) = resume.or(query.after_sequence) {
        Some(Start::AfterSequence(after))
    } else if let Some(last) = query.last {
        Some(Start::Last(last))
    } else if let Some(since) = &query.since {
        match prost_types::Timestamp::from_str(since) {
            Ok(since) => Some(Start::Since(since)),
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "since: `{since}` is not an RFC 3339 time (e.g. 2026-12-01T10:00:00Z)"
                )));
            }
        }
    } else if query.new_only {
        Some(Start::NewOnly(true))
    } else {
        None
    })
}

/// A Subscribe stream as SSE events; a failure is one `error` event, then
/// the end.
fn sse(
    events: impl Stream<Item = Result<v1::SubscribeResponse, Status>> + Send + 'static,
) -> impl Stream<Item = Result<SseEvent, Infallible>> + Send + 'static {
    use v1::subscribe_response::Event;
    events
        .scan(false, |failed, item| {
            if *failed {
                return std::future::ready(None);
            }
            let event = match item {
                Ok(v1::SubscribeResponse { event: None }) => None,
                Ok(v1::SubscribeResponse { event: Some(event) }) => Some(match event {
                    Event::Message(m) => SseEvent::default()
                        .id(m.sequence.to_string())
                        .event("message")
                        .data(json::to_json(&m, "fastchat.v1.ChatMessage").to_string()),
                    Event::Gap(g) => SseEvent::default()
                        .id(g.to_sequence.to_string())
                        .event("gap")
                        .data(json::to_json(&g, "fastchat.v1.Gap").to_string()),
                    Event::CaughtUp(c) => SseEvent::default()
                        .id(c.sequence.to_string())
                        .event("caught_up")
                        .data(json::to_json(&c, "fastchat.v1.CaughtUp").to_string()),
                    Event::Heartbeat(h) => {
                        SseEvent::default().comment(format!("heartbeat {}", h.sequence))
                    }
                }),
                Err(status) => {
                    *failed = true;
                    Some(
                        SseEvent::default()
                            .event("error")
                            .data(json::error_body(&status).to_string()),
                    )
                }
            };
            std::future::ready(Some(event))
        })
        .filter_map(|event| std::future::ready(event.map(Ok)))
}
