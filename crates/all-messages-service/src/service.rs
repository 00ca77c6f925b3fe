//! The gRPC faces: the seed `all` stream and fastchat.v1 Subscribe /
//! ListMessages.

use std::{net::SocketAddr, pin::Pin, sync::Arc, time::Duration};

use broker_client::{OffsetDateTime, Station};
use fastchat_backoff::ExponentialBackoff;
use fastchat_proto::{prost_types, seed, station, v1};
use fastchat_runtime::held::Held;
use futures::Stream;
use prost::Message as _;
use tokio::sync::{mpsc, watch};
use tokio_stream::{StreamExt as _, wrappers::ReceiverStream};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::{Request, Response, Status};

use fastchat_auth::{Caller, Operation};
use fastchat_runtime::{
    config::LimitsConfig,
    gate::{Gate, IdentityKey},
};

use crate::{
    config::{HistoryConfig, SubscriptionsConfig},
    error::{ApiError, Scarce},
    hub::{self, Hub},
    newest::HistoryReads,
    shares::{self, PerIdentity, Shares},
    subscription::{self, Event, Queue, Rooms, Sink, Start, Subscription},
};

/// `ListMessages` page size when the request gives none.
pub const DEFAULT_PAGE: u32 = 50;
/// Larger `limit`s are clamped to this.
pub const MAX_PAGE: u32 = 1000;

/// Implements both AllMessagesService traits.
#[derive(Debug, Clone)]
pub struct Api {
    hub: Arc<Hub>,
    station: watch::Receiver<Option<Station>>,
    subscriptions: Arc<Shares>,
    /// History reads: their slots (pages and subscriptions take turns in
    /// them) and the newest-message reads subscriptions share.
    reads: Arc<HistoryReads>,
    limits: SubscriptionsConfig,
    history_limits: HistoryConfig,
    per_identity: Arc<PerIdentity>,
    gate: Gate,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

/// Where a subscriber or reader comes from, and who it is.
struct Client {
    caller: Caller,
    peer: Option<SocketAddr>,
}

type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

impl Api {
    #[expect(
        clippy::too_many_arguments,
        reason = "the parts of the service, each once"
    )]
    pub fn new(
        hub: Arc<Hub>,
        station: watch::Receiver<Option<Station>>,
        limits: SubscriptionsConfig,
        history_limits: HistoryConfig,
        identity_limits: &LimitsConfig,
        gate: Gate,
        cancel: CancellationToken,
        tracker: TaskTracker,
    ) -> Self {
        let history = Shares::new(shares::Limits {
            total: history_limits.max_concurrent,
            per_connection: history_limits.max_concurrent_per_connection,
            per_address: history_limits.max_concurrent_per_address,
        });
        let reads = HistoryReads::new(history);
        Self {
            hub,
            station,
            subscriptions: Shares::new(shares::Limits {
                total: limits.max,
                per_connection: limits.max_per_connection,
                per_address: limits.max_per_address,
            }),
            reads,
            limits,
            history_limits,
            per_identity: Arc::new(PerIdentity::new(identity_limits.subscriptions_per_identity)),
            gate,
            cancel,
            tracker,
        }
    }

    /// The caller of `request`.
    fn client<T>(&self, request: &Request<T>) -> Result<Client, ApiError> {
        Ok(Client {
            caller: self
                .gate
                .caller(request)
                .map_err(ApiError::Unauthenticated)?,
            peer: request.remote_addr(),
        })
    }

    fn station(&self) -> Result<Station, ApiError> {
        self.station
            .borrow()
            .clone()
            .ok_or_else(|| ApiError::unavailable("not connected to the broker yet"))
    }

    /// Starts a subscription task feeding a bounded channel, which becomes
    /// the response stream. `peer` is the client's connection (for its fair
    /// share).
    async fn open<T: Send + 'static>(
        &self,
        request: subscription::Request,
        client: Client,
        map: fn(Event) -> Option<T>,
    ) -> Result<EventStream<T>, ApiError> {
        match &request.rooms {
            Rooms::Only(rooms) => {
                for room in rooms {
                    client.caller.authorize(room, Operation::Read)?;
                }
            }
            Rooms::Every => client.caller.authorize_every_room_read()?,
        }
        let station = self.station()?;
        if !self.hub.is_started() {
            return Err(ApiError::unavailable("live feed not started yet"));
        }
        let over = |refused| ApiError::OverCap {
            what: Scarce::Subscriptions,
            refused,
            queue_timeout: None,
        };
        let identity_share = self
            .per_identity
            .try_take(IdentityKey::of(&client.caller, client.peer))
            .map_err(over)?;
        let share = self.subscriptions.try_take(client.peer).map_err(over)?;
        let (tx, rx) = mpsc::channel(self.limits.client_buffer);
        let mut joined = self.hub.join(&request.rooms);
        // History runs up to the newest *stored* message, which the live
        // feed may not have passed on yet ("new" starts after it): the
        // stream's position at CaughtUp is then the station's at the call,
        // whatever the live feed's lag. The live loop skips what the
        // history already covered.
        joined.after = joined.after.max(station.state().await?.last_sequence);
        let queue = Queue::new(self.limits.max_queued_bytes);
        let sink = Sink::new(
            tx,
            Arc::clone(&queue),
            self.limits.stall_timeout,
            self.cancel.clone(),
        );
        let subscription = Subscription::new(
            Arc::clone(&self.hub),
            self.gate.stream_deadline(&client.caller),
            station,
            Arc::clone(&self.reads),
            request,
            self.limits.heartbeat_interval,
            sink,
        );
        self.tracker.spawn(async move {
            subscription.run(joined).await;
            drop((share, identity_share));
        });
        // Responses are built here, as tonic pulls them off the stream.
        let responses = ReceiverStream::new(rx).filter_map(move |item| match item {
            Ok(event) => {
                queue.took(&event);
                map(event).map(Ok)
            }
            Err(status) => Some(Err(*status)),
        });
        Ok(Box::pin(responses))
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ApiError {
    ApiError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// Rooms one stream may name at most.
pub const MAX_ROOMS: usize = 64;

fn room_filter(room: &str) -> Result<Option<String>, ApiError> {
    if room.is_empty() {
        return Ok(None);
    }
    if !station::is_valid_room(room) {
        return Err(invalid(
            "room",
            format!(
                "must be empty (every room) or 1-{} characters of A-Z, a-z, 0-9, '_' or '-'",
                station::MAX_ROOM_LEN
            ),
        ));
    }
    Ok(Some(room.to_owned()))
}

/// The rooms of a Subscribe: `room` and `rooms` together; none = every room.
pub(crate) fn rooms_of(room: &str, rooms: &[String]) -> Result<Rooms, ApiError> {
    if rooms.len() > MAX_ROOMS {
        return Err(invalid(
            "rooms",
            format!("at most {MAX_ROOMS} rooms per stream (open another stream for more)"),
        ));
    }
    let mut set = std::collections::BTreeSet::new();
    set.extend(room_filter(room)?);
    for room in rooms {
        if !station::is_valid_room(room) {
            return Err(invalid(
                "rooms",
                format!(
                    "`{}` is not a room name: 1-{} characters of A-Z, a-z, 0-9, '_' or '-'",
                    room.chars().take(80).collect::<String>().escape_debug(),
                    station::MAX_ROOM_LEN
                ),
            ));
        }
        set.insert(room.clone());
    }
    Ok(if set.is_empty() {
        Rooms::Every
    } else {
        Rooms::Only(set)
    })
}

pub(crate) fn start_of(start: Option<v1::subscribe_request::Start>) -> Result<Start, ApiError> {
    use v1::subscribe_request::Start as S;
    Ok(match start {
        None => Start::All,
        Some(S::AfterSequence(after)) => Start::After(after),
        Some(S::Since(ts)) => Start::Since(since(&ts)?),
        Some(S::Last(0)) => Start::New,
        Some(S::Last(n)) => Start::Last(n),
        Some(S::NewOnly(true)) => Start::New,
        Some(S::NewOnly(false)) => Start::All,
    })
}

/// A `since` as the broker can use it. nats-server keeps times as i64
/// nanoseconds since the Unix epoch, so only 1677-09-21 to 2262-04-11 can be
/// asked for (async-nats also panics formatting a year before 0).
fn since(ts: &prost_types::Timestamp) -> Result<OffsetDateTime, ApiError> {
    const RANGE: &str = "must be between 1677-09-21T00:12:45Z and 2262-04-11T23:47:15Z (what \
                         the broker can represent)";
    if !(0..1_000_000_000).contains(&ts.nanos) {
        return Err(invalid("since", "nanos must be between 0 and 999,999,999"));
    }
    let nanos = i128::from(ts.seconds) * 1_000_000_000 + i128::from(ts.nanos);
    // One second inside i64's range at each end, so the broker's own
    // arithmetic on it cannot overflow.
    let limit = i128::from(i64::MAX) - 1_000_000_000;
    if !(-limit..=limit).contains(&nanos) {
        return Err(invalid("since", RANGE));
    }
    OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|_| invalid("since", RANGE))
}

pub(crate) fn to_v1(event: Event) -> Option<v1::SubscribeResponse> {
    use v1::subscribe_response::Event as E;
    Some(v1::SubscribeResponse {
        event: Some(match event {
            // trace: the message without its trace context
            Event::Message(message) => E::Message(message.message.clone()),
            Event::Gap { from, to } => E::Gap(v1::Gap {
                from_sequence: from,
                to_sequence: to,
            }),
            Event::CaughtUp { sequence } => E::CaughtUp(v1::CaughtUp { sequence }),
            Event::Heartbeat { sequence, time } => E::Heartbeat(v1::Heartbeat {
                sequence,
                time: Some(prost_types::Timestamp::from(time)),
            }),
        }),
    })
}

/// The seed API has no gaps; its `time` is the client's, or the server's
/// when the client gave none.
pub(crate) fn to_seed(event: Event) -> Option<seed::ChatMessage> {
    match event {
        Event::Message(m) => {
            let time = if m.client_time_ms != 0 {
                m.client_time_ms
            } else {
                // Saturating: a stored message's `sent_at` is whatever its
                // publisher wrote, and must not overflow (panic) here.
                m.sent_at
                    .map(|t| {
                        t.seconds
                            .saturating_mul(1000)
                            .saturating_add(i64::from(t.nanos) / 1_000_000)
                    })
                    .unwrap_or_default()
            };
            Some(seed::ChatMessage {
                author: m.author.clone(),
                text: m.text.clone(),
                time,
            })
        }
        Event::Gap { .. } | Event::CaughtUp { .. } | Event::Heartbeat { .. } => None,
    }
}

#[tonic::async_trait]
impl v1::all_messages_service_server::AllMessagesService for Api {
    type SubscribeStream = EventStream<v1::SubscribeResponse>;

    #[tracing::instrument(skip_all, fields(room = %request.get_ref().room, rooms = request.get_ref().rooms.len()))]
    async fn subscribe(
        &self,
        request: Request<v1::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let client = self.client(&request)?;
        let r = request.into_inner();
        let request = subscription::Request {
            rooms: rooms_of(&r.room, &r.rooms)?,
            start: start_of(r.start)?,
            peer: client.peer,
        };
        Ok(Response::new(self.open(request, client, to_v1).await?))
    }

    #[tracing::instrument(skip_all, fields(room = %request.get_ref().room))]
    async fn list_messages(
        &self,
        request: Request<v1::ListMessagesRequest>,
    ) -> Result<Response<v1::ListMessagesResponse>, Status> {
        let client = self.client(&request)?;
        let peer = client.peer;
        let Page {
            room,
            limit,
            before,
        } = page_of(&request.into_inner())?;
        client
            .caller
            .authorize(&room, Operation::Read)
            .map_err(ApiError::from)?;
        let station = self.station()?;
        let queue_timeout = self.history_limits.queue_timeout;
        let share = self
            .reads
            .slots()
            .take(peer, Some(queue_timeout))
            .await
            .map_err(|refused| ApiError::OverCap {
                what: Scarce::HistoryReads,
                refused,
                queue_timeout: Some(queue_timeout),
            })?;
        // A broker at its consumer limit frees consumers within seconds:
        // retry while the request's turn lasts.
        let deadline = tokio::time::Instant::now() + queue_timeout;
        let mut backoff =
            ExponentialBackoff::doubling(Duration::from_millis(50), Duration::from_secs(1))
                .stream();
        let page = loop {
            let page = list(
                &station,
                &room,
                limit,
                before,
                self.history_limits.max_page_bytes,
            )
            .await;
            match page {
                Err(ApiError::BrokerBusy(_))
                    if tokio::time::Instant::now() + backoff.peek() < deadline =>
                {
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                page => break page?,
            }
        };
        let mut response = Response::new(page);
        // The slot is given back once the page has gone out, not when it is
        // built: a client that does not read would otherwise let any number
        // of pages wait in the transport.
        Held::attach(&mut response, share);
        Ok(response)
    }
}

/// What a `ListMessages` asks for, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Page {
    /// A valid room name.
    pub(crate) room: String,
    /// 1 to [`MAX_PAGE`] messages.
    pub(crate) limit: u32,
    /// Only messages before this sequence (`None`: up to the newest).
    pub(crate) before: Option<u64>,
}

/// The page a `ListMessages` request asks for: its room is required, its
/// `limit` defaults to [`DEFAULT_PAGE`] and is clamped to [`MAX_PAGE`].
pub(crate) fn page_of(r: &v1::ListMessagesRequest) -> Result<Page, ApiError> {
    if r.room.is_empty() {
        return Err(invalid("room", "is required"));
    }
    let room = room_filter(&r.room)?.unwrap_or_default();
    let limit = match r.limit {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    };
    let before = (r.before_sequence != 0).then_some(r.before_sequence);
    Ok(Page {
        room,
        limit,
        before,
    })
}

/// One page of a room's history, oldest first, ending before `before`:
/// the newest `limit` messages there, or fewer if they would take more than
/// `max_bytes` (then `next_before_sequence` says where to continue).
///
/// Looks for `limit + 1` messages: the extra, oldest one only tells whether
/// older messages exist (and is not returned).
async fn list(
    station: &Station,
    room: &str,
    limit: u32,
    before: Option<u64>,
    max_bytes: usize,
) -> Result<v1::ListMessagesResponse, ApiError> {
    let filter = station::subject(room);
    let wanted = limit as usize + 1;
    // The newest `wanted` below `before`, in one read of about that many
    // (the broker's per-subject count sizes the window it reads).
    let newest = station
        .last_messages(&filter, wanted as u64, before)
        .await?;
    // trace: the page's span, linked to its messages
    let page = crate::trace::page(room);
    // Oldest first, but hold no more than the byte budget: the oldest are
    // let go as newer ones come (an encoded page also carries a few bytes of
    // framing per message).
    let mut messages = std::collections::VecDeque::with_capacity(wanted);
    let mut bytes = 0;
    let mut older = false;
    for delivered in &newest {
        crate::trace::page_message(&page, delivered); // trace:
        let Some(message) = hub::decode(delivered) else {
            continue;
        };
        bytes += message.encoded_len() + 8;
        messages.push_back(message);
        while bytes > max_bytes && messages.len() > 1 {
            if let Some(dropped) = messages.pop_front() {
                bytes -= dropped.encoded_len() + 8;
                older = true;
            }
        }
    }
    if messages.len() > limit as usize {
        messages.pop_front();
        older = true;
    }
    let messages = Vec::from(messages);
    let next_before_sequence = if older {
        messages.first().map_or(0, |m| m.sequence)
    } else {
        0
    };
    Ok(v1::ListMessagesResponse {
        messages,
        next_before_sequence,
    })
}

#[tonic::async_trait]
impl seed::all_messages_service_server::AllMessagesService for Api {
    type allStream = EventStream<seed::ChatMessage>;

    async fn all(
        &self,
        request: Request<seed::Empty>,
    ) -> Result<Response<Self::allStream>, Status> {
        let client = self.client(&request)?;
        let request = subscription::Request {
            rooms: Rooms::Every,
            start: Start::All,
            peer: client.peer,
        };
        Ok(Response::new(self.open(request, client, to_seed).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stored message's `sent_at` far from now (its publisher's choice)
    /// gives the seed stream a saturated time instead of an overflow.
    #[test]
    fn a_seed_time_never_overflows() {
        let message = |seconds, nanos| v1::ChatMessage {
            author: "ann".into(),
            text: "hi".into(),
            sent_at: Some(prost_types::Timestamp { seconds, nanos }),
            ..v1::ChatMessage::default()
        };
        let time = |m: v1::ChatMessage| {
            to_seed(Event::Message(Arc::new(m.into())))
                .expect("a message")
                .time
        };
        assert_eq!(time(message(1_700_000_000, 5_000_000)), 1_700_000_000_005);
        assert_eq!(time(message(i64::MAX, 999_999_999)), i64::MAX);
        assert_eq!(time(message(i64::MIN, -999_999_999)), i64::MIN);
    }
}
