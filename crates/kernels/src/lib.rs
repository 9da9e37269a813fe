//! Compute kernels: exact integer GEMMs with a fused fixed-to-float epilogue, and f32 GEMM.
//!
//! This crate owns the arithmetic that dominates training: `i8 x i8 -> i32` GEMM (and an
//! `i16` path for 9..16-bit mantissas) with the block-scale epilogue of 002's "fixed to float"
//! stage, in the three transposition variants training needs (any strided view), multi-threaded
//! without ever splitting K across threads (so results do not depend on the thread count). Each
//! fast kernel has a plain scalar reference in [`reference`]; the semantics are documented in
//! [`types`]. [`backend::GemmBackend`] is the trait layers call, so an FPGA simulator or a GPU
//! can stand in for the CPU without touching the layers.

pub mod reference;
pub mod types;

pub use types::{k_chunks, k_safe, segment_count, GemmSpec, MatMut, MatRef, QMatRef, Scales};

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

// NOTE: the three entry points below currently route to the scalar references; the
// vectorised, multi-threaded kernels replace them (same signatures, same bits).

/// Quantised 8-bit GEMM (see [`types`] for the exact semantics).
pub fn gemm_q8(
    a: QMatRef<'_, i8>,
    b: QMatRef<'_, i8>,
    spec: GemmSpec,
    c: MatMut<'_, f32>,
) -> Result<(), KernelError> {
    reference::gemm_q8_ref(a, b, spec, c)
}

/// Quantised 9..16-bit GEMM (mantissas in i16).
pub fn gemm_q16(
    a: QMatRef<'_, i16>,
    b: QMatRef<'_, i16>,
    spec: GemmSpec,
    c: MatMut<'_, f32>,
) -> Result<(), KernelError> {
    reference::gemm_q16_ref(a, b, spec, c)
}

/// f32 GEMM: `C (+)= A * B`.
pub fn gemm_f32(
    a: MatRef<'_, f32>,
    b: MatRef<'_, f32>,
    accumulate: bool,
    c: MatMut<'_, f32>,
) -> Result<(), KernelError> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if b.rows != k || c.rows != m || c.cols != n {
        return Err(KernelError::Shape(format!(
            "A {m}x{k}, B {}x{n}, C {}x{}",
            b.rows, c.rows, c.cols
        )));
    }
    let r = reference::gemm_f64_ref(a, b);
    for i in 0..m {
        for j in 0..n {
            let v = r[i * n + j] as f32;
            let d = &mut c.data[i * c.ld + j];
            *d = if accumulate { *d + v } else { v };
        }
    }
    Ok(())
}
