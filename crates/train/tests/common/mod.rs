#![allow(dead_code)]
//! Shared by the training tests: a small synthetic data set, run options, thread pools.

use lowprec_data::{Augment, Dataset, Normalization};
use lowprec_kernels::CpuBackend;
use lowprec_train::data::DataSplits;
use lowprec_train::trainer::RunOptions;
use std::path::Path;
use std::sync::Arc;

/// 4 classes of 1x6x6 images: a bright quadrant per class plus deterministic noise.
pub fn synthetic(n: usize, salt: u64) -> Dataset {
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

pub fn splits() -> DataSplits {
    DataSplits {
        train: synthetic(320, 1),
        test: synthetic(80, 2),
        norm: Normalization::unit(1),
        augment: Augment::None,
    }
}

pub fn opts(out: Option<&Path>, resume: Option<&Path>, stop_after: Option<usize>) -> RunOptions {
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

pub fn in_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}
