//! Where data sets and decoded caches live on disk.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};

/// Environment variable naming the data directory when no CLI value is given.
pub const DATA_DIR_ENV: &str = "LOWPREC_DATA";

/// The directory that holds downloaded data sets and decoded caches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Uses `root` as it is.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DataDir { root: root.into() }
    }

    /// Resolves the data directory: the CLI value if given, else `$LOWPREC_DATA` if set and
    /// non-empty, else the user's cache directory (`$XDG_CACHE_HOME` or `$HOME/.cache` on
    /// Linux) joined with `lowprec`. Nothing is created on disk.
    pub fn resolve(cli: Option<PathBuf>) -> Result<Self> {
        Self::resolve_from(cli, std::env::var_os(DATA_DIR_ENV), dirs::cache_dir())
    }

    /// [`DataDir::resolve`] with the environment value and the cache directory passed in, so
    /// the precedence can be tested without touching the process environment.
    pub fn resolve_from(
        cli: Option<PathBuf>,
        env_value: Option<OsString>,
        cache_dir: Option<PathBuf>,
    ) -> Result<Self> {
        if let Some(p) = cli {
            if p.as_os_str().is_empty() {
                return Err(DataError::InvalidArgument(
                    "the data directory given is empty".into(),
                ));
            }
            return Ok(DataDir::new(p));
        }
        if let Some(v) = env_value.filter(|v| !v.is_empty()) {
            return Ok(DataDir::new(PathBuf::from(v)));
        }
        match cache_dir {
            Some(c) => Ok(DataDir::new(c.join("lowprec"))),
            None => Err(DataError::InvalidArgument(format!(
                "no data directory: pass one on the command line or set {DATA_DIR_ENV} \
                 (no user cache directory was found: neither XDG_CACHE_HOME nor HOME is set)"
            ))),
        }
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// A path inside the directory.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.root.join(name)
    }

    /// Creates the directory (and parents) if missing.
    pub fn ensure_exists(&self) -> Result<()> {
        std::fs::create_dir_all(&self.root)
            .map_err(|e| DataError::io(&self.root, "creating data directory", e))
    }
}
