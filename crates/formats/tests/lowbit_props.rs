//! Property tests of the ternary / binary / k-bit quantisers against the f64 references.

use lowprec_formats::lowbit::{self, reference, ScaleMode};
use proptest::prelude::*;

fn weights(max_len: usize) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(
        prop_oneof![
            4 => -1.5f32..1.5f32,
            2 => -1e-3f32..1e-3f32,
            1 => (-20i32..2).prop_map(|k| 2f32.powi(k)),
            1 => (-20i32..2).prop_map(|k| -(2f32.powi(k))),
            1 => Just(0.0f32),
            1 => Just(0.5f32),
            1 => Just(-0.5f32),
        ],
        1..max_len,
    )
}

/// Lengths that split into `ch` channels: the vector is cut to a multiple of `ch`.
fn cut(mut w: Vec<f32>, ch: usize) -> Vec<f32> {
    let keep = (w.len() / ch).max(1) * ch;
    w.resize(keep, 0.25);
    w
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn wrpn_matches_reference_and_is_nearest(w in weights(300), k in 2u32..=8) {
        let q = lowbit::quantize_wrpn(&w, k, "w").unwrap();
        let n = ((1i32 << (k - 1)) - 1) as f64;
        prop_assert_eq!(q.scales.len(), 1);
        for (i, &v) in w.iter().enumerate() {
            let c = q.codes[i];
            prop_assert_eq!(c, reference::wrpn_code(v, k), "element {} = {}", i, v);
            prop_assert!((c as f64).abs() <= n);
            // nearest level of the clipped value
            let err = (c as f64 / n - (v as f64).clamp(-1.0, 1.0)).abs();
            prop_assert!(err <= 0.5 / n + 1e-12, "error {} at {}", err, v);
        }
        let d = q.dequantize();
        for i in 0..w.len() {
            prop_assert_eq!(d[i], q.codes[i] as f32 * q.scales[0]);
        }
        // idempotent on its own levels
        let exact: Vec<f32> = q.codes.iter().map(|&c| (c as f64 / n) as f32).collect();
        prop_assert_eq!(lowbit::quantize_wrpn(&exact, k, "w").unwrap().codes, q.codes);
    }

    #[test]
    fn binary_matches_reference_and_scale_is_least_squares(w in weights(300), ch in 1usize..5, per in any::<bool>()) {
        let w = cut(w, ch);
        let mode = if per { ScaleMode::PerChannel } else { ScaleMode::PerTensor };
        let q = lowbit::quantize_binary(&w, ch, mode, "w").unwrap();
        let g = if per { w.len() / ch } else { w.len() };
        prop_assert_eq!(q.group, g);
        for (gi, grp) in w.chunks(g).enumerate() {
            let s = reference::mean_abs(grp);
            prop_assert_eq!(q.scales[gi], s as f32);
            let codes = &q.codes[gi * g..(gi + 1) * g];
            for (&c, &v) in codes.iter().zip(grp) {
                prop_assert_eq!(c, if v >= 0.0 { 1 } else { -1 });
            }
            // least squares: no nearby scale fits the signs better
            let sse = |s: f64| grp.iter().zip(codes).map(|(&v, &c)| (v as f64 - c as f64 * s).powi(2)).sum::<f64>();
            let best = sse(s);
            for f in [0.9, 0.99, 1.01, 1.1] {
                prop_assert!(best <= sse(s * f) + 1e-9 * (1.0 + best));
            }
        }
    }

    #[test]
    fn twn_matches_reference(w in weights(300), ch in 1usize..5, per in any::<bool>(), t in 0.0f64..1.5) {
        let w = cut(w, ch);
        let mode = if per { ScaleMode::PerChannel } else { ScaleMode::PerTensor };
        let q = lowbit::quantize_twn(&w, ch, mode, t, "w").unwrap();
        let g = q.group;
        for (gi, grp) in w.chunks(g).enumerate() {
            let (codes, scale) = reference::twn_group(grp, t);
            prop_assert_eq!(&q.codes[gi * g..(gi + 1) * g], &codes[..]);
            prop_assert_eq!(q.scales[gi], scale);
            let delta = t * reference::mean_abs(grp);
            for (&c, &v) in codes.iter().zip(grp) {
                prop_assert_eq!(c != 0, (v as f64).abs() > delta);
            }
        }
    }

    #[test]
    fn activations_match_reference_and_error_is_half_a_step(x in weights(300), k in 1u32..=7, clip in prop_oneof![Just(1.0f32), 0.05f32..8.0]) {
        let q = lowbit::quantize_activations(&x, k, clip, "a").unwrap();
        let n = ((1u32 << k) - 1) as f64;
        prop_assert_eq!(q.scales[0], (clip as f64 / n) as f32);
        for (i, &v) in x.iter().enumerate() {
            let c = q.codes[i];
            prop_assert_eq!(c, reference::activation_code(v, k, clip), "element {} = {}", i, v);
            prop_assert!(c >= 0 && (c as f64) <= n);
            let err = (c as f64 * clip as f64 / n - (v as f64).clamp(0.0, clip as f64)).abs();
            prop_assert!(err <= 0.5 * clip as f64 / n * (1.0 + 1e-12), "error {} at {}", err, v);
        }
    }

    #[test]
    fn ste_gradient_is_masked_pass_through(x in weights(200), lo in -1.0f32..0.0, hi in 0.0f32..1.0) {
        let g: Vec<f32> = (0..x.len()).map(|i| i as f32 + 1.0).collect();
        let mut out = vec![f32::NAN; x.len()];
        lowbit::ste_clip_grad(&x, &g, lo, hi, &mut out);
        for i in 0..x.len() {
            let inside = x[i] >= lo && x[i] <= hi;
            prop_assert_eq!(out[i], if inside { g[i] } else { 0.0 });
        }
    }
}

#[test]
fn deterministic_across_thread_counts() {
    let w: Vec<f32> = (0..100_002)
        .map(|i| ((i as f32 * 0.618_034).fract() - 0.5) * 3.0)
        .collect();
    let run = |t: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build()
            .unwrap()
            .install(|| {
                (
                    lowbit::quantize_twn(&w, 7, ScaleMode::PerChannel, 0.7, "w").unwrap(),
                    lowbit::quantize_activations(&w, 2, 1.0, "a").unwrap(),
                    lowbit::quantize_binary(&w, 1, ScaleMode::PerTensor, "w").unwrap(),
                )
            })
    };
    assert_eq!(run(1), run(2));
}
