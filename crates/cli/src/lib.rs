//! `fastchat`, the FastChat command-line client, as a library: the binary
//! only parses the command line and calls [`run_to_exit`].
//!
//! The modules are layers, from the ground up; each uses only layers below
//! it, so no two modules import each other:
//!
//! addr → error → connect → output → args → commands → `run` (here) → main
//!
//! - [`addr`]: which service a call is for, and its address.
//! - [`error`]: one-line errors and exit statuses.
//! - [`connect`]: gRPC channels (TLS for `https://`) and the bearer token.
//! - [`output`]: every line printed, as text or JSON.
//! - [`args`]: the command line (clap), help text and value parsers.
//! - [`commands`]: `send`, `tail`, `history`, `health`, `token`.
//!
//! Tokens: `--token TOKEN` or `FASTCHAT_TOKEN`, or `--token-file FILE`
//! (which wins over `FASTCHAT_TOKEN`; with `--token` it is a usage error),
//! is sent as `authorization: Bearer <token>` with `send`, `tail` and
//! `history`; `health` sends none. It is never printed: `--help` hides the
//! variable's value, `Debug` hides it, and an error that quotes it has it
//! replaced by `<redacted>`. `fastchat token` mints development tokens
//! (HS256) with the service's HMAC secret.
//!
//! TLS: `https://` addresses use TLS (rustls), trusting the system's CA
//! certificates, or only those of `--ca-file` (`FASTCHAT_CA_FILE`);
//! `--cert-file` and `--key-file` (`FASTCHAT_CERT_FILE`, `FASTCHAT_KEY_FILE`)
//! give a client certificate for mutual TLS. `http://` and bare `host:port`
//! addresses are plaintext.
//!
//! Exit statuses (see [`error`]): 0 success, 1 refused or failed, 2 bad
//! usage (also a file given that cannot be used), 69 a service unreachable or
//! not serving, 75 rate limited or at capacity (`RESOURCE_EXHAUSTED`: try
//! again later), 77 no usable token or not allowed (`UNAUTHENTICATED`,
//! `PERMISSION_DENIED`).

#![forbid(unsafe_code)]

pub mod addr;
pub mod args;
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
    let format = if cli.json {
        Format::Json
    } else {
        Format::Human
    };
    let mut printer = Printer::new(out, format);
    if let Command::Token(args) = &cli.command {
        return commands::token::run(args, &mut printer);
    }
    let with_token = !matches!(cli.command, Command::Health);
    let ctx = Context::new(&cli, with_token)?;
    let result = match cli.command {
        Command::Send(args) => commands::send::run(&ctx, &args, &mut printer).await,
        Command::Tail(args) => commands::tail::run(&ctx, &args, &mut printer, interrupted()).await,
        Command::History(args) => commands::history::run(&ctx, &args, &mut printer).await,
        Command::Health => commands::health::run(&ctx, &mut printer).await,
        Command::Token(_) => Ok(()),
    };
    result.map_err(|e| ctx.redact(e))
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

#[cfg(test)]
mod layers {
    //! Keeps the module layers of the crate header true.

    /// The layers from the ground up, each with its sources.
    const LAYERS: &[(&str, &[&str])] = &[
        ("addr", &[include_str!("addr.rs")]),
        ("error", &[include_str!("error.rs")]),
        ("connect", &[include_str!("connect.rs")]),
        ("output", &[include_str!("output.rs")]),
        ("args", &[include_str!("args.rs")]),
        (
            "commands",
            &[
                include_str!("commands/mod.rs"),
                include_str!("commands/health.rs"),
                include_str!("commands/history.rs"),
                include_str!("commands/send.rs"),
                include_str!("commands/tail.rs"),
                include_str!("commands/token.rs"),
            ],
        ),
    ];

    /// What `source` names right after `crate::` in code (`crate::m::…`,
    /// `use crate::{m::…, …}`): modules, or items of the crate root; comments
    /// are skipped.
    fn uses(source: &str) -> Vec<String> {
        let code: String = source
            .lines()
            .filter(|line| !line.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let mut found = Vec::new();
        for (at, _) in code.match_indices("crate::") {
            let rest = &code[at + "crate::".len()..];
            let names: Vec<&str> = match rest.strip_prefix('{') {
                // A group: the first name of each top-level item.
                Some(group) => {
                    let mut depth = 0_usize;
                    let end = group
                        .char_indices()
                        .find(|&(_, c)| {
                            match c {
                                '{' => depth += 1,
                                '}' if depth == 0 => return true,
                                '}' => depth -= 1,
                                _ => {}
                            }
                            false
                        })
                        .map_or(group.len(), |(i, _)| i);
                    let mut items = Vec::new();
                    let (mut depth, mut start) = (0_usize, 0);
                    for (i, c) in group[..end].char_indices() {
                        match c {
                            '{' => depth += 1,
                            '}' => depth -= 1,
                            ',' if depth == 0 => {
                                items.push(&group[start..i]);
                                start = i + 1;
                            }
                            _ => {}
                        }
                    }
                    items.push(&group[start..end]);
                    items.into_iter().map(str::trim).collect()
                }
                None => vec![rest],
            };
            // `filter` drops the empty item after a trailing comma.
            for name in names.into_iter().filter(|n| !n.is_empty()) {
                let name = name
                    .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .next()
                    .unwrap_or_default();
                found.push(name.to_owned());
            }
        }
        found
    }

    #[test]
    fn each_module_uses_only_lower_layers() {
        for (level, (module, sources)) in LAYERS.iter().enumerate() {
            for source in *sources {
                for used in uses(source) {
                    let used_level = LAYERS
                        .iter()
                        .position(|(m, _)| *m == used)
                        .unwrap_or(usize::MAX);
                    assert!(
                        used_level < level || used == *module,
                        "{module} uses crate::{used}, which is not a layer below it"
                    );
                }
            }
        }
    }

    #[test]
    fn the_header_names_the_layers() {
        let names: Vec<&str> = LAYERS.iter().map(|(m, _)| *m).collect();
        let header = include_str!("lib.rs");
        assert!(header.contains(&names.join(" → ")), "{names:?}");
    }

    #[test]
    fn groups_and_paths_are_both_found() {
        let source = "use crate::{\n    addr::Target,\n    connect::{self, Use},\n};\n\
                      // crate::args::Cli in a comment\n\
                      fn f() { crate::error::code_name(c); }";
        assert_eq!(uses(source), ["addr", "connect", "error"]);
    }
}
