//! The crate's error type: every failure names the file (or tar member) and what is wrong.

use std::path::PathBuf;

/// Errors from loading, fetching, caching and batching data sets.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// An I/O operation on `path` failed.
    #[error("{}: {action}: {source}", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The contents of `path` do not match the expected format.
    #[error("{}: {what}", path.display())]
    Malformed { path: PathBuf, what: String },
    /// A file's checksum is not the expected one.
    #[error("{}: {algorithm} mismatch: expected {expected}, got {actual}", path.display())]
    Checksum {
        path: PathBuf,
        algorithm: &'static str,
        expected: String,
        actual: String,
    },
    /// Fetching a data set failed; the message says what to run or which files to put where.
    #[error("{0}")]
    Fetch(String),
    /// A caller passed an argument that cannot work (empty batch, subset larger than the set, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl DataError {
    pub(crate) fn io(
        path: impl Into<PathBuf>,
        action: &'static str,
        source: std::io::Error,
    ) -> Self {
        DataError::Io {
            path: path.into(),
            action,
            source,
        }
    }

    pub(crate) fn malformed(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        DataError::Malformed {
            path: path.into(),
            what: what.into(),
        }
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, DataError>;
