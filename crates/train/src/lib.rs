//! Training: optimisers, schedules, SWA, the training loop, checkpoints and metrics.
//!
//! This crate owns a run: a [`TrainConfig`] (TOML: data, network, precision, schedule, SWA) is
//! built into a [`Trainer`], which runs SGD (with momentum and weight decay, in FP32 or, for
//! SWALP, in low precision), averages the weights (SWA) from the configured epoch, evaluates the
//! SGD and SWA models every epoch, writes per-epoch metrics as JSONL and a checkpoint
//! (safetensors, atomic, verified on load) from which `--resume` continues bit-identically.
//! Precision may vary over the run, by layer and tensor kind: schedules and FAST's adaptive
//! rule ([`varprec`]) resolve the trainer's per-layer plan before every step.

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod dist;
pub mod optim;
pub mod rundir;
pub mod schedule;
pub mod step;
pub mod trainer;
pub mod varprec;

pub use checkpoint::Checkpoint;
pub use config::{TrainConfig, PRESETS};
pub use trainer::{EpochMetrics, FinalReport, RunOptions, StepEval, Trainer};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("config: {0}")]
    Config(String),
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    #[error("data: {0}")]
    Data(#[from] lowprec_data::DataError),
    #[error(transparent)]
    Nn(#[from] lowprec_nn::NnError),
    #[error("io: {0}")]
    Io(String),
    /// A failure of the distributed gradient exchange (another rank's error, a timeout).
    #[error("distributed: {0}")]
    Exchange(String),
}
