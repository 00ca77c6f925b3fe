//! One `nats-server` process with JetStream: started on loopback with its own
//! temporary store, stopped and restarted in place, killed on drop.

use std::{
    fs,
    net::{SocketAddr, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{
    StreamReport, check_nats_server_version, monitor, nats_server_bin, ports::ListeningPorts,
};

/// How long a server may take to listen after it is spawned.
const START_WITHIN: Duration = Duration::from_secs(15);

/// How long [`NatsServer::restart`] keeps trying while one of its ports is
/// taken by something else.
const RESTART_WITHIN: Duration = Duration::from_secs(10);

/// Extra settings for a test broker.
#[derive(Debug, Clone, Default)]
pub struct NatsOptions {
    /// Extra configuration file text (e.g. `authorization { ... }` or a
    /// `cluster { ... }` block), written next to the store.
    pub config: Option<String>,
    /// Extra command-line arguments.
    pub args: Vec<String>,
    /// Fixed client port (e.g. one a service was configured with before the
    /// broker started); `None` lets the server pick one (`-p -1`).
    pub port: Option<u16>,
    /// Server name (needed in a cluster).
    pub server_name: Option<String>,
    /// HTTP monitoring port (`-m`): `Some(0)` lets the server pick one
    /// (`-m -1`), kept across [`NatsServer::restart`]; `None` (the default)
    /// serves no monitoring.
    pub monitor_port: Option<u16>,
}

/// A running `nats-server` with JetStream on 127.0.0.1, killed on drop, so a
/// test never talks to a broker that happens to run on the machine and never
/// leaks one.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    /// The client port it listens on (known once started).
    port: u16,
    /// The monitoring port it listens on, if monitoring was asked for.
    monitor_port: Option<u16>,
    store: tempfile::TempDir,
    options: NatsOptions,
}

/// A port as nats-server's `-p` and `-m` take it.
#[derive(Debug, Clone, Copy)]
enum Listen {
    /// This one.
    Fixed(u16),
    /// Any free one, picked by the server as it binds (`-1`): no window for
    /// something else to take it first.
    Any,
}

impl Listen {
    fn arg(self) -> String {
        match self {
            Self::Fixed(port) => port.to_string(),
            Self::Any => "-1".to_owned(),
        }
    }
}

/// Whether a start failed because a port was taken (nats-server logs the
/// bind error, `listen tcp ...: bind: address already in use`, and exits).
pub(crate) fn is_address_in_use(error: &str) -> bool {
    error.contains("address already in use")
}

impl NatsServer {
    /// Starts a JetStream server on a loopback port of its choosing with a
    /// fresh store.
    #[must_use]
    pub fn start() -> Self {
        Self::start_with(NatsOptions::default())
    }

    /// Starts a server with extra options.
    #[must_use]
    pub fn start_with(options: NatsOptions) -> Self {
        Self::try_start_with(options).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`NatsServer::start_with`], returning why the server did not
    /// start (it is killed then) instead of panicking, for a caller that can
    /// try again with other settings.
    ///
    /// # Errors
    /// The binary is missing, the server exited early (the message holds its
    /// output), or it did not listen within 15 s.
    pub fn try_start_with(options: NatsOptions) -> Result<Self, String> {
        check_nats_server_version()?;
        let store = tempfile::Builder::new()
            .prefix("fastchat-nats-")
            .tempdir()
            .map_err(|e| format!("create a temporary JetStream store: {e}"))?;
        let client = options.port.map_or(Listen::Any, Listen::Fixed);
        let monitor = options.monitor_port.map(|port| match port {
            0 => Listen::Any,
            port => Listen::Fixed(port),
        });
        let mut server = Self {
            child: None,
            port: 0,
            monitor_port: None,
            store,
            options,
        };
        server.spawn(client, monitor)?;
        Ok(server)
    }

    /// Spawns the process and waits until it listens; records the ports it
    /// reports in its ports file.
    fn spawn(&mut self, client: Listen, monitor: Option<Listen>) -> Result<(), String> {
        let bin = nats_server_bin();
        let dir = self.store.path();
        let log = dir.join("nats.log");
        // The log is appended to across restarts: this run's part starts here.
        let log_from = fs::metadata(&log).map_or(0, |m| m.len());
        // A killed server leaves its ports file behind: each run gets none.
        let ports_dir = dir.join("ports");
        let _ = fs::remove_dir_all(&ports_dir);
        fs::create_dir(&ports_dir).map_err(|e| format!("create {}: {e}", ports_dir.display()))?;
        // Errors found before the log is open (e.g. in the config) go here.
        let stderr = fs::File::create(dir.join("nats.stderr"))
            .map_err(|e| format!("create nats.stderr: {e}"))?;
        let mut cmd = Command::new(&bin);
        cmd.args(["-a", "127.0.0.1", "-p", &client.arg(), "-js", "-sd"])
            .arg(dir.join("jetstream"))
            .arg("-l")
            .arg(&log)
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        if let Some(name) = &self.options.server_name {
            cmd.args(["-n", name]);
        }
        if let Some(monitor) = monitor {
            cmd.args(["-m", &monitor.arg()]);
        }
        if let Some(config) = &self.options.config {
            let path = dir.join("nats.conf");
            fs::write(&path, config).map_err(|e| format!("write nats.conf: {e}"))?;
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
        let pid = child.id();
        self.child = Some(child);
        let ports = self.wait_listening(pid, &ports_dir, log_from)?;
        if monitor.is_some() && ports.monitoring.is_none() {
            self.stop();
            return Err("nats-server reports no monitoring port".to_owned());
        }
        self.port = ports.client;
        self.monitor_port = ports.monitoring;
        Ok(())
    }

    /// Waits until the server has written its ports file and accepts
    /// connections on the client port; fails when it exits first or takes
    /// longer than [`START_WITHIN`] (then it is killed).
    fn wait_listening(
        &mut self,
        pid: u32,
        ports_dir: &Path,
        log_from: u64,
    ) -> Result<ListeningPorts, String> {
        let deadline = Instant::now() + START_WITHIN;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!(
                    "nats-server exited with {status}: {}",
                    self.output_since(log_from)
                ));
            }
            let waiting_for = match ListeningPorts::read(ports_dir, pid) {
                Ok(ports) => {
                    let addr = SocketAddr::from(([127, 0, 0, 1], ports.client));
                    if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                        return Ok(ports);
                    }
                    format!("connections on {addr}")
                }
                // Not written yet, or half-written.
                Err(e) => e,
            };
            if Instant::now() > deadline {
                self.stop();
                return Err(format!(
                    "nats-server did not listen within {START_WITHIN:?} (waiting for \
                     {waiting_for}): {}",
                    self.output_since(log_from)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the server wrote to stderr and to its log since byte `log_from`
    /// of the log: this run's output, for a failure message.
    fn output_since(&self, log_from: u64) -> String {
        let dir = self.store.path();
        let stderr = fs::read_to_string(dir.join("nats.stderr")).unwrap_or_default();
        let log = fs::read(dir.join("nats.log")).unwrap_or_default();
        let from = usize::try_from(log_from).map_or(log.len(), |from| from.min(log.len()));
        format!("{stderr}{}", String::from_utf8_lossy(&log[from..]))
    }

    /// `nats://127.0.0.1:<port>`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port (the same after [`NatsServer::restart`]).
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server name, if one was given.
    #[must_use]
    pub fn name(&self) -> Option<&str> {
        self.options.server_name.as_deref()
    }

    /// The HTTP monitoring port, if monitoring was asked for (the same after
    /// [`NatsServer::restart`]).
    #[must_use]
    pub fn monitor_port(&self) -> Option<u16> {
        self.monitor_port
    }

    /// The server's log so far (`nats.log` in the store directory, across
    /// restarts), e.g. to find `Permissions Violation` lines.
    #[must_use]
    pub fn log(&self) -> String {
        fs::read_to_string(self.store.path().join("nats.log")).unwrap_or_default()
    }

    fn monitoring(&self) -> Result<u16, String> {
        self.monitor_port
            .ok_or_else(|| "this server has no monitoring port".to_owned())
    }

    /// `GET path` on the monitoring port (e.g. `/healthz`, `/jsz?streams=true`):
    /// the HTTP status (any, not only 2xx) and body. Blocking, at most a few
    /// seconds.
    ///
    /// # Errors
    /// No monitoring port, or the server did not answer.
    pub fn monitor_get(&self, path: &str) -> Result<(u16, String), String> {
        monitor::get(self.monitoring()?, path)
    }

    /// Whether `/healthz` reports OK (for a cluster node: JetStream is
    /// enabled and current with the meta group).
    #[must_use]
    pub fn healthy(&self) -> bool {
        self.health().is_ok()
    }

    /// Like [`NatsServer::healthy`], with the reason when not, for a failure
    /// message.
    ///
    /// # Errors
    /// Not healthy: the server's reason, or why it could not be asked.
    pub fn health(&self) -> Result<(), String> {
        monitor::health(self.monitoring()?)
    }

    /// What this server holds of `stream` (from its `/jsz?streams=true`), or
    /// `None` if it has no replica of it.
    ///
    /// # Errors
    /// Monitoring unreachable or its output not understood.
    pub fn stream_report(&self, stream: &str) -> Result<Option<StreamReport>, String> {
        monitor::stream_report(self.monitoring()?, stream)
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

    /// Starts the server again on the same client and monitoring ports with
    /// the same store.
    pub fn restart(&mut self) {
        self.stop();
        let client = Listen::Fixed(self.port);
        let monitor = self.monitor_port.map(Listen::Fixed);
        let deadline = Instant::now() + RESTART_WITHIN;
        loop {
            match self.spawn(client, monitor) {
                Ok(()) => return,
                // The ports were free while the server ran, but something may
                // have been given one since (e.g. as the local port of an
                // outgoing connection): wait for it to go.
                Err(e) if is_address_in_use(&e) && Instant::now() < deadline => {
                    eprintln!("restart on port {} failed ({e}); retrying", self.port);
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// Freezes the server (SIGSTOP): its sockets stay open but it answers
    /// nothing, as a hung or overloaded broker would. [`NatsServer::resume`]
    /// undoes it; dropping the server kills it either way.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused server run again (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("the server is running");
        let status = std::process::Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} failed");
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
