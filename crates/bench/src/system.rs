//! The system under test, as processes on loopback: the broker, the two
//! service binaries (release builds next to this one, or in
//! `FASTCHAT_BENCH_BIN_DIR`), and the raw server.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use fastchat_test_support::{NatsServer, free_port};

/// Names the directory of the service binaries for a one-off comparison with
/// another build (e.g. an older commit's `target/release`).
pub const BIN_DIR_VAR: &str = "FASTCHAT_BENCH_BIN_DIR";

/// `FASTCHAT_BENCH_BIN_DIR`, if set and not empty.
pub fn bin_dir_override() -> Option<PathBuf> {
    std::env::var_os(BIN_DIR_VAR)
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
}

/// A service binary: in `FASTCHAT_BENCH_BIN_DIR` if set, else built next to
/// this one (`target/<profile>/<name>`).
fn workspace_bin(name: &str) -> PathBuf {
    if let Some(dir) = bin_dir_override() {
        return dir.join(name);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(name)))
        .unwrap_or_else(|| name.into())
}

/// Whether service binary `name` knows the configuration variable `key`
/// (tried with `value`). Always true for this build's own binaries (a key
/// they refuse is the bench's bug and must stop it). Binaries from
/// `FASTCHAT_BENCH_BIN_DIR` may predate a key, and an unknown key in a known
/// section makes a service exit 64: their `healthcheck`, which loads the
/// configuration first, is asked once per key (against an address where
/// nothing listens) and the answer cached.
pub fn knows(name: &str, key: &str, value: &str) -> anyhow::Result<bool> {
    static KNOWN: Mutex<BTreeMap<(String, String), bool>> = Mutex::new(BTreeMap::new());
    if bin_dir_override().is_none() {
        return Ok(true);
    }
    let cache_key = (name.to_owned(), key.to_owned());
    if let Some(&known) = KNOWN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&cache_key)
    {
        return Ok(known);
    }
    let out = Command::new(workspace_bin(name))
        .args(["healthcheck", "--timeout", "200ms"])
        // Port 1: nothing answers, the check fails at once (exit 1).
        .env("FASTCHAT_GRPC__LISTEN", "127.0.0.1:1")
        .env(key, value)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .with_context(|| format!("run {} healthcheck", workspace_bin(name).display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let known = match out.status.code() {
        Some(64) if stderr.contains("unknown field") => false,
        Some(64) => bail!("{name} refuses {key}={value}: {}", stderr.trim()),
        Some(_) => true,
        None => bail!("{name} healthcheck was killed"),
    };
    KNOWN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(cache_key, known);
    Ok(known)
}

/// Configuration variables left out because the binaries in
/// `FASTCHAT_BENCH_BIN_DIR` do not know them (`service: KEY`).
static LEFT_OUT: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// What [`Process::service`] left out so far, for the report.
pub fn left_out_env() -> Vec<String> {
    LEFT_OUT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .cloned()
        .collect()
}

/// A child process, killed on drop.
pub struct Process {
    name: String,
    pub port: u16,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    pub metrics_port: u16,
    child: Child,
}

impl Process {
    /// Starts a FastChat service binary against `nats_url` and waits until
    /// it reports SERVING. Configuration variables that binaries from
    /// `FASTCHAT_BENCH_BIN_DIR` do not know ([`knows`]) are left out and
    /// listed by [`left_out_env`].
    pub fn service(
        name: &str,
        nats_url: &str,
        extra_env: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        let port = free_port();
        let metrics_port = free_port();
        let log = std::fs::File::create(
            std::env::temp_dir().join(format!("fastchat-bench-{name}-{port}.log")),
        )?;
        let mut cmd = Command::new(workspace_bin(name));
        cmd.env("FASTCHAT_GRPC__LISTEN", format!("127.0.0.1:{port}"))
            .env(
                "FASTCHAT_METRICS__LISTEN",
                format!("127.0.0.1:{metrics_port}"),
            )
            .env("FASTCHAT_NATS__URL", nats_url)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // The bench measures capacity, not the fair-share limits: one load
        // client on 127.0.0.1 opens up to 10,000 connections (and as many
        // subscriptions) and 1,000 streams on one connection. Subscriptions
        // per connection keep their default (100): no measurement opens more.
        // Nor the auth checks (their cost is measured on its own), nor the
        // per-identity limits.
        let capacity = [
            ("FASTCHAT_AUTH__MODE", "none"),
            ("FASTCHAT_LIMITS__SEND_PER_SECOND", "1000000"),
            ("FASTCHAT_LIMITS__SEND_BURST", "1000000"),
            ("FASTCHAT_LIMITS__SUBSCRIPTIONS_PER_IDENTITY", "1000000"),
            ("FASTCHAT_SUBSCRIPTIONS__MAX", "20000"),
            ("FASTCHAT_SUBSCRIPTIONS__MAX_PER_ADDRESS", "20000"),
            ("FASTCHAT_GRPC__MAX_CONNECTIONS", "20000"),
            ("FASTCHAT_GRPC__MAX_CONNECTIONS_PER_ADDRESS", "20000"),
            ("FASTCHAT_GRPC__MAX_CONCURRENT_STREAMS", "2048"),
        ];
        let extra = extra_env.iter().map(|(key, value)| (*key, value.as_str()));
        for (key, value) in capacity.into_iter().chain(extra) {
            if knows(name, key, value)? {
                cmd.env(key, value);
            } else {
                LEFT_OUT
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(format!("{name}: {key}"));
            }
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("start {name}; run `make bench`, which builds it"))?;
        let process = Self {
            name: name.to_owned(),
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
            metrics_port,
            child,
        };
        process.wait_healthy(Duration::from_secs(30))?;
        Ok(process)
    }

    /// Starts the raw baseline server (this binary, `raw-server`).
    pub fn raw_server() -> anyhow::Result<Self> {
        Self::this_binary("raw-server", &[])
    }

    /// Starts a bare relay (this binary, `raw-relay`) in `role`.
    fn relay(nats_url: &str, role: &str) -> anyhow::Result<Self> {
        Self::this_binary("raw-relay", &["--nats", nats_url, "--role", role])
    }

    /// Runs this binary's hidden `subcommand` with `--addr` and `args`, and
    /// waits until it listens.
    fn this_binary(subcommand: &str, args: &[&str]) -> anyhow::Result<Self> {
        let port = free_port();
        let child = Command::new(std::env::current_exe()?)
            .args([subcommand, "--addr", &format!("127.0.0.1:{port}")])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("start {subcommand}"))?;
        let process = Self {
            name: subcommand.into(),
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
            metrics_port: 0,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("{subcommand} did not listen on {port}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(process)
    }

    fn wait_healthy(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let ok = Command::new(workspace_bin(&self.name))
                .arg("healthcheck")
                .env("FASTCHAT_GRPC__LISTEN", format!("127.0.0.1:{}", self.port))
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{} not healthy within {within:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    /// Resident set size in KiB, from /proc.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("VmRSS not found")
    }

    /// CPU time (user + system) the process has used, in seconds, from
    /// /proc (clock ticks of 1/100 s, as Linux reports them here).
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // Fields after the command name (which may hold spaces) in parentheses.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .context("malformed /proc stat")?
            .1
            .split_whitespace()
            .collect();
        // utime and stime are fields 14 and 15 of the whole line: 12 and 13
        // after the name.
        let ticks = |i: usize| -> anyhow::Result<f64> {
            Ok(fields.get(i).context("short /proc stat")?.parse::<f64>()?)
        };
        Ok((ticks(11)? + ticks(12)?) / 100.0)
    }

    /// A gauge or counter from the service's /metrics (summed over labels).
    pub fn metric(&self, name: &str) -> anyhow::Result<f64> {
        use std::io::{Read as _, Write as _};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut body = String::new();
        stream.read_to_string(&mut body)?;
        Ok(body
            .lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh broker plus both services.
pub struct System {
    pub nats: NatsServer,
    pub send: Process,
    pub all: Process,
}

impl System {
    /// A broker and send-service only: nothing else consumes the station.
    pub fn start_send_only() -> anyhow::Result<(NatsServer, Process)> {
        Self::start_send_only_with(&[])
    }

    /// As [`System::start_send_only`], with extra environment.
    pub fn start_send_only_with(env: &[(&str, String)]) -> anyhow::Result<(NatsServer, Process)> {
        let nats = NatsServer::start();
        let send = Process::service("send-service", &nats.url(), env)?;
        Ok((nats, send))
    }

    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(&[])
    }

    /// As [`System::start`], with extra environment for all-messages-service.
    pub fn start_with(all_env: &[(&str, String)]) -> anyhow::Result<Self> {
        let nats = NatsServer::start();
        let send = Process::service("send-service", &nats.url(), &[])?;
        let all = Process::service("all-messages-service", &nats.url(), all_env)?;
        Ok(Self { nats, send, all })
    }

    /// The send and all-messages endpoints.
    pub fn endpoints(&self) -> (&str, &str) {
        (&self.send.endpoint, &self.all.endpoint)
    }
}

/// FastChat's topology with nothing of FastChat in it: a broker of its own
/// and two bare relays (this binary, `raw-relay`), one publishing
/// `SendMessage`s to JetStream, one fanning a JetStream consumer out to its
/// subscribers.
pub struct Relay {
    _nats: NatsServer,
    send: Process,
    all: Process,
}

impl Relay {
    pub fn start() -> anyhow::Result<Self> {
        let nats = NatsServer::start();
        let url = nats.url();
        let send = Process::relay(&url, "send")?;
        let all = Process::relay(&url, "subscribe")?;
        Ok(Self {
            _nats: nats,
            send,
            all,
        })
    }

    /// A broker of its own and the send relay only.
    pub fn send_only() -> anyhow::Result<(NatsServer, Process)> {
        let nats = NatsServer::start();
        let send = Process::relay(&nats.url(), "send")?;
        Ok((nats, send))
    }

    /// The send and subscribe endpoints.
    pub fn endpoints(&self) -> (&str, &str) {
        (&self.send.endpoint, &self.all.endpoint)
    }
}
