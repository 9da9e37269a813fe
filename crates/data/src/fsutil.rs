//! File helpers shared by the loaders: atomic writes, gzip sniffing, sha256.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use crate::error::{DataError, Result};

/// The two bytes every gzip stream starts with (RFC 1952).
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temp path beside `path`, unique within this process and across processes (pid), so that
/// concurrent writers never share a temp file and the final rename stays on one file system.
pub fn temp_path_beside(path: &Path) -> PathBuf {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".to_string());
    path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

/// Writes `path` atomically: the bytes go to a temp file in the same directory, are synced,
/// and the temp file is renamed over `path`, so readers see the old file or the whole new one.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    if let Ok(meta) = fs::metadata(path) {
        if meta.is_dir() {
            return Err(DataError::io(
                path,
                "writing",
                std::io::Error::other("is a directory"),
            ));
        }
        if !meta.is_file() {
            // a device or pipe (`--json /dev/null`, `/dev/stdout`): written in place, since
            // renaming a temp file over it would replace the device with a regular file
            let mut f = fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| DataError::io(path, "opening", e))?;
            return write(&mut f).map_err(|e| DataError::io(path, "writing", e));
        }
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| DataError::io(dir, "creating directory", e))?;
    }
    let tmp = temp_path_beside(path);
    let result = (|| {
        let file =
            fs::File::create(&tmp).map_err(|e| DataError::io(&tmp, "creating temp file", e))?;
        let mut writer = std::io::BufWriter::with_capacity(1 << 20, file);
        write(&mut writer).map_err(|e| DataError::io(&tmp, "writing", e))?;
        let file = writer
            .into_inner()
            .map_err(|e| DataError::io(&tmp, "writing", e.into_error()))?;
        file.sync_all()
            .map_err(|e| DataError::io(&tmp, "syncing", e))?;
        drop(file);
        fs::rename(&tmp, path).map_err(|e| DataError::io(path, "renaming temp file into place", e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Reads a whole file.
pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|e| DataError::io(path, "reading", e))
}

/// Reads a whole file, transparently gunzipping it when it starts with the gzip magic.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    gunzip_if_gzip(read_file(path)?, path)
}

/// `raw` gunzipped when it starts with the gzip magic, else `raw` itself; `path` names the
/// source in errors.
pub fn gunzip_if_gzip(raw: Vec<u8>, path: &Path) -> Result<Vec<u8>> {
    if raw.starts_with(&GZIP_MAGIC) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| {
                DataError::malformed(path, format!("corrupt or truncated gzip stream: {e}"))
            })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lower-case hex of a byte string.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<[u8; 32]> {
    let mut file = fs::File::open(path).map_err(|e| DataError::io(path, "opening", e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| DataError::io(path, "reading", e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().into())
}
