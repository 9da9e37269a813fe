//! Decoded-data cache: a data set's u8 arrays behind a small header, so an image set is decoded
//! once and later runs only read and verify bytes.
//!
//! Layout (integers little-endian):
//! `magic "LPDSU8C1" | version u32 | reserved u32 | count u64 | channels u32 | height u32 |
//! width u32 | classes u32 | source key [32] | XXH3-128 of the payload [16]`, then the payload:
//! `count` label bytes followed by `count * channels * height * width` image bytes.
//! The source key says which input (and decoder settings) the cache was made from; a cache
//! whose key, sizes or checksum do not match is rejected and rebuilt. The payload checksum is
//! XXH3-128 rather than sha256 because it guards against corruption, not tampering, and runs
//! at memory speed (sha256 of the 184 MB CIFAR payload alone took about 0.4 s here).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::cifar::{CIFAR_TARBALL_NAME, CIFAR_TARBALL_SHA256};
use crate::datadir::DataDir;
use crate::dataset::{Dataset, Splits};
use crate::error::{DataError, Result};
use crate::fsutil;
use crate::images::{
    decode_image_tarball, list_image_folder_split, load_image_folder, ImageSetSpec,
};

/// First bytes of a cache file.
pub const CACHE_MAGIC: [u8; 8] = *b"LPDSU8C1";
/// Cache format version; bump it when the layout or the decoding changes.
pub const CACHE_VERSION: u32 = 2;
/// Header bytes before the payload.
pub const CACHE_HEADER_LEN: usize = 8 + 4 + 4 + 8 + 4 * 4 + 32 + 16;

fn payload_hash(labels: &[u8], images: &[u8]) -> [u8; 16] {
    let mut h = xxhash_rust::xxh3::Xxh3Default::new();
    h.update(labels);
    h.update(images);
    h.digest128().to_le_bytes()
}

fn dim_u32(v: usize, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| {
        DataError::InvalidArgument(format!("{what} {v} does not fit the cache header"))
    })
}

/// Writes `ds` to `path` atomically with the given source key.
pub fn write_cache(path: &Path, ds: &Dataset, source_key: &[u8; 32]) -> Result<()> {
    if ds.is_float() {
        return Err(DataError::InvalidArgument(
            "the decoded cache holds byte images; this set is f32 features".into(),
        ));
    }
    let mut header = Vec::with_capacity(CACHE_HEADER_LEN);
    header.extend_from_slice(&CACHE_MAGIC);
    header.extend_from_slice(&CACHE_VERSION.to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes());
    header.extend_from_slice(&(ds.len() as u64).to_le_bytes());
    for (v, what) in [
        (ds.channels, "channels"),
        (ds.height, "height"),
        (ds.width, "width"),
        (ds.classes, "classes"),
    ] {
        header.extend_from_slice(&dim_u32(v, what)?.to_le_bytes());
    }
    header.extend_from_slice(source_key);
    header.extend_from_slice(&payload_hash(&ds.labels, &ds.images));
    debug_assert_eq!(header.len(), CACHE_HEADER_LEN);
    fsutil::write_atomic(path, |w| {
        w.write_all(&header)?;
        w.write_all(&ds.labels)?;
        w.write_all(&ds.images)
    })
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Reads a cache file, checking magic, version, sizes against the file length, the source key
/// and the payload checksum. Every mismatch is an error naming the file and the field.
pub fn read_cache(path: &Path, expected_key: &[u8; 32]) -> Result<Dataset> {
    let mut file =
        std::fs::File::open(path).map_err(|e| DataError::io(path, "opening cache", e))?;
    let file_len = file
        .metadata()
        .map_err(|e| DataError::io(path, "reading cache metadata", e))?
        .len();
    let mut header = [0u8; CACHE_HEADER_LEN];
    if file_len < CACHE_HEADER_LEN as u64 {
        return Err(DataError::malformed(
            path,
            format!("truncated cache: {file_len} bytes, the header alone is {CACHE_HEADER_LEN}"),
        ));
    }
    file.read_exact(&mut header)
        .map_err(|e| DataError::io(path, "reading cache header", e))?;
    if header[..8] != CACHE_MAGIC {
        return Err(DataError::malformed(
            path,
            "bad cache magic: not a lowprec decoded-data cache",
        ));
    }
    let version = le_u32(&header[8..12]);
    if version != CACHE_VERSION {
        return Err(DataError::malformed(
            path,
            format!("cache format version {version}, this build reads {CACHE_VERSION}"),
        ));
    }
    let count = u64::from_le_bytes(header[16..24].try_into().expect("8 bytes"));
    let channels = le_u32(&header[24..28]) as usize;
    let height = le_u32(&header[28..32]) as usize;
    let width = le_u32(&header[32..36]) as usize;
    let classes = le_u32(&header[36..40]) as usize;
    let key: &[u8] = &header[40..72];
    let checksum: &[u8] = &header[72..88];
    if key != expected_key {
        return Err(DataError::malformed(
            path,
            format!(
                "cache made from another source (key {}, expected {})",
                fsutil::hex(key),
                fsutil::hex(expected_key)
            ),
        ));
    }
    let payload = (channels as u64)
        .checked_mul(height as u64)
        .and_then(|s| s.checked_mul(width as u64))
        .and_then(|s| s.checked_add(1))
        .and_then(|s| s.checked_mul(count));
    let expected_len = payload.and_then(|p| p.checked_add(CACHE_HEADER_LEN as u64));
    if expected_len != Some(file_len) {
        return Err(DataError::malformed(
            path,
            format!(
                "cache is {file_len} bytes but its header ({count} samples of {channels}x{height}x{width}) needs {}",
                expected_len.map_or("more than 2^64".to_string(), |l| l.to_string())
            ),
        ));
    }
    let count = count as usize;
    let mut labels = vec![0u8; count];
    let mut images = vec![0u8; count * channels * height * width];
    file.read_exact(&mut labels)
        .map_err(|e| DataError::io(path, "reading cache labels", e))?;
    file.read_exact(&mut images)
        .map_err(|e| DataError::io(path, "reading cache images", e))?;
    let actual = payload_hash(&labels, &images);
    if actual[..] != *checksum {
        return Err(DataError::Checksum {
            path: path.to_path_buf(),
            algorithm: "XXH3-128",
            expected: fsutil::hex(checksum),
            actual: fsutil::hex(&actual),
        });
    }
    Dataset::new(images, labels, channels, height, width, classes)
        .map_err(|e| DataError::malformed(path, format!("cache contents are inconsistent: {e}")))
}

/// The cache key of an image tarball: its sha256 together with the decoding settings.
pub fn tarball_cache_key(tarball_sha256: &[u8; 32], spec: &ImageSetSpec) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(format!("lowprec-data image tarball cache v{CACHE_VERSION}\n").as_bytes());
    h.update(tarball_sha256);
    h.update(spec.describe().as_bytes());
    h.finalize().into()
}

/// The two cache files (train, test) of a tarball with the given key.
pub fn tarball_cache_paths(dir: &DataDir, tarball: &Path, key: &[u8; 32]) -> (PathBuf, PathBuf) {
    let name = tarball
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "images".into());
    let stem = name
        .strip_suffix(".tar.gz")
        .or_else(|| name.strip_suffix(".tgz"))
        .or_else(|| name.strip_suffix(".tar"))
        .unwrap_or(&name);
    let tag = &fsutil::hex(key)[..16];
    (
        dir.join(format!("{stem}-{tag}-train.u8cache")),
        dir.join(format!("{stem}-{tag}-test.u8cache")),
    )
}

/// Loads an image tarball through the decoded cache in `dir`: on a hit only the cache files are
/// read and verified; on a miss (or a bad cache, reported on stderr) the tarball is decoded and
/// the caches written atomically. When `expected_sha256` is given the tarball must match it.
pub fn load_image_tarball_cached(
    tarball: &Path,
    spec: &ImageSetSpec,
    dir: &DataDir,
    expected_sha256: Option<&str>,
) -> Result<Splits> {
    let tar_hash = fsutil::sha256_file(tarball)?;
    if let Some(expected) = expected_sha256 {
        let actual = fsutil::hex(&tar_hash);
        if !actual.eq_ignore_ascii_case(expected) {
            return Err(DataError::Checksum {
                path: tarball.to_path_buf(),
                algorithm: "sha256",
                expected: expected.to_string(),
                actual,
            });
        }
    }
    let key = tarball_cache_key(&tar_hash, spec);
    let (train_path, test_path) = tarball_cache_paths(dir, tarball, &key);
    cached_splits(
        dir,
        &train_path,
        &test_path,
        &key,
        &tarball.display().to_string(),
        || decode_image_tarball(tarball, spec),
    )
}

/// Reads both cache files if they are good; otherwise decodes, writes both and returns the result.
fn cached_splits(
    dir: &DataDir,
    train_path: &Path,
    test_path: &Path,
    key: &[u8; 32],
    source: &str,
    decode: impl FnOnce() -> Result<Splits>,
) -> Result<Splits> {
    if train_path.exists() || test_path.exists() {
        let cached = read_cache(train_path, key).and_then(|train| {
            Ok(Splits {
                train,
                test: read_cache(test_path, key)?,
            })
        });
        match cached {
            Ok(splits) => return Ok(splits),
            Err(e) => eprintln!("lowprec-data: ignoring decoded cache ({e}); decoding again"),
        }
    }
    eprintln!(
        "lowprec-data: decoding {source} (first use; the decoded arrays are cached in {})",
        dir.path().display()
    );
    let start = Instant::now();
    let splits = decode()?;
    eprintln!(
        "lowprec-data: decoded {} + {} images in {:.2} s",
        splits.train.len(),
        splits.test.len(),
        start.elapsed().as_secs_f64()
    );
    dir.ensure_exists()?;
    write_cache(train_path, &splits.train, key)?;
    write_cache(test_path, &splits.test, key)?;
    eprintln!(
        "lowprec-data: wrote {} and {}",
        train_path.display(),
        test_path.display()
    );
    Ok(splits)
}

/// The cache key of an image folder: the decoding settings and, for every image file in loader
/// order, its path relative to the root, size and modification time. Editing, adding, removing
/// or renaming an image changes the key; file contents are not read, so the check stays cheap.
pub fn folder_cache_key(root: &Path, spec: &ImageSetSpec) -> Result<[u8; 32]> {
    let mut h = Sha256::new();
    h.update(format!("lowprec-data image folder cache v{CACHE_VERSION}\n").as_bytes());
    h.update(spec.describe().as_bytes());
    for split in [&spec.train_split, &spec.test_split] {
        h.update(format!("\nsplit {split}\n").as_bytes());
        for f in list_image_folder_split(root, split, spec)? {
            let rel = f.path.strip_prefix(root).unwrap_or(&f.path);
            h.update(format!("{}\t{}\t{}\n", rel.display(), f.len, f.modified_ns).as_bytes());
        }
    }
    Ok(h.finalize().into())
}

/// Loads an image folder (`<root>/<split>/<class>/*`) through the decoded cache in `dir`; see
/// [`folder_cache_key`] for what invalidates the cache.
pub fn load_image_folder_cached(root: &Path, spec: &ImageSetSpec, dir: &DataDir) -> Result<Splits> {
    let key = folder_cache_key(root, spec)?;
    let stem = root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "images".into());
    let tag = &fsutil::hex(&key)[..16];
    let train_path = dir.join(format!("{stem}-folder-{tag}-train.u8cache"));
    let test_path = dir.join(format!("{stem}-folder-{tag}-test.u8cache"));
    cached_splits(
        dir,
        &train_path,
        &test_path,
        &key,
        &root.display().to_string(),
        || load_image_folder(root, spec),
    )
}

/// Loads this project's CIFAR-10 JPEG tarball (its published sha256 is checked) through the
/// decoded cache in `dir`. `tarball` defaults to [`crate::cifar::default_cifar_tarball`].
pub fn load_cifar10_jpeg(tarball: Option<&Path>, dir: &DataDir) -> Result<Splits> {
    let path = match tarball {
        Some(p) => p.to_path_buf(),
        None => crate::cifar::default_cifar_tarball()?,
    };
    if !path.is_file() {
        return Err(DataError::malformed(
            &path,
            format!("{CIFAR_TARBALL_NAME} not found at this path"),
        ));
    }
    load_image_tarball_cached(
        &path,
        &ImageSetSpec::cifar10(),
        dir,
        Some(CIFAR_TARBALL_SHA256),
    )
}

/// Loads CIFAR-10 from whatever `source` is, for a command line's single path option:
/// - `None`: this project's JPEG tarball at its default location ([`load_cifar10_jpeg`]);
/// - a file: a tarball of `<split>/<class>/*.jpg|png` images, through the decoded cache (its
///   sha256 is not required to be the published one: the caller chose it);
/// - a directory holding the binary release (`test_batch.bin`, directly or in
///   `cifar-10-batches-bin/`): [`crate::cifar::load_cifar_binary`];
/// - any other directory: an image folder `<dir>/<split>/<class>/*`, through the decoded cache.
pub fn load_cifar10(source: Option<&Path>, dir: &DataDir) -> Result<Splits> {
    let Some(path) = source else {
        return load_cifar10_jpeg(None, dir);
    };
    let spec = ImageSetSpec::cifar10();
    if path.is_file() {
        return load_image_tarball_cached(path, &spec, dir, None);
    }
    if !path.is_dir() {
        return Err(DataError::malformed(
            path,
            "CIFAR-10 source not found: give a tarball, a binary-release directory or an image folder",
        ));
    }
    let binary = [
        path.join(crate::cifar::CIFAR_BINARY_TEST_FILE),
        path.join(crate::cifar::CIFAR_BINARY_SUBDIR)
            .join(crate::cifar::CIFAR_BINARY_TEST_FILE),
    ];
    if binary.iter().any(|p| p.is_file()) {
        crate::cifar::load_cifar_binary(path)
    } else {
        load_image_folder_cached(path, &spec, dir)
    }
}
