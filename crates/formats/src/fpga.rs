//! Bit-true FPGA block floating point (Intel FPGA AI Suite style): FP16 in, `c_vector` blocks
//! along the reduction (input-channel) axis, a 5-bit shared exponent, sign-magnitude or
//! two's-complement mantissas.
//!
//! The model implemented (one place, used by the quantiser, the dot-product engine in
//! `lowprec_kernels::blockdot` and the inference engine):
//! 1. Every input is first an FP16 number: an f32 is rounded to FP16 to nearest-even, finite
//!    values beyond FP16's range saturate to +-65504 (no infinities are created); NaN and Inf
//!    are errors naming the tensor and element.
//! 2. Each FP16 element has an effective biased exponent `ee` (its 5-bit exponent field; 1 for
//!    subnormals, whose scale is that of the smallest normal binade; 0 for an exact zero) and an
//!    11-bit significand `sig` (hidden bit included, none for subnormals).
//! 3. A block is `c_vector` consecutive channels at one position of the other axes (a tensor is
//!    viewed as `[outer, channels, inner]`; the last block of a row is short when `channels`
//!    is not a multiple of `c_vector`, which is what zero-padding the channels would give). Its
//!    shared exponent is `E = max ee` over the block, stored in 5 bits (0 for an all-zero
//!    block).
//! 4. With `P = width - 1` precision bits, every element is aligned to `E`: the signed
//!    significand is shifted right by `sh = (E - ee) + (11 - P)` bits and rounded:
//!    - sign-magnitude: the magnitude is shifted, then the sign applied; `truncate` drops bits
//!      (toward zero), `nearest` adds half an output step first (ties away from zero);
//!      saturated to `2^P - 1`;
//!    - two's complement: the signed value is shifted arithmetically; `truncate` is then a
//!      floor (toward minus infinity), `nearest` adds half first (ties toward plus infinity);
//!      clamped to `[-2^P, 2^P - 1]`;
//!    - `nearest-even`: ties to the even mantissa (both encodings); `stochastic` (training):
//!      `floor(y + r / 2^24)` with `r` the counter-based 24-bit draw of the element's index.
//! 5. The value of mantissa `q` in a block with exponent `E` is `q * 2^(E - 14 - P)`, exact in
//!    f32 (the mantissa's step is that of FP16 at `E` when `P = 11`, INT12-BFP).
//!
//! [`quantize_fpga_ref`] computes the same thing element by element in f64 from the values
//! (exponents by comparison with powers of two, rounding by `floor`/`round_ties_even`);
//! [`quantize_fpga`] works on FP16 bit fields with integer shifts, in parallel; tests compare
//! the two bit for bit.

use std::fmt;
use std::str::FromStr;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::format::FormatError;
use crate::rng::{uniform24, StreamKey};
use crate::QuantError;

/// How mantissas encode their sign.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MantissaCode {
    /// A sign bit and a `width - 1`-bit magnitude: `[-(2^P - 1), 2^P - 1]`.
    SignMagnitude,
    /// `width`-bit two's complement: `[-2^P, 2^P - 1]`.
    TwosComplement,
}

/// The rounding of the alignment shift, as the hardware's rounder does it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FpgaRounding {
    /// Drop the shifted-out bits (toward zero in sign-magnitude, floor in two's complement).
    Truncate,
    /// Add half an output step, then drop (ties away from zero in sign-magnitude, toward
    /// plus infinity in two's complement).
    Nearest,
    /// Round to nearest, ties to even.
    NearestEven,
    /// `floor(y + r / 2^24)`, `r` from the counter-based generator (training only).
    Stochastic,
}

impl FromStr for FpgaRounding {
    type Err = FormatError;
    fn from_str(s: &str) -> Result<Self, FormatError> {
        Ok(match s {
            "truncate" | "trunc" | "tz" => FpgaRounding::Truncate,
            "nearest" | "round" => FpgaRounding::Nearest,
            "nearest-even" | "ne" | "rne" => FpgaRounding::NearestEven,
            "stochastic" | "sr" => FpgaRounding::Stochastic,
            _ => {
                return Err(FormatError {
                    input: s.into(),
                    reason: "unknown rounding (truncate, nearest, nearest-even, stochastic)".into(),
                })
            }
        })
    }
}

impl fmt::Display for FpgaRounding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FpgaRounding::Truncate => "truncate",
            FpgaRounding::Nearest => "nearest",
            FpgaRounding::NearestEven => "nearest-even",
            FpgaRounding::Stochastic => "stochastic",
        })
    }
}

/// The `c_vector` sizes the accelerator offers.
pub const C_VECTORS: [u32; 5] = [4, 8, 16, 32, 64];
/// The default block: the FPGA AI Suite's common `c_vector`.
pub const DEFAULT_C_VECTOR: u32 = 32;
/// Exponent bits of every FPGA BFP format (FP16's exponent field).
pub const EXP_BITS: u32 = 5;

/// One FPGA BFP format. Strings: a preset name (`int4bfp`, `int5bfp`, `int7bfp`, `int8bfp`,
/// `int9bfp`, `int12bfp`) or `fpga<W>sm` / `fpga<W>tc`, each optionally followed by
/// `:c<cv>` and `:<rounding>`, e.g. `int5bfp:c16:nearest`. Defaults: `c32`, `nearest-even`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FpgaBfp {
    /// Mantissa bits including the sign, 2..=12.
    pub width: u32,
    pub code: MantissaCode,
    /// Block size along the reduction axis (one of [`C_VECTORS`]).
    pub c_vector: u32,
    pub rounding: FpgaRounding,
}

impl FpgaBfp {
    const fn preset(width: u32, code: MantissaCode) -> FpgaBfp {
        FpgaBfp {
            width,
            code,
            c_vector: DEFAULT_C_VECTOR,
            rounding: FpgaRounding::NearestEven,
        }
    }
    /// int4bfp: sign + 3-bit magnitude (the shipped flow's convolution weights).
    pub const INT4: FpgaBfp = FpgaBfp::preset(4, MantissaCode::SignMagnitude);
    /// int5bfp: sign + 4-bit magnitude (the shipped flow's activations).
    pub const INT5: FpgaBfp = FpgaBfp::preset(5, MantissaCode::SignMagnitude);
    /// INT7-BFP: 1s.6m.5e, sign-magnitude.
    pub const INT7: FpgaBfp = FpgaBfp::preset(7, MantissaCode::SignMagnitude);
    /// INT8-BFP: 8-bit two's complement.
    pub const INT8: FpgaBfp = FpgaBfp::preset(8, MantissaCode::TwosComplement);
    /// INT9-BFP: 9-bit two's complement.
    pub const INT9: FpgaBfp = FpgaBfp::preset(9, MantissaCode::TwosComplement);
    /// INT12-BFP: 1s.11m.5e, sign-magnitude (FP16's significand, aligned).
    pub const INT12: FpgaBfp = FpgaBfp::preset(12, MantissaCode::SignMagnitude);

    /// The named presets, in order of width.
    pub const PRESETS: [(&'static str, FpgaBfp); 6] = [
        ("int4bfp", FpgaBfp::INT4),
        ("int5bfp", FpgaBfp::INT5),
        ("int7bfp", FpgaBfp::INT7),
        ("int8bfp", FpgaBfp::INT8),
        ("int9bfp", FpgaBfp::INT9),
        ("int12bfp", FpgaBfp::INT12),
    ];

    pub fn validate(&self) -> Result<(), FormatError> {
        let bad = |reason: &str| {
            Err(FormatError {
                input: self.to_string(),
                reason: reason.into(),
            })
        };
        if !(2..=12).contains(&self.width) {
            return bad("FPGA BFP mantissas are 2..=12 bits including the sign");
        }
        if !C_VECTORS.contains(&self.c_vector) {
            return bad("c_vector must be 4, 8, 16, 32 or 64");
        }
        Ok(())
    }

    /// Precision bits `P` (magnitude bits in sign-magnitude).
    pub fn precision_bits(&self) -> u32 {
        self.width - 1
    }

    /// Mantissa range `(lo, hi)`.
    pub fn mantissa_range(&self) -> (i32, i32) {
        let hi = (1i32 << self.precision_bits()) - 1;
        match self.code {
            MantissaCode::SignMagnitude => (-hi, hi),
            MantissaCode::TwosComplement => (-hi - 1, hi),
        }
    }

    /// Largest mantissa magnitude.
    pub fn max_abs(&self) -> u32 {
        let (lo, _) = self.mantissa_range();
        lo.unsigned_abs()
    }

    /// `log2` of the step of a block with stored exponent `e`: `e - 14 - P`.
    pub fn scale_log2(&self, e: u8) -> i32 {
        e as i32 - 14 - self.precision_bits() as i32
    }

    /// The step `2^(e - 14 - P)` as f32 (exact).
    pub fn scale(&self, e: u8) -> f32 {
        crate::format::pow2(self.scale_log2(e))
    }

    /// Preset name when this is one (ignoring block and rounding).
    pub fn preset_name(&self) -> Option<&'static str> {
        FpgaBfp::PRESETS
            .iter()
            .find(|(_, p)| p.width == self.width && p.code == self.code)
            .map(|(n, _)| *n)
    }

    /// Parses `head` (already split from its options) and `opts`.
    pub fn parse_parts(
        input: &str,
        head: &str,
        opts: &[&str],
    ) -> Result<Option<Self>, FormatError> {
        let err = |reason: String| FormatError {
            input: input.into(),
            reason,
        };
        let mut f = if let Some((_, p)) = FpgaBfp::PRESETS.iter().find(|(n, _)| *n == head) {
            *p
        } else if let Some(rest) = head.strip_prefix("fpga") {
            let (w, code) = if let Some(w) = rest.strip_suffix("sm") {
                (w, MantissaCode::SignMagnitude)
            } else if let Some(w) = rest.strip_suffix("tc") {
                (w, MantissaCode::TwosComplement)
            } else {
                return Err(err("fpga<W>sm or fpga<W>tc, e.g. fpga6sm".into()));
            };
            let width = w
                .parse()
                .map_err(|_| err("fpga<W>sm|tc needs a mantissa width".into()))?;
            FpgaBfp::preset(width, code)
        } else {
            return Ok(None);
        };
        let (mut seen_c, mut seen_r) = (false, false);
        for p in opts {
            if let Some(c) = p.strip_prefix('c').filter(|c| c.parse::<u32>().is_ok()) {
                if seen_c {
                    return Err(err("c_vector given twice".into()));
                }
                seen_c = true;
                f.c_vector = c.parse().expect("checked");
            } else if let Ok(r) = p.parse::<FpgaRounding>() {
                if seen_r {
                    return Err(err("rounding given twice".into()));
                }
                seen_r = true;
                f.rounding = r;
            } else {
                return Err(err(format!(
                    "unknown option `{p}` (c<cv>; truncate, nearest, nearest-even, stochastic)"
                )));
            }
        }
        f.validate().map_err(|e| err(e.reason))?;
        Ok(Some(f))
    }
}

impl FromStr for FpgaBfp {
    type Err = FormatError;
    fn from_str(input: &str) -> Result<Self, FormatError> {
        let s = input.trim().to_ascii_lowercase();
        let parts: Vec<&str> = s.split(':').collect();
        FpgaBfp::parse_parts(input, parts[0], &parts[1..])?.ok_or_else(|| FormatError {
            input: input.into(),
            reason: "not an FPGA BFP format (int4bfp, int5bfp, int7bfp, int8bfp, int9bfp, int12bfp, fpga<W>sm, fpga<W>tc)".into(),
        })
    }
}

impl fmt::Display for FpgaBfp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.preset_name() {
            Some(n) => f.write_str(n)?,
            None => {
                let c = match self.code {
                    MantissaCode::SignMagnitude => "sm",
                    MantissaCode::TwosComplement => "tc",
                };
                write!(f, "fpga{}{c}", self.width)?
            }
        }
        write!(f, ":c{}:{}", self.c_vector, self.rounding)
    }
}

/// How a tensor is blocked: `[outer, channels, inner]`, blocks of `c_vector` along `channels`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelView {
    pub outer: usize,
    pub channels: usize,
    pub inner: usize,
}

impl ChannelView {
    /// From a shape: 1-D `[n]` is one row of channels; 2-D `[rows, cols]` blocks along the
    /// columns (a weight's input features); 3-D and more: axis 1 is the channel axis, the
    /// axes after it are `inner` (NCHW maps, `[out, in, kh, kw]` weights).
    pub fn from_shape(shape: &[usize]) -> ChannelView {
        match shape {
            [] => ChannelView {
                outer: 1,
                channels: 1,
                inner: 1,
            },
            [n] => ChannelView {
                outer: 1,
                channels: *n,
                inner: 1,
            },
            [r, c] => ChannelView {
                outer: *r,
                channels: *c,
                inner: 1,
            },
            [o, c, rest @ ..] => ChannelView {
                outer: *o,
                channels: *c,
                inner: rest.iter().product(),
            },
        }
    }
    pub fn len(&self) -> usize {
        self.outer * self.channels * self.inner
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Channel blocks per row.
    pub fn blocks_per_row(&self, cv: u32) -> usize {
        self.channels.div_ceil(cv as usize)
    }
    /// Number of blocks: `outer * blocks_per_row * inner`, ordered (outer, block, inner).
    pub fn num_blocks(&self, cv: u32) -> usize {
        self.outer * self.blocks_per_row(cv) * self.inner
    }
}

/// A tensor in FPGA BFP: one mantissa per element (element order of the input) and one 5-bit
/// exponent per block, blocks ordered `(outer, channel block, inner)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FpgaTensor {
    pub format: FpgaBfp,
    pub view: ChannelView,
    pub mantissas: Vec<i16>,
    pub exponents: Vec<u8>,
}

impl FpgaTensor {
    /// Block index of element `(o, c, i)`.
    pub fn block_of(&self, o: usize, c: usize, i: usize) -> usize {
        let nb = self.view.blocks_per_row(self.format.c_vector);
        (o * nb + c / self.format.c_vector as usize) * self.view.inner + i
    }
    /// The values represented, as f32 (exact).
    pub fn dequantize(&self) -> Vec<f32> {
        let v = self.view;
        let mut out = vec![0f32; v.len()];
        for o in 0..v.outer {
            for c in 0..v.channels {
                for i in 0..v.inner {
                    let idx = (o * v.channels + c) * v.inner + i;
                    let e = self.exponents[self.block_of(o, c, i)];
                    out[idx] = self.mantissas[idx] as f32 * self.format.scale(e);
                }
            }
        }
        out
    }
}

/// FP16 bits of `x` rounded to nearest-even, finite values beyond FP16 saturating to +-65504.
/// `x` must be finite.
#[inline]
pub fn f16_bits_saturating(x: f32) -> u16 {
    half::f16::from_f32(x.clamp(-65504.0, 65504.0)).to_bits()
}

/// `(negative, significand, effective exponent)` of FP16 bits (finite).
#[inline]
fn decode_f16(h: u16) -> (bool, u32, u32) {
    let neg = h & 0x8000 != 0;
    let be = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    if be == 0 {
        (neg, frac, if frac == 0 { 0 } else { 1 })
    } else {
        (neg, frac | 0x400, be)
    }
}

/// The shared exponent of FP16 elements: the largest effective exponent.
#[inline]
fn effective_exponent(h: u16) -> u8 {
    decode_f16(h).2 as u8
}

/// Aligns and rounds one FP16 element to a block exponent `e` (the fast, integer path).
#[inline]
fn align(fmt: &FpgaBfp, h: u16, e: u8, key: StreamKey, index: u64) -> i16 {
    let (neg, sig, ee) = decode_f16(h);
    if sig == 0 {
        return 0;
    }
    let p = fmt.precision_bits();
    let sh = (e as u32 - ee + (11 - p)).min(60);
    let (lo, hi) = fmt.mantissa_range();
    let q: i64 = match fmt.code {
        MantissaCode::SignMagnitude => {
            let m = sig as u64;
            let q = match fmt.rounding {
                FpgaRounding::Truncate => m >> sh,
                FpgaRounding::Nearest => {
                    if sh == 0 {
                        m
                    } else {
                        (m + (1 << (sh - 1))) >> sh
                    }
                }
                FpgaRounding::NearestEven => round_half_even_u(m, sh),
                FpgaRounding::Stochastic => {
                    let r = uniform24(key, index) as u128;
                    ((((m as u128) << 24) + (r << sh)) >> (sh + 24)) as u64
                }
            };
            let q = (q as i64).min(hi as i64);
            if neg {
                -q
            } else {
                q
            }
        }
        MantissaCode::TwosComplement => {
            let t = if neg { -(sig as i64) } else { sig as i64 };
            let q = match fmt.rounding {
                FpgaRounding::Truncate => t >> sh,
                FpgaRounding::Nearest => {
                    if sh == 0 {
                        t
                    } else {
                        (t + (1 << (sh - 1))) >> sh
                    }
                }
                FpgaRounding::NearestEven => {
                    let q = t >> sh;
                    let rem = t - (q << sh);
                    if sh == 0 {
                        q
                    } else {
                        let half = 1i64 << (sh - 1);
                        if rem > half || (rem == half && q & 1 == 1) {
                            q + 1
                        } else {
                            q
                        }
                    }
                }
                FpgaRounding::Stochastic => {
                    let r = uniform24(key, index) as i128;
                    ((((t as i128) << 24) + (r << sh)) >> (sh + 24)) as i64
                }
            };
            q.clamp(lo as i64, hi as i64)
        }
    };
    q as i16
}

#[inline]
fn round_half_even_u(m: u64, sh: u32) -> u64 {
    if sh == 0 {
        return m;
    }
    let q = m >> sh;
    let rem = m & ((1u64 << sh) - 1);
    let half = 1u64 << (sh - 1);
    if rem > half || (rem == half && q & 1 == 1) {
        q + 1
    } else {
        q
    }
}

fn non_finite(x: &[f32], tensor: &str) -> Result<(), QuantError> {
    if crate::run::max_abs_bits(x) < 0x7f80_0000 {
        return Ok(());
    }
    let i = x.iter().position(|v| !v.is_finite()).unwrap_or(0);
    Err(QuantError::NonFinite {
        tensor: tensor.into(),
        index: i,
        value: x[i],
    })
}

fn check(fmt: &FpgaBfp, x: &[f32], view: ChannelView, tensor: &str) -> Result<(), QuantError> {
    fmt.validate()?;
    if x.len() != view.len() {
        return Err(QuantError::Shape(format!(
            "{tensor}: {} elements but the view [{}, {}, {}] has {}",
            x.len(),
            view.outer,
            view.channels,
            view.inner,
            view.len()
        )));
    }
    non_finite(x, tensor)
}

/// Quantises one row `[channels, inner]` (`x`, starting at flat element `base`) into `mant`
/// and its exponents `exps` (`blocks_per_row * inner`).
fn quantize_row(
    fmt: &FpgaBfp,
    x: &[f32],
    channels: usize,
    inner: usize,
    key: StreamKey,
    base: u64,
    mant: &mut [i16],
    exps: &mut [u8],
) {
    let cv = fmt.c_vector as usize;
    let h: Vec<u16> = x.iter().map(|&v| f16_bits_saturating(v)).collect();
    for (b, eb) in exps.chunks_mut(inner).enumerate() {
        let c0 = b * cv;
        let c1 = (c0 + cv).min(channels);
        eb.fill(0);
        for c in c0..c1 {
            let row = &h[c * inner..(c + 1) * inner];
            for (e, &v) in eb.iter_mut().zip(row) {
                *e = (*e).max(effective_exponent(v));
            }
        }
        for c in c0..c1 {
            for i in 0..inner {
                let idx = c * inner + i;
                mant[idx] = align(fmt, h[idx], eb[i], key, base + idx as u64);
            }
        }
    }
}

/// Quantises `x` viewed as `view` to FPGA BFP: the fast path (FP16 bit fields, integer shifts,
/// rows in parallel; deterministic roundings on the vector kernels of [`BlockKernel::best`];
/// the same bits as [`quantize_fpga_ref`] at any thread count).
pub fn quantize_fpga(
    x: &[f32],
    view: ChannelView,
    fmt: &FpgaBfp,
    key: StreamKey,
    tensor: &str,
) -> Result<FpgaTensor, QuantError> {
    let kernel = if fmt.rounding == FpgaRounding::Stochastic {
        BlockKernel::Scalar
    } else {
        BlockKernel::best()
    };
    quantize_fpga_with(kernel, x, view, fmt, key, tensor)
}

/// [`quantize_fpga`] on the given kernel ([`BlockKernel::Scalar`] is the integer path of
/// [`align`], element by element; the vector kernels take deterministic roundings only, and a
/// kernel this CPU lacks falls back to the scalar one). For tests and measurements.
pub fn quantize_fpga_with(
    kernel: BlockKernel,
    x: &[f32],
    view: ChannelView,
    fmt: &FpgaBfp,
    key: StreamKey,
    tensor: &str,
) -> Result<FpgaTensor, QuantError> {
    check(fmt, x, view, tensor)?;
    let kernel = if fmt.rounding == FpgaRounding::Stochastic || !kernel.is_available() {
        BlockKernel::Scalar
    } else {
        kernel
    };
    let row_len = view.channels * view.inner;
    let row_blocks = view.blocks_per_row(fmt.c_vector) * view.inner;
    let mut mantissas = vec![0i16; x.len()];
    let mut exponents = vec![0u8; view.num_blocks(fmt.c_vector)];
    if row_len > 0 {
        let work = |(o, (m, e)): (usize, (&mut [i16], &mut [u8]))| {
            let xr = &x[o * row_len..(o + 1) * row_len];
            let base = (o * row_len) as u64;
            if kernel == BlockKernel::Scalar {
                quantize_row(fmt, xr, view.channels, view.inner, key, base, m, e);
            } else {
                let one = ChannelView { outer: 1, ..view };
                lanes::run(kernel, fmt, xr, one, m, e);
            }
        };
        let it = mantissas
            .chunks_mut(row_len)
            .zip(exponents.chunks_mut(row_blocks.max(1)));
        if x.len() >= 1 << 15 {
            it.enumerate()
                .collect::<Vec<_>>()
                .into_par_iter()
                .for_each(work);
        } else {
            it.enumerate().for_each(work);
        }
    }
    Ok(FpgaTensor {
        format: *fmt,
        view,
        mantissas,
        exponents,
    })
}

/// Fake quantisation: the values `x` takes in the format (`out` = dequantised).
pub fn fake_quantize_fpga(
    x: &[f32],
    view: ChannelView,
    fmt: &FpgaBfp,
    key: StreamKey,
    tensor: &str,
    out: &mut [f32],
) -> Result<(), QuantError> {
    if out.len() != x.len() {
        return Err(QuantError::Shape(format!(
            "{tensor}: output has {} elements, input {}",
            out.len(),
            x.len()
        )));
    }
    let t = quantize_fpga(x, view, fmt, key, tensor)?;
    let nb = view.blocks_per_row(fmt.c_vector);
    let cv = fmt.c_vector as usize;
    let fill = |(o, orow): (usize, &mut [f32])| {
        for c in 0..view.channels {
            let b = o * nb + c / cv;
            for i in 0..view.inner {
                let idx = (o * view.channels + c) * view.inner + i;
                let s = fmt.scale(t.exponents[b * view.inner + i]);
                orow[c * view.inner + i] = t.mantissas[idx] as f32 * s;
            }
        }
    };
    let row_len = view.channels * view.inner;
    if row_len > 0 {
        out.par_chunks_mut(row_len).enumerate().for_each(fill);
    }
    Ok(())
}

/// The implementations of the block quantiser and of the FP16 rounding of slices: the scalar
/// integer path and vector kernels (FP16 conversion by F16C / AVX-512, block exponents and the
/// aligning shifts 16 lanes at a time). All give the same bits; [`BlockKernel::best`] honours
/// the `LOWPREC_ISA` cap ([`crate::isa`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockKernel {
    /// Element by element ([`f16_bits_saturating`], then [`align`]'s integer shifts).
    Scalar,
    /// The lane code on the baseline instruction set, FP16 conversion element by element.
    Lanes,
    /// The lane code with AVX2 and F16C.
    Avx2,
    /// The lane code with AVX-512 (F, BW, VL) and F16C.
    Avx512,
}

impl BlockKernel {
    /// Every kernel this CPU runs (ignoring the cap), scalar first.
    pub fn available() -> Vec<BlockKernel> {
        [
            BlockKernel::Scalar,
            BlockKernel::Lanes,
            BlockKernel::Avx2,
            BlockKernel::Avx512,
        ]
        .into_iter()
        .filter(|k| k.is_available())
        .collect()
    }

    /// Whether this CPU runs `self` (ignoring the cap).
    pub fn is_available(self) -> bool {
        match self {
            BlockKernel::Scalar | BlockKernel::Lanes => true,
            BlockKernel::Avx2 => lanes::has_avx2_f16c(),
            BlockKernel::Avx512 => lanes::has_avx512_f16c(),
        }
    }

    /// The fastest kernel this CPU runs under the `LOWPREC_ISA` cap.
    pub fn best() -> BlockKernel {
        use crate::isa::{allows, IsaLevel};
        if allows(IsaLevel::Avx512) && BlockKernel::Avx512.is_available() {
            BlockKernel::Avx512
        } else if allows(IsaLevel::Avx2) && BlockKernel::Avx2.is_available() {
            BlockKernel::Avx2
        } else {
            BlockKernel::Lanes
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BlockKernel::Scalar => "scalar",
            BlockKernel::Lanes => "lanes",
            BlockKernel::Avx2 => "avx2",
            BlockKernel::Avx512 => "avx512",
        }
    }
}

/// Mantissa element types [`quantize_fpga_into`] writes: the GEMMs take 8-bit mantissas for
/// widths up to 8 and 16-bit ones above.
pub trait MantissaOut: Copy + Send + Sync + 'static {
    /// The widest format whose mantissas fit.
    const MAX_WIDTH: u32;
    /// `v`, which fits (the format's range).
    fn from_i32(v: i32) -> Self;
}

impl MantissaOut for i8 {
    const MAX_WIDTH: u32 = 8;
    #[inline(always)]
    fn from_i32(v: i32) -> Self {
        v as i8
    }
}

impl MantissaOut for i16 {
    const MAX_WIDTH: u32 = 16;
    #[inline(always)]
    fn from_i32(v: i32) -> Self {
        v as i16
    }
}

/// [`quantize_fpga`] for inference into the caller's buffers, on one thread: mantissas in the
/// element order of `x` (`view.len()`), exponents in block order (`view.num_blocks`).
/// Deterministic roundings only (stochastic rounding is for training: [`quantize_fpga`]).
pub fn quantize_fpga_into<T: MantissaOut>(
    x: &[f32],
    view: ChannelView,
    fmt: &FpgaBfp,
    tensor: &str,
    mant: &mut [T],
    exps: &mut [u8],
) -> Result<(), QuantError> {
    quantize_fpga_into_with(BlockKernel::best(), x, view, fmt, tensor, mant, exps)
}

/// [`quantize_fpga_into`] on the given kernel (one this CPU lacks falls back to the scalar one).
pub fn quantize_fpga_into_with<T: MantissaOut>(
    kernel: BlockKernel,
    x: &[f32],
    view: ChannelView,
    fmt: &FpgaBfp,
    tensor: &str,
    mant: &mut [T],
    exps: &mut [u8],
) -> Result<(), QuantError> {
    check(fmt, x, view, tensor)?;
    if fmt.rounding == FpgaRounding::Stochastic {
        return Err(QuantError::Shape(format!(
            "{tensor}: stochastic rounding ({fmt}) is for training; quantize_fpga_into rounds \
             deterministically"
        )));
    }
    if fmt.width > T::MAX_WIDTH {
        return Err(QuantError::Shape(format!(
            "{tensor}: {fmt} mantissas do not fit {}-bit elements",
            T::MAX_WIDTH
        )));
    }
    if mant.len() != x.len() || exps.len() != view.num_blocks(fmt.c_vector) {
        return Err(QuantError::Shape(format!(
            "{tensor}: buffers of {} mantissas and {} exponents, the view needs {} and {}",
            mant.len(),
            exps.len(),
            x.len(),
            view.num_blocks(fmt.c_vector)
        )));
    }
    let kernel = if kernel.is_available() {
        kernel
    } else {
        BlockKernel::Scalar
    };
    if kernel == BlockKernel::Scalar {
        let row_len = view.channels * view.inner;
        let row_blocks = view.blocks_per_row(fmt.c_vector) * view.inner;
        if row_len == 0 {
            return Ok(());
        }
        let mut m16 = vec![0i16; row_len];
        let key = StreamKey::new(0, 0);
        for (o, (m, e)) in mant
            .chunks_mut(row_len)
            .zip(exps.chunks_mut(row_blocks.max(1)))
            .enumerate()
        {
            let xr = &x[o * row_len..(o + 1) * row_len];
            quantize_row(fmt, xr, view.channels, view.inner, key, 0, &mut m16, e);
            for (d, &v) in m.iter_mut().zip(&m16) {
                *d = T::from_i32(v as i32);
            }
        }
    } else {
        lanes::run(kernel, fmt, x, view, mant, exps);
    }
    Ok(())
}

/// `x[i]` becomes its FP16 value (nearest-even, saturating at +-65504) as f32, in place: the
/// accelerator's FP16 output. Finite inputs; the same bits as [`f16_bits_saturating`] element
/// by element.
pub fn f16_round_slice(x: &mut [f32]) {
    f16_round_slice_with(BlockKernel::best(), x)
}

/// [`f16_round_slice`] on the given kernel (one this CPU lacks falls back to the scalar one).
pub fn f16_round_slice_with(kernel: BlockKernel, x: &mut [f32]) {
    lanes::round_slice(kernel, x)
}

/// The vector kernels: 16 lanes of plain integer code the compiler vectorises at the level of
/// the function it is inlined into, and the FP16 conversion as one instruction where F16C is
/// present.
mod lanes {
    use super::{f16_bits_saturating, BlockKernel, ChannelView, FpgaBfp};
    use super::{FpgaRounding, MantissaCode, MantissaOut};

    pub(super) const L: usize = 16;
    /// Largest `c_vector`.
    const CV_MAX: usize = 64;

    pub(super) fn has_avx2_f16c() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            has!("avx2") && has!("fma") && has!("f16c")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    pub(super) fn has_avx512_f16c() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            has_avx2_f16c() && has!("avx512f") && has!("avx512bw") && has!("avx512vl")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// A format's constants for branch-free lane code.
    #[derive(Clone, Copy)]
    pub(super) struct Params {
        /// `11 - P`: the shift of an element at the block's exponent.
        off: i32,
        lo: i32,
        hi: i32,
        /// -1 where the shift works on the signed value (two's complement), else 0.
        signed: i32,
        /// -1 where the sign is applied after rounding the magnitude (sign-magnitude), else 0.
        flip: i32,
        /// -1 for the roundings that add half a step, else 0.
        round: i32,
        /// 1 for nearest-even, else 0.
        even: i32,
        cv: usize,
    }

    impl Params {
        pub(super) fn new(fmt: &FpgaBfp) -> Params {
            let (lo, hi) = fmt.mantissa_range();
            let tc = fmt.code == MantissaCode::TwosComplement;
            debug_assert!(fmt.rounding != FpgaRounding::Stochastic);
            Params {
                off: 11 - fmt.precision_bits() as i32,
                lo,
                hi,
                signed: if tc { -1 } else { 0 },
                flip: if tc { 0 } else { -1 },
                round: if fmt.rounding == FpgaRounding::Truncate {
                    0
                } else {
                    -1
                },
                even: (fmt.rounding == FpgaRounding::NearestEven) as i32,
                cv: fmt.c_vector as usize,
            }
        }
    }

    /// Effective exponent of FP16 bits (zero-extended): the exponent field, 1 for subnormals,
    /// 0 for zeros.
    #[inline(always)]
    fn ee_of(h: i32) -> i32 {
        let be = (h >> 10) & 0x1f;
        let frac = h & 0x3ff;
        if be != 0 {
            be
        } else {
            (frac != 0) as i32
        }
    }

    #[inline(always)]
    fn max_ee(h: &[i32; L], e: &mut [i32; L]) {
        for i in 0..L {
            e[i] = e[i].max(ee_of(h[i]));
        }
    }

    /// [`super::align`] for deterministic roundings, lane by lane, without branches:
    /// `q = floor((2v + bias) / 2^(sh+1))` with `v` the significand (signed in two's
    /// complement), `bias` 0 (truncate), `2^sh` (half a step up) or `2^sh - 1 + odd`
    /// (nearest-even: a tie goes up only from an odd quotient). Shifts beyond 12 give the same
    /// quotient as 12 (significands have 11 bits), so they are capped there.
    #[inline(always)]
    fn align(p: &Params, h: &[i32; L], e: &[i32; L], out: &mut [i32; L]) {
        for i in 0..L {
            let hv = h[i];
            let neg = -((hv >> 15) & 1);
            let be = (hv >> 10) & 0x1f;
            let frac = hv & 0x3ff;
            let (sig, ee) = if be != 0 {
                (frac | 0x400, be)
            } else {
                (frac, (frac != 0) as i32)
            };
            let sh = (e[i] - ee + p.off).min(12) as u32;
            let m = neg & p.signed;
            let v = (sig ^ m) - m;
            let odd = v.wrapping_shr(sh) & 1;
            let bias = (p.round & (1i32 << sh)) - (p.even & (1 - odd));
            let q = (2 * v + bias).wrapping_shr(sh + 1).max(p.lo).min(p.hi);
            let f = neg & p.flip;
            out[i] = (q ^ f) - f;
        }
    }

    /// FP16 conversion of 16 values (saturating, nearest-even), zero-extended to i32.
    pub(super) trait Cvt {
        fn h16(x: &[f32; L]) -> [i32; L];
        fn round(x: &mut [f32; L]);
    }

    struct ScalarCvt;
    impl Cvt for ScalarCvt {
        #[inline(always)]
        fn h16(x: &[f32; L]) -> [i32; L] {
            let mut h = [0i32; L];
            for i in 0..L {
                h[i] = f16_bits_saturating(x[i]) as i32;
            }
            h
        }
        #[inline(always)]
        fn round(x: &mut [f32; L]) {
            for v in x.iter_mut() {
                *v = half::f16::from_bits(f16_bits_saturating(*v)).to_f32();
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    struct F16c256;
    #[cfg(target_arch = "x86_64")]
    impl Cvt for F16c256 {
        #[inline(always)]
        fn h16(x: &[f32; L]) -> [i32; L] {
            use std::arch::x86_64::*;
            let mut h = [0i32; L];
            // SAFETY: only reached from functions compiled with AVX2 and F16C, which run only
            // where the CPU has them; the loads and stores stay inside the 16-element arrays.
            unsafe {
                let (lo, hi) = (_mm256_set1_ps(-65504.0), _mm256_set1_ps(65504.0));
                for k in 0..2 {
                    let v = _mm256_loadu_ps(x.as_ptr().add(8 * k));
                    let v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
                    let p = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
                    let w = _mm256_cvtepu16_epi32(p);
                    _mm256_storeu_si256(h.as_mut_ptr().add(8 * k) as *mut __m256i, w);
                }
            }
            h
        }
        #[inline(always)]
        fn round(x: &mut [f32; L]) {
            use std::arch::x86_64::*;
            // SAFETY: as in `h16`.
            unsafe {
                let (lo, hi) = (_mm256_set1_ps(-65504.0), _mm256_set1_ps(65504.0));
                for k in 0..2 {
                    let v = _mm256_loadu_ps(x.as_ptr().add(8 * k));
                    let v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
                    let p = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
                    _mm256_storeu_ps(x.as_mut_ptr().add(8 * k), _mm256_cvtph_ps(p));
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    struct F16c512;
    #[cfg(target_arch = "x86_64")]
    impl Cvt for F16c512 {
        #[inline(always)]
        fn h16(x: &[f32; L]) -> [i32; L] {
            use std::arch::x86_64::*;
            let mut h = [0i32; L];
            // SAFETY: only reached from functions compiled with AVX-512 F and F16C, which run
            // only where the CPU has them; the loads and stores cover the 16-element arrays.
            unsafe {
                let v = _mm512_loadu_ps(x.as_ptr());
                let v = _mm512_min_ps(
                    _mm512_max_ps(v, _mm512_set1_ps(-65504.0)),
                    _mm512_set1_ps(65504.0),
                );
                let p = _mm512_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v);
                _mm512_storeu_si512(h.as_mut_ptr() as *mut __m512i, _mm512_cvtepu16_epi32(p));
            }
            h
        }
        #[inline(always)]
        fn round(x: &mut [f32; L]) {
            use std::arch::x86_64::*;
            // SAFETY: as in `h16`.
            unsafe {
                let v = _mm512_loadu_ps(x.as_ptr());
                let v = _mm512_min_ps(
                    _mm512_max_ps(v, _mm512_set1_ps(-65504.0)),
                    _mm512_set1_ps(65504.0),
                );
                let p = _mm512_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v);
                _mm512_storeu_ps(x.as_mut_ptr(), _mm512_cvtph_ps(p));
            }
        }
    }

    #[inline(always)]
    fn load<C: Cvt>(x: &[f32]) -> [i32; L] {
        let mut v = [0f32; L];
        if let Ok(full) = <&[f32; L]>::try_from(x) {
            v = *full;
        } else {
            v[..x.len()].copy_from_slice(x);
        }
        C::h16(&v)
    }

    #[inline(always)]
    fn store<T: MantissaOut>(q: &[i32; L], out: &mut [T]) {
        if let Ok(full) = <&mut [T; L]>::try_from(&mut *out) {
            for i in 0..L {
                full[i] = T::from_i32(q[i]);
            }
        } else {
            for (d, &v) in out.iter_mut().zip(q) {
                *d = T::from_i32(v);
            }
        }
    }

    /// The whole view: blocks along `channels`, lanes along `inner` (or, for `inner == 1`,
    /// along the block's channels).
    #[inline(always)]
    fn quantize<C: Cvt, T: MantissaOut>(
        p: &Params,
        x: &[f32],
        view: ChannelView,
        mant: &mut [T],
        exps: &mut [u8],
    ) {
        let (ch, inner, cv) = (view.channels, view.inner, p.cv);
        let nb = view.blocks_per_row(cv as u32);
        let mut hb = [[0i32; L]; CV_MAX];
        let mut q = [0i32; L];
        if inner == 1 {
            for o in 0..view.outer {
                for b in 0..nb {
                    let (c0, c1) = (o * ch + b * cv, o * ch + ((b + 1) * cv).min(ch));
                    let chunks = (c1 - c0).div_ceil(L);
                    let mut e = [0i32; L];
                    for k in 0..chunks {
                        let s = c0 + k * L;
                        hb[k] = load::<C>(&x[s..(s + L).min(c1)]);
                        max_ee(&hb[k], &mut e);
                    }
                    let emax = e.iter().copied().max().unwrap_or(0);
                    let e = [emax; L];
                    for k in 0..chunks {
                        let s = c0 + k * L;
                        align(p, &hb[k], &e, &mut q);
                        store(&q, &mut mant[s..(s + L).min(c1)]);
                    }
                    exps[o * nb + b] = emax as u8;
                }
            }
            return;
        }
        for o in 0..view.outer {
            for b in 0..nb {
                let (c0, c1) = (b * cv, ((b + 1) * cv).min(ch));
                let mut j0 = 0;
                while j0 < inner {
                    let len = L.min(inner - j0);
                    let mut e = [0i32; L];
                    for c in c0..c1 {
                        let s = (o * ch + c) * inner + j0;
                        hb[c - c0] = load::<C>(&x[s..s + len]);
                        max_ee(&hb[c - c0], &mut e);
                    }
                    for c in c0..c1 {
                        let s = (o * ch + c) * inner + j0;
                        align(p, &hb[c - c0], &e, &mut q);
                        store(&q, &mut mant[s..s + len]);
                    }
                    let eb = &mut exps[(o * nb + b) * inner + j0..][..len];
                    for (d, &v) in eb.iter_mut().zip(&e) {
                        *d = v as u8;
                    }
                    j0 += L;
                }
            }
        }
    }

    #[inline(always)]
    fn round_all<C: Cvt>(x: &mut [f32]) {
        let mut it = x.chunks_exact_mut(L);
        for c in &mut it {
            C::round(c.try_into().expect("16 lanes"));
        }
        let tail = it.into_remainder();
        if !tail.is_empty() {
            let mut v = [0f32; L];
            v[..tail.len()].copy_from_slice(tail);
            C::round(&mut v);
            tail.copy_from_slice(&v[..tail.len()]);
        }
    }

    #[cfg(target_arch = "x86_64")]
    mod x86 {
        use super::*;

        /// # Safety
        /// The CPU must have AVX2, FMA and F16C.
        #[target_feature(enable = "avx2,fma,f16c")]
        pub(super) unsafe fn quantize_avx2<T: MantissaOut>(
            p: &Params,
            x: &[f32],
            view: ChannelView,
            mant: &mut [T],
            exps: &mut [u8],
        ) {
            quantize::<F16c256, T>(p, x, view, mant, exps)
        }

        /// # Safety
        /// The CPU must have AVX-512 F/BW/VL, AVX2, FMA and F16C.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
        pub(super) unsafe fn quantize_avx512<T: MantissaOut>(
            p: &Params,
            x: &[f32],
            view: ChannelView,
            mant: &mut [T],
            exps: &mut [u8],
        ) {
            quantize::<F16c512, T>(p, x, view, mant, exps)
        }

        /// # Safety
        /// As [`quantize_avx2`].
        #[target_feature(enable = "avx2,fma,f16c")]
        pub(super) unsafe fn round_avx2(x: &mut [f32]) {
            round_all::<F16c256>(x)
        }

        /// # Safety
        /// As [`quantize_avx512`].
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
        pub(super) unsafe fn round_avx512(x: &mut [f32]) {
            round_all::<F16c512>(x)
        }
    }

    /// Quantises the view on `kernel` (a vector kernel this CPU has; deterministic rounding;
    /// buffers of the view's sizes).
    pub(super) fn run<T: MantissaOut>(
        kernel: BlockKernel,
        fmt: &FpgaBfp,
        x: &[f32],
        view: ChannelView,
        mant: &mut [T],
        exps: &mut [u8],
    ) {
        let p = Params::new(fmt);
        match kernel {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: callers pass only kernels `is_available` accepted.
            BlockKernel::Avx512 => unsafe { x86::quantize_avx512(&p, x, view, mant, exps) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            BlockKernel::Avx2 => unsafe { x86::quantize_avx2(&p, x, view, mant, exps) },
            _ => quantize::<ScalarCvt, T>(&p, x, view, mant, exps),
        }
    }

    pub(super) fn round_slice(kernel: BlockKernel, x: &mut [f32]) {
        match kernel {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: checked just now.
            BlockKernel::Avx512 if has_avx512_f16c() => unsafe { x86::round_avx512(x) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: checked just now.
            BlockKernel::Avx2 if has_avx2_f16c() => unsafe { x86::round_avx2(x) },
            BlockKernel::Scalar => {
                for v in x.iter_mut() {
                    *v = half::f16::from_bits(f16_bits_saturating(*v)).to_f32();
                }
            }
            _ => round_all::<ScalarCvt>(x),
        }
    }
}

/// Reference FP16 rounding: nearest-even to 11 significant bits (quantum `2^-24` below the
/// normal range), saturating at 65504; in f64, by comparison with powers of two.
pub fn f16_round_ref(x: f32) -> f64 {
    let a = (x as f64).abs();
    if a == 0.0 {
        return 0.0;
    }
    let mut e = -14i32;
    while e < 15 && 2f64.powi(e + 1) <= a {
        e += 1;
    }
    let q = 2f64.powi(e - 10);
    let r = ((a / q).round_ties_even() * q).min(65504.0);
    if x < 0.0 {
        -r
    } else {
        r
    }
}

/// Reference quantiser: element by element in f64 from the values, no bit tricks, no threads.
/// Returns mantissas and exponents in [`FpgaTensor`]'s orders.
pub fn quantize_fpga_ref(
    x: &[f32],
    view: ChannelView,
    fmt: &FpgaBfp,
    key: StreamKey,
) -> Result<(Vec<i32>, Vec<u8>), QuantError> {
    check(fmt, x, view, "x")?;
    let cv = fmt.c_vector as usize;
    let nb = view.blocks_per_row(fmt.c_vector);
    let p = fmt.precision_bits() as i32;
    let (lo, hi) = fmt.mantissa_range();
    let v: Vec<f64> = x.iter().map(|&a| f16_round_ref(a)).collect();
    let mut exps = vec![0u8; view.num_blocks(fmt.c_vector)];
    let mut q = vec![0i32; x.len()];
    for o in 0..view.outer {
        for b in 0..nb {
            for i in 0..view.inner {
                let cs = b * cv..((b + 1) * cv).min(view.channels);
                let idx = |c: usize| (o * view.channels + c) * view.inner + i;
                let m = cs.clone().map(|c| v[idx(c)].abs()).fold(0.0, f64::max);
                let e = if m == 0.0 {
                    0
                } else {
                    // floor(log2 m), at least FP16's smallest normal exponent, biased by 15
                    let mut e = -14i32;
                    while 2f64.powi(e + 1) <= m {
                        e += 1;
                    }
                    (e + 15) as u8
                };
                exps[(o * nb + b) * view.inner + i] = e;
                let step = 2f64.powi(e as i32 - 14 - p);
                for c in cs {
                    let k = idx(c);
                    let y = v[k] / step;
                    let u = if fmt.rounding == FpgaRounding::Stochastic {
                        uniform24(key, k as u64) as f64 / 16_777_216.0
                    } else {
                        0.0
                    };
                    q[k] = match fmt.code {
                        MantissaCode::SignMagnitude => {
                            let a = y.abs();
                            let r = match fmt.rounding {
                                FpgaRounding::Truncate => a.floor(),
                                FpgaRounding::Nearest => (a + 0.5).floor(),
                                FpgaRounding::NearestEven => a.round_ties_even(),
                                FpgaRounding::Stochastic => (a + u).floor(),
                            };
                            let r = r.min(hi as f64) as i32;
                            if y < 0.0 {
                                -r
                            } else {
                                r
                            }
                        }
                        MantissaCode::TwosComplement => {
                            let r = match fmt.rounding {
                                FpgaRounding::Truncate => y.floor(),
                                FpgaRounding::Nearest => (y + 0.5).floor(),
                                FpgaRounding::NearestEven => y.round_ties_even(),
                                FpgaRounding::Stochastic => (y + u).floor(),
                            };
                            r.clamp(lo as f64, hi as f64) as i32
                        }
                    };
                }
            }
        }
    }
    Ok((q, exps))
}
