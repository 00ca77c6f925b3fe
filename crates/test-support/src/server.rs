//! One `nats-server` process with JetStream: started on loopback with its own
//! temporary store, stopped and restarted in place, killed on drop.

use std::{
    net::{SocketAddr, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{StreamReport, free_port, monitor, nats_server_bin};

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
