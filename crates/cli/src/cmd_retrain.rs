//! `lowprec retrain`: fine-tunes a quantised model with its formats (bit-true FPGA BFP, or
//! paper 001's ternary / binary / k-bit with the model file's clips) in the forward pass (straight-through estimator: the layers quantise weights and activations in
//! forward and update FP32 master weights), on the training loop and checkpoints of
//! `lowprec train` (resumable, bit-reproducible), then writes the re-quantised model file.

use anyhow::{bail, Context, Result};
use clap::Args;
use lowprec_formats::NumberFormat;
use lowprec_infer::ptq::quantize_like;
use lowprec_infer::QuantizedModel;
use lowprec_kernels::CpuBackend;
use lowprec_nn::Precision;
use lowprec_train::trainer::RunOptions;
use lowprec_train::{Checkpoint, TrainConfig, Trainer};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Args, Debug, Clone)]
pub struct RetrainArgs {
    /// A model file written by `lowprec quantize-model`.
    pub model: PathBuf,
    #[arg(long)]
    pub epochs: usize,
    /// Output directory (checkpoint.safetensors, metrics.jsonl, model.lpq, retrain.json).
    #[arg(long)]
    pub out: PathBuf,
    /// Learning rate (default: a tenth of the network's own).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Weights first (the first half of the epochs, activations in fp32), then both.
    #[arg(long)]
    pub staged: bool,
    /// Continue from OUT's checkpoints.
    #[arg(long)]
    pub resume: bool,
    /// Replace a retraining already in OUT.
    #[arg(long)]
    pub overwrite: bool,
    #[arg(long)]
    pub batch: Option<usize>,
    /// Retrain on N training images spread over the set (a CPU budget).
    #[arg(long)]
    pub train_subset: Option<usize>,
    /// Evaluate (each epoch and at the end) on N test images spread over the set.
    #[arg(long)]
    pub test_subset: Option<usize>,
    #[arg(long)]
    pub threads: Option<usize>,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[arg(long)]
    pub quiet: bool,
}

/// A checkpoint at epoch 0 holding `qm`'s FP32 weights and buffers, zero momentum.
fn start_checkpoint(qm: &QuantizedModel, cfg: &TrainConfig) -> Checkpoint {
    let mut tensors = BTreeMap::new();
    for (k, (s, v)) in &qm.tensors {
        tensors.insert(k.clone(), (s.clone(), v.clone()));
        if let Some(p) = k.strip_prefix("param/") {
            tensors.insert(format!("momentum/{p}"), (s.clone(), vec![0.0; v.len()]));
        }
    }
    Checkpoint {
        epoch: 0,
        step: 0,
        config_toml: cfg.to_toml(),
        tensors,
        swa_n: 0,
        extra: BTreeMap::new(),
    }
}

/// One stage: `epochs` epochs under `precision` in `dir`, starting from `start`'s weights
/// (or from `dir`'s own checkpoint when resuming). Returns the final checkpoint.
fn stage(
    a: &RetrainArgs,
    mut cfg: TrainConfig,
    precision: &str,
    epochs: usize,
    start: &Checkpoint,
    dir: &Path,
    threads: usize,
    layer_plan: &[(String, String)],
) -> Result<Checkpoint> {
    cfg.precision = precision.parse::<Precision>()?;
    cfg.train.epochs = epochs;
    let own = dir.join("checkpoint.safetensors");
    let resume = a.resume && own.exists();
    let opts = RunOptions {
        out_dir: Some(dir.to_path_buf()),
        resume_from: resume.then(|| own.clone()),
        data_dir: a.data_dir.clone(),
        backend: Arc::new(CpuBackend),
        threads,
        progress: !a.quiet,
        stop_after: None,
        verbose: true,
        overwrite: a.overwrite,
        allow_config_change: false,
    };
    let start = start.clone();
    let layer_plan = layer_plan.to_vec();
    crate::util::with_threads(threads, move || -> Result<()> {
        let mut t = Trainer::new(cfg, opts)?;
        // The per-layer plan: each conv/linear layer trains in the model file's formats for it
        // (fp32 layers in floats, fitted clips per layer); the plan is not in the checkpoint,
        // so a resumed run sets it again, the same way.
        for (name, p) in &layer_plan {
            let i = t
                .model
                .layer_index(name)
                .with_context(|| format!("layer {name} of the model file is not in the network"))?;
            t.plan.set_layer(i, p.parse::<Precision>()?);
        }
        if !resume {
            // a stage starts at its epoch 0 from the weights (and momentum) it is given
            let mut ck = start;
            ck.epoch = 0;
            ck.step = 0;
            ck.extra.clear();
            ck.config_toml = t.cfg.to_toml();
            t.restore(&ck)?;
        }
        eprintln!(
            "retraining {} epochs, precision {}",
            t.cfg.train.epochs, t.plan
        );
        t.run()?;
        Ok(())
    })??;
    Checkpoint::load(&own).with_context(|| format!("loading {}", own.display()))
}

pub fn run(a: &RetrainArgs) -> Result<()> {
    let threads = crate::util::threads_or_default(a.threads)?;
    if a.epochs == 0 {
        bail!("--epochs must be at least 1");
    }
    let qm = QuantizedModel::load(&a.model)?;
    let get = |k: &str| {
        qm.extra
            .get(k)
            .cloned()
            .with_context(|| format!("{}: metadata `{k}` missing", a.model.display()))
    };
    let (w, acts) = (get("weights")?, get("acts")?);
    let first_last_fp32 = get("first_last")? == "fp32";
    let mut cfg = TrainConfig::from_toml(&qm.config_toml, "the model's config")?;
    cfg.swa = None;
    cfg.train.lr = a.lr.unwrap_or(cfg.train.lr * 0.1);
    if let Some(b) = a.batch {
        cfg.train.batch = b;
    }
    if let Some(n) = a.train_subset {
        cfg.data.train_subset = n;
    }
    if let Some(n) = a.test_subset {
        cfg.data.test_subset = n;
    }
    // per layer: its formats as a policy (weights only in a staged run's first stage)
    let plan = |acts_too: bool| -> Vec<(String, String)> {
        qm.layers
            .iter()
            .map(|l| {
                let p = if l.weights.is_f32() && l.acts.is_f32() {
                    "fp32".to_string()
                } else if acts_too {
                    format!("fp32,weights={},acts={}", l.weights, l.acts)
                } else {
                    format!("fp32,weights={}", l.weights)
                };
                (l.name.clone(), p)
            })
            .collect()
    };
    // the base policy: the model's formats, unless a layer's differ (fitted clips)
    let uniform = acts
        .parse::<NumberFormat>()
        .is_ok_and(|a| qm.layers.iter().all(|l| l.acts.is_f32() || l.acts == a));
    let both = if uniform {
        format!("fp32,weights={w},acts={acts}")
    } else {
        format!("fp32,weights={w}")
    };
    let start = start_checkpoint(&qm, &cfg);
    std::fs::create_dir_all(&a.out)?;
    let done = if a.staged && a.epochs >= 2 {
        let e1 = a.epochs / 2;
        let s1 = stage(
            a,
            cfg.clone(),
            &format!("fp32,weights={w}"),
            e1,
            &start,
            &a.out.join("stage1-weights"),
            threads,
            &plan(false),
        )?;
        stage(
            a,
            cfg,
            &both,
            a.epochs - e1,
            &s1,
            &a.out.join("stage2-both"),
            threads,
            &plan(true),
        )?
    } else {
        stage(
            a,
            cfg,
            &both,
            a.epochs,
            &start,
            &a.out,
            threads,
            &plan(true),
        )?
    };
    let tensors: BTreeMap<_, _> = done
        .tensors
        .iter()
        .filter(|(k, _)| k.starts_with("param/") || k.starts_with("buffer/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut extra = qm.extra.clone();
    extra.insert("retrained_from".into(), a.model.display().to_string());
    extra.insert("retrain_epochs".into(), a.epochs.to_string());
    extra.insert("retrain_staged".into(), a.staged.to_string());
    let rq = crate::util::with_threads(threads, || {
        quantize_like(&qm.config_toml, tensors, &qm.layers, extra)
    })??;
    let path = a.out.join("model.lpq");
    rq.save(&path)?;
    eprintln!("wrote {}", path.display());
    let (_, q, f) =
        crate::cmd_infer::infer_model(&path, a.data_dir.clone(), "test", 256, a.test_subset, true)?;
    let j = serde_json::json!({
        "model": path.display().to_string(), "source": a.model.display().to_string(),
        "weights": w, "acts": acts, "first_last_fp32": first_last_fp32, "epochs": a.epochs,
        "staged": a.staged, "train_subset": a.train_subset, "test_subset": a.test_subset, "retrained_accuracy": q.accuracy, "retrained_fp32_master_accuracy": f.map(|f| f.accuracy),
        "integer": q,
    });
    crate::util::write_atomic(
        &a.out.join("retrain.json"),
        serde_json::to_string_pretty(&j)?.as_bytes(),
    )?;
    println!("{}", serde_json::to_string_pretty(&j)?);
    Ok(())
}
