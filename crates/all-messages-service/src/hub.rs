//! The live feed: one fan-out consumer per process, re-broadcast in-process
//! to every subscription.
//!
//! A subscription joins by taking, atomically, a broadcast receiver and the
//! sequence `h` of the last message broadcast so far ([`Hub::join`]): every
//! message after `h` will arrive on the receiver, every message up to `h`
//! must come from the station. That is what makes the replay→live switch
//! exact, with no gap and no duplicate.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use broker_client::{Delivered, StartPosition};
use fastchat_backoff::ExponentialBackoff;
use fastchat_proto::{station, v1};
use fastchat_runtime::service::Context;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

/// A stored chat message, shared by every subscriber that gets it: it is
/// copied into a response only when a client's stream is written.
// trace: the message travels with its stored trace context
pub type Shared = Arc<crate::trace::Live>;

/// Decodes a station message; `None` (logged) for one that is not a
/// FastChat chat message, which subscribers then skip.
pub fn decode(delivered: &Delivered) -> Option<v1::ChatMessage> {
    fastchat_wire::decode(delivered)
        .inspect_err(|e| {
            tracing::warn!(sequence = delivered.sequence, subject = %delivered.subject, error = %e, "skipping undecodable message");
        })
        .ok()
}

/// How often the live feed's lag behind the station is measured.
const LAG_EVERY: Duration = Duration::from_secs(5);

/// The live feed as a subscription joined it.
#[derive(Debug)]
pub struct Joined {
    /// Every message broadcast after `after`.
    pub receiver: broadcast::Receiver<Shared>,
    /// Messages up to this sequence must come from the station.
    pub after: u64,
}

/// The in-process live feed.
#[derive(Debug)]
pub struct Hub {
    /// Sequence of the last message broadcast. Held while broadcasting and
    /// while joining so the two cannot interleave (see the module docs).
    /// A std mutex: nothing is awaited under it, and it is held for a
    /// non-blocking `send`/`subscribe` only.
    last: Mutex<u64>,
    tx: broadcast::Sender<Shared>,
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

    /// Joins the live feed.
    pub fn join(&self) -> Joined {
        let last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Joined {
            receiver: self.tx.subscribe(),
            after: *last,
        }
    }

    /// Sequence of the last message the live feed passed on.
    fn position(&self) -> u64 {
        *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Publishes how far the live feed is behind the station, every
    /// [`LAG_EVERY`], until shutdown: `fastchat_live_feed_lag_messages`
    /// (0 when it keeps up; growing when this replica cannot keep up with
    /// the station's rate, or its broker connection is stuck).
    async fn report_lag(
        self: Arc<Self>,
        station: broker_client::Station,
        cancel: CancellationToken,
    ) {
        let lag = metrics::gauge!("fastchat_live_feed_lag_messages");
        let mut tick = tokio::time::interval(LAG_EVERY);
        while cancel.run_until_cancelled(tick.tick()).await.is_some() {
            // A broker that does not answer is readiness's business; the
            // gauge keeps its last value meanwhile.
            if let Some(Ok(state)) = cancel.run_until_cancelled(station.state()).await {
                #[expect(
                    clippy::cast_precision_loss,
                    reason = "a gauge; exact below 2^53 messages"
                )]
                lag.set(state.last_sequence.saturating_sub(self.position()) as f64);
            }
        }
    }

    fn broadcast(&self, sequence: u64, message: Option<crate::trace::Live>) {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *last = sequence;
        if let Some(message) = message {
            // No receivers is fine: nobody is subscribed right now.
            let _ = self.tx.send(Arc::new(message));
        }
    }

    /// Feeds the hub from the station until shutdown.
    pub async fn run(self: Arc<Self>, context: Context) {
        let Some(station) = context.station_ready().await else {
            return;
        };
        // Start after the newest stored message: everything up to it is
        // history, served from the station.
        let mut backoff =
            ExponentialBackoff::doubling(Duration::from_millis(100), Duration::from_secs(5))
                .stream();
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
            match context.cancel.run_until_cancelled(attempt).await {
                None => return,
                Some(Ok(started)) => break started,
                Some(Err(e)) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e.report(), ?delay, "live feed not started; retrying");
                    if context
                        .cancel
                        .run_until_cancelled(tokio::time::sleep(delay))
                        .await
                        .is_none()
                    {
                        return;
                    }
                }
            }
        };
        self.broadcast(start, None);
        self.started.send_replace(true);
        context
            .tracker
            .spawn(Arc::clone(&self).report_lag(station.clone(), context.cancel.clone()));
        tracing::info!(after_sequence = start, "live feed started");
        let sequence_gauge = metrics::gauge!("fastchat_live_feed_sequence");
        while let Some(delivered) = context.cancel.run_until_cancelled(fan_out.next()).await {
            // trace: decoded with its stored trace context
            self.broadcast(delivered.sequence, crate::trace::decode(&delivered));
            #[expect(
                clippy::cast_precision_loss,
                reason = "a gauge; exact below 2^53, which no station reaches"
            )]
            sequence_gauge.set(delivered.sequence as f64);
        }
    }
}
