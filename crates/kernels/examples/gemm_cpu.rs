//! i8 GEMM throughput per CPU-second (from /proc/self/stat), for tuning on a shared machine:
//! `gemm_cpu [shapes] [threads] [reps] [segment] [i8|f32-gemm|f32-matrixmultiply|f32-matrixmultiply-t]`. Data is made once; only the GEMM calls are
//! counted. With a segment, every segment has its own A and B scale (002's per-example scales).
use lowprec_kernels::bench::{default_shapes, Shape};
use lowprec_kernels::{gemm_f32_with, gemm_q8, F32Impl, GemmSpec, MatMut, MatRef, QMatRef, Scales};
use std::time::Instant;

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|s| s.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let shapes = match args.get(1).map(|s| s.as_str()) {
        None | Some("default") => default_shapes(),
        Some(s) => s.split(',').map(|x| Shape::parse(x).unwrap()).collect(),
    };
    let threads: usize = args.get(2).map_or(1, |s| s.parse().unwrap());
    let reps: usize = args.get(3).map_or(5, |s| s.parse().unwrap());
    let segment: usize = args.get(4).map_or(usize::MAX, |s| {
        if s == "whole" {
            usize::MAX
        } else {
            s.parse().unwrap()
        }
    });
    let kernel = args.get(5).map_or("i8", |s| s.as_str());
    let f32_impl = match kernel {
        "i8" => None,
        "f32-gemm" => Some(F32Impl::Gemm),
        "f32-matrixmultiply" => Some(F32Impl::MatrixMultiply),
        "f32-matrixmultiply-t" => Some(F32Impl::MatrixMultiplyT),
        k => panic!("unknown kernel {k}"),
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    for Shape { m, k, n } in shapes {
        let a: Vec<i8> = (0..m * k)
            .map(|i| ((i * 7 + 3) % 255) as i32 as i8)
            .map(|v| v.max(-127))
            .collect();
        let b: Vec<i8> = (0..k * n)
            .map(|i| ((i * 13 + 1) % 255) as i32 as i8)
            .map(|v| v.max(-127))
            .collect();
        let mut c = vec![0f32; m * n];
        let (af, bf): (Vec<f32>, Vec<f32>) = if f32_impl.is_some() {
            (
                a.iter().map(|&v| v as f32 / 128.0).collect(),
                b.iter().map(|&v| v as f32 / 128.0).collect(),
            )
        } else {
            (Vec::new(), Vec::new())
        };
        let segs = lowprec_kernels::segment_count(k, segment);
        let s: Vec<f32> = (0..segs).map(|i| 0.5 + (i % 7) as f32 / 8.0).collect();
        let spec = GemmSpec {
            segment,
            accumulate: segment != usize::MAX,
        };
        let mut run = || {
            let qa = QMatRef {
                mat: MatRef::row_major(&a, m, k).unwrap(),
                scales: Scales::per_segment(&s),
                max_abs: 127,
            };
            let qb = QMatRef {
                mat: MatRef::row_major(&b, k, n).unwrap(),
                scales: Scales::per_segment(&s),
                max_abs: 127,
            };
            match f32_impl {
                None => gemm_q8(qa, qb, spec, MatMut::row_major(&mut c, m, n).unwrap()).unwrap(),
                Some(imp) => gemm_f32_with(
                    imp,
                    MatRef::row_major(&af, m, k).unwrap(),
                    MatRef::row_major(&bf, k, n).unwrap(),
                    false,
                    MatMut::row_major(&mut c, m, n).unwrap(),
                )
                .unwrap(),
            }
        };
        pool.install(&mut run);
        let c0 = cpu_seconds();
        let t0 = Instant::now();
        let mut best = f64::MAX;
        for _ in 0..reps {
            let t = Instant::now();
            pool.install(&mut run);
            best = best.min(t.elapsed().as_secs_f64());
        }
        let wall = t0.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - c0;
        let ops = 2.0 * (m * k * n) as f64;
        println!(
            "{kernel:<20} {m:>5}x{k:<6}x{n:>6} t={threads}: wall {:>6.1} GOP/s, best {:>6.1}, per cpu-s {:>6.1} (cpu/wall {:.2})",
            ops * reps as f64 / wall / 1e9,
            ops / best / 1e9,
            ops * reps as f64 / cpu / 1e9,
            cpu / wall
        );
    }
}
