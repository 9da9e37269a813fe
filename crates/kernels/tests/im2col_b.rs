//! The im2col B operand: its definition against a direct loop over the convolution's taps, and
//! the GEMM that packs it from the maps against the reference GEMM of the materialised matrix,
//! bit for bit, on every kernel family and at 1 and 2 threads.

mod common;

use common::*;
use lowprec_kernels::reference::gemm_q8_ref;
use lowprec_kernels::{
    gemm_q8_im2col_grouped_with, gemm_q8_im2col_with, GemmSpec, GroupedMut, Im2colRef, Isa,
    KernelError, MatMut, MatRef, QIm2colRef, QMatRef, Scales,
};
use std::mem::MaybeUninit;

/// The column matrix of a same-size convolution, written tap by tap (seven loops).
fn im2col_direct(maps: &[i8], e: usize, c: usize, h: usize, w: usize, k: usize) -> Vec<i8> {
    let (p, cols) = (k / 2, e * h * w);
    let mut out = vec![0i8; c * k * k * cols];
    for ex in 0..e {
        for ch in 0..c {
            for ky in 0..k {
                for kx in 0..k {
                    for oy in 0..h {
                        for ox in 0..w {
                            let (iy, ix) = (oy + ky, ox + kx);
                            if iy < p || ix < p || iy - p >= h || ix - p >= w {
                                continue;
                            }
                            let r = (ch * k + ky) * k + kx;
                            let col = (ex * h + oy) * w + ox;
                            out[r * cols + col] = maps[((ex * c + ch) * h + iy - p) * w + ix - p];
                        }
                    }
                }
            }
        }
    }
    out
}

/// Maps of (examples, channels, h, w, k), M, and the maps' bound.
const CASES: [(usize, usize, usize, usize, usize, usize, u32); 10] = [
    (1, 1, 1, 1, 1, 1, 127),
    (1, 1, 1, 7, 3, 7, 127),
    (2, 3, 5, 7, 3, 33, 128),
    (3, 16, 8, 8, 3, 16, 128),
    (2, 16, 32, 32, 3, 16, 128),
    (1, 5, 8, 4, 5, 9, 100),
    (4, 32, 16, 16, 3, 32, 128),
    (7, 2, 4, 8, 1, 3, 128),
    (2, 64, 8, 8, 3, 64, 128),
    (3, 4, 4, 4, 3, 7, 128),
];

/// `gemm_q8_im2col_grouped_with` on every kernel family at 1 and 2 threads, into column
/// groups of `group` (a convolution's `[examples, M, pixels]`), against the row-major `want`
/// bit for bit: every slot written (each starts as a NaN), each in its place.
fn check_grouped_every_family(
    qa: QMatRef<'_, i8>,
    bq: QIm2colRef<'_>,
    group: usize,
    want: &[f32],
    what: &str,
) {
    let (m, n) = (qa.mat.rows, bq.shape().1);
    let mut want_g = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            want_g[(j / group) * m * group + i * group + j % group] = want[i * n + j];
        }
    }
    on_every_family(|isa, threads| {
        let mut got = vec![MaybeUninit::new(f32::NAN); m * n];
        let c = GroupedMut::new(&mut got, m, n, group).unwrap();
        gemm_q8_im2col_grouped_with(isa, qa, bq, c).unwrap();
        // SAFETY: every slot was initialised above.
        let got: Vec<f32> = got.iter().map(|v| unsafe { v.assume_init() }).collect();
        let same = got
            .iter()
            .zip(&want_g)
            .all(|(g, w)| g.to_bits() == w.to_bits());
        assert!(same, "grouped: {isa:?} {threads} threads, {what}");
    });
}

/// `f(isa, threads)` for every kernel family at 1 and 2 threads, inside a pool of that size.
fn on_every_family(f: impl Fn(Isa, usize) + Sync) {
    for isa in ISAS {
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| f(isa, threads));
        }
    }
}

/// `gemm_q8_im2col_with` on every kernel family at 1 and 2 threads, from `c0`, against `want`
/// bit for bit.
fn check_every_family(
    qa: QMatRef<'_, i8>,
    bq: QIm2colRef<'_>,
    spec: GemmSpec,
    c0: &[f32],
    want: &[f32],
    what: &str,
) {
    let (m, n) = (qa.mat.rows, bq.shape().1);
    on_every_family(|isa, threads| {
        let mut got = c0.to_vec();
        let cm = MatMut::row_major(&mut got, m, n).unwrap();
        gemm_q8_im2col_with(isa, qa, bq, spec, cm).unwrap();
        let same = got
            .iter()
            .zip(want)
            .all(|(g, w)| g.to_bits() == w.to_bits());
        assert!(same, "{isa:?} {threads} threads, {what}");
    });
}

#[test]
fn definition_matches_the_direct_loop() {
    for (seed, &(e, c, h, w, k, _, max)) in CASES.iter().enumerate() {
        let maps = rand_i8(seed as u64, 1, e * c * h * w, max);
        let src = Im2colRef::new(&maps, e, c, h, w, k).unwrap();
        assert_eq!(
            src.materialize(),
            im2col_direct(&maps, e, c, h, w, k),
            "{e}x{c}x{h}x{w} k{k}"
        );
    }
}

#[test]
fn gemm_from_the_maps_matches_the_reference_on_the_matrix() {
    for (seed, &(e, c, h, w, k, m, max)) in CASES.iter().enumerate() {
        // Signed maps, and post-ReLU ones (what the unbiased k-quad family packs).
        for relu in [false, true] {
            let seed = 50 + seed as u64;
            let mut maps = rand_i8(seed, 1, e * c * h * w, max);
            // Extremes at both ends of the maps.
            maps[0] = -(max.min(128) as i64) as i8;
            let last = maps.len() - 1;
            maps[last] = max.min(127) as i8;
            if relu {
                maps.iter_mut().for_each(|v| *v = (*v).max(0));
            }
            let src = Im2colRef::new(&maps, e, c, h, w, k).unwrap();
            let (kk, n) = (src.rows(), src.cols());
            let col = src.materialize();
            let wdata = rand_i8(seed, 2, m * kk, 127);
            let sa = rand_scales(seed, 3, m);
            let sb = rand_scales(seed, 4, e);
            for accumulate in [false, true] {
                let qa = QMatRef {
                    mat: MatRef::row_major(&wdata, m, kk).unwrap(),
                    scales: Scales::per_index(&sa),
                    max_abs: 127,
                };
                let sbs = Scales::per_group(&sb, h * w);
                let qb = QMatRef {
                    mat: MatRef::row_major(&col, kk, n).unwrap(),
                    scales: sbs,
                    max_abs: max,
                };
                let spec = GemmSpec {
                    segment: usize::MAX,
                    accumulate,
                };
                let c0: Vec<f32> = (0..m * n)
                    .map(|i| f32_in(seed, 5, i as u64, -2.0, 2.0))
                    .collect();
                let mut want = c0.clone();
                gemm_q8_ref(qa, qb, spec, MatMut::row_major(&mut want, m, n).unwrap()).unwrap();
                let bq = QIm2colRef {
                    src,
                    transposed: false,
                    scales: sbs,
                    max_abs: max,
                };
                let what = format!("maps {e}x{c}x{h}x{w} k{k} M {m} acc {accumulate} relu {relu}");
                check_every_family(qa, bq, spec, &c0, &want, &what);
                if !accumulate {
                    check_grouped_every_family(qa, bq, h * w, &want, &what);
                }
            }
        }
    }
}

#[test]
fn bad_operands_are_clear_errors() {
    let maps = vec![3i8; 2 * 3 * 4 * 4];
    // Length and kernel side.
    let e = Im2colRef::new(&maps[1..], 2, 3, 4, 4, 3)
        .unwrap_err()
        .to_string();
    assert!(e.contains("need 96 values, got 95"), "{e}");
    let e = Im2colRef::new(&maps, 2, 3, 4, 4, 2)
        .unwrap_err()
        .to_string();
    assert!(e.contains("must be odd"), "{e}");
    let src = Im2colRef::new(&maps, 2, 3, 4, 4, 3).unwrap();
    let (kk, n) = (src.rows(), src.cols());
    let w = vec![1i8; 4 * kk];
    let s = [1.0f32];
    let mut c = vec![0f32; 4 * n];
    let qa = |cols: usize| QMatRef {
        mat: MatRef::row_major(&w, 4, cols).unwrap(),
        scales: Scales::uniform(&s),
        max_abs: 127,
    };
    let qb = |max_abs| QIm2colRef {
        src,
        transposed: false,
        scales: Scales::uniform(&s),
        max_abs,
    };
    for isa in [Isa::GenericQuad, Isa::Avx2] {
        // Inner dimensions.
        let cm = MatMut::row_major(&mut c, 4, n).unwrap();
        let e = gemm_q8_im2col_with(isa, qa(kk - 1), qb(127), GemmSpec::whole_k(), cm);
        assert!(matches!(e, Err(KernelError::Shape(_))), "{e:?}");
        // The maps exceed the declared bound.
        let cm = MatMut::row_major(&mut c, 4, n).unwrap();
        let e = gemm_q8_im2col_with(isa, qa(kk), qb(2), GemmSpec::whole_k(), cm);
        assert!(matches!(e, Err(KernelError::Range(_))), "{e:?}");
        // C of the wrong shape.
        let cm = MatMut::row_major(&mut c, 4, n - 1).unwrap();
        let e = gemm_q8_im2col_with(isa, qa(kk), qb(127), GemmSpec::whole_k(), cm);
        assert!(matches!(e, Err(KernelError::Shape(_))), "{e:?}");
    }
}

/// The weight gradient's shape: `dW[M, taps] = E[M, pixels] col^T`, B the transposed column
/// matrix packed from the maps, against the reference on the materialised `col^T`, with one
/// scale per product (a group of examples sharing their exponents) and with accumulation.
#[test]
fn weight_gradient_gemm_from_the_maps_matches_the_reference() {
    for (seed, &(e, c, h, w, k, m, max)) in CASES.iter().enumerate() {
        for relu in [false, true] {
            let seed = 90 + seed as u64;
            let mut maps = rand_i8(seed, 1, e * c * h * w, max);
            if relu {
                maps.iter_mut().for_each(|v| *v = (*v).max(0));
            }
            let src = Im2colRef::new(&maps, e, c, h, w, k).unwrap();
            let (taps, px) = (src.rows(), src.cols());
            let col = src.materialize();
            let errs = rand_i8(seed, 2, m * px, 127);
            let sa = rand_scales(seed, 3, 1);
            let one = [1.0f32];
            for accumulate in [false, true] {
                let qa = QMatRef {
                    mat: MatRef::row_major(&errs, m, px).unwrap(),
                    scales: Scales::uniform(&sa),
                    max_abs: 127,
                };
                let qb = QMatRef {
                    mat: MatRef::row_major(&col, taps, px).unwrap().t(),
                    scales: Scales::uniform(&one),
                    max_abs: max,
                };
                let spec = GemmSpec {
                    segment: usize::MAX,
                    accumulate,
                };
                let c0: Vec<f32> = (0..m * taps)
                    .map(|i| f32_in(seed, 5, i as u64, -2.0, 2.0))
                    .collect();
                let mut want = c0.clone();
                gemm_q8_ref(qa, qb, spec, MatMut::row_major(&mut want, m, taps).unwrap()).unwrap();
                let bq = QIm2colRef {
                    src,
                    transposed: true,
                    scales: Scales::uniform(&one),
                    max_abs: max,
                };
                assert_eq!(bq.shape(), (px, taps));
                let what =
                    format!("col^T of {e}x{c}x{h}x{w} k{k} M {m} acc {accumulate} relu {relu}");
                check_every_family(qa, bq, spec, &c0, &want, &what);
            }
        }
    }
}

/// The grouped output: its shape is checked, and an empty K writes zeros into every slot.
#[test]
fn grouped_output_shapes_and_empty_k() {
    let mut slots = vec![MaybeUninit::new(f32::NAN); 12];
    let e = GroupedMut::new(&mut slots, 3, 4, 3)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("groups of 3 columns"), "{e}");
    let e = GroupedMut::new(&mut slots[1..], 3, 4, 2)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("11 elements given"), "{e}");
    // No input channels: K = 0.
    let src = Im2colRef::new(&[], 2, 0, 2, 1, 1).unwrap();
    let s = [1.0f32];
    let qa = QMatRef {
        mat: MatRef::row_major(&[], 3, 0).unwrap(),
        scales: Scales::uniform(&s),
        max_abs: 127,
    };
    let bq = QIm2colRef {
        src,
        transposed: false,
        scales: Scales::uniform(&s),
        max_abs: 127,
    };
    for isa in ISAS {
        let mut slots = vec![MaybeUninit::new(f32::NAN); 12];
        let c = GroupedMut::new(&mut slots, 3, 4, 2).unwrap();
        gemm_q8_im2col_grouped_with(isa, qa, bq, c).unwrap();
        assert!(
            slots.iter().all(|v| {
                // SAFETY: every slot was initialised above.
                unsafe { v.assume_init() == 0.0 }
            }),
            "{isa:?}"
        );
        // A C of the wrong shape.
        let mut slots = vec![MaybeUninit::new(0f32); 8];
        let c = GroupedMut::new(&mut slots, 2, 4, 2).unwrap();
        let e = gemm_q8_im2col_grouped_with(isa, qa, bq, c)
            .unwrap_err()
            .to_string();
        assert!(e.contains("but A*B is 3x4"), "{e}");
        // Fields set by hand to more slots than the data holds.
        let mut slots = vec![MaybeUninit::new(0f32); 8];
        let c = GroupedMut {
            data: &mut slots,
            rows: 3,
            cols: 4,
            group: 2,
        };
        let e = gemm_q8_im2col_grouped_with(isa, qa, bq, c)
            .unwrap_err()
            .to_string();
        assert!(e.contains("8 elements given"), "{e}");
    }
}
