//! A FastChat service binary run as a process, for tests that crash, stop
//! and restart it: fixed loopback ports kept across restarts, its log in a
//! temporary directory, killed on drop.

use std::{
    fs,
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use crate::{free_port, workspace_bin};

/// How long a started service may take to answer its health check.
const HEALTHY_WITHIN: Duration = Duration::from_secs(30);

/// A service binary (`send-service`, `all-messages-service`) running with
/// `auth.mode = none`, its gRPC and metrics ports on loopback (the same
/// after [`ServiceProcess::restart`]), its output appended to a log file;
/// killed on drop.
#[derive(Debug)]
pub struct ServiceProcess {
    name: &'static str,
    port: u16,
    metrics_port: u16,
    env: Vec<(String, String)>,
    child: Option<Child>,
    dir: tempfile::TempDir,
    starts: u32,
}

impl ServiceProcess {
    /// Starts `name` with `env` (on top of a cleared environment holding
    /// `PATH`, the listen addresses and `FASTCHAT_AUTH__MODE=none`) and
    /// waits until its `healthcheck` subcommand passes.
    ///
    /// # Panics
    /// It cannot be spawned or is not healthy within 30 s.
    #[must_use]
    pub fn start(name: &'static str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("fastchat-service-")
            .tempdir()
            .expect("a temporary directory for the service's log");
        let mut process = Self {
            name,
            port: free_port(),
            metrics_port: free_port(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            child: None,
            dir,
            starts: 0,
        };
        process.spawn();
        process.wait_healthy(HEALTHY_WITHIN);
        process
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the service's log");
        let mut cmd = Command::new(workspace_bin(self.name));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("FASTCHAT_GRPC__LISTEN", format!("127.0.0.1:{}", self.port))
            .env(
                "FASTCHAT_METRICS__LISTEN",
                format!("127.0.0.1:{}", self.metrics_port),
            )
            .env("FASTCHAT_AUTH__MODE", "none")
            .env("RUST_LOG", "info,async_nats=warn");
        for (key, value) in &self.env {
            cmd.env(key, value);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.name));
        self.child = Some(child);
    }

    fn log_path(&self) -> std::path::PathBuf {
        self.dir.path().join("service.log")
    }

    /// Whether the `healthcheck` subcommand passes (gRPC health SERVING).
    #[must_use]
    pub fn healthy(&self) -> bool {
        Command::new(workspace_bin(self.name))
            .arg("healthcheck")
            .env("FASTCHAT_GRPC__LISTEN", format!("127.0.0.1:{}", self.port))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Waits until it is healthy.
    ///
    /// # Panics
    /// Not within `within`, or the process exited (with its log's end).
    pub fn wait_healthy(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.healthy() {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "{} exited with {status} before it was healthy: {}",
                    self.name,
                    self.log_tail(20)
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} not healthy within {within:?}: {}",
                self.name,
                self.log_tail(20)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The binary's name.
    #[must_use]
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// `http://127.0.0.1:<grpc port>`.
    #[must_use]
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The metrics port.
    #[must_use]
    pub fn metrics_port(&self) -> u16 {
        self.metrics_port
    }

    /// Its process id, while it runs (e.g. to read `/proc/<pid>/status`).
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// How many times it was started.
    #[must_use]
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// The last `lines` lines of its output, across restarts.
    #[must_use]
    pub fn log_tail(&self, lines: usize) -> String {
        let log = fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Its whole output so far, across restarts.
    #[must_use]
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kills it (SIGKILL, as a crash or an OOM kill would).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM (graceful drain) and waits for the exit.
    ///
    /// # Panics
    /// It does not exit within `within` (it is killed then).
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("the service is running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return status;
            }
            if Instant::now() > deadline {
                self.kill();
                panic!("{} did not exit within {within:?} of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts it again (killing it first if it runs) with the same ports and
    /// environment, and waits until it is healthy.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_healthy(HEALTHY_WITHIN);
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
