//! The gRPC faces of the sender: the seed API and fastchat.v1.

use std::time::Instant;

use fastchat_proto::{seed, v1};
use tonic::{Request, Response, Status};

use crate::{SendError, sender::Sender, validate::validate};

/// Counts the outcome and times the call, per API.
fn observe<T>(api: &'static str, started: Instant, result: &Result<T, SendError>) {
    let outcome = match result {
        Ok(_) => "stored",
        Err(SendError::Invalid { .. }) => "invalid",
        Err(SendError::Unavailable(_)) => "unavailable",
        Err(SendError::Internal(_)) => "internal",
    };
    metrics::counter!("fastchat_send_requests_total", "api" => api, "outcome" => outcome)
        .increment(1);
    metrics::histogram!("fastchat_send_duration_seconds", "api" => api)
        .record(started.elapsed().as_secs_f64());
}

/// Implements both SendMessageService traits over one [`Sender`].
#[derive(Debug, Clone)]
pub struct Api {
    sender: Sender,
}

impl Api {
    pub fn new(sender: Sender) -> Self {
        Self { sender }
    }
}

fn traceparent<T>(request: &Request<T>) -> Option<String> {
    request
        .metadata()
        .get(fastchat_proto::station::HEADER_TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[tonic::async_trait]
impl v1::send_message_service_server::SendMessageService for Api {
    async fn send_message(
        &self,
        request: Request<v1::SendMessageRequest>,
    ) -> Result<Response<v1::SendMessageResponse>, Status> {
        let started = Instant::now();
        let trace = traceparent(&request);
        let r = request.into_inner();
        let result = async {
            let new = validate(
                &r.room,
                r.author,
                r.text,
                &r.client_message_id,
                r.client_time_ms,
                &self.sender.limits,
            )?;
            self.sender.send(new, trace).await
        }
        .await;
        observe("v1", started, &result);
        let stored = result?;
        if stored.duplicate {
            metrics::counter!("fastchat_send_duplicates_total").increment(1);
        }
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
        let started = Instant::now();
        let trace = traceparent(&request);
        let m = request.into_inner();
        let result = async {
            let new = validate("", m.author, m.text, "", m.time, &self.sender.limits)?;
            self.sender.send(new, trace).await
        }
        .await;
        observe("seed", started, &result);
        result?;
        Ok(Response::new(seed::Empty {}))
    }
}
