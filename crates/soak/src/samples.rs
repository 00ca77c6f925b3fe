//! The samples taken every few seconds, their CSV, and the least-squares
//! slope that says whether a series stays flat.

use std::fmt::Write as _;

use anyhow::Context as _;

use crate::system::System;

/// The series of one service.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServiceRow {
    pub rss_mib: f64,
    pub fds: f64,
    pub threads: f64,
    /// `fastchat_subscriptions_active` (0 for send-service).
    pub subscriptions: f64,
}

/// One sample.
#[derive(Debug, Clone)]
pub struct Row {
    /// Seconds since the load began (negative before).
    pub t: f64,
    pub phase: &'static str,
    /// send-service, then the replicas.
    pub services: Vec<ServiceRow>,
    pub consumers: f64,
    pub connections: f64,
    pub stored: f64,
    pub acked: f64,
    pub live_subscribers: f64,
}

#[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
pub fn take(
    system: &System,
    t: f64,
    phase: &'static str,
    acked: u64,
    live: u64,
) -> anyhow::Result<Row> {
    let mut services = Vec::new();
    for service in system.services() {
        let proc = service.proc_sample()?;
        let subscriptions = if service.name.starts_with("all") {
            // + 0.0: a gauge back at zero may read -0.
            service.metric("fastchat_subscriptions_active")? + 0.0
        } else {
            0.0
        };
        services.push(ServiceRow {
            rss_mib: proc.rss_kib as f64 / 1024.0,
            fds: proc.fds as f64,
            threads: proc.threads as f64,
            subscriptions,
        });
    }
    let broker = system.broker(crate::STATION)?;
    Ok(Row {
        t,
        phase,
        services,
        consumers: broker.consumers as f64,
        connections: broker.connections as f64,
        stored: broker.stored as f64,
        acked: acked as f64,
        live_subscribers: live as f64,
    })
}

/// The samples as CSV, a header naming each service's columns.
pub fn csv(names: &[String], rows: &[Row]) -> String {
    let mut out = String::from("t_s,phase");
    for name in names {
        let _ = write!(
            out,
            ",{name}_rss_mib,{name}_fds,{name}_threads,{name}_subscriptions"
        );
    }
    out.push_str(",broker_consumers,broker_connections,station_messages,acked,live_subscribers\n");
    for row in rows {
        let _ = write!(out, "{:.1},{}", row.t, row.phase);
        for s in &row.services {
            let _ = write!(
                out,
                ",{:.2},{},{},{}",
                s.rss_mib, s.fds, s.threads, s.subscriptions
            );
        }
        let _ = writeln!(
            out,
            ",{},{},{},{},{}",
            row.consumers, row.connections, row.stored, row.acked, row.live_subscribers
        );
    }
    out
}

pub fn write_csv(path: &std::path::Path, names: &[String], rows: &[Row]) -> anyhow::Result<()> {
    std::fs::write(path, csv(names, rows)).with_context(|| format!("write {}", path.display()))
}

/// Least-squares slope of `y` over `x`; `None` with fewer than 3 points or
/// no spread in `x`.
#[expect(clippy::cast_precision_loss, reason = "a few thousand points")]
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 3 {
        return None;
    }
    let n = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_a_line_and_of_noise_around_a_flat_one() {
        let line: Vec<(f64, f64)> = (0..10)
            .map(|i| (f64::from(i), 3.0 + 2.0 * f64::from(i)))
            .collect();
        assert!((slope(&line).expect("enough points") - 2.0).abs() < 1e-9);
        let flat: Vec<(f64, f64)> = (0..10)
            .map(|i| (f64::from(i), if i % 2 == 0 { 5.0 } else { 6.0 }))
            .collect();
        assert!(slope(&flat).expect("enough points").abs() < 0.1);
        assert_eq!(slope(&line[..2]), None);
        assert_eq!(slope(&[(1.0, 1.0), (1.0, 2.0), (1.0, 3.0)]), None);
    }

    #[test]
    fn csv_has_a_column_per_value() {
        let row = Row {
            t: 1.0,
            phase: "load",
            services: vec![ServiceRow::default(); 2],
            consumers: 1.0,
            connections: 3.0,
            stored: 10.0,
            acked: 10.0,
            live_subscribers: 4.0,
        };
        let text = csv(&["send".into(), "all1".into()], &[row]);
        let mut lines = text.lines();
        let header = lines.next().expect("header").split(',').count();
        let values = lines.next().expect("row").split(',').count();
        assert_eq!((header, values), (2 + 8 + 5, 2 + 8 + 5));
    }
}
