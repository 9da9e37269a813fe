//! Regenerates paper 002's Tables II, III, IV and VI and paper 001's two throughput figures
//! (table `001`) from the models, each figure beside the paper's with its relative error, and
//! whether the figure was used to fit a constant.

use crate::catalog::Catalog;
use crate::design::ArrayDesign;
use crate::memory::{training_memory, TABLE_II};
use crate::projection;
use crate::timing::{self, TABLE_VI};
use crate::{networks, rel_error, Result};

/// One reproduced figure.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct TableRow {
    pub table: String,
    pub row: String,
    pub quantity: String,
    pub unit: String,
    pub paper: f64,
    pub model: f64,
    pub rel_error: f64,
    /// The paper figure was used to fit a model constant (its error says little).
    pub fitted: bool,
}

fn row(
    table: &str,
    row: String,
    quantity: &str,
    unit: &str,
    paper: f64,
    model: f64,
    fitted: bool,
) -> TableRow {
    TableRow {
        table: table.into(),
        row,
        quantity: quantity.into(),
        unit: unit.into(),
        paper,
        model,
        rel_error: rel_error(model, paper),
        fitted,
    }
}

/// Table II: training memory of VGG16 (MB = 10^6 bytes).
pub fn table_ii() -> Result<Vec<TableRow>> {
    let vgg = networks::get("vgg16")?;
    let mut out = Vec::new();
    for p in TABLE_II {
        let b = p[0] as usize;
        let m = training_memory(vgg, b);
        let r = format!("VGG16 batch {b}");
        let mb = 1e6;
        for (q, paper, model) in [
            ("float (Darknet)", p[1], m.float_total),
            ("8-bit malloc", p[2], m.int8_malloc),
            ("8-bit cma", p[3], m.int8_cma),
            ("8-bit total", p[4], m.int8_total()),
            ("8-bit+SWA malloc", p[5], m.swa_malloc()),
            ("8-bit+SWA total", p[7], m.swa_total()),
        ] {
            out.push(row("II", r.clone(), q, "MB", paper, model / mb, false));
        }
    }
    Ok(out)
}

/// Tables III (ZCU111) and IV (Pynq-Z1): resources of the paper's designs.
pub fn table_iii_iv() -> Result<Vec<TableRow>> {
    let cat = Catalog::get();
    let mut out = Vec::new();
    for d in &cat.design {
        let design = ArrayDesign::new(
            &d.board,
            d.n as usize,
            d.a_rows as usize,
            d.a_cols as usize,
            d.clock_mhz,
        )?;
        let est = design.resources()?;
        let fam = cat.family(&design.board.family)?;
        let name = format!("{}x{} A_max {}/{}", d.n, d.n, d.a_rows, d.a_cols);
        let fitted = fam
            .fitted_from
            .contains(&format!("{}/{}", d.a_rows, d.a_cols));
        for (q, paper, model) in [
            ("BRAM36", d.paper_bram36 as f64, est.bram36),
            ("DSP", d.paper_dsp as f64, est.dsp as f64),
            ("LUT", d.paper_lut as f64, est.lut as f64),
            ("FF", d.paper_ff as f64, est.ff as f64),
        ] {
            out.push(row(
                &d.table,
                format!("{} {name}", d.board),
                q,
                "",
                paper,
                model,
                fitted,
            ));
        }
    }
    Ok(out)
}

fn is_fitted(net: &str, batch: usize, board: &str, fpga: bool) -> bool {
    matches!(
        (net, batch, board, fpga),
        ("vgg16", 1 | 128, "zcu111", _)
            | ("logreg", 128, "pynq-z1", _)
            | ("logreg", 128, "zcu111", true)
    )
}

/// Table VI: seconds per iteration, processor only and FPGA-accelerated, and the speed-ups
/// 002 quotes (17x VGG16 batch 128; 5.5x and 4.3x LogReg on Pynq-Z1 and ZCU111).
pub fn table_vi() -> Result<Vec<TableRow>> {
    let mut out = Vec::new();
    for &(net_id, batch, board, paper_cpu, paper_fpga) in TABLE_VI.iter() {
        let net = networks::get(net_id)?;
        let design = timing::table_vi_design(board)?;
        let est = timing::fpga_iteration(net, batch, &design)?;
        let cpu_name = if board == "pynq-z1" { "A9" } else { "A53" };
        let r = format!("{net_id} batch {batch} on {board}");
        out.push(row(
            "VI",
            r.clone(),
            &format!("{cpu_name} only"),
            "s",
            paper_cpu,
            est.cpu_only_s,
            is_fitted(net_id, batch, board, false),
        ));
        out.push(row(
            "VI",
            r.clone(),
            "FPGA",
            "s",
            paper_fpga,
            est.fpga_total_s,
            is_fitted(net_id, batch, board, true),
        ));
        // The speed-ups 002 quotes, plus VGG16 at batch 32 (a prediction).
        let quoted = matches!(
            (net_id, batch),
            ("vgg16", 32) | ("vgg16", 128) | ("logreg", 256)
        );
        if quoted {
            out.push(row(
                "VI",
                r,
                "speed-up",
                "x",
                paper_cpu / paper_fpga,
                est.speedup(),
                net_id == "vgg16" && batch == 128,
            ));
        }
    }
    Ok(out)
}

/// Paper 002 Section V: the RF auto-encoder (32-16-8-16-32, batch 1000) on a 16x16 array at
/// 200 MHz on the ZCU111 trains 1.75x faster than software only. A prediction of the Table VI
/// calibration; the model over-predicts it (see the crate docs of `timing`).
pub fn section_v() -> Result<Vec<TableRow>> {
    let net = networks::get("rf-autoencoder")?;
    let d = ArrayDesign::paper_design("zcu111", 16)?;
    let d = ArrayDesign::new(&d.board.id, 16, d.a_rows, d.a_cols, 200.0)?;
    let est = timing::fpga_iteration(net, 1000, &d)?;
    Ok(vec![row(
        "V",
        "rf-autoencoder batch 1000 on zcu111 16x16".into(),
        "speed-up",
        "x",
        1.75,
        est.speedup(),
        false,
    )])
}

/// Paper 001: the Arria 10 AlexNet point (ternary weights, 2-bit activations; the fitted
/// efficiency's source) and the Stratix 10 ResNet-34 projection (a prediction).
pub fn table_001() -> Result<Vec<TableRow>> {
    let cat = Catalog::get();
    let p = projection::Precision::new(2, 2)?;
    let a10 = cat.intel("arria10-gx1150")?;
    let s10 = cat.intel("stratix10-gx2800")?;
    let alex = projection::project(a10, networks::get("alexnet")?, p)?;
    let res = projection::project(s10, networks::get("resnet34")?, p)?;
    Ok(vec![
        row(
            "001",
            format!("{} alexnet {}", a10.id, p.label()),
            "images/s",
            "1/s",
            projection::PAPER_A10_ALEXNET_IMG_S,
            alex.images_per_s,
            true,
        ),
        row(
            "001",
            format!("{} resnet34 {}", s10.id, p.label()),
            "TOPS (sustained)",
            "TOPS",
            projection::PAPER_S10_TOPS,
            res.tops,
            false,
        ),
    ])
}

/// The paper-001 projection grid: every device x {AlexNet, ResNet-34} x precision.
pub fn projections_001() -> Result<Vec<projection::Projection>> {
    let cat = Catalog::get();
    let mut out = Vec::new();
    for dev in &cat.intel {
        for net in ["alexnet", "resnet34"] {
            for p in projection::table_precisions() {
                out.push(projection::project(dev, networks::get(net)?, p)?);
            }
        }
    }
    Ok(out)
}

/// Plain-text rendering of [`projections_001`].
pub fn render_projections(rows: &[projection::Projection]) -> String {
    let mut s = format!(
        "{:<26} {:<9} {:<12} {:>9} {:>7} {:>10} {:>9} {:>11} {:>10} {:>10}\n",
        "device",
        "network",
        "w/a",
        "ALMs/MAC",
        "vs int8",
        "soft MAC/c",
        "DSP MAC/c",
        "images/s",
        "TOPS",
        "peak TOPS"
    );
    for p in rows {
        s.push_str(&format!(
            "{:<26} {:<9} {:<12} {:>9.2} {:>6.1}% {:>10.0} {:>9.0} {:>11.0} {:>10.2} {:>10.1}\n",
            p.device,
            p.network,
            p.precision.label(),
            p.alms_per_mac,
            100.0 * p.cost_vs_int8,
            p.soft_macs_per_cycle,
            p.dsp_macs_per_cycle,
            p.images_per_s,
            p.tops,
            p.peak_tops
        ));
    }
    s
}

/// All reproduced tables.
pub fn all() -> Result<Vec<TableRow>> {
    let mut v = table_ii()?;
    v.extend(table_iii_iv()?);
    v.extend(table_vi()?);
    v.extend(section_v()?);
    v.extend(table_001()?);
    Ok(v)
}

/// Plain-text rendering, one line per figure.
pub fn render(rows: &[TableRow]) -> String {
    let mut s = format!(
        "{:<5} {:<40} {:<18} {:>12} {:>12} {:>9}  {}\n",
        "table", "row", "quantity", "paper", "model", "rel.err", "note"
    );
    for r in rows {
        s.push_str(&format!(
            "{:<5} {:<40} {:<18} {:>12} {:>12} {:>+8.1}%  {}\n",
            r.table,
            r.row,
            r.quantity,
            fmt_num(r.paper),
            fmt_num(r.model),
            100.0 * r.rel_error,
            if r.fitted { "fitted" } else { "" }
        ));
    }
    s
}

fn fmt_num(v: f64) -> String {
    if v != 0.0 && v.abs() < 0.1 {
        format!("{v:.4}")
    } else if v.abs() < 100.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.0}")
    }
}
