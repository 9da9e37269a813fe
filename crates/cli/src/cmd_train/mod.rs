//! `lowprec train`, `lowprec eval`, `lowprec plot`, `lowprec presets`.

use anyhow::{bail, Context, Result};
use clap::Args;
use lowprec_nn::Precision;
use lowprec_train::trainer::RunOptions;
use lowprec_train::{Checkpoint, FinalReport, TrainConfig, Trainer};
use std::path::{Path, PathBuf};

mod dist;

#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    /// A preset name (see `lowprec presets`) or a TOML file. Without it: the main job, the MNIST
    /// logistic-regression row of 002's Table V in fp32, bfp8+SWA and swalp.
    pub config: Option<String>,
    /// Precision policy: fp32, bfp8, swalp, optionally with overrides
    /// (`bfp8,weights=bfp6:tensor:stochastic`).
    #[arg(long)]
    pub precision: Option<String>,
    #[arg(long)]
    pub epochs: Option<usize>,
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long)]
    pub batch: Option<usize>,
    #[arg(long)]
    pub lr: Option<f64>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Output directory (metrics.jsonl, final.json, checkpoint.safetensors).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Resume from a checkpoint (default: OUT/checkpoint.safetensors).
    #[arg(long, num_args = 0..=1, default_missing_value = "", conflicts_with = "overwrite")]
    pub resume: Option<String>,
    /// Replace the results already in OUT (without it, a directory holding a run is refused).
    #[arg(long)]
    pub overwrite: bool,
    /// With --resume: continue even though --precision, --seed, --batch, --lr, --epochs or the
    /// description differ from the checkpoint's (the change is recorded in the checkpoint).
    #[arg(long, requires = "resume")]
    pub allow_config_change: bool,
    /// Data directory (default: $LOWPREC_DATA, else the user's cache directory).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Train on a data set of one's own instead of the preset's: `idx:DIR` (the four IDX files
    /// under their MNIST names, raw or .gz), `npz:FILE` (x_train, y_train, x_test, y_test),
    /// `npy:DIR` (those four as .npy files) or `image-folder:DIR` (DIR/{train,test}/<class>/*).
    #[arg(long, value_name = "KIND:PATH")]
    pub data: Option<String>,
    /// GEMM backend: `cpu`, or `fpga-sim:<board>-<N>x<N>` (e.g. fpga-sim:zcu111-32x32).
    #[arg(long, default_value = "cpu")]
    pub backend: String,
    /// Use only the first N training / test examples (spread over the set).
    #[arg(long)]
    pub train_subset: Option<usize>,
    #[arg(long)]
    pub test_subset: Option<usize>,
    /// A precision-schedule entry as an inline TOML table (repeatable), added to the file's
    /// `[[precision_schedule]]`, e.g. `{ layers = ["fc1"], epochs = [0, 2], width = 4 }`.
    #[arg(long)]
    pub schedule: Vec<String>,
    /// Data-parallel training over the ranks of an MPI job (`mpirun -np N lowprec train PRESET
    /// --distributed`): each rank trains on its shard of every batch and the ranks all-reduce
    /// their gradients. Needs a build with `--features mpi`.
    #[arg(long)]
    pub distributed: bool,
    /// Gradient exchange format of --distributed: fp32, bfp8 (8-bit BFP, a shared exponent per
    /// 32 values), bfp8:tileK or bfp8:tensor.
    #[arg(long, default_value = "fp32", requires = "distributed")]
    pub exchange: String,
    /// With --distributed: a rank whose collective call has not completed after SECS seconds
    /// (another rank died or hangs) prints an error and exits with code 75.
    #[arg(
        long,
        default_value_t = 300,
        value_name = "SECS",
        requires = "distributed"
    )]
    pub collective_timeout: u64,
    /// Tests only: this rank stalls before its first collective.
    #[arg(long, hide = true, requires = "distributed")]
    pub test_stall_rank: Option<usize>,
    /// Width multiplier: every conv and linear layer but the classifier gets K times the
    /// outputs (WRPN's widening, paper 001).
    #[arg(long, value_name = "K")]
    pub widen: Option<usize>,
    /// Stop after this many epochs of this invocation (a deliberate interruption).
    #[arg(long, hide = true)]
    pub stop_after: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

pub use crate::util::backend;

fn apply_overrides(cfg: &mut TrainConfig, a: &TrainArgs) -> Result<()> {
    if let Some(d) = &a.data {
        cfg.data
            .set_source(d)
            .map_err(|e| anyhow::anyhow!("--data {d}: {e}"))?;
    }
    if let Some(p) = &a.precision {
        cfg.precision = p.parse::<Precision>()?;
    }
    if let Some(e) = a.epochs {
        cfg.train.epochs = e;
    }
    if let Some(k) = a.widen.filter(|&k| k != 1) {
        cfg.model
            .widen(k)
            .map_err(|e| anyhow::anyhow!("--widen {k}: {e}"))?;
        cfg.description = format!("{} (widened {k}x)", cfg.description);
    }
    if let Some(s) = a.seed {
        cfg.seed = s;
    }
    if let Some(b) = a.batch {
        cfg.train.batch = b;
    }
    if let Some(lr) = a.lr {
        cfg.train.lr = lr;
    }
    if let Some(n) = a.train_subset {
        cfg.data.train_subset = n;
    }
    if let Some(n) = a.test_subset {
        cfg.data.test_subset = n;
    }
    for (i, e) in a.schedule.iter().enumerate() {
        let entry = lowprec_train::varprec::ScheduleEntry::parse(e)
            .map_err(|m| anyhow::anyhow!("--schedule #{}: {m}", i + 1))?;
        cfg.precision_schedule.push(entry);
    }
    cfg.validate()
        .map_err(|e| anyhow::anyhow!("after command-line overrides: {e}"))?;
    Ok(())
}

/// The checkpoint `--resume` names (OUT/checkpoint.safetensors without a path).
pub fn resume_path(a: &TrainArgs, out: Option<&Path>) -> Result<Option<PathBuf>> {
    Ok(match &a.resume {
        None => None,
        Some(s) if s.is_empty() => {
            let dir = out.context("--resume without a path needs --out")?;
            Some(dir.join("checkpoint.safetensors"))
        }
        Some(s) => Some(PathBuf::from(s)),
    })
}

/// Runs one training described by `cfg` in a pool of `threads` threads.
pub fn train_one(
    cfg: TrainConfig,
    a: &TrainArgs,
    out: Option<PathBuf>,
    threads: usize,
) -> Result<FinalReport> {
    let resume_from = resume_path(a, out.as_deref())?;
    let opts = RunOptions {
        out_dir: out,
        resume_from,
        data_dir: a.data_dir.clone(),
        backend: backend(&a.backend)?,
        threads,
        progress: !a.quiet,
        stop_after: a.stop_after,
        verbose: true,
        overwrite: a.overwrite,
        allow_config_change: a.allow_config_change,
    };
    crate::util::with_threads(threads, move || -> Result<FinalReport> {
        let mut t = Trainer::new(cfg, opts)?;
        eprintln!(
            "{}: {}\nprecision {}\n{}",
            t.cfg.name,
            t.cfg.description,
            t.cfg.precision,
            t.model.summary()
        );
        Ok(t.run()?)
    })?
}

pub fn run_train(a: &TrainArgs) -> Result<()> {
    let threads = crate::util::threads_or_default(a.threads)?;
    match &a.config {
        Some(c) => {
            let mut cfg = TrainConfig::load(c)?;
            apply_overrides(&mut cfg, a)?;
            if a.distributed {
                return dist::run(cfg, a, threads);
            }
            let r = train_one(cfg, a, a.out.clone(), threads)?;
            println!("{}", serde_json::to_string_pretty(&r)?);
            Ok(())
        }
        None if a.distributed => {
            bail!("--distributed trains one preset or TOML file: name it (e.g. mnist-mlp)")
        }
        None => main_job(a, threads),
    }
}

/// The main job: 002 Table V, MNIST logistic regression, fp32 / bfp8+SWA / swalp.
fn main_job(a: &TrainArgs, threads: usize) -> Result<()> {
    if a.precision.is_some() || a.resume.is_some() {
        bail!("the main job runs fp32, bfp8 and swalp itself; give a preset (mnist-logreg) to choose one or to resume");
    }
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("out/table5-logreg"));
    let paper = [("fp32", 92.6), ("bfp8", 92.7), ("swalp", 92.06)];
    let mut rows = Vec::new();
    for (prec, paper_acc) in paper {
        let mut cfg = TrainConfig::load("mnist-logreg")?;
        let mut args = a.clone();
        args.precision = Some(prec.to_string());
        apply_overrides(&mut cfg, &args)?;
        eprintln!("=== MNIST logistic regression, {prec} ===");
        let r = train_one(cfg, &args, Some(out.join(prec)), threads)?;
        rows.push((prec, paper_acc, r));
    }
    println!("\n002 Table V, MNIST logistic regression (test accuracy, %):");
    println!(
        "{:<8} {:>8} {:>10} {:>10} {:>9} {:>10}",
        "policy", "paper", "lowprec", "SWA", "epochs", "s/iter"
    );
    let mut json = Vec::new();
    for (prec, paper_acc, r) in &rows {
        let final_acc = r.swa_test_acc.unwrap_or(r.test_acc) * 100.0;
        println!(
            "{:<8} {:>8.2} {:>10.2} {:>10} {:>9} {:>10.6}",
            prec,
            paper_acc,
            r.test_acc * 100.0,
            r.swa_test_acc
                .map(|s| format!("{:.2}", s * 100.0))
                .unwrap_or_else(|| "-".into()),
            r.epochs,
            r.seconds_per_iteration
        );
        json.push(serde_json::json!({
            "policy": prec, "paper_acc": paper_acc, "test_acc": r.test_acc,
            "swa_test_acc": r.swa_test_acc, "final_acc_percent": final_acc, "report": r,
        }));
    }
    let p = out.join("table5.json");
    crate::util::write_atomic(&p, serde_json::to_string_pretty(&json)?.as_bytes())?;
    let metrics: Vec<PathBuf> = rows
        .iter()
        .map(|(p, _, _)| out.join(p).join("metrics.jsonl"))
        .collect();
    let png = out.join("accuracy.png");
    crate::plot::plot_accuracy(&metrics, &png, "MNIST logistic regression: test accuracy")?;
    eprintln!("wrote {} and {}", p.display(), png.display());
    Ok(())
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A checkpoint written by `lowprec train`.
    pub checkpoint: PathBuf,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Evaluate on another data set than the one trained on (`KIND:PATH`, as for train).
    #[arg(long, value_name = "KIND:PATH")]
    pub data: Option<String>,
    #[arg(long)]
    pub threads: Option<usize>,
    #[arg(long, default_value = "cpu")]
    pub backend: String,
}

pub fn run_eval(a: &EvalArgs) -> Result<()> {
    if lowprec_infer::QuantizedModel::is_model_file(&a.checkpoint) {
        let threads = crate::util::threads_or_default(a.threads)?;
        let (qm, q, _) = crate::util::with_threads(threads, || {
            crate::cmd_infer::infer_model(
                &a.checkpoint,
                a.data_dir.clone(),
                "test",
                256,
                None,
                false,
            )
        })??;
        let j = serde_json::json!({
            "model": a.checkpoint.display().to_string(), "engine": "integer (FPGA BFP)",
            "formats": qm.layers, "test_acc": q.accuracy, "images": q.images,
        });
        println!("{}", serde_json::to_string_pretty(&j)?);
        return Ok(());
    }
    let ck = Checkpoint::load(&a.checkpoint)?;
    let mut cfg = TrainConfig::from_toml(
        &ck.config_toml,
        &format!("config stored in {}", a.checkpoint.display()),
    )?;
    if let Some(d) = &a.data {
        cfg.data
            .set_source(d)
            .map_err(|e| anyhow::anyhow!("--data {d}: {e}"))?;
    }
    let threads = crate::util::threads_or_default(a.threads)?;
    let opts = RunOptions {
        out_dir: None,
        resume_from: Some(a.checkpoint.clone()),
        data_dir: a.data_dir.clone(),
        backend: backend(&a.backend)?,
        threads,
        progress: false,
        stop_after: None,
        verbose: false,
        overwrite: false,
        allow_config_change: false,
    };
    let res = crate::util::with_threads(threads, move || -> Result<serde_json::Value> {
        let mut t = Trainer::new(cfg, opts)?;
        let (loss, acc) = t.evaluate()?;
        let swa = if t.swa.n > 0 {
            Some(t.evaluate_swa()?)
        } else {
            None
        };
        Ok(serde_json::json!({
            "checkpoint": a.checkpoint.display().to_string(),
            "name": t.cfg.name, "precision": t.cfg.precision.name, "epoch": t.epoch, "step": t.step,
            "test_loss": loss, "test_acc": acc,
            "swa_test_loss": swa.map(|s| s.0), "swa_test_acc": swa.map(|s| s.1), "swa_models": t.swa.n,
        }))
    })??;
    println!("{}", serde_json::to_string_pretty(&res)?);
    Ok(())
}

#[derive(Args, Debug)]
pub struct PlotArgs {
    /// metrics.jsonl files written by `lowprec train` (one curve per file, SWA curves too).
    #[arg(required = true)]
    pub metrics: Vec<PathBuf>,
    #[arg(long, short, default_value = "accuracy.png")]
    pub out: PathBuf,
    #[arg(long, default_value = "Test accuracy")]
    pub title: String,
}

pub fn run_plot(a: &PlotArgs) -> Result<()> {
    crate::plot::plot_accuracy(&a.metrics, &a.out, &a.title)?;
    eprintln!("wrote {}", a.out.display());
    Ok(())
}

#[derive(Args, Debug)]
pub struct PresetsArgs {
    /// Print this built-in network's description (a TOML `model` table's contents).
    #[arg(long)]
    pub network: Option<String>,
}

pub fn run_presets(a: &PresetsArgs) -> Result<()> {
    if let Some(n) = &a.network {
        print!("{}", lowprec_nn::zoo::text(n).map_err(anyhow::Error::msg)?);
        return Ok(());
    }
    println!("presets (lowprec train NAME):");
    for (name, text) in lowprec_train::PRESETS {
        let cfg = TrainConfig::from_toml(text, name)?;
        println!("  {name:<24} {}", cfg.description);
    }
    println!("networks (model = \"NAME\" in a TOML; lowprec presets --network NAME prints one):");
    for (name, _) in lowprec_nn::zoo::NETWORKS {
        let spec = lowprec_nn::zoo::get(name).map_err(anyhow::Error::msg)?;
        println!(
            "  {name:<24} input {:?}, {} layers",
            spec.input,
            spec.layers.len()
        );
    }
    Ok(())
}
