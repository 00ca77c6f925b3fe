//! End to end over the real binaries as processes: configuration from the
//! environment, health checks through the `healthcheck` subcommand, the seed
//! API, graceful shutdown on SIGTERM, a bad configuration's exit status,
//! and what the binaries say about themselves.

use std::{
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use fastchat_e2e::{NatsServer, workspace_bin};
use fastchat_proto::seed;
use fastchat_test_support::free_port;

/// A service binary, killed on drop if still running.
struct Process {
    name: &'static str,
    port: u16,
    metrics_port: u16,
    child: Child,
}

impl Process {
    fn start(name: &'static str, nats_url: &str) -> Self {
        let port = free_port();
        let metrics_port = free_port();
        let child = Command::new(workspace_bin(name))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("FASTCHAT_GRPC__LISTEN", format!("127.0.0.1:{port}"))
            // The conventional variable is enough to find the broker.
            .env("NATS_URL", nats_url)
            .env("FASTCHAT_AUTH__MODE", "none")
            .env("FASTCHAT_STATION__MAX_BYTES", "268435456")
            .env("FASTCHAT_SHUTDOWN__DRAIN_TIMEOUT", "3s")
            .env(
                "FASTCHAT_METRICS__LISTEN",
                format!("127.0.0.1:{metrics_port}"),
            )
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the service binary");
        let process = Self {
            name,
            port,
            metrics_port,
            child,
        };
        process.wait_healthy(Duration::from_secs(20));
        process
    }

    fn healthcheck(&self) -> bool {
        Command::new(workspace_bin(self.name))
            .arg("healthcheck")
            .env("FASTCHAT_GRPC__LISTEN", format!("127.0.0.1:{}", self.port))
            .stderr(Stdio::null())
            .status()
            .expect("run healthcheck")
            .success()
    }

    fn wait_healthy(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.healthcheck() {
            assert!(
                Instant::now() < deadline,
                "{} not healthy within {within:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The Prometheus text exposition.
    fn metrics(&self) -> String {
        let (status, body) = self.metrics_get("/metrics");
        assert_eq!(status, 200, "{body}");
        body
    }

    /// `GET path` on the metrics port: status and body.
    fn metrics_get(&self, path: &str) -> (u16, String) {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .new_agent();
        let mut response = agent
            .get(&format!("http://127.0.0.1:{}{path}", self.metrics_port))
            .call()
            .expect("an HTTP answer");
        let status = response.status().as_u16();
        (status, response.body_mut().read_to_string().expect("text"))
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Sends SIGTERM and waits for the exit.
    fn terminate(&mut self, within: Duration) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {within:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn binaries_chat_through_the_seed_api_and_stop_gracefully() {
    let nats = NatsServer::start();
    let mut send = Process::start("send-service", &nats.url());
    let mut all = Process::start("all-messages-service", &nats.url());

    let mut sender =
        seed::send_message_service_client::SendMessageServiceClient::connect(send.endpoint())
            .await
            .expect("connect send-service");
    sender
        .send(seed::ChatMessage {
            author: "ann".into(),
            text: "first".into(),
            time: 1,
        })
        .await
        .expect("send");
    let mut stream =
        seed::all_messages_service_client::AllMessagesServiceClient::connect(all.endpoint())
            .await
            .expect("connect all-messages-service")
            .all(seed::Empty {})
            .await
            .expect("all")
            .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("in time")
        .expect("ok")
        .expect("message");
    assert_eq!(
        (first.author.as_str(), first.text.as_str(), first.time),
        ("ann", "first", 1)
    );
    sender
        .send(seed::ChatMessage {
            author: "bob".into(),
            text: "second".into(),
            time: 2,
        })
        .await
        .expect("send");
    let second = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("in time")
        .expect("ok")
        .expect("message");
    assert_eq!(second.text, "second");

    let send_metrics = send.metrics();
    assert!(
        send_metrics.contains("fastchat_send_requests_total{service_name=\"send-service\",api=\"seed\",outcome=\"stored\"} 2"),
        "{send_metrics}"
    );
    assert_exposition_is_complete(&send_metrics);
    // Per RPC, by status code, when the call has ended.
    assert!(
        send_metrics.contains("fastchat_grpc_requests_total{service_name=\"send-service\",method=\"ChatMessage.SendMessageService/send\",code=\"OK\"} 2"),
        "{send_metrics}"
    );
    assert!(
        send_metrics.contains("fastchat_grpc_request_duration_seconds_count{service_name=\"send-service\",method=\"ChatMessage.SendMessageService/send\"} 2"),
        "{send_metrics}"
    );
    // Latencies are histograms (they add up across replicas), with buckets.
    assert!(
        send_metrics.contains("# TYPE fastchat_send_duration_seconds histogram")
            && send_metrics.contains("fastchat_send_duration_seconds_bucket{service_name=\"send-service\",api=\"seed\",le=\"0.005\"}"),
        "{send_metrics}"
    );
    assert!(
        send_metrics.contains(&format!(
            "fastchat_build_info{{service_name=\"send-service\",version=\"{}\",revision=",
            env!("CARGO_PKG_VERSION")
        )),
        "{send_metrics}"
    );
    // The metrics port serves /metrics and /healthz, nothing else.
    assert_eq!(send.metrics_get("/healthz").0, 200);
    let (status, body) = send.metrics_get("/anything");
    assert_eq!(status, 404, "{body}");
    let all_metrics = all.metrics();
    assert!(
        all_metrics
            .contains("fastchat_subscriptions_active{service_name=\"all-messages-service\"} 1"),
        "{all_metrics}"
    );
    assert_exposition_is_complete(&all_metrics);
    assert!(
        all_metrics
            .contains("fastchat_live_feed_lag_messages{service_name=\"all-messages-service\"} 0"),
        "the live feed keeps up: {all_metrics}"
    );

    // SIGTERM with a stream open: the stream ends with UNAVAILABLE (resume
    // hint), and the process exits 0 within the drain time.
    let status = tokio::task::spawn_blocking(move || {
        let status = all.terminate(Duration::from_secs(10));
        (status, all)
    });
    let ended = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("the stream ends");
    match ended {
        Err(status) => {
            assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");
            assert!(status.message().contains("after_sequence"), "{status}");
        }
        Ok(None) => {}
        Ok(Some(m)) => panic!("unexpected message {m:?}"),
    }
    let (all_status, _all) = status.await.expect("join");
    assert!(
        all_status.success(),
        "all-messages-service exited with {all_status}"
    );
    let send_status = send.terminate(Duration::from_secs(10));
    assert!(
        send_status.success(),
        "send-service exited with {send_status}"
    );
}

#[test]
fn a_bad_configuration_exits_64_with_a_one_line_reason() {
    let output = Command::new(workspace_bin("send-service"))
        .env("FASTCHAT_STATION__REPLICAS", "2")
        .output()
        .expect("run send-service");
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("station.replicas"), "{stderr}");

    // Tokens are checked by default: without a key to check them with the
    // service refuses to start, naming the keys to set.
    let output = Command::new(workspace_bin("send-service"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .expect("run send-service");
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("auth.jwt.hmac_secret_file") && stderr.contains("auth.jwt.jwks_file"),
        "{stderr}"
    );

    let output = Command::new(workspace_bin("all-messages-service"))
        .env("FASTCHAT_GRPC__LISTEN", "nowhere")
        .output()
        .expect("run all-messages-service");
    assert_eq!(output.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .to_lowercase()
            .contains("grpc.listen")
    );
}

#[test]
fn binaries_name_themselves() {
    for (name, about) in [
        ("send-service", "validates chat messages"),
        ("all-messages-service", "streams chat history"),
    ] {
        let output = Command::new(workspace_bin(name))
            .arg("--version")
            .output()
            .expect("run --version");
        assert!(output.status.success());
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            format!("{name} {}", env!("CARGO_PKG_VERSION"))
        );
        let output = Command::new(workspace_bin(name))
            .arg("--help")
            .output()
            .expect("run --help");
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(help.contains(about), "{name} --help: {help}");
        assert!(
            help.contains(&format!("Usage: {name}")),
            "{name} --help: {help}"
        );
    }
}

/// A station that exists with another definition is the configuration's
/// fault: exit 64, naming the field and both values as one would write them.
#[test]
fn a_conflicting_station_exits_64_naming_the_field() {
    let nats = NatsServer::start();
    let mut first = Process::start("send-service", &nats.url());
    assert!(first.terminate(Duration::from_secs(10)).success());
    let output = Command::new(workspace_bin("send-service"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env(
            "FASTCHAT_GRPC__LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("FASTCHAT_METRICS__ENABLED", "false")
        .env("NATS_URL", nats.url())
        .env("FASTCHAT_AUTH__MODE", "none")
        .env("FASTCHAT_STATION__MAX_BYTES", "268435456")
        .env("FASTCHAT_STATION__MAX_AGE", "1h")
        .output()
        .expect("run send-service");
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The one line for people (logs go to stderr too, around it).
    let reason = stderr
        .lines()
        .find(|line| line.starts_with("send-service: "))
        .unwrap_or_default();
    assert!(
        reason.contains("max_age")
            && reason.contains("the broker has 7d")
            && reason.contains("asks for 1h"),
        "{stderr}"
    );
}

/// CPU seconds a process has used (user + system), from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    // Fields after the command name (which may hold spaces) start after ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    ticks / 100.0
}

/// B6: at its file-descriptor limit a service backs off instead of spinning
/// (before: 197 % CPU and 3.7 million log lines in ~20 s), and connections
/// that never send a preface are closed after the handshake timeout, so the
/// descriptors come back and clients are served again.
#[test]
fn at_the_descriptor_limit_the_service_backs_off_and_recovers() {
    let nats = NatsServer::start();
    let port = free_port();
    let log_path = std::env::temp_dir().join(format!("fastchat-fd-limit-{port}.log"));
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut child = Command::new("prlimit")
        .arg("--nofile=96:96")
        .arg(workspace_bin("send-service"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("FASTCHAT_GRPC__LISTEN", format!("127.0.0.1:{port}"))
        .env("FASTCHAT_METRICS__ENABLED", "false")
        .env("FASTCHAT_GRPC__HANDSHAKE_TIMEOUT", "3s")
        .env("NATS_URL", nats.url())
        .env("FASTCHAT_AUTH__MODE", "none")
        .env("FASTCHAT_STATION__MAX_BYTES", "268435456")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn send-service under prlimit");
    let healthy = |within: Duration| {
        let deadline = Instant::now() + within;
        loop {
            let ok = Command::new(workspace_bin("send-service"))
                .arg("healthcheck")
                .env("FASTCHAT_GRPC__LISTEN", format!("127.0.0.1:{port}"))
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    assert!(
        healthy(Duration::from_secs(20)),
        "send-service did not start"
    );
    // Silent connections, more than the descriptors left.
    let silent: Vec<std::net::TcpStream> = (0..200)
        .filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    let cpu_before = cpu_seconds(child.id());
    std::thread::sleep(Duration::from_secs(2));
    let cpu = cpu_seconds(child.id()) - cpu_before;
    let lines = std::fs::read_to_string(&log_path)
        .unwrap_or_default()
        .lines()
        .count();
    eprintln!("at the fd limit: {cpu:.2} s of CPU in 2 s, {lines} log lines so far");
    assert!(cpu < 0.5, "spinning: {cpu:.2} s of CPU in 2 s");
    assert!(lines < 40, "{lines} log lines");
    // The silent ones are closed after the handshake timeout; keep them open
    // on our side and the service still recovers its descriptors.
    assert!(
        healthy(Duration::from_secs(15)),
        "no client served after the silent connections were closed"
    );
    drop(silent);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&log_path);
}

/// Every FastChat metric in `text` has HELP and TYPE lines, no series
/// carries a `service` label (Prometheus Operator's own), and Prometheus's
/// own linter (`promtool check metrics`, which `make test` installs) finds
/// nothing wrong.
fn assert_exposition_is_complete(text: &str) {
    use std::io::Write as _;
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs (make test installs it: Debian package prometheus)");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write the exposition");
    let checked = promtool.wait_with_output().expect("promtool ends");
    assert!(
        checked.status.success() && checked.stdout.is_empty() && checked.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let names: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("fastchat_"))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(|n| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| n.strip_suffix(suffix))
                .unwrap_or(n)
        })
        .collect();
    assert!(names.len() >= 3, "some metrics: {text}");
    for name in names {
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "HELP for {name}: {text}"
        );
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "TYPE for {name}: {text}"
        );
    }
    assert!(!text.contains("{service=\""), "a `service` label: {text}");
}
