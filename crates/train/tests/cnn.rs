//! Convolutional networks end to end on real data, in fp32 and bfp8:
//! - LeNet-5 (the `lenet5` preset) for one epoch on MNIST must reach 95% test accuracy;
//! - a tiny CNN for two epochs on a 5,000-image CIFAR-10 subset must clear a floor (below).
//!
//! Each test prints a notice and returns when its data set cannot be loaded (no MNIST in the
//! data directory, no CIFAR-10 tarball), so the suite stays usable offline.

use lowprec_kernels::CpuBackend;
use lowprec_nn::Precision;
use lowprec_train::trainer::RunOptions;
use lowprec_train::{TrainConfig, Trainer};
use std::sync::Arc;

fn opts() -> RunOptions {
    RunOptions {
        out_dir: None,
        resume_from: None,
        data_dir: None,
        backend: Arc::new(CpuBackend),
        threads: 2,
        progress: false,
        stop_after: None,
        verbose: true,
        overwrite: false,
        allow_config_change: false,
    }
}

#[test]
fn lenet5_one_epoch_on_mnist_fp32_and_bfp8() {
    for precision in ["fp32", "bfp8"] {
        let mut cfg = TrainConfig::load("lenet5").unwrap();
        cfg.train.epochs = 1;
        cfg.swa = None;
        cfg.precision = precision.parse::<Precision>().unwrap();
        let mut t = match Trainer::new(cfg, opts()) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("NOTICE: skipping LeNet-5 on MNIST, the data set did not load: {e}");
                return;
            }
        };
        let r = t.run().unwrap();
        eprintln!("lenet5 {precision}: test accuracy {:.4}", r.test_acc);
        assert!(r.test_acc >= 0.95, "{precision}: {}", r.test_acc);
    }
}

/// conv16-pool-conv32-pool-conv64-gap-linear with batch norm, 2 epochs on 5,000 augmented
/// training images, tested on 2,000. Measured here (seed 1): 0.349 (fp32) and 0.340 (bfp8),
/// about 25 s per precision on 2 shared cores. The floor, 0.25, is 2.5 times chance (0.10)
/// and about 9 points under the measured accuracies, room for the variation of a short run on
/// a small subset, while a layer that does not learn (or a broken bfp8 path) stays near 0.10
/// and fails it.
const TINY_CNN: &str = r#"
name = "tiny-cnn-cifar"
precision = "fp32"
seed = 1

[data]
dataset = "cifar10"
normalize = "dataset"
augment = true
train_subset = 5000
test_subset = 2000

[model]
input = [3, 32, 32]
loss = "cross-entropy"

[[model.layer]]
type = "conv"
out = 16
kernel = 3
padding = 1
[[model.layer]]
type = "batchnorm"
[[model.layer]]
type = "relu"
[[model.layer]]
type = "maxpool"
kernel = 2
[[model.layer]]
type = "conv"
out = 32
kernel = 3
padding = 1
[[model.layer]]
type = "batchnorm"
[[model.layer]]
type = "relu"
[[model.layer]]
type = "maxpool"
kernel = 2
[[model.layer]]
type = "conv"
out = 64
kernel = 3
padding = 1
[[model.layer]]
type = "batchnorm"
[[model.layer]]
type = "relu"
[[model.layer]]
type = "global-avg-pool"
[[model.layer]]
type = "linear"
out = 10
bias = true

[train]
batch = 64
epochs = 2
lr = 0.05
schedule = "linear"
lr_end = 0.005
momentum = 0.9
weight_decay = 5e-4
"#;

pub const TINY_CNN_FLOOR: f64 = 0.25;

#[test]
fn tiny_cnn_on_cifar10_subset_fp32_and_bfp8() {
    for precision in ["fp32", "bfp8"] {
        let mut cfg = TrainConfig::from_toml(TINY_CNN, "tiny-cnn").unwrap();
        cfg.precision = precision.parse::<Precision>().unwrap();
        let mut t = match Trainer::new(cfg, opts()) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("NOTICE: skipping the CIFAR-10 CNN test, the data set did not load: {e}");
                return;
            }
        };
        let r = t.run().unwrap();
        eprintln!("tiny cnn {precision}: test accuracy {:.4}", r.test_acc);
        assert!(r.test_acc >= TINY_CNN_FLOOR, "{precision}: {}", r.test_acc);
    }
}
