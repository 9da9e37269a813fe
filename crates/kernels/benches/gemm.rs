//! Criterion bench of the GEMM kernels. Quick by default (small shapes, few samples); set
//! `LOWPREC_BENCH_FULL=1` for the 1024^3 and VGG16 shapes of the targets.
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lowprec_kernels::bench::{default_shapes, Shape};
use lowprec_kernels::{gemm_f32, gemm_q8, GemmSpec, MatMut, MatRef, QMatRef, Scales};
use std::hint::black_box;

fn shapes() -> Vec<Shape> {
    if std::env::var_os("LOWPREC_BENCH_FULL").is_some() {
        default_shapes()
    } else {
        vec![
            Shape {
                m: 256,
                k: 256,
                n: 256,
            },
            Shape {
                m: 64,
                k: 576,
                n: 4096,
            },
            Shape {
                m: 128,
                k: 128,
                n: 64,
            },
        ]
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("gemm");
    g.sample_size(10);
    g.warm_up_time(std::time::Duration::from_millis(300));
    g.measurement_time(std::time::Duration::from_secs(1));
    for sh in shapes() {
        let Shape { m, k, n } = sh;
        g.throughput(Throughput::Elements((2 * m * k * n) as u64));
        let a8: Vec<i8> = (0..m * k)
            .map(|i| ((i * 7 + 3) % 255) as i32 as i8)
            .collect();
        let b8: Vec<i8> = (0..k * n)
            .map(|i| ((i * 13 + 1) % 255) as i32 as i8)
            .collect();
        let a8: Vec<i8> = a8.into_iter().map(|v| v.max(-127)).collect();
        let b8: Vec<i8> = b8.into_iter().map(|v| v.max(-127)).collect();
        let af: Vec<f32> = a8.iter().map(|&v| v as f32 / 128.0).collect();
        let bf: Vec<f32> = b8.iter().map(|&v| v as f32 / 128.0).collect();
        let mut cbuf = vec![0f32; m * n];
        let s = [0.5f32];
        g.bench_function(format!("i8/{m}x{k}x{n}"), |bch| {
            bch.iter(|| {
                let qa = QMatRef {
                    mat: MatRef::row_major(&a8, m, k).unwrap(),
                    scales: Scales::uniform(&s),
                    max_abs: 127,
                };
                let qb = QMatRef {
                    mat: MatRef::row_major(&b8, k, n).unwrap(),
                    scales: Scales::uniform(&s),
                    max_abs: 127,
                };
                gemm_q8(
                    qa,
                    qb,
                    GemmSpec::whole_k(),
                    MatMut::row_major(&mut cbuf, m, n).unwrap(),
                )
                .unwrap();
                black_box(&cbuf);
            })
        });
        g.bench_function(format!("f32/{m}x{k}x{n}"), |bch| {
            bch.iter(|| {
                gemm_f32(
                    MatRef::row_major(&af, m, k).unwrap(),
                    MatRef::row_major(&bf, k, n).unwrap(),
                    false,
                    MatMut::row_major(&mut cbuf, m, n).unwrap(),
                )
                .unwrap();
                black_box(&cbuf);
            })
        });
    }
    // 002's per-example weight gradient of a fully-connected layer: rank-1 updates, one
    // segment per example, each with its own scales (the small-segment direct path).
    let (m, k, n) = (512, 64, 512);
    let a8: Vec<i8> = (0..m * k)
        .map(|i| ((i * 7 + 3) % 255) as i32 as i8)
        .map(|v| v.max(-127))
        .collect();
    let b8: Vec<i8> = (0..k * n)
        .map(|i| ((i * 13 + 1) % 255) as i32 as i8)
        .map(|v| v.max(-127))
        .collect();
    let sa: Vec<f32> = (0..k).map(|i| 1.0 + i as f32 / 64.0).collect();
    let sb: Vec<f32> = (0..k).map(|i| 0.5 + i as f32 / 128.0).collect();
    let mut cbuf = vec![0f32; m * n];
    g.throughput(Throughput::Elements((2 * m * k * n) as u64));
    g.bench_function(format!("i8-seg1/{m}x{k}x{n}"), |bch| {
        bch.iter(|| {
            let qa = QMatRef {
                mat: MatRef::row_major(&a8, m, k).unwrap(),
                scales: Scales::per_segment(&sa),
                max_abs: 127,
            };
            let qb = QMatRef {
                mat: MatRef::row_major(&b8, k, n).unwrap(),
                scales: Scales::per_segment(&sb),
                max_abs: 127,
            };
            gemm_q8(
                qa,
                qb,
                GemmSpec {
                    segment: 1,
                    accumulate: true,
                },
                MatMut::row_major(&mut cbuf, m, n).unwrap(),
            )
            .unwrap();
            black_box(&cbuf);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
