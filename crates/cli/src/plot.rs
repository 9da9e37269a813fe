//! Plots with plotters (bitmap backend, bundled DejaVu Sans so no system fonts are needed).

use anyhow::{bail, Context, Result};
use plotters::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Once;

static FONT: &[u8] = include_bytes!("../../hw/assets/DejaVuSans.ttf");

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

#[derive(serde::Deserialize)]
struct Row {
    epoch: usize,
    test_acc: f64,
    #[serde(default)]
    swa_test_acc: Option<f64>,
}

fn read_rows(p: &PathBuf) -> Result<Vec<Row>> {
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    let mut rows = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let r: Row = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not a metrics line", p.display(), i + 1))?;
        if !r.test_acc.is_finite() {
            bail!("{}:{}: test_acc is not finite", p.display(), i + 1);
        }
        rows.push(r);
    }
    if rows.is_empty() {
        bail!("{}: no metrics", p.display());
    }
    Ok(rows)
}

/// Test accuracy (%) vs epoch for several runs, SWA curves dashed (the shape of 002 Fig. 1).
pub fn plot_accuracy(files: &[PathBuf], out: &Path, title: &str) -> Result<()> {
    register_font();
    let runs: Vec<(String, Vec<Row>)> = files
        .iter()
        .map(|f| Ok((crate::cmd_train::run_label(f), read_rows(f)?)))
        .collect::<Result<_>>()?;
    let max_epoch = runs
        .iter()
        .flat_map(|(_, r)| r.iter().map(|x| x.epoch + 1))
        .max()
        .unwrap_or(1);
    let accs: Vec<f64> = runs
        .iter()
        .flat_map(|(_, r)| {
            r.iter()
                .flat_map(|x| std::iter::once(x.test_acc).chain(x.swa_test_acc))
        })
        .map(|a| a * 100.0)
        .collect();
    let lo = accs.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = accs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    // zoom on the interesting band: from the 10th percentile to the top
    let mut sorted = accs.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let p10 = sorted[sorted.len() / 10];
    let y0 = (p10 - 0.5).max(lo - 0.5).max(0.0);
    let y1 = (hi + 0.3).min(100.0);
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let root = BitMapBackend::new(out, (1000, 620)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d(1f64..max_epoch as f64, y0..y1)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc("test accuracy (%)")
        .label_style(("sans-serif", 15))
        .draw()?;
    for (i, (label, rows)) in runs.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let pts: Vec<(f64, f64)> = rows
            .iter()
            .map(|r| ((r.epoch + 1) as f64, r.test_acc * 100.0))
            .collect();
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))?
            .label(format!("{label} (SGD)"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        let swa: Vec<(f64, f64)> = rows
            .iter()
            .filter_map(|r| r.swa_test_acc.map(|a| ((r.epoch + 1) as f64, a * 100.0)))
            .collect();
        if !swa.is_empty() {
            chart
                .draw_series(DashedLineSeries::new(swa, 6, 4, color.stroke_width(3)))?
                .label(format!("{label} (SWA)"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
                });
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present()
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

/// Labelled points (x, y), e.g. accuracy against a logic estimate, one per format.
pub fn plot_points(
    points: &[(String, f64, f64)],
    out: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
) -> Result<()> {
    register_font();
    if points.is_empty() {
        bail!("nothing to plot");
    }
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for (_, x, y) in points {
        x0 = x0.min(*x);
        x1 = x1.max(*x);
        y0 = y0.min(*y);
        y1 = y1.max(*y);
    }
    let (dx, dy) = ((x1 - x0).max(1.0) * 0.15, (y1 - y0).max(0.5) * 0.15);
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let root = BitMapBackend::new(out, (1000, 620)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d((x0 - dx)..(x1 + dx), (y0 - dy)..(y1 + dy))?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .label_style(("sans-serif", 15))
        .draw()?;
    for (i, (label, x, y)) in points.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart.draw_series(std::iter::once(Circle::new((*x, *y), 6, color.filled())))?;
        chart.draw_series(std::iter::once(Text::new(
            label.clone(),
            (*x, *y),
            ("sans-serif", 15).into_font(),
        )))?;
    }
    root.present()
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}
