//! Paper 001's low-bit layers in the engine: ternary / binary / WRPN k-bit weights (integer
//! codes with per-tensor or per-channel scales) times k-bit unsigned activations, on the packed
//! kernels of `lowprec_kernels::lowbit`.
//!
//! A layer quantises its FP32 input to k-bit codes (`lowprec_formats::lowbit`), forms the
//! im2col rows of the codes (padding is code 0: activation 0), and computes the exact integer
//! dot products of weight and activation codes:
//! - ternary-coded weights (`ternary`, `twn`, `binary` with k-bit activations): bit planes,
//!   `gemm_ternary_planes`;
//! - binary weights with 1-bit activations: XNOR-popcount on signs `s = 2a - 1`, since
//!   `sum w a = (sum w s + sum w) / 2`;
//! - WRPN k-bit weights (k > 2): `k - 1` ternary magnitude planes, `w = sum_q 2^q t_q`.
//!
//! The epilogue is `acc as f32 * (w_scale[o] * a_scale) + bias[o]` in FP32. The reference path
//! sums the codes' products in i64 one at a time and applies the same epilogue, so the two
//! agree bit for bit (the integer sums are exact).

use lowprec_formats::lowbit::{quantize_activations, reference::activation_code};
use lowprec_formats::{LowBitCodes, LowBitFormat};
use lowprec_kernels::lowbit::{gemm_ternary_planes, gemm_xnor, line_words, BitCode, PackedBits};
use lowprec_kernels::{MatMut, MatRef};
use lowprec_nn::layer::Layer;
use lowprec_nn::{Ctx, NnError, Tensor};
use rayon::prelude::*;

use crate::pack::{pack_fields, packed_len, unpack_fields};

/// Low-bit weights as the model file holds them: the codes (`[out, ...]` row-major), one
/// scale per tensor or per output channel, and the format they are in.
#[derive(Clone, Debug, PartialEq)]
pub struct LowBitTensor {
    pub format: LowBitFormat,
    pub shape: Vec<usize>,
    pub q: LowBitCodes,
}

impl LowBitTensor {
    /// The stored fields of the codes: two's complement in `bits` bits; binary `1` for +1,
    /// `0` for -1.
    pub fn pack_codes(&self, tensor: &str) -> Result<Vec<u8>, String> {
        let bits = self.q.bits;
        if !(1..=8).contains(&bits) {
            return Err(format!("{tensor}: {bits}-bit codes (1..=8 bits)"));
        }
        let binary = matches!(self.format, LowBitFormat::Binary { .. });
        let mask = (1u32 << bits) - 1;
        let mut fields = Vec::with_capacity(self.q.codes.len());
        for (i, &c) in self.q.codes.iter().enumerate() {
            let f = if binary && bits == 1 {
                match c {
                    1 => 1,
                    -1 => 0,
                    _ => return Err(format!("{tensor}: code {c} at element {i} is not binary")),
                }
            } else {
                let lo = -(1i32 << (bits - 1));
                let hi = (1i32 << (bits - 1)) - 1;
                if (c as i32) < lo || (c as i32) > hi {
                    return Err(format!(
                        "{tensor}: code {c} at element {i} does not fit {bits} bits"
                    ));
                }
                (c as i32 as u32) & mask
            };
            fields.push(f);
        }
        Ok(pack_fields(&fields, bits))
    }

    /// Reads codes and scales back, checking bit count, sizes, codes and scales against the
    /// format; errors name the tensor.
    pub fn unpack(
        format: LowBitFormat,
        shape: &[usize],
        bits: u32,
        bytes: &[u8],
        scales: Vec<f32>,
        name: &str,
    ) -> Result<Self, String> {
        let ct = format!("packed/{name}.codes");
        let st = format!("packed/{name}.scales");
        if !format.is_weights() {
            return Err(format!(
                "{ct}: {format} is an activation format, not a weight format"
            ));
        }
        if bits != format.bits() {
            return Err(format!(
                "{ct}: {bits}-bit codes, but {format} stores {}-bit codes",
                format.bits()
            ));
        }
        let count: usize = shape.iter().product();
        if count == 0 {
            return Err(format!("{ct}: empty shape {shape:?}"));
        }
        let fields = unpack_fields(bytes, count, bits).ok_or_else(|| {
            format!(
                "{ct} is truncated or too long: {} bytes, {} expected for {count} {bits}-bit codes",
                bytes.len(),
                packed_len(count, bits)
            )
        })?;
        let binary = matches!(format, LowBitFormat::Binary { .. });
        let mut codes = Vec::with_capacity(count);
        for (i, f) in fields.into_iter().enumerate() {
            let c = if binary {
                if f == 1 {
                    1
                } else {
                    -1
                }
            } else {
                let s = 32 - bits;
                (((f << s) as i32) >> s) as i8
            };
            if !format.valid_code(c) {
                let (lo, hi) = format.code_range();
                return Err(format!(
                    "{ct}: code {c} at element {i} is outside {format} ({lo}..={hi})"
                ));
            }
            codes.push(c);
        }
        let channels = shape[0];
        let want = match format.scale_mode() {
            lowprec_formats::ScaleMode::PerTensor => 1,
            lowprec_formats::ScaleMode::PerChannel => channels,
        };
        if scales.len() != want {
            return Err(format!(
                "{st}: {} scales, {want} expected for {format} on shape {shape:?}",
                scales.len()
            ));
        }
        if let Some(i) = scales.iter().position(|s| !(s.is_finite() && *s >= 0.0)) {
            return Err(format!(
                "{st}: scale {} at {i} is not finite and >= 0",
                scales[i]
            ));
        }
        if let LowBitFormat::Wrpn { bits } = format {
            let n = ((1i32 << (bits - 1)) - 1) as f64;
            if scales[0] != (1.0 / n) as f32 {
                return Err(format!(
                    "{st}: scale {} but {format}'s scale is 1/{n}",
                    scales[0]
                ));
            }
        }
        Ok(LowBitTensor {
            format,
            shape: shape.to_vec(),
            q: LowBitCodes {
                codes,
                scales,
                group: count / want,
                bits,
            },
        })
    }
}

/// Convolution geometry, nn's own (a linear layer is a 1x1 convolution of a 1x1 map).
pub(crate) use lowprec_nn::im2col::ConvGeom as Geo;

/// How the integer sums are computed.
enum Kernel {
    /// Ternary-coded weights x activation planes.
    Planes(PackedBits),
    /// Binary weights x 1-bit activations (XNOR), with each row's code sum.
    Xnor(PackedBits, Vec<i64>),
    /// WRPN k-bit weights: one ternary plane per magnitude bit.
    Magnitude(Vec<PackedBits>),
}

/// A conv or linear layer with low-bit weights and k-bit activations.
pub struct LowBitLayer {
    name: String,
    geo: Geo,
    cout: usize,
    linear: bool,
    acts: LowBitFormat,
    a_bits: u32,
    clip: f32,
    weights: LowBitTensor,
    /// `w_scale[o]` per output.
    wscale: Vec<f32>,
    bias: Option<Vec<f32>>,
    reference: bool,
    kernel: Kernel,
}

impl LowBitLayer {
    pub(crate) fn new(
        name: &str,
        geo: Geo,
        cout: usize,
        linear: bool,
        acts: LowBitFormat,
        weights: LowBitTensor,
        bias: Option<Vec<f32>>,
        reference: bool,
    ) -> Result<Self, NnError> {
        let err = |m: String| NnError::Spec(format!("{name}: {m}"));
        let (LowBitFormat::Acts { bits: a_bits, .. }, Some(clip)) = (acts, acts.clip()) else {
            return Err(err(format!(
                "activations {acts}: k-bit activations with a clip expected (a `fit` clip is fitted by quantize-model)"
            )));
        };
        let kk = geo.cin * geo.k * geo.k;
        if weights.q.codes.len() != cout * kk {
            return Err(err(format!(
                "packed weights hold {} codes, the layer needs {cout} x {kk}",
                weights.q.codes.len()
            )));
        }
        if bias.as_ref().is_some_and(|b| b.len() != cout) {
            return Err(err(format!("bias is not {cout} long")));
        }
        let g = weights.q.group.max(1);
        let wscale: Vec<f32> = (0..cout).map(|o| weights.q.scales[(o * kk) / g]).collect();
        // the kernels see K tap-major, channels contiguous: (ky, kx, channel)
        let taps = geo.k * geo.k;
        let mut perm = vec![0i8; cout * kk];
        for o in 0..cout {
            for c in 0..geo.cin {
                for t in 0..taps {
                    perm[o * kk + t * geo.cin + c] = weights.q.codes[o * kk + c * taps + t];
                }
            }
        }
        let wm = MatRef::row_major(&perm, cout, kk).map_err(|e| NnError::kernel(name, e))?;
        let kerr = |e| NnError::kernel(name, e);
        let what = format!("{name}.weight");
        let kernel = match weights.format {
            LowBitFormat::Binary { .. } if a_bits == 1 => {
                let sums = (0..cout)
                    .map(|o| {
                        weights.q.codes[o * kk..(o + 1) * kk]
                            .iter()
                            .map(|&c| c as i64)
                            .sum()
                    })
                    .collect();
                Kernel::Xnor(
                    PackedBits::from_rows(wm, BitCode::Sign, &what).map_err(kerr)?,
                    sums,
                )
            }
            LowBitFormat::Wrpn { bits } if bits > 2 => {
                let mut planes = Vec::new();
                for q in 0..bits - 1 {
                    let t: Vec<i8> = perm
                        .iter()
                        .map(|&c| ((c.unsigned_abs() >> q) & 1) as i8 * c.signum())
                        .collect();
                    let m = MatRef::row_major(&t, cout, kk).map_err(kerr)?;
                    planes.push(PackedBits::from_rows(m, BitCode::Ternary, &what).map_err(kerr)?);
                }
                Kernel::Magnitude(planes)
            }
            _ => Kernel::Planes(PackedBits::from_rows(wm, BitCode::Ternary, &what).map_err(kerr)?),
        };
        Ok(LowBitLayer {
            name: name.to_string(),
            geo,
            cout,
            linear,
            acts,
            a_bits,
            clip,
            weights,
            wscale,
            bias,
            reference,
            kernel,
        })
    }

    fn out_shape(&self) -> Vec<usize> {
        if self.linear {
            vec![self.cout]
        } else {
            vec![self.cout, self.geo.ho, self.geo.wo]
        }
    }

    /// The epilogue of output channel `o` (shared by both paths).
    #[inline]
    fn finish(&self, acc: i64, o: usize, a_scale: f32) -> f32 {
        acc as f32 * (self.wscale[o] * a_scale) + self.bias.as_ref().map_or(0.0, |b| b[o])
    }

    /// Input position of output `(oy, ox)` at tap `(ky, kx)`, if inside the map.
    #[inline]
    fn at(&self, oy: usize, ox: usize, ky: usize, kx: usize) -> Option<usize> {
        let g = self.geo;
        let iy = (oy * g.stride + ky) as isize - g.pad as isize;
        let ix = (ox * g.stride + kx) as isize - g.pad as isize;
        (iy >= 0 && ix >= 0 && iy < g.h as isize && ix < g.w as isize)
            .then(|| iy as usize * g.w + ix as usize)
    }

    fn forward_fast(&self, x: &[f32], b: usize) -> Result<Vec<f32>, NnError> {
        let g = self.geo;
        let (hw, taps) = (g.h * g.w, g.k * g.k);
        let kk = g.cin * taps;
        let po = g.ho * g.wo;
        let rows = b * po;
        let tensor = format!("input activations of {}", self.name);
        let q = quantize_activations(x, self.a_bits, self.clip, &tensor)
            .map_err(|e| NnError::quant(&self.name, 0, e))?;
        let a_scale = q.scales[0];
        // im2col rows packed straight to bit planes, K tap-major as the packed weights; a
        // padding tap is code 0 (no bit set; for XNOR the sign -1 of activation 0)
        let xnor = matches!(self.kernel, Kernel::Xnor(..));
        let code = if xnor {
            BitCode::Sign
        } else {
            BitCode::Unsigned(self.a_bits)
        };
        let planes = if xnor { 1 } else { self.a_bits as usize };
        let words = line_words(kk);
        // NHWC codes: one pixel's channels contiguous
        let mut nhwc = vec![0u8; q.codes.len()];
        for n in 0..b {
            for c in 0..g.cin {
                let src = &q.codes[(n * g.cin + c) * hw..][..hw];
                for (i, &v) in src.iter().enumerate() {
                    nhwc[(n * hw + i) * g.cin + c] = v as u8;
                }
            }
        }
        let mut data = vec![0u64; rows * planes * words];
        data.par_chunks_mut(planes * words)
            .enumerate()
            .for_each(|(r, line)| {
                let (n, p) = (r / po, r % po);
                let (oy, ox) = (p / g.wo, p % g.wo);
                for ky in 0..g.k {
                    for kx in 0..g.k {
                        let Some(i) = self.at(oy, ox, ky, kx) else {
                            continue;
                        };
                        let base = (ky * g.k + kx) * g.cin;
                        let (mut w, mut sh) = (base / 64, base % 64);
                        for &v in &nhwc[(n * hw + i) * g.cin..][..g.cin] {
                            if v != 0 {
                                for pl in 0..planes {
                                    line[pl * words + w] |= ((v as u64 >> pl) & 1) << sh;
                                }
                            }
                            sh += 1;
                            if sh == 64 {
                                sh = 0;
                                w += 1;
                            }
                        }
                    }
                }
            });
        let ap = PackedBits {
            code,
            lines: rows,
            k: kk,
            words,
            data,
        };
        let kerr = |e| NnError::kernel(&self.name, e);
        let mut c = vec![0i32; self.cout * rows];
        let mut acc = vec![0i64; self.cout * rows];
        match &self.kernel {
            Kernel::Planes(w) => {
                gemm_ternary_planes(
                    w,
                    &ap,
                    MatMut::row_major(&mut c, self.cout, rows).map_err(kerr)?,
                )
                .map_err(kerr)?;
                for (a, &v) in acc.iter_mut().zip(&c) {
                    *a = v as i64;
                }
            }
            Kernel::Xnor(w, sums) => {
                gemm_xnor(
                    w,
                    &ap,
                    MatMut::row_major(&mut c, self.cout, rows).map_err(kerr)?,
                )
                .map_err(kerr)?;
                for o in 0..self.cout {
                    for j in 0..rows {
                        acc[o * rows + j] = (c[o * rows + j] as i64 + sums[o]) / 2;
                    }
                }
            }
            Kernel::Magnitude(planes) => {
                for (q, w) in planes.iter().enumerate() {
                    gemm_ternary_planes(
                        w,
                        &ap,
                        MatMut::row_major(&mut c, self.cout, rows).map_err(kerr)?,
                    )
                    .map_err(kerr)?;
                    for (a, &v) in acc.iter_mut().zip(&c) {
                        *a += (v as i64) << q;
                    }
                }
            }
        }
        let mut out = vec![0f32; b * self.cout * po];
        for n in 0..b {
            for o in 0..self.cout {
                for p in 0..po {
                    out[(n * self.cout + o) * po + p] =
                        self.finish(acc[o * rows + n * po + p], o, a_scale);
                }
            }
        }
        Ok(out)
    }

    fn forward_reference(&self, x: &[f32], b: usize) -> Result<Vec<f32>, NnError> {
        let g = self.geo;
        let (hw, taps) = (g.h * g.w, g.k * g.k);
        let kk = g.cin * taps;
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            return Err(NnError::quant(
                &self.name,
                0,
                lowprec_formats::QuantError::NonFinite {
                    tensor: format!("input activations of {}", self.name),
                    index: i,
                    value: x[i],
                },
            ));
        }
        let a: Vec<i8> = x
            .iter()
            .map(|&v| activation_code(v, self.a_bits, self.clip))
            .collect();
        let n_levels = ((1u32 << self.a_bits) - 1) as f64;
        let a_scale = (self.clip as f64 / n_levels) as f32;
        let w = &self.weights.q.codes;
        let mut out = vec![0f32; b * self.cout * g.ho * g.wo];
        let mut idx = 0;
        for n in 0..b {
            for o in 0..self.cout {
                for oy in 0..g.ho {
                    for ox in 0..g.wo {
                        let mut acc = 0i64;
                        for c in 0..g.cin {
                            for ky in 0..g.k {
                                for kx in 0..g.k {
                                    if let Some(p) = self.at(oy, ox, ky, kx) {
                                        acc += w[o * kk + (c * g.k + ky) * g.k + kx] as i64
                                            * a[(n * g.cin + c) * hw + p] as i64;
                                    }
                                }
                            }
                        }
                        out[idx] = self.finish(acc, o, a_scale);
                        idx += 1;
                    }
                }
            }
        }
        Ok(out)
    }
}

impl Layer for LowBitLayer {
    fn name(&self) -> &str {
        &self.name
    }
    fn describe(&self) -> String {
        format!(
            "lowbit {} weights {} acts {} ({})",
            if self.linear { "linear" } else { "conv" },
            self.weights.format,
            self.acts,
            if self.reference {
                "reference"
            } else {
                "packed"
            }
        )
    }
    fn output_shape(&self, _inputs: &[&[usize]]) -> Result<Vec<usize>, NnError> {
        Ok(self.out_shape())
    }
    fn forward(
        &mut self,
        _ctx: &mut Ctx<'_>,
        inputs: &[&Tensor],
        _train: bool,
    ) -> Result<Tensor, NnError> {
        let x = inputs
            .first()
            .ok_or_else(|| NnError::shape(&self.name, "no input".to_string()))?;
        let per = self.geo.cin * self.geo.h * self.geo.w;
        let b = x.shape.first().copied().unwrap_or(0);
        if x.data.len() != b * per || b == 0 {
            return Err(NnError::shape(
                &self.name,
                format!("input {:?} does not hold {per} values per example", x.shape),
            ));
        }
        let y = if self.reference {
            self.forward_reference(&x.data, b)?
        } else {
            self.forward_fast(&x.data, b)?
        };
        let mut shape = vec![b];
        shape.extend(self.out_shape());
        Tensor::new(y, shape)
    }
    fn backward(&mut self, _ctx: &mut Ctx<'_>, _dy: Tensor) -> Result<Vec<Tensor>, NnError> {
        Err(NnError::shape(
            &self.name,
            "the integer engine is inference only (retrain with `lowprec retrain`)".to_string(),
        ))
    }
}
