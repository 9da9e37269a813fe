//! The blocked, multi-threaded integer GEMM driver with the fused fixed-to-float epilogue.
//!
//! Loop nest of one task (a block of C), BLIS style:
//!
//! ```text
//! for jc (NC columns):  for step (<= KC_PAIRS k-pairs):  pack B~(step, jc)
//!   for ic (MC rows):   pack A~(step, ic)
//!     for jr (NR), ir (MR):  for each piece of the step:  microkernel -> i32 tile
//!                                                         if the piece ends its chunk: epilogue
//! ```
//!
//! A *step* is the K range packed at once. Short chunks (the usual case with small segments)
//! are grouped whole into one step, each padded to even length, so their epilogues run while the
//! C tile is hot. A chunk longer than a step is split over several steps; its i32 tile then lives
//! in a per-task buffer between steps, and the epilogue runs after its last step. Chunks are
//! visited in increasing k order, so every C element gets the documented float operations in the
//! documented order. Threads split M or N (never K) and the integer sums are exact, so the
//! result is the same bits for any thread count and any blocking.

use crate::pack::{pack_a, pack_b, QElem};
use crate::reference::{validate_i32_shapes, validate_q_shapes};
use crate::types::{k_chunks, k_safe, GemmSpec, MatMut, MatRef, QMatRef, Scales};
use crate::ukernel::{self, Isa, Store, MR, NR, TILE};
use crate::KernelError;

/// k-pairs per step: the B micro-panel (`KC_PAIRS * NR * 4` bytes = 16 KiB) stays in L1.
pub const KC_PAIRS: usize = 256;
/// Rows of A packed at once (`MC * KC_PAIRS * 4` bytes = 144 KiB, in L2).
pub const MC: usize = 144;
/// Columns of B packed at once (up to 2 MiB, in L3).
pub const NC: usize = 2048;
/// Steps of at most this many k-pairs visit tiles row strip by row strip (see `run_block`).
const SHORT_STEP_PAIRS: usize = 64;
/// Bytes allowed for the per-task i32 accumulator of chunks that span several steps.
const ACC_BUF_BYTES: usize = 2 << 20;
/// Below this many MACs the work runs on the calling thread.
const PAR_MIN_MACS: usize = 1 << 21;

/// A raw pointer that tasks writing disjoint parts of C may share.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr<T>(pub *mut T);
// SAFETY: every task writes a disjoint block of C (see `partition`), and the caller's exclusive
// borrow of C outlives the parallel section.
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

/// Where results go.
#[derive(Clone, Copy)]
pub(crate) enum Out<'a> {
    /// `C (+)= ((acc as f32) * sa) * sb`, chunk by chunk.
    Q {
        c: SendPtr<f32>,
        ldc: usize,
        sa: Scales<'a>,
        sb: Scales<'a>,
        accumulate: bool,
    },
    /// `C = acc` (one chunk).
    I32 { c: SendPtr<i32>, ldc: usize },
}

/// One chunk's share of a step.
#[derive(Clone, Copy, Debug)]
struct Piece {
    /// Index of the chunk in K order (0 is the first chunk of the whole product).
    chunk: usize,
    segment: usize,
    /// Offset of the piece's pairs inside the step's panels.
    poff: usize,
    pairs: usize,
    /// First / last piece of its chunk.
    first: bool,
    last: bool,
}

#[derive(Debug, Default)]
struct Step {
    pieces: Vec<Piece>,
    ranges: Vec<(usize, usize)>,
    pairs: usize,
}

/// Groups chunks into steps of at most `kc_pairs` pairs; returns the steps and whether any
/// chunk spans more than one step.
fn build_steps(chunks: &[(usize, usize, usize)], kc_pairs: usize) -> (Vec<Step>, bool) {
    let mut steps = Vec::new();
    let mut cur = Step::default();
    let mut multi = false;
    for (ci, &(s, k0, k1)) in chunks.iter().enumerate() {
        let q = (k1 - k0).div_ceil(2);
        if q <= kc_pairs {
            if cur.pairs + q > kc_pairs {
                steps.push(std::mem::take(&mut cur));
            }
            cur.pieces.push(Piece {
                chunk: ci,
                segment: s,
                poff: cur.pairs,
                pairs: q,
                first: true,
                last: true,
            });
            cur.ranges.push((k0, k1));
            cur.pairs += q;
        } else {
            multi = true;
            if cur.pairs > 0 {
                steps.push(std::mem::take(&mut cur));
            }
            // Split into equal parts so that the last step is not a sliver.
            let parts = q.div_ceil(kc_pairs);
            let per = q.div_ceil(parts);
            let mut p0 = 0;
            while p0 < q {
                let p1 = (p0 + per).min(q);
                let (a, b) = (k0 + 2 * p0, (k0 + 2 * p1).min(k1));
                steps.push(Step {
                    pieces: vec![Piece {
                        chunk: ci,
                        segment: s,
                        poff: 0,
                        pairs: p1 - p0,
                        first: p0 == 0,
                        last: p1 == q,
                    }],
                    ranges: vec![(a, b)],
                    pairs: p1 - p0,
                });
                p0 = p1;
            }
        }
    }
    if cur.pairs > 0 {
        steps.push(cur);
    }
    (steps, multi)
}

/// A block of C computed by one task: rows `m0..m1`, columns `n0..n1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Block {
    pub m0: usize,
    pub m1: usize,
    pub n0: usize,
    pub n1: usize,
}

/// Cuts C into blocks for `threads` workers, splitting the longer of M and N (never K).
///
/// A few more blocks than threads even out a busy core; each block keeps at least `min_cols`
/// columns / `min_rows` rows so that packing the other operand stays cheap.
pub(crate) fn partition(m: usize, n: usize, macs: usize, threads: usize) -> Vec<Block> {
    let whole = vec![Block {
        m0: 0,
        m1: m,
        n0: 0,
        n1: n,
    }];
    if threads <= 1 || macs < PAR_MIN_MACS {
        return whole;
    }
    let split_n = n >= m;
    let (len, align, min_len) = if split_n { (n, NR, 64) } else { (m, MR, 48) };
    let units = len.div_ceil(align);
    // Two blocks per thread even out a core shared with other work, when blocks stay wide
    // enough (each block repacks the whole other operand).
    let per_thread = if len / (threads * 2) >= 512 { 2 } else { 1 };
    let want = (threads * per_thread)
        .min(len / min_len)
        .max(threads.min(units));
    let parts = want.clamp(1, units);
    if parts <= 1 {
        return whole;
    }
    let mut out = Vec::with_capacity(parts);
    for i in 0..parts {
        let a = (units * i / parts * align).min(len);
        let b = (units * (i + 1) / parts * align).min(len);
        if a < b {
            out.push(if split_n {
                Block {
                    m0: 0,
                    m1: m,
                    n0: a,
                    n1: b,
                }
            } else {
                Block {
                    m0: a,
                    m1: b,
                    n0: 0,
                    n1: n,
                }
            });
        }
    }
    out
}

/// Per-thread packing and accumulator buffers, reused across calls (allocating and zeroing
/// megabytes per call shows on small GEMMs). Packing writes every element the microkernel
/// reads, and the first piece of a chunk overwrites its accumulator tile, so stale contents
/// never reach a result.
#[derive(Default)]
struct Workspace {
    a: Vec<i16>,
    b: Vec<i16>,
    acc: Vec<[i32; TILE]>,
}

thread_local! {
    static WORKSPACE: std::cell::RefCell<Workspace> = std::cell::RefCell::new(Workspace::default());
}

/// `len` elements of `buf` starting on a 32-byte boundary (grows `buf` if needed).
fn aligned(buf: &mut Vec<i16>, len: usize) -> &mut [i16] {
    if buf.len() < len + 16 {
        buf.resize(len + 16, 0);
    }
    let off = (32 - (buf.as_ptr() as usize) % 32) % 32 / 2;
    &mut buf[off..off + len]
}

struct Ctx<'a, T> {
    isa: Isa,
    a: MatRef<'a, T>,
    b: MatRef<'a, T>,
    steps: Vec<Step>,
    multi: bool,
    out: Out<'a>,
}

/// Runs the blocked GEMM over all blocks of `blocks` on the current rayon pool.
fn run_blocks<T: QElem>(ctx: &Ctx<'_, T>, blocks: &[Block]) {
    use rayon::prelude::*;
    if blocks.len() == 1 {
        run_block(ctx, blocks[0]);
    } else {
        blocks.par_iter().for_each(|&blk| run_block(ctx, blk));
    }
}

fn run_block<T: QElem>(ctx: &Ctx<'_, T>, blk: Block) {
    WORKSPACE.with(|ws| match ws.try_borrow_mut() {
        Ok(mut ws) => run_block_in(ctx, blk, &mut ws),
        // Not expected (nothing below re-enters rayon), but never share a borrowed workspace.
        Err(_) => run_block_in(ctx, blk, &mut Workspace::default()),
    })
}

fn run_block_in<T: QElem>(ctx: &Ctx<'_, T>, blk: Block, ws: &mut Workspace) {
    let (mt, nt) = (blk.m1 - blk.m0, blk.n1 - blk.n0);
    if mt == 0 || nt == 0 {
        return;
    }
    let max_pairs = ctx.steps.iter().map(|s| s.pairs).max().unwrap_or(0);
    let mtiles = mt.div_ceil(MR);
    let nc_max = if ctx.multi {
        let cols = ACC_BUF_BYTES / (mtiles * MR * 4);
        (cols / NR * NR).clamp(NR, NC)
    } else {
        NC
    };
    // Equal column blocks: a thin remainder block would repack all of A for a few columns.
    let nc = nt.div_ceil(nt.div_ceil(nc_max)).div_ceil(NR) * NR;
    let mc = MC.min(mt.div_ceil(MR) * MR);
    let ntiles_c = nc / NR;
    let Workspace { a: wa, b: wb, acc } = ws;
    let ap = aligned(wa, mc * max_pairs * 2);
    let bp = aligned(wb, nc * max_pairs * 2);
    if ctx.multi && acc.len() < mtiles * ntiles_c {
        acc.resize(mtiles * ntiles_c, [0i32; TILE]);
    }
    let accbuf = &mut acc[..];
    let mut local = [0i32; TILE];
    let mut jc = blk.n0;
    while jc < blk.n1 {
        let ncur = nc.min(blk.n1 - jc);
        for step in &ctx.steps {
            pack_b(ctx.isa, &ctx.b, jc, ncur, &step.ranges, step.pairs, bp);
            let bstrip = step.pairs * NR * 2;
            let mut ic = blk.m0;
            while ic < blk.m1 {
                let mcur = mc.min(blk.m1 - ic);
                pack_a(ctx.isa, &ctx.a, ic, mcur, &step.ranges, step.pairs, ap);
                let astrip = step.pairs * MR * 2;
                let (jrs, irs) = (ncur.div_ceil(NR), mcur.div_ceil(MR));
                // Usually B's micro-panel stays in L1 while A's strips pass (ir inner). With
                // short steps all of B~ fits in L2, and ir outer makes each C row a sequential
                // write stream instead of one 64-byte piece per row per visit: much kinder to
                // DRAM when C is large and K small (576x64x131072).
                let ir_outer = step.pairs <= SHORT_STEP_PAIRS;
                let (outer, inner) = if ir_outer { (irs, jrs) } else { (jrs, irs) };
                for o in 0..outer {
                    for i in 0..inner {
                        let (jr, ir) = if ir_outer { (i, o) } else { (o, i) };
                        let n = jc + jr * NR;
                        let nvalid = NR.min(jc + ncur - n);
                        let m = ic + ir * MR;
                        let mvalid = MR.min(ic + mcur - m);
                        // Tile-major by column strip, so the tiles of consecutive `ir` are adjacent.
                        let tile_idx = jr * mtiles + (m - blk.m0) / MR;
                        for pc in &step.pieces {
                            // In bounds: strips hold `step.pairs` pairs, `poff + pairs <= step.pairs`.
                            let a_ptr = ap[ir * astrip + pc.poff * 2..].as_ptr();
                            let b_ptr = bp[jr * bstrip + pc.poff * NR * 2..].as_ptr();
                            if let Out::Q {
                                c,
                                ldc,
                                sa,
                                sb,
                                accumulate,
                            } = ctx.out
                            {
                                if pc.first && pc.last && mvalid == MR && nvalid == NR {
                                    let (sav, sbv) = tile_scales(&sa, &sb, pc.segment, m, n);
                                    let mode = if !accumulate && pc.chunk == 0 {
                                        Store::Overwrite
                                    } else {
                                        Store::Accumulate
                                    };
                                    // SAFETY: panels as below; (m, n) is a full tile of this
                                    // task's block of C.
                                    unsafe {
                                        ukernel::run_q(
                                            ctx.isa,
                                            pc.pairs,
                                            a_ptr,
                                            step.pairs * 2,
                                            b_ptr,
                                            c.0.add(m * ldc + n),
                                            ldc,
                                            &sav,
                                            &sbv,
                                            mode,
                                        );
                                    }
                                    continue;
                                }
                            }
                            let tile: &mut [i32; TILE] = if pc.first && pc.last {
                                &mut local
                            } else {
                                &mut accbuf[tile_idx]
                            };
                            // SAFETY: the packed panels hold `step.pairs` pairs per strip and
                            // `pc.poff + pc.pairs <= step.pairs`; the isa was checked.
                            unsafe {
                                ukernel::run(
                                    ctx.isa,
                                    pc.pairs,
                                    a_ptr,
                                    step.pairs * 2,
                                    b_ptr,
                                    tile,
                                    pc.first,
                                );
                            }
                            if pc.last {
                                // SAFETY: (m, n) lies in this task's block of C.
                                unsafe {
                                    epilogue(ctx, tile, m, mvalid, n, nvalid, pc);
                                }
                            }
                        }
                    }
                }
                ic += mcur;
            }
        }
        jc += ncur;
    }
}

/// The scales of one tile: `sa(s, m + r)` and `sb(s, n + c)`, clamped to the matrix (entries
/// past its edge are never used, and are read from the last valid index).
#[inline]
fn tile_scales(
    sa: &Scales<'_>,
    sb: &Scales<'_>,
    s: usize,
    m: usize,
    n: usize,
) -> ([f32; MR], [f32; NR]) {
    #[inline]
    fn fill<const L: usize>(sc: &Scales<'_>, s: usize, i0: usize) -> [f32; L] {
        let base = s * sc.seg_stride;
        if sc.group == usize::MAX {
            return [sc.values[base]; L];
        }
        let mut out = [0f32; L];
        if sc.group == 1 {
            let avail = sc.values.len().saturating_sub(base + i0).min(L);
            out[..avail].copy_from_slice(&sc.values[base + i0..base + i0 + avail]);
        } else {
            // One division per tile, not per element: groups are long (a feature map), so
            // the index advances at most a few times inside a tile.
            let last = sc.values.len() - 1;
            let (mut g, mut left) = (i0 / sc.group, sc.group - i0 % sc.group);
            for v in out.iter_mut() {
                *v = sc.values[(base + g).min(last)];
                left -= 1;
                if left == 0 {
                    g += 1;
                    left = sc.group;
                }
            }
        }
        out
    }
    (fill::<MR>(sa, s, m), fill::<NR>(sb, s, n))
}

/// Applies one finished chunk's tile to C.
///
/// # Safety
/// Rows `m..m+mvalid`, columns `n..n+nvalid` of C must be inside C and owned by this task.
#[inline]
unsafe fn epilogue<T>(
    ctx: &Ctx<'_, T>,
    tile: &[i32; TILE],
    m: usize,
    mvalid: usize,
    n: usize,
    nvalid: usize,
    pc: &Piece,
) {
    match ctx.out {
        Out::I32 { c, ldc } => {
            for r in 0..mvalid {
                let dst = c.0.add((m + r) * ldc + n);
                std::ptr::copy_nonoverlapping(tile.as_ptr().add(r * NR), dst, nvalid);
            }
        }
        Out::Q {
            c,
            ldc,
            sa,
            sb,
            accumulate,
        } => {
            let zero_init = !accumulate && pc.chunk == 0;
            let (sav, sbv) = tile_scales(&sa, &sb, pc.segment, m, n);
            let dst = c.0.add(m * ldc + n);
            epilogue_rows(
                ctx.isa, tile, &sav, &sbv, dst, ldc, mvalid, nvalid, zero_init,
            );
        }
    }
}

/// Tile epilogue for rows `..mvalid` and columns `..nvalid` of the tile, vectorised by the
/// compiler (AVX2 when available). Partial tiles (the last row strip when M is not a multiple
/// of `MR`: every layer with 16, 32 or 64 output channels) take the same vector path row by
/// row as long as the columns are whole.
///
/// # Safety
/// `c` must address an `mvalid x nvalid` block with leading dimension `ldc`.
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn epilogue_rows(
    isa: Isa,
    tile: &[i32; TILE],
    sa: &[f32; MR],
    sb: &[f32; NR],
    c: *mut f32,
    ldc: usize,
    mvalid: usize,
    nvalid: usize,
    zero_init: bool,
) {
    /// `row (+)= (t * sa) * sb`, element-wise over equal-length slices.
    #[inline(always)]
    fn row_body(row: &mut [f32], t: &[i32], sa: f32, sb: &[f32], zero: bool) {
        let it = row.iter_mut().zip(t).zip(sb);
        // `0.0 + x` (not `x`) when overwriting: the semantics start from 0.0, which turns a
        // -0.0 product into +0.0.
        if zero {
            it.for_each(|((o, &v), &b)| *o = 0.0 + ((v as f32) * sa) * b);
        } else {
            it.for_each(|((o, &v), &b)| *o += ((v as f32) * sa) * b);
        }
    }
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn body(
        tile: &[i32; TILE],
        sa: &[f32; MR],
        sb: &[f32; NR],
        c: *mut f32,
        ldc: usize,
        mvalid: usize,
        nvalid: usize,
        zero_init: bool,
    ) {
        for r in 0..mvalid.min(MR) {
            let row = std::slice::from_raw_parts_mut(c.add(r * ldc), nvalid);
            let w = nvalid.min(NR);
            row_body(
                &mut row[..w],
                &tile[r * NR..][..w],
                sa[r],
                &sb[..w],
                zero_init,
            );
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn body_avx2(
        tile: &[i32; TILE],
        sa: &[f32; MR],
        sb: &[f32; NR],
        c: *mut f32,
        ldc: usize,
        mvalid: usize,
        nvalid: usize,
        zero_init: bool,
    ) {
        body(tile, sa, sb, c, ldc, mvalid, nvalid, zero_init)
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => body_avx2(tile, sa, sb, c, ldc, mvalid, nvalid, zero_init),
        _ => body(tile, sa, sb, c, ldc, mvalid, nvalid, zero_init),
    }
}

/// Fast element-range check: the same verdict and message as
/// [`crate::reference::check_range_ref`], scanning contiguous lines in bulk first.
pub(crate) fn check_range<T: QElem>(
    name: &str,
    q: &MatRef<'_, T>,
    max_abs: u32,
) -> Result<(), KernelError> {
    if max_abs >= T::TYPE_MAX_ABS || q.rows == 0 || q.cols == 0 {
        return Ok(());
    }
    #[inline(always)]
    fn over_body<T: QElem>(line: &[T], max_abs: u32) -> bool {
        // Min and max in the element type vectorise (`vpminsb`/`vpmaxsb`); an early-exit
        // search would not.
        let Some(&first) = line.first() else {
            return false;
        };
        let (lo, hi) = line
            .iter()
            .fold((first, first), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        lo.into().unsigned_abs() > max_abs || hi.into().unsigned_abs() > max_abs
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn over_avx2<T: QElem>(line: &[T], max_abs: u32) -> bool {
        over_body(line, max_abs)
    }
    #[inline]
    fn over<T: QElem>(line: &[T], max_abs: u32, avx2: bool) -> bool {
        // Baseline x86-64 (SSE2) has no signed byte min/max: the AVX2 build of the same loop
        // is several times faster (the scan was 30% of a 131072x144x16 GEMM).
        #[cfg(target_arch = "x86_64")]
        if avx2 {
            // SAFETY: AVX2 is present.
            return unsafe { over_avx2(line, max_abs) };
        }
        let _ = avx2;
        over_body(line, max_abs)
    }
    // Large operands are scanned by the pool too: the scan is bound by memory bandwidth,
    // which two cores have more of than one.
    let parallel = q.rows * q.cols >= 1 << 22;
    let avx2 = Isa::detect() == Isa::Avx2;
    fn scan<'d, T: QElem>(
        lines: usize,
        parallel: bool,
        avx2: bool,
        max_abs: u32,
        line: impl Fn(usize) -> &'d [T] + Sync,
    ) -> bool {
        use rayon::prelude::*;
        if parallel {
            (0..lines)
                .into_par_iter()
                .any(|i| over(line(i), max_abs, avx2))
        } else {
            (0..lines).any(|i| over(line(i), max_abs, avx2))
        }
    }
    let bad = if q.col_stride == 1 {
        scan(q.rows, parallel, avx2, max_abs, |r| {
            &q.data[r * q.row_stride..r * q.row_stride + q.cols]
        })
    } else if q.row_stride == 1 {
        scan(q.cols, parallel, avx2, max_abs, |c| {
            &q.data[c * q.col_stride..c * q.col_stride + q.rows]
        })
    } else {
        true // no bulk scan for general strides: let the reference scan decide
    };
    if bad {
        crate::reference::check_range_ref(name, q, max_abs)
    } else {
        Ok(())
    }
}

/// Quantised GEMM on the given kernel family (see [`crate::types`] for the semantics).
pub fn gemm_q<T: QElem>(
    isa: Isa,
    a: QMatRef<'_, T>,
    b: QMatRef<'_, T>,
    spec: GemmSpec,
    c: MatMut<'_, f32>,
) -> Result<(), KernelError> {
    let isa = isa.or_supported();
    validate_q_shapes(&a, &b, &spec, &c)?;
    check_range("A", &a.mat, a.max_abs)?;
    check_range("B", &b.mat, b.max_abs)?;
    let (m, k, n) = (a.mat.rows, a.mat.cols, b.mat.cols);
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !spec.accumulate {
            for r in 0..m {
                c.data[r * c.ld..r * c.ld + n].fill(0.0);
            }
        }
        return Ok(());
    }
    let chunks = k_chunks(k, spec.segment, k_safe(a.max_abs, b.max_abs));
    if crate::smallseg::eligible::<T>(&chunks, a.max_abs, b.max_abs) {
        return crate::smallseg::run(isa, &a, &b, &chunks, spec.accumulate, c);
    }
    let (steps, multi) = build_steps(&chunks, KC_PAIRS);
    let ldc = c.ld;
    let ctx = Ctx {
        isa,
        a: a.mat,
        b: b.mat,
        steps,
        multi,
        out: Out::Q {
            c: SendPtr(c.data.as_mut_ptr()),
            ldc,
            sa: a.scales,
            sb: b.scales,
            accumulate: spec.accumulate,
        },
    };
    let blocks = partition(m, n, m * n * k, rayon::current_num_threads());
    run_blocks(&ctx, &blocks);
    Ok(())
}

/// Exact `C = A * B` in i32 on the given kernel family.
pub fn gemm_i8_i32_with(
    isa: Isa,
    a: MatRef<'_, i8>,
    b: MatRef<'_, i8>,
    c: MatMut<'_, i32>,
) -> Result<(), KernelError> {
    let isa = isa.or_supported();
    validate_i32_shapes(&a, &b, &c)?;
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        for r in 0..m {
            c.data[r * c.ld..r * c.ld + n].fill(0);
        }
        return Ok(());
    }
    let (steps, multi) = build_steps(&[(0, 0, k)], KC_PAIRS);
    let ctx = Ctx {
        isa,
        a,
        b,
        steps,
        multi,
        out: Out::I32 {
            c: SendPtr(c.data.as_mut_ptr()),
            ldc: c.ld,
        },
    };
    let blocks = partition(m, n, m * n * k, rayon::current_num_threads());
    run_blocks(&ctx, &blocks);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_cover_chunks_in_order() {
        for (k, seg, ks) in [
            (1000, 3, 10_000),
            (5000, usize::MAX, 133_144),
            (1301, 600, 512),
        ] {
            let chunks = k_chunks(k, seg, ks);
            let (steps, multi) = build_steps(&chunks, KC_PAIRS);
            let mut covered = Vec::new();
            for st in &steps {
                assert!(st.pairs <= KC_PAIRS);
                for (pc, &(a, b)) in st.pieces.iter().zip(&st.ranges) {
                    assert_eq!(pc.pairs, (b - a).div_ceil(2));
                    covered.push((pc.chunk, a, b, pc.first, pc.last));
                }
            }
            // Ranges tile 0..k in order, each chunk opened once and closed once.
            let mut next = 0;
            for &(ci, a, b, first, last) in &covered {
                assert_eq!(a, next);
                next = b;
                assert_eq!(first, a == chunks[ci].1);
                assert_eq!(last, b == chunks[ci].2);
            }
            assert_eq!(next, k);
            assert_eq!(
                multi,
                chunks.iter().any(|c| (c.2 - c.1).div_ceil(2) > KC_PAIRS)
            );
        }
    }

    #[test]
    fn partition_is_disjoint_and_complete() {
        for (m, n, t) in [
            (64, 131072, 2),
            (1024, 1024, 3),
            (576, 64, 2),
            (7, 5, 2),
            (1, 1000, 3),
        ] {
            let blocks = partition(m, n, m * n * 4096, t);
            let mut seen = vec![0u8; m * n];
            for b in &blocks {
                for i in b.m0..b.m1 {
                    for j in b.n0..b.n1 {
                        seen[i * n + j] += 1;
                    }
                }
            }
            assert!(seen.iter().all(|&x| x == 1), "{m}x{n} at {t} threads");
        }
    }
}
