use lowprec_rf::rng::CounterRng;
use lowprec_rf::window::make_windows;
use lowprec_rf::{Iq, LabelRange, Normaliser, WindowConfig, WindowStream};

fn ramp(n: usize) -> Vec<Iq> {
    (0..n)
        .map(|k| Iq {
            i: k as f32,
            q: -(k as f32) - 0.5,
        })
        .collect()
}

fn lr(start: u64, count: u64, label: &str) -> LabelRange {
    LabelRange {
        start,
        count,
        label: label.into(),
    }
}

#[test]
fn small_known_example() {
    // 10 samples, windows of 4 every 3: starts 0, 3, 6; sample 9 is left over.
    let cfg = WindowConfig {
        len: 4,
        stride: 3,
        min_overlap: 0.5,
    };
    assert_eq!(cfg.count_for(10), 3);
    let w = make_windows(&ramp(10), cfg, Normaliser { scale: 2.0 }, &[]).unwrap();
    assert_eq!(w.dim, 8);
    assert_eq!(w.starts, vec![0, 3, 6]);
    assert_eq!(
        w.input(1),
        &[1.5, -1.75, 2.0, -2.25, 2.5, -2.75, 3.0, -3.25]
    );
    assert_eq!(w.labels, vec![false; 3]);
    assert!(w.kind_names.is_empty() && w.kinds.iter().all(Option::is_none));
}

#[test]
fn labels_follow_overlap_rule_and_dominant_kind() {
    // Windows of 4 every 2 over 24 samples: starts 0, 2, ..., 20. Anomalous if >= 2 annotated.
    let cfg = WindowConfig {
        len: 4,
        stride: 2,
        min_overlap: 0.5,
    };
    assert_eq!(cfg.min_annotated(), 2);
    let ranges = [
        lr(5, 4, "chirp"),
        lr(8, 1, "sine"),
        lr(13, 2, "sine"),
        lr(20, 1, "bandpass"),
    ];
    let w = make_windows(&ramp(24), cfg, Normaliser::identity(), &ranges).unwrap();
    assert_eq!(w.starts, vec![0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20]);
    // Union: [5, 9) u [13, 15) u [20, 21). Annotated samples per window:
    // [0,4):0 [2,6):1 [4,8):3 [6,10):3 [8,12):1 [10,14):1 [12,16):2 [14,18):1 [16,20):0
    // [18,22):1 [20,24):1
    let want = [
        false, false, true, true, false, false, true, false, false, false, false,
    ];
    assert_eq!(w.labels, want);
    assert_eq!(w.kind_names, vec!["chirp", "sine", "bandpass"]);
    let kinds: Vec<Option<&str>> = (0..w.len()).map(|k| w.kind_name(k)).collect();
    assert_eq!(
        kinds,
        vec![
            None,
            Some("chirp"),
            Some("chirp"),
            Some("chirp"),
            // [8, 12): chirp and sine overlap one sample each; the first listed wins.
            Some("chirp"),
            Some("sine"),
            Some("sine"),
            Some("sine"),
            None,
            Some("bandpass"),
            Some("bandpass"),
        ]
    );
    assert_eq!(w.anomalous(), 3);
    // Stricter rule: the whole window must be annotated.
    let strict = WindowConfig {
        min_overlap: 1.0,
        ..cfg
    };
    let w = make_windows(&ramp(24), strict, Normaliser::identity(), &ranges).unwrap();
    assert_eq!(w.anomalous(), 0);
    // Loosest rule: any annotated sample.
    let loose = WindowConfig {
        min_overlap: 1e-9,
        ..cfg
    };
    let w = make_windows(&ramp(24), loose, Normaliser::identity(), &ranges).unwrap();
    assert_eq!(w.anomalous(), 9);
}

#[test]
fn overlapping_annotations_count_once() {
    let cfg = WindowConfig {
        len: 8,
        stride: 8,
        min_overlap: 0.75,
    };
    // [0, 5) and [2, 6) overlap: union covers 6 of 8 samples -> anomalous.
    let w = make_windows(
        &ramp(8),
        cfg,
        Normaliser::identity(),
        &[lr(0, 5, "a"), lr(2, 4, "b")],
    )
    .unwrap();
    assert_eq!(w.labels, vec![true]);
    assert_eq!(w.kind_name(0), Some("a"));
    let w = make_windows(
        &ramp(8),
        cfg,
        Normaliser::identity(),
        &[lr(0, 5, "a"), lr(0, 5, "b")],
    )
    .unwrap();
    assert_eq!(w.labels, vec![false]);
}

#[test]
fn normaliser_uses_per_component_rms() {
    let n = Normaliser::fit(&[Iq { i: 3.0, q: 4.0 }, Iq { i: 0.0, q: 0.0 }]).unwrap();
    assert_eq!(n.scale, 2.5);
    assert!(Normaliser::fit(&[]).is_err());
    assert!(Normaliser::fit(&[Iq::default(); 5]).is_err());
    assert!(Normaliser::fit(&[Iq {
        i: f32::MAX,
        q: f32::MAX
    }])
    .is_ok());
    assert!(Normaliser::fit(&[Iq {
        i: f32::NAN,
        q: 0.0
    }])
    .is_err());
    assert!(WindowStream::new(WindowConfig::default(), Normaliser { scale: 0.0 }, &[]).is_err());
    assert!(WindowStream::new(
        WindowConfig::default(),
        Normaliser {
            scale: f32::INFINITY
        },
        &[]
    )
    .is_err());
}

#[test]
fn bad_window_configs_are_errors() {
    for cfg in [
        WindowConfig {
            len: 0,
            ..Default::default()
        },
        WindowConfig {
            stride: 0,
            ..Default::default()
        },
        WindowConfig {
            min_overlap: 0.0,
            ..Default::default()
        },
        WindowConfig {
            min_overlap: 1.5,
            ..Default::default()
        },
        WindowConfig {
            min_overlap: f64::NAN,
            ..Default::default()
        },
    ] {
        assert!(
            make_windows(&ramp(100), cfg, Normaliser::identity(), &[]).is_err(),
            "{cfg:?}"
        );
    }
    assert!(make_windows(
        &ramp(100),
        WindowConfig::default(),
        Normaliser::identity(),
        &[lr(u64::MAX, 2, "x")]
    )
    .is_err());
}

#[test]
fn default_is_32_reals_per_window() {
    let cfg = WindowConfig::default();
    assert_eq!((cfg.len, cfg.stride, cfg.dim()), (16, 16, 32));
    let w = make_windows(&ramp(1000), cfg, Normaliser::identity(), &[]).unwrap();
    assert_eq!(w.len(), 62);
    assert_eq!(w.inputs.len(), 62 * 32);
    assert!(make_windows(&ramp(15), cfg, Normaliser::identity(), &[])
        .unwrap()
        .is_empty());
    assert!(make_windows(&[], cfg, Normaliser::identity(), &[])
        .unwrap()
        .is_empty());
}

/// Streaming in chunks of any size gives exactly the batch result, for strides shorter than,
/// equal to and longer than the window.
#[test]
fn streaming_matches_batch() {
    let rng = CounterRng::new(3, 99);
    let samples: Vec<Iq> = (0..5003u64)
        .map(|k| {
            let (a, b) = rng.normal_pair(k);
            Iq {
                i: a as f32,
                q: b as f32,
            }
        })
        .collect();
    let ranges = [
        lr(100, 300, "bandpass"),
        lr(1000, 33, "sine"),
        lr(4990, 13, "chirp"),
    ];
    let norm = Normaliser::fit(&samples[..2000]).unwrap();
    for (len, stride) in [(16usize, 16usize), (16, 1), (16, 7), (5, 33), (1, 1)] {
        let cfg = WindowConfig {
            len,
            stride,
            min_overlap: 0.5,
        };
        let batch = make_windows(&samples, cfg, norm, &ranges).unwrap();
        assert_eq!(batch.len() as u64, cfg.count_for(5003));
        for chunk in [1usize, 7, 33, 1000, 5003] {
            let mut s = WindowStream::new(cfg, norm, &ranges).unwrap();
            let mut out = s.empty_windows();
            for c in samples.chunks(chunk) {
                s.push(c, &mut out);
            }
            assert_eq!(out, batch, "len {len} stride {stride} chunk {chunk}");
        }
    }
}

/// Labels and kinds against a per-sample brute force on random, overlapping annotations
/// (listed out of order, so "first listed" and "earliest start" differ).
#[test]
fn labels_match_brute_force() {
    let rng = CounterRng::new(11, 4);
    let mut draw = 0u64;
    let mut next = |m: u64| {
        draw += 1;
        (rng.uniform(draw) * m as f64) as u64
    };
    let names = ["bandpass", "chirp", "sine"];
    for case in 0..200 {
        let n = 1 + next(400) as usize;
        let ranges: Vec<LabelRange> = (0..next(6))
            .map(|_| lr(next(n as u64 + 20), next(60), names[next(3) as usize]))
            .collect();
        let cfg = WindowConfig {
            len: 1 + next(20) as usize,
            stride: 1 + next(20) as usize,
            min_overlap: (1 + next(100)) as f64 / 100.0,
        };
        let w = make_windows(&ramp(n), cfg, Normaliser::identity(), &ranges).unwrap();
        assert_eq!(w.len() as u64, cfg.count_for(n as u64));
        for k in 0..w.len() {
            let (s, e) = (w.starts[k], w.starts[k] + cfg.len as u64);
            assert_eq!(s, (k * cfg.stride) as u64);
            let covered = (s..e)
                .filter(|&t| ranges.iter().any(|r| t >= r.start && t < r.start + r.count))
                .count();
            assert_eq!(
                w.labels[k],
                covered as u64 >= cfg.min_annotated(),
                "case {case} window {k}"
            );
            let mut best: Option<(u64, &str)> = None;
            for r in &ranges {
                let ov = (r.start + r.count).min(e).saturating_sub(r.start.max(s));
                if ov > 0 && best.is_none_or(|(b, _)| ov > b) {
                    best = Some((ov, &r.label));
                }
            }
            assert_eq!(
                w.kind_name(k),
                best.map(|(_, l)| l),
                "case {case} window {k}"
            );
        }
    }
}
