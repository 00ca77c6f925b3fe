//! send-service over HTTP/JSON, for curl and bots: the same handlers as the
//! gRPC API (same tokens, grants, limits and errors), in proto3 canonical
//! JSON.
//!
//! - `POST /v1/rooms/{room}/messages` with a `SendMessageRequest` body
//!   (`{"text", "client_message_id"?, "client_time_ms"?}`; `author` only
//!   where anonymous sends are granted) → the `SendMessageResponse`;
//! - `POST /client` with the seed's `{"author", "text", "time"}` → the
//!   seed article's `{"status": true, "message": "Acknowledged"}`.

use std::time::Duration;

use axum::{
    Router,
    extract::{Path, Request, State},
    response::Response,
    routing::post,
};
use fastchat_proto::{seed, v1};
use fastchat_runtime::json;
use tonic::Status;

use crate::service::Api;

#[derive(Clone)]
struct Http {
    api: Api,
    max_body: usize,
    body_timeout: Duration,
}

/// The JSON routes, calling `api`; request bodies are bounded as gRPC ones
/// are (`grpc.max_request_bytes`, `grpc.request_body_timeout`).
pub fn routes(api: Api, max_body: usize, body_timeout: Duration) -> Router {
    Router::new()
        .route("/v1/rooms/{room}/messages", post(send))
        .route("/client", post(seed_send))
        .with_state(Http {
            api,
            max_body,
            body_timeout,
        })
}

async fn send(State(http): State<Http>, Path(room): Path<String>, request: Request) -> Response {
    use v1::send_message_service_server::SendMessageService as _;
    let (parts, body) = request.into_parts();
    let sent = async {
        let body = json::read_body(body, http.max_body, http.body_timeout).await?;
        let message = send_request(room, &body)?;
        http.api
            .send_message(json::grpc_request(parts, message))
            .await
    };
    match sent.await {
        Ok(response) => json::ok(json::to_json(
            response.get_ref(),
            "fastchat.v1.SendMessageResponse",
        )),
        Err(status) => json::error(&status),
    }
}

/// The `SendMessageRequest` of `POST /v1/rooms/{room}/messages`: the JSON
/// body, with the room from the path (whatever the body says).
pub(crate) fn send_request(room: String, body: &[u8]) -> Result<v1::SendMessageRequest, Status> {
    let mut message: v1::SendMessageRequest =
        json::from_json(body, "fastchat.v1.SendMessageRequest")?;
    message.room = room;
    Ok(message)
}

/// The seed `ChatMessage` of `POST /client`.
pub(crate) fn seed_message(body: &[u8]) -> Result<seed::ChatMessage, Status> {
    json::from_json(body, "ChatMessage.ChatMessage")
}

async fn seed_send(State(http): State<Http>, request: Request) -> Response {
    use seed::send_message_service_server::SendMessageService as _;
    let (parts, body) = request.into_parts();
    let sent = async {
        let body = json::read_body(body, http.max_body, http.body_timeout).await?;
        let message = seed_message(&body)?;
        http.api.send(json::grpc_request(parts, message)).await
    };
    match sent.await {
        Ok(_) => json::ok(serde_json::json!({ "status": true, "message": "Acknowledged" })),
        Err(status) => json::error(&status),
    }
}
