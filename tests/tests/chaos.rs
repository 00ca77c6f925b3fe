//! Chaos under load: a 3-node JetStream cluster (the station at R3), two
//! send-service and two all-messages-service processes (the real binaries),
//! each service's broker connection through a fault-injecting proxy per
//! node; idempotent senders that retry with the same `client_message_id` on
//! either send-service; subscribers that resume with `after_sequence` on
//! either all-messages-service. For `CHAOS_SECONDS` (default 45) faults are
//! injected one after another, chosen from a seed (`CHAOS_SEED`, printed):
//! a broker node SIGKILLed (restarted on its store) or SIGSTOPped, a service
//! SIGKILLed or SIGTERMed (drained) and restarted, the network between a
//! service and its node black-holed, slowed or reset. Then, for every
//! acknowledged message: stored exactly once, delivered to every subscriber
//! exactly once and in order. `make chaos` runs it for 10 minutes.
//!
//! Meanwhile the audit's attacks ([`fastchat_e2e::attacks`]) run against
//! all four services one after another, from 127.0.0.1 (and .3 to .5), after
//! a first phase without: the well-behaved clients (the senders and
//! subscribers, from 127.0.0.2) get their send and delivery latency
//! reported per phase, faults included.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use fastchat_e2e::{
    attacks::{Attack, Targets},
    ms, quantile,
};
use fastchat_proto::v1;
use fastchat_test_support::{Fault, FaultProxy, NatsCluster, ServiceProcess};
use rand::{RngExt as _, SeedableRng as _, rngs::StdRng};
use tokio::{
    task::block_in_place,
    time::{Instant, MissedTickBehavior},
};
use tonic::transport::Channel;
use v1::{
    all_messages_service_client::AllMessagesServiceClient,
    send_message_service_client::SendMessageServiceClient, subscribe_request::Start,
    subscribe_response::Event,
};

const STATION: &str = "chat";
const ROOM: &str = "chaos";
const SENDERS: usize = 3;
const SUBSCRIBERS: usize = 3;
/// Sends per second per sender, at most (one at a time each).
const RATE: u64 = 40;
/// A message not acknowledged this long after its first attempt fails the
/// test: well inside the station's duplicate window (2 min), so every retry
/// is deduplicated.
const MESSAGE_WITHIN: Duration = Duration::from_secs(90);
/// After the faults, time for subscribers to receive everything.
const DELIVERY_WITHIN: Duration = Duration::from_secs(60);
/// A cluster node restarted must be healthy again within this.
const NODE_HEALTHY_WITHIN: Duration = Duration::from_secs(60);
/// The well-behaved clients' address; the attacker's is 127.0.0.1 (and .3
/// to .5), so the per-address caps it runs into are its own.
const WELL_BEHAVED: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// Settings from the environment: the run's length and seed.
fn settings() -> (Duration, u64) {
    let seconds = std::env::var("CHAOS_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(45);
    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(rand::random);
    (Duration::from_secs(seconds), seed)
}

/// The faults, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    KillNode,
    PauseNode,
    KillService,
    TermService,
    CutNetwork,
    SlowNetwork,
    ResetNetwork,
}

impl Kind {
    const ALL: [Self; 7] = [
        Self::KillNode,
        Self::PauseNode,
        Self::KillService,
        Self::TermService,
        Self::CutNetwork,
        Self::SlowNetwork,
        Self::ResetNetwork,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::KillNode => "SIGKILL broker node (restart on its store)",
            Self::PauseNode => "SIGSTOP/SIGCONT broker node",
            Self::KillService => "SIGKILL service (restart)",
            Self::TermService => "SIGTERM service (drain, restart)",
            Self::CutNetwork => "black-hole service<->node",
            Self::SlowNetwork => "slow service<->node",
            Self::ResetNetwork => "reset + refuse service<->node",
        }
    }
}

/// What happened, when (since the faults began), for the report and for a
/// failure message.
#[derive(Debug, Default)]
struct FaultLog {
    entries: Vec<String>,
    by_kind: BTreeMap<Kind, usize>,
}

impl FaultLog {
    fn record(&mut self, started: Instant, kind: Option<Kind>, text: String) {
        if let Some(kind) = kind {
            *self.by_kind.entry(kind).or_default() += 1;
        }
        let line = format!("{:>7.1?} {text}", started.elapsed());
        eprintln!("chaos: {line}");
        self.entries.push(line);
    }
}

/// One service process and its proxies, one per broker node.
struct Instance {
    process: ServiceProcess,
    proxies: Vec<FaultProxy>,
}

impl Instance {
    /// The proxies carrying a connection now (the nodes it talks to).
    fn active_proxies(&self) -> Vec<usize> {
        (0..self.proxies.len())
            .filter(|&i| self.proxies[i].open_connections() > 0)
            .collect()
    }
}

async fn start_instance(name: &'static str, cluster: &NatsCluster, index: usize) -> Instance {
    let mut proxies = Vec::new();
    for node in cluster.nodes() {
        let target = format!("127.0.0.1:{}", node.port())
            .parse()
            .expect("a socket address");
        proxies.push(FaultProxy::start(target).await.expect("start a proxy"));
    }
    // Each instance lists the nodes from a different one first.
    let urls = (0..proxies.len())
        .map(|i| proxies[(i + index) % proxies.len()].nats_url())
        .collect::<Vec<_>>()
        .join(",");
    let env = [
        ("FASTCHAT_NATS__URL", urls.as_str()),
        (
            "FASTCHAT_NATS__NAME",
            if name == "send-service" {
                "send"
            } else {
                "all"
            },
        ),
        ("FASTCHAT_NATS__REQUEST_TIMEOUT", "2s"),
        ("FASTCHAT_NATS__CONNECT_TIMEOUT", "2s"),
        ("FASTCHAT_NATS__MAX_RECONNECT_DELAY", "250ms"),
        ("FASTCHAT_STATION__REPLICAS", "3"),
        // The test nodes have a 1 GB store.
        ("FASTCHAT_STATION__MAX_BYTES", "268435456"),
        ("FASTCHAT_SEND__TIMEOUT", "3s"),
        ("FASTCHAT_SHUTDOWN__DRAIN_TIMEOUT", "3s"),
        ("FASTCHAT_LIMITS__SEND_PER_SECOND", "1000000"),
        ("FASTCHAT_LIMITS__SEND_BURST", "1000000"),
        ("FASTCHAT_LIMITS__SUBSCRIPTIONS_PER_IDENTITY", "1000000"),
    ];
    let process = block_in_place(|| ServiceProcess::start(name, &env));
    Instance { process, proxies }
}

/// A lazily connecting channel from the well-behaved clients' address (a
/// dead instance does not block its creation; calls on it fail fast and it
/// reconnects by itself).
fn lazy_channel(endpoint: String) -> Channel {
    tonic::transport::Endpoint::from_shared(endpoint)
        .expect("valid endpoint")
        .local_address(Some(WELL_BEHAVED))
        .connect_timeout(Duration::from_secs(1))
        .connect_lazy()
}

/// One acknowledged message.
#[derive(Debug, Clone)]
struct Ack {
    sequence: u64,
    text: String,
    duplicate: bool,
    /// The first attempt, and the acknowledgement.
    started: Instant,
    acked: Instant,
}

/// What one sender saw.
#[derive(Debug, Default)]
struct SendReport {
    acks: Vec<Ack>,
    /// Failed attempts by status code (each retried with the same id).
    failures: BTreeMap<String, usize>,
    /// Longest time from a message's first attempt to its acknowledgement.
    worst_stall: Duration,
    /// A message never acknowledged (the test fails).
    gave_up: Option<String>,
}

/// Sends `<author>-0`, `<author>-1`, ... one at a time until `stop`, each
/// with its text as `client_message_id`, retrying a failed send on the other
/// send-service until it is acknowledged.
async fn send_load(
    author: String,
    clients: Vec<SendMessageServiceClient<Channel>>,
    stop: Arc<AtomicBool>,
) -> SendReport {
    let mut report = SendReport::default();
    let mut ticks = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut next_client = 0usize;
    let mut index = 0usize;
    while !stop.load(Ordering::Relaxed) {
        ticks.tick().await;
        let text = format!("{author}-{index}");
        let request = v1::SendMessageRequest {
            room: ROOM.into(),
            author: author.clone(),
            text: text.clone(),
            client_message_id: text.clone(),
            client_time_ms: 0,
        };
        let first_attempt = Instant::now();
        loop {
            let mut client = clients[next_client % clients.len()].clone();
            let outcome = tokio::time::timeout(
                Duration::from_secs(10),
                client.send_message(request.clone()),
            )
            .await;
            let status = match outcome {
                Ok(Ok(response)) => {
                    let response = response.into_inner();
                    let Some(stored) = response.message else {
                        report.gave_up = Some(format!("{text}: an OK send without the message"));
                        return report;
                    };
                    report.worst_stall = report.worst_stall.max(first_attempt.elapsed());
                    report.acks.push(Ack {
                        sequence: stored.sequence,
                        text: stored.text,
                        duplicate: response.duplicate,
                        started: first_attempt,
                        acked: Instant::now(),
                    });
                    break;
                }
                // UNAVAILABLE is the documented answer; anything else
                // with its text, to see where it comes from.
                Ok(Err(status)) if status.code() == tonic::Code::Unavailable => {
                    "Unavailable".to_owned()
                }
                Ok(Err(status)) => format!(
                    "{:?}: {}",
                    status.code(),
                    status.message().chars().take(80).collect::<String>()
                ),
                Err(_) => "client time-out (10 s)".to_owned(),
            };
            *report.failures.entry(status).or_default() += 1;
            if first_attempt.elapsed() > MESSAGE_WITHIN {
                report.gave_up = Some(format!("{text} not acknowledged within {MESSAGE_WITHIN:?}"));
                return report;
            }
            // The other instance, after a short pause.
            next_client += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        index += 1;
    }
    report
}

/// What one subscriber received.
#[derive(Debug, Default)]
struct Delivery {
    /// (sequence, text) of every message, in arrival order.
    messages: Vec<(u64, String)>,
    /// When each sequence first arrived.
    arrived: BTreeMap<u64, Instant>,
    /// Events that must not happen here (Gap: nothing expires).
    violations: Vec<String>,
    resubscribes: usize,
    /// Longest time from a stream's end to the first event of the next.
    worst_recovery: Duration,
}

/// Subscribes to the room on one all-messages-service, and whenever the
/// stream ends (or every few seconds, on purpose) resumes on the other with
/// `after_sequence` = the last sequence received, until `target` (the last
/// acknowledged sequence, known once the load stops) has arrived or its
/// deadline has passed.
async fn receive(
    index: usize,
    clients: Vec<AllMessagesServiceClient<Channel>>,
    target: tokio::sync::watch::Receiver<Option<(u64, Instant)>>,
    seed: u64,
) -> Delivery {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut delivery = Delivery::default();
    let mut instance = index % clients.len();
    let backstop = Instant::now() + Duration::from_secs(3600);
    let mut broke_at: Option<Instant> = None;
    loop {
        let last = delivery.messages.last().map_or(0, |m| m.0);
        let done = target
            .borrow()
            .is_some_and(|(want, deadline)| last >= want || Instant::now() > deadline);
        if done || Instant::now() > backstop {
            return delivery;
        }
        let request = v1::SubscribeRequest {
            rooms: Vec::new(),
            room: ROOM.into(),
            start: (last > 0).then_some(Start::AfterSequence(last)),
        };
        let mut client = clients[instance].clone();
        let subscribed =
            tokio::time::timeout(Duration::from_secs(5), client.subscribe(request)).await;
        let mut stream = match subscribed {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(_)) | Err(_) => {
                broke_at.get_or_insert_with(Instant::now);
                instance = (instance + 1) % clients.len();
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Hop to the other instance after a while, as a client moving
        // between replicas would.
        let hop_at = Instant::now() + Duration::from_millis(rng.random_range(3_000..10_000));
        loop {
            let last = delivery.messages.last().map_or(0, |m| m.0);
            let done = target
                .borrow()
                .is_some_and(|(want, deadline)| last >= want || Instant::now() > deadline);
            if done {
                return delivery;
            }
            if Instant::now() > hop_at {
                break;
            }
            match tokio::time::timeout(Duration::from_millis(500), stream.message()).await {
                Err(_) => continue,
                Ok(Ok(Some(response))) => {
                    if let Some(at) = broke_at.take() {
                        delivery.worst_recovery = delivery.worst_recovery.max(at.elapsed());
                    }
                    match response.event {
                        Some(Event::Message(m)) => {
                            delivery
                                .arrived
                                .entry(m.sequence)
                                .or_insert_with(Instant::now);
                            delivery.messages.push((m.sequence, m.text));
                        }
                        Some(Event::Gap(gap)) => delivery.violations.push(format!(
                            "gap {}..={} after sequence {last}",
                            gap.from_sequence, gap.to_sequence
                        )),
                        Some(Event::CaughtUp(_) | Event::Heartbeat(_)) | None => {}
                    }
                }
                Ok(Ok(None)) | Ok(Err(_)) => {
                    broke_at = Some(Instant::now());
                    break;
                }
            }
        }
        delivery.resubscribes += 1;
        instance = (instance + 1) % clients.len();
    }
}

/// How `got` differs from `want`, briefly.
fn difference(want: &[u64], got: &[u64]) -> Option<String> {
    if want == got {
        return None;
    }
    let first = want
        .iter()
        .zip(got)
        .position(|(w, g)| w != g)
        .unwrap_or(want.len().min(got.len()));
    let around = |v: &[u64]| v[first.saturating_sub(2)..(first + 3).min(v.len())].to_vec();
    Some(format!(
        "{} expected, {} received; first difference at index {first}: expected {:?}, received \
         {:?}",
        want.len(),
        got.len(),
        around(want),
        around(got)
    ))
}

/// Injects one fault of `kind`, holds it, and undoes it (restarting what
/// was killed, waiting until it is healthy).
#[expect(
    clippy::too_many_lines,
    reason = "one arm per kind of fault, each short"
)]
async fn inject(
    kind: Kind,
    rng: &mut StdRng,
    cluster: &mut NatsCluster,
    services: &mut [Instance],
    log: &mut FaultLog,
    started: Instant,
) -> Result<(), String> {
    let hold = Duration::from_millis(rng.random_range(1_000..5_000));
    match kind {
        Kind::KillNode | Kind::PauseNode => {
            // The stream leader half of the time.
            let leader = block_in_place(|| cluster.stream_leader(STATION));
            let node = match leader {
                Some(leader) if rng.random_bool(0.5) => leader,
                _ => rng.random_range(0..cluster.nodes().len()),
            };
            let name = cluster.node(node).name().unwrap_or("?").to_owned();
            let role = if leader == Some(node) {
                " (stream leader)"
            } else {
                ""
            };
            if kind == Kind::KillNode {
                log.record(
                    started,
                    Some(kind),
                    format!("SIGKILL node {name}{role}, down {hold:?}"),
                );
                block_in_place(|| cluster.node_mut(node).stop());
                tokio::time::sleep(hold).await;
                block_in_place(|| cluster.node_mut(node).restart());
            } else {
                log.record(
                    started,
                    Some(kind),
                    format!("SIGSTOP node {name}{role} for {hold:?}"),
                );
                cluster.node(node).pause();
                tokio::time::sleep(hold).await;
                cluster.node(node).resume();
            }
            let since = Instant::now();
            block_in_place(|| cluster.wait_healthy(NODE_HEALTHY_WITHIN));
            log.record(
                started,
                None,
                format!("node {name} back, healthy in {:?}", since.elapsed()),
            );
        }
        Kind::KillService | Kind::TermService => {
            let which = rng.random_range(0..services.len());
            let instance = &mut services[which];
            let name = format!("{}#{}", instance.process.name(), which % 2);
            if kind == Kind::KillService {
                log.record(started, Some(kind), format!("SIGKILL {name}"));
                instance.process.kill();
            } else {
                log.record(started, Some(kind), format!("SIGTERM {name}"));
                let status = block_in_place(|| instance.process.terminate(Duration::from_secs(15)));
                if !status.success() {
                    return Err(format!(
                        "{name} exited with {status} after SIGTERM: {}",
                        instance.process.log_tail(20)
                    ));
                }
            }
            let down = Duration::from_millis(rng.random_range(200..2_000));
            tokio::time::sleep(down).await;
            let since = Instant::now();
            block_in_place(|| instance.process.restart());
            log.record(
                started,
                None,
                format!(
                    "{name} restarted after {down:?}, healthy in {:?}",
                    since.elapsed()
                ),
            );
        }
        Kind::CutNetwork | Kind::SlowNetwork | Kind::ResetNetwork => {
            let (which, proxies, name) = {
                let which = rng.random_range(0..services.len());
                let instance = &services[which];
                let mut proxies = instance.active_proxies();
                if proxies.is_empty() {
                    proxies.push(rng.random_range(0..instance.proxies.len()));
                }
                let name = format!("{}#{}", instance.process.name(), which % 2);
                (which, proxies, name)
            };
            let nodes: Vec<String> = proxies.iter().map(|p| format!("n{p}")).collect();
            let fault = match kind {
                Kind::CutNetwork => Fault::BlackHole,
                Kind::SlowNetwork => {
                    Fault::Latency(Duration::from_millis(rng.random_range(50..500)))
                }
                _ => Fault::Refuse,
            };
            log.record(
                started,
                Some(kind),
                format!("{name} <-> {nodes:?}: {fault:?} for {hold:?}"),
            );
            for &p in &proxies {
                let proxy = &services[which].proxies[p];
                proxy.set(fault);
                if kind == Kind::ResetNetwork {
                    proxy.reset_all();
                }
            }
            tokio::time::sleep(hold).await;
            for &p in &proxies {
                services[which].proxies[p].set(Fault::Pass);
            }
        }
    }
    Ok(())
}

/// One phase of the attacks: which (`None`: the one without), when, and
/// what the attacker saw.
struct Phase {
    attack: Option<Attack>,
    from: Instant,
    to: Instant,
    saw: String,
}

impl Phase {
    fn label(&self) -> &'static str {
        self.attack.map_or("none", Attack::label)
    }
}

/// A phase without attack, then each attack in turn against `targets`,
/// `length` each with half a second between them (sends started then count
/// for no phase).
async fn attack_phases(targets: Targets, length: Duration) -> Vec<Phase> {
    let from = Instant::now();
    tokio::time::sleep(length).await;
    let mut phases = vec![Phase {
        attack: None,
        from,
        to: Instant::now(),
        saw: String::new(),
    }];
    for attack in Attack::ALL {
        tokio::time::sleep(Duration::from_millis(500)).await;
        eprintln!("chaos: attack: {}", attack.label());
        let running = attack.start(&targets);
        let from = Instant::now();
        tokio::time::sleep(length).await;
        let to = Instant::now();
        let saw = running.stop(Duration::from_secs(60)).await;
        eprintln!("chaos: attack {} saw: {saw}", attack.label());
        phases.push(Phase {
            attack: Some(attack),
            from,
            to,
            saw,
        });
    }
    phases
}

/// The well-behaved clients' figures per attack phase, as a table: sends
/// started in the phase, their latency to acknowledgement and to each
/// subscriber's receipt (retries and resumes included).
fn phase_table(phases: &[Phase], acks: &[&Ack], deliveries: &[Delivery]) -> String {
    let mut table = String::from(
        "| attack (under the faults) | sends | send p50 | send p99 | delivery p50 | delivery p99 \
         |\n|---|---|---|---|---|---|\n",
    );
    for phase in phases {
        let within: Vec<&&Ack> = acks
            .iter()
            .filter(|a| a.started >= phase.from && a.started < phase.to)
            .collect();
        let mut send: Vec<Duration> = within.iter().map(|a| a.acked - a.started).collect();
        let mut delivery: Vec<Duration> = within
            .iter()
            .flat_map(|a| {
                deliveries
                    .iter()
                    .filter_map(|d| d.arrived.get(&a.sequence))
                    .map(|at| at.saturating_duration_since(a.started))
            })
            .collect();
        let _ = writeln!(
            table,
            "| {} | {} | {} | {} | {} | {} |",
            phase.label(),
            within.len(),
            ms(quantile(&mut send, 0.50)),
            ms(quantile(&mut send, 0.99)),
            ms(quantile(&mut delivery, 0.50)),
            ms(quantile(&mut delivery, 0.99)),
        );
    }
    for phase in phases.iter().filter(|p| p.attack.is_some()) {
        let _ = writeln!(table, "  {}: {}", phase.label(), phase.saw);
    }
    table
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[expect(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
async fn chaos_under_load_loses_and_duplicates_no_acknowledged_message() {
    let (length, seed) = settings();
    eprintln!(
        "chaos: CHAOS_SEED={seed} CHAOS_SECONDS={} (set both to reproduce this run)",
        length.as_secs()
    );
    let test_started = Instant::now();
    let mut cluster = block_in_place(|| NatsCluster::start_unadvertised(3));

    // send-service#0 first: it creates the station (R3).
    let mut instances = Vec::new();
    for (i, name) in [
        "send-service",
        "send-service",
        "all-messages-service",
        "all-messages-service",
    ]
    .into_iter()
    .enumerate()
    {
        instances.push(start_instance(name, &cluster, i).await);
    }
    block_in_place(|| cluster.wait_stream_leader(STATION, Duration::from_secs(30)));
    let send_endpoints: Vec<String> = instances[..2]
        .iter()
        .map(|i| i.process.endpoint())
        .collect();
    let all_endpoints: Vec<String> = instances[2..]
        .iter()
        .map(|i| i.process.endpoint())
        .collect();
    let mut services = instances;
    eprintln!(
        "chaos: cluster and 4 services up in {:?}",
        test_started.elapsed()
    );

    let (target_tx, target_rx) = tokio::sync::watch::channel(None);
    let subscribers: Vec<_> = (0..SUBSCRIBERS)
        .map(|i| {
            let clients = all_endpoints
                .iter()
                .map(|e| AllMessagesServiceClient::new(lazy_channel(e.clone())))
                .collect();
            tokio::spawn(receive(
                i,
                clients,
                target_rx.clone(),
                seed ^ (i as u64 + 1),
            ))
        })
        .collect();
    // Subscribed (history is replayed anyway: they start from the first
    // message) before the load, so the first stream is live.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..SENDERS)
        .map(|i| {
            let clients = send_endpoints
                .iter()
                .map(|e| SendMessageServiceClient::new(lazy_channel(e.clone())))
                .collect();
            tokio::spawn(send_load(format!("sender{i}"), clients, Arc::clone(&stop)))
        })
        .collect();

    // Faults, one after another, each followed by a short calm; the attacks
    // beside them.
    let mut rng = StdRng::seed_from_u64(seed);
    let mut log = FaultLog::default();
    let chaos_started = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let targets = {
        let addr = |i: &Instance| -> SocketAddr {
            i.process
                .endpoint()
                .trim_start_matches("http://")
                .parse()
                .expect("a service address")
        };
        Targets {
            send: services[..2].iter().map(addr).collect(),
            all: services[2..].iter().map(addr).collect(),
            room: ROOM.into(),
        }
    };
    let phase_length = (length / (Attack::ALL.len() as u32 + 1)).max(Duration::from_secs(5));
    let attacks = tokio::spawn(attack_phases(targets, phase_length));
    let mut infrastructure_error = None;
    while chaos_started.elapsed() < length {
        let kind = Kind::ALL[rng.random_range(0..Kind::ALL.len())];
        if let Err(e) = inject(
            kind,
            &mut rng,
            &mut cluster,
            &mut services,
            &mut log,
            chaos_started,
        )
        .await
        {
            log.record(chaos_started, None, format!("FAILED: {e}"));
            infrastructure_error = Some(e);
            break;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..2_000))).await;
    }
    let chaos_took = chaos_started.elapsed();
    let phases = tokio::time::timeout(length + Duration::from_secs(120), attacks)
        .await
        .expect("the attacks end")
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    log.record(
        chaos_started,
        None,
        "faults and attacks over; load continues 2 s".into(),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);

    let mut reports = Vec::new();
    for sender in senders {
        let report = tokio::time::timeout(MESSAGE_WITHIN + Duration::from_secs(30), sender)
            .await
            .expect("senders stop")
            .expect("sender task");
        reports.push(report);
    }
    let acks: Vec<&Ack> = reports.iter().flat_map(|r| &r.acks).collect();
    let mut by_sequence: BTreeMap<u64, &str> = BTreeMap::new();
    let mut violations: Vec<String> = Vec::new();
    violations.extend(infrastructure_error.map(|e| format!("fault injection: {e}")));
    violations.extend(reports.iter().filter_map(|r| r.gave_up.clone()));
    for (sender, report) in reports.iter().enumerate() {
        for (i, ack) in report.acks.iter().enumerate() {
            let want = format!("sender{sender}-{i}");
            if ack.text != want {
                violations.push(format!(
                    "the ack of {want} is another message's: {:?} at sequence {}",
                    ack.text, ack.sequence
                ));
            }
            if let Some(other) = by_sequence.insert(ack.sequence, &ack.text) {
                violations.push(format!(
                    "sequence {} acknowledged for both {other} and {}",
                    ack.sequence, ack.text
                ));
            }
        }
    }
    let acknowledged = acks.len() as u64;
    let last = by_sequence.keys().next_back().copied().unwrap_or(0);
    let expected: Vec<u64> = by_sequence.keys().copied().collect();
    if let Some(diff) = difference(&(1..=acknowledged).collect::<Vec<_>>(), &expected) {
        violations.push(format!(
            "acknowledged sequences are not 1..={acknowledged} (a message stored twice or \
             lost): {diff}"
        ));
    }

    target_tx.send_replace(Some((last, Instant::now() + DELIVERY_WITHIN)));
    let mut deliveries = Vec::new();
    for subscriber in subscribers {
        deliveries.push(
            tokio::time::timeout(DELIVERY_WITHIN + Duration::from_secs(15), subscriber)
                .await
                .expect("subscribers stop by their deadline")
                .expect("subscriber task"),
        );
    }
    for (i, delivery) in deliveries.iter().enumerate() {
        violations.extend(
            delivery
                .violations
                .iter()
                .map(|v| format!("subscriber {i}: {v}")),
        );
        let got: Vec<u64> = delivery.messages.iter().map(|m| m.0).collect();
        if let Some(diff) = difference(&expected, &got) {
            violations.push(format!(
                "subscriber {i} did not get every acknowledged message exactly once, in order: \
                 {diff}"
            ));
        }
        if let Some((sequence, text)) = delivery
            .messages
            .iter()
            .find(|(s, t)| by_sequence.get(s).is_some_and(|want| want != t))
        {
            violations.push(format!(
                "subscriber {i}: sequence {sequence} is {text:?}, acknowledged as {:?}",
                by_sequence[sequence]
            ));
        }
    }

    // The station holds exactly the acknowledged messages, on every node.
    let station_deadline = Instant::now() + Duration::from_secs(30);
    let mut station_ok = false;
    let mut station_state = String::new();
    while !station_ok {
        station_state.clear();
        station_ok = true;
        for n in 0..cluster.nodes().len() {
            let report = block_in_place(|| cluster.node(n).stream_report(STATION));
            let good = matches!(&report, Ok(Some(r)) if r.messages == acknowledged && r.last_sequence == acknowledged);
            station_ok &= good;
            let _ = write!(
                station_state,
                "{}: {report:?}; ",
                cluster.node(n).name().unwrap_or("?")
            );
        }
        if station_ok || Instant::now() > station_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if !station_ok {
        violations.push(format!(
            "the station does not hold exactly the {acknowledged} acknowledged messages on \
             every node: {station_state}"
        ));
    }

    // The report.
    let duplicates = acks.iter().filter(|a| a.duplicate).count();
    let mut failures: BTreeMap<&str, usize> = BTreeMap::new();
    for report in &reports {
        for (code, n) in &report.failures {
            *failures.entry(code).or_default() += n;
        }
    }
    // A send fails with UNAVAILABLE (retry with the same id), never INTERNAL
    // (a JetStream "duplicate message id is in process" answer once was).
    violations.extend(
        failures
            .iter()
            .filter(|(code, _)| code.starts_with("Internal"))
            .map(|(code, n)| format!("{n} send(s) answered {code}")),
    );
    let worst_stall = reports
        .iter()
        .map(|r| r.worst_stall)
        .max()
        .unwrap_or_default();
    let worst_recovery = deliveries
        .iter()
        .map(|d| d.worst_recovery)
        .max()
        .unwrap_or_default();
    let lost = deliveries
        .iter()
        .map(|d| {
            expected
                .iter()
                .filter(|s| d.messages.binary_search_by_key(s, |m| &m.0).is_err())
                .count()
        })
        .max()
        .unwrap_or(0);
    let delivered_twice = deliveries
        .iter()
        .map(|d| {
            d.messages.len().saturating_sub(
                d.messages
                    .iter()
                    .map(|m| m.0)
                    .collect::<std::collections::BTreeSet<_>>()
                    .len(),
            )
        })
        .max()
        .unwrap_or(0);
    let mut report = String::new();
    let _ = writeln!(
        report,
        "chaos report (CHAOS_SEED={seed} CHAOS_SECONDS={}):",
        length.as_secs()
    );
    let _ = writeln!(
        report,
        "  faults over {chaos_took:.1?}, {} in all:",
        log.by_kind.values().sum::<usize>()
    );
    for (kind, n) in &log.by_kind {
        let _ = writeln!(report, "    {:<45} {n}", kind.label());
    }
    let _ = writeln!(
        report,
        "  acknowledged {acknowledged} messages ({duplicates} answered as duplicates of an \
         earlier attempt); failed attempts, retried: {failures:?}"
    );
    let _ = writeln!(
        report,
        "  per subscriber: delivered {:?}, resubscriptions {:?}; lost (worst subscriber) \
         {lost}, delivered twice {delivered_twice}",
        deliveries
            .iter()
            .map(|d| d.messages.len())
            .collect::<Vec<_>>(),
        deliveries
            .iter()
            .map(|d| d.resubscribes)
            .collect::<Vec<_>>(),
    );
    let _ = writeln!(
        report,
        "  worst send stall (first attempt -> ack) {worst_stall:.1?}; worst subscriber \
         recovery (stream end -> first event on the next) {worst_recovery:.1?}"
    );
    // What the services logged as errors (e.g. behind an INTERNAL answer).
    let mut errors: Vec<String> = Vec::new();
    for instance in &services {
        for line in instance
            .process
            .log()
            .lines()
            .filter(|l| l.contains("ERROR"))
        {
            errors.push(format!("{}: {line}", instance.process.name()));
        }
    }
    let _ = writeln!(report, "  service ERROR log lines: {}", errors.len());
    for line in errors.iter().take(5) {
        let _ = writeln!(report, "    {}", line.chars().take(400).collect::<String>());
    }
    let _ = writeln!(
        report,
        "  the well-behaved clients per attack phase ({phase_length:.1?} each):\n{}",
        phase_table(&phases, &acks, &deliveries)
    );
    let _ = writeln!(report, "  test took {:.1?}", test_started.elapsed());
    eprint!("{report}");

    if !violations.is_empty() {
        panic!(
            "chaos found {} violation(s) with CHAOS_SEED={seed} CHAOS_SECONDS={}:\n  {}\nfault \
             log:\n  {}\n{report}",
            violations.len(),
            length.as_secs(),
            violations.join("\n  "),
            log.entries.join("\n  "),
        );
    }
    assert!(acknowledged > 0, "nothing was acknowledged");

    // Everything stops cleanly at the end.
    for instance in &mut services {
        let status = block_in_place(|| instance.process.terminate(Duration::from_secs(15)));
        assert!(
            status.success(),
            "{} exited with {status}",
            instance.process.name()
        );
    }
}
