//! A small CNN with batch norm on a synthetic task through the trainer: SWA with batch-norm
//! statistics recomputed, the same bits at 1 and 2 threads, and a checkpoint that carries the
//! running statistics.

use lowprec_data::{Augment, Dataset, Normalization};
use lowprec_kernels::CpuBackend;
use lowprec_train::data::DataSplits;
use lowprec_train::trainer::RunOptions;
use lowprec_train::{TrainConfig, Trainer};
use std::sync::Arc;

/// 4 classes of 1x8x8 images: a bright quadrant per class plus deterministic noise.
fn synthetic(n: usize, salt: u64) -> Dataset {
    let mut images = Vec::with_capacity(n * 64);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let c = (i % 4) as u8;
        labels.push(c);
        for y in 0..8 {
            for x in 0..8 {
                let q = ((y >= 4) as u8) * 2 + (x >= 4) as u8;
                let h = lowprec_formats::rng::splitmix64(salt ^ (i * 64 + y * 8 + x) as u64);
                let noise = (h % 120) as u8;
                images.push(if q == c { 120 + noise } else { noise });
            }
        }
    }
    Dataset::new(images, labels, 1, 8, 8, 4).unwrap()
}

fn splits() -> DataSplits {
    DataSplits {
        train: synthetic(200, 1),
        test: synthetic(80, 2),
        norm: Normalization::unit(1),
        augment: Augment::None,
    }
}

fn config(precision: &str) -> TrainConfig {
    TrainConfig::from_toml(
        &format!(
            r#"
name = "synthetic-cnn"
precision = "{precision}"
seed = 3
[data]
dataset = "mnist"
[model]
input = [1, 8, 8]
loss = "cross-entropy"
[[model.layer]]
type = "conv"
name = "c1"
out = 8
kernel = 3
padding = 1
[[model.layer]]
type = "batchnorm"
name = "bn1"
[[model.layer]]
type = "relu"
name = "r1"
[[model.layer]]
type = "conv"
name = "c2"
out = 8
kernel = 3
padding = 1
[[model.layer]]
type = "add"
from = ["c2", "r1"]
[[model.layer]]
type = "maxpool"
kernel = 2
[[model.layer]]
type = "batchnorm"
name = "bn2"
[[model.layer]]
type = "relu"
[[model.layer]]
type = "global-avg-pool"
[[model.layer]]
type = "linear"
out = 4
bias = true
[train]
batch = 32
epochs = 8
lr = 0.05
schedule = "linear"
momentum = 0.9
weight_decay = 5e-4
[swa]
start_epoch = 5
lr = 0.02
every = 2
"#
        ),
        "test",
    )
    .unwrap()
}

fn run(precision: &str, threads: usize) -> (Trainer, lowprec_train::FinalReport) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let opts = RunOptions {
            out_dir: None,
            resume_from: None,
            data_dir: None,
            backend: Arc::new(CpuBackend),
            threads,
            progress: false,
            stop_after: None,
            verbose: false,
            overwrite: false,
            allow_config_change: false,
        };
        let mut t = Trainer::with_data(config(precision), opts, splits()).unwrap();
        let r = t.run().unwrap();
        (t, r)
    })
}

#[test]
fn cnn_with_batch_norm_trains_with_swa_in_fp32_and_bfp8() {
    for precision in ["fp32", "bfp8"] {
        let (t, r) = run(precision, 1);
        let swa = r.swa_test_acc.expect("SWA evaluated");
        eprintln!("{precision}: test {:.3}, swa {:.3}", r.test_acc, swa);
        // The task is easy (a bright quadrant): chance is 0.25.
        assert!(r.test_acc >= 0.8 && swa >= 0.8, "{precision}: {r:?}");
        // The evaluation restored the SGD model's running statistics; they moved from 0/1.
        let bufs = t.model.buffers();
        assert_eq!(bufs.len(), 4);
        assert!(bufs.iter().all(|(_, b)| b.iter().all(|v| v.is_finite())));
        assert!(bufs[0].1.iter().any(|&m| m != 0.0), "{:?}", bufs[0]);
        let ck = t.checkpoint();
        for name in [
            "bn1.running_mean",
            "bn1.running_var",
            "bn2.running_mean",
            "bn2.running_var",
        ] {
            let key = format!("buffer/{name}");
            assert!(
                ck.tensors.contains_key(&key),
                "{key} missing from the checkpoint"
            );
        }
    }
}

#[test]
fn cnn_training_is_the_same_at_one_and_two_threads() {
    let (a, ra) = run("bfp8", 1);
    let (b, rb) = run("bfp8", 2);
    assert_eq!(ra.test_acc, rb.test_acc);
    assert_eq!(ra.swa_test_acc, rb.swa_test_acc);
    for (p, q) in a.model.params().iter().zip(b.model.params()) {
        assert!(
            p.value
                .iter()
                .zip(&q.value)
                .all(|(x, y)| x.to_bits() == y.to_bits()),
            "{} differs",
            p.name
        );
    }
    for ((n, x), (_, y)) in a.model.buffers().iter().zip(b.model.buffers()) {
        assert!(
            x.iter().zip(y).all(|(u, v)| u.to_bits() == v.to_bits()),
            "{n} differs"
        );
    }
}
