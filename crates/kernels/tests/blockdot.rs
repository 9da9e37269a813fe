//! The FPGA dot-product engine on the segmented integer GEMM against its plain reference, bit
//! for bit, on every kernel family, awkward shapes and extreme mantissas and exponents.

mod common;

use common::*;
use lowprec_kernels::blockdot::{
    block_gemm_cols, block_gemm_i16_with, block_gemm_i8_with, block_gemm_ref, BlockOperand,
    ScaledOperand,
};
use lowprec_kernels::Isa;

fn exps(seed: u64, stream: u64, n: usize) -> Vec<i32> {
    (0..n)
        .map(|i| int_in(seed, stream, i as u64, -25, 15) as i32)
        .collect()
}

fn run_case(m: usize, n: usize, blocks: usize, cv: usize, max_a: u32, max_w: u32, seed: u64) {
    let k = blocks * cv;
    let ea = exps(seed, 1, m * blocks);
    let ew = exps(seed, 2, n * blocks);
    let threads = [1, 2];
    if max_a <= 128 && max_w <= 128 {
        let am = rand_i8(seed, 3, m * k, max_a);
        let wm = rand_i8(seed, 4, n * k, max_w);
        let a = BlockOperand {
            mant: &am,
            rows: m,
            k,
            exps: &ea,
            max_abs: max_a,
        };
        let w = BlockOperand {
            mant: &wm,
            rows: n,
            k,
            exps: &ew,
            max_abs: max_w,
        };
        let mut want = vec![0f32; m * n];
        block_gemm_ref(&a, &w, cv, &mut want).unwrap();
        for isa in ISAS.map(Isa::or_supported) {
            for t in threads {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(t)
                    .build()
                    .unwrap();
                let mut got = vec![f32::NAN; m * n];
                pool.install(|| block_gemm_i8_with(isa, &a, &w, cv, &mut got))
                    .unwrap();
                assert_eq!(
                    got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "i8 {isa:?} {t} threads m{m} n{n} blocks{blocks} cv{cv}"
                );
            }
        }
    }
    let am = rand_i16(seed, 5, m * k, max_a);
    let wm = rand_i16(seed, 6, n * k, max_w);
    let a = BlockOperand {
        mant: &am,
        rows: m,
        k,
        exps: &ea,
        max_abs: max_a,
    };
    let w = BlockOperand {
        mant: &wm,
        rows: n,
        k,
        exps: &ew,
        max_abs: max_w,
    };
    let mut want = vec![0f32; m * n];
    block_gemm_ref(&a, &w, cv, &mut want).unwrap();
    for isa in ISAS.map(Isa::or_supported) {
        let mut got = vec![f32::NAN; m * n];
        block_gemm_i16_with(isa, &a, &w, cv, &mut got).unwrap();
        assert_eq!(
            got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "i16 {isa:?} m{m} n{n} blocks{blocks} cv{cv}"
        );
    }
}

#[test]
fn engine_matches_reference_awkward_shapes() {
    let mut seed = 1;
    for &(m, n, blocks) in &[
        (1, 1, 1),
        (7, 1, 3),
        (1, 7, 2),
        (33, 17, 5),
        (65, 10, 9),
        (1000, 3, 2),
        (5, 64, 1),
    ] {
        for cv in [4, 8, 16, 32, 64] {
            for (ma, mw) in [(15, 7), (63, 127), (128, 128), (255, 255), (2047, 2047)] {
                run_case(m, n, blocks, cv, ma, mw, seed);
                seed += 1;
            }
        }
    }
}

#[test]
fn zeros_extremes_and_empty() {
    // All-zero mantissas give +0 exactly; all-extreme INT12 blocks of 64 round in FP32.
    let cv = 64;
    let k = 2 * cv;
    let zero = vec![0i16; 3 * k];
    let big = vec![2047i16; 3 * k];
    let ea = vec![15i32; 3 * 2];
    for (am, wm) in [(&zero, &big), (&big, &big)] {
        let a = BlockOperand {
            mant: am,
            rows: 3,
            k,
            exps: &ea,
            max_abs: 2047,
        };
        let w = BlockOperand {
            mant: wm,
            rows: 3,
            k,
            exps: &ea,
            max_abs: 2047,
        };
        let mut want = vec![0f32; 9];
        block_gemm_ref(&a, &w, cv, &mut want).unwrap();
        for isa in ISAS.map(Isa::or_supported) {
            let mut got = vec![1f32; 9];
            block_gemm_i16_with(isa, &a, &w, cv, &mut got).unwrap();
            assert_eq!(got, want);
        }
    }
    // 64 * 2047^2 > 2^24: the block sum itself rounds.
    let mut want = vec![0f32; 9];
    let a = BlockOperand {
        mant: &big,
        rows: 3,
        k,
        exps: &ea,
        max_abs: 2047,
    };
    block_gemm_ref(&a, &a, cv, &mut want).unwrap();
    let exact = 2.0 * 64.0 * 2047f64 * 2047.0 * 2f64.powi(30);
    assert_eq!(want[0] as f64, (exact / 2.0) as f32 as f64 * 2.0);
    // empty M or N
    let a0 = BlockOperand {
        mant: &[] as &[i8],
        rows: 0,
        k: 8,
        exps: &[],
        max_abs: 7,
    };
    let w1 = BlockOperand {
        mant: &[1i8; 8],
        rows: 1,
        k: 8,
        exps: &[0; 2],
        max_abs: 7,
    };
    let mut out: Vec<f32> = vec![];
    block_gemm_i8_with(Isa::Generic, &a0, &w1, 4, &mut out).unwrap();
}

#[test]
fn bad_shapes_and_ranges_are_errors() {
    let m = vec![1i8; 12];
    let e = vec![0i32; 3];
    let a = BlockOperand {
        mant: &m,
        rows: 1,
        k: 12,
        exps: &e,
        max_abs: 7,
    };
    let mut out = vec![0f32; 1];
    // K not a multiple of the block
    let err = block_gemm_i8_with(Isa::Generic, &a, &a, 8, &mut out).unwrap_err();
    assert!(err.to_string().contains("multiple"), "{err}");
    // wrong exponent count
    let bad = BlockOperand { exps: &e[..2], ..a };
    assert!(block_gemm_ref(&bad, &a, 4, &mut out).is_err());
    // mantissa above the declared bound
    let wide = vec![9i8; 12];
    let w = BlockOperand { mant: &wide, ..a };
    assert!(block_gemm_ref(&a, &w, 4, &mut out).is_err());
    assert!(block_gemm_i8_with(Isa::Generic, &a, &w, 4, &mut out).is_err());
    // a scale outside f32's normal range
    let tiny = vec![-130i32; 3];
    let t = BlockOperand { exps: &tiny, ..a };
    assert!(block_gemm_i8_with(Isa::Generic, &t, &t, 4, &mut out).is_err());
}

/// `block_gemm_cols` (weights as rows, activations as columns, f32 scales) against the
/// reference on the transposed problem, bit for bit, at 1 and 2 threads on every family.
fn run_cols<T: Copy + Into<i32> + lowprec_kernels::pack::QElem>(
    am: &[T],
    wm: &[T],
    (m, n, blocks, block): (usize, usize, usize, usize),
    (max_a, max_w): (u32, u32),
    seed: u64,
) {
    let k = blocks * block;
    let ea = exps(seed, 7, m * blocks);
    let ew = exps(seed, 8, n * blocks);
    let a = BlockOperand {
        mant: am,
        rows: m,
        k,
        exps: &ea,
        max_abs: max_a,
    };
    let w = BlockOperand {
        mant: wm,
        rows: n,
        k,
        exps: &ew,
        max_abs: max_w,
    };
    let mut want = vec![0f32; m * n];
    block_gemm_ref(&a, &w, block, &mut want).unwrap();
    // activations as K x m columns, scales block-major
    let mut at = Vec::with_capacity(m * k);
    for kk in 0..k {
        at.extend((0..m).map(|i| am[i * k + kk]));
    }
    let pow2 = |e: i32| 2f32.powi(e);
    let sa: Vec<f32> = (0..blocks)
        .flat_map(|b| (0..m).map(move |i| (b, i)))
        .map(|(b, i)| pow2(ea[i * blocks + b]))
        .collect();
    let sw: Vec<f32> = (0..blocks)
        .flat_map(|b| (0..n).map(move |j| (b, j)))
        .map(|(b, j)| pow2(ew[j * blocks + b]))
        .collect();
    let wo = ScaledOperand {
        mant: wm,
        len: n,
        k,
        scales: &sw,
        max_abs: max_w,
    };
    let ao = ScaledOperand {
        mant: &at,
        len: m,
        k,
        scales: &sa,
        max_abs: max_a,
    };
    let want_t: Vec<u32> = (0..n * m)
        .map(|i| want[(i % m) * n + i / m].to_bits())
        .collect();
    for isa in ISAS.map(Isa::or_supported) {
        for t in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .unwrap();
            let mut got = vec![f32::NAN; m * n];
            pool.install(|| block_gemm_cols(isa, &wo, &ao, block, &mut got))
                .unwrap();
            let got: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
            assert_eq!(
                got, want_t,
                "{isa:?} {t} threads m{m} n{n} blocks{blocks} block{block}"
            );
        }
    }
}

#[test]
fn cols_engine_matches_reference() {
    let mut seed = 100;
    for &(m, n, blocks) in &[
        (1, 1, 1),
        (7, 1, 3),
        (1, 7, 2),
        (33, 17, 5),
        (1000, 16, 9),
        (300, 64, 2),
        (5, 120, 13),
    ] {
        for block in [1, 3, 4, 6, 16, 32, 64] {
            for (ma, mw) in [(15, 7), (128, 128), (2047, 2047)] {
                let k = blocks * block;
                if ma <= 128 && mw <= 128 {
                    let am = rand_i8(seed, 3, m * k, ma);
                    let wm = rand_i8(seed, 4, n * k, mw);
                    run_cols(&am, &wm, (m, n, blocks, block), (ma, mw), seed);
                }
                let am = rand_i16(seed, 5, m * k, ma);
                let wm = rand_i16(seed, 6, n * k, mw);
                run_cols(&am, &wm, (m, n, blocks, block), (ma, mw), seed);
                seed += 1;
            }
        }
    }
}

#[test]
fn cols_engine_bad_shapes_are_errors() {
    let m = vec![1i8; 12];
    let s = vec![1f32; 3];
    let w = ScaledOperand {
        mant: &m,
        len: 1,
        k: 12,
        scales: &s,
        max_abs: 7,
    };
    let mut out = vec![0f32; 1];
    assert!(block_gemm_cols(Isa::Generic, &w, &w, 4, &mut out).is_ok());
    let err = block_gemm_cols(Isa::Generic, &w, &w, 5, &mut out).unwrap_err();
    assert!(err.to_string().contains("multiple"), "{err}");
    let err = block_gemm_cols(Isa::Generic, &w, &w, 0, &mut out).unwrap_err();
    assert!(err.to_string().contains(">= 1"), "{err}");
    let short = ScaledOperand {
        scales: &s[..2],
        ..w
    };
    assert!(block_gemm_cols(Isa::Generic, &short, &w, 4, &mut out).is_err());
    let mut wrong = vec![0f32; 2];
    assert!(block_gemm_cols(Isa::Generic, &w, &w, 4, &mut wrong).is_err());
    let wide = vec![9i8; 12];
    let over = ScaledOperand { mant: &wide, ..w };
    assert!(block_gemm_cols(Isa::Generic, &over, &w, 4, &mut out).is_err());
}

use lowprec_kernels::blockdot::{
    block_conv, block_conv_available, block_conv_ref, ConvMaps, ConvShape, ConvWeights,
};

struct ConvCase {
    shape: ConvShape,
    cout: usize,
    blocks: usize,
    quads: usize,
    wm: Vec<i8>,
    ws: Vec<f32>,
    am: Vec<i8>,
    sa: Vec<f32>,
}

fn conv_case(
    (n, h, w, k, stride, pad): (usize, usize, usize, usize, usize, usize),
    cout: usize,
    blocks: usize,
    quads: usize,
    max_abs: u32,
    seed: u64,
) -> ConvCase {
    let shape = ConvShape::new(n, h, w, k, stride, pad).unwrap();
    let taps = k * k;
    let kq = blocks * quads;
    let pow2 = |e: i64| 2f32.powi(e as i32);
    let ws = (0..cout * taps * blocks)
        .map(|i| pow2(int_in(seed, 11, i as u64, -25, 15)))
        .collect();
    let sa = (0..n * blocks * h * w)
        .map(|i| pow2(int_in(seed, 12, i as u64, -25, 15)))
        .collect();
    ConvCase {
        shape,
        cout,
        blocks,
        quads,
        wm: rand_i8(seed, 13, cout * taps * kq * 4, max_abs),
        ws,
        am: rand_i8(seed, 14, n * kq * 4 * h * w, max_abs),
        sa,
    }
}

impl ConvCase {
    fn weights(&self) -> ConvWeights {
        ConvWeights::new(
            &self.wm,
            &self.ws,
            self.cout,
            self.shape.k * self.shape.k,
            self.blocks,
            self.quads,
        )
        .unwrap()
    }
    fn maps(&self) -> ConvMaps<'_> {
        ConvMaps {
            mant: &self.am,
            scales: &self.sa,
        }
    }
    fn out_len(&self) -> usize {
        self.shape.examples * self.cout * self.shape.ho * self.shape.wo
    }
}

#[test]
fn conv_kernel_matches_its_reference() {
    eprintln!("block_conv kernel available: {}", block_conv_available());
    let shapes = [
        (1, 1, 1, 1, 1, 0),
        (2, 5, 7, 3, 1, 1),
        (1, 14, 14, 5, 1, 0),
        (3, 9, 9, 3, 2, 1),
        (2, 8, 8, 1, 2, 0),
        (1, 1, 37, 1, 1, 0),
        (1, 6, 5, 5, 1, 2),
        (2, 4, 4, 3, 1, 0),
        (1, 33, 3, 3, 1, 1),
        (2, 7, 6, 3, 2, 0),
    ];
    let mut seed = 500;
    for sh in shapes {
        for (cout, blocks, quads) in [
            (1, 1, 1),
            (5, 1, 4),
            (12, 2, 4),
            (13, 3, 2),
            (30, 1, 8),
            (16, 2, 1),
        ] {
            for max_abs in [7, 128] {
                let c = conv_case(sh, cout, blocks, quads, max_abs, seed);
                seed += 1;
                let (w, m) = (c.weights(), c.maps());
                let mut want = vec![0f32; c.out_len()];
                block_conv_ref(&w, &m, c.shape, &mut want).unwrap();
                let mut got = vec![f32::NAN; c.out_len()];
                block_conv(&w, &m, c.shape, &mut got).unwrap();
                let b = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    b(&got),
                    b(&want),
                    "{sh:?} cout {cout} blocks {blocks} quads {quads}"
                );
            }
        }
    }
}

/// The reference convolution is the block engine on the im2col matrix (taps, then blocks).
#[test]
fn conv_reference_is_the_block_engine_on_im2col() {
    let c = conv_case((2, 6, 5, 3, 2, 1), 7, 2, 3, 128, 77);
    let s = c.shape;
    let (taps, kq, hw, po) = (9, c.blocks * c.quads, s.h * s.w, s.ho * s.wo);
    let block = c.quads * 4;
    let k = taps * kq * 4;
    let rows = s.examples * po;
    let nb = taps * c.blocks;
    // activations: one row per output pixel, K = (tap, block, channel)
    let mut am = vec![0i8; rows * k];
    let mut ea = vec![0i32; rows * nb];
    for n in 0..s.examples {
        for oy in 0..s.ho {
            for ox in 0..s.wo {
                let row = n * po + oy * s.wo + ox;
                for tap in 0..taps {
                    let iy = (oy * s.stride + tap / 3) as isize - 1;
                    let ix = (ox * s.stride + tap % 3) as isize - 1;
                    let inside = iy >= 0 && ix >= 0 && iy < s.h as isize && ix < s.w as isize;
                    let p = if inside {
                        iy as usize * s.w + ix as usize
                    } else {
                        0
                    };
                    for b in 0..c.blocks {
                        ea[row * nb + tap * c.blocks + b] = if inside {
                            c.sa[(n * c.blocks + b) * hw + p].log2() as i32
                        } else {
                            0
                        };
                        for q in 0..block {
                            let slot = b * c.quads + q / 4;
                            am[row * k + (tap * c.blocks + b) * block + q] = if inside {
                                c.am[((n * kq + slot) * hw + p) * 4 + q % 4]
                            } else {
                                0
                            };
                        }
                    }
                }
            }
        }
    }
    let ew: Vec<i32> = c.ws.iter().map(|s| s.log2() as i32).collect();
    let a = BlockOperand {
        mant: &am,
        rows,
        k,
        exps: &ea,
        max_abs: 128,
    };
    let w = BlockOperand {
        mant: &c.wm,
        rows: c.cout,
        k,
        exps: &ew,
        max_abs: 128,
    };
    let mut flat = vec![0f32; rows * c.cout];
    block_gemm_ref(&a, &w, block, &mut flat).unwrap();
    let mut want = vec![0f32; c.out_len()];
    for n in 0..s.examples {
        for o in 0..c.cout {
            for p in 0..po {
                want[(n * c.cout + o) * po + p] = flat[(n * po + p) * c.cout + o];
            }
        }
    }
    let mut got = vec![0f32; c.out_len()];
    block_conv_ref(&c.weights(), &c.maps(), s, &mut got).unwrap();
    assert_eq!(
        got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        want.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
}

#[test]
fn conv_bad_inputs_are_errors() {
    assert!(ConvShape::new(1, 2, 2, 5, 1, 0).is_err());
    assert!(ConvShape::new(1, 2, 2, 3, 0, 1).is_err());
    let c = conv_case((1, 4, 4, 3, 1, 1), 2, 1, 1, 7, 3);
    let taps = 9;
    let err = ConvWeights::new(&c.wm[1..], &c.ws, 2, taps, 1, 1).unwrap_err();
    assert!(err.to_string().contains("mantissas"), "{err}");
    let mut ws = c.ws.clone();
    ws[0] = 0.75;
    let err = ConvWeights::new(&c.wm, &ws, 2, taps, 1, 1).unwrap_err();
    assert!(err.to_string().contains("power of two"), "{err}");
    let w = c.weights();
    let mut out = vec![0f32; c.out_len()];
    let short = ConvMaps {
        mant: &c.am[1..],
        scales: &c.sa,
    };
    assert!(block_conv(&w, &short, c.shape, &mut out).is_err());
    let mut sa = c.sa.clone();
    sa[3] = f32::INFINITY;
    let bad = ConvMaps {
        mant: &c.am,
        scales: &sa,
    };
    assert!(block_conv(&w, &bad, c.shape, &mut out).is_err());
    let other = ConvShape::new(1, 4, 4, 1, 1, 0).unwrap();
    assert!(block_conv(&w, &c.maps(), other, &mut out).is_err());
}
