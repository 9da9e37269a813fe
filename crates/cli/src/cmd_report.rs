//! `lowprec report precision`: one row per format with post-training and retrained accuracy,
//! the fp32 accuracy, and the BFP array's resource and throughput estimate for that format.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use lowprec_formats::{FpgaBfp, LowBitFormat, MantissaCode, NumberFormat};
use lowprec_hw::bfp_array::{estimate, same_logic, BfpArray, BfpEstimate, GemmLayer, Operand};
use lowprec_hw::networks::{Layer as HwLayer, Network};
use lowprec_hw::projection::{project, Precision as HwPrecision, Projection};
use lowprec_infer::eval::{batches, evaluate};
use lowprec_infer::ptq::{quantize_checkpoint, PtqOptions};
use lowprec_infer::{Engine, Mode};
use lowprec_nn::spec::LayerSpec;
use lowprec_nn::Model;
use lowprec_train::{Checkpoint, TrainConfig};
use serde::Serialize;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum ReportCommand {
    /// Accuracy and FPGA estimates per precision for a trained fp32 checkpoint.
    Precision(PrecisionArgs),
}

#[derive(Args, Debug)]
pub struct PrecisionArgs {
    /// A checkpoint written by `lowprec train` (fp32).
    pub checkpoint: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    /// `retrain.json` files written by `lowprec retrain` (their formats fill the
    /// retrained_accuracy column).
    #[arg(long, num_args = 1..)]
    pub retrained: Vec<PathBuf>,
    /// fp32 or quantized (see quantize-model).
    #[arg(long, default_value = "fp32")]
    pub first_last: String,
    /// Only the first N test images.
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long, default_value_t = 16)]
    pub c_vector: u32,
    #[arg(long, default_value_t = 64)]
    pub k_vector: usize,
    /// An Intel device of the hw catalogue.
    #[arg(long, default_value = "arria10-gx1150")]
    pub device: String,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[arg(long)]
    pub threads: Option<usize>,
}

#[derive(Serialize)]
struct Row {
    format: String,
    weights: String,
    acts: String,
    fp32_accuracy: f64,
    ptq_accuracy: Option<f64>,
    retrained_accuracy: Option<f64>,
    luts: Option<u64>,
    dsps: Option<u32>,
    brams: Option<u32>,
    images_per_second: Option<f64>,
    /// The widest array within blocked FP16's LUTs at this width, and its images/s.
    k_vector_same_logic: Option<usize>,
    images_per_second_same_logic: Option<f64>,
    board: String,
    hw: Option<BfpEstimate>,
    /// Low-bit rows: paper 001's projection (`lowprec_hw::projection`) of this network.
    lowbit_hw: Option<Projection>,
}

pub fn run(c: &ReportCommand) -> Result<()> {
    let ReportCommand::Precision(a) = c;
    let threads = crate::util::threads_or_default(a.threads)?;
    let first_last_fp32 = crate::cmd_quantize_model::parse_first_last(&a.first_last)?;
    let ck = Checkpoint::load(&a.checkpoint)
        .with_context(|| format!("loading {}", a.checkpoint.display()))?;
    let cfg = TrainConfig::from_toml(&ck.config_toml, "the checkpoint's config")?;
    let dev = lowprec_hw::Catalog::get().intel(&a.device)?;
    let arr = BfpArray {
        c_vector: a.c_vector as usize,
        k_vector: a.k_vector,
        fmax_mhz: dev.fmax_mhz,
        device: dev.name.clone(),
    };
    let model = Model::build(&cfg.model, 0)?;
    let mut layers = Vec::new();
    for (i, (n, e)) in model.nodes.iter().zip(&cfg.model.layers).enumerate() {
        let ins = &model.shapes[n.inputs[0]];
        let out = &model.shapes[i + 1];
        match e.kind {
            LayerSpec::Conv { kernel, .. } => layers.push(GemmLayer {
                cin: ins[0],
                cout: out[0],
                taps: kernel * kernel,
                pixels: out[1] * out[2],
                in_pixels: ins[1] * ins[2],
            }),
            LayerSpec::Linear { out: o, .. } => layers.push(GemmLayer {
                cin: ins.iter().product(),
                cout: o,
                taps: 1,
                pixels: 1,
                in_pixels: 1,
            }),
            _ => {}
        }
    }
    let retrained: Vec<serde_json::Value> = a
        .retrained
        .iter()
        .map(|p| {
            let t =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            serde_json::from_str(&t).with_context(|| format!("{}: not JSON", p.display()))
        })
        .collect::<Result<_>>()?;
    let cv = a.c_vector;
    let lb = |s: &str| s.parse::<NumberFormat>().with_context(|| s.to_string());
    let f = |p: FpgaBfp| NumberFormat::Fpga(FpgaBfp { c_vector: cv, ..p });
    let rows_spec: Vec<(&str, NumberFormat, NumberFormat)> = vec![
        ("fp32", NumberFormat::F32, NumberFormat::F32),
        (
            "blocked fp16 (int12bfp)",
            f(FpgaBfp::INT12),
            f(FpgaBfp::INT12),
        ),
        ("int9bfp", f(FpgaBfp::INT9), f(FpgaBfp::INT9)),
        ("int8bfp", f(FpgaBfp::INT8), f(FpgaBfp::INT8)),
        ("int7bfp", f(FpgaBfp::INT7), f(FpgaBfp::INT7)),
        ("int5bfp", f(FpgaBfp::INT5), f(FpgaBfp::INT5)),
        ("int4bfp", f(FpgaBfp::INT4), f(FpgaBfp::INT4)),
        ("int5a/int4w", f(FpgaBfp::INT4), f(FpgaBfp::INT5)),
        ("ternary+a2", lb("twn:channel")?, lb("a2:fit")?),
        ("binary+a2", lb("binary:channel")?, lb("a2:fit")?),
        ("binary+binary", lb("binary:channel")?, lb("a1:fit")?),
    ];
    // paper 001's model of this network: its MACs per conv/linear layer
    let hw_net = Network {
        id: cfg.name.clone(),
        name: cfg.name.clone(),
        input: cfg.model.input.iter().product(),
        layers: layers
            .iter()
            .map(|l| HwLayer::Fc {
                i: l.cin * l.taps * l.pixels,
                o: l.cout,
            })
            .collect(),
    };
    let rows = crate::util::with_threads(threads, || -> Result<Vec<Row>> {
        // a limit takes test images spread over the set (it is stored class by class)
        let mut dcfg = cfg.data.clone();
        if let Some(l) = a.limit {
            dcfg.test_subset = l;
        }
        let data = lowprec_train::data::load(&dcfg, a.data_dir.clone())?;
        let bs = batches(&data.test, &data.norm, 256, None)?;
        let calib: Vec<_> = batches(&data.train, &data.norm, 128, Some(256))?
            .into_iter()
            .map(|(x, _)| x)
            .collect();
        let mut rows = Vec::new();
        let mut fp32_acc = None;
        let op = |x: &FpgaBfp| Operand {
            width: x.width,
            twos_complement: x.code == MantissaCode::TwosComplement,
        };
        let fp16 = op(&FpgaBfp::INT12);
        let budget = estimate(&arr, fp16, fp16, &layers).luts;
        for (name, w, acts) in &rows_spec {
            let opts = PtqOptions {
                weights: *w,
                acts: *acts,
                first_last_fp32,
                calib: calib.clone(),
            };
            let qm = quantize_checkpoint(&ck, &opts)?;
            let mode = if w.is_f32() { Mode::Float } else { Mode::Fast };
            let mut eng = Engine::new(&qm, mode)?;
            let r = evaluate(&mut eng, &bs)?;
            eprintln!("{name}: {:.2}% ({} images)", 100.0 * r.accuracy, r.images);
            if w.is_f32() {
                fp32_acc = Some(r.accuracy);
            }
            let hw = match (w, acts) {
                (NumberFormat::Fpga(wf), NumberFormat::Fpga(af)) => Some((
                    estimate(&arr, op(af), op(wf), &layers),
                    same_logic(&arr, op(af), op(wf), &layers, budget),
                )),
                _ => None,
            };
            let lowbit_hw = match (w, acts) {
                (NumberFormat::LowBit(wf), NumberFormat::LowBit(af)) => {
                    let wb = match wf {
                        LowBitFormat::Binary { .. } => 1,
                        f => f.bits(),
                    };
                    Some(project(dev, &hw_net, HwPrecision::new(wb, af.bits())?)?)
                }
                _ => None,
            };
            let (hw, same) = match hw {
                Some((h, s)) => (Some(h), Some(s)),
                None => (None, None),
            };
            let retrained_accuracy = retrained.iter().find_map(|j| {
                let same = |k: &str, v: &NumberFormat| {
                    j.get(k)
                        .and_then(|x| x.as_str())
                        .and_then(|s| s.parse::<NumberFormat>().ok())
                        == Some(*v)
                };
                (same("weights", w) && same("acts", acts))
                    .then(|| j.get("retrained_accuracy").and_then(|x| x.as_f64()))
                    .flatten()
            });
            rows.push(Row {
                format: name.to_string(),
                weights: w.to_string(),
                acts: acts.to_string(),
                fp32_accuracy: fp32_acc.unwrap_or(f64::NAN),
                ptq_accuracy: (!w.is_f32()).then_some(r.accuracy),
                retrained_accuracy,
                luts: hw.as_ref().map(|h| h.luts),
                dsps: hw.as_ref().map(|h| h.dsps),
                brams: hw.as_ref().map(|h| h.brams),
                images_per_second: hw
                    .as_ref()
                    .map(|h| h.images_per_second)
                    .or(lowbit_hw.as_ref().map(|p| p.images_per_s)),
                k_vector_same_logic: same.as_ref().map(|s| s.0),
                images_per_second_same_logic: same.as_ref().map(|s| s.1.images_per_second),
                board: arr.device.clone(),
                hw,
                lowbit_hw,
            });
        }
        Ok(rows)
    })??;
    if rows.is_empty() {
        bail!("no rows");
    }
    std::fs::create_dir_all(&a.out)?;
    let j = serde_json::json!({
        "checkpoint": a.checkpoint.display().to_string(), "network": cfg.name,
        "first_last": a.first_last, "test_images": a.limit, "array": arr, "rows": rows,
        "hw_model": "lowprec_hw::bfp_array (coefficients derived by counting bits; see its module doc)",
    });
    crate::util::write_atomic(
        &a.out.join("report.json"),
        serde_json::to_string_pretty(&j)?.as_bytes(),
    )?;
    let pct = |v: Option<f64>| {
        v.map(|x| format!("{:.2}", 100.0 * x))
            .unwrap_or_else(|| "-".into())
    };
    let fp16 = rows
        .iter()
        .find(|r| r.format.starts_with("blocked"))
        .and_then(|r| r.luts);
    let mut md = format!(
        "# Precision report: {} ({})\n\nArray: c_vector {}, k_vector {} on {} at {} MHz (compute-bound estimate). First/last layers: {}.\n\n| format | weights | acts | fp32 acc % | PTQ acc % | retrained acc % | LUTs | LUTs vs blocked FP16 | DSPs | M20K | images/s | k_vector in FP16's LUTs | images/s in FP16's LUTs |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        cfg.name, a.checkpoint.display(), arr.c_vector, arr.k_vector, arr.device, arr.fmax_mhz, a.first_last
    );
    for r in &rows {
        md += &format!(
            "| {} | {} | {} | {:.2} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.format,
            r.weights,
            r.acts,
            100.0 * r.fp32_accuracy,
            pct(r.ptq_accuracy),
            pct(r.retrained_accuracy),
            r.luts.map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
            match (r.luts, fp16) {
                (Some(l), Some(f)) => format!("{:.2}", l as f64 / f as f64),
                _ => "-".into(),
            },
            r.dsps.map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
            r.brams.map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
            r.images_per_second
                .map(|v| format!("{v:.0}"))
                .unwrap_or_else(|| "-".into()),
            r.k_vector_same_logic
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into()),
            r.images_per_second_same_logic
                .map(|v| format!("{v:.0}"))
                .unwrap_or_else(|| "-".into()),
        );
    }
    let low: Vec<&Row> = rows.iter().filter(|r| r.lowbit_hw.is_some()).collect();
    if !low.is_empty() {
        md += &format!(
            "\nLow-bit rows (clips `fit` per layer on 256 training images): images/s from paper 001's projection (`lowprec_hw::projection`: the first and last layers on {}'s DSPs at 8 bits, the rest on a soft-logic array, sustained fraction fitted to 001's Arria 10 AlexNet point), not the BFP array.\n\n| format | w/a | ALMs per MAC | vs soft int8 PE | images/s | TOPS sustained |\n| --- | --- | --- | --- | --- | --- |\n",
            arr.device
        );
        for r in low {
            let p = r.lowbit_hw.as_ref().expect("filtered");
            md += &format!(
                "| {} | {} | {:.2} | {:.1}% | {:.0} | {:.4} |\n",
                r.format,
                p.precision.label(),
                p.alms_per_mac,
                100.0 * p.cost_vs_int8,
                p.images_per_s,
                p.tops
            );
        }
    }
    crate::util::write_atomic(&a.out.join("report.md"), md.as_bytes())?;
    let pts: Vec<(String, f64, f64)> = rows
        .iter()
        .filter_map(|r| {
            Some((
                r.format.clone(),
                r.luts? as f64 / 1000.0,
                100.0 * r.retrained_accuracy.or(r.ptq_accuracy)?,
            ))
        })
        .collect();
    let png = a.out.join("report.png");
    crate::plot::plot_points(
        &pts,
        &png,
        &format!(
            "{}: accuracy vs dot-product logic (retrained where available, else PTQ)",
            cfg.name
        ),
        "LUTs (thousands)",
        "test accuracy (%)",
    )?;
    print!("{md}");
    eprintln!(
        "wrote {}/report.json, report.md, report.png",
        a.out.display()
    );
    Ok(())
}
