//! Traces of deliveries: a message read from the station carries the trace
//! context its send stored with it ([`Live`]); each subscription that sends
//! it to its client does so inside a span of its own:
//!
//! - `deliver` with `fastchat.delivery = "live"`: a message from the live
//!   feed, a **child** of the stored context (part of the send's trace);
//! - `deliver` with `fastchat.delivery = "history"` or `"catch_up"`: a
//!   message replayed from the station, which **links** to the stored
//!   context (later work of its own, pointing at the send's trace);
//! - `page`: one `ListMessages` page (inside the RPC's `list_messages`
//!   span), linking to every message read for it that has a stored context.
//!
//! Attributes: `fastchat.room`, `fastchat.sequence`, `fastchat.message_id`;
//! never the text. Nothing is made while traces are off, nor for a message
//! stored without trace context.
//!
//! The hooks that call this module are marked `// trace:` in `hub`,
//! `subscription` and `service`.

use std::ops::Deref;

use broker_client::Delivered;
use fastchat_proto::v1;
use fastchat_runtime::propagation::{self, SpanContext};

/// A stored chat message as the live feed shares it with every subscriber:
/// the message and, when traces are on, the trace context stored with it
/// (parsed once per message, not once per subscriber).
#[derive(Debug, Clone, PartialEq)]
pub struct Live {
    /// The message.
    pub message: v1::ChatMessage,
    /// The context of the send that stored it.
    pub trace: Option<SpanContext>,
}

impl Deref for Live {
    type Target = v1::ChatMessage;

    fn deref(&self) -> &v1::ChatMessage {
        &self.message
    }
}

impl From<v1::ChatMessage> for Live {
    fn from(message: v1::ChatMessage) -> Self {
        Self {
            message,
            trace: None,
        }
    }
}

/// Decodes a station message with its trace context; `None` (logged) for
/// one that is not a FastChat chat message.
pub fn decode(delivered: &Delivered) -> Option<Live> {
    let message = crate::hub::decode(delivered)?;
    Some(Live {
        message,
        trace: propagation::stored(delivered.trace_context()),
    })
}

/// How a subscription came by a message it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// From the live feed.
    Live,
    /// Replayed from the station: the subscription's history.
    History,
    /// Replayed from the station: a subscriber too slow for the live feed
    /// catching up.
    CatchUp,
}

impl Delivery {
    fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::History => "history",
            Self::CatchUp => "catch_up",
        }
    }
}

/// The span one subscription sends `message` in (disabled when there is
/// nothing to trace): a child of the stored context for a live delivery, a
/// link to it for a replay.
pub fn deliver(message: &Live, how: Delivery) -> tracing::Span {
    let Some(stored) = &message.trace else {
        return tracing::Span::none();
    };
    let span = tracing::info_span!(
        "deliver",
        otel.kind = "consumer",
        fastchat.delivery = how.as_str(),
        fastchat.room = message.room.as_str(),
        fastchat.sequence = message.sequence,
        fastchat.message_id = message.id.as_str(),
    );
    match how {
        Delivery::Live => propagation::set_stored_parent(&span, stored),
        Delivery::History | Delivery::CatchUp => propagation::link(&span, stored),
    }
    span
}

/// The span of one `ListMessages` page of `room` (disabled while traces are
/// off); [`page_message`] links it to the messages on it.
pub fn page(room: &str) -> tracing::Span {
    if !propagation::enabled() {
        return tracing::Span::none();
    }
    tracing::info_span!("page", fastchat.room = room)
}

/// Links a page's span to a message read for it.
pub fn page_message(page: &tracing::Span, delivered: &Delivered) {
    if page.is_disabled() {
        return;
    }
    if let Some(stored) = propagation::stored(delivered.trace_context()) {
        propagation::link(page, &stored);
    }
}
