//! The command line and `main` shared by the service binaries:
//! `SERVICE [--config FILE]` runs the service, `SERVICE healthcheck` probes
//! a running one (for container health checks, which have no shell).

use std::{future::Future, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use serde::{Serialize, de::DeserializeOwned};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{self, EX_USAGE, GrpcConfig, LogConfig, MetricsConfig, Validate};

/// Command-line arguments of a service binary.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// TOML configuration file (keys as in the README); environment
    /// variables `FASTCHAT_*` override it.
    #[arg(long, short, env = "FASTCHAT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the gRPC health of the service at its configured address; exit 0
    /// if SERVING, 1 otherwise.
    Healthcheck {
        /// Give up after this long.
        #[arg(long, default_value = "3s", value_parser = humantime_serde::re::humantime::parse_duration)]
        timeout: Duration,
    },
}

/// The parts of a service configuration `main` needs.
pub trait ServiceConfig: Serialize + DeserializeOwned + Default + Validate {
    /// gRPC listener settings.
    fn grpc(&self) -> &GrpcConfig;
    /// Log settings.
    fn log(&self) -> &LogConfig;
    /// Metrics endpoint.
    fn metrics(&self) -> &MetricsConfig;
}

/// Runs a service binary: parses the command line, loads and validates the
/// configuration (exit 64 with a one-line reason if it is bad), sets up
/// tracing, binds the listener and calls `run` with a token cancelled on
/// SIGINT/SIGTERM.
pub fn main<C, F, Fut, E>(name: &str, run: F) -> ExitCode
where
    C: ServiceConfig,
    F: FnOnce(C, TcpListener, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    let cli = Cli::parse();
    let config: C = match config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{name}: configuration error: {e}");
            return ExitCode::from(u8::try_from(EX_USAGE).unwrap_or(1));
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(Command::Healthcheck { timeout }) = cli.command {
        let addr = config.grpc().listen;
        return match runtime.block_on(crate::server::check_health(addr, timeout)) {
            Ok(tonic_health::ServingStatus::Serving) => ExitCode::SUCCESS,
            Ok(status) => {
                eprintln!("{name} at {addr}: {status:?}");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("{name} at {addr}: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Err(e) = crate::telemetry::init(config.log()) {
        eprintln!("{name}: cannot set up logging: {e:#}");
        return ExitCode::from(u8::try_from(EX_USAGE).unwrap_or(1));
    }
    let result = runtime.block_on(async move {
        let addr = config.grpc().listen;
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (grpc.listen)"))?;
        tracing::info!(%addr, version = env!("CARGO_PKG_VERSION"), "{name} listening");
        let metrics = config.metrics();
        if metrics.enabled {
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .with_http_listener(metrics.listen)
                .add_global_label("service", name)
                .install()
                .with_context(|| {
                    format!(
                        "cannot serve metrics on {} (metrics.listen)",
                        metrics.listen
                    )
                })?;
            tracing::info!(addr = %metrics.listen, "metrics at /metrics");
        }
        let cancel = CancellationToken::new();
        let on_signal = cancel.clone();
        tokio::spawn(async move {
            crate::shutdown::signal().await;
            on_signal.cancel();
        });
        run(config, listener, cancel)
            .await
            .map_err(anyhow::Error::from)
    });
    match result {
        Ok(()) => {
            tracing::info!("{name} stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "{name} failed");
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}
