//! Number formats as plain data: what a config file or the command line can name.
//!
//! Strings (see [`NumberFormat::from_str`]):
//! - `fp32` (or `none`): no quantisation.
//! - `bfp<wl>[:<block>][:<rounding>][:e<bits>][:asym]`, e.g. `bfp8`, `bfp8:axis0:stochastic`,
//!   `bfp6:tile32:nearest-away`, `bfp8:tensor:stochastic:e5`. Blocks: `tensor`, `axis<d>`,
//!   `example` (= `axis0`, one exponent per example), `channel` (= `axis0`, per output channel of
//!   a weight), `tile<k>` (tiles of k consecutive elements along the last axis).
//! - `fixed<wl>:<fl>[:<rounding>][:asym]`: fixed point, `fl` fractional bits.
//! - `fp16`, `bf16`, `fp8e4m3`, `fp8e5m2`, `float<E>m<M>`, each `[:<rounding>]`.
//!
//! Roundings: `nearest-even` (`ne`), `nearest-away` (`na`), `toward-zero` (`tz`),
//! `stochastic` (`sr`). Defaults: block `tensor`, rounding `stochastic`, 8 exponent bits,
//! symmetric clamp.
//!
//! A TOML/JSON table works too: `{ kind = "bfp", wl = 8, block = "axis0",
//! rounding = "stochastic", exp_bits = 8, clamp = "symmetric" }`.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A format string or table that cannot be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid number format `{input}`: {reason}")]
pub struct FormatError {
    pub input: String,
    pub reason: String,
}

fn err(input: &str, reason: impl Into<String>) -> FormatError {
    FormatError {
        input: input.to_string(),
        reason: reason.into(),
    }
}

/// How a scaled value is turned into an integer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rounding {
    /// Round to nearest, ties to even (IEEE default).
    NearestEven,
    /// Round to nearest, ties away from zero.
    NearestAway,
    /// Truncate toward zero.
    TowardZero,
    /// `floor(y + U)`, `U = r / 2^24` with `r` from the counter-based generator: unbiased.
    Stochastic,
}

impl Rounding {
    pub fn is_stochastic(self) -> bool {
        matches!(self, Rounding::Stochastic)
    }
}

impl FromStr for Rounding {
    type Err = FormatError;
    fn from_str(s: &str) -> Result<Self, FormatError> {
        Ok(match s {
            "nearest-even" | "ne" | "nearest" | "rne" => Rounding::NearestEven,
            "nearest-away" | "na" => Rounding::NearestAway,
            "toward-zero" | "tz" | "truncate" | "trunc" => Rounding::TowardZero,
            "stochastic" | "sr" => Rounding::Stochastic,
            _ => {
                return Err(err(
                    s,
                    "unknown rounding (nearest-even, nearest-away, toward-zero, stochastic)",
                ))
            }
        })
    }
}

impl fmt::Display for Rounding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rounding::NearestEven => "nearest-even",
            Rounding::NearestAway => "nearest-away",
            Rounding::TowardZero => "toward-zero",
            Rounding::Stochastic => "stochastic",
        })
    }
}

/// Which elements share one exponent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Block {
    /// One exponent for the whole tensor (SWALP's "big block").
    Tensor,
    /// One exponent per index of axis `d` (`axis0` = per example, SWALP's "small block", or per
    /// output channel of a weight).
    Axis(usize),
    /// Tiles of `k` consecutive elements along the last axis (MX / FPGA `c_vector` style); the
    /// last tile of a row may be short.
    Tile(usize),
}

impl FromStr for Block {
    type Err = FormatError;
    fn from_str(s: &str) -> Result<Self, FormatError> {
        match s {
            "tensor" | "big" => return Ok(Block::Tensor),
            "example" | "channel" | "row" | "small" => return Ok(Block::Axis(0)),
            _ => {}
        }
        if let Some(d) = s.strip_prefix("axis") {
            return d
                .parse()
                .map(Block::Axis)
                .map_err(|_| err(s, "axis<d> needs a number"));
        }
        if let Some(k) = s.strip_prefix("tile") {
            let k: usize = k.parse().map_err(|_| err(s, "tile<k> needs a number"))?;
            if k == 0 {
                return Err(err(s, "tile size must be >= 1"));
            }
            return Ok(Block::Tile(k));
        }
        Err(err(
            s,
            "unknown block (tensor, axis<d>, example, channel, tile<k>)",
        ))
    }
}

impl TryFrom<String> for Block {
    type Error = FormatError;
    fn try_from(s: String) -> Result<Self, FormatError> {
        s.parse()
    }
}

impl From<Block> for String {
    fn from(b: Block) -> String {
        b.to_string()
    }
}

impl fmt::Display for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Block::Tensor => f.write_str("tensor"),
            Block::Axis(d) => write!(f, "axis{d}"),
            Block::Tile(k) => write!(f, "tile{k}"),
        }
    }
}

/// Integer range of the mantissas.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Clamp {
    /// `[-(2^(wl-1) - 1), 2^(wl-1) - 1]`: sign-symmetric, and what makes the fast 8-bit
    /// kernels provably overflow-free.
    #[default]
    Symmetric,
    /// `[-2^(wl-1), 2^(wl-1) - 1]`: two's complement, for SWALP/Darknet parity.
    Asymmetric,
}

/// Block floating point: `wl`-bit signed mantissas sharing an `exp_bits`-bit exponent per block.
///
/// For a block with largest magnitude `m`, the shared exponent is `e = floor(log2 m)` (read from
/// the float's bits), saturated to `[-2^(exp_bits-1), 2^(exp_bits-1) - 1]`; the step is
/// `ulp = 2^(e - (wl - 2))`; mantissas are `q = R(x / ulp)` clamped to the [`Clamp`] range. An
/// all-zero block gets the smallest exponent and zero mantissas.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BfpFormat {
    pub wl: u32,
    #[serde(default = "default_exp_bits")]
    pub exp_bits: u32,
    #[serde(default = "default_block")]
    pub block: Block,
    #[serde(default = "default_rounding")]
    pub rounding: Rounding,
    #[serde(default)]
    pub clamp: Clamp,
}

fn default_exp_bits() -> u32 {
    8
}
fn default_block() -> Block {
    Block::Tensor
}
fn default_rounding() -> Rounding {
    Rounding::Stochastic
}

impl BfpFormat {
    /// `wl`-bit BFP with the given block and rounding, 8 exponent bits, symmetric clamp.
    pub fn new(wl: u32, block: Block, rounding: Rounding) -> Result<Self, FormatError> {
        let f = BfpFormat {
            wl,
            exp_bits: 8,
            block,
            rounding,
            clamp: Clamp::Symmetric,
        };
        f.validate()?;
        Ok(f)
    }

    pub fn validate(&self) -> Result<(), FormatError> {
        if !(2..=16).contains(&self.wl) {
            return Err(err(
                &self.to_string(),
                "word length must be 2..=16 bits (including sign)",
            ));
        }
        if !(1..=8).contains(&self.exp_bits) {
            return Err(err(&self.to_string(), "exponent bits must be 1..=8"));
        }
        if let Block::Tile(0) = self.block {
            return Err(err(&self.to_string(), "tile size must be >= 1"));
        }
        Ok(())
    }

    /// Smallest and largest shared exponent (two's complement in `exp_bits` bits).
    pub fn exp_range(&self) -> (i32, i32) {
        let h = 1i32 << (self.exp_bits - 1);
        (-h, h - 1)
    }

    /// Mantissa range `(lo, hi)` under the clamp.
    pub fn mantissa_range(&self) -> (i32, i32) {
        int_range(self.wl, self.clamp)
    }

    /// Largest mantissa magnitude (what the GEMM kernels are told to expect).
    pub fn max_abs(&self) -> u32 {
        let (lo, hi) = self.mantissa_range();
        lo.unsigned_abs().max(hi as u32)
    }

    /// Whether mantissas fit in `i8` (wl <= 8).
    pub fn fits_i8(&self) -> bool {
        self.wl <= 8
    }

    /// The scale `2^(e - (wl - 2))` of a block with shared exponent `e`.
    pub fn scale(&self, e: i32) -> f32 {
        pow2(e - (self.wl as i32 - 2))
    }
}

pub(crate) fn int_range(wl: u32, clamp: Clamp) -> (i32, i32) {
    let hi = (1i32 << (wl - 1)) - 1;
    match clamp {
        Clamp::Symmetric => (-hi, hi),
        Clamp::Asymmetric => (-hi - 1, hi),
    }
}

/// `2^k` as f32 for `k` in `[-149, 127]` (subnormals included), exactly.
pub fn pow2(k: i32) -> f32 {
    assert!(
        (-149..=127).contains(&k),
        "2^{k} is not representable in f32"
    );
    if k >= -126 {
        f32::from_bits(((k + 127) as u32) << 23)
    } else {
        f32::from_bits(1u32 << (k + 149))
    }
}

/// Fixed point: `wl`-bit signed integers `q` meaning `q * 2^-fl`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FixedFormat {
    pub wl: u32,
    pub fl: i32,
    #[serde(default = "default_rounding")]
    pub rounding: Rounding,
    #[serde(default)]
    pub clamp: Clamp,
}

impl FixedFormat {
    pub fn validate(&self) -> Result<(), FormatError> {
        if !(2..=24).contains(&self.wl) {
            return Err(err(
                &self.to_string(),
                "fixed-point word length must be 2..=24",
            ));
        }
        // The step 2^-fl and the largest value (2^(wl-1)) * 2^-fl must be f32-representable.
        if self.fl > 149 || (self.wl as i32 - 1 - self.fl) > 127 {
            return Err(err(
                &self.to_string(),
                "fractional bits out of the f32 range",
            ));
        }
        Ok(())
    }
    pub fn mantissa_range(&self) -> (i32, i32) {
        int_range(self.wl, self.clamp)
    }
}

/// A small float with `exp_bits` exponent and `man_bits` mantissa bits, IEEE-style bias and
/// subnormals. Values beyond the largest finite number saturate to it (training quantisers
/// must not create infinities). `finite_only` reserves no exponent code for Inf (the OCP
/// e4m3 "FN" convention: the top code is finite, only all-ones mantissa there is NaN).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FloatFormat {
    pub exp_bits: u32,
    pub man_bits: u32,
    #[serde(default)]
    pub finite_only: bool,
    #[serde(default = "default_rounding")]
    pub rounding: Rounding,
}

impl FloatFormat {
    pub const FP16: FloatFormat = FloatFormat {
        exp_bits: 5,
        man_bits: 10,
        finite_only: false,
        rounding: Rounding::NearestEven,
    };
    pub const BF16: FloatFormat = FloatFormat {
        exp_bits: 8,
        man_bits: 7,
        finite_only: false,
        rounding: Rounding::NearestEven,
    };
    pub const FP8_E4M3: FloatFormat = FloatFormat {
        exp_bits: 4,
        man_bits: 3,
        finite_only: true,
        rounding: Rounding::NearestEven,
    };
    pub const FP8_E5M2: FloatFormat = FloatFormat {
        exp_bits: 5,
        man_bits: 2,
        finite_only: false,
        rounding: Rounding::NearestEven,
    };

    pub fn validate(&self) -> Result<(), FormatError> {
        if !(2..=8).contains(&self.exp_bits) || !(1..=23).contains(&self.man_bits) {
            return Err(err(
                &self.to_string(),
                "small floats need 2..=8 exponent and 1..=23 mantissa bits",
            ));
        }
        Ok(())
    }
    pub fn bias(&self) -> i32 {
        (1 << (self.exp_bits - 1)) - 1
    }
    /// Exponent of the smallest normal number.
    pub fn emin(&self) -> i32 {
        1 - self.bias()
    }
    /// Exponent of the largest finite binade.
    pub fn emax(&self) -> i32 {
        let top = (1 << self.exp_bits) - 1;
        if self.finite_only {
            top - self.bias()
        } else {
            top - 1 - self.bias()
        }
    }
    /// Largest finite value.
    pub fn max_finite(&self) -> f32 {
        let m = self.man_bits as i32;
        // IEEE: (2 - 2^-m) 2^emax; finite-only: the all-ones mantissa of the top code is NaN.
        let frac_units = if self.finite_only {
            (1i64 << (m + 1)) - 2
        } else {
            (1i64 << (m + 1)) - 1
        };
        (frac_units as f64 * 2f64.powi(self.emax() - m)) as f32
    }
}

/// Any number format lowprec can apply to a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "FormatSpec", into = "String")]
pub enum NumberFormat {
    /// No quantisation (full f32).
    F32,
    Bfp(BfpFormat),
    Fixed(FixedFormat),
    Float(FloatFormat),
    /// Bit-true FPGA BFP (FP16 in, `c_vector` channel blocks, 5-bit exponent).
    Fpga(crate::fpga::FpgaBfp),
    /// Paper 001's ternary / binary / k-bit weights and k-bit activations (integer codes
    /// times scales, `lowprec_formats::lowbit`).
    LowBit(crate::lowbit::LowBitFormat),
}

impl NumberFormat {
    pub fn is_f32(&self) -> bool {
        matches!(self, NumberFormat::F32)
    }
    pub fn rounding(&self) -> Option<Rounding> {
        match self {
            NumberFormat::F32 => None,
            NumberFormat::Bfp(b) => Some(b.rounding),
            NumberFormat::Fixed(x) => Some(x.rounding),
            NumberFormat::Float(x) => Some(x.rounding),
            NumberFormat::Fpga(x) => Some(match x.rounding {
                crate::fpga::FpgaRounding::Truncate => Rounding::TowardZero,
                crate::fpga::FpgaRounding::Nearest => Rounding::NearestAway,
                crate::fpga::FpgaRounding::NearestEven => Rounding::NearestEven,
                crate::fpga::FpgaRounding::Stochastic => Rounding::Stochastic,
            }),
            NumberFormat::LowBit(_) => Some(Rounding::NearestAway),
        }
    }
    pub fn validate(&self) -> Result<(), FormatError> {
        match self {
            NumberFormat::F32 => Ok(()),
            NumberFormat::Bfp(b) => b.validate(),
            NumberFormat::Fixed(x) => x.validate(),
            NumberFormat::Float(x) => x.validate(),
            NumberFormat::Fpga(x) => x.validate(),
            NumberFormat::LowBit(x) => x.validate().map_err(|r| err(&x.to_string(), r)),
        }
    }
}

/// What serde accepts for a format: a string or a table.
#[derive(Deserialize)]
#[serde(untagged)]
enum FormatSpec {
    Text(String),
    Table(FormatTable),
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
enum FormatTable {
    Fp32,
    Bfp(BfpFormat),
    Fixed(FixedFormat),
    Float(FloatFormat),
    Fpga(crate::fpga::FpgaBfp),
}

impl TryFrom<FormatSpec> for NumberFormat {
    type Error = FormatError;
    fn try_from(s: FormatSpec) -> Result<Self, FormatError> {
        let f = match s {
            FormatSpec::Text(t) => return t.parse(),
            FormatSpec::Table(FormatTable::Fp32) => NumberFormat::F32,
            FormatSpec::Table(FormatTable::Bfp(b)) => NumberFormat::Bfp(b),
            FormatSpec::Table(FormatTable::Fixed(x)) => NumberFormat::Fixed(x),
            FormatSpec::Table(FormatTable::Float(x)) => NumberFormat::Float(x),
            FormatSpec::Table(FormatTable::Fpga(x)) => NumberFormat::Fpga(x),
        };
        f.validate()?;
        Ok(f)
    }
}

impl From<NumberFormat> for String {
    fn from(f: NumberFormat) -> String {
        f.to_string()
    }
}

impl FromStr for NumberFormat {
    type Err = FormatError;
    fn from_str(input: &str) -> Result<Self, FormatError> {
        let s = input.trim().to_ascii_lowercase();
        let mut parts = s.split(':');
        let head = parts.next().unwrap_or_default();
        let rest: Vec<&str> = parts.collect();
        let wrap = |e: FormatError| err(input, e.reason);
        if head == "fp32" || head == "none" || head == "f32" {
            if !rest.is_empty() {
                return Err(err(input, "fp32 takes no options"));
            }
            return Ok(NumberFormat::F32);
        }
        if let Some(f) = crate::fpga::FpgaBfp::parse_parts(input, head, &rest)? {
            return Ok(NumberFormat::Fpga(f));
        }
        if let Some(f) = crate::lowbit::LowBitFormat::parse_parts(head, &rest) {
            return f.map(NumberFormat::LowBit).map_err(|r| err(input, r));
        }
        if let Some(wl) = head.strip_prefix("bfp") {
            let wl: u32 = wl
                .parse()
                .map_err(|_| err(input, "bfp<wl> needs a word length, e.g. bfp8"))?;
            let mut f = BfpFormat {
                wl,
                exp_bits: 8,
                block: Block::Tensor,
                rounding: Rounding::Stochastic,
                clamp: Clamp::Symmetric,
            };
            let (mut seen_block, mut seen_round) = (false, false);
            let (mut seen_clamp, mut seen_exp) = (false, false);
            for p in rest {
                if matches!(p, "asym" | "asymmetric" | "sym" | "symmetric") {
                    if seen_clamp {
                        return Err(err(input, "clamp (sym/asym) given twice"));
                    }
                    seen_clamp = true;
                    f.clamp = if p.starts_with("asym") {
                        Clamp::Asymmetric
                    } else {
                        Clamp::Symmetric
                    };
                } else if let Some(eb) = p
                    .strip_prefix('e')
                    .filter(|x| x.chars().all(|c| c.is_ascii_digit()) && !x.is_empty())
                {
                    if seen_exp {
                        return Err(err(input, "exponent bits given twice"));
                    }
                    seen_exp = true;
                    f.exp_bits = eb.parse().map_err(|_| err(input, "bad exponent bits"))?;
                } else if p.starts_with("tile") || p.starts_with("axis") {
                    // a block keyword with a bad size: its own message, not "unknown option"
                    let b = p.parse::<Block>().map_err(wrap)?;
                    if seen_block {
                        return Err(err(input, "block given twice"));
                    }
                    seen_block = true;
                    f.block = b;
                } else if let Ok(b) = p.parse::<Block>() {
                    if seen_block {
                        return Err(err(input, "block given twice"));
                    }
                    seen_block = true;
                    f.block = b;
                } else if let Ok(r) = p.parse::<Rounding>() {
                    if seen_round {
                        return Err(err(input, "rounding given twice"));
                    }
                    seen_round = true;
                    f.rounding = r;
                } else {
                    return Err(err(
                        input,
                        format!("unknown option `{p}` (block, rounding, e<bits>, asym)"),
                    ));
                }
            }
            f.validate().map_err(wrap)?;
            return Ok(NumberFormat::Bfp(f));
        }
        if let Some(wl) = head.strip_prefix("fixed") {
            let wl: u32 = wl
                .parse()
                .map_err(|_| err(input, "fixed<wl>:<fl> needs a word length"))?;
            let fl = rest
                .first()
                .ok_or_else(|| err(input, "fixed<wl>:<fl> needs fractional bits"))?;
            let fl: i32 = fl
                .parse()
                .map_err(|_| err(input, "fractional bits must be an integer"))?;
            let mut f = FixedFormat {
                wl,
                fl,
                rounding: Rounding::Stochastic,
                clamp: Clamp::Symmetric,
            };
            for p in &rest[1..] {
                match *p {
                    "asym" | "asymmetric" => f.clamp = Clamp::Asymmetric,
                    "sym" | "symmetric" => f.clamp = Clamp::Symmetric,
                    _ => f.rounding = p.parse().map_err(wrap)?,
                }
            }
            f.validate().map_err(wrap)?;
            return Ok(NumberFormat::Fixed(f));
        }
        let float = match head {
            "fp16" | "f16" | "half" => Some(FloatFormat::FP16),
            "bf16" => Some(FloatFormat::BF16),
            "fp8e4m3" | "e4m3" => Some(FloatFormat::FP8_E4M3),
            "fp8e5m2" | "e5m2" => Some(FloatFormat::FP8_E5M2),
            _ => None,
        };
        let float = match float {
            Some(f) => Some(f),
            None => match head.strip_prefix("float") {
                Some(em) => {
                    let (e, m) = em
                        .split_once('m')
                        .ok_or_else(|| err(input, "float<E>m<M>, e.g. float4m3"))?;
                    let e: u32 = e.parse().map_err(|_| err(input, "bad exponent bits"))?;
                    let m: u32 = m.parse().map_err(|_| err(input, "bad mantissa bits"))?;
                    Some(FloatFormat {
                        exp_bits: e,
                        man_bits: m,
                        finite_only: false,
                        rounding: Rounding::NearestEven,
                    })
                }
                None => None,
            },
        };
        if let Some(mut f) = float {
            for p in rest {
                f.rounding = p.parse().map_err(wrap)?;
            }
            f.validate().map_err(wrap)?;
            return Ok(NumberFormat::Float(f));
        }
        Err(err(input, "unknown format (fp32, bfp<wl>[:block][:rounding], fixed<wl>:<fl>, fp16, bf16, fp8e4m3, fp8e5m2, float<E>m<M>, int4bfp/int5bfp/int7bfp/int8bfp/int9bfp/int12bfp[:c<cv>][:rounding], fpga<W>sm|tc, ternary, wrpn<k>, twn[:channel], binary[:channel], a<k>[:clip<C>|:fit])"))
    }
}

impl fmt::Display for BfpFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bfp{}:{}:{}", self.wl, self.block, self.rounding)?;
        if self.exp_bits != 8 {
            write!(f, ":e{}", self.exp_bits)?;
        }
        if self.clamp == Clamp::Asymmetric {
            f.write_str(":asym")?;
        }
        Ok(())
    }
}

impl fmt::Display for FixedFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fixed{}:{}:{}", self.wl, self.fl, self.rounding)?;
        if self.clamp == Clamp::Asymmetric {
            f.write_str(":asym")?;
        }
        Ok(())
    }
}

impl fmt::Display for FloatFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match (self.exp_bits, self.man_bits, self.finite_only) {
            (5, 10, false) => "fp16".to_string(),
            (8, 7, false) => "bf16".to_string(),
            (4, 3, true) => "fp8e4m3".to_string(),
            (5, 2, false) => "fp8e5m2".to_string(),
            (e, m, _) => format!("float{e}m{m}"),
        };
        write!(f, "{name}:{}", self.rounding)
    }
}

impl fmt::Display for NumberFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NumberFormat::F32 => f.write_str("fp32"),
            NumberFormat::Bfp(b) => b.fmt(f),
            NumberFormat::Fixed(x) => x.fmt(f),
            NumberFormat::Float(x) => x.fmt(f),
            NumberFormat::Fpga(x) => x.fmt(f),
            NumberFormat::LowBit(x) => x.fmt(f),
        }
    }
}
