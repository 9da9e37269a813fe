//! `lowprec infer`: the integer inference engine on a quantised model file, beside the float
//! model in the same run; `--check` against the reference path, `--compare` layer by layer.

use anyhow::{bail, Context, Result};
use clap::Args;
use lowprec_infer::eval::{batches, evaluate, EvalResult};
use lowprec_infer::ptq::{first_jump, format_table, layer_errors};
use lowprec_infer::{Engine, Mode, QuantizedModel};
use lowprec_kernels::Isa;
use std::path::{Path, PathBuf};

#[derive(Args, Debug, Clone)]
pub struct InferArgs {
    /// A model file written by `lowprec quantize-model` or `lowprec retrain`.
    pub model: PathBuf,
    /// `test` or `train`.
    #[arg(long, default_value = "test")]
    pub data: String,
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Only N images (spread over the test set).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Run the reference path on the first N images and require the same bits.
    #[arg(long)]
    pub check: Option<usize>,
    /// Layer-by-layer comparison with the float model on the first batch; names the first
    /// layer whose error jumps by `--jump-db`.
    #[arg(long)]
    pub compare: bool,
    #[arg(long, default_value_t = 3.0)]
    pub jump_db: f64,
    /// Skip the float model's run.
    #[arg(long)]
    pub no_float: bool,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Accuracy of the integer engine (and of the float model) on a model file's test set.
pub fn infer_model(
    path: &Path,
    data_dir: Option<PathBuf>,
    split: &str,
    batch: usize,
    limit: Option<usize>,
    float: bool,
) -> Result<(QuantizedModel, EvalResult, Option<EvalResult>)> {
    let qm = QuantizedModel::load(path)?;
    let subset = if split == "test" { limit } else { None };
    let data = crate::cmd_quantize_model::load_data(&qm.config_toml, data_dir, subset)?;
    let ds = match split {
        "test" => &data.test,
        "train" => &data.train,
        s => bail!("--data must be test or train, not `{s}`"),
    };
    let bs = batches(
        ds,
        &data.norm,
        batch,
        if subset.is_some() { None } else { limit },
    )?;
    let mut engine = Engine::new(&qm, Mode::Fast)?;
    let q = evaluate(&mut engine, &bs)?;
    let f = if float {
        let mut fe = Engine::new(&qm, Mode::Float)?;
        Some(evaluate(&mut fe, &bs)?)
    } else {
        None
    };
    Ok((qm, q, f))
}

pub fn run(a: &InferArgs) -> Result<()> {
    let threads = crate::util::threads_or_default(a.threads)?;
    crate::util::with_threads(threads, || -> Result<()> {
        let (qm, q, f) = infer_model(
            &a.model,
            a.data_dir.clone(),
            &a.data,
            a.batch,
            a.limit,
            !a.no_float,
        )?;
        let fmt = |l: &lowprec_infer::LayerFormats| format!("{}/{}", l.weights, l.acts);
        let formats: Vec<String> = qm
            .layers
            .iter()
            .map(|l| format!("{}={}", l.name, fmt(l)))
            .collect();
        println!(
            "model {} ({} conv/linear layers)",
            a.model.display(),
            qm.layers.len()
        );
        println!("  formats (weights/acts): {}", formats.join(", "));
        let lowbit = qm
            .layers
            .iter()
            .any(|l| matches!(l.weights, lowprec_formats::NumberFormat::LowBit(_)));
        println!(
            "  CPU kernels: {:?}{}, {threads} thread(s), batch {}",
            Isa::detect(),
            if lowbit {
                format!(", low-bit {:?}", lowprec_kernels::lowbit::BitIsa::detect())
            } else {
                String::new()
            },
            a.batch
        );
        println!(
            "  integer engine: accuracy {:.2}% on {} images, {:.1} images/s",
            100.0 * q.accuracy,
            q.images,
            q.images_per_second
        );
        if let Some(f) = &f {
            println!(
                "  fp32 model:     accuracy {:.2}% on {} images, {:.1} images/s (integer engine {:.2}x)",
                100.0 * f.accuracy,
                f.images,
                f.images_per_second,
                q.images_per_second / f.images_per_second
            );
        }
        let mut checked = None;
        if let Some(n) = a.check {
            let data =
                crate::cmd_quantize_model::load_data(&qm.config_toml, a.data_dir.clone(), None)?;
            let bs = batches(&data.test, &data.norm, a.batch.min(n.max(1)), Some(n))?;
            let mut fast = Engine::new(&qm, Mode::Fast)?;
            let mut refe = Engine::new(&qm, Mode::Reference)?;
            for (i, (x, _)) in bs.iter().enumerate() {
                let yf = fast.run(x.clone(), true)?;
                let yr = refe.run(x.clone(), true)?;
                let names = fast.node_names();
                for (v, (p, r)) in yf.iter().zip(&yr).enumerate() {
                    let same = p
                        .data
                        .iter()
                        .zip(&r.data)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    if !same {
                        let at = if v == 0 {
                            "input".to_string()
                        } else {
                            names[v - 1].clone()
                        };
                        bail!("batch {i}: the fast engine and the reference path differ at {at}");
                    }
                }
            }
            println!(
                "  reference path: bit-identical to the fast engine at every layer on {n} images"
            );
            checked = Some(n);
        }
        let mut rows = None;
        if a.compare {
            let data =
                crate::cmd_quantize_model::load_data(&qm.config_toml, a.data_dir.clone(), None)?;
            let bs: Vec<_> = batches(&data.test, &data.norm, a.batch, Some(a.batch))?
                .into_iter()
                .map(|(x, _)| x)
                .collect();
            let r = layer_errors(&qm, &bs)?;
            println!(
                "layer by layer against the float model (SQNR dB, first {} test images):",
                a.batch
            );
            print!("{}", format_table(&r));
            match first_jump(&r, a.jump_db) {
                Some((l, d)) => println!(
                    "first layer whose error jumps by >= {} dB: {} ({d:.1} dB)",
                    a.jump_db, l.layer
                ),
                None => println!("no layer's error jumps by >= {} dB", a.jump_db),
            }
            rows = Some(r);
        }
        if let Some(p) = &a.json {
            let j = serde_json::json!({
                "model": a.model.display().to_string(), "threads": threads, "batch": a.batch,
                "kernels": format!("{:?}", Isa::detect()),
                "lowbit_kernels": lowbit.then(|| format!("{:?}", lowprec_kernels::lowbit::BitIsa::detect())),
                "integer": q, "fp32": f, "reference_checked_images": checked, "layers": rows,
            });
            crate::util::write_atomic(p, serde_json::to_string_pretty(&j)?.as_bytes())
                .with_context(|| format!("writing {}", p.display()))?;
        }
        Ok(())
    })?
}
