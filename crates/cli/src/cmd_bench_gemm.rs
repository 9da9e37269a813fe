//! `lowprec bench gemm`: exact i8 GEMM, f32 GEMM and the packed ternary / binary GEMMs'
//! throughput, side by side.

use anyhow::{Context, Result};
use clap::Args;
use lowprec_kernels::bench::{default_shapes, gemm_table_with, BenchKernel, GemmRecord, Shape};
use lowprec_kernels::Isa;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct BenchGemmArgs {
    /// Thread counts to measure, e.g. `1,2`.
    #[arg(long, default_value = "1,2", value_delimiter = ',')]
    pub threads: Vec<usize>,
    /// Timed repetitions per point (the median is reported), after one warm-up run.
    #[arg(long, default_value_t = 7)]
    pub reps: usize,
    /// Write the records as a JSON array here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Shapes as MxKxN (a single number S means SxSxS), comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "512,1024,64x576x131072,64x131072x576,576x64x131072,512x4608x2048"
    )]
    pub shapes: Vec<String>,
    /// Kernels: i8, f32 (the implementation gemm_f32 picks), f32-gemm, f32-matrixmultiply,
    /// f32-matrixmultiply-t, ternary-a2 (ternary weights x 2-bit activations, bit planes),
    /// binary-xnor (binary x binary, XNOR-popcount).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "i8,i8-relu,f32,ternary-a2,binary-xnor"
    )]
    pub kernels: Vec<String>,
    /// Shrink every dimension above 512 by 16x (at least 512) and use 2 repetitions: a smoke test.
    #[arg(long)]
    pub quick: bool,
}

fn quick_dim(d: usize) -> usize {
    if d > 512 {
        (d / 16).max(512)
    } else {
        d
    }
}

pub fn run(args: &BenchGemmArgs) -> Result<()> {
    let mut shapes = args
        .shapes
        .iter()
        .map(|s| Shape::parse(s).map_err(anyhow::Error::msg))
        .collect::<Result<Vec<_>>>()?;
    if shapes.is_empty() {
        shapes = default_shapes();
    }
    let kernels = args
        .kernels
        .iter()
        .map(|s| BenchKernel::parse(s).with_context(|| format!("unknown kernel {s:?}")))
        .collect::<Result<Vec<_>>>()?;
    anyhow::ensure!(!kernels.is_empty(), "no kernel to measure");
    anyhow::ensure!(
        args.threads.iter().all(|&t| t >= 1),
        "thread counts must be >= 1"
    );
    let reps = if args.quick { 2 } else { args.reps.max(1) };
    if args.quick {
        let mut small: Vec<Shape> = Vec::new();
        for s in &shapes {
            let q = Shape {
                m: quick_dim(s.m),
                k: quick_dim(s.k),
                n: quick_dim(s.n),
            };
            // Several big shapes shrink to the same one: measure it once.
            if !small.contains(&q) {
                small.push(q);
            }
        }
        shapes = small;
    }
    let records = gemm_table_with(&kernels, &shapes, &args.threads, reps)?;
    print_table(&records, &kernels, &shapes, &args.threads);
    if let Some(p) = &args.json {
        crate::util::write_atomic(p, serde_json::to_string_pretty(&records)?.as_bytes())?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}

fn print_table(
    records: &[GemmRecord],
    kernels: &[BenchKernel],
    shapes: &[Shape],
    threads: &[usize],
) {
    let find = |k: BenchKernel, s: &Shape, t: usize| {
        records
            .iter()
            .find(|r| r.kernel == k && r.m == s.m && r.k == s.k && r.n == s.n && r.threads == t)
    };
    let floats: Vec<BenchKernel> = kernels.iter().copied().filter(|k| k.is_f32()).collect();
    let lowbits: Vec<BenchKernel> = kernels.iter().copied().filter(|k| k.is_lowbit()).collect();
    let has_i8 = kernels.contains(&BenchKernel::I8);
    let i8s: Vec<BenchKernel> = kernels.iter().copied().filter(|k| k.is_i8()).collect();
    let isa = Isa::detect();
    let family = |k: BenchKernel| k.family(isa);
    // The ceilings are measured here, on this machine, not carried over from another one.
    let mut peaks: Vec<(Isa, Option<(f64, &'static str)>)> = Vec::new();
    for &k in &i8s {
        if !peaks.iter().any(|(f, _)| *f == family(k)) {
            peaks.push((
                family(k),
                lowprec_kernels::peak::gemm_peak_gops(family(k), 50),
            ));
        }
    }
    let peak_of = |k: BenchKernel| {
        peaks
            .iter()
            .find(|(f, _)| *f == family(k))
            .and_then(|p| p.1)
    };
    let mut header = format!("{:<22} {:>7}", "shape MxKxN", "threads");
    for &k in &i8s {
        header += &format!(" {:>13} {:>7}", format!("{} GOP/s", k.name()), "% peak");
    }
    for l in &lowbits {
        header += &format!(" {:>18}", format!("{} GOP/s", l.name()));
        if has_i8 {
            header += &format!(" {:>7}", "x i8");
        }
    }
    for f in &floats {
        header += &format!(" {:>22}", format!("{} GFLOP/s", f.name()));
    }
    if !floats.is_empty() {
        for &k in &i8s {
            header += &format!(" {:>18}", format!("{}/best f32", k.name()));
        }
    }
    println!("{header}");
    for s in shapes {
        for &t in threads {
            let mut line = format!("{:<22} {t:>7}", format!("{}x{}x{}", s.m, s.k, s.n));
            let i8r = find(BenchKernel::I8, s, t);
            for &k in &i8s {
                match (find(k, s, t), peak_of(k)) {
                    (Some(r), Some((p, _))) => {
                        line += &format!(
                            " {:>13.1} {:>6.0}%",
                            r.gops,
                            100.0 * r.gops / (p * t as f64)
                        )
                    }
                    (Some(r), None) => line += &format!(" {:>13.1} {:>7}", r.gops, "-"),
                    (None, _) => line += &format!(" {:>13} {:>7}", "-", "-"),
                }
            }
            for &l in &lowbits {
                match find(l, s, t) {
                    Some(r) => {
                        line += &format!(" {:>18.1}", r.gops);
                        match i8r {
                            Some(i) => line += &format!(" {:>6.2}x", r.gops / i.gops),
                            None if has_i8 => line += &format!(" {:>7}", "-"),
                            None => {}
                        }
                    }
                    None => {
                        line += &format!(" {:>18}", "-");
                        if has_i8 {
                            line += &format!(" {:>7}", "-");
                        }
                    }
                }
            }
            let mut best_f32: Option<f64> = None;
            for &f in &floats {
                match find(f, s, t) {
                    Some(r) => {
                        line += &format!(" {:>22.1}", r.gops);
                        best_f32 = Some(best_f32.map_or(r.gops, |b: f64| b.max(r.gops)));
                    }
                    None => line += &format!(" {:>22}", "-"),
                }
            }
            if let Some(b) = best_f32 {
                for &k in &i8s {
                    match find(k, s, t) {
                        Some(r) => line += &format!(" {:>17.2}x", r.gops / b),
                        None => line += &format!(" {:>18}", "-"),
                    }
                }
            }
            println!("{line}");
        }
    }
    if !lowbits.is_empty() {
        println!(
            "(packed low-bit kernels: {:?}; weights packed once outside the timing, activations packed from codes inside it)",
            lowprec_kernels::lowbit::BitIsa::detect()
        );
    }
    let machine = crate::util::machine_line();
    println!("(median of the timed runs; 1 MAC = 2 ops; {machine})");
    for &k in &i8s {
        if let Some((p, what)) = peak_of(k) {
            println!(
                "({} on {:?}: % peak is of {p:.1} GOP/s per thread, {what}, measured just now: `lowprec bench peak`)",
                k.name(),
                family(k)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: BenchGemmArgs,
    }

    #[test]
    fn quick_run_writes_json_records() {
        let dir = std::env::temp_dir().join(format!("lowprec-bench-gemm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let json = dir.join("gemm.json");
        let w = Wrap::parse_from([
            "x",
            "--quick",
            "--threads",
            "1,2",
            "--shapes",
            "64x96x40,33",
            "--json",
            json.to_str().unwrap(),
        ]);
        run(&w.args).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        let arr = v.as_array().unwrap();
        // 2 shapes x 2 thread counts x 5 default kernels.
        assert_eq!(arr.len(), 2 * 2 * 5);
        for r in arr {
            for key in ["kernel", "m", "k", "n", "threads", "gops"] {
                assert!(r.get(key).is_some(), "record lacks {key}: {r}");
            }
            assert!(r["gops"].as_f64().unwrap() > 0.0);
        }
        assert_eq!(arr[0]["kernel"], "i8");
        assert_eq!(arr[1]["kernel"], "i8-relu");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_shape_and_kernel_are_errors() {
        let w = Wrap::parse_from(["x", "--shapes", "12x3"]);
        assert!(run(&w.args).is_err());
        let w = Wrap::parse_from(["x", "--shapes", "8", "--kernels", "i4"]);
        assert!(run(&w.args).is_err());
    }
}
