//! The gRPC faces of the store: the seed API and fastchat.v1.

use std::{net::SocketAddr, time::Instant};

use broker_client::TraceContext;
use fastchat_auth::{Caller, Operation};
use fastchat_proto::{seed, station, v1};
use fastchat_runtime::{
    config::LimitsConfig,
    gate::{Gate, IdentityKey},
    ratelimit::PerIdentity,
};
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use crate::{
    SendError,
    config::SendConfig,
    store::{Store, Stored},
    validate::validate,
};

/// Implements both SendMessageService traits over one [`Store`].
#[derive(Debug, Clone)]
pub struct Api {
    store: Store,
    limits: SendConfig,
    gate: Gate,
    rate: PerIdentity,
    rate_limits: LimitsConfig,
}

/// Who sent a request, and from where.
struct Sender {
    caller: Caller,
    peer: Option<SocketAddr>,
}

impl Api {
    pub fn new(store: Store, limits: SendConfig, gate: Gate, rate_limits: &LimitsConfig) -> Self {
        Self {
            store,
            limits,
            gate,
            rate: PerIdentity::new(rate_limits.send_per_second, rate_limits.send_burst),
            rate_limits: rate_limits.clone(),
        }
    }

    /// The per-identity rate limiter (its idle entries are forgotten by a
    /// background task).
    pub fn rate(&self) -> PerIdentity {
        self.rate.clone()
    }

    /// The caller of `request`.
    fn sender<T>(&self, request: &Request<T>) -> Result<Sender, SendError> {
        Ok(Sender {
            caller: self
                .gate
                .caller(request)
                .map_err(SendError::Unauthenticated)?,
            peer: request.remote_addr(),
        })
    }

    /// Checks, validates and stores one request of either API, counting the
    /// outcome and timing the call under `api`.
    async fn send(
        &self,
        api: &'static str,
        sender: Result<Sender, SendError>,
        request: v1::SendMessageRequest,
        trace: Option<&TraceContext>,
    ) -> Result<Stored, SendError> {
        let started = Instant::now();
        let result = match sender {
            Ok(sender) => self.checked(&sender, request, trace).await,
            Err(e) => Err(e),
        };
        let outcome = match &result {
            Ok(stored) if stored.duplicate => {
                metrics::counter!("fastchat_send_duplicates_total").increment(1);
                "stored"
            }
            Ok(_) => "stored",
            Err(SendError::Invalid { .. }) => "invalid",
            Err(SendError::Unavailable(_)) => "unavailable",
            Err(SendError::StoreFull { .. }) => "store_full",
            Err(SendError::Denied(_) | SendError::Unauthenticated(_)) => "denied",
            Err(SendError::RateLimited { .. }) => "rate_limited",
            Err(SendError::Internal(_)) => "internal",
        };
        metrics::counter!("fastchat_send_requests_total", "api" => api, "outcome" => outcome)
            .increment(1);
        // trace: the send span's attributes
        crate::trace::record(&result, outcome);
        metrics::histogram!("fastchat_send_duration_seconds", "api" => api)
            .record(started.elapsed().as_secs_f64());
        result
    }

    async fn checked(
        &self,
        sender: &Sender,
        mut request: v1::SendMessageRequest,
        trace: Option<&TraceContext>,
    ) -> Result<Stored, SendError> {
        let key = IdentityKey::of(&sender.caller, sender.peer);
        if let Err(retry_after) = self.rate.check(&key) {
            metrics::counter!("fastchat_rate_limited_total", "api" => "send").increment(1);
            return Err(SendError::RateLimited {
                retry_after,
                per_second: self.rate_limits.send_per_second,
                burst: self.rate_limits.send_burst,
            });
        }
        // May this caller write there at all? Before anything else is said
        // about the request (an invalid room name is left to validation).
        let room = if request.room.is_empty() {
            station::DEFAULT_ROOM
        } else {
            &request.room
        };
        if station::is_valid_room(room) {
            sender.caller.authorize(room, Operation::Write)?;
        }
        // With a token the author is the token's identity.
        let author = sender.caller.author(&request.author)?;
        request.author = author.name;
        let new = validate(request, &self.limits)?;
        self.store.store(new, author.verified, trace).await
    }
}

/// The seed API's message as a fastchat.v1 request: room `general`, its
/// `time` as the client's time.
pub(crate) fn seed_request(message: seed::ChatMessage) -> v1::SendMessageRequest {
    v1::SendMessageRequest {
        room: String::new(),
        author: message.author,
        text: message.text,
        client_message_id: String::new(),
        client_time_ms: message.time,
    }
}

/// An error about a field named as the seed API names it (its `time` is
/// v1's `client_time_ms`; the other fields it has are named alike).
pub(crate) fn seed_field(error: SendError) -> SendError {
    match error {
        SendError::Invalid {
            field: "client_time_ms",
            reason,
        } => SendError::Invalid {
            field: "time",
            reason,
        },
        other => other,
    }
}

#[tonic::async_trait]
impl v1::send_message_service_server::SendMessageService for Api {
    async fn send_message(
        &self,
        request: Request<v1::SendMessageRequest>,
    ) -> Result<Response<v1::SendMessageResponse>, Status> {
        // trace: the send span, child of the request's traceparent
        let (span, trace) = crate::trace::send_span("v1", &request);
        let sender = self.sender(&request);
        let stored = self
            .send("v1", sender, request.into_inner(), trace.as_ref())
            .instrument(span)
            .await?;
        Ok(Response::new(v1::SendMessageResponse {
            message: Some(stored.message),
            duplicate: stored.duplicate,
        }))
    }
}

#[tonic::async_trait]
impl seed::send_message_service_server::SendMessageService for Api {
    async fn send(
        &self,
        request: Request<seed::ChatMessage>,
    ) -> Result<Response<seed::Empty>, Status> {
        // trace: the send span, child of the request's traceparent
        let (span, trace) = crate::trace::send_span("seed", &request);
        let sender = self.sender(&request);
        Api::send(
            self,
            "seed",
            sender,
            seed_request(request.into_inner()),
            trace.as_ref(),
        )
        .instrument(span)
        .await
        .map_err(seed_field)?;
        Ok(Response::new(seed::Empty {}))
    }
}
