use lowprec_rf::metrics::{best_f1, percentile, recall_by_kind};
use lowprec_rf::rng::CounterRng;
use lowprec_rf::{select_threshold, Confusion, ThresholdRule, Windows};

#[test]
fn percentile_interpolates_between_ranks() {
    let v = [5.0f32, 1.0, 4.0, 2.0, 3.0];
    assert_eq!(percentile(&v, 50.0).unwrap(), 3.0);
    assert_eq!(percentile(&v, 25.0).unwrap(), 2.0);
    assert!((percentile(&v, 90.0).unwrap() - 4.6).abs() < 1e-12);
    assert_eq!(percentile(&v, 0.0).unwrap(), 1.0);
    assert_eq!(percentile(&v, 100.0).unwrap(), 5.0);
    assert_eq!(percentile(&[7.0], 37.0).unwrap(), 7.0);
    assert!(percentile(&[], 50.0).is_err());
    assert!(percentile(&v, 100.5).is_err());
    assert!(percentile(&v, -1.0).is_err());
    assert!(percentile(&[1.0, f32::NAN], 50.0).is_err());
}

#[test]
fn threshold_rules() {
    let errors: Vec<f32> = (1..=100).map(|k| k as f32).collect();
    assert_eq!(
        select_threshold(&errors, ThresholdRule::Percentile(99.0)).unwrap(),
        99.01
    );
    // mean 50.5, population std sqrt((100^2 - 1) / 12)
    let t = select_threshold(&errors, ThresholdRule::MeanStd(2.0)).unwrap();
    let want = 50.5 + 2.0 * (9999.0f64 / 12.0).sqrt();
    assert!((f64::from(t) - want).abs() < 1e-4, "{t} vs {want}");
    assert!(select_threshold(&[1.0, f32::INFINITY], ThresholdRule::default()).is_err());
    assert!(select_threshold(&[], ThresholdRule::default()).is_err());
    assert!(select_threshold(&errors, ThresholdRule::MeanStd(f64::NAN)).is_err());
    // With the p-th percentile, about p% of training errors are not above the threshold.
    let rng = CounterRng::new(1, 1);
    let e: Vec<f32> = (0..10_000).map(|k| rng.uniform(k) as f32).collect();
    let t = select_threshold(&e, ThresholdRule::Percentile(95.0)).unwrap();
    let above = e.iter().filter(|&&x| x > t).count();
    assert!((490..=510).contains(&above), "{above}");
}

#[test]
fn threshold_rule_parsing() {
    assert_eq!(
        "p99".parse::<ThresholdRule>().unwrap(),
        ThresholdRule::Percentile(99.0)
    );
    assert_eq!(
        "p99.5".parse::<ThresholdRule>().unwrap(),
        ThresholdRule::Percentile(99.5)
    );
    assert_eq!(
        "percentile:90".parse::<ThresholdRule>().unwrap(),
        ThresholdRule::Percentile(90.0)
    );
    assert_eq!(
        "mean+3std".parse::<ThresholdRule>().unwrap(),
        ThresholdRule::MeanStd(3.0)
    );
    assert_eq!(
        "mean+2.5std".parse::<ThresholdRule>().unwrap(),
        ThresholdRule::MeanStd(2.5)
    );
    for bad in [
        "",
        "p",
        "p101",
        "q99",
        "mean+std",
        "mean+xstd",
        "p-1",
        "pnan",
    ] {
        assert!(bad.parse::<ThresholdRule>().is_err(), "{bad:?}");
    }
    for r in [ThresholdRule::Percentile(99.5), ThresholdRule::MeanStd(3.0)] {
        assert_eq!(r.to_string().parse::<ThresholdRule>().unwrap(), r);
    }
}

#[test]
fn f1_on_hand_made_cases() {
    // Scores 0.1..0.8, labels: the top three and one low one are anomalous; threshold 0.45.
    let scores = [0.1f32, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8];
    let labels = [false, true, false, false, false, true, true, true];
    let c = Confusion::from_scores(&scores, &labels, 0.45).unwrap();
    assert_eq!(
        c,
        Confusion {
            tp: 3,
            fp: 1,
            tn: 3,
            fn_: 1
        }
    );
    assert_eq!(c.precision(), 0.75);
    assert_eq!(c.recall(), 0.75);
    assert_eq!(c.f1(), 0.75);
    assert_eq!(c.accuracy(), 0.75);
    assert_eq!(c.false_positive_rate(), 0.25);
    // A score equal to the threshold is not anomalous.
    let c = Confusion::from_scores(&scores, &labels, 0.5).unwrap();
    assert_eq!(
        c,
        Confusion {
            tp: 3,
            fp: 0,
            tn: 4,
            fn_: 1
        }
    );
    assert!((c.f1() - 6.0 / 7.0).abs() < 1e-15);
    // Perfect detector.
    let c = Confusion::from_scores(&[0.0, 1.0], &[false, true], 0.5).unwrap();
    assert_eq!((c.precision(), c.recall(), c.f1()), (1.0, 1.0, 1.0));
    // Nothing predicted: precision and F1 are 0 by convention.
    let c = Confusion::from_scores(&[0.0, 0.1], &[false, true], 0.5).unwrap();
    assert_eq!((c.precision(), c.recall(), c.f1()), (0.0, 0.0, 0.0));
    // No anomalies at all, nothing predicted.
    let c = Confusion::from_scores(&[0.0], &[false], 0.5).unwrap();
    assert_eq!((c.f1(), c.accuracy()), (0.0, 1.0));
    // Everything predicted anomalous.
    let c =
        Confusion::from_scores(&[1.0, 1.0, 1.0, 1.0], &[true, false, false, false], 0.5).unwrap();
    assert_eq!((c.precision(), c.recall()), (0.25, 1.0));
    assert_eq!(c.f1(), 0.4);
    // Errors.
    assert!(Confusion::from_scores(&[0.0], &[true, false], 0.5).is_err());
    assert!(Confusion::from_scores(&[f32::NAN], &[true], 0.5).is_err());
    assert!(Confusion::from_scores(&[0.0], &[true], f32::NAN).is_err());
    // Infinite scores are legal (a detector may saturate) and are anomalous.
    let c = Confusion::from_scores(&[f32::INFINITY], &[true], 0.5).unwrap();
    assert_eq!(c.tp, 1);
}

#[test]
fn best_f1_matches_brute_force() {
    let rng = CounterRng::new(5, 5);
    for n in [1usize, 2, 7, 33, 1000] {
        // Coarse scores so ties occur; labels correlated with scores.
        let scores: Vec<f32> = (0..n as u64)
            .map(|k| (rng.uniform(k) * 20.0).floor() as f32)
            .collect();
        let labels: Vec<bool> = (0..n as u64)
            .map(|k| rng.uniform_pair(k + 1_000_000).0 * 20.0 < f64::from(scores[k as usize]) + 3.0)
            .collect();
        let (t, c) = best_f1(&scores, &labels).unwrap();
        assert_eq!(Confusion::from_scores(&scores, &labels, t).unwrap(), c);
        let mut candidates: Vec<f32> = scores.clone();
        candidates.push(f32::NEG_INFINITY);
        let brute = candidates
            .iter()
            .map(|&t| Confusion::from_scores(&scores, &labels, t).unwrap().f1())
            .fold(0.0f64, f64::max);
        assert_eq!(c.f1(), brute, "n {n}");
    }
    assert!(best_f1(&[], &[]).is_err());
    assert!(best_f1(&[f32::NAN], &[true]).is_err());
    let (t, c) = best_f1(
        &[f32::INFINITY, 1.0, f32::NEG_INFINITY],
        &[true, false, false],
    )
    .unwrap();
    assert_eq!((t, c.f1()), (1.0, 1.0));
    assert!(best_f1(&[1.0], &[]).is_err());
}

#[test]
fn recall_per_kind() {
    let w = Windows {
        dim: 2,
        inputs: vec![0.0; 10],
        starts: vec![0, 1, 2, 3, 4],
        labels: vec![true, true, true, false, false],
        kinds: vec![Some(0), Some(1), Some(1), Some(0), None],
        kind_names: vec!["sine".into(), "chirp".into()],
    };
    let r = recall_by_kind(&[1.0, 1.0, 0.0, 1.0, 1.0], &w, 0.5).unwrap();
    assert_eq!(
        (r[0].kind.as_str(), r[0].detected, r[0].total),
        ("sine", 1, 1)
    );
    assert_eq!(
        (r[1].kind.as_str(), r[1].detected, r[1].total),
        ("chirp", 1, 2)
    );
    assert!(recall_by_kind(&[1.0], &w, 0.5).is_err());
}
