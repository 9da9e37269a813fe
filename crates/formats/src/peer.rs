//! The reference formats peers offer, for comparisons: fixed point and small floats
//! (fp16, bf16, fp8 e4m3/e5m2, any `float<E>m<M>`), with the same rounding modes and the same
//! counter-based stochastic rounding as BFP.

use rayon::prelude::*;

use crate::bfp::floor_log2_bits;
use crate::format::{pow2, FixedFormat, FloatFormat, Rounding};
use crate::layout::BlockLayout;
use crate::rng::{uniform24, StreamKey};
use crate::run::{quantize_run, OutRun};
use crate::scalar::{quantize_scalar_ref, round_scaled_f32, ScaledInt};
use crate::QuantError;

const CHUNK: usize = 1 << 14;

fn check_finite(x: &[f32], tensor: &str) -> Result<(), QuantError> {
    match x.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(QuantError::NonFinite {
            tensor: tensor.to_string(),
            index: i,
            value: x[i],
        }),
        None => Ok(()),
    }
}

fn fixed_params(fmt: &FixedFormat) -> ScaledInt {
    let (lo, hi) = fmt.mantissa_range();
    ScaledInt {
        k: fmt.fl,
        lo,
        hi,
        rounding: fmt.rounding,
    }
}

/// Fixed point, fake-quantised: `out = clamp(R(x * 2^fl)) * 2^-fl`.
pub fn fake_quantize_fixed(
    x: &[f32],
    fmt: &FixedFormat,
    key: StreamKey,
    tensor: &str,
    out: &mut [f32],
) -> Result<(), QuantError> {
    fmt.validate().map_err(QuantError::Format)?;
    if out.len() != x.len() {
        return Err(QuantError::Shape(format!(
            "{tensor}: output has {} elements, input {}",
            out.len(),
            x.len()
        )));
    }
    check_finite(x, tensor)?;
    let p = fixed_params(fmt);
    x.par_chunks(CHUNK)
        .zip(out.par_chunks_mut(CHUNK))
        .enumerate()
        .for_each(|(c, (xs, os))| quantize_run(xs, OutRun::F32(os), &p, key, (c * CHUNK) as u64));
    Ok(())
}

/// Fixed point as integers `q` (value `q * 2^-fl`).
pub fn quantize_fixed(
    x: &[f32],
    fmt: &FixedFormat,
    key: StreamKey,
    tensor: &str,
) -> Result<Vec<i32>, QuantError> {
    fmt.validate().map_err(QuantError::Format)?;
    check_finite(x, tensor)?;
    let p = fixed_params(fmt);
    let mut q = vec![0i32; x.len()];
    x.par_chunks(CHUNK)
        .zip(q.par_chunks_mut(CHUNK))
        .enumerate()
        .for_each(|(c, (xs, os))| quantize_run(xs, OutRun::I32(os), &p, key, (c * CHUNK) as u64));
    Ok(q)
}

/// Reference fixed-point quantiser (f64, element by element).
pub fn quantize_fixed_ref(x: &[f32], fmt: &FixedFormat, key: StreamKey) -> Vec<i32> {
    let p = fixed_params(fmt);
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            let u = if fmt.rounding.is_stochastic() {
                uniform24(key, i as u64)
            } else {
                0
            };
            quantize_scalar_ref(v, &p, u)
        })
        .collect()
}

/// The per-element parameters of a small float for a value with raw bits `bits`.
#[inline]
fn float_params(fmt: &FloatFormat, bits: u32) -> ScaledInt {
    let m = fmt.man_bits as i32;
    let e = if bits & 0x7fff_ffff == 0 {
        fmt.emin()
    } else {
        floor_log2_bits(bits).max(fmt.emin())
    };
    // Mantissa integers span [2^m, 2^(m+1)) in a binade; rounding may reach 2^(m+1), the next
    // binade's first value, which is representable too. Saturation is applied to the value.
    let lim = 1i32 << (m + 1);
    ScaledInt {
        k: m - e,
        lo: -lim,
        hi: lim,
        rounding: fmt.rounding,
    }
}

/// Small float, fake-quantised (values saturate at +-max_finite; subnormals kept).
pub fn fake_quantize_float(
    x: &[f32],
    fmt: &FloatFormat,
    key: StreamKey,
    tensor: &str,
    out: &mut [f32],
) -> Result<(), QuantError> {
    fmt.validate().map_err(QuantError::Format)?;
    if out.len() != x.len() {
        return Err(QuantError::Shape(format!(
            "{tensor}: output has {} elements, input {}",
            out.len(),
            x.len()
        )));
    }
    check_finite(x, tensor)?;
    let maxf = fmt.max_finite();
    let sr = fmt.rounding == Rounding::Stochastic;
    x.par_chunks(CHUNK)
        .zip(out.par_chunks_mut(CHUNK))
        .enumerate()
        .for_each(|(c, (xs, os))| {
            for (j, (&v, o)) in xs.iter().zip(os.iter_mut()).enumerate() {
                let p = float_params(fmt, v.to_bits());
                let r = if sr {
                    uniform24(key, (c * CHUNK + j) as u64)
                } else {
                    0
                };
                let q = round_scaled_f32(v, &p, p.factors(), r);
                *o = (q * p.ulp()).clamp(-maxf, maxf);
            }
        });
    Ok(())
}

/// Reference small-float quantiser (f64 arithmetic, element by element).
pub fn quantize_float_ref(x: &[f32], fmt: &FloatFormat, key: StreamKey) -> Vec<f32> {
    let maxf = fmt.max_finite() as f64;
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            let p = float_params(fmt, v.to_bits());
            let u = if fmt.rounding.is_stochastic() {
                uniform24(key, i as u64)
            } else {
                0
            };
            let q = quantize_scalar_ref(v, &p, u) as f64;
            ((q * 2f64.powi(-p.k)).clamp(-maxf, maxf) as f32) + 0.0
        })
        .collect()
}

/// Whether `v` is exactly representable in `fmt` (used by the exhaustive tests).
pub fn float_representable(v: f32, fmt: &FloatFormat) -> bool {
    if !v.is_finite() || v.abs() > fmt.max_finite() {
        return false;
    }
    if v == 0.0 {
        return true;
    }
    let p = float_params(fmt, v.to_bits());
    let y = v as f64 * 2f64.powi(p.k);
    y == y.trunc() && pow2(0) == 1.0
}

/// Applies a [`BlockLayout`]-free check that `shape` matches `x` (peers have no blocks).
pub fn check_shape(x: &[f32], shape: &[usize], tensor: &str) -> Result<(), QuantError> {
    let l = BlockLayout::new(shape, crate::format::Block::Tensor)?;
    if l.len() != x.len() {
        return Err(QuantError::Shape(format!(
            "{tensor}: {} elements but shape {shape:?}",
            x.len()
        )));
    }
    Ok(())
}
