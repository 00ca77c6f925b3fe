//! Send throughput: SendMessage calls/s (and p99) with 64 concurrent callers,
//! against a raw tonic unary echo, a bare relay (tonic → acknowledged
//! JetStream publish) and raw JetStream publishes with 64 acks in flight;
//! and what authentication costs: the same SendMessage with a JWT checked on
//! every call (`auth.mode = "jwt"`, HS256) against `auth.mode = "none"`.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use bytes::Bytes;
use fastchat_proto::v1::{self, send_message_service_client::SendMessageServiceClient};
use prost::Message as _;
use tokio::task::JoinSet;

use super::common::{AckWindow, LIMIT, Latencies, channel, jetstream, now_nanos, rate};
use crate::{
    raw::sample_message,
    report::Report,
    system::{Process, Relay, System},
};

const CALLERS: usize = 64;
const CALLS: usize = 12_800;

/// Publishes `count` messages like SendMessage stores, with `in_flight`
/// acknowledgements outstanding at most.
async fn publish_in_flight(
    js: &jetstream::Context,
    count: usize,
    in_flight: usize,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut acks = AckWindow::new(in_flight);
    for i in 0..count {
        let payload = Bytes::from(
            sample_message("bench", 0, format!("call {i} {}", "x".repeat(64))).encode_to_vec(),
        );
        let ack = js
            .send_publish(
                "chat.messages.rawbench",
                jetstream::message::PublishMessage::build()
                    .payload(payload)
                    .message_id(format!("raw-{i}-{}", now_nanos())),
            )
            .await?;
        acks.push(ack).await?;
    }
    acks.drain().await?;
    Ok(started.elapsed())
}

/// `calls` SendMessage calls from `callers` concurrent callers over one
/// connection: calls/s and each call's latency.
async fn unary_load(
    endpoint: &str,
    callers: usize,
    calls: usize,
    token: Option<&str>,
) -> anyhow::Result<(f64, Latencies)> {
    let authorization: Option<tonic::metadata::MetadataValue<_>> = match token {
        Some(token) => Some(format!("Bearer {token}").parse()?),
        None => None,
    };
    let channel = channel(endpoint).await?;
    let per = calls / callers;
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for c in 0..callers {
        let mut client = SendMessageServiceClient::new(channel.clone());
        let mut latencies = Latencies::default();
        let authorization = authorization.clone();
        tasks.spawn(async move {
            for i in 0..per {
                let t = Instant::now();
                let mut request = tonic::Request::new(v1::SendMessageRequest {
                    room: "bench".into(),
                    author: "bench".into(),
                    text: format!("caller {c} call {i} {}", "x".repeat(64)),
                    ..Default::default()
                });
                if let Some(value) = &authorization {
                    request
                        .metadata_mut()
                        .insert("authorization", value.clone());
                }
                client.send_message(request).await?;
                latencies.record(t.elapsed());
            }
            anyhow::Ok(latencies)
        });
    }
    let mut latencies = Latencies::default();
    while let Some(r) = tasks.join_next().await {
        latencies.add(&r??)?;
    }
    let elapsed = started.elapsed();
    Ok((rate(per * callers, elapsed), latencies))
}

/// One target's calls/s and p99 (ms), one of each per run.
#[derive(Debug, Default)]
struct Target {
    calls_per_s: Vec<f64>,
    p99: Vec<f64>,
}

impl Target {
    /// One timed run of [`CALLS`] against `endpoint`, with `token` if given.
    async fn run(&mut self, endpoint: &str, token: Option<&str>) -> anyhow::Result<()> {
        let (calls_per_s, latencies) =
            tokio::time::timeout(LIMIT, unary_load(endpoint, CALLERS, CALLS, token)).await??;
        self.calls_per_s.push(calls_per_s);
        self.p99.push(latencies.ms(99.0));
        Ok(())
    }
}

/// (1) SendMessage calls/s with 64 concurrent callers vs raw tonic unary echo.
pub async fn send(report: &mut Report) -> anyhow::Result<()> {
    // No all-messages-service here: it would consume the station and take
    // CPU from the send path that is being measured.
    let (nats, send) = System::start_send_only()?;
    let raw = Process::raw_server()?;
    let (_relay_nats, relay) = Relay::send_only()?;
    // The same service checking an HS256 token on every call (its own
    // broker, so the two do not share a station).
    let secret = tempfile::NamedTempFile::new()?;
    let key = format!("bench secret {}", "k".repeat(40));
    std::fs::write(secret.path(), &key)?;
    let (_jwt_nats, jwt_send) = System::start_send_only_with(&[
        ("FASTCHAT_AUTH__MODE", "jwt".into()),
        (
            "FASTCHAT_AUTH__JWT__HMAC_SECRET_FILE",
            secret.path().display().to_string(),
        ),
    ])?;
    let mut claims = fastchat_auth::MintClaims::new("bench", Duration::from_secs(3600));
    claims.rooms = fastchat_auth::parse_grants("*=write")?;
    let token = fastchat_auth::mint_hs256(key.as_bytes(), &claims)?;
    let (mut raw_echo, mut fastchat, mut bare, mut with_jwt) = (
        Target::default(),
        Target::default(),
        Target::default(),
        Target::default(),
    );
    // Warm-up: connections, the station, allocator.
    unary_load(&send.endpoint(), CALLERS, 640, None).await?;
    unary_load(&raw.endpoint(), CALLERS, 640, None).await?;
    unary_load(&relay.endpoint(), CALLERS, 640, None).await?;
    unary_load(&jwt_send.endpoint(), CALLERS, 640, Some(&token)).await?;
    for run in 1..=report.runs {
        eprintln!("[send] run {run}/{}", report.runs);
        raw_echo.run(&raw.endpoint(), None).await?;
        fastchat.run(&send.endpoint(), None).await?;
        bare.run(&relay.endpoint(), None).await?;
        with_jwt.run(&jwt_send.endpoint(), Some(&token)).await?;
    }
    // The broker's own limit on this machine for the same concurrency: what
    // a send costs before any gRPC is involved.
    let js = jetstream(&nats.url()).await?;
    let mut js_rates = Vec::new();
    for _ in 0..report.runs {
        let took = publish_in_flight(&js, CALLS, CALLERS).await?;
        js_rates.push(rate(CALLS, took));
    }
    report.figure(
        "send",
        "raw JetStream publish, 64 acks in flight",
        "msg/s",
        &js_rates,
    );
    let raw = report.figure(
        "send",
        "raw tonic unary echo, 64 callers",
        "calls/s",
        &raw_echo.calls_per_s,
    );
    let fc = report.figure(
        "send",
        "SendMessage (stored, acked), 64 callers",
        "calls/s",
        &fastchat.calls_per_s,
    );
    // The same hop with nothing of FastChat in it: tonic → JetStream
    // publish → answer after the ack.
    let bare = report.figure(
        "send",
        "bare relay (tonic → JetStream publish, acked), 64 callers",
        "calls/s",
        &bare.calls_per_s,
    );
    let jwt = report.figure(
        "send",
        "SendMessage with a JWT checked per call (auth.mode jwt, HS256), 64 callers",
        "calls/s",
        &with_jwt.calls_per_s,
    );
    report.figure("send", "raw tonic unary echo p99", "ms", &raw_echo.p99);
    let p99 = report.figure("send", "SendMessage p99", "ms", &fastchat.p99);
    let jwt_p99 = report.figure("send", "SendMessage with a JWT p99", "ms", &with_jwt.p99);
    report.summary("send_jwt_calls_per_s", jwt.median);
    report.summary("send_jwt_vs_none_ratio", jwt.median / fc.median);
    report.summary("send_jwt_p99_ms", jwt_p99.median);
    report.summary("send_none_p99_ms", p99.median);
    report.summary("send_calls_per_s", fc.median);
    report.summary("send_ratio", fc.median / raw.median);
    report.summary("send_vs_bare_relay", fc.median / bare.median);
    Ok(())
}
