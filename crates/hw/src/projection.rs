//! Paper-001 and paper-004 style throughput projections.
//!
//! **Paper 001** (Colangelo et al., FCCM 2018) maps ternary (2-bit) or binary (1-bit) weights
//! with low-bit activations onto soft logic: such a MAC needs no multiplier (a ternary weight
//! selects +a, 0 or -a), so throughput scales with the ALMs, while layers kept at higher
//! precision (the first and the last, as 001 and WRPN keep them) run on the DSP blocks. The
//! model, per image:
//!
//! ```text
//! t = ( MACs(first, last) / DSP_MACS + MACs(other layers) / SOFT_MACS(w, a) ) / (clock * eta)
//! SOFT_MACS(w, a) = USABLE_ALM_FRACTION * ALMs / pe_cost(w, a).total
//! ```
//!
//! - `pe_cost` (ALMs per MAC of a dot-product PE, itemised in [`PeCost`]) comes from the ALM
//!   itself (Arria 10 / Stratix 10 core-fabric handbooks: an ALM in arithmetic mode has two
//!   full adders fed by 4-input LUTs, and four registers): an adder tree over `p`-bit products
//!   costs `p + 2` adder bits per input (level `l` adds `p + l`-bit words, halving each
//!   level), 2 bits per ALM; a ternary/binary product (select +a, 0, -a; XNOR for binary x
//!   binary) folds into the LUTs ahead of those adders; a `w x a`-bit soft multiplier adds
//!   `w a / 2` ALMs of partial-product compression; operand registers `(w + a) / 4` ALMs.
//!   Ternary x 2-bit: 3.5 ALMs; binary x binary: 2; 8 x 8: 45. ASSUMED, not fitted.
//! - `DSP_MACS`: 2 8-bit MACs per DSP block per cycle (the two 18x19 multipliers of the
//!   Arria 10 / Stratix 10 variable-precision block).
//! - `USABLE_ALM_FRACTION` = 0.7 (the rest: buffers, control, interfaces). ASSUMED.
//! - Clocks: the catalogue's (`data/catalog.toml`, with their sources).
//! - `eta`, the sustained fraction of that peak (memory stalls, mapping losses, control), is
//!   FITTED once, to 001's Arria 10 point (ternary x 2-bit AlexNet at 3,700 images/s), and
//!   used unchanged for every other device, network and precision.
//!
//! The earlier model (ALMs per ternary MAC fitted to the same point, every layer on the soft
//! array) put the Stratix 10 at 19.5 TOPS: fitting ALMs per MAC folded AlexNet's 8-bit first
//! and last layers (15% of its MACs, on 1,518 DSPs) into an apparent 33.5 ALMs per ternary
//! MAC, ten times what the logic needs, and carried that penalty to ResNet-34, whose 7x7 stem
//! is 3% of its MACs on a device with 3.8x the DSPs.
//!
//! **Paper 004**'s multi-precision MAC (fMAC) splits each BFP mantissa into 2-bit chunks and
//! accumulates chunk products over several cycles: a `ma x mb`-bit MAC costs
//! `ceil(ma/2) * ceil(mb/2)` chunk products, so throughput at fixed hardware scales with the
//! inverse of that count.

use crate::catalog::{Catalog, IntelDevice};
use crate::networks::{self, Network};
use crate::{HwError, Result};

/// Fraction of ALMs available to MAC arrays (the rest: buffers, control, interfaces). Assumed.
pub const USABLE_ALM_FRACTION: f64 = 0.7;
/// 8-bit MACs per DSP block per cycle (two 18x19 multipliers).
pub const DSP_INT8_MACS: f64 = 2.0;
/// AlexNet MACs per 224x224 image (conv 666 M + fully connected 58.6 M).
pub const ALEXNET_MACS: f64 = 724.4e6;
/// ResNet-34 MACs per 224x224 image.
pub const RESNET34_MACS: f64 = 3.6e9;
/// Paper 001: ternary-weight, 2-bit-activation AlexNet on Arria 10 at 3,700 images/s.
pub const PAPER_A10_ALEXNET_IMG_S: f64 = 3700.0;
/// Paper 001: "a 55.5 TOPS Stratix 10 device" running a modified ResNet-34 (ternary weights,
/// 2-bit activations assumed, as in its Arria 10 design).
pub const PAPER_S10_TOPS: f64 = 55.5;

/// Weight and activation widths of a MAC: weights 1 = binary {-1, +1}, 2 = ternary
/// {-1, 0, +1}, 3..=16 signed integers; activations 1 = binary {-1, +1}, 2..=16 unsigned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Precision {
    pub w_bits: u32,
    pub a_bits: u32,
}

impl Precision {
    pub fn new(w_bits: u32, a_bits: u32) -> Result<Self> {
        if !(1..=16).contains(&w_bits) || !(1..=16).contains(&a_bits) {
            return Err(HwError::InvalidArgument(format!(
                "widths w{w_bits}/a{a_bits}: weights and activations need 1..=16 bits"
            )));
        }
        Ok(Self { w_bits, a_bits })
    }
    /// `ternary/a2`-style label.
    pub fn label(&self) -> String {
        let w = match self.w_bits {
            1 => "binary".to_string(),
            2 => "ternary".to_string(),
            b => format!("int{b}"),
        };
        format!("{w}/a{}", self.a_bits)
    }
}

/// Parses a weight width: `ternary`, `binary`, `int8`, or a bit count.
pub fn parse_weight_bits(s: &str) -> Result<u32> {
    let t = s.trim().to_ascii_lowercase();
    let bits = match t.as_str() {
        "ternary" => Some(2),
        "binary" => Some(1),
        _ => t.trim_start_matches("int").parse::<u32>().ok(),
    };
    match bits {
        Some(b) if (1..=16).contains(&b) => Ok(b),
        _ => Err(HwError::InvalidArgument(format!(
            "weight width '{s}' (expected ternary, binary, int8 or a bit count 1..=16)"
        ))),
    }
}

/// ALMs per MAC of a soft-logic dot-product PE, itemised (see the module docs for sources).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct PeCost {
    /// Bits of one product entering the adder tree.
    pub product_bits: u32,
    pub multiplier_alms: f64,
    pub adder_tree_alms: f64,
    pub register_alms: f64,
    pub total: f64,
}

/// The PE cost of a `w x a`-bit MAC in soft logic.
pub fn pe_cost(p: Precision) -> PeCost {
    let (w, a) = (p.w_bits, p.a_bits);
    let (product_bits, multiplier_alms) = match (w, a) {
        (1, 1) => (1, 0.0),                 // XNOR, popcount tree
        (2, 1) => (2, 0.0),                 // +-1 or 0
        (1 | 2, _) => (a + 1, 0.0),         // +-a or 0, folded into the adders' LUTs
        (_, 1) => (w, 0.0),                 // +-w
        _ => (w + a, (w * a) as f64 / 2.0), // soft multiplier
    };
    let adder_tree_alms = (product_bits as f64 + 2.0) / 2.0;
    let register_alms = (w + a) as f64 / 4.0;
    PeCost {
        product_bits,
        multiplier_alms,
        adder_tree_alms,
        register_alms,
        total: multiplier_alms + adder_tree_alms + register_alms,
    }
}

/// A projected device x network x precision point.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Projection {
    pub device: String,
    pub network: String,
    pub precision: Precision,
    pub clock_mhz: f64,
    pub alms_per_mac: f64,
    /// The same PE's cost relative to a soft 8 x 8-bit PE.
    pub cost_vs_int8: f64,
    /// MACs per cycle of the soft-logic array and of the DSPs.
    pub soft_macs_per_cycle: f64,
    pub dsp_macs_per_cycle: f64,
    pub macs_per_image: f64,
    /// MACs per image on the low-bit array (the rest run at 8 bits on the DSPs).
    pub low_bit_macs: f64,
    /// Sustained fraction of the peak (fitted once, see the module docs).
    pub efficiency: f64,
    pub images_per_s: f64,
    /// Sustained: 2 x MACs per image x images/s.
    pub tops: f64,
    /// The low-bit array's peak: 2 x soft MACs per cycle x clock.
    pub peak_tops: f64,
}

/// MACs per image of the layers that stay at 8 bits (the first and the last compute layer)
/// and of the rest.
fn split_macs(net: &Network) -> (f64, f64) {
    let compute: Vec<f64> = net
        .layers
        .iter()
        .filter(|l| l.is_compute())
        .map(|l| l.macs() as f64)
        .collect();
    let total: f64 = compute.iter().sum();
    let edge = match compute.len() {
        0 => 0.0,
        1 => compute[0],
        n => compute[0] + compute[n - 1],
    };
    (edge, total - edge)
}

/// Seconds per image at full efficiency (eta = 1).
fn ideal_seconds(dev: &IntelDevice, net: &Network, p: Precision) -> (f64, f64, f64) {
    let hz = dev.fmax_mhz * 1e6;
    let dsp = DSP_INT8_MACS * dev.dsp as f64;
    let soft = USABLE_ALM_FRACTION * dev.alms as f64 / pe_cost(p).total;
    let (edge, rest) = split_macs(net);
    // An all-8-bit network runs every layer on the DSPs and a soft 8-bit array together.
    let low_units = if p.w_bits >= 8 && p.a_bits >= 8 {
        soft + dsp
    } else {
        soft
    };
    ((edge / dsp + rest / low_units) / hz, soft, dsp)
}

/// The sustained fraction eta, fitted to 001's Arria 10 AlexNet point.
pub fn fitted_efficiency() -> Result<f64> {
    let a10 = Catalog::get().intel("arria10-gx1150")?;
    let alexnet = networks::get("alexnet")?;
    let (t, _, _) = ideal_seconds(a10, alexnet, Precision::new(2, 2)?);
    Ok(t * PAPER_A10_ALEXNET_IMG_S)
}

/// Projects `device` running `net` with every layer but the first and last at `p`.
pub fn project(device: &IntelDevice, net: &Network, p: Precision) -> Result<Projection> {
    let macs = net.macs() as f64;
    if macs <= 0.0 {
        return Err(HwError::InvalidArgument(format!(
            "network '{}' has no MACs to project",
            net.id
        )));
    }
    let eta = fitted_efficiency()?;
    let (t, soft, dsp) = ideal_seconds(device, net, p);
    let images_per_s = eta / t;
    let cost = pe_cost(p);
    Ok(Projection {
        device: device.name.clone(),
        network: net.id.clone(),
        precision: p,
        clock_mhz: device.fmax_mhz,
        alms_per_mac: cost.total,
        cost_vs_int8: cost.total / pe_cost(Precision::new(8, 8)?).total,
        soft_macs_per_cycle: soft,
        dsp_macs_per_cycle: dsp,
        macs_per_image: macs,
        low_bit_macs: split_macs(net).1,
        efficiency: eta,
        images_per_s,
        tops: 2.0 * macs * images_per_s / 1e12,
        peak_tops: 2.0 * soft * device.fmax_mhz * 1e6 / 1e12,
    })
}

/// The clock (MHz) at which `device` would reach `tops` sustained on `net` at `p`, all else
/// equal: how far the paper's figure is from the model's assumptions.
pub fn clock_for_tops(device: &IntelDevice, net: &Network, p: Precision, tops: f64) -> Result<f64> {
    let pr = project(device, net, p)?;
    Ok(device.fmax_mhz * tops / pr.tops)
}

/// The precisions every projection table shows.
pub fn table_precisions() -> Vec<Precision> {
    [(1, 1), (1, 2), (2, 2), (2, 4), (4, 4), (8, 8)]
        .into_iter()
        .map(|(w, a)| Precision {
            w_bits: w,
            a_bits: a,
        })
        .collect()
}

/// Paper 004: chunk products per `ma x mb`-bit BFP MAC on a 2-bit-chunk fMAC.
pub fn fmac_chunk_products(ma: u32, mb: u32) -> Result<u32> {
    if ma == 0 || mb == 0 || ma > 16 || mb > 16 {
        return Err(HwError::InvalidArgument(format!(
            "mantissa widths {ma} x {mb} must be in 1..=16"
        )));
    }
    Ok(crate::fast::passes(ma, mb) as u32)
}

/// Paper 004: throughput relative to the 8 x 8-bit case on the same fMAC array.
pub fn fmac_relative_throughput(ma: u32, mb: u32) -> Result<f64> {
    Ok(fmac_chunk_products(8, 8)? as f64 / fmac_chunk_products(ma, mb)? as f64)
}
