//! The auto-encoder detector: F1 floor after training (fp32 and bfp8), the online detector's
//! records and summary, bad input, and determinism across thread counts.

use lowprec_kernels::CpuBackend;
use lowprec_nn::Precision;
use lowprec_rf::detect::{run_detector, DetectConfig, DetectSummary, WindowRecord};
use lowprec_rf::experiment::{run_experiment, ExperimentConfig};
use lowprec_rf::sigmf::encode_cf32;
use lowprec_rf::{standard_pair, Iq, LabelRange, NonFinitePolicy, RfError, SampleStream};
use lowprec_rf::{PairData, StandardPairConfig};

/// The detection pair, shorter: 2^15 test samples (2048 windows, 3 anomalies of each type,
/// 1024 samples long: 384 anomalous windows).
fn small_detection_pair() -> StandardPairConfig {
    StandardPairConfig {
        train_samples: 1 << 16,
        test_samples: 1 << 15,
        anomaly_samples: 1024,
        ..StandardPairConfig::detection()
    }
}

/// Recordings 4 and 6 of `rf experiment` left the model on its `output = 0` saddle for most
/// of the 200 iterations when the output layer started at full LeCun scale (F1 0.07 and 0.22);
/// with the small output initialisation both train like the others (0.88 and 0.95 measured).
#[test]
fn recordings_that_used_to_stall_train() {
    for seed in [4, 6] {
        let cfg = ExperimentConfig {
            pair: StandardPairConfig {
                seed,
                ..StandardPairConfig::detection()
            },
            precisions: vec![Precision::fp32()],
            fpga: None,
            ..ExperimentConfig::default()
        };
        let r = run_experiment(&cfg, &mut |_, _, _| {}).unwrap();
        let f = &r.finals[0];
        assert!(f.f1 >= 0.8, "recording {seed}: F1 {}", f.f1);
        assert!(
            f.test.roc_auc.unwrap() > 0.95,
            "recording {seed}: {:?}",
            f.test
        );
        // The threshold-free figures bound the chosen threshold's.
        assert!(f.test.best_f1 >= f.f1);
    }
}

/// Floor 0.8: on the full-size recipe the same 200 iterations reach 0.93-0.94 for both
/// policies (seeds 1-3), while the untrained network scores below 0.2 and the window-energy
/// detector about 0.48; so passing means the model learned the signal, and the margin to
/// 0.93 absorbs the shorter test recording. The bfp8 run also trains on the FPGA simulator
/// and must reproduce every loss bit for bit.
#[test]
fn trained_autoencoder_beats_the_floor_in_fp32_and_bfp8() {
    let cfg = ExperimentConfig {
        pair: small_detection_pair(),
        ..ExperimentConfig::default()
    };
    let r = run_experiment(&cfg, &mut |_, _, _| {}).unwrap();
    assert_eq!(r.test_windows, 2048);
    assert_eq!(r.finals.len(), 2);
    for f in &r.finals {
        assert!(f.f1 >= 0.8, "{} F1 {} below the floor", f.precision, f.f1);
        assert!(f.iterations_to_target.is_some_and(|i| i <= 200), "{f:?}");
    }
    let first = r.curve.iter().find(|p| p.precision == "fp32").unwrap();
    assert!(
        first.f1 < 0.5,
        "untrained F1 {} (the task is too easy)",
        first.f1
    );
    let bfp8 = r.finals.iter().find(|f| f.precision == "bfp8").unwrap();
    assert_eq!(bfp8.backends_agree, Some(true));
    assert!(bfp8.fpga_cycles.unwrap() > 0);
    let energy = r.baselines.iter().find(|b| b.detector == "energy").unwrap();
    assert!(energy.f1 < 0.7, "energy detector F1 {}", energy.f1);
}

fn pair() -> PairData {
    standard_pair(&small_detection_pair())
        .unwrap()
        .generate()
        .unwrap()
}

/// The training recording followed by the test recording (annotations shifted).
fn stream_samples(p: &PairData) -> (Vec<Iq>, Vec<LabelRange>) {
    let mut s = p.train.clone();
    s.extend_from_slice(&p.test);
    let off = p.train.len() as u64;
    let labels = p
        .test_labels
        .iter()
        .map(|l| LabelRange {
            start: l.start + off,
            ..l.clone()
        })
        .collect();
    (s, labels)
}

fn small_detect_config(precision: Precision) -> DetectConfig {
    let mut cfg = DetectConfig {
        train_windows: 1000,
        refresh_every: 2000,
        refresh_iterations: 10,
        score_batch: 333,
        chunk_samples: 4099,
        ..DetectConfig::default()
    };
    cfg.ae.precision = precision;
    cfg
}

fn detect(
    bytes: &[u8],
    labels: &[LabelRange],
    cfg: &DetectConfig,
) -> Result<(Vec<WindowRecord>, DetectSummary), RfError> {
    let mut stream = SampleStream::new(bytes, "<test>", NonFinitePolicy::Error);
    let mut recs = Vec::new();
    let summary = run_detector(
        &mut stream,
        labels,
        !labels.is_empty(),
        Some(1e6),
        cfg,
        &CpuBackend,
        &mut |r| {
            recs.push(*r);
            Ok(())
        },
        &mut |_| {},
    )?;
    Ok((recs, summary))
}

fn bytes_of(samples: &[Iq]) -> Vec<u8> {
    let mut b = Vec::new();
    encode_cf32(samples, &mut b);
    b
}

#[test]
fn detect_records_summary_and_json_lines() {
    let p = pair();
    let (samples, labels) = stream_samples(&p);
    let cfg = small_detect_config(Precision::bfp8());
    let (recs, s) = detect(&bytes_of(&samples), &labels, &cfg).unwrap();
    let n = samples.len() as u64 / 16;
    assert_eq!(recs.len() as u64, n);
    assert_eq!(s.windows, n);
    assert_eq!(s.samples, samples.len() as u64);
    for (k, r) in recs.iter().enumerate() {
        assert_eq!(r.index, k as u64);
        assert_eq!(r.offset, 16 * k as u64);
        assert!(r.error.is_finite() && r.error >= 0.0);
        assert!(r.label.is_some());
    }
    assert_eq!(s.flagged, recs.iter().filter(|r| r.flag).count() as u64);
    // (6144 - 1000) windows after the first batch, a refresh every 2000.
    assert_eq!(s.refreshes + s.skipped_refreshes, 2);
    assert_eq!(s.thresholds.len() as u64, 1 + s.refreshes);
    let c = s.confusion.as_ref().unwrap();
    assert_eq!(c.tp + c.fp + c.tn + c.fn_, n);
    assert_eq!(
        c.tp + c.fn_,
        recs.iter().filter(|r| r.label == Some(true)).count() as u64
    );
    // Anomalies only in the test part; the detector must find most of them.
    assert!(c.recall > 0.7, "{c:?}");
    assert!(s.realtime_factor.unwrap() > 0.0);
    // The JSON line format.
    let mut line = String::new();
    recs[5].to_json_line(&mut line);
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["index"], 5);
    assert_eq!(v["offset"], 80);
    assert_eq!(v["error"].as_f64().unwrap() as f32, recs[5].error);
    assert_eq!(v["flag"], recs[5].flag);
    assert_eq!(v["label"], false);
    let unlabelled = WindowRecord {
        label: None,
        ..recs[5]
    };
    line.clear();
    unlabelled.to_json_line(&mut line);
    assert!(!line.contains("label"), "{line}");
    let summary: serde_json::Value = serde_json::to_value(&s).unwrap();
    for key in [
        "samples",
        "windows",
        "flagged",
        "samples_per_second",
        "thresholds",
    ] {
        assert!(summary.get(key).is_some(), "summary lacks {key}: {summary}");
    }
}

#[test]
fn same_seed_same_flags_at_one_and_two_threads() {
    let p = pair();
    let (samples, labels) = stream_samples(&p);
    let bytes = bytes_of(&samples[..40_000]);
    let cfg = small_detect_config(Precision::bfp8());
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| detect(&bytes, &labels, &cfg).unwrap().0)
    };
    let (a, b) = (run(1), run(2));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.flag, y.flag, "window {}", x.index);
        assert_eq!(x.error.to_bits(), y.error.to_bits(), "window {}", x.index);
    }
    // Another model seed changes the errors.
    let mut other = cfg.clone();
    other.ae.seed = 7;
    let c = detect(&bytes, &labels, &other).unwrap().0;
    assert!(a.iter().zip(&c).any(|(x, y)| x.error != y.error));
}

#[test]
fn bad_streams_give_clear_errors() {
    let p = pair();
    let cfg = small_detect_config(Precision::fp32());
    // Truncated: a partial sample at the end.
    let mut bytes = bytes_of(&p.train[..20_000]);
    bytes.extend_from_slice(&[1, 2, 3]);
    let e = detect(&bytes, &[], &cfg).unwrap_err().to_string();
    assert!(e.contains("3 trailing bytes after sample 20000"), "{e}");
    // NaN sample after the training batch.
    let mut s = p.train[..20_000].to_vec();
    s[17_001].q = f32::NAN;
    let e = detect(&bytes_of(&s), &[], &cfg).unwrap_err().to_string();
    assert!(e.contains("non-finite Q value NaN at sample 17001"), "{e}");
    // NaN inside the training batch.
    s[17_001].q = 0.0;
    s[5].i = f32::INFINITY;
    let e = detect(&bytes_of(&s), &[], &cfg).unwrap_err().to_string();
    assert!(e.contains("at sample 5"), "{e}");
    // Too short for the first training batch.
    let e = detect(&bytes_of(&p.train[..9_000]), &[], &cfg)
        .unwrap_err()
        .to_string();
    assert!(e.contains("ended after 9000 samples"), "{e}");
    // Empty stream.
    assert!(detect(&[], &[], &cfg).is_err());
    // Bad configuration.
    let mut bad = cfg.clone();
    bad.ae.dim = 30;
    assert!(detect(&bytes_of(&p.train[..20_000]), &[], &bad).is_err());
    let mut bad = cfg.clone();
    bad.ae.lr = f64::NAN;
    assert!(detect(&bytes_of(&p.train[..20_000]), &[], &bad).is_err());
}

/// A calibration recording sets the threshold (and recalibrates after refreshes); the summary
/// says so, and the threshold-free figures are there with labels.
#[test]
fn calibrated_threshold_and_threshold_free_figures() {
    let p = pair();
    let (samples, labels) = stream_samples(&p);
    let mut cfg = small_detect_config(Precision::fp32());
    let (_, plain) = detect(&bytes_of(&samples), &labels, &cfg).unwrap();
    let (roc, best) = (plain.roc_auc.unwrap(), plain.best_f1.unwrap());
    assert!(roc > 0.9 && roc <= 1.0, "{roc}");
    assert!(best >= plain.confusion.as_ref().unwrap().f1);
    assert!(plain.pr_auc.unwrap() > 0.5);
    cfg.calibration = Some(lowprec_rf::detect::StreamCalibration {
        name: "cal".into(),
        samples: samples.clone(),
        labels: labels.clone(),
        target: lowprec_rf::Calibration::FalseAlarmRate(0.02),
    });
    let (_, s) = detect(&bytes_of(&samples), &labels, &cfg).unwrap();
    let c = s.calibration.as_ref().unwrap();
    assert_eq!(s.threshold_rule, "calibrated:far:0.02");
    assert_eq!(c.threshold, s.thresholds[0]);
    assert!(c.false_alarm_rate <= 0.02, "{c:?}");
    assert_eq!(s.thresholds.len() as u64, 1 + s.refreshes);
    // A calibration recording without anomalies cannot calibrate for F1.
    cfg.calibration = Some(lowprec_rf::detect::StreamCalibration {
        name: "clean".into(),
        samples: samples.clone(),
        labels: Vec::new(),
        target: lowprec_rf::Calibration::MaxF1,
    });
    let e = detect(&bytes_of(&samples), &labels, &cfg).unwrap_err();
    assert!(e.to_string().contains("anomalous"), "{e}");
}
