//! Number formats: what a low-precision number is and how a float becomes one.
//!
//! This crate owns block floating point ([`BfpFormat`]: word length, exponent bits, block
//! granularity, rounding, clamp), the reference formats peers offer (fixed point, small floats
//! such as fp16/bf16/fp8), the counter-based random generator behind stochastic rounding
//! ([`rng`]), the quantisers (a plain f64 scalar reference and vectorised, multi-threaded
//! kernels that match it bit for bit), and packed storage ([`BfpTensor`]: `i8`/`i16`
//! mantissas plus one small exponent per block, so 8-bit storage costs one byte per element),
//! and paper 001's ternary / binary / k-bit quantisers with their straight-through gradients
//! ([`lowbit`]: integer codes plus scales for the packed kernels), and the bit-true FPGA BFP
//! formats of Intel's FPGA AI Suite ([`fpga`]: FP16 in, `c_vector` channel blocks, 5-bit
//! exponents, sign-magnitude or two's-complement mantissas).

pub mod bfp;
pub mod format;
pub mod fpga;
pub mod isa;
pub mod layout;
pub mod lowbit;
pub mod peer;
pub mod rng;
pub mod run;
pub mod scalar;

pub use bfp::{
    block_exponents, fake_quantize_bfp, quantize_bfp, quantize_bfp_i16_into, quantize_bfp_i8_into,
    quantize_bfp_ref, BfpTensor, Mantissas,
};
pub use format::{
    BfpFormat, Block, Clamp, FixedFormat, FloatFormat, FormatError, NumberFormat, Rounding,
};
pub use fpga::{ChannelView, FpgaBfp, FpgaRounding, FpgaTensor, MantissaCode};
pub use layout::BlockLayout;
pub use lowbit::{ActClip, LowBitCodes, LowBitFormat, ScaleMode};
pub use rng::StreamKey;

/// Errors from quantisation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QuantError {
    /// A NaN or Inf in the input: `tensor` names it, `index` is the first offending element.
    #[error("non-finite value {value} in {tensor} at element {index}")]
    NonFinite {
        tensor: String,
        index: usize,
        value: f32,
    },
    #[error("shape error: {0}")]
    Shape(String),
    #[error(transparent)]
    Format(#[from] FormatError),
}

/// Fake quantisation under any [`NumberFormat`]: `out` receives the values `x` maps to
/// (`fp32` copies). `shape` gives BFP its blocks.
pub fn fake_quantize(
    x: &[f32],
    shape: &[usize],
    fmt: &NumberFormat,
    key: StreamKey,
    tensor: &str,
    out: &mut [f32],
) -> Result<(), QuantError> {
    match fmt {
        NumberFormat::F32 => {
            peer::check_shape(x, shape, tensor)?;
            if let Some(i) = x.iter().position(|v| !v.is_finite()) {
                return Err(QuantError::NonFinite {
                    tensor: tensor.into(),
                    index: i,
                    value: x[i],
                });
            }
            out.copy_from_slice(x);
            Ok(())
        }
        NumberFormat::Bfp(b) => {
            let layout = BlockLayout::new(shape, b.block)?;
            fake_quantize_bfp(x, &layout, b, key, tensor, out)
        }
        NumberFormat::Fixed(f) => {
            peer::check_shape(x, shape, tensor)?;
            peer::fake_quantize_fixed(x, f, key, tensor, out)
        }
        NumberFormat::Float(f) => {
            peer::check_shape(x, shape, tensor)?;
            peer::fake_quantize_float(x, f, key, tensor, out)
        }
        NumberFormat::Fpga(f) => {
            peer::check_shape(x, shape, tensor)?;
            fpga::fake_quantize_fpga(x, ChannelView::from_shape(shape), f, key, tensor, out)
        }
        NumberFormat::LowBit(f) => {
            peer::check_shape(x, shape, tensor)?;
            // weights are `[channels, ...]`: per-channel scales are per leading index
            let channels = shape.first().copied().unwrap_or(1);
            lowbit::quantize_lowbit(x, channels, f, tensor)?.dequantize_into(out);
            Ok(())
        }
    }
}
