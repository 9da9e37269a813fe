//! `lowprec fast`: its options refuse bad values with errors naming the option, before any
//! training; a small run writes the evaluations every `--eval-every` iterations and both
//! timings into fast.json.

use std::path::Path;
use std::process::Command;

fn lowprec(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lowprec"))
        .args(args)
        .env_remove("LOWPREC_ISA")
        .output()
        .unwrap()
}

/// Runs `lowprec fast mnist-mlp --out DIR` with `extra`, expecting a failure whose message
/// contains every one of `want`.
fn refused(extra: &[&str], want: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut args = vec!["fast", "mnist-mlp", "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    let o = lowprec(&args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{extra:?} was accepted");
    for w in want {
        assert!(err.contains(w), "{extra:?}: `{w}` not in: {err}");
    }
    assert!(
        !out.exists(),
        "{extra:?}: nothing is written before the options are checked"
    );
}

#[test]
fn bad_values_are_clear_errors() {
    refused(&["--eval-every", "0"], &["--eval-every 0"]);
    refused(&["--eval-every=-3"], &["--eval-every"]);
    refused(&["--eval-every", "ten"], &["--eval-every"]);
    refused(
        &["--timing", "overlap"],
        &["--timing `overlap`", "per-tile or overlapped"],
    );
    refused(&["--max-width", "5"], &["--max-width 5", "even"]);
    refused(&["--max-width", "10"], &["--max-width 10"]);
    refused(&["--max-width", "0"], &["--max-width 0"]);
    refused(
        &["--fast-blocks", "g8"],
        &["--fast-blocks `g8`", "kernel, g16 or g16e8"],
    );
    refused(&["--policies", "bfp8,g32"], &["unknown policy `g32`"]);
    refused(&["--policies", "bfp8,fast,bfp8"], &["`bfp8` given twice"]);
    refused(&["--policies", "fast,g16e8"], &["must include bfp8"]);
    refused(
        &["--kinds", "weights,grads"],
        &["grads is not a GEMM operand"],
    );
    refused(&["--kinds", "weights,wieghts"], &["--kinds"]);
    refused(&["--every", "0"], &["fast.every"]);
    refused(&["--alpha=-1"], &["fast.alpha"]);
    refused(&["--rows", "0"], &["--rows", "1..=128"]);
    refused(&["--clock-mhz", "0"], &["clock"]);
    refused(&["--threads", "0"], &["--threads"]);
    refused(&["--epochs", "0"], &["--epochs 0"]);
}

/// Three separable blobs in R^4: 288 training examples (9 batches of 32), 96 test examples.
fn write_blobs(dir: &Path) {
    for (split, n, salt) in [("train", 288usize, 1u64), ("test", 96, 2)] {
        let mut x = Vec::with_capacity(n * 4);
        let mut y = Vec::with_capacity(n);
        for i in 0..n {
            let class = (i % 3) as i64;
            for d in 0..4 {
                let h = (i as u64 * 4 + d as u64 + salt * 7919).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                let noise = ((h >> 40) as f64 / (1u64 << 24) as f64) - 0.5;
                x.push(if d as i64 == class { 3.0 } else { 0.0 } + noise);
            }
            y.push(class);
        }
        lowprec_data::write_npy(&dir.join(format!("x_{split}.npy")), &x, &[n, 4]).unwrap();
        lowprec_data::write_npy(&dir.join(format!("y_{split}.npy")), &y, &[n]).unwrap();
    }
}

#[test]
fn a_small_run_reports_evaluations_and_both_timings() {
    let dir = tempfile::tempdir().unwrap();
    write_blobs(dir.path());
    let toml = dir.path().join("blobs.toml");
    std::fs::write(
        &toml,
        r#"
name = "blobs"
precision = "bfp8"
seed = 1
[data]
dataset = "npy"
path = "."
normalize = "dataset"
[model]
input = [4]
loss = "cross-entropy"
[[model.layer]]
type = "linear"
name = "fc1"
out = 16
[[model.layer]]
type = "relu"
[[model.layer]]
type = "linear"
name = "fc2"
out = 3
[train]
batch = 32
epochs = 2
lr = 0.1
"#,
    )
    .unwrap();
    let out = dir.path().join("out");
    let o = lowprec(&[
        "fast",
        toml.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--policies",
        "bfp8,g16e8,fast",
        "--fast-blocks",
        "g16e8",
        "--eval-every",
        "4",
        "--every",
        "3",
        "--max-width",
        "6",
        "--timing",
        "overlapped",
        "--threads",
        "1",
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("fast.json")).unwrap()).unwrap();
    assert_eq!(j["timing"], "overlapped");
    assert_eq!(j["eval_every"], 4);
    assert_eq!(j["iterations_per_epoch"], 9);
    assert_eq!(j["fast"]["max_width"], 6);
    let runs = j["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3);
    for r in runs {
        // 9 iterations per epoch: evaluations after 4, 8, 9 (end), 12, 16, 18 (end)
        let steps: Vec<u64> = r["evals"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["step"].as_u64().unwrap())
            .collect();
        assert_eq!(steps, vec![4, 8, 9, 12, 16, 18], "{}", r["policy"]);
        let (pt, ov) = (&r["per_tile"], &r["overlapped"]);
        let (pts, ovs) = (
            pt["projected_accelerator_seconds"].as_f64().unwrap(),
            ov["projected_accelerator_seconds"].as_f64().unwrap(),
        );
        assert!(ovs > 0.0 && ovs < pts, "{r}");
        assert_eq!(r["projected_accelerator_seconds"].as_f64().unwrap(), ovs);
        // time to target: the projected time at the first evaluation at or above the target
        if let Some(step) = r["target_step"].as_u64() {
            let e = r["evals"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["step"].as_u64() == Some(step))
                .unwrap();
            assert_eq!(e["overlapped_seconds"], ov["time_to_target_seconds"]);
            assert_eq!(e["per_tile_seconds"], pt["time_to_target_seconds"]);
            assert!(e["test_acc"].as_f64().unwrap() >= j["target_accuracy"].as_f64().unwrap());
        }
    }
    let log = std::fs::read_to_string(out.join("precision.jsonl")).unwrap();
    for line in log.lines() {
        let d: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(d["width"].as_u64().unwrap() <= 6, "{line}");
    }
    assert!(out.join("fast.png").exists());
}
