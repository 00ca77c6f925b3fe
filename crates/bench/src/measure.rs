//! The measurements. Each repeats `report.runs` times, bounded in count and
//! time, and records FastChat next to its raw baseline.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};
use async_nats::jetstream::{self, consumer::push};
use bytes::Bytes;
use fastchat_proto::v1::{
    self, all_messages_service_client::AllMessagesServiceClient,
    send_message_service_client::SendMessageServiceClient, subscribe_request::Start,
    subscribe_response::Event,
};
use futures::{StreamExt, stream::FuturesUnordered};
use prost::Message as _;
use tokio::{sync::Barrier, task::JoinSet};
use tonic::transport::Channel;

use crate::{
    raw::sample_message,
    report::{Report, percentile},
    system::{Process, Relay, System},
};

/// Upper bound of any single wait in the benchmark.
const LIMIT: Duration = Duration::from_secs(120);

async fn channel(endpoint: &str) -> anyhow::Result<Channel> {
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
async fn small_window_channel(endpoint: &str) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(endpoint.to_owned())?
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(1024 * 1024)
        .tcp_nodelay(true)
        .connect()
        .await?)
}

async fn jetstream(url: &str) -> anyhow::Result<jetstream::Context> {
    let client = async_nats::ConnectOptions::new()
        .subscription_capacity(1 << 20)
        .connect(url)
        .await?;
    Ok(jetstream::new(client))
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[allow(clippy::cast_precision_loss)]
fn rate(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

/// Publishes `count` FastChat-encoded messages straight to the station with
/// 256 acknowledgements in flight; `room_of(i)` picks each one's room.
async fn publish_raw(
    js: &jetstream::Context,
    count: usize,
    room_of: impl Fn(usize) -> String,
    text: impl Fn() -> String,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    for i in 0..count {
        let room = room_of(i);
        let payload = Bytes::from(sample_message(&room, 0, text()).encode_to_vec());
        let ack = js.publish(format!("chat.messages.{room}"), payload).await?;
        in_flight.push(async move { ack.await });
        if in_flight.len() >= 256
            && let Some(result) = in_flight.next().await
        {
            result?;
        }
    }
    while let Some(result) = in_flight.next().await {
        result?;
    }
    Ok(started.elapsed())
}

/// Publishes `count` messages like SendMessage stores, with `in_flight`
/// acknowledgements outstanding at most.
async fn publish_in_flight(
    js: &jetstream::Context,
    count: usize,
    in_flight: usize,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut pending = FuturesUnordered::new();
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
        pending.push(async move { ack.await });
        if pending.len() >= in_flight
            && let Some(result) = pending.next().await
        {
            result?;
        }
    }
    while let Some(result) = pending.next().await {
        result?;
    }
    Ok(started.elapsed())
}

async fn unary_load(endpoint: &str, callers: usize, calls: usize) -> anyhow::Result<(f64, f64)> {
    let channel = channel(endpoint).await?;
    let per = calls / callers;
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for c in 0..callers {
        let mut client = SendMessageServiceClient::new(channel.clone());
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(per);
            for i in 0..per {
                let t = Instant::now();
                client
                    .send_message(v1::SendMessageRequest {
                        room: "bench".into(),
                        author: "bench".into(),
                        text: format!("caller {c} call {i} {}", "x".repeat(64)),
                        ..Default::default()
                    })
                    .await?;
                latencies.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            anyhow::Ok(latencies)
        });
    }
    let mut latencies = Vec::with_capacity(calls);
    while let Some(r) = tasks.join_next().await {
        latencies.extend(r??);
    }
    let elapsed = started.elapsed();
    Ok((
        rate(latencies.len(), elapsed),
        percentile(&mut latencies, 99.0),
    ))
}

/// (1) SendMessage calls/s with 64 concurrent callers vs raw tonic unary echo.
pub async fn send(report: &mut Report) -> anyhow::Result<()> {
    const CALLERS: usize = 64;
    const CALLS: usize = 12_800;
    // No all-messages-service here: it would consume the station and take
    // CPU from the send path that is being measured.
    let (nats, send) = System::start_send_only()?;
    let raw = Process::raw_server()?;
    let (_relay_nats, relay) = Relay::send_only()?;
    let (mut raw_rates, mut fc_rates, mut raw_p99, mut fc_p99) = (vec![], vec![], vec![], vec![]);
    let mut relay_rates = vec![];
    // Warm-up: connections, the station, allocator.
    unary_load(&send.endpoint(), CALLERS, 640).await?;
    unary_load(&raw.endpoint(), CALLERS, 640).await?;
    unary_load(&relay.endpoint(), CALLERS, 640).await?;
    for run in 1..=report.runs {
        eprintln!("[send] run {run}/{}", report.runs);
        let (r, p) =
            tokio::time::timeout(LIMIT, unary_load(&raw.endpoint(), CALLERS, CALLS)).await??;
        raw_rates.push(r);
        raw_p99.push(p);
        let (r, p) =
            tokio::time::timeout(LIMIT, unary_load(&send.endpoint(), CALLERS, CALLS)).await??;
        fc_rates.push(r);
        fc_p99.push(p);
        let (r, _) =
            tokio::time::timeout(LIMIT, unary_load(&relay.endpoint(), CALLERS, CALLS)).await??;
        relay_rates.push(r);
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
        &raw_rates,
    );
    let fc = report.figure(
        "send",
        "SendMessage (stored, acked), 64 callers",
        "calls/s",
        &fc_rates,
    );
    // The same hop with nothing of FastChat in it: tonic → JetStream
    // publish → answer after the ack.
    let bare = report.figure(
        "send",
        "bare relay (tonic → JetStream publish, acked), 64 callers",
        "calls/s",
        &relay_rates,
    );
    report.figure("send", "raw tonic unary echo p99", "ms", &raw_p99);
    report.figure("send", "SendMessage p99", "ms", &fc_p99);
    report.summary("send_calls_per_s", fc.median);
    report.summary("send_ratio", fc.median / raw.median);
    report.summary("send_vs_bare_relay", fc.median / bare.median);
    Ok(())
}

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
            let mut got = 0;
            while got < messages {
                match stream.message().await? {
                    Some(v1::SubscribeResponse {
                        event: Some(Event::Message(_)),
                    }) => got += 1,
                    Some(_) => {}
                    None => bail!("stream ended after {got}"),
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

/// A reader that needs this long per message: far slower than the feed.
const SLOW_READER_PER_MESSAGE: Duration = Duration::from_millis(1);

/// A `new_only` subscription to `room` on `channel`.
async fn subscribe_new(
    channel: Channel,
    room: &str,
) -> anyhow::Result<tonic::Streaming<v1::SubscribeResponse>> {
    Ok(AllMessagesServiceClient::new(channel)
        .subscribe(v1::SubscribeRequest {
            room: room.to_owned(),
            start: Some(Start::NewOnly(true)),
        })
        .await?
        .into_inner())
}

/// What one paced run observed.
struct Paced {
    /// Send → receive latency (ms) of every fast subscriber's every message.
    latency: Vec<f64>,
    /// SendMessage round trips (ms).
    round_trips: Vec<f64>,
    /// How long after the last send the slowest slow reader finished.
    slow_done: Duration,
}

/// Sends at `per_second` for `seconds` while `subscribers` fast
/// subscriptions (over 10 connections) measure latency and `slow`
/// deliberately slow subscriptions, each on its own connection, must receive
/// every message in order.
async fn paced(
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
            for _ in 0..total {
                let sequence = match stream.message().await? {
                    Some(v1::SubscribeResponse {
                        event: Some(Event::Message(m)),
                    }) => m.sequence,
                    other => bail!("slow reader: unexpected {other:?}"),
                };
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
        readers.spawn(async move {
            let mut samples = Vec::with_capacity(total);
            while samples.len() < total {
                match stream.message().await? {
                    Some(v1::SubscribeResponse {
                        event: Some(Event::Message(m)),
                    }) => {
                        let sent: u64 = m.text.parse().unwrap_or(0);
                        #[allow(clippy::cast_precision_loss)]
                        samples.push(now_nanos().saturating_sub(sent) as f64 / 1e6);
                    }
                    Some(_) => {}
                    None => bail!("stream ended"),
                }
            }
            anyhow::Ok(samples)
        });
    }
    let send_channel = channel(send).await?;
    let mut ticker = tokio::time::interval(Duration::from_nanos(1_000_000_000 / per_second));
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
            anyhow::Ok(started.elapsed().as_secs_f64() * 1e3)
        });
    }
    let mut round_trips = Vec::with_capacity(total);
    while let Some(r) = sends.join_next().await {
        round_trips.push(r??);
    }
    let sent = Instant::now();
    let mut samples = Vec::new();
    while let Some(r) = tokio::time::timeout(LIMIT, readers.join_next()).await? {
        samples.extend(r??);
    }
    let mut slowest = sent;
    while let Some(r) = tokio::time::timeout(LIMIT, slow_readers.join_next()).await? {
        slowest = slowest.max(r??);
    }
    Ok(Paced {
        latency: samples,
        round_trips,
        slow_done: slowest - sent,
    })
}

/// Slow subscribers: a fast reader's latency during a 10,000-message burst
/// alone, next to a second fast reader, and next to a deliberately slow
/// reader, which must still receive every message in order (it falls behind
/// the live feed and catches up from the station). The second fast reader is
/// the control: serving any extra reader costs CPU on shared cores; a slow
/// one must cost the others no more than that.
pub async fn slow(report: &mut Report) -> anyhow::Result<()> {
    const RATE: u64 = 2000;
    const SECONDS: u64 = 5;
    /// (fast readers, slow readers): alone, with another fast one, with a
    /// slow one.
    const SETUPS: [(usize, usize); 3] = [(1, 0), (2, 0), (1, 1)];
    // A live buffer of 1,024 messages (default 4,096), so that the slow
    // reader overflows it well within the burst.
    let system = System::start_with(&[("FASTCHAT_SUBSCRIPTIONS__LIVE_BUFFER", "1024".into())])?;
    let mut p50 = [vec![], vec![], vec![]];
    let mut p99 = [vec![], vec![], vec![]];
    let (mut rate, mut catch_up_counts) = (vec![], vec![]);
    // p99s on shared cores swing between runs (stalls of tens of ms hit
    // every setup now and then): more runs than the others.
    let runs = report.runs.max(5);
    report.note(format!("slow: {runs} runs of each setup"));
    for run in 1..=runs {
        eprintln!("[slow] run {run}/{runs}");
        // Rotate the order, so a drift of the machine does not land on one
        // setup.
        for i in (0..SETUPS.len()).map(|i| (i + run) % SETUPS.len()) {
            let (fast, slow) = SETUPS[i];
            let room = format!("slow{run}x{i}");
            let before = system.all.metric("fastchat_subscription_catchups_total")?;
            let mut r = paced(system.endpoints(), &room, fast, slow, RATE, SECONDS).await?;
            let catch_ups = system.all.metric("fastchat_subscription_catchups_total")? - before;
            p50[i].push(percentile(&mut r.latency, 50.0));
            p99[i].push(percentile(&mut r.latency, 99.0));
            if slow > 0 {
                if catch_ups < 1.0 {
                    bail!("the slow reader never fell behind the live feed: nothing was measured");
                }
                catch_up_counts.push(catch_ups);
                #[allow(clippy::cast_precision_loss)]
                rate.push((RATE * SECONDS) as f64 / (SECONDS as f64 + r.slow_done.as_secs_f64()));
            }
        }
    }
    let burst = "10,000 messages at 2,000/s";
    let names = [
        format!("{burst}, alone"),
        format!("{burst}, next to a second fast reader"),
        format!("{burst}, next to a slow reader (1 ms per message)"),
    ];
    let mut stats = vec![];
    for (i, name) in names.iter().enumerate() {
        let a = report.figure("slow", format!("fast reader p50, {name}"), "ms", &p50[i]);
        let b = report.figure("slow", format!("fast reader p99, {name}"), "ms", &p99[i]);
        stats.push((a.median, b.median));
    }
    report.figure(
        "slow",
        "slow reader: all 10,000 received in order, at (its own pace)",
        "msg/s",
        &rate,
    );
    report.figure(
        "slow",
        "slow reader: times it fell behind and caught up from the station",
        "",
        &catch_up_counts,
    );
    report.summary("slow_reader_fast_p50_ratio", stats[2].0 / stats[0].0);
    report.summary("slow_reader_fast_p99_ratio", stats[2].1 / stats[0].1);
    // A slow reader against an ordinary one: 1 = slowness costs others
    // nothing beyond what serving a reader costs.
    report.summary("slow_vs_fast_neighbour_p50_ratio", stats[2].0 / stats[1].0);
    report.summary("slow_vs_fast_neighbour_p99_ratio", stats[2].1 / stats[1].1);
    Ok(())
}

async fn latency_raw(
    url: &str,
    subject: &str,
    per_second: u64,
    seconds: u64,
) -> anyhow::Result<Vec<f64>> {
    let total = usize::try_from(per_second * seconds)?;
    let js = jetstream(url).await?;
    let stream = js.get_stream("chat").await?;
    let consumer = stream
        .create_consumer(push::OrderedConfig {
            deliver_subject: js.client().new_inbox(),
            filter_subject: subject.to_owned(),
            deliver_policy: jetstream::consumer::DeliverPolicy::New,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let reader = tokio::spawn(async move {
        let mut samples = Vec::with_capacity(total);
        while samples.len() < total {
            let Some(message) = messages.next().await else {
                bail!("consumer ended")
            };
            let message = message?;
            let sent: u64 = std::str::from_utf8(&message.payload)?.parse()?;
            #[allow(clippy::cast_precision_loss)]
            samples.push(now_nanos().saturating_sub(sent) as f64 / 1e6);
        }
        anyhow::Ok(samples)
    });
    let mut ticker = tokio::time::interval(Duration::from_nanos(1_000_000_000 / per_second));
    let mut acks = FuturesUnordered::new();
    for _ in 0..total {
        ticker.tick().await;
        let ack = js
            .publish(subject.to_owned(), Bytes::from(now_nanos().to_string()))
            .await?;
        acks.push(async move { ack.await });
        while acks.len() > 64 {
            if let Some(r) = acks.next().await {
                r?;
            }
        }
    }
    while let Some(r) = acks.next().await {
        r?;
    }
    tokio::time::timeout(LIMIT, reader).await??
}

/// (3) send → subscriber latency at 1,000 msg/s with 100 subscribers vs raw
/// JetStream publish → ordered consumer at the same rate.
pub async fn latency(report: &mut Report) -> anyhow::Result<()> {
    const RATE: u64 = 1000;
    const SECONDS: u64 = 3;
    let system = System::start()?;
    let relay = Relay::start()?;
    let (mut raw50, mut raw99, mut relay50, mut relay99) = (vec![], vec![], vec![], vec![]);
    let (mut fc50, mut fc99, mut one50, mut one99, mut rt50, mut rt99) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for run in 1..=report.runs {
        eprintln!("[latency] run {run}/{}", report.runs);
        // Raw messages go to a subject of the station that no room uses.
        let mut raw = latency_raw(
            &system.nats.url(),
            &format!("chat.messages.rawlat{run}"),
            RATE,
            SECONDS,
        )
        .await?;
        raw50.push(percentile(&mut raw, 50.0));
        raw99.push(percentile(&mut raw, 99.0));
        let mut one = paced(
            system.endpoints(),
            &format!("one{run}"),
            1,
            0,
            RATE,
            SECONDS,
        )
        .await?;
        one50.push(percentile(&mut one.latency, 50.0));
        one99.push(percentile(&mut one.latency, 99.0));
        let mut fc = paced(
            system.endpoints(),
            &format!("lat{run}"),
            100,
            0,
            RATE,
            SECONDS,
        )
        .await?;
        let mut bare = paced(
            relay.endpoints(),
            &format!("lat{run}"),
            100,
            0,
            RATE,
            SECONDS,
        )
        .await?;
        relay50.push(percentile(&mut bare.latency, 50.0));
        relay99.push(percentile(&mut bare.latency, 99.0));
        fc50.push(percentile(&mut fc.latency, 50.0));
        fc99.push(percentile(&mut fc.latency, 99.0));
        rt50.push(percentile(&mut fc.round_trips, 50.0));
        rt99.push(percentile(&mut fc.round_trips, 99.0));
    }
    report.figure(
        "latency",
        "raw JetStream publish → ordered consumer p50",
        "ms",
        &raw50,
    );
    let raw = report.figure(
        "latency",
        "raw JetStream publish → ordered consumer p99",
        "ms",
        &raw99,
    );
    // Where the time goes: the path to a single subscriber, and the
    // SendMessage call itself (answered after the JetStream ack).
    report.figure("latency", "SendMessage → 1 subscriber p50", "ms", &one50);
    report.figure("latency", "SendMessage → 1 subscriber p99", "ms", &one99);
    report.figure("latency", "SendMessage round trip p50", "ms", &rt50);
    report.figure("latency", "SendMessage round trip p99", "ms", &rt99);
    // The same topology with nothing of FastChat in it: what the
    // architecture itself costs on this machine.
    report.figure(
        "latency",
        "bare relay (tonic → JetStream → tonic fan-out) → 100 subscribers p50",
        "ms",
        &relay50,
    );
    let bare = report.figure(
        "latency",
        "bare relay (tonic → JetStream → tonic fan-out) → 100 subscribers p99",
        "ms",
        &relay99,
    );
    report.figure("latency", "SendMessage → 100 subscribers p50", "ms", &fc50);
    let fc = report.figure("latency", "SendMessage → 100 subscribers p99", "ms", &fc99);
    report.summary("latency_p99_ms", fc.median);
    report.summary("latency_p99_ratio", fc.median / raw.median);
    report.summary("latency_p99_vs_bare_relay", fc.median / bare.median);
    Ok(())
}

/// (4) RSS growth of all-messages-service per idle subscriber, 10,000
/// subscribers each on its own connection.
pub async fn memory(report: &mut Report) -> anyhow::Result<()> {
    const SUBSCRIBERS: usize = 10_000;
    let nats = fastchat_test_support::NatsServer::start();
    let idle = || v1::SubscribeRequest {
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
    Ok(())
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
    if count_metric {
        let deadline = Instant::now() + LIMIT;
        #[allow(clippy::cast_precision_loss)]
        while server.metric("fastchat_subscriptions_active")? < (streams + 1) as f64 {
            if Instant::now() > deadline {
                bail!("subscriptions did not all open");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = server.rss_kib()?;
    eprintln!("[memory] RSS {before} KiB → {after} KiB");
    #[allow(clippy::cast_precision_loss)]
    Ok(after.saturating_sub(before) as f64 / streams as f64)
}

/// (5) A new subscriber replaying 100,000 retained messages vs a raw ordered
/// consumer reading the same.
pub async fn catchup(report: &mut Report) -> anyhow::Result<()> {
    const MESSAGES: usize = 100_000;
    let system = System::start()?;
    let js = jetstream(&system.nats.url()).await?;
    let took = publish_raw(&js, MESSAGES, |_| "catchup".into(), || "x".repeat(64)).await?;
    eprintln!("[catchup] stored {MESSAGES} messages in {took:?}");
    let (mut raw_rates, mut fc_rates) = (vec![], vec![]);
    for run in 1..=report.runs {
        eprintln!("[catchup] run {run}/{}", report.runs);
        let stream = js.get_stream("chat").await?;
        let started = Instant::now();
        let consumer = stream
            .create_consumer(push::OrderedConfig {
                deliver_subject: js.client().new_inbox(),
                filter_subject: "chat.messages.catchup".into(),
                ..Default::default()
            })
            .await?;
        let mut messages = consumer.messages().await?;
        let mut got = 0;
        while got < MESSAGES {
            let next = tokio::time::timeout(LIMIT, messages.next()).await?;
            let Some(message) = next else {
                bail!("consumer ended")
            };
            let message = message?;
            std::hint::black_box(v1::ChatMessage::decode(message.payload.as_ref())?);
            got += 1;
        }
        raw_rates.push(rate(MESSAGES, started.elapsed()));
        drop(messages);

        let started = Instant::now();
        let mut client = AllMessagesServiceClient::new(channel(&system.all.endpoint()).await?);
        let mut stream = client
            .subscribe(v1::SubscribeRequest {
                room: "catchup".into(),
                start: None,
            })
            .await?
            .into_inner();
        let mut got = 0;
        while got < MESSAGES {
            match tokio::time::timeout(LIMIT, stream.message()).await?? {
                Some(v1::SubscribeResponse {
                    event: Some(Event::Message(_)),
                }) => got += 1,
                Some(_) => {}
                None => bail!("stream ended after {got}"),
            }
        }
        fc_rates.push(rate(MESSAGES, started.elapsed()));
    }
    let raw = report.figure(
        "catchup",
        "raw ordered consumer reading 100,000 messages",
        "msg/s",
        &raw_rates,
    );
    let fc = report.figure(
        "catchup",
        "new subscriber replaying 100,000 messages",
        "msg/s",
        &fc_rates,
    );
    report.summary("catchup_msgs_per_s", fc.median);
    report.summary("catchup_ratio", fc.median / raw.median);
    Ok(())
}

/// History paging deep in a large station: ListMessages on a station of
/// 1,000,000 messages across 1,000 rooms.
pub async fn history(report: &mut Report) -> anyhow::Result<()> {
    const MESSAGES: usize = 1_000_000;
    const ROOMS: usize = 1000;
    const CALLS: usize = 20;
    let system = System::start()?;
    let js = jetstream(&system.nats.url()).await?;
    eprintln!("[history] storing {MESSAGES} messages across {ROOMS} rooms ...");
    let took = publish_raw(
        &js,
        MESSAGES,
        |i| format!("room{}", i % ROOMS),
        || "x".repeat(64),
    )
    .await?;
    eprintln!("[history] stored in {took:?}");
    let mut client = AllMessagesServiceClient::new(channel(&system.all.endpoint()).await?);
    let (mut newest, mut deep) = (vec![], vec![]);
    for run in 1..=report.runs {
        eprintln!("[history] run {run}/{}", report.runs);
        let (mut a, mut b) = (vec![], vec![]);
        for call in 0..CALLS {
            let room = format!("room{}", (call * 37 + run * 101) % ROOMS);
            let started = Instant::now();
            client
                .list_messages(v1::ListMessagesRequest {
                    room: room.clone(),
                    before_sequence: 0,
                    limit: 50,
                })
                .await?;
            a.push(started.elapsed().as_secs_f64() * 1000.0);
            // A page from the middle of the station's history.
            let started = Instant::now();
            let page = client
                .list_messages(v1::ListMessagesRequest {
                    room,
                    before_sequence: (MESSAGES / 2) as u64,
                    limit: 50,
                })
                .await?
                .into_inner();
            b.push(started.elapsed().as_secs_f64() * 1000.0);
            if page.messages.len() != 50 {
                bail!("a deep page had {} messages, not 50", page.messages.len());
            }
        }
        newest.push(percentile(&mut a, 50.0));
        deep.push(percentile(&mut b, 50.0));
    }
    let newest = report.figure(
        "history",
        "ListMessages newest page (50), 1M msgs / 1,000 rooms, p50",
        "ms",
        &newest,
    );
    let deep = report.figure(
        "history",
        "ListMessages page at sequence 500,000, p50",
        "ms",
        &deep,
    );
    report.summary("list_newest_page_ms", newest.median);
    report.summary("list_deep_page_ms", deep.median);
    Ok(())
}
