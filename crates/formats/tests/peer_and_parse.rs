mod common;

use common::TestRng;
use lowprec_formats::peer::*;
use lowprec_formats::*;

#[test]
fn fp16_matches_the_half_precision_grid_exhaustively() {
    // Every finite fp16 value (built from its bit pattern) round-trips under nearest-even.
    let f = FloatFormat::FP16;
    let mut xs = Vec::new();
    for bits in 0u16..=0xffff {
        let e = (bits >> 10) & 0x1f;
        if e == 0x1f {
            continue; // Inf/NaN
        }
        let m = (bits & 0x3ff) as f32;
        let v = if e == 0 {
            m * 2f32.powi(-24)
        } else {
            (1.0 + m / 1024.0) * 2f32.powi(e as i32 - 15)
        };
        xs.push(if bits & 0x8000 != 0 { -v } else { v });
    }
    let mut out = vec![0f32; xs.len()];
    fake_quantize_float(&xs, &f, StreamKey::new(0, 0), "x", &mut out).unwrap();
    for (a, b) in xs.iter().zip(&out) {
        assert_eq!(a.abs(), b.abs(), "{a}");
    }
    assert_eq!(f.max_finite(), 65504.0);
}

#[test]
fn fp8_formats_have_the_standard_ranges() {
    assert_eq!(FloatFormat::FP8_E4M3.max_finite(), 448.0);
    assert_eq!(FloatFormat::FP8_E5M2.max_finite(), 57344.0);
    assert_eq!(FloatFormat::BF16.max_finite(), f32::from_bits(0x7f7f_0000));
    // every e4m3 value round-trips; values beyond the range saturate
    let f = FloatFormat::FP8_E4M3;
    let mut vals = vec![];
    for e in 0..16 {
        for m in 0..8 {
            if e == 15 && m == 7 {
                continue; // NaN code
            }
            let v = if e == 0 {
                m as f32 / 8.0 * 2f32.powi(-6)
            } else {
                (1.0 + m as f32 / 8.0) * 2f32.powi(e - 7)
            };
            vals.push(v);
        }
    }
    let mut out = vec![0f32; vals.len()];
    fake_quantize_float(&vals, &f, StreamKey::new(0, 0), "x", &mut out).unwrap();
    assert_eq!(vals, out);
    let mut o = [0f32; 2];
    fake_quantize_float(&[1e6, -500.0], &f, StreamKey::new(0, 0), "x", &mut o).unwrap();
    assert_eq!(o, [448.0, -448.0]);
}

#[test]
fn small_float_fast_path_matches_reference() {
    let mut rng = TestRng::fresh("float_vs_ref");
    for f in [
        FloatFormat::FP16,
        FloatFormat::BF16,
        FloatFormat::FP8_E4M3,
        FloatFormat::FP8_E5M2,
    ] {
        for rounding in [
            Rounding::NearestEven,
            Rounding::NearestAway,
            Rounding::TowardZero,
            Rounding::Stochastic,
        ] {
            let f = FloatFormat { rounding, ..f };
            for n in [1usize, 7, 33, 1000, 40_000] {
                let x = rng.vec_awkward(n);
                let key = StreamKey::new(rng.next_u64(), 0);
                let mut out = vec![0f32; n];
                fake_quantize_float(&x, &f, key, "x", &mut out).unwrap();
                let r = quantize_float_ref(&x, &f, key);
                assert_eq!(
                    out.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    r.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "{f} n={n}"
                );
                assert!(out.iter().all(|v| float_representable(*v, &f)));
            }
        }
    }
}

#[test]
fn fixed_point_fast_path_matches_reference() {
    let mut rng = TestRng::fresh("fixed_vs_ref");
    for rounding in [
        Rounding::NearestEven,
        Rounding::NearestAway,
        Rounding::TowardZero,
        Rounding::Stochastic,
    ] {
        for (wl, fl) in [(8, 4), (8, 0), (16, 12), (4, 2), (24, 20), (8, -3)] {
            let f = FixedFormat {
                wl,
                fl,
                rounding,
                clamp: Clamp::Asymmetric,
            };
            let x = rng.vec_normalish(50_000, 10.0);
            let key = StreamKey::new(rng.next_u64(), 0);
            assert_eq!(
                quantize_fixed(&x, &f, key, "x").unwrap(),
                quantize_fixed_ref(&x, &f, key),
                "{f}"
            );
        }
    }
}

#[test]
fn format_strings_parse_and_print() {
    let cases = [
        ("bfp8", "bfp8:tensor:stochastic"),
        ("bfp8:axis0:stochastic", "bfp8:axis0:stochastic"),
        ("bfp6:tile32:nearest-away", "bfp6:tile32:nearest-away"),
        ("bfp8:tensor:nearest-even", "bfp8:tensor:nearest-even"),
        ("bfp8:example", "bfp8:axis0:stochastic"),
        ("BFP4:channel:tz:e5:asym", "bfp4:axis0:toward-zero:e5:asym"),
        ("fixed8:4", "fixed8:4:stochastic"),
        ("fixed16:12:ne", "fixed16:12:nearest-even"),
        ("fp16", "fp16:nearest-even"),
        ("bf16:stochastic", "bf16:stochastic"),
        ("fp8e4m3", "fp8e4m3:nearest-even"),
        ("fp8e5m2", "fp8e5m2:nearest-even"),
        ("float3m4", "float3m4:nearest-even"),
        ("fp32", "fp32"),
    ];
    for (input, shown) in cases {
        let f: NumberFormat = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(f.to_string(), shown);
        assert_eq!(
            shown.parse::<NumberFormat>().unwrap(),
            f,
            "round trip {shown}"
        );
    }
    for bad in [
        "bfp1",
        "bfp17",
        "bfp8:tile0",
        "bfp8:sideways",
        "bfp8:e9",
        "bfp8:axis",
        "fixed8",
        "fixedx:3",
        "float9m3",
        "fp32:stochastic",
        "",
        "int8",
        "bfp8:tensor:tensor",
    ] {
        let e = bad.parse::<NumberFormat>().unwrap_err();
        assert!(
            e.to_string().contains("invalid number format"),
            "{bad}: {e}"
        );
    }
}

#[test]
fn formats_load_from_toml_strings_and_tables() {
    #[derive(serde::Deserialize)]
    struct Cfg {
        weights: NumberFormat,
        errors: NumberFormat,
        acts: NumberFormat,
    }
    let c: Cfg = toml::from_str(
        r#"
        weights = "bfp6:tensor:stochastic"
        errors = { kind = "bfp", wl = 8, block = "axis0", rounding = "nearest-even" }
        acts = { kind = "fp32" }
        "#,
    )
    .unwrap();
    assert_eq!(c.weights.to_string(), "bfp6:tensor:stochastic");
    assert_eq!(c.errors.to_string(), "bfp8:axis0:nearest-even");
    assert!(c.acts.is_f32());
    let bad = toml::from_str::<Cfg>(
        r#"weights = "bfp99"
errors = "bfp8"
acts = "fp32""#,
    );
    assert!(bad.is_err());
    let bad = toml::from_str::<Cfg>(
        r#"weights = { kind = "bfp", wl = 1 }
errors = "bfp8"
acts = "fp32""#,
    );
    assert!(bad.is_err());
    // serialises back to the string form
    let j = serde_json::to_string(&c.errors).unwrap();
    assert_eq!(j, "\"bfp8:axis0:nearest-even\"");
}

#[test]
fn fake_quantize_dispatches_every_kind_and_checks_input() {
    let x = vec![0.1f32, -0.7, 3.0, 0.0];
    let mut out = vec![0f32; 4];
    for s in [
        "fp32",
        "bfp8:tensor:nearest-even",
        "fixed8:4:nearest-even",
        "fp8e4m3",
    ] {
        let f: NumberFormat = s.parse().unwrap();
        fake_quantize(&x, &[4], &f, StreamKey::new(0, 0), "x", &mut out).unwrap();
        assert!(
            out.iter().zip(&x).all(|(a, b)| (a - b).abs() < 0.2),
            "{s}: {out:?}"
        );
    }
    let f: NumberFormat = "fixed8:4".parse().unwrap();
    assert!(fake_quantize(&[f32::NAN], &[1], &f, StreamKey::new(0, 0), "y", &mut [0.0]).is_err());
    assert!(fake_quantize(&x, &[5], &f, StreamKey::new(0, 0), "y", &mut out).is_err());
}

#[test]
fn repeated_or_malformed_bfp_options_name_the_problem() {
    use lowprec_formats::NumberFormat;
    let msg = |s: &str| s.parse::<NumberFormat>().unwrap_err().to_string();
    let e = msg("bfp8:tile0");
    assert!(e.contains("tile size must be >= 1"), "{e}");
    let e = msg("bfp8:tilex");
    assert!(e.contains("tile<k> needs a number"), "{e}");
    let e = msg("bfp8:axisq");
    assert!(e.contains("axis<d> needs a number"), "{e}");
    for (s, what) in [
        ("bfp8:asym:asym", "clamp"),
        ("bfp8:asym:sym", "clamp"),
        ("bfp8:e5:e8", "exponent bits"),
        ("bfp8:tensor:tensor", "block"),
        ("bfp8:stochastic:nearest-even", "rounding"),
    ] {
        let e = msg(s);
        assert!(e.contains(what) && e.contains("twice"), "{s}: {e}");
    }
    assert!("bfp8:tile16:asym:e5".parse::<NumberFormat>().is_ok());
}
