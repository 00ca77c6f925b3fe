//! FastChat's *stations* layer: the only code in the workspace that talks to NATS.
//!
//! Memphis called a durable, retained, replicated topic a *station*; here a
//! station is a JetStream stream with its retention, replicas and duplicate
//! window ([`StationConfig`]), created idempotently by every service that uses
//! it ([`Broker::ensure_station`]). On a station you get:
//!
//! - a [`Producer`] that publishes with a message id (deduplicated inside the
//!   duplicate window) and returns only once JetStream has stored the message;
//! - *fan-out* consumers ([`Station::fan_out`]): ordered, ephemeral, one per
//!   process, so every instance sees every message. They resume by themselves
//!   after a broker outage;
//! - bounded *reads* ([`Station::read`]) that replay a range of history and end
//!   when they have caught up: batched direct gets where the broker has them
//!   (nats-server ≥ 2.11), so a read creates no consumer; an ephemeral
//!   consumer otherwise;
//! - random access by sequence ([`Station::get`]) and counting helpers for
//!   paging ([`Station::nth_last_sequence`]);
//! - *group* consumers ([`Station::group`]): durable, shared, explicitly
//!   acknowledged, with a dead-letter station for messages that keep failing.
//!
//! Modules, as layers from the ground up (each uses only those below it):
//!
//! 1. `config`, `error`, `message`, `subjects`: plain data — settings, typed
//!    errors (and the one place async-nats errors are classified), what reads
//!    yield, what they filter on;
//! 2. `connection`: the [`Broker`] connection, reconnecting for ever;
//! 3. `station`: ensuring a [`Station`], its state, random access, scratch
//!    consumers; `direct`: batched direct gets (history with no consumer);
//! 4. `producer` (publishing), `consumer` (fan-out and bounded reads),
//!    `history` (counting and paging);
//! 5. `group`: group consumers and dead letters, on producer and consumer.

#![forbid(unsafe_code)]

mod config;
mod error;
mod message;
mod subjects;

mod connection;
mod direct;
mod station;

mod consumer;
mod history;
mod producer;

mod group;

pub use async_nats::HeaderMap;
pub use config::{BrokerConfig, StationConfig, Storage, TlsConfig};
pub use connection::{Broker, ConnectionState};
pub use consumer::{FanOut, Read};
pub use error::{Error, ErrorKind, Report, Result};
pub use group::{
    DeadLetter, Group, GroupConfig, GroupMessage, HEADER_DLS_DELIVERIES, HEADER_DLS_GROUP,
    HEADER_DLS_REASON, HEADER_DLS_SEQUENCE, HEADER_DLS_SUBJECT,
};
pub use message::{Delivered, StartPosition, TraceContext};
pub use producer::{Producer, PublishAck};
pub use station::{Station, StationState};
pub use subjects::Subjects;
pub use time::OffsetDateTime;
