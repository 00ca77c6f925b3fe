//! The hostile-client audit's attacks (`AUDIT.md`), each run until told to
//! stop against the services a test started: provoked and rapid stream
//! resets, header floods, slowloris, idle connections past the per-address
//! cap, calls that never read, and bursts of history reads. Shared by the
//! abuse test (one nats-server, one replica of each service) and the chaos
//! test (a 3-node cluster, two of each, faults injected meanwhile).
//!
//! The attacks are blocking (raw HTTP/2 from
//! [`fastchat_test_support::h2raw`]): run one with `spawn_blocking` or on a
//! thread of its own. A service that is down or restarting (the chaos test
//! kills them) is retried, never a panic.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use fastchat_proto::v1;
use fastchat_test_support::{
    attack::{self, HEALTH_CHECK, Provocation},
    h2raw::{self, Conn, Frame, ReadError, code, kind},
};
use prost::Message as _;
use v1::{
    all_messages_service_client::AllMessagesServiceClient, subscribe_request::Start,
    subscribe_response::Event,
};

/// The attacker's first address; idle connections also come from
/// 127.0.0.3 to 127.0.0.5. A well-behaved client beside it should use
/// another (127.0.0.2), or the per-address caps it provokes are its own.
pub const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const SUBSCRIBE: &str = "/fastchat.v1.AllMessagesService/Subscribe";
const LIST_MESSAGES: &str = "/fastchat.v1.AllMessagesService/ListMessages";

/// The attacks, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attack {
    Resets,
    HeaderFloods,
    Slowloris,
    IdleConnections,
    NonReaders,
    HistoryBurst,
}

impl Attack {
    /// Every attack, in order.
    pub const ALL: [Self; 6] = [
        Self::Resets,
        Self::HeaderFloods,
        Self::Slowloris,
        Self::IdleConnections,
        Self::NonReaders,
        Self::HistoryBurst,
    ];

    /// A short name, for reports.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::Resets => "stream resets",
            Self::HeaderFloods => "header floods",
            Self::Slowloris => "slowloris",
            Self::IdleConnections => "idle connections",
            Self::NonReaders => "non-reading clients",
            Self::HistoryBurst => "history bursts",
        }
    }

    /// What it does, for reports.
    #[must_use]
    pub fn what(self) -> &'static str {
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
    #[must_use]
    pub fn run(self, targets: &Targets, stop: &AtomicBool) -> String {
        match self {
            Self::Resets => resets(targets, stop),
            Self::HeaderFloods => header_floods(targets, stop),
            Self::Slowloris => slowloris(targets, stop),
            Self::IdleConnections => idle_connections(targets, stop),
            Self::NonReaders => non_readers(targets, stop),
            Self::HistoryBurst => history_burst(targets, stop),
        }
    }

    /// Starts the attack against `targets` on a blocking thread (it never
    /// runs on the runtime's workers); [`Running::stop`] ends it.
    #[must_use]
    pub fn start(self, targets: &Targets) -> Running {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (stop, targets) = (Arc::clone(&stop), targets.clone());
            tokio::task::spawn_blocking(move || self.run(&targets, &stop))
        };
        Running {
            attack: self,
            stop,
            thread,
        }
    }
}

/// An attack running on a blocking thread of its own (see [`Attack::start`]).
#[derive(Debug)]
pub struct Running {
    attack: Attack,
    stop: Arc<AtomicBool>,
    thread: tokio::task::JoinHandle<String>,
}

impl Running {
    /// Tells the attack to stop and returns what the attacker saw.
    ///
    /// # Panics
    /// If it does not stop `within`, or with the attack's own panic.
    pub async fn stop(self, within: Duration) -> String {
        self.stop.store(true, Ordering::Relaxed);
        tokio::time::timeout(within, self.thread)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the {} attack did not stop within {within:?}",
                    self.attack.label()
                )
            })
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }
}

/// Where the services listen, and the room the attacks' calls name.
#[derive(Debug, Clone)]
pub struct Targets {
    /// send-service replicas.
    pub send: Vec<SocketAddr>,
    /// all-messages-service replicas.
    pub all: Vec<SocketAddr>,
    /// The room subscribed to and paged through.
    pub room: String,
}

impl Targets {
    /// Every replica of both services, with a name for reports (`send`,
    /// `all`, or `send#0`, `send#1`, ... when there are several).
    fn every(&self) -> Vec<(String, SocketAddr)> {
        let mut every = named("send", &self.send);
        every.extend(named("all", &self.all));
        every
    }

    fn all_messages(&self) -> Vec<(String, SocketAddr)> {
        named("all", &self.all)
    }
}

fn named(service: &str, addrs: &[SocketAddr]) -> Vec<(String, SocketAddr)> {
    addrs
        .iter()
        .enumerate()
        .map(|(i, &addr)| {
            let name = if addrs.len() == 1 {
                service.to_owned()
            } else {
                format!("{service}#{i}")
            };
            (name, addr)
        })
        .collect()
}

/// Runs `work` once per address on threads of its own, joins them, and
/// joins their reports (each prefixed with its service's name).
fn on_each<T: Send>(
    addrs: &[(String, SocketAddr)],
    stop: &AtomicBool,
    work: impl Fn(SocketAddr, &AtomicBool) -> T + Sync,
    report: impl Fn(&T) -> String,
) -> String {
    let runs: Vec<T> = thread::scope(|scope| {
        let runs: Vec<_> = addrs
            .iter()
            .map(|&(_, addr)| {
                let work = &work;
                scope.spawn(move || work(addr, stop))
            })
            .collect();
        runs.into_iter()
            .map(|run| run.join().expect("an attack thread panicked"))
            .collect()
    });
    runs.iter()
        .zip(addrs)
        .map(|(run, (name, _))| format!("{name}: {}", report(run)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// How long an attacker waits before it tries a service that refused it
/// (down, restarting) again.
const RETRY: Duration = Duration::from_millis(100);

/// Provoked resets on every service (each connection until its GOAWAY),
/// and a rapid-reset flood of Subscribe calls on each all-messages-service.
fn resets(targets: &Targets, stop: &AtomicBool) -> String {
    let provoke = |addr: SocketAddr, stop: &AtomicBool| {
        let (mut connections, mut resets, mut goaways, mut refused) = (0, 0, 0, 0);
        let mut provocation = Provocation::WindowOverflow;
        while !stop.load(Ordering::Relaxed) {
            let Ok(flood) = attack::try_reset_flood(addr, provocation, 2_000) else {
                refused += 1;
                thread::sleep(RETRY);
                continue;
            };
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
        (connections, resets, goaways, refused)
    };
    let request = v1::SubscribeRequest {
        room: targets.room.clone(),
        start: Some(Start::NewOnly(true)),
        rooms: Vec::new(),
    }
    .encode_to_vec();
    let rapid_reset = |addr: SocketAddr, stop: &AtomicBool| {
        let (mut connections, mut streams, mut goaways) = (0, 0, 0);
        while !stop.load(Ordering::Relaxed) {
            let Some(mut conn) = handshaken(addr) else {
                continue;
            };
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
    // ones beside them.
    let (provoked, rapid) = thread::scope(|scope| {
        let rapid = scope.spawn(|| {
            on_each(
                &targets.all_messages(),
                stop,
                rapid_reset,
                |(connections, streams, goaways)| {
                    format!(
                        "{streams} Subscribe opened and reset on {connections} connections, \
                         {goaways} GOAWAY"
                    )
                },
            )
        });
        let provoked = on_each(
            &targets.every(),
            stop,
            provoke,
            |(connections, resets, goaways, refused)| {
                format!(
                    "{resets} provoked resets on {connections} connections, {goaways} \
                     GOAWAY(ENHANCE_YOUR_CALM), {refused} connections refused"
                )
            },
        );
        (
            provoked,
            rapid.join().expect("the rapid-reset thread panicked"),
        )
    });
    format!("{provoked}; rapid resets: {rapid}")
}

/// A connection past the HTTP/2 handshake, or `None` (after a pause) if
/// the service refused it or is down.
fn handshaken(addr: SocketAddr) -> Option<Conn> {
    let conn = attack::try_connect(addr);
    if conn.is_err() {
        thread::sleep(RETRY);
    }
    conn.ok()
}

/// CONTINUATION floods and oversized header lists, one connection after
/// another.
fn header_floods(targets: &Targets, stop: &AtomicBool) -> String {
    let flood = |addr: SocketAddr, stop: &AtomicBool| {
        let (mut floods, mut cut_off, mut lists, mut refused) = (0, 0, 0, 0);
        while !stop.load(Ordering::Relaxed) {
            let Ok(flood) = attack::try_continuation_flood(addr, 10_000) else {
                thread::sleep(RETRY);
                continue;
            };
            floods += 1;
            cut_off += usize::from(flood.refusal.is_some() && flood.closed);
            for size in [20 * 1024, 80 * 1024] {
                let Some(mut conn) = handshaken(addr) else {
                    continue;
                };
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
    };
    on_each(
        &targets.every(),
        stop,
        flood,
        |(floods, cut_off, lists, refused)| {
            format!(
                "{cut_off} of {floods} CONTINUATION floods cut off, {refused} of {lists} \
                 oversized header lists refused"
            )
        },
    )
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
fn slowloris(targets: &Targets, stop: &AtomicBool) -> String {
    const PER_KIND: usize = 60;
    let kinds = [
        Trickle::Preface,
        Trickle::HeaderFrames,
        Trickle::HeaderBytes,
        Trickle::Body,
    ];
    let trickle = |addr: SocketAddr, stop: &AtomicBool| {
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
    };
    on_each(&targets.every(), stop, trickle, |(ended, held)| {
        let ended: Vec<String> = kinds
            .iter()
            .map(|k| match ended.get(k) {
                Some((n, after)) => format!("{k:?} {n} ended (first after {after:.1?})"),
                None => format!("{k:?} none ended"),
            })
            .collect();
        format!("{}; {held} open at the end", ended.join(", "))
    })
}

/// Connections that do nothing, from four attacker addresses; those the
/// server closes are opened again.
fn idle_connections(targets: &Targets, stop: &AtomicBool) -> String {
    const PER_ADDRESS: usize = 300;
    let addresses = [
        ATTACKER,
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)),
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4)),
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 5)),
    ];
    let hold = |addr: SocketAddr, stop: &AtomicBool| {
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
    };
    on_each(
        &targets.every(),
        stop,
        hold,
        |(opened, refused, closed, most, held)| {
            format!(
                "{opened} opened, {refused} refused at once, {closed} closed later, at most \
                 {most} open ({held} at the end)"
            )
        },
    )
}

/// Subscriptions and pages that never read (initial window 0), held until
/// `stop`, on each all-messages-service; reports how many the server ended
/// meanwhile.
fn non_readers(targets: &Targets, stop: &AtomicBool) -> String {
    let subscribe = v1::SubscribeRequest {
        room: targets.room.clone(),
        start: None,
        rooms: Vec::new(),
    }
    .encode_to_vec();
    let list = v1::ListMessagesRequest {
        room: targets.room.clone(),
        before_sequence: 0,
        limit: 1000,
    }
    .encode_to_vec();
    let hold = |all: SocketAddr, stop: &AtomicBool| {
        let mut conns = Vec::new();
        let (mut calls, mut failed) = (0, 0);
        // A connection (100 calls) every 100 ms: the attack is calls that
        // are never read, not the burst of opening them (history bursts are
        // next).
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
        (calls, failed, ended, closed)
    };
    on_each(
        &targets.all_messages(),
        stop,
        hold,
        |(calls, failed, ended, closed)| {
            format!(
                "{calls} calls never read ({failed} connections failed); {ended} ended by the \
                 server, {closed} connections closed by it"
            )
        },
    )
}

/// Rounds of concurrent history reads over 20 connections (spread over the
/// all-messages-service replicas), on a runtime of the attacker's own (not
/// the well-behaved client's).
fn history_burst(targets: &Targets, stop: &AtomicBool) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the attacker's runtime");
    runtime.block_on(async {
        // Lazy: a replica that is down (the chaos test restarts them) fails
        // its calls until it is back.
        let clients: Vec<_> = (0..20)
            .map(|i| {
                let all = targets.all[i % targets.all.len()];
                let channel = tonic::transport::Endpoint::from_shared(format!("http://{all}"))
                    .expect("endpoint")
                    .connect_timeout(Duration::from_secs(2))
                    .connect_lazy();
                AllMessagesServiceClient::new(channel)
            })
            .collect();
        let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
        let mut rounds = 0;
        while !stop.load(Ordering::Relaxed) {
            rounds += 1;
            let mut calls = tokio::task::JoinSet::new();
            for i in 0..1_500 {
                let mut client = clients[i % clients.len()].clone();
                let room = targets.room.clone();
                calls.spawn(async move {
                    if i % 3 == 2 {
                        let request = v1::SubscribeRequest {
                            room,
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
                                room,
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
            let mut failed = false;
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
                    Err(status) => {
                        failed = true;
                        format!("{:?}", status.code())
                    }
                };
                *outcomes.entry(key).or_default() += 1;
            }
            if failed {
                // A replica down: not a busy loop of refused calls.
                tokio::time::sleep(RETRY).await;
            }
        }
        let names: Vec<String> = targets.all_messages().into_iter().map(|(n, _)| n).collect();
        format!("{}: {rounds} rounds: {outcomes:?}", names.join(" + "))
    })
}
