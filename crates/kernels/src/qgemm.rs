//! The blocked, multi-threaded integer GEMM driver with the fused fixed-to-float epilogue.
//!
//! Loop nest of one task (a block of C), BLIS style:
//!
//! ```text
//! for jc (NC columns):  for step (<= KC k-groups):  pack B~(step, jc)
//!   for ic (MC rows):   pack A~(step, ic)
//!     for jr (NR), ir (MR):  for each piece of the step:  microkernel -> i32 tile
//!                                                         if the piece ends its chunk: epilogue
//! ```
//!
//! The driver is generic over a kernel [`Family`]: the k-pair i16 panels of
//! [`crate::pack`]/[`crate::ukernel`] (6x16 tiles, AVX2 or portable) or the k-quad byte panels
//! of [`crate::quad`] (8x32 tiles, AVX-512 VNNI, AVX2 for non-negative B, or portable). A
//! *k-group* is the family's unit of K (2 or 4 values); each chunk is padded with zeros to
//! whole groups.
//!
//! A *step* is the K range packed at once. Short chunks (the usual case with small segments)
//! are grouped whole into one step, so their epilogues run while the C tile is hot. A chunk
//! longer than a step is split over several steps; its i32 tile then lives in a per-task buffer
//! between steps, and the epilogue runs after its last step. Chunks are visited in increasing k
//! order, so every C element gets the documented float operations in the documented order.
//! Threads split M or N (never K) and the integer sums are exact, so the result is the same bits
//! for any thread count, any blocking and any kernel family.

use std::mem::MaybeUninit;

use crate::im2col_b::{Im2colPlan, QIm2colRef};
use crate::pack::{pack_a, pack_b, QElem};
use crate::reference::{
    validate_i32_shapes, validate_q_dims, validate_q_operands, validate_q_shapes,
};
use crate::threads::{gemm_threads, partition, Block, SendPtr};
use crate::types::{k_chunks, k_safe, GemmSpec, GroupedMut, MatMut, MatRef, QMatRef, Scales};
use crate::ukernel::{self, Isa, Store};
use crate::{quad, KernelError};

/// Bytes allowed for the per-task i32 accumulator of chunks that span several steps.
const ACC_BUF_BYTES: usize = 2 << 20;
/// The largest tile (`MR * NR`) and tile side of any family.
const TILE_MAX: usize = 256;
const SIDE_MAX: usize = 32;

/// A microkernel family: its tile shape, its unit of K, how it packs panels and how it
/// multiplies them. Both families compute the same exact i32 sums.
pub(crate) trait Family<T: QElem> {
    /// Rows / columns of the C tile.
    const MR: usize;
    const NR: usize;
    /// K values per packed group.
    const KU: usize;
    /// Groups per step (the B micro-panel stays in L1).
    const KC: usize;
    /// Rows of A packed at once (in L2) and columns of B packed at once (in L2/L3).
    const MC: usize;
    const NC: usize;
    /// Steps of at most this many groups visit tiles row strip by row strip (see `run_block`).
    const SHORT_STEP: usize;
    type PA: Copy + Default;
    type PB: Copy + Default;
    /// This family's packing buffers in the per-thread workspace.
    fn buffers(ws: &mut Workspace) -> (&mut Vec<Self::PA>, &mut Vec<Self::PB>, &mut Vec<i32>);
    /// Packs rows `m0 .. m0 + mlen` of A (strips of `MR`) and any per-piece row data.
    #[allow(clippy::too_many_arguments)]
    fn pack_a(
        isa: Isa,
        a: &MatRef<'_, T>,
        m0: usize,
        mlen: usize,
        ranges: &[(usize, usize)],
        groups: usize,
        out: &mut [Self::PA],
        sums: &mut [i32],
    );
    /// Packs columns `n0 .. n0 + nlen` of B (strips of `NR`).
    fn pack_b(
        isa: Isa,
        b: &MatRef<'_, T>,
        n0: usize,
        nlen: usize,
        ranges: &[(usize, usize)],
        groups: usize,
        out: &mut [Self::PB],
    );
    /// Packs columns `n0 .. n0 + nlen` of an im2col B (see [`crate::im2col_b`]).
    fn pack_b_im2col(
        isa: Isa,
        plan: &Im2colPlan<'_>,
        n0: usize,
        nlen: usize,
        ranges: &[(usize, usize)],
        groups: usize,
        out: &mut [Self::PB],
    );
    /// Whether `pack_a` writes per-piece row sums that the kernels read.
    const ROW_SUMS: bool;
    /// Offset of a piece starting at group `poff` inside an A strip.
    fn a_piece(poff: usize) -> usize;
    /// The i32 tile (`MR x NR`, row-major) of a piece (see the families' `run`), defined in
    /// its first `cols` columns (those of C the tile covers); a family may leave the others
    /// unspecified.
    ///
    /// # Safety
    /// The panels must hold the piece's `g` groups; `sums` the piece's row data if the family
    /// uses any; `tile` `MR * NR` values; `isa` supported.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile(
        isa: Isa,
        g: usize,
        a: *const Self::PA,
        groups: usize,
        sums: *const i32,
        b: *const Self::PB,
        tile: *mut i32,
        first: bool,
        cols: usize,
    );
    /// A whole chunk straight into the first `rows` rows (`1..=MR`) of a tile of C whose
    /// columns are whole (see the families' `run_q`).
    ///
    /// # Safety
    /// As [`Family::tile`]; `c` must address a `rows x NR` block with leading dimension `ldc`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile_q(
        isa: Isa,
        g: usize,
        a: *const Self::PA,
        groups: usize,
        sums: *const i32,
        b: *const Self::PB,
        c: *mut f32,
        ldc: usize,
        sa: &[f32; SIDE_MAX],
        sb: &[f32; SIDE_MAX],
        mode: Store,
        rows: usize,
    );
}

/// The k-pair i16 family ([`crate::pack`], [`crate::ukernel`]).
pub(crate) struct Pairs;

impl<T: QElem> Family<T> for Pairs {
    const MR: usize = ukernel::MR;
    const NR: usize = ukernel::NR;
    const KU: usize = 2;
    // K = 576 in one step, as the k-quad family's `KC_QUADS`; 18 KiB of B micro-panel.
    const KC: usize = 288;
    const MC: usize = 144;
    const NC: usize = 2048;
    const SHORT_STEP: usize = 64;
    type PA = i16;
    type PB = i16;
    fn buffers(ws: &mut Workspace) -> (&mut Vec<i16>, &mut Vec<i16>, &mut Vec<i32>) {
        (&mut ws.a16, &mut ws.b16, &mut ws.sums)
    }
    fn pack_a(
        isa: Isa,
        a: &MatRef<'_, T>,
        m0: usize,
        mlen: usize,
        ranges: &[(usize, usize)],
        groups: usize,
        out: &mut [i16],
        _sums: &mut [i32],
    ) {
        pack_a(isa.pair_isa(), a, m0, mlen, ranges, groups, out)
    }
    fn pack_b(
        isa: Isa,
        b: &MatRef<'_, T>,
        n0: usize,
        nlen: usize,
        ranges: &[(usize, usize)],
        groups: usize,
        out: &mut [i16],
    ) {
        pack_b(isa.pair_isa(), b, n0, nlen, ranges, groups, out)
    }
    fn pack_b_im2col(
        isa: Isa,
        plan: &Im2colPlan<'_>,
        n0: usize,
        nlen: usize,
        ranges: &[(usize, usize)],
        groups: usize,
        out: &mut [i16],
    ) {
        crate::pack::pack_b_im2col(isa.pair_isa(), plan, n0, nlen, ranges, groups, out)
    }
    const ROW_SUMS: bool = false;
    fn a_piece(poff: usize) -> usize {
        poff * 2
    }
    unsafe fn tile(
        isa: Isa,
        g: usize,
        a: *const i16,
        groups: usize,
        _sums: *const i32,
        b: *const i16,
        tile: *mut i32,
        first: bool,
        _cols: usize,
    ) {
        ukernel::run(
            isa,
            g,
            a,
            groups * 2,
            b,
            &mut *(tile as *mut [i32; ukernel::TILE]),
            first,
        )
    }
    unsafe fn tile_q(
        isa: Isa,
        g: usize,
        a: *const i16,
        groups: usize,
        _sums: *const i32,
        b: *const i16,
        c: *mut f32,
        ldc: usize,
        sa: &[f32; SIDE_MAX],
        sb: &[f32; SIDE_MAX],
        mode: Store,
        rows: usize,
    ) {
        let sa: &[f32; ukernel::MR] = sa[..ukernel::MR].try_into().expect("MR scales");
        let sb: &[f32; ukernel::NR] = sb[..ukernel::NR].try_into().expect("NR scales");
        ukernel::run_q(isa, g, a, groups * 2, b, c, ldc, sa, sb, mode, rows)
    }
}

/// The k-quad byte family ([`crate::quad`]); 8-bit mantissas only.
pub(crate) struct Quads;

impl<T: QElem> Family<T> for Quads {
    const MR: usize = quad::MR;
    const NR: usize = quad::NR;
    const KU: usize = 4;
    const KC: usize = quad::KC_QUADS;
    const MC: usize = 144;
    const NC: usize = 1024;
    const SHORT_STEP: usize = 32;
    type PA = i8;
    type PB = u8;
    fn buffers(ws: &mut Workspace) -> (&mut Vec<i8>, &mut Vec<u8>, &mut Vec<i32>) {
        (&mut ws.a8, &mut ws.b8, &mut ws.sums)
    }
    fn pack_a(
        isa: Isa,
        a: &MatRef<'_, T>,
        m0: usize,
        mlen: usize,
        ranges: &[(usize, usize)],
        groups: usize,
        out: &mut [i8],
        sums: &mut [i32],
    ) {
        let a = T::as_i8(a).expect("the quad family takes 8-bit mantissas");
        quad::pack_a(isa, &a, m0, mlen, ranges, groups, out, sums)
    }
    fn pack_b(
        isa: Isa,
        b: &MatRef<'_, T>,
        n0: usize,
        nlen: usize,
        ranges: &[(usize, usize)],
        groups: usize,
        out: &mut [u8],
    ) {
        let b = T::as_i8(b).expect("the quad family takes 8-bit mantissas");
        quad::pack_b(isa, &b, n0, nlen, ranges, groups, out)
    }
    fn pack_b_im2col(
        isa: Isa,
        plan: &Im2colPlan<'_>,
        n0: usize,
        nlen: usize,
        ranges: &[(usize, usize)],
        groups: usize,
        out: &mut [u8],
    ) {
        quad::pack_b_im2col(isa, plan, n0, nlen, ranges, groups, out)
    }
    const ROW_SUMS: bool = true;
    fn a_piece(poff: usize) -> usize {
        poff * quad::MR * 4
    }
    unsafe fn tile(
        isa: Isa,
        g: usize,
        a: *const i8,
        _groups: usize,
        sums: *const i32,
        b: *const u8,
        tile: *mut i32,
        first: bool,
        cols: usize,
    ) {
        quad::run(isa, g, a, sums, b, tile, first, cols)
    }
    unsafe fn tile_q(
        isa: Isa,
        g: usize,
        a: *const i8,
        _groups: usize,
        sums: *const i32,
        b: *const u8,
        c: *mut f32,
        ldc: usize,
        sa: &[f32; SIDE_MAX],
        sb: &[f32; SIDE_MAX],
        mode: Store,
        rows: usize,
    ) {
        quad::run_q(isa, g, a, sums, b, c, ldc, sa, sb, mode, rows)
    }
}

/// Where results go.
#[derive(Clone, Copy)]
pub(crate) enum Out<'a> {
    /// `C (+)= ((acc as f32) * sa) * sb`, chunk by chunk. Element `(m, n)` of C is at
    /// [`c_offset`]`(ldc, groups, m, n)`.
    Q {
        c: SendPtr<f32>,
        ldc: usize,
        groups: Groups,
        sa: Scales<'a>,
        sb: Scales<'a>,
        accumulate: bool,
    },
    /// `C = acc` (one chunk).
    I32 { c: SendPtr<i32>, ldc: usize },
}

/// C's column groups ([`crate::GroupedMut`]): `cols` columns per group, groups `stride`
/// elements apart. A plain row-major C is one group of every column.
#[derive(Clone, Copy)]
pub(crate) struct Groups {
    cols: usize,
    stride: usize,
}

impl Groups {
    const NONE: Groups = Groups {
        cols: usize::MAX,
        stride: 0,
    };
}

/// Where element `(m, n)` of C is. A tile never crosses a group: the grouped route runs only
/// where groups are whole tiles, and tiles start at multiples of the tile width.
#[inline]
fn c_offset(ldc: usize, g: Groups, m: usize, n: usize) -> usize {
    (n / g.cols) * g.stride + m * ldc + n % g.cols
}

/// One chunk's share of a step.
#[derive(Clone, Copy, Debug)]
struct Piece {
    /// Index of the chunk in K order (0 is the first chunk of the whole product).
    chunk: usize,
    segment: usize,
    /// Offset of the piece's groups inside the step's panels.
    poff: usize,
    groups: usize,
    /// First / last piece of its chunk.
    first: bool,
    last: bool,
}

#[derive(Debug, Default)]
struct Step {
    pieces: Vec<Piece>,
    /// The K range of each piece (same order).
    ranges: Vec<(usize, usize)>,
    groups: usize,
}

/// Groups chunks into steps of at most `kc` groups of `ku` values; returns the steps and
/// whether any chunk spans more than one step.
fn build_steps(chunks: &[(usize, usize, usize)], ku: usize, kc: usize) -> (Vec<Step>, bool) {
    let mut steps = Vec::new();
    let mut cur = Step::default();
    let mut multi = false;
    for (ci, &(s, k0, k1)) in chunks.iter().enumerate() {
        let q = (k1 - k0).div_ceil(ku);
        if q <= kc {
            if cur.groups + q > kc {
                steps.push(std::mem::take(&mut cur));
            }
            cur.pieces.push(Piece {
                chunk: ci,
                segment: s,
                poff: cur.groups,
                groups: q,
                first: true,
                last: true,
            });
            cur.ranges.push((k0, k1));
            cur.groups += q;
        } else {
            multi = true;
            if cur.groups > 0 {
                steps.push(std::mem::take(&mut cur));
            }
            // Split into equal parts so that the last step is not a sliver, each a whole
            // number of 16 groups where the step allows (steps of the im2col operand's
            // transposed packer then start on 64-pixel blocks: 472-pixel steps left a tail of
            // 24 to its scalar path in every step). The sums are exact: any split gives the
            // same bits.
            let parts = q.div_ceil(kc);
            let per = q.div_ceil(parts);
            let per = if kc >= 16 {
                (per.div_ceil(16) * 16).min(kc)
            } else {
                per
            };
            let mut p0 = 0;
            while p0 < q {
                let p1 = (p0 + per).min(q);
                let (a, b) = (k0 + ku * p0, (k0 + ku * p1).min(k1));
                steps.push(Step {
                    pieces: vec![Piece {
                        chunk: ci,
                        segment: s,
                        poff: 0,
                        groups: p1 - p0,
                        first: p0 == 0,
                        last: p1 == q,
                    }],
                    ranges: vec![(a, b)],
                    groups: p1 - p0,
                });
                p0 = p1;
            }
        }
    }
    if cur.groups > 0 {
        steps.push(cur);
    }
    (steps, multi)
}

/// Per-thread packing and accumulator buffers, reused across calls (allocating and zeroing
/// megabytes per call shows on small GEMMs). Packing writes every element the microkernel
/// reads, and the first piece of a chunk overwrites its accumulator tile, so stale contents
/// never reach a result.
#[derive(Default)]
pub(crate) struct Workspace {
    a16: Vec<i16>,
    b16: Vec<i16>,
    a8: Vec<i8>,
    b8: Vec<u8>,
    sums: Vec<i32>,
    acc: Vec<i32>,
}

thread_local! {
    static WORKSPACE: std::cell::RefCell<Workspace> = std::cell::RefCell::new(Workspace::default());
}

/// `len` elements of `buf` starting on a 64-byte boundary (grows `buf` if needed).
fn aligned<E: Copy + Default>(buf: &mut Vec<E>, len: usize) -> &mut [E] {
    let size = std::mem::size_of::<E>();
    let pad = 64 / size;
    if buf.len() < len + pad {
        buf.resize(len + pad, E::default());
    }
    let off = (64 - (buf.as_ptr() as usize) % 64) % 64 / size;
    &mut buf[off..off + len]
}

struct Ctx<'a, T> {
    isa: Isa,
    a: MatRef<'a, T>,
    /// B, or only its shape when `im2col` packs it.
    b: MatRef<'a, T>,
    im2col: Option<&'a Im2colPlan<'a>>,
    steps: Vec<Step>,
    multi: bool,
    out: Out<'a>,
}

/// Runs the blocked GEMM over all blocks of `blocks` on the current rayon pool.
fn run_blocks<T: QElem, F: Family<T>>(ctx: &Ctx<'_, T>, blocks: &[Block]) {
    use rayon::prelude::*;
    if blocks.len() == 1 {
        run_block::<T, F>(ctx, blocks[0]);
    } else {
        blocks
            .par_iter()
            .for_each(|&blk| run_block::<T, F>(ctx, blk));
    }
}

fn run_block<T: QElem, F: Family<T>>(ctx: &Ctx<'_, T>, blk: Block) {
    WORKSPACE.with(|ws| match ws.try_borrow_mut() {
        Ok(mut ws) => run_block_in::<T, F>(ctx, blk, &mut ws),
        // Not expected (nothing below re-enters rayon), but never share a borrowed workspace.
        Err(_) => run_block_in::<T, F>(ctx, blk, &mut Workspace::default()),
    })
}

fn run_block_in<T: QElem, F: Family<T>>(ctx: &Ctx<'_, T>, blk: Block, ws: &mut Workspace) {
    let (mr, nr, ku) = (F::MR, F::NR, F::KU);
    let tile_len = mr * nr;
    let (mt, nt) = (blk.m1 - blk.m0, blk.n1 - blk.n0);
    if mt == 0 || nt == 0 {
        return;
    }
    let max_groups = ctx.steps.iter().map(|s| s.groups).max().unwrap_or(0);
    let max_ranges = ctx.steps.iter().map(|s| s.ranges.len()).max().unwrap_or(0);
    let mtiles = mt.div_ceil(mr);
    let nc_max = if ctx.multi {
        let cols = ACC_BUF_BYTES / (mtiles * mr * 4);
        (cols / nr * nr).clamp(nr, F::NC)
    } else {
        F::NC
    };
    // Equal column blocks: a thin remainder block would repack all of A for a few columns.
    let nc = nt.div_ceil(nt.div_ceil(nc_max)).div_ceil(nr) * nr;
    let mc = F::MC.min(mt.div_ceil(mr) * mr);
    let ntiles_c = nc / nr;
    if ctx.multi && ws.acc.len() < mtiles * ntiles_c * tile_len {
        ws.acc.resize(mtiles * ntiles_c * tile_len, 0);
    }
    let mut accbuf = std::mem::take(&mut ws.acc);
    let (wa, wb, wsums) = F::buffers(ws);
    let ap = aligned(wa, mc * max_groups * ku);
    let bp = aligned(wb, nc * max_groups * ku);
    let sums_len = if F::ROW_SUMS {
        mc.div_ceil(mr) * max_ranges * mr
    } else {
        0
    };
    if wsums.len() < sums_len {
        wsums.resize(sums_len, 0);
    }
    let sums = &mut wsums[..];
    let mut local = [0i32; TILE_MAX];
    let mut sb_cache: Option<(usize, usize, [f32; SIDE_MAX])> = None;
    let mut jc = blk.n0;
    while jc < blk.n1 {
        let ncur = nc.min(blk.n1 - jc);
        for step in &ctx.steps {
            match ctx.im2col {
                Some(plan) => {
                    F::pack_b_im2col(ctx.isa, plan, jc, ncur, &step.ranges, step.groups, bp)
                }
                None => F::pack_b(ctx.isa, &ctx.b, jc, ncur, &step.ranges, step.groups, bp),
            }
            let bstrip = step.groups * nr * ku;
            let nranges = step.ranges.len();
            let mut ic = blk.m0;
            while ic < blk.m1 {
                let mcur = mc.min(blk.m1 - ic);
                F::pack_a(
                    ctx.isa,
                    &ctx.a,
                    ic,
                    mcur,
                    &step.ranges,
                    step.groups,
                    ap,
                    sums,
                );
                let astrip = step.groups * mr * ku;
                let (jrs, irs) = (ncur.div_ceil(nr), mcur.div_ceil(mr));
                // Usually B's micro-panel stays in L1 while A's strips pass (ir inner). With
                // short steps all of B~ fits in L2, and ir outer makes each C row a sequential
                // write stream instead of one 64-byte piece per row per visit: much kinder to
                // DRAM when C is large and K small (576x64x131072).
                let ir_outer = step.groups <= F::SHORT_STEP;
                let (outer, inner) = if ir_outer { (irs, jrs) } else { (jrs, irs) };
                for o in 0..outer {
                    for i in 0..inner {
                        let (jr, ir) = if ir_outer { (i, o) } else { (o, i) };
                        let n = jc + jr * nr;
                        let nvalid = nr.min(jc + ncur - n);
                        let m = ic + ir * mr;
                        let mvalid = mr.min(ic + mcur - m);
                        // Tile-major by column strip, so the tiles of consecutive `ir` are adjacent.
                        let tile_idx = jr * mtiles + (m - blk.m0) / mr;
                        for (pi, pc) in step.pieces.iter().enumerate() {
                            // In bounds: strips hold `step.groups` groups,
                            // `poff + groups <= step.groups`; the sums hold `nranges` pieces of
                            // `mr` rows per strip.
                            let a_ptr = ap[ir * astrip + F::a_piece(pc.poff)..].as_ptr();
                            let b_ptr = bp[jr * bstrip + pc.poff * nr * ku..].as_ptr();
                            let s_ptr = if F::ROW_SUMS {
                                sums[(ir * nranges + pi) * mr..].as_ptr()
                            } else {
                                std::ptr::null()
                            };
                            if let Out::Q {
                                c,
                                ldc,
                                groups,
                                sa,
                                sb,
                                accumulate,
                            } = ctx.out
                            {
                                // Whole columns: the last row strip too (M is rarely a
                                // multiple of MR), storing its valid rows only.
                                if pc.first && pc.last && nvalid == nr {
                                    // B's scales are the same for every row strip of a column
                                    // strip: filled once per (strip, segment), not per tile.
                                    let sbv = match sb_cache {
                                        Some((cn, cs, v)) if cn == n && cs == pc.segment => v,
                                        _ => {
                                            let v = scale_run(&sb, pc.segment, n, nr);
                                            sb_cache = Some((n, pc.segment, v));
                                            v
                                        }
                                    };
                                    let sav = scale_run(&sa, pc.segment, m, mr);
                                    let mode = if !accumulate && pc.chunk == 0 {
                                        Store::Overwrite
                                    } else {
                                        Store::Accumulate
                                    };
                                    // SAFETY: panels as below; (m, n) starts `mvalid` rows
                                    // of whole columns in this task's block of C.
                                    unsafe {
                                        F::tile_q(
                                            ctx.isa,
                                            pc.groups,
                                            a_ptr,
                                            step.groups,
                                            s_ptr,
                                            b_ptr,
                                            c.0.add(c_offset(ldc, groups, m, n)),
                                            ldc,
                                            &sav,
                                            &sbv,
                                            mode,
                                            mvalid,
                                        );
                                    }
                                    continue;
                                }
                            }
                            let t: &mut [i32] = if pc.first && pc.last {
                                &mut local[..tile_len]
                            } else {
                                &mut accbuf[tile_idx * tile_len..][..tile_len]
                            };
                            // SAFETY: the packed panels hold `step.groups` groups per strip and
                            // `pc.poff + pc.groups <= step.groups`; `t` holds a whole tile; the
                            // isa was checked.
                            unsafe {
                                F::tile(
                                    ctx.isa,
                                    pc.groups,
                                    a_ptr,
                                    step.groups,
                                    s_ptr,
                                    b_ptr,
                                    t.as_mut_ptr(),
                                    pc.first,
                                    nvalid,
                                );
                            }
                            if pc.last {
                                // SAFETY: (m, n) lies in this task's block of C.
                                unsafe {
                                    epilogue(ctx, t, nr, m, mvalid, n, nvalid, pc);
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
    ws.acc = accbuf;
}

/// `scale(s, i0 + j)` for `j < len` (entries past the matrix's edge are never used, and are
/// read from the last valid index).
#[inline]
fn scale_run(sc: &Scales<'_>, s: usize, i0: usize, len: usize) -> [f32; SIDE_MAX] {
    let base = s * sc.seg_stride;
    if sc.group == usize::MAX {
        return [sc.values[base]; SIDE_MAX];
    }
    let mut out = [0f32; SIDE_MAX];
    if sc.group == 1 {
        let avail = sc.values.len().saturating_sub(base + i0).min(len);
        out[..avail].copy_from_slice(&sc.values[base + i0..base + i0 + avail]);
    } else {
        // One fill per group, not a step per element: groups are long (a feature map), so
        // a tile's run crosses at most a few of them.
        let last = sc.values.len() - 1;
        let (mut g, mut at, mut run) = (i0 / sc.group, 0, sc.group - i0 % sc.group);
        while at < len {
            let end = len.min(at + run);
            out[at..end].fill(sc.values[(base + g).min(last)]);
            (g, at, run) = (g + 1, end, sc.group);
        }
    }
    out
}

/// Applies one finished chunk's tile (`nr` columns per row) to C.
///
/// # Safety
/// Rows `m..m+mvalid`, columns `n..n+nvalid` of C must be inside C and owned by this task.
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn epilogue<T>(
    ctx: &Ctx<'_, T>,
    tile: &[i32],
    nr: usize,
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
                std::ptr::copy_nonoverlapping(tile.as_ptr().add(r * nr), dst, nvalid);
            }
        }
        Out::Q {
            c,
            ldc,
            groups,
            sa,
            sb,
            accumulate,
        } => {
            let zero_init = !accumulate && pc.chunk == 0;
            let (sav, sbv) = (
                scale_run(&sa, pc.segment, m, mvalid),
                scale_run(&sb, pc.segment, n, nvalid),
            );
            let dst = c.0.add(c_offset(ldc, groups, m, n));
            epilogue_rows(
                ctx.isa, tile, nr, &sav, &sbv, dst, ldc, mvalid, nvalid, zero_init,
            );
        }
    }
}

/// Tile epilogue for rows `..mvalid` and columns `..nvalid` of the tile, vectorised by the
/// compiler (AVX2 when available). Partial tiles (the last row strip when M is not a multiple
/// of `MR`) take the same vector path row by row as long as the columns are whole.
///
/// # Safety
/// `c` must address an `mvalid x nvalid` block with leading dimension `ldc`, initialised
/// unless `zero_init`.
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn epilogue_rows(
    isa: Isa,
    tile: &[i32],
    nr: usize,
    sa: &[f32; SIDE_MAX],
    sb: &[f32; SIDE_MAX],
    c: *mut f32,
    ldc: usize,
    mvalid: usize,
    nvalid: usize,
    zero_init: bool,
) {
    /// `row (+)= (t * sa) * sb`, element-wise over `t.len()` slots of `row`: overwritten
    /// (`zero`), which reads nothing, so the slots may be uninitialised, or added onto.
    ///
    /// # Safety
    /// `row` points to `t.len()` writable floats that no one else accesses during the call,
    /// initialised unless `zero`; `sb` is as long as `t`.
    #[inline(always)]
    unsafe fn row_body(row: *mut f32, t: &[i32], sa: f32, sb: &[f32], zero: bool) {
        let w = t.len();
        // `0.0 + x` (not `x`) when overwriting: the semantics start from 0.0, which turns a
        // -0.0 product into +0.0.
        if zero {
            let row = std::slice::from_raw_parts_mut(row as *mut MaybeUninit<f32>, w);
            let it = row.iter_mut().zip(t).zip(sb);
            it.for_each(|((o, &v), &b)| {
                o.write(0.0 + ((v as f32) * sa) * b);
            });
        } else {
            let row = std::slice::from_raw_parts_mut(row, w);
            let it = row.iter_mut().zip(t).zip(sb);
            it.for_each(|((o, &v), &b)| *o += ((v as f32) * sa) * b);
        }
    }
    /// # Safety
    ///
    /// `c` points to `mvalid` rows of at least `min(nvalid, nr)` writable floats each, `ldc`
    /// apart, that no one else accesses during the call (initialised unless `zero_init`).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn body(
        tile: &[i32],
        nr: usize,
        sa: &[f32; SIDE_MAX],
        sb: &[f32; SIDE_MAX],
        c: *mut f32,
        ldc: usize,
        mvalid: usize,
        nvalid: usize,
        zero_init: bool,
    ) {
        let w = nvalid.min(nr);
        for r in 0..mvalid {
            row_body(
                c.add(r * ldc),
                &tile[r * nr..][..w],
                sa[r],
                &sb[..w],
                zero_init,
            );
        }
    }
    /// # Safety
    ///
    /// As [`body`], on a CPU with AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn body_avx2(
        tile: &[i32],
        nr: usize,
        sa: &[f32; SIDE_MAX],
        sb: &[f32; SIDE_MAX],
        c: *mut f32,
        ldc: usize,
        mvalid: usize,
        nvalid: usize,
        zero_init: bool,
    ) {
        body(tile, nr, sa, sb, c, ldc, mvalid, nvalid, zero_init)
    }
    // SAFETY: `c` is this function's block (its own contract); AVX2 and FMA are checked.
    #[cfg(target_arch = "x86_64")]
    if isa.has_avx2() {
        return body_avx2(tile, nr, sa, sb, c, ldc, mvalid, nvalid, zero_init);
    }
    // SAFETY: as above.
    body(tile, nr, sa, sb, c, ldc, mvalid, nvalid, zero_init)
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
    /// # Safety
    ///
    /// The CPU has AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn over_avx2<T: QElem>(line: &[T], max_abs: u32) -> bool {
        over_body(line, max_abs)
    }
    /// # Safety
    ///
    /// The CPU has AVX2, FMA, AVX-512 F and AVX-512 BW.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,avx512f,avx512bw")]
    unsafe fn over_avx512<T: QElem>(line: &[T], max_abs: u32) -> bool {
        over_body(line, max_abs)
    }
    #[inline]
    fn over<T: QElem>(line: &[T], max_abs: u32, isa: Isa) -> bool {
        // Baseline x86-64 (SSE2) has no signed byte min/max: the AVX2 build of the same loop
        // is several times faster, the AVX-512 one twice that again.
        #[cfg(target_arch = "x86_64")]
        match isa {
            // SAFETY: the VNNI family implies AVX-512 F/BW.
            Isa::Avx512Vnni => return unsafe { over_avx512(line, max_abs) },
            // SAFETY: AVX2 is present.
            Isa::Avx2 | Isa::Avx2Quad => return unsafe { over_avx2(line, max_abs) },
            _ => {}
        }
        let _ = isa;
        over_body(line, max_abs)
    }
    let isa = Isa::detect();
    // No bulk scan for general strides: the reference scan decides.
    let bad = any_line(q, |line| over(line, max_abs, isa)).unwrap_or(true);
    if bad {
        crate::reference::check_range_ref(name, q, max_abs)
    } else {
        Ok(())
    }
}

/// Whether `bad` holds for any contiguous line of `q` (its rows, or its columns for a
/// transposed view); `None` for a view with general strides (no bulk scan). Large operands are
/// scanned by the pool too: a scan is bound by memory bandwidth, which two cores have more of
/// than one.
fn any_line<T: Copy + Sync>(q: &MatRef<'_, T>, bad: impl Fn(&[T]) -> bool + Sync) -> Option<bool> {
    use rayon::prelude::*;
    let (lines, len, stride) = if q.col_stride == 1 {
        (q.rows, q.cols, q.row_stride)
    } else if q.row_stride == 1 {
        (q.cols, q.rows, q.col_stride)
    } else {
        return None;
    };
    let line = |i: usize| &q.data[i * stride..i * stride + len];
    Some(if lines * len >= 1 << 22 {
        (0..lines).into_par_iter().any(|i| bad(line(i)))
    } else {
        (0..lines).any(|i| bad(line(i)))
    })
}

/// Whether every element of `q` is `>= 0` (what the unbiased k-quad kernel needs of B); a view
/// with general strides counts as having negatives. `isa` must be supported.
pub(crate) fn non_negative(q: &MatRef<'_, i8>, isa: Isa) -> bool {
    #[inline(always)]
    fn negative_body(line: &[i8]) -> bool {
        // An OR of the sign bits vectorises to one `vpor` per 32 bytes; an early-exit search
        // would not.
        line.iter().fold(0u8, |acc, &v| acc | v as u8) & 0x80 != 0
    }
    /// # Safety
    ///
    /// The CPU has AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn negative_avx2(line: &[i8]) -> bool {
        negative_body(line)
    }
    let negative = |line: &[i8]| {
        #[cfg(target_arch = "x86_64")]
        if isa.has_avx2() {
            // SAFETY: AVX2 is present (`isa` is supported).
            return unsafe { negative_avx2(line) };
        }
        negative_body(line)
    };
    any_line(q, negative).is_some_and(|neg| !neg)
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
    if m == 0 || n == 0 || k == 0 {
        // SAFETY: `c` was checked to hold the m x n product with leading dimension `c.ld`.
        unsafe {
            empty_k(
                c.data.as_mut_ptr(),
                (c.ld, Groups::NONE),
                (m, n, k),
                spec.accumulate,
            )
        };
        return Ok(());
    }
    let chunks = k_chunks(k, spec.segment, k_safe(a.max_abs, b.max_abs));
    if crate::smallseg::eligible::<T>(&chunks, a.max_abs, b.max_abs) {
        return crate::smallseg::run(isa, &a, &b, &chunks, spec.accumulate, c);
    }
    let quads = T::as_i8(&b.mat)
        .is_some_and(|bm| isa.quads_take(a.max_abs, b.max_abs, || non_negative(&bm, isa)));
    let out = Out::Q {
        c: SendPtr(c.data.as_mut_ptr()),
        ldc: c.ld,
        groups: Groups::NONE,
        sa: a.scales,
        sb: b.scales,
        accumulate: spec.accumulate,
    };
    run_family(isa, quads, a.mat, b.mat, None, &chunks, out);
    Ok(())
}

/// An empty product (`m`, `n` or `k` zero): C is 0.0 unless the call accumulates.
///
/// # Safety
/// `c` with `ldc` and `groups` must address an `m x n` C (see [`c_offset`]) that no one else
/// accesses during the call; its slots may be uninitialised.
unsafe fn empty_k(
    c: *mut f32,
    (ldc, groups): (usize, Groups),
    (m, n, k): (usize, usize, usize),
    accumulate: bool,
) {
    if k == 0 && !accumulate {
        for r in 0..m {
            for j in 0..n {
                c.add(c_offset(ldc, groups, r, j)).write(0.0);
            }
        }
    }
}

/// [`gemm_q`] for 8-bit mantissas with B an im2col matrix ([`crate::im2col_b`]): packed from
/// the maps on the quad family, materialised (by its definition) and handed to [`gemm_q`]
/// otherwise. The same bits either way, and as [`gemm_q`] of the materialised matrix.
pub fn gemm_q8_im2col_with(
    isa: Isa,
    a: QMatRef<'_, i8>,
    b: QIm2colRef<'_>,
    spec: GemmSpec,
    c: MatMut<'_, f32>,
) -> Result<(), KernelError> {
    validate_q_dims(&a, b.shape(), None, &b.scales, &spec, &c)?;
    q8_im2col(isa, a, b, spec, Target::Plain(c))
}

/// [`gemm_q8_im2col_with`] over the whole of K, overwriting C in column groups
/// ([`GroupedMut`]). Where the packed route runs and the groups are whole tiles, the tiles are
/// written in place; otherwise the product is made row-major and copied in.
pub fn gemm_q8_im2col_grouped_with(
    isa: Isa,
    a: QMatRef<'_, i8>,
    b: QIm2colRef<'_>,
    c: GroupedMut<'_>,
) -> Result<(), KernelError> {
    let spec = GemmSpec::whole_k();
    validate_q_operands(&a, b.shape(), None, &b.scales, &spec)?;
    c.check()?;
    let (m, n) = (a.mat.rows, b.shape().1);
    if c.rows != m || c.cols != n {
        return Err(KernelError::Shape(format!(
            "C is {}x{} in groups of {} but A*B is {m}x{n}",
            c.rows, c.cols, c.group
        )));
    }
    q8_im2col(isa, a, b, spec, Target::Grouped(c))
}

/// Where an im2col product goes.
enum Target<'a> {
    Plain(MatMut<'a, f32>),
    Grouped(GroupedMut<'a>),
}

/// The routes of [`gemm_q8_im2col_with`] and [`gemm_q8_im2col_grouped_with`], their
/// arguments checked: which family and whether B is packed from the maps, decided once; a
/// grouped C whose groups are not whole tiles of that family, or a product that is not packed
/// from the maps, is made row-major and copied in.
fn q8_im2col(
    isa: Isa,
    a: QMatRef<'_, i8>,
    b: QIm2colRef<'_>,
    spec: GemmSpec,
    c: Target<'_>,
) -> Result<(), KernelError> {
    let isa = isa.or_supported();
    let (m, k, n) = (a.mat.rows, a.mat.cols, b.shape().1);
    let chunks = k_chunks(k, spec.segment, k_safe(a.max_abs, b.max_abs));
    // B holds the maps' values and zeros: the maps' range and sign are B's.
    let maps = MatRef::row_major(b.src.maps, 1, b.src.maps.len())?;
    let mut quads = isa.quads_take(a.max_abs, b.max_abs, || non_negative(&maps, isa));
    if quads && isa.unbiased_b() && !b.avx2_quads_pack_whole() {
        // The AVX2 k-quad packer takes only the column matrix in whole 32-pixel strips; the
        // k-pair one from the maps beats materialising B by its definition.
        quads = false;
    }
    // The materialised route where the family does not pack this operand from the maps (the
    // k-pair one takes the column matrix in whole 16-pixel strips) or the segments are short
    // enough for the direct path (which reads B by element).
    let packs = quads || b.pairs_pack_whole();
    let direct = packs && !crate::smallseg::eligible::<i8>(&chunks, a.max_abs, b.max_abs);
    let nr = if quads { quad::NR } else { ukernel::NR };
    let route = Route {
        isa,
        quads,
        direct,
        chunks: &chunks,
        maps,
    };
    match c {
        Target::Grouped(mut g) if !direct || !g.group.is_multiple_of(nr) => {
            let mut rm = vec![0f32; m * n];
            route.run(a, b, spec, MatMut::row_major(&mut rm, m, n)?)?;
            g.fill_from_row_major(&rm);
            Ok(())
        }
        Target::Grouped(g) => {
            let groups = Groups {
                cols: g.group,
                stride: m * g.group,
            };
            let c = SendPtr(g.data.as_mut_ptr() as *mut f32);
            route.packed(a, b, spec, c, (g.group, groups))
        }
        Target::Plain(c) => route.run(a, b, spec, c),
    }
}

/// What [`q8_im2col`] decided for one product.
struct Route<'c, 'm> {
    isa: Isa,
    quads: bool,
    direct: bool,
    chunks: &'c [(usize, usize, usize)],
    maps: MatRef<'m, i8>,
}

impl Route<'_, '_> {
    /// Into a row-major C: packed from the maps where decided, else materialised.
    fn run(
        &self,
        a: QMatRef<'_, i8>,
        b: QIm2colRef<'_>,
        spec: GemmSpec,
        c: MatMut<'_, f32>,
    ) -> Result<(), KernelError> {
        if !self.direct {
            return b.with_materialized(|bm| gemm_q(self.isa, a, bm, spec, c));
        }
        let layout = (c.ld, Groups::NONE);
        self.packed(a, b, spec, SendPtr(c.data.as_mut_ptr()), layout)
    }

    /// Packed from the maps into C at `c` laid out as `(ldc, groups)`, checked by the caller
    /// to hold the product (its slots may be uninitialised: this route only overwrites them
    /// before it reads them).
    fn packed(
        &self,
        a: QMatRef<'_, i8>,
        b: QIm2colRef<'_>,
        spec: GemmSpec,
        c: SendPtr<f32>,
        (ldc, groups): (usize, Groups),
    ) -> Result<(), KernelError> {
        let (m, k, n) = (a.mat.rows, a.mat.cols, b.shape().1);
        check_range("A", &a.mat, a.max_abs)?;
        check_range("B (maps)", &self.maps, b.max_abs)?;
        if m == 0 || n == 0 || k == 0 {
            // SAFETY: C holds the m x n product in this layout (the caller's check).
            unsafe { empty_k(c.0, (ldc, groups), (m, n, k), spec.accumulate) };
            return Ok(());
        }
        let (isa, quads) = (self.isa, self.quads);
        let plan = Im2colPlan::new(b.src, b.transposed, quads, quads && isa.unbiased_b());
        let out = Out::Q {
            c,
            ldc,
            groups,
            sa: a.scales,
            sb: b.scales,
            accumulate: spec.accumulate,
        };
        // B's shape only: the packer reads the maps through `plan`.
        let shape = MatRef {
            data: &[],
            rows: k,
            cols: n,
            row_stride: 0,
            col_stride: 0,
        };
        run_family(isa, quads, a.mat, shape, Some(&plan), self.chunks, out);
        Ok(())
    }
}

/// Runs the chunks of `A * B` into `out` on the family `isa` selects: k-quads for 8-bit
/// mantissas where `quads` says the family takes them, k-pairs otherwise.
///
/// `im2col`, when given, packs B (whose view then only gives the shape).
fn run_family<'a, T: QElem>(
    isa: Isa,
    quads: bool,
    a: MatRef<'a, T>,
    b: MatRef<'a, T>,
    im2col: Option<&'a Im2colPlan<'a>>,
    chunks: &[(usize, usize, usize)],
    out: Out<'a>,
) {
    fn go<'a, T: QElem, F: Family<T>>(
        isa: Isa,
        a: MatRef<'a, T>,
        b: MatRef<'a, T>,
        im2col: Option<&'a Im2colPlan<'a>>,
        chunks: &[(usize, usize, usize)],
        out: Out<'a>,
    ) {
        let (m, k, n) = (a.rows, a.cols, b.cols);
        let (steps, multi) = build_steps(chunks, F::KU, F::KC);
        let ctx = Ctx {
            isa,
            a,
            b,
            im2col,
            steps,
            multi,
            out,
        };
        let blocks = partition(m, n, m * n * k, gemm_threads(), F::MR, F::NR);
        run_blocks::<T, F>(&ctx, &blocks);
    }
    if quads && T::as_i8(&a).is_some() {
        go::<T, Quads>(isa, a, b, im2col, chunks, out)
    } else {
        go::<T, Pairs>(isa.pair_isa(), a, b, im2col, chunks, out)
    }
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
    let out = Out::I32 {
        c: SendPtr(c.data.as_mut_ptr()),
        ldc: c.ld,
    };
    // Full-range bytes: 128 bounds both sides.
    let quads = isa.quads_take(128, 128, || non_negative(&b, isa));
    run_family(isa, quads, a, b, None, &[(0, 0, k)], out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tile's run of scales against the per-index reference `Scales::get`, for groups that
    /// split a run anywhere (1, 2, 3, 7, 33, 1000 and one scale), every start and length.
    #[test]
    fn scale_runs_match_the_per_index_scales() {
        let values: Vec<f32> = (0..600).map(|i| 1.0 + i as f32).collect();
        for group in [1, 2, 3, 7, 33, 1000, usize::MAX] {
            for seg_stride in [0, 1, 5] {
                let sc = Scales {
                    values: &values,
                    group,
                    seg_stride,
                };
                for s in [0, 3] {
                    for i0 in [0, 1, 6, 31, 32, 97, 250] {
                        for len in 0..=SIDE_MAX {
                            let run = scale_run(&sc, s, i0, len);
                            for (i, &v) in run.iter().enumerate() {
                                let want = if i >= len && group != usize::MAX {
                                    0.0
                                } else {
                                    sc.get(s, i0 + if i < len { i } else { 0 })
                                };
                                assert_eq!(v, want, "group {group} stride {seg_stride} s {s} i0 {i0} len {len} i {i}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn steps_cover_chunks_in_order() {
        for (k, seg, ks) in [
            (1000, 3, 10_000),
            (5000, usize::MAX, 133_144),
            (1301, 600, 512),
        ] {
            let chunks = k_chunks(k, seg, ks);
            for (ku, kc) in [(2, 256), (4, 128)] {
                let (steps, multi) = build_steps(&chunks, ku, kc);
                let mut covered = Vec::new();
                for st in &steps {
                    assert!(st.groups <= kc);
                    for (pc, &(a, b)) in st.pieces.iter().zip(&st.ranges) {
                        assert_eq!(pc.groups, (b - a).div_ceil(ku));
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
                assert_eq!(multi, chunks.iter().any(|c| (c.2 - c.1).div_ceil(ku) > kc));
            }
        }
    }
}
