//! Resource and throughput model of an FPGA AI Suite-style BFP dot-product array (paper 003),
//! by mantissa width: `k_vector` lanes, each a `c_vector`-long dot product of BFP mantissas per
//! cycle, with FP16 activations blocked on the device and FP32 accumulation.
//!
//! Every coefficient is derived from the architecture by counting bits (as the 002 model in
//! [`crate::resources`] does) unless a constant below says otherwise:
//! - multiplier: an `m x n` array multiplier has `m * n` partial-product cells (an AND and a
//!   full-adder bit), one 6-input LUT each ([`LUT_PER_PP_CELL`]); sign-magnitude multiplies the
//!   magnitudes and conditionally negates the product (one LUT per product bit),
//!   two's complement multiplies `w x w` bits (Baugh-Wooley, no negation);
//! - adder tree: `c_vector - 1` ripple-carry adders, one LUT per sum bit (ALM arithmetic
//!   mode), each level one bit wider;
//! - block scaling: the block sum becomes FP32 through a leading-zero count and a normalising
//!   barrel shifter (`s * ceil(log2 s)` LUTs for an `s`-bit sum) and a 6-bit exponent adder;
//! - FP32 accumulation: one DSP block per lane in floating-point mode ([`DSP_PER_LANE`]:
//!   Arria 10 / Stratix 10 DSP blocks add IEEE single precision natively);
//! - FP16 -> BFP on the device: per `c_vector` block, a 5-bit maximum tree (`c_vector - 1`
//!   comparators of 5 LUTs) and per element an 11-bit shifter over 5 shift bits plus a rounder;
//! - memory: M20K blocks of 20,480 bits ([`M20K_BITS`], Intel's M20K) for a double-buffered
//!   stream buffer holding the largest layer's input and output in BFP, and a double-buffered
//!   filter cache of `k_vector x c_vector x taps` weight mantissas;
//! - throughput: compute bound, one `c_vector x k_vector` step per cycle, channels padded to
//!   whole vectors; the clock is the device's assumed `fmax_mhz` from the catalogue.

use serde::Serialize;

/// LUTs per partial-product cell of a soft array multiplier.
pub const LUT_PER_PP_CELL: f64 = 1.0;
/// DSP blocks per lane (its FP32 accumulator).
pub const DSP_PER_LANE: u32 = 1;
/// Bits per M20K block.
pub const M20K_BITS: f64 = 20480.0;
/// LUTs per lane for the FP32 -> FP16 output conversion (round and pack, 16 bits x 2).
pub const OUTPUT_LUTS_PER_LANE: f64 = 32.0;

/// Mantissa encoding of one operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Operand {
    /// Bits including the sign.
    pub width: u32,
    pub twos_complement: bool,
}

/// The array and the device it runs on.
#[derive(Clone, Debug, Serialize)]
pub struct BfpArray {
    pub c_vector: usize,
    pub k_vector: usize,
    pub fmax_mhz: f64,
    pub device: String,
}

/// One conv/linear layer: input channels, output channels, kernel taps, output pixels.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct GemmLayer {
    pub cin: usize,
    pub cout: usize,
    pub taps: usize,
    pub pixels: usize,
    /// Input pixels (for the stream buffer).
    pub in_pixels: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct BfpEstimate {
    pub luts: u64,
    pub dsps: u32,
    pub brams: u32,
    pub images_per_second: f64,
    /// LUTs of one lane's multipliers, adder tree and scaling.
    pub lane_luts: f64,
    pub multiplier_luts: f64,
    pub adder_tree_luts: f64,
    pub conversion_luts: f64,
}

fn clog2(x: usize) -> u32 {
    usize::BITS - x.max(1).saturating_sub(1).leading_zeros()
}

/// LUTs and product width of one multiplier.
fn multiplier(a: Operand, w: Operand) -> (f64, u32) {
    if a.twos_complement || w.twos_complement {
        let p = a.width + w.width;
        ((a.width * w.width) as f64 * LUT_PER_PP_CELL, p)
    } else {
        let (ma, mw) = (a.width - 1, w.width - 1);
        let p = ma + mw + 1;
        ((ma * mw) as f64 * LUT_PER_PP_CELL + p as f64, p)
    }
}

/// The estimate for activations `a`, weights `w` on `arr` running `layers`.
pub fn estimate(arr: &BfpArray, a: Operand, w: Operand, layers: &[GemmLayer]) -> BfpEstimate {
    let cv = arr.c_vector;
    let (mul, p) = multiplier(a, w);
    let levels = clog2(cv);
    let mut tree = 0f64;
    for l in 1..=levels {
        tree += (cv >> l) as f64 * (p + l) as f64;
    }
    let s = (p + levels) as usize;
    let scale = (s as u32 * clog2(s)) as f64 + 6.0;
    let lane = mul * cv as f64 + tree + scale + OUTPUT_LUTS_PER_LANE;
    // device-side blocking of one c_vector of activations per cycle, shared by the lanes
    let convert = (cv - 1) as f64 * 5.0 + cv as f64 * (11.0 * 5.0 + a.width as f64);
    let luts = (lane * arr.k_vector as f64 + convert).round() as u64;
    let dsps = DSP_PER_LANE * arr.k_vector as u32;
    let act_bits = |c: usize, px: usize| (c * px) as f64 * (a.width as f64 + 5.0 / cv as f64);
    let stream = layers
        .iter()
        .map(|l| act_bits(l.cin, l.in_pixels) + act_bits(l.cout, l.pixels))
        .fold(0.0, f64::max);
    let taps = layers
        .iter()
        .map(|l| l.taps * l.cin.div_ceil(cv) * cv)
        .max()
        .unwrap_or(0);
    let filter = (arr.k_vector * taps) as f64 * (w.width as f64 + 5.0 / cv as f64);
    let brams = (2.0 * (stream + filter) / M20K_BITS).ceil() as u32;
    let cycles: f64 = layers
        .iter()
        .map(|l| (l.cin.div_ceil(cv) * l.cout.div_ceil(arr.k_vector) * l.taps * l.pixels) as f64)
        .sum();
    BfpEstimate {
        luts,
        dsps,
        brams,
        images_per_second: if cycles > 0.0 {
            arr.fmax_mhz * 1e6 / cycles
        } else {
            0.0
        },
        lane_luts: lane,
        multiplier_luts: mul * cv as f64,
        adder_tree_luts: tree,
        conversion_luts: convert,
    }
}

/// The widest array (`k_vector`, a multiple of 4) whose LUTs fit in `lut_budget` for these
/// operands, with its estimate: what the same logic buys at another mantissa width.
pub fn same_logic(
    arr: &BfpArray,
    a: Operand,
    w: Operand,
    layers: &[GemmLayer],
    lut_budget: u64,
) -> (usize, BfpEstimate) {
    let mut k = 4;
    loop {
        let next = BfpArray {
            k_vector: k + 4,
            ..arr.clone()
        };
        if estimate(&next, a, w, layers).luts > lut_budget {
            break;
        }
        k += 4;
    }
    let at = BfpArray {
        k_vector: k,
        ..arr.clone()
    };
    (k, estimate(&at, a, w, layers))
}
