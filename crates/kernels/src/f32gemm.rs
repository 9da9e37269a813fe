//! f32 GEMM on well-kept crates (`gemm` 0.19, `matrixmultiply` 0.3), threaded with rayon.
//!
//! Each crate runs single-threaded on blocks of C, never cut along K, so that every C element
//! is computed by the same code on the same data whatever the pool size, and the bits do not
//! depend on the threads. `matrixmultiply`'s blocks are cut from the shape alone; `gemm`'s
//! follow the thread count where that cannot change a bit (see [`f32_blocks`]).

use crate::threads::{gemm_threads, SendPtr};
use crate::types::{MatMut, MatRef};
use crate::KernelError;

/// Whether this build carries the `gemm` crate's AVX-512 f32 kernels (feature `gemm-avx512`,
/// on by default); without them its AVX2/FMA kernels are the widest it runs.
pub const GEMM_AVX512_BUILT: bool = cfg!(feature = "gemm-avx512");

/// Which f32 implementation runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum F32Impl {
    /// The `gemm` crate (it picks its own orientation from C's layout).
    Gemm,
    /// `matrixmultiply::sgemm` computing `C = A B`.
    MatrixMultiply,
    /// `matrixmultiply::sgemm` computing `C^T = B^T A^T` (better when M is small).
    MatrixMultiplyT,
}

impl F32Impl {
    /// The implementation chosen for a shape: `gemm`, fastest or tied on every VGG16 and
    /// square shape at 1 and 2 threads, in either orientation (`lowprec bench gemm --kernels
    /// f32-gemm,f32-matrixmultiply,f32-matrixmultiply-t` compares them).
    pub fn choose(_m: usize, _k: usize, _n: usize) -> Self {
        F32Impl::Gemm
    }
}

/// Columns (or rows) of C per block: small enough for 2-3 threads to share skinny shapes,
/// large enough that repacking the other operand per block stays cheap. 128, not 256: with 256,
/// VGG16's 8x8 layers at batch 32 (C of 448 x 256 per chunk) were one block, leaving a second
/// thread nothing to do.
const F32_BLOCK_MIN: usize = 128;
const F32_MAX_BLOCKS: usize = 16;

/// Shorter side of C from which `gemm`'s blocks may follow the thread count.
const GEMM_FREE_CUT_MIN_SIDE: usize = 16;

/// Shortest block, along the side that is cut, of a `gemm` call whose blocks follow the thread
/// count.
const GEMM_FREE_BLOCK_MIN: usize = 96;

/// Blocks of C for the f32 GEMM with `imp` on `threads` workers.
///
/// `gemm` cuts K into steps that depend on K alone and the cache sizes, and adds each step's
/// products into C with the same fused multiply-adds in the same order, whichever block of C an
/// element falls in, except on its special paths for tiny products (at most 16 x 16 elements,
/// at most 64 x 64 with a shorter K step, one row or column, K <= 2). Blocks of at least 96 by
/// at least [`GEMM_FREE_CUT_MIN_SIDE`] stay clear of them, so for C at least that wide
/// (`f32_same_bits_at_1_2_3_4_threads` checks it) one thread makes one call, which packs the
/// shared operand once rather than once per block, and more threads make one call each where
/// every block is at least [`GEMM_FREE_BLOCK_MIN`] long. Otherwise the blocks are a function of
/// the shape only.
fn f32_blocks(
    imp: F32Impl,
    m: usize,
    k: usize,
    n: usize,
    threads: usize,
) -> Vec<(usize, usize, usize, usize)> {
    let macs = m * n * k;
    let (len, split_n) = if n >= m { (n, true) } else { (m, false) };
    let free = imp == F32Impl::Gemm && m.min(n) >= GEMM_FREE_CUT_MIN_SIDE;
    let parts = if macs < (1 << 21) || (free && threads == 1) {
        1
    } else if free && len >= threads * GEMM_FREE_BLOCK_MIN {
        // One block per thread: each block packs the shared operand again, so more blocks
        // than threads only repeat that work.
        threads
    } else {
        // An even count from 2 up (each block at least 96 long): two cores given 3 or 5 equal
        // blocks idle one for a block (VGG16's 256-channel 8x8 layers at batch 32, C of 256 x
        // 448 per chunk: 3 blocks).
        let parts = (len / F32_BLOCK_MIN).clamp(1, F32_MAX_BLOCKS);
        if parts > 1 {
            parts.next_multiple_of(2)
        } else {
            parts
        }
    };
    (0..parts)
        .map(|i| {
            let (a, b) = (len * i / parts, len * (i + 1) / parts);
            if split_n {
                (0, m, a, b)
            } else {
                (a, b, 0, n)
            }
        })
        .collect()
}

/// `C (+)= A * B` in f32 with the given implementation.
pub fn gemm_f32_with(
    imp: F32Impl,
    a: MatRef<'_, f32>,
    b: MatRef<'_, f32>,
    accumulate: bool,
    c: MatMut<'_, f32>,
) -> Result<(), KernelError> {
    use rayon::prelude::*;
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if b.rows != k
        || c.rows != m
        || c.cols != n
        || c.ld < n
        || (m > 0 && c.data.len() < (m - 1) * c.ld + n)
    {
        return Err(KernelError::Shape(format!(
            "f32 GEMM: A {m}x{k}, B {}x{n}, C {}x{} (ld {}, {} elements)",
            b.rows,
            c.rows,
            c.cols,
            c.ld,
            c.data.len()
        )));
    }
    a.check("A")?;
    b.check("B")?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    let ldc = c.ld;
    let cp = SendPtr(c.data.as_mut_ptr());
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                c.data[r * ldc..r * ldc + n].fill(0.0);
            }
        }
        return Ok(());
    }
    let blocks = f32_blocks(imp, m, k, n, gemm_threads());
    let run = |&(m0, m1, n0, n1): &(usize, usize, usize, usize)| {
        // SAFETY: the views were bounds-checked above; blocks are disjoint parts of C.
        unsafe { f32_block(imp, &a, &b, accumulate, cp, ldc, m0, m1, n0, n1) }
    };
    if blocks.len() == 1 || gemm_threads() == 1 {
        blocks.iter().for_each(run);
    } else {
        blocks.par_iter().for_each(run);
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
unsafe fn f32_block(
    imp: F32Impl,
    a: &MatRef<'_, f32>,
    b: &MatRef<'_, f32>,
    accumulate: bool,
    c: SendPtr<f32>,
    ldc: usize,
    m0: usize,
    m1: usize,
    n0: usize,
    n1: usize,
) {
    let k = a.cols;
    let (mb, nb) = (m1 - m0, n1 - n0);
    let ap = a.data.as_ptr().add(m0 * a.row_stride);
    let bp = b.data.as_ptr().add(n0 * b.col_stride);
    let cp = c.0.add(m0 * ldc + n0);
    let (ars, acs) = (a.row_stride as isize, a.col_stride as isize);
    let (brs, bcs) = (b.row_stride as isize, b.col_stride as isize);
    let beta = if accumulate { 1.0 } else { 0.0 };
    match imp {
        F32Impl::Gemm => gemm::gemm(
            mb,
            nb,
            k,
            cp,
            1,
            ldc as isize,
            accumulate,
            ap,
            acs,
            ars,
            bp,
            bcs,
            brs,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        ),
        F32Impl::MatrixMultiply => matrixmultiply::sgemm(
            mb,
            k,
            nb,
            1.0,
            ap,
            ars,
            acs,
            bp,
            brs,
            bcs,
            beta,
            cp,
            ldc as isize,
            1,
        ),
        F32Impl::MatrixMultiplyT => matrixmultiply::sgemm(
            nb,
            k,
            mb,
            1.0,
            bp,
            bcs,
            brs,
            ap,
            acs,
            ars,
            beta,
            cp,
            1,
            ldc as isize,
        ),
    }
}
