//! Slow subscribers: a fast reader's p50/p99 during a 10,000-message burst
//! next to a deliberately slow reader, against the same reader alone and
//! next to a second fast reader (the control); and the slow reader's own
//! in-order delivery rate and catch-ups.

use anyhow::bail;

use super::{common::Percentiles, paced::paced};
use crate::{report::Report, system::System};

/// Slow subscribers: a fast reader's latency during a 10,000-message burst
/// alone, next to a second fast reader, and next to a deliberately slow
/// reader, which must still receive every message in order (it falls behind
/// the live feed and catches up from the station). The second fast reader is
/// the control: serving any extra reader costs CPU on shared cores; a slow
/// one must cost the others no more than that.
pub async fn slow(report: &mut Report) -> anyhow::Result<()> {
    const RATE: u64 = 2000;
    const SECONDS: u64 = 5;
    /// (fast readers, slow readers): alone, with another fast one, with a
    /// slow one.
    const SETUPS: [(usize, usize); 3] = [(1, 0), (2, 0), (1, 1)];
    // A live buffer of 1,024 messages (default 4,096), so that the slow
    // reader overflows it well within the burst.
    let system = System::start_with(&[("FASTCHAT_SUBSCRIPTIONS__LIVE_BUFFER", "1024".into())])?;
    // The fast reader's latency, one per setup.
    let mut fast: [Percentiles; SETUPS.len()] = Default::default();
    let (mut rate, mut catch_up_counts) = (vec![], vec![]);
    // p99s on shared cores swing between runs (stalls of tens of ms hit
    // every setup now and then): more runs than the others.
    let runs = report.runs.max(5);
    report.note(format!("slow: {runs} runs of each setup"));
    for run in 1..=runs {
        eprintln!("[slow] run {run}/{runs}");
        // Rotate the order, so a drift of the machine does not land on one
        // setup.
        for i in (0..SETUPS.len()).map(|i| (i + run) % SETUPS.len()) {
            let (fast_readers, slow) = SETUPS[i];
            let room = format!("slow{run}x{i}");
            let before = system.all.metric("fastchat_subscription_catchups_total")?;
            let r = paced(system.endpoints(), &room, fast_readers, slow, RATE, SECONDS).await?;
            let catch_ups = system.all.metric("fastchat_subscription_catchups_total")? - before;
            fast[i].push(&r.latency);
            if slow > 0 {
                if catch_ups < 1.0 {
                    bail!("the slow reader never fell behind the live feed: nothing was measured");
                }
                catch_up_counts.push(catch_ups);
                #[expect(
                    clippy::cast_precision_loss,
                    reason = "counts and byte sizes far below 2^52 shown as floats"
                )]
                rate.push((RATE * SECONDS) as f64 / (SECONDS as f64 + r.slow_done.as_secs_f64()));
            }
        }
    }
    let burst = "10,000 messages at 2,000/s";
    let names = [
        format!("{burst}, alone"),
        format!("{burst}, next to a second fast reader"),
        format!("{burst}, next to a slow reader (1 ms per message)"),
    ];
    let mut stats = vec![];
    for (name, setup) in names.iter().zip(&fast) {
        let a = report.figure("slow", format!("fast reader p50, {name}"), "ms", &setup.p50);
        let b = report.figure("slow", format!("fast reader p99, {name}"), "ms", &setup.p99);
        stats.push((a.median, b.median));
    }
    report.figure(
        "slow",
        "slow reader: all 10,000 received in order, at (its own pace)",
        "msg/s",
        &rate,
    );
    report.figure(
        "slow",
        "slow reader: times it fell behind and caught up from the station",
        "",
        &catch_up_counts,
    );
    report.summary("slow_reader_fast_p50_ratio", stats[2].0 / stats[0].0);
    report.summary("slow_reader_fast_p99_ratio", stats[2].1 / stats[0].1);
    // A slow reader against an ordinary one: 1 = slowness costs others
    // nothing beyond what serving a reader costs.
    report.summary("slow_vs_fast_neighbour_p50_ratio", stats[2].0 / stats[1].0);
    report.summary("slow_vs_fast_neighbour_p99_ratio", stats[2].1 / stats[1].1);
    Ok(())
}
