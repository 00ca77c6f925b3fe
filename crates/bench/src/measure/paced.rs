//! The paced run that `latency` and `slow` measure with, against whichever
//! endpoints they pass (FastChat's or the bare relay's): SendMessage at a
//! fixed rate while fast subscribers record send → receive latency and slow
//! ones must receive every message in order.

use std::time::{Duration, Instant};

use anyhow::bail;
use fastchat_proto::v1::{self, send_message_service_client::SendMessageServiceClient};
use tokio::task::JoinSet;

use super::common::{
    LIMIT, Latencies, channel, next_message, now_nanos, pacer, since_nanos, small_window_channel,
    subscribe_new,
};

/// A reader that needs this long per message: far slower than the feed.
const SLOW_READER_PER_MESSAGE: Duration = Duration::from_millis(1);

/// What one paced run observed.
#[derive(Debug)]
pub struct Paced {
    /// Send → receive latency of every fast subscriber's every message.
    pub latency: Latencies,
    /// SendMessage round trips.
    pub round_trips: Latencies,
    /// How long after the last send the slowest slow reader finished.
    pub slow_done: Duration,
}

/// Sends at `per_second` for `seconds` while `subscribers` fast
/// subscriptions (over 10 connections) measure latency and `slow`
/// deliberately slow subscriptions, each on its own connection, must receive
/// every message in order.
pub async fn paced(
    (send, all): (&str, &str),
    room: &str,
    subscribers: usize,
    slow: usize,
    per_second: u64,
    seconds: u64,
) -> anyhow::Result<Paced> {
    let total = usize::try_from(per_second * seconds)?;
    let mut slow_readers = JoinSet::new();
    for _ in 0..slow {
        let mut stream = subscribe_new(small_window_channel(all).await?, room).await?;
        slow_readers.spawn(async move {
            let mut last = 0;
            let mut received = 0;
            while received < total {
                use v1::subscribe_response::Event;
                let sequence = match stream.message().await? {
                    Some(v1::SubscribeResponse {
                        event: Some(Event::Message(m)),
                    }) => m.sequence,
                    // The switch to live (first, and after each catch-up) and
                    // heartbeats: not messages.
                    Some(v1::SubscribeResponse {
                        event: Some(Event::CaughtUp(_) | Event::Heartbeat(_)),
                    }) => continue,
                    other => bail!("slow reader: unexpected {other:?}"),
                };
                received += 1;
                if sequence <= last {
                    bail!("slow reader: {sequence} after {last}");
                }
                last = sequence;
                tokio::time::sleep(SLOW_READER_PER_MESSAGE).await;
            }
            anyhow::Ok(Instant::now())
        });
    }
    let mut channels = Vec::new();
    for _ in 0..10 {
        channels.push(channel(all).await?);
    }
    let mut readers = JoinSet::new();
    for s in 0..subscribers {
        let mut stream = subscribe_new(channels[s % channels.len()].clone(), room).await?;
        let mut latency = Latencies::default();
        readers.spawn(async move {
            for _ in 0..total {
                let Some(m) = next_message(&mut stream).await? else {
                    bail!("stream ended")
                };
                latency.record(since_nanos(m.text.parse().unwrap_or(0)));
            }
            anyhow::Ok(latency)
        });
    }
    let send_channel = channel(send).await?;
    let mut ticker = pacer(per_second);
    let mut sends = JoinSet::new();
    for _ in 0..total {
        ticker.tick().await;
        let mut client = SendMessageServiceClient::new(send_channel.clone());
        let room = room.to_owned();
        sends.spawn(async move {
            let started = Instant::now();
            client
                .send_message(v1::SendMessageRequest {
                    room,
                    author: "bench".into(),
                    text: now_nanos().to_string(),
                    ..Default::default()
                })
                .await?;
            anyhow::Ok(started.elapsed())
        });
    }
    let mut round_trips = Latencies::default();
    while let Some(r) = sends.join_next().await {
        round_trips.record(r??);
    }
    let sent = Instant::now();
    let mut latency = Latencies::default();
    while let Some(r) = tokio::time::timeout(LIMIT, readers.join_next()).await? {
        latency.add(&r??)?;
    }
    let mut slowest = sent;
    while let Some(r) = tokio::time::timeout(LIMIT, slow_readers.join_next()).await? {
        slowest = slowest.max(r??);
    }
    Ok(Paced {
        latency,
        round_trips,
        slow_done: slowest - sent,
    })
}
