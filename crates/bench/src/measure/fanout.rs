//! Fan-out: messages delivered per second by one all-messages instance to
//! 1,000 subscribers over 10 connections, against raw tonic streaming to as
//! many streams.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::bail;
use fastchat_proto::v1::{
    self, all_messages_service_client::AllMessagesServiceClient, subscribe_request::Start,
};
use tokio::{sync::Barrier, task::JoinSet};

use super::common::{LIMIT, channel, jetstream, next_message, publish_raw, rate};
use crate::{
    report::Report,
    system::{Process, System},
};

/// Opens `streams` subscriptions over `connections` connections; returns
/// when every one has received `messages` messages, with the time from
/// `go` (awaited after all are open) to the last.
async fn fan_in(
    endpoint: &str,
    connections: usize,
    streams: usize,
    messages: usize,
    request: v1::SubscribeRequest,
    go: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<Duration> {
    let mut channels = Vec::new();
    for _ in 0..connections {
        channels.push(channel(endpoint).await?);
    }
    let opened = Arc::new(Barrier::new(streams + 1));
    let mut tasks = JoinSet::new();
    for s in 0..streams {
        let mut client = AllMessagesServiceClient::new(channels[s % connections].clone())
            .max_decoding_message_size(1 << 20);
        let request = request.clone();
        let opened = Arc::clone(&opened);
        tasks.spawn(async move {
            let subscribed = client.subscribe(request).await;
            opened.wait().await;
            let mut stream = subscribed?.into_inner();
            for got in 0..messages {
                if next_message(&mut stream).await?.is_none() {
                    bail!("stream ended after {got}");
                }
            }
            anyhow::Ok(Instant::now())
        });
    }
    opened.wait().await;
    let started = Instant::now();
    go.await?;
    let mut last = started;
    let deadline = tokio::time::sleep(LIMIT);
    tokio::pin!(deadline);
    while !tasks.is_empty() {
        tokio::select! {
            () = &mut deadline => bail!("fan-out did not finish within {LIMIT:?}"),
            Some(done) = tasks.join_next() => last = last.max(done??),
        }
    }
    Ok(last - started)
}

/// (2) One all-messages instance, 1,000 subscribers over 10 connections:
/// messages delivered per second vs raw tonic streaming to as many streams.
pub async fn fanout(report: &mut Report) -> anyhow::Result<()> {
    const STREAMS: usize = 1000;
    const CONNECTIONS: usize = 10;
    const MESSAGES: usize = 1000;
    let system = System::start()?;
    let raw = Process::raw_server()?;
    let js = jetstream(&system.nats.url()).await?;
    let (mut raw_rates, mut fc_rates) = (vec![], vec![]);
    for run in 1..=report.runs {
        eprintln!("[fanout] run {run}/{}", report.runs);
        let request = v1::SubscribeRequest {
            rooms: Vec::new(),
            room: format!("round:{STREAMS}:{MESSAGES}:{run}"),
            start: None,
        };
        let elapsed = fan_in(
            &raw.endpoint(),
            CONNECTIONS,
            STREAMS,
            MESSAGES,
            request,
            async { Ok(()) },
        )
        .await?;
        raw_rates.push(rate(STREAMS * MESSAGES, elapsed));

        let room = format!("fan{run}");
        let request = v1::SubscribeRequest {
            rooms: Vec::new(),
            room: room.clone(),
            start: Some(Start::NewOnly(true)),
        };
        let publish = publish_raw(&js, MESSAGES, |_| room.clone(), || "x".repeat(64));
        let elapsed = fan_in(
            &system.all.endpoint(),
            CONNECTIONS,
            STREAMS,
            MESSAGES,
            request,
            async { publish.await.map(|_| ()) },
        )
        .await?;
        fc_rates.push(rate(STREAMS * MESSAGES, elapsed));
    }
    let raw = report.figure(
        "fanout",
        "raw tonic streaming, 1,000 streams / 10 connections",
        "msg/s",
        &raw_rates,
    );
    let fc = report.figure(
        "fanout",
        "Subscribe, 1,000 subscribers / 10 connections",
        "msg/s",
        &fc_rates,
    );
    report.summary("fanout_msgs_per_s", fc.median);
    report.summary("fanout_ratio", fc.median / raw.median);
    Ok(())
}
