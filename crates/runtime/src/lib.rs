//! What every FastChat service shares, so each service crate holds only its
//! own logic: layered configuration ([`config`]), logging ([`telemetry`]),
//! signal handling ([`shutdown`]), and the gRPC server scaffold with health
//! and reflection ([`server`]).

#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod server;
pub mod service;
pub mod shutdown;
pub mod telemetry;
