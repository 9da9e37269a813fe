//! The output directory of a run: claimed before any work starts, so that a read-only or
//! missing directory fails at once, two runs never write into one directory, and a new run never
//! silently replaces an earlier run's results.
//!
//! Claiming creates the directory, takes an exclusive lock on `DIR/.lock` (released when the
//! guard is dropped or the process dies, so a killed run never leaves the directory locked),
//! refuses a directory that already holds results unless the run resumes or overwrites, and
//! removes the temp files an interrupted atomic write left behind (safe: no other run holds the
//! lock, so no other writer can own them).

use std::fs::{self, File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use crate::TrainError;

/// Files whose presence means the directory holds a run's results.
pub const RESULT_FILES: [&str; 3] = ["checkpoint.safetensors", "metrics.jsonl", "final.json"];

/// What a new run may do with a directory that already holds results.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Existing {
    /// Refuse (the default).
    #[default]
    Refuse,
    /// The run continues the results there (`--resume`).
    Resume,
    /// The run replaces them (`--overwrite`).
    Overwrite,
}

/// An output directory held by this process.
#[derive(Debug)]
pub struct RunDir {
    pub path: PathBuf,
    _lock: File,
}

impl RunDir {
    /// Claims `path` for a run (see the module docs).
    pub fn claim(path: &Path, existing: Existing) -> Result<RunDir, TrainError> {
        let io = |what: &str, e: std::io::Error| {
            TrainError::Io(format!("output directory {}: {what}: {e}", path.display()))
        };
        fs::create_dir_all(path).map_err(|e| io("cannot create it", e))?;
        let lock_path = path.join(".lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io("not writable (cannot create .lock)", e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(TrainError::Io(format!(
                    "output directory {}: another run is writing to it (its .lock is held)",
                    path.display()
                )))
            }
            Err(TryLockError::Error(e)) => return Err(io("cannot lock .lock", e)),
        }
        let found: Vec<&str> = RESULT_FILES
            .iter()
            .copied()
            .filter(|f| path.join(f).exists())
            .collect();
        if existing == Existing::Refuse && !found.is_empty() {
            return Err(TrainError::Io(format!(
                "output directory {} already holds a run ({}); pass --resume to continue it, \
                 --overwrite to replace it, or choose another --out",
                path.display(),
                found.join(", ")
            )));
        }
        remove_stale_temps(path).map_err(|e| io("cannot remove stale temp files", e))?;
        if existing == Existing::Overwrite {
            for f in found {
                fs::remove_file(path.join(f)).map_err(|e| io(&format!("cannot remove {f}"), e))?;
            }
        }
        Ok(RunDir {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }
}

/// Whether `name` is a temp file of the atomic-write helper (`.NAME.PID.N.tmp`).
pub fn is_atomic_temp(name: &str) -> bool {
    let Some(stem) = name.strip_prefix('.').and_then(|s| s.strip_suffix(".tmp")) else {
        return false;
    };
    let mut parts = stem.rsplitn(3, '.');
    let (Some(n), Some(pid), Some(base)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    !base.is_empty()
        && !n.is_empty()
        && !pid.is_empty()
        && n.bytes().all(|b| b.is_ascii_digit())
        && pid.bytes().all(|b| b.is_ascii_digit())
}

/// Removes the atomic-write temp files directly in `dir`; returns how many.
pub fn remove_stale_temps(dir: &Path) -> std::io::Result<usize> {
    let mut n = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if is_atomic_temp(&entry.file_name().to_string_lossy()) && entry.file_type()?.is_file() {
            fs::remove_file(entry.path())?;
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names() {
        assert!(is_atomic_temp(".checkpoint.safetensors.1234.0.tmp"));
        assert!(is_atomic_temp(".metrics.jsonl.7.12.tmp"));
        assert!(!is_atomic_temp("checkpoint.safetensors"));
        assert!(!is_atomic_temp(".lock"));
        assert!(!is_atomic_temp(".x.tmp"));
        assert!(!is_atomic_temp(".a.b.c.tmp"));
        assert!(!is_atomic_temp("..1.2.tmp"));
    }

    #[test]
    fn claim_refuses_locks_and_cleans() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("run");
        let a = RunDir::claim(&d, Existing::Refuse).unwrap();
        let e = RunDir::claim(&d, Existing::Resume).unwrap_err().to_string();
        assert!(e.contains("another run"), "{e}");
        drop(a);
        fs::write(d.join("metrics.jsonl"), "x").unwrap();
        fs::write(d.join(".checkpoint.safetensors.99.3.tmp"), "partial").unwrap();
        let e = RunDir::claim(&d, Existing::Refuse).unwrap_err().to_string();
        assert!(
            e.contains("already holds") && e.contains("metrics.jsonl"),
            "{e}"
        );
        let g = RunDir::claim(&d, Existing::Resume).unwrap();
        assert!(d.join("metrics.jsonl").exists());
        assert!(!d.join(".checkpoint.safetensors.99.3.tmp").exists());
        drop(g);
        let _g = RunDir::claim(&d, Existing::Overwrite).unwrap();
        assert!(!d.join("metrics.jsonl").exists());
    }
}
