//! Fast quantised GEMMs against the scalar references, bit for bit.

mod common;

use common::*;
use lowprec_kernels::reference::{gemm_i8_i32_ref, gemm_q16_ref, gemm_q8_ref};
use lowprec_kernels::{
    gemm_i8_i32, gemm_i8_i32_with, gemm_q, gemm_q16, gemm_q8, GemmSpec, Isa, KernelError, MatMut,
    MatRef, QMatRef, Scales,
};

/// How the scales of one test vary.
#[derive(Clone, Copy, Debug)]
enum ScaleKind {
    Uniform,
    PerIndex,
    PerSegment,
    /// Per (segment, group of 5 indices).
    Grouped,
    /// Per segment, powers of two `2^lo ..= 2^hi` (the fused one-element-chunk path).
    PerSegmentPow2(i32, i32),
    /// Per (segment, group of 5 indices), powers of two `2^lo ..= 2^hi`.
    GroupedPow2(i32, i32),
}

fn pow2_scales(seed: u64, stream: u64, len: usize, lo: i32, hi: i32) -> Vec<f32> {
    (0..len)
        .map(|i| (2f64).powi(int_in(seed, stream, i as u64, lo as i64, hi as i64) as i32) as f32)
        .collect()
}

fn make_scales(
    kind: ScaleKind,
    seed: u64,
    stream: u64,
    segs: usize,
    len: usize,
) -> (Vec<f32>, usize, usize) {
    match kind {
        ScaleKind::Uniform => (rand_scales(seed, stream, 1), usize::MAX, 0),
        ScaleKind::PerIndex => (rand_scales(seed, stream, len.max(1)), 1, 0),
        ScaleKind::PerSegment => (rand_scales(seed, stream, segs.max(1)), usize::MAX, 1),
        ScaleKind::Grouped => {
            let per = len.div_ceil(5).max(1);
            (rand_scales(seed, stream, segs.max(1) * per), 5, per)
        }
        ScaleKind::PerSegmentPow2(lo, hi) => (
            pow2_scales(seed, stream, segs.max(1), lo, hi),
            usize::MAX,
            1,
        ),
        ScaleKind::GroupedPow2(lo, hi) => {
            let per = len.div_ceil(5).max(1);
            (pow2_scales(seed, stream, segs.max(1) * per, lo, hi), 5, per)
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Case {
    m: usize,
    k: usize,
    n: usize,
    segment: usize,
    accumulate: bool,
    la: Layout,
    lb: Layout,
    sa: ScaleKind,
    sb: ScaleKind,
    max_a: u32,
    max_b: u32,
}

/// Runs one i8 case on every kernel family and checks each against the reference.
fn check_q8(seed: u64, cs: Case) {
    let Case {
        m, k, n, segment, ..
    } = cs;
    let segs = lowprec_kernels::segment_count(k, segment);
    let adata = rand_i8(seed, 1, storage_len(cs.la, m, k), cs.max_a);
    let bdata = rand_i8(seed, 2, storage_len(cs.lb, k, n), cs.max_b);
    let (sav, sag, sas) = make_scales(cs.sa, seed, 3, segs, m);
    let (sbv, sbg, sbs) = make_scales(cs.sb, seed, 4, segs, n);
    let c0: Vec<f32> = (0..m * n)
        .map(|i| f32_in(seed, 5, i as u64, -4.0, 4.0))
        .collect();
    let qa = QMatRef {
        mat: view(cs.la, &adata, m, k),
        scales: Scales {
            values: &sav,
            group: sag,
            seg_stride: sas,
        },
        max_abs: cs.max_a,
    };
    let qb = QMatRef {
        mat: view(cs.lb, &bdata, k, n),
        scales: Scales {
            values: &sbv,
            group: sbg,
            seg_stride: sbs,
        },
        max_abs: cs.max_b,
    };
    let spec = GemmSpec {
        segment,
        accumulate: cs.accumulate,
    };
    let what = format!("{cs:?}");
    check_families(&ISAS, qa, qb, spec, &c0, &what);
    // B made non-negative (post-ReLU activations), which the unbiased k-quad kernel takes
    // where its pair sums cannot saturate, and which every family must get right.
    let relu: Vec<i8> = bdata.iter().map(|&v| v.max(0)).collect();
    let qb = QMatRef {
        mat: view(cs.lb, &relu, k, n),
        ..qb
    };
    check_families(
        &[Isa::Avx2Quad, Isa::Avx512Vnni],
        qa,
        qb,
        spec,
        &c0,
        &format!("B >= 0 {what}"),
    );
}

/// `gemm_q` on each of `isas` from `c0` against the reference, bit for bit.
fn check_families(
    isas: &[Isa],
    qa: QMatRef<'_, i8>,
    qb: QMatRef<'_, i8>,
    spec: GemmSpec,
    c0: &[f32],
    what: &str,
) {
    let (m, n) = (qa.mat.rows, qb.mat.cols);
    let mut want = c0.to_vec();
    gemm_q8_ref(qa, qb, spec, MatMut::row_major(&mut want, m, n).unwrap()).unwrap();
    for &isa in isas {
        let mut got = c0.to_vec();
        gemm_q(
            isa,
            qa,
            qb,
            spec,
            MatMut::row_major(&mut got, m, n).unwrap(),
        )
        .unwrap();
        assert_bits(&got, &want, &format!("{isa:?} {what}"));
    }
}

fn assert_bits(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits(),
            "{what}: element {i}: got {g:e}, want {w:e}"
        );
    }
}

#[test]
fn q8_random_shapes_all_layouts() {
    let shapes = [
        (1, 1, 1),
        (7, 7, 7),
        (33, 33, 33),
        (6, 512, 16),
        (13, 515, 35),
        (1003, 37, 5),
        (5, 41, 1009),
        (9, 1030, 47),
        (50, 600, 70),
    ];
    let mut seed = 100;
    for &(m, k, n) in &shapes {
        for la in LAYOUTS {
            for lb in LAYOUTS {
                seed += 1;
                check_q8(
                    seed,
                    Case {
                        m,
                        k,
                        n,
                        segment: usize::MAX,
                        accumulate: seed % 2 == 0,
                        la,
                        lb,
                        sa: ScaleKind::PerIndex,
                        sb: ScaleKind::Uniform,
                        max_a: 127,
                        max_b: 128,
                    },
                );
            }
        }
    }
}

#[test]
fn q8_segments_and_scale_kinds() {
    let kinds = [
        ScaleKind::Uniform,
        ScaleKind::PerIndex,
        ScaleKind::PerSegment,
        ScaleKind::Grouped,
    ];
    let mut seed = 500;
    // Segments below, at and above the direct-path limit, and longer than one packing step.
    for &segment in &[1, 2, 3, 8, 9, 17, 600, 1024, usize::MAX] {
        for &(m, k, n) in &[
            (7, 5, 33),
            (20, 131, 40),
            (3, 1301, 19),
            (40, 64, 100),
            (5, 3001, 70),
        ] {
            for (i, &sa) in kinds.iter().enumerate() {
                seed += 1;
                let sb = kinds[(i + seed as usize) % kinds.len()];
                check_q8(
                    seed,
                    Case {
                        m,
                        k,
                        n,
                        segment,
                        accumulate: seed % 3 != 0,
                        la: LAYOUTS[seed as usize % 4],
                        lb: LAYOUTS[(seed as usize / 4) % 4],
                        sa,
                        sb,
                        max_a: 127,
                        max_b: 127,
                    },
                );
            }
        }
    }
}

/// One-element segments with power-of-two scales (002's per-example weight gradient of a linear
/// layer): the AVX2 family fuses the epilogue into one FMA where every scaling is exact, and must
/// give the reference's bits there and across the exponent limits where it falls back.
#[test]
fn q8_one_element_segments_pow2_scales() {
    // (a exponents, b exponents): ordinary, sums straddling 2^-126, single scales below 2^-126
    // (subnormal), products straddling 2^100, and one operand at the upper limit.
    let ranges = [
        ((-12, 2), (-20, 0)),
        ((-70, -50), (-80, -60)),
        ((-126, -120), (-8, 0)),
        ((-140, -127), (-4, 4)),
        ((40, 60), (40, 60)),
        ((98, 100), (-2, 0)),
    ];
    let mut seed = 900;
    for &(m, k, n) in &[
        (1, 1, 1),
        (10, 128, 784),
        (7, 33, 70),
        (33, 7, 1000),
        (3, 1000, 33),
        (2, 9, 45),
        (5, 130, 40),
    ] {
        for &((alo, ahi), (blo, bhi)) in &ranges {
            for grouped_b in [false, true] {
                seed += 1;
                let sb = if grouped_b {
                    ScaleKind::GroupedPow2(blo, bhi)
                } else {
                    ScaleKind::PerSegmentPow2(blo, bhi)
                };
                check_q8(
                    seed,
                    Case {
                        m,
                        k,
                        n,
                        segment: 1,
                        accumulate: seed % 2 == 0,
                        la: LAYOUTS[seed as usize % 4],
                        lb: LAYOUTS[(seed as usize / 4) % 4],
                        sa: ScaleKind::PerSegmentPow2(alo, ahi),
                        sb,
                        max_a: 127,
                        max_b: 127,
                    },
                );
            }
        }
    }
}

/// Segment lengths exercising chunks split across several packing steps with the per-task i32
/// buffer (K well past one 512-element step, several segments, scales per segment).
#[test]
fn q8_long_chunks_across_steps() {
    for (seed, &(m, k, n, segment)) in [
        (40, 2100, 70, 1500),
        (13, 4099, 9, usize::MAX),
        (70, 1600, 33, 700),
    ]
    .iter()
    .enumerate()
    {
        check_q8(
            seed as u64 + 900,
            Case {
                m,
                k,
                n,
                segment,
                accumulate: seed % 2 == 1,
                la: Layout::RowMajor,
                lb: Layout::Transposed,
                sa: ScaleKind::PerSegment,
                sb: ScaleKind::Grouped,
                max_a: 128,
                max_b: 127,
            },
        );
    }
}

/// All operands at the bound: sums reach i32's limit at K = k_safe and chunking takes over
/// just above it.
#[test]
fn q8_extremes_around_k_safe() {
    // (value of A, value of B, declared bound, K values)
    let cases: [(i8, i8, u32, [usize; 3]); 3] = [
        (127, 127, 127, [133_143, 133_144, 133_145]),
        (-127, 127, 127, [133_143, 133_144, 133_145]),
        (-128, -128, 128, [131_070, 131_071, 131_072]),
    ];
    for (va, vb, bound, ks) in cases {
        for k in ks {
            let (m, n) = (2, 3);
            let adata = vec![va; m * k];
            let bdata = vec![vb; k * n];
            let sa = [0.75f32];
            let sb = [2f32.powi(-20)];
            for (segment, la) in [
                (usize::MAX, Layout::RowMajor),
                (100_000, Layout::Transposed),
            ] {
                let qa = QMatRef {
                    mat: view(la, &adata, m, k),
                    scales: Scales::uniform(&sa),
                    max_abs: bound,
                };
                let qb = QMatRef {
                    mat: MatRef::row_major(&bdata, k, n).unwrap(),
                    scales: Scales::uniform(&sb),
                    max_abs: bound,
                };
                let spec = GemmSpec {
                    segment,
                    accumulate: false,
                };
                let mut want = vec![0f32; m * n];
                gemm_q8_ref(qa, qb, spec, MatMut::row_major(&mut want, m, n).unwrap()).unwrap();
                for isa in ISAS {
                    let mut got = vec![f32::NAN; m * n];
                    gemm_q(
                        isa,
                        qa,
                        qb,
                        spec,
                        MatMut::row_major(&mut got, m, n).unwrap(),
                    )
                    .unwrap();
                    assert_bits(
                        &got,
                        &want,
                        &format!("{isa:?} a={va} b={vb} K={k} seg={segment}"),
                    );
                }
            }
        }
    }
}

#[test]
fn q8_extremes_all_values_small_k() {
    // Every i8 value including -128 against every other, in one K reduction.
    let k = 256;
    let a: Vec<i8> = (0..k).map(|i| (i as i32 - 128) as i8).collect();
    let b: Vec<i8> = (0..k * 2).map(|i| ((i * 37) % 256) as u8 as i8).collect();
    let sa = [1.0f32];
    let sb = [1.0f32];
    let qa = QMatRef {
        mat: MatRef::row_major(&a, 1, k).unwrap(),
        scales: Scales::uniform(&sa),
        max_abs: 128,
    };
    let qb = QMatRef {
        mat: MatRef::row_major(&b, k, 2).unwrap(),
        scales: Scales::uniform(&sb),
        max_abs: 128,
    };
    let mut want = vec![0f32; 2];
    gemm_q8_ref(
        qa,
        qb,
        GemmSpec::whole_k(),
        MatMut::row_major(&mut want, 1, 2).unwrap(),
    )
    .unwrap();
    for isa in ISAS {
        let mut got = vec![0f32; 2];
        gemm_q(
            isa,
            qa,
            qb,
            GemmSpec::whole_k(),
            MatMut::row_major(&mut got, 1, 2).unwrap(),
        )
        .unwrap();
        assert_bits(&got, &want, &format!("{isa:?}"));
    }
}

/// NaN / Inf / signed zeros in scales and C flow through the epilogue exactly as in the reference.
#[test]
fn q8_non_finite_scales_and_c() {
    let (m, k, n) = (7, 20, 37);
    let a = rand_i8(7, 1, m * k, 127);
    let mut b = rand_i8(7, 2, k * n, 127);
    b[..n].fill(0); // some zero products
    let c0: Vec<f32> = (0..m * n)
        .map(|i| [0.0, -0.0, f32::NAN, f32::NEG_INFINITY, 1.0][i % 5])
        .collect();
    // Non-finite and odd scales; then powers of two (the fused one-element path) over a C with
    // NaN, infinities and signed zeros.
    let scale_sets: [(Vec<f32>, f32); 2] = [
        (
            vec![1.0, f32::NAN, -0.0, f32::INFINITY, 3.0, -2.0, 1e-30],
            -1.5,
        ),
        (
            vec![1.0, 0.5, -0.25, 2f32.powi(-126), 2f32.powi(90), -4.0, 2.0],
            -2.0,
        ),
    ];
    for (segment, (sa, sb)) in [1, 5, usize::MAX]
        .into_iter()
        .flat_map(|s| scale_sets.iter().map(move |x| (s, x)))
    {
        let sb = [*sb];
        for accumulate in [false, true] {
            let qa = QMatRef {
                mat: MatRef::row_major(&a, m, k).unwrap(),
                scales: Scales::per_index(sa),
                max_abs: 127,
            };
            let qb = QMatRef {
                mat: MatRef::row_major(&b, k, n).unwrap(),
                scales: Scales::uniform(&sb),
                max_abs: 127,
            };
            let spec = GemmSpec {
                segment,
                accumulate,
            };
            let mut want = c0.clone();
            gemm_q8_ref(qa, qb, spec, MatMut::row_major(&mut want, m, n).unwrap()).unwrap();
            for isa in ISAS {
                let mut got = c0.clone();
                gemm_q(
                    isa,
                    qa,
                    qb,
                    spec,
                    MatMut::row_major(&mut got, m, n).unwrap(),
                )
                .unwrap();
                assert_bits(
                    &got,
                    &want,
                    &format!("{isa:?} seg {segment} acc {accumulate} sa {sa:?}"),
                );
            }
        }
    }
}

#[test]
fn q8_empty_dimensions() {
    let s = [1.0f32];
    for (m, k, n) in [(0, 5, 4), (3, 0, 4), (3, 5, 0), (0, 0, 0)] {
        let a = vec![1i8; m * k];
        let b = vec![1i8; k * n];
        for accumulate in [false, true] {
            let qa = QMatRef {
                mat: MatRef::row_major(&a, m, k).unwrap(),
                scales: Scales::uniform(&s),
                max_abs: 127,
            };
            let qb = QMatRef {
                mat: MatRef::row_major(&b, k, n).unwrap(),
                scales: Scales::uniform(&s),
                max_abs: 127,
            };
            let spec = GemmSpec {
                segment: usize::MAX,
                accumulate,
            };
            let mut want = vec![5f32; m * n];
            let mut got = want.clone();
            gemm_q8_ref(qa, qb, spec, MatMut::row_major(&mut want, m, n).unwrap()).unwrap();
            gemm_q8(qa, qb, spec, MatMut::row_major(&mut got, m, n).unwrap()).unwrap();
            assert_bits(&got, &want, &format!("{m}x{k}x{n} acc {accumulate}"));
            if k == 0 && m * n > 0 {
                assert!(got.iter().all(|&v| v == if accumulate { 5.0 } else { 0.0 }));
            }
        }
    }
}

#[test]
fn q8_range_and_shape_errors() {
    let s = [1.0f32];
    let mut a = vec![3i8; 4 * 70];
    let b = vec![1i8; 70 * 5];
    a[2 * 70 + 65] = -128;
    let mut c = vec![0f32; 20];
    let qa = QMatRef {
        mat: MatRef::row_major(&a, 4, 70).unwrap(),
        scales: Scales::uniform(&s),
        max_abs: 127,
    };
    let qb = QMatRef {
        mat: MatRef::row_major(&b, 70, 5).unwrap(),
        scales: Scales::uniform(&s),
        max_abs: 127,
    };
    for isa in ISAS {
        match gemm_q(
            isa,
            qa,
            qb,
            GemmSpec::whole_k(),
            MatMut::row_major(&mut c, 4, 5).unwrap(),
        ) {
            Err(KernelError::Range(msg)) => assert!(msg.contains("A[2,65] = -128"), "{msg}"),
            other => panic!("expected a range error, got {other:?}"),
        }
        // The same element seen through a transposed view.
        let q_left = QMatRef {
            mat: MatRef::row_major(&b, 5, 70).unwrap(),
            ..qb
        };
        let q_right = QMatRef {
            mat: MatRef::row_major(&a, 4, 70).unwrap().t(),
            ..qa
        };
        let mut ct = vec![0f32; 20];
        match gemm_q(
            isa,
            q_left,
            q_right,
            GemmSpec::whole_k(),
            MatMut::row_major(&mut ct, 5, 4).unwrap(),
        ) {
            Err(KernelError::Range(msg)) => assert!(msg.contains("B[65,2] = -128"), "{msg}"),
            other => panic!("expected a range error, got {other:?}"),
        }
        // A bound below the data.
        let qsmall = QMatRef { max_abs: 0, ..qb };
        let qa_ok = QMatRef { max_abs: 128, ..qa };
        assert!(matches!(
            gemm_q(
                isa,
                qa_ok,
                qsmall,
                GemmSpec::whole_k(),
                MatMut::row_major(&mut c, 4, 5).unwrap()
            ),
            Err(KernelError::Range(_))
        ));
        // Shape errors: inner dimension, C size, view past its slice, missing scales, segment 0.
        let qa_ok = QMatRef { max_abs: 128, ..qa };
        let bad_b = QMatRef {
            mat: MatRef { rows: 69, ..qb.mat },
            ..qb
        };
        assert!(matches!(
            gemm_q(
                isa,
                qa_ok,
                bad_b,
                GemmSpec::whole_k(),
                MatMut::row_major(&mut c, 4, 5).unwrap()
            ),
            Err(KernelError::Shape(_))
        ));
        let mut c_small = vec![0f32; 20];
        let cm = MatMut {
            data: &mut c_small,
            rows: 4,
            cols: 5,
            ld: 6,
        };
        assert!(matches!(
            gemm_q(isa, qa_ok, qb, GemmSpec::whole_k(), cm),
            Err(KernelError::Shape(_))
        ));
        let past = QMatRef {
            mat: MatRef {
                row_stride: 71,
                ..qa_ok.mat
            },
            ..qa_ok
        };
        assert!(matches!(
            gemm_q(
                isa,
                past,
                qb,
                GemmSpec::whole_k(),
                MatMut::row_major(&mut c, 4, 5).unwrap()
            ),
            Err(KernelError::Shape(_))
        ));
        let per_seg = QMatRef {
            scales: Scales::per_segment(&s),
            ..qa_ok
        };
        assert!(matches!(
            gemm_q(
                isa,
                per_seg,
                qb,
                GemmSpec {
                    segment: 10,
                    accumulate: false
                },
                MatMut::row_major(&mut c, 4, 5).unwrap()
            ),
            Err(KernelError::Shape(_))
        ));
        assert!(matches!(
            gemm_q(
                isa,
                qa_ok,
                qb,
                GemmSpec {
                    segment: 0,
                    accumulate: false
                },
                MatMut::row_major(&mut c, 4, 5).unwrap()
            ),
            Err(KernelError::Shape(_))
        ));
    }
}

#[test]
fn q16_matches_reference() {
    // (bound, m, k, n, segment): wl = 12 (k_safe 512), wl = 16 (k_safe 2), -32768 allowed (k_safe 1).
    let cases = [
        (2047u32, 13, 1500, 21, usize::MAX),
        (2047, 6, 40, 16, 3),
        (32767, 9, 33, 35, usize::MAX),
        (32768, 7, 19, 18, 4),
        (255, 20, 700, 17, 300),
    ];
    for (i, &(bound, m, k, n, segment)) in cases.iter().enumerate() {
        let seed = 300 + i as u64;
        for (la, lb) in [
            (Layout::RowMajor, Layout::RowMajor),
            (Layout::Transposed, Layout::Strided),
        ] {
            let a = rand_i16(seed, 1, storage_len(la, m, k), bound);
            let b = rand_i16(seed, 2, storage_len(lb, k, n), bound);
            let segs = lowprec_kernels::segment_count(k, segment);
            let sa = rand_scales(seed, 3, m);
            let sb = rand_scales(seed, 4, segs);
            let qa = QMatRef {
                mat: view(la, &a, m, k),
                scales: Scales::per_index(&sa),
                max_abs: bound,
            };
            let qb = QMatRef {
                mat: view(lb, &b, k, n),
                scales: Scales::per_segment(&sb),
                max_abs: bound,
            };
            let spec = GemmSpec {
                segment,
                accumulate: i % 2 == 0,
            };
            let c0: Vec<f32> = (0..m * n).map(|j| j as f32 * 0.25).collect();
            let mut want = c0.clone();
            gemm_q16_ref(qa, qb, spec, MatMut::row_major(&mut want, m, n).unwrap()).unwrap();
            for isa in ISAS {
                let mut got = c0.clone();
                gemm_q(
                    isa,
                    qa,
                    qb,
                    spec,
                    MatMut::row_major(&mut got, m, n).unwrap(),
                )
                .unwrap();
                assert_bits(
                    &got,
                    &want,
                    &format!("{isa:?} bound {bound} {m}x{k}x{n} seg {segment}"),
                );
            }
            let mut got = c0.clone();
            gemm_q16(qa, qb, spec, MatMut::row_major(&mut got, m, n).unwrap()).unwrap();
            assert_bits(&got, &want, "gemm_q16");
        }
    }
}

#[test]
fn q16_extremes() {
    for (v, bound) in [(32767i16, 32767u32), (-32768, 32768), (-2047, 2047)] {
        let (m, k, n) = (3, 1030, 17);
        let a = vec![v; m * k];
        let b = vec![v; k * n];
        let s = [2f32.powi(-30)];
        let qa = QMatRef {
            mat: MatRef::row_major(&a, m, k).unwrap(),
            scales: Scales::uniform(&s),
            max_abs: bound,
        };
        let qb = QMatRef {
            mat: MatRef::row_major(&b, k, n).unwrap(),
            scales: Scales::uniform(&s),
            max_abs: bound,
        };
        let mut want = vec![0f32; m * n];
        gemm_q16_ref(
            qa,
            qb,
            GemmSpec::whole_k(),
            MatMut::row_major(&mut want, m, n).unwrap(),
        )
        .unwrap();
        for isa in ISAS {
            let mut got = vec![0f32; m * n];
            gemm_q(
                isa,
                qa,
                qb,
                GemmSpec::whole_k(),
                MatMut::row_major(&mut got, m, n).unwrap(),
            )
            .unwrap();
            assert_bits(&got, &want, &format!("{isa:?} {v}"));
        }
    }
}

#[test]
fn i8_i32_matches_reference() {
    for (i, &(m, k, n)) in [
        (1, 1, 1),
        (7, 33, 7),
        (33, 1000, 35),
        (100, 513, 3),
        (2, 131_071, 3),
    ]
    .iter()
    .enumerate()
    {
        for (la, lb) in [
            (Layout::RowMajor, Layout::RowMajor),
            (Layout::Transposed, Layout::Transposed),
            (Layout::Padded, Layout::Strided),
        ] {
            let seed = 40 + i as u64;
            let a = rand_i8(seed, 1, storage_len(la, m, k), 128);
            let b = rand_i8(seed, 2, storage_len(lb, k, n), 128);
            let (va, vb) = (view(la, &a, m, k), view(lb, &b, k, n));
            let mut want = vec![0i32; m * n];
            gemm_i8_i32_ref(va, vb, MatMut::row_major(&mut want, m, n).unwrap()).unwrap();
            for isa in ISAS {
                let mut got = vec![7i32; m * n];
                gemm_i8_i32_with(isa, va, vb, MatMut::row_major(&mut got, m, n).unwrap()).unwrap();
                assert_eq!(got, want, "{isa:?} {m}x{k}x{n}");
            }
        }
    }
    // All -128: the largest sums; K one past the safe bound is refused.
    let k = 131_071;
    let a = vec![-128i8; k];
    let b = vec![-128i8; k];
    let mut got = vec![0i32; 1];
    gemm_i8_i32(
        MatRef::row_major(&a, 1, k).unwrap(),
        MatRef::row_major(&b, k, 1).unwrap(),
        MatMut::row_major(&mut got, 1, 1).unwrap(),
    )
    .unwrap();
    assert_eq!(got[0], 16384 * k as i32);
    let a = vec![1i8; k + 1];
    let b = vec![1i8; k + 1];
    assert!(matches!(
        gemm_i8_i32(
            MatRef::row_major(&a, 1, k + 1).unwrap(),
            MatRef::row_major(&b, k + 1, 1).unwrap(),
            MatMut::row_major(&mut got, 1, 1).unwrap()
        ),
        Err(KernelError::Range(_))
    ));
}

/// The same bits at 1, 2 and 3 threads, on shapes large enough to be split.
#[test]
fn q8_thread_count_invariance() {
    let shapes = [
        (64, 300, 2000, usize::MAX),
        (700, 600, 64, 1000),
        (130, 96, 130, 1),
        (200, 1100, 150, 3),
    ];
    for (i, &(m, k, n, segment)) in shapes.iter().enumerate() {
        let seed = 77 + i as u64;
        let a = rand_i8(seed, 1, m * k, 127);
        let b = rand_i8(seed, 2, k * n, 127);
        let segs = lowprec_kernels::segment_count(k, segment);
        let sa = rand_scales(seed, 3, m);
        let sb = rand_scales(seed, 4, segs);
        let qa = QMatRef {
            mat: MatRef::row_major(&a, m, k).unwrap(),
            scales: Scales::per_index(&sa),
            max_abs: 127,
        };
        let qb = QMatRef {
            mat: MatRef::row_major(&b, k, n).unwrap(),
            scales: Scales::per_segment(&sb),
            max_abs: 127,
        };
        let spec = GemmSpec {
            segment,
            accumulate: true,
        };
        let c0: Vec<f32> = (0..m * n)
            .map(|j| f32_in(seed, 5, j as u64, -1.0, 1.0))
            .collect();
        let mut results = Vec::new();
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut got = c0.clone();
            pool.install(|| gemm_q8(qa, qb, spec, MatMut::row_major(&mut got, m, n).unwrap()))
                .unwrap();
            results.push(got);
        }
        let mut want = c0.clone();
        gemm_q8_ref(qa, qb, spec, MatMut::row_major(&mut want, m, n).unwrap()).unwrap();
        for (t, r) in results.iter().enumerate() {
            assert_bits(r, &want, &format!("{} threads, {m}x{k}x{n}", t + 1));
        }
    }
}

/// A range violation deep inside a large operand (scanned in parallel) is still found and
/// named exactly, in both storage orders.
#[test]
fn q8_range_error_in_large_operand() {
    let (m, k, n) = (4100, 1100, 3);
    let mut a = vec![5i8; m * k];
    a[3000 * k + 777] = -128;
    let b = vec![1i8; k * n];
    let s = [1.0f32];
    let mut c = vec![0f32; m * n];
    let qb = QMatRef {
        mat: MatRef::row_major(&b, k, n).unwrap(),
        scales: Scales::uniform(&s),
        max_abs: 127,
    };
    let qa = QMatRef {
        mat: MatRef::row_major(&a, m, k).unwrap(),
        scales: Scales::uniform(&s),
        max_abs: 127,
    };
    match gemm_q8(
        qa,
        qb,
        GemmSpec::whole_k(),
        MatMut::row_major(&mut c, m, n).unwrap(),
    ) {
        Err(KernelError::Range(msg)) => assert!(msg.contains("A[3000,777] = -128"), "{msg}"),
        other => panic!("expected a range error, got {other:?}"),
    }
    // The same storage seen as a transposed K x M operand on the B side.
    let qa2 = QMatRef {
        mat: MatRef::row_major(&b, n, k).unwrap(),
        ..qb
    };
    let qbt = QMatRef {
        mat: MatRef::row_major(&a, m, k).unwrap().t(),
        ..qa
    };
    let mut c2 = vec![0f32; n * m];
    match gemm_q8(
        qa2,
        qbt,
        GemmSpec::whole_k(),
        MatMut::row_major(&mut c2, n, m).unwrap(),
    ) {
        Err(KernelError::Range(msg)) => assert!(msg.contains("B[777,3000] = -128"), "{msg}"),
        other => panic!("expected a range error, got {other:?}"),
    }
}
