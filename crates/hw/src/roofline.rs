//! Roofline model (paper 002, Fig. 5): the array's compute roof N^2 f, the memory roof
//! bandwidth x operational intensity, the DSP roof of the device, extra roofs for tiling B
//! (t rows of B in parallel need t x N^2 MACs per cycle, capped by the DSPs), and every GEMM of
//! a network placed on it. As in 002, one operation is one MAC and the operational intensity
//! of a GEMM is MACs per streamed byte of B, which equals M (A is resident on chip).

use crate::design::ArrayDesign;
use crate::networks::{Network, Pass};
use crate::sim::CoreConfig;
use crate::timing::op_counters;
use crate::{HwError, Result};

/// One GEMM on the roofline.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RooflinePoint {
    pub label: String,
    pub layer: usize,
    pub pass: Pass,
    /// MACs per byte of B.
    pub intensity: f64,
    /// min(compute roof, memory roof) in MAC/s.
    pub attainable: f64,
    /// MACs over the simulated time of the op (preload, DMA and stalls included).
    pub simulated: f64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Roofline {
    pub design: String,
    pub bandwidth: f64,
    pub compute_peak: f64,
    pub dsp_peak: f64,
    /// (tile factor, roof in MAC/s).
    pub tile_roofs: Vec<(usize, f64)>,
    pub points: Vec<RooflinePoint>,
}

impl Roofline {
    pub fn memory_roof(&self, intensity: f64) -> f64 {
        self.bandwidth * intensity
    }
}

/// The roofline of `net`'s GEMMs (one example) on `design` with `bandwidth` bytes/s.
pub fn roofline(net: &Network, design: &ArrayDesign, bandwidth: f64) -> Result<Roofline> {
    if !(bandwidth.is_finite() && bandwidth > 0.0) {
        return Err(HwError::InvalidArgument(format!(
            "bandwidth {bandwidth} B/s must be positive"
        )));
    }
    let compute_peak = design.peak_macs();
    let dsp_peak = design.board.dsp_peak_macs();
    let tile_roofs = [4usize, 16]
        .iter()
        .map(|&t| (t, (t as f64 * compute_peak).min(dsp_peak)))
        .collect();
    let cfg = CoreConfig {
        n: design.n,
        a_rows: design.a_rows,
        a_cols: design.a_cols,
        clock_hz: design.clock_hz(),
        dma_bytes_per_s: bandwidth,
    };
    let mut points = Vec::new();
    for op in net.gemms(1) {
        let intensity = op.m as f64;
        let ct = op_counters(&cfg, &op);
        let secs = ct.total_cycles as f64 / cfg.clock_hz;
        points.push(RooflinePoint {
            label: format!("L{} {:?} {}x{}x{}", op.layer, op.pass, op.m, op.k, op.n),
            layer: op.layer,
            pass: op.pass,
            intensity,
            attainable: compute_peak.min(bandwidth * intensity),
            simulated: if secs > 0.0 {
                op.macs() as f64 / secs
            } else {
                0.0
            },
        });
    }
    Ok(Roofline {
        design: design.spec(),
        bandwidth,
        compute_peak,
        dsp_peak,
        tile_roofs,
        points,
    })
}

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// Registers the bundled DejaVu Sans as plotters' "sans-serif" (once per process): every plot
/// of lowprec (this crate's and the CLI's) uses it, so no system fonts are needed.
pub fn register_font() -> Result<()> {
    use std::sync::OnceLock;
    static DONE: OnceLock<bool> = OnceLock::new();
    let ok = *DONE.get_or_init(|| {
        plotters::style::register_font("sans-serif", plotters::style::FontStyle::Normal, FONT)
            .is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(HwError::Plot(
            "bundled DejaVuSans.ttf could not be registered".into(),
        ))
    }
}

/// Renders the roofline as a PNG (written atomically).
pub fn plot_png(r: &Roofline, path: &std::path::Path) -> Result<()> {
    use plotters::prelude::*;
    register_font()?;
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
        return Err(HwError::InvalidArgument(format!(
            "'{}' exists and is not a regular file: the PNG is written beside it and renamed \
             into place",
            path.display()
        )));
    }
    let name = path
        .file_name()
        .ok_or_else(|| HwError::InvalidArgument(format!("'{}' has no file name", path.display())))?
        .to_string_lossy()
        .to_string();
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let tmp = dir.join(format!(".{name}.tmp{}.png", std::process::id()));
    let perr = |e: &dyn std::fmt::Display| HwError::Plot(e.to_string());
    {
        let root = BitMapBackend::new(&tmp, (1100, 750)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| perr(&e))?;
        let g = 1e9;
        let (x0, x1) = (1.0f64, 1e5f64);
        let ymax = (r.dsp_peak / g * 4.0).max(r.memory_roof(x1) / g * 1.5);
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("Roofline: {} at {:.0} GB/s", r.design, r.bandwidth / 1e9),
                ("sans-serif", 24),
            )
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d((x0..x1).log_scale(), (1.0f64..ymax).log_scale())
            .map_err(|e| perr(&e))?;
        chart
            .configure_mesh()
            .x_desc("operational intensity (MACs per byte of B)")
            .y_desc("performance (GMAC/s)")
            .label_style(("sans-serif", 15))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .draw()
            .map_err(|e| perr(&e))?;
        let xs: Vec<f64> = (0..=200)
            .map(|i| x0 * (x1 / x0).powf(i as f64 / 200.0))
            .collect();
        let roof = |peak: f64| -> Vec<(f64, f64)> {
            xs.iter()
                .map(|&x| (x, peak.min(r.memory_roof(x)) / g))
                .collect()
        };
        chart
            .draw_series(LineSeries::new(
                xs.iter().map(|&x| (x, r.memory_roof(x) / g)),
                BLACK.stroke_width(1),
            ))
            .map_err(|e| perr(&e))?
            .label("memory roof")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
        chart
            .draw_series(LineSeries::new(
                xs.iter().map(|&x| (x, r.dsp_peak / g)),
                MAGENTA.stroke_width(2),
            ))
            .map_err(|e| perr(&e))?
            .label(format!("DSP peak {:.2} TMAC/s", r.dsp_peak / 1e12))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], MAGENTA));
        chart
            .draw_series(LineSeries::new(roof(r.compute_peak), RED.stroke_width(3)))
            .map_err(|e| perr(&e))?
            .label(format!("array {:.0} GMAC/s", r.compute_peak / g))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        for (i, &(t, peak)) in r.tile_roofs.iter().enumerate() {
            let color = if i == 0 { GREEN } else { BLUE };
            chart
                .draw_series(LineSeries::new(roof(peak), color.stroke_width(2)))
                .map_err(|e| perr(&e))?
                .label(format!("tile x{t}: {:.0} GMAC/s", peak / g))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        chart
            .draw_series(
                r.points
                    .iter()
                    .map(|p| Circle::new((p.intensity, p.attainable / g), 5, RED.filled())),
            )
            .map_err(|e| perr(&e))?
            .label("GEMMs (attainable)")
            .legend(|(x, y)| Circle::new((x + 10, y), 5, RED.filled()));
        chart
            .draw_series(
                r.points
                    .iter()
                    .filter(|p| p.simulated > 0.0)
                    .map(|p| Cross::new((p.intensity, p.simulated / g), 5, BLACK.stroke_width(2))),
            )
            .map_err(|e| perr(&e))?
            .label("GEMMs (simulated)")
            .legend(|(x, y)| Cross::new((x + 10, y), 5, BLACK.stroke_width(2)));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 15))
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(|e| perr(&e))?;
        root.present().map_err(|e| perr(&e))?;
    }
    std::fs::rename(&tmp, path).map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        HwError::Io {
            path: path.display().to_string(),
            source,
        }
    })
}
