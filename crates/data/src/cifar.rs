//! CIFAR-10: the canonical binary release (records of 1 label byte + 3072 bytes of R, G, B
//! planes), and where the JPEG tarball of this project lives.

use std::path::{Path, PathBuf};

use crate::dataset::{Dataset, Splits};
use crate::error::{DataError, Result};
use crate::fsutil;

/// Class names in label order 0..9.
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// CIFAR-10 image side in pixels.
pub const CIFAR_SIDE: usize = 32;
/// Bytes of one image: 3 planes of 32x32.
pub const CIFAR_IMAGE_LEN: usize = 3 * CIFAR_SIDE * CIFAR_SIDE;
/// Bytes of one binary record: the label byte and the image.
pub const CIFAR_RECORD_LEN: usize = 1 + CIFAR_IMAGE_LEN;

/// Training files of the binary release, in order.
pub const CIFAR_BINARY_TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
/// Test file of the binary release.
pub const CIFAR_BINARY_TEST_FILE: &str = "test_batch.bin";
/// The directory the official binary tarball unpacks to.
pub const CIFAR_BINARY_SUBDIR: &str = "cifar-10-batches-bin";

/// Environment variable overriding where the CIFAR-10 JPEG tarball is.
pub const CIFAR_TARBALL_ENV: &str = "LOWPREC_CIFAR_TARBALL";
/// File name of the CIFAR-10 JPEG tarball.
pub const CIFAR_TARBALL_NAME: &str = "cifar10-jpeg.tar.gz";
/// Published sha256 of `cifar10-jpeg.tar.gz` (see shared/data/README.md).
pub const CIFAR_TARBALL_SHA256: &str =
    "efac85c8ed52f4ead1e1f1b670d8dcf435d551fccebdd8b6365e0a01a504f3a4";

/// Splits the bytes of one binary batch file into images and labels, checking that the size is
/// a whole number of records and that every label is below 10. `path` names the file in errors.
pub fn parse_cifar_binary(bytes: &[u8], path: &Path) -> Result<(Vec<u8>, Vec<u8>)> {
    if bytes.is_empty() {
        return Err(DataError::malformed(
            path,
            "empty file: no CIFAR-10 records",
        ));
    }
    let whole = bytes.len() / CIFAR_RECORD_LEN;
    let rest = bytes.len() % CIFAR_RECORD_LEN;
    if rest != 0 {
        return Err(DataError::malformed(
            path,
            format!(
                "{} bytes is not a whole number of {CIFAR_RECORD_LEN}-byte records: record {whole} \
                 (from byte {}) is truncated to {rest} bytes",
                bytes.len(),
                whole * CIFAR_RECORD_LEN
            ),
        ));
    }
    let mut labels = Vec::with_capacity(whole);
    let mut images = Vec::with_capacity(whole * CIFAR_IMAGE_LEN);
    for (r, record) in bytes.chunks_exact(CIFAR_RECORD_LEN).enumerate() {
        let label = record[0];
        if usize::from(label) >= CIFAR10_CLASSES.len() {
            return Err(DataError::malformed(
                path,
                format!(
                    "record {r} (byte {}): label {label} is above 9",
                    r * CIFAR_RECORD_LEN
                ),
            ));
        }
        labels.push(label);
        images.extend_from_slice(&record[1..]);
    }
    Ok((images, labels))
}

/// Reads one or more binary batch files (raw or gzipped) into one data set, in the order given.
pub fn read_cifar_binary_files(paths: &[PathBuf]) -> Result<Dataset> {
    if paths.is_empty() {
        return Err(DataError::InvalidArgument(
            "no CIFAR-10 binary files given".into(),
        ));
    }
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for p in paths {
        let bytes = fsutil::read_maybe_gz(p)?;
        let (i, l) = parse_cifar_binary(&bytes, p)?;
        images.extend_from_slice(&i);
        labels.extend_from_slice(&l);
    }
    Dataset::new(
        images,
        labels,
        3,
        CIFAR_SIDE,
        CIFAR_SIDE,
        CIFAR10_CLASSES.len(),
    )
}

/// Loads the binary release from `dir`, which holds `data_batch_1..5.bin` and `test_batch.bin`
/// directly or inside `cifar-10-batches-bin/`. Missing files are an error listing them.
pub fn load_cifar_binary(dir: &Path) -> Result<Splits> {
    let base =
        if dir.join(CIFAR_BINARY_TEST_FILE).is_file() || !dir.join(CIFAR_BINARY_SUBDIR).is_dir() {
            dir.to_path_buf()
        } else {
            dir.join(CIFAR_BINARY_SUBDIR)
        };
    let train: Vec<PathBuf> = CIFAR_BINARY_TRAIN_FILES
        .iter()
        .map(|f| base.join(f))
        .collect();
    let test = vec![base.join(CIFAR_BINARY_TEST_FILE)];
    let missing: Vec<String> = train
        .iter()
        .chain(&test)
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    if !missing.is_empty() {
        return Err(DataError::malformed(
            &base,
            format!("CIFAR-10 binary files missing: {}", missing.join(", ")),
        ));
    }
    Ok(Splits {
        train: read_cifar_binary_files(&train)?,
        test: read_cifar_binary_files(&test)?,
    })
}

/// Encodes a data set of 3x32x32 images as binary records (the inverse of
/// [`parse_cifar_binary`]); used to write test files and conversions.
pub fn encode_cifar_binary(ds: &Dataset) -> Result<Vec<u8>> {
    if (ds.channels, ds.height, ds.width) != (3, CIFAR_SIDE, CIFAR_SIDE) {
        return Err(DataError::InvalidArgument(format!(
            "CIFAR-10 records hold 3x32x32 images, not {}x{}x{}",
            ds.channels, ds.height, ds.width
        )));
    }
    let mut out = Vec::with_capacity(ds.len() * CIFAR_RECORD_LEN);
    for i in 0..ds.len() {
        out.push(ds.labels[i]);
        out.extend_from_slice(ds.image(i));
    }
    Ok(out)
}

/// Directories that look like the repository root: the nearest ancestor of the current
/// directory whose Cargo.toml declares a workspace, then the root this crate was built in.
pub fn repo_root_candidates() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        for dir in cwd.ancestors() {
            let manifest = dir.join("Cargo.toml");
            if std::fs::read_to_string(&manifest).is_ok_and(|t| t.contains("[workspace]")) {
                roots.push(dir.to_path_buf());
                break;
            }
        }
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    roots.push(built);
    roots
}

/// Where the CIFAR-10 JPEG tarball is: `$LOWPREC_CIFAR_TARBALL` if set (it must exist), else
/// `../shared/data/cifar10-jpeg.tar.gz` relative to the repository root (see
/// [`repo_root_candidates`]). The error lists every place tried and how to override.
pub fn default_cifar_tarball() -> Result<PathBuf> {
    if let Some(v) = std::env::var_os(CIFAR_TARBALL_ENV).filter(|v| !v.is_empty()) {
        let p = PathBuf::from(v);
        if p.is_file() {
            return Ok(p);
        }
        return Err(DataError::malformed(
            &p,
            format!("{CIFAR_TARBALL_ENV} names this file, but it does not exist"),
        ));
    }
    let mut tried = Vec::new();
    for root in repo_root_candidates() {
        let p = root.join("../shared/data").join(CIFAR_TARBALL_NAME);
        if p.is_file() {
            return Ok(p);
        }
        tried.push(p.display().to_string());
    }
    Err(DataError::Fetch(format!(
        "{CIFAR_TARBALL_NAME} not found (tried {}); set {CIFAR_TARBALL_ENV} or pass its path",
        tried.join(", ")
    )))
}
