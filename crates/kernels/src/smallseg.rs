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
/// f32 elements of B converted at once (256 KiB, in L2).
const GROUP_FLOATS: usize = 1 << 16;

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
        c: SendPtr(c.data.as_mut_ptr()),
        ldc: c.ld,
    };
    // The direct path does about 4 vector operations per 8 MACs: weigh it as more work.
    let blocks = partition(
        m,
        n,
        m * n * k * 4,
        gemm_threads(),
        crate::ukernel::MR,
        crate::ukernel::NR,
    );
    if blocks.len() == 1 {
        run_block(&ctx, blocks[0]);
    } else {
        blocks.par_iter().for_each(|&blk| run_block(&ctx, blk));
    }
    Ok(())
}

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
    let mut arow = vec![0f32; k];
    let mut sa_row = vec![0f32; segs];
    let mut g0 = blk.n0;
    while g0 < blk.n1 {
        let gw = group_max.min(blk.n1 - g0);
        // B columns of the group as f32, row-major K x gw (exact: |b| <= 32768).
        let mut bf = vec![0f32; k * gw];
        for (kk, row) in bf.chunks_exact_mut(gw).enumerate() {
            if ctx.b.col_stride == 1 {
                let base = kk * ctx.b.row_stride + g0;
                for (d, &v) in row.iter_mut().zip(&ctx.b.data[base..base + gw]) {
                    *d = v.into() as f32;
                }
            } else {
                for (j, d) in row.iter_mut().enumerate() {
                    *d = ctx.b.at(kk, g0 + j).into() as f32;
                }
            }
        }
        // B scales: one per segment, or expanded per column when they vary along N.
        let sbx: Vec<f32> = if sb_cols {
            (0..segs)
                .flat_map(|s| (0..gw).map(move |j| (s, j)))
                .map(|(s, j)| ctx.sb.get(s, g0 + j))
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
        for mi in blk.m0..blk.m1 {
            for (kk, d) in arow.iter_mut().enumerate() {
                *d = ctx.a.at(mi, kk).into() as f32;
            }
            for (s, d) in sa_row.iter_mut().enumerate() {
                *d = ctx.sa.get(s, mi);
            }
            let mut nb = 0;
            while nb < gw {
                let w = W.min(gw - nb);
                // SAFETY: row `mi`, columns `g0+nb .. +w` are inside C and owned by this block.
                let crow = unsafe {
                    std::slice::from_raw_parts_mut(ctx.c.0.add(mi * ctx.ldc + g0 + nb), w)
                };
                if w == W {
                    let crow: &mut [f32; W] = crow.try_into().expect("width W");
                    row_block_dispatch(
                        ctx.isa,
                        &arow,
                        &bf[nb..],
                        gw,
                        ctx.chunks,
                        &sa_row,
                        sbm,
                        nb,
                        ctx.accumulate,
                        crow,
                    );
                } else {
                    row_tail(
                        &arow,
                        &bf[nb..],
                        gw,
                        ctx.chunks,
                        &sa_row,
                        sbm,
                        nb,
                        ctx.accumulate,
                        crow,
                    );
                }
                nb += w;
            }
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

#[allow(clippy::too_many_arguments)]
fn row_block_dispatch(
    isa: Isa,
    arow: &[f32],
    bf: &[f32],
    ldb: usize,
    chunks: &[(usize, usize, usize)],
    sa_row: &[f32],
    sb: SbMode<'_>,
    col0: usize,
    accumulate: bool,
    crow: &mut [f32; W],
) {
    /// # Safety
    ///
    /// The CPU has AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn avx2(
        arow: &[f32],
        bf: &[f32],
        ldb: usize,
        chunks: &[(usize, usize, usize)],
        sa_row: &[f32],
        sb: SbMode<'_>,
        col0: usize,
        accumulate: bool,
        crow: &mut [f32; W],
    ) {
        row_block(arow, bf, ldb, chunks, sa_row, sb, col0, accumulate, crow)
    }
    // SAFETY: AVX2 isas are only chosen when the CPU has AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    if isa.has_avx2() {
        return unsafe { avx2(arow, bf, ldb, chunks, sa_row, sb, col0, accumulate, crow) };
    }
    row_block(arow, bf, ldb, chunks, sa_row, sb, col0, accumulate, crow)
}

/// One C row block of `W` columns over every chunk, kept in registers.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn row_block(
    arow: &[f32],
    bf: &[f32],
    ldb: usize,
    chunks: &[(usize, usize, usize)],
    sa_row: &[f32],
    sb: SbMode<'_>,
    col0: usize,
    accumulate: bool,
    crow: &mut [f32; W],
) {
    let mut cv = if accumulate { *crow } else { [0f32; W] };
    for &(s, k0, k1) in chunks {
        let mut acc = [0f32; W];
        for kk in k0..k1 {
            let av = arow[kk];
            let b: &[f32; W] = bf[kk * ldb..kk * ldb + W].try_into().expect("width W");
            for j in 0..W {
                acc[j] += av * b[j];
            }
        }
        let sa = sa_row[s];
        match sb {
            SbMode::Seg(v) => {
                let sbs = v[s];
                for j in 0..W {
                    cv[j] += (acc[j] * sa) * sbs;
                }
            }
            SbMode::Cols { sbx, ld } => {
                let row: &[f32; W] = sbx[s * ld + col0..s * ld + col0 + W]
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

/// Same as [`row_block`] for a last block narrower than `W`.
#[allow(clippy::too_many_arguments)]
fn row_tail(
    arow: &[f32],
    bf: &[f32],
    ldb: usize,
    chunks: &[(usize, usize, usize)],
    sa_row: &[f32],
    sb: SbMode<'_>,
    col0: usize,
    accumulate: bool,
    crow: &mut [f32],
) {
    for (j, cj) in crow.iter_mut().enumerate() {
        let mut cv = if accumulate { *cj } else { 0.0 };
        for &(s, k0, k1) in chunks {
            let mut acc = 0f32;
            for kk in k0..k1 {
                acc += arow[kk] * bf[kk * ldb + j];
            }
            let sbv = match sb {
                SbMode::Seg(v) => v[s],
                SbMode::Cols { sbx, ld } => sbx[s * ld + col0 + j],
            };
            cv += (acc * sa_row[s]) * sbv;
        }
        *cj = cv;
    }
}
