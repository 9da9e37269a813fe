mod common;

use std::io::Read;
use std::path::Path;

use common::*;
use lowprec_rf::sigmf::{
    open_sigmf, read_raw, sigmf_paths, write_cf32, SampleSource, SampleStream, SigMfMeta,
};
use lowprec_rf::signal::{place_anomalies, AnomalyKind};
use lowprec_rf::{
    read_recording, write_sigmf, Generator, Iq, NonFinitePolicy, ReadOptions, RfError,
};

fn generator() -> Generator {
    let mut spec = tone_spec(9_001, Some(20.0), 4);
    spec.anomalies = place_anomalies(
        &[
            AnomalyKind::Bandpass {
                center_hz: -250e3,
                bandwidth_hz: 50e3,
            },
            AnomalyKind::Chirp {
                start_hz: -1e5,
                end_hz: 1e5,
            },
            AnomalyKind::Sine { freq_hz: 2e5 },
        ],
        9_001,
        700,
        -6.0,
        50,
        4,
    )
    .unwrap();
    Generator::new(spec).unwrap()
}

fn write(dir: &Path, name: &str, g: &Generator, chunk: usize) -> SigMfMeta {
    write_sigmf(
        &dir.join(name),
        SigMfMeta::for_generator(g, Some("test".into())),
        g,
        chunk,
    )
    .unwrap()
}

#[test]
fn round_trip_preserves_samples_metadata_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    let g = generator();
    let written = write(dir.path(), "rec", &g, 1000);
    let samples = g.generate_all().unwrap();
    // Missing directories are created.
    write(&dir.path().join("sub/dir"), "rec", &g, 1000);
    assert!(dir.path().join("sub/dir/rec.sigmf-meta").exists());
    // Any of the three names opens the recording.
    for name in ["rec", "rec.sigmf-meta", "rec.sigmf-data"] {
        let r = read_recording(&dir.path().join(name), ReadOptions::default()).unwrap();
        assert_eq!(bytes_of(&r.samples), bytes_of(&samples));
        assert_eq!(r.meta.as_ref(), Some(&written));
        assert_eq!(r.sample_rate_hz, Some(FS));
        let labels = r.label_ranges().unwrap();
        assert_eq!(labels.len(), 3);
        for (l, a) in labels.iter().zip(&g.spec().anomalies) {
            assert_eq!(
                (l.start, l.count, l.label.as_str()),
                (a.start, a.count, a.kind.label())
            );
        }
    }
    // The JSON carries the SigMF fields by their standard names.
    let text = std::fs::read_to_string(dir.path().join("rec.sigmf-meta")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["global"]["core:datatype"], "cf32_le");
    assert_eq!(v["global"]["core:sample_rate"], 1e6);
    assert_eq!(v["global"]["core:version"], "1.2.0");
    assert_eq!(v["global"]["core:sha512"].as_str().unwrap().len(), 128);
    assert_eq!(v["global"]["lowprec:sample_count"], 9001);
    assert_eq!(v["captures"][0]["core:sample_start"], 0);
    let ann = v["annotations"].as_array().unwrap();
    assert_eq!(ann.len(), 3);
    assert_eq!(ann[1]["core:label"], "chirp");
    assert_eq!(ann[1]["core:sample_count"], 700);
    assert!(ann[0]["core:sample_start"].as_u64().unwrap() >= 50);
    // The generator spec is recorded and reproduces the data.
    let spec: lowprec_rf::SignalSpec =
        serde_json::from_value(v["global"]["lowprec:generator"].clone()).unwrap();
    assert_eq!(&spec, g.spec());
    // Data file size.
    assert_eq!(
        std::fs::metadata(dir.path().join("rec.sigmf-data"))
            .unwrap()
            .len(),
        9001 * 8
    );
}

#[test]
fn chunk_size_does_not_change_files() {
    let dir = tempfile::tempdir().unwrap();
    let g = generator();
    let reference = {
        write(dir.path(), "a", &g, 65_536);
        std::fs::read(dir.path().join("a.sigmf-data")).unwrap()
    };
    let meta_ref = std::fs::read(dir.path().join("a.sigmf-meta")).unwrap();
    for chunk in [1usize, 7, 33, 1000] {
        write(dir.path(), "b", &g, chunk);
        assert_eq!(
            std::fs::read(dir.path().join("b.sigmf-data")).unwrap(),
            reference,
            "chunk {chunk}"
        );
        assert_eq!(
            std::fs::read(dir.path().join("b.sigmf-meta")).unwrap(),
            meta_ref
        );
    }
    // No temporary files are left behind.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
}

/// A source that fails half-way: the final file must not appear, nor a temporary one linger.
struct FailingSource;
impl SampleSource for FailingSource {
    fn num_samples(&self) -> u64 {
        100
    }
    fn fill(&self, start: u64, out: &mut [Iq]) -> Result<(), RfError> {
        if start >= 50 {
            return Err(RfError::InvalidArgument("source failed".into()));
        }
        out.fill(Iq { i: 1.0, q: 2.0 });
        Ok(())
    }
}

#[test]
fn failed_write_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let err = write_sigmf(
        &dir.path().join("x"),
        SigMfMeta::new(1e3),
        &FailingSource,
        10,
    )
    .unwrap_err();
    assert!(err.to_string().contains("source failed"));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn write_rejects_annotation_past_end() {
    let dir = tempfile::tempdir().unwrap();
    let g = generator();
    let mut meta = SigMfMeta::for_generator(&g, None);
    meta.annotations[2].sample_start = 9_000;
    let err = write_sigmf(&dir.path().join("x"), meta, &g, 1000).unwrap_err();
    assert!(matches!(err, RfError::Meta { .. }), "{err}");
}

fn rewrite_meta(path: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(path, serde_json::to_string(&v).unwrap()).unwrap();
}

fn fresh(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let g = generator();
    write(dir, "r", &g, 4096);
    let base = dir.join("r");
    let (meta, data) = sigmf_paths(&base);
    (base, meta, data)
}

fn truncate(path: &Path, by: u64) {
    let len = std::fs::metadata(path).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(len - by).unwrap();
}

#[test]
fn truncated_and_odd_sized_data_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    // Whole samples missing: the sample count in the metadata catches it.
    let (base, _, data) = fresh(dir.path());
    truncate(&data, 8 * 10);
    match read_recording(&base, ReadOptions::default()) {
        Err(RfError::LengthMismatch {
            expected: 9001,
            actual: 8991,
            source_name,
        }) => {
            assert!(source_name.ends_with("r.sigmf-data"))
        }
        other => panic!("{other:?}"),
    }
    // Part of a sample missing.
    let (base, _, data) = fresh(dir.path());
    truncate(&data, 3);
    match read_recording(&base, ReadOptions::default()) {
        Err(RfError::PartialSample {
            rem: 5,
            samples: 9000,
            bytes,
            ..
        }) => assert_eq!(bytes, 9000 * 8 + 5),
        other => panic!("{other:?}"),
    }
    // Without lowprec:sample_count and core:sha512, a truncation is caught by the
    // annotations reaching past the data (the last anomaly ends near the end).
    let (base, meta, data) = fresh(dir.path());
    rewrite_meta(&meta, |v| {
        let g = v["global"].as_object_mut().unwrap();
        g.remove("lowprec:sample_count");
        g.remove("core:sha512");
        v["annotations"][2]["core:sample_count"] =
            serde_json::json!(9001 - v["annotations"][2]["core:sample_start"].as_u64().unwrap());
    });
    truncate(&data, 8);
    let err = read_recording(&base, ReadOptions::default()).unwrap_err();
    assert!(
        matches!(err, RfError::Meta { .. }) && err.to_string().contains("annotation 2"),
        "{err}"
    );
}

#[test]
fn corrupted_data_fails_the_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let (base, _, data) = fresh(dir.path());
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[4000] ^= 0x01;
    std::fs::write(&data, &bytes).unwrap();
    assert!(matches!(
        read_recording(&base, ReadOptions::default()),
        Err(RfError::Checksum { .. })
    ));
    // Verification can be switched off.
    let opts = ReadOptions {
        verify_checksum: false,
        ..Default::default()
    };
    assert_eq!(read_recording(&base, opts).unwrap().samples.len(), 9001);
}

type MetaEdit = Box<dyn Fn(&mut serde_json::Value)>;

#[test]
fn bad_metadata_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, MetaEdit)> = vec![
        (
            "core:datatype",
            Box::new(|v| v["global"]["core:datatype"] = "ci16_le".into()),
        ),
        (
            "core:datatype",
            Box::new(|v| v["global"]["core:datatype"] = "cf32_be".into()),
        ),
        (
            "core:datatype",
            Box::new(|v| {
                v["global"].as_object_mut().unwrap().remove("core:datatype");
            }),
        ),
        (
            "core:version",
            Box::new(|v| {
                v["global"].as_object_mut().unwrap().remove("core:version");
            }),
        ),
        (
            "core:sample_rate",
            Box::new(|v| v["global"]["core:sample_rate"] = (-5.0).into()),
        ),
        (
            "core:num_channels",
            Box::new(|v| v["global"]["core:num_channels"] = 2.into()),
        ),
        (
            "core:sha512",
            Box::new(|v| v["global"]["core:sha512"] = "abc".into()),
        ),
        (
            "core:sample_start",
            Box::new(|v| v["annotations"][0]["core:sample_start"] = (-1).into()),
        ),
    ];
    for (needle, edit) in cases {
        let (base, meta, _) = fresh(dir.path());
        rewrite_meta(&meta, edit);
        match read_recording(&base, ReadOptions::default()) {
            Err(e @ RfError::Meta { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(needle) && msg.contains("r.sigmf-meta"),
                    "{msg}"
                )
            }
            other => panic!("{needle}: {other:?}"),
        }
    }
    let (base, meta, _) = fresh(dir.path());
    std::fs::write(&meta, "{\"global\": {").unwrap();
    assert!(matches!(
        read_recording(&base, ReadOptions::default()),
        Err(RfError::Meta { .. })
    ));
}

#[test]
fn missing_files_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (base, meta, data) = fresh(dir.path());
    std::fs::remove_file(&meta).unwrap();
    match read_recording(&data, ReadOptions::default()) {
        Err(RfError::MissingMeta { meta: m, .. }) => assert_eq!(m, meta),
        other => panic!("{other:?}"),
    }
    let (base2, _, data2) = fresh(dir.path());
    std::fs::remove_file(&data2).unwrap();
    assert!(matches!(
        read_recording(&base2, ReadOptions::default()),
        Err(RfError::Io { .. })
    ));
    assert!(matches!(
        read_recording(&base.with_file_name("nope"), ReadOptions::default()),
        Err(RfError::Io { .. })
    ));
}

fn raw_file(dir: &Path, samples: &[Iq]) -> std::path::PathBuf {
    let p = dir.join("raw.cf32");
    std::fs::write(&p, bytes_of(samples)).unwrap();
    p
}

#[test]
fn non_finite_samples_error_or_become_zero() {
    let dir = tempfile::tempdir().unwrap();
    for (k, bad) in [
        (
            5usize,
            Iq {
                i: f32::NAN,
                q: 0.0,
            },
        ),
        (
            0,
            Iq {
                i: 1.0,
                q: f32::INFINITY,
            },
        ),
        (
            1999,
            Iq {
                i: f32::NEG_INFINITY,
                q: f32::NAN,
            },
        ),
    ] {
        let mut s: Vec<Iq> = (0..2000)
            .map(|j| Iq {
                i: j as f32,
                q: -(j as f32),
            })
            .collect();
        s[k] = bad;
        let p = raw_file(dir.path(), &s);
        match read_raw(&p, None, NonFinitePolicy::Error) {
            Err(RfError::NonFinite {
                index, component, ..
            }) => {
                assert_eq!(index, k as u64);
                assert_eq!(component, if bad.i.is_finite() { "Q" } else { "I" });
            }
            other => panic!("{other:?}"),
        }
        let r = read_raw(&p, Some(1e3), NonFinitePolicy::Zero).unwrap();
        assert_eq!(r.replaced, 1);
        assert_eq!(r.samples.len(), 2000);
        assert_eq!(r.samples[k], Iq::default());
        s[k] = Iq::default();
        assert_eq!(bytes_of(&r.samples), bytes_of(&s));
    }
}

/// A reader that hands out at most `step` bytes per call, like a pipe.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}
impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let k = self.step.min(buf.len()).min(self.data.len());
        buf[..k].copy_from_slice(&self.data[..k]);
        self.data = &self.data[k..];
        Ok(k)
    }
}

#[test]
fn streams_any_chunking_and_short_reads() {
    let g = generator();
    let samples = g.generate_all().unwrap();
    let bytes = bytes_of(&samples);
    for (chunk, step) in [
        (1usize, 3usize),
        (7, 8),
        (33, 5),
        (1000, 4096),
        (100_000, 1 << 20),
    ] {
        let mut stream = SampleStream::new(
            Trickle { data: &bytes, step },
            "<stdin>",
            NonFinitePolicy::Error,
        )
        .expect_count(9001);
        let mut got = Vec::new();
        let mut buf = Vec::new();
        while stream.read_chunk(&mut buf, chunk).unwrap() > 0 {
            assert!(buf.len() <= chunk);
            got.extend_from_slice(&buf);
        }
        assert_eq!(bytes_of(&got), bytes, "chunk {chunk} step {step}");
        assert_eq!(stream.position(), 9001);
        // Reads after the end keep returning 0.
        assert_eq!(stream.read_chunk(&mut buf, 10).unwrap(), 0);
    }
    // An enormous request is served without allocating for it.
    let mut stream = SampleStream::new(&bytes[..], "<stdin>", NonFinitePolicy::Error);
    let mut buf = Vec::new();
    assert_eq!(stream.read_chunk(&mut buf, usize::MAX).unwrap(), 9001);
    // Odd trailing bytes on a stream.
    let mut stream = SampleStream::new(
        Trickle {
            data: &bytes[..8 * 10 + 7],
            step: 3,
        },
        "<stdin>",
        NonFinitePolicy::Error,
    );
    match stream.read_to_end() {
        Err(RfError::PartialSample {
            source_name,
            rem: 7,
            samples: 10,
            ..
        }) => assert_eq!(source_name, "<stdin>"),
        other => panic!("{other:?}"),
    }
    // Count and checksum expectations on a stream.
    let mut s =
        SampleStream::new(&bytes[..800], "<stdin>", NonFinitePolicy::Error).expect_count(101);
    assert!(matches!(
        s.read_to_end(),
        Err(RfError::LengthMismatch {
            expected: 101,
            actual: 100,
            ..
        })
    ));
    let mut sink = Vec::new();
    let sha = write_cf32(&mut sink, &samples[..], 77).unwrap();
    assert_eq!(sink, bytes);
    let mut s =
        SampleStream::new(&bytes[..], "<stdin>", NonFinitePolicy::Error).expect_sha512(&sha);
    assert_eq!(s.read_to_end().unwrap().len(), 9001);
    let mut s =
        SampleStream::new(&bytes[8..], "<stdin>", NonFinitePolicy::Error).expect_sha512(&sha);
    assert!(matches!(s.read_to_end(), Err(RfError::Checksum { .. })));
}

#[test]
fn empty_recordings_and_streams_are_fine() {
    let dir = tempfile::tempdir().unwrap();
    let empty: &[Iq] = &[];
    let meta = write_sigmf(&dir.path().join("e"), SigMfMeta::new(1e3), empty, 16).unwrap();
    assert_eq!(meta.global.sample_count, Some(0));
    let r = read_recording(&dir.path().join("e"), ReadOptions::default()).unwrap();
    assert!(r.samples.is_empty());
    let mut s = SampleStream::new(std::io::empty(), "<stdin>", NonFinitePolicy::Error);
    assert!(s.read_to_end().unwrap().is_empty());
}

#[test]
fn non_finite_samples_in_a_sigmf_recording() {
    let dir = tempfile::tempdir().unwrap();
    let mut s: Vec<Iq> = (0..100)
        .map(|k| Iq {
            i: k as f32,
            q: 1.0,
        })
        .collect();
    s[42].q = f32::NAN;
    write_sigmf(&dir.path().join("n"), SigMfMeta::new(1e3), &s[..], 7).unwrap();
    match read_recording(&dir.path().join("n"), ReadOptions::default()) {
        Err(RfError::NonFinite {
            index: 42,
            component: "Q",
            source_name,
            ..
        }) => {
            assert!(source_name.ends_with("n.sigmf-data"))
        }
        other => panic!("{other:?}"),
    }
    let opts = ReadOptions {
        non_finite: NonFinitePolicy::Zero,
        ..Default::default()
    };
    let r = read_recording(&dir.path().join("n"), opts).unwrap();
    assert_eq!((r.replaced, r.samples[42]), (1, Iq::default()));
}

#[test]
fn raw_reader_matches_sigmf_reader() {
    let dir = tempfile::tempdir().unwrap();
    let (base, _, data) = fresh(dir.path());
    let a = read_recording(&base, ReadOptions::default()).unwrap();
    let b = read_raw(&data, Some(FS), NonFinitePolicy::Error).unwrap();
    assert_eq!(bytes_of(&a.samples), bytes_of(&b.samples));
    assert!(b.meta.is_none() && b.label_ranges().unwrap().is_empty());
    let (_, stream) = open_sigmf(&base, ReadOptions::default()).unwrap();
    assert_eq!(stream.position(), 0);
}

#[test]
fn annotation_without_count_cannot_label() {
    let mut meta = SigMfMeta::new(1e3);
    meta.annotations.push(lowprec_rf::sigmf::Annotation {
        sample_start: 3,
        sample_count: None,
        label: Some("x".into()),
        freq_lower_edge: None,
        freq_upper_edge: None,
        generator: None,
        comment: None,
    });
    assert!(meta.label_ranges().is_err());
}

#[test]
fn atomic_write_to_a_pipe_writes_in_place() {
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    lowprec_rf::sigmf::atomic_write(&fifo, |w| {
        w.write_all(b"summary")
            .map_err(|e| lowprec_rf::RfError::io(&fifo, e))
    })
    .unwrap();
    assert_eq!(reader.join().unwrap(), b"summary");
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
}
