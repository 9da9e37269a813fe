//! Plots with plotters (bitmap backend, bundled DejaVu Sans so no system fonts are needed).

use anyhow::{bail, Context, Result};
use lowprec_rf::experiment::ExperimentResult;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// The bundled font (one set-up for every plot, in crates/hw).
pub fn register_font() -> Result<()> {
    Ok(lowprec_hw::roofline::register_font()?)
}

/// Checks that a plot's output path names a PNG file (plotters picks the encoder from the
/// extension, and only PNG is written).
pub fn check_png_path(out: &Path) -> Result<()> {
    let ext = out.extension().map(|e| e.to_ascii_lowercase());
    if ext.as_deref() != Some(std::ffi::OsStr::new("png")) {
        bail!(
            "plot output {}: plots are written as PNG; give a file name ending in .png",
            out.display()
        );
    }
    Ok(())
}

/// Draws into a temp PNG beside `out` and renames it into place, so that a failed or
/// interrupted plot never leaves a half-written image under the final name.
pub fn write_png_atomic(out: &Path, draw: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    check_png_path(out)?;
    if std::fs::metadata(out).is_ok_and(|m| !m.is_file()) {
        bail!(
            "plot output {} exists and is not a regular file",
            out.display()
        );
    }
    let tmp = lowprec_data::fsutil::temp_path_beside(out).with_extension("tmp.png");
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let r = draw(&tmp).and_then(|()| {
        std::fs::rename(&tmp, out).with_context(|| format!("writing {}", out.display()))
    });
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// Splits a polyline into the pieces that lie at or above `y0`, cutting each segment that crosses
/// `y0` where it crosses (along `ln x` when the x axis is logarithmic, so the cut lies on the
/// segment as drawn). A zoomed axis then shows where a curve leaves and enters the view instead of
/// drawing the points below it on the floor as if they were measured there.
pub fn clip_below(pts: &[(f64, f64)], y0: f64, log_x: bool) -> Vec<Vec<(f64, f64)>> {
    let fx = |x: f64| if log_x { x.ln() } else { x };
    let gx = |x: f64| if log_x { x.exp() } else { x };
    let mut pieces: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut cur: Vec<(f64, f64)> = Vec::new();
    for (i, &(x, y)) in pts.iter().enumerate() {
        if i > 0 {
            let (px, py) = pts[i - 1];
            if (py < y0) != (y < y0) {
                let t = (y0 - py) / (y - py);
                let cut = (gx(fx(px) + t * (fx(x) - fx(px))), y0);
                cur.push(cut);
                if y < y0 {
                    pieces.push(std::mem::take(&mut cur));
                }
            }
        }
        if y >= y0 {
            cur.push((x, y));
        }
    }
    if !cur.is_empty() {
        pieces.push(cur);
    }
    pieces
}

/// Axis ticks at 1..9, 1-2-3-5 or 1-2-5 times the powers of ten inside `[lo, hi]`, the densest
/// that gives at most `max` (only the 1s where none does), for a logarithmic axis whose default
/// ticks crowd at the top of a decade.
pub fn log_ticks(lo: f64, hi: f64, max: usize) -> Vec<f64> {
    if !(lo > 0.0 && hi >= lo && hi.is_finite()) {
        return Vec::new();
    }
    let ticks = |mults: &[f64]| {
        let mut v = Vec::new();
        let mut p = 10f64.powf(lo.log10().floor());
        while p <= hi {
            for m in mults {
                let t = p * m;
                if t >= lo * (1.0 - 1e-12) && t <= hi * (1.0 + 1e-12) {
                    v.push(t);
                }
            }
            p *= 10.0;
        }
        v
    };
    // the densest of these that fits, so a narrow range (250..1100) still gets several ticks
    let sets: [&[f64]; 4] = [
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
        &[1.0, 2.0, 3.0, 5.0],
        &[1.0, 2.0, 5.0],
        &[1.0],
    ];
    for mults in &sets[..3] {
        let v = ticks(mults);
        if v.len() <= max {
            return v;
        }
    }
    ticks(sets[3])
}

/// A tick label with as many decimals as the value needs (1000, 20, 2.5, 0.05).
pub fn tick_label(x: f64) -> String {
    let s = if x.abs() >= 10.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.3}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
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
        for (name, v) in std::iter::once(("test_acc", r.test_acc))
            .chain(r.swa_test_acc.map(|a| ("swa_test_acc", a)))
        {
            if !(0.0..=1.0).contains(&v) {
                bail!(
                    "{}:{}: {name} {v} is not an accuracy (a fraction between 0 and 1)",
                    p.display(),
                    i + 1
                );
            }
        }
        rows.push(r);
    }
    if rows.is_empty() {
        bail!("{}: no metrics", p.display());
    }
    Ok(rows)
}

/// Label of a run from its metrics path (`out/x/bfp8/metrics.jsonl` -> `x/bfp8`).
pub fn run_label(p: &Path) -> String {
    let parts: Vec<String> = p
        .parent()
        .map(|d| d.iter().map(|c| c.to_string_lossy().to_string()).collect())
        .unwrap_or_default();
    let n = parts.len();
    parts[n.saturating_sub(2)..].join("/")
}

/// Test accuracy (%) vs epoch for several runs, SWA curves dashed (the shape of 002 Fig. 1).
pub fn plot_accuracy(files: &[PathBuf], out: &Path, title: &str) -> Result<()> {
    check_png_path(out)?;
    register_font()?;
    let runs: Vec<(String, Vec<Row>)> = files
        .iter()
        .map(|f| Ok((run_label(f), read_rows(f)?)))
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
    write_png_atomic(out, |tmp| {
        draw_accuracy(tmp, title, &runs, max_epoch, y0, y1)
    })
}

fn draw_accuracy(
    out: &Path,
    title: &str,
    runs: &[(String, Vec<Row>)],
    max_epoch: usize,
    y0: f64,
    y1: f64,
) -> Result<()> {
    let root = BitMapBackend::new(out, (1000, 620)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d(1f64..max_epoch.max(2) as f64, y0..y1)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .x_labels(max_epoch.clamp(2, 12))
        // only whole epochs are labelled (fractional ticks printed as integers repeated them)
        .x_label_formatter(&|x| {
            if (x - x.round()).abs() < 1e-9 {
                format!("{x:.0}")
            } else {
                String::new()
            }
        })
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
    register_font()?;
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

/// `rf experiment`'s Fig. 9, three panels: F1 against iterations, training seconds and
/// projected seconds, with the PCA baseline and the target F1 as dashed lines.
pub fn plot_rf_experiment(r: &ExperimentResult, out: &Path) -> Result<()> {
    register_font()?;
    let root = BitMapBackend::new(out, (1500, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((1, 3));
    let mut names: Vec<String> = Vec::new();
    for p in &r.curve {
        if !names.contains(&p.precision) {
            names.push(p.precision.clone());
        }
    }
    let pca = r.baselines.first().map(|b| (b.detector.clone(), b.f1));
    type Getter = fn(&lowprec_rf::experiment::CurvePoint) -> Option<f64>;
    let axes: [(&str, Getter); 3] = [
        ("iterations", |p| Some(p.iteration as f64)),
        ("training time on this CPU (s)", |p| Some(p.seconds)),
        ("projected time, GEMMs on the FPGA model (s)", |p| {
            p.projected_seconds
        }),
    ];
    for (panel, (xlabel, get)) in panels.iter().zip(axes) {
        let xmax = r
            .curve
            .iter()
            .filter_map(get)
            .fold(0.0f64, f64::max)
            .max(1e-9);
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("F1 vs {xlabel}"), ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..xmax * 1.02, 0f64..1f64)?;
        chart
            .configure_mesh()
            .x_desc(xlabel)
            .y_desc("test F1")
            .label_style(("sans-serif", 13))
            .draw()?;
        for (i, name) in names.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let pts: Vec<(f64, f64)> = r
                .curve
                .iter()
                .filter(|p| &p.precision == name)
                .filter_map(|p| get(p).map(|x| (x, p.f1)))
                .collect();
            chart
                .draw_series(LineSeries::new(pts, color.stroke_width(2)))?
                .label(name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        if let Some((label, f1)) = &pca {
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(0.0, *f1), (xmax * 1.02, *f1)],
                    6,
                    4,
                    BLACK.stroke_width(1),
                ))?
                .label(format!("{label} (F1 {f1:.3})"))
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
        }
        let t = r.target_f1;
        chart
            .draw_series(DashedLineSeries::new(
                vec![(0.0, t), (xmax * 1.02, t)],
                2,
                4,
                RED.stroke_width(1),
            ))?
            .label(format!("F1 {t}"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .position(SeriesLabelPosition::LowerRight)
            .draw()?;
    }
    root.present()
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(dir: &Path, lines: &[&str]) -> PathBuf {
        let p = dir.join("run").join("metrics.jsonl");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, lines.join("\n")).unwrap();
        p
    }

    #[test]
    fn clip_below_cuts_where_the_curve_crosses() {
        let p = [
            (0.0, 10.0),
            (1.0, 50.0),
            (2.0, 70.0),
            (3.0, 40.0),
            (4.0, 80.0),
        ];
        let got = clip_below(&p, 60.0, false);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0][0], (1.5, 60.0));
        assert_eq!(got[0][1], (2.0, 70.0));
        assert_eq!(got[0].len(), 3);
        assert!(
            (got[0][2].0 - (2.0 + 1.0 / 3.0)).abs() < 1e-12,
            "{:?}",
            got[0]
        );
        assert!((got[1][0].0 - 3.5).abs() < 1e-12 && got[1][1] == (4.0, 80.0));
        // on a log axis the cut is placed along ln x: halfway between 1 and 100 is 10
        let got = clip_below(&[(1.0, 0.0), (100.0, 2.0)], 1.0, true);
        assert!((got[0][0].0 - 10.0).abs() < 1e-9, "{got:?}");
        assert!(clip_below(&[(0.0, 1.0)], 2.0, false).is_empty());
        assert!(clip_below(&[], 2.0, false).is_empty());
        assert_eq!(clip_below(&[(0.0, 3.0), (1.0, 4.0)], 2.0, false).len(), 1);
    }

    #[test]
    fn log_ticks_and_labels() {
        assert_eq!(
            log_ticks(30.0, 1100.0, 12),
            vec![30.0, 50.0, 100.0, 200.0, 300.0, 500.0, 1000.0]
        );
        assert_eq!(
            log_ticks(250.0, 1100.0, 12),
            vec![300.0, 400.0, 500.0, 600.0, 700.0, 800.0, 900.0, 1000.0]
        );
        assert_eq!(
            log_ticks(30.0, 1100.0, 6),
            vec![50.0, 100.0, 200.0, 500.0, 1000.0]
        );
        assert_eq!(log_ticks(0.01, 1e6, 8).len(), 9);
        assert!(log_ticks(0.0, 1.0, 8).is_empty() && log_ticks(2.0, 1.0, 8).is_empty());
        let labels: Vec<String> = [1000.0, 20.0, 2.5, 0.05, 1.0].map(tick_label).into();
        assert_eq!(labels, ["1000", "20", "2.5", "0.05", "1"]);
    }

    #[test]
    fn accuracies_outside_zero_to_one_are_errors() {
        let d = tempfile::tempdir().unwrap();
        let m = metrics(d.path(), &[r#"{"epoch":0,"test_acc":92.5}"#]);
        let e = plot_accuracy(&[m], &d.path().join("a.png"), "t")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("test_acc 92.5") && e.contains("metrics.jsonl:1"),
            "{e}"
        );
        let m = metrics(
            d.path(),
            &[r#"{"epoch":0,"test_acc":0.5,"swa_test_acc":-0.1}"#],
        );
        let e = plot_accuracy(&[m], &d.path().join("a.png"), "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("swa_test_acc -0.1"), "{e}");
    }

    #[test]
    fn output_must_be_png_and_is_written_whole() {
        let d = tempfile::tempdir().unwrap();
        let m = metrics(d.path(), &[r#"{"epoch":0,"test_acc":0.9}"#]);
        let e = plot_accuracy(std::slice::from_ref(&m), &d.path().join("plot"), "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains(".png"), "{e}");
        // one epoch only: a valid (non-empty) x range
        let out = d.path().join("out").join("acc.png");
        plot_accuracy(&[m], &out, "t").unwrap();
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        let names: Vec<String> = std::fs::read_dir(out.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["acc.png".to_string()]);
    }
}
