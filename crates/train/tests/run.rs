//! Training runs on a small synthetic data set: resume is bit-identical, thread count does not
//! change the bits, and SWA/SWALP run; plus the checkpoint and config error paths.

use lowprec_data::{Augment, Dataset, Normalization};
use lowprec_kernels::CpuBackend;
use lowprec_train::checkpoint::Checkpoint;
use lowprec_train::data::DataSplits;
use lowprec_train::trainer::RunOptions;
use lowprec_train::{TrainConfig, Trainer};
use std::path::Path;
use std::sync::Arc;

/// 4 classes of 1x6x6 images: a bright quadrant per class plus deterministic noise.
fn synthetic(n: usize, salt: u64) -> Dataset {
    let mut images = Vec::with_capacity(n * 36);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let c = (i % 4) as u8;
        labels.push(c);
        for y in 0..6 {
            for x in 0..6 {
                let q = ((y >= 3) as u8) * 2 + (x >= 3) as u8;
                let h = lowprec_formats::rng::splitmix64(salt ^ (i * 36 + y * 6 + x) as u64);
                let noise = (h % 120) as u8;
                images.push(if q == c { 120 + noise } else { noise });
            }
        }
    }
    Dataset::new(images, labels, 1, 6, 6, 4).unwrap()
}

fn splits() -> DataSplits {
    DataSplits {
        train: synthetic(320, 1),
        test: synthetic(80, 2),
        norm: Normalization::unit(1),
        augment: Augment::None,
    }
}

fn config(precision: &str, epochs: usize) -> TrainConfig {
    TrainConfig::from_toml(
        &format!(
            r#"
name = "synthetic"
precision = "{precision}"
seed = 7
[data]
dataset = "mnist"
[model]
input = [1, 6, 6]
loss = "cross-entropy"
[[model.layer]]
type = "flatten"
[[model.layer]]
type = "linear"
out = 16
bias = true
[[model.layer]]
type = "relu"
[[model.layer]]
type = "dropout"
p = 0.25
[[model.layer]]
type = "linear"
out = 4
[train]
batch = 32
epochs = {epochs}
lr = 0.1
schedule = "linear"
momentum = 0.9
weight_decay = 5e-4
[swa]
start_fraction = 0.5
lr = 0.02
"#
        ),
        "test",
    )
    .unwrap()
}

fn opts(out: Option<&Path>, resume: Option<&Path>, stop_after: Option<usize>) -> RunOptions {
    RunOptions {
        out_dir: out.map(Path::to_path_buf),
        resume_from: resume.map(Path::to_path_buf),
        data_dir: None,
        backend: Arc::new(CpuBackend),
        threads: 1,
        progress: false,
        stop_after,
        verbose: false,
        overwrite: false,
        allow_config_change: false,
    }
}

fn in_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

#[test]
fn resume_after_interrupt_gives_the_same_bytes() {
    for precision in ["fp32", "bfp8", "swalp"] {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let mut t =
            Trainer::with_data(config(precision, 4), opts(Some(&a), None, None), splits()).unwrap();
        let full = t.run().unwrap();
        assert_eq!(full.epochs, 4);
        assert!(full.swa_test_acc.is_some(), "SWA ran");
        // interrupted after 2 epochs, then resumed from the checkpoint on disk
        let mut t = Trainer::with_data(
            config(precision, 4),
            opts(Some(&b), None, Some(2)),
            splits(),
        )
        .unwrap();
        t.run().unwrap();
        assert_eq!(t.epoch, 2);
        drop(t); // the interrupted run ends, releasing its output directory
        let ck = b.join("checkpoint.safetensors");
        let mut t = Trainer::with_data(
            config(precision, 4),
            opts(Some(&b), Some(&ck), None),
            splits(),
        )
        .unwrap();
        assert_eq!(t.epoch, 2);
        let resumed = t.run().unwrap();
        let ca = Checkpoint::load(&a.join("checkpoint.safetensors")).unwrap();
        let cb = Checkpoint::load(&b.join("checkpoint.safetensors")).unwrap();
        assert_eq!(
            ca.tensors, cb.tensors,
            "{precision}: weights, momentum and SWA differ after resume"
        );
        assert_eq!((ca.epoch, ca.step, ca.swa_n), (cb.epoch, cb.step, cb.swa_n));
        assert_eq!(full.test_acc, resumed.test_acc);
        assert_eq!(full.swa_test_acc, resumed.swa_test_acc);
        let lines = std::fs::read_to_string(b.join("metrics.jsonl")).unwrap();
        assert_eq!(
            lines.lines().count(),
            4,
            "metrics keep one line per epoch across the resume"
        );
        assert!(b.join("final.json").exists());
    }
}

#[test]
fn same_bits_at_one_and_two_threads() {
    for precision in ["fp32", "bfp8", "swalp"] {
        let run = |threads| {
            in_pool(threads, || {
                let mut t =
                    Trainer::with_data(config(precision, 2), opts(None, None, None), splits())
                        .unwrap();
                t.run().unwrap();
                t.checkpoint().tensors
            })
        };
        assert_eq!(run(1), run(2), "{precision}");
    }
    // and the checkpoint files themselves are byte-identical
    let dir = tempfile::tempdir().unwrap();
    let bytes = |threads: usize| {
        let d = dir.path().join(format!("t{threads}"));
        in_pool(threads, || {
            let mut t = Trainer::with_data(config("bfp8", 2), opts(Some(&d), None, None), splits())
                .unwrap();
            t.run().unwrap();
        });
        std::fs::read(d.join("checkpoint.safetensors")).unwrap()
    };
    assert!(
        bytes(1) == bytes(2),
        "checkpoint bytes differ between 1 and 2 threads"
    );
}

#[test]
fn training_learns_the_synthetic_task_in_every_precision() {
    for precision in [
        "fp32",
        "bfp8",
        "swalp",
        "bfp8,weights=bfp6:tensor:stochastic,errors=bfp8:tile16:stochastic",
    ] {
        let mut t =
            Trainer::with_data(config(precision, 6), opts(None, None, None), splits()).unwrap();
        let r = t.run().unwrap();
        assert!(r.test_acc > 0.9, "{precision}: {}", r.test_acc);
        assert!(
            r.swa_test_acc.unwrap() > 0.9,
            "{precision}: swa {:?}",
            r.swa_test_acc
        );
    }
}

#[test]
fn corrupt_or_foreign_checkpoints_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = Trainer::with_data(
        config("bfp8", 1),
        opts(Some(dir.path()), None, None),
        splits(),
    )
    .unwrap();
    t.run().unwrap();
    let path = dir.path().join("checkpoint.safetensors");
    let good = std::fs::read(&path).unwrap();
    assert!(Checkpoint::from_bytes(&good, "ok").is_ok());
    // flip one byte of tensor data (the last byte of the file)
    let mut bad = good.clone();
    *bad.last_mut().unwrap() ^= 0x40;
    let e = Checkpoint::from_bytes(&bad, "flipped")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("checksum mismatch") && e.contains("flipped"),
        "{e}"
    );
    let e = Checkpoint::from_bytes(&good[..good.len() / 2], "half")
        .unwrap_err()
        .to_string();
    assert!(e.contains("half"), "{e}");
    let e = Checkpoint::from_bytes(b"hello", "junk")
        .unwrap_err()
        .to_string();
    assert!(e.contains("junk"), "{e}");
    // a checkpoint of another network cannot be resumed
    let mut cfg = config("bfp8", 2);
    if let lowprec_nn::LayerSpec::Linear { out, .. } = &mut cfg.model.layers[1].kind {
        *out = 8;
    }
    let e = Trainer::with_data(cfg, opts(None, Some(&path), None), splits())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("fc") || e.contains("linear"), "{e}");
    // no temp files are left next to the checkpoint
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn bad_configs_are_clear_errors() {
    let base = config("fp32", 1).to_toml();
    let cases = [
        (base.replace("batch = 32", "batch = 0"), "train.batch"),
        (base.replace("epochs = 1", "epochs = 0"), "train.epochs"),
        (base.replace("momentum = 0.9", "momentum = 1.5"), "momentum"),
        (base.replace("lr = 0.1", "lr = -1.0"), "train.lr"),
        (
            base.replace("precision = \"fp32\"", "precision = \"bfp99\""),
            "bfp99",
        ),
        (
            base.replace("dataset = \"mnist\"", "dataset = \"imagenet\""),
            "imagenet",
        ),
        (
            base.replace("type = \"relu\"", "type = \"sigmoid\""),
            "sigmoid",
        ),
        (base.replace("[train]", "[train]\nwarmup = 3"), "warmup"),
        ("not toml at all [".to_string(), "test"),
    ];
    for (text, needle) in cases {
        let e = TrainConfig::from_toml(&text, "test")
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "expected `{needle}` in: {e}");
    }
    let e = TrainConfig::load("no-such-preset").unwrap_err().to_string();
    assert!(e.contains("mnist-logreg"), "{e}");
    // model input not matching the data
    let mut cfg = config("fp32", 1);
    cfg.model.input = vec![3, 6, 6];
    let e = Trainer::with_data(cfg, opts(None, None, None), splits())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("does not match"), "{e}");
}

#[test]
fn presets_parse() {
    for (name, text) in lowprec_train::PRESETS {
        TrainConfig::from_toml(text, name).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn fpga_simulator_backend_trains_bit_identically_to_the_cpu() {
    // 002's accelerator as the GEMM backend: same bytes as the CPU integer kernels, for a short
    // run with every GEMM kind (forward, per-example weight gradient, error), and cycles counted.
    let sim = Arc::new(lowprec_hw::sim::FpgaSim::from_spec("fpga-sim:zcu111-32x32").unwrap());
    let mut o = opts(None, None, None);
    o.backend = sim.clone();
    let mut a = Trainer::with_data(config("bfp8", 2), o, splits()).unwrap();
    a.run().unwrap();
    let mut b = Trainer::with_data(config("bfp8", 2), opts(None, None, None), splits()).unwrap();
    b.run().unwrap();
    assert_eq!(a.checkpoint().tensors, b.checkpoint().tensors);
    let c = sim.counters();
    assert!(c.gemm_calls > 0 && c.macs > 0, "{c:?}");
}

/// A batch-norm network trained with crop/flip augmentation: the SWA model's statistics are
/// recomputed over shuffled, augmented batches from a fixed seed, so evaluating it twice gives
/// the same bits, and the SGD model's statistics are restored afterwards.
#[test]
fn swa_batch_norm_recompute_is_reproducible_and_restores_the_sgd_statistics() {
    let text = config("bfp8", 3).to_toml().replace(
        "[[model.layer]]\ntype = \"flatten\"",
        "[[model.layer]]\ntype = \"conv\"\nout = 4\nkernel = 3\npadding = 1\n\n\
         [[model.layer]]\ntype = \"batchnorm\"\n\n[[model.layer]]\ntype = \"flatten\"",
    );
    assert!(text.contains("batchnorm"), "{text}");
    let cfg = TrainConfig::from_toml(&text, "test").unwrap();
    let mut data = splits();
    data.augment = Augment::CropFlip { pad: 2 };
    let mut t = Trainer::with_data(cfg, opts(None, None, None), data).unwrap();
    let report = t.run().unwrap();
    assert!(report.swa_test_acc.is_some());
    assert!(t.model.has_batch_stats());
    let stats = |t: &Trainer| -> Vec<Vec<f32>> {
        t.model
            .buffers()
            .into_iter()
            .map(|(_, b)| b.clone())
            .collect()
    };
    let before = stats(&t);
    let sgd = t.evaluate().unwrap();
    let first = t.evaluate_swa().unwrap();
    let second = t.evaluate_swa().unwrap();
    assert_eq!(first.0.to_bits(), second.0.to_bits());
    assert_eq!(first.1.to_bits(), second.1.to_bits());
    assert_eq!(stats(&t), before, "SGD statistics restored");
    let again = t.evaluate().unwrap();
    assert_eq!(sgd.0.to_bits(), again.0.to_bits());
}

/// Strips the wall-clock fields of metrics.jsonl lines (they differ from run to run).
fn without_times(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let o = v.as_object_mut().unwrap();
            o.remove("seconds");
            o.remove("samples_per_sec");
            v
        })
        .collect()
}

#[test]
fn resumes_from_every_epoch_give_identical_checkpoint_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full");
    let mut t =
        Trainer::with_data(config("bfp8", 5), opts(Some(&full), None, None), splits()).unwrap();
    t.run().unwrap();
    let want = std::fs::read(full.join("checkpoint.safetensors")).unwrap();
    let want_metrics = without_times(&std::fs::read_to_string(full.join("metrics.jsonl")).unwrap());
    for stop in 1..5 {
        let d = dir.path().join(format!("stop{stop}"));
        let mut t = Trainer::with_data(
            config("bfp8", 5),
            opts(Some(&d), None, Some(stop)),
            splits(),
        )
        .unwrap();
        t.run().unwrap();
        drop(t);
        let ck = d.join("checkpoint.safetensors");
        // resumed once per remaining epoch, as a run killed after every epoch would be
        while Checkpoint::load(&ck).unwrap().epoch < 5 {
            let mut t = Trainer::with_data(
                config("bfp8", 5),
                opts(Some(&d), Some(&ck), Some(1)),
                splits(),
            )
            .unwrap();
            t.run().unwrap();
        }
        assert!(
            std::fs::read(&ck).unwrap() == want,
            "checkpoint bytes differ after stopping at epoch {stop}"
        );
        let got = without_times(&std::fs::read_to_string(d.join("metrics.jsonl")).unwrap());
        assert_eq!(got, want_metrics, "metrics differ after stopping at {stop}");
    }
}

#[test]
fn output_directory_is_guarded() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("run");
    let mut t =
        Trainer::with_data(config("fp32", 1), opts(Some(&d), None, None), splits()).unwrap();
    // a second run on the same directory while the first holds it
    let e = Trainer::with_data(config("fp32", 1), opts(Some(&d), None, None), splits())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("another run"), "{e}");
    t.run().unwrap();
    drop(t);
    // a finished run is not replaced without --overwrite
    let e = Trainer::with_data(config("fp32", 1), opts(Some(&d), None, None), splits())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("already holds") && e.contains("--overwrite"),
        "{e}"
    );
    let mut o = opts(Some(&d), None, None);
    o.overwrite = true;
    Trainer::with_data(config("fp32", 1), o, splits()).unwrap();
    // an output path that cannot be a directory fails before any training
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let e = Trainer::with_data(
        config("fp32", 1),
        opts(Some(&file.join("run")), None, None),
        splits(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.contains("output directory") && e.contains("a-file"),
        "{e}"
    );
}

#[test]
fn resume_with_other_settings_is_refused_or_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("run");
    let mut t =
        Trainer::with_data(config("bfp8", 3), opts(Some(&d), None, Some(1)), splits()).unwrap();
    t.run().unwrap();
    drop(t);
    let ck = d.join("checkpoint.safetensors");
    let e = Trainer::with_data(config("fp32", 3), opts(Some(&d), Some(&ck), None), splits())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("precision") && e.contains("bfp8") && e.contains("fp32"),
        "{e}"
    );
    let mut o = opts(Some(&d), Some(&ck), None);
    o.allow_config_change = true;
    let mut t = Trainer::with_data(config("fp32", 3), o, splits()).unwrap();
    t.run().unwrap();
    let c = Checkpoint::load(&ck).unwrap();
    let changes = c.extra.get("config_changes").expect("recorded");
    assert!(
        changes.contains("epoch 1") && changes.contains("precision"),
        "{changes}"
    );
}

#[test]
fn edited_checkpoint_metadata_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("run");
    let mut t =
        Trainer::with_data(config("fp32", 2), opts(Some(&d), None, Some(1)), splits()).unwrap();
    t.run().unwrap();
    let bytes = std::fs::read(d.join("checkpoint.safetensors")).unwrap();
    // change the stored epoch from 1 to 2 (same length, so the file stays well formed)
    let pat = br#"\"epoch\":\"1\""#;
    let at = bytes
        .windows(pat.len())
        .position(|w| w == pat)
        .expect("epoch in metadata");
    let mut edited = bytes.clone();
    let digit = at + r#"\"epoch\":\""#.len();
    assert_eq!(edited[digit], b'1');
    edited[digit] = b'2';
    let e = Checkpoint::from_bytes(&edited, "edited")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("checksum mismatch") && e.contains("edited"),
        "{e}"
    );
}

#[test]
fn oversized_layers_are_refused_before_allocating() {
    let base = config("fp32", 1).to_toml();
    let huge = base.replacen("out = 16", "out = 100000000000", 1);
    let cfg = TrainConfig::from_toml(&huge, "huge").unwrap();
    let e = Trainer::with_data(cfg, opts(None, None, None), splits())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("linear") && e.contains("memory"), "{e}");
    let overflow = base.replacen("out = 16", "out = 18446744073709551615", 1);
    if let Ok(cfg) = TrainConfig::from_toml(&overflow, "overflow") {
        let e = Trainer::with_data(cfg, opts(None, None, None), splits())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("linear"), "{e}");
    }
    // fits per layer, but not at this batch size
    let wide = base
        .replacen("out = 16", "out = 1000000", 1)
        .replace("batch = 32", "batch = 100000");
    let cfg = TrainConfig::from_toml(&wide, "wide").unwrap();
    let e = Trainer::with_data(cfg, opts(None, None, None), splits())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("batch 100000"), "{e}");
}
