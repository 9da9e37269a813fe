//! The model, detector, vector and experiment options of `rf detect` and `rf experiment`:
//! their defaults are the library's, and bad values are errors naming the option and value.

mod common;

use common::*;
use lowprec_nn::Precision;
use lowprec_rf::autoencoder::{parse_precision, parse_swa_start, AeConfig, ModelOptions};
use lowprec_rf::detect::{DetectConfig, DetectOptions};
use lowprec_rf::experiment::{ExperimentOptions, ExperimentResult, FinalResult};
use lowprec_rf::metrics::Calibration;
use lowprec_rf::vectors::VectorOptions;
use lowprec_rf::{
    write_sigmf, Generator, PairFm, ReadOptions, RfError, ScoreSummary, SigMfMeta,
    StandardPairConfig, WindowConfig,
};

/// `e` must be a [`RfError::BadOption`] for `option` with `value`, its message naming both.
fn bad_option(e: RfError, option: &str, value: &str) -> String {
    let msg = e.to_string();
    assert!(
        matches!(&e, RfError::BadOption { option: o, value: v, .. } if o == option && v == value),
        "{e:?}"
    );
    assert!(msg.starts_with(&format!("{option} {value}: ")), "{msg}");
    msg
}

#[test]
fn model_defaults_are_the_autoencoders() {
    let cfg = ModelOptions::default()
        .ae_config(32, Precision::bfp8())
        .unwrap();
    assert_eq!(cfg, AeConfig::default());
    let cfg = ModelOptions {
        iterations: 40,
        swa_start: Some("none".into()),
        threshold: "mean+3std".into(),
        seed: 9,
        ..ModelOptions::default()
    }
    .ae_config(8, Precision::fp32())
    .unwrap();
    assert_eq!(
        (cfg.dim, cfg.iterations, cfg.swa_start, cfg.seed),
        (8, 40, None, 9)
    );
    assert_eq!(cfg.threshold.to_string(), "mean+3std");
    assert!(cfg.precision.is_fp32());
}

#[test]
fn swa_start_and_precision_parse_or_name_the_option() {
    assert_eq!(parse_swa_start(None, 200).unwrap(), Some(150));
    assert_eq!(parse_swa_start(None, 3).unwrap(), Some(2));
    assert_eq!(parse_swa_start(Some("none"), 200).unwrap(), None);
    assert_eq!(parse_swa_start(Some("17"), 200).unwrap(), Some(17));
    let msg = bad_option(
        parse_swa_start(Some("soon"), 200).unwrap_err(),
        "--swa-start",
        "\"soon\"",
    );
    assert!(msg.contains("expected an iteration or none"), "{msg}");
    bad_option(
        parse_swa_start(Some("-1"), 200).unwrap_err(),
        "--swa-start",
        "\"-1\"",
    );

    assert!(parse_precision("--precision", "bfp8").unwrap() == Precision::bfp8());
    let msg = bad_option(
        parse_precision("--precision", "int3").unwrap_err(),
        "--precision",
        "\"int3\"",
    );
    assert!(msg.contains("int3"), "{msg}");
}

#[test]
fn bad_model_values_are_errors() {
    let bad = |m: ModelOptions| m.ae_config(32, Precision::bfp8()).unwrap_err().to_string();
    let msg = bad(ModelOptions {
        swa_start: Some("later".into()),
        ..ModelOptions::default()
    });
    assert!(msg.starts_with("--swa-start \"later\": "), "{msg}");
    let msg = bad(ModelOptions {
        threshold: "q9".into(),
        ..ModelOptions::default()
    });
    assert!(msg.contains("threshold rule \"q9\""), "{msg}");
    let msg = bad(ModelOptions {
        lr: f64::NAN,
        ..ModelOptions::default()
    });
    assert!(msg.contains("learning rate must be finite"), "{msg}");
    let msg = bad(ModelOptions {
        momentum: 1.0,
        ..ModelOptions::default()
    });
    assert!(msg.contains("momentum must be in [0, 1), got 1"), "{msg}");
}

#[test]
fn detect_defaults_are_the_detectors_and_bad_values_are_errors() {
    let read = ReadOptions::default();
    assert_eq!(
        DetectOptions::default().config(read).unwrap(),
        DetectConfig::default()
    );
    let err = |o: DetectOptions| o.config(read).unwrap_err().to_string();
    let msg = err(DetectOptions {
        window: WindowConfig {
            len: 0,
            ..WindowConfig::default()
        },
        ..DetectOptions::default()
    });
    assert!(msg.contains("got len 0"), "{msg}");
    let msg = err(DetectOptions {
        precision: "int3".into(),
        ..DetectOptions::default()
    });
    assert!(msg.starts_with("--precision \"int3\": "), "{msg}");
    let msg = err(DetectOptions {
        train_windows: 1,
        ..DetectOptions::default()
    });
    assert!(msg.contains("at least 2 training windows"), "{msg}");
    // The window decides the auto-encoder's width.
    let cfg = DetectOptions {
        window: WindowConfig {
            len: 8,
            stride: 4,
            min_overlap: 0.25,
        },
        ..DetectOptions::default()
    }
    .config(read)
    .unwrap();
    assert_eq!(cfg.ae.dim, 16);
}

#[test]
fn detect_calibration_needs_an_annotated_recording_and_a_target() {
    let dir = tempfile::tempdir().unwrap();
    let clean = Generator::new(tone_spec(4000, Some(20.0), 1)).unwrap();
    let base = dir.path().join("clean");
    write_sigmf(&base, SigMfMeta::for_generator(&clean, None), &clean, 1000).unwrap();
    let with = |path: &std::path::Path, target: &str| DetectOptions {
        calibrate: Some(path.to_path_buf()),
        calibrate_target: target.into(),
        ..DetectOptions::default()
    };
    let e = with(&base, "f1")
        .config(ReadOptions::default())
        .unwrap_err();
    let msg = bad_option(e, "--calibrate", &base.display().to_string());
    assert!(msg.contains("no annotations to calibrate on"), "{msg}");

    let mut spec = tone_spec(4000, Some(20.0), 1);
    spec.anomalies = lowprec_rf::signal::place_anomalies(
        &[lowprec_rf::AnomalyKind::Sine { freq_hz: 2e5 }],
        4000,
        500,
        0.0,
        100,
        1,
    )
    .unwrap();
    let g = Generator::new(spec).unwrap();
    let labelled = dir.path().join("labelled");
    write_sigmf(&labelled, SigMfMeta::for_generator(&g, None), &g, 1000).unwrap();
    let cfg = with(&labelled, "far:0.01")
        .config(ReadOptions::default())
        .unwrap();
    let c = cfg.calibration.unwrap();
    assert_eq!(c.target, Calibration::FalseAlarmRate(0.01));
    assert_eq!((c.samples.len(), c.labels.len()), (4000, 1));
    assert_eq!(c.name, labelled.display().to_string());
    let msg = with(&labelled, "far:2")
        .config(ReadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("calibration target \"far:2\""), "{msg}");
    let e = with(&dir.path().join("none"), "f1")
        .config(ReadOptions::default())
        .unwrap_err();
    assert!(e.to_string().contains("none.sigmf-meta"), "{e}");
}

#[test]
fn vector_calibration_needs_its_labels() {
    let o = VectorOptions {
        vectors: "v.npy".into(),
        labels: None,
        calibrate: Some("c.npy".into()),
        calibrate_labels: None,
        calibrate_target: "f1".into(),
        train_rows: 10,
        precision: "bfp8".into(),
        model: ModelOptions::default(),
    };
    let msg = o.prepare().unwrap_err().to_string();
    assert!(
        msg.contains("--calibrate with --vectors needs --calibrate-labels"),
        "{msg}"
    );
    let msg = VectorOptions {
        calibrate: None,
        ..o
    }
    .prepare()
    .unwrap_err()
    .to_string();
    assert!(msg.contains("v.npy"), "{msg}");
}

#[test]
fn experiment_options_build_the_protocols_config() {
    let cfg = ExperimentOptions::default().config().unwrap();
    assert_eq!(cfg.pair, StandardPairConfig::detection());
    assert_eq!(
        cfg.precisions
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        ["fp32", "bfp8"]
    );
    assert_eq!(cfg.fpga.as_deref(), Some("zcu111-16x16"));
    assert_eq!((cfg.train_windows, cfg.target_f1), (1000, 0.87));
    assert_eq!(cfg.window, WindowConfig::default());
    assert_eq!(
        cfg.ae,
        AeConfig {
            precision: Precision::fp32(),
            ..AeConfig::default()
        }
    );
    let cfg = ExperimentOptions {
        fpga: "none".into(),
        wideband: true,
        seed: 4,
        ..ExperimentOptions::default()
    }
    .config()
    .unwrap();
    assert_eq!(cfg.fpga, None);
    assert_eq!((cfg.pair.fm, cfg.pair.seed), (PairFm::WIDEBAND, 4));
    let e = ExperimentOptions {
        precisions: vec!["fp32".into(), "int3".into()],
        ..ExperimentOptions::default()
    }
    .config()
    .unwrap_err();
    bad_option(e, "--precisions", "\"int3\"");
}

#[test]
fn experiment_final_json_has_each_precision_and_the_context() {
    let labels = [false, false, true, true];
    let test = ScoreSummary::new(&[0.1, 0.2, 0.9, 0.3], &labels, 0.5).unwrap();
    let fin = FinalResult {
        precision: "bfp8".into(),
        f1: 0.8,
        precision_score: 1.0,
        recall: 0.5,
        iterations_to_target: Some(12),
        iterations: 30,
        seconds: 1.5,
        projected_seconds: Some(0.5),
        backends_agree: Some(true),
        fpga_cycles: Some(1000),
        test,
        rules: Vec::new(),
    };
    let r = ExperimentResult {
        curve: Vec::new(),
        finals: vec![fin],
        baselines: Vec::new(),
        train_windows: 1000,
        test_windows: 4,
        test_anomalous: 2,
        target_f1: 0.87,
        fpga: Some("zcu111-16x16".into()),
    };
    let pair = StandardPairConfig::detection();
    let v = r.final_json(&pair);
    assert_eq!(v["bfp8"]["iterations_to_f1_0.87"], 12);
    assert_eq!(v["bfp8"]["backends_agree"], true);
    assert_eq!(v["bfp8"]["test"]["fn"], 1);
    assert_eq!(v["train_windows"], 1000);
    assert_eq!(v["fpga"], "zcu111-16x16");
    assert_eq!(v["pair"]["transmission"], "narrowband");
    assert_eq!(v["pair"]["anomaly_power_db"], -12.0);
    assert!(v.get("precisions").is_none());
    let wide = StandardPairConfig {
        fm: PairFm::WIDEBAND,
        ..pair
    };
    assert_eq!(r.final_json(&wide)["pair"]["transmission"], "wideband");
    assert!(r.curve_jsonl().unwrap().is_empty());
}
