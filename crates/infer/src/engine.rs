//! The integer inference engine: the network of a [`QuantizedModel`] with its quantised
//! conv/linear layers replaced by FPGA layers, everything else (batch norm with running
//! statistics, ReLU, pooling, residual adds, fp32 first/last layers) the nn crate's own layers.
//!
//! An FPGA layer does what the accelerator does: its FP32 input becomes FP16 and is blocked
//! into `c_vector` channel blocks (`lowprec_formats::fpga`), the dot products run on the
//! block engine (`lowprec_kernels::blockdot`: exact integer block sums, FP32 accumulation in
//! block order, taps outermost, then channel blocks), the bias is added in FP32 and the output
//! leaves as FP16. [`Mode::Fast`] quantises the NCHW maps on the vector block quantiser, builds
//! the im2col matrix (rows: tap, then channel; columns: output pixels) from shifted map rows
//! and runs it on the integer GEMM with the weights as the rows
//! ([`lowprec_kernels::blockdot::block_gemm_cols`]), examples in chunks over the rayon pool;
//! channels are padded to whole blocks only where a tap holds more than one block (a layer
//! whose channels fit one block sums just those: the padding adds zeros). [`Mode::Reference`]
//! loops over the definition with the f64 reference quantiser and the reference block dot
//! product; tests (and `lowprec infer --check`) compare the two bit for bit. [`Mode::Float`] is the same network in FP32 with the master weights:
//! the float model the quantised one is compared against.

use std::cell::RefCell;
use std::collections::HashMap;

use lowprec_formats::fpga::{
    f16_round_ref, f16_round_slice, quantize_fpga_into, quantize_fpga_ref, MantissaOut,
};
use lowprec_formats::{
    ChannelView, FpgaBfp, FpgaRounding, FpgaTensor, LowBitFormat, NumberFormat, StreamKey,
};
use lowprec_kernels::blockdot::{
    block_conv, block_conv_available, block_gemm_cols, block_gemm_ref, BlockOperand, ConvMaps,
    ConvShape, ConvWeights, ScaledOperand,
};
use lowprec_kernels::pack::QElem;
use lowprec_kernels::{CpuBackend, Isa};
use lowprec_nn::layer::Layer;
use lowprec_nn::model::build_layer;
use lowprec_nn::spec::LayerSpec;
use lowprec_nn::{Ctx, Model, NnError, Precision, Tensor};

use crate::lowbit_layer::{LowBitLayer, LowBitTensor};
use crate::modelfile::{PackedWeights, QuantizedModel};
use crate::InferError;

/// Which arithmetic the engine runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Integer arithmetic of the block engine (the product): the direct block convolution
    /// (`blockdot::block_conv`) where it runs (AVX-512 VNNI, mantissas of up to 8 bits), the
    /// im2col route of [`Mode::FastIm2col`] elsewhere.
    Fast,
    /// im2col and the segmented integer GEMM (`blockdot::block_gemm_cols`) everywhere: what
    /// [`Mode::Fast`] runs on other CPUs, selectable for tests and measurements.
    FastIm2col,
    /// Plain loops over the definition (the yardstick).
    Reference,
    /// FP32 everywhere with the master weights (the float model).
    Float,
}

/// What an FPGA layer needs, handed to the layer factory.
struct FpgaInit {
    acts: FpgaBfp,
    weights: FpgaTensor,
    bias: Option<Vec<f32>>,
    mode: Mode,
}

/// What a low-bit layer needs.
struct LowBitInit {
    acts: LowBitFormat,
    weights: LowBitTensor,
    bias: Option<Vec<f32>>,
    reference: bool,
}

enum Init {
    Fpga(FpgaInit),
    LowBit(LowBitInit),
}

thread_local! {
    /// The factory of `Model::build_with_fusion` is a plain `fn`; the quantised layers reach
    /// it through this slot, filled just before the build and emptied right after.
    static PLAN: RefCell<HashMap<String, Init>> = RefCell::new(HashMap::new());
}

fn make_layer(
    name: &str,
    geo: Geo,
    cout: usize,
    linear: bool,
    init: Init,
) -> Result<Box<dyn Layer>, NnError> {
    Ok(match init {
        Init::Fpga(i) => Box::new(FpgaLayer::new(name, geo, cout, linear, i)?),
        Init::LowBit(i) => Box::new(LowBitLayer::new(
            name,
            geo,
            cout,
            linear,
            i.acts,
            i.weights,
            i.bias,
            i.reference,
        )?),
    })
}

fn factory(
    id: u64,
    name: &str,
    spec: &LayerSpec,
    in_shapes: &[&[usize]],
    seed: u64,
) -> Result<Box<dyn Layer>, NnError> {
    let init = PLAN.with(|p| p.borrow_mut().remove(name));
    let Some(init) = init else {
        return build_layer(id, name, spec, in_shapes, seed);
    };
    let shape = in_shapes
        .first()
        .ok_or_else(|| NnError::Spec(format!("{name}: no input")))?;
    match spec {
        LayerSpec::Conv {
            out,
            kernel,
            stride,
            padding,
            ..
        } => {
            let [cin, h, w] = shape[..] else {
                return Err(NnError::Spec(format!(
                    "{name}: conv input must be [C, H, W], got {shape:?}"
                )));
            };
            let geo = Geo::new(cin, h, w, *kernel, *stride, *padding)
                .map_err(|msg| NnError::Spec(format!("{name}: {msg}")))?;
            make_layer(name, geo, *out, false, init)
        }
        LayerSpec::Linear { out, .. } => {
            let f: usize = shape.iter().product();
            let geo = Geo::new(f, 1, 1, 1, 1, 0)
                .map_err(|msg| NnError::Spec(format!("{name}: {msg}")))?;
            make_layer(name, geo, *out, true, init)
        }
        other => Err(NnError::Spec(format!(
            "{name}: a {} layer cannot be quantised",
            other.type_name()
        ))),
    }
}

/// Convolution geometry, nn's own (a linear layer is a 1x1 convolution of a 1x1 map).
use lowprec_nn::im2col::ConvGeom as Geo;

/// The fast path's weights: `cout x (taps * cpad)` mantissas, tap-major (channels padded to
/// `cpad`), in the width the GEMM takes.
enum Mant {
    I8(Vec<i8>),
    I16(Vec<i16>),
}

/// Mantissa types of the fast path, with their scratch buffers.
trait Elem: MantissaOut + QElem + Default {
    /// This type's buffers of quantised maps and im2col matrix, and the shared ones.
    fn bufs(s: &mut Scratch) -> Bufs<'_, Self>;
}

struct Bufs<'a, T> {
    q: &'a mut Vec<T>,
    b: &'a mut Vec<T>,
    exps: &'a mut Vec<u8>,
    splane: &'a mut Vec<f32>,
    scales: &'a mut Vec<f32>,
    out: &'a mut Vec<f32>,
}

impl Elem for i8 {
    fn bufs(s: &mut Scratch) -> Bufs<'_, i8> {
        Bufs {
            q: &mut s.q8,
            b: &mut s.b8,
            exps: &mut s.exps,
            splane: &mut s.splane,
            scales: &mut s.scales,
            out: &mut s.out,
        }
    }
}

impl Elem for i16 {
    fn bufs(s: &mut Scratch) -> Bufs<'_, i16> {
        Bufs {
            q: &mut s.q16,
            b: &mut s.b16,
            exps: &mut s.exps,
            splane: &mut s.splane,
            scales: &mut s.scales,
            out: &mut s.out,
        }
    }
}

/// Per-thread buffers of the fast path, kept between calls: allocating (and the kernel zeroing
/// fresh pages) every layer of every batch cost more than some layers' arithmetic. Every
/// element a call reads it has written first.
#[derive(Default)]
struct Scratch {
    q8: Vec<i8>,
    q16: Vec<i16>,
    b8: Vec<i8>,
    b16: Vec<i16>,
    exps: Vec<u8>,
    /// Block scales of the quantised maps, `[n, blocks, h * w]`.
    splane: Vec<f32>,
    scales: Vec<f32>,
    out: Vec<f32>,
    /// A zero plane (channels that pad a block).
    zeros: Vec<i8>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs `f(first_example, examples, out_chunk, scratch)` over chunks of `ne` examples of `out`
/// (`per_out` values an example), one chunk a rayon task when there are several, each with its
/// thread's scratch buffers; `serial_gemms` keeps the GEMMs inside a task on one thread.
fn over_chunks<F>(
    out: &mut [f32],
    per_out: usize,
    ne: usize,
    serial_gemms: bool,
    f: F,
) -> Result<(), NnError>
where
    F: Fn(usize, usize, &mut [f32], &mut Scratch) -> Result<(), NnError> + Sync,
{
    use rayon::prelude::*;
    let run = |(i, o): (usize, &mut [f32])| -> Result<(), NnError> {
        let n = o.len() / per_out;
        SCRATCH.with(|s| f(i * ne, n, o, &mut s.borrow_mut()))
    };
    if out.len() <= ne * per_out {
        run((0, out))
    } else if serial_gemms {
        out.par_chunks_mut(ne * per_out)
            .enumerate()
            .try_for_each(|c| lowprec_kernels::serial(|| run(c)))
    } else {
        out.par_chunks_mut(ne * per_out)
            .enumerate()
            .try_for_each(run)
    }
}

/// The first `n` elements of `v`, grown if needed (contents unspecified).
fn grow<T: Copy + Default>(v: &mut Vec<T>, n: usize) -> &mut [T] {
    if v.len() < n {
        v.resize(n, T::default());
    }
    &mut v[..n]
}

/// Bytes of im2col matrix and scales one chunk of examples aims at (in L2 while the GEMM
/// passes over it).
const CHUNK_BYTES: usize = 1 << 19;

/// A conv or linear layer on the FPGA model.
pub struct FpgaLayer {
    name: String,
    /// "input activations of NAME", for errors.
    tensor: String,
    geo: Geo,
    cout: usize,
    acts: FpgaBfp,
    /// As stored: `[cout, cin, k, k]` mantissas, exponents per (out, channel block, tap).
    weights: FpgaTensor,
    bias: Option<Vec<f32>>,
    mode: Mode,
    /// Fast path: K is `taps * cpad`, cut into blocks of `block` channels (`cin` when the
    /// channels fit one `c_vector` block, else `c_vector` with `cpad` a multiple of it).
    block: usize,
    cpad: usize,
    wmant: Mant,
    /// The direct convolution's weights, where it runs.
    direct: Option<ConvWeights>,
    /// Groups of 4 channels per block on the direct route.
    quads: usize,
    /// Weight block scales, `[tap * blocks_per_tap + b][cout]`.
    wscales: Vec<f32>,
    /// The activation block scale of each 5-bit exponent.
    ascale: [f32; 32],
    /// `127 - 14 - P`: the f32 exponent field of the scale of block exponent `e` is `e` plus
    /// this.
    scale_bits: u32,
    linear: bool,
}

impl FpgaLayer {
    fn new(
        name: &str,
        geo: Geo,
        cout: usize,
        linear: bool,
        init: FpgaInit,
    ) -> Result<Self, NnError> {
        let spec_err = |m: String| NnError::Spec(format!("{name}: {m}"));
        let (a, w) = (init.acts, init.weights.format);
        if a.c_vector != w.c_vector {
            return Err(spec_err(format!(
                "activations ({a}) and weights ({w}) must share the c_vector"
            )));
        }
        if a.rounding == FpgaRounding::Stochastic {
            return Err(spec_err(format!(
                "stochastic rounding ({a}) is for training; inference rounds deterministically"
            )));
        }
        let taps = geo.k * geo.k;
        let want = ChannelView {
            outer: cout,
            channels: geo.cin,
            inner: taps,
        };
        if init.weights.view != want {
            return Err(spec_err(format!(
                "packed weights are {:?}, the layer needs {want:?}",
                init.weights.view
            )));
        }
        let cv = a.c_vector as usize;
        let nbc = geo.cin.div_ceil(cv);
        let (block, cpad) = if nbc == 1 {
            (geo.cin, geo.cin)
        } else {
            (cv, nbc * cv)
        };
        let kk = taps * cpad;
        let mut wm = vec![0i16; cout * kk];
        let mut ws = vec![0f32; taps * nbc * cout];
        let t = &init.weights;
        for o in 0..cout {
            for tap in 0..taps {
                for c in 0..geo.cin {
                    wm[o * kk + tap * cpad + c] = t.mantissas[(o * geo.cin + c) * taps + tap];
                }
                for b in 0..nbc {
                    ws[(tap * nbc + b) * cout + o] =
                        w.scale(t.exponents[(o * nbc + b) * taps + tap]);
                }
            }
        }
        debug_assert!((0..32u32)
            .all(|e| { f32::from_bits((e + 113 - a.precision_bits()) << 23) == a.scale(e as u8) }));
        let narrow = a.width <= 8 && w.width <= 8;
        let quads = block.div_ceil(4);
        let direct = if init.mode == Mode::Fast && narrow && block_conv_available() {
            let bq = quads * 4;
            let mut dm = vec![0i8; cout * taps * nbc * bq];
            let mut dsc = vec![0f32; cout * taps * nbc];
            for o in 0..cout {
                for tap in 0..taps {
                    for b in 0..nbc {
                        for sl in 0..block.min(geo.cin - b * block) {
                            let c = b * block + sl;
                            dm[((o * taps + tap) * nbc + b) * bq + sl] =
                                t.mantissas[(o * geo.cin + c) * taps + tap] as i8;
                        }
                        dsc[(o * taps + tap) * nbc + b] = ws[(tap * nbc + b) * cout + o];
                    }
                }
            }
            Some(
                ConvWeights::new(&dm, &dsc, cout, taps, nbc, quads)
                    .map_err(|e| NnError::kernel(name, e))?,
            )
        } else {
            None
        };
        let wmant = if narrow {
            Mant::I8(wm.iter().map(|&v| v as i8).collect())
        } else {
            Mant::I16(wm)
        };
        Ok(FpgaLayer {
            name: name.to_string(),
            tensor: format!("input activations of {name}"),
            linear,
            geo,
            cout,
            acts: a,
            weights: init.weights,
            bias: init.bias,
            mode: init.mode,
            block,
            cpad,
            wmant,
            direct,
            quads,
            wscales: ws,
            ascale: std::array::from_fn(|e| a.scale(e as u8)),
            scale_bits: 113 - a.precision_bits(),
        })
    }

    fn out_shape(&self) -> Vec<usize> {
        if self.linear {
            vec![self.cout]
        } else {
            vec![self.cout, self.geo.ho, self.geo.wo]
        }
    }

    /// FP32 result of one output + bias, leaving as FP16 (the reference path's).
    #[inline]
    fn finish_ref(&self, acc: f32, o: usize) -> f32 {
        let v = acc + self.bias.as_ref().map_or(0.0, |b| b[o]);
        f16_round_ref(v) as f32
    }

    /// Examples per chunk: about [`CHUNK_BYTES`] of im2col matrix, and at least one chunk per
    /// thread when there are examples enough. Any split gives the same bits: examples are
    /// independent and every output's sum runs in block order inside one GEMM.
    fn chunk_examples(&self, b: usize, elem: usize) -> usize {
        let g = self.geo;
        let po = g.ho * g.wo;
        let nbk = self.cpad / self.block;
        let per = po * g.k * g.k * (self.cpad * elem + nbk * 4);
        let by_size = (CHUNK_BYTES / per.max(1)).max(1);
        let threads = rayon::current_num_threads().max(1);
        by_size.min(b.div_ceil(threads)).max(1)
    }

    fn forward_fast(&self, x: &[f32], b: usize) -> Result<Vec<f32>, NnError> {
        if let Some(cw) = &self.direct {
            return self.forward_direct(cw, x, b);
        }
        match &self.wmant {
            Mant::I8(wm) => self.forward_fast_t(wm, x, b),
            Mant::I16(wm) => self.forward_fast_t(wm, x, b),
        }
    }

    fn forward_fast_t<T: Elem>(&self, wm: &[T], x: &[f32], b: usize) -> Result<Vec<f32>, NnError> {
        let g = self.geo;
        let (per_in, per_out) = (g.cin * g.h * g.w, self.cout * g.ho * g.wo);
        let mut out = vec![0f32; b * per_out];
        if b == 0 || per_out == 0 {
            return Ok(out);
        }
        let ne = self.chunk_examples(b, std::mem::size_of::<T>());
        // one GEMM per chunk, each on its own thread
        over_chunks(&mut out, per_out, ne, true, |n0, n, o, s| {
            self.chunk(wm, &x[n0 * per_in..(n0 + n) * per_in], n, o, s)
        })?;
        Ok(out)
    }

    /// Examples per chunk of the direct route: about [`CHUNK_BYTES`] of maps, scales and
    /// output, and at least one chunk per thread when there are examples enough.
    fn direct_examples(&self, b: usize) -> usize {
        let g = self.geo;
        let nbk = self.cpad / self.block;
        let per = g.h * g.w * nbk * (self.quads * 4 + 4) + self.cout * g.ho * g.wo * 4;
        let by_size = (CHUNK_BYTES / per.max(1)).max(1);
        let threads = rayon::current_num_threads().max(1);
        by_size.min(b.div_ceil(threads)).max(1)
    }

    fn forward_direct(&self, cw: &ConvWeights, x: &[f32], b: usize) -> Result<Vec<f32>, NnError> {
        let g = self.geo;
        let (per_in, per_out) = (g.cin * g.h * g.w, self.cout * g.ho * g.wo);
        let mut out = vec![0f32; b * per_out];
        if b == 0 || per_out == 0 {
            return Ok(out);
        }
        let ne = self.direct_examples(b);
        over_chunks(&mut out, per_out, ne, false, |n0, n, o, s| {
            self.chunk_direct(cw, &x[n0 * per_in..(n0 + n) * per_in], n, o, s)
        })?;
        Ok(out)
    }

    /// `n` examples on the direct convolution: quantise, regroup the maps 4 channels per dword,
    /// convolve, bias and FP16 out into `out` (`[n, cout, ho, wo]`).
    fn chunk_direct(
        &self,
        cw: &ConvWeights,
        x: &[f32],
        n: usize,
        out: &mut [f32],
        s: &mut Scratch,
    ) -> Result<(), NnError> {
        let g = self.geo;
        let (hw, po) = (g.h * g.w, g.ho * g.wo);
        let cv = self.acts.c_vector as usize;
        let nbc = g.cin.div_ceil(cv);
        let (cin, block, quads) = (g.cin, self.block, self.quads);
        let kq = nbc * quads;
        let Scratch {
            q8,
            b8,
            exps,
            splane,
            scales,
            out: y,
            zeros,
            ..
        } = s;
        let q = grow(q8, n * cin * hw);
        let e = grow(exps, n * nbc * hw);
        let view = ChannelView {
            outer: n,
            channels: cin,
            inner: hw,
        };
        quantize_fpga_into(x, view, &self.acts, &self.tensor, q, e)
            .map_err(|err| NnError::quant(&self.name, 0, err))?;
        let bias_bits = self.scale_bits;
        let scale = |v: u8| f32::from_bits((v as u32 + bias_bits) << 23);
        let maps = grow(b8, n * kq * 4 * hw);
        let kerr = |err| NnError::kernel(&self.name, err);
        // block slot `sl` of block `bb` is channel `bb * block + sl` where that exists
        let channel = |bb: usize, sl: usize| {
            let c = bb * block + sl;
            (sl < block && c < cin).then_some(c)
        };
        if self.linear {
            // the batch is one 1 x n map: lanes run over the examples
            for (ni, qx) in q.chunks_exact(cin).enumerate() {
                for bb in 0..nbc {
                    for qq in 0..quads {
                        let d = &mut maps[((bb * quads + qq) * n + ni) * 4..][..4];
                        for (j, v) in d.iter_mut().enumerate() {
                            *v = channel(bb, 4 * qq + j).map_or(0, |c| qx[c]);
                        }
                    }
                }
            }
            let sc = grow(scales, nbc * n);
            for (ni, ex) in e.chunks_exact(nbc).enumerate() {
                for (bb, &v) in ex.iter().enumerate() {
                    sc[bb * n + ni] = scale(v);
                }
            }
            let shape = ConvShape::new(1, 1, n, 1, 1, 0).map_err(kerr)?;
            let yy = grow(y, self.cout * n);
            let m = ConvMaps {
                mant: &*maps,
                scales: &*sc,
            };
            block_conv(cw, &m, shape, yy).map_err(kerr)?;
            for (ni, o) in out.chunks_exact_mut(self.cout).enumerate() {
                for (oc, d) in o.iter_mut().enumerate() {
                    *d = yy[oc * n + ni] + self.bias.as_ref().map_or(0.0, |bv| bv[oc]);
                }
            }
        } else {
            let sp = grow(splane, n * nbc * hw);
            for (d, &v) in sp.iter_mut().zip(e.iter()) {
                *d = scale(v);
            }
            let zero = grow(zeros, hw);
            zero.fill(0);
            let zero = &*zero;
            for ni in 0..n {
                for bb in 0..nbc {
                    for qq in 0..quads {
                        let plane = |j: usize| {
                            channel(bb, 4 * qq + j)
                                .map_or(zero, |c| &q[(ni * cin + c) * hw..][..hw])
                        };
                        let (p0, p1, p2, p3) = (plane(0), plane(1), plane(2), plane(3));
                        let d = &mut maps[((ni * kq + bb * quads + qq) * hw) * 4..][..hw * 4];
                        for (i, dd) in d.chunks_exact_mut(4).enumerate() {
                            dd[0] = p0[i];
                            dd[1] = p1[i];
                            dd[2] = p2[i];
                            dd[3] = p3[i];
                        }
                    }
                }
            }
            let shape = ConvShape::new(n, g.h, g.w, g.k, g.stride, g.pad).map_err(kerr)?;
            let m = ConvMaps {
                mant: &*maps,
                scales: &*sp,
            };
            block_conv(cw, &m, shape, out).map_err(kerr)?;
            for ex in out.chunks_exact_mut(self.cout * po) {
                for (o, d) in ex.chunks_exact_mut(po).enumerate() {
                    let bias = self.bias.as_ref().map_or(0.0, |bv| bv[o]);
                    for v in d.iter_mut() {
                        *v += bias;
                    }
                }
            }
        }
        f16_round_slice(out);
        Ok(())
    }

    /// `n` examples: quantise, im2col, GEMM, bias and FP16 out into `out` (`[n, cout, ho, wo]`).
    fn chunk<T: Elem>(
        &self,
        wm: &[T],
        x: &[f32],
        n: usize,
        out: &mut [f32],
        s: &mut Scratch,
    ) -> Result<(), NnError> {
        let g = self.geo;
        let (hw, po, taps) = (g.h * g.w, g.ho * g.wo, g.k * g.k);
        let cv = self.acts.c_vector as usize;
        let nbc = g.cin.div_ceil(cv);
        let (cpad, cin) = (self.cpad, g.cin);
        let (kk, npix) = (taps * cpad, n * po);
        let Bufs {
            q: qbuf,
            b: bbuf,
            exps,
            splane,
            scales,
            out: c,
        } = T::bufs(s);
        let q = grow(qbuf, n * cin * hw);
        let e = grow(exps, n * nbc * hw);
        let view = ChannelView {
            outer: n,
            channels: cin,
            inner: hw,
        };
        quantize_fpga_into(x, view, &self.acts, &self.tensor, q, e)
            .map_err(|err| NnError::quant(&self.name, 0, err))?;
        // the block scales of the maps, 2^(e - 14 - P) from the exponent's bits
        let sp = grow(splane, n * nbc * hw);
        let bias = self.scale_bits;
        for (d, &v) in sp.iter_mut().zip(e.iter()) {
            *d = f32::from_bits((v as u32 + bias) << 23);
        }
        // im2col: rows (tap, channel) and block scales (tap, block) of pixel columns
        let bm = grow(bbuf, kk * npix);
        let sc = grow(scales, taps * nbc * npix);
        if self.linear {
            for (ni, (qx, sx)) in q.chunks_exact(cin).zip(sp.chunks_exact(nbc)).enumerate() {
                for (ch, &v) in qx.iter().enumerate() {
                    bm[ch * npix + ni] = v;
                }
                for (bb, &v) in sx.iter().enumerate() {
                    sc[bb * npix + ni] = v;
                }
            }
            for ch in cin..cpad {
                bm[ch * npix..][..npix].fill(T::default());
            }
        } else {
            let zero_scale = self.ascale[0];
            for ky in 0..g.k {
                for kx in 0..g.k {
                    let tap = ky * g.k + kx;
                    for ch in 0..cpad {
                        let row = &mut bm[(tap * cpad + ch) * npix..][..npix];
                        if ch >= cin {
                            row.fill(T::default());
                            continue;
                        }
                        for (ni, dst) in row.chunks_exact_mut(po).enumerate() {
                            let src = &q[(ni * cin + ch) * hw..][..hw];
                            shift_plane(g, ky, kx, src, dst, T::default());
                        }
                    }
                    for bb in 0..nbc {
                        let row = &mut sc[(tap * nbc + bb) * npix..][..npix];
                        for (ni, dst) in row.chunks_exact_mut(po).enumerate() {
                            let src = &sp[(ni * nbc + bb) * hw..][..hw];
                            shift_plane(g, ky, kx, src, dst, zero_scale);
                        }
                    }
                }
            }
        }
        let y = grow(c, self.cout * npix);
        let w = ScaledOperand {
            mant: wm,
            len: self.cout,
            k: kk,
            scales: &self.wscales,
            max_abs: self.weights.format.max_abs(),
        };
        let a = ScaledOperand {
            mant: &*bm,
            len: npix,
            k: kk,
            scales: &*sc,
            max_abs: self.acts.max_abs(),
        };
        block_gemm_cols(Isa::detect(), &w, &a, self.block, y)
            .map_err(|err| NnError::kernel(&self.name, err))?;
        // (out, pixel) -> NCHW, bias in FP32, FP16 out
        for (ni, ex) in out.chunks_exact_mut(self.cout * po).enumerate() {
            for (o, dst) in ex.chunks_exact_mut(po).enumerate() {
                let bias = self.bias.as_ref().map_or(0.0, |bv| bv[o]);
                for (d, &v) in dst.iter_mut().zip(&y[o * npix + ni * po..][..po]) {
                    *d = v + bias;
                }
            }
        }
        f16_round_slice(out);
        Ok(())
    }

    fn forward_reference(&self, x: &[f32], b: usize) -> Result<Vec<f32>, NnError> {
        let g = self.geo;
        let (hw, taps) = (g.h * g.w, g.k * g.k);
        let cv = self.acts.c_vector as usize;
        let nbc = g.cin.div_ceil(cv);
        let view = ChannelView {
            outer: b,
            channels: g.cin,
            inner: hw,
        };
        let (q, e) = quantize_fpga_ref(x, view, &self.acts, StreamKey::new(0, 0))
            .map_err(|e| NnError::quant(&self.name, 0, e))?;
        let wt = &self.weights;
        let wf = wt.format;
        let mut out = vec![0f32; b * self.cout * g.ho * g.wo];
        let mut idx = 0;
        for n in 0..b {
            for o in 0..self.cout {
                for oy in 0..g.ho {
                    for ox in 0..g.wo {
                        // one output: per tap, per channel block, an exact integer sum and one
                        // FP32 addition (block_gemm_ref on a 1 x 1 product of that block)
                        let mut acc = 0f32;
                        for ky in 0..g.k {
                            for kx in 0..g.k {
                                let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                                let ix = (ox * g.stride + kx) as isize - g.pad as isize;
                                if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                    continue;
                                }
                                let p = iy as usize * g.w + ix as usize;
                                let tap = ky * g.k + kx;
                                for bb in 0..nbc {
                                    let cs = bb * cv..((bb + 1) * cv).min(g.cin);
                                    let av: Vec<i32> =
                                        cs.clone().map(|c| q[(n * g.cin + c) * hw + p]).collect();
                                    let wv: Vec<i32> = cs
                                        .map(|c| wt.mantissas[(o * g.cin + c) * taps + tap] as i32)
                                        .collect();
                                    let len = av.len();
                                    let mut pad_a = av;
                                    let mut pad_w = wv;
                                    pad_a.resize(cv, 0);
                                    pad_w.resize(cv, 0);
                                    let ea = [self.acts.scale_log2(e[(n * nbc + bb) * hw + p])];
                                    let ew =
                                        [wf.scale_log2(wt.exponents[(o * nbc + bb) * taps + tap])];
                                    debug_assert!(len <= cv);
                                    let mut v = [0f32];
                                    block_gemm_ref(
                                        &BlockOperand {
                                            mant: &pad_a,
                                            rows: 1,
                                            k: cv,
                                            exps: &ea,
                                            max_abs: self.acts.max_abs(),
                                        },
                                        &BlockOperand {
                                            mant: &pad_w,
                                            rows: 1,
                                            k: cv,
                                            exps: &ew,
                                            max_abs: wf.max_abs(),
                                        },
                                        cv,
                                        &mut v,
                                    )
                                    .map_err(|e| NnError::kernel(&self.name, e))?;
                                    acc += v[0];
                                }
                            }
                        }
                        out[idx] = self.finish_ref(acc, o);
                        idx += 1;
                    }
                }
            }
        }
        Ok(out)
    }
}

/// One im2col row of one example: `dst[oy * wo + ox] = src[iy * w + ix]`, the input pixel under
/// tap `(ky, kx)`, or `zero` where that pixel is padding.
#[inline]
fn shift_plane<T: Copy>(g: Geo, ky: usize, kx: usize, src: &[T], dst: &mut [T], zero: T) {
    let (w, pad) = (g.w as isize, g.pad as isize);
    if g.stride == 1 && (g.ho, g.wo) == (g.h, g.w) {
        // A "same" convolution: the plane shifted by one offset, then the columns that
        // wrapped round from the neighbouring row set to zero.
        let hw = src.len() as isize;
        let d = (ky as isize - pad) * w + (kx as isize - pad);
        let (p0, p1) = ((-d).max(0), (hw - d).min(hw));
        if p0 < p1 {
            let (p0, p1) = (p0 as usize, p1 as usize);
            let s0 = (p0 as isize + d) as usize;
            dst[p0..p1].copy_from_slice(&src[s0..s0 + (p1 - p0)]);
            for v in &mut dst[..p0] {
                *v = zero;
            }
            for v in &mut dst[p1..] {
                *v = zero;
            }
        } else {
            dst.fill(zero);
        }
        let shift = kx as isize - pad;
        let cols = if shift < 0 {
            0..(-shift) as usize
        } else {
            (g.w - shift as usize)..g.w
        };
        for row in dst.chunks_exact_mut(g.w) {
            for v in &mut row[cols.clone()] {
                *v = zero;
            }
        }
        return;
    }
    let inside = |ox: usize| {
        let ix = (ox * g.stride + kx) as isize - pad;
        ix >= 0 && ix < w
    };
    let lo = (0..g.wo).find(|&ox| inside(ox)).unwrap_or(g.wo);
    let hi = (lo..g.wo).find(|&ox| !inside(ox)).unwrap_or(g.wo);
    for (oy, d) in dst.chunks_exact_mut(g.wo).enumerate() {
        let iy = (oy * g.stride + ky) as isize - pad;
        if iy < 0 || iy >= g.h as isize {
            for v in d.iter_mut() {
                *v = zero;
            }
            continue;
        }
        let srow = &src[iy as usize * g.w..][..g.w];
        for v in &mut d[..lo] {
            *v = zero;
        }
        for v in &mut d[hi..] {
            *v = zero;
        }
        if lo < hi {
            let ix0 = lo * g.stride + kx - g.pad;
            if g.stride == 1 {
                d[lo..hi].copy_from_slice(&srow[ix0..ix0 + (hi - lo)]);
            } else {
                for (j, o) in d[lo..hi].iter_mut().enumerate() {
                    *o = srow[ix0 + j * g.stride];
                }
            }
        }
    }
}

impl Layer for FpgaLayer {
    fn name(&self) -> &str {
        &self.name
    }
    fn describe(&self) -> String {
        format!(
            "fpga {} acts {} weights {} ({:?})",
            if self.linear { "linear" } else { "conv" },
            self.acts,
            self.weights.format,
            self.mode
        )
    }
    fn output_shape(&self, _inputs: &[&[usize]]) -> Result<Vec<usize>, NnError> {
        Ok(self.out_shape())
    }
    fn forward(
        &mut self,
        _ctx: &mut Ctx<'_>,
        inputs: &[&Tensor],
        _train: bool,
    ) -> Result<Tensor, NnError> {
        let x = inputs
            .first()
            .ok_or_else(|| NnError::shape(&self.name, "no input".to_string()))?;
        let per = self.geo.cin * self.geo.h * self.geo.w;
        let b = x.shape.first().copied().unwrap_or(0);
        if x.data.len() != b * per {
            return Err(NnError::shape(
                &self.name,
                format!("input {:?} does not hold {per} values per example", x.shape),
            ));
        }
        let y = match self.mode {
            Mode::Reference => self.forward_reference(&x.data, b)?,
            _ => self.forward_fast(&x.data, b)?,
        };
        let mut shape = vec![b];
        shape.extend(self.out_shape());
        Tensor::new(y, shape)
    }
    fn backward(&mut self, _ctx: &mut Ctx<'_>, _dy: Tensor) -> Result<Vec<Tensor>, NnError> {
        Err(NnError::shape(
            &self.name,
            "the integer engine is inference only (retrain with `lowprec retrain`)".to_string(),
        ))
    }
}

/// The quantised network, ready to run.
pub struct Engine {
    pub model: Model,
    pub mode: Mode,
    /// Per node: whether it is an FPGA layer.
    pub quantized: Vec<bool>,
    last_use: Vec<usize>,
    precision: Precision,
}

impl Engine {
    pub fn new(qm: &QuantizedModel, mode: Mode) -> Result<Self, InferError> {
        let spec = qm.network()?;
        let mut plan = HashMap::new();
        if mode != Mode::Float {
            for l in &qm.layers {
                let wname = format!("{}.weight", l.name);
                match (&l.weights, &l.acts, qm.packed.get(&wname)) {
                    (NumberFormat::F32, NumberFormat::F32, _) => {}
                    (NumberFormat::Fpga(_), NumberFormat::Fpga(a), Some(PackedWeights::Fpga(t))) => {
                        let bias = qm
                            .tensors
                            .get(&format!("param/{}.bias", l.name))
                            .map(|(_, v)| v.clone());
                        plan.insert(
                            l.name.clone(),
                            Init::Fpga(FpgaInit {
                                acts: *a,
                                weights: t.clone(),
                                bias,
                                mode,
                            }),
                        );
                    }
                    (
                        NumberFormat::LowBit(_),
                        NumberFormat::LowBit(a),
                        Some(PackedWeights::LowBit(t)),
                    ) => {
                        let bias = qm
                            .tensors
                            .get(&format!("param/{}.bias", l.name))
                            .map(|(_, v)| v.clone());
                        plan.insert(
                            l.name.clone(),
                            Init::LowBit(LowBitInit {
                                acts: *a,
                                weights: t.clone(),
                                bias,
                                reference: mode == Mode::Reference,
                            }),
                        );
                    }
                    (w, a, _) => {
                        return Err(InferError::Unsupported(format!(
                            "layer {}: weights {w} with activations {a}: the engine runs FPGA BFP weights with FPGA BFP activations, low-bit weights (ternary, wrpn<k>, twn, binary) with k-bit activations (a<k>), or fp32 with fp32",
                            l.name
                        )))
                    }
                }
            }
        }
        PLAN.with(|p| *p.borrow_mut() = plan);
        let built = Model::build_with_fusion(&spec, 0, factory, false);
        let left: Vec<String> = PLAN.with(|p| p.borrow_mut().drain().map(|(k, _)| k).collect());
        let mut model = built.map_err(|e| InferError::File(format!("network: {e}")))?;
        if let Some(n) = left.first() {
            return Err(InferError::File(format!(
                "layer {n} of the model file is not a layer of the network"
            )));
        }
        for p in model.params_mut() {
            let key = format!("param/{}", p.name);
            let (_, v) = qm
                .tensors
                .get(&key)
                .ok_or_else(|| InferError::File(format!("tensor {key} is missing")))?;
            p.value.clone_from(v);
        }
        for (name, b) in model.buffers_mut() {
            let key = format!("buffer/{name}");
            let (_, v) = qm
                .tensors
                .get(&key)
                .ok_or_else(|| InferError::File(format!("tensor {key} is missing")))?;
            b.clone_from(v);
        }
        let quantized = model
            .nodes
            .iter()
            .map(|n| {
                let d = n.layer.describe();
                d.starts_with("fpga ") || d.starts_with("lowbit ")
            })
            .collect();
        let mut last_use = vec![0usize; model.nodes.len() + 1];
        for (i, n) in model.nodes.iter().enumerate() {
            for &v in &n.inputs {
                last_use[v] = i;
            }
        }
        Ok(Engine {
            model,
            mode,
            quantized,
            last_use,
            precision: Precision::fp32(),
        })
    }

    /// Runs every node; with `keep`, returns every value (0 = input), else only the output.
    pub fn run(&mut self, x: Tensor, keep: bool) -> Result<Vec<Tensor>, InferError> {
        let backend = CpuBackend;
        let mut ctx = Ctx::new(&backend, &self.precision, 0);
        let n = self.model.nodes.len();
        let mut values: Vec<Option<Tensor>> = Vec::with_capacity(n + 1);
        values.push(Some(x));
        for i in 0..n {
            let node = &mut self.model.nodes[i];
            let ins: Vec<&Tensor> = node
                .inputs
                .iter()
                .map(|&v| values[v].as_ref().expect("kept until its last reader"))
                .collect();
            let out = node.layer.forward(&mut ctx, &ins, false)?;
            values.push(Some(out));
            if !keep {
                for &v in &self.model.nodes[i].inputs {
                    if self.last_use[v] == i {
                        values[v] = None;
                    }
                }
            }
        }
        Ok(if keep {
            values.into_iter().map(|v| v.expect("kept")).collect()
        } else {
            vec![values.pop().flatten().expect("output")]
        })
    }

    /// The network's output for `x`.
    pub fn forward(&mut self, x: Tensor) -> Result<Tensor, InferError> {
        Ok(self.run(x, false)?.pop().expect("one output"))
    }

    /// Node names, in order.
    pub fn node_names(&self) -> Vec<String> {
        self.model
            .nodes
            .iter()
            .map(|n| n.layer.name().to_string())
            .collect()
    }
}
