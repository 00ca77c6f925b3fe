//! Stores validated messages in the station: stamps id and time, publishes
//! with a dedup id, waits for the JetStream ack, and for a duplicate returns
//! the message first stored under that id.

use std::time::{Duration, Instant, SystemTime};

use broker_client::{HeaderMap, Station};
use bytes::Bytes;
use fastchat_proto::{prost_types::Timestamp, station, v1};
use prost::Message as _;
use tokio::sync::watch;

use crate::{SendError, config::SendConfig, validate::NewMessage};

/// Stores messages in the station once it is ready.
#[derive(Debug, Clone)]
pub struct Sender {
    station: watch::Receiver<Option<Station>>,
    pub(crate) limits: SendConfig,
}

/// The outcome of a send.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// The message as stored (for a duplicate: the first one).
    pub message: v1::ChatMessage,
    /// True if it had been stored before under the same client message id.
    pub duplicate: bool,
}

impl Sender {
    pub fn new(station: watch::Receiver<Option<Station>>, limits: SendConfig) -> Self {
        Self { station, limits }
    }

    /// Stores `new`, or finds it stored already (same client message id,
    /// author and room inside the duplicate window).
    #[tracing::instrument(level = "debug", skip_all, fields(room = %new.room))]
    pub async fn send(
        &self,
        new: NewMessage,
        traceparent: Option<String>,
    ) -> Result<Stored, SendError> {
        let station = self
            .station
            .borrow()
            .clone()
            .ok_or_else(|| SendError::Unavailable("not connected to the broker yet".into()))?;
        let id = uuid::Uuid::now_v7().to_string();
        let mut message = v1::ChatMessage {
            id: id.clone(),
            room: new.room,
            author: new.author,
            text: new.text,
            sent_at: Some(Timestamp::from(SystemTime::now())),
            client_time_ms: new.client_time_ms,
            sequence: 0,
        };
        // Scoped so that two clients choosing the same key do not collide;
        // the author's length makes the concatenation unambiguous.
        let dedup_id = match &new.client_message_id {
            Some(key) => format!(
                "{}:{}:{}:{key}",
                message.room,
                message.author.len(),
                message.author
            ),
            None => id.clone(),
        };
        let mut headers = HeaderMap::new();
        headers.insert(station::HEADER_MESSAGE_ID, id.as_str());
        headers.insert(station::HEADER_CONTENT_TYPE, station::CONTENT_TYPE);
        if let Some(tp) = traceparent {
            headers.insert(station::HEADER_TRACEPARENT, tp.as_str());
        }
        let payload = Bytes::from(message.encode_to_vec());
        let subject = station::subject(&message.room);

        let ack = publish_retrying(
            &station,
            &subject,
            headers,
            payload,
            &dedup_id,
            Instant::now() + self.limits.timeout,
        )
        .await?;

        if !ack.duplicate {
            message.sequence = ack.sequence;
            tracing::debug!(sequence = ack.sequence, "stored");
            return Ok(Stored {
                message,
                duplicate: false,
            });
        }
        // The retry of a send that was stored: answer with the first one.
        let first = station
            .get(ack.sequence)
            .await?
            .and_then(|stored| v1::ChatMessage::decode(stored.payload).ok());
        let mut first = first.unwrap_or_else(|| {
            tracing::warn!(
                sequence = ack.sequence,
                "duplicate's original is gone; answering with this attempt"
            );
            message
        });
        first.sequence = ack.sequence;
        Ok(Stored {
            message: first,
            duplicate: true,
        })
    }
}

/// Publishes, retrying transient failures (time-outs, a broker briefly
/// away, a JetStream cluster electing a leader) with the same dedup id until
/// the caller's deadline cancels us. Safe: the station stores one message
/// per id inside its duplicate window, and the producer never buffers a
/// message while disconnected.
async fn publish_retrying(
    station: &Station,
    subject: &str,
    headers: HeaderMap,
    payload: Bytes,
    dedup_id: &str,
    deadline: Instant,
) -> Result<broker_client::PublishAck, SendError> {
    let producer = station.producer();
    let mut delay = Duration::from_millis(50);
    loop {
        let attempt = producer.publish(subject, headers.clone(), payload.clone(), dedup_id);
        let error = match tokio::time::timeout_at(deadline.into(), attempt).await {
            Ok(Ok(ack)) => return Ok(ack),
            Ok(Err(e)) if e.is_transient() => e,
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => {
                return Err(SendError::Unavailable(
                    "the broker did not confirm in time".into(),
                ));
            }
        };
        if Instant::now() + delay >= deadline {
            return Err(SendError::Unavailable(error.to_string()));
        }
        tracing::debug!(error = %error, ?delay, "publish not confirmed; retrying with the same id");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(500));
    }
}
