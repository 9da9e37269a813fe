//! Small helpers shared by the commands.

use anyhow::Result;
use std::path::Path;

/// Writes `bytes` to `path` atomically (the data crate's temp file + fsync + rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    Ok(lowprec_data::fsutil::write_atomic(path, |w| {
        w.write_all(bytes)
    })?)
}

/// Runs `f` in a rayon pool of `threads` threads.
pub fn with_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> Result<R> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    Ok(pool.install(f))
}
