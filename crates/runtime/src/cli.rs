//! The command line and `main` shared by the service binaries:
//! `SERVICE [--config FILE]` runs the service, `SERVICE healthcheck` probes
//! a running one (for container health checks, which have no shell).

use std::{future::Future, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    config::{self, EX_USAGE, ServiceConfig},
    service::ServeError,
};

/// Who a service binary is, from its own crate's manifest (so `--help` and
/// `--version` name the service, not this crate). Made by [`binary!`](crate::binary).
#[derive(Debug, Clone, Copy)]
pub struct Binary {
    /// The binary's name, e.g. `send-service`.
    pub name: &'static str,
    /// Its package version.
    pub version: &'static str,
    /// Its package description.
    pub about: &'static str,
}

/// The calling binary's [`Binary`]: name, version and description from its
/// own Cargo manifest.
#[macro_export]
macro_rules! binary {
    () => {
        $crate::cli::Binary {
            name: env!("CARGO_BIN_NAME"),
            version: env!("CARGO_PKG_VERSION"),
            about: env!("CARGO_PKG_DESCRIPTION"),
        }
    };
}

/// Command-line arguments of a service binary.
#[derive(Debug, Parser)]
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
        /// The health service to ask about: empty for readiness (broker
        /// connected and answering), `liveness` for the process.
        #[arg(long, default_value = "")]
        service: String,
        /// Give up after this long.
        #[arg(long, default_value = "3s", value_parser = humantime_serde::re::humantime::parse_duration)]
        timeout: Duration,
    },
}

impl Cli {
    /// Parses the process arguments, presenting them as `binary`'s.
    fn parse_as(binary: Binary) -> Self {
        let command = Self::command()
            .name(binary.name)
            .bin_name(binary.name)
            .version(binary.version)
            .about(binary.about);
        Self::from_arg_matches(&command.get_matches()).unwrap_or_else(|e| e.exit())
    }
}

/// Runs a service binary: parses the command line, loads and validates the
/// configuration (exit 64 with a one-line reason if it is bad), sets up
/// tracing, binds the listener and calls `run` with a token cancelled on
/// SIGINT/SIGTERM. A permanent error that the configuration causes (e.g. a
/// station that exists with another definition) exits 64 too; others 1.
pub fn main<C, F, Fut>(binary: Binary, run: F) -> ExitCode
where
    C: ServiceConfig,
    F: FnOnce(C, TcpListener, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), ServeError>>,
{
    let name = binary.name;
    let cli = Cli::parse_as(binary);
    let loaded = match cli.command {
        Some(Command::Healthcheck { .. }) => config::load_unchecked::<C>(cli.config.as_deref()),
        None => config::load::<C>(cli.config.as_deref()),
    };
    let config::Loaded { config, warnings } = match loaded {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("{name}: configuration error: {e}");
            return ExitCode::from(EX_USAGE);
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
    if let Some(Command::Healthcheck { service, timeout }) = cli.command {
        let addr = config.grpc().listen;
        // On a TLS port the probe speaks TLS, trusting the port's own
        // certificate (crate::probe).
        let tls = if config.grpc().tls.enabled() {
            match crate::probe::client_config(&config.grpc().tls) {
                Ok(tls) => Some(tls),
                Err(e) => {
                    eprintln!("{name}: {e}");
                    return ExitCode::FAILURE;
                }
            }
        } else {
            None
        };
        let checked = crate::health::check_service(addr, &service, timeout, tls);
        return match runtime.block_on(checked) {
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
    // Inside the runtime: the OTLP exporter's channel lives on it.
    let telemetry = match runtime.block_on(async { crate::telemetry::init(config.log(), name) }) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("{name}: cannot set up logging: {e:#}");
            return ExitCode::from(EX_USAGE);
        }
    };
    if telemetry.tracing() {
        tracing::info!("traces exported over OTLP (OTEL_EXPORTER_OTLP_ENDPOINT)");
    }
    for warning in &warnings {
        tracing::warn!("configuration: {warning}");
    }
    let result = runtime.block_on(async move {
        let addr = config.grpc().listen;
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (grpc.listen)"))?;
        tracing::info!(%addr, version = binary.version, "{name} listening");
        let cancel = CancellationToken::new();
        let metrics = config.metrics();
        if metrics.enabled {
            let handle = crate::catalog::install(name, binary.version)
                .context("cannot install the metrics recorder")?;
            let listener = TcpListener::bind(metrics.listen).await.with_context(|| {
                format!(
                    "cannot serve metrics on {} (metrics.listen)",
                    metrics.listen
                )
            })?;
            tokio::spawn(crate::exporter::serve(listener, handle, cancel.clone()));
            tracing::info!(addr = %metrics.listen, "metrics at /metrics");
        }
        let on_signal = cancel.clone();
        tokio::spawn(async move {
            crate::shutdown::signal().await;
            on_signal.cancel();
        });
        Ok::<_, anyhow::Error>(run(config, listener, cancel).await)
    });
    let (error, code) = match result {
        Ok(Ok(())) => {
            tracing::info!("{name} stopped");
            // Flush the spans still queued while the runtime still runs.
            telemetry.shutdown();
            return ExitCode::SUCCESS;
        }
        Ok(Err(e)) if e.is_configuration() => (anyhow::Error::from(e), ExitCode::from(EX_USAGE)),
        Ok(Err(e)) => (anyhow::Error::from(e), ExitCode::FAILURE),
        Err(e) => (e, ExitCode::FAILURE),
    };
    tracing::error!(error = format!("{error:#}"), "{name} failed");
    eprintln!("{name}: {error:#}");
    telemetry.shutdown();
    code
}
