//! Measures nothing itself: the client set-up, rate pacing, timing,
//! acknowledgement windows and latency histograms with which every
//! measurement drives FastChat and its baselines alike.

use std::{
    future::IntoFuture as _,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use async_nats::jetstream::{
    self,
    consumer::{DeliverPolicy, push},
    context::{PublishAckFuture, PublishError},
};
use bytes::Bytes;
use fastchat_proto::v1::{
    self, all_messages_service_client::AllMessagesServiceClient, subscribe_request::Start,
    subscribe_response::Event,
};
use futures::{StreamExt as _, future::BoxFuture, stream::FuturesUnordered};
use hdrhistogram::Histogram;
use prost::Message as _;
use tonic::transport::Channel;

use crate::raw::sample_message;

/// Upper bound of any single wait in the benchmark.
pub const LIMIT: Duration = Duration::from_secs(120);

/// A connection to `endpoint` (no Nagle, 10 s to connect).
pub async fn channel(endpoint: &str) -> anyhow::Result<Channel> {
    tonic::transport::Endpoint::from_shared(endpoint.to_owned())?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .with_context(|| format!("connect to {endpoint}"))
}

/// A connection whose HTTP/2 stream receive window is 64 KiB, like a slow
/// mobile client's: hyper's default (2 MiB) would let the transport absorb a
/// whole 10,000-message burst, and the server would never see the reader
/// fall behind. The connection window stays at 1 MiB: h2 gives a client a
/// budget of small unread DATA frames of half its connection window and
/// closes the connection (ENHANCE_YOUR_CALM) beyond it.
pub async fn small_window_channel(endpoint: &str) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(endpoint.to_owned())?
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(1024 * 1024)
        .tcp_nodelay(true)
        .connect()
        .await?)
}

/// A JetStream context on a client of its own, with room for a long burst
/// of unread deliveries.
pub async fn jetstream(url: &str) -> anyhow::Result<jetstream::Context> {
    let client = async_nats::ConnectOptions::new()
        .subscription_capacity(1 << 20)
        .connect(url)
        .await?;
    Ok(jetstream::new(client))
}

/// The deliveries of a new ordered push consumer of `stream` on `subject`.
pub async fn ordered_messages(
    js: &jetstream::Context,
    stream: &jetstream::stream::Stream,
    subject: &str,
    deliver_policy: DeliverPolicy,
) -> anyhow::Result<push::Ordered> {
    let consumer = stream
        .create_consumer(push::OrderedConfig {
            deliver_subject: js.client().new_inbox(),
            filter_subject: subject.to_owned(),
            deliver_policy,
            ..Default::default()
        })
        .await?;
    Ok(consumer.messages().await?)
}

/// A `new_only` subscription to `room` on `channel`.
pub async fn subscribe_new(
    channel: Channel,
    room: &str,
) -> anyhow::Result<tonic::Streaming<v1::SubscribeResponse>> {
    Ok(AllMessagesServiceClient::new(channel)
        .subscribe(v1::SubscribeRequest {
            rooms: Vec::new(),
            room: room.to_owned(),
            start: Some(Start::NewOnly(true)),
        })
        .await?
        .into_inner())
}

/// The next message of a subscription, skipping its other events; `None`
/// when the stream ends.
pub async fn next_message(
    stream: &mut tonic::Streaming<v1::SubscribeResponse>,
) -> Result<Option<v1::ChatMessage>, tonic::Status> {
    loop {
        match stream.message().await? {
            Some(v1::SubscribeResponse {
                event: Some(Event::Message(message)),
            }) => return Ok(Some(message)),
            Some(_) => {}
            None => return Ok(None),
        }
    }
}

/// Wall-clock nanoseconds: the send time carried in a message's text.
pub fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Wall-clock time since `sent` (from [`now_nanos`]).
pub fn since_nanos(sent: u64) -> Duration {
    Duration::from_nanos(now_nanos().saturating_sub(sent))
}

/// `count` per second of `elapsed`.
#[expect(
    clippy::cast_precision_loss,
    reason = "counts and byte sizes far below 2^52 shown as floats"
)]
pub fn rate(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

/// A ticker for sending `per_second` messages; a late tick is made up at
/// once (tokio's default), so the count per second holds.
pub fn pacer(per_second: u64) -> tokio::time::Interval {
    tokio::time::interval(Duration::from_nanos(1_000_000_000 / per_second))
}

/// JetStream publish acknowledgements in flight, at most `limit` counting
/// the one just published: [`AckWindow::push`] waits for earlier ones
/// beyond that.
pub struct AckWindow {
    pending:
        FuturesUnordered<BoxFuture<'static, Result<jetstream::publish::PublishAck, PublishError>>>,
    limit: usize,
}

impl AckWindow {
    pub fn new(limit: usize) -> Self {
        Self {
            pending: FuturesUnordered::new(),
            limit,
        }
    }

    /// Adds `ack`, then awaits acknowledgements while `limit` are pending.
    pub async fn push(&mut self, ack: PublishAckFuture) -> anyhow::Result<()> {
        self.pending.push(ack.into_future());
        while self.pending.len() >= self.limit {
            if let Some(result) = self.pending.next().await {
                result?;
            }
        }
        Ok(())
    }

    /// Awaits every pending acknowledgement.
    pub async fn drain(&mut self) -> anyhow::Result<()> {
        while let Some(result) = self.pending.next().await {
            result?;
        }
        Ok(())
    }
}

/// Publishes `count` FastChat-encoded messages straight to the station with
/// 256 acknowledgements in flight; `room_of(i)` picks each one's room.
pub async fn publish_raw(
    js: &jetstream::Context,
    count: usize,
    room_of: impl Fn(usize) -> String,
    text: impl Fn() -> String,
) -> anyhow::Result<Duration> {
    let started = std::time::Instant::now();
    let mut acks = AckWindow::new(256);
    for i in 0..count {
        let room = room_of(i);
        let payload = Bytes::from(sample_message(&room, 0, text()).encode_to_vec());
        acks.push(js.publish(format!("chat.messages.{room}"), payload).await?)
            .await?;
    }
    acks.drain().await?;
    Ok(started.elapsed())
}

/// Microseconds: latencies are recorded to the microsecond (the report's
/// milliseconds have three decimals).
const MICROS_PER_MS: f64 = 1000.0;

/// Latency samples in microseconds, three significant figures, up to
/// [`LIMIT`] (longer ones count as [`LIMIT`]).
#[derive(Debug, Clone)]
pub struct Latencies(Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        let highest = u64::try_from(LIMIT.as_micros()).unwrap_or(u64::MAX);
        Self(Histogram::new_with_bounds(1, highest, 3).expect("constant, valid bounds"))
    }
}

impl Latencies {
    /// Records one sample, rounded to the microsecond.
    pub fn record(&mut self, latency: Duration) {
        let micros = latency.as_nanos().saturating_add(500) / 1000;
        self.0
            .saturating_record(u64::try_from(micros).unwrap_or(u64::MAX));
    }

    /// Adds `other`'s samples.
    pub fn add(&mut self, other: &Self) -> anyhow::Result<()> {
        self.0.add(&other.0)?;
        Ok(())
    }

    /// The `percentile` (0–100) in milliseconds; NaN without samples.
    #[expect(
        clippy::cast_precision_loss,
        reason = "counts and byte sizes far below 2^52 shown as floats"
    )]
    pub fn ms(&self, percentile: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        self.0.value_at_percentile(percentile) as f64 / MICROS_PER_MS
    }
}

/// One setup's p50 and p99 (ms), one of each per run.
#[derive(Debug, Default)]
pub struct Percentiles {
    pub p50: Vec<f64>,
    pub p99: Vec<f64>,
}

impl Percentiles {
    /// Adds a run's p50 and p99.
    pub fn push(&mut self, latencies: &Latencies) {
        self.p50.push(latencies.ms(50.0));
        self.p99.push(latencies.ms(99.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_percentiles_in_ms() {
        let mut latencies = Latencies::default();
        assert!(latencies.ms(50.0).is_nan());
        for micros in 1..=100 {
            latencies.record(Duration::from_micros(micros));
        }
        assert_eq!(latencies.ms(50.0), 0.050);
        assert_eq!(latencies.ms(99.0), 0.099);
        assert_eq!(latencies.ms(100.0), 0.100);
        // Rounded to the microsecond; three significant figures beyond.
        let mut rounded = Latencies::default();
        rounded.record(Duration::from_nanos(1_499));
        rounded.record(Duration::from_nanos(1_500));
        assert_eq!((rounded.ms(50.0), rounded.ms(100.0)), (0.001, 0.002));
        let mut long = Latencies::default();
        long.record(Duration::from_micros(26_312));
        assert!((long.ms(50.0) - 26.312).abs() <= 26.312 / 1000.0);
        let mut both = Latencies::default();
        both.add(&latencies).expect("same bounds");
        both.add(&long).expect("same bounds");
        assert_eq!(both.ms(99.0), 0.100);
        assert!((both.ms(100.0) - 26.312).abs() <= 26.312 / 1000.0);
    }
}
