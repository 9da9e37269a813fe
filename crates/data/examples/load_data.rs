//! Loads MNIST (fetching it on first use) and the CIFAR-10 JPEG tarball (decoding it on first
//! use, then from the decoded cache) and prints how long each step took.
//!
//! `cargo run --release -p lowprec-data --example load_data -- [DATA_DIR] [--fresh-cifar]`
//! `--fresh-cifar` deletes the CIFAR cache files first, so the decode is timed too.

use std::path::PathBuf;
use std::time::Instant;

use lowprec_data::cache::{tarball_cache_key, tarball_cache_paths};
use lowprec_data::{
    default_cifar_tarball, load_cifar10_jpeg, load_mnist, BatchConfig, DataDir, EpochBatches,
    ImageSetSpec, Normalization,
};

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> lowprec_data::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let fresh = args.iter().any(|a| a == "--fresh-cifar");
    let cli_dir = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map(PathBuf::from);
    let dir = DataDir::resolve(cli_dir)?;
    println!("data dir: {}", dir.path().display());

    let t = Instant::now();
    let mnist = load_mnist(&dir)?;
    println!(
        "MNIST: {} train + {} test, {}x{}, loaded (incl. sha256 checks) in {:.3} s",
        mnist.train.len(),
        mnist.test.len(),
        mnist.train.height,
        mnist.train.width,
        t.elapsed().as_secs_f64()
    );

    let tarball = default_cifar_tarball()?;
    let t = Instant::now();
    let hash = lowprec_data::fsutil::sha256_file(&tarball)?;
    println!(
        "sha256 of {} in {:.3} s",
        tarball.display(),
        t.elapsed().as_secs_f64()
    );
    let key = tarball_cache_key(&hash, &ImageSetSpec::cifar10());
    let (train_cache, _) = tarball_cache_paths(&dir, &tarball, &key);
    if train_cache.exists() {
        let t = Instant::now();
        match lowprec_data::read_cache(&train_cache, &key) {
            Ok(train) => println!(
                "read + verify {} ({} samples) in {:.3} s",
                train_cache.display(),
                train.len(),
                t.elapsed().as_secs_f64()
            ),
            Err(e) => println!("cache unreadable: {e}"),
        }
    }
    if fresh {
        let (a, b) = tarball_cache_paths(&dir, &tarball, &key);
        let _ = std::fs::remove_file(a);
        let _ = std::fs::remove_file(b);
    }
    for attempt in ["first", "second"] {
        let t = Instant::now();
        let cifar = load_cifar10_jpeg(Some(&tarball), &dir)?;
        println!(
            "CIFAR-10 JPEG ({attempt} load): {} train + {} test in {:.3} s (threads: {})",
            cifar.train.len(),
            cifar.test.len(),
            t.elapsed().as_secs_f64(),
            rayon::current_num_threads()
        );
        if attempt == "second" {
            let norm = Normalization::from_dataset(&cifar.train)?;
            println!("CIFAR-10 train mean {:?} std {:?}", norm.mean, norm.std);
            let cfg =
                BatchConfig::train(128, 1).with_augment(lowprec_data::Augment::CropFlip { pad: 4 });
            let epoch = EpochBatches::new(&cifar.train, &norm, cfg, 0)?;
            let t = Instant::now();
            let mut n = 0;
            for b in epoch.iter() {
                n += b.len();
            }
            println!(
                "one augmented epoch of b128 batches ({} batches, {n} samples) in {:.3} s",
                epoch.num_batches(),
                t.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}
