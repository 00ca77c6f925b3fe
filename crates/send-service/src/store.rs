//! Stores validated messages in the station: stamps id and time, publishes
//! with a dedup id (retrying transient failures until the send deadline),
//! and for a duplicate returns the message first stored under that id.

use std::time::{Duration, SystemTime};

use broker_client::{PublishAck, Station, TraceContext};
use fastchat_backoff::ExponentialBackoff;
use fastchat_proto::{prost_types::Timestamp, v1};
use fastchat_wire::Outgoing;
use tokio::{sync::watch, time::Instant};

use crate::{SendError, validate::NewMessage};

/// Where send-service puts messages: the station, once it is ready.
#[derive(Debug, Clone)]
pub struct Store {
    station: watch::Receiver<Option<Station>>,
    /// Time a send may take before it answers UNAVAILABLE.
    timeout: Duration,
}

/// The outcome of a send.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// The message as stored (for a duplicate: the first one).
    pub message: v1::ChatMessage,
    /// True if it had been stored before under the same client message id.
    pub duplicate: bool,
}

impl Store {
    pub fn new(station: watch::Receiver<Option<Station>>, timeout: Duration) -> Self {
        Self { station, timeout }
    }

    /// Stores `new`, or finds it stored already (same client message id,
    /// author and room inside the duplicate window).
    #[tracing::instrument(level = "debug", skip_all, fields(room = %new.room))]
    pub async fn store(
        &self,
        new: NewMessage,
        author_verified: bool,
        trace: Option<&TraceContext>,
    ) -> Result<Stored, SendError> {
        let station = self
            .station
            .borrow()
            .clone()
            .ok_or_else(|| SendError::unavailable("not connected to the broker yet"))?;
        let dedup_id = dedup_id(&new);
        let mut message = v1::ChatMessage {
            id: uuid::Uuid::now_v7().to_string(),
            room: new.room,
            author: new.author,
            text: new.text,
            sent_at: Some(Timestamp::from(SystemTime::now())),
            client_time_ms: new.client_time_ms,
            sequence: 0,
            author_verified,
        };
        let outgoing = fastchat_wire::encode(&message, trace);
        let dedup_id = dedup_id.unwrap_or_else(|| message.id.clone());
        let ack =
            publish_retrying(&station, outgoing, &dedup_id, Instant::now() + self.timeout).await?;

        if !ack.duplicate {
            message.sequence = ack.sequence;
            tracing::debug!(sequence = ack.sequence, "stored");
            return Ok(Stored {
                message,
                duplicate: false,
            });
        }
        // The retry of a send that was stored: answer with the first one.
        let first = match station.get(ack.sequence).await? {
            Some(stored) => fastchat_wire::decode(&stored)
                .inspect_err(|e| tracing::warn!(sequence = ack.sequence, error = %e, "duplicate's original does not decode"))
                .ok(),
            None => None,
        };
        let first = first.unwrap_or_else(|| {
            tracing::warn!(
                sequence = ack.sequence,
                "duplicate's original is gone; answering with this attempt"
            );
            v1::ChatMessage {
                sequence: ack.sequence,
                ..message
            }
        });
        Ok(Stored {
            message: first,
            duplicate: true,
        })
    }
}

/// The broker's dedup id of a message with a client message id: scoped so
/// that two clients choosing the same key do not collide; the author's
/// length makes the concatenation unambiguous.
fn dedup_id(new: &NewMessage) -> Option<String> {
    new.client_message_id
        .as_ref()
        .map(|key| format!("{}:{}:{}:{key}", new.room, new.author.len(), new.author))
}

/// Publishes, retrying transient failures (time-outs, a broker briefly
/// away, a JetStream cluster electing a leader) with the same dedup id until
/// `deadline`. Safe: the station stores one message per id inside its
/// duplicate window, and the producer never buffers a message while
/// disconnected.
async fn publish_retrying(
    station: &Station,
    outgoing: Outgoing,
    dedup_id: &str,
    deadline: Instant,
) -> Result<PublishAck, SendError> {
    let producer = station.producer();
    let mut backoff =
        ExponentialBackoff::doubling(Duration::from_millis(50), Duration::from_millis(500))
            .stream();
    loop {
        let attempt = producer.publish(
            &outgoing.subject,
            outgoing.headers.clone(),
            outgoing.payload.clone(),
            dedup_id,
        );
        let error = match tokio::time::timeout_at(deadline, attempt).await {
            Ok(Ok(ack)) => return Ok(ack),
            Ok(Err(e)) if e.is_transient() => e,
            Ok(Err(e)) => {
                return Err(SendError::broker(e, Some(station.config().max_bytes)));
            }
            Err(_) => return Err(SendError::unavailable("the broker did not confirm in time")),
        };
        let delay = backoff.next_delay();
        if Instant::now() + delay >= deadline {
            return Err(error.into());
        }
        tracing::debug!(error = %error.report(), ?delay, "publish not confirmed; retrying with the same id");
        tokio::time::sleep(delay).await;
    }
}
