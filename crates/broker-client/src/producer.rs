//! Producing to a station: publish with a message id and wait for the
//! JetStream acknowledgement.

use async_nats::{HeaderMap, jetstream::message::PublishMessage};
use bytes::Bytes;

use crate::{Error, Result, Station};

/// The broker's acknowledgement of a stored message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishAck {
    /// Stream sequence of the stored message. For a duplicate, the sequence
    /// of the message first stored under the same id.
    pub sequence: u64,
    /// True if a message with the same id was already stored inside the
    /// station's duplicate window; nothing new was stored.
    pub duplicate: bool,
}

/// Publishes to one station. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Producer {
    station: Station,
}

impl Station {
    /// A producer for this station.
    #[must_use]
    pub fn producer(&self) -> Producer {
        Producer {
            station: self.clone(),
        }
    }
}

impl Producer {
    /// Publishes `payload` to `subject` with `headers` and the dedup id
    /// `message_id` (`Nats-Msg-Id`), and returns once JetStream has stored it.
    ///
    /// Fails fast with [`crate::ErrorKind::Unavailable`] while the broker is
    /// disconnected rather than buffering the message for later: the caller
    /// is told, and nothing is written behind its back. Retrying with the same
    /// `message_id` is always safe.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Unavailable`] (not connected, or no stream
    /// leader) / [`crate::ErrorKind::Timeout`] (transient: retry with the
    /// same id), [`crate::ErrorKind::InvalidInput`] (too large, bad subject).
    pub async fn publish(
        &self,
        subject: &str,
        headers: HeaderMap,
        payload: Bytes,
        message_id: &str,
    ) -> Result<PublishAck> {
        let op = || format!("publish to `{subject}`");
        let broker = self.station.broker();
        broker.ensure_connected(op())?;
        let publish = PublishMessage::build()
            .headers(headers)
            .payload(payload)
            .message_id(message_id)
            .expected_stream(self.station.name());
        let future = broker
            .js()
            .send_publish(subject.to_owned(), publish)
            .await
            .map_err(|e| Error::nats(op(), e))?;
        let ack = future.await.map_err(|e| Error::nats(op(), e))?;
        Ok(PublishAck {
            sequence: ack.sequence,
            duplicate: ack.duplicate,
        })
    }
}
