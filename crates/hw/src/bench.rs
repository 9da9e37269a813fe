//! Simulator throughput measurement (simulated MACs per wall-clock second) on the VGG16
//! layer-8 GEMMs: forward, data gradient (column-major read of W) and weight gradient.
//! Used by the `sim_throughput` example and the CLI's `hw simbench`; not a unit test.

use crate::sim::FpgaSim;
use lowprec_kernels::{GemmBackend, GemmSpec, MatMut, MatRef, QMatRef, Scales};
use std::time::Instant;

/// One measured GEMM.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchResult {
    pub name: String,
    pub macs: u64,
    pub wall_s: f64,
    pub macs_per_s: f64,
    pub simulated_cycles: u64,
    pub utilisation: f64,
}

fn pattern(len: usize, mul: usize) -> Vec<i8> {
    (0..len)
        .map(|i| ((i.wrapping_mul(mul) % 255) as i32 - 127) as i8)
        .collect()
}

/// Runs each GEMM `reps` times on `sim` (counters are reset) and reports the mean.
pub fn run(sim: &FpgaSim, reps: usize) -> crate::Result<Vec<BenchResult>> {
    let reps = reps.max(1);
    let s = [1.0f32];
    let u = Scales::uniform(&s);
    let (oc, kk, wh) = (512usize, 4608usize, 16usize);
    let w = pattern(oc * kk, 7919);
    let x = pattern(kk * wh, 104_729);
    let e = pattern(oc * wh, 31);
    let wv = MatRef::row_major(&w, oc, kk)?;
    let q = |mat| QMatRef {
        mat,
        scales: u,
        max_abs: 127,
    };
    let cases = [
        (
            "forward 512x4608x16",
            q(wv),
            q(MatRef::row_major(&x, kk, wh)?),
            oc,
            wh,
        ),
        (
            "data-grad 4608x512x16 (W^T)",
            q(wv.t()),
            q(MatRef::row_major(&e, oc, wh)?),
            kk,
            wh,
        ),
        (
            "weight-grad 512x16x4608",
            q(MatRef::row_major(&e, oc, wh)?),
            q(MatRef::row_major(&x, kk, wh)?.t()),
            oc,
            kk,
        ),
    ];
    let mut out = Vec::new();
    for (name, qa, qb, m, n) in cases {
        let mut c = vec![0f32; m * n];
        let t = Instant::now();
        for _ in 0..reps {
            sim.reset_counters();
            sim.gemm_q8(
                qa,
                qb,
                GemmSpec::whole_k(),
                MatMut::row_major(&mut c, m, n)?,
            )?;
        }
        let wall_s = t.elapsed().as_secs_f64() / reps as f64;
        let ct = sim.counters();
        out.push(BenchResult {
            name: name.into(),
            macs: ct.macs,
            wall_s,
            macs_per_s: ct.macs as f64 / wall_s,
            simulated_cycles: ct.total_cycles,
            utilisation: ct.utilisation(sim.design().n),
        });
    }
    Ok(out)
}
