//! Memory: all-messages-service's RSS growth per idle subscriber, 10,000
//! subscribers each on its own connection and 10,000 over 10 connections,
//! each against the raw tonic server's per idle stream the same way.

use std::time::{Duration, Instant};

use anyhow::bail;
use fastchat_proto::v1::{
    self, all_messages_service_client::AllMessagesServiceClient, subscribe_request::Start,
};
use futures::StreamExt as _;

use super::common::{LIMIT, channel};
use crate::{report::Report, system::Process};

/// (4) RSS growth of all-messages-service per idle subscriber, 10,000
/// subscribers each on its own connection.
pub async fn memory(report: &mut Report) -> anyhow::Result<()> {
    const SUBSCRIBERS: usize = 10_000;
    let nats = fastchat_test_support::NatsServer::start();
    let idle = || v1::SubscribeRequest {
        rooms: Vec::new(),
        room: "idle".into(),
        start: Some(Start::NewOnly(true)),
    };
    let mut per = Vec::new();
    for run in 1..=report.runs {
        eprintln!("[memory] run {run}/{}", report.runs);
        let all = Process::service("all-messages-service", &nats.url(), &[])?;
        per.push(idle_rss_per_stream(&all, SUBSCRIBERS, idle, true).await?);
    }
    // The same with the raw tonic server: what a connection and a stream
    // cost before FastChat adds anything (a round that never starts).
    let never = || v1::SubscribeRequest {
        rooms: Vec::new(),
        room: "round:1000000000:1".into(),
        start: None,
    };
    let mut raw_per = Vec::new();
    for run in 1..=report.runs {
        eprintln!("[memory] raw run {run}/{}", report.runs);
        let raw = Process::raw_server()?;
        raw_per.push(idle_rss_per_stream(&raw, SUBSCRIBERS, never, false).await?);
    }
    let raw = report.figure(
        "memory",
        "raw tonic server RSS per idle stream (own connection)",
        "KiB",
        &raw_per,
    );
    report.summary("raw_mem_per_stream_kib", raw.median);
    let stats = report.figure(
        "memory",
        "all-messages-service RSS per idle subscriber (own connection)",
        "KiB",
        &per,
    );
    report.summary("mem_per_subscriber_kib", stats.median);

    // As clients usually hold them: many subscriptions per connection
    // (a browser's or a gateway's), 10,000 over 10 connections.
    let mut shared = Vec::new();
    for run in 1..=report.runs {
        eprintln!("[memory] shared-connection run {run}/{}", report.runs);
        let all = Process::service(
            "all-messages-service",
            &nats.url(),
            &[("FASTCHAT_SUBSCRIPTIONS__MAX_PER_CONNECTION", "2000".into())],
        )?;
        shared.push(idle_rss_shared(&all, SUBSCRIBERS, 10, idle, true).await?);
    }
    // The transport's own floor there: the raw tonic server's idle streams,
    // 10,000 over 10 connections.
    let mut raw_shared = Vec::new();
    for run in 1..=report.runs {
        eprintln!("[memory] raw shared-connection run {run}/{}", report.runs);
        let raw = Process::raw_server()?;
        raw_shared.push(idle_rss_shared(&raw, SUBSCRIBERS, 10, never, false).await?);
    }
    let raw_shared = report.figure(
        "memory",
        "raw tonic server RSS per idle stream (10,000 over 10 connections)",
        "KiB",
        &raw_shared,
    );
    report.summary("raw_mem_per_shared_conn_stream_kib", raw_shared.median);
    let stats = report.figure(
        "memory",
        "all-messages-service RSS per idle subscriber (10,000 over 10 connections)",
        "KiB",
        &shared,
    );
    report.summary("mem_per_shared_conn_subscriber_kib", stats.median);
    Ok(())
}

/// RSS growth of `server` (KiB) per idle stream when `streams` streams are
/// opened over `connections` connections (after one first stream).
async fn idle_rss_shared(
    server: &Process,
    streams: usize,
    connections: usize,
    request: impl Fn() -> v1::SubscribeRequest + Copy,
    count_metric: bool,
) -> anyhow::Result<f64> {
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        channels.push(channel(&server.endpoint()).await?);
    }
    let mut first = AllMessagesServiceClient::new(channels[0].clone());
    let _first = first.subscribe(request()).await?.into_inner();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = server.rss_kib()?;
    let mut opened = futures::stream::iter(0..streams)
        .map(|i| {
            let mut client = AllMessagesServiceClient::new(channels[i % connections].clone());
            async move { anyhow::Ok(client.subscribe(request()).await?.into_inner()) }
        })
        .buffer_unordered(128);
    let mut open = Vec::with_capacity(streams);
    while let Some(stream) = tokio::time::timeout(LIMIT, opened.next()).await? {
        open.push(stream?);
    }
    rss_growth_per_stream(server, before, streams, count_metric, "shared connections").await
}

/// RSS growth of `server` (KiB) per idle stream when `streams` clients each
/// open one on their own connection. One stream is opened first so the
/// baseline includes the first-connection set-up; `count_metric` waits for
/// FastChat's own gauge to confirm every subscription is open.
async fn idle_rss_per_stream(
    server: &Process,
    streams: usize,
    request: impl Fn() -> v1::SubscribeRequest + Copy,
    count_metric: bool,
) -> anyhow::Result<f64> {
    let mut first = AllMessagesServiceClient::new(channel(&server.endpoint()).await?);
    let _first = first.subscribe(request()).await?.into_inner();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = server.rss_kib()?;
    let endpoint = server.endpoint();
    let mut opened = futures::stream::iter(0..streams)
        .map(|_| {
            let endpoint = endpoint.clone();
            async move {
                let mut client = AllMessagesServiceClient::new(channel(&endpoint).await?);
                let stream = client.subscribe(request()).await?.into_inner();
                anyhow::Ok((client, stream))
            }
        })
        .buffer_unordered(128);
    let mut clients = Vec::with_capacity(streams);
    while let Some(opened) = tokio::time::timeout(LIMIT, opened.next()).await? {
        clients.push(opened?);
    }
    rss_growth_per_stream(server, before, streams, count_metric, "own connections").await
}

/// RSS growth of `server` (KiB) per stream since `before`, once `streams`
/// (plus the first) are open: with `count_metric`, FastChat's own gauge
/// confirms every subscription first.
async fn rss_growth_per_stream(
    server: &Process,
    before: u64,
    streams: usize,
    count_metric: bool,
    label: &str,
) -> anyhow::Result<f64> {
    if count_metric {
        let deadline = Instant::now() + LIMIT;
        #[expect(
            clippy::cast_precision_loss,
            reason = "counts and byte sizes far below 2^52 shown as floats"
        )]
        while server.metric("fastchat_subscriptions_active")? < (streams + 1) as f64 {
            if Instant::now() > deadline {
                bail!("subscriptions did not all open");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = server.rss_kib()?;
    eprintln!("[memory] {label}: RSS {before} KiB → {after} KiB");
    #[expect(
        clippy::cast_precision_loss,
        reason = "counts and byte sizes far below 2^52 shown as floats"
    )]
    Ok(after.saturating_sub(before) as f64 / streams as f64)
}
