//! Training on a data set of one's own (`[data] dataset = "npy"` / `--data KIND:PATH`): shapes
//! and class counts from the data, and clear errors where they contradict the network.

use std::path::Path;
use std::sync::Arc;

use lowprec_kernels::CpuBackend;
use lowprec_train::trainer::RunOptions;
use lowprec_train::{TrainConfig, Trainer};

fn opts(data_dir: &Path) -> RunOptions {
    RunOptions {
        out_dir: None,
        resume_from: None,
        data_dir: Some(data_dir.to_path_buf()),
        backend: Arc::new(CpuBackend),
        threads: 1,
        progress: false,
        stop_after: None,
        verbose: false,
        overwrite: false,
        allow_config_change: false,
    }
}

/// Three well-separated blobs in R^4 (float64 features, int64 labels), offset and scaled so
/// that only a normalised input trains well at this learning rate.
fn write_blobs(dir: &Path) {
    for (split, n, salt) in [("train", 300usize, 1u64), ("test", 90, 2)] {
        let mut x = Vec::with_capacity(n * 4);
        let mut y = Vec::with_capacity(n);
        for i in 0..n {
            let class = (i % 3) as i64;
            for d in 0..4 {
                let h = (i as u64 * 4 + d as u64 + salt * 7919).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                let noise = ((h >> 40) as f64 / (1u64 << 24) as f64) - 0.5;
                let centre = if d as i64 == class { 3.0 } else { 0.0 };
                x.push(100.0 + 20.0 * (centre + noise));
            }
            y.push(class);
        }
        lowprec_data::write_npy(&dir.join(format!("x_{split}.npy")), &x, &[n, 4]).unwrap();
        lowprec_data::write_npy(&dir.join(format!("y_{split}.npy")), &y, &[n]).unwrap();
    }
}

fn config(path: &Path, outputs: usize, input: &str) -> String {
    format!(
        r#"
name = "blobs"
precision = "bfp8"
[data]
dataset = "npy"
path = "{}"
normalize = "dataset"
[model]
input = {input}
loss = "cross-entropy"
[[model.layer]]
type = "flatten"
[[model.layer]]
type = "linear"
out = 16
[[model.layer]]
type = "relu"
[[model.layer]]
type = "linear"
out = {outputs}
[train]
batch = 30
epochs = 4
lr = 0.05
momentum = 0.9
"#,
        path.display()
    )
}

#[test]
fn npy_features_train_and_contradictions_are_named() {
    let dir = tempfile::tempdir().unwrap();
    write_blobs(dir.path());
    let cache = dir.path().join("cache");
    let cfg = TrainConfig::from_toml(&config(dir.path(), 3, "[1, 1, 4]"), "blobs").unwrap();
    let mut t = Trainer::new(cfg.clone(), opts(&cache)).unwrap();
    assert_eq!(t.data.train.classes, 3);
    assert!(t.data.train.is_float());
    let r = t.run().unwrap();
    assert!(r.test_acc > 0.95, "test accuracy {}", r.test_acc);
    // The description round-trips (as stored in checkpoints).
    assert_eq!(
        TrainConfig::from_toml(&cfg.to_toml(), "again").unwrap(),
        cfg
    );

    // Five outputs for three classes.
    let bad = TrainConfig::from_toml(&config(dir.path(), 5, "[1, 1, 4]"), "blobs").unwrap();
    let e = Trainer::new(bad, opts(&cache)).err().unwrap().to_string();
    assert!(e.contains("3 classes") && e.contains("5 outputs"), "{e}");
    // An input of another size.
    let bad = TrainConfig::from_toml(&config(dir.path(), 3, "[1, 28, 28]"), "blobs").unwrap();
    let e = Trainer::new(bad, opts(&cache)).err().unwrap().to_string();
    assert!(e.contains("784") && e.contains("[1, 1, 4]"), "{e}");
    // A declared class count below a label names the label file.
    let mut bad = cfg.clone();
    bad.data.classes = Some(2);
    let e = Trainer::new(bad, opts(&cache)).err().unwrap().to_string();
    assert!(
        e.contains("y_train.npy") && e.contains("class count 2"),
        "{e}"
    );
}

#[test]
fn data_overrides_and_validation() {
    let mut cfg = TrainConfig::load("mnist-mlp").unwrap();
    cfg.data.set_source("idx:/some/dir").unwrap();
    assert_eq!(cfg.data.dataset, "idx");
    assert_eq!(cfg.data.path.as_deref(), Some("/some/dir"));
    assert!(cfg.data.set_source("csv:/x").is_err());
    assert!(cfg.data.set_source("/no/kind").is_err());
    let mut d = cfg.data.clone();
    d.normalize = "explicit".into();
    assert!(d.validate().unwrap_err().contains("data.mean"));
    d.mean = Some(vec![0.5]);
    d.std = Some(vec![0.0]);
    assert!(d.validate().unwrap_err().contains("data.std"));
    d.std = Some(vec![0.25]);
    d.validate().unwrap();
    let mut m = TrainConfig::load("mnist-mlp").unwrap().data;
    m.classes = Some(10);
    assert!(m.validate().unwrap_err().contains("not mnist"));
}

#[test]
fn a_toml_data_path_is_relative_to_the_toml() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("project");
    std::fs::create_dir(&sub).unwrap();
    write_blobs(&sub);
    let toml = config(Path::new("."), 3, "[1, 1, 4]");
    let file = sub.join("net.toml");
    std::fs::write(&file, toml).unwrap();
    // The test runs in the crate's directory, not beside the TOML.
    let cfg = TrainConfig::load(file.to_str().unwrap()).unwrap();
    assert_eq!(
        cfg.data.path.as_deref(),
        Some(sub.join(".").to_str().unwrap())
    );
    let t = Trainer::new(cfg, opts(&dir.path().join("cache"))).unwrap();
    assert_eq!(t.data.train.len(), 300);
    // An absolute path is kept as written.
    let toml = config(&sub, 3, "[1, 1, 4]");
    std::fs::write(&file, toml).unwrap();
    let cfg = TrainConfig::load(file.to_str().unwrap()).unwrap();
    assert_eq!(cfg.data.path.as_deref(), Some(sub.to_str().unwrap()));
}

/// `y = A x` for a fixed 2x4 matrix A over the blobs' features, as f32 `[N, 2]` targets.
fn write_regression(dir: &Path, with_y: bool) {
    write_blobs(dir);
    for split in ["train", "test"] {
        let x = lowprec_data::read_npy(&dir.join(format!("x_{split}.npy"))).unwrap();
        let x = x.to_f32();
        let y: Vec<f32> = x
            .chunks(4)
            .flat_map(|r| {
                let u = (r[0] - 100.0) / 20.0;
                let v = (r[1] - r[2]) / 20.0;
                [u + 0.5 * v, -v]
            })
            .collect();
        let path = dir.join(format!("y_{split}.npy"));
        if with_y {
            lowprec_data::write_npy(&path, &y, &[x.len() / 4, 2]).unwrap();
        } else {
            std::fs::remove_file(&path).unwrap();
        }
    }
}

fn mse_config(path: &Path, outputs: usize) -> String {
    config(path, outputs, "[1, 1, 4]").replace("cross-entropy", "mse")
}

#[test]
fn regression_targets_train_with_an_mse_loss() {
    let dir = tempfile::tempdir().unwrap();
    write_regression(dir.path(), true);
    let cfg = TrainConfig::from_toml(&mse_config(dir.path(), 2), "reg.toml").unwrap();
    let mut t = Trainer::new(cfg, opts(&dir.path().join("cache"))).unwrap();
    assert_eq!(t.data.train.target, lowprec_data::TargetKind::Values(2));
    let (before, acc) = t.evaluate().unwrap();
    assert!(acc.is_nan(), "a regression has no accuracy");
    let r = t.run().unwrap();
    assert!(r.test_acc.is_nan());
    // The targets' mean square is about 1; the trained network must explain most of it.
    assert!(
        r.test_loss < 0.2 * before && r.test_loss < 0.1,
        "test mse {before} -> {}",
        r.test_loss
    );
    // Accuracies are null in JSON and read back as NaN.
    let j = serde_json::to_string(&t.history[0]).unwrap();
    assert!(j.contains("\"test_acc\":null"), "{j}");
    let back: lowprec_train::EpochMetrics = serde_json::from_str(&j).unwrap();
    assert!(back.test_acc.is_nan() && back.test_loss == t.history[0].test_loss);

    // A network whose output does not fit the targets is refused, naming the target count.
    let cfg = TrainConfig::from_toml(&mse_config(dir.path(), 3), "reg.toml").unwrap();
    let e = Trainer::new(cfg, opts(&dir.path().join("cache")))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("2 target values per example") && e.contains("3 outputs"),
        "{e}"
    );
}

#[test]
fn an_npy_set_without_targets_trains_an_auto_encoder() {
    let dir = tempfile::tempdir().unwrap();
    write_regression(dir.path(), false);
    let cfg = TrainConfig::from_toml(&mse_config(dir.path(), 4), "ae.toml").unwrap();
    let mut t = Trainer::new(cfg, opts(&dir.path().join("cache"))).unwrap();
    assert_eq!(t.data.train.target, lowprec_data::TargetKind::Input);
    let (before, _) = t.evaluate().unwrap();
    let r = t.run().unwrap();
    assert!(
        r.test_loss < 0.5 * before,
        "reconstruction mse {before} -> {}",
        r.test_loss
    );

    // Only one of y_train / y_test is an error naming both.
    lowprec_data::write_npy(&dir.path().join("y_train.npy"), &[0f32; 300], &[300]).unwrap();
    let cfg = TrainConfig::from_toml(&mse_config(dir.path(), 4), "ae.toml").unwrap();
    let e = Trainer::new(cfg, opts(&dir.path().join("cache")))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("y_train is there but y_test is not"), "{e}");

    // A classification set cannot feed an mse network.
    let mut cfg = TrainConfig::from_toml(&mse_config(dir.path(), 10), "m.toml").unwrap();
    cfg.data.dataset = "mnist".into();
    cfg.data.path = None;
    let e = Trainer::new(cfg, opts(&dir.path().join("cache")))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("an mse loss needs"), "{e}");
}
