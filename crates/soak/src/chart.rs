//! The samples drawn as a PNG (plotters): RSS, open file descriptors,
//! threads per service, the broker's consumers and connections beside the
//! live subscribers, the acknowledged send rate and the station's size,
//! against minutes of load.

use std::path::Path;

use anyhow::{Context as _, anyhow};
use plotters::prelude::*;

use crate::samples::Row;

const COLORS: [RGBColor; 5] = [BLUE, RED, GREEN, MAGENTA, BLACK];

/// Registers the TTF font at `font` as plotters' "sans-serif".
pub fn load_font(font: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(font).with_context(|| {
        format!(
            "read the chart font {} (Debian: fonts-dejavu-core; or --font)",
            font.display()
        )
    })?;
    plotters::style::register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(bytes.into_boxed_slice()),
    )
    .map_err(|_| anyhow!("{} is not a font plotters can use", font.display()))
}

type Series = (String, Vec<(f64, f64)>);

fn panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    title: &str,
    unit: &str,
    series: &[Series],
    legend: SeriesLabelPosition,
) -> anyhow::Result<()> {
    let points = series.iter().flat_map(|(_, p)| p.iter());
    let (mut x0, mut x1, mut y1) = (f64::MAX, f64::MIN, 0.0f64);
    for (x, y) in points {
        x0 = x0.min(*x);
        x1 = x1.max(*x);
        y1 = y1.max(*y);
    }
    if x0 >= x1 {
        x1 = x0 + 1.0;
    }
    // Headroom above the highest point; the legend sits below.
    let y1 = if y1 <= 0.0 { 1.0 } else { y1 * 1.2 };
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, 0.0..y1)
        .map_err(|e| anyhow!("{title}: {e}"))?;
    chart
        .configure_mesh()
        .x_desc("minutes of load")
        .y_desc(unit)
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(|e| anyhow!("{title}: {e}"))?;
    for (i, (name, points)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| anyhow!("{title}: {e}"))?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(legend)
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("{title}: {e}"))?;
    Ok(())
}

/// Draws `rows` (services named `names`) into `path`.
pub fn draw(path: &Path, title: &str, names: &[String], rows: &[Row]) -> anyhow::Result<()> {
    let minutes = |row: &Row| row.t / 60.0;
    // Acknowledged sends per second between one sample and the next.
    let rate: Vec<(f64, f64)> = rows
        .windows(2)
        .filter(|w| w[1].t > w[0].t)
        .map(|w| {
            (
                minutes(&w[1]),
                (w[1].acked - w[0].acked) / (w[1].t - w[0].t),
            )
        })
        .collect();
    let stored: Vec<(f64, f64)> = rows
        .iter()
        .map(|r| (minutes(r), r.stored / 1000.0))
        .collect();
    let mut pixels = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    draw_into(&mut pixels, title, names, rows, &rate, &stored)?;
    let file = std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), WIDTH, HEIGHT);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder
        .write_header()
        .and_then(|mut writer| writer.write_image_data(&pixels))
        .with_context(|| format!("write {}", path.display()))
}

const WIDTH: u32 = 1600;
const HEIGHT: u32 = 1400;

/// The broker's consumers and connections, the clients' live subscribers
/// and the replicas' subscriptions gauges.
fn broker_series(rows: &[Row]) -> Vec<Series> {
    let minutes = |row: &Row| row.t / 60.0;
    let series = |name: &str, value: &dyn Fn(&Row) -> f64| -> Series {
        (
            name.to_owned(),
            rows.iter().map(|r| (minutes(r), value(r))).collect(),
        )
    };
    vec![
        series("broker consumers", &|r| r.consumers),
        series("broker connections", &|r| r.connections),
        series("live subscribers (clients)", &|r| r.live_subscribers),
        series("subscriptions gauge (replicas)", &|r| {
            r.services.iter().map(|s| s.subscriptions).sum()
        }),
    ]
}

/// Draws the six panels into `pixels` (RGB, [`WIDTH`] × [`HEIGHT`]).
fn draw_into(
    pixels: &mut [u8],
    title: &str,
    names: &[String],
    rows: &[Row],
    rate: &[(f64, f64)],
    stored: &[(f64, f64)],
) -> anyhow::Result<()> {
    let minutes = |row: &Row| row.t / 60.0;
    let per_service = |value: fn(&crate::samples::ServiceRow) -> f64| -> Vec<Series> {
        names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let points = rows
                    .iter()
                    .filter_map(|r| r.services.get(i).map(|s| (minutes(r), value(s))))
                    .collect();
                (name.clone(), points)
            })
            .collect()
    };
    let broker = broker_series(rows);
    let root = BitMapBackend::with_buffer(pixels, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let root = root
        .titled(title, ("sans-serif", 26))
        .map_err(|e| anyhow!("{e}"))?;
    let areas = root.split_evenly((3, 2));
    use SeriesLabelPosition::{LowerLeft, LowerRight, MiddleRight};
    let rss = per_service(|s| s.rss_mib);
    panel(&areas[0], "resident memory (RSS)", "MiB", &rss, LowerRight)?;
    let fds = per_service(|s| s.fds);
    panel(&areas[1], "open file descriptors", "fds", &fds, LowerRight)?;
    let threads = per_service(|s| s.threads);
    panel(&areas[2], "threads", "threads", &threads, LowerRight)?;
    panel(
        &areas[3],
        "broker and subscribers",
        "count",
        &broker,
        MiddleRight,
    )?;
    let rate = [("acknowledged".into(), rate.to_vec())];
    panel(
        &areas[4],
        "sends acknowledged per second",
        "msg/s",
        &rate,
        LowerLeft,
    )?;
    let stored = [("stored".into(), stored.to_vec())];
    panel(
        &areas[5],
        "messages in the station",
        "thousands",
        &stored,
        LowerRight,
    )?;
    root.present().map_err(|e| anyhow!("draw the chart: {e}"))?;
    Ok(())
}
