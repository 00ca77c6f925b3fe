//! The system under test, as processes on loopback: the broker, the two
//! service binaries (release builds next to this one), and the raw server.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use fastchat_test_support::{NatsServer, free_port};

/// A binary built next to this one (`target/<profile>/<name>`).
fn workspace_bin(name: &str) -> std::path::PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(name)))
        .unwrap_or_else(|| name.into())
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
    /// it reports SERVING.
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
            // Capacity without the auth checks; the auth cost is measured
            // separately.
            .env("FASTCHAT_AUTH__MODE", "none")
            .env("FASTCHAT_LIMITS__SEND_PER_SECOND", "1000000")
            .env("FASTCHAT_LIMITS__SEND_BURST", "1000000")
            .env("FASTCHAT_LIMITS__SUBSCRIPTIONS_PER_IDENTITY", "1000000")
            // The bench measures capacity, not the fair-share limits: one
            // load client on 127.0.0.1 opens up to 10,000 connections and
            // 1,000 streams on one connection.
            .env("FASTCHAT_SUBSCRIPTIONS__MAX", "20000")
            .env("FASTCHAT_GRPC__MAX_CONNECTIONS", "20000")
            .env("FASTCHAT_GRPC__MAX_CONNECTIONS_PER_ADDRESS", "20000")
            .env("FASTCHAT_GRPC__MAX_CONCURRENT_STREAMS", "2048")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for (key, value) in extra_env {
            cmd.env(key, value);
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
        let nats = NatsServer::start();
        let send = Process::service("send-service", &nats.url(), &[])?;
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
