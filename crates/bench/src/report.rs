//! Statistics over repeated runs (percentiles within a run come from the
//! measurements' histograms), and the markdown/JSON report.

use std::{path::Path, time::Duration};

use anyhow::Context as _;
use serde_json::{Value, json};

/// min / median / max of a figure over the runs.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Stats {
    pub fn of(values: &[f64]) -> Self {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        if n == 0 {
            return Self {
                min: f64::NAN,
                median: f64::NAN,
                max: f64::NAN,
            };
        }
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            f64::midpoint(sorted[n / 2 - 1], sorted[n / 2])
        };
        Self {
            min: sorted[0],
            median,
            max: sorted[n - 1],
        }
    }
}

struct Row {
    measure: &'static str,
    figure: String,
    unit: &'static str,
    stats: Stats,
}

/// Everything measured, in order.
pub struct Report {
    pub runs: usize,
    rows: Vec<Row>,
    summary: serde_json::Map<String, Value>,
    notes: Vec<String>,
}

impl Report {
    pub fn new(runs: usize) -> Self {
        Self {
            runs: runs.max(1),
            rows: Vec::new(),
            summary: serde_json::Map::new(),
            notes: Vec::new(),
        }
    }

    /// Records a figure over the runs and returns its stats.
    pub fn figure(
        &mut self,
        measure: &'static str,
        figure: impl Into<String>,
        unit: &'static str,
        values: &[f64],
    ) -> Stats {
        let stats = Stats::of(values);
        let figure = figure.into();
        eprintln!(
            "[{measure}] {figure}: median {:.3} {unit} (min {:.3}, max {:.3})",
            stats.median, stats.min, stats.max
        );
        self.rows.push(Row {
            measure,
            figure,
            unit,
            stats,
        });
        stats
    }

    /// Records a summary key (ratios and headline figures).
    pub fn summary(&mut self, key: &str, value: f64) {
        let rounded = (value * 1000.0).round() / 1000.0;
        self.summary.insert(key.to_owned(), json!(rounded));
    }

    /// Adds a sentence to the report.
    pub fn note(&mut self, note: impl Into<String>) {
        let note = note.into();
        eprintln!("note: {note}");
        self.notes.push(note);
    }

    /// Writes `report.md` and `report.json` under `dir`; returns the one-line
    /// JSON summary.
    pub fn write(&self, dir: &Path, elapsed: Duration) -> anyhow::Result<String> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let mut md = String::from("# FastChat benchmark\n\n");
        md.push_str(&format!(
            "Machine: {} cores, {}; {} runs per figure; total {:.0} s.\n\n",
            std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
            std::env::consts::ARCH,
            self.runs,
            elapsed.as_secs_f64()
        ));
        md.push_str(
            "| measure | figure | median | min | max | unit |\n|---|---|---:|---:|---:|---|\n",
        );
        for row in &self.rows {
            md.push_str(&format!(
                "| {} | {} | {:.3} | {:.3} | {:.3} | {} |\n",
                row.measure, row.figure, row.stats.median, row.stats.min, row.stats.max, row.unit
            ));
        }
        md.push_str("\n## Summary\n\n```json\n");
        let summary = Value::Object(self.summary.clone()).to_string();
        md.push_str(&summary);
        md.push_str("\n```\n");
        if !self.notes.is_empty() {
            md.push_str("\n## Notes\n\n");
            for note in &self.notes {
                md.push_str(&format!("- {note}\n"));
            }
        }
        std::fs::write(dir.join("report.md"), md)?;
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                json!({
                    "measure": r.measure, "figure": r.figure, "unit": r.unit,
                    "min": r.stats.min, "median": r.stats.median, "max": r.stats.max,
                })
            })
            .collect();
        let full = json!({ "runs": self.runs, "elapsed_s": elapsed.as_secs_f64(), "figures": rows, "summary": self.summary, "notes": self.notes });
        std::fs::write(
            dir.join("report.json"),
            serde_json::to_string_pretty(&full)?,
        )?;
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats() {
        let s = Stats::of(&[3.0, 1.0, 2.0]);
        assert_eq!((s.min, s.median, s.max), (1.0, 2.0, 3.0));
        assert_eq!(Stats::of(&[1.0, 2.0, 3.0, 10.0]).median, 2.5);
    }
}
