//! `make bench`: measures FastChat against raw baselines in the same run.
//!
//! Everything runs on loopback and is started here: a nats-server, the two
//! release service binaries, and a raw tonic server (this binary re-run with
//! the hidden `raw-server` subcommand) for the gRPC baselines; the raw
//! JetStream baselines use async-nats directly. Every measurement is bounded
//! in count and time and repeated; ratios use medians. The report goes to
//! `target/bench/report.{md,json}` and the last line printed is the JSON
//! summary.

#![forbid(unsafe_code)]
#![expect(clippy::print_stdout, reason = "a benchmark's output is its report")]

mod measure;
mod raw;
mod report;
mod system;

use std::{net::SocketAddr, path::PathBuf, time::Instant};

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    about = "FastChat benchmark: figures as ratios against raw limits measured in the same run"
)]
struct Args {
    /// Repetitions of each measurement (min/median/max are reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Run only these measurements.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Measure>,
    /// Where the report is written.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the raw tonic baselines (used by the benchmark itself).
    #[command(hide = true)]
    RawServer {
        #[arg(long)]
        addr: SocketAddr,
    },
    /// Serve one bare relay of the latency baseline (used by the benchmark
    /// itself).
    #[command(hide = true)]
    RawRelay {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long)]
        nats: String,
        #[arg(long, value_enum)]
        role: raw::Role,
    },
}

/// The measurements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Measure {
    Send,
    Fanout,
    Latency,
    Memory,
    Catchup,
    Slow,
    History,
    Unread,
    Web,
    Rooms,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    match args.command {
        Some(Command::RawServer { addr }) => return runtime.block_on(raw::serve(addr)),
        Some(Command::RawRelay { addr, nats, role }) => {
            return runtime.block_on(raw::relay(addr, &nats, role));
        }
        None => {}
    }
    let started = Instant::now();
    let wanted = |m: Measure| args.only.is_empty() || args.only.contains(&m);
    let report = runtime.block_on(async {
        let mut report = report::Report::new(args.runs);
        report.note(format!(
            "every process (broker, services, raw server, load clients) shares this machine's {} cores; \
             figures include the clients' cost, equally for FastChat and its baseline",
            std::thread::available_parallelism().map_or(0, std::num::NonZero::get)
        ));
        if wanted(Measure::Send) {
            measure::send(&mut report).await?;
        }
        if wanted(Measure::Fanout) {
            measure::fanout(&mut report).await?;
        }
        if wanted(Measure::Latency) {
            measure::latency(&mut report).await?;
        }
        if wanted(Measure::Memory) {
            measure::memory(&mut report).await?;
        }
        if wanted(Measure::Catchup) {
            measure::catchup(&mut report).await?;
        }
        if wanted(Measure::Slow) {
            measure::slow(&mut report).await?;
        }
        if wanted(Measure::History) {
            measure::history(&mut report).await?;
        }
        if wanted(Measure::Unread) {
            measure::unread(&mut report).await?;
        }
        if wanted(Measure::Web) {
            measure::web(&mut report).await?;
        }
        if wanted(Measure::Rooms) {
            measure::rooms(&mut report).await?;
        }
        if let Some(dir) = system::bin_dir_override() {
            report.note(format!(
                "service binaries from {} ({})",
                dir.display(),
                system::BIN_DIR_VAR
            ));
        }
        let left_out = system::left_out_env();
        if !left_out.is_empty() {
            report.note(format!(
                "left out, unknown to those binaries: {}",
                left_out.join(", ")
            ));
        }
        anyhow::Ok(report)
    })?;
    let summary = report.write(&args.out, started.elapsed())?;
    println!("{summary}");
    Ok(())
}
