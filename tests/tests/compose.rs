//! The real compose deployment (deploy/compose/docker-compose.yml) on a real Docker engine,
//! checked from the host through its published ports. Ignored by a plain `cargo test`:
//! `make compose-test` (deploy/compose/test.sh) builds the images, writes the credentials and
//! an override that swaps the nats image for a local stand-in, exports the project name,
//! the compose files and the host ports, and runs this with `--ignored`.
//!
//! One test, in order: `up` (health-gated start order, time to all healthy), where the
//! containers are reachable (their network, ports on 127.0.0.1 only), a seed-API and a v1
//! round trip, the per-service NATS users, the metrics ports on the compose network, `docker
//! kill` of an all-messages replica and of send-service under load (then `up` again), a NATS
//! restart (history kept on its volume), and `down -v` (nothing left). Figures go to stderr.

use std::{
    collections::{BTreeMap, BTreeSet},
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use fastchat_auth::{MintClaims, mint_hs256, parse_grants, read_hmac_secret};
use fastchat_proto::{seed, v1};
use serde_json::Value;
use tonic::transport::{Channel, Endpoint};
use v1::subscribe_request::Start;

/// What deploy/compose/test.sh hands over, from the environment.
#[derive(Debug, Clone)]
struct Setup {
    project: String,
    nats_port: u16,
    send_port: u16,
    all_ports: [u16; 2],
    token: String,
    env_file: BTreeMap<String, String>,
    probe_image: String,
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run `make compose-test`"))
}

fn port(name: &str) -> u16 {
    var(name)
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not a port"))
}

impl Setup {
    fn from_env() -> Self {
        let key = read_hmac_secret(std::path::Path::new(&var("COMPOSE_TEST_JWT_KEY")))
            .expect("the JWT key");
        let mut claims = MintClaims::new("compose-test", Duration::from_secs(3600));
        claims.rooms = parse_grants("*=read,write").expect("grants");
        let token = mint_hs256(&key, &claims).expect("mint");
        let env_file = std::fs::read_to_string(var("COMPOSE_TEST_ENV_FILE"))
            .expect("the .env file")
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('\'').to_owned()))
            .collect();
        Self {
            project: var("COMPOSE_PROJECT_NAME"),
            nats_port: port("FASTCHAT_NATS_PORT"),
            send_port: port("FASTCHAT_SEND_PORT"),
            all_ports: [
                port("FASTCHAT_ALL_MESSAGES_PORT_FIRST"),
                port("FASTCHAT_ALL_MESSAGES_PORT_LAST"),
            ],
            token,
            env_file,
            probe_image: var("COMPOSE_TEST_PROBE_IMAGE"),
        }
    }

    fn with<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", self.token).parse().expect("ascii"),
        );
        request.set_timeout(Duration::from_secs(5));
        request
    }
}

/// Runs a command; its stdout, or a panic with its stderr.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {} failed ({}):\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn compose(args: &[&str]) -> String {
    let mut all = vec!["compose"];
    all.extend_from_slice(args);
    run("docker", &all)
}

/// `docker compose ps -a`: one JSON object per container.
fn containers() -> Vec<Value> {
    compose(&["ps", "-a", "--format", "json"])
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("compose ps json"))
        .collect()
}

fn field<'a>(c: &'a Value, key: &str) -> &'a str {
    c.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Waits until nats and the three service containers are healthy and nats-data-init has
/// exited 0; the time it took.
fn wait_healthy(within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let cs = containers();
        let healthy = |service: &str| {
            cs.iter()
                .filter(|c| field(c, "Service") == service && field(c, "Health") == "healthy")
                .count()
        };
        let init_done = cs.iter().any(|c| {
            field(c, "Service") == "nats-data-init"
                && field(c, "State") == "exited"
                && c.get("ExitCode").and_then(Value::as_i64) == Some(0)
        });
        if init_done
            && healthy("nats") == 1
            && healthy("send-service") == 1
            && healthy("all-messages-service") == 2
        {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "not all healthy within {within:?}: {}",
            cs.iter()
                .map(|c| format!(
                    "{} {} {}",
                    field(c, "Name"),
                    field(c, "State"),
                    field(c, "Health")
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The container (name) of `service` whose published port is `host_port`.
fn container_on_port(service: &str, host_port: u16) -> String {
    containers()
        .into_iter()
        .find(|c| {
            field(c, "Service") == service
                && c.get("Publishers")
                    .and_then(Value::as_array)
                    .is_some_and(|ps| {
                        ps.iter().any(|p| {
                            p.get("PublishedPort").and_then(Value::as_u64)
                                == Some(u64::from(host_port))
                        })
                    })
        })
        .map(|c| field(&c, "Name").to_owned())
        .unwrap_or_else(|| panic!("no {service} container publishes {host_port}"))
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

/// Engine events of the project's containers between two Unix times: (time, service, action).
fn events(project: &str, since: f64, until: f64) -> Vec<(f64, String, String)> {
    let out = run(
        "docker",
        &[
            "events",
            "--since",
            &format!("{since:.3}"),
            "--until",
            &format!("{until:.3}"),
            "--filter",
            &format!("label=com.docker.compose.project={project}"),
            "--filter",
            "type=container",
            "--format",
            "{{json .}}",
        ],
    );
    out.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|e| {
            let t = e.get("timeNano").and_then(Value::as_f64).unwrap_or(0.0) / 1e9;
            let service = e
                .pointer("/Actor/Attributes/com.docker.compose.service")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let action = e
                .get("Action")
                .or_else(|| e.get("status"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            (t, service, action)
        })
        .collect()
}

fn first(evs: &[(f64, String, String)], service: &str, action: &str) -> f64 {
    evs.iter()
        .find(|(_, s, a)| s == service && a == action)
        .map(|(t, _, _)| *t)
        .unwrap_or_else(|| panic!("no `{action}` event of {service} in {evs:?}"))
}

async fn channel(port: u16) -> Channel {
    Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .connect_lazy()
}

fn v1_send(ch: Channel) -> v1::send_message_service_client::SendMessageServiceClient<Channel> {
    v1::send_message_service_client::SendMessageServiceClient::new(ch)
}

fn v1_all(ch: Channel) -> v1::all_messages_service_client::AllMessagesServiceClient<Channel> {
    v1::all_messages_service_client::AllMessagesServiceClient::new(ch)
}

fn send_request(room: &str, text: &str, id: &str) -> v1::SendMessageRequest {
    v1::SendMessageRequest {
        room: room.into(),
        author: "compose-test".into(),
        text: text.into(),
        client_message_id: id.into(),
        client_time_ms: 0,
    }
}

fn subscribe_request(room: &str, start: Option<Start>) -> v1::SubscribeRequest {
    v1::SubscribeRequest {
        room: room.into(),
        start,
        rooms: Vec::new(),
    }
}

/// Every message of `room` stored now (a subscription from the start, read up to CaughtUp),
/// through the all-messages replica on `port`.
async fn stored(setup: &Setup, port: u16, room: &str) -> Vec<v1::ChatMessage> {
    let mut client = v1_all(channel(port).await);
    let mut request = setup.with(subscribe_request(room, None));
    request.set_timeout(Duration::from_secs(30));
    let mut stream = client
        .subscribe(request)
        .await
        .expect("subscribe")
        .into_inner();
    let mut out = Vec::new();
    let read = async {
        while let Some(r) = stream.message().await.expect("stream") {
            match r.event {
                Some(v1::subscribe_response::Event::Message(m)) => out.push(m),
                Some(v1::subscribe_response::Event::CaughtUp(_)) => return,
                _ => {}
            }
        }
        panic!("stream ended before CaughtUp");
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("history within 30 s");
    out
}

async fn seed_round_trip(setup: &Setup) {
    let mut all = seed::all_messages_service_client::AllMessagesServiceClient::new(
        channel(setup.all_ports[0]).await,
    );
    let mut request = setup.with(seed::Empty {});
    request.set_timeout(Duration::from_secs(60));
    let mut stream = all.all(request).await.expect("seed all").into_inner();
    let text = format!("seed round trip {}", unix_now());
    let started = Instant::now();
    let mut send = seed::send_message_service_client::SendMessageServiceClient::new(
        channel(setup.send_port).await,
    );
    send.send(setup.with(seed::ChatMessage {
        author: "compose-test".into(),
        text: text.clone(),
        time: 0,
    }))
    .await
    .expect("seed send");
    tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(m) = stream.message().await.expect("seed stream") {
            if m.text == text {
                return;
            }
        }
        panic!("seed stream ended");
    })
    .await
    .expect("the seed message within 15 s");
    eprintln!(
        "compose-test: seed API round trip (send :{} -> all :{}) in {} ms",
        setup.send_port,
        setup.all_ports[0],
        started.elapsed().as_millis()
    );
}

async fn v1_round_trip(setup: &Setup, room: &str) {
    let mut streams = Vec::new();
    for port in setup.all_ports {
        let mut client = v1_all(channel(port).await);
        let mut request = setup.with(subscribe_request(room, None));
        request.set_timeout(Duration::from_secs(60));
        streams.push(
            client
                .subscribe(request)
                .await
                .expect("subscribe")
                .into_inner(),
        );
    }
    let started = Instant::now();
    let response = v1_send(channel(setup.send_port).await)
        .send_message(setup.with(send_request(room, "v1 round trip", "v1-round-trip")))
        .await
        .expect("v1 send")
        .into_inner();
    let sent = response.message.expect("stored message");
    assert!(!response.duplicate);
    for (stream, port) in streams.iter_mut().zip(setup.all_ports) {
        let got = tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                match stream.message().await.expect("stream") {
                    Some(v1::SubscribeResponse {
                        event: Some(v1::subscribe_response::Event::Message(m)),
                    }) => return m,
                    Some(_) => {}
                    None => panic!("stream ended"),
                }
            }
        })
        .await
        .expect("the v1 message within 15 s");
        assert_eq!(
            (got.sequence, got.text.as_str()),
            (sent.sequence, "v1 round trip")
        );
        eprintln!(
            "compose-test: v1 round trip (send :{} -> replica :{port}) seq {} in {} ms",
            setup.send_port,
            got.sequence,
            started.elapsed().as_millis()
        );
    }
}

/// What the broker says to `user` doing something: Ok, or the error events it sent.
async fn nats_as(
    setup: &Setup,
    user: &str,
    password_key: &str,
    inbox: &str,
) -> (async_nats::Client, Arc<Mutex<Vec<String>>>) {
    let errors = Arc::new(Mutex::new(Vec::new()));
    let sink = errors.clone();
    let password = setup
        .env_file
        .get(password_key)
        .unwrap_or_else(|| panic!("{password_key} not in .env"))
        .clone();
    let client = async_nats::ConnectOptions::new()
        .user_and_password(user.into(), password)
        .custom_inbox_prefix(inbox)
        .event_callback(move |event| {
            let sink = sink.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    sink.lock().expect("lock").push(e.to_string());
                }
            }
        })
        .connect(format!("nats://127.0.0.1:{}", setup.nats_port))
        .await
        .unwrap_or_else(|e| panic!("connect as {user}: {e}"));
    (client, errors)
}

async fn violations_after(
    client: &async_nats::Client,
    errors: &Arc<Mutex<Vec<String>>>,
) -> Vec<String> {
    client.flush().await.expect("flush");
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::mem::take(&mut *errors.lock().expect("lock"))
}

async fn nats_users(setup: &Setup) {
    // send-service: may ask the stream's info, may not read the messages.
    let (send, errors) = nats_as(
        setup,
        "send-service",
        "SEND_SERVICE_PASSWORD",
        "_INBOX.send",
    )
    .await;
    let info = send
        .request("$JS.API.STREAM.INFO.chat", "".into())
        .await
        .expect("send-service: stream info");
    assert!(
        String::from_utf8_lossy(&info.payload).contains("\"config\""),
        "stream info: {}",
        String::from_utf8_lossy(&info.payload)
    );
    let _sub = send
        .subscribe("chat.messages.>")
        .await
        .expect("subscribe call");
    let v = violations_after(&send, &errors).await;
    assert!(
        v.iter()
            .any(|e| e.contains("Permissions Violation for Subscription")),
        "send-service subscribed to chat.messages.> without a violation: {v:?}"
    );
    // all-messages-service: may create consumers, may not publish a message.
    let (all, errors) = nats_as(
        setup,
        "all-messages-service",
        "ALL_MESSAGES_SERVICE_PASSWORD",
        "_INBOX.all",
    )
    .await;
    all.request("$JS.API.STREAM.INFO.chat", "".into())
        .await
        .expect("all-messages-service: stream info");
    assert!(violations_after(&all, &errors).await.is_empty());
    all.publish("chat.messages.general", "forged".into())
        .await
        .expect("publish call");
    let v = violations_after(&all, &errors).await;
    assert!(
        v.iter()
            .any(|e| e.contains("Permissions Violation for Publish")),
        "all-messages-service published to chat.messages.general without a violation: {v:?}"
    );
    // A wrong password gets nothing.
    let wrong = async_nats::ConnectOptions::new()
        .user_and_password("send-service".into(), "wrong".into())
        .connect(format!("nats://127.0.0.1:{}", setup.nats_port))
        .await;
    assert!(wrong.is_err(), "a wrong password connected");
    eprintln!(
        "compose-test: NATS users: send-service cannot subscribe to chat.messages.>, \
         all-messages-service cannot publish to it, a wrong password is refused"
    );
}

/// Each container: on the project's network only (nats-data-init: none), every published
/// port on 127.0.0.1.
fn isolation(setup: &Setup) {
    let network = format!("{}_default", setup.project);
    for c in containers() {
        let name = field(&c, "Name").to_owned();
        let inspect: Value =
            serde_json::from_str(&run("docker", &["inspect", &name])).expect("inspect json");
        let nets: BTreeSet<String> = inspect
            .pointer("/0/NetworkSettings/Networks")
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        let want: BTreeSet<String> = if field(&c, "Service") == "nats-data-init" {
            ["none".to_owned()].into()
        } else {
            [network.clone()].into()
        };
        assert_eq!(nets, want, "{name}'s networks");
        if let Some(ports) = inspect
            .pointer("/0/HostConfig/PortBindings")
            .and_then(Value::as_object)
        {
            for (target, bindings) in ports {
                for b in bindings.as_array().into_iter().flatten() {
                    assert_eq!(
                        b.get("HostIp").and_then(Value::as_str),
                        Some("127.0.0.1"),
                        "{name} publishes {target} beyond 127.0.0.1"
                    );
                }
            }
        }
    }
    eprintln!("compose-test: containers on {network} only, published ports on 127.0.0.1 only");
}

/// The metrics ports answer on the compose network (from a throwaway container on it).
fn metrics_on_network(setup: &Setup) {
    let network = format!("{}_default", setup.project);
    for (service, port) in [("send-service", 9091), ("all-messages-service", 9092)] {
        let body = run(
            "docker",
            &[
                "run",
                "--rm",
                "--network",
                &network,
                &setup.probe_image,
                "wget",
                "-q",
                "-O",
                "-",
                &format!("http://{service}:{port}/metrics"),
            ],
        );
        assert!(
            body.contains("fastchat_build_info"),
            "{service}:{port}/metrics lacks fastchat_build_info"
        );
        eprintln!(
            "compose-test: {service}:{port}/metrics answers on {network} ({} lines)",
            body.lines().count()
        );
    }
}

/// One acknowledged send.
#[derive(Debug, Clone)]
struct Ack {
    id: String,
    sequence: u64,
    attempts: u32,
    duplicate: bool,
}

/// Sends `room` messages one after the other until `stop`, each retried with its
/// client_message_id until acknowledged (60 s at most).
async fn sender(setup: Setup, room: String, stop: Arc<AtomicBool>) -> Vec<Ack> {
    let mut acks = Vec::new();
    let mut client = v1_send(channel(setup.send_port).await);
    let mut i = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let id = format!("load-{i}");
        let started = Instant::now();
        let mut attempts = 0;
        loop {
            attempts += 1;
            match client
                .send_message(setup.with(send_request(&room, &id, &id)))
                .await
            {
                Ok(r) => {
                    let r = r.into_inner();
                    let m = r.message.expect("stored message");
                    acks.push(Ack {
                        id: id.clone(),
                        sequence: m.sequence,
                        attempts,
                        duplicate: r.duplicate,
                    });
                    break;
                }
                Err(status) => {
                    assert!(
                        started.elapsed() < Duration::from_secs(60),
                        "{id} not acknowledged in 60 s: {status}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    acks
}

/// What one subscriber saw.
#[derive(Debug, Default)]
struct Seen {
    sequences: Vec<u64>,
    resumes: Vec<Duration>,
}

/// Subscribes to `room` on `ports[0]` (on failure, the other replica, and back) and resumes
/// with after_sequence after every failure, until it has seen `until` (set when the sends
/// are done) or the deadline.
async fn subscriber(
    setup: Setup,
    room: String,
    ports: [u16; 2],
    until: Arc<Mutex<Option<u64>>>,
    deadline: Instant,
) -> Seen {
    let mut seen = Seen::default();
    let mut last: Option<u64> = None;
    let mut broken_at: Option<Instant> = None;
    let mut attempt = 0usize;
    loop {
        let done = |last: Option<u64>| {
            until
                .lock()
                .expect("lock")
                .is_some_and(|u| last.is_some_and(|l| l >= u))
        };
        if done(last) || Instant::now() > deadline {
            return seen;
        }
        let port = ports[attempt % 2];
        attempt += 1;
        let mut client = v1_all(channel(port).await);
        let mut request = setup.with(subscribe_request(&room, last.map(Start::AfterSequence)));
        request.set_timeout(Duration::from_secs(300));
        let mut stream = match client.subscribe(request).await {
            Ok(s) => s.into_inner(),
            Err(_) => {
                broken_at.get_or_insert_with(Instant::now);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        loop {
            let next = tokio::time::timeout(Duration::from_millis(500), stream.message()).await;
            match next {
                Err(_) => {
                    if done(last) || Instant::now() > deadline {
                        return seen;
                    }
                }
                Ok(Ok(Some(r))) => {
                    if let Some(t) = broken_at.take() {
                        seen.resumes.push(t.elapsed());
                    }
                    match r.event {
                        Some(v1::subscribe_response::Event::Message(m)) => {
                            seen.sequences.push(m.sequence);
                            last = Some(m.sequence);
                        }
                        Some(v1::subscribe_response::Event::CaughtUp(c)) if c.sequence > 0 => {
                            last = Some(last.map_or(c.sequence, |l| l.max(c.sequence)));
                        }
                        _ => {}
                    }
                    attempt = 0;
                }
                Ok(Ok(None) | Err(_)) => {
                    broken_at.get_or_insert_with(Instant::now);
                    break;
                }
            }
        }
    }
}

async fn kill_tests(setup: &Setup, room: &str) {
    let stop = Arc::new(AtomicBool::new(false));
    let until = Arc::new(Mutex::new(None));
    let deadline = Instant::now() + Duration::from_secs(300);
    let [a, b] = setup.all_ports;
    // History so far (the round trip) is where the subscribers start from: nothing.
    let subs = [[a, b], [b, a]].map(|ports| {
        tokio::spawn(subscriber(
            setup.clone(),
            room.into(),
            ports,
            until.clone(),
            deadline,
        ))
    });
    let send = tokio::spawn(sender(setup.clone(), room.into(), stop.clone()));
    tokio::time::sleep(Duration::from_secs(2)).await;

    let replica = container_on_port("all-messages-service", a);
    eprintln!("compose-test: docker kill {replica} (all-messages-service on :{a})");
    run("docker", &["kill", &replica]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    compose(&["up", "-d", "--no-build", "--pull", "never"]);
    let back = wait_healthy(Duration::from_secs(120));
    eprintln!(
        "compose-test: up -d again: all healthy after {:.1} s",
        back.as_secs_f64()
    );

    let sender_container = container_on_port("send-service", setup.send_port);
    eprintln!("compose-test: docker kill {sender_container} (send-service)");
    let killed = Instant::now();
    run("docker", &["kill", &sender_container]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    compose(&["up", "-d", "--no-build", "--pull", "never"]);
    let back = wait_healthy(Duration::from_secs(120));
    eprintln!(
        "compose-test: up -d again: all healthy after {:.1} s ({:.1} s after the kill)",
        back.as_secs_f64(),
        killed.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let acks = send.await.expect("sender");
    let newest = acks.iter().map(|a| a.sequence).max().expect("some sends");
    *until.lock().expect("lock") = Some(newest);
    let mut seen = Vec::new();
    for s in subs {
        seen.push(s.await.expect("subscriber"));
    }

    let retried = acks.iter().filter(|a| a.attempts > 1).count();
    let answered_duplicate = acks.iter().filter(|a| a.duplicate).count();
    let history = stored(setup, b, room).await;
    let mut by_text: BTreeMap<&str, usize> = BTreeMap::new();
    for m in &history {
        *by_text.entry(m.text.as_str()).or_default() += 1;
    }
    let lost_in_store: Vec<&Ack> = acks
        .iter()
        .filter(|a| !by_text.contains_key(a.id.as_str()))
        .collect();
    let stored_twice = by_text.values().filter(|&&n| n > 1).count();
    eprintln!(
        "compose-test: kill test: {} sends acknowledged ({} after retries, {} answered as \
         duplicates of an earlier attempt), {} lost from the station, {} stored twice",
        acks.len(),
        retried,
        answered_duplicate,
        lost_in_store.len(),
        stored_twice
    );
    for (i, s) in seen.iter().enumerate() {
        let unique: BTreeSet<u64> = s.sequences.iter().copied().collect();
        let missed = acks
            .iter()
            .filter(|a| !unique.contains(&a.sequence))
            .count();
        let resumes: Vec<String> = s
            .resumes
            .iter()
            .map(|d| format!("{} ms", d.as_millis()))
            .collect();
        let role = if i == 0 {
            format!("on the killed replica :{a}")
        } else {
            format!("on the other replica :{b}")
        };
        eprintln!(
            "compose-test: subscriber {i} ({role}): {} messages, {} acknowledged ones missed, \
             {} delivered twice, resumed {} time(s) after: {}",
            s.sequences.len(),
            missed,
            s.sequences.len() - unique.len(),
            s.resumes.len(),
            resumes.join(", ")
        );
        assert_eq!(missed, 0, "subscriber {i} missed acknowledged messages");
        assert_eq!(
            s.sequences.len(),
            unique.len(),
            "subscriber {i} got duplicates"
        );
        if i == 0 {
            assert!(
                !s.resumes.is_empty(),
                "subscriber {i} never lost its stream: the kill did not reach it"
            );
        }
    }
    assert!(
        lost_in_store.is_empty(),
        "acknowledged but not stored: {lost_in_store:?}"
    );
    assert_eq!(stored_twice, 0, "a retried send was stored twice");
    assert!(
        retried > 0,
        "no send needed a retry: the send-service kill did not bite"
    );
}

async fn nats_restart(setup: &Setup, room: &str) {
    let before = stored(setup, setup.all_ports[0], room).await.len();
    let started = Instant::now();
    compose(&["restart", "nats"]);
    let back = wait_healthy(Duration::from_secs(120));
    // The services reconnect by themselves; a send goes through again.
    let send_deadline = Instant::now() + Duration::from_secs(60);
    let mut client = v1_send(channel(setup.send_port).await);
    loop {
        match client
            .send_message(setup.with(send_request(room, "after the restart", "after-restart")))
            .await
        {
            Ok(_) => break,
            Err(status) => {
                assert!(
                    Instant::now() < send_deadline,
                    "no send after the NATS restart: {status}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let after = stored(setup, setup.all_ports[1], room).await.len();
    eprintln!(
        "compose-test: NATS restarted: all healthy after {:.1} s; room history {before} \
         messages before, {after} after (one sent after the restart)",
        back.as_secs_f64().max(started.elapsed().as_secs_f64())
    );
    assert_eq!(
        after,
        before + 1,
        "history lost or grown oddly over the NATS restart"
    );
}

fn down_leaves_nothing(setup: &Setup) {
    compose(&["down", "-v", "--timeout", "20"]);
    let label = format!("label=com.docker.compose.project={}", setup.project);
    let left: Vec<String> = [
        vec!["ps", "-aq", "--filter", &label],
        vec!["network", "ls", "-q", "--filter", &label],
        vec!["volume", "ls", "-q", "--filter", &label],
    ]
    .iter()
    .map(|args| run("docker", args))
    .filter(|out| !out.trim().is_empty())
    .collect();
    assert!(left.is_empty(), "down -v left: {left:?}");
    eprintln!("compose-test: down -v: no container, network or volume of the project left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a Docker engine and the images: make compose-test"]
async fn compose_deployment() {
    let setup = Setup::from_env();
    let room = format!("ct-{}", setup.project.rsplit('-').next().unwrap_or("room"));

    let since = unix_now();
    let started = Instant::now();
    compose(&["up", "-d", "--no-build", "--pull", "never"]);
    let up = started.elapsed();
    let healthy = wait_healthy(Duration::from_secs(180));
    eprintln!(
        "compose-test: start-up: `up -d` returned after {:.1} s, all healthy after {:.1} s",
        up.as_secs_f64(),
        (up + healthy).as_secs_f64()
    );
    let evs = events(&setup.project, since, unix_now());
    let init_died = first(&evs, "nats-data-init", "die");
    let nats_started = first(&evs, "nats", "start");
    let nats_healthy = first(&evs, "nats", "health_status: healthy");
    assert!(
        init_died <= nats_started,
        "nats started before nats-data-init finished"
    );
    for service in ["send-service", "all-messages-service"] {
        let s = first(&evs, service, "start");
        assert!(
            nats_healthy <= s,
            "{service} started before nats was healthy"
        );
    }
    eprintln!(
        "compose-test: start order: nats-data-init done, nats started +{:.1} s, healthy +{:.1} s, \
         then the services ({} start events)",
        nats_started - init_died,
        nats_healthy - init_died,
        evs.iter().filter(|(_, _, a)| a == "start").count()
    );

    isolation(&setup);
    seed_round_trip(&setup).await;
    v1_round_trip(&setup, &room).await;
    nats_users(&setup).await;
    metrics_on_network(&setup);
    kill_tests(&setup, &room).await;
    nats_restart(&setup, &room).await;
    down_leaves_nothing(&setup);
}
