//! Prints a GEMM throughput table: `gemm_table [kernels] [shapes] [threads] [reps]`, e.g.
//! `gemm_table i8,f32-gemm 1024,64x576x131072 1,2 5`.
//!
//! Besides the wall-clock median it prints GOP/s per CPU-second of this process (from
//! /proc/self/stat), which stays meaningful on a machine shared with other work: it is the
//! per-core throughput while this process actually ran.
use lowprec_kernels::bench::{default_shapes, gemm_table_with, BenchKernel, Shape};

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the command name.
    let ticks: f64 = f.get(11).and_then(|s| s.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let kernels: Vec<BenchKernel> = args
        .get(1)
        .map_or("i8,f32", |s| s.as_str())
        .split(',')
        .map(|s| BenchKernel::parse(s).unwrap_or_else(|| panic!("unknown kernel {s}")))
        .collect();
    let shapes = match args.get(2).map(|s| s.as_str()) {
        None | Some("default") => default_shapes(),
        Some(s) => s.split(',').map(|x| Shape::parse(x).unwrap()).collect(),
    };
    let threads: Vec<usize> = args
        .get(3)
        .map_or("1,2", |s| s.as_str())
        .split(',')
        .map(|s| s.parse().unwrap())
        .collect();
    let reps = args.get(4).map_or(5, |s| s.parse().unwrap());
    for sh in &shapes {
        for &t in &threads {
            for &k in &kernels {
                let c0 = cpu_seconds();
                let r = gemm_table_with(&[k], &[*sh], &[t], reps).unwrap();
                let cpu = cpu_seconds() - c0;
                let r = &r[0];
                let ops = 2.0 * (r.m * r.k * r.n) as f64 * (reps + 1) as f64;
                println!(
                    "{:<22} {:>6}x{:<6}x{:>6} t={} {:>8.1} GOP/s {:>9.2} ms | {:>6.1} GOP/s per cpu-s",
                    r.kernel.name(),
                    r.m,
                    r.k,
                    r.n,
                    r.threads,
                    r.gops,
                    r.median_ms,
                    ops / cpu.max(1e-9) / 1e9
                );
            }
        }
    }
}
