//! The backend trait the layers call for every GEMM.
//!
//! A layer never calls a kernel directly: it hands quantised operands (mantissas + block
//! scales) or float operands to a `GemmBackend`. The CPU backend runs the kernels of this
//! crate; `lowprec-hw` provides a cycle-counting FPGA simulator; a GPU backend can implement the
//! same three methods later without touching the layers. Every backend must follow the
//! semantics in [`crate::types`] so that results are bit-identical across backends.

use crate::im2col_b::QIm2colRef;
use crate::types::{GemmSpec, GroupedMut, MatMut, MatRef, QMatRef};
use crate::KernelError;

pub trait GemmBackend: Send + Sync {
    /// Short name used in logs and metrics (`cpu`, `fpga-sim:zcu111-32x32`, ...).
    fn name(&self) -> String;

    /// Quantised GEMM with 8-bit mantissas: `C (+)= tofloat(A * B, scales)`.
    fn gemm_q8(
        &self,
        a: QMatRef<'_, i8>,
        b: QMatRef<'_, i8>,
        spec: GemmSpec,
        c: MatMut<'_, f32>,
    ) -> Result<(), KernelError>;

    /// [`GemmBackend::gemm_q8`] with B the im2col matrix of 8-bit maps
    /// ([`crate::im2col_b`]). By default the matrix is materialised (by its definition, one
    /// element at a time) and handed to `gemm_q8`: the same bits, the same calls.
    fn gemm_q8_im2col(
        &self,
        a: QMatRef<'_, i8>,
        b: QIm2colRef<'_>,
        spec: GemmSpec,
        c: MatMut<'_, f32>,
    ) -> Result<(), KernelError> {
        b.with_materialized(|bm| self.gemm_q8(a, bm, spec, c))
    }

    /// [`GemmBackend::gemm_q8_im2col`] over the whole of K, overwriting C in column groups
    /// ([`GroupedMut`]: a convolution's `[examples, Cout, pixels]` output). By default the
    /// product is made row-major and copied into the groups.
    fn gemm_q8_im2col_grouped(
        &self,
        a: QMatRef<'_, i8>,
        b: QIm2colRef<'_>,
        mut c: GroupedMut<'_>,
    ) -> Result<(), KernelError> {
        c.check()?;
        let mut rm = vec![0f32; c.rows * c.cols];
        let view = MatMut::row_major(&mut rm, c.rows, c.cols)?;
        self.gemm_q8_im2col(a, b, GemmSpec::whole_k(), view)?;
        c.fill_from_row_major(&rm);
        Ok(())
    }

    /// Whether [`GemmBackend::gemm_q8_im2col`] packs this B from the maps, faster than a
    /// layer's own im2col followed by `gemm_q8`, for an A of bound `a_max_abs`; layers ask
    /// before choosing.
    fn packs_im2col(&self, _a_max_abs: u32, _b: &QIm2colRef<'_>) -> bool {
        false
    }

    /// Quantised GEMM with 9..16-bit mantissas stored as i16.
    fn gemm_q16(
        &self,
        a: QMatRef<'_, i16>,
        b: QMatRef<'_, i16>,
        spec: GemmSpec,
        c: MatMut<'_, f32>,
    ) -> Result<(), KernelError>;

    /// Float GEMM: `C (+)= A * B` in f32 (the fp32 baseline and float-only layers).
    fn gemm_f32(
        &self,
        a: MatRef<'_, f32>,
        b: MatRef<'_, f32>,
        accumulate: bool,
        c: MatMut<'_, f32>,
    ) -> Result<(), KernelError>;

    /// Whether layers may issue independent GEMMs from several threads at once. A backend
    /// whose state carries from call to call (the FPGA simulator's resident matrix and cycle
    /// counters) says no, and then sees its calls in one fixed order.
    fn concurrent_calls(&self) -> bool {
        true
    }
}

/// The CPU backend: the fastest kernels this machine supports, chosen at run time.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuBackend;

impl GemmBackend for CpuBackend {
    fn name(&self) -> String {
        "cpu".into()
    }
    fn gemm_q8(
        &self,
        a: QMatRef<'_, i8>,
        b: QMatRef<'_, i8>,
        spec: GemmSpec,
        c: MatMut<'_, f32>,
    ) -> Result<(), KernelError> {
        crate::gemm_q8(a, b, spec, c)
    }
    fn gemm_q8_im2col(
        &self,
        a: QMatRef<'_, i8>,
        b: QIm2colRef<'_>,
        spec: GemmSpec,
        c: MatMut<'_, f32>,
    ) -> Result<(), KernelError> {
        crate::gemm_q8_im2col(a, b, spec, c)
    }
    fn gemm_q8_im2col_grouped(
        &self,
        a: QMatRef<'_, i8>,
        b: QIm2colRef<'_>,
        c: GroupedMut<'_>,
    ) -> Result<(), KernelError> {
        crate::gemm_q8_im2col_grouped(a, b, c)
    }
    /// On CPUs with the biased k-quad kernels (AVX-512 VNNI), for operands they pack whole
    /// ([`QIm2colRef::packs_whole`]); on AVX2 (either family), for the column matrices the
    /// k-pair packer takes whole ([`QIm2colRef::pairs_pack_whole`], which includes the column
    /// matrices the AVX2 k-quad packer takes), and `col^T` of post-ReLU maps where the AVX2
    /// k-quad packer takes it whole; elsewhere B would be materialised element by element,
    /// slower than the layers' own im2col.
    fn packs_im2col(&self, a_max_abs: u32, b: &QIm2colRef<'_>) -> bool {
        let isa = crate::Isa::detect();
        if isa.unbiased_b() && b.transposed {
            // The AVX2 k-quad packer takes `col^T` whole, but only post-ReLU maps; anything
            // else would be materialised by the definition.
            let Ok(maps) = MatRef::row_major(b.src.maps, 1, b.src.maps.len()) else {
                return false;
            };
            return b.avx2_quads_pack_whole()
                && isa.quads_take(a_max_abs, b.max_abs, || {
                    crate::qgemm::non_negative(&maps, isa)
                });
        }
        if isa.uses_quads() && !isa.unbiased_b() {
            b.packs_whole()
        } else {
            isa.has_avx2() && b.pairs_pack_whole()
        }
    }
    fn gemm_q16(
        &self,
        a: QMatRef<'_, i16>,
        b: QMatRef<'_, i16>,
        spec: GemmSpec,
        c: MatMut<'_, f32>,
    ) -> Result<(), KernelError> {
        crate::gemm_q16(a, b, spec, c)
    }
    fn gemm_f32(
        &self,
        a: MatRef<'_, f32>,
        b: MatRef<'_, f32>,
        accumulate: bool,
        c: MatMut<'_, f32>,
    ) -> Result<(), KernelError> {
        crate::gemm_f32(a, b, accumulate, c)
    }
}
