use lowprec_rf::baseline::{symmetric_eigen, PcaDetector};
use lowprec_rf::metrics::{best_f1, recall_by_kind};
use lowprec_rf::pair::standard_anomaly_kinds;
use lowprec_rf::rng::CounterRng;
use lowprec_rf::window::make_windows;
use lowprec_rf::{
    select_threshold, standard_pair, Confusion, Generator, Normaliser, StandardPairConfig,
    ThresholdRule, WindowConfig, Windows,
};

#[test]
fn standard_pair_follows_the_recipe() {
    let cfg = StandardPairConfig::default();
    let pair = standard_pair(&cfg).unwrap();
    assert_eq!(pair, standard_pair(&cfg).unwrap());
    assert!(pair.train.anomalies.is_empty());
    assert_eq!(pair.train.num_samples, 1 << 18);
    assert_eq!(
        (pair.test.num_samples, pair.test.time_offset),
        (1 << 17, 1 << 18)
    );
    assert_eq!(pair.train.fm, pair.test.fm);
    assert_ne!(pair.train.seed, pair.test.seed);
    let a = &pair.test.anomalies;
    assert_eq!(a.len(), 9);
    let kinds = standard_anomaly_kinds(cfg.sample_rate_hz);
    for (j, an) in a.iter().enumerate() {
        assert_eq!(an.kind, kinds[j % 3]);
        assert_eq!((an.count, an.power_db), (2048, -6.0));
        if j > 0 {
            assert!(
                an.start >= a[j - 1].start + a[j - 1].count + 1024,
                "anomalies too close"
            );
        }
    }
    // Another seed moves the anomalies; contamination puts some into training.
    let other = standard_pair(&StandardPairConfig {
        seed: 2,
        train_anomalies_per_kind: 1,
        ..cfg.clone()
    })
    .unwrap();
    assert_ne!(other.test.anomalies, pair.test.anomalies);
    assert_eq!(other.train.anomalies.len(), 3);
    // In-memory generation matches the specs.
    let small = StandardPairConfig {
        train_samples: 1 << 14,
        test_samples: 1 << 14,
        anomaly_samples: 512,
        ..StandardPairConfig::default()
    };
    let p = standard_pair(&small).unwrap();
    let data = p.generate().unwrap();
    assert_eq!(
        data.train,
        Generator::new(p.train.clone())
            .unwrap()
            .generate_all()
            .unwrap()
    );
    assert_eq!(data.test.len(), 1 << 14);
    assert!(data.train_labels.is_empty());
    assert_eq!(data.test_labels, p.test.label_ranges());
    assert_eq!(data.test_labels.len(), 9);
    assert_eq!(data.sample_rate_hz, 1e6);
    // Bad recipes are errors.
    assert!(standard_pair(&StandardPairConfig {
        test_samples: 10_000,
        ..cfg.clone()
    })
    .is_err());
    assert!(standard_pair(&StandardPairConfig {
        sample_rate_hz: 0.0,
        ..cfg
    })
    .and_then(|p| Generator::new(p.train))
    .is_err());
}

fn windows_of(spec: &lowprec_rf::SignalSpec, norm: Option<Normaliser>) -> (Windows, Normaliser) {
    let g = Generator::new(spec.clone()).unwrap();
    let x = g.generate_all().unwrap();
    let norm = norm.unwrap_or_else(|| Normaliser::fit(&x).unwrap());
    let ranges: Vec<lowprec_rf::LabelRange> = spec
        .anomalies
        .iter()
        .map(|a| lowprec_rf::LabelRange {
            start: a.start,
            count: a.count,
            label: a.kind.label().into(),
        })
        .collect();
    (
        make_windows(&x, WindowConfig::default(), norm, &ranges).unwrap(),
        norm,
    )
}

/// The PCA residual detector (a linear auto-encoder) on the standard pair: a regression check
/// that the pair is learnable and not trivial, and the reference figure for the non-linear
/// auto-encoder. Printed with --nocapture.
#[test]
fn pca_baseline_on_standard_pair() {
    let pair = standard_pair(&StandardPairConfig::default()).unwrap();
    let (train, norm) = windows_of(&pair.train, None);
    let (test, _) = windows_of(&pair.test, Some(norm));
    assert_eq!(train.len(), 16_384);
    assert_eq!(test.len(), 8192);
    // Each 2048-sample anomaly covers 128 windows (129 if it starts mid-window exactly).
    assert!(
        (1152..=1161).contains(&test.anomalous()),
        "{}",
        test.anomalous()
    );
    let pca = PcaDetector::fit(&train, 8).unwrap();
    let train_scores = pca.scores(&train).unwrap();
    let t = select_threshold(&train_scores, ThresholdRule::Percentile(99.0)).unwrap();
    let scores = pca.scores(&test).unwrap();
    let c = Confusion::from_scores(&scores, &test.labels, t).unwrap();
    let (bt, best) = best_f1(&scores, &test.labels).unwrap();
    println!("PCA-8, p99 threshold {t}: {c}");
    println!("PCA-8, oracle threshold {bt}: {best}");
    for r in recall_by_kind(&scores, &test, t).unwrap() {
        println!("  {}: {}/{}", r.kind, r.detected, r.total);
    }
    assert!(c.f1() > 0.5, "{c}");
    assert!(best.f1() >= c.f1());
}

#[test]
fn eigen_decomposition_is_exact() {
    let rng = CounterRng::new(9, 9);
    for n in [1usize, 2, 7, 32] {
        let b: Vec<f64> = (0..(n * n) as u64).map(|k| rng.normal_pair(k).0).collect();
        // A = B B^T is symmetric positive semi-definite.
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = (0..n).map(|k| b[i * n + k] * b[j * n + k]).sum();
            }
        }
        let (vals, vecs) = symmetric_eigen(&a, n).unwrap();
        let scale: f64 = a.iter().map(|x| x.abs()).fold(0.0, f64::max);
        for (lam, v) in vals.iter().zip(&vecs) {
            for i in 0..n {
                let av: f64 = (0..n).map(|j| a[i * n + j] * v[j]).sum();
                assert!((av - lam * v[i]).abs() < 1e-10 * scale, "n {n}");
            }
        }
        for (p, u) in vecs.iter().enumerate() {
            for (q, v) in vecs.iter().enumerate() {
                let d: f64 = u.iter().zip(v).map(|(x, y)| x * y).sum();
                assert!((d - if p == q { 1.0 } else { 0.0 }).abs() < 1e-10);
            }
        }
        assert!(vals.windows(2).all(|w| w[0] >= w[1]));
    }
    assert!(symmetric_eigen(&[1.0, 2.0], 2).is_err());
    assert!(symmetric_eigen(&[f64::NAN], 1).is_err());
}

#[test]
fn pca_residual_is_zero_inside_the_subspace() {
    // Windows of dim 4 living in a 2-D affine subspace.
    let rng = CounterRng::new(1, 2);
    let mut inputs = Vec::new();
    for k in 0..200u64 {
        let (a, b) = rng.normal_pair(k);
        let (a, b) = (a as f32, b as f32);
        inputs.extend_from_slice(&[1.0 + a, a - b, 2.0 * b, 3.0]);
    }
    let w = Windows {
        dim: 4,
        inputs,
        starts: (0..200).collect(),
        labels: vec![false; 200],
        kinds: vec![None; 200],
        kind_names: vec![],
    };
    let pca = PcaDetector::fit(&w, 2).unwrap();
    assert!(pca.scores(&w).unwrap().iter().all(|&s| s < 1e-9));
    let one = PcaDetector::fit(&w, 1).unwrap();
    assert!(one.scores(&w).unwrap().iter().any(|&s| s > 1e-3));
    assert!(PcaDetector::fit(&w, 5).is_err());
    assert!(PcaDetector::fit(&Windows::default(), 1).is_err());
}
