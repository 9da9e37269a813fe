//! `lowprec rf ...` end to end: generate, inspect, pair, baseline, detect and experiment write
//! what they say; bad arguments fail with the option named and leave no files behind.

use std::path::Path;
use std::process::{Command, Output};

fn lowprec(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lowprec"))
        .arg("rf")
        .args(args)
        .env_remove("LOWPREC_ISA")
        .output()
        .unwrap()
}

/// Runs `lowprec rf ARGS`, which must succeed; returns its stdout.
fn ok(args: &[&str]) -> String {
    let o = lowprec(args);
    assert!(
        o.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// Runs `lowprec rf ARGS`, which must fail with every one of `want` in its error.
fn refused(args: &[&str], want: &[&str]) {
    let o = lowprec(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{args:?} succeeded");
    for w in want {
        assert!(err.contains(w), "{args:?}: `{w}` not in: {err}");
    }
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn generate_inspect_pair_and_baseline_run() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("rec");
    let b = base.to_str().unwrap();
    let args = [
        "generate",
        "--out",
        b,
        "--samples",
        "50000",
        "--anomalies",
        "bandpass,chirp,sine",
        "--snr-db",
        "-3",
        "--carrier-offset",
        "-20000",
        "--seed",
        "5",
    ];
    let out = ok(&args);
    assert!(
        out.contains("(50000 samples, 0.050 s at 1000000 Hz)"),
        "{out}"
    );
    assert_eq!(out.matches(" at samples [").count(), 3, "{out}");
    let first = std::fs::read(dir.path().join("rec.sigmf-data")).unwrap();
    assert_eq!(first.len(), 50000 * 8);
    // Same arguments and seed, other chunk size: same bytes.
    let mut chunked = args.to_vec();
    chunked.extend(["--chunk", "33"]);
    ok(&chunked);
    assert_eq!(
        std::fs::read(dir.path().join("rec.sigmf-data")).unwrap(),
        first
    );
    let meta = json(&dir.path().join("rec.sigmf-meta"));
    assert_eq!(meta["annotations"].as_array().unwrap().len(), 3);

    let out = ok(&["inspect", b]);
    assert!(out.contains("samples: 50000\n"), "{out}");
    assert!(
        out.contains("sample rate: 1000000 Hz (0.050000 s)"),
        "{out}"
    );
    assert!(out.contains("annotations: 3\n"), "{out}");
    assert!(
        out.contains("windows of 16 samples every 16: 3125, anomalous"),
        "{out}"
    );
    for kind in ["bandpass", "chirp", "sine"] {
        assert!(out.contains(&format!("\n  {kind}: 12")), "{out}");
    }
    let data = dir.path().join("rec.sigmf-data");
    let raw = lowprec(&["inspect", data.to_str().unwrap(), "--raw"]);
    assert!(raw.status.success());
    let raw_out = String::from_utf8_lossy(&raw.stdout);
    assert!(raw_out.contains("samples: 50000\n") && !raw_out.contains("annotations"));
    assert!(String::from_utf8_lossy(&raw.stderr).contains("raw input without --meta"));
    // Raw with the side metadata: the same summary as the recording.
    let side = ok(&[
        "inspect",
        data.to_str().unwrap(),
        "--raw",
        "--meta",
        dir.path().join("rec.sigmf-meta").to_str().unwrap(),
    ]);
    assert_eq!(side, out);

    let pair_dir = dir.path().join("pair");
    let p = pair_dir.to_str().unwrap();
    let out = ok(&[
        "pair",
        "--out-dir",
        p,
        "--train-samples",
        "65536",
        "--test-samples",
        "32768",
        "--anomaly-samples",
        "1024",
    ]);
    assert!(out.contains("train (65536 samples, 0 anomalies)"), "{out}");
    assert!(out.contains("test (32768 samples, 9 anomalies)"), "{out}");
    let json_path = dir.path().join("baseline.json");
    let out = ok(&[
        "baseline",
        "--train",
        &format!("{p}/train"),
        "--test",
        &format!("{p}/test"),
        "--json",
        json_path.to_str().unwrap(),
    ]);
    assert!(out.starts_with("PCA-8 on 4096 training windows"), "{out}");
    assert!(out.contains("oracle threshold"), "{out}");
    let v = json(&json_path);
    assert_eq!(v["test_windows"], 2048);
    assert_eq!(v["detector"], "pca8");
    assert!(v["f1"].as_f64().unwrap() > 0.5, "{v}");
}

#[test]
fn generate_to_stdout_with_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let meta = dir.path().join("s.sigmf-meta");
    let o = lowprec(&[
        "generate",
        "--out",
        "-",
        "--meta",
        meta.to_str().unwrap(),
        "--samples",
        "3000",
        "--anomaly",
        "sine@100+200",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.stdout.len(), 3000 * 8);
    let v = json(&meta);
    assert_eq!(v["global"]["lowprec:sample_count"], 3000);
    assert_eq!(v["global"]["core:sha512"].as_str().unwrap().len(), 128);
    // The same recording written as SigMF has the same samples.
    let base = dir.path().join("r");
    ok(&[
        "generate",
        "--out",
        base.to_str().unwrap(),
        "--samples",
        "3000",
        "--anomaly",
        "sine@100+200",
    ]);
    assert_eq!(
        std::fs::read(dir.path().join("r.sigmf-data")).unwrap(),
        o.stdout
    );
}

#[test]
fn detect_writes_jsonl_and_summary() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("nb");
    let b = base.to_str().unwrap();
    ok(&[
        "generate",
        "--out",
        b,
        "--samples",
        "40000",
        "--deviation",
        "3000",
        "--noise-band",
        "300:3000",
        "--anomaly",
        "sine@30000+2000",
        "--anomaly-power-db",
        "-12",
        "--seed",
        "2",
    ]);
    let out = dir.path().join("sub/records.jsonl");
    let summary = dir.path().join("summary.json");
    ok(&[
        "detect",
        b,
        "--out",
        out.to_str().unwrap(),
        "--summary",
        summary.to_str().unwrap(),
        "--train-windows",
        "500",
        "--iterations",
        "40",
        "--refresh-every",
        "1000",
        "--threads",
        "1",
        "--quiet",
    ]);
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2500);
    assert_eq!(lines[7]["index"], 7);
    assert_eq!(lines[7]["offset"], 112);
    assert!(lines[7]["error"].as_f64().unwrap() >= 0.0);
    assert!(lines[7]["flag"].is_boolean());
    assert_eq!(lines[1900]["label"], true);
    let s = json(&summary);
    assert_eq!(s["windows"], 2500);
    assert_eq!(s["samples"], 40000);
    assert_eq!(
        s["refreshes"].as_u64().unwrap() + s["skipped_refreshes"].as_u64().unwrap(),
        2
    );
    assert!(s["confusion"]["f1"].as_f64().is_some());
    assert_eq!(
        s["flagged"].as_u64().unwrap() as usize,
        lines.iter().filter(|l| l["flag"] == true).count()
    );
    // Raw input without metadata, to stdout: no labels, same errors.
    let data = dir.path().join("nb.sigmf-data");
    let raw = ok(&[
        "detect",
        data.to_str().unwrap(),
        "--raw",
        "--sample-rate",
        "1e6",
        "--train-windows",
        "500",
        "--iterations",
        "40",
        "--refresh-every",
        "1000",
        "--quiet",
    ]);
    let first: serde_json::Value = serde_json::from_str(raw.lines().next().unwrap()).unwrap();
    assert!(first.get("label").is_none());
    assert_eq!(first["error"], lines[0]["error"]);
    assert_eq!(raw.lines().count(), 2500);
    // Bad arguments fail without leaving the output behind.
    let bad = dir.path().join("bad.jsonl");
    let bo = bad.to_str().unwrap();
    let meta = dir.path().join("nb.sigmf-meta");
    for (args, want) in [
        (&["--precision", "int3"][..], &["--precision \"int3\""][..]),
        (&["--backend", "tpu"], &["tpu"]),
        (&["--threshold", "q9"], &["threshold rule \"q9\""]),
        (&["--window", "0"], &["got len 0"]),
        (
            &["--swa-start", "soon"],
            &["--swa-start \"soon\"", "iteration or none"],
        ),
        (&["--train-windows", "5000"], &["5000"]),
        (
            &["--calibrate", b, "--calibrate-target", "far:2"],
            &["\"far:2\""],
        ),
        (
            &["--meta", meta.to_str().unwrap()],
            &["--meta", "a SigMF recording has its own"],
        ),
    ] {
        let mut all = vec!["detect", b, "--out", bo, "--quiet"];
        all.extend_from_slice(args);
        refused(&all, want);
    }
    assert!(!bad.exists());
}

#[test]
fn experiment_writes_curve_final_and_plot() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("fig9");
    let table = ok(&[
        "experiment",
        "--out",
        out.to_str().unwrap(),
        "--iterations",
        "30",
        "--threads",
        "2",
    ]);
    assert!(table.starts_with("policy "), "{table}");
    assert!(table.contains("baseline pca8"), "{table}");
    let curve = std::fs::read_to_string(out.join("curve.jsonl")).unwrap();
    let rows: Vec<serde_json::Value> = curve
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 60);
    for r in &rows {
        for k in [
            "iteration",
            "precision",
            "f1",
            "seconds",
            "projected_seconds",
        ] {
            assert!(r.get(k).is_some(), "{k} missing in {r}");
        }
    }
    assert_eq!(rows[30]["precision"], "bfp8");
    assert_eq!(rows[30]["iteration"], 1);
    let fin = json(&out.join("final.json"));
    for p in ["fp32", "bfp8"] {
        for k in ["f1", "precision_score", "recall", "iterations_to_f1_0.87"] {
            assert!(fin[p].get(k).is_some(), "{p}.{k} missing in {fin}");
        }
    }
    assert_eq!(fin["bfp8"]["backends_agree"], true);
    assert_eq!(fin["pair"]["transmission"], "narrowband");
    assert_eq!(fin["test_windows"], 8192);
    let png = std::fs::read(out.join("fig9.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
}

#[test]
fn bad_arguments_are_errors_naming_the_option() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x");
    let o = out.to_str().unwrap();
    for (args, want) in [
        (
            &["--anomalies", "foo"][..],
            &["--anomalies \"foo\"", "unknown anomaly type"][..],
        ),
        (&["--anomalies", "chirp"], &["do not fit in 1000 samples"]),
        (&["--anomaly", "chirp@900+200"], &["chirp"]),
        (
            &["--anomaly", "chirp900"],
            &["--anomaly \"chirp900\": expected TYPE@START+COUNT"],
        ),
        (
            &["--tones", "abc"],
            &["--tones \"abc\": frequency \"abc\": not a number"],
        ),
        (
            &["--noise-band", "5"],
            &["--noise-band \"5\": expected LOW:HIGH"],
        ),
        (
            &["--sample-rate", "0"],
            &["--sample-rate 0: must be a positive number"],
        ),
        (&["--deviation", "6e5"], &["deviation"]),
        (&["--meta", o], &["--meta is only for --out -"]),
    ] {
        let mut all = vec!["generate", "--out", o, "--samples", "1000"];
        all.extend_from_slice(args);
        refused(&all, want);
    }
    refused(
        &["generate", "--out", o, "--seconds=-1"],
        &["--seconds -1: must be a non-negative number"],
    );
    refused(
        &["generate", "--out", o, "--samples", "3000000000"],
        &["--samples 3000000000", "16 GiB"],
    );
    refused(
        &["generate", "--out", o, "--samples", "5", "--seconds", "1"],
        &["cannot be used with"],
    );
    refused(&["inspect", o], &["x.sigmf-meta"]);
    refused(
        &["baseline", "--train", o, "--test", o, "--threshold", "q7"],
        &["threshold rule \"q7\""],
    );
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "files left behind"
    );
}
