//! 2-D convolution on the integer GEMM, following 002's Algorithm 1 and Fig. 3.
//!
//! ```text
//! forward:   X~, qa = Q_a(X)                      (one exponent per example)
//!            W~, qw = Q_w(W)                      (once per weight update)
//!            col    = im2col(X~)                  (on the 8-bit mantissas)
//!            Y      = tofloat(W~ col, qw, qa) + b (one GEMM for a chunk of examples)
//! backward:  dY~, qe = Q_e(dY)                    (one exponent per example)
//!            dW     = sum over groups G of examples with equal qe_j * qa_j:
//!                     tofloat(dY~(G) col(G)^T, qe_j * qa_j)    (one exact integer sum per group)
//!            dX     = tofloat(rot180(W~)^T (*) dY~, qw, qe)   (stride 1: transposed convolution)
//!                     col2im(tofloat(W~^T dY~, qw, qe))       (strided layers)
//!            db     = sum over examples and pixels of dY            (float)
//! ```
//!
//! Grouping the weight gradient by scale instead of one K segment per example gives the same
//! mathematical sum with fewer roundings (products with one power-of-two scale add exactly in
//! integers) and reads and writes dW once per group instead of once per example, which is what
//! made small feature maps slow (segments of 16 and 4 values in VGG16's last layers). The
//! transposed convolution keeps dX's GEMM output the size of dX, where col2im needed a float
//! `dcol` k*k times larger (see `backward`).
//!
//! Layout: channels first (NCHW), what the data crate produces, so the network input needs no
//! transpose. With NCHW the GEMM output `[Cout, nb*P]` (P = output pixels) must be scattered to
//! `[nb, Cout, P]` (one float copy of the output) and the errors gathered the other way
//! (one byte per value in BFP8): both are memory-bound copies, small next to the GEMMs
//! (`2*K` operations per output value, K = Cin*k*k >= 27). Channels-last would make the GEMM
//! output directly usable but would cost a transpose of every input image and of every
//! feature map entering a pooling or batch-norm layer written for planes.
//!
//! Examples are processed in chunks whose `col` stays below [`COL_BUDGET`] values
//! ([`COL_BUDGET_I8`] bytes for the 8-bit weight gradient), bounding the memory of im2col
//! buffers; chunks and groups depend only on the layer's shape and the scales, never on the
//! thread count. The layer keeps the quantised
//! input (one byte per value in BFP8) for backward and recomputes its im2col there.
//! Weights are He-initialised from the fan-out (`uniform(+-sqrt(6 / (k*k*Cout)))`, SWALP's
//! `normal(0, sqrt(2/n))` in uniform form); biases start at 0.

use lowprec_formats::{Block, NumberFormat, StreamKey};
use lowprec_kernels::{GemmSpec, Im2colRef, MatMut, MatRef, QIm2colRef, QMatRef, Scales};
use rayon::prelude::*;
use std::borrow::Cow;
use std::mem::MaybeUninit;
use std::time::{Duration, Instant};

use crate::ctx::{Category, StreamKind};
use crate::im2col::{col2im, im2col, ConvGeom};
use crate::init;
use crate::layer::{Layer, Param};
use crate::operand::{check_finite, quantize_matrix_channels, Operand, QData, QMatrix};
use crate::scratch::Scratch;
use crate::{Ctx, NnError, Tensor, TensorKind};

/// Largest im2col buffer (values) a chunk of examples may produce. 2^20 keeps the float `dcol`
/// of a chunk (4 MB) in the last-level cache between the error GEMM that writes it and the
/// col2im that reads it, and bounds the transient buffers: VGG16 at batch 128 in bfp8 peaked at
/// 379 MB resident with 2^20 against 447 MB with 2^23 (one run each, shared machine).
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

/// A batch of examples after Q_a or Q_e: 8-bit mantissas with one scale per example, or floats
/// (fp32, non-BFP formats, or BFP layouts the GEMM cannot take per example).
#[derive(Clone, Debug)]
pub enum Batch {
    Q {
        mant: Vec<i8>,
        /// One scale per example.
        scales: Vec<f32>,
        max_abs: u32,
    },
    F(Vec<f32>),
}

impl Batch {
    pub fn bytes(&self) -> usize {
        match self {
            Batch::Q { mant, scales, .. } => mant.len() + 4 * scales.len(),
            Batch::F(v) => 4 * v.len(),
        }
    }

    /// Examples `[b0, b0 + nb)` of `per` values as floats (borrowed when already floats).
    fn floats(&self, b0: usize, nb: usize, per: usize) -> Cow<'_, [f32]> {
        match self {
            Batch::F(v) => Cow::Borrowed(&v[b0 * per..(b0 + nb) * per]),
            Batch::Q { mant, scales, .. } => {
                let mut out = vec![0f32; nb * per];
                out.par_chunks_mut(per.max(1))
                    .enumerate()
                    .for_each(|(j, o)| {
                        let s = scales[b0 + j];
                        let m = &mant[(b0 + j) * per..][..per];
                        o.iter_mut().zip(m).for_each(|(d, &v)| *d = v as f32 * s);
                    });
                Cow::Owned(out)
            }
        }
    }
}

/// Applies `fmt` to `b` examples of `per` values (channels of `inner` values each); keeps 8-bit mantissas when the blocks are
/// per example or per tensor. fp32 values handed over become the float batch as they are,
/// after the check for Inf and NaN, instead of a copy (a conv's incoming errors: 3 ms of a
/// PreResNet-20 fp32 iteration).
#[allow(clippy::too_many_arguments)]
pub fn quantize_batch(
    x: Cow<'_, [f32]>,
    b: usize,
    per: usize,
    inner: usize,
    fmt: &NumberFormat,
    key: StreamKey,
    tensor: &str,
    layer: &str,
    step: u64,
) -> Result<Batch, NnError> {
    if let (NumberFormat::F32, Cow::Owned(_)) = (fmt, &x) {
        check_finite(&x, tensor, layer, step)?;
        return Ok(Batch::F(x.into_owned()));
    }
    let op = quantize_matrix_channels(&x, b, per, inner, fmt, key, tensor, layer, step)?;
    Ok(match op {
        Operand::F { data, .. } => Batch::F(data),
        Operand::Q(q) => match (&q.data, q.fmt.block) {
            (QData::I8(_), Block::Tensor | Block::Axis(0)) => {
                let scales = if q.fmt.block == Block::Tensor {
                    vec![q.scales.first().copied().unwrap_or(1.0); b]
                } else {
                    q.scales.clone()
                };
                let max_abs = q.fmt.max_abs();
                let QData::I8(mant) = q.data else {
                    unreachable!("matched I8 above")
                };
                Batch::Q {
                    mant,
                    scales,
                    max_abs,
                }
            }
            _ => Batch::F(Operand::Q(q).to_f32()),
        },
    })
}

/// Q_w(W): 8-bit mantissas with one scale (tensor) or one per output channel, or floats.
#[derive(Clone, Debug)]
enum Weights {
    Q {
        mant: Vec<i8>,
        scales: Vec<f32>,
        per_channel: bool,
        max_abs: u32,
    },
    F(Vec<f32>),
    /// The float weights themselves (weights in fp32): read from the parameter at use, not
    /// copied once per step (60 MB per iteration for VGG16).
    Raw,
}

impl Weights {
    /// The weights of the transposed convolution: `W[co, ci, ki, kj]` becomes
    /// `Wt[ci, co, k-1-ki, k-1-kj]` (same scale; a tensor scale only, see `backward`).
    fn flipped(&self, cout: usize, cin: usize, k: usize, raw: &[f32]) -> Weights {
        fn flip<T: Copy + Default + Send + Sync>(
            w: &[T],
            cout: usize,
            cin: usize,
            k: usize,
        ) -> Vec<T> {
            let kk = k * k;
            let mut t = vec![T::default(); w.len()];
            // One task per block of 16 input channels, output channels inner: each task
            // writes a contiguous run and reads 16 short runs per output channel.
            const CB: usize = 16;
            t.par_chunks_mut((CB * cout * kk).max(1))
                .enumerate()
                .for_each(|(blk, out)| {
                    let ci0 = blk * CB;
                    for (dci, dst_ci) in out.chunks_mut(cout * kk).enumerate() {
                        let ci = ci0 + dci;
                        for co in 0..cout {
                            let src = &w[(co * cin + ci) * kk..][..kk];
                            let dst = &mut dst_ci[co * kk..][..kk];
                            for (o, &v) in dst.iter_mut().zip(src.iter().rev()) {
                                *o = v;
                            }
                        }
                    }
                });
            t
        }
        match self {
            Weights::Q {
                mant,
                scales,
                per_channel,
                max_abs,
            } => {
                debug_assert!(
                    !per_channel,
                    "per-channel scales run along K when transposed"
                );
                Weights::Q {
                    mant: flip(mant, cout, cin, k),
                    scales: scales.clone(),
                    per_channel: *per_channel,
                    max_abs: *max_abs,
                }
            }
            Weights::F(v) => Weights::F(flip(v, cout, cin, k)),
            Weights::Raw => Weights::F(flip(raw, cout, cin, k)),
        }
    }

    /// The weights as floats; `raw` is the parameter (what [`Weights::Raw`] stands for).
    fn floats<'a>(&'a self, rows: usize, raw: &'a [f32]) -> Cow<'a, [f32]> {
        match self {
            Weights::F(v) => Cow::Borrowed(v),
            Weights::Raw => Cow::Borrowed(raw),
            Weights::Q {
                mant,
                scales,
                per_channel,
                ..
            } => {
                let cols = mant.len() / rows.max(1);
                Cow::Owned(
                    mant.iter()
                        .enumerate()
                        .map(|(i, &m)| {
                            let s = if *per_channel {
                                scales[i / cols]
                            } else {
                                scales[0]
                            };
                            m as f32 * s
                        })
                        .collect(),
                )
            }
        }
    }
}

pub struct Conv2d {
    id: u64,
    name: String,
    pub geom: ConvGeom,
    pub cout: usize,
    pub weight: Param,
    pub bias: Option<Param>,
    wq: Option<(u64, Weights)>,
    /// The format `wq` was made in (a format change re-quantises as a weight change does).
    wq_fmt: NumberFormat,
    saved_x: Option<Batch>,
}

/// Gathers examples `[b0, b0+nb)` of `[B, Cout, P]` errors into `[Cout, nb*P]` (one task per
/// output channel).
fn gather_errors<T: Copy + Default + Send + Sync>(
    cout: usize,
    p: usize,
    e: &[T],
    b0: usize,
    nb: usize,
) -> Vec<T> {
    let mut out = vec![T::default(); cout * nb * p];
    if out.is_empty() {
        return out;
    }
    out.par_chunks_mut(nb * p)
        .enumerate()
        .for_each(|(co, row)| {
            for j in 0..nb {
                row[j * p..][..p].copy_from_slice(&e[((b0 + j) * cout + co) * p..][..p]);
            }
        });
    out
}

/// All `nb` examples of `[nb, Cout, P]` errors as `[nb*P, Cout]` (one transpose per example).
fn gather_errors_t(cout: usize, p: usize, e: &[f32]) -> Scratch<f32> {
    let mut out = Scratch::new(e.len());
    out.par_chunks_mut((cout * p).max(1))
        .zip(e.par_chunks((cout * p).max(1)))
        .for_each(|(dst, src)| transpose_blocks(src, cout, p, p, dst, |d, v, _| *d = v));
    out
}

/// `put(&mut dst[c * rows + r], src[r * ld + c], c)` for `r < rows`, `c < cols` on one
/// thread, in 8x8 blocks held in registers (a block is 8 contiguous reads and 8 contiguous
/// writes): element by element, even tiled, took 2 ns per value on the errors of VGG16's
/// first layers (2.7% of a b32 fp32 iteration), and a column-by-column transpose read a
/// cache line per value (5-7 ms for VGG16's 512x4608 weight gradients).
fn transpose_blocks<T: Copy + Default, D>(
    src: &[T],
    rows: usize,
    cols: usize,
    ld: usize,
    dst: &mut [D],
    put: impl Fn(&mut D, T, usize),
) {
    const B: usize = 8;
    let (rb, cb) = (rows / B * B, cols / B * B);
    for r0 in (0..rb).step_by(B) {
        for c0 in (0..cb).step_by(B) {
            let mut t = [[T::default(); B]; B];
            for (i, row) in t.iter_mut().enumerate() {
                row.copy_from_slice(&src[(r0 + i) * ld + c0..][..B]);
            }
            for j in 0..B {
                let out = &mut dst[(c0 + j) * rows + r0..][..B];
                for (i, o) in out.iter_mut().enumerate() {
                    put(o, t[i][j], c0 + j);
                }
            }
        }
    }
    // The right and bottom edges.
    for r in 0..rows {
        let c_from = if r < rb { cb } else { 0 };
        for c in c_from..cols {
            put(&mut dst[c * rows + r], src[r * ld + c], c);
        }
    }
}

/// Destination rows per task of [`transpose_into`].
const TRANSPOSE_BAND: usize = 32;

/// `dst[c * rows + r] = src[r * cols + c]` (`src` is `rows x cols`), one task per band of
/// `TRANSPOSE_BAND` destination rows.
fn transpose_into<T: Copy + Default + Send + Sync>(
    src: &[T],
    rows: usize,
    cols: usize,
    dst: &mut [T],
) {
    assert!(src.len() >= rows * cols && dst.len() >= rows * cols);
    if rows == 0 || cols == 0 {
        return;
    }
    dst[..rows * cols]
        .par_chunks_mut(TRANSPOSE_BAND * rows)
        .enumerate()
        .for_each(|(band, out)| {
            let c0 = band * TRANSPOSE_BAND;
            let cw = out.len() / rows;
            transpose_blocks(&src[c0..], rows, cw, cols, out, |d, v, _| *d = v);
        });
}

fn row_major<T: Copy>(data: &[T], rows: usize, cols: usize) -> MatRef<'_, T> {
    MatRef {
        data,
        rows,
        cols,
        row_stride: cols,
        col_stride: 1,
    }
}

/// Examples per chunk for geometry `g`: as many as keep `col` within [`COL_BUDGET`] (at least
/// one).
fn chunk_for(g: &ConvGeom) -> usize {
    (COL_BUDGET / (g.col_rows() * g.out_pixels()).max(1)).max(1)
}

/// The same number of chunks as `chunk_max` examples per chunk gives for `b` examples, but
/// of equal sizes (32 examples with at most 14 per chunk: 11 + 11 + 10, not 14 + 14 + 4, which
/// left a thread with the short one idle).
fn even_chunk(chunk_max: usize, b: usize) -> usize {
    if b == 0 {
        return chunk_max.max(1);
    }
    b.div_ceil(b.div_ceil(chunk_max.max(1)))
}

/// Chunks per worker from which [`conv_gemm`] runs chunks in parallel (each on one thread)
/// rather than one after another with each GEMM split across the threads: with few chunks, a
/// thread left with the last one idles the other (VGG16's 4x4 layers at batch 32: 3 chunks).
/// Either way the chunks, and so the results, are the same.
const PAR_CHUNKS_PER_THREAD: usize = 4;

/// Busy time of one chunk's task per category (see [`Ctx::charge_parallel`]).
#[derive(Clone, Copy, Default)]
struct ChunkTimes {
    im2col: Duration,
    gemm: Duration,
    other: Duration,
}

impl ChunkTimes {
    fn add(&mut self, t: &ChunkTimes) {
        self.im2col += t.im2col;
        self.gemm += t.gemm;
        self.other += t.other;
    }

    /// Charges `wall`, the elapsed time of the section these busy times come from, to the
    /// current layer.
    fn charge(&self, ctx: &mut Ctx<'_>, wall: Duration) {
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
fn clock<R>(acc: &mut Duration, f: impl FnOnce() -> R) -> R {
    let t0 = Instant::now();
    let r = f();
    *acc += t0.elapsed();
    r
}

/// `y[j] = W x[j] (+ bias)` for every example of `x` through im2col and one GEMM per chunk of
/// examples: `[Cout, rows] x col[rows, nb*P]`, scattered to `[nb, Cout, P]`. Integer GEMM when
/// both operands are 8-bit mantissas (weights with one scale or one per row, examples with one
/// scale each), float GEMM otherwise. The forward pass and the transposed convolution of the
/// backward pass (stride 1) both run through here.
///
/// With enough chunks ([`PAR_CHUNKS_PER_THREAD`]), chunks run in parallel, each on one thread
/// from im2col to scatter (its GEMM kept serial by [`lowprec_kernels::serial`]): a chunk's
/// column matrix is read by the core that wrote it, while it is in that core's L2, and there is
/// no synchronisation per GEMM. Splitting every chunk's GEMM across both cores instead left 2
/// threads no faster than 1 on PreResNet-20. Chunks and results depend only on the shapes,
/// never on the thread count.
fn conv_gemm(
    ctx: &mut Ctx<'_>,
    name: &str,
    g: &ConvGeom,
    cout: usize,
    wq: &Weights,
    raw: &[f32],
    xq: &Batch,
    bias: Option<&[f32]>,
) -> Result<Vec<f32>, NnError> {
    let p = g.out_pixels();
    let b = match xq {
        Batch::Q { scales, .. } => scales.len(),
        Batch::F(v) => v.len() / g.in_len(),
    };
    let backend = ctx.backend;
    if b * cout * p == 0 {
        return Ok(Vec::new());
    }
    // Every chunk writes all of its examples' outputs (the scatter below).
    let mut y = crate::scratch::Fill::<f32>::new(b * cout * p);
    let chunk = even_chunk(chunk_for(g), b);
    let wf = match (wq, xq) {
        (Weights::Q { .. }, Batch::Q { .. }) => None,
        _ => Some(wq.floats(cout, raw)),
    };
    let t0 = Instant::now();
    let run = |(ci, yc): (usize, &mut [MaybeUninit<f32>])| {
        let (b0, nb) = (ci * chunk, yc.len() / (cout * p));
        conv_chunk(
            backend,
            name,
            g,
            cout,
            wq,
            wf.as_deref(),
            xq,
            bias,
            b0,
            nb,
            yc,
        )
    };
    let chunks = b.div_ceil(chunk);
    let times: Vec<Result<ChunkTimes, NnError>> = if backend.concurrent_calls()
        && chunks >= PAR_CHUNKS_PER_THREAD * rayon::current_num_threads()
    {
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

/// `out[c * p + q] = src[q * cout + c] (+ bias[c])` for one example (`src` is `[P, Cout]`,
/// the transposed GEMM's output), by [`transpose_blocks`] (a channel-by-channel gather was 5
/// ms for VGG16 b32's first layer). Writes every slot of `out`.
fn scatter_transposed(
    src: &[f32],
    p: usize,
    cout: usize,
    bias: Option<&[f32]>,
    out: &mut [MaybeUninit<f32>],
) {
    assert!(src.len() == p * cout && out.len() == p * cout);
    match bias {
        Some(b) => transpose_blocks(src, p, cout, cout, out, |o, v, c| {
            o.write(v + b[c]);
        }),
        None => transpose_blocks(src, p, cout, cout, out, |o, v, _| {
            o.write(v);
        }),
    }
}

/// One chunk of [`conv_gemm`]: examples `b0 .. b0 + nb` into `yc` (`[nb, Cout, P]`).
#[allow(clippy::too_many_arguments)]
fn conv_chunk(
    backend: &dyn lowprec_kernels::GemmBackend,
    name: &str,
    g: &ConvGeom,
    cout: usize,
    wq: &Weights,
    wf: Option<&[f32]>,
    xq: &Batch,
    bias: Option<&[f32]>,
    b0: usize,
    nb: usize,
    yc: &mut [MaybeUninit<f32>],
) -> Result<ChunkTimes, NnError> {
    let (rows, p) = (g.col_rows(), g.out_pixels());
    let n = nb * p;
    let kerr = |e| NnError::kernel(name, e);
    let mut t = ChunkTimes::default();
    let mut cbuf = Scratch::<f32>::new(cout * n);
    let out_t = match (wq, xq) {
        (
            Weights::Q {
                mant: wm,
                scales: ws,
                per_channel,
                max_abs: wmax,
            },
            Batch::Q {
                mant: xm,
                scales: xs,
                max_abs: xmax,
            },
        ) => {
            let xin = &xm[b0 * g.in_len()..(b0 + nb) * g.in_len()];
            let a = QMatRef {
                mat: row_major(wm, cout, rows),
                scales: if *per_channel {
                    Scales::per_index(ws)
                } else {
                    Scales::uniform(ws)
                },
                max_abs: *wmax,
            };
            let (sb, bound) = (
                Scales::per_group(&xs[b0..b0 + nb], p),
                i8_operand_bound(*xmax),
            );
            let cm = MatMut::row_major(&mut cbuf, cout, n).map_err(kerr)?;
            let cols = Columns {
                g,
                maps: xin,
                examples: nb,
                transposed: false,
                scales: sb,
                bound,
            };
            gemm_on_columns(backend, a, &cols, GemmSpec::whole_k(), cm, &mut t).map_err(kerr)?;
            false
        }
        _ => {
            // Float GEMM with the short Cout side where this CPU's f32 kernels prefer it
            // (`short_side_as_m`): Y[Cout, n] = W col, or transposed, Y^T[n, Cout] = col^T W^T
            // (AVX2: 2.7x faster for 16 channels than Cout as M).
            let wf = wf.expect("float weights prepared by the caller");
            let xf = xq.floats(b0, nb, g.in_len());
            let mut col = Scratch::<f32>::new(rows * n);
            clock(&mut t.im2col, || im2col(g, &xf, nb, &mut col));
            let w = row_major(wf, cout, rows);
            if lowprec_kernels::f32gemm::short_side_as_m(cout) {
                let cm = MatMut::row_major(&mut cbuf, cout, n).map_err(kerr)?;
                clock(&mut t.gemm, || {
                    backend.gemm_f32(w, row_major(&col, rows, n), false, cm)
                })
                .map_err(kerr)?;
                false
            } else {
                let cm = MatMut::row_major(&mut cbuf, n, cout).map_err(kerr)?;
                let col_t = row_major(&col, rows, n).t();
                clock(&mut t.gemm, || backend.gemm_f32(col_t, w.t(), false, cm)).map_err(kerr)?;
                true
            }
        }
    };
    // Scatter [Cout, nb*P] (or its transpose) to [nb, Cout, P] and add the bias.
    let cb = &cbuf;
    // One task per example: chunks that run one after another (too few to share out) would
    // otherwise scatter on one thread (PreResNet-20 fp32's 8x8 layers, 2 threads).
    clock(&mut t.other, || {
        yc.par_chunks_mut(cout * p).enumerate().for_each(|(j, ex)| {
            if out_t {
                // Every slot of `ex` is written (the caller relies on it).
                scatter_transposed(&cb[j * p * cout..][..p * cout], p, cout, bias, ex);
                return;
            }
            for (co, out) in ex.chunks_mut(p).enumerate() {
                // Every slot of `out` is written (the caller relies on it).
                let src = &cb[co * n + j * p..][..p];
                match bias {
                    Some(b) => out.iter_mut().zip(src).for_each(|(o, s)| {
                        o.write(s + b[co]);
                    }),
                    None => out.iter_mut().zip(src).for_each(|(o, &s)| {
                        o.write(s);
                    }),
                }
            }
        });
    });
    Ok(t)
}

/// The 8-bit im2col columns of `examples` maps of a layer (`col`, or `col^T` with
/// `transposed`) as a GEMM's B operand, with their scales and declared bound.
struct Columns<'a> {
    g: &'a ConvGeom,
    maps: &'a [i8],
    examples: usize,
    transposed: bool,
    scales: Scales<'a>,
    bound: u32,
}

/// `C (+)= A B` with B the columns: packed by the backend straight from the maps
/// ([`lowprec_kernels::im2col_b`]) for "same" convolutions it packs whole, else through this
/// layer's im2col matrix. The maps route saves writing a matrix 9 times the maps and the
/// GEMM's packer reading it back (PreResNet-20 bfp8, 2 threads: 81 -> 65 ms per iteration).
fn gemm_on_columns(
    backend: &dyn lowprec_kernels::GemmBackend,
    a: QMatRef<'_, i8>,
    b: &Columns<'_>,
    spec: GemmSpec,
    c: MatMut<'_, f32>,
    t: &mut ChunkTimes,
) -> Result<(), lowprec_kernels::KernelError> {
    let g = b.g;
    if g.is_same() {
        let bq = QIm2colRef {
            src: Im2colRef::new(b.maps, b.examples, g.cin, g.h, g.w, g.k)?,
            transposed: b.transposed,
            scales: b.scales,
            max_abs: b.bound,
        };
        if backend.packs_im2col(&bq) {
            return clock(&mut t.gemm, || backend.gemm_q8_im2col(a, bq, spec, c));
        }
    }
    let (rows, n) = (g.col_rows(), b.examples * g.out_pixels());
    let mut col = Scratch::<i8>::new(rows * n);
    clock(&mut t.im2col, || im2col(g, b.maps, b.examples, &mut col));
    let mat = row_major(&col, rows, n);
    let bq = QMatRef {
        mat: if b.transposed { mat.t() } else { mat },
        scales: b.scales,
        max_abs: b.bound,
    };
    clock(&mut t.gemm, || backend.gemm_q8(a, bq, spec, c))
}

/// The bound declared to the integer GEMM for a large 8-bit operand built here (im2col
/// columns, gathered errors) from mantissas within `format_bound`: for 8-bit formats (bound
/// 127) the full i8 range, 128. Any i8 meets it, so the GEMM need not scan the operand to
/// check it (the scan of every im2col matrix was 3.5% of a PreResNet-20 bfp8 iteration in
/// `perf`); the price is a K limit per exact sum of 132104 products instead of 133144 (see
/// `lowprec_kernels::k_safe`), which the weight gradient's pieces take into account.
/// Narrower formats keep their bound, whose larger K limits are worth the scan.
fn i8_operand_bound(format_bound: u32) -> u32 {
    if format_bound == 127 {
        128
    } else {
        format_bound
    }
}

/// Groups of chunks in the backward pass (see `Conv2d::backward`): enough for two or three
/// threads to share, few enough that the float path's per-group dW^T buffers stay small.
const BACKWARD_GROUPS: usize = 8;

/// One backward group's float dW^T sum (if the float path ran) and its busy times.
type GroupResult = (Option<Vec<f32>>, ChunkTimes);

/// What every chunk of the backward pass reads: the float path's weight gradient and the
/// strided layers' dX through col2im.
struct BackwardChunks<'a> {
    backend: &'a dyn lowprec_kernels::GemmBackend,
    name: &'a str,
    g: &'a ConvGeom,
    cout: usize,
    wq: Option<&'a Weights>,
    /// The weights as floats, when the strided layers' dcol GEMM runs in float.
    wf: Option<&'a [f32]>,
    dyq: &'a Batch,
    xq: &'a Batch,
    chunk: usize,
    need_dcol: bool,
    float_dw: bool,
    /// The float dW as `dW[Cout, rows] (+)= dY[Cout, n] col^T[n, rows]` (see
    /// [`float_dw_cout_major`]) rather than transposed.
    dw_cout_major: bool,
}

/// Output channels from which the float weight gradient runs with Cout as M, written in the
/// parameter's own layout, rather than as `dW^T[rows, Cout] = col dY^T` and transposed after.
/// With few channels the transposed form wins (PreResNet-20 fp32's 16-channel dW: 10.9 ms
/// against 30.5 ms the other way; VGG16's 128- and 256-channel layers lost 2-3 ms of GEMM
/// each to save 0.5 ms of transposes); with 512, the transposes of the errors and of dW cost
/// more than the column-major `col^T` costs the GEMM (`lowprec profile vgg16-cifar --batch
/// 32 --precision fp32 --threads 1`: the 4x4 layers' backward 32.2 -> 30.2 ms, the 2x2 ones'
/// 11.5 -> 10.5 ms).
const DW_COUT_MAJOR_MIN: usize = 512;

fn float_dw_cout_major(cout: usize) -> bool {
    cout >= DW_COUT_MAJOR_MIN
}

impl BackwardChunks<'_> {
    /// Examples `e0 .. e1` (whole chunks) on this thread: returns the float path's dW^T sum
    /// over them (`[rows, Cout]`, chunks added in order) and writes their dX into `dx` (the
    /// strided layers' col2im route).
    ///
    /// `store`, when given, is storage for the dW sum (its contents are overwritten).
    fn run(
        &self,
        e0: usize,
        e1: usize,
        dx: &mut [f32],
        mut store: Option<Vec<f32>>,
    ) -> Result<GroupResult, NnError> {
        let (g, cout) = (self.g, self.cout);
        let (rows, p) = (g.col_rows(), g.out_pixels());
        let kerr = |e| NnError::kernel(self.name, e);
        let backend = self.backend;
        let mut t = ChunkTimes::default();
        let mut gwt: Option<Vec<f32>> = None;
        for b0 in (e0..e1).step_by(self.chunk) {
            let nb = self.chunk.min(e1 - b0);
            let n = nb * p;
            let dxc = if self.need_dcol {
                &mut dx[(b0 - e0) * g.in_len()..(b0 - e0 + nb) * g.in_len()]
            } else {
                &mut []
            };
            // The errors as `[Cout, n]` for the dcol GEMM.
            let mut eft: Option<Vec<f32>> = None;
            let mut et_q: Option<Vec<i8>> = None;
            if self.float_dw {
                // Float path (fp32, or formats the integer GEMM cannot take), in the
                // orientation `float_dw_cout_major` chooses for this layer.
                let xf = self.xq.floats(b0, nb, g.in_len());
                let mut col = Scratch::<f32>::new(rows * n);
                clock(&mut t.im2col, || im2col(g, &xf, nb, &mut col));
                drop(xf);
                let ef = self.dyq.floats(b0, nb, cout * p);
                let accumulate = gwt.is_some();
                let acc = gwt.get_or_insert_with(|| match store.take() {
                    // The first GEMM does not accumulate: any contents do.
                    Some(v) if v.len() == rows * cout => v,
                    _ => vec![0f32; rows * cout],
                });
                if self.dw_cout_major {
                    // dW[Cout, rows] (+)= dY[Cout, n] col^T[n, rows]
                    let ec = clock(&mut t.im2col, || gather_errors(cout, p, &ef, 0, nb));
                    let cm = MatMut::row_major(acc, cout, rows).map_err(kerr)?;
                    let (a, b) = (row_major(&ec, cout, n), row_major(&col, rows, n).t());
                    clock(&mut t.gemm, || backend.gemm_f32(a, b, accumulate, cm)).map_err(kerr)?;
                    eft = Some(ec);
                } else {
                    // dW^T[rows, Cout] (+)= col[rows, n] dY^T[n, Cout]
                    let et_t = clock(&mut t.im2col, || gather_errors_t(cout, p, &ef));
                    let cm = MatMut::row_major(acc, rows, cout).map_err(kerr)?;
                    let (a, b) = (row_major(&col, rows, n), row_major(&et_t, n, cout));
                    clock(&mut t.gemm, || backend.gemm_f32(a, b, accumulate, cm)).map_err(kerr)?;
                    if self.need_dcol {
                        eft = Some(clock(&mut t.im2col, || gather_errors(cout, p, &ef, 0, nb)));
                    }
                }
            } else if let Batch::Q { mant: em, .. } = self.dyq {
                et_q = Some(clock(&mut t.im2col, || gather_errors(cout, p, em, b0, nb)));
            }
            if !self.need_dcol {
                continue;
            }
            // dX of a strided layer: dcol[rows, n] = W^T dY (written whole by the GEMM), then
            // col2im.
            let mut dcol = Scratch::<f32>::new(rows * n);
            match (self.wq, self.dyq, &et_q) {
                (
                    Some(Weights::Q {
                        mant: wm,
                        scales: ws,
                        per_channel,
                        max_abs: wmax,
                    }),
                    Batch::Q {
                        scales: es,
                        max_abs: emax,
                        ..
                    },
                    Some(et),
                ) => {
                    // W^T: per-channel scales run along K, so one segment per K index; a
                    // tensor scale needs no segments.
                    let (sa, segment) = if *per_channel {
                        (Scales::per_segment(ws), 1)
                    } else {
                        (Scales::uniform(ws), usize::MAX)
                    };
                    let a = QMatRef {
                        mat: row_major(wm, cout, rows).t(),
                        scales: sa,
                        max_abs: *wmax,
                    };
                    let bq = QMatRef {
                        mat: row_major(et, cout, n),
                        scales: Scales::per_group(&es[b0..b0 + nb], p),
                        max_abs: i8_operand_bound(*emax),
                    };
                    let spec = GemmSpec {
                        segment,
                        accumulate: false,
                    };
                    let cm = MatMut::row_major(&mut dcol, rows, n).map_err(kerr)?;
                    clock(&mut t.gemm, || backend.gemm_q8(a, bq, spec, cm)).map_err(kerr)?;
                }
                _ => {
                    let wf = self.wf.expect("float weights prepared by the caller");
                    let eft = match eft {
                        Some(e) => e,
                        None => {
                            let ef = self.dyq.floats(b0, nb, cout * p);
                            clock(&mut t.im2col, || gather_errors(cout, p, &ef, 0, nb))
                        }
                    };
                    let cm = MatMut::row_major(&mut dcol, rows, n).map_err(kerr)?;
                    clock(&mut t.gemm, || {
                        backend.gemm_f32(
                            row_major(wf, cout, rows).t(),
                            row_major(&eft, cout, n),
                            false,
                            cm,
                        )
                    })
                    .map_err(kerr)?;
                }
            }
            clock(&mut t.im2col, || col2im(g, &dcol, nb, dxc));
        }
        Ok((gwt, t))
    }
}

impl Conv2d {
    /// A `k x k` convolution with `cout` filters over `[cin, h, w]` examples.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: u64,
        name: &str,
        in_shape: &[usize],
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
        bias: bool,
        seed: u64,
    ) -> Result<Self, NnError> {
        let [cin, h, w] = in_shape else {
            return Err(NnError::Spec(format!(
                "{name}: conv expects [channels, height, width] inputs, got {in_shape:?}"
            )));
        };
        if cout == 0 {
            return Err(NnError::Spec(format!("{name}: conv needs out >= 1")));
        }
        let geom = ConvGeom::new(*cin, *h, *w, k, stride, pad)
            .map_err(|e| NnError::Spec(format!("{name}: {e}")))?;
        let rows = geom.col_rows();
        let bound = init::kaiming_bound(k * k * cout);
        let weight = Param::new(
            format!("{name}.weight"),
            vec![cout, *cin, k, k],
            init::uniform(cout * rows, bound, seed, id, 0),
            true,
        );
        let bias =
            bias.then(|| Param::new(format!("{name}.bias"), vec![cout], vec![0.0; cout], false));
        Ok(Conv2d {
            id,
            name: name.to_string(),
            geom,
            cout,
            weight,
            bias,
            wq: None,
            wq_fmt: NumberFormat::F32,
            saved_x: None,
        })
    }

    /// Examples per chunk: as many as keep `col` within [`COL_BUDGET`] (at least one).
    pub fn chunk_examples(&self) -> usize {
        chunk_for(&self.geom)
    }

    /// The backward pass from the errors `dy` (`shape`): by [`Layer::backward`] (borrowed)
    /// and [`Layer::backward_owned`] (handed over).
    fn backward_errors(
        &mut self,
        ctx: &mut Ctx<'_>,
        shape: &[usize],
        dy: Cow<'_, [f32]>,
    ) -> Result<Vec<Tensor>, NnError> {
        let xq = self.saved_x.take().ok_or_else(|| NnError::NoForward {
            layer: self.name.clone(),
        })?;
        let g = self.geom;
        let (rows, p, cout) = (g.col_rows(), g.out_pixels(), self.cout);
        let b = shape.first().copied().unwrap_or(0);
        let saved_b = match &xq {
            Batch::Q { scales, .. } => scales.len(),
            Batch::F(v) => v.len() / g.in_len(),
        };
        if shape.iter().skip(1).product::<usize>() != cout * p || saved_b != b {
            return Err(NnError::shape(
                &self.name,
                format!("gradient {shape:?} does not match the forward pass"),
            ));
        }
        if b == 0 {
            self.weight.grad.fill(0.0);
            if let Some(bias) = &mut self.bias {
                bias.grad.fill(0.0);
            }
            let shape = if ctx.need_input_grad {
                vec![0, g.cin, g.h, g.w]
            } else {
                vec![0]
            };
            return Ok(vec![Tensor::zeros(shape)]);
        }
        if let Some(bias) = &mut self.bias {
            let d = &dy;
            ctx.timed(Category::Other, |_| {
                bias.grad.par_iter_mut().enumerate().for_each(|(co, gb)| {
                    // Eight f64 lanes (a sequential f64 sum waits for each add: 2 ms of
                    // VGG16 b32's first layers), added in a fixed order.
                    let mut lanes = [0f64; 8];
                    let mut tail = 0f64;
                    for j in 0..b {
                        let plane = &d[(j * cout + co) * p..][..p];
                        let chunks = plane.chunks_exact(8);
                        tail += chunks.remainder().iter().map(|&v| v as f64).sum::<f64>();
                        for c8 in chunks {
                            for (l, &v) in lanes.iter_mut().zip(c8) {
                                *l += v as f64;
                            }
                        }
                    }
                    *gb = (lanes.iter().sum::<f64>() + tail) as f32;
                })
            });
        }
        // Q_e on the incoming errors, one exponent per example.
        ctx.observe(TensorKind::Errors, &dy, b, cout * p);
        let key = ctx.key(self.id, StreamKind::Errors);
        let (fmt, step) = (ctx.layer_policy().errors, ctx.step);
        let tensor = format!("errors of {}", self.name);
        let dyq = ctx.timed(Category::Quantize, |_| {
            quantize_batch(dy, b, cout * p, p, &fmt, key, &tensor, &self.name, step)
        })?;
        // Weight gradient with 8-bit operands: one GEMM per group of examples sharing a scale
        // (see `weight_grad_grouped`); the float path below does it chunk by chunk.
        if let (Batch::Q { .. }, Batch::Q { .. }) = (&dyq, &xq) {
            self.weight_grad_grouped(ctx, &dyq, &xq)?;
        }
        let need_dx = ctx.need_input_grad;
        if need_dx && self.wq.is_none() {
            return Err(NnError::NoForward {
                layer: self.name.clone(),
            });
        }
        let backend = ctx.backend;
        let chunk = even_chunk(self.chunk_examples(), b);
        let wq = self.wq.as_ref().map(|w| &w.1);
        // dX as the transposed convolution (stride 1): im2col of the errors, then one GEMM
        // `W^T[Cin, Cout*k*k] x ecol` whose output is already the size of dX. The col2im route
        // writes and re-reads a float `dcol` k*k times that size (VGG16's 64-channel layers at
        // batch 128: 302 MB per layer), which cost more than the GEMM itself. Every product
        // of an input pixel's gradient lands in one integer sum, rescaled once. But the
        // transposed convolution flips the weights first, a copy of `Cout * Cin * k * k`
        // values against the `Cin * k * k * B * P` of `dcol`: with float weights and no more
        // output pixels in the batch than output channels, col2im runs instead (`lowprec
        // profile vgg16-cifar --batch 32 --precision fp32 --threads 1`: the 512-channel 4x4
        // layers' backward 29 -> 26.4 ms, the 2x2 ones' 10.6 -> 5.9 ms). With 8-bit weights
        // the integer dcol GEMM was the slower (the 4x4 layers' backward 9.5 -> 18 ms).
        let transposed = need_dx
            && g.stride == 1
            && match wq {
                Some(Weights::Q { per_channel, .. }) => !per_channel,
                _ => cout < b * p,
            };
        let need_dcol = need_dx && !transposed;
        let mut dx = if need_dcol {
            vec![0f32; b * g.in_len()]
        } else {
            Vec::new()
        };
        // Float weights for the strided layers' dcol GEMM unless it runs on 8-bit weights and
        // errors (the float dW path leaves the errors without their gather).
        let float_dw = !matches!((&dyq, &xq), (Batch::Q { .. }, Batch::Q { .. }));
        let int_dcol =
            !float_dw && matches!((wq, &dyq), (Some(Weights::Q { .. }), Batch::Q { .. }));
        let wf = match wq {
            Some(w) if need_dcol && !int_dcol => Some(w.floats(cout, &self.weight.value)),
            _ => None,
        };
        // Chunks of examples, in groups (a function of the shape only): a group's chunks run
        // one after another on one thread, accumulating the float path's dW^T into the group's
        // own buffer; the groups run in parallel when there are enough chunks (each GEMM on
        // its own thread, as in `conv_gemm`), else one after another with parallel GEMMs; the
        // group buffers are then added in group order. The same sums in the same order at
        // any thread count. The sum is dW, or dW^T (see `float_dw_cout_major`).
        let mut gw_float: Option<Vec<f32>> = None;
        let dw_cout_major = float_dw_cout_major(cout);
        if float_dw || need_dcol {
            let chunks = b.div_ceil(chunk);
            // Groups run in parallel only from `PAR_CHUNKS_PER_THREAD` chunks per thread, so
            // below two threads' worth they never do: one group then, whose chunks add into
            // one dW buffer (VGG16's 4x4 layers at batch 32 summed three 9.4 MB buffers).
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
            let mut rest: &mut [f32] = &mut dx;
            for gi in 0..ngroups {
                let len = if need_dcol {
                    (bounds[gi + 1] - bounds[gi]) * g.in_len()
                } else {
                    0
                };
                let (head, tail) = std::mem::take(&mut rest).split_at_mut(len);
                dx_parts.push(head);
                rest = tail;
            }
            let job = BackwardChunks {
                backend,
                name: &self.name,
                g: &g,
                cout,
                wq,
                wf: wf.as_deref(),
                dyq: &dyq,
                xq: &xq,
                chunk,
                need_dcol,
                float_dw,
                dw_cout_major,
            };
            let t0 = Instant::now();
            // The parameter's gradient storage holds group 0's dW sum when it is in the
            // parameter's layout (it is overwritten below anyway).
            let mut store0 = (float_dw && dw_cout_major)
                .then(|| std::mem::take(&mut self.weight.grad))
                .filter(|v| v.len() == rows * cout);
            let stores: Vec<Option<Vec<f32>>> = (0..ngroups)
                .map(|gi| if gi == 0 { store0.take() } else { None })
                .collect();
            let run = |((gi, dxp), store): ((usize, &mut [f32]), Option<Vec<f32>>)| {
                job.run(bounds[gi], bounds[gi + 1], dxp, store)
            };
            let parts: Vec<Result<GroupResult, NnError>> = if backend.concurrent_calls()
                && chunks >= PAR_CHUNKS_PER_THREAD * rayon::current_num_threads()
            {
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
            gw_float = sums.next().map(|mut acc| {
                for part in sums {
                    crate::tensor::add_into(&mut acc, &part);
                }
                acc
            });
            total.other += t1.elapsed();
            total.charge(ctx, t0.elapsed());
        }
        if let Some(gwf) = gw_float {
            let gw = &mut self.weight.grad;
            if dw_cout_major {
                *gw = gwf;
            } else {
                ctx.timed(Category::Other, |_| transpose_into(&gwf, rows, cout, gw));
            }
        }
        if !need_dx {
            return Ok(vec![Tensor::zeros(vec![0])]);
        }
        if transposed {
            let tg = ConvGeom::new(cout, g.ho, g.wo, g.k, 1, g.k - 1 - g.pad)
                .map_err(|e| NnError::Spec(format!("{}: transposed geometry: {e}", self.name)))?;
            debug_assert_eq!((tg.ho, tg.wo), (g.h, g.w));
            let w = self.wq.as_ref().map(|w| &w.1).expect("checked above");
            let raw = &self.weight.value;
            let wt = ctx.timed(Category::Other, |_| w.flipped(cout, g.cin, g.k, raw));
            // `wt` is never `Raw` (flipping copies), so no parameter slice is needed.
            dx = conv_gemm(ctx, &self.name, &tg, g.cin, &wt, &[], &dyq, None)?;
        }
        Ok(vec![Tensor::new(dx, vec![b, g.cin, g.h, g.w])?])
    }

    /// dW from 8-bit errors and activations, exactly summed per group of examples:
    ///
    /// ```text
    /// groups: the examples with the same scale product qe_j * qa_j, in order of first
    ///         appearance in the batch; each group cut into pieces of at most
    ///         clamp(16 * Cout * rows, COL_MIN_I8, COL_BUDGET_I8) / (rows * P) examples, in
    ///         batch order
    /// dW = 0;  for each piece:  dW += tofloat(dY~[Cout, piece] col[piece]^T, qe_j * qa_j)
    /// ```
    ///
    /// Every example of a piece shares one power-of-two scale, so its products sum exactly in
    /// one integer reduction and are rescaled once. One segment per example (002's literal
    /// reading) reads and writes the whole float dW once per example, which dominated the
    /// backward pass on small maps (VGG16's 4x4 and 2x2 layers: segments of 16 and 4 values);
    /// a batch holds only a few distinct exponent sums, so the groups are long. The grouping
    /// depends on the scales alone, never on threads.
    fn weight_grad_grouped(
        &mut self,
        ctx: &mut Ctx<'_>,
        dyq: &Batch,
        xq: &Batch,
    ) -> Result<(), NnError> {
        let (
            Batch::Q {
                mant: em,
                scales: es,
                max_abs: emax,
            },
            Batch::Q {
                mant: xm,
                scales: xs,
                max_abs: xmax,
            },
        ) = (dyq, xq)
        else {
            unreachable!("called with 8-bit operands only")
        };
        let g = self.geom;
        let (rows, p, cout, inl) = (g.col_rows(), g.out_pixels(), self.cout, g.in_len());
        let mut groups: Vec<(f32, Vec<usize>)> = Vec::new();
        for j in 0..es.len() {
            let prod = es[j] * xs[j];
            match groups
                .iter_mut()
                .find(|(s, _)| s.to_bits() == prod.to_bits())
            {
                Some((_, members)) => members.push(j),
                None => groups.push((prod, vec![j])),
            }
        }
        let budget = (4 * 4 * cout * rows).clamp(COL_MIN_I8, COL_BUDGET_I8);
        // A piece is also one exact integer reduction (at most `k_safe` products per sum), so
        // that its tofloat is one rounding and pieces can be computed apart and added after.
        let k_max = lowprec_kernels::k_safe(*emax, i8_operand_bound(*xmax));
        let piece_max = (budget / (rows * p).max(1)).min(k_max / p.max(1)).max(1);
        let pieces: Vec<(f32, &[usize])> = groups
            .iter()
            .flat_map(|(prod, members)| members.chunks(piece_max).map(move |pc| (*prod, pc)))
            .collect();
        let backend = ctx.backend;
        let name = self.name.as_str();
        // One piece: its errors and columns gathered, then dW(piece) (+)= dY~ col^T.
        let piece_gemm = |prod: f32, piece: &[usize], acc: bool, gw: &mut [f32]| {
            let kerr = |e| NnError::kernel(name, e);
            let mut t = ChunkTimes::default();
            let nb = piece.len();
            let n = nb * p;
            let (et, xin) = clock(&mut t.im2col, || {
                let mut et = Scratch::<i8>::new(cout * n);
                et.par_chunks_mut(n).enumerate().for_each(|(co, row)| {
                    for (i, &j) in piece.iter().enumerate() {
                        row[i * p..][..p].copy_from_slice(&em[(j * cout + co) * p..][..p]);
                    }
                });
                let mut xin = Scratch::<i8>::new(nb * inl);
                for (i, &j) in piece.iter().enumerate() {
                    xin[i * inl..][..inl].copy_from_slice(&xm[j * inl..][..inl]);
                }
                (et, xin)
            });
            let prod = [prod];
            let one = [1f32];
            let a = QMatRef {
                mat: row_major(&et, cout, n),
                scales: Scales::uniform(&prod),
                max_abs: *emax,
            };
            let spec = GemmSpec {
                segment: usize::MAX,
                accumulate: acc,
            };
            let cm = MatMut::row_major(gw, cout, rows).map_err(kerr)?;
            let cols = Columns {
                g: &g,
                maps: &xin,
                examples: nb,
                transposed: true,
                scales: Scales::uniform(&one),
                bound: i8_operand_bound(*xmax),
            };
            gemm_on_columns(backend, a, &cols, spec, cm, &mut t).map_err(kerr)?;
            Ok::<ChunkTimes, NnError>(t)
        };
        let t0 = Instant::now();
        let mut total = ChunkTimes::default();
        let gw = &mut self.weight.grad;
        let threads = rayon::current_num_threads();
        // Small weight gradients (PreResNet-20's 9 KB) with enough pieces: pieces in parallel,
        // each into its own buffer (`0 + t`, one rounding), then added in piece order, which is
        // what accumulating one after another computes (`gw + t`, bit for bit). Otherwise one
        // piece after another with each GEMM split across the threads.
        if backend.concurrent_calls()
            && threads > 1
            && pieces.len() >= 2 * threads
            && cout * rows * 4 <= 1 << 20
        {
            let parts: Vec<Result<(Vec<f32>, ChunkTimes), NnError>> = pieces
                .par_iter()
                .map(|&(prod, piece)| {
                    lowprec_kernels::serial(|| {
                        let mut part = vec![0f32; cout * rows];
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

    /// The forward pass of an input of batch shape `shape` (borrowed or handed over).
    fn forward_input(
        &mut self,
        ctx: &mut Ctx<'_>,
        shape: &[usize],
        x: Cow<'_, [f32]>,
        train: bool,
    ) -> Result<Tensor, NnError> {
        let g = self.geom;
        if shape.len() != 4 || shape[1..] != [g.cin, g.h, g.w] {
            return Err(self.bad_inputs(vec![shape]));
        }
        let b = shape[0];
        let cout = self.cout;
        // Q_a, one exponent per example.
        ctx.observe(TensorKind::Acts, &x, b, g.in_len());
        let key = ctx.key(self.id, StreamKind::Acts);
        let (fmt, step) = (ctx.layer_policy().acts, ctx.step);
        let tensor = format!("input activations of {}", self.name);
        let xq = ctx.timed(Category::Quantize, |_| {
            quantize_batch(
                x,
                b,
                g.in_len(),
                g.h * g.w,
                &fmt,
                key,
                &tensor,
                &self.name,
                step,
            )
        })?;
        self.quantized_weights(ctx)?;
        let wq = &self.wq.as_ref().expect("quantised above").1;
        let bias = self.bias.as_ref().map(|p| p.value.as_slice());
        let y = conv_gemm(ctx, &self.name, &g, cout, wq, &self.weight.value, &xq, bias)?;
        self.saved_x = if train { Some(xq) } else { None };
        Tensor::new(y, vec![b, cout, g.ho, g.wo])
    }

    fn bad_inputs(&self, shapes: Vec<&[usize]>) -> NnError {
        let g = self.geom;
        NnError::shape(
            &self.name,
            format!(
                "expects one [batch, {}, {}, {}] input, got {shapes:?}",
                g.cin, g.h, g.w
            ),
        )
    }

    fn quantized_weights(&mut self, ctx: &mut Ctx<'_>) -> Result<(), NnError> {
        let v = self.weight.version;
        let fmt = ctx.layer_policy().weights;
        if matches!(&self.wq, Some((ver, _)) if *ver == v) && self.wq_fmt == fmt {
            return Ok(());
        }
        self.wq_fmt = fmt;
        let key = ctx.weight_key(self.id, v);
        let tensor = format!("weights of {}", self.name);
        let (o, i) = (self.cout, self.geom.col_rows());
        let (w, step) = (&self.weight.value, ctx.step);
        if fmt == NumberFormat::F32 {
            // fp32 "quantisation" is the finiteness check; the values are used in place.
            check_finite(w, &tensor, &self.name, step)?;
            self.wq = Some((v, Weights::Raw));
            return Ok(());
        }
        let op = ctx.timed(Category::Quantize, |_| {
            quantize_matrix_channels(
                w,
                o,
                i,
                self.geom.k * self.geom.k,
                &fmt,
                key,
                &tensor,
                &self.name,
                step,
            )
        })?;
        let q = match op {
            Operand::F { data, .. } => Weights::F(data),
            Operand::Q(q) => match (q.data, q.fmt.block) {
                (QData::I8(mant), Block::Tensor | Block::Axis(0)) => Weights::Q {
                    mant,
                    scales: q.scales,
                    per_channel: q.fmt.block == Block::Axis(0),
                    max_abs: q.fmt.max_abs(),
                },
                (data, _) => Weights::F(Operand::Q(QMatrix { data, ..q }).to_f32()),
            },
        };
        self.wq = Some((v, q));
        Ok(())
    }
}

impl Layer for Conv2d {
    fn name(&self) -> &str {
        &self.name
    }

    fn describe(&self) -> String {
        let g = &self.geom;
        format!(
            "conv {}->{} {}x{} s{} p{}{}",
            g.cin,
            self.cout,
            g.k,
            g.k,
            g.stride,
            g.pad,
            if self.bias.is_some() { " (+bias)" } else { "" }
        )
    }

    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>, NnError> {
        let g = &self.geom;
        match inputs {
            [s] if *s == [g.cin, g.h, g.w] => Ok(vec![self.cout, g.ho, g.wo]),
            _ => Err(NnError::shape(
                &self.name,
                format!(
                    "expects one input of shape [{}, {}, {}], got {inputs:?}",
                    g.cin, g.h, g.w
                ),
            )),
        }
    }

    fn forward(
        &mut self,
        ctx: &mut Ctx<'_>,
        inputs: &[&Tensor],
        train: bool,
    ) -> Result<Tensor, NnError> {
        match inputs {
            [x] => self.forward_input(ctx, &x.shape, Cow::Borrowed(&x.data), train),
            _ => Err(self.bad_inputs(inputs.iter().map(|t| &t.shape[..]).collect())),
        }
    }

    /// Q_a takes the handed-over input as it is: in fp32 the saved input is then the tensor
    /// itself instead of a copy (`lowprec profile preresnet20-cifar --precision fp32`: 7.5 ms
    /// of "quant" per forward at 2 threads).
    fn forward_owned(
        &mut self,
        ctx: &mut Ctx<'_>,
        x: Tensor,
        train: bool,
    ) -> Result<Tensor, NnError> {
        let Tensor { data, shape } = x;
        self.forward_input(ctx, &shape, Cow::Owned(data), train)
    }

    fn backward(&mut self, ctx: &mut Ctx<'_>, dy: &Tensor) -> Result<Vec<Tensor>, NnError> {
        self.backward_errors(ctx, &dy.shape, Cow::Borrowed(&dy.data))
    }
    fn backward_owned(&mut self, ctx: &mut Ctx<'_>, dy: Tensor) -> Result<Vec<Tensor>, NnError> {
        self.backward_errors(ctx, &dy.shape, Cow::Owned(dy.data))
    }
    fn params(&self) -> Vec<&Param> {
        std::iter::once(&self.weight)
            .chain(self.bias.as_ref())
            .collect()
    }

    fn params_mut(&mut self) -> Vec<&mut Param> {
        std::iter::once(&mut self.weight)
            .chain(self.bias.as_mut())
            .collect()
    }

    fn macs_per_example(&self, _inputs: &[&[usize]]) -> u64 {
        (self.geom.col_rows() * self.geom.out_pixels() * self.cout) as u64
    }

    fn saved_bytes(&self) -> usize {
        self.saved_x.as_ref().map_or(0, |x| x.bytes())
    }

    fn clear_saved(&mut self) {
        self.saved_x = None;
    }
}
