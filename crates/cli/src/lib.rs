//! `fastchat`, the FastChat command-line client, as a library: the binary
//! only parses the command line and calls [`run_to_exit`].
//!
//! - [`args`]: the command line (clap), help text and value parsers.
//! - [`connect`]: addresses and gRPC channels.
//! - [`commands`]: `send`, `tail`, `history`, `health`.
//! - [`output`]: every line printed, as text or JSON.
//! - [`error`]: one-line errors and exit statuses.
//! - [`backoff`]: `tail`'s reconnect delays.

#![forbid(unsafe_code)]

pub mod args;
pub mod backoff;
pub mod commands;
pub mod connect;
pub mod error;
pub mod output;

use std::{io, process::ExitCode};

pub use args::Cli;
use args::Command;
use commands::Context;
use error::{CliError, ErrorKind};
use output::{Format, Printer};

/// Runs `cli` and writes its output to `out`.
///
/// # Errors
/// What the command failed with; [`CliError::exit_code`] gives the status.
pub async fn run<W: io::Write>(cli: Cli, out: W) -> Result<(), CliError> {
    let ctx = Context {
        send_addr: cli.send_addr,
        all_addr: cli.all_addr,
        timeout: cli.timeout,
        format: if cli.json {
            Format::Json
        } else {
            Format::Human
        },
    };
    let mut printer = Printer::new(out, ctx.format);
    match cli.command {
        Command::Send(args) => commands::send::run(&ctx, &args, &mut printer).await,
        Command::Tail(args) => commands::tail::run(&ctx, &args, &mut printer, interrupted()).await,
        Command::History(args) => commands::history::run(&ctx, &args, &mut printer).await,
        Command::Health => commands::health::run(&ctx, &mut printer).await,
    }
}

/// Runs `cli` on a single-threaded runtime with stdout as the output, prints
/// any error as one line on stderr, and returns the exit status.
#[must_use]
pub fn run_to_exit(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("fastchat: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, io::stdout())) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`fastchat tail | head`): nothing to report.
        Err(e) if e.kind() == ErrorKind::OutputClosed => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fastchat: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Completes on Ctrl-C (SIGINT) or SIGTERM: how `tail` is meant to end.
async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
