//! RF anomaly detection (002 Section V): this crate owns the complex-baseband FM generator
//! with injected anomalies (band-pass noise, linear chirp, complex sine) driven by a
//! counter-based RNG, the checked generator options of `lowprec rf generate` ([`spec`]),
//! SigMF (`cf32_le`) recordings and raw/streamed cf32 input with validation, stream summaries
//! ([`inspect`]), sliding I/Q windows with normalisation and per-window labels from
//! annotations, detector-independent metrics (percentile, robust median + k MAD and
//! extreme-value-tail thresholds, calibration on labelled windows, precision/recall/F1, ROC
//! AUC, PR AUC and the best-threshold F1), detection on pre-windowed feature vectors
//! ([`vectors`]), a linear (PCA) reference detector, the labelled train/test recording pairs,
//! the low-precision auto-encoder detector of Fig. 8 ([`autoencoder`], trained with the
//! nn/train crates on any GEMM backend), the online streaming detector ([`detect`]) and the
//! Fig. 9 experiment ([`experiment`]: F1 per training iteration against wall time and the
//! FPGA model's projected time). The `rf` commands' options are checked here (errors name the
//! option and value); the CLI only parses and prints.
//!
//! ```
//! use lowprec_rf::baseline::PcaDetector;
//! use lowprec_rf::window::make_windows;
//! use lowprec_rf::*;
//!
//! // The standard pair, smaller: normal training data, a test recording with all three
//! // anomaly types in annotated windows.
//! let cfg = StandardPairConfig { train_samples: 1 << 16, test_samples: 1 << 15, anomaly_samples: 1024, ..Default::default() };
//! let data = standard_pair(&cfg)?.generate()?;
//! let (train, test) = (&data.train, &data.test);
//!
//! // 32 reals per window, scaled by the training segment's RMS.
//! let norm = Normaliser::fit(train)?;
//! let wtrain = make_windows(train, WindowConfig::default(), norm, &[])?;
//! let wtest = make_windows(test, WindowConfig::default(), norm, &data.test_labels)?;
//!
//! // Any detector's scores: threshold from the training errors, F1 on the test labels.
//! let pca = PcaDetector::fit(&wtrain, 8)?;
//! let threshold = select_threshold(&pca.scores(&wtrain)?, ThresholdRule::Percentile(99.0))?;
//! let result = Confusion::from_scores(&pca.scores(&wtest)?, &wtest.labels, threshold)?;
//! assert!(result.f1() > 0.5);
//! # Ok::<(), RfError>(())
//! ```

pub mod autoencoder;
pub mod baseline;
pub mod detect;
pub mod experiment;
pub mod inspect;
pub mod metrics;
pub mod pair;
pub mod rng;
pub mod sigmf;
pub mod signal;
pub mod spec;
pub mod vectors;
pub mod window;

pub use metrics::{select_threshold, Calibration, Confusion, ScoreSummary, ThresholdRule};
pub use pair::{standard_pair, PairData, PairFm, StandardPair, StandardPairConfig};
pub use sigmf::{
    read_recording, write_sigmf, NonFinitePolicy, ReadOptions, Recording, SampleStream, SigMfMeta,
};
pub use signal::{Anomaly, AnomalyKind, FmConfig, Generator, Message, SignalSpec, Tone};
pub use window::{LabelRange, Normaliser, WindowConfig, WindowStream, Windows};

use std::path::PathBuf;

/// One complex baseband sample: in-phase and quadrature parts, as stored in `cf32_le`
/// (I then Q, each a little-endian IEEE-754 f32).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Iq {
    pub i: f32,
    pub q: f32,
}

/// Bytes per `cf32_le` sample.
pub const CF32_BYTES: usize = 8;

/// Errors of this crate. Each names what was wrong and where (file, sample index, field).
#[derive(Debug, thiserror::Error)]
pub enum RfError {
    #[error("invalid signal configuration: {0}")]
    Config(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An option (named as on the command line) given a value it cannot take.
    #[error("{option} {value}: {reason}")]
    BadOption {
        option: String,
        /// The value as given (text quoted).
        value: String,
        reason: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{data}: missing SigMF metadata file {meta} (read a raw cf32 file as raw instead)")]
    MissingMeta { data: PathBuf, meta: PathBuf },
    #[error("{path}: bad SigMF metadata: {msg}")]
    Meta { path: PathBuf, msg: String },
    #[error(
        "{source_name}: {bytes} bytes is not a whole number of cf32_le samples (8 bytes each): \
         {rem} trailing bytes after sample {samples} (truncated file?)"
    )]
    PartialSample {
        source_name: String,
        bytes: u64,
        rem: u64,
        samples: u64,
    },
    #[error("{source_name}: non-finite {component} value {value} at sample {index}")]
    NonFinite {
        source_name: String,
        index: u64,
        component: &'static str,
        value: f32,
    },
    #[error(
        "{source_name}: data holds {actual} samples but the metadata says {expected} \
         (truncated or wrong data file?)"
    )]
    LengthMismatch {
        source_name: String,
        expected: u64,
        actual: u64,
    },
    #[error("auto-encoder: {0}")]
    Nn(#[from] lowprec_nn::NnError),
    #[error(
        "{source_name}: data does not match core:sha512 in the metadata (corrupted, truncated \
         or modified)"
    )]
    Checksum { source_name: String },
}

impl RfError {
    /// An I/O error on `path` (a file name or a stream name such as `<stdin>`).
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> RfError {
        RfError::Io {
            path: path.into(),
            source,
        }
    }

    /// `option` cannot take `value` (already formatted: text quoted, numbers as they are)
    /// because of `reason`.
    pub fn bad_option(
        option: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> RfError {
        RfError::BadOption {
            option: option.into(),
            value: value.into(),
            reason: reason.into(),
        }
    }
}
