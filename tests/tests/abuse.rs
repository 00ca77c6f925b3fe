//! The hostile-client audit's attacks (`AUDIT.md`) against a running
//! system while a well-behaved client uses it: a test nats-server,
//! send-service and all-messages-service as the real binaries (default
//! configuration but for the per-identity limits, which need tokens), a
//! sender at a fixed rate and a subscriber following its room, both from
//! their own loopback address (127.0.0.2; the attacker is 127.0.0.1 and, for
//! idle connections, 127.0.0.3 and up), as a separate client would be.
//!
//! A baseline phase without attack, then one phase per attack, one after
//! another: provoked and rapid stream resets, header floods (CONTINUATION,
//! oversized header lists), slowloris (a trickled preface, header block and
//! body), idle connections past the per-address cap, subscriptions and
//! pages that never read, and bursts of history reads (`ListMessages`,
//! `Subscribe(last = N)`). Each phase measures the well-behaved client's
//! send latency (first attempt to acknowledgement) and delivery latency
//! (first attempt to its subscriber's receipt): p50, p99, errors.
//!
//! It asserts that the well-behaved client never fails (no failed send, no
//! ended stream; every acknowledged message stored once, delivered once, in
//! order) and that its p99 during an attack stays within a loose bound of the
//! baseline's (see [`bound`]): the figures are printed, the bound is loose
//! so that a loaded 2-core machine does not make it flaky. `ABUSE_SECONDS`
//! (default 36) is the attack time, shared by the six attacks; `make abuse`
//! runs it for 10 minutes.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use fastchat_proto::v1;
use fastchat_test_support::{
    NatsOptions, NatsServer, ServiceProcess,
    attack::{self, HEALTH_CHECK, Provocation},
    h2raw::{self, Conn, Frame, ReadError, code, kind},
};
use prost::Message as _;
use tokio::{task::block_in_place, time::MissedTickBehavior};
use tonic::transport::Channel;
use v1::{
    all_messages_service_client::AllMessagesServiceClient,
    send_message_service_client::SendMessageServiceClient, subscribe_request::Start,
    subscribe_response::Event,
};

const ROOM: &str = "steady";
/// The well-behaved client's sends per second (one at a time).
const RATE: u64 = 50;
/// Its address; the attacker's is 127.0.0.1 (and 127.0.0.3 and up).
const WELL_BEHAVED: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const SUBSCRIBE: &str = "/fastchat.v1.AllMessagesService/Subscribe";
const LIST_MESSAGES: &str = "/fastchat.v1.AllMessagesService/ListMessages";
/// An attack phase's p99 may be this many times the baseline's ...
const SLOWDOWN: u32 = 10;
/// ... but never fails below this: on 2 loaded cores (debug builds, the
/// attacker on the same cores) the machine alone stalls a phase for up to
/// half a second now and then, which is the p99 of a short phase ...
const FLOOR: Duration = Duration::from_millis(750);
/// ... and never passes above this.
const CEILING: Duration = Duration::from_secs(1);

/// The bound on an attack phase's p99, given the baseline's.
fn bound(baseline: Duration) -> Duration {
    (baseline * SLOWDOWN).max(FLOOR).min(CEILING)
}

/// Each phase's length: `ABUSE_SECONDS` (default 36) over the six attacks,
/// at least 5 s.
fn phase_length() -> Duration {
    let seconds = std::env::var("ABUSE_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(36);
    Duration::from_secs((seconds / Attack::ALL.len() as u64).max(5))
}

/// The attacks, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attack {
    Resets,
    HeaderFloods,
    Slowloris,
    IdleConnections,
    NonReaders,
    HistoryBurst,
}

impl Attack {
    const ALL: [Self; 6] = [
        Self::Resets,
        Self::HeaderFloods,
        Self::Slowloris,
        Self::IdleConnections,
        Self::NonReaders,
        Self::HistoryBurst,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Resets => "stream resets",
            Self::HeaderFloods => "header floods",
            Self::Slowloris => "slowloris",
            Self::IdleConnections => "idle connections",
            Self::NonReaders => "non-reading clients",
            Self::HistoryBurst => "history bursts",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Self::Resets => {
                "both services: provoked resets (MadeYouReset, 2 kinds) on 2 connections at a \
                 time; all-messages: rapid reset (Subscribe, then RST_STREAM) on another"
            }
            Self::HeaderFloods => {
                "both services: CONTINUATION floods and 20 KiB / 80 KiB header lists, new \
                 connections all the time"
            }
            Self::Slowloris => {
                "both services: 60 connections each trickling the preface (a byte), a header \
                 block (a CONTINUATION), a HEADERS frame (a byte), a request body (a byte) every \
                 0.5 s"
            }
            Self::IdleConnections => {
                "both services: 300 connections from each of 4 addresses, half silent, half \
                 idle after the handshake, reopened when closed"
            }
            Self::NonReaders => {
                "all-messages: 10 connections x 100 Subscribe (from the first message) and 2 x \
                 8 ListMessages(limit 1000), initial window 0, never read (a connection every \
                 100 ms)"
            }
            Self::HistoryBurst => {
                "all-messages: rounds of 1,000 ListMessages(limit 100) and 500 \
                 Subscribe(last = 10) at once over 20 connections"
            }
        }
    }

    /// Runs the attack until `stop`; returns what the attacker saw.
    fn run(self, targets: Targets, stop: &AtomicBool) -> String {
        match self {
            Self::Resets => resets(targets, stop),
            Self::HeaderFloods => header_floods(targets, stop),
            Self::Slowloris => slowloris(targets, stop),
            Self::IdleConnections => idle_connections(targets, stop),
            Self::NonReaders => non_readers(targets.all, stop),
            Self::HistoryBurst => history_burst(targets.all, stop),
        }
    }
}

/// Where the services listen.
#[derive(Debug, Clone, Copy)]
struct Targets {
    send: SocketAddr,
    all: SocketAddr,
}

impl Targets {
    fn both(self) -> [SocketAddr; 2] {
        [self.send, self.all]
    }
}

/// Runs `work` once per address on threads of its own and joins them.
fn on_each<T: Send>(
    addrs: &[SocketAddr],
    stop: &AtomicBool,
    work: impl Fn(SocketAddr, &AtomicBool) -> T + Sync,
) -> Vec<T> {
    thread::scope(|scope| {
        let runs: Vec<_> = addrs
            .iter()
            .map(|&addr| {
                let work = &work;
                scope.spawn(move || work(addr, stop))
            })
            .collect();
        runs.into_iter()
            .map(|run| run.join().expect("an attack thread panicked"))
            .collect()
    })
}

/// Provoked resets on both services (each connection until its GOAWAY),
/// and a rapid-reset flood of Subscribe calls on all-messages-service.
fn resets(targets: Targets, stop: &AtomicBool) -> String {
    let provoke = |addr: SocketAddr, stop: &AtomicBool| {
        let (mut connections, mut resets, mut goaways) = (0, 0, 0);
        let mut provocation = Provocation::WindowOverflow;
        while !stop.load(Ordering::Relaxed) {
            let flood = attack::reset_flood(addr, provocation, 2_000);
            connections += 1;
            resets += flood.resets();
            goaways += usize::from(
                flood
                    .goaway
                    .is_some_and(|g| g.error_code == code::ENHANCE_YOUR_CALM),
            );
            provocation = match provocation {
                Provocation::WindowOverflow => Provocation::ContentLengthOverrun,
                Provocation::ContentLengthOverrun => Provocation::WindowOverflow,
            };
        }
        (connections, resets, goaways)
    };
    let request = v1::SubscribeRequest {
        room: ROOM.into(),
        start: Some(Start::NewOnly(true)),
        rooms: Vec::new(),
    }
    .encode_to_vec();
    let rapid_reset = |addr: SocketAddr, stop: &AtomicBool| {
        let (mut connections, mut streams, mut goaways) = (0, 0, 0);
        while !stop.load(Ordering::Relaxed) {
            let Ok(mut conn) = Conn::connect(addr, Duration::from_secs(5)) else {
                continue;
            };
            if conn.handshake(Duration::from_secs(5)).is_err() {
                continue;
            }
            connections += 1;
            let mut id = 1;
            'connection: while id < 20_000 && !stop.load(Ordering::Relaxed) {
                let mut frames = Vec::new();
                for _ in 0..50 {
                    frames.extend(attack::call(&conn, id, SUBSCRIBE, &[]));
                    frames.push(Frame::data(id, h2raw::grpc_message(&request), true));
                    frames.push(Frame::rst_stream(id, code::CANCEL));
                    id += 2;
                    streams += 1;
                }
                if conn.send_all(&frames).is_err() {
                    break;
                }
                match conn.read_available() {
                    Ok(frames) => {
                        if frames.iter().any(|f| f.kind == kind::GOAWAY) {
                            goaways += 1;
                            break 'connection;
                        }
                    }
                    Err(_) => break 'connection,
                }
                thread::sleep(Duration::from_millis(5));
            }
        }
        (connections, streams, goaways)
    };
    // Both at once: the provoked ones on a thread per service, the rapid
    // one beside them.
    let (provoked, rapid) = thread::scope(|scope| {
        let rapid = scope.spawn(|| rapid_reset(targets.all, stop));
        let provoked = on_each(&targets.both(), stop, provoke);
        (
            provoked,
            rapid.join().expect("the rapid-reset thread panicked"),
        )
    });
    let mut out = String::new();
    for ((connections, resets, goaways), name) in provoked.iter().zip(["send", "all"]) {
        let _ = write!(
            out,
            "{name}: {resets} provoked resets on {connections} connections, {goaways} \
             GOAWAY(ENHANCE_YOUR_CALM); "
        );
    }
    let (connections, streams, goaways) = rapid;
    let _ = write!(
        out,
        "all: {streams} Subscribe opened and reset on {connections} connections, {goaways} \
         GOAWAY"
    );
    out
}

/// CONTINUATION floods and oversized header lists, one connection after
/// another.
fn header_floods(targets: Targets, stop: &AtomicBool) -> String {
    let floods = on_each(&targets.both(), stop, |addr, stop| {
        let (mut floods, mut cut_off, mut lists, mut refused) = (0, 0, 0, 0);
        while !stop.load(Ordering::Relaxed) {
            let flood = attack::continuation_flood(addr, 10_000);
            floods += 1;
            cut_off += usize::from(flood.refusal.is_some() && flood.closed);
            for size in [20 * 1024, 80 * 1024] {
                let Ok(mut conn) = Conn::connect(addr, Duration::from_secs(5)) else {
                    continue;
                };
                if conn.handshake(Duration::from_secs(5)).is_err() {
                    continue;
                }
                let big = "b".repeat(size);
                let frames = attack::call(&conn, 1, HEALTH_CHECK, &[("x-big", big.as_str())]);
                // The server may close before it has read them all.
                let _ = conn.send_all(&frames);
                lists += 1;
                let answer = conn.read_until(Duration::from_secs(5), |f| {
                    attack::ends(1)(f) || f.kind == kind::GOAWAY
                });
                refused += usize::from(answer.is_ok());
            }
        }
        (floods, cut_off, lists, refused)
    });
    floods
        .iter()
        .zip(["send", "all"])
        .map(|((floods, cut_off, lists, refused), name)| {
            format!(
                "{name}: {cut_off} of {floods} CONTINUATION floods cut off, {refused} of {lists} \
                 oversized header lists refused"
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// What a slow connection trickles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Trickle {
    /// The connection preface, a byte at a time.
    Preface,
    /// A header block, a CONTINUATION frame at a time.
    HeaderFrames,
    /// One HEADERS frame, a byte at a time.
    HeaderBytes,
    /// A request body, a byte at a time (a DATA frame each).
    Body,
}

/// One slow connection: what it trickles and how far it got.
struct Slow {
    trickle: Trickle,
    conn: Conn,
    step: usize,
    opened: Instant,
}

impl Slow {
    fn open(addr: SocketAddr, trickle: Trickle) -> Option<Self> {
        let mut conn = Conn::connect(addr, Duration::from_secs(5)).ok()?;
        match trickle {
            Trickle::Preface => {}
            Trickle::HeaderBytes => {
                conn.handshake(Duration::from_secs(5)).ok()?;
            }
            Trickle::HeaderFrames => {
                conn.handshake(Duration::from_secs(5)).ok()?;
                let block = h2raw::encode_headers(&h2raw::grpc_request_headers(
                    &addr.to_string(),
                    HEALTH_CHECK,
                ));
                conn.send(&Frame::headers(1, block, false, false)).ok()?;
            }
            Trickle::Body => {
                conn.handshake(Duration::from_secs(5)).ok()?;
                let mut frames = attack::call(&conn, 1, HEALTH_CHECK, &[]);
                frames.push(Frame::data(
                    1,
                    h2raw::grpc_message_header(1_000).to_vec(),
                    false,
                ));
                conn.send_all(&frames).ok()?;
            }
        }
        Some(Self {
            trickle,
            conn,
            step: 0,
            opened: Instant::now(),
        })
    }

    /// Its next trickle; false once the server has closed it or ended the
    /// stream.
    fn step(&mut self) -> bool {
        let written = match self.trickle {
            Trickle::Preface => {
                let byte = h2raw::PREFACE[self.step % h2raw::PREFACE.len()];
                self.conn.write_raw(&[byte])
            }
            Trickle::HeaderBytes => {
                // 4 KB of headers: over half an hour at this pace.
                let pad = "p".repeat(4000);
                let frames = attack::call(&self.conn, 1, HEALTH_CHECK, &[("x-pad", &pad)]);
                let bytes = frames[0].encode();
                self.conn.write_raw(&bytes[self.step % bytes.len()..][..1])
            }
            Trickle::HeaderFrames => {
                let piece = h2raw::encode_headers(&[(format!("x-slow-{}", self.step), "a")]);
                self.conn.send(&Frame::continuation(1, piece, false))
            }
            Trickle::Body => self.conn.send(&Frame::data(1, vec![0], false)),
        };
        self.step += 1;
        let ended = match self.conn.read_available() {
            Ok(frames) => frames
                .iter()
                .any(|f| f.kind == kind::GOAWAY || attack::ends(1)(f)),
            Err(_) => true,
        };
        written.is_ok() && !ended
    }
}

/// Slow connections of each kind, reopened when the server ends them;
/// reports how many it ended and after how long (at the earliest).
fn slowloris(targets: Targets, stop: &AtomicBool) -> String {
    const PER_KIND: usize = 60;
    let kinds = [
        Trickle::Preface,
        Trickle::HeaderFrames,
        Trickle::HeaderBytes,
        Trickle::Body,
    ];
    let runs = on_each(&targets.both(), stop, |addr, stop| {
        let mut slow: Vec<Slow> = Vec::new();
        let mut ended: BTreeMap<Trickle, (usize, Duration)> = BTreeMap::new();
        while !stop.load(Ordering::Relaxed) {
            for trickle in kinds {
                let open = slow.iter().filter(|s| s.trickle == trickle).count();
                slow.extend((open..PER_KIND).filter_map(|_| Slow::open(addr, trickle)));
            }
            slow.retain_mut(|s| {
                let alive = s.step();
                if !alive {
                    let entry = ended.entry(s.trickle).or_insert((0, Duration::MAX));
                    entry.0 += 1;
                    entry.1 = entry.1.min(s.opened.elapsed());
                }
                alive
            });
            thread::sleep(Duration::from_millis(500));
        }
        let held = slow.len();
        (ended, held)
    });
    runs.iter()
        .zip(["send", "all"])
        .map(|((ended, held), name)| {
            let ended: Vec<String> = kinds
                .iter()
                .map(|k| match ended.get(k) {
                    Some((n, after)) => format!("{k:?} {n} ended (first after {after:.1?})"),
                    None => format!("{k:?} none ended"),
                })
                .collect();
            format!("{name}: {}; {held} open at the end", ended.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Connections that do nothing, from four attacker addresses; those the
/// server closes are opened again.
fn idle_connections(targets: Targets, stop: &AtomicBool) -> String {
    const PER_ADDRESS: usize = 300;
    let addresses = [
        ATTACKER,
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)),
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4)),
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 5)),
    ];
    let runs = on_each(&targets.both(), stop, |addr, stop| {
        let mut open: Vec<(usize, bool, Conn)> = Vec::new();
        let (mut opened, mut refused, mut closed, mut most) = (0, 0, 0, 0);
        while !stop.load(Ordering::Relaxed) {
            for (a, &from) in addresses.iter().enumerate() {
                for silent in [true, false] {
                    let have = open
                        .iter()
                        .filter(|(i, s, _)| *i == a && *s == silent)
                        .count();
                    for _ in have..PER_ADDRESS / 2 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let Ok(mut conn) = Conn::connect_from(from, addr, Duration::from_secs(2))
                        else {
                            refused += 1;
                            continue;
                        };
                        if !silent && conn.handshake(Duration::from_secs(2)).is_err() {
                            refused += 1;
                            continue;
                        }
                        opened += 1;
                        open.push((a, silent, conn));
                    }
                }
            }
            most = most.max(open.len());
            thread::sleep(Duration::from_millis(500));
            open.retain_mut(|(_, _, conn)| {
                let alive = !matches!(
                    conn.read_available(),
                    Err(ReadError::Closed) | Err(ReadError::Io(_))
                );
                closed += usize::from(!alive);
                alive
            });
        }
        (opened, refused, closed, most, open.len())
    });
    runs.iter()
        .zip(["send", "all"])
        .map(|((opened, refused, closed, most, held), name)| {
            format!(
                "{name}: {opened} opened, {refused} refused at once, {closed} closed later, at \
                 most {most} open ({held} at the end)"
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Subscriptions and pages that never read (initial window 0), held until
/// `stop`; reports how many the server ended meanwhile.
fn non_readers(all: SocketAddr, stop: &AtomicBool) -> String {
    let subscribe = v1::SubscribeRequest {
        room: ROOM.into(),
        start: None,
        rooms: Vec::new(),
    }
    .encode_to_vec();
    let list = v1::ListMessagesRequest {
        room: ROOM.into(),
        before_sequence: 0,
        limit: 1000,
    }
    .encode_to_vec();
    let mut conns = Vec::new();
    let (mut calls, mut failed) = (0, 0);
    // A connection (100 calls) every 100 ms: the attack is calls that are
    // never read, not the burst of opening them (history bursts are next).
    for (path, request, connections, streams) in [
        (SUBSCRIBE, &subscribe, 10, 100),
        (LIST_MESSAGES, &list, 2, 8),
    ] {
        for _ in 0..connections {
            let requests: Vec<&[u8]> = vec![request.as_slice(); streams];
            let opened = Conn::connect(all, Duration::from_secs(5)).and_then(|mut conn| {
                attack::non_reading_streams(&mut conn, path, &requests).map(|()| conn)
            });
            match opened {
                Ok(conn) => {
                    calls += streams;
                    conns.push(conn);
                }
                Err(_) => failed += 1,
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
    let (mut ended, mut closed) = (0, 0);
    while !stop.load(Ordering::Relaxed) {
        thread::sleep(Duration::from_millis(500));
        conns.retain_mut(|conn| match conn.read_available() {
            Ok(frames) => {
                ended += frames
                    .iter()
                    .filter(|f| {
                        f.rst_code().is_some() || (f.kind == kind::HEADERS && f.is_end_stream())
                    })
                    .count();
                true
            }
            Err(_) => {
                closed += 1;
                false
            }
        });
    }
    format!(
        "all: {calls} calls never read ({failed} connections failed); {ended} ended by the \
         server, {closed} connections closed by it"
    )
}

/// Rounds of concurrent history reads over 20 connections, on a runtime of
/// the attacker's own (not the well-behaved client's).
fn history_burst(all: SocketAddr, stop: &AtomicBool) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the attacker's runtime");
    runtime.block_on(async {
        let mut clients = Vec::new();
        for _ in 0..20 {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{all}"))
                .expect("endpoint")
                .connect()
                .await
                .expect("the attacker connects");
            clients.push(AllMessagesServiceClient::new(channel));
        }
        let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
        let mut rounds = 0;
        while !stop.load(Ordering::Relaxed) {
            rounds += 1;
            let mut calls = tokio::task::JoinSet::new();
            for i in 0..1_500 {
                let mut client = clients[i % clients.len()].clone();
                calls.spawn(async move {
                    if i % 3 == 2 {
                        let request = v1::SubscribeRequest {
                            room: ROOM.into(),
                            start: Some(Start::Last(10)),
                            rooms: Vec::new(),
                        };
                        let mut stream = client.subscribe(request).await?.into_inner();
                        let mut got = 0;
                        while got < 10 {
                            match stream.message().await? {
                                Some(v1::SubscribeResponse {
                                    event: Some(Event::Message(_)),
                                }) => got += 1,
                                Some(_) => {}
                                None => break,
                            }
                        }
                        Ok::<_, tonic::Status>("Subscribe(last = 10) OK")
                    } else {
                        client
                            .list_messages(v1::ListMessagesRequest {
                                room: ROOM.into(),
                                before_sequence: 0,
                                limit: 100,
                            })
                            .await?;
                        Ok("ListMessages OK")
                    }
                });
            }
            // A round that takes longer is cut short (its calls dropped).
            let cut_at = tokio::time::Instant::now() + Duration::from_secs(15);
            loop {
                let outcome = match tokio::time::timeout_at(cut_at, calls.join_next()).await {
                    Ok(Some(outcome)) => outcome,
                    Ok(None) => break,
                    Err(_) => {
                        *outcomes.entry("cut short after 15 s".into()).or_default() += calls.len();
                        calls.abort_all();
                        break;
                    }
                };
                let key = match outcome.expect("an attacker task") {
                    Ok(what) => what.to_owned(),
                    Err(status) => format!("{:?}", status.code()),
                };
                *outcomes.entry(key).or_default() += 1;
            }
        }
        format!("all: {rounds} rounds: {outcomes:?}")
    })
}

/// One message the well-behaved client sent.
#[derive(Debug, Clone)]
struct Sent {
    phase: usize,
    started: tokio::time::Instant,
    acked: tokio::time::Instant,
    sequence: u64,
    text: String,
}

/// What the well-behaved sender saw.
#[derive(Debug, Default)]
struct SendLog {
    sent: Vec<Sent>,
    /// Failed attempts (each retried with the same id): phase, status.
    errors: Vec<(usize, String)>,
}

/// A channel from the well-behaved client's address.
fn well_behaved_channel(addr: SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .local_address(Some(WELL_BEHAVED))
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy()
}

/// Sends `m0`, `m1`, ... at [`RATE`] until `stop`, one at a time, each with
/// its text as `client_message_id`, retrying a failure with the same id.
async fn send_steadily(
    addr: SocketAddr,
    phase: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> SendLog {
    let mut client = SendMessageServiceClient::new(well_behaved_channel(addr));
    let mut log = SendLog::default();
    let mut ticks = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut index = 0;
    while !stop.load(Ordering::Relaxed) {
        ticks.tick().await;
        let text = format!("m{index}");
        let request = v1::SendMessageRequest {
            room: ROOM.into(),
            author: "steady".into(),
            text: text.clone(),
            client_message_id: text.clone(),
            client_time_ms: 0,
        };
        let in_phase = phase.load(Ordering::Relaxed);
        let started = tokio::time::Instant::now();
        loop {
            let outcome = tokio::time::timeout(
                Duration::from_secs(10),
                client.send_message(request.clone()),
            )
            .await;
            match outcome {
                Ok(Ok(response)) => {
                    let stored = response
                        .into_inner()
                        .message
                        .expect("an OK send has its message");
                    log.sent.push(Sent {
                        phase: in_phase,
                        started,
                        acked: tokio::time::Instant::now(),
                        sequence: stored.sequence,
                        text: stored.text,
                    });
                    break;
                }
                Ok(Err(status)) => log.errors.push((
                    in_phase,
                    format!("{:?}: {}", status.code(), status.message()),
                )),
                Err(_) => log.errors.push((in_phase, "no answer within 10 s".into())),
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{text} not acknowledged within 60 s: {:?}",
                log.errors.last()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        index += 1;
    }
    log
}

/// What the well-behaved subscriber received.
#[derive(Debug, Default)]
struct Delivery {
    /// (sequence, text, when) in arrival order.
    messages: Vec<(u64, String, tokio::time::Instant)>,
    /// Streams that ended or failed (it resumed with `after_sequence`):
    /// phase, status.
    errors: Vec<(usize, String)>,
    gaps: Vec<String>,
}

/// Follows the room from its first message until `target` (the last
/// acknowledged sequence, once known) has arrived, or 30 s after it is
/// known; resumes after the last sequence received if a stream ends.
async fn follow(
    addr: SocketAddr,
    phase: Arc<AtomicUsize>,
    target: tokio::sync::watch::Receiver<Option<u64>>,
) -> Delivery {
    let mut client = AllMessagesServiceClient::new(well_behaved_channel(addr));
    let mut delivery = Delivery::default();
    let mut deadline = None;
    let mut done = |last: u64| {
        (*target.borrow()).is_some_and(|want| {
            let at = *deadline.get_or_insert_with(|| Instant::now() + Duration::from_secs(30));
            last >= want || Instant::now() > at
        })
    };
    loop {
        let last = delivery.messages.last().map_or(0, |m| m.0);
        if done(last) {
            return delivery;
        }
        let request = v1::SubscribeRequest {
            room: ROOM.into(),
            start: (last > 0).then_some(Start::AfterSequence(last)),
            rooms: Vec::new(),
        };
        let mut stream = match client.subscribe(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => {
                let at = phase.load(Ordering::Relaxed);
                delivery.errors.push((
                    at,
                    format!("subscribe: {:?}: {}", status.code(), status.message()),
                ));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        loop {
            let last = delivery.messages.last().map_or(0, |m| m.0);
            if done(last) {
                return delivery;
            }
            let next = tokio::time::timeout(Duration::from_millis(500), stream.message()).await;
            let at = phase.load(Ordering::Relaxed);
            match next {
                Err(_) => {}
                Ok(Ok(Some(response))) => match response.event {
                    Some(Event::Message(m)) => {
                        delivery
                            .messages
                            .push((m.sequence, m.text, tokio::time::Instant::now()));
                    }
                    Some(Event::Gap(gap)) => delivery.gaps.push(format!("{gap:?}")),
                    Some(Event::CaughtUp(_) | Event::Heartbeat(_)) | None => {}
                },
                Ok(Ok(None)) => {
                    delivery
                        .errors
                        .push((at, "the stream ended with OK".into()));
                    break;
                }
                Ok(Err(status)) => {
                    delivery
                        .errors
                        .push((at, format!("{:?}: {}", status.code(), status.message())));
                    break;
                }
            }
        }
    }
}

/// The `q`-quantile of `values` (nearest rank).
fn quantile(values: &mut [Duration], q: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    values.sort_unstable();
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "a rank below the slice's length"
    )]
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// A service's resident memory and open file descriptors, from `/proc`.
fn footprint(process: &ServiceProcess) -> String {
    let Some(pid) = process.pid() else {
        return "not running".into();
    };
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(|l| l.trim_start_matches("VmRSS:").trim().to_owned())
        })
        .unwrap_or_default();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count);
    format!("{} RSS {rss}, {fds} fds", process.name())
}

/// CPU time a service has used so far (user + system, from
/// `/proc/<pid>/stat`, at the usual 100 ticks per second).
fn cpu(process: &ServiceProcess) -> Duration {
    let ticks = process
        .pid()
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .and_then(|stat| {
            let fields: Vec<u64> = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|f| f.parse().ok())
                .collect();
            Some(fields.iter().sum::<u64>())
        })
        .unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// One phase's figures for the well-behaved client.
#[derive(Debug)]
struct Figures {
    sends: usize,
    send_p50: Duration,
    send_p99: Duration,
    delivery_p50: Duration,
    delivery_p99: Duration,
    /// The slowest delivery, and when its send started (since the phase
    /// began).
    worst: Duration,
    worst_at: Duration,
    errors: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[expect(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
async fn attacks_do_not_fail_or_stall_a_well_behaved_client() {
    let test_started = Instant::now();
    let length = phase_length();
    let nats = block_in_place(|| {
        NatsServer::start_with(NatsOptions {
            monitor_port: Some(0),
            ..NatsOptions::default()
        })
    });
    let url = nats.url();
    let env = |name: &'static str| {
        vec![
            ("FASTCHAT_NATS__URL", url.as_str()),
            ("FASTCHAT_NATS__NAME", name),
            ("FASTCHAT_STATION__MAX_BYTES", "268435456"),
            // Per identity: every client here is anonymous (auth.mode = none).
            ("FASTCHAT_LIMITS__SEND_PER_SECOND", "1000000"),
            ("FASTCHAT_LIMITS__SEND_BURST", "1000000"),
            ("FASTCHAT_LIMITS__SUBSCRIPTIONS_PER_IDENTITY", "1000000"),
        ]
    };
    let (send_env, all_env) = (env("send"), env("all"));
    let send = block_in_place(|| ServiceProcess::start("send-service", &send_env));
    let all = block_in_place(|| ServiceProcess::start("all-messages-service", &all_env));
    let addr = |p: &ServiceProcess| -> SocketAddr {
        p.endpoint()
            .trim_start_matches("http://")
            .parse()
            .expect("a service address")
    };
    let targets = Targets {
        send: addr(&send),
        all: addr(&all),
    };

    let phase = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (target_tx, target_rx) = tokio::sync::watch::channel(None);
    let subscriber = tokio::spawn(follow(targets.all, Arc::clone(&phase), target_rx));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sender = tokio::spawn(send_steadily(
        targets.send,
        Arc::clone(&phase),
        Arc::clone(&stop),
    ));

    // Phase 0: no attack; then one phase per attack. Sends started between
    // phases (while an attack winds down) count for no phase.
    const BETWEEN: usize = usize::MAX;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut footprints = vec![format!("{}; {}", footprint(&send), footprint(&all))];
    let mut cpu_used = Vec::new();
    let mut phase_started = vec![tokio::time::Instant::now()];
    let cpu_before = (cpu(&send), cpu(&all));
    phase.store(0, Ordering::Relaxed);
    tokio::time::sleep(length).await;
    cpu_used.push((cpu(&send) - cpu_before.0, cpu(&all) - cpu_before.1));
    let mut attacker_saw = vec![String::new()];
    for (i, attack) in Attack::ALL.into_iter().enumerate() {
        phase.store(BETWEEN, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(500)).await;
        eprintln!(
            "abuse: {:.1?} phase {} ({})",
            test_started.elapsed(),
            i + 1,
            attack.label()
        );
        let attack_stop = Arc::new(AtomicBool::new(false));
        let cpu_before = (cpu(&send), cpu(&all));
        let running = {
            let attack_stop = Arc::clone(&attack_stop);
            tokio::task::spawn_blocking(move || attack.run(targets, &attack_stop))
        };
        phase_started.push(tokio::time::Instant::now());
        phase.store(i + 1, Ordering::Relaxed);
        tokio::time::sleep(length).await;
        footprints.push(format!("{}; {}", footprint(&send), footprint(&all)));
        cpu_used.push((cpu(&send) - cpu_before.0, cpu(&all) - cpu_before.1));
        phase.store(BETWEEN, Ordering::Relaxed);
        attack_stop.store(true, Ordering::Relaxed);
        let saw = tokio::time::timeout(Duration::from_secs(30), running)
            .await
            .expect("the attack stops within 30 s")
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        eprintln!("abuse: {}: {saw}", attack.label());
        attacker_saw.push(saw);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let log = tokio::time::timeout(Duration::from_secs(70), sender)
        .await
        .expect("the sender stops")
        .expect("sender task");
    let acknowledged = log.sent.len() as u64;
    target_tx.send_replace(Some(log.sent.last().map_or(0, |s| s.sequence)));
    let delivery = tokio::time::timeout(Duration::from_secs(45), subscriber)
        .await
        .expect("the subscriber stops")
        .expect("subscriber task");

    // Nothing acknowledged lost or duplicated.
    let mut violations = Vec::new();
    let sequences: Vec<u64> = log.sent.iter().map(|s| s.sequence).collect();
    if sequences != (1..=acknowledged).collect::<Vec<_>>() {
        violations.push(format!(
            "the {acknowledged} acknowledged sequences are not 1..={acknowledged} in order"
        ));
    }
    let got: Vec<u64> = delivery.messages.iter().map(|m| m.0).collect();
    if got != sequences {
        violations.push(format!(
            "the subscriber received {} messages, not the {acknowledged} acknowledged, once, in \
             order",
            got.len()
        ));
    }
    for (sent, (sequence, text, _)) in log.sent.iter().zip(&delivery.messages) {
        if sent.text != *text || sent.sequence != *sequence {
            violations.push(format!(
                "delivered {sequence} {text:?} where {} {:?} was acknowledged",
                sent.sequence, sent.text
            ));
            break;
        }
    }
    violations.extend(
        delivery
            .gaps
            .iter()
            .map(|g| format!("the subscriber got {g}")),
    );
    let station = block_in_place(|| nats.stream_report("chat"))
        .expect("the broker's monitoring")
        .map(|report| report.messages);
    if station != Some(acknowledged) {
        violations.push(format!(
            "the station holds {station:?} messages, {acknowledged} were acknowledged"
        ));
    }

    // Each phase's figures.
    let mut figures = Vec::new();
    for (p, &phase_started) in phase_started.iter().enumerate() {
        let sent: Vec<&Sent> = log.sent.iter().filter(|s| s.phase == p).collect();
        let mut send_latency: Vec<Duration> = sent.iter().map(|s| s.acked - s.started).collect();
        let delivered: Vec<(Duration, Duration)> = sent
            .iter()
            .filter_map(|s| {
                let index = usize::try_from(s.sequence).ok()?.checked_sub(1)?;
                let (_, _, at) = delivery.messages.get(index)?;
                Some((
                    at.saturating_duration_since(s.started),
                    s.started.saturating_duration_since(phase_started),
                ))
            })
            .collect();
        let (worst, worst_at) = delivered.iter().copied().max().unwrap_or_default();
        let mut delivery_latency: Vec<Duration> = delivered.iter().map(|d| d.0).collect();
        let errors = log.errors.iter().filter(|(at, _)| *at == p).count()
            + delivery.errors.iter().filter(|(at, _)| *at == p).count();
        figures.push(Figures {
            sends: sent.len(),
            send_p50: quantile(&mut send_latency, 0.50),
            send_p99: quantile(&mut send_latency, 0.99),
            delivery_p50: quantile(&mut delivery_latency, 0.50),
            delivery_p99: quantile(&mut delivery_latency, 0.99),
            worst,
            worst_at,
            errors,
        });
    }
    let mut table = format!(
        "abuse report ({length:?} per phase, {RATE} sends/s; well-behaved client from \
         {WELL_BEHAVED}):\n| phase | attack | sends | send p50 | send p99 | delivery p50 | \
         delivery p99 | worst delivery (at) | errors | CPU send / all |\n|---|---|---|---|---|---|---|---|---|---|\n"
    );
    for (p, f) in figures.iter().enumerate() {
        let label = if p == 0 {
            "none (baseline)"
        } else {
            Attack::ALL[p - 1].label()
        };
        let _ = writeln!(
            table,
            "| {p} | {label} | {} | {} | {} | {} | {} | {} (+{:.1?}) | {} | {:.1?} / {:.1?} |",
            f.sends,
            ms(f.send_p50),
            ms(f.send_p99),
            ms(f.delivery_p50),
            ms(f.delivery_p99),
            ms(f.worst),
            f.worst_at,
            f.errors,
            cpu_used[p].0,
            cpu_used[p].1,
        );
    }
    let _ = writeln!(table, "what each attack did, and what the attacker saw:");
    for (p, attack) in Attack::ALL.iter().enumerate() {
        let _ = writeln!(
            table,
            "  {}: {}\n    saw: {}\n    after it: {}",
            attack.label(),
            attack.what(),
            attacker_saw[p + 1],
            footprints[p + 1]
        );
    }
    let _ = writeln!(table, "  before the attacks: {}", footprints[0]);
    let errors: Vec<String> = [&send, &all]
        .iter()
        .flat_map(|p| {
            p.log()
                .lines()
                .filter(|l| l.contains("ERROR"))
                .map(|l| format!("{}: {}", p.name(), l.chars().take(300).collect::<String>()))
                .collect::<Vec<_>>()
        })
        .collect();
    let _ = writeln!(
        table,
        "acknowledged {acknowledged}, delivered {}; well-behaved errors {}; service ERROR log \
         lines {} {:?}; test took {:.1?}",
        delivery.messages.len(),
        log.errors.len() + delivery.errors.len(),
        errors.len(),
        errors.iter().take(3).collect::<Vec<_>>(),
        test_started.elapsed()
    );
    eprint!("{table}");

    // The well-behaved client never failed, and no attack slowed it down
    // past the bound.
    violations.extend(
        log.errors
            .iter()
            .chain(&delivery.errors)
            .take(10)
            .map(|(p, e)| format!("phase {p}: the well-behaved client got {e}")),
    );
    let baseline = &figures[0];
    for (p, f) in figures.iter().enumerate().skip(1) {
        for (what, p99, base) in [
            ("send", f.send_p99, baseline.send_p99),
            ("delivery", f.delivery_p99, baseline.delivery_p99),
        ] {
            if p99 > bound(base) {
                violations.push(format!(
                    "phase {p} ({}): {what} p99 {} over {} (baseline {})",
                    Attack::ALL[p - 1].label(),
                    ms(p99),
                    ms(bound(base)),
                    ms(base)
                ));
            }
        }
        if f.sends == 0 {
            violations.push(format!("phase {p}: no send"));
        }
    }
    assert!(
        violations.is_empty(),
        "{} violation(s):\n  {}\n{table}",
        violations.len(),
        violations.join("\n  ")
    );
}
