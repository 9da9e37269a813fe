//! Low-precision inference as an FPGA computes it (003's int5/int4 BFP flow).
//!
//! This crate owns the quantised model file ([`modelfile`]: packed mantissas and exponents,
//! per-layer formats, checksum), post-training quantisation with a per-layer
//! signal-to-quantisation-noise table ([`ptq`]), and the integer inference engine ([`engine`]:
//! the bit-true FPGA BFP layers inside the nn crate's network, a fast path on the integer GEMM
//! and a plain reference path, bit-identical), with accuracy and throughput measurement
//! ([`eval`]). Formats come from `lowprec_formats::fpga`, the block dot product from
//! `lowprec_kernels::blockdot`. A layer's description is a pair of `NumberFormat`s (weights,
//! activations) and its packed weights a [`modelfile::PackedWeights`] variant, so other
//! integer families (ternary, binary, k-bit) extend the same file and engine.

pub mod engine;
pub mod eval;
pub mod lowbit_layer;
pub mod modelfile;
pub mod pack;
pub mod ptq;

pub use engine::{Engine, Mode};
pub use lowbit_layer::{LowBitLayer, LowBitTensor};
pub use modelfile::{LayerFormats, PackedWeights, QuantizedModel};

/// Errors of the inference pipeline; messages name the tensor or layer.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error("model file: {0}")]
    File(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error(transparent)]
    Nn(#[from] lowprec_nn::NnError),
    #[error(transparent)]
    Quant(#[from] lowprec_formats::QuantError),
    #[error("data: {0}")]
    Data(String),
}
