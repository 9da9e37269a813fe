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
        // B columns of the group as f32, row-major K x gw (exact: |b| <= 32768), written once
        // (no zero fill first).
        let mut bf = Vec::with_capacity(k * gw);
        for kk in 0..k {
            if ctx.b.col_stride == 1 {
                let base = kk * ctx.b.row_stride + g0;
                bf.extend(ctx.b.data[base..base + gw].iter().map(|&v| v.into() as f32));
            } else {
                bf.extend((0..gw).map(|j| ctx.b.at(kk, g0 + j).into() as f32));
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
                        ctx.fused,
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
    fused: bool,
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
    /// The CPU must have AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn avx2(
        fused: bool,
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
        if fused {
            row_block_fused(arow, bf, ldb, chunks, sa_row, sb, col0, accumulate, crow)
        } else {
            row_block(arow, bf, ldb, chunks, sa_row, sb, col0, accumulate, crow)
        }
    }
    #[cfg(target_arch = "x86_64")]
    if isa.has_avx2() {
        // SAFETY: AVX2 isas are only chosen when the CPU has AVX2 and FMA.
        return unsafe {
            avx2(
                fused, arow, bf, ldb, chunks, sa_row, sb, col0, accumulate, crow,
            )
        };
    }
    // Without a hardware FMA, `mul_add` would be a library call: keep the unfused form.
    let _ = fused;
    row_block(arow, bf, ldb, chunks, sa_row, sb, col0, accumulate, crow)
}

/// [`row_block`] for one-element chunks and power-of-two scales ([`fusable`]): the product and
/// both scalings are exact, so the one rounding left is the add, which a fused multiply-add does.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn row_block_fused(
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
    for &(s, k0, _) in chunks {
        let b: &[f32; W] = bf[k0 * ldb..k0 * ldb + W].try_into().expect("width W");
        let t = arow[k0] * sa_row[s];
        match sb {
            SbMode::Seg(v) => {
                let coef = t * v[s];
                for j in 0..W {
                    cv[j] = coef.mul_add(b[j], cv[j]);
                }
            }
            SbMode::Cols { sbx, ld } => {
                let row: &[f32; W] = sbx[s * ld + col0..s * ld + col0 + W]
                    .try_into()
                    .expect("width W");
                for j in 0..W {
                    cv[j] = (t * row[j]).mul_add(b[j], cv[j]);
                }
            }
        }
    }
    *crow = cv;
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
