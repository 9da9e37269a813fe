//! The work behind `rf inspect`, `rf pair` and `rf baseline`: opening an input (SigMF, raw
//! with a side metadata file), summarising a stream, writing the standard pair and the PCA
//! baseline on it.

mod common;

use std::path::Path;

use common::*;
use lowprec_rf::baseline::run_baseline;
use lowprec_rf::inspect::summarise;
use lowprec_rf::pair::write_pair;
use lowprec_rf::sigmf::{open_input, sigmf_paths, InputSource, SampleStream};
use lowprec_rf::signal::{place_anomalies, AnomalyKind};
use lowprec_rf::window::make_windows;
use lowprec_rf::{
    write_sigmf, Generator, NonFinitePolicy, Normaliser, ReadOptions, RfError, StandardPairConfig,
    ThresholdRule, WindowConfig,
};

fn generator() -> Generator {
    let mut spec = tone_spec(20_000, Some(10.0), 3);
    spec.anomalies = place_anomalies(
        &[
            AnomalyKind::Sine { freq_hz: 2e5 },
            AnomalyKind::Chirp {
                start_hz: -1e5,
                end_hz: 1e5,
            },
            AnomalyKind::Sine { freq_hz: -3e5 },
        ],
        20_000,
        1000,
        -6.0,
        100,
        3,
    )
    .unwrap();
    Generator::new(spec).unwrap()
}

fn write(dir: &Path, g: &Generator) -> std::path::PathBuf {
    let base = dir.join("rec");
    write_sigmf(
        &base,
        lowprec_rf::SigMfMeta::for_generator(g, None),
        g,
        4096,
    )
    .unwrap();
    base
}

#[test]
fn input_sources() {
    assert_eq!(InputSource::new(Path::new("-"), false), InputSource::Stdin);
    assert_eq!(InputSource::new(Path::new("-"), true), InputSource::Stdin);
    assert_eq!(
        InputSource::new(Path::new("x"), true),
        InputSource::Raw("x".into())
    );
    assert_eq!(
        InputSource::new(Path::new("x"), false),
        InputSource::SigMf("x".into())
    );
    assert!(InputSource::Stdin.is_raw() && InputSource::Raw("x".into()).is_raw());
    assert!(!InputSource::SigMf("x".into()).is_raw());
}

#[test]
fn summary_counts_samples_power_and_labelled_windows() {
    let dir = tempfile::tempdir().unwrap();
    let g = generator();
    let base = write(dir.path(), &g);
    let samples = g.generate_all().unwrap();
    let wcfg = WindowConfig {
        len: 16,
        stride: 8,
        min_overlap: 0.5,
    };
    let expected = make_windows(
        &samples,
        wcfg,
        Normaliser::identity(),
        &g.spec().label_ranges(),
    )
    .unwrap();
    let power: f64 = samples
        .iter()
        .map(|s| f64::from(s.i).powi(2) + f64::from(s.q).powi(2))
        .sum();
    let mut first = None;
    for chunk in [1, 999, 1 << 16] {
        let mut input = open_input(
            &InputSource::SigMf(base.clone()),
            None,
            ReadOptions::default(),
        )
        .unwrap();
        assert_eq!(input.sample_rate_hz(), Some(FS));
        assert!(input.has_annotations());
        let ranges = input.label_ranges().unwrap();
        let s = summarise(&mut input.stream, &ranges, wcfg, chunk).unwrap();
        assert_eq!(s.samples, 20_000);
        assert_eq!(s.replaced, 0);
        assert_eq!(s.windows, expected.len() as u64);
        assert_eq!(s.anomalous, expected.anomalous() as u64);
        assert!(s.anomalous > 0);
        // Two sine anomalies and a chirp: per-kind counts by label, adding up.
        let names: Vec<&str> = s.per_kind.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["sine", "chirp"]);
        assert_eq!(s.per_kind.iter().map(|(_, c)| c).sum::<u64>(), s.anomalous);
        assert!((s.power_sum - power).abs() <= 1e-9 * power);
        assert_eq!(s.mean_power(), Some(s.power_sum / 20_000.0));
        // The chunk size never changes the summary.
        match &first {
            None => first = Some(s),
            Some(f) => assert_eq!(&s, f),
        }
    }
}

#[test]
fn raw_input_takes_a_side_metadata_file_a_sigmf_recording_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let g = generator();
    let base = write(dir.path(), &g);
    let (meta_path, data_path) = sigmf_paths(&base);

    let e = open_input(
        &InputSource::SigMf(base.clone()),
        Some(&meta_path),
        ReadOptions::default(),
    )
    .err()
    .expect("accepted --meta with a SigMF recording");
    let msg = e.to_string();
    assert!(matches!(e, RfError::BadOption { ref option, .. } if option == "--meta"));
    assert!(
        msg.starts_with(&format!("--meta {}: ", meta_path.display())),
        "{msg}"
    );

    // Raw without metadata: no rate, no labels.
    let mut raw = open_input(
        &InputSource::Raw(data_path.clone()),
        None,
        ReadOptions::default(),
    )
    .unwrap();
    assert!(raw.meta.is_none() && !raw.has_annotations());
    assert_eq!(raw.sample_rate_hz(), None);
    let ranges = raw.label_ranges().unwrap();
    let s = summarise(&mut raw.stream, &ranges, WindowConfig::default(), 4096).unwrap();
    assert_eq!((s.samples, s.anomalous), (20_000, 0));

    // Raw with the side file: its labels, and its count and checksum are checked.
    let mut side = open_input(
        &InputSource::Raw(data_path.clone()),
        Some(&meta_path),
        ReadOptions::default(),
    )
    .unwrap();
    assert_eq!(side.sample_rate_hz(), Some(FS));
    assert_eq!(side.label_ranges().unwrap(), g.spec().label_ranges());
    let ranges = side.label_ranges().unwrap();
    let s = summarise(&mut side.stream, &ranges, WindowConfig::default(), 4096).unwrap();
    assert!(s.anomalous > 0);

    let short = dir.path().join("short.cf32");
    let bytes = std::fs::read(&data_path).unwrap();
    std::fs::write(&short, &bytes[..bytes.len() - 8]).unwrap();
    let mut cut = open_input(
        &InputSource::Raw(short.clone()),
        Some(&meta_path),
        ReadOptions::default(),
    )
    .unwrap();
    let e = summarise(&mut cut.stream, &[], WindowConfig::default(), 4096).unwrap_err();
    assert!(
        matches!(
            e,
            RfError::LengthMismatch {
                expected: 20_000,
                actual: 19_999,
                ..
            }
        ),
        "{e}"
    );

    let missing = dir.path().join("missing.sigmf-meta");
    let e = open_input(
        &InputSource::Raw(data_path),
        Some(&missing),
        ReadOptions::default(),
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("missing.sigmf-meta"), "{e}");
}

#[test]
fn summary_replaces_non_finite_samples_when_asked() {
    let mut bytes = Vec::new();
    for v in [1.0f32, 0.0, f32::NAN, 1.0, 0.0, 2.0] {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    let mut s = SampleStream::new(&bytes[..], "mem", NonFinitePolicy::Zero);
    let sum = summarise(
        &mut s,
        &[],
        WindowConfig {
            len: 1,
            stride: 1,
            min_overlap: 1.0,
        },
        2,
    )
    .unwrap();
    assert_eq!((sum.samples, sum.replaced, sum.windows), (3, 1, 3));
    assert_eq!((sum.power_sum, sum.peak_power), (5.0, 4.0));
    let mut s = SampleStream::new(&bytes[..], "mem", NonFinitePolicy::Error);
    let e = summarise(&mut s, &[], WindowConfig::default(), 2).unwrap_err();
    assert!(
        e.to_string()
            .contains("mem: non-finite I value NaN at sample 1"),
        "{e}"
    );
}

#[test]
fn pair_written_and_baseline_detects_its_anomalies() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StandardPairConfig {
        train_samples: 65536,
        test_samples: 32768,
        anomaly_samples: 1024,
        ..StandardPairConfig::default()
    };
    let out = dir.path().join("pair");
    let written = write_pair(&cfg, &out).unwrap();
    assert_eq!(written.len(), 2);
    assert_eq!(
        (
            written[0].base.clone(),
            written[0].samples,
            written[0].anomalies
        ),
        (out.join("train"), 65536, 0)
    );
    assert_eq!(
        (
            written[1].base.clone(),
            written[1].samples,
            written[1].anomalies
        ),
        (out.join("test"), 32768, 9)
    );
    let r = run_baseline(
        &out.join("train"),
        &out.join("test"),
        8,
        ThresholdRule::Percentile(99.0),
        WindowConfig::default(),
    )
    .unwrap();
    assert_eq!((r.train_windows, r.test_windows), (4096, 2048));
    assert_eq!(r.train_anomalous, 0);
    assert_eq!(r.test_anomalous, 9 * 1024 / 16);
    assert!(r.test.f1() > 0.5, "{}", r.test);
    assert!(r.oracle.f1() >= r.test.f1());
    assert_eq!(r.recall_by_kind.len(), 3);
    let v = r.to_json();
    assert_eq!(v["detector"], "pca8");
    assert_eq!(v["threshold_rule"], "p99");
    assert_eq!(v["test_windows"], 2048);
    assert_eq!(v["tp"].as_u64().unwrap(), r.test.tp);
    assert_eq!(v["recall_by_kind"][2]["kind"], "sine");
    // A missing recording names its file.
    let e = run_baseline(
        &out.join("nope"),
        &out.join("test"),
        8,
        ThresholdRule::Percentile(99.0),
        WindowConfig::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");
}
