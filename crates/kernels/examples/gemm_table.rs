//! Prints a GEMM throughput table: `gemm_table [kernels] [shapes] [threads] [reps]`, e.g.
//! `gemm_table i8,f32-gemm 1024,64x576x131072 1,2 5`.
use lowprec_kernels::bench::{default_shapes, gemm_table_with, BenchKernel, Shape};

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
    for r in gemm_table_with(&kernels, &shapes, &threads, reps).unwrap() {
        println!(
            "{:<22} {:>6}x{:<6}x{:>6} t={} {:>8.1} GOP/s {:>9.2} ms",
            r.kernel.name(),
            r.m,
            r.k,
            r.n,
            r.threads,
            r.gops,
            r.median_ms
        );
    }
}
