//! `make soak`: FastChat under steady load for a long while, to show that
//! nothing grows and nothing is lost.
//!
//! Everything runs on loopback and is started here: a test-support
//! nats-server (with monitoring), send-service and two all-messages-service
//! replicas (the binaries built next to this one). For `--seconds`, paced
//! senders store `--rate` messages a second across `--rooms` rooms (some
//! sent twice with the same `client_message_id`), `--slots` subscribers
//! join and leave all the time (new_only, last = N, after_sequence resumes
//! of earlier subscribers' positions), and a reader pages ListMessages.
//! Every `--sample-every` seconds each service's RSS, open file descriptors
//! and threads (/proc), its subscriptions gauge (/metrics), and the broker's
//! consumers and connections (/jsz, /connz) are sampled.
//!
//! Checks: each series' least-squares slope over the second half of the
//! load stays under its bound; after the clients leave, file descriptors,
//! consumers, connections and subscriptions return to their baseline; every
//! acknowledged message reached every subscriber live for it, once and in
//! order; planned duplicate retries were answered as duplicates and stored
//! once. Samples go to `<out>/samples.csv`, the chart to `<out>/soak.png`,
//! the verdict to `<out>/summary.md` (and stdout); exit status 1 when a
//! check fails.

#![forbid(unsafe_code)]
#![expect(clippy::print_stdout, reason = "the soak's output is its verdict")]

mod chart;
mod ledger;
mod load;
mod samples;
mod system;

use std::{
    fmt::Write as _,
    path::PathBuf,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::Duration,
};

use anyhow::Context as _;
use clap::Parser;
use tokio::time::Instant;

use crate::{
    load::{LoadConfig, Shared},
    samples::Row,
    system::System,
};

/// The station the services use (their default).
pub const STATION: &str = "chat";

#[derive(Debug, Parser)]
#[command(
    about = "FastChat soak: steady load with churn; RSS, fds, threads, consumers and connections must stay flat, nothing acknowledged lost"
)]
struct Args {
    /// Seconds of load.
    #[arg(long, env = "SOAK_SECONDS", default_value_t = 900)]
    seconds: u64,
    /// Messages sent per second (all senders together).
    #[arg(long, default_value_t = 200)]
    rate: u64,
    /// Rooms the messages are spread over.
    #[arg(long, default_value_t = 50)]
    rooms: u64,
    /// Sender connections.
    #[arg(long, default_value_t = 4)]
    senders: u64,
    /// Subscribers live at once (each on a connection of its own, the
    /// replicas taken in turn).
    #[arg(long, default_value_t = 40)]
    slots: u64,
    /// Shortest subscriber life, seconds.
    #[arg(long, default_value_t = 5)]
    min_life: u64,
    /// Longest subscriber life, seconds.
    #[arg(long, default_value_t = 30)]
    max_life: u64,
    /// Share of sends retried once more with the same client_message_id.
    #[arg(long, default_value_t = 0.05)]
    duplicate_share: f64,
    /// ListMessages pages per second.
    #[arg(long, default_value_t = 2)]
    pages_per_second: u64,
    /// Seconds between samples.
    #[arg(long, default_value_t = 5)]
    sample_every: u64,
    /// Bound of each service's RSS slope, MiB per minute.
    #[arg(long, default_value_t = 1.0)]
    rss_bound: f64,
    /// Bound of the fds, threads, consumers and connections slopes, per minute.
    #[arg(long, default_value_t = 1.0)]
    count_bound: f64,
    /// Random seed (printed; default from the clock).
    #[arg(long, env = "SOAK_SEED")]
    seed: Option<u64>,
    /// Where samples.csv, soak.png, summary.md and the service logs go.
    #[arg(long, default_value = "target/soak")]
    out: PathBuf,
    /// TTF font for the chart's text.
    #[arg(
        long,
        default_value = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
    )]
    font: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    let passed = runtime.block_on(run(&args))?;
    if !passed {
        std::process::exit(1);
    }
    Ok(())
}

/// One series checked for flatness.
struct Flat {
    name: String,
    unit: &'static str,
    slope: f64,
    bound: f64,
}

async fn run(args: &Args) -> anyhow::Result<bool> {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let logs = args.out.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("create {}", logs.display()))?;
    eprintln!(
        "[soak] seed {seed}: {} s, {} msg/s over {} rooms, {} subscribers churning ({}-{} s lives), \
         {}% duplicate retries, {} pages/s",
        args.seconds,
        args.rate,
        args.rooms,
        args.slots,
        args.min_life,
        args.max_life,
        args.duplicate_share * 100.0,
        args.pages_per_second
    );
    let system = tokio::task::block_in_place(|| System::start(&logs))?;
    let names: Vec<String> = system.services().map(|s| s.name.clone()).collect();
    let config = LoadConfig {
        rate: args.rate,
        rooms: args.rooms,
        senders: args.senders,
        min_life: Duration::from_secs(args.min_life),
        max_life: Duration::from_secs(args.max_life.max(args.min_life)),
        duplicate_share: args.duplicate_share,
        pages_per_second: args.pages_per_second,
        seed,
    };
    let shared = Arc::new(Shared::default());
    let every = Duration::from_secs(args.sample_every.max(1));
    let sample = |t: f64, phase: &'static str| {
        let c = &shared.counters;
        tokio::task::block_in_place(|| {
            samples::take(
                &system,
                t,
                phase,
                c.acked.load(Relaxed),
                c.live_subscribers.load(Relaxed),
            )
        })
    };

    // Baseline: the services idle, no client connected.
    let mut rows: Vec<Row> = Vec::new();
    for i in (1..=2).rev() {
        tokio::time::sleep(every).await;
        rows.push(sample(-(i as f64) * every.as_secs_f64(), "baseline")?);
    }
    let baseline = rows.last().cloned().context("no baseline")?;

    let started = Instant::now();
    let until = started + Duration::from_secs(args.seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for id in 0..args.senders {
        let (endpoint, config, shared) =
            (system.send.endpoint.clone(), config.clone(), shared.clone());
        tasks.spawn(async move {
            if let Err(e) = load::sender(id, endpoint, config, shared.clone(), until).await {
                shared
                    .errors
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(format!("sender {id}: {e:#}"));
            }
        });
    }
    let replicas: Vec<String> = system.replicas.iter().map(|r| r.endpoint.clone()).collect();
    for id in 0..args.slots {
        tasks.spawn(load::slot(
            id,
            replicas.clone(),
            config.clone(),
            shared.clone(),
            until,
        ));
    }
    tasks.spawn(load::pager(
        replicas.clone(),
        config.clone(),
        shared.clone(),
        until,
    ));

    let mut ticks = tokio::time::interval_at(started + every, every);
    let mut last_report = started;
    while !tasks.is_empty() {
        tokio::select! {
            _ = ticks.tick() => {
                let t = started.elapsed().as_secs_f64();
                let phase = if Instant::now() < until { "load" } else { "leaving" };
                match sample(t, phase) {
                    Ok(row) => rows.push(row),
                    Err(e) => eprintln!("[soak] sample at {t:.0} s failed: {e:#}"),
                }
                if last_report.elapsed() >= Duration::from_secs(60) {
                    last_report = Instant::now();
                    let c = &shared.counters;
                    let last = rows.last();
                    eprintln!(
                        "[soak] {:.0} s: {} acked, {} joins, {} pages; RSS {}",
                        t,
                        c.acked.load(Relaxed),
                        c.joins.load(Relaxed),
                        c.pages.load(Relaxed),
                        last.map(|r| r.services.iter().map(|s| format!("{:.1}", s.rss_mib)).collect::<Vec<_>>().join("/")).unwrap_or_default()
                    );
                }
            }
            joined = tasks.join_next() => {
                if let Some(Err(e)) = joined {
                    shared.errors.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(format!("a client task failed: {e}"));
                }
            }
        }
    }
    let load_end = started.elapsed().as_secs_f64();

    // After: every client gone; fds, consumers, connections and
    // subscriptions must come back to the baseline (within 30 s).
    let drain_until = Instant::now() + Duration::from_secs(30);
    let after = loop {
        tokio::time::sleep(every.min(Duration::from_secs(2))).await;
        let row = sample(started.elapsed().as_secs_f64(), "after")?;
        rows.push(row.clone());
        if back_to_baseline(&names, &baseline, &row).is_empty() || Instant::now() >= drain_until {
            break row;
        }
    };
    let not_back = back_to_baseline(&names, &baseline, &after);

    // Flatness over the second half of the load.
    let half = args.seconds as f64 / 2.0;
    let window: Vec<&Row> = rows
        .iter()
        .filter(|r| r.phase == "load" && r.t >= half)
        .collect();
    let per_minute = |value: &dyn Fn(&Row) -> f64| {
        let points: Vec<(f64, f64)> = window.iter().map(|r| (r.t / 60.0, value(r))).collect();
        samples::slope(&points).unwrap_or(f64::NAN)
    };
    let mut flats = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let at = |r: &Row| r.services[i];
        flats.push(Flat {
            name: format!("{name} RSS"),
            unit: "MiB/min",
            slope: per_minute(&|r| at(r).rss_mib),
            bound: args.rss_bound,
        });
        flats.push(Flat {
            name: format!("{name} fds"),
            unit: "/min",
            slope: per_minute(&|r| at(r).fds),
            bound: args.count_bound,
        });
        flats.push(Flat {
            name: format!("{name} threads"),
            unit: "/min",
            slope: per_minute(&|r| at(r).threads),
            bound: args.count_bound,
        });
    }
    flats.push(Flat {
        name: "broker consumers".into(),
        unit: "/min",
        slope: per_minute(&|r| r.consumers),
        bound: args.count_bound,
    });
    flats.push(Flat {
        name: "broker connections".into(),
        unit: "/min",
        slope: per_minute(&|r| r.connections),
        bound: args.count_bound,
    });

    // Delivery.
    let acks = std::mem::take(
        &mut *shared
            .acks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    let subscriptions = std::mem::take(
        &mut *shared
            .subscriptions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    let verdict = ledger::check(&acks, &subscriptions);
    let stored = tokio::task::block_in_place(|| system.broker(STATION))?.stored;
    let c = &shared.counters;
    let acked = acks.count() as u64;
    let errors = shared
        .errors
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();

    let mut failures = Vec::new();
    for flat in &flats {
        if flat.slope.is_nan() || flat.slope.abs() >= flat.bound {
            failures.push(format!(
                "{} slope {:.3} {} is not under {} {}",
                flat.name, flat.slope, flat.unit, flat.bound, flat.unit
            ));
        }
    }
    failures.extend(
        not_back
            .iter()
            .map(|s| format!("not back to baseline: {s}")),
    );
    if !verdict.clean() {
        failures.push(format!(
            "delivery: {} lost, {} duplicated, {} out of order, {} wrong, {} subscription errors",
            verdict.lost,
            verdict.duplicated,
            verdict.out_of_order,
            verdict.wrong,
            verdict.errors.len()
        ));
    }
    let failed_sends = c.send_failed.load(Relaxed);
    if stored < acked || stored > acked + failed_sends {
        failures.push(format!("the station holds {stored} messages for {acked} acknowledged ({failed_sends} sends failed)"));
    }
    if failed_sends > 0 {
        failures.push(format!("{failed_sends} sends failed after 5 attempts"));
    }
    if c.duplicate_mismatches.load(Relaxed) > 0 {
        failures.push(format!(
            "{} duplicate retries not answered as duplicates of the first",
            c.duplicate_mismatches.load(Relaxed)
        ));
    }
    if c.page_errors.load(Relaxed) > 0 {
        failures.push(format!(
            "{} ListMessages pages failed or were wrong",
            c.page_errors.load(Relaxed)
        ));
    }
    if verdict.expected_deliveries == 0 || acked == 0 {
        failures.push("nothing was checked: no acknowledged message had a live subscriber".into());
    }

    // Report.
    let mut md = String::new();
    let _ = writeln!(md, "# FastChat soak\n");
    let _ = writeln!(
        md,
        "- command: `fastchat-soak --seconds {} --rate {} --rooms {} --slots {} --seed {seed}` (debug or release: the binaries next to it)",
        args.seconds, args.rate, args.rooms, args.slots
    );
    let _ = writeln!(
        md,
        "- load: {:.0} s; {} sends, {} acknowledged ({} unique), {} retries after errors, {} failed; {} planned duplicate retries ({} not answered as duplicates)",
        load_end,
        c.sent.load(Relaxed),
        c.acked.load(Relaxed),
        acked,
        c.send_retries.load(Relaxed),
        failed_sends,
        c.duplicate_retries.load(Relaxed),
        c.duplicate_mismatches.load(Relaxed)
    );
    let mut send_ms = std::mem::take(
        &mut *shared
            .send_ms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    send_ms.sort_unstable();
    let percentile = |p: f64| {
        send_ms
            .get(((send_ms.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    let _ = writeln!(
        md,
        "- rate: {:.0} acknowledged/s on average (asked: {}); first attempt to acknowledgement p50 {} ms, p99 {} ms, max {} ms",
        acked as f64 / args.seconds.max(1) as f64,
        args.rate,
        percentile(0.5),
        percentile(0.99),
        percentile(1.0)
    );
    let _ = writeln!(
        md,
        "- station: {stored} messages stored for {acked} acknowledged"
    );
    let _ = writeln!(
        md,
        "- subscribers: {} joins ({}), {} deliveries checked: {} lost, {} duplicated, {} out of order, {} wrong, {} subscription errors; `last = N` replays: {} shorter than N while N were stored (reported, not failed), {} longer (what was stored during the replay)",
        verdict.subscriptions,
        verdict
            .by_start
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        verdict.expected_deliveries,
        verdict.lost,
        verdict.duplicated,
        verdict.out_of_order,
        verdict.wrong,
        verdict.errors.len(),
        verdict.short_replays,
        verdict.long_replays
    );
    let _ = writeln!(
        md,
        "- history: {} ListMessages pages, {} failed or wrong",
        c.pages.load(Relaxed),
        c.page_errors.load(Relaxed)
    );
    let _ = writeln!(
        md,
        "\n| series (second half of the load) | slope | bound | first → last |\n|---|---|---|---|"
    );
    for (flat, (first, last)) in flats.iter().zip(series_ends(&window, names.len())) {
        let _ = writeln!(
            md,
            "| {} | {:+.3} {} | {} {} | {first:.1} → {last:.1} |",
            flat.name, flat.slope, flat.unit, flat.bound, flat.unit
        );
    }
    let _ = writeln!(
        md,
        "\n| after the clients left | baseline | after |\n|---|---|---|"
    );
    for (name, base, now) in baseline_pairs(&names, &baseline, &after) {
        let _ = writeln!(md, "| {name} | {base} | {now} |");
    }
    let _ = writeln!(
        md,
        "\n{}",
        if failures.is_empty() {
            "**PASS**".to_owned()
        } else {
            format!("**FAIL**:\n- {}", failures.join("\n- "))
        }
    );
    for e in verdict.errors.iter().chain(&errors).take(20) {
        let _ = writeln!(md, "  - {e}");
    }
    if !verdict.replay_notes.is_empty() {
        let _ = writeln!(
            md,
            "\n`last = N` replays shorter than N (the first {}):",
            verdict.replay_notes.len()
        );
        for note in &verdict.replay_notes {
            let _ = writeln!(md, "- {note}");
        }
    }

    let csv = args.out.join("samples.csv");
    samples::write_csv(&csv, &names, &rows)?;
    let png = args.out.join("soak.png");
    let title = format!(
        "FastChat soak: {} min, {} msg/s over {} rooms, {} churning subscribers",
        args.seconds / 60,
        args.rate,
        args.rooms,
        args.slots
    );
    match chart::load_font(&args.font).and_then(|()| chart::draw(&png, &title, &names, &rows)) {
        Ok(()) => {}
        Err(e) => failures.push(format!("chart: {e:#}")),
    }
    std::fs::write(args.out.join("summary.md"), &md).context("write summary.md")?;
    println!("{md}");
    println!("samples: {}, chart: {}", csv.display(), png.display());
    Ok(failures.is_empty())
}

/// The first and last value of each flatness series in `window`, in the
/// order `run` lists them.
fn series_ends(window: &[&Row], services: usize) -> Vec<(f64, f64)> {
    let ends = |value: &dyn Fn(&Row) -> f64| match (window.first(), window.last()) {
        (Some(a), Some(b)) => (value(a), value(b)),
        _ => (f64::NAN, f64::NAN),
    };
    let mut out = Vec::new();
    for i in 0..services {
        out.push(ends(&|r| r.services[i].rss_mib));
        out.push(ends(&|r| r.services[i].fds));
        out.push(ends(&|r| r.services[i].threads));
    }
    out.push(ends(&|r| r.consumers));
    out.push(ends(&|r| r.connections));
    out
}

/// What must return to the baseline once the clients are gone, and what it
/// was then and is now.
fn baseline_pairs(names: &[String], baseline: &Row, now: &Row) -> Vec<(String, f64, f64)> {
    let mut out = Vec::new();
    for (i, name) in names.iter().enumerate() {
        out.push((
            format!("{name} fds"),
            baseline.services[i].fds,
            now.services[i].fds,
        ));
        if name.starts_with("all") {
            out.push((
                format!("{name} subscriptions"),
                baseline.services[i].subscriptions,
                now.services[i].subscriptions,
            ));
        }
    }
    out.push(("broker consumers".into(), baseline.consumers, now.consumers));
    out.push((
        "broker connections".into(),
        baseline.connections,
        now.connections,
    ));
    out
}

/// The series not back at (or below) the baseline.
fn back_to_baseline(names: &[String], baseline: &Row, now: &Row) -> Vec<String> {
    baseline_pairs(names, baseline, now)
        .into_iter()
        .filter(|(_, base, now)| now > base)
        .map(|(name, base, now)| format!("{name}: {base} at the start, {now} after"))
        .collect()
}
