//! How the convolution's work is cut and shared among threads: chunks of examples whose
//! im2col matrix stays within a budget, groups of chunks in the backward pass, pieces of
//! equal-scale examples for the 8-bit weight gradient; run in parallel (each on one thread,
//! its GEMMs kept serial) when there are enough of them, else one after another with each
//! GEMM split across the threads. Groups and pieces, and the chunks of every sum across
//! examples, depend on the shapes and the scales only, and their partial results are combined
//! in a fixed order, so the bits never depend on the thread count; only the 8-bit forward
//! GEMM's chunks, whose outputs are exact per example, follow it ([`int_chunk`]).

use lowprec_kernels::GemmBackend;
use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::time::{Duration, Instant};

use super::chunk::{forward_chunk, shares_kernel_rows, BackwardChunks, FloatWeights, GroupResult};
use super::layout::split_kernel_rows;
use crate::ctx::Category;
use crate::im2col::ConvGeom;
use crate::operand::Operand;
use crate::{Ctx, NnError};

/// Largest im2col buffer (values) a chunk of examples may produce. 2^20 keeps the float `dcol`
/// of a chunk (4 MB) in the last-level cache between the error GEMM that writes it and the
/// col2im that reads it, and bounds the transient buffers (a smaller peak resident size than
/// 2^23 on VGG16 at batch 128).
pub const COL_BUDGET: usize = 1 << 20;

/// Largest 8-bit im2col buffer (bytes) of one weight-gradient GEMM: the weight gradient is
/// read and written once per GEMM, so on small feature maps (VGG16's 512 channels of 4x4: 9 MB
/// of dW against 1 MB of columns per 14 examples) longer GEMMs matter more than the buffer.
pub const COL_BUDGET_I8: usize = 1 << 23;

/// Smallest 8-bit im2col buffer (bytes) of one weight-gradient GEMM: between this and
/// [`COL_BUDGET_I8`], a piece's columns are four times the weight gradient's bytes, so small
/// layers (PreResNet-20's 16 channels: a 9 KB dW) get pieces that stay in L2 while they are
/// packed, and large ones still read and write dW rarely.
pub const COL_MIN_I8: usize = 1 << 20;

/// Smallest float im2col buffer (values) of a chunk on the float path: between this and
/// [`COL_BUDGET`], a chunk's columns are four times the weights, so small layers (PreResNet-20's
/// 16 to 64 channels) get chunks whose columns stay in L2 between im2col and the GEMM that
/// packs them, and layers with large weights (VGG16's 256 to 512 channels, packed again by each
/// GEMM) keep long chunks. The 8-bit path keeps [`COL_BUDGET`]: its columns are a quarter of
/// the bytes, and its own packers read the maps.
pub const COL_MIN_F32: usize = 1 << 17;

/// Examples per chunk for geometry `g`: as many as keep `col` within [`COL_BUDGET`] (at least
/// one).
pub(super) fn chunk_for(g: &ConvGeom) -> usize {
    examples_within(g, COL_BUDGET)
}

/// Examples per chunk on the float path (fp32, or formats the integer GEMM cannot take) of a
/// layer with `cout` output channels: as many as keep `col` within `clamp(4 * Cout * rows,
/// COL_MIN_F32, COL_BUDGET)` values (at least one).
pub(super) fn chunk_for_float(g: &ConvGeom, cout: usize) -> usize {
    examples_within(g, float_budget(g, cout))
}

/// The float path's budget of im2col values per chunk (see [`COL_MIN_F32`]).
fn float_budget(g: &ConvGeom, cout: usize) -> usize {
    (4 * cout * g.col_rows()).clamp(COL_MIN_F32, COL_BUDGET)
}

/// Output rows per piece of a one-example float chunk whose columns exceed twice the float
/// budget of [`chunk_for_float`] (VGG16's 64-channel 32x32 layers: 2.4 MB of columns per
/// example, four times it): as few equal pieces as keep each within the budget. `ho` (no
/// pieces) below twice the budget: PreResNet-20's 16-channel layers, 1.1 times it, were slower
/// cut in two.
pub(super) fn piece_rows_float(g: &ConvGeom, cout: usize) -> usize {
    let (cols, budget) = (g.col_rows() * g.out_pixels(), float_budget(g, cout));
    if cols <= 2 * budget {
        return g.ho;
    }
    let pieces = cols.div_ceil(budget).clamp(1, g.ho.max(1));
    g.ho.div_ceil(pieces).max(1)
}

fn examples_within(g: &ConvGeom, budget: usize) -> usize {
    (budget / (g.col_rows() * g.out_pixels()).max(1)).max(1)
}

/// The same number of chunks as `chunk_max` examples per chunk gives for `b` examples, but
/// of equal sizes (32 examples with at most 14 per chunk: 11 + 11 + 10, not 14 + 14 + 4, which
/// left a thread with the short one idle).
pub(super) fn even_chunk(chunk_max: usize, b: usize) -> usize {
    if b == 0 {
        return chunk_max.max(1);
    }
    b.div_ceil(b.div_ceil(chunk_max.max(1)))
}

/// Chunks per worker from which chunks run in parallel (each on one thread) rather than one
/// after another with each GEMM split across the threads: with few chunks, a thread left with
/// the last one idles the other (VGG16's 4x4 layers at batch 32: 3 chunks). Either way the
/// chunks, and so the results, are the same.
const PAR_CHUNKS_PER_THREAD: usize = 4;

/// Whether `chunks` independent tasks run in parallel, each on one thread.
fn tasks_in_parallel(backend: &dyn GemmBackend, chunks: usize) -> bool {
    backend.concurrent_calls() && chunks >= PAR_CHUNKS_PER_THREAD * rayon::current_num_threads()
}

/// Smallest chunk (columns of its GEMM) [`int_chunk`] cuts to.
const INT_CHUNK_MIN_COLS: usize = 512;

/// Examples per chunk of the 8-bit forward GEMM (and transposed convolution): [`chunk_for`]'s,
/// made smaller on more than one thread where that gives each thread [`PAR_CHUNKS_PER_THREAD`]
/// chunks of at least [`INT_CHUNK_MIN_COLS`] columns, so that they run in parallel (each GEMM
/// on one thread) rather than one after another with every GEMM split (PreResNet-20's
/// 64-channel 8x8 layers at batch 128: 5 chunks of 26 examples, or 8 of 16 on two threads).
/// The integer sums are exact and each example's outputs come from its own columns, so this
/// chunking, unlike the float path's and the backward pass's, may follow the thread count.
fn int_chunk(backend: &dyn GemmBackend, g: &ConvGeom, b: usize) -> usize {
    let chunk = even_chunk(chunk_for(g), b);
    let threads = rayon::current_num_threads();
    if threads < 2 || tasks_in_parallel(backend, b.div_ceil(chunk)) {
        return chunk;
    }
    let min = INT_CHUNK_MIN_COLS.div_ceil(g.out_pixels().max(1));
    let smaller = even_chunk(b.div_ceil(PAR_CHUNKS_PER_THREAD * threads).max(min), b);
    if smaller < chunk && tasks_in_parallel(backend, b.div_ceil(smaller)) {
        smaller
    } else {
        chunk
    }
}

/// Busy time of one chunk's task per category (see [`Ctx::charge_parallel`]).
#[derive(Clone, Copy, Default)]
pub(super) struct ChunkTimes {
    pub im2col: Duration,
    pub gemm: Duration,
    pub other: Duration,
}

impl ChunkTimes {
    pub fn add(&mut self, t: &ChunkTimes) {
        self.im2col += t.im2col;
        self.gemm += t.gemm;
        self.other += t.other;
    }

    /// Charges `wall`, the elapsed time of the section these busy times come from, to the
    /// current layer.
    pub fn charge(&self, ctx: &mut Ctx<'_>, wall: Duration) {
        ctx.charge_parallel(
            wall,
            &[
                (Category::Im2col, self.im2col),
                (Category::Gemm, self.gemm),
                (Category::Other, self.other),
            ],
        );
    }
}

/// `f()`, adding its duration to `*acc`.
pub(super) fn clock<R>(acc: &mut Duration, f: impl FnOnce() -> R) -> R {
    let t0 = Instant::now();
    let r = f();
    *acc += t0.elapsed();
    r
}

/// `y[j] = W x[j] (+ bias)` for every example of `x`, one [`forward_chunk`] per chunk of
/// examples. The forward pass and the transposed convolution of the backward pass (stride 1)
/// both run through here.
///
/// With enough chunks ([`PAR_CHUNKS_PER_THREAD`]), chunks run in parallel, each on one thread
/// from im2col to scatter (its GEMM kept serial by [`lowprec_kernels::serial`]): a chunk's
/// column matrix is read by the core that wrote it, while it is in that core's L2, and there is
/// no synchronisation per GEMM.
pub(super) fn conv_gemm(
    ctx: &mut Ctx<'_>,
    name: &str,
    g: &ConvGeom,
    cout: usize,
    wq: &Operand,
    raw: &[f32],
    xq: &Operand,
    bias: Option<&[f32]>,
) -> Result<Vec<f32>, NnError> {
    let p = g.out_pixels();
    let b = xq.dims().0;
    let backend = ctx.backend;
    if b * cout * p == 0 {
        return Ok(Vec::new());
    }
    // Every chunk writes all of its examples' outputs (the scatter).
    let mut y = crate::scratch::Fill::<f32>::new(b * cout * p);
    let wf = match (wq.i8_rows(), xq.i8_rows()) {
        (Some(_), Some(_)) => None,
        _ => Some(wq.floats(raw)),
    };
    let (chunk, piece_rows) = if wf.is_some() {
        (
            even_chunk(chunk_for_float(g, cout), b),
            piece_rows_float(g, cout),
        )
    } else {
        (int_chunk(backend, g, b), g.ho)
    };
    // One-example float chunks of "same" convolutions share their columns among the kernel
    // rows, with the weights split by kernel row.
    let by_row = match &wf {
        Some(w) if chunk == 1 && shares_kernel_rows(g) => {
            Some(ctx.timed(Category::Other, |_| split_kernel_rows(w, cout, g.cin, g.k)))
        }
        _ => None,
    };
    let wf = wf.as_deref().map(|w| FloatWeights {
        w,
        by_row: by_row.as_deref(),
    });
    let t0 = Instant::now();
    let run = |(ci, yc): (usize, &mut [MaybeUninit<f32>])| {
        let (b0, nb) = (ci * chunk, yc.len() / (cout * p));
        forward_chunk(
            backend, name, g, cout, wq, wf, xq, bias, b0, nb, piece_rows, yc,
        )
    };
    let times: Vec<Result<ChunkTimes, NnError>> = if tasks_in_parallel(backend, b.div_ceil(chunk)) {
        y.slots()
            .par_chunks_mut(chunk * cout * p)
            .enumerate()
            .map(|c| lowprec_kernels::serial(|| run(c)))
            .collect()
    } else {
        y.slots()
            .chunks_mut(chunk * cout * p)
            .enumerate()
            .map(run)
            .collect()
    };
    let wall = t0.elapsed();
    let mut total = ChunkTimes::default();
    for t in times {
        total.add(&t?);
    }
    total.charge(ctx, wall);
    // SAFETY: every chunk succeeded (errors returned above), and each wrote all of its
    // examples' outputs; the chunks cover the batch.
    Ok(unsafe { y.assume_init() })
}

/// Groups of chunks in the backward pass: enough for two or three threads to share, few
/// enough that the float path's per-group dW buffers stay small.
const BACKWARD_GROUPS: usize = 8;

/// Runs `job` (the float weight gradient and/or the strided layers' dX) over the `b` examples
/// in chunks of `job.chunk`, and returns the float dW sum if the job makes one.
///
/// The chunks are cut into groups (a function of the shape only): a group's chunks run one
/// after another on one thread, accumulating into the group's own dW buffer; the groups run in
/// parallel when there are enough chunks (each GEMM on its own thread, as in [`conv_gemm`]),
/// else one after another with parallel GEMMs; the group buffers are then added in group
/// order. The same sums in the same order at any thread count. `dx` (`[b, Cin, H, W]`, or
/// empty when the job writes no dX) is cut with the groups; `store0`, when given, is storage
/// for group 0's sum.
pub(super) fn backward_chunks(
    ctx: &mut Ctx<'_>,
    job: &BackwardChunks<'_>,
    b: usize,
    dx: &mut [f32],
    store0: Option<Vec<f32>>,
) -> Result<Option<Vec<f32>>, NnError> {
    let chunk = job.chunk;
    let in_len = job.g.in_len();
    let chunks = b.div_ceil(chunk);
    // Groups run in parallel only from `PAR_CHUNKS_PER_THREAD` chunks per thread, so below
    // two threads' worth they never do: one group then, whose chunks add into one dW buffer.
    let ngroups = if chunks < 2 * PAR_CHUNKS_PER_THREAD {
        1
    } else {
        chunks.min(BACKWARD_GROUPS)
    };
    // Group `gi` holds chunks `[gi * chunks / ngroups, (gi + 1) * chunks / ngroups)`.
    let bounds: Vec<usize> = (0..=ngroups)
        .map(|gi| (gi * chunks / ngroups * chunk).min(b))
        .collect();
    let mut dx_parts: Vec<&mut [f32]> = Vec::with_capacity(ngroups);
    let mut rest: &mut [f32] = dx;
    for gi in 0..ngroups {
        let len = if job.need_dcol {
            (bounds[gi + 1] - bounds[gi]) * in_len
        } else {
            0
        };
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(len);
        dx_parts.push(head);
        rest = tail;
    }
    let t0 = Instant::now();
    let mut store0 = store0;
    let stores: Vec<Option<Vec<f32>>> = (0..ngroups)
        .map(|gi| if gi == 0 { store0.take() } else { None })
        .collect();
    let run = |((gi, dxp), store): ((usize, &mut [f32]), Option<Vec<f32>>)| {
        job.run(bounds[gi], bounds[gi + 1], dxp, store)
    };
    let parts: Vec<Result<GroupResult, NnError>> = if tasks_in_parallel(job.backend, chunks) {
        dx_parts
            .into_par_iter()
            .enumerate()
            .zip(stores)
            .map(|c| lowprec_kernels::serial(|| run(c)))
            .collect()
    } else {
        dx_parts
            .into_iter()
            .enumerate()
            .zip(stores)
            .map(run)
            .collect()
    };
    let mut total = ChunkTimes::default();
    let mut sums = Vec::new();
    for part in parts {
        let (gwt, t) = part?;
        total.add(&t);
        sums.extend(gwt);
    }
    let t1 = Instant::now();
    let mut sums = sums.into_iter();
    let sum = sums.next().map(|mut acc| {
        for part in sums {
            crate::tensor::add_into(&mut acc, &part);
        }
        acc
    });
    total.other += t1.elapsed();
    total.charge(ctx, t0.elapsed());
    Ok(sum)
}

/// The pieces of the 8-bit weight gradient: each group of examples sharing a scale product
/// (`groups`, in order) cut, in batch order, into pieces of at most
/// `clamp(16 * Cout * rows, COL_MIN_I8, COL_BUDGET_I8) / (rows * P)` examples, and at most
/// `k_max` products per sum (one exact integer reduction, so that a piece's tofloat is one
/// rounding and pieces can be computed apart and added after).
pub(super) fn weight_grad_pieces<'a>(
    groups: &'a [(f32, Vec<usize>)],
    g: &ConvGeom,
    cout: usize,
    k_max: usize,
) -> Vec<(f32, &'a [usize])> {
    let (rows, p) = (g.col_rows(), g.out_pixels());
    let budget = (4 * 4 * cout * rows).clamp(COL_MIN_I8, COL_BUDGET_I8);
    let piece_max = (budget / (rows * p).max(1)).min(k_max / p.max(1)).max(1);
    groups
        .iter()
        .flat_map(|(prod, members)| members.chunks(piece_max).map(move |pc| (*prod, pc)))
        .collect()
}

/// `gw = sum over pieces of piece_gemm(piece)`, in piece order. `piece_gemm(prod, piece,
/// accumulate, out)` writes (or, with `accumulate`, adds) one piece's dW into `out`.
///
/// Small weight gradients (PreResNet-20's 9 KB) with enough pieces: pieces in parallel, each
/// into its own buffer (`0 + t`, one rounding), then added in piece order, which is what
/// accumulating one after another computes (`gw + t`, bit for bit). Otherwise one piece after
/// another with each GEMM split across the threads.
pub(super) fn weight_grad_run(
    ctx: &mut Ctx<'_>,
    pieces: &[(f32, &[usize])],
    gw: &mut [f32],
    piece_gemm: impl Fn(f32, &[usize], bool, &mut [f32]) -> Result<ChunkTimes, NnError> + Sync,
) -> Result<(), NnError> {
    let t0 = Instant::now();
    let mut total = ChunkTimes::default();
    let threads = rayon::current_num_threads();
    if ctx.backend.concurrent_calls()
        && threads > 1
        && pieces.len() >= 2 * threads
        && gw.len() * 4 <= 1 << 20
    {
        let len = gw.len();
        let parts: Vec<Result<(Vec<f32>, ChunkTimes), NnError>> = pieces
            .par_iter()
            .map(|&(prod, piece)| {
                lowprec_kernels::serial(|| {
                    let mut part = vec![0f32; len];
                    let t = piece_gemm(prod, piece, false, &mut part)?;
                    Ok((part, t))
                })
            })
            .collect();
        let t1 = Instant::now();
        for (k, part) in parts.into_iter().enumerate() {
            let (part, t) = part?;
            total.add(&t);
            if k == 0 {
                gw.copy_from_slice(&part);
            } else {
                crate::tensor::add_into(gw, &part);
            }
        }
        total.other += t1.elapsed();
    } else {
        gw.fill(0.0);
        for (k, &(prod, piece)) in pieces.iter().enumerate() {
            total.add(&piece_gemm(prod, piece, k > 0, gw)?);
        }
    }
    total.charge(ctx, t0.elapsed());
    Ok(())
}
