//! The system under test, as processes on loopback: a test-support
//! nats-server with monitoring, one send-service and two
//! all-messages-service replicas (the workspace binaries built next to this
//! one), and what is sampled from each: RSS, open file descriptors and
//! threads from /proc, gauges from /metrics, consumers and connections from
//! the broker's monitoring endpoint.

use std::{
    io::{Read as _, Write as _},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use fastchat_test_support::{NatsOptions, NatsServer, free_port};

/// A service binary built next to this one (`target/<profile>/<name>`).
fn sibling_bin(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("find this executable")?;
    let bin = exe
        .parent()
        .map(|dir| dir.join(name))
        .context("this executable has no directory")?;
    if !bin.is_file() {
        bail!(
            "{} is not built; run `make soak`, which builds it",
            bin.display()
        );
    }
    Ok(bin)
}

/// A service process, killed on drop; its log is `<dir>/<name>-<port>.log`.
#[derive(Debug)]
pub struct Service {
    pub name: String,
    pub endpoint: String,
    metrics_port: u16,
    child: Child,
}

impl Service {
    /// Starts `name` against `nats_url` and waits until its healthcheck
    /// reports SERVING.
    pub fn start(
        name: &str,
        label: &str,
        nats_url: &str,
        log_dir: &std::path::Path,
    ) -> anyhow::Result<Self> {
        let bin = sibling_bin(name)?;
        let port = free_port();
        let metrics_port = free_port();
        let log = std::fs::File::create(log_dir.join(format!("{label}.log")))
            .context("create a service log")?;
        // The soak's clients are many users behind one loopback address with
        // auth.mode = none, so they share one identity: the per-identity
        // limits are lifted (the per-connection and per-address ones keep
        // their defaults).
        let child = Command::new(&bin)
            .env("FASTCHAT_GRPC__LISTEN", format!("127.0.0.1:{port}"))
            .env(
                "FASTCHAT_METRICS__LISTEN",
                format!("127.0.0.1:{metrics_port}"),
            )
            .env("FASTCHAT_NATS__URL", nats_url)
            .env("FASTCHAT_AUTH__MODE", "none")
            .env("FASTCHAT_LIMITS__SEND_PER_SECOND", "100000")
            .env("FASTCHAT_LIMITS__SEND_BURST", "100000")
            .env("FASTCHAT_LIMITS__SUBSCRIPTIONS_PER_IDENTITY", "100000")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let service = Self {
            name: label.to_owned(),
            endpoint: format!("http://127.0.0.1:{port}"),
            metrics_port,
            child,
        };
        service.wait_healthy(&bin, port, Duration::from_secs(60))?;
        Ok(service)
    }

    fn wait_healthy(
        &self,
        bin: &std::path::Path,
        port: u16,
        within: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let ok = Command::new(bin)
                .arg("healthcheck")
                .env("FASTCHAT_GRPC__LISTEN", format!("127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{} not healthy within {within:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What /proc says of the process now.
    pub fn proc_sample(&self) -> anyhow::Result<ProcSample> {
        proc_sample(self.pid())
    }

    /// The sum over labels of gauge or counter `name` on /metrics.
    pub fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port))
            .with_context(|| format!("connect to {}'s /metrics", self.name))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut body = String::new();
        stream.read_to_string(&mut body)?;
        Ok(metric_sum(&body, name))
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sum of the samples of `name` (any labels) in Prometheus text.
pub fn metric_sum(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One process's resident memory, open file descriptors and threads.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    pub rss_kib: u64,
    pub fds: u64,
    pub threads: u64,
}

/// Reads /proc/<pid>/status (VmRSS, Threads) and counts /proc/<pid>/fd.
pub fn proc_sample(pid: u32) -> anyhow::Result<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    let field = |key: &str| -> anyhow::Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("{key} not in /proc/{pid}/status"))
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .with_context(|| format!("list /proc/{pid}/fd"))?
        .count();
    Ok(ProcSample {
        rss_kib: field("VmRSS:")?,
        fds: u64::try_from(fds).unwrap_or(u64::MAX),
        threads: field("Threads:")?,
    })
}

/// The broker, both services and the replicas.
#[derive(Debug)]
pub struct System {
    pub nats: NatsServer,
    pub send: Service,
    pub replicas: Vec<Service>,
}

impl System {
    pub fn start(log_dir: &std::path::Path) -> anyhow::Result<Self> {
        let nats = NatsServer::try_start_with(NatsOptions {
            monitor_port: Some(0),
            ..NatsOptions::default()
        })
        .map_err(anyhow::Error::msg)?;
        let url = nats.url();
        let send = Service::start("send-service", "send", &url, log_dir)?;
        let replicas = (1..=2)
            .map(|i| Service::start("all-messages-service", &format!("all{i}"), &url, log_dir))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            nats,
            send,
            replicas,
        })
    }

    /// Every service, send-service first.
    pub fn services(&self) -> impl Iterator<Item = &Service> {
        std::iter::once(&self.send).chain(&self.replicas)
    }

    /// The broker's view: consumers (all streams), client connections,
    /// messages stored in `station`.
    pub fn broker(&self, station: &str) -> anyhow::Result<BrokerSample> {
        let json = |path: &str| -> anyhow::Result<serde_json::Value> {
            let (status, body) = self.nats.monitor_get(path).map_err(anyhow::Error::msg)?;
            if status != 200 {
                bail!("{path} answered {status}: {body}");
            }
            serde_json::from_str(&body).with_context(|| format!("{path}: not JSON"))
        };
        let jsz = json("/jsz?streams=true")?;
        let connz = json("/connz")?;
        let stream = jsz["account_details"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|a| a["stream_detail"].as_array().into_iter().flatten())
            .find(|s| s["name"] == station);
        Ok(BrokerSample {
            consumers: jsz["consumers"].as_u64().context("/jsz has no consumers")?,
            connections: connz["num_connections"]
                .as_u64()
                .context("/connz has no num_connections")?,
            stored: stream.map_or(0, |s| s["state"]["messages"].as_u64().unwrap_or(0)),
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub struct BrokerSample {
    pub consumers: u64,
    pub connections: u64,
    pub stored: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_a_metric_over_labels_and_no_other() {
        let body = "# HELP fastchat_subscriptions_active x\n\
                    fastchat_subscriptions_active{kind=\"v1\"} 3\n\
                    fastchat_subscriptions_active{kind=\"seed\"} 2\n\
                    fastchat_subscriptions_active_total 7\n";
        assert_eq!(metric_sum(body, "fastchat_subscriptions_active"), 5.0);
        assert_eq!(metric_sum(body, "fastchat_missing"), 0.0);
    }

    #[test]
    fn reads_this_process_from_proc() {
        let sample = proc_sample(std::process::id()).expect("own /proc");
        assert!(sample.rss_kib > 0 && sample.fds >= 3 && sample.threads >= 1);
    }
}
