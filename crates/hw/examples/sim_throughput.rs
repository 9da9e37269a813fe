//! Simulated MACs per second of `FpgaSim` on VGG16 layer-8 GEMMs (forward, data gradient
//! with the column-major read, weight gradient). Run with
//! `cargo run --release -p lowprec-hw --example sim_throughput [spec]`.

use lowprec_hw::FpgaSim;
use lowprec_kernels::{GemmBackend, GemmSpec, MatMut, MatRef, QMatRef, Scales};
use std::time::Instant;

fn main() {
    let spec = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "zcu111-32x32".into());
    let sim = FpgaSim::from_spec(&spec).expect("valid design spec");
    let s = [1.0f32];
    let u = Scales::uniform(&s);
    let (oc, kk, wh) = (512usize, 4608usize, 16usize);
    let w: Vec<i8> = (0..oc * kk)
        .map(|i| (((i * 7919) % 255) as i32 - 127) as i8)
        .collect();
    let x: Vec<i8> = (0..kk * wh)
        .map(|i| (((i * 104729) % 255) as i32 - 127) as i8)
        .collect();
    let e: Vec<i8> = (0..oc * wh)
        .map(|i| (((i * 31) % 255) as i32 - 127) as i8)
        .collect();
    let wv = MatRef::row_major(&w, oc, kk).unwrap();
    let cases: Vec<(&str, QMatRef<i8>, QMatRef<i8>, usize, usize)> = vec![
        (
            "forward   512x4608 * 4608x16",
            QMatRef {
                mat: wv,
                scales: u,
                max_abs: 127,
            },
            QMatRef {
                mat: MatRef::row_major(&x, kk, wh).unwrap(),
                scales: u,
                max_abs: 127,
            },
            oc,
            wh,
        ),
        (
            "data-grad 4608x512 * 512x16 (W^T)",
            QMatRef {
                mat: wv.t(),
                scales: u,
                max_abs: 127,
            },
            QMatRef {
                mat: MatRef::row_major(&e, oc, wh).unwrap(),
                scales: u,
                max_abs: 127,
            },
            kk,
            wh,
        ),
        (
            "wgt-grad  512x16 * 16x4608",
            QMatRef {
                mat: MatRef::row_major(&e, oc, wh).unwrap(),
                scales: u,
                max_abs: 127,
            },
            QMatRef {
                mat: MatRef::row_major(&x, kk, wh).unwrap().t(),
                scales: u,
                max_abs: 127,
            },
            oc,
            kk,
        ),
    ];
    println!(
        "design {} ({} rayon threads)",
        sim.design().spec(),
        rayon::current_num_threads()
    );
    for (name, qa, qb, m, n) in cases {
        let mut c = vec![0f32; m * n];
        let reps = 3;
        let t = Instant::now();
        for _ in 0..reps {
            sim.reset_counters();
            sim.gemm_q8(
                qa,
                qb,
                GemmSpec::whole_k(),
                MatMut::row_major(&mut c, m, n).unwrap(),
            )
            .unwrap();
        }
        let secs = t.elapsed().as_secs_f64() / reps as f64;
        let ct = sim.counters();
        println!(
            "{name}: {:.3e} MACs in {:.1} ms -> {:.2e} simulated MAC/s; {} cycles ({:.2} ms at the design clock), utilisation {:.2}",
            ct.macs as f64,
            secs * 1e3,
            ct.macs as f64 / secs,
            ct.total_cycles,
            sim.elapsed_s() * 1e3,
            ct.utilisation(sim.design().n)
        );
    }
}
