//! Small helpers shared by the commands.

use anyhow::{bail, Result};
use std::path::Path;

/// Writes `bytes` to `path` atomically (the data crate's temp file + fsync + rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    Ok(lowprec_data::fsutil::write_atomic(path, |w| {
        w.write_all(bytes)
    })?)
}

/// The machine's hardware threads.
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Most threads a pool may have: 8 per hardware thread. More only adds scheduling overhead,
/// and a typo (`--threads 100000`) would otherwise start that many OS threads.
pub fn max_threads() -> usize {
    8 * cores()
}

/// A thread count from the command line, checked; `None` means all hardware threads.
pub fn threads_or_default(t: Option<usize>) -> Result<usize> {
    let t = t.unwrap_or_else(cores);
    check_threads(t)?;
    Ok(t)
}

/// Checks a thread count against 1 ..= [`max_threads`].
pub fn check_threads(t: usize) -> Result<()> {
    if t == 0 {
        bail!("--threads must be at least 1");
    }
    if t > max_threads() {
        bail!(
            "--threads {t} is more than 8 per hardware thread of this machine ({} cores: at most {})",
            cores(),
            max_threads()
        );
    }
    Ok(())
}

/// Runs `f` in a rayon pool of `threads` threads (checked by [`check_threads`]).
pub fn with_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> Result<R> {
    check_threads(threads)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    Ok(pool.install(f))
}
