//! Number formats: what a low-precision number is and how a float becomes one.
//!
//! This crate owns block floating point (`BfpFormat`: word length, exponent bits, block
//! granularity, rounding, clamp), the reference formats peers offer (fixed point, small floats
//! such as fp16/bf16/fp8), the counter-based random generator behind stochastic rounding, the
//! quantisers (a plain scalar reference and vectorised versions that match it bit for bit), and
//! packed storage (`BfpTensor`: `i8`/`i16` mantissas plus one small exponent per block).
