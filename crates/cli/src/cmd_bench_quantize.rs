//! `lowprec bench quantize`: quantisation throughput (GB/s of f32 input).

use anyhow::Result;
use clap::Args;
use lowprec_formats::{quantize_bfp_i8_into, BfpFormat, Block, BlockLayout, Rounding, StreamKey};
use serde::Serialize;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct BenchQuantizeArgs {
    /// Thread counts to measure, e.g. `1,2`.
    #[arg(long, default_value = "1,2", value_delimiter = ',')]
    pub threads: Vec<usize>,
    /// Elements per tensor.
    #[arg(long, default_value_t = 8 << 20)]
    pub elements: usize,
    /// Repetitions (the median is reported).
    #[arg(long, default_value_t = 15)]
    pub reps: usize,
    /// Write the results as a JSON array here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Serialize, Debug)]
pub struct QuantizeRecord {
    pub kernel: String,
    pub format: String,
    pub elements: usize,
    pub threads: usize,
    pub median_ms: f64,
    /// GB/s of f32 input consumed.
    pub gbps: f64,
    pub gbps_per_thread: f64,
    pub simd: &'static str,
}

pub fn run(a: &BenchQuantizeArgs) -> Result<()> {
    let n = a.elements.max(1);
    // Activations-like data: per-example blocks of a [128, n/128] tensor.
    let x: Vec<f32> = (0..n)
        .map(|i| ((i as f32 * 0.618_034).fract() - 0.5) * (1.0 + (i % 97) as f32))
        .collect();
    let mut records = Vec::new();
    let formats = [
        (
            "bfp8:tensor:stochastic",
            BfpFormat::new(8, Block::Tensor, Rounding::Stochastic)?,
        ),
        (
            "bfp8:axis0:stochastic",
            BfpFormat::new(8, Block::Axis(0), Rounding::Stochastic)?,
        ),
        (
            "bfp8:axis0:nearest-even",
            BfpFormat::new(8, Block::Axis(0), Rounding::NearestEven)?,
        ),
        (
            "bfp8:tile32:stochastic",
            BfpFormat::new(8, Block::Tile(32), Rounding::Stochastic)?,
        ),
    ];
    let rows = 128.min(n);
    let shape = [rows, n / rows];
    let n = rows * (n / rows);
    let x = &x[..n];
    println!(
        "{:<26} {:>7} {:>10} {:>8} {:>12}",
        "format", "threads", "median ms", "GB/s", "GB/s/thread"
    );
    for &threads in &a.threads {
        for (name, f) in &formats {
            let layout = BlockLayout::new(&shape, f.block)?;
            let mut mant = vec![0i8; n];
            let mut scales = Vec::new();
            let times = crate::util::with_threads(threads, || {
                let mut times = Vec::with_capacity(a.reps);
                for rep in 0..a.reps.max(1) + 1 {
                    let t0 = std::time::Instant::now();
                    quantize_bfp_i8_into(
                        x,
                        &layout,
                        f,
                        StreamKey::new(1, rep as u64),
                        "bench",
                        &mut mant,
                        &mut scales,
                    )
                    .expect("finite input");
                    if rep > 0 {
                        times.push(t0.elapsed().as_secs_f64());
                    }
                }
                times
            })?;
            let med = median(times);
            let gbps = (n * 4) as f64 / med / 1e9;
            println!(
                "{name:<26} {threads:>7} {:>10.3} {gbps:>8.2} {:>12.2}",
                med * 1e3,
                gbps / threads as f64
            );
            records.push(QuantizeRecord {
                kernel: "quantize".into(),
                format: name.to_string(),
                elements: n,
                threads,
                median_ms: med * 1e3,
                gbps,
                gbps_per_thread: gbps / threads as f64,
                simd: lowprec_formats::run::kernel_name(),
            });
        }
    }
    if let Some(p) = &a.json {
        crate::util::write_atomic(p, serde_json::to_string_pretty(&records)?.as_bytes())?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        0.5 * (v[m - 1] + v[m])
    }
}
