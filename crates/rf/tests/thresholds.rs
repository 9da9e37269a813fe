//! Robust and extreme-value threshold rules, calibration, ROC/PR AUC against brute-force
//! references, and the feature-vector detector with its bad inputs.

use lowprec_kernels::CpuBackend;
use lowprec_nn::Precision;
use lowprec_rf::autoencoder::AeConfig;
use lowprec_rf::metrics::{
    best_f1, calibrate_threshold, pr_auc, roc_auc, select_threshold, Calibration, Confusion,
    ThresholdRule,
};
use lowprec_rf::rng::CounterRng;
use lowprec_rf::vectors::{read_vectors, run_vectors, VectorConfig};

/// Scores with many ties (quantised to 1/8) and labels, from `seed`.
fn scored(seed: u64, n: usize) -> (Vec<f32>, Vec<bool>) {
    let r = CounterRng::new(seed, 1);
    let labels: Vec<bool> = (0..n).map(|k| r.uniform(2 * k as u64) < 0.3).collect();
    let scores = (0..n)
        .map(|k| {
            let base = r.uniform(2 * k as u64 + 1) * 4.0 + if labels[k] { 1.0 } else { 0.0 };
            ((base * 8.0).floor() / 8.0) as f32
        })
        .collect();
    (scores, labels)
}

/// P(anomalous score > normal score) + P(equal) / 2 over all pairs.
fn roc_reference(s: &[f32], l: &[bool]) -> Option<f64> {
    let (mut num, mut pairs) = (0.0, 0.0);
    for i in 0..s.len() {
        for j in 0..s.len() {
            if l[i] && !l[j] {
                pairs += 1.0;
                num += if s[i] > s[j] {
                    1.0
                } else if s[i] == s[j] {
                    0.5
                } else {
                    0.0
                };
            }
        }
    }
    (pairs > 0.0).then(|| num / pairs)
}

/// Mean over anomalous windows of the precision among windows scoring at least as high.
fn ap_reference(s: &[f32], l: &[bool]) -> Option<f64> {
    let pos: Vec<usize> = (0..s.len()).filter(|&i| l[i]).collect();
    if pos.is_empty() {
        return None;
    }
    let total: f64 = pos
        .iter()
        .map(|&i| {
            let above: Vec<usize> = (0..s.len()).filter(|&j| s[j] >= s[i]).collect();
            above.iter().filter(|&&j| l[j]).count() as f64 / above.len() as f64
        })
        .sum();
    Some(total / pos.len() as f64)
}

#[test]
fn auc_matches_brute_force_on_awkward_sizes() {
    for (seed, n) in [(1, 1), (2, 7), (3, 33), (4, 1000)] {
        let (s, l) = scored(seed, n);
        let (a, b) = (roc_auc(&s, &l).unwrap(), roc_reference(&s, &l));
        match (a, b) {
            (Some(a), Some(b)) => assert!((a - b).abs() < 1e-12, "n {n}: {a} vs {b}"),
            (a, b) => assert_eq!(a, b, "n {n}"),
        }
        let (a, b) = (pr_auc(&s, &l).unwrap(), ap_reference(&s, &l));
        match (a, b) {
            (Some(a), Some(b)) => assert!((a - b).abs() < 1e-12, "n {n}: {a} vs {b}"),
            (a, b) => assert_eq!(a, b, "n {n}"),
        }
    }
    // Edge cases: perfect, reversed, all tied, one class, NaN, length mismatch.
    let l = [false, false, true, true];
    assert_eq!(roc_auc(&[0.0, 1.0, 2.0, 3.0], &l).unwrap(), Some(1.0));
    assert_eq!(pr_auc(&[0.0, 1.0, 2.0, 3.0], &l).unwrap(), Some(1.0));
    assert_eq!(roc_auc(&[3.0, 2.0, 1.0, 0.0], &l).unwrap(), Some(0.0));
    assert_eq!(roc_auc(&[1.0; 4], &l).unwrap(), Some(0.5));
    assert_eq!(pr_auc(&[1.0; 4], &l).unwrap(), Some(0.5));
    assert_eq!(roc_auc(&[1.0, 2.0], &[false, false]).unwrap(), None);
    assert_eq!(pr_auc(&[1.0, 2.0], &[false, false]).unwrap(), None);
    assert!(roc_auc(&[f32::NAN, 1.0], &[true, false]).is_err());
    assert!(pr_auc(&[1.0], &[true, false]).is_err());
    assert_eq!(roc_auc(&[], &[]).unwrap(), None);
}

#[test]
fn robust_rules() {
    // Median 3, absolute deviations 2 1 0 1 97: MAD 1.
    let e = [1.0f32, 2.0, 3.0, 4.0, 100.0];
    let t = select_threshold(&e, ThresholdRule::Mad(3.0)).unwrap();
    assert!((f64::from(t) - (3.0 + 3.0 * 1.4826)).abs() < 1e-5);
    // The outlier drags mean + 3 std far above the MAD rule.
    assert!(select_threshold(&e, ThresholdRule::MeanStd(3.0)).unwrap() > 100.0);

    // An exponential(1) sample by its exact quantiles: the EVT level exceeded with
    // probability q is -ln q, beyond the largest sample when q < 1 / n.
    let n = 20_000;
    let x: Vec<f32> = (0..n)
        .map(|i| -(1.0 - (i as f64 + 0.5) / n as f64).ln() as f32)
        .collect();
    for q in [1e-3, 1e-5] {
        let t = f64::from(select_threshold(&x, ThresholdRule::Evt(q)).unwrap());
        let want = -q.ln();
        assert!((t - want).abs() / want < 0.05, "q {q}: {t} vs {want}");
    }
    assert!(f64::from(select_threshold(&x, ThresholdRule::Evt(1e-5)).unwrap()) > 10.5);
    // Too few values for a tail fit.
    assert!(select_threshold(&[1.0, 2.0, 3.0], ThresholdRule::Evt(1e-3)).is_err());
    // A constant tail.
    let flat = vec![1.0f32; 100];
    assert_eq!(
        select_threshold(&flat, ThresholdRule::Mad(6.0)).unwrap(),
        1.0
    );

    // Parsing and validation.
    for (s, r) in [
        ("median+6mad", ThresholdRule::Mad(6.0)),
        ("mad:2.5", ThresholdRule::Mad(2.5)),
        ("evt:1e-4", ThresholdRule::Evt(1e-4)),
        ("p99", ThresholdRule::Percentile(99.0)),
    ] {
        assert_eq!(s.parse::<ThresholdRule>().unwrap(), r);
    }
    for s in ["evt:0.5", "evt:0", "mad:x", "median+mad"] {
        assert!(s.parse::<ThresholdRule>().is_err(), "{s}");
    }
}

#[test]
fn calibration_targets() {
    let (s, l) = scored(9, 500);
    let t = calibrate_threshold(&s, &l, Calibration::MaxF1).unwrap();
    let (bt, best) = best_f1(&s, &l).unwrap();
    assert_eq!(t, bt);
    assert_eq!(Confusion::from_scores(&s, &l, t).unwrap().f1(), best.f1());
    for r in [0.0, 0.01, 0.1, 0.5] {
        let t = calibrate_threshold(&s, &l, Calibration::FalseAlarmRate(r)).unwrap();
        let c = Confusion::from_scores(&s, &l, t).unwrap();
        assert!(c.false_positive_rate() <= r + 1e-12, "far {r}");
        // No lower score would still meet it: one step down adds false alarms past r.
        let lower = s
            .iter()
            .copied()
            .filter(|&v| v < t)
            .fold(f32::MIN, f32::max);
        if lower > f32::MIN {
            let c2 = Confusion::from_scores(&s, &l, lower).unwrap();
            assert!(
                c2.false_positive_rate() > r,
                "far {r}: {t} is not the lowest"
            );
        }
    }
    assert_eq!(
        calibrate_threshold(&s, &l, Calibration::FalseAlarmRate(1.0)).unwrap(),
        f32::NEG_INFINITY
    );
    assert!(calibrate_threshold(&[1.0], &[false], Calibration::MaxF1).is_err());
    assert!(calibrate_threshold(&[1.0], &[true], Calibration::FalseAlarmRate(0.1)).is_err());
    assert_eq!(
        "far:0.01".parse::<Calibration>().unwrap(),
        Calibration::FalseAlarmRate(0.01)
    );
    assert!("far:2".parse::<Calibration>().is_err());
}

/// Rows near a 3-dimensional subspace of R^12, anomalies (every 10th row after `train`) off it.
fn subspace_rows(seed: u64, n: usize, train: usize) -> (Vec<f32>, Vec<bool>) {
    let r = CounterRng::new(seed, 7);
    let basis: Vec<f64> = (0..36).map(|k| r.normal_pair(k).0).collect();
    let mut x = Vec::with_capacity(n * 12);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let anomalous = i >= train && i % 10 == 0;
        let z: Vec<f64> = (0..3)
            .map(|j| r.normal_pair(1000 + (i * 3 + j) as u64).0)
            .collect();
        for d in 0..12 {
            let mut v: f64 = (0..3).map(|j| basis[j * 12 + d] * z[j]).sum();
            v += 0.05 * r.normal_pair(1_000_000 + (i * 12 + d) as u64).0;
            if anomalous {
                v += 4.0 * r.normal_pair(2_000_000 + (i * 12 + d) as u64).0;
            }
            x.push((v * 3.0 + 10.0) as f32);
        }
        labels.push(anomalous);
    }
    (x, labels)
}

fn write_npy<T: npyz::AutoSerialize + Copy>(p: &std::path::Path, v: &[T], shape: &[usize]) {
    lowprec_data::write_npy(p, v, shape).unwrap();
}

#[test]
fn vectors_detector_finds_off_subspace_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (n, train) = (1500, 500);
    let (x, l) = subspace_rows(1, n, train);
    let xp = dir.path().join("x.npy");
    let lp = dir.path().join("y.npy");
    write_npy(&xp, &x, &[n, 12]);
    let li: Vec<u8> = l.iter().map(|&b| u8::from(b)).collect();
    write_npy(&lp, &li, &[n]);
    let data = read_vectors(&xp, Some(&lp)).unwrap();
    assert_eq!((data.rows(), data.dim), (n, 12));
    let cfg = VectorConfig {
        train_rows: train,
        ae: AeConfig {
            hidden: vec![16, 3, 16],
            precision: Precision::fp32(),
            iterations: 300,
            swa_start: Some(225),
            ..AeConfig::default()
        },
        calibration: None,
    };
    let r = run_vectors(&data, None, &cfg, &CpuBackend).unwrap();
    let t = r.summary.test.as_ref().unwrap();
    assert_eq!(r.scores.len(), n - train);
    assert_eq!(t.anomalous, 100);
    assert!(t.roc_auc.unwrap() > 0.95, "{t:?}");
    assert!(t.best_f1 > 0.8, "{t:?}");
    assert_eq!(r.summary.rules.len(), 4);
    // The model learnt the subspace: far below the unit variance of standardised rows.
    assert!(r.summary.final_loss < 0.2, "loss {}", r.summary.final_loss);
    // The same bits again; bfp8 runs too.
    let again = run_vectors(&data, None, &cfg, &CpuBackend).unwrap();
    assert_eq!(again.scores, r.scores);
    assert_eq!(again.summary.threshold, r.summary.threshold);
    let b = VectorConfig {
        ae: AeConfig {
            precision: Precision::bfp8(),
            ..cfg.ae.clone()
        },
        ..cfg.clone()
    };
    let rb = run_vectors(&data, None, &b, &CpuBackend).unwrap();
    assert!(rb.summary.test.unwrap().roc_auc.unwrap() > 0.9);

    // Calibration on another labelled draw sets the threshold.
    let (cx, cl) = subspace_rows(1, 800, 0);
    let cxp = dir.path().join("cx.npy");
    let clp = dir.path().join("cy.npy");
    write_npy(&cxp, &cx, &[800, 12]);
    let cli: Vec<i64> = cl.iter().map(|&b| i64::from(b)).collect();
    write_npy(&clp, &cli, &[800]);
    let cal = read_vectors(&cxp, Some(&clp)).unwrap();
    let c = VectorConfig {
        calibration: Some(Calibration::FalseAlarmRate(0.01)),
        ..cfg.clone()
    };
    let rc = run_vectors(&data, Some(&cal), &c, &CpuBackend).unwrap();
    let cs = rc.summary.calibration.as_ref().unwrap();
    assert!(cs.false_alarm_rate <= 0.01);
    assert_eq!(rc.summary.threshold, cs.threshold);
    assert_eq!(rc.summary.threshold_rule, "calibrated:far:0.01");
}

#[test]
fn vectors_bad_input_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let err = |r: Result<lowprec_rf::vectors::Vectors, lowprec_rf::RfError>| {
        r.expect_err("an error").to_string()
    };
    write_npy(&p("int.npy"), &[1i32, 2, 3, 4], &[2, 2]);
    assert!(err(read_vectors(&p("int.npy"), None)).contains("int.npy"));
    write_npy(&p("cube.npy"), &[0f32; 8], &[2, 2, 2]);
    assert!(err(read_vectors(&p("cube.npy"), None)).contains("[N, D]"));
    write_npy(&p("nan.npy"), &[0f32, 1.0, f32::NAN, 0.0], &[2, 2]);
    let e = err(read_vectors(&p("nan.npy"), None));
    assert!(
        e.contains("nan.npy") && e.contains("row 1, column 0"),
        "{e}"
    );
    write_npy(&p("ok.npy"), &[0f64, 1.0, 2.0, 3.0], &[2, 2]);
    write_npy(&p("y3.npy"), &[0u8, 1, 0], &[3]);
    let e = err(read_vectors(&p("ok.npy"), Some(&p("y3.npy"))));
    assert!(
        e.contains("y3.npy") && e.contains("3 labels for 2 vectors"),
        "{e}"
    );
    write_npy(&p("y2.npy"), &[0u8, 2], &[2]);
    let e = err(read_vectors(&p("ok.npy"), Some(&p("y2.npy"))));
    assert!(e.contains("label 2 at row 1"), "{e}");
    std::fs::write(p("trunc.npy"), &std::fs::read(p("ok.npy")).unwrap()[..70]).unwrap();
    let e = err(read_vectors(&p("trunc.npy"), None));
    assert!(e.contains("trunc.npy") && e.contains("truncated"), "{e}");
    // Too few rows to train and score.
    let data = read_vectors(&p("ok.npy"), None).unwrap();
    let cfg = VectorConfig {
        train_rows: 2,
        ae: AeConfig::default(),
        calibration: None,
    };
    assert!(run_vectors(&data, None, &cfg, &CpuBackend).is_err());
}
