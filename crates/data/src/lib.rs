//! `lowprec-data` owns the data sets lowprec trains on and how they reach the model: IDX files
//! (MNIST's format, raw or gzipped), NumPy `.npy`/`.npz` arrays ([`npy`]), a user's own data
//! set by kind and path ([`source`]: any four IDX files, arrays, image folders, with shapes and
//! class counts from the data), MNIST fetched on first use into a data directory
//! ([`DataDir`]) and verified by sha256, CIFAR-10 as the canonical binary records or as image
//! folders/tarballs decoded once in parallel and cached as verified u8 arrays, the in-memory
//! [`Dataset`] (u8 or f32, channels-first), and batching into normalised f32 `[B, C, H, W]` tensors with
//! seeded shuffling and crop/flip augmentation drawn from a counter-based hash of
//! `(seed, epoch, index)`, so batches never depend on thread count or on a shared RNG.
//! It depends on no other lowprec crate.

pub mod batch;
pub mod cache;
pub mod cifar;
pub mod datadir;
pub mod dataset;
pub mod error;
pub mod fsutil;
pub mod idx;
pub mod images;
pub mod mnist;
pub mod npy;
pub mod source;

pub use batch::{
    counter_hash, crop_flip_decision, epoch_permutation, Augment, Batch, BatchConfig, BatchIter,
    CropFlip, EpochBatches, Normalization,
};
pub use cache::{
    load_cifar10, load_cifar10_jpeg, load_image_folder_cached, load_image_tarball_cached,
    read_cache, write_cache,
};
pub use cifar::{
    default_cifar_tarball, load_cifar_binary, read_cifar_binary_files, CIFAR10_CLASSES,
    CIFAR_TARBALL_ENV,
};
pub use datadir::{DataDir, DATA_DIR_ENV};
pub use dataset::{Dataset, Splits, TargetKind};
pub use error::{DataError, Result};
pub use idx::{read_idx, write_idx, IdxArray};
pub use images::{
    decode_image_into, decode_image_tarball, decode_image_tarball_from, load_image_folder,
    load_image_folder_split, ImageSetSpec,
};
pub use mnist::{
    fetch_mnist, fetch_mnist_with, load_mnist, load_mnist_dir, mnist_from_idx, MNIST_FILES,
};
pub use npy::{read_npy, read_npz, read_npz_from, write_npy, NpyArray, NpyValues};
pub use source::{
    load_idx_dir, load_source, parse_kind_path, SourceKind, SourceOptions, IDX_FILE_NAMES,
    NPY_ARRAY_NAMES,
};
