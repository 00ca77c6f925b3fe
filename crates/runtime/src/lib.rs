//! What every FastChat service shares, so each service crate holds only its
//! own logic.
//!
//! Modules, as layers from the ground up (each uses only those below it):
//!
//! 1. [`config`] (figment layering and the sections every service has),
//!    [`telemetry`] (logs and traces), [`propagation`] (W3C trace
//!    context: requests, spans, stored messages), [`shutdown`] (the signal future), [`throttle`]
//!    (rate-limited logs), `limit` (the request size and body deadline),
//!    `grpc_web` (gRPC-web translation where a request asks for it),
//!    `rpc_metrics` (per-RPC counts and durations by status code),
//!    [`held`] (resources held until a response is sent), [`status`]
//!    (structured statuses: ErrorInfo reasons, BadRequest, RetryInfo),
//!    [`tls`] (the gRPC port's certificates, re-read when they change),
//!    [`listener`] (the accept loop: connection caps, handshake deadline,
//!    the TLS handshake), [`unavailable`] (the error both services
//!    answer while the broker cannot be used);
//! 2. [`gate`] (who is calling: tokens, identities, stream deadlines),
//!    [`ratelimit`] (a token bucket per identity),
//!    [`health`] (readiness following the broker, liveness, a client),
//!    [`server`] (the tonic scaffold: limits, gRPC-web and CORS,
//!    reflection, serve and drain), [`json`] (the HTTP/JSON face: canonical
//!    JSON, statuses as HTTP errors), [`web`] (the web page's files) and
//!    `catalog` (every metric, its help and buckets) and `exporter` (the
//!    metrics port);
//! 3. [`service`]: the life cycle — broker, station, health, serve, drain;
//! 4. [`cli`]: the binaries' `main` — arguments, config, logging, signals;
//!    `probe` (the TLS client of its `healthcheck` subcommand).

#![forbid(unsafe_code)]

pub mod config;
mod grpc_web;
pub mod held;
mod limit;
pub mod listener;
pub mod propagation;
mod rpc_metrics;
pub mod shutdown;
pub mod status;
pub mod telemetry;
pub mod throttle;
pub mod tls;
pub mod unavailable;

mod catalog;
mod exporter;
pub mod gate;
pub mod health;
pub mod json;
pub mod ratelimit;
pub mod server;
pub mod web;

pub mod service;

pub mod cli;
mod probe;
