//! FPGA BFP: the fast quantiser against the f64 reference, bit for bit, on awkward shapes and
//! edge values; presets, parsing and bad input.

use lowprec_formats::fpga::{
    f16_bits_saturating, f16_round_ref, f16_round_slice_with, fake_quantize_fpga, quantize_fpga,
    quantize_fpga_into_with, quantize_fpga_ref, quantize_fpga_with, BlockKernel,
};
use lowprec_formats::*;
use proptest::prelude::*;

fn all_formats() -> Vec<FpgaBfp> {
    let mut v = Vec::new();
    for (_, p) in FpgaBfp::PRESETS {
        for cv in [4, 8, 16, 32, 64] {
            for r in [
                FpgaRounding::Truncate,
                FpgaRounding::Nearest,
                FpgaRounding::NearestEven,
                FpgaRounding::Stochastic,
            ] {
                v.push(FpgaBfp {
                    c_vector: cv,
                    rounding: r,
                    ..p
                });
            }
        }
    }
    for w in [2, 3, 6, 10, 12] {
        for code in [MantissaCode::SignMagnitude, MantissaCode::TwosComplement] {
            v.push(FpgaBfp {
                width: w,
                code,
                c_vector: 8,
                rounding: FpgaRounding::NearestEven,
            });
        }
    }
    v
}

fn check_same(x: &[f32], view: ChannelView, f: &FpgaBfp, seed: u64) {
    let key = StreamKey::new(seed, 3);
    let fast = quantize_fpga(x, view, f, key, "x").unwrap();
    let (q, e) = quantize_fpga_ref(x, view, f, key).unwrap();
    assert_eq!(fast.exponents, e, "{f} exponents, view {view:?}");
    let fm: Vec<i32> = fast.mantissas.iter().map(|&m| m as i32).collect();
    assert_eq!(fm, q, "{f} mantissas, view {view:?}, x {x:?}");
    let (lo, hi) = f.mantissa_range();
    assert!(q.iter().all(|&m| m >= lo && m <= hi));
    // fake quantisation is the dequantised tensor, and values re-quantise to themselves
    // under deterministic rounding
    let mut out = vec![0f32; x.len()];
    fake_quantize_fpga(x, view, f, key, "x", &mut out).unwrap();
    assert_eq!(out, fast.dequantize());
    // (a two's-complement mantissa of -2^P is -2^(E-14), which moves the block's exponent up)
    if f.rounding != FpgaRounding::Stochastic && !q.contains(&lo) {
        let again = quantize_fpga(&out, view, f, key, "x").unwrap();
        assert_eq!(again.dequantize(), out, "{f}: not idempotent");
    }
}

fn edge_values() -> Vec<f32> {
    vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        65504.0,
        -65504.0,
        65520.0,
        1e9,
        -1e30,
        f32::MAX,
        f32::MIN,
        6.1035156e-5, // smallest normal fp16
        5.9604645e-8, // smallest subnormal fp16
        2.9802322e-8, // half of it: ties to zero
        3.0e-8,       // rounds up to the smallest subnormal
        1e-30,
        f32::MIN_POSITIVE,
        1.0 + 1.0 / 1024.0, // 1 + 2^-10
        1.0 + 1.0 / 2048.0, // 1 + 2^-11: a tie in fp16
        -3.75,
        0.1,
        -0.33333334,
        2047.0,
        -2048.0,
    ]
}

#[test]
fn edges_every_format() {
    let x = edge_values();
    for f in all_formats() {
        for view in [
            ChannelView {
                outer: 1,
                channels: x.len(),
                inner: 1,
            },
            ChannelView {
                outer: 2,
                channels: 3,
                inner: 4,
            },
            ChannelView {
                outer: 4,
                channels: 6,
                inner: 1,
            },
            ChannelView {
                outer: 1,
                channels: 1,
                inner: 24,
            },
        ] {
            check_same(&x, view, &f, 7);
        }
    }
}

#[test]
fn awkward_sizes_and_zeros() {
    let mut s = 1u64;
    let mut next = || {
        s = lowprec_formats::rng::splitmix64(s);
        let u = (s >> 11) as f64 / (1u64 << 53) as f64;
        let scale = 2f64.powi(((s >> 3) % 40) as i32 - 25);
        ((u - 0.5) * scale) as f32
    };
    for &(o, c, i) in &[
        (1, 1, 1),
        (1, 7, 1),
        (3, 33, 1),
        (1, 1000, 1),
        (2, 65, 3),
        (5, 7, 33),
        (1, 1030, 2),
    ] {
        let x: Vec<f32> = (0..o * c * i).map(|_| next()).collect();
        let view = ChannelView {
            outer: o,
            channels: c,
            inner: i,
        };
        for f in all_formats().iter().step_by(3) {
            check_same(&x, view, f, 11);
        }
        let zeros = vec![0f32; x.len()];
        let t = quantize_fpga(&zeros, view, &FpgaBfp::INT5, StreamKey::new(0, 0), "z").unwrap();
        assert!(t.mantissas.iter().all(|&m| m == 0));
        assert!(t.exponents.iter().all(|&e| e == 0));
    }
    // empty tensors
    let view = ChannelView {
        outer: 0,
        channels: 8,
        inner: 1,
    };
    let t = quantize_fpga(&[], view, &FpgaBfp::INT4, StreamKey::new(0, 0), "e").unwrap();
    assert!(t.mantissas.is_empty() && t.exponents.is_empty());
}

#[test]
fn large_tensor_parallel_path_matches_reference() {
    let n = 70_000;
    let x: Vec<f32> = (0..n)
        .map(|i| (i as f32 * 0.618).sin() * 10f32.powi((i % 7) - 3))
        .collect();
    let view = ChannelView {
        outer: 70,
        channels: 100,
        inner: 10,
    };
    for f in [FpgaBfp::INT4, FpgaBfp::INT8, FpgaBfp::INT12] {
        check_same(&x, view, &f, 5);
        let sr = FpgaBfp {
            rounding: FpgaRounding::Stochastic,
            ..f
        };
        check_same(&x, view, &sr, 5);
    }
}

#[test]
fn fp16_conversion_matches_reference() {
    let mut vals = edge_values();
    for k in -30..20 {
        let b = 2f32.powi(k);
        vals.extend([
            b,
            b * 1.5,
            b * (1.0 + 1.0 / 2048.0),
            b * (1.0 - 1.0 / 2048.0),
            -b * 1.3,
        ]);
    }
    for v in vals {
        let fast = half::f16::from_bits(f16_bits_saturating(v)).to_f64();
        assert_eq!(fast, f16_round_ref(v), "fp16 of {v}");
    }
}

/// Every block kernel against the scalar integer path and the f64 reference, through both
/// entry points (the tensor and the caller's 8-/16-bit buffers).
fn check_kernels(x: &[f32], view: ChannelView, f: &FpgaBfp) {
    let key = StreamKey::new(0, 0);
    let (q, e) = quantize_fpga_ref(x, view, f, key).unwrap();
    let scalar = quantize_fpga_with(BlockKernel::Scalar, x, view, f, key, "x").unwrap();
    let sm: Vec<i32> = scalar.mantissas.iter().map(|&m| m as i32).collect();
    assert_eq!((&sm, &scalar.exponents), (&q, &e), "{f} scalar, {view:?}");
    for k in BlockKernel::available() {
        let t = quantize_fpga_with(k, x, view, f, key, "x").unwrap();
        assert_eq!(t, scalar, "{f} on {k:?}, {view:?}");
        let mut m16 = vec![0i16; x.len()];
        let mut e16 = vec![0xaau8; view.num_blocks(f.c_vector)];
        quantize_fpga_into_with(k, x, view, f, "x", &mut m16, &mut e16).unwrap();
        assert_eq!(
            (&m16, &e16),
            (&scalar.mantissas, &scalar.exponents),
            "{f} i16 on {k:?}"
        );
        if f.width <= 8 {
            let mut m8 = vec![0i8; x.len()];
            let mut e8 = vec![0x55u8; view.num_blocks(f.c_vector)];
            quantize_fpga_into_with(k, x, view, f, "x", &mut m8, &mut e8).unwrap();
            let m8: Vec<i16> = m8.iter().map(|&v| v as i16).collect();
            assert_eq!(
                (&m8, &e8),
                (&scalar.mantissas, &scalar.exponents),
                "{f} i8 on {k:?}"
            );
        }
    }
}

fn deterministic_formats() -> Vec<FpgaBfp> {
    all_formats()
        .into_iter()
        .filter(|f| f.rounding != FpgaRounding::Stochastic)
        .collect()
}

#[test]
fn block_kernels_agree_on_awkward_sizes_and_edges() {
    assert!(BlockKernel::available().contains(&BlockKernel::best()));
    let mut s = 9u64;
    let mut next = || {
        s = lowprec_formats::rng::splitmix64(s);
        let u = (s >> 11) as f64 / (1u64 << 53) as f64;
        let scale = 2f64.powi(((s >> 3) % 48) as i32 - 30);
        ((u - 0.5) * scale) as f32
    };
    let edges = edge_values();
    for &(o, c, i) in &[
        (1, 1, 1),
        (1, 7, 1),
        (3, 33, 1),
        (1, 1000, 1),
        (2, 65, 3),
        (5, 7, 33),
        (1, 1030, 2),
        (2, 16, 17),
        (1, 70, 31),
        (3, 5, 1024),
    ] {
        let mut x: Vec<f32> = (0..o * c * i).map(|_| next()).collect();
        // edge values sprinkled in: zeros, subnormals, ties, values that saturate FP16
        for (k, v) in x.iter_mut().enumerate() {
            if k % 5 == 2 {
                *v = edges[(k / 5) % edges.len()];
            }
        }
        let view = ChannelView {
            outer: o,
            channels: c,
            inner: i,
        };
        for f in deterministic_formats() {
            check_kernels(&x, view, &f);
        }
        let zeros = vec![0f32; x.len()];
        check_kernels(&zeros, view, &FpgaBfp::INT5);
        let negz = vec![-0f32; x.len()];
        check_kernels(&negz, view, &FpgaBfp::INT8);
    }
    // every edge value alone in its block and beside the largest
    for f in deterministic_formats() {
        for &v in &edges {
            for &w in &[0.0f32, 65504.0, -1e-7, 3.0] {
                let x = [v, w, -v, v * 0.5, w * 0.25];
                check_kernels(&x, ChannelView::from_shape(&[1, 5]), &f);
                check_kernels(&x, ChannelView::from_shape(&[1, 1, 5]), &f);
            }
        }
    }
}

#[test]
fn block_kernels_refuse_what_they_cannot_write() {
    let x = [1.0f32; 8];
    let v = ChannelView::from_shape(&[8]);
    let sr = FpgaBfp {
        rounding: FpgaRounding::Stochastic,
        ..FpgaBfp::INT5
    };
    let (mut m, mut e) = (vec![0i8; 8], vec![0u8; 1]);
    let err = quantize_fpga_into_with(BlockKernel::best(), &x, v, &sr, "a", &mut m, &mut e);
    assert!(err.unwrap_err().to_string().contains("stochastic"));
    let err = quantize_fpga_into_with(
        BlockKernel::best(),
        &x,
        v,
        &FpgaBfp::INT9,
        "a",
        &mut m,
        &mut e,
    );
    assert!(err.unwrap_err().to_string().contains("8-bit"));
    let mut short = vec![0i8; 7];
    let err = quantize_fpga_into_with(
        BlockKernel::best(),
        &x,
        v,
        &FpgaBfp::INT5,
        "a",
        &mut short,
        &mut e,
    );
    assert!(err.unwrap_err().to_string().contains("a:"));
    let mut bad = x;
    bad[3] = f32::NAN;
    let err = quantize_fpga_into_with(
        BlockKernel::best(),
        &bad,
        v,
        &FpgaBfp::INT5,
        "acts",
        &mut m,
        &mut e,
    );
    assert!(err.unwrap_err().to_string().contains("element 3"));
}

#[test]
fn fp16_rounding_of_slices_matches_the_scalar_conversion() {
    let mut vals = edge_values();
    for k in -30..20 {
        let b = 2f32.powi(k);
        vals.extend([
            b,
            b * 1.5,
            b * (1.0 + 1.0 / 2048.0),
            -b * (1.0 - 1.0 / 4096.0),
        ]);
    }
    vals.extend([65519.0, 65520.0, -65519.99, 1e-45, -1e-45]);
    for n in [1, 7, 16, 33, 1000, vals.len()] {
        let x: Vec<f32> = (0..n).map(|i| vals[(i * 7) % vals.len()]).collect();
        let want: Vec<u32> = x
            .iter()
            .map(|&v| {
                half::f16::from_bits(f16_bits_saturating(v))
                    .to_f32()
                    .to_bits()
            })
            .collect();
        for k in BlockKernel::available() {
            let mut y = x.clone();
            f16_round_slice_with(k, &mut y);
            let got: Vec<u32> = y.iter().map(|v| v.to_bits()).collect();
            assert_eq!(got, want, "{k:?}, {n} values");
        }
    }
}

#[test]
fn documented_examples() {
    // INT12 keeps FP16's significand at the block maximum: 1.5 and 0.75 in one block.
    let f = FpgaBfp {
        c_vector: 4,
        ..FpgaBfp::INT12
    };
    let v = ChannelView::from_shape(&[1, 4]);
    let t = quantize_fpga(&[1.5, 0.75, -0.001, 0.0], v, &f, StreamKey::new(0, 0), "x").unwrap();
    assert_eq!(t.exponents, vec![15]);
    assert_eq!(&t.mantissas[..2], &[1536, 768]);
    assert_eq!(t.dequantize()[..2], [1.5, 0.75]);
    // int4 sign-magnitude truncation is toward zero, two's complement truncation a floor.
    let sm = FpgaBfp {
        c_vector: 4,
        rounding: FpgaRounding::Truncate,
        ..FpgaBfp::INT4
    };
    let tc = FpgaBfp {
        code: MantissaCode::TwosComplement,
        ..sm
    };
    let x = [1.0, -0.3, 0.3, 0.0];
    let a = quantize_fpga(&x, v, &sm, StreamKey::new(0, 0), "x").unwrap();
    let b = quantize_fpga(&x, v, &tc, StreamKey::new(0, 0), "x").unwrap();
    // step 2^(15-14-3) = 0.25: -0.3 -> -1 (sm), -2 (tc floor)
    assert_eq!(a.mantissas, vec![4, -1, 1, 0]);
    assert_eq!(b.mantissas, vec![4, -2, 1, 0]);
    // saturation: 1.99 in int4 would need mantissa 8
    let c = quantize_fpga(
        &[1.99, 0.0, 0.0, 0.0],
        v,
        &FpgaBfp {
            c_vector: 4,
            ..FpgaBfp::INT4
        },
        StreamKey::new(0, 0),
        "x",
    )
    .unwrap();
    assert_eq!(c.mantissas[0], 7);
}

#[test]
fn parse_and_display() {
    for (name, p) in FpgaBfp::PRESETS {
        let f: NumberFormat = name.parse().unwrap();
        assert_eq!(f, NumberFormat::Fpga(p));
        let s = f.to_string();
        assert_eq!(s.parse::<NumberFormat>().unwrap(), f);
    }
    let f: NumberFormat = "int5bfp:c16:truncate".parse().unwrap();
    assert_eq!(
        f,
        NumberFormat::Fpga(FpgaBfp {
            c_vector: 16,
            rounding: FpgaRounding::Truncate,
            ..FpgaBfp::INT5
        })
    );
    let g: NumberFormat = "fpga6tc:c8".parse().unwrap();
    assert_eq!(g.to_string(), "fpga6tc:c8:nearest-even");
    for bad in [
        "int5bfp:c12",
        "int5bfp:c16:c32",
        "fpga13sm",
        "fpga6xx",
        "int5bfp:huh",
    ] {
        let e = bad.parse::<NumberFormat>().unwrap_err();
        assert!(e.to_string().contains(bad), "{e}");
    }
    // serde round trip through a config
    let j = serde_json::to_string(&f).unwrap();
    assert_eq!(serde_json::from_str::<NumberFormat>(&j).unwrap(), f);
}

#[test]
fn non_finite_and_shape_errors_name_the_tensor() {
    let v = ChannelView::from_shape(&[2, 2]);
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let e = quantize_fpga(
            &[0.0, 1.0, bad, 2.0],
            v,
            &FpgaBfp::INT5,
            StreamKey::new(0, 0),
            "acts of conv1",
        )
        .unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("acts of conv1") && s.contains("element 2"),
            "{s}"
        );
    }
    let e = quantize_fpga(&[0.0; 3], v, &FpgaBfp::INT5, StreamKey::new(0, 0), "w").unwrap_err();
    assert!(e.to_string().contains("w:"), "{e}");
}

fn values() -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(
        prop_oneof![
            4 => -4.0f32..4.0,
            2 => -1e-4f32..1e-4,
            1 => -1e6f32..1e6,
            1 => (-30i32..18).prop_map(|k| 2f32.powi(k)),
            1 => Just(0.0f32),
        ],
        1..300,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn fast_equals_reference(x in values(), fi in 0usize..200, inner in 1usize..4, seed in any::<u64>()) {
        let fs = all_formats();
        let f = fs[fi % fs.len()];
        let n = x.len() - x.len() % inner;
        prop_assume!(n > 0);
        let view = ChannelView { outer: 1, channels: n / inner, inner };
        check_same(&x[..n], view, &f, seed);
    }

    #[test]
    fn error_within_one_step(x in values(), fi in 0usize..200) {
        let fs = all_formats();
        let f = fs[fi % fs.len()];
        let view = ChannelView::from_shape(&[x.len()]);
        let t = quantize_fpga(&x, view, &f, StreamKey::new(1, 1), "x").unwrap();
        let d = t.dequantize();
        let cv = f.c_vector as usize;
        for (i, (&a, &b)) in x.iter().zip(&d).enumerate() {
            let h = f16_round_ref(a);
            let step = f.scale(t.exponents[i / cv]) as f64;
            // one step of rounding, or saturation at the block's largest mantissa
            let (_, hi) = f.mantissa_range();
            let sat = (h.abs() / step) > hi as f64;
            prop_assert!(sat || (h - b as f64).abs() <= step, "{f}: {a} -> {b}, step {step}");
        }
    }
}
