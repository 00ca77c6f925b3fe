//! The live feed: one fan-out consumer per process, re-broadcast in-process
//! to every subscription.
//!
//! A subscription joins by taking, atomically, a broadcast receiver and the
//! sequence `h` of the last message broadcast so far ([`Hub::subscribe`]):
//! every message after `h` will arrive on the receiver, every message up to
//! `h` must come from the station. That is what makes the replay→live switch
//! exact, with no gap and no duplicate.

use std::sync::{Arc, Mutex};

use broker_client::{Delivered, StartPosition};
use fastchat_proto::{station, v1};
use fastchat_runtime::service::Context;
use prost::Message as _;
use tokio::sync::{broadcast, watch};

/// A decoded message of the station.
#[derive(Debug)]
pub struct Live {
    /// Its station sequence (also in `message.sequence`).
    pub sequence: u64,
    /// The message, ready to send.
    pub message: v1::ChatMessage,
}

/// Decodes a station message; `None` (logged) for a payload that is not a
/// FastChat message, which subscribers then skip.
pub fn decode(delivered: &Delivered) -> Option<Live> {
    match v1::ChatMessage::decode(delivered.payload.as_ref()) {
        Ok(mut message) => {
            message.sequence = delivered.sequence;
            if message.room.is_empty() {
                message.room = station::room_of(&delivered.subject)
                    .unwrap_or_default()
                    .to_owned();
            }
            Some(Live {
                sequence: delivered.sequence,
                message,
            })
        }
        Err(e) => {
            tracing::warn!(sequence = delivered.sequence, subject = %delivered.subject, error = %e, "skipping undecodable message");
            None
        }
    }
}

/// The in-process live feed.
#[derive(Debug)]
pub struct Hub {
    /// Sequence of the last message broadcast. Held while broadcasting and
    /// while subscribing so the two cannot interleave (see the module docs).
    /// A std mutex: nothing is awaited under it, and it is held for a
    /// non-blocking `send`/`subscribe` only.
    last: Mutex<u64>,
    tx: broadcast::Sender<Arc<Live>>,
    started: watch::Sender<bool>,
}

impl Hub {
    /// A hub whose subscribers may fall `capacity` messages behind before they
    /// are switched to catching up from the station.
    pub fn new(capacity: usize) -> Arc<Self> {
        let (tx, _) = broadcast::channel(capacity);
        Arc::new(Self {
            last: Mutex::new(0),
            tx,
            started: watch::Sender::new(false),
        })
    }

    /// Whether the live feed is running (the station is ready).
    pub fn is_started(&self) -> bool {
        *self.started.borrow()
    }

    /// Turns true once the live feed runs.
    pub fn started(&self) -> watch::Receiver<bool> {
        self.started.subscribe()
    }

    /// Joins the live feed: a receiver of every message after the returned
    /// sequence.
    pub fn subscribe(&self) -> (broadcast::Receiver<Arc<Live>>, u64) {
        let last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (self.tx.subscribe(), *last)
    }

    fn broadcast(&self, sequence: u64, live: Option<Live>) {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *last = sequence;
        if let Some(live) = live {
            // No receivers is fine: nobody is subscribed right now.
            let _ = self.tx.send(Arc::new(live));
        }
    }

    /// Feeds the hub from the station until shutdown.
    pub async fn run(self: Arc<Self>, context: Context) {
        let Some(station) = context.station_ready().await else {
            return;
        };
        // Start after the newest stored message: everything up to it is
        // history, served from the station.
        let (start, mut fan_out) = loop {
            let attempt = async {
                let state = station.state().await?;
                let fan_out = station
                    .fan_out(
                        station::ALL_ROOMS,
                        StartPosition::after(state.last_sequence),
                    )
                    .await?;
                Ok::<_, broker_client::Error>((state.last_sequence, fan_out))
            };
            match fastchat_runtime::server::until_cancelled(&context.cancel, attempt).await {
                None => return,
                Some(Ok(started)) => break started,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "live feed not started; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            }
        };
        self.broadcast(start, None);
        self.started.send_replace(true);
        tracing::info!(after_sequence = start, "live feed started");
        let sequence_gauge = metrics::gauge!("fastchat_live_feed_sequence");
        loop {
            tokio::select! {
                () = context.cancel.cancelled() => return,
                delivered = fan_out.next() => {
                    let live = decode(&delivered);
                    self.broadcast(delivered.sequence, live);
                    #[allow(clippy::cast_precision_loss)] // a gauge; exact below 2^53
                    sequence_gauge.set(delivered.sequence as f64);
                }
            }
        }
    }
}
