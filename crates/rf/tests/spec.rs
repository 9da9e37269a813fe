//! The generator options of `rf generate` ([`lowprec_rf::spec`]): what they build, and that
//! every bad value is an error naming the option and the value.

use lowprec_rf::spec::{
    parse_f64, parse_noise_band, parse_tone, sample_count, GenerateOptions, KindOverrides,
    DEFAULT_GENERATE_SAMPLES, MAX_GENERATE_SAMPLES,
};
use lowprec_rf::{AnomalyKind, Generator, Message, RfError};

fn opts() -> GenerateOptions {
    GenerateOptions {
        samples: Some(4000),
        ..GenerateOptions::default()
    }
}

/// The error of `o.spec()`, which must be a [`RfError::BadOption`] for `option` with `value`;
/// returns its message, which must name both.
fn refused(o: GenerateOptions, option: &str, value: &str) -> String {
    let e = o.spec().expect_err("accepted");
    bad_option(e, option, value)
}

fn bad_option(e: RfError, option: &str, value: &str) -> String {
    let msg = e.to_string();
    match &e {
        RfError::BadOption {
            option: o,
            value: v,
            ..
        } => {
            assert_eq!((o.as_str(), v.as_str()), (option, value), "{msg}");
        }
        other => panic!("not a BadOption: {other:?}"),
    }
    assert!(
        msg.starts_with(&format!("{option} {value}: ")),
        "message does not name {option} {value}: {msg}"
    );
    msg
}

#[test]
fn explicit_anomalies_and_tones() {
    let o = GenerateOptions {
        tones: vec!["1000".into(), "2500@0.5".into()],
        snr_db: None,
        anomaly_at: vec!["sine@100+200".into(), "chirp@ 3000 + 1000".into()],
        overrides: KindOverrides {
            sine_freq_hz: Some(-123000.0),
            ..KindOverrides::default()
        },
        ..opts()
    };
    let spec = o.spec().unwrap();
    assert_eq!(spec.num_samples, 4000);
    assert_eq!(spec.fm.snr_db, None);
    assert_eq!(
        spec.anomalies[0].kind,
        AnomalyKind::Sine { freq_hz: -123000.0 }
    );
    assert_eq!(
        (spec.anomalies[0].start, spec.anomalies[0].count),
        (100, 200)
    );
    assert_eq!(
        spec.anomalies[1].kind,
        AnomalyKind::Chirp {
            start_hz: -0.4e6,
            end_hz: 0.4e6
        }
    );
    assert_eq!(
        (spec.anomalies[1].start, spec.anomalies[1].count),
        (3000, 1000)
    );
    assert!(spec.anomalies.iter().all(|a| a.power_db == -6.0));
    match &spec.fm.message {
        Message::Tones { tones } => {
            assert_eq!(tones.len(), 2);
            assert_eq!((tones[0].freq_hz, tones[0].amplitude), (1000.0, 1.0));
            assert_eq!((tones[1].freq_hz, tones[1].amplitude), (2500.0, 0.5));
        }
        other => panic!("{other:?}"),
    }
    Generator::new(spec).unwrap();
}

#[test]
fn defaults_and_auto_placed_anomalies() {
    let spec = GenerateOptions::default().spec().unwrap();
    assert_eq!(spec.num_samples, DEFAULT_GENERATE_SAMPLES);
    assert_eq!(spec.fm.snr_db, Some(20.0));
    assert_eq!(
        spec.fm.message,
        Message::Noise {
            low_hz: 500.0,
            high_hz: 15000.0,
            components: 16,
            seed: 0
        }
    );
    assert!(spec.anomalies.is_empty());

    let o = GenerateOptions {
        samples: Some(50000),
        anomalies: vec!["bandpass".into(), "chirp".into(), "sine".into()],
        overrides: KindOverrides {
            bandpass_width_hz: Some(5000.0),
            chirp_end_hz: Some(1000.0),
            ..KindOverrides::default()
        },
        seed: 5,
        ..GenerateOptions::default()
    };
    let spec = o.spec().unwrap();
    assert_eq!(spec.anomalies.len(), 3);
    assert_eq!(
        spec.anomalies[0].kind,
        AnomalyKind::Bandpass {
            center_hz: -0.25e6,
            bandwidth_hz: 5000.0
        }
    );
    assert_eq!(
        spec.anomalies[1].kind,
        AnomalyKind::Chirp {
            start_hz: -0.4e6,
            end_hz: 1000.0
        }
    );
    // One per third of the recording, a quarter anomaly length from the slot edges.
    for (j, a) in spec.anomalies.iter().enumerate() {
        let slot = 50000 / 3;
        assert_eq!(a.count, 2048);
        assert!(a.start >= j as u64 * slot + 512, "{a:?}");
        assert!(a.start + a.count + 512 <= (j as u64 + 1) * slot, "{a:?}");
    }
    // Same options, same spec.
    assert_eq!(o.spec().unwrap(), spec);
}

#[test]
fn sample_count_from_samples_or_seconds() {
    assert_eq!(
        sample_count(None, None, 1e6).unwrap(),
        DEFAULT_GENERATE_SAMPLES
    );
    assert_eq!(sample_count(Some(7), Some(1.0), 1e6).unwrap(), 7);
    assert_eq!(sample_count(None, Some(0.0015), 1e6).unwrap(), 1500);
    assert_eq!(sample_count(None, Some(0.5), 3.0).unwrap(), 2);
    assert_eq!(
        sample_count(Some(MAX_GENERATE_SAMPLES), None, 1e6).unwrap(),
        MAX_GENERATE_SAMPLES
    );
}

#[test]
fn sample_bounds_are_errors_naming_the_option() {
    let msg = refused(
        GenerateOptions {
            samples: Some(MAX_GENERATE_SAMPLES + 1),
            ..opts()
        },
        "--samples",
        "2147483649",
    );
    assert!(msg.contains("2147483648 samples, 16 GiB"), "{msg}");
    let msg = refused(
        GenerateOptions {
            samples: None,
            seconds: Some(1e4),
            ..opts()
        },
        "--seconds",
        "10000 at 1000000 Hz",
    );
    assert!(msg.contains("10000000000 samples"), "{msg}");
    for (s, shown) in [(-1.0, "-1"), (f64::NAN, "NaN"), (f64::INFINITY, "inf")] {
        let msg = refused(
            GenerateOptions {
                samples: None,
                seconds: Some(s),
                ..opts()
            },
            "--seconds",
            shown,
        );
        assert!(msg.contains("non-negative"), "{msg}");
    }
    for (fs, shown) in [(0.0, "0"), (-1e6, "-1000000"), (f64::NAN, "NaN")] {
        let msg = refused(
            GenerateOptions {
                sample_rate_hz: fs,
                ..opts()
            },
            "--sample-rate",
            shown,
        );
        assert!(msg.contains("positive"), "{msg}");
    }
}

#[test]
fn bad_tones_and_noise_bands_name_the_option_and_value() {
    let tones = |t: &str| GenerateOptions {
        tones: vec!["1000".into(), t.into()],
        ..opts()
    };
    let msg = refused(tones("abc"), "--tones", "\"abc\"");
    assert!(msg.contains("frequency \"abc\": not a number"), "{msg}");
    let msg = refused(tones("inf"), "--tones", "\"inf\"");
    assert!(msg.contains("not finite"), "{msg}");
    let msg = refused(tones("1000@x"), "--tones", "\"1000@x\"");
    assert!(msg.contains("amplitude \"x\": not a number"), "{msg}");
    let msg = refused(tones("1000@NaN"), "--tones", "\"1000@NaN\"");
    assert!(msg.contains("amplitude \"NaN\": not finite"), "{msg}");
    assert_eq!(parse_tone(" 440 @ 0.25").unwrap().amplitude, 0.25);

    let band = |b: &str| GenerateOptions {
        noise_band: b.into(),
        ..opts()
    };
    let msg = refused(band("5"), "--noise-band", "\"5\"");
    assert!(msg.contains("expected LOW:HIGH"), "{msg}");
    let msg = refused(band("a:5"), "--noise-band", "\"a:5\"");
    assert!(msg.contains("low \"a\": not a number"), "{msg}");
    let msg = refused(band("300:1e999"), "--noise-band", "\"300:1e999\"");
    assert!(msg.contains("high \"1e999\": not finite"), "{msg}");
    assert_eq!(parse_noise_band("300:3000").unwrap(), (300.0, 3000.0));
    // Tones replace the noise message: its band is not read.
    assert!(GenerateOptions {
        noise_band: "junk".into(),
        ..tones("500")
    }
    .spec()
    .is_ok());

    bad_option(parse_f64("--x", "1e400").unwrap_err(), "--x", "\"1e400\"");
    bad_option(parse_f64("--x", "").unwrap_err(), "--x", "\"\"");
    assert_eq!(parse_f64("--x", " -2.5 ").unwrap(), -2.5);
}

#[test]
fn bad_anomalies_name_the_option_and_value() {
    let at = |a: &str| GenerateOptions {
        anomaly_at: vec!["sine@0+10".into(), a.into()],
        ..opts()
    };
    for a in [
        "chirp900",
        "chirp@900",
        "chirp@x+5",
        "chirp@5+-1",
        "chirp@5+",
    ] {
        let msg = refused(at(a), "--anomaly", &format!("{a:?}"));
        assert!(msg.contains("expected TYPE@START+COUNT"), "{msg}");
    }
    let msg = refused(at("foo@1+2"), "--anomaly", "\"foo@1+2\"");
    assert!(
        msg.contains("unknown anomaly type \"foo\"") && msg.contains("bandpass, chirp, sine"),
        "{msg}"
    );
    let msg = refused(
        GenerateOptions {
            anomalies: vec!["sine".into(), "Chirp".into()],
            ..opts()
        },
        "--anomalies",
        "\"Chirp\"",
    );
    assert!(msg.contains("unknown anomaly type"), "{msg}");
    // A slot too short for the anomaly is the placement's error.
    let e = GenerateOptions {
        samples: Some(1000),
        anomalies: vec!["chirp".into()],
        ..opts()
    }
    .spec()
    .unwrap_err();
    assert!(e.to_string().contains("do not fit in 1000 samples"), "{e}");
}
