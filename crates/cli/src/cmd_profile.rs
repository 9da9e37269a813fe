//! `lowprec profile <preset> --batch B`: where a training iteration's time goes, per layer and
//! per kind of work (GEMM, quantisation, im2col/col2im, the rest), forward and backward (the
//! shape of 002's Figs. 6 and 7), the time per iteration and the peak resident memory. Runs on
//! random inputs and labels of the preset's shape, so no data set is needed.

use anyhow::{bail, Result};
use clap::Args;
use lowprec_formats::rng::{uniform24, uniform_f32};
use lowprec_formats::StreamKey;
use lowprec_kernels::CpuBackend;
use lowprec_nn::loss::Target;
use lowprec_nn::{Category, Ctx, Loss, Model, Precision, Profile, Tensor};
use lowprec_train::optim::Sgd;
use lowprec_train::step::forward_backward;
use lowprec_train::TrainConfig;
use serde::Serialize;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct ProfileArgs {
    /// A preset name or a training TOML file (its model is profiled).
    pub preset: String,
    /// Examples per iteration.
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Precision policy (default: the preset's).
    #[arg(long)]
    pub precision: Option<String>,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Timed iterations (after `--warmup` untimed ones).
    #[arg(long, default_value_t = 5)]
    pub iters: usize,
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Seed of the weights, the random batch and stochastic rounding.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Serialize, Debug, Default, Clone)]
pub struct PassTimes {
    pub gemm_ms: f64,
    pub quantize_ms: f64,
    pub im2col_ms: f64,
    pub other_ms: f64,
}

impl PassTimes {
    fn total(&self) -> f64 {
        self.gemm_ms + self.quantize_ms + self.im2col_ms + self.other_ms
    }
    fn add(&mut self, o: &PassTimes) {
        self.gemm_ms += o.gemm_ms;
        self.quantize_ms += o.quantize_ms;
        self.im2col_ms += o.im2col_ms;
        self.other_ms += o.other_ms;
    }
    fn slot(&mut self, c: Category) -> &mut f64 {
        match c {
            Category::Gemm => &mut self.gemm_ms,
            Category::Quantize => &mut self.quantize_ms,
            Category::Im2col => &mut self.im2col_ms,
            Category::Other => &mut self.other_ms,
        }
    }
}

#[derive(Serialize, Debug)]
pub struct LayerTimes {
    pub name: String,
    pub describe: String,
    pub output: Vec<usize>,
    pub macs_per_example: u64,
    pub forward: PassTimes,
    pub backward: PassTimes,
}

#[derive(Serialize, Debug)]
pub struct ProfileReport {
    pub model: String,
    pub precision: String,
    pub batch: usize,
    pub threads: usize,
    pub iters: usize,
    /// Wall time per iteration (forward, loss, backward, SGD update), median and mean.
    pub iteration_ms_median: f64,
    pub iteration_ms_mean: f64,
    pub iteration_ms_min: f64,
    /// CPU time (user + system, all threads) per timed iteration: on a shared machine, closer
    /// to the uncontended time than the wall clock (10 ms resolution over all iterations).
    pub cpu_ms_per_iteration: Option<f64>,
    /// SGD update per iteration (mean).
    pub update_ms: f64,
    pub layers: Vec<LayerTimes>,
    pub forward_total: PassTimes,
    pub backward_total: PassTimes,
    /// Bytes the layers keep from one training forward for backward.
    pub saved_bytes: usize,
    /// VmHWM of the process at the end, MB (10^6 bytes).
    pub peak_rss_mb: Option<f64>,
    pub macs_per_example: u64,
}

/// CPU time (user + system, all threads) of this process in seconds, from /proc/self/stat
/// (clock ticks of 1/100 s, Linux's fixed USER_HZ).
pub fn cpu_seconds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// Peak resident set size (VmHWM) in bytes, from /proc/self/status.
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub fn run(args: &ProfileArgs) -> Result<()> {
    if args.batch == 0 || args.iters == 0 {
        bail!("--batch and --iters must be >= 1");
    }
    let report = crate::util::with_threads(args.threads, || profile(args))??;
    print_report(&report);
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        crate::util::write_atomic(path, text.as_bytes())?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

pub fn profile(args: &ProfileArgs) -> Result<ProfileReport> {
    let cfg = TrainConfig::load(&args.preset)?;
    let policy: Precision = match &args.precision {
        Some(p) => p.parse()?,
        None => cfg.precision.clone(),
    };
    let mut model = Model::build(&cfg.model, args.seed)?;
    model.check_training_memory(args.batch)?;
    let classes: usize = model.output_shape().iter().product();
    let mut sgd = Sgd::new(cfg.train.momentum, cfg.train.weight_decay, &model.params());
    let loss = Loss::new(cfg.model.loss);
    let backend = CpuBackend;
    let mut shape = vec![args.batch];
    shape.extend_from_slice(&cfg.model.input);
    let n: usize = shape.iter().product();
    let key = StreamKey::new(args.seed, 0x9f0f);
    let images: Vec<f32> = (0..n as u64)
        .map(|i| uniform_f32(key, i) * 2.0 - 1.0)
        .collect();
    let labels: Vec<u8> = (0..args.batch as u64)
        .map(|i| (uniform24(key.child(1), i) % classes.clamp(1, 256) as u32) as u8)
        .collect();
    let mut profile = Profile::default();
    let (mut iter_ms, mut update_ms) = (Vec::new(), 0.0);
    let mut saved_bytes = 0;
    let mut cpu_start = None;
    for it in 0..args.warmup + args.iters {
        let timed = it >= args.warmup;
        if it == args.warmup {
            cpu_start = cpu_seconds();
        }
        let mut ctx = Ctx::new(&backend, &policy, args.seed);
        ctx.step = it as u64;
        if timed {
            ctx.profile = Some(std::mem::take(&mut profile));
        }
        let t0 = Instant::now();
        let x = Tensor::new(images.clone(), shape.clone())?;
        let lo = forward_backward(&mut model, &mut ctx, &loss, x, Target::Labels(&labels))?;
        saved_bytes = lo.saved_bytes;
        let tu = Instant::now();
        let mut params = model.params_mut();
        sgd.step(&mut params, 0.01, &policy, args.seed, it as u64)?;
        let dt = t0.elapsed();
        if timed {
            iter_ms.push(ms(dt));
            update_ms += ms(tu.elapsed());
            profile = ctx.profile.take().unwrap_or_default();
        }
    }
    let iters = args.iters as f64;
    let cpu_ms_per_iteration = match (cpu_start, cpu_seconds()) {
        (Some(a), Some(b)) => Some((b - a) * 1e3 / iters),
        _ => None,
    };
    let mut layers: Vec<LayerTimes> = model
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let ins: Vec<&[usize]> = n
                .inputs
                .iter()
                .map(|&v| model.shapes[v].as_slice())
                .collect();
            LayerTimes {
                name: n.layer.name().to_string(),
                describe: n.layer.describe(),
                output: model.shapes[i + 1].clone(),
                macs_per_example: n.layer.macs_per_example(&ins),
                forward: PassTimes::default(),
                backward: PassTimes::default(),
            }
        })
        .collect();
    for (&(li, bwd, cat), d) in &profile.times {
        let l = &mut layers[li];
        let pass = if bwd { &mut l.backward } else { &mut l.forward };
        *pass.slot(cat) += ms(*d) / iters;
    }
    let (mut ft, mut bt) = (PassTimes::default(), PassTimes::default());
    for l in &layers {
        ft.add(&l.forward);
        bt.add(&l.backward);
    }
    let mut sorted = iter_ms.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(ProfileReport {
        model: cfg.name.clone(),
        precision: policy.name.clone(),
        batch: args.batch,
        threads: args.threads,
        iters: args.iters,
        iteration_ms_median: sorted[sorted.len() / 2],
        iteration_ms_mean: iter_ms.iter().sum::<f64>() / iters,
        iteration_ms_min: sorted[0],
        cpu_ms_per_iteration,
        update_ms: update_ms / iters,
        layers,
        forward_total: ft,
        backward_total: bt,
        saved_bytes,
        peak_rss_mb: peak_rss_bytes().map(|b| b as f64 / 1e6),
        macs_per_example: model.macs_per_example(),
    })
}

fn print_report(r: &ProfileReport) {
    println!(
        "{} precision={} batch={} threads={} iters={} (ms per iteration, mean over iterations)",
        r.model, r.precision, r.batch, r.threads, r.iters
    );
    println!(
        "{:<14} {:<26} | {:>8} {:>7} {:>7} {:>7} {:>7} | {:>8} {:>7} {:>7} {:>7} {:>7}",
        "layer",
        "",
        "fwd",
        "gemm",
        "quant",
        "im2col",
        "other",
        "bwd",
        "gemm",
        "quant",
        "im2col",
        "other"
    );
    let row = |name: &str, desc: &str, f: &PassTimes, b: &PassTimes| {
        println!(
            "{:<14} {:<26} | {:>8.2} {:>7.2} {:>7.2} {:>7.2} {:>7.2} | {:>8.2} {:>7.2} {:>7.2} {:>7.2} {:>7.2}",
            name,
            desc,
            f.total(),
            f.gemm_ms,
            f.quantize_ms,
            f.im2col_ms,
            f.other_ms,
            b.total(),
            b.gemm_ms,
            b.quantize_ms,
            b.im2col_ms,
            b.other_ms
        )
    };
    for l in &r.layers {
        if l.forward.total() + l.backward.total() > 0.0 {
            let d: String = l.describe.chars().take(26).collect();
            row(&l.name, &d, &l.forward, &l.backward);
        }
    }
    row("total", "", &r.forward_total, &r.backward_total);
    let layers = r.forward_total.total() + r.backward_total.total();
    println!(
        "iteration: median {:.1} ms, mean {:.1} ms, min {:.1} ms; layers {:.1} ms, SGD update {:.1} ms, rest {:.1} ms",
        r.iteration_ms_median,
        r.iteration_ms_mean,
        r.iteration_ms_min,
        layers,
        r.update_ms,
        r.iteration_ms_mean - layers - r.update_ms
    );
    if let Some(c) = r.cpu_ms_per_iteration {
        println!("CPU time (user + system, all threads): {c:.1} ms per iteration");
    }
    let gops = 6.0 * r.macs_per_example as f64 * r.batch as f64 / (r.iteration_ms_median * 1e6);
    println!(
        "{:.1} GOP/s over 3 GEMMs per layer; saved for backward {:.1} MB; peak RSS {}",
        gops,
        r.saved_bytes as f64 / 1e6,
        r.peak_rss_mb
            .map_or("unknown".to_string(), |m| format!("{m:.0} MB"))
    );
}
