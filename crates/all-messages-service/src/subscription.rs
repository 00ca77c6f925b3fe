//! One subscription: replay from its start position out of the station, then
//! live from the hub; if it falls too far behind the live feed, catch up from
//! the station again and rejoin. Messages go out in sequence order, each
//! exactly once, never skipped.

use std::sync::Arc;

use broker_client::{OffsetDateTime, StartPosition, Station};
use fastchat_proto::station;
use tokio::sync::{
    broadcast::{self, error::RecvError},
    mpsc,
};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::{
    error::ApiError,
    hub::{self, Hub},
};

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Every retained message.
    All,
    /// Messages with sequence > this.
    After(u64),
    /// Messages stored at or after this time.
    Since(OffsetDateTime),
    /// The last N messages.
    Last(u32),
    /// Only messages stored after subscribing.
    New,
}

/// What a subscription emits.
#[derive(Debug, Clone)]
pub enum Event {
    /// A message, shared with every other subscriber that gets it: it is
    /// copied into a response only when the client's stream is written.
    Message(Arc<hub::Live>),
    /// Sequences asked for but no longer retained.
    Gap { from: u64, to: u64 },
}

/// A subscription request, validated.
#[derive(Debug, Clone)]
pub struct Request {
    /// `None` = every room.
    pub room: Option<String>,
    /// Start position.
    pub start: Start,
}

/// What flows from a subscription task to its gRPC stream. Kept small (a
/// pointer or two): every subscriber's queue allocates room for a block of
/// them up front.
pub type Item = Result<Event, Box<Status>>;

/// Sends events to the client, stopping on shutdown or when it hangs up.
struct Sink {
    tx: mpsc::Sender<Item>,
    cancel: CancellationToken,
    /// Sequence up to which everything matching was sent: the resume cursor.
    cursor: u64,
    delivered: metrics::Counter,
}

/// Why a subscription ended.
enum End {
    /// The client went away, or the server is shutting down.
    Stopped,
    /// A failure to report to the client.
    Failed(ApiError),
}

impl Sink {
    async fn send(&mut self, event: Event) -> Result<(), End> {
        tokio::select! {
            () = self.cancel.cancelled() => Err(End::Stopped),
            sent = self.tx.send(Ok(event)) => sent.map_err(|_| End::Stopped),
        }
    }

    async fn message(&mut self, message: Arc<hub::Live>) -> Result<(), End> {
        let sequence = message.sequence;
        self.send(Event::Message(message)).await?;
        self.cursor = sequence;
        self.delivered.increment(1);
        Ok(())
    }
}

/// The live feed as joined when the subscription was accepted: a receiver
/// and the sequence up to which history must come from the station.
pub type Joined = (broadcast::Receiver<Arc<hub::Live>>, u64);

/// Runs a subscription until the client goes away, the server shuts down, or
/// the broker fails (reported as UNAVAILABLE with the resume cursor).
///
/// `joined` is taken from [`Hub::subscribe`] before the RPC answers, so a
/// `new_only` subscriber gets everything stored after its call returned.
pub async fn run(
    hub: Arc<Hub>,
    joined: Joined,
    station: Station,
    request: Request,
    tx: mpsc::Sender<Item>,
    cancel: CancellationToken,
) {
    let mut sink = Sink {
        tx,
        cancel,
        cursor: 0,
        delivered: metrics::counter!("fastchat_messages_delivered_total"),
    };
    let active = metrics::gauge!("fastchat_subscriptions_active");
    active.increment(1.0);
    metrics::counter!("fastchat_subscriptions_total").increment(1);
    let outcome = serve(&hub, joined, &station, &request, &mut sink).await;
    active.decrement(1.0);
    let status = match outcome {
        Ok(()) | Err(End::Stopped) if !sink.cancel.is_cancelled() => return,
        Ok(()) | Err(End::Stopped) => Status::unavailable(format!(
            "server shutting down; resubscribe with after_sequence = {}",
            sink.cursor
        )),
        Err(End::Failed(e)) => {
            let mut status = Status::from(e);
            if status.code() == tonic::Code::Unavailable {
                status = Status::unavailable(format!(
                    "{}; resubscribe with after_sequence = {}",
                    status.message(),
                    sink.cursor
                ));
            }
            status
        }
    };
    let _ = sink.tx.try_send(Err(Box::new(status)));
}

// The rare, large steps (replays, station requests) are boxed: a waiting
// subscription's future then holds only the live loop's state (1.6 KiB
// instead of 11 KiB per subscriber; make bench measures memory).
async fn serve(
    hub: &Hub,
    joined: Joined,
    station: &Station,
    request: &Request,
    sink: &mut Sink,
) -> Result<(), End> {
    let room = request.room.as_deref();
    let filter = room.map_or_else(|| station::ALL_ROOMS.to_owned(), station::subject);
    let failed = |e: broker_client::Error| End::Failed(e.into());

    let (mut live, joined_at) = joined;
    let first = match request.start {
        Start::New => None,
        Start::All => Some(StartPosition::All),
        Start::Since(t) => Some(StartPosition::Since(t)),
        Start::After(after) => {
            sink.cursor = after;
            let newest = Box::pin(report_gap(station, sink)).await?;
            if after > newest {
                return Err(End::Failed(ApiError::Invalid {
                    field: "after_sequence",
                    reason: format!(
                        "{after} is beyond the newest stored message ({newest}); resume from a \
                         sequence this station delivered"
                    ),
                }));
            }
            Some(StartPosition::after(after))
        }
        Start::Last(n) => Some(
            match Box::pin(station.nth_last_sequence(
                &filter,
                u64::from(n),
                Some(joined_at.saturating_add(1)),
            ))
            .await
            .map_err(failed)?
            {
                Some(sequence) => StartPosition::FromSequence(sequence),
                None => StartPosition::All,
            },
        ),
    };
    if let Some(start) = first {
        Box::pin(replay(station, &filter, start, joined_at, None, sink)).await?;
    }
    sink.cursor = sink.cursor.max(joined_at);

    loop {
        let received = tokio::select! {
            () = sink.cancel.cancelled() => return Err(End::Stopped),
            // An idle subscription would otherwise notice a vanished client
            // only at its next message, holding its place meanwhile.
            () = sink.tx.closed() => return Err(End::Stopped),
            received = live.recv() => received,
        };
        match received {
            Ok(message) => {
                if message.sequence <= sink.cursor {
                    continue;
                }
                let sequence = message.sequence;
                if room.is_none_or(|r| r == message.message.room) {
                    sink.message(message).await?;
                }
                sink.cursor = sequence;
            }
            Err(RecvError::Lagged(missed)) => {
                // Too slow for the live feed: read what we missed from the
                // station, then rejoin. Nobody else waits for us.
                metrics::counter!("fastchat_subscription_catchups_total").increment(1);
                tracing::debug!(
                    missed,
                    cursor = sink.cursor,
                    "subscriber lagged; catching up from the station"
                );
                let (rejoined, joined_at) = hub.subscribe();
                live = rejoined;
                Box::pin(report_gap(station, sink)).await?;
                Box::pin(replay(
                    station,
                    &filter,
                    StartPosition::after(sink.cursor),
                    joined_at,
                    Some(CATCH_UP_BATCH),
                    sink,
                ))
                .await?;
                sink.cursor = sink.cursor.max(joined_at);
            }
            Err(RecvError::Closed) => {
                return Err(End::Failed(ApiError::Unavailable(
                    "live feed stopped".into(),
                )));
            }
        }
    }
}

/// Messages fetched at a time while a subscriber that fell behind catches
/// up: it is slow by definition, so the broker should not send ahead of it
/// (a push read would, by megabytes, in bursts that compete with everyone
/// else's live feed).
const CATCH_UP_BATCH: usize = 256;

/// Sends the stored messages from `start` up to at least `until`; read
/// `batch` at a time if given, else as fast as the broker pushes them.
async fn replay(
    station: &Station,
    filter: &str,
    start: StartPosition,
    until: u64,
    batch: Option<usize>,
    sink: &mut Sink,
) -> Result<(), End> {
    let failed = |e: broker_client::Error| End::Failed(e.into());
    let read = match batch {
        Some(batch) => station.read_paced(filter, start, batch).await,
        None => station.read(filter, start).await,
    };
    let mut read = read.map_err(failed)?;
    loop {
        let next = tokio::select! {
            () = sink.cancel.cancelled() => return Err(End::Stopped),
            next = read.next() => next.map_err(failed)?,
        };
        let Some(delivered) = next else {
            return Ok(());
        };
        if delivered.sequence > sink.cursor
            && let Some(live) = hub::decode(&delivered)
        {
            sink.message(Arc::new(live)).await?;
        }
        if delivered.sequence >= until {
            return Ok(());
        }
    }
}

/// Reports, as a [`Event::Gap`], messages after the cursor that the station
/// no longer retains. Returns the newest stored sequence.
async fn report_gap(station: &Station, sink: &mut Sink) -> Result<u64, End> {
    let state = station.state().await.map_err(|e| End::Failed(e.into()))?;
    let wanted = sink.cursor.saturating_add(1);
    if state.first_sequence > wanted && state.last_sequence >= wanted {
        let to = state.first_sequence - 1;
        sink.send(Event::Gap { from: wanted, to }).await?;
        sink.cursor = to;
    }
    Ok(state.last_sequence)
}
