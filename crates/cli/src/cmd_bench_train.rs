//! `lowprec bench train`: milliseconds per training iteration (forward, loss, backward, SGD
//! step) on a fixed random batch, like the PyTorch peer script, for presets x batch sizes x
//! precisions x thread counts; median of repeated iterations, JSON out.

use anyhow::{bail, Result};
use clap::Args;
use lowprec_nn::loss::Target;
use lowprec_nn::{Ctx, Loss, LossKind, Model, Precision, Tensor};
use lowprec_train::optim::Sgd;
use lowprec_train::step::forward_backward;
use lowprec_train::TrainConfig;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct BenchTrainArgs {
    /// Presets or TOML files to time.
    #[arg(default_value = "mnist-logreg")]
    pub configs: Vec<String>,
    #[arg(long, default_value = "128", value_delimiter = ',')]
    pub batch: Vec<usize>,
    #[arg(long, default_value = "fp32,bfp8", value_delimiter = ',')]
    pub precision: Vec<String>,
    #[arg(long, default_value = "1,2", value_delimiter = ',')]
    pub threads: Vec<usize>,
    /// Timed iterations (at least; more while under --min-seconds).
    #[arg(long, default_value_t = 20)]
    pub iters: usize,
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Keep timing until this many seconds have passed.
    #[arg(long, default_value_t = 2.0)]
    pub min_seconds: f64,
    #[arg(long, default_value = "cpu")]
    pub backend: String,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Serialize, Debug)]
pub struct TrainBenchRecord {
    pub config: String,
    pub precision: String,
    pub batch: usize,
    pub threads: usize,
    pub iters: usize,
    pub median_ms: f64,
    pub min_ms: f64,
    pub samples_per_sec: f64,
    pub peak_rss_mb: f64,
    /// The processor and the kernel families that ran (the line under the table).
    pub machine: String,
}

/// Peak resident memory of this process so far (VmHWM), in MB.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn time_one(
    cfg: &TrainConfig,
    precision: &Precision,
    batch: usize,
    a: &BenchTrainArgs,
) -> Result<(Vec<f64>, usize)> {
    let mut model = Model::build(&cfg.model, cfg.seed)?;
    model.check_training_memory(batch)?;
    let backend = crate::cmd_train::backend(&a.backend)?;
    let mut sgd = Sgd::new(
        cfg.train.momentum.max(0.9),
        cfg.train.weight_decay,
        &model.params(),
    );
    let loss = Loss::new(cfg.model.loss);
    let per: usize = cfg.model.input.iter().product();
    let mut shape = vec![batch];
    shape.extend(&cfg.model.input);
    let x: Vec<f32> = (0..batch * per)
        .map(|i| ((i as f32 * 0.754_877_7).fract() - 0.5) * 2.0)
        .collect();
    let classes = *model.output_shape().first().unwrap_or(&1);
    let labels: Vec<u8> = (0..batch)
        .map(|i| (i % classes.clamp(1, 256)) as u8)
        .collect();
    let mut times = Vec::new();
    let t_start = Instant::now();
    let mut it = 0usize;
    while it < a.warmup + a.iters || t_start.elapsed().as_secs_f64() < a.min_seconds {
        // The step takes its batch by value: the copy of the fixed batch is made before the
        // clock starts, as the peer times its step on a batch already in place.
        let input = Tensor::new(x.clone(), shape.clone())?;
        let t0 = Instant::now();
        let mut ctx = Ctx::new(backend.as_ref(), precision, cfg.seed);
        ctx.step = it as u64;
        let target = match cfg.model.loss {
            LossKind::CrossEntropy => Target::Labels(&labels),
            LossKind::Mse => Target::Values(&x),
        };
        forward_backward(&mut model, &mut ctx, &loss, input, target)?;
        let mut params = model.params_mut();
        sgd.step(&mut params, 0.01, precision, cfg.seed, it as u64)?;
        if it >= a.warmup {
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        it += 1;
        if it > 100_000 {
            break;
        }
    }
    Ok((times, it))
}

pub fn run(a: &BenchTrainArgs) -> Result<()> {
    if a.threads.contains(&0) || a.batch.contains(&0) {
        bail!("--threads and --batch must be at least 1");
    }
    let mut records = Vec::new();
    let machine = crate::util::machine_line();
    println!(
        "{:<20} {:<8} {:>6} {:>7} {:>7} {:>11} {:>9} {:>12} {:>9}",
        "config", "prec", "batch", "threads", "iters", "median ms", "min ms", "samples/s", "RSS MB"
    );
    for c in &a.configs {
        let cfg = TrainConfig::load(c)?;
        for &batch in &a.batch {
            for p in &a.precision {
                let precision: Precision = p.parse()?;
                for &threads in &a.threads {
                    let (times, _) = crate::util::with_threads(threads, || {
                        time_one(&cfg, &precision, batch, a)
                    })??;
                    let med = crate::cmd_bench_quantize::median(times.clone());
                    let min = times.iter().copied().fold(f64::INFINITY, f64::min);
                    let r = TrainBenchRecord {
                        config: cfg.name.clone(),
                        precision: precision.name.clone(),
                        batch,
                        threads,
                        iters: times.len(),
                        median_ms: med,
                        min_ms: min,
                        samples_per_sec: batch as f64 / (med / 1e3),
                        peak_rss_mb: peak_rss_mb(),
                        machine: machine.clone(),
                    };
                    println!(
                        "{:<20} {:<8} {:>6} {:>7} {:>7} {:>11.3} {:>9.3} {:>12.0} {:>9.0}",
                        r.config,
                        r.precision,
                        r.batch,
                        r.threads,
                        r.iters,
                        r.median_ms,
                        r.min_ms,
                        r.samples_per_sec,
                        r.peak_rss_mb
                    );
                    records.push(r);
                }
            }
        }
    }
    println!("({machine})");
    if let Some(p) = &a.json {
        crate::util::write_atomic(p, serde_json::to_string_pretty(&records)?.as_bytes())?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}
