//! Microkernel throughput on L1-resident panels (no packing, no epilogue): the ceiling the
//! blocked GEMM can reach. `ukernel_peak [kp] [calls]`.
use lowprec_kernels::ukernel::{self, Isa, MR, NR, TILE};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let kp: usize = args.get(1).map_or(256, |s| s.parse().unwrap());
    let calls: usize = args.get(2).map_or(200_000, |s| s.parse().unwrap());
    let a: Vec<i16> = (0..kp * MR * 2).map(|i| (i % 251) as i16 - 125).collect();
    let b: Vec<i16> = (0..kp * NR * 2).map(|i| (i % 241) as i16 - 120).collect();
    let mut tile = [0i32; TILE];
    let isa = Isa::detect();
    for _ in 0..3 {
        let t0 = Instant::now();
        for i in 0..calls {
            // SAFETY: panels hold kp pairs.
            unsafe { ukernel::run(isa, kp, a.as_ptr(), kp * 2, b.as_ptr(), &mut tile, i == 0) };
        }
        let s = t0.elapsed().as_secs_f64();
        let ops = 2.0 * (MR * NR * 2 * kp * calls) as f64;
        println!(
            "{isa:?} kp={kp}: {:.1} GOP/s (tile[0]={})",
            ops / s / 1e9,
            tile[0]
        );
    }
}
