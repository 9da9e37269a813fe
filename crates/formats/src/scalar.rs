//! Element-level quantisation: the plain f64 reference and the f32 formulation the portable
//! kernel follows (and the SIMD kernels vectorise, stochastic rounding apart: see `run`).
//!
//! Every quantiser in this crate reduces to "scale by a power of two, round to an integer,
//! clamp": `y = x * 2^k`, `q = clamp(R(y), lo, hi)`, value `q * 2^-k`. The reference below does
//! it in f64, where `x * 2^k` is always exact and `floor(y + U)` is evaluated exactly for every
//! case that matters, so it is obviously right. The f32 formulation ([`round_scaled_f32`])
//! avoids f64 and any inexact addition: with `a = |y|`, `fa = floor(a)`, `fr = a - fa` (all
//! exact),
//! - nearest-away: `fa + [fr >= 1/2]`, signed;
//! - stochastic, `y >= 0`: `floor(y + U) = fa + [fr >= 1 - U]` (`1 - U` is exact: 24 bits);
//! - stochastic, `y < 0`: `floor(y + U) = -(fa + [fr > U])`.
//!
//! `y` itself is inexact only when it is subnormal (`|y| < 2^-126`), where every mode gives 0,
//! except stochastic rounding of a negative value with `U = 0`, which gives -1 for any
//! nonzero `x` with `|y| < 1` (where the computed `fr` may have been flushed to 0); that
//! case, and its neighbour (a negative integer `y` with `U = 0`, which must stay put), are
//! tested for explicitly.

use crate::format::{pow2, Rounding};

/// Parameters of one scaled-integer quantisation: `y = x * 2^k`, clamp to `[lo, hi]`.
#[derive(Clone, Copy, Debug)]
pub struct ScaledInt {
    /// The scaling exponent (`wl - 2 - e` for BFP, `fl` for fixed point).
    pub k: i32,
    pub lo: i32,
    pub hi: i32,
    pub rounding: Rounding,
}

impl ScaledInt {
    /// `2^k` split into two exactly representable factors (k may reach 142).
    #[inline]
    pub fn factors(&self) -> (f32, f32) {
        if self.k > 127 {
            (pow2(127), pow2(self.k - 127))
        } else {
            (pow2(self.k), 1.0)
        }
    }
    /// The value of one integer step, `2^-k`.
    #[inline]
    pub fn ulp(&self) -> f32 {
        pow2(-self.k)
    }
}

/// Reference: the integer mantissa of `x` under `p`, with stochastic draw `r24` in `[0, 2^24)`.
pub fn quantize_scalar_ref(x: f32, p: &ScaledInt, r24: u32) -> i32 {
    let y = x as f64 * 2f64.powi(p.k);
    let q = match p.rounding {
        Rounding::NearestEven => y.round_ties_even(),
        Rounding::NearestAway => y.round(),
        Rounding::TowardZero => y.trunc(),
        Rounding::Stochastic => (y + r24 as f64 / 16_777_216.0).floor(),
    };
    q.clamp(p.lo as f64, p.hi as f64) as i32
}

/// The f32 formulation (same bits as the reference): returns the clamped integer as an f32
/// (never -0.0).
#[inline]
pub fn round_scaled_f32(x: f32, p: &ScaledInt, f: (f32, f32), r24: u32) -> f32 {
    let y = x * f.0 * f.1;
    let q = match p.rounding {
        Rounding::NearestEven => y.round_ties_even(),
        Rounding::TowardZero => y.trunc(),
        Rounding::NearestAway | Rounding::Stochastic => {
            let a = y.abs();
            let fa = a.floor();
            let fr = a - fa;
            let neg = y.is_sign_negative();
            let bump = if p.rounding == Rounding::NearestAway {
                fr >= 0.5
            } else {
                let u = r24 as f32 * (1.0 / 16_777_216.0);
                if neg {
                    fr > u || (r24 == 0 && x != 0.0 && a < 1.0)
                } else {
                    fr >= 1.0 - u
                }
            };
            let m = fa + if bump { 1.0 } else { 0.0 };
            if neg {
                -m
            } else {
                m
            }
        }
    };
    // `+ 0.0` turns -0.0 into +0.0 so dequantised zeros match the reference's bits.
    q.clamp(p.lo as f32, p.hi as f32) + 0.0
}
