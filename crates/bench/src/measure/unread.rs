//! Unread: the memory that clients who never read can pin in
//! all-messages-service. 40 ListMessages pages of 1,000 maximal messages,
//! each asked on a raw HTTP/2 connection of its own whose window is 0 (the
//! server can never send the body); 1,000 subscribers (100 per connection,
//! 64 KiB stream windows) that never read a burst of 300 maximal messages;
//! and the share of such subscribers that a short stall timeout ends. There
//! is no raw baseline: the figures compare builds (`FASTCHAT_BENCH_BIN_DIR`).

use std::{
    collections::VecDeque,
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use fastchat_proto::v1::{
    self, all_messages_service_client::AllMessagesServiceClient,
    send_message_service_client::SendMessageServiceClient,
};
use fastchat_test_support::{
    NatsServer,
    h2raw::{self, Frame, flag, kind, setting},
};
use futures::StreamExt as _;
use prost::Message as _;
use tokio::task::JoinSet;
use tonic::transport::Channel;

use super::common::{LIMIT, channel, small_window_channel, subscribe_new};
use crate::{
    report::Report,
    system::{self, Process},
};

/// The largest text send-service accepts (send.max_text_bytes).
const TEXT_BYTES: usize = 4096;
/// The longest author (send.max_author_chars).
const AUTHOR_CHARS: usize = 64;
/// Messages in the room the unread pages read.
const STORED: usize = 1000;
/// Clients that each ask for a page of 1,000 and never read it.
const PAGE_CLIENTS: usize = 40;
/// Subscribers that never read, spread over [`CONNECTIONS`] (100 each, the
/// default subscriptions.max_per_connection).
const SUBSCRIBERS: usize = 1000;
const CONNECTIONS: usize = 10;
/// Messages sent to the unread subscribers: about 1.2 MiB of each one's
/// stream, more than its queue and transport buffers hold.
const BURST: usize = 300;
/// The service's stall timeout variable, and the short value the stall
/// part sets.
const STALL_KEY: &str = "FASTCHAT_SUBSCRIPTIONS__STALL_TIMEOUT";
const SHORT_STALL: Duration = Duration::from_secs(5);
/// RSS counts as settled once it moved less than this over [`SETTLE_SPAN`].
const SETTLED_KIB: u64 = 1024;
const SETTLE_SPAN: Duration = Duration::from_secs(1);
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// The memory that clients who never read can pin: unread pages, unread
/// subscribers, and the stall timeout that ends the latter.
pub async fn unread(report: &mut Report) -> anyhow::Result<()> {
    let nats = NatsServer::start();
    let send = Process::service("send-service", &nats.url(), &[])?;
    eprintln!("[unread] storing {STORED} maximal messages ...");
    send_maximal(&send.endpoint(), "unread-pages", STORED).await?;

    let (mut pages, mut first_look, mut left, mut settled) = (vec![], vec![], vec![], vec![]);
    let (mut answered, mut waiting, mut refused) = (vec![], vec![], vec![]);
    for run in 1..=report.runs {
        eprintln!("[unread] pages run {run}/{}", report.runs);
        let r = unread_pages(&nats.url(), "unread-pages").await?;
        pages.push(r.growth_mib);
        first_look.push(r.first_look_mib);
        left.push(r.left_mib);
        settled.push(r.settled_s);
        answered.push(count(r.answered));
        waiting.push(count(r.waiting));
        refused.push(count(r.refused));
    }

    // The old code knows no stall timeout; the new one's default (30 s)
    // could end subscribers before RSS settles on a busy machine.
    let stall_known = system::knows(
        "all-messages-service",
        STALL_KEY,
        &format!("{}s", SHORT_STALL.as_secs()),
    )?;
    let fill_env: Vec<(&str, String)> = if stall_known {
        vec![(STALL_KEY, "10m".into())]
    } else {
        vec![]
    };
    let (mut per, mut idle_per, mut taken) = (vec![], vec![], vec![]);
    for run in 1..=report.runs {
        eprintln!("[unread] subscribers run {run}/{}", report.runs);
        let room = format!("unread-subs-{run}");
        let r = unread_subscribers(&nats.url(), &send.endpoint(), &room, &fill_env).await?;
        per.push(r.per_subscriber_kib);
        idle_per.push(r.idle_per_subscriber_kib);
        taken.push(r.taken_per_subscriber);
    }

    let (mut ended, mut ended_after) = (vec![], vec![]);
    if stall_known {
        let env = [(STALL_KEY, format!("{}s", SHORT_STALL.as_secs()))];
        for run in 1..=report.runs {
            eprintln!("[unread] stall run {run}/{}", report.runs);
            let room = format!("unread-stall-{run}");
            let r = stalled_subscribers(&nats.url(), &send.endpoint(), &room, &env).await?;
            ended.push(r.ratio);
            ended_after.push(r.all_ended_after_s);
        }
    }

    let stats = report.figure(
        "unread",
        "40 unread ListMessages(limit 1,000) pages of 4 KiB messages, raw h2 window 0: RSS growth",
        "MiB",
        &pages,
    );
    report.summary("unread_pages_40_mib", stats.median);
    report.figure(
        "unread",
        "pages: the same, 3 s after the requests",
        "MiB",
        &first_look,
    );
    report.figure(
        "unread",
        "pages: every client answered and RSS stable, after the requests",
        "s",
        &settled,
    );
    report.figure(
        "unread",
        "of the 40: answered (response headers sent, body held)",
        "",
        &answered,
    );
    report.figure(
        "unread",
        "of the 40: refused or failed (trailers only: a status, no page)",
        "",
        &refused,
    );
    report.figure("unread", "of the 40: no answer within 20 s", "", &waiting);
    report.figure(
        "unread",
        "pages: RSS growth left 2 s after the 40 clients hung up",
        "MiB",
        &left,
    );
    let stats = report.figure(
        "unread",
        "1,000 unread subscribers (100 per connection, 64 KiB windows), 300 × 4 KiB sent: RSS growth per subscriber",
        "KiB",
        &per,
    );
    report.summary("mem_per_unread_subscriber_kib", stats.median);
    report.figure(
        "unread",
        "of which before anything was sent (idle subscribers)",
        "KiB",
        &idle_per,
    );
    report.figure(
        "unread",
        "messages taken off the feed per unread subscriber (queued or handed to the transport)",
        "",
        &taken,
    );
    report.note(format!(
        "unread: pages: RSS of all-messages-service (VmRSS) before {PAGE_CLIENTS} raw HTTP/2 \
         clients (one connection and one OS thread each, SETTINGS_INITIAL_WINDOW_SIZE 0 and no \
         WINDOW_UPDATE) asked for ListMessages(limit 1,000) of a room of 1,000 messages \
         (4,096-byte text, 64-character author, sent through send-service), and once each \
         client had its answer (response headers, or a refusal after history.queue_timeout) \
         and RSS moved < 1 MiB over 1 s, at least {} s and at most {} s after the requests; \
         the clients stay connected until then",
        PAGES_FIRST_LOOK.as_secs(),
        PAGES_SETTLE_UNTIL.as_secs(),
    ));
    report.note(format!(
        "unread: subscribers: (RSS once settled after {BURST} such messages were sent to a room \
         − RSS before the 1,000 new_only subscriptions were opened, over {CONNECTIONS} \
         connections already open with 64 KiB stream and 1 MiB connection windows) / 1,000; it \
         includes the idle subscriber's own cost, shown apart. Settled: moving < 1 MiB over 1 s \
         with no message taken off the feed, at most 10 s after the last send. Messages taken \
         beyond a subscriber's queue (subscriptions.client_buffer, and max_queued_bytes where \
         known) went to the transport: the queue holds messages shared by every subscriber, \
         the transport an encoded copy each.{}",
        if stall_known {
            " subscriptions.stall_timeout is set to 10m for it, so none is ended meanwhile"
        } else {
            " These binaries know no subscriptions.stall_timeout: nothing ends an unread subscriber"
        }
    ));
    if stall_known {
        let stats = report.figure(
            "unread",
            "same, stall_timeout 5s: share ended with RESOURCE_EXHAUSTED naming subscriptions.stall_timeout",
            "",
            &ended,
        );
        report.summary("unread_subscriber_stall_ended_ratio", stats.median);
        report.figure(
            "unread",
            "stall_timeout 5s: all ended, after the last send",
            "s",
            &ended_after,
        );
        report.note(
            "unread: stall: the same 1,000 unread subscribers and burst with \
             FASTCHAT_SUBSCRIPTIONS__STALL_TIMEOUT=5s; once the service's \
             fastchat_subscriptions_active gauge is 0 (at most 25 s after the last send), each \
             client reads its stream to the end: the share whose status is RESOURCE_EXHAUSTED \
             naming subscriptions.stall_timeout",
        );
        if stats.min < 1.0 {
            report.note("unread: NOT every unread subscriber was ended by the stall timeout");
        }
    } else {
        report.note(
            "unread: stall part skipped: these binaries know no subscriptions.stall_timeout \
             (unread_subscriber_stall_ended_ratio not measured)",
        );
    }
    Ok(())
}

#[expect(
    clippy::cast_precision_loss,
    reason = "counts and byte sizes far below 2^52 shown as floats"
)]
fn count(n: usize) -> f64 {
    n as f64
}

/// Sends `count` messages of the largest size send-service accepts to
/// `room`, 16 at a time.
async fn send_maximal(endpoint: &str, room: &str, count: usize) -> anyhow::Result<()> {
    let client = SendMessageServiceClient::new(channel(endpoint).await?);
    let text = "y".repeat(TEXT_BYTES);
    let author = "a".repeat(AUTHOR_CHARS);
    let mut sends = futures::stream::iter(0..count)
        .map(|_| {
            let mut client = client.clone();
            let request = v1::SendMessageRequest {
                room: room.to_owned(),
                author: author.clone(),
                text: text.clone(),
                ..Default::default()
            };
            async move { client.send_message(request).await }
        })
        .buffer_unordered(16);
    let deadline = Instant::now() + LIMIT;
    while let Some(sent) = tokio::time::timeout_at(deadline.into(), sends.next())
        .await
        .context("sending took too long")?
    {
        sent.context("send a maximal message")?;
    }
    Ok(())
}

/// The pages' RSS is taken 3 s after the requests, and once every client
/// has its answer (response headers, or a refusal once its queue time is
/// up) and RSS moved < 1 MiB over 1 s, at most 20 s after the requests (the
/// old code, with no cap on history reads, takes longer than 3 s to read 40
/// pages on 2 shared cores).
const PAGES_FIRST_LOOK: Duration = Duration::from_secs(3);
const PAGES_SETTLE_UNTIL: Duration = Duration::from_secs(20);
/// How long after the page clients hung up the RSS left is taken.
const AFTER_HANG_UP: Duration = Duration::from_secs(2);

/// What one run of unread pages saw.
struct Pages {
    /// RSS growth once every client has its answer and RSS is stable.
    growth_mib: f64,
    /// RSS growth [`PAGES_FIRST_LOOK`] after the requests.
    first_look_mib: f64,
    /// RSS growth left [`AFTER_HANG_UP`] after the clients closed.
    left_mib: f64,
    /// When `growth_mib` was taken, after the requests.
    settled_s: f64,
    answered: usize,
    waiting: usize,
    refused: usize,
}

/// What a page client has seen so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PageState {
    /// Nothing yet: waiting for a history slot, or being read.
    Waiting,
    /// Response headers (the page is read; its body waits for a window
    /// that never opens).
    Answered,
    /// The stream ended without a body (trailers only: refused once its
    /// queue time was up, or failed).
    Refused,
}

/// A client that asked for a page and never reads it.
struct PageClient {
    conn: h2raw::Conn,
    state: PageState,
}

impl PageClient {
    /// Takes what has arrived (reading frames off the socket opens no
    /// window: the body stays where it is).
    fn poll(&mut self) {
        if self.state == PageState::Refused {
            return;
        }
        let frames = match self.conn.read_available() {
            Ok(frames) => frames,
            Err(e) => {
                eprintln!("[unread] a page client's connection: {e}");
                return;
            }
        };
        for frame in &frames {
            match (frame.kind, frame.stream_id) {
                (kind::HEADERS, 1) if frame.has_flag(flag::END_STREAM) => {
                    self.state = PageState::Refused;
                }
                (kind::HEADERS, 1) => self.state = PageState::Answered,
                (kind::RST_STREAM | kind::GOAWAY, _) => {
                    eprintln!("[unread] a page client was reset: {frame:?}");
                }
                _ => {}
            }
        }
    }
}

/// RSS growth of a fresh all-messages-service while [`PAGE_CLIENTS`]
/// clients ask for a page of `room` and never read it.
async fn unread_pages(nats_url: &str, room: &str) -> anyhow::Result<Pages> {
    let all = Process::service("all-messages-service", nats_url, &[])?;
    // A small page first, read normally: the first history read's set-up
    // belongs in the baseline.
    let mut client = AllMessagesServiceClient::new(channel(&all.endpoint()).await?);
    let page = client
        .list_messages(v1::ListMessagesRequest {
            room: room.to_owned(),
            before_sequence: 0,
            limit: 10,
        })
        .await?
        .into_inner();
    if page.messages.len() != 10 {
        bail!("the room holds {} messages, not ≥ 10", page.messages.len());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = all.rss_kib()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], all.port));
    let mut asking = JoinSet::new();
    for _ in 0..PAGE_CLIENTS {
        let room = room.to_owned();
        asking.spawn_blocking(move || unread_page(addr, &room));
    }
    let mut clients = Vec::with_capacity(PAGE_CLIENTS);
    while let Some(conn) = tokio::time::timeout(LIMIT, asking.join_next()).await? {
        clients.push(PageClient {
            conn: conn?.context("ask for an unread page")?,
            state: PageState::Waiting,
        });
    }
    let asked = Instant::now();
    let keep = usize::try_from(SETTLE_SPAN.as_millis() / SAMPLE_EVERY.as_millis())? + 1;
    let mut samples = VecDeque::with_capacity(keep + 1);
    let mut first_look = None;
    let after = loop {
        clients = tokio::task::spawn_blocking(move || {
            clients.iter_mut().for_each(PageClient::poll);
            clients
        })
        .await?;
        let rss = all.rss_kib()?;
        samples.push_back(rss);
        if samples.len() > keep {
            samples.pop_front();
        }
        let elapsed = asked.elapsed();
        if elapsed >= PAGES_FIRST_LOOK && first_look.is_none() {
            first_look = Some(rss);
        }
        let answered = clients.iter().all(|c| c.state != PageState::Waiting);
        let (low, high) = samples.iter().fold((u64::MAX, 0), |(low, high), &rss| {
            (low.min(rss), high.max(rss))
        });
        let stable = samples.len() == keep && high - low < SETTLED_KIB;
        if elapsed >= PAGES_SETTLE_UNTIL || (first_look.is_some() && answered && stable) {
            break rss;
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    };
    let settled_s = asked.elapsed().as_secs_f64();
    let states: Vec<PageState> = clients.iter().map(|c| c.state).collect();
    let count = |state| states.iter().filter(|&&s| s == state).count();
    let (answered, waiting, refused) = (
        count(PageState::Answered),
        count(PageState::Waiting),
        count(PageState::Refused),
    );
    drop(clients);
    tokio::time::sleep(AFTER_HANG_UP).await;
    let left = all.rss_kib()?;
    let first_look = first_look.unwrap_or(after);
    eprintln!(
        "[unread] pages: RSS {before} KiB → {first_look} KiB at 3 s → {after} KiB at \
         {settled_s:.1} s ({answered} answered, {waiting} waiting, {refused} refused); {left} \
         KiB once they hung up"
    );
    #[expect(
        clippy::cast_precision_loss,
        reason = "counts and byte sizes far below 2^52 shown as floats"
    )]
    let mib = |kib: u64| kib.saturating_sub(before) as f64 / 1024.0;
    Ok(Pages {
        growth_mib: mib(after),
        first_look_mib: mib(first_look),
        left_mib: mib(left),
        settled_s,
        answered,
        waiting,
        refused,
    })
}

/// Asks for a page of 1,000 of `room` on a connection of its own whose
/// stream window is 0 and never opened: the server can answer with headers
/// but never send the body.
fn unread_page(addr: SocketAddr, room: &str) -> std::io::Result<h2raw::Conn> {
    let mut conn = h2raw::Conn::connect(addr, Duration::from_secs(5))?;
    conn.send_preface()?;
    conn.send(&Frame::settings(&[(setting::INITIAL_WINDOW_SIZE, 0)]))?;
    let headers = h2raw::encode_headers(&h2raw::grpc_request_headers(
        &addr.to_string(),
        "/fastchat.v1.AllMessagesService/ListMessages",
    ));
    for frame in h2raw::header_frames(1, &headers, false, h2raw::DEFAULT_MAX_FRAME_SIZE) {
        conn.send(&frame)?;
    }
    let request = v1::ListMessagesRequest {
        room: room.to_owned(),
        before_sequence: 0,
        limit: 1000,
    };
    conn.send(&Frame::data(
        1,
        h2raw::grpc_message(&request.encode_to_vec()),
        true,
    ))?;
    Ok(conn)
}

/// `server`'s RSS (KiB) once settled: sampled every 250 ms from `from` on
/// until it, and `progress` (e.g. a counter of the service's), moved less
/// than 1 MiB (and not at all) over the last second, or at `until`.
async fn settled_rss(
    server: &Process,
    from: Instant,
    until: Instant,
    progress: impl Fn() -> anyhow::Result<f64>,
) -> anyhow::Result<u64> {
    let keep = usize::try_from(SETTLE_SPAN.as_millis() / SAMPLE_EVERY.as_millis())? + 1;
    let mut samples = VecDeque::with_capacity(keep + 1);
    loop {
        samples.push_back((server.rss_kib()?, progress()?));
        if samples.len() > keep {
            samples.pop_front();
        }
        let now = Instant::now();
        let (low, high) = samples
            .iter()
            .fold((u64::MAX, 0), |(low, high), &(rss, _)| {
                (low.min(rss), high.max(rss))
            });
        let still = samples.front().map(|s| s.1) == samples.back().map(|s| s.1);
        if now >= until
            || (now >= from && samples.len() == keep && high - low < SETTLED_KIB && still)
        {
            return Ok(samples.back().map_or(0, |s| s.0));
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
}

/// [`SUBSCRIBERS`] `new_only` subscriptions to one room over
/// [`CONNECTIONS`] small-window connections, none of them ever read.
struct Unread {
    _channels: Vec<Channel>,
    streams: Vec<tonic::Streaming<v1::SubscribeResponse>>,
}

/// Opens the connections (one ListMessages on each, so their set-up is in
/// the baseline), waits 500 ms and returns `server`'s RSS then.
async fn open_connections(server: &Process, room: &str) -> anyhow::Result<(Vec<Channel>, u64)> {
    let mut channels = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        let channel = small_window_channel(&server.endpoint()).await?;
        AllMessagesServiceClient::new(channel.clone())
            .list_messages(v1::ListMessagesRequest {
                room: room.to_owned(),
                before_sequence: 0,
                limit: 1,
            })
            .await?;
        channels.push(channel);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok((channels, server.rss_kib()?))
}

/// Subscribes [`SUBSCRIBERS`] to `room` over `channels` (64 at a time) and
/// waits until the service counts them all.
async fn subscribe_unread(
    server: &Process,
    channels: Vec<Channel>,
    room: &str,
) -> anyhow::Result<Unread> {
    let before = server.metric("fastchat_subscriptions_active")?;
    let mut opening = futures::stream::iter(0..SUBSCRIBERS)
        .map(|i| subscribe_new(channels[i % channels.len()].clone(), room))
        .buffer_unordered(64);
    let mut streams = Vec::with_capacity(SUBSCRIBERS);
    let deadline = Instant::now() + LIMIT;
    while let Some(stream) = tokio::time::timeout_at(deadline.into(), opening.next())
        .await
        .context("subscribing took too long")?
    {
        streams.push(stream.context("subscribe")?);
    }
    drop(opening);
    #[expect(
        clippy::cast_precision_loss,
        reason = "counts and byte sizes far below 2^52 shown as floats"
    )]
    let wanted = before + SUBSCRIBERS as f64;
    while server.metric("fastchat_subscriptions_active")? < wanted {
        if Instant::now() > deadline {
            bail!("the subscriptions did not all open");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(Unread {
        _channels: channels,
        streams,
    })
}

/// What one run of unread subscribers saw.
struct Subscribers {
    per_subscriber_kib: f64,
    idle_per_subscriber_kib: f64,
    taken_per_subscriber: f64,
}

/// RSS growth per subscriber of a fresh all-messages-service (started with
/// `env`) while [`SUBSCRIBERS`] never read a burst of [`BURST`] maximal
/// messages to `room`.
async fn unread_subscribers(
    nats_url: &str,
    send: &str,
    room: &str,
    env: &[(&str, String)],
) -> anyhow::Result<Subscribers> {
    let all = Process::service("all-messages-service", nats_url, env)?;
    let (channels, before) = open_connections(&all, room).await?;
    let unread = subscribe_unread(&all, channels, room).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = all.rss_kib()?;
    let delivered = all.metric("fastchat_messages_delivered_total")?;
    send_maximal(send, room, BURST).await?;
    let sent = Instant::now();
    let after = settled_rss(
        &all,
        sent + SETTLE_SPAN,
        sent + Duration::from_secs(10),
        || all.metric("fastchat_messages_delivered_total"),
    )
    .await?;
    let taken = all.metric("fastchat_messages_delivered_total")? - delivered;
    let active = all.metric("fastchat_subscriptions_active")?;
    eprintln!(
        "[unread] subscribers: RSS {before} KiB → {idle} KiB idle → {after} KiB after {BURST} \
         sent ({:.1} s); {taken} messages taken; {active} still subscribed",
        sent.elapsed().as_secs_f64()
    );
    #[expect(
        clippy::cast_precision_loss,
        reason = "counts and byte sizes far below 2^52 shown as floats"
    )]
    let active_count = SUBSCRIBERS as f64;
    if active < active_count {
        bail!("only {active} of {SUBSCRIBERS} unread subscribers are still open");
    }
    drop(unread);
    #[expect(
        clippy::cast_precision_loss,
        reason = "counts and byte sizes far below 2^52 shown as floats"
    )]
    let per = |kib: u64| kib as f64 / SUBSCRIBERS as f64;
    Ok(Subscribers {
        per_subscriber_kib: per(after.saturating_sub(before)),
        idle_per_subscriber_kib: per(idle.saturating_sub(before)),
        taken_per_subscriber: taken / active_count,
    })
}

/// What one stall run saw.
struct Stalled {
    /// Share of the subscribers whose stream ended with RESOURCE_EXHAUSTED
    /// naming subscriptions.stall_timeout.
    ratio: f64,
    /// From the last send until the service counted none open.
    all_ended_after_s: f64,
}

/// As [`unread_subscribers`] with a short stall timeout in `env`: waits
/// until the service has ended every unread subscriber, then reads each
/// stream to its end for its status.
async fn stalled_subscribers(
    nats_url: &str,
    send: &str,
    room: &str,
    env: &[(&str, String)],
) -> anyhow::Result<Stalled> {
    let all = Process::service("all-messages-service", nats_url, env)?;
    let (channels, _) = open_connections(&all, room).await?;
    let unread = subscribe_unread(&all, channels, room).await?;
    send_maximal(send, room, BURST).await?;
    let sent = Instant::now();
    let deadline = sent + SHORT_STALL + Duration::from_secs(20);
    while all.metric("fastchat_subscriptions_active")? > 0.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_ended_after_s = sent.elapsed().as_secs_f64();
    let stalled = all.metric("fastchat_subscriptions_stalled_total")?;
    // Now read what each stream still holds, then its status.
    let read_until = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut reading = JoinSet::new();
    for mut stream in unread.streams {
        reading.spawn(async move {
            loop {
                match tokio::time::timeout_at(read_until, stream.message()).await {
                    Ok(Ok(Some(_))) => {}
                    Ok(Ok(None)) => return Err("ended with OK".to_owned()),
                    Ok(Err(status)) => return Ok(status),
                    Err(_) => return Err("still open after 60 s".to_owned()),
                }
            }
        });
    }
    let (mut ended, mut other) = (0, Vec::new());
    while let Some(outcome) = reading.join_next().await {
        match outcome? {
            Ok(status)
                if status.code() == tonic::Code::ResourceExhausted
                    && status.message().contains("subscriptions.stall_timeout") =>
            {
                ended += 1;
            }
            Ok(status) => other.push(format!("{:?}: {}", status.code(), status.message())),
            Err(why) => other.push(why),
        }
    }
    eprintln!(
        "[unread] stall: {ended} of {SUBSCRIBERS} ended by the stall timeout ({stalled} counted \
         by the service), all ended {all_ended_after_s:.1} s after the last send"
    );
    if let Some(first) = other.first() {
        eprintln!("[unread] stall: {} others, e.g. {first}", other.len());
    }
    #[expect(
        clippy::cast_precision_loss,
        reason = "counts and byte sizes far below 2^52 shown as floats"
    )]
    let ratio = f64::from(ended) / SUBSCRIBERS as f64;
    Ok(Stalled {
        ratio,
        all_ended_after_s,
    })
}
