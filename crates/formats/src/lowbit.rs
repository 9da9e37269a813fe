//! Ternary, binary and k-bit quantisers of paper 001's networks (WRPN weights, sign x scale,
//! TWN thresholds, k-bit unsigned activations) and their straight-through gradients.
//!
//! Every quantiser returns integer codes (`i8`) plus the scale(s) that turn them back into
//! values, so the packed kernels of `lowprec-kernels` consume the codes directly and a layer
//! applies the scales in its epilogue: value = `code as f32 * scale` (in f32, exactly what an
//! integer GEMM's epilogue computes for one term). Weights are laid out `[channels, rest]`
//! (one row of a GEMM's A per output channel), so a per-channel scale is a per-row scale.
//!
//! Semantics, each evaluated in f64 where every step below is exact or correctly rounded once:
//! - WRPN k-bit weights (k = 2 is ternary): `n = 2^(k-1) - 1`, `code = round(clamp(w, -1, 1) n)`
//!   (ties away from zero), scale `1/n` rounded to f32.
//! - Binary: `code = +1` if `w >= 0` else `-1`; scale = mean |w| (per tensor or per channel),
//!   the least-squares scale for those signs.
//! - TWN ternary: `delta = t * mean|w|`; `code = sign(w)` where `|w| > delta`, else 0; scale =
//!   mean |w| over the kept weights (0 when none is kept), the least-squares scale for that mask.
//! - k-bit unsigned activations: `n = 2^k - 1`, `code = round(clamp(x, 0, clip) * n / clip)`
//!   (ties away from zero), scale `clip / n` rounded to f32; k in 1..=7 so codes fit `i8`.
//!
//! Means are summed in f64 in index order (deterministic whatever the thread count: channels
//! are independent). Non-finite inputs are errors naming the tensor and element.

use rayon::prelude::*;

use crate::QuantError;

/// Whether a scale covers the whole tensor or one output channel (a row of `[channels, rest]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ScaleMode {
    PerTensor,
    PerChannel,
}

/// Integer codes and their scales: value `i` is `codes[i] as f32 * scales[i / group]`.
#[derive(Clone, Debug, PartialEq)]
pub struct LowBitCodes {
    pub codes: Vec<i8>,
    pub scales: Vec<f32>,
    /// Elements sharing one scale (`codes.len()` for a per-tensor scale).
    pub group: usize,
    /// Bits a code needs (2 for ternary, 1 for binary, k for k-bit).
    pub bits: u32,
}

impl LowBitCodes {
    /// The values the codes stand for: `code as f32 * scale`.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.codes.len()];
        self.dequantize_into(&mut out);
        out
    }

    /// [`LowBitCodes::dequantize`] into a buffer of the same length.
    pub fn dequantize_into(&self, out: &mut [f32]) {
        assert_eq!(out.len(), self.codes.len(), "dequantize_into: length");
        let g = self.group.max(1);
        out.par_chunks_mut(g)
            .zip(self.codes.par_chunks(g))
            .zip(self.scales.par_iter())
            .for_each(|((o, c), &s)| {
                for (o, &c) in o.iter_mut().zip(c) {
                    *o = c as f32 * s;
                }
            });
    }
}

/// TWN's threshold factor (Li et al.: 0.7 of the mean magnitude).
pub const TWN_THRESHOLD: f64 = 0.7;

/// A low-bit format as a [`crate::NumberFormat`] names it (`ternary`, `wrpn<k>`,
/// `twn[:channel]`, `binary[:channel]`, `a<k>[:clip<C>|:fit]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LowBitFormat {
    /// WRPN k-bit weights (k = 2: ternary, written `ternary`).
    Wrpn { bits: u32 },
    /// Threshold ternary weights, scale per tensor or per output channel.
    Twn { mode: ScaleMode },
    /// Sign x mean |w|, per tensor or per output channel.
    Binary { mode: ScaleMode },
    /// k-bit unsigned activations in `[0, clip]`.
    Acts { bits: u32, clip: ActClip },
}

/// The clip of k-bit activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActClip {
    /// A fixed clip (f32 bits, so the format stays `Eq`).
    Fixed(u32),
    /// Fitted per layer on calibration data (`quantize-model` replaces it by a fixed clip).
    Fit,
}

impl LowBitFormat {
    /// Whether it quantises weights (else activations).
    pub fn is_weights(&self) -> bool {
        !matches!(self, LowBitFormat::Acts { .. })
    }
    /// Bits one stored code takes.
    pub fn bits(&self) -> u32 {
        match *self {
            LowBitFormat::Wrpn { bits } | LowBitFormat::Acts { bits, .. } => bits,
            LowBitFormat::Twn { .. } => 2,
            LowBitFormat::Binary { .. } => 1,
        }
    }
    /// The codes this format produces, inclusive.
    pub fn code_range(&self) -> (i32, i32) {
        match *self {
            LowBitFormat::Wrpn { bits } => {
                let n = (1i32 << (bits - 1)) - 1;
                (-n, n)
            }
            LowBitFormat::Twn { .. } => (-1, 1),
            LowBitFormat::Binary { .. } => (-1, 1),
            LowBitFormat::Acts { bits, .. } => (0, (1i32 << bits) - 1),
        }
    }
    /// Whether `c` is a code of this format (binary has no 0).
    pub fn valid_code(&self, c: i8) -> bool {
        let (lo, hi) = self.code_range();
        let c = c as i32;
        c >= lo && c <= hi && !(matches!(self, LowBitFormat::Binary { .. }) && c == 0)
    }
    /// Scale mode of a weight format (WRPN's scale is fixed, one per tensor).
    pub fn scale_mode(&self) -> ScaleMode {
        match *self {
            LowBitFormat::Twn { mode } | LowBitFormat::Binary { mode } => mode,
            _ => ScaleMode::PerTensor,
        }
    }
    /// A fixed activation clip, if this is one.
    pub fn clip(&self) -> Option<f32> {
        match *self {
            LowBitFormat::Acts {
                clip: ActClip::Fixed(b),
                ..
            } => Some(f32::from_bits(b)),
            _ => None,
        }
    }
    /// k-bit activations with a fixed clip.
    pub fn acts(bits: u32, clip: f32) -> Self {
        LowBitFormat::Acts {
            bits,
            clip: ActClip::Fixed(clip.to_bits()),
        }
    }
    pub fn validate(&self) -> Result<(), String> {
        match *self {
            LowBitFormat::Wrpn { bits } if !(2..=8).contains(&bits) => {
                Err(format!("WRPN weights need 2..=8 bits, got {bits}"))
            }
            LowBitFormat::Acts { bits, .. } if !(1..=7).contains(&bits) => {
                Err(format!("activations need 1..=7 bits, got {bits}"))
            }
            LowBitFormat::Acts {
                clip: ActClip::Fixed(b),
                ..
            } if !(f32::from_bits(b).is_finite() && f32::from_bits(b) > 0.0) => Err(format!(
                "activation clip {} must be finite and > 0",
                f32::from_bits(b)
            )),
            _ => Ok(()),
        }
    }
    /// Parses the head and options of a low-bit format; `None` when `head` is not one.
    pub fn parse_parts(head: &str, rest: &[&str]) -> Option<Result<Self, String>> {
        let mode = |rest: &[&str]| -> Result<ScaleMode, String> {
            match rest {
                [] | ["tensor"] => Ok(ScaleMode::PerTensor),
                ["channel"] => Ok(ScaleMode::PerChannel),
                _ => Err(format!(
                    "options `{}`: only `tensor` or `channel` (the scale's scope)",
                    rest.join(":")
                )),
            }
        };
        let none = |rest: &[&str], f: LowBitFormat| {
            if rest.is_empty() {
                Ok(f)
            } else {
                Err("WRPN weights take no options (their scale is fixed)".to_string())
            }
        };
        let f = match head {
            "ternary" => none(rest, LowBitFormat::Wrpn { bits: 2 }),
            "twn" => mode(rest).map(|mode| LowBitFormat::Twn { mode }),
            "binary" => mode(rest).map(|mode| LowBitFormat::Binary { mode }),
            _ => {
                if let Some(k) = head.strip_prefix("wrpn") {
                    match k.parse::<u32>() {
                        Ok(bits) => none(rest, LowBitFormat::Wrpn { bits }),
                        Err(_) => Err("wrpn<k> needs a bit count, e.g. wrpn4".into()),
                    }
                } else if let Some(k) = head
                    .strip_prefix('a')
                    .filter(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_digit()))
                {
                    let bits: u32 = match k.parse() {
                        Ok(b) => b,
                        Err(_) => return Some(Err(format!("bad bit count `{k}`"))),
                    };
                    match rest {
                        [] => Ok(LowBitFormat::acts(bits, 1.0)),
                        ["fit"] => Ok(LowBitFormat::Acts {
                            bits,
                            clip: ActClip::Fit,
                        }),
                        [c] if c.starts_with("clip") => match c[4..].parse::<f32>() {
                            Ok(v) => Ok(LowBitFormat::acts(bits, v)),
                            Err(_) => Err(format!("`{c}`: clip<C> needs a number, e.g. clip2.5")),
                        },
                        _ => Err(format!(
                            "options `{}`: a<k> takes `clip<C>` or `fit`",
                            rest.join(":")
                        )),
                    }
                } else {
                    return None;
                }
            }
        };
        Some(f.and_then(|f| f.validate().map(|_| f)))
    }
}

impl std::fmt::Display for LowBitFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scope = |m: ScaleMode| match m {
            ScaleMode::PerTensor => "",
            ScaleMode::PerChannel => ":channel",
        };
        match *self {
            LowBitFormat::Wrpn { bits: 2 } => f.write_str("ternary"),
            LowBitFormat::Wrpn { bits } => write!(f, "wrpn{bits}"),
            LowBitFormat::Twn { mode } => write!(f, "twn{}", scope(mode)),
            LowBitFormat::Binary { mode } => write!(f, "binary{}", scope(mode)),
            LowBitFormat::Acts {
                bits,
                clip: ActClip::Fit,
            } => write!(f, "a{bits}:fit"),
            // `{}` of an f32 is the shortest text that parses back to the same bits
            LowBitFormat::Acts {
                bits,
                clip: ActClip::Fixed(c),
            } => write!(f, "a{bits}:clip{}", f32::from_bits(c)),
        }
    }
}

/// Quantises `x` (`channels` rows for per-channel scales) to codes and scales under `fmt`.
pub fn quantize_lowbit(
    x: &[f32],
    channels: usize,
    fmt: &LowBitFormat,
    tensor: &str,
) -> Result<LowBitCodes, QuantError> {
    match *fmt {
        LowBitFormat::Wrpn { bits } => quantize_wrpn(x, bits, tensor),
        LowBitFormat::Twn { mode } => quantize_twn(x, channels, mode, TWN_THRESHOLD, tensor),
        LowBitFormat::Binary { mode } => quantize_binary(x, channels, mode, tensor),
        LowBitFormat::Acts {
            bits,
            clip: ActClip::Fixed(c),
        } => quantize_activations(x, bits, f32::from_bits(c), tensor),
        LowBitFormat::Acts {
            clip: ActClip::Fit, ..
        } => Err(QuantError::Shape(format!(
            "{tensor}: {fmt} has no clip yet; `lowprec quantize-model` fits one per layer (or give clip<C>)"
        ))),
    }
}

/// The clip for k-bit activations fitted to `x`: the candidate among `max|x| * i / 64`
/// (i = 1..=64) with the least squared quantisation error, summed in f64 in order (the
/// smallest on ties). Non-finite inputs are errors; all-zero input gives clip 1.
pub fn fit_clip(x: &[f32], bits: u32, tensor: &str) -> Result<f32, QuantError> {
    check_finite(x, tensor)?;
    let max = x.iter().fold(0f32, |m, &v| m.max(v));
    if max <= 0.0 {
        return Ok(1.0);
    }
    let n = ((1u32 << bits) - 1) as f64;
    let mut best = (f64::INFINITY, max);
    for i in 1..=64u32 {
        let clip = (max as f64 * i as f64 / 64.0) as f32;
        if clip <= 0.0 {
            continue;
        }
        let c = clip as f64;
        let step = (c / n) as f32 as f64;
        let err: f64 = x
            .par_chunks(1 << 14)
            .map(|x| {
                x.iter()
                    .map(|&v| {
                        let v = v as f64;
                        let q = (v.clamp(0.0, c) * n / c).round() * step;
                        (v.max(0.0) - q).powi(2)
                    })
                    .sum::<f64>()
            })
            .collect::<Vec<_>>()
            .iter()
            .sum();
        if err < best.0 {
            best = (err, clip);
        }
    }
    Ok(best.1)
}

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

/// Elements per scale group for `len` weights in `channels` rows.
fn group_len(
    len: usize,
    channels: usize,
    mode: ScaleMode,
    tensor: &str,
) -> Result<usize, QuantError> {
    if len == 0 {
        return Err(QuantError::Shape(format!("{tensor}: empty tensor")));
    }
    match mode {
        ScaleMode::PerTensor => Ok(len),
        ScaleMode::PerChannel => {
            if channels == 0 || !len.is_multiple_of(channels) {
                return Err(QuantError::Shape(format!(
                    "{tensor}: {len} elements do not split into {channels} channels"
                )));
            }
            Ok(len / channels)
        }
    }
}

fn mean_abs(w: &[f32]) -> f64 {
    w.iter().map(|&v| (v as f64).abs()).sum::<f64>() / w.len() as f64
}

/// WRPN k-bit weights (`k` in 2..=8; 2 is ternary {-1, 0, +1}): one scale `1/(2^(k-1)-1)`.
pub fn quantize_wrpn(w: &[f32], k: u32, tensor: &str) -> Result<LowBitCodes, QuantError> {
    if !(2..=8).contains(&k) {
        return Err(QuantError::Shape(format!(
            "{tensor}: WRPN weights need 2..=8 bits, got {k}"
        )));
    }
    if w.is_empty() {
        return Err(QuantError::Shape(format!("{tensor}: empty tensor")));
    }
    check_finite(w, tensor)?;
    let n = ((1i32 << (k - 1)) - 1) as f64;
    let mut codes = vec![0i8; w.len()];
    codes
        .par_chunks_mut(1 << 14)
        .zip(w.par_chunks(1 << 14))
        .for_each(|(c, w)| {
            for (c, &v) in c.iter_mut().zip(w) {
                *c = ((v as f64).clamp(-1.0, 1.0) * n).round() as i8;
            }
        });
    Ok(LowBitCodes {
        codes,
        scales: vec![(1.0 / n) as f32],
        group: w.len(),
        bits: k,
    })
}

/// Binary weights: sign (`+1` for `w >= 0`) times mean |w| per tensor or per channel.
pub fn quantize_binary(
    w: &[f32],
    channels: usize,
    mode: ScaleMode,
    tensor: &str,
) -> Result<LowBitCodes, QuantError> {
    let g = group_len(w.len(), channels, mode, tensor)?;
    check_finite(w, tensor)?;
    let mut codes = vec![0i8; w.len()];
    let scales: Vec<f32> = codes
        .par_chunks_mut(g)
        .zip(w.par_chunks(g))
        .map(|(c, w)| {
            for (c, &v) in c.iter_mut().zip(w) {
                *c = if v >= 0.0 { 1 } else { -1 };
            }
            mean_abs(w) as f32
        })
        .collect();
    Ok(LowBitCodes {
        codes,
        scales,
        group: g,
        bits: 1,
    })
}

/// TWN ternary weights: threshold `t * mean|w|` (TWN's `t` is 0.7), fitted scale per group.
pub fn quantize_twn(
    w: &[f32],
    channels: usize,
    mode: ScaleMode,
    t: f64,
    tensor: &str,
) -> Result<LowBitCodes, QuantError> {
    if !(t.is_finite() && t >= 0.0) {
        return Err(QuantError::Shape(format!(
            "{tensor}: TWN threshold factor {t} must be finite and >= 0"
        )));
    }
    let g = group_len(w.len(), channels, mode, tensor)?;
    check_finite(w, tensor)?;
    let mut codes = vec![0i8; w.len()];
    let scales: Vec<f32> = codes
        .par_chunks_mut(g)
        .zip(w.par_chunks(g))
        .map(|(c, w)| {
            let delta = t * mean_abs(w);
            let (mut sum, mut kept) = (0f64, 0usize);
            for (c, &v) in c.iter_mut().zip(w) {
                let a = (v as f64).abs();
                *c = if a > delta {
                    sum += a;
                    kept += 1;
                    if v > 0.0 {
                        1
                    } else {
                        -1
                    }
                } else {
                    0
                };
            }
            if kept == 0 {
                0.0
            } else {
                (sum / kept as f64) as f32
            }
        })
        .collect();
    Ok(LowBitCodes {
        codes,
        scales,
        group: g,
        bits: 2,
    })
}

/// k-bit unsigned activations (`k` in 1..=7) clipped to `[0, clip]`, round to nearest.
pub fn quantize_activations(
    x: &[f32],
    k: u32,
    clip: f32,
    tensor: &str,
) -> Result<LowBitCodes, QuantError> {
    if !(1..=7).contains(&k) {
        return Err(QuantError::Shape(format!(
            "{tensor}: activations need 1..=7 bits, got {k}"
        )));
    }
    if !(clip.is_finite() && clip > 0.0) {
        return Err(QuantError::Shape(format!(
            "{tensor}: activation clip {clip} must be finite and > 0"
        )));
    }
    if x.is_empty() {
        return Err(QuantError::Shape(format!("{tensor}: empty tensor")));
    }
    check_finite(x, tensor)?;
    let n = ((1u32 << k) - 1) as f64;
    let c = clip as f64;
    let mut codes = vec![0i8; x.len()];
    codes
        .par_chunks_mut(1 << 14)
        .zip(x.par_chunks(1 << 14))
        .for_each(|(q, x)| {
            for (q, &v) in q.iter_mut().zip(x) {
                // x * n is exact in f64 (24 + 7 bits); the division is rounded once.
                *q = ((v as f64).clamp(0.0, c) * n / c).round() as i8;
            }
        });
    Ok(LowBitCodes {
        codes,
        scales: vec![(c / n) as f32],
        group: x.len(),
        bits: k,
    })
}

/// Straight-through gradient of a clip to `[lo, hi]`: `grad_in = grad_out` where
/// `lo <= x <= hi`, else 0 (the quantiser's rounding passes the gradient through unchanged).
pub fn ste_clip_grad(x: &[f32], grad_out: &[f32], lo: f32, hi: f32, grad_in: &mut [f32]) {
    assert!(
        x.len() == grad_out.len() && x.len() == grad_in.len(),
        "ste_clip_grad: lengths {} / {} / {}",
        x.len(),
        grad_out.len(),
        grad_in.len()
    );
    for ((gi, &g), &v) in grad_in.iter_mut().zip(grad_out).zip(x) {
        *gi = if v >= lo && v <= hi { g } else { 0.0 };
    }
}

/// Gradient of a learned activation clip (PACT): the sum of `grad_out` where `x >= clip`
/// (those outputs equal the clip), accumulated in f64 in index order.
pub fn clip_grad(x: &[f32], grad_out: &[f32], clip: f32) -> f64 {
    assert_eq!(x.len(), grad_out.len(), "clip_grad: lengths");
    x.iter()
        .zip(grad_out)
        .filter(|(&v, _)| v >= clip)
        .map(|(_, &g)| g as f64)
        .sum()
}

/// Plain f64 references, one element at a time: the yardstick for the quantisers above.
pub mod reference {
    /// WRPN code of one weight with `k` bits.
    pub fn wrpn_code(w: f32, k: u32) -> i8 {
        let n = 2f64.powi(k as i32 - 1) - 1.0;
        let v = if w > 1.0 {
            1.0
        } else if w < -1.0 {
            -1.0
        } else {
            w as f64
        };
        let y = v * n;
        let r = y.abs().floor() + if y.abs().fract() >= 0.5 { 1.0 } else { 0.0 };
        (r.copysign(y)) as i8
    }

    /// Mean |w| of a slice, summed in f64 in order.
    pub fn mean_abs(w: &[f32]) -> f64 {
        let mut s = 0f64;
        for &v in w {
            s += (v as f64).abs();
        }
        s / w.len() as f64
    }

    /// TWN codes and scale of one group.
    pub fn twn_group(w: &[f32], t: f64) -> (Vec<i8>, f32) {
        let delta = t * mean_abs(w);
        let mut codes = Vec::with_capacity(w.len());
        let mut sum = 0f64;
        let mut kept = 0usize;
        for &v in w {
            let a = (v as f64).abs();
            if a > delta {
                codes.push(if v > 0.0 { 1 } else { -1 });
                sum += a;
                kept += 1;
            } else {
                codes.push(0);
            }
        }
        (
            codes,
            if kept == 0 {
                0.0
            } else {
                (sum / kept as f64) as f32
            },
        )
    }

    /// Activation code of one value with `k` bits and clip `clip`.
    pub fn activation_code(x: f32, k: u32, clip: f32) -> i8 {
        let n = 2f64.powi(k as i32) - 1.0;
        let v = (x as f64).max(0.0).min(clip as f64);
        let y = v * n / clip as f64;
        (y.floor() + if y.fract() >= 0.5 { 1.0 } else { 0.0 }) as i8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ternary_wrpn_examples() {
        let q = quantize_wrpn(&[-2.0, -0.6, -0.5, -0.4, 0.0, 0.49, 0.5, 3.0], 2, "w").unwrap();
        assert_eq!(q.codes, vec![-1, -1, -1, 0, 0, 0, 1, 1]);
        assert_eq!(q.scales, vec![1.0]);
        let q = quantize_wrpn(&[0.5, -1.0, 1.0 / 6.0], 3, "w").unwrap();
        assert_eq!(q.codes, vec![2, -3, 1]); // 1.5 -> 2 (away), 0.5 -> 1
    }

    #[test]
    fn activations_examples_and_errors() {
        let q = quantize_activations(&[-1.0, 0.0, 0.16, 0.17, 0.5, 0.9, 7.0], 2, 1.0, "a").unwrap();
        assert_eq!(q.codes, vec![0, 0, 0, 1, 2, 3, 3]);
        assert_eq!(q.scales, vec![1.0 / 3.0]);
        assert!(quantize_activations(&[1.0], 8, 1.0, "a").is_err());
        assert!(quantize_activations(&[1.0], 2, 0.0, "a").is_err());
        let e = quantize_activations(&[0.0, f32::NAN], 2, 1.0, "act3").unwrap_err();
        assert!(e.to_string().contains("act3") && e.to_string().contains("element 1"));
        assert!(quantize_binary(&[1.0; 10], 3, ScaleMode::PerChannel, "w").is_err());
        assert!(quantize_twn(&[], 1, ScaleMode::PerTensor, 0.7, "w").is_err());
        assert!(quantize_twn(&[1.0], 1, ScaleMode::PerTensor, f64::NAN, "w").is_err());
        assert!(quantize_wrpn(&[1.0], 1, "w").is_err());
    }

    #[test]
    fn formats_fake_quantize_and_fit() {
        use crate::{fake_quantize, NumberFormat, StreamKey};
        let w: Vec<f32> = (0..24).map(|i| ((i * 7 % 11) as f32 - 5.0) / 9.0).collect();
        let f: NumberFormat = "twn:channel".parse().unwrap();
        let mut out = vec![0f32; 24];
        fake_quantize(&w, &[4, 6], &f, StreamKey::new(0, 0), "w", &mut out).unwrap();
        let want = quantize_twn(&w, 4, ScaleMode::PerChannel, TWN_THRESHOLD, "w").unwrap();
        assert_eq!(out, want.dequantize());
        // an unfitted clip cannot quantise
        let f: NumberFormat = "a2:fit".parse().unwrap();
        let e = fake_quantize(&w, &[4, 6], &f, StreamKey::new(0, 0), "acts7", &mut out);
        assert!(e.unwrap_err().to_string().contains("acts7"));
        // the fitted clip beats the maximum when one outlier stretches the range
        let mut x: Vec<f32> = (0..10000).map(|i| (i % 100) as f32 / 100.0).collect();
        x.push(20.0);
        let c = fit_clip(&x, 2, "x").unwrap();
        assert!(c > 0.3 && c < 20.0, "{c}");
        let err = |clip: f32| {
            let q = quantize_activations(&x, 2, clip, "x").unwrap().dequantize();
            x.iter()
                .zip(&q)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum::<f64>()
        };
        assert!(err(c) < err(20.0));
        assert_eq!(fit_clip(&[0.0, -1.0], 2, "x").unwrap(), 1.0);
        assert!(fit_clip(&[f32::NAN], 2, "x").is_err());
    }

    #[test]
    fn ste_passes_inside_the_clip_only() {
        let x = [-1.5, -1.0, 0.0, 1.0, 1.01];
        let g = [1.0, 2.0, 3.0, 4.0, 5.0];
        let mut out = [9.0; 5];
        ste_clip_grad(&x, &g, -1.0, 1.0, &mut out);
        assert_eq!(out, [0.0, 2.0, 3.0, 4.0, 0.0]);
        assert_eq!(clip_grad(&[0.5, 1.0, 2.0], &[1.0, 2.0, 4.0], 1.0), 6.0);
    }
}
