//! Accelerator model for lowprec: a cycle-counting, bit-exact simulator of paper 002's N x N
//! weight-stationary int8 GEMM core (`FpgaSim`, a `lowprec_kernels::GemmBackend`), the board and
//! design catalogue (Pynq-Z1, ZCU111, Intel parts for paper 001), and the analytic models built
//! on them: FPGA resources (Tables III/IV), largest supported layer and network fit, roofline
//! (Fig. 5), training memory (Table II), time per training iteration (Table VI) and paper-001 /
//! paper-004 throughput projections, and the BFP dot-product array of paper 003 by mantissa
//! width ([`bfp_array`]). Network layer shapes (VGG16, LogReg, the RF auto-encoder,
//! PreResNet-20) are data in this crate. Every model prints beside the paper's figure.
//! Paper 004 (FAST): the fMAC cost model and a variable-precision PE-array design ([`fast`]).

pub mod bench;
pub mod bfp_array;
pub mod catalog;
pub mod design;
pub mod fast;
pub mod memory;
pub mod networks;
pub mod projection;
pub mod resources;
pub mod roofline;
pub mod sim;
pub mod tables;
pub mod timing;

pub use catalog::{Board, Catalog, Family, IntelDevice};
pub use design::ArrayDesign;
pub use networks::{Layer, Network};
pub use sim::{FpgaSim, SimCounters};

/// Errors of the accelerator model: unknown names, impossible designs, bad arguments.
#[derive(Debug, thiserror::Error)]
pub enum HwError {
    #[error("unknown {what} '{name}' (known: {known})")]
    Unknown {
        what: &'static str,
        name: String,
        known: String,
    },
    #[error("invalid design: {0}")]
    InvalidDesign(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("catalogue data: {0}")]
    Catalog(String),
    #[error("i/o error on {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("plot error: {0}")]
    Plot(String),
    #[error(transparent)]
    Kernel(#[from] lowprec_kernels::KernelError),
}

pub type Result<T> = std::result::Result<T, HwError>;

/// Relative error of a model figure against the paper's: `(model - paper) / paper`.
pub fn rel_error(model: f64, paper: f64) -> f64 {
    if paper == 0.0 {
        if model == 0.0 {
            0.0
        } else {
            f64::INFINITY
        }
    } else {
        (model - paper) / paper
    }
}

/// Writes `bytes` to `path` atomically (the data crate's temp file + fsync + rename).
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    lowprec_data::fsutil::write_atomic(path, |w| w.write_all(bytes)).map_err(|e| HwError::Io {
        path: path.display().to_string(),
        source: std::io::Error::other(e.to_string()),
    })
}
