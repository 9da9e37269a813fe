//! Paper-001 and paper-004 style throughput projections.
//!
//! Paper 001 maps ternary (2-bit) or binary (1-bit) weights with 2-bit activations onto LUTs:
//! such a MAC needs no multiplier (a ternary weight selects +a, 0 or -a; a binary one +a or -a),
//! so throughput scales with the logic, not the DSPs. The model: MAC units = usable ALMs /
//! ALMs per MAC; ops/s = 2 x units x clock (one MAC = two ops, as paper 001 counts TOPS);
//! images/s = ops/s / (2 x MACs per image). ALMs per ternary MAC is FITTED to paper 001's
//! Arria 10 point (AlexNet, 3,700 images/s); a binary MAC costs half (its product needs no
//! sign/zero select, assumed); 8-bit MACs use the DSPs (2 per DSP block per cycle).
//!
//! Paper 004's multi-precision MAC (fMAC) splits each BFP mantissa into 2-bit chunks and
//! accumulates chunk products over several cycles: a `ma x mb`-bit MAC costs
//! `ceil(ma/2) * ceil(mb/2)` chunk products, so throughput at fixed hardware scales with the
//! inverse of that count.

use crate::catalog::{Catalog, IntelDevice};
use crate::{HwError, Result};

/// Fraction of ALMs available to MAC arrays (the rest: buffers, control, interfaces). Assumed.
pub const USABLE_ALM_FRACTION: f64 = 0.7;
/// AlexNet MACs per 224x224 image (conv 666 M + fully connected 58.6 M).
pub const ALEXNET_MACS: f64 = 724.4e6;
/// ResNet-34 MACs per 224x224 image.
pub const RESNET34_MACS: f64 = 3.6e9;
/// Paper 001: ternary-weight, 2-bit-activation AlexNet on Arria 10 at 3,700 images/s.
pub const PAPER_A10_ALEXNET_IMG_S: f64 = 3700.0;
/// Paper 001: "a 55.5 TOPS Stratix 10 device".
pub const PAPER_S10_TOPS: f64 = 55.5;

/// Weight precision of the paper-001 MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum WeightKind {
    Ternary,
    Binary,
    Int8,
}

impl std::str::FromStr for WeightKind {
    type Err = HwError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "ternary" | "2" => Ok(Self::Ternary),
            "binary" | "1" => Ok(Self::Binary),
            "int8" | "8" => Ok(Self::Int8),
            _ => Err(HwError::InvalidArgument(format!(
                "weight kind '{s}' (expected ternary, binary or int8)"
            ))),
        }
    }
}

/// ALMs per ternary-weight x 2-bit-activation MAC, fitted to the Arria 10 AlexNet point.
pub fn fitted_alms_per_ternary_mac() -> Result<f64> {
    let a10 = Catalog::get().intel("arria10-gx1150")?;
    let ops = PAPER_A10_ALEXNET_IMG_S * 2.0 * ALEXNET_MACS;
    Ok(USABLE_ALM_FRACTION * a10.alms as f64 * 2.0 * a10.fmax_mhz * 1e6 / ops)
}

/// Projected throughput of a device.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Projection {
    pub device: String,
    pub weights: WeightKind,
    pub mac_units: f64,
    pub tops: f64,
    pub images_per_s: f64,
    pub macs_per_image: f64,
}

/// Projects `device` running a network of `macs_per_image` with the given weight precision.
pub fn project(
    device: &IntelDevice,
    weights: WeightKind,
    macs_per_image: f64,
) -> Result<Projection> {
    if !(macs_per_image.is_finite() && macs_per_image > 0.0) {
        return Err(HwError::InvalidArgument(format!(
            "MACs per image {macs_per_image} must be positive"
        )));
    }
    let alm_t = fitted_alms_per_ternary_mac()?;
    let units = match weights {
        WeightKind::Ternary => USABLE_ALM_FRACTION * device.alms as f64 / alm_t,
        WeightKind::Binary => USABLE_ALM_FRACTION * device.alms as f64 / (alm_t / 2.0),
        WeightKind::Int8 => 2.0 * device.dsp as f64,
    };
    let ops = 2.0 * units * device.fmax_mhz * 1e6;
    Ok(Projection {
        device: device.name.clone(),
        weights,
        mac_units: units,
        tops: ops / 1e12,
        images_per_s: ops / (2.0 * macs_per_image),
        macs_per_image,
    })
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
