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
