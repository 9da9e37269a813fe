//! Compute kernels: exact integer GEMMs with a fused fixed-to-float epilogue, and f32 GEMM.
//!
//! This crate owns the arithmetic that dominates training: `i8 x i8 -> i32` GEMM (and an
//! `i16` path for 9..16-bit mantissas) with the block-scale epilogue of 002's "fixed to float"
//! stage, in the three transposition variants training needs (any strided view), multi-threaded
//! without ever splitting K across threads (so results do not depend on the thread count). Each
//! fast kernel has a plain scalar reference in [`mod@reference`]; the semantics are documented in
//! [`types`]. [`backend::GemmBackend`] is the trait layers call, so an FPGA simulator or a GPU
//! can stand in for the CPU without touching the layers.
//!
//! Layout: [`qgemm`] (blocked driver and epilogue), `threads` (how C is split among threads,
//! and [`serial`]), [`ukernel`] (6x16 `vpmaddwd`
//! microkernel in AVX2 assembly + portable kernel, chosen at run time by [`Isa::detect`]),
//! [`pack`] (k-pair i16 panels), [`quad`] (k-quad byte panels, the AVX-512 VNNI kernel and the
//! AVX2 `vpmaddubsw` kernel for non-negative B),
//! [`im2col_b`] (B operands packed straight from 8-bit feature maps, for convolutions),
//! `smallseg` (direct path for segments of <= 3 elements),
//! [`f32gemm`] (the `gemm` / `matrixmultiply` crates on shape-determined blocks), [`mod@lowbit`]
//! (paper 001's packed ternary x k-bit-plane and binary XNOR-popcount GEMMs, portable / AVX2 /
//! AVX-512 VPOPCNTDQ chosen at run time by [`lowbit::BitIsa::detect`]), [`mod@bench`]
//! (throughput tables for `lowprec bench gemm`), [`blockdot`] (the FPGA BFP dot-product engine:
//! exact integer sums per `c_vector` block, FP32 accumulation in block order), [`peak`] (the
//! measured instruction peaks the GEMM figures are judged against).

pub mod bench;
pub mod blockdot;
pub mod f32gemm;
pub mod im2col_b;
pub mod lowbit;
pub mod pack;
pub mod peak;
pub mod qgemm;
pub mod quad;
pub mod reference;
mod smallseg;
mod threads;
pub mod types;
pub mod ukernel;

pub use f32gemm::{gemm_f32_with, F32Impl};
pub use im2col_b::{Im2colRef, QIm2colRef};
pub use qgemm::{gemm_i8_i32_with, gemm_q, gemm_q8_im2col_grouped_with, gemm_q8_im2col_with};
pub use threads::serial;
pub use types::{
    k_chunks, k_safe, segment_count, GemmSpec, GroupedMut, MatMut, MatRef, QMatRef, Scales,
};
pub use ukernel::Isa;

/// Errors from kernels: bad shapes or operands outside their declared range.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("shape error: {0}")]
    Shape(String),
    #[error("range error: {0}")]
    Range(String),
}

pub mod backend;
pub use backend::{CpuBackend, GemmBackend};

/// Quantised 8-bit GEMM (see [`types`] for the exact semantics) on the fastest kernels this CPU
/// runs, threaded over the current rayon pool; same bits as [`reference::gemm_q8_ref`].
pub fn gemm_q8(
    a: QMatRef<'_, i8>,
    b: QMatRef<'_, i8>,
    spec: GemmSpec,
    c: MatMut<'_, f32>,
) -> Result<(), KernelError> {
    qgemm::gemm_q(Isa::detect(), a, b, spec, c)
}

/// [`gemm_q8`] with B the im2col matrix of 8-bit maps ([`im2col_b`]), packed from the maps on
/// the k-quad kernels (materialised first on CPUs without them); the same bits as
/// [`gemm_q8`] of the materialised matrix.
pub fn gemm_q8_im2col(
    a: QMatRef<'_, i8>,
    b: QIm2colRef<'_>,
    spec: GemmSpec,
    c: MatMut<'_, f32>,
) -> Result<(), KernelError> {
    qgemm::gemm_q8_im2col_with(Isa::detect(), a, b, spec, c)
}

/// [`gemm_q8_im2col`] over the whole of K (one segment, overwriting), with C in column groups
/// ([`GroupedMut`]: a convolution's `[examples, Cout, pixels]` output written in place).
pub fn gemm_q8_im2col_grouped(
    a: QMatRef<'_, i8>,
    b: QIm2colRef<'_>,
    c: GroupedMut<'_>,
) -> Result<(), KernelError> {
    qgemm::gemm_q8_im2col_grouped_with(Isa::detect(), a, b, c)
}

/// Quantised 9..16-bit GEMM (mantissas in i16); same bits as [`reference::gemm_q16_ref`].
pub fn gemm_q16(
    a: QMatRef<'_, i16>,
    b: QMatRef<'_, i16>,
    spec: GemmSpec,
    c: MatMut<'_, f32>,
) -> Result<(), KernelError> {
    qgemm::gemm_q(Isa::detect(), a, b, spec, c)
}

/// Exact `C = A * B` with i8 operands and i32 results (`K <= k_safe(128, 128)`); same values as
/// [`reference::gemm_i8_i32_ref`].
pub fn gemm_i8_i32(
    a: MatRef<'_, i8>,
    b: MatRef<'_, i8>,
    c: MatMut<'_, i32>,
) -> Result<(), KernelError> {
    qgemm::gemm_i8_i32_with(Isa::detect(), a, b, c)
}

/// f32 GEMM: `C (+)= A * B`, on the crate measured fastest for the shape
/// ([`F32Impl::choose`]); the same bits at any thread count.
pub fn gemm_f32(
    a: MatRef<'_, f32>,
    b: MatRef<'_, f32>,
    accumulate: bool,
    c: MatMut<'_, f32>,
) -> Result<(), KernelError> {
    let imp = F32Impl::choose(a.rows, a.cols, b.cols);
    f32gemm::gemm_f32_with(imp, a, b, accumulate, c)
}
