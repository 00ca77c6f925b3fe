//! Latency: send → subscriber p50/p99 at 1,000 msg/s to 100 subscribers,
//! against raw JetStream publish → ordered consumer at the same rate and a
//! bare relay (tonic → JetStream → tonic fan-out) of the same topology.

use anyhow::bail;
use async_nats::jetstream::consumer::DeliverPolicy;
use bytes::Bytes;
use futures::StreamExt as _;

use super::{
    common::{
        AckWindow, LIMIT, Latencies, Percentiles, jetstream, now_nanos, ordered_messages, pacer,
        since_nanos,
    },
    paced::paced,
};
use crate::{
    report::Report,
    system::{Relay, System},
};

const RATE: u64 = 1000;
const SECONDS: u64 = 3;

/// Publishes to `subject` at `per_second` for `seconds` while one ordered
/// consumer records publish → receive latency.
async fn latency_raw(
    url: &str,
    subject: &str,
    per_second: u64,
    seconds: u64,
) -> anyhow::Result<Latencies> {
    let total = usize::try_from(per_second * seconds)?;
    let js = jetstream(url).await?;
    let stream = js.get_stream("chat").await?;
    let mut messages = ordered_messages(&js, &stream, subject, DeliverPolicy::New).await?;
    let reader = tokio::spawn(async move {
        let mut latency = Latencies::default();
        for _ in 0..total {
            let Some(message) = messages.next().await else {
                bail!("consumer ended")
            };
            let message = message?;
            latency.record(since_nanos(std::str::from_utf8(&message.payload)?.parse()?));
        }
        anyhow::Ok(latency)
    });
    let mut ticker = pacer(per_second);
    // Up to 64 acknowledgements outstanding between publishes.
    let mut acks = AckWindow::new(65);
    for _ in 0..total {
        ticker.tick().await;
        acks.push(
            js.publish(subject.to_owned(), Bytes::from(now_nanos().to_string()))
                .await?,
        )
        .await?;
    }
    acks.drain().await?;
    tokio::time::timeout(LIMIT, reader).await??
}

/// (3) send → subscriber latency at 1,000 msg/s with 100 subscribers vs raw
/// JetStream publish → ordered consumer at the same rate.
pub async fn latency(report: &mut Report) -> anyhow::Result<()> {
    let system = System::start()?;
    let relay = Relay::start()?;
    // One per setup: the raw consumer, FastChat to 1 and to 100
    // subscribers, FastChat's SendMessage round trip, the bare relay.
    let mut raw = Percentiles::default();
    let mut one = Percentiles::default();
    let mut hundred = Percentiles::default();
    let mut round_trip = Percentiles::default();
    let mut bare = Percentiles::default();
    for run in 1..=report.runs {
        eprintln!("[latency] run {run}/{}", report.runs);
        // Raw messages go to a subject of the station that no room uses.
        let subject = format!("chat.messages.rawlat{run}");
        raw.push(&latency_raw(&system.nats.url(), &subject, RATE, SECONDS).await?);
        let endpoints = system.endpoints();
        let single = paced(endpoints, &format!("one{run}"), 1, 0, RATE, SECONDS).await?;
        one.push(&single.latency);
        let room = format!("lat{run}");
        let fc = paced(endpoints, &room, 100, 0, RATE, SECONDS).await?;
        let relayed = paced(relay.endpoints(), &room, 100, 0, RATE, SECONDS).await?;
        bare.push(&relayed.latency);
        hundred.push(&fc.latency);
        round_trip.push(&fc.round_trips);
    }
    report.figure(
        "latency",
        "raw JetStream publish → ordered consumer p50",
        "ms",
        &raw.p50,
    );
    let raw = report.figure(
        "latency",
        "raw JetStream publish → ordered consumer p99",
        "ms",
        &raw.p99,
    );
    // Where the time goes: the path to a single subscriber, and the
    // SendMessage call itself (answered after the JetStream ack).
    report.figure("latency", "SendMessage → 1 subscriber p50", "ms", &one.p50);
    report.figure("latency", "SendMessage → 1 subscriber p99", "ms", &one.p99);
    report.figure(
        "latency",
        "SendMessage round trip p50",
        "ms",
        &round_trip.p50,
    );
    report.figure(
        "latency",
        "SendMessage round trip p99",
        "ms",
        &round_trip.p99,
    );
    // The same topology with nothing of FastChat in it: what the
    // architecture itself costs on this machine.
    let bare_p50 = report.figure(
        "latency",
        "bare relay (tonic → JetStream → tonic fan-out) → 100 subscribers p50",
        "ms",
        &bare.p50,
    );
    let bare = report.figure(
        "latency",
        "bare relay (tonic → JetStream → tonic fan-out) → 100 subscribers p99",
        "ms",
        &bare.p99,
    );
    let fc_p50 = report.figure(
        "latency",
        "SendMessage → 100 subscribers p50",
        "ms",
        &hundred.p50,
    );
    let fc = report.figure(
        "latency",
        "SendMessage → 100 subscribers p99",
        "ms",
        &hundred.p99,
    );
    report.summary("latency_p99_ms", fc.median);
    report.summary("latency_p99_ratio", fc.median / raw.median);
    report.summary("latency_p99_vs_bare_relay", fc.median / bare.median);
    report.summary("latency_p50_vs_bare_relay", fc_p50.median / bare_p50.median);
    Ok(())
}
