//! `lowprec fast`: paper 004's comparison. Trains one preset four times (fp32, fixed bfp8,
//! fixed g16m4, FAST's adaptive precision) with the same seed and schedule, projects each run's
//! accelerator time on the FAST PE array (lowprec_hw::fast) from the widths every GEMM used at
//! every iteration, and writes `fast.json`, `precision.jsonl` (FAST's decisions) and `fast.png`.
//! The test set is evaluated every `--eval-every` iterations, so time to target is read at
//! iteration granularity; both timings of the array (per-tile, overlapped) are reported.

use anyhow::{bail, Context, Result};
use clap::Args;
use lowprec_formats::NumberFormat;
use lowprec_hw::fast::{FastDesign, OperandWidths, Timing, TrainingGemms, FP32_WIDTH};
use lowprec_nn::{Precision, TensorKind};
use lowprec_train::trainer::RunOptions;
use lowprec_train::varprec::{Decision, FastConfig, GemmLayer, G16E8, G16M4};
use lowprec_train::{EpochMetrics, StepEval, TrainConfig, Trainer};
use plotters::prelude::*;
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Args, Debug, Clone)]
pub struct FastArgs {
    /// A preset name or a TOML file (e.g. mnist-mlp, lenet5, preresnet20-cifar-short).
    pub config: String,
    /// Output directory (fast.json, precision.jsonl, fast.png, one run directory per policy).
    #[arg(long)]
    pub out: PathBuf,
    /// Shorten every run to N epochs (a quick look).
    #[arg(long)]
    pub epochs: Option<usize>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// FAST's eps(l, i) = alpha - beta * i / I - beta * l / L.
    #[arg(long, default_value_t = 0.5)]
    pub alpha: f64,
    #[arg(long, default_value_t = 0.3)]
    pub beta: f64,
    /// Iterations between evaluations of r(X).
    #[arg(long, default_value_t = 50)]
    pub every: u64,
    /// Iterations between evaluations of the test accuracy (the whole test set, or
    /// --test-subset's), besides every epoch end: time to target is read at this granularity.
    #[arg(long, default_value_t = 50)]
    pub eval_every: u64,
    /// The widest mantissa FAST raises a tensor to (even, 2..=8; the paper's 2, 4, 6, 8).
    #[arg(long, default_value_t = 8)]
    pub max_width: u32,
    /// The array timing that fast.json's main figures and the plot use (both are reported):
    /// `per-tile` (every output tile fills and drains the array) or `overlapped`
    /// (double-buffered operand loads and outputs; see lowprec_hw::fast).
    #[arg(long, default_value = "per-tile")]
    pub timing: String,
    /// Tensor kinds that adapt, each deciding on its own (comma separated).
    #[arg(long, default_value = "weights,acts,errors")]
    pub kinds: String,
    /// FAST's block structure: `kernel` (bfp8's: one exponent per weight tensor and per
    /// example, 8-bit exponents; every GEMM on the integer kernels), `g16` (g16m4's: groups
    /// of 16 with 4-bit exponents, as in the paper) or `g16e8` (groups of 16 with 8-bit
    /// exponents).
    #[arg(long, default_value = "kernel")]
    pub fast_blocks: String,
    /// Policies to run (comma separated, from fp32, bfp8, g16m4, g16e8, fast).
    #[arg(long, default_value = "fp32,bfp8,g16m4,fast")]
    pub policies: String,
    /// The FAST array: board, rows x cols of fMACs, clock in MHz.
    #[arg(long, default_value = "zcu111")]
    pub board: String,
    #[arg(long, default_value_t = 16)]
    pub rows: usize,
    #[arg(long, default_value_t = 16)]
    pub cols: usize,
    #[arg(long, default_value_t = 200.0)]
    pub clock_mhz: f64,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[arg(long)]
    pub train_subset: Option<usize>,
    #[arg(long)]
    pub test_subset: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Replace the runs already in OUT (without it, a policy directory holding a run is
    /// refused).
    #[arg(long)]
    pub overwrite: bool,
    /// Take each policy's finished run from OUT (its checkpoint holds the history, the
    /// evaluations and FAST's decisions) instead of training it again, e.g. to project it on
    /// another array or timing; a policy without a checkpoint there is trained. The settings
    /// must be those of the run in OUT.
    #[arg(long, conflicts_with = "overwrite")]
    pub reuse: bool,
}

#[derive(Serialize)]
struct EpochPoint {
    epoch: usize,
    test_acc: f64,
    projected_seconds: f64,
}

/// One test evaluation with the projected array time up to it.
#[derive(Serialize, Clone)]
struct EvalPoint {
    /// Iterations done.
    step: u64,
    /// `step` in epochs.
    epoch: f64,
    epoch_end: bool,
    test_acc: f64,
    /// Projected seconds under the selected timing, per-tile and overlapped.
    projected_seconds: f64,
    per_tile_seconds: f64,
    overlapped_seconds: f64,
}

/// A run's figures under one timing.
#[derive(Serialize)]
struct TimingFigures {
    projected_accelerator_seconds: f64,
    time_to_target_seconds: Option<f64>,
}

#[derive(Serialize)]
struct RunSummary {
    policy: String,
    precision: String,
    final_test_accuracy: f64,
    /// Under the selected `timing`.
    projected_accelerator_seconds: f64,
    projected_accelerator_joules: f64,
    /// Projected seconds up to the first evaluation at or above the target (selected timing).
    time_to_target_seconds: Option<f64>,
    /// That evaluation's iteration count and test accuracy.
    target_step: Option<u64>,
    target_step_accuracy: Option<f64>,
    /// Both timings.
    per_tile: TimingFigures,
    overlapped: TimingFigures,
    /// Mean fMAC passes per group product over the run (16 for fixed 8 x 8 bits).
    mean_passes: f64,
    wall_seconds: f64,
    epochs: Vec<EpochPoint>,
    evals: Vec<EvalPoint>,
}

/// Mantissa width of a format on the fMAC array (fp32 as 24-bit significands).
fn width_of(f: &NumberFormat) -> Result<u32> {
    match f {
        NumberFormat::Bfp(b) => Ok(b.wl),
        NumberFormat::F32 => Ok(FP32_WIDTH),
        other => bail!("{other} has no fMAC cost (BFP or fp32 only)"),
    }
}

/// A layer's widths under a policy.
fn widths(p: &Precision) -> Result<OperandWidths> {
    Ok(OperandWidths {
        weights: width_of(&p.weights)?,
        acts: width_of(&p.acts)?,
        errors: width_of(&p.errors)?,
    })
}

/// What one training left for the projection.
struct Trained {
    history: Vec<EpochMetrics>,
    evals: Vec<StepEval>,
    gemm: Vec<GemmLayer>,
    per_epoch: u64,
    batch: usize,
    /// Per GEMM layer, the widths at iteration 0.
    start: Vec<OperandWidths>,
    log: Vec<Decision>,
    wall: f64,
}

fn set_width(w: &mut OperandWidths, k: TensorKind, v: u32) {
    match k {
        TensorKind::Weights => w.weights = v,
        TensorKind::Acts => w.acts = v,
        TensorKind::Errors => w.errors = v,
        _ => {}
    }
}

/// The projection of one run: cumulative seconds after every iteration under both timings
/// (`[per-tile, overlapped]`, index `s` = after `s` iterations), joules and mean passes.
struct Projection {
    seconds: [Vec<f64>; 2],
    joules: f64,
    mean_passes: f64,
}

impl Projection {
    fn at(&self, timing: Timing, step: u64) -> f64 {
        let v = &self.seconds[timing as usize];
        v[(step as usize).min(v.len() - 1)]
    }
}

fn project(t: &Trained, design: &FastDesign) -> Projection {
    let gemms: Vec<TrainingGemms> = t
        .gemm
        .iter()
        .map(|g| TrainingGemms::new(g.out, g.k, g.positions, t.batch, g.first))
        .collect();
    let mut w = t.start.clone();
    let mut log: Vec<&Decision> = t.log.iter().collect();
    log.sort_by_key(|d| d.iteration);
    let mut next = 0;
    let step_cost = |w: &[OperandWidths], timing: Timing| {
        let mut c = lowprec_hw::fast::FastCost::default();
        for (g, wl) in gemms.iter().zip(w) {
            c += design.layer_cost_timed(g, *wl, timing);
        }
        c
    };
    let costs = |w: &[OperandWidths]| Timing::ALL.map(|tm| step_cost(w, tm));
    let mut cost = costs(&w);
    // at 2 x 2 bits every group product is one pass
    let groups_per_step = step_cost(
        &vec![
            OperandWidths {
                weights: 2,
                acts: 2,
                errors: 2
            };
            w.len()
        ],
        Timing::PerTile,
    )
    .passes;
    let steps = t.per_epoch * t.history.len() as u64;
    let mut cycles = [0u64; 2];
    let mut seconds = [vec![0.0], vec![0.0]];
    let (mut passes, mut groups) = (0u64, 0u64);
    for s in 0..steps {
        let mut changed = false;
        while next < log.len() && log[next].iteration <= s {
            let d = log[next];
            if let Some(l) = t.gemm.iter().position(|g| g.name == d.layer) {
                set_width(&mut w[l], d.kind, d.width);
                changed = true;
            }
            next += 1;
        }
        if changed {
            cost = costs(&w);
        }
        for ((cy, sec), c) in cycles.iter_mut().zip(&mut seconds).zip(&cost) {
            *cy += c.cycles;
            sec.push(design.seconds(*cy));
        }
        passes += cost[0].passes;
        groups += groups_per_step;
    }
    Projection {
        seconds,
        joules: passes as f64 * lowprec_hw::fast::PJ_PER_PASS * 1e-12,
        mean_passes: passes as f64 / groups.max(1) as f64,
    }
}

fn train(cfg: TrainConfig, a: &FastArgs, out: PathBuf, threads: usize) -> Result<Trained> {
    let ck = out.join("checkpoint.safetensors");
    let reused = a.reuse && ck.is_file();
    let opts = RunOptions {
        out_dir: Some(out),
        resume_from: reused.then_some(ck),
        data_dir: a.data_dir.clone(),
        backend: crate::cmd_train::backend("cpu")?,
        threads,
        progress: !a.quiet,
        stop_after: None,
        verbose: true,
        overwrite: a.overwrite,
        allow_config_change: false,
    };
    let t0 = std::time::Instant::now();
    let eval_every = a.eval_every;
    crate::util::with_threads(threads, move || -> Result<Trained> {
        let mut t = Trainer::new(cfg, opts)?;
        t.eval_every = Some(eval_every);
        if reused && t.epoch < t.cfg.train.epochs {
            bail!(
                "--reuse: the run in {} stopped at epoch {} of {}",
                a.out.display(),
                t.epoch,
                t.cfg.train.epochs
            );
        }
        if reused
            && t.step_evals
                .iter()
                .any(|e| !e.epoch_end && !e.step.is_multiple_of(eval_every))
        {
            bail!(
                "--reuse: the run was evaluated at other iterations than --eval-every {eval_every}"
            );
        }
        t.run()?;
        let plan0 = t.control.plan_at(0);
        let start = t
            .control
            .gemm
            .iter()
            .map(|g| widths(plan0.layer(g.node)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Trained {
            history: t.history.clone(),
            evals: t.step_evals.clone(),
            gemm: t.control.gemm.clone(),
            per_epoch: t.control.per_epoch,
            batch: t.cfg.train.batch,
            start,
            log: t
                .control
                .fast
                .as_ref()
                .map(|(_, s)| s.log.clone())
                .unwrap_or_default(),
            wall: if reused {
                t.history.iter().map(|m| m.seconds).sum()
            } else {
                t0.elapsed().as_secs_f64()
            },
        })
    })?
}

/// The command's options, checked before any training starts.
struct Checked {
    threads: usize,
    design: FastDesign,
    timing: Timing,
    fast: FastConfig,
    fast_base: Precision,
    policies: Vec<String>,
}

fn check(a: &FastArgs) -> Result<Checked> {
    let threads = match a.threads {
        Some(0) => bail!("--threads must be at least 1"),
        Some(t) => t,
        None => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
    };
    if a.eval_every == 0 {
        bail!("--eval-every 0: the test accuracy needs evaluating every N >= 1 iterations");
    }
    if a.epochs == Some(0) {
        bail!("--epochs 0: a run needs at least one epoch");
    }
    let timing: Timing = a
        .timing
        .parse()
        .map_err(|_| anyhow::anyhow!("--timing `{}`: per-tile or overlapped", a.timing))?;
    let design = FastDesign::new(&a.board, a.rows, a.cols, a.clock_mhz)
        .map_err(|e| anyhow::anyhow!("--board/--rows/--cols/--clock-mhz: {e}"))?;
    let kinds: Vec<TensorKind> = a
        .kinds
        .split(',')
        .map(|k| {
            k.trim()
                .parse::<TensorKind>()
                .map_err(|e| anyhow::anyhow!("--kinds `{}`: {e}", a.kinds))
        })
        .collect::<Result<_>>()?;
    if !a.max_width.is_multiple_of(2) || !(2..=8).contains(&a.max_width) {
        bail!(
            "--max-width {}: an even mantissa width of 2..=8 bits (the fMAC's 2-bit chunks, the int8 kernels)",
            a.max_width
        );
    }
    let fast = FastConfig {
        alpha: a.alpha,
        beta: a.beta,
        every: a.every,
        kinds,
        max_width: a.max_width,
        ..FastConfig::default()
    };
    fast.validate()
        .map_err(|e| anyhow::anyhow!("FAST options: {e}"))?;
    let policies: Vec<String> = a
        .policies
        .split(',')
        .map(|p| p.trim().to_string())
        .collect();
    for (i, p) in policies.iter().enumerate() {
        if !["fp32", "bfp8", "g16m4", "g16e8", "fast"].contains(&p.as_str()) {
            bail!("--policies: unknown policy `{p}` (fp32, bfp8, g16m4, g16e8, fast)");
        }
        if policies[..i].contains(p) {
            bail!("--policies: `{p}` given twice");
        }
    }
    let fast_base: Precision = match a.fast_blocks.as_str() {
        "kernel" => Precision::bfp8(),
        "g16" => G16M4.parse()?,
        "g16e8" => G16E8.parse()?,
        b => bail!("--fast-blocks `{b}`: kernel, g16 or g16e8"),
    };
    if !policies.iter().any(|p| p == "bfp8") {
        bail!("--policies must include bfp8 (the target accuracy and the speedup are bfp8's)");
    }
    Ok(Checked {
        threads,
        design,
        timing,
        fast,
        fast_base,
        policies,
    })
}

/// The first evaluation at or above `target`: (step, accuracy).
fn first_at_target(evals: &[StepEval], target: f64) -> Option<(u64, f64)> {
    evals
        .iter()
        .find(|e| e.test_acc >= target)
        .map(|e| (e.step, e.test_acc))
}

pub fn run(a: &FastArgs) -> Result<()> {
    let Checked {
        threads,
        design,
        timing,
        fast,
        fast_base,
        policies,
    } = check(a)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut trained = Vec::new();
    for p in &policies {
        let p = p.as_str();
        let mut cfg = TrainConfig::load(&a.config)?;
        if let Some(e) = a.epochs {
            cfg.train.epochs = e;
        }
        if let Some(s) = a.seed {
            cfg.seed = s;
        }
        if let Some(n) = a.train_subset {
            cfg.data.train_subset = n;
        }
        if let Some(n) = a.test_subset {
            cfg.data.test_subset = n;
        }
        cfg.precision = match p {
            "fp32" => Precision::fp32(),
            "g16m4" => G16M4.parse()?,
            "g16e8" => G16E8.parse()?,
            "fast" => fast_base.clone(),
            _ => Precision::bfp8(),
        };
        cfg.fast = (p == "fast").then(|| fast.clone());
        cfg.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
        eprintln!("=== {}: {p} ({}) ===", cfg.name, cfg.precision);
        let t = train(cfg, a, a.out.join(p), threads)?;
        trained.push((p.to_string(), t));
    }
    let bfp8_final = trained
        .iter()
        .find(|(p, _)| p == "bfp8")
        .and_then(|(_, t)| t.history.last())
        .map(|m| m.test_acc)
        .context("the bfp8 run has no epochs")?;
    let target = bfp8_final - 0.005;
    let mut runs = Vec::new();
    for (p, t) in &trained {
        let pr = project(t, &design);
        let hit = first_at_target(&t.evals, target);
        let figures = |tm: Timing| TimingFigures {
            projected_accelerator_seconds: pr.at(tm, t.per_epoch * t.history.len() as u64),
            time_to_target_seconds: hit.map(|(s, _)| pr.at(tm, s)),
        };
        let (per_tile, overlapped) = (figures(Timing::PerTile), figures(Timing::Overlapped));
        let main = if timing == Timing::PerTile {
            &per_tile
        } else {
            &overlapped
        };
        runs.push(RunSummary {
            policy: p.clone(),
            precision: if p == "fast" {
                format!(
                    "FAST: {} blocks, widths {}..{} adapting ({})",
                    a.fast_blocks, fast.start_width, fast.max_width, a.kinds
                )
            } else {
                t.history
                    .first()
                    .map(|m| m.precision.clone())
                    .unwrap_or_default()
            },
            final_test_accuracy: t.history.last().map_or(f64::NAN, |m| m.test_acc),
            projected_accelerator_seconds: main.projected_accelerator_seconds,
            projected_accelerator_joules: pr.joules,
            time_to_target_seconds: main.time_to_target_seconds,
            target_step: hit.map(|h| h.0),
            target_step_accuracy: hit.map(|h| h.1),
            mean_passes: pr.mean_passes,
            wall_seconds: t.wall,
            epochs: t
                .history
                .iter()
                .map(|m| EpochPoint {
                    epoch: m.epoch + 1,
                    test_acc: m.test_acc,
                    projected_seconds: pr.at(timing, m.step),
                })
                .collect(),
            evals: t
                .evals
                .iter()
                .map(|e| EvalPoint {
                    step: e.step,
                    epoch: e.step as f64 / t.per_epoch.max(1) as f64,
                    epoch_end: e.epoch_end,
                    test_acc: e.test_acc,
                    projected_seconds: pr.at(timing, e.step),
                    per_tile_seconds: pr.at(Timing::PerTile, e.step),
                    overlapped_seconds: pr.at(Timing::Overlapped, e.step),
                })
                .collect(),
            per_tile,
            overlapped,
        });
    }
    let speedup_of = |get: &dyn Fn(&RunSummary) -> Option<f64>| {
        let ttt = |name: &str| runs.iter().find(|r| r.policy == name).and_then(get);
        match (ttt("bfp8"), ttt("fast")) {
            (Some(b), Some(f)) if f > 0.0 => Some(b / f),
            _ => None,
        }
    };
    let speedup = speedup_of(&|r| r.time_to_target_seconds);
    let speedup_per_tile = speedup_of(&|r| r.per_tile.time_to_target_seconds);
    let speedup_overlapped = speedup_of(&|r| r.overlapped.time_to_target_seconds);
    let fast_run = trained.iter().find(|(p, _)| p == "fast").map(|(_, t)| t);
    // precision.jsonl: one line per FAST decision
    let mut lines = String::new();
    if let Some(t) = fast_run {
        for d in &t.log {
            lines += &serde_json::to_string(d)?;
            lines.push('\n');
        }
    }
    crate::util::write_atomic(&a.out.join("precision.jsonl"), lines.as_bytes())?;
    let json = serde_json::json!({
        "config": a.config,
        "epochs": trained.first().map(|(_, t)| t.history.len()),
        "iterations_per_epoch": trained.first().map(|(_, t)| t.per_epoch),
        "threads": threads,
        "design": { "spec": design.spec(), "resources": design.resources()? },
        "timing": timing,
        "eval_every": a.eval_every,
        "eval_set": match a.test_subset {
            Some(n) => format!("the first {n} test examples"),
            None => "the whole test set".to_string(),
        },
        "fast": fast,
        "g16m4": G16M4,
        "g16e8": G16E8,
        "fast_blocks": a.fast_blocks,
        "target_accuracy": target,
        "speedup_vs_bfp8": speedup,
        "speedup_vs_bfp8_per_tile": speedup_per_tile,
        "speedup_vs_bfp8_overlapped": speedup_overlapped,
        "runs": runs,
    });
    crate::util::write_atomic(
        &a.out.join("fast.json"),
        serde_json::to_string_pretty(&json)?.as_bytes(),
    )?;
    plot(
        &a.out.join("fast.png"),
        &a.config,
        &runs,
        target,
        timing,
        fast_run,
    )?;
    println!(
        "{:<7} {:>9} {:>11} {:>11} {:>16} {:>16} {:>8}",
        "policy", "test acc", "accel s", "accel s", "to target (s)", "to target (s)", "mean"
    );
    println!(
        "{:<7} {:>9} {:>11} {:>11} {:>16} {:>16} {:>8}",
        "", "", "per-tile", "overlapped", "per-tile", "overlapped", "passes"
    );
    let show = |v: Option<f64>| v.map_or_else(|| "not reached".into(), |s| format!("{s:.3}"));
    for r in &runs {
        println!(
            "{:<7} {:>8.2}% {:>11.3} {:>11.3} {:>16} {:>16} {:>8.2}{}",
            r.policy,
            100.0 * r.final_test_accuracy,
            r.per_tile.projected_accelerator_seconds,
            r.overlapped.projected_accelerator_seconds,
            show(r.per_tile.time_to_target_seconds),
            show(r.overlapped.time_to_target_seconds),
            r.mean_passes,
            r.target_step
                .map(|s| format!("  (target at iteration {s})"))
                .unwrap_or_default()
        );
    }
    let sx = |v: Option<f64>| v.map_or_else(|| "n/a".into(), |s| format!("{s:.2}x"));
    println!(
        "target {:.2}% (bfp8 - 0.5 points); FAST speedup to target vs bfp8: {} per-tile, {} overlapped{}",
        100.0 * target,
        sx(speedup_per_tile),
        sx(speedup_overlapped),
        if speedup.is_none() {
            " (a run did not reach the target)"
        } else {
            ""
        }
    );
    eprintln!(
        "wrote {}, {} and {}",
        a.out.join("fast.json").display(),
        a.out.join("precision.jsonl").display(),
        a.out.join("fast.png").display()
    );
    Ok(())
}

/// Accuracy against epochs and against projected accelerator time, and FAST's widths by layer
/// and iteration (weights, activations, errors).
fn plot(
    out: &Path,
    title: &str,
    runs: &[RunSummary],
    target: f64,
    timing: Timing,
    fast: Option<&Trained>,
) -> Result<()> {
    crate::plot::register_font()?;
    let root = BitMapBackend::new(out, (1500, 1000)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(
        &format!("{title}: FAST vs fixed precision"),
        ("sans-serif", 26),
    )?;
    let (top, bottom) = root.split_vertically(520);
    let (left, right) = top.split_horizontally(750);
    let accs: Vec<f64> = runs
        .iter()
        .flat_map(|r| r.evals.iter().map(|e| 100.0 * e.test_acc))
        .filter(|a| a.is_finite())
        .collect();
    let lo = accs.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = accs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    // the early evaluations can sit far below the rest: show the last 15 points or so (curves
    // leave the view at its floor rather than being drawn along it)
    let lo = lo.max(100.0 * target - 15.0);
    let (y0, y1) = ((lo - 0.5).max(0.0), (hi + 0.3).min(100.0));
    let max_epoch = runs
        .iter()
        .map(|r| r.epochs.len())
        .max()
        .unwrap_or(1)
        .max(2);
    // the time axis starts where the first curve enters the view, not at the first evaluation
    let t_min = runs
        .iter()
        .flat_map(|r| {
            let pts: Vec<(f64, f64)> = r
                .evals
                .iter()
                .map(|e| (e.projected_seconds, 100.0 * e.test_acc))
                .collect();
            crate::plot::clip_below(&pts, y0, true)
                .into_iter()
                .flatten()
                .map(|p| p.0)
                .collect::<Vec<_>>()
        })
        .filter(|t| *t > 0.0)
        .fold(f64::INFINITY, f64::min);
    let t_min = if t_min.is_finite() { t_min } else { 1e-9 };
    let t_max = runs
        .iter()
        .map(|r| r.projected_accelerator_seconds)
        .fold(0.0, f64::max)
        .max(t_min * 1.01);
    {
        let mut c = ChartBuilder::on(&left)
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .caption("test accuracy vs epoch", ("sans-serif", 18))
            .build_cartesian_2d(0f64..max_epoch as f64, y0..y1)?;
        c.configure_mesh()
            .x_desc("epoch")
            .y_desc("test accuracy (%)")
            .x_label_formatter(&|x| crate::plot::tick_label(*x))
            .y_label_formatter(&|y| crate::plot::tick_label(*y))
            .draw()?;
        for (i, r) in runs.iter().enumerate() {
            let col = Palette99::pick(i).to_rgba();
            let pts: Vec<(f64, f64)> = r
                .evals
                .iter()
                .map(|e| (e.epoch, 100.0 * e.test_acc))
                .collect();
            c.draw_series(LineSeries::new(Vec::new(), col.stroke_width(2)))?
                .label(r.policy.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], col.stroke_width(2))
                });
            for piece in crate::plot::clip_below(&pts, y0, false) {
                c.draw_series(LineSeries::new(piece, col.stroke_width(2)))?;
            }
        }
        c.draw_series(LineSeries::new(
            vec![(0.0, 100.0 * target), (max_epoch as f64, 100.0 * target)],
            BLACK.mix(0.4),
        ))?
        .label("target (bfp8 - 0.5)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.4)));
        c.configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()?;
    }
    {
        let mut c = ChartBuilder::on(&right)
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .caption(
                format!("test accuracy vs projected accelerator time ({timing})"),
                ("sans-serif", 18),
            )
            .build_cartesian_2d(
                (t_min * 0.8..t_max * 1.1)
                    .log_scale()
                    .with_key_points(crate::plot::log_ticks(t_min * 0.8, t_max * 1.1, 12)),
                y0..y1,
            )?;
        c.configure_mesh()
            .x_desc("projected FAST-array seconds (log)")
            .y_desc("test accuracy (%)")
            .x_label_formatter(&|x| crate::plot::tick_label(*x))
            .y_label_formatter(&|y| crate::plot::tick_label(*y))
            .draw()?;
        for (i, r) in runs.iter().enumerate() {
            let col = Palette99::pick(i).to_rgba();
            let pts: Vec<(f64, f64)> = r
                .evals
                .iter()
                .map(|e| (e.projected_seconds, 100.0 * e.test_acc))
                .collect();
            for piece in crate::plot::clip_below(&pts, y0, true) {
                c.draw_series(LineSeries::new(piece, col.stroke_width(2)))?;
            }
            c.draw_series(
                pts.into_iter()
                    .filter(|p| p.1 >= y0)
                    .map(|p| Circle::new(p, 2, col.filled())),
            )?;
        }
    }
    let panels = bottom.split_evenly((1, 3));
    let Some(t) = fast else {
        root.present()?;
        return Ok(());
    };
    let nl = t.gemm.len();
    let total = (t.per_epoch * t.history.len() as u64).max(1);
    for (pi, kind) in [TensorKind::Weights, TensorKind::Acts, TensorKind::Errors]
        .into_iter()
        .enumerate()
    {
        let mut c = ChartBuilder::on(&panels[pi])
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(44)
            .caption(
                format!("FAST {kind} width (2 light .. 8 dark)"),
                ("sans-serif", 16),
            )
            .build_cartesian_2d(0f64..total as f64, 0f64..nl as f64)?;
        c.configure_mesh()
            .disable_mesh()
            .x_desc("iteration")
            .y_desc("layer (input at 0)")
            .x_label_formatter(&|x| crate::plot::tick_label(*x))
            .y_label_formatter(&|y| crate::plot::tick_label(*y))
            .draw()?;
        for (l, g) in t.gemm.iter().enumerate() {
            let start = match kind {
                TensorKind::Weights => t.start[l].weights,
                TensorKind::Acts => t.start[l].acts,
                _ => t.start[l].errors,
            };
            let mut seg = vec![(0u64, start)];
            for d in t.log.iter().filter(|d| d.layer == g.name && d.kind == kind) {
                if d.width != seg.last().expect("non-empty").1 {
                    seg.push((d.iteration, d.width));
                }
            }
            for (j, &(from, w)) in seg.iter().enumerate() {
                let to = seg.get(j + 1).map_or(total, |s| s.0);
                let shade = (w.min(8) as f64 / 8.0).clamp(0.0, 1.0);
                let v = (255.0 * (1.0 - 0.85 * shade)) as u8;
                let color = RGBColor(v, v, 255);
                c.draw_series(std::iter::once(Rectangle::new(
                    [(from as f64, l as f64), (to as f64, l as f64 + 1.0)],
                    color.filled(),
                )))?;
            }
        }
    }
    root.present()
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}
