//! The FPGA dot-product engine as the hardware computes it (`lowprec_formats::fpga` formats).
//!
//! Model: both operands are cut along K into blocks of `c_vector` elements, each block with its
//! own power-of-two scale `2^ea` (activations, per row) and `2^ew` (weights, per output).
//! For every output, each block's dot product is an exact integer sum of mantissa products; it
//! becomes `isum * 2^(ea + ew)` in FP32 (rounded to nearest-even when `|isum| > 2^24`, exact
//! otherwise; the scale is a power of two and never under- or overflows here) and is added to
//! an FP32 accumulator that starts at +0, in block order, each addition rounded to
//! nearest-even. Bias and the FP16 output conversion belong to the caller.
//!
//! [`block_gemm_ref`] computes exactly that, output by output. [`block_gemm`] runs the same
//! arithmetic on the segmented integer GEMM ([`crate::gemm_q`]: i32 sums per K segment, f32
//! epilogue `acc += (isum * sa) * sb` in segment order), which is the engine when the segment
//! is the block; tests compare the two bit for bit on every kernel family.
//!
//! [`block_gemm_cols`] is the same engine with the operands the other way round (weights as
//! the rows of A, activations as the columns of B, block scales already as f32): an
//! inference layer's pixels then fill the GEMM's wide dimension and its im2col matrix is built
//! from whole map rows. The epilogue is `acc += (isum * sw) * sa` there; both scales are powers
//! of two and every product stays in the normal f32 range, so that is the value of
//! `isum * 2^(ea + ew)` bit for bit.

use crate::pack::QElem;
use crate::types::{GemmSpec, MatMut, MatRef, QMatRef, Scales};
use crate::{qgemm, Isa, KernelError};

/// One operand: `rows x k` mantissas (row-major, `k` a multiple of the block), and the log2
/// scale of every block (`rows x k / c_vector`, row-major). `max_abs` bounds the mantissas.
#[derive(Clone, Copy, Debug)]
pub struct BlockOperand<'a, T> {
    pub mant: &'a [T],
    pub rows: usize,
    pub k: usize,
    pub exps: &'a [i32],
    pub max_abs: u32,
}

fn pow2(k: i32) -> Result<f32, KernelError> {
    if !(-126..=127).contains(&k) {
        return Err(KernelError::Range(format!(
            "block scale 2^{k} is outside the normal f32 range"
        )));
    }
    Ok(f32::from_bits(((k + 127) as u32) << 23))
}

fn validate<T>(
    a: &BlockOperand<'_, T>,
    w: &BlockOperand<'_, T>,
    cv: usize,
    out: &[f32],
) -> Result<(), KernelError> {
    if cv == 0 {
        return Err(KernelError::Shape("c_vector must be >= 1".into()));
    }
    if a.k != w.k {
        return Err(KernelError::Shape(format!(
            "activations have K = {} but weights K = {}",
            a.k, w.k
        )));
    }
    if !a.k.is_multiple_of(cv) {
        return Err(KernelError::Shape(format!(
            "K = {} is not a multiple of c_vector {cv} (pad the channels)",
            a.k
        )));
    }
    let nb = a.k / cv;
    for (name, o) in [("activations", a), ("weights", w)] {
        if o.mant.len() != o.rows * o.k {
            return Err(KernelError::Shape(format!(
                "{name}: {} mantissas for {}x{}",
                o.mant.len(),
                o.rows,
                o.k
            )));
        }
        if o.exps.len() != o.rows * nb {
            return Err(KernelError::Shape(format!(
                "{name}: {} block exponents for {} rows of {nb} blocks",
                o.exps.len(),
                o.rows
            )));
        }
    }
    if out.len() != a.rows * w.rows {
        return Err(KernelError::Shape(format!(
            "output has {} values, {}x{} expected",
            out.len(),
            a.rows,
            w.rows
        )));
    }
    Ok(())
}

/// Reference engine: `out[i * n + j]` = the FP32 block-order sum for activation row `i` and
/// weight row (output) `j`.
pub fn block_gemm_ref<T: Copy + Into<i32>>(
    a: &BlockOperand<'_, T>,
    w: &BlockOperand<'_, T>,
    cv: usize,
    out: &mut [f32],
) -> Result<(), KernelError> {
    validate(a, w, cv, out)?;
    let nb = a.k / cv;
    for i in 0..a.rows {
        for j in 0..w.rows {
            let mut acc = 0f32;
            for b in 0..nb {
                let mut isum: i64 = 0;
                for kk in b * cv..(b + 1) * cv {
                    let x: i32 = a.mant[i * a.k + kk].into();
                    let y: i32 = w.mant[j * w.k + kk].into();
                    if x.unsigned_abs() > a.max_abs || y.unsigned_abs() > w.max_abs {
                        return Err(KernelError::Range(format!(
                            "mantissa beyond its bound at row {i} / output {j}, k {kk}"
                        )));
                    }
                    isum += (x as i64) * (y as i64);
                }
                let e = a.exps[i * nb + b] + w.exps[j * nb + b];
                acc += (isum as f64 * 2f64.powi(e)) as f32;
            }
            out[i * w.rows + j] = acc;
        }
    }
    Ok(())
}

fn scales_of<T>(o: &BlockOperand<'_, T>, nb: usize) -> Result<Vec<f32>, KernelError> {
    // laid out (segment, row) for `Scales { group: 1, seg_stride: rows }`
    let mut v = vec![0f32; nb * o.rows];
    for r in 0..o.rows {
        for b in 0..nb {
            v[b * o.rows + r] = pow2(o.exps[r * nb + b])?;
        }
    }
    Ok(v)
}

macro_rules! block_gemm_fn {
    ($name:ident, $t:ty) => {
        /// The engine on the segmented integer GEMM of kernel family `isa` (threads from the
        /// current rayon pool, never splitting K): the same bits as [`block_gemm_ref`].
        pub fn $name(
            isa: Isa,
            a: &BlockOperand<'_, $t>,
            w: &BlockOperand<'_, $t>,
            cv: usize,
            out: &mut [f32],
        ) -> Result<(), KernelError> {
            validate(a, w, cv, out)?;
            let nb = a.k / cv;
            let (m, n, k) = (a.rows, w.rows, a.k);
            if m == 0 || n == 0 {
                return Ok(());
            }
            if k == 0 {
                out.fill(0.0);
                return Ok(());
            }
            let (va, vw) = (scales_of(a, nb)?, scales_of(w, nb)?);
            let aq = QMatRef {
                mat: MatRef::row_major(a.mant, m, k)?,
                scales: Scales {
                    values: &va,
                    group: 1,
                    seg_stride: m,
                },
                max_abs: a.max_abs,
            };
            let wq = QMatRef {
                mat: MatRef::row_major(w.mant, n, k)?.t(),
                scales: Scales {
                    values: &vw,
                    group: 1,
                    seg_stride: n,
                },
                max_abs: w.max_abs,
            };
            let spec = GemmSpec {
                segment: cv,
                accumulate: false,
            };
            qgemm::gemm_q(isa, aq, wq, spec, MatMut::row_major(out, m, n)?)
        }
    };
}

block_gemm_fn!(block_gemm_i8_with, i8);
block_gemm_fn!(block_gemm_i16_with, i16);

/// [`block_gemm_i8_with`] on the fastest kernels this CPU runs (mantissas of up to 8 bits).
pub fn block_gemm_i8(
    a: &BlockOperand<'_, i8>,
    w: &BlockOperand<'_, i8>,
    cv: usize,
    out: &mut [f32],
) -> Result<(), KernelError> {
    block_gemm_i8_with(Isa::detect(), a, w, cv, out)
}

/// [`block_gemm_i16_with`] on the fastest kernels this CPU runs (9..16-bit mantissas).
pub fn block_gemm_i16(
    a: &BlockOperand<'_, i16>,
    w: &BlockOperand<'_, i16>,
    cv: usize,
    out: &mut [f32],
) -> Result<(), KernelError> {
    block_gemm_i16_with(Isa::detect(), a, w, cv, out)
}

/// An operand of [`block_gemm_cols`]: `mant` is `rows x k` row-major (`cols == false`: the
/// weights, one output per row) or `k x cols` row-major (`cols == true`: the activations, one
/// output pixel per column); `scales[b * len + i]` is the f32 scale (a power of two) of block
/// `b` of row / column `i`, `len` being `rows` or `cols`.
#[derive(Clone, Copy, Debug)]
pub struct ScaledOperand<'a, T> {
    pub mant: &'a [T],
    /// Rows (weights) or columns (activations).
    pub len: usize,
    pub k: usize,
    pub scales: &'a [f32],
    pub max_abs: u32,
}

/// `out[o * a.len + j]`: the block-order FP32 sum for weight row `o` and activation column `j`,
/// blocks of `block` values along K (any length >= 1: a layer whose channels fit one
/// `c_vector` block needs no zero padding). Runs on the segmented integer GEMM of family `isa`
/// (threads from the current rayon pool, never splitting K). Scales must be powers of two with
/// `|isum| * sw * sa` and `|isum| * sw` inside the normal f32 range (FPGA BFP's 5-bit exponents
/// keep them there); then the bits are those of [`block_gemm_ref`] on the same blocks.
pub fn block_gemm_cols<T: QElem>(
    isa: Isa,
    w: &ScaledOperand<'_, T>,
    a: &ScaledOperand<'_, T>,
    block: usize,
    out: &mut [f32],
) -> Result<(), KernelError> {
    if block == 0 {
        return Err(KernelError::Shape("block must be >= 1".into()));
    }
    if w.k != a.k || !w.k.is_multiple_of(block) {
        return Err(KernelError::Shape(format!(
            "weights K = {}, activations K = {}: both must be one multiple of the block {block}",
            w.k, a.k
        )));
    }
    let nb = w.k / block;
    for (name, o) in [("weights", w), ("activations", a)] {
        if o.mant.len() != o.len * o.k || o.scales.len() != o.len * nb {
            return Err(KernelError::Shape(format!(
                "{name}: {} mantissas and {} scales for {} x {} in {nb} blocks",
                o.mant.len(),
                o.scales.len(),
                o.len,
                o.k
            )));
        }
    }
    if block > crate::types::k_safe(w.max_abs, a.max_abs) {
        return Err(KernelError::Range(format!(
            "a block of {block} products of magnitude {} x {} could overflow the i32 sum",
            w.max_abs, a.max_abs
        )));
    }
    let (m, n, k) = (w.len, a.len, w.k);
    if out.len() != m * n {
        return Err(KernelError::Shape(format!(
            "output has {} values, {m}x{n} expected",
            out.len()
        )));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        out.fill(0.0);
        return Ok(());
    }
    let wq = QMatRef {
        mat: MatRef::row_major(w.mant, m, k)?,
        scales: Scales {
            values: w.scales,
            group: 1,
            seg_stride: m,
        },
        max_abs: w.max_abs,
    };
    let aq = QMatRef {
        mat: MatRef::row_major(a.mant, k, n)?,
        scales: Scales {
            values: a.scales,
            group: 1,
            seg_stride: n,
        },
        max_abs: a.max_abs,
    };
    let spec = GemmSpec {
        segment: block,
        accumulate: false,
    };
    qgemm::gemm_q(isa, wq, aq, spec, MatMut::row_major(out, m, n)?)
}

/// The shape of a block convolution ([`block_conv`]): `examples` maps of `h x w` pixels, a
/// `k x k` kernel at `stride` with `pad` zero pixels round the map. A linear layer is a 1x1
/// convolution over a `1 x batch` map (its examples are the pixels).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    pub examples: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub ho: usize,
    pub wo: usize,
}

impl ConvShape {
    pub fn new(
        examples: usize,
        h: usize,
        w: usize,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> Result<ConvShape, KernelError> {
        if k == 0 || stride == 0 || pad >= k || h + 2 * pad < k || w + 2 * pad < k {
            return Err(KernelError::Shape(format!(
                "convolution of {h}x{w} maps with kernel {k}, stride {stride}, padding {pad}"
            )));
        }
        Ok(ConvShape {
            examples,
            h,
            w,
            k,
            stride,
            pad,
            ho: (h + 2 * pad - k) / stride + 1,
            wo: (w + 2 * pad - k) / stride + 1,
        })
    }

    fn taps(&self) -> usize {
        self.k * self.k
    }

    /// Stride 1, output as large as the input: output pixel `p` reads input pixel `p + d` at
    /// every tap (`d` the tap's offset), the columns that wrap round being padding.
    fn is_same(&self) -> bool {
        self.stride == 1 && (self.ho, self.wo) == (self.h, self.w)
    }
}

/// A scale that is a power of two whose products with any other such scale and any block sum
/// stay normal and finite in f32.
fn scale_ok(s: f32) -> bool {
    let b = s.to_bits();
    let e = (b >> 23) as i32 - 127;
    b & 0x807f_ffff == 0 && (-60..=60).contains(&e)
}

/// The weights of a [`block_conv`]: `cout` outputs; per tap `blocks` blocks of `quads` groups
/// of 4 input channels (a block's channels padded with zero weights to whole groups).
#[derive(Clone, Debug)]
pub struct ConvWeights {
    cout: usize,
    taps: usize,
    blocks: usize,
    quads: usize,
    /// `[oc][tap][block][quad]`: 4 signed mantissas, channel order, in one dword.
    mant: Vec<i32>,
    /// `[oc][tap * blocks + block]`: `-128 * sum of the block's mantissas`, the start of the
    /// kernel's biased block sum.
    init: Vec<i32>,
    /// `[oc][tap * blocks + block]`: the block's scale.
    scales: Vec<f32>,
}

impl ConvWeights {
    /// `mant`: `[cout][taps][blocks * quads * 4]`; `scales`: `[cout][taps * blocks]`, powers
    /// of two between `2^-60` and `2^60`.
    pub fn new(
        mant: &[i8],
        scales: &[f32],
        cout: usize,
        taps: usize,
        blocks: usize,
        quads: usize,
    ) -> Result<ConvWeights, KernelError> {
        let kq = blocks * quads;
        if mant.len() != cout * taps * kq * 4 || scales.len() != cout * taps * blocks {
            return Err(KernelError::Shape(format!(
                "conv weights: {} mantissas and {} scales for {cout} outputs, {taps} taps, \
                 {blocks} blocks of {quads} quads",
                mant.len(),
                scales.len()
            )));
        }
        if let Some(s) = scales.iter().find(|&&s| !scale_ok(s)) {
            return Err(KernelError::Range(format!(
                "conv weights: scale {s} is not a power of two in [2^-60, 2^60]"
            )));
        }
        let dw: Vec<i32> = mant
            .chunks_exact(4)
            .map(|q| i32::from_le_bytes([q[0] as u8, q[1] as u8, q[2] as u8, q[3] as u8]))
            .collect();
        let init = mant
            .chunks_exact(quads * 4)
            .map(|b| -128 * b.iter().map(|&v| v as i32).sum::<i32>())
            .collect();
        Ok(ConvWeights {
            cout,
            taps,
            blocks,
            quads,
            mant: dw,
            init,
            scales: scales.to_vec(),
        })
    }

    fn byte(&self, oc: usize, tap: usize, slot: usize, j: usize) -> i8 {
        let d = self.mant[(oc * self.taps + tap) * self.blocks * self.quads + slot];
        d.to_le_bytes()[j] as i8
    }
}

/// The maps of a [`block_conv`]: `mant` is `[examples][blocks * quads][h * w][4]` (each
/// pixel's 4 channels of a group in one dword; padding channels zero), `scales` is
/// `[examples][blocks][h * w]`, powers of two between `2^-60` and `2^60`.
#[derive(Clone, Copy, Debug)]
pub struct ConvMaps<'a> {
    pub mant: &'a [i8],
    pub scales: &'a [f32],
}

fn conv_check(
    w: &ConvWeights,
    m: &ConvMaps<'_>,
    s: &ConvShape,
    out: &[f32],
) -> Result<(), KernelError> {
    if s.taps() != w.taps {
        return Err(KernelError::Shape(format!(
            "conv: weights of {} taps for a {}x{} kernel",
            w.taps, s.k, s.k
        )));
    }
    let hw = s.h * s.w;
    let (nm, ns, no) = (
        s.examples * w.blocks * w.quads * 4 * hw,
        s.examples * w.blocks * hw,
        s.examples * w.cout * s.ho * s.wo,
    );
    if m.mant.len() != nm || m.scales.len() != ns || out.len() != no {
        return Err(KernelError::Shape(format!(
            "conv: {} mantissas, {} scales and {} outputs where the shape needs {nm}, {ns} and \
             {no}",
            m.mant.len(),
            m.scales.len(),
            out.len()
        )));
    }
    if let Some(v) = m.scales.iter().find(|&&v| !scale_ok(v)) {
        return Err(KernelError::Range(format!(
            "conv maps: scale {v} is not a power of two in [2^-60, 2^60]"
        )));
    }
    Ok(())
}

/// Reference block convolution: `out[n][oc][oy * wo + ox]` starts at +0 and, tap by tap
/// (row-major), block by block, adds `(isum * sw) * sa` in FP32, `isum` the exact integer sum of
/// the block's products and `sw`, `sa` the weights' and the input pixel's block scales; taps
/// over padding add nothing. The block-order engine of this module on an im2col matrix.
pub fn block_conv_ref(
    w: &ConvWeights,
    m: &ConvMaps<'_>,
    s: ConvShape,
    out: &mut [f32],
) -> Result<(), KernelError> {
    conv_check(w, m, &s, out)?;
    let (hw, po, kq) = (s.h * s.w, s.ho * s.wo, w.blocks * w.quads);
    for n in 0..s.examples {
        for oc in 0..w.cout {
            for oy in 0..s.ho {
                for ox in 0..s.wo {
                    let mut acc = 0f32;
                    for ky in 0..s.k {
                        for kx in 0..s.k {
                            let iy = (oy * s.stride + ky) as isize - s.pad as isize;
                            let ix = (ox * s.stride + kx) as isize - s.pad as isize;
                            if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize {
                                continue;
                            }
                            let p = iy as usize * s.w + ix as usize;
                            let tap = ky * s.k + kx;
                            for b in 0..w.blocks {
                                let mut isum = 0i64;
                                for slot in b * w.quads..(b + 1) * w.quads {
                                    for j in 0..4 {
                                        let a = m.mant[((n * kq + slot) * hw + p) * 4 + j];
                                        isum += a as i64 * w.byte(oc, tap, slot, j) as i64;
                                    }
                                }
                                let sw = w.scales[oc * w.taps * w.blocks + tap * w.blocks + b];
                                let sa = m.scales[(n * w.blocks + b) * hw + p];
                                acc += (isum as f32 * sw) * sa;
                            }
                        }
                    }
                    out[(n * w.cout + oc) * po + oy * s.wo + ox] = acc;
                }
            }
        }
    }
    Ok(())
}

/// Whether [`block_conv`] runs its AVX-512 VNNI kernel here (CPU and `LOWPREC_ISA` cap).
pub fn block_conv_available() -> bool {
    Isa::detect() == Isa::Avx512Vnni
}

/// [`block_conv_ref`]'s bits, on the AVX-512 VNNI kernel where [`block_conv_available`] (on the
/// reference elsewhere): 16 output pixels per vector, up to 12 outputs per register tile whose
/// FP32 accumulators stay in registers over all taps and blocks; block sums by `vpdpbusd` on the
/// maps biased to unsigned bytes, the bias removed by starting each sum at
/// `-128 * sum of the block's weights`; `acc = fma(isum, sw * sa, acc)`, which rounds once as
/// `acc + (isum * sw) * sa` does (the products of powers of two are exact). Runs on the calling
/// thread.
pub fn block_conv(
    w: &ConvWeights,
    m: &ConvMaps<'_>,
    s: ConvShape,
    out: &mut [f32],
) -> Result<(), KernelError> {
    #[cfg(target_arch = "x86_64")]
    if block_conv_available() {
        conv_check(w, m, &s, out)?;
        // SAFETY: the CPU has AVX-512 F/BW/VL and VNNI (`block_conv_available`); the buffers
        // hold what the shape needs (`conv_check`).
        unsafe { conv_avx512::run(w, m, s, out) };
        return Ok(());
    }
    block_conv_ref(w, m, s, out)
}

#[cfg(target_arch = "x86_64")]
mod conv_avx512 {
    use super::{ConvMaps, ConvShape, ConvWeights};
    use std::arch::x86_64::*;

    /// Largest register tile (outputs).
    const RMAX: usize = 12;

    /// Where a tap reads for one group of 16 output pixels.
    #[derive(Clone, Copy)]
    struct TapAt {
        /// Lanes whose input pixel is inside the map.
        mask: __mmask16,
        /// Input pixel of each lane (0 outside).
        idx: __m512i,
        /// Same convolutions: the input pixel of lane 0 (`p0 + d`, may lie outside the map).
        start: isize,
    }

    /// # Safety
    /// AVX-512 F/BW/VL and VNNI must be present; `conv_check` must have accepted the buffers.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) unsafe fn run(w: &ConvWeights, m: &ConvMaps<'_>, s: ConvShape, out: &mut [f32]) {
        let (hw, po, taps) = (s.h * s.w, s.ho * s.wo, s.taps());
        let kq = w.blocks * w.quads;
        let same = s.is_same();
        // equal tiles of at most RMAX outputs
        let ntiles = w.cout.div_ceil(RMAX).max(1);
        let mut at = vec![
            TapAt {
                mask: 0,
                idx: _mm512_setzero_si512(),
                start: 0,
            };
            taps
        ];
        for n in 0..s.examples {
            let mb = m.mant[n * kq * hw * 4..].as_ptr() as *const i32;
            let sb = m.scales[n * w.blocks * hw..].as_ptr();
            let ob = out[n * w.cout * po..].as_mut_ptr();
            let mut p0 = 0;
            while p0 < po {
                let lanes = (po - p0).min(16);
                let pmask: __mmask16 = if lanes == 16 {
                    0xffff
                } else {
                    (1u16 << lanes) - 1
                };
                let (mut oy, mut ox) = ([0i32; 16], [0i32; 16]);
                for l in 0..16 {
                    let p = p0 + l.min(lanes - 1);
                    oy[l] = (p / s.wo) as i32;
                    ox[l] = (p % s.wo) as i32;
                }
                let oyv = _mm512_mullo_epi32(
                    _mm512_loadu_si512(oy.as_ptr().cast()),
                    _mm512_set1_epi32(s.stride as i32),
                );
                let oxv = _mm512_mullo_epi32(
                    _mm512_loadu_si512(ox.as_ptr().cast()),
                    _mm512_set1_epi32(s.stride as i32),
                );
                for ky in 0..s.k {
                    for kx in 0..s.k {
                        let dy = ky as i32 - s.pad as i32;
                        let dx = kx as i32 - s.pad as i32;
                        let iy = _mm512_add_epi32(oyv, _mm512_set1_epi32(dy));
                        let ix = _mm512_add_epi32(oxv, _mm512_set1_epi32(dx));
                        let zero = _mm512_setzero_si512();
                        let mut k = pmask;
                        k &= _mm512_cmpge_epi32_mask(iy, zero);
                        k &= _mm512_cmplt_epi32_mask(iy, _mm512_set1_epi32(s.h as i32));
                        k &= _mm512_cmpge_epi32_mask(ix, zero);
                        k &= _mm512_cmplt_epi32_mask(ix, _mm512_set1_epi32(s.w as i32));
                        let idx = _mm512_maskz_add_epi32(
                            k,
                            _mm512_mullo_epi32(iy, _mm512_set1_epi32(s.w as i32)),
                            ix,
                        );
                        at[ky * s.k + kx] = TapAt {
                            mask: k,
                            idx,
                            start: p0 as isize + dy as isize * s.w as isize + dx as isize,
                        };
                    }
                }
                let g = Group {
                    w,
                    mb,
                    sb,
                    hw,
                    kq,
                    same,
                    at: &at,
                };
                let mut oc0 = 0;
                for t in 0..ntiles {
                    let oc1 = w.cout * (t + 1) / ntiles;
                    let dst = ob.add(oc0 * po + p0);
                    match oc1 - oc0 {
                        1 => g.tile::<1>(oc0, dst, po, pmask),
                        2 => g.tile::<2>(oc0, dst, po, pmask),
                        3 => g.tile::<3>(oc0, dst, po, pmask),
                        4 => g.tile::<4>(oc0, dst, po, pmask),
                        5 => g.tile::<5>(oc0, dst, po, pmask),
                        6 => g.tile::<6>(oc0, dst, po, pmask),
                        7 => g.tile::<7>(oc0, dst, po, pmask),
                        8 => g.tile::<8>(oc0, dst, po, pmask),
                        9 => g.tile::<9>(oc0, dst, po, pmask),
                        10 => g.tile::<10>(oc0, dst, po, pmask),
                        11 => g.tile::<11>(oc0, dst, po, pmask),
                        12 => g.tile::<12>(oc0, dst, po, pmask),
                        _ => {}
                    }
                    oc0 = oc1;
                }
                p0 += 16;
            }
        }
    }

    /// One group of 16 output pixels of one example.
    struct Group<'a> {
        w: &'a ConvWeights,
        /// The example's maps (dwords, `[slot][h * w]`) and scales (`[block][h * w]`).
        mb: *const i32,
        sb: *const f32,
        hw: usize,
        kq: usize,
        same: bool,
        at: &'a [TapAt],
    }

    impl Group<'_> {
        /// Outputs `oc0..oc0 + R` of the group into `dst` (`dst + r * po`: output `oc0 + r`).
        ///
        /// # Safety
        /// As [`run`]; `dst` addresses the group's first pixel of output `oc0`, and the lanes of
        /// `pmask` of the `R` outputs lie inside the output.
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
        unsafe fn tile<const R: usize>(
            &self,
            oc0: usize,
            dst: *mut f32,
            po: usize,
            pmask: __mmask16,
        ) {
            let w = self.w;
            let tb = w.taps * w.blocks;
            let flip = _mm512_set1_epi8(-128);
            let mut c = [_mm512_setzero_ps(); R];
            for (tap, at) in self.at.iter().enumerate() {
                if at.mask == 0 {
                    // every lane's input pixel is padding: the tap adds nothing
                    continue;
                }
                for b in 0..w.blocks {
                    let tbi = tap * w.blocks + b;
                    let mut acc: [__m512i; R] =
                        std::array::from_fn(|r| _mm512_set1_epi32(w.init[(oc0 + r) * tb + tbi]));
                    for q in 0..w.quads {
                        let slot = b * w.quads + q;
                        let plane = self.mb.wrapping_add(slot * self.hw);
                        let a = if self.same {
                            // masked lanes are not read, so the address may lie outside
                            _mm512_maskz_loadu_epi32(at.mask, plane.wrapping_offset(at.start))
                        } else {
                            _mm512_mask_i32gather_epi32::<4>(
                                _mm512_setzero_si512(),
                                at.mask,
                                at.idx,
                                plane,
                            )
                        };
                        let a = _mm512_xor_si512(a, flip);
                        for r in 0..R {
                            let wq = *w
                                .mant
                                .get_unchecked(((oc0 + r) * w.taps + tap) * self.kq + slot);
                            acc[r] = _mm512_dpbusd_epi32(acc[r], a, _mm512_set1_epi32(wq));
                        }
                    }
                    let splane = self.sb.wrapping_add(b * self.hw);
                    let sa = if self.same {
                        _mm512_maskz_loadu_ps(at.mask, splane.wrapping_offset(at.start))
                    } else {
                        _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), at.mask, at.idx, splane)
                    };
                    for r in 0..R {
                        let sw = _mm512_set1_ps(*w.scales.get_unchecked((oc0 + r) * tb + tbi));
                        let sc = _mm512_mul_ps(sw, sa);
                        c[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[r]), sc, c[r]);
                    }
                }
            }
            for (r, v) in c.iter().enumerate() {
                _mm512_mask_storeu_ps(dst.add(r * po), pmask, *v);
            }
        }
    }
}
