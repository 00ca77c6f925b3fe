//! Hooks for the fuzz targets in `fuzz/` (not an API: they change with the
//! targets). Each is the service's own code path, without a broker or a
//! server: what a request is turned into and what validation says of it.

use std::sync::Arc;

use axum::{
    extract::Query,
    http::{HeaderValue, Uri},
};
use fastchat_proto::{seed, v1};
use tonic::Status;

use crate::{
    http::{Events, Page},
    service,
    subscription::{self, Rooms},
};

/// Where a checked subscription starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Every retained message.
    All,
    /// Messages with sequence > this.
    After(u64),
    /// Messages stored at or after this time, in nanoseconds since the
    /// Unix epoch.
    Since(i128),
    /// The last N messages (N > 0).
    Last(u32),
    /// Only new messages.
    New,
}

/// A `Subscribe` as the service checked it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// The rooms (`None`: every room), sorted, without repeats.
    pub rooms: Option<Vec<String>>,
    /// Where it starts.
    pub start: Start,
}

/// `Subscribe`'s validation of its request (rooms, then start).
///
/// # Errors
/// INVALID_ARGUMENT naming the field.
pub fn validate_subscribe(request: v1::SubscribeRequest) -> Result<Subscribe, Status> {
    let rooms = match service::rooms_of(&request.room, &request.rooms)? {
        Rooms::Every => None,
        Rooms::Only(rooms) => Some(rooms.into_iter().collect()),
    };
    let start = match service::start_of(request.start)? {
        subscription::Start::All => Start::All,
        subscription::Start::After(after) => Start::After(after),
        subscription::Start::Since(time) => Start::Since(time.unix_timestamp_nanos()),
        subscription::Start::Last(n) => Start::Last(n),
        subscription::Start::New => Start::New,
    };
    Ok(Subscribe { rooms, start })
}

/// A checked `ListMessages`: (room, limit, before).
pub type ListPage = (String, u32, Option<u64>);

/// `ListMessages`' validation of its request.
///
/// # Errors
/// INVALID_ARGUMENT naming the field.
pub fn validate_list(request: &v1::ListMessagesRequest) -> Result<ListPage, Status> {
    let page = service::page_of(request)?;
    Ok((page.room, page.limit, page.before))
}

fn query<T: serde::de::DeserializeOwned>(query: &str) -> Result<T, Status> {
    let uri = Uri::try_from(format!("/?{query}"))
        .map_err(|e| Status::invalid_argument(format!("not a URI: {e}")))?;
    Query::<T>::try_from_uri(&uri)
        .map(|Query(q)| q)
        .map_err(|e| Status::invalid_argument(e.body_text()))
}

/// The `SubscribeRequest` of `GET /v1/rooms/{room}/events?query` (with
/// `path_room`) or `GET /v1/events?query` (without), with the
/// `Last-Event-ID` header's value if there is one.
///
/// # Errors
/// INVALID_ARGUMENT for a query the route refuses.
pub fn http_subscribe(
    path_room: Option<String>,
    query_string: &str,
    last_event_id: Option<&[u8]>,
) -> Result<v1::SubscribeRequest, Status> {
    let events: Events = query(query_string)?;
    let rooms = match path_room {
        Some(room) => vec![room],
        None => crate::http::rooms_param(events.rooms.as_deref()),
    };
    let last_event_id = last_event_id.and_then(|v| HeaderValue::from_bytes(v).ok());
    let start = crate::http::start_param(&events, last_event_id.as_ref())?;
    Ok(v1::SubscribeRequest {
        room: String::new(),
        start,
        rooms,
    })
}

/// The `ListMessagesRequest` of `GET /v1/rooms/{room}/messages?query`.
///
/// # Errors
/// INVALID_ARGUMENT for a query the route refuses.
pub fn http_list(room: String, query_string: &str) -> Result<v1::ListMessagesRequest, Status> {
    let page: Page = query(query_string)?;
    Ok(v1::ListMessagesRequest {
        room,
        before_sequence: page.before_sequence,
        limit: page.limit,
    })
}

/// What the seed API's `all` stream sends for a stored message.
#[must_use]
pub fn seed_message(message: v1::ChatMessage) -> Option<seed::ChatMessage> {
    service::to_seed(subscription::Event::Message(Arc::new(message.into())))
}
