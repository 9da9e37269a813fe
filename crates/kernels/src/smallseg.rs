//! Direct path for short chunks (segments of 1..=`MAX_CHUNK` elements).
//!
//! 002's per-example weight gradient of a fully-connected layer is a sum of rank-1 updates, each
//! with its own scales: every chunk needs its own epilogue, so a packed GEMM would spend its time
//! in epilogues. Here each C row block stays in registers across all chunks. The chunk's integer
//! sum is computed in f32, which is exact because every partial sum is an integer of magnitude at
//! most `len * max_a * max_b <= 2^24` (checked by [`eligible`]); `acc as f32` is then the same
//! value the i32 path converts, and the epilogue `C + ((acc * sa) * sb)` runs in the same order,
//! so the bits equal the reference.

use crate::pack::QElem;
use crate::threads::{gemm_threads, partition, Block, SendPtr};
use crate::types::{MatMut, MatRef, QMatRef, Scales};
use crate::ukernel::Isa;
use crate::KernelError;

/// Longest chunk the direct path takes: from 4 on, the packed GEMM with its fused per-chunk
/// epilogue is as fast or faster.
pub const MAX_CHUNK: usize = 3;
/// Columns of C one register block covers (4 ymm of f32).
const W: usize = 32;
/// Rows of C one fused register block covers: 3 rows x 4 ymm = 12 independent FMA chains,
/// enough to hide the FMA latency that a single row's 4 chains left exposed.
const R: usize = 3;
/// f32 elements of B converted at once (256 KiB, in L2).
const GROUP_FLOATS: usize = 1 << 16;

/// Whether every chunk is one element long and every scale a power of two with
/// `2^-126 <= |sa|, |sb|, |sa * sb|` and `|sa|, |sa * sb| <= 2^100`. Then `acc * sa` and
/// `(acc * sa) * sb` are exact for every integer `0 < |acc| <= 2^24`, so the reference's
/// `C + ((acc * sa) * sb)` equals one fused multiply-add `fma((a * sa) * sb, b, C)`: one rounding,
/// the same one. NaN, infinite, zero or other scales keep the unfused path.
fn fusable(chunks: &[(usize, usize, usize)], sa: &Scales<'_>, sb: &Scales<'_>) -> bool {
    const MIN: i32 = -126;
    const MAX: i32 = 100;
    // The exponent range of a slice of scales, or None if one is not a normal power of two.
    fn range(v: &[f32]) -> Option<(i32, i32)> {
        v.iter().try_fold((i32::MAX, i32::MIN), |(lo, hi), &x| {
            let bits = x.to_bits();
            let e = ((bits >> 23) & 0xff) as i32;
            (bits & 0x7f_ffff == 0 && e != 0 && e != 0xff)
                .then(|| (lo.min(e - 127), hi.max(e - 127)))
        })
    }
    if chunks.iter().any(|c| c.2 - c.1 != 1) {
        return false;
    }
    match (range(sa.values), range(sb.values)) {
        (Some((alo, ahi)), Some((blo, bhi))) => {
            alo >= MIN && blo >= MIN && alo + blo >= MIN && ahi <= MAX && ahi + bhi <= MAX
        }
        _ => false,
    }
}

/// Whether every chunk is short and its sums are exact in f32.
pub(crate) fn eligible<T: QElem>(chunks: &[(usize, usize, usize)], max_a: u32, max_b: u32) -> bool {
    let longest = chunks.iter().map(|c| c.2 - c.1).max().unwrap_or(0);
    let bound = (max_a.min(T::TYPE_MAX_ABS) as u64) * (max_b.min(T::TYPE_MAX_ABS) as u64);
    longest <= MAX_CHUNK && (longest as u64) * bound <= 1 << 24
}

struct Ctx<'a, T> {
    isa: Isa,
    a: MatRef<'a, T>,
    b: MatRef<'a, T>,
    sa: Scales<'a>,
    sb: Scales<'a>,
    chunks: &'a [(usize, usize, usize)],
    accumulate: bool,
    /// One-element chunks and power-of-two scales: the AVX2 path may fuse ([`fusable`]).
    fused: bool,
    c: SendPtr<f32>,
    ldc: usize,
}

pub(crate) fn run<T: QElem>(
    isa: Isa,
    a: &QMatRef<'_, T>,
    b: &QMatRef<'_, T>,
    chunks: &[(usize, usize, usize)],
    accumulate: bool,
    c: MatMut<'_, f32>,
) -> Result<(), KernelError> {
    use rayon::prelude::*;
    let (m, k, n) = (a.mat.rows, a.mat.cols, b.mat.cols);
    let ctx = Ctx {
        isa,
        a: a.mat,
        b: b.mat,
        sa: a.scales,
        sb: b.scales,
        chunks,
        accumulate,
        fused: fusable(chunks, &a.scales, &b.scales),
        c: SendPtr(c.data.as_mut_ptr()),
        ldc: c.ld,
    };
    // The direct path does an FMA and its share of loads and broadcasts per 8 MACs: weigh it
    // as twice the work (a 128 x 10 x 784 weight gradient stays on one thread, where a second
    // one cost more to wake than it saved).
    let blocks = partition(
        m,
        n,
        m * n * k * 2,
        gemm_threads(),
        crate::ukernel::MR,
        crate::ukernel::NR,
    );
    if blocks.len() == 1 {
        run_block_dispatch(&ctx, blocks[0]);
    } else {
        blocks
            .par_iter()
            .for_each(|&blk| run_block_dispatch(&ctx, blk));
    }
    Ok(())
}

/// [`run_block`] compiled for AVX2 where the isa has it, so that its conversions of A and B to
/// f32 use 256-bit vectors.
fn run_block_dispatch<T: QElem>(ctx: &Ctx<'_, T>, blk: Block) {
    #[cfg(target_arch = "x86_64")]
    if ctx.isa.has_avx2() {
        // SAFETY: AVX2 isas are only chosen when the CPU has AVX2 and FMA.
        unsafe { avx2::run_block(ctx, blk) };
        return;
    }
    run_block(ctx, blk)
}

#[inline(always)]
fn run_block<T: QElem>(ctx: &Ctx<'_, T>, blk: Block) {
    let (mt, nt) = (blk.m1 - blk.m0, blk.n1 - blk.n0);
    if mt == 0 || nt == 0 {
        return;
    }
    let k = ctx.a.cols;
    let segs = ctx.chunks.last().map_or(0, |c| c.0 + 1);
    let sb_cols = ctx.sb.group != usize::MAX;
    // Column groups whose f32 copy of B (K x width) stays in L2 while every row passes.
    let group_max = ((GROUP_FLOATS / k.max(1)) / W * W).max(W);
    // The fused kernel is the AVX2 one; without it, `mul_add` would be a library call.
    let fused = ctx.fused && ctx.isa.has_avx2();
    // A rows of the block and their scales as f32, row-major (exact: |a| <= 32768).
    let mut arows = Vec::with_capacity(mt * k);
    let mut sa_rows = Vec::with_capacity(mt * segs);
    for mi in blk.m0..blk.m1 {
        arows.extend((0..k).map(|kk| ctx.a.at(mi, kk).into() as f32));
        sa_rows.extend((0..segs).map(|s| ctx.sa.get(s, mi)));
    }
    let mut g0 = blk.n0;
    while g0 < blk.n1 {
        let gw = group_max.min(blk.n1 - g0);
        // B columns of the group as f32, row-major K x gw (exact: |b| <= 32768), written once
        // (no zero fill first), then W zeros so that a last block narrower than W may read a
        // whole W past its start; the lanes beyond the block are computed and dropped.
        let mut bf = Vec::with_capacity(k * gw + W);
        for kk in 0..k {
            if ctx.b.col_stride == 1 {
                let base = kk * ctx.b.row_stride + g0;
                bf.extend(ctx.b.data[base..base + gw].iter().map(|&v| v.into() as f32));
            } else {
                bf.extend((0..gw).map(|j| ctx.b.at(kk, g0 + j).into() as f32));
            }
        }
        bf.extend([0f32; W]);
        // B scales: one per segment, or expanded per column when they vary along N (padded
        // like `bf`).
        let sbx: Vec<f32> = if sb_cols {
            (0..segs)
                .flat_map(|s| (0..gw).map(move |j| (s, j)))
                .map(|(s, j)| ctx.sb.get(s, g0 + j))
                .chain([0f32; W])
                .collect()
        } else {
            (0..segs)
                .map(|s| ctx.sb.values[s * ctx.sb.seg_stride])
                .collect()
        };
        let sbm = if sb_cols {
            SbMode::Cols { sbx: &sbx, ld: gw }
        } else {
            SbMode::Seg(&sbx)
        };
        let mut r0 = 0;
        let mut coefs = Vec::new();
        while r0 < mt {
            let rows = if fused { R.min(mt - r0) } else { 1 };
            // The fused path's per-(chunk, row) factors, computed once for every column block:
            // `(a * sa) * sb` (the reference's order) with one B scale per segment, else `a * sa`.
            coefs.clear();
            if fused {
                for &(s, k0, _) in ctx.chunks {
                    for r in r0..r0 + rows {
                        let t = arows[r * k + k0] * sa_rows[r * segs + s];
                        coefs.push(match sbm {
                            SbMode::Seg(v) => t * v[s],
                            SbMode::Cols { .. } => t,
                        });
                    }
                }
            }
            let mut nb = 0;
            while nb < gw {
                let w = W.min(gw - nb);
                // C rows `r0 .. r0 + rows`, columns `nb .. nb + w` of the group, padded to W.
                let mut cblk = [[0f32; W]; R];
                let cptr = |r: usize| {
                    // SAFETY: row `blk.m0 + r0 + r`, columns `g0+nb .. +w` are inside C and
                    // owned by this block.
                    unsafe {
                        std::slice::from_raw_parts_mut(
                            ctx.c.0.add((blk.m0 + r0 + r) * ctx.ldc + g0 + nb),
                            w,
                        )
                    }
                };
                if ctx.accumulate {
                    for (r, cr) in cblk.iter_mut().enumerate().take(rows) {
                        cr[..w].copy_from_slice(cptr(r));
                    }
                }
                let rb = RowBlock {
                    arows: &arows[r0 * k..(r0 + rows) * k],
                    sa_rows: &sa_rows[r0 * segs..(r0 + rows) * segs],
                    bf: &bf[nb..],
                    ldb: gw,
                    chunks: ctx.chunks,
                    sb: sbm,
                    col0: nb,
                    coefs: &coefs,
                };
                rows_dispatch(ctx.isa, fused, &rb, rows, &mut cblk);
                for (r, cr) in cblk.iter().enumerate().take(rows) {
                    cptr(r).copy_from_slice(&cr[..w]);
                }
                nb += w;
            }
            r0 += rows;
        }
        g0 += gw;
    }
}

#[derive(Clone, Copy)]
enum SbMode<'a> {
    /// One B scale per segment.
    Seg(&'a [f32]),
    /// B scales per (segment, column), row-major with leading dimension `ld`.
    Cols { sbx: &'a [f32], ld: usize },
}

/// The operands of one register block: B from column `col0` of the group (`bf`, rows `ldb`
/// apart, each readable `W` wide) and its scales, with either the fused path's precomputed
/// factors (`coefs`) or, for the unfused path, one A row (`arows`, f32) and its scales per segment.
struct RowBlock<'a> {
    arows: &'a [f32],
    sa_rows: &'a [f32],
    bf: &'a [f32],
    ldb: usize,
    chunks: &'a [(usize, usize, usize)],
    sb: SbMode<'a>,
    col0: usize,
    /// Fused path only: `rows` factors per chunk (see `run_block`).
    coefs: &'a [f32],
}

/// Runs the first `rows` rows of `c` (1..=R when fused, else 1) over every chunk, adding to what
/// `c` holds.
fn rows_dispatch(isa: Isa, fused: bool, rb: &RowBlock<'_>, rows: usize, c: &mut [[f32; W]; R]) {
    #[cfg(target_arch = "x86_64")]
    if isa.has_avx2() {
        // SAFETY: AVX2 isas are only chosen when the CPU has AVX2 and FMA.
        unsafe {
            match (fused, rows) {
                (false, _) => avx2::row_block(rb, &mut c[0]),
                (true, 1) => avx2::fused_rows::<1>(rb, c),
                (true, 2) => avx2::fused_rows::<2>(rb, c),
                (true, _) => avx2::fused_rows::<3>(rb, c),
            }
        }
        return;
    }
    // Without a hardware FMA, `mul_add` would be a library call: keep the unfused form (one row
    // at a time, see `run_block`).
    debug_assert!(!fused && rows == 1);
    let _ = isa;
    row_block(rb, &mut c[0])
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{row_block as row_block_plain, Block, Ctx, QElem, RowBlock, SbMode, R, W};
    use std::arch::x86_64::*;

    /// [`super::run_block`] compiled with AVX2 and FMA.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn run_block<T: QElem>(ctx: &Ctx<'_, T>, blk: Block) {
        super::run_block(ctx, blk)
    }

    /// The unfused row block, compiled for AVX2.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn row_block(rb: &RowBlock<'_>, crow: &mut [f32; W]) {
        row_block_plain(rb, crow)
    }

    /// `N` rows of C (`N * 4` ymm accumulators) over every one-element chunk with power-of-two
    /// scales ([`super::fusable`]): the product and both scalings are exact, so the one rounding
    /// left is the add, which a fused multiply-add does; each C element still sums its chunks in
    /// the reference's order.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA; `N <= R`, `rb.coefs` holds `N` factors per chunk.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn fused_rows<const N: usize>(rb: &RowBlock<'_>, c: &mut [[f32; W]; R]) {
        let mut acc = [[_mm256_setzero_ps(); 4]; N];
        for (r, ar) in acc.iter_mut().enumerate() {
            for (q, a) in ar.iter_mut().enumerate() {
                *a = _mm256_loadu_ps(c[r][8 * q..].as_ptr());
            }
        }
        let coefs = &rb.coefs[..rb.chunks.len() * N];
        let ldb = rb.ldb;
        for (ci, &(s, k0, _)) in rb.chunks.iter().enumerate() {
            let bp = rb.bf[k0 * ldb..k0 * ldb + W].as_ptr();
            let mut b = [_mm256_setzero_ps(); 4];
            for (q, bq) in b.iter_mut().enumerate() {
                *bq = _mm256_loadu_ps(bp.add(8 * q));
            }
            let cf = &coefs[ci * N..ci * N + N];
            match rb.sb {
                SbMode::Seg(_) => {
                    for (ar, &f) in acc.iter_mut().zip(cf) {
                        let f = _mm256_set1_ps(f);
                        for (a, bq) in ar.iter_mut().zip(b) {
                            *a = _mm256_fmadd_ps(f, bq, *a);
                        }
                    }
                }
                SbMode::Cols { sbx, ld } => {
                    let sp = sbx[s * ld + rb.col0..s * ld + rb.col0 + W].as_ptr();
                    let mut sv = [_mm256_setzero_ps(); 4];
                    for (q, sq) in sv.iter_mut().enumerate() {
                        *sq = _mm256_loadu_ps(sp.add(8 * q));
                    }
                    for (ar, &t) in acc.iter_mut().zip(cf) {
                        let t = _mm256_set1_ps(t);
                        for ((a, bq), sq) in ar.iter_mut().zip(b).zip(sv) {
                            *a = _mm256_fmadd_ps(_mm256_mul_ps(t, sq), bq, *a);
                        }
                    }
                }
            }
        }
        for (r, ar) in acc.iter().enumerate() {
            for (q, a) in ar.iter().enumerate() {
                _mm256_storeu_ps(c[r][8 * q..].as_mut_ptr(), *a);
            }
        }
    }
}

/// One C row block of `W` columns (row 0 of `rb`) over every chunk, kept in registers.
#[inline(always)]
fn row_block(rb: &RowBlock<'_>, crow: &mut [f32; W]) {
    let mut cv = *crow;
    let ldb = rb.ldb;
    for &(s, k0, k1) in rb.chunks {
        let mut acc = [0f32; W];
        for kk in k0..k1 {
            let av = rb.arows[kk];
            let b: &[f32; W] = rb.bf[kk * ldb..kk * ldb + W].try_into().expect("width W");
            for j in 0..W {
                acc[j] += av * b[j];
            }
        }
        let sa = rb.sa_rows[s];
        match rb.sb {
            SbMode::Seg(v) => {
                let sbs = v[s];
                for j in 0..W {
                    cv[j] += (acc[j] * sa) * sbs;
                }
            }
            SbMode::Cols { sbx, ld } => {
                let row: &[f32; W] = sbx[s * ld + rb.col0..s * ld + rb.col0 + W]
                    .try_into()
                    .expect("width W");
                for j in 0..W {
                    cv[j] += (acc[j] * sa) * row[j];
                }
            }
        }
    }
    *crow = cv;
}
