//! The simulator against the scalar reference (bit for bit), hand-computed cycle counts, bank
//! conflict-freedom, and invalid designs.

use lowprec_hw::design::ArrayDesign;
use lowprec_hw::sim::{bank_index, CoreCall, FpgaSim, GemmShape, Piece, ReadOrder};
use lowprec_kernels::reference::gemm_q8_ref;
use lowprec_kernels::{GemmBackend, GemmSpec, MatMut, MatRef, QMatRef, Scales};

/// Counter-based generator: value `index` of stream `stream` under `seed` (splitmix64).
fn draw(seed: u64, stream: u64, index: u64) -> u64 {
    let mut z = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(stream.wrapping_mul(0xD1B5_4A32_D192_ED03))
        .wrapping_add(index.wrapping_mul(0x94D0_49BB_1331_11EB))
        .wrapping_add(0x2545_F491_4F6C_DD1D);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn mantissas(seed: u64, stream: u64, len: usize, max_abs: i32) -> Vec<i8> {
    (0..len as u64)
        .map(|i| {
            let span = (2 * max_abs + 1) as u64;
            ((draw(seed, stream, i) % span) as i32 - max_abs) as i8
        })
        .collect()
}

fn scales(seed: u64, stream: u64, len: usize) -> Vec<f32> {
    (0..len as u64)
        .map(|i| {
            let e = (draw(seed, stream, i) % 24) as i32 - 12;
            let frac = 1.0 + (draw(seed, stream + 1000, i) % 1000) as f32 / 1000.0;
            frac * 2f32.powi(e)
        })
        .collect()
}

#[derive(Clone, Copy, Debug)]
struct Case {
    m: usize,
    k: usize,
    n: usize,
    segment: usize,
    accumulate: bool,
    a_transposed: bool,
    per_segment_scales: bool,
    max_abs: u32,
}

/// Runs one case on `sim` and on the reference; returns (sim output, reference output).
fn run_case(sim: &FpgaSim, seed: u64, cs: Case) -> (Vec<f32>, Vec<f32>) {
    let Case {
        m,
        k,
        n,
        segment,
        accumulate,
        a_transposed,
        per_segment_scales,
        max_abs,
    } = cs;
    let lim = max_abs.min(127) as i32;
    let mut a_data = mantissas(seed, 1, m * k, lim);
    let b_data = mantissas(seed, 2, k * n, lim);
    if max_abs == 128 && !a_data.is_empty() {
        a_data[0] = -128;
    }
    let segs = lowprec_kernels::segment_count(k, segment).max(1);
    let (sa, sb) = if per_segment_scales {
        (scales(seed, 3, segs), scales(seed, 5, segs))
    } else {
        (scales(seed, 3, m.max(1)), scales(seed, 5, n.max(1)))
    };
    let mk_scales = |v: &'static [f32]| {
        if per_segment_scales {
            Scales::per_segment(v)
        } else {
            Scales::per_index(v)
        }
    };
    let sa: &'static [f32] = Box::leak(sa.into_boxed_slice());
    let sb: &'static [f32] = Box::leak(sb.into_boxed_slice());
    // A either as a row-major m x k view or as the transpose of a row-major k x m matrix.
    let a_store: Vec<i8> = if a_transposed {
        let mut t = vec![0i8; m * k];
        for i in 0..m {
            for j in 0..k {
                t[j * m + i] = a_data[i * k + j];
            }
        }
        t
    } else {
        a_data.clone()
    };
    let a_view = if a_transposed {
        MatRef::row_major(&a_store, k, m).unwrap().t()
    } else {
        MatRef::row_major(&a_store, m, k).unwrap()
    };
    // B as the transpose of an n x k matrix (the channel-last stream of 002).
    let mut bt = vec![0i8; k * n];
    for i in 0..k {
        for j in 0..n {
            bt[j * k + i] = b_data[i * n + j];
        }
    }
    let b_view = MatRef::row_major(&bt, n, k).unwrap().t();
    let qa = QMatRef {
        mat: a_view,
        scales: mk_scales(sa),
        max_abs,
    };
    let qb = QMatRef {
        mat: b_view,
        scales: mk_scales(sb),
        max_abs,
    };
    let spec = GemmSpec {
        segment,
        accumulate,
    };
    let ld = n + 3;
    let init: Vec<f32> = (0..m * ld).map(|i| (i % 17) as f32 * 0.25 - 2.0).collect();
    let mut c_sim = init.clone();
    let mut c_ref = init;
    sim.gemm_q8(
        qa,
        qb,
        spec,
        MatMut {
            data: &mut c_sim,
            rows: m,
            cols: n,
            ld,
        },
    )
    .unwrap();
    gemm_q8_ref(
        qa,
        qb,
        spec,
        MatMut {
            data: &mut c_ref,
            rows: m,
            cols: n,
            ld,
        },
    )
    .unwrap();
    (c_sim, c_ref)
}

fn assert_bits(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
            "{what}: element {i}: sim {x} ({:#x}) vs reference {y} ({:#x})",
            x.to_bits(),
            y.to_bits()
        );
    }
}

#[test]
fn bit_exact_on_random_shapes_with_the_paper_design() {
    let sim = FpgaSim::from_spec("zcu111-32x32").unwrap();
    assert_eq!(sim.name(), "fpga-sim:zcu111-32x32");
    let shapes = [
        (1, 1, 1),
        (7, 33, 5),
        (33, 7, 9),
        (64, 576, 3),
        (1, 1000, 2),
        (700, 40, 3),   // M beyond A_max rows (672)
        (20, 6100, 2),  // K beyond A_max cols (6080)
        (31, 1025, 17), // awkward everything
    ];
    for (si, &(m, k, n)) in shapes.iter().enumerate() {
        for (vi, &(segment, accumulate, a_t, per_seg)) in [
            (usize::MAX, false, false, false),
            (usize::MAX, true, true, false),
            (7, false, false, true),
            (3, true, true, true),
        ]
        .iter()
        .enumerate()
        {
            let cs = Case {
                m,
                k,
                n,
                segment,
                accumulate,
                a_transposed: a_t,
                per_segment_scales: per_seg,
                max_abs: 127,
            };
            let (s, r) = run_case(&sim, 1000 + (si * 10 + vi) as u64, cs);
            assert_bits(&s, &r, &format!("{cs:?}"));
        }
    }
}

#[test]
fn bit_exact_when_tiles_split_chunks_and_k_safe_cuts() {
    // A tiny design forces many tiles: 8 x 8 A_max on a 4 x 4 array.
    let d = ArrayDesign::new("pynq-z1", 4, 8, 12, 100.0).unwrap();
    let sim = FpgaSim::new(d);
    for (i, &(m, k, n, segment)) in [
        (9, 30, 5, 7),
        (13, 25, 3, 5),
        (8, 12, 4, usize::MAX),
        (17, 37, 2, 11),
        (3, 100, 1, 1),
    ]
    .iter()
    .enumerate()
    {
        for acc in [false, true] {
            for a_t in [false, true] {
                let cs = Case {
                    m,
                    k,
                    n,
                    segment,
                    accumulate: acc,
                    a_transposed: a_t,
                    per_segment_scales: i % 2 == 0,
                    max_abs: 127,
                };
                let (s, r) = run_case(&sim, 77 + i as u64, cs);
                assert_bits(&s, &r, &format!("{cs:?}"));
            }
        }
    }
    // K beyond k_safe(128, 128) = 131071: chunks cut inside one segment, spanning tiles.
    let d = ArrayDesign::new("zcu111", 8, 16, 4096, 200.0).unwrap();
    let sim = FpgaSim::new(d);
    let cs = Case {
        m: 3,
        k: 140_000,
        n: 2,
        segment: usize::MAX,
        accumulate: false,
        a_transposed: false,
        per_segment_scales: false,
        max_abs: 128,
    };
    let (s, r) = run_case(&sim, 5, cs);
    assert_bits(&s, &r, "k beyond k_safe");
    assert!(
        sim.counters().bytes_partial_out > 0,
        "tiles carried partial sums"
    );
}

#[test]
fn empty_and_extreme_inputs() {
    let sim = FpgaSim::from_spec("pynq-z1-8x8").unwrap();
    // K = 0: C is cleared (or kept when accumulating), no core call.
    for acc in [false, true] {
        let mut c = vec![5.0f32; 6];
        let a: [i8; 0] = [];
        let s = [1.0f32];
        let qa = QMatRef {
            mat: MatRef::row_major(&a, 2, 0).unwrap(),
            scales: Scales::uniform(&s),
            max_abs: 127,
        };
        let qb = QMatRef {
            mat: MatRef::row_major(&a, 0, 3).unwrap(),
            scales: Scales::uniform(&s),
            max_abs: 127,
        };
        let spec = GemmSpec {
            segment: usize::MAX,
            accumulate: acc,
        };
        sim.gemm_q8(qa, qb, spec, MatMut::row_major(&mut c, 2, 3).unwrap())
            .unwrap();
        assert!(c.iter().all(|&v| v == if acc { 5.0 } else { 0.0 }));
    }
    // Max magnitudes everywhere, and non-finite scales propagate identically.
    let m = 9;
    let k = 70;
    let n = 4;
    let a = vec![-128i8; m * k];
    let b = vec![-128i8; k * n];
    for sval in [1.0f32, f32::INFINITY, f32::NAN, 0.0, 3.0e38] {
        let s = [sval];
        let qa = QMatRef {
            mat: MatRef::row_major(&a, m, k).unwrap(),
            scales: Scales::uniform(&s),
            max_abs: 128,
        };
        let qb = QMatRef {
            mat: MatRef::row_major(&b, k, n).unwrap(),
            scales: Scales::uniform(&s),
            max_abs: 128,
        };
        let spec = GemmSpec::whole_k();
        let mut c1 = vec![0f32; m * n];
        let mut c2 = vec![0f32; m * n];
        sim.gemm_q8(qa, qb, spec, MatMut::row_major(&mut c1, m, n).unwrap())
            .unwrap();
        gemm_q8_ref(qa, qb, spec, MatMut::row_major(&mut c2, m, n).unwrap()).unwrap();
        assert_bits(&c1, &c2, &format!("scale {sval}"));
    }
    // Bad input is an error, not a panic: wrong shapes and out-of-range mantissas.
    let s = [1.0f32];
    let a = vec![1i8; 6];
    let qa = QMatRef {
        mat: MatRef::row_major(&a, 2, 3).unwrap(),
        scales: Scales::uniform(&s),
        max_abs: 127,
    };
    let qb = QMatRef {
        mat: MatRef::row_major(&a, 2, 3).unwrap(),
        scales: Scales::uniform(&s),
        max_abs: 127,
    };
    let mut c = vec![0f32; 9];
    assert!(sim
        .gemm_q8(
            qa,
            qb,
            GemmSpec::whole_k(),
            MatMut::row_major(&mut c, 2, 3).unwrap()
        )
        .is_err());
    let bad = vec![-128i8; 9];
    let qbad = QMatRef {
        mat: MatRef::row_major(&bad, 3, 3).unwrap(),
        scales: Scales::uniform(&s),
        max_abs: 127,
    };
    assert!(sim
        .gemm_q8(
            qa,
            qbad,
            GemmSpec::whole_k(),
            MatMut::row_major(&mut c, 2, 3).unwrap()
        )
        .is_err());
}

#[test]
fn cycle_counts_match_a_hand_computed_case() {
    // 4 x 4 array at 100 MHz with a DMA of exactly 1 byte per cycle.
    let d = ArrayDesign::new("pynq-z1", 4, 16, 16, 100.0).unwrap();
    let sim = FpgaSim::new(d).with_dma_bandwidth(100e6).unwrap();
    let (m, k, n) = (8, 8, 3);
    let a = vec![1i8; m * k];
    let b = vec![1i8; k * n];
    let s = [1.0f32];
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
    let mut c = vec![0f32; m * n];
    sim.gemm_q8(
        qa,
        qb,
        GemmSpec::whole_k(),
        MatMut::row_major(&mut c, m, n).unwrap(),
    )
    .unwrap();
    assert!(c.iter().all(|&v| v == 8.0));
    let ct = sim.counters();
    // Per B row: 2 output blocks x 2 K steps = 4 cycles; 3 rows.
    assert_eq!(ct.array_cycles, 12);
    assert_eq!(ct.macs, 192);
    assert_eq!(ct.bytes_a, 64);
    assert_eq!(ct.preload_cycles, 64);
    assert_eq!(ct.bytes_b, 24);
    assert_eq!(ct.bytes_c_out, 96);
    // Timeline (in = 8 cycles, out = 32): in0 64..72, in1 72..80, row0 72..76 (stall 8),
    // out0 80..112, in2 112..120, row1 80..84 (stall 4), out1 120..152, row2 120..124
    // (stall 36), out2 152..184; drain = 3 + log2(4) + 20 = 25.
    assert_eq!(ct.stall_cycles, 48);
    assert_eq!(ct.drain_cycles, 25);
    assert_eq!(ct.total_cycles, 184 + 25);
    assert_eq!(ct.core_calls, 1);

    // The same A again is resident: no preload.
    sim.gemm_q8(
        qa,
        qb,
        GemmSpec::whole_k(),
        MatMut::row_major(&mut c, m, n).unwrap(),
    )
    .unwrap();
    let ct2 = sim.counters();
    assert_eq!(ct2.a_resident_hits, 1);
    assert_eq!(ct2.bytes_a, 64);
}

#[test]
fn chunks_not_aligned_to_n_cost_their_own_steps() {
    let d = ArrayDesign::new("zcu111", 8, 64, 64, 200.0).unwrap();
    let sim = FpgaSim::new(d);
    let cfg = sim.config();
    // K = 20 in segments of 6: pieces 6, 6, 6, 2 -> 1 step each on an 8-wide array.
    let plan = cfg.plan(shape(16, 20, 5, 6, usize::MAX, false), ReadOrder::RowMajor);
    assert_eq!(plan.calls.len(), 1);
    assert_eq!(cfg.row_cycles(&plan.calls[0]), 2 * 4);
    // K tiles of 64 inside one 100-long chunk: carry out, then carry in.
    let plan = cfg.plan(
        shape(4, 100, 1, usize::MAX, usize::MAX, true),
        ReadOrder::RowMajor,
    );
    assert_eq!(
        plan.calls,
        vec![
            CoreCall {
                m0: 0,
                m1: 4,
                k0: 0,
                k1: 64,
                pieces: vec![Piece {
                    seg: 0,
                    start: 0,
                    end: 64,
                    ends_chunk: false
                }],
                carry_in: false,
                carry_out: true,
                c_read: false,
                flush: false,
            },
            CoreCall {
                m0: 0,
                m1: 4,
                k0: 64,
                k1: 100,
                pieces: vec![Piece {
                    seg: 0,
                    start: 64,
                    end: 100,
                    ends_chunk: true
                }],
                carry_in: true,
                carry_out: false,
                c_read: true,
                flush: true,
            },
        ]
    );
}

#[test]
fn run_counters_equal_the_plan_counters() {
    let sim = FpgaSim::from_spec("zcu111-16x16-240x2198@262").unwrap();
    for &(m, k, n, seg) in &[(40, 300, 7, 9), (250, 2200, 3, usize::MAX), (5, 1, 1, 1)] {
        sim.reset_counters();
        let a = vec![3i8; m * k];
        let b = vec![-2i8; k * n];
        let s = [0.5f32];
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
        let mut c = vec![0f32; m * n];
        let spec = GemmSpec {
            segment: seg,
            accumulate: false,
        };
        sim.gemm_q8(qa, qb, spec, MatMut::row_major(&mut c, m, n).unwrap())
            .unwrap();
        let plan = sim
            .config()
            .plan(shape(m, k, n, seg, usize::MAX, false), ReadOrder::RowMajor);
        assert_eq!(sim.counters(), sim.config().time_plan(&plan), "{m}x{k}x{n}");
    }
}

#[test]
fn w_and_w_transpose_share_one_resident_copy() {
    let sim = FpgaSim::from_spec("zcu111-32x32").unwrap();
    let (oc, kk, wh) = (64, 576, 10);
    let w = mantissas(9, 1, oc * kk, 127);
    let x = mantissas(9, 2, kk * wh, 127);
    let e = mantissas(9, 3, oc * wh, 127);
    let s = [1.0f32];
    let u = Scales::uniform(&s);
    let wv = MatRef::row_major(&w, oc, kk).unwrap();
    let mut c1 = vec![0f32; oc * wh];
    sim.gemm_q8(
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
        GemmSpec::whole_k(),
        MatMut::row_major(&mut c1, oc, wh).unwrap(),
    )
    .unwrap();
    let mut c2 = vec![0f32; kk * wh];
    sim.gemm_q8(
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
        GemmSpec::whole_k(),
        MatMut::row_major(&mut c2, kk, wh).unwrap(),
    )
    .unwrap();
    let ct = sim.counters();
    assert_eq!(
        ct.a_resident_hits, 1,
        "W^T read column-major from the stored W"
    );
    assert_eq!(ct.bytes_a, (oc * kk) as u64);
}

#[test]
fn every_array_read_hits_distinct_banks() {
    for n in [2usize, 4, 8, 16] {
        let (rows, cols) = (3 * n + 1, 5 * n + 3);
        let cw = cols.div_ceil(n);
        for order in [ReadOrder::RowMajor, ReadOrder::ColMajor] {
            let (mext, kext) = match order {
                ReadOrder::RowMajor => (rows, cols),
                ReadOrder::ColMajor => (cols, rows),
            };
            for mb in (0..mext).step_by(n) {
                for k0 in 0..kext {
                    let mut seen = std::collections::HashSet::new();
                    for j in 0..n.min(mext - mb) {
                        for i in 0..n.min(kext - k0) {
                            let (r, c) = match order {
                                ReadOrder::RowMajor => (mb + j, k0 + i),
                                ReadOrder::ColMajor => (k0 + i, mb + j),
                            };
                            let idx = bank_index(n, cw, r, c);
                            assert!(seen.insert(idx % (n * n)), "bank conflict n={n} {order:?}");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn invalid_designs_are_errors() {
    for spec in [
        "zcu111-33x33",
        "zcu111-32x16",
        "nosuchboard-8x8",
        "pynq-z1-8x8-1000x10000",
        "zcu111-64x64-672x6080",
        "zcu111",
        "-8x8",
        "zcu111-32x32@-5",
        "zcu111-32x32-1x2-3",
        "pynq-z1-32x32",
    ] {
        let r = FpgaSim::from_spec(spec);
        assert!(r.is_err(), "{spec} should be rejected");
        let msg = r.unwrap_err().to_string();
        assert!(!msg.is_empty());
    }
    assert!(ArrayDesign::new("zcu111", 32, 0, 10, 100.0).is_err());
    assert!(ArrayDesign::new("zcu111", 32, 10, 10, f64::NAN).is_err());
    // Valid specs round-trip.
    let d = ArrayDesign::from_spec("pynq-z1-8x8-168x1520@100").unwrap();
    assert_eq!(ArrayDesign::from_spec(&d.spec()).unwrap().spec(), d.spec());
    assert_eq!(
        FpgaSim::from_spec("fpga-sim:zcu111-32x32")
            .unwrap()
            .design()
            .a_rows,
        672
    );
}

fn shape(
    m: usize,
    k: usize,
    n: usize,
    segment: usize,
    k_safe: usize,
    accumulate: bool,
) -> GemmShape {
    GemmShape {
        m,
        k,
        n,
        segment,
        k_safe,
        accumulate,
    }
}

#[test]
fn bits_do_not_depend_on_the_thread_count_and_group_scales_work() {
    let (m, k, n) = (70, 300, 9);
    let a = mantissas(21, 1, m * k, 127);
    let b = mantissas(21, 2, k * n, 127);
    let segs = lowprec_kernels::segment_count(k, 50);
    let sa = scales(21, 3, segs * m.div_ceil(16));
    let sb = scales(21, 5, segs * n.div_ceil(4));
    let qa = QMatRef {
        mat: MatRef::row_major(&a, m, k).unwrap(),
        scales: Scales {
            values: &sa,
            group: 16,
            seg_stride: m.div_ceil(16),
        },
        max_abs: 127,
    };
    let qb = QMatRef {
        mat: MatRef::row_major(&b, k, n).unwrap(),
        scales: Scales {
            values: &sb,
            group: 4,
            seg_stride: n.div_ceil(4),
        },
        max_abs: 127,
    };
    let spec = GemmSpec {
        segment: 50,
        accumulate: false,
    };
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let sim = FpgaSim::from_spec("zcu111-16x16").unwrap();
        let mut c = vec![0f32; m * n];
        pool.install(|| {
            sim.gemm_q8(qa, qb, spec, MatMut::row_major(&mut c, m, n).unwrap())
                .unwrap()
        });
        (c, sim.counters())
    };
    let (c1, k1) = run(1);
    let (c3, k3) = run(3);
    assert_bits(&c1, &c3, "1 vs 3 threads");
    assert_eq!(k1, k3);
    let mut r = vec![0f32; m * n];
    gemm_q8_ref(qa, qb, spec, MatMut::row_major(&mut r, m, n).unwrap()).unwrap();
    assert_bits(&c1, &r, "group scales");
}

#[test]
fn wide_and_float_gemms_run_on_the_processor() {
    let sim = FpgaSim::from_spec("pynq-z1-8x8").unwrap();
    let a16: Vec<i16> = (0..12).map(|i| (i * 300 - 1500) as i16).collect();
    let q = |d: &'static [i16], r, c| QMatRef {
        mat: MatRef::row_major(d, r, c).unwrap(),
        scales: Scales::uniform(&[0.5]),
        max_abs: 2047,
    };
    let a16: &'static [i16] = Box::leak(a16.into_boxed_slice());
    let mut c1 = vec![0f32; 9];
    let mut c2 = vec![0f32; 9];
    sim.gemm_q16(
        q(a16, 3, 4),
        q(a16, 4, 3),
        GemmSpec::whole_k(),
        MatMut::row_major(&mut c1, 3, 3).unwrap(),
    )
    .unwrap();
    lowprec_kernels::reference::gemm_q16_ref(
        q(a16, 3, 4),
        q(a16, 4, 3),
        GemmSpec::whole_k(),
        MatMut::row_major(&mut c2, 3, 3).unwrap(),
    )
    .unwrap();
    assert_bits(&c1, &c2, "q16");
    let f: Vec<f32> = (0..12).map(|i| i as f32 * 0.25 - 1.0).collect();
    let mut cf = vec![0f32; 9];
    sim.gemm_f32(
        MatRef::row_major(&f, 3, 4).unwrap(),
        MatRef::row_major(&f, 4, 3).unwrap(),
        false,
        MatMut::row_major(&mut cf, 3, 3).unwrap(),
    )
    .unwrap();
    let r = lowprec_kernels::reference::gemm_f64_ref(
        MatRef::row_major(&f, 3, 4).unwrap(),
        MatRef::row_major(&f, 4, 3).unwrap(),
    );
    for (x, y) in cf.iter().zip(&r) {
        assert!(
            (*x as f64 - y).abs() <= 1e-6 * y.abs().max(1.0),
            "{x} vs {y}"
        );
    }
    let ct = sim.counters();
    assert_eq!(
        (ct.cpu_q16_calls, ct.cpu_f32_calls, ct.core_calls),
        (1, 1, 0)
    );
}
