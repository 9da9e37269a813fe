//! Property tests for every format (proptest).

use lowprec_formats::format::pow2;
use lowprec_formats::*;
use proptest::prelude::*;

fn rounding() -> impl Strategy<Value = Rounding> {
    prop_oneof![
        Just(Rounding::NearestEven),
        Just(Rounding::NearestAway),
        Just(Rounding::TowardZero),
        Just(Rounding::Stochastic)
    ]
}

fn deterministic() -> impl Strategy<Value = Rounding> {
    prop_oneof![
        Just(Rounding::NearestEven),
        Just(Rounding::NearestAway),
        Just(Rounding::TowardZero)
    ]
}

fn finite_vec(max_len: usize) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(
        prop_oneof![
            4 => -1e3f32..1e3f32,
            2 => -1e-3f32..1e-3f32,
            1 => (-40i32..40).prop_map(|k| 2f32.powi(k)),
            1 => Just(0.0f32),
        ],
        1..max_len,
    )
}

fn bfp(wl: u32, rounding: Rounding) -> BfpFormat {
    BfpFormat::new(wl, Block::Tensor, rounding).unwrap()
}

fn q(x: &[f32], f: &BfpFormat, seed: u64) -> BfpTensor {
    quantize_bfp(x, &[x.len()], f, StreamKey::new(seed, 0), "x").unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn idempotent_for_deterministic_modes(x in finite_vec(200), wl in 2u32..=16, r in deterministic()) {
        let f = bfp(wl, r);
        let once = q(&x, &f, 1).dequantize();
        let twice = q(&once, &f, 2).dequantize();
        prop_assert_eq!(once, twice);
    }

    #[test]
    fn never_above_the_clamp_and_error_bounded(x in finite_vec(200), wl in 2u32..=16, r in rounding(), seed in any::<u64>()) {
        let f = bfp(wl, r);
        let t = q(&x, &f, seed);
        let (lo, hi) = f.mantissa_range();
        let ulp = t.scales()[0] as f64;
        let deq = t.dequantize();
        for i in 0..x.len() {
            let m = t.mantissas.get(i);
            prop_assert!(m >= lo && m <= hi);
            let err = (deq[i] as f64 - x[i] as f64).abs();
            let clamped = m == lo || m == hi;
            match r {
                Rounding::NearestEven | Rounding::NearestAway => {
                    prop_assert!(err <= ulp / 2.0 || (clamped && err < ulp), "x={} q={} ulp={}", x[i], deq[i], ulp)
                }
                _ => prop_assert!(err < ulp, "x={} q={} ulp={}", x[i], deq[i], ulp),
            }
        }
    }

    #[test]
    fn sign_symmetric_for_nearest_modes(x in finite_vec(100), wl in 2u32..=16, away in any::<bool>()) {
        let f = bfp(wl, if away { Rounding::NearestAway } else { Rounding::NearestEven });
        let neg: Vec<f32> = x.iter().map(|v| -v).collect();
        let a = q(&x, &f, 0).dequantize();
        let b = q(&neg, &f, 0).dequantize();
        for (p, n) in a.iter().zip(&b) {
            prop_assert_eq!(*p, -*n);
        }
    }

    #[test]
    fn scaling_by_powers_of_two_commutes(x in finite_vec(100), wl in 2u32..=16, r in rounding(), k in -20i32..20) {
        // Away from the exponent clamps, Q(2^k x) = 2^k Q(x) (stochastic too: same draws).
        let f = bfp(wl, r);
        let scaled: Vec<f32> = x.iter().map(|v| v * pow2(k)).collect();
        let a = q(&x, &f, 3).dequantize();
        let b = q(&scaled, &f, 3).dequantize();
        for (p, s) in a.iter().zip(&b) {
            prop_assert_eq!(*p * pow2(k), *s);
        }
    }

    #[test]
    fn fixed_point_error_bounded(x in finite_vec(100), wl in 4u32..=16, fl in 0i32..10, r in rounding()) {
        let f = FixedFormat { wl, fl, rounding: r, clamp: Clamp::Symmetric };
        let qs = lowprec_formats::peer::quantize_fixed(&x, &f, StreamKey::new(1, 2), "x").unwrap();
        let (lo, hi) = f.mantissa_range();
        let ulp = 2f64.powi(-fl);
        for (i, &m) in qs.iter().enumerate() {
            prop_assert!(m >= lo && m <= hi);
            if m > lo && m < hi {
                prop_assert!((m as f64 * ulp - x[i] as f64).abs() < ulp);
            }
        }
        prop_assert_eq!(qs, lowprec_formats::peer::quantize_fixed_ref(&x, &f, StreamKey::new(1, 2)));
    }
}

#[test]
fn stochastic_rounding_is_unbiased() {
    // Mean of Q(x) over many independent draws is within 5 standard errors of x.
    let f = bfp(4, Rounding::Stochastic);
    for &x in &[0.3f32, -0.3, 0.77, -1.3, 0.0101] {
        // block max fixes the grid: 1.0 -> e = 0, ulp = 2^-2
        let draws = 200_000;
        let xs: Vec<f32> = std::iter::once(1.0)
            .chain(std::iter::repeat_n(x, draws))
            .collect();
        let t = q(&xs, &f, 77);
        let deq = t.dequantize();
        let mean: f64 = deq[1..].iter().map(|&v| v as f64).sum::<f64>() / draws as f64;
        let ulp = 0.25f64;
        let se = ulp * 0.5 / (draws as f64).sqrt();
        assert!(
            (mean - x as f64).abs() < 5.0 * se,
            "x={x} mean={mean} se={se}"
        );
    }
}

#[test]
fn generator_is_uniform_and_streams_are_uncorrelated() {
    use lowprec_formats::rng::uniform24;
    let n = 1 << 18;
    let buckets = 64;
    for stream in 0..4u64 {
        let key = StreamKey::new(12345, stream);
        let mut counts = vec![0u32; buckets];
        for i in 0..n {
            counts[(uniform24(key, i) >> 18) as usize] += 1;
        }
        let e = n as f64 / buckets as f64;
        let chi2: f64 = counts.iter().map(|&c| (c as f64 - e).powi(2) / e).sum();
        // 63 degrees of freedom: p = 1e-6 at about 130
        assert!(chi2 < 130.0, "stream {stream}: chi2 = {chi2}");
    }
    // neighbouring streams (consecutive steps of one tensor) and shifted indices are uncorrelated
    let a = StreamKey::new(1, 100);
    let b = StreamKey::new(1, 101);
    for shift in [0u64, 1, 7, 1000] {
        let m = 100_000u64;
        let (mut sxy, mut sx, mut sy, mut sxx, mut syy) = (0f64, 0f64, 0f64, 0f64, 0f64);
        for i in 0..m {
            let x = uniform24(a, i) as f64;
            let y = uniform24(b, i + shift) as f64;
            sxy += x * y;
            sx += x;
            sy += y;
            sxx += x * x;
            syy += y * y;
        }
        let mf = m as f64;
        let cov = sxy / mf - sx / mf * sy / mf;
        let corr =
            cov / ((sxx / mf - (sx / mf).powi(2)).sqrt() * (syy / mf - (sy / mf).powi(2)).sqrt());
        assert!(corr.abs() < 0.02, "shift {shift}: corr {corr}");
    }
}
