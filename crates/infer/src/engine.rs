//! The integer inference engine: the network of a [`QuantizedModel`] with its quantised
//! conv/linear layers replaced by FPGA layers, everything else (batch norm with running
//! statistics, ReLU, pooling, residual adds, fp32 first/last layers) the nn crate's own layers.
//!
//! An FPGA layer does what the accelerator does: its FP32 input becomes FP16 and is blocked
//! into `c_vector` channel blocks (`lowprec_formats::fpga`), the dot products run on the
//! block engine (`lowprec_kernels::blockdot`: exact integer block sums, FP32 accumulation in
//! block order, taps outermost, then channel blocks), the bias is added in FP32 and the output
//! leaves as FP16. [`Mode::Fast`] runs NHWC im2col with channels padded to whole blocks on the
//! integer GEMM; [`Mode::Reference`] loops over the definition with the f64 reference
//! quantiser and the reference block dot product; tests (and `lowprec infer --check`) compare
//! the two bit for bit. [`Mode::Float`] is the same network in FP32 with the master weights:
//! the float model the quantised one is compared against.

use std::cell::RefCell;
use std::collections::HashMap;

use lowprec_formats::fpga::{f16_bits_saturating, f16_round_ref, quantize_fpga, quantize_fpga_ref};
use lowprec_formats::{
    ChannelView, FpgaBfp, FpgaRounding, FpgaTensor, LowBitFormat, NumberFormat, StreamKey,
};
use lowprec_kernels::blockdot::{block_gemm_i16, block_gemm_i8, block_gemm_ref, BlockOperand};
use lowprec_kernels::CpuBackend;
use lowprec_nn::layer::Layer;
use lowprec_nn::model::build_layer;
use lowprec_nn::spec::LayerSpec;
use lowprec_nn::{Ctx, Model, NnError, Precision, Tensor};

use crate::lowbit_layer::{LowBitLayer, LowBitTensor};
use crate::modelfile::{PackedWeights, QuantizedModel};
use crate::InferError;

/// Which arithmetic the engine runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Integer GEMM on the block engine (the product).
    Fast,
    /// Plain loops over the definition (the yardstick).
    Reference,
    /// FP32 everywhere with the master weights (the float model).
    Float,
}

/// What an FPGA layer needs, handed to the layer factory.
struct FpgaInit {
    acts: FpgaBfp,
    weights: FpgaTensor,
    bias: Option<Vec<f32>>,
    mode: Mode,
}

/// What a low-bit layer needs.
struct LowBitInit {
    acts: LowBitFormat,
    weights: LowBitTensor,
    bias: Option<Vec<f32>>,
    reference: bool,
}

enum Init {
    Fpga(FpgaInit),
    LowBit(LowBitInit),
}

thread_local! {
    /// The factory of `Model::build_with_fusion` is a plain `fn`; the quantised layers reach
    /// it through this slot, filled just before the build and emptied right after.
    static PLAN: RefCell<HashMap<String, Init>> = RefCell::new(HashMap::new());
}

fn make_layer(
    name: &str,
    geo: Geo,
    cout: usize,
    linear: bool,
    init: Init,
) -> Result<Box<dyn Layer>, NnError> {
    Ok(match init {
        Init::Fpga(i) => Box::new(FpgaLayer::new(name, geo, cout, linear, i)?),
        Init::LowBit(i) => Box::new(LowBitLayer::new(
            name,
            geo,
            cout,
            linear,
            i.acts,
            i.weights,
            i.bias,
            i.reference,
        )?),
    })
}

fn factory(
    id: u64,
    name: &str,
    spec: &LayerSpec,
    in_shapes: &[&[usize]],
    seed: u64,
) -> Result<Box<dyn Layer>, NnError> {
    let init = PLAN.with(|p| p.borrow_mut().remove(name));
    let Some(init) = init else {
        return build_layer(id, name, spec, in_shapes, seed);
    };
    let shape = in_shapes
        .first()
        .ok_or_else(|| NnError::Spec(format!("{name}: no input")))?;
    match spec {
        LayerSpec::Conv {
            out,
            kernel,
            stride,
            padding,
            ..
        } => {
            let [cin, h, w] = shape[..] else {
                return Err(NnError::Spec(format!(
                    "{name}: conv input must be [C, H, W], got {shape:?}"
                )));
            };
            let geo = Geo::new(cin, h, w, *kernel, *stride, *padding)
                .map_err(|msg| NnError::Spec(format!("{name}: {msg}")))?;
            make_layer(name, geo, *out, false, init)
        }
        LayerSpec::Linear { out, .. } => {
            let f: usize = shape.iter().product();
            let geo = Geo::new(f, 1, 1, 1, 1, 0)
                .map_err(|msg| NnError::Spec(format!("{name}: {msg}")))?;
            make_layer(name, geo, *out, true, init)
        }
        other => Err(NnError::Spec(format!(
            "{name}: a {} layer cannot be quantised",
            other.type_name()
        ))),
    }
}

/// Convolution geometry, nn's own (a linear layer is a 1x1 convolution of a 1x1 map).
use lowprec_nn::im2col::ConvGeom as Geo;

enum Mant {
    I8(Vec<i8>),
    I16(Vec<i16>),
}

/// A conv or linear layer on the FPGA model.
pub struct FpgaLayer {
    name: String,
    geo: Geo,
    cout: usize,
    acts: FpgaBfp,
    /// As stored: `[cout, cin, k, k]` mantissas, exponents per (out, channel block, tap).
    weights: FpgaTensor,
    bias: Option<Vec<f32>>,
    mode: Mode,
    /// Fast path: weights as `cout x (taps * cpad)` (tap-major, channels padded to whole
    /// blocks) and their log2 block scales.
    wmant: Mant,
    wexps: Vec<i32>,
    linear: bool,
}

impl FpgaLayer {
    fn new(
        name: &str,
        geo: Geo,
        cout: usize,
        linear: bool,
        init: FpgaInit,
    ) -> Result<Self, NnError> {
        let spec_err = |m: String| NnError::Spec(format!("{name}: {m}"));
        let (a, w) = (init.acts, init.weights.format);
        if a.c_vector != w.c_vector {
            return Err(spec_err(format!(
                "activations ({a}) and weights ({w}) must share the c_vector"
            )));
        }
        if a.rounding == FpgaRounding::Stochastic {
            return Err(spec_err(format!(
                "stochastic rounding ({a}) is for training; inference rounds deterministically"
            )));
        }
        let taps = geo.k * geo.k;
        let want = ChannelView {
            outer: cout,
            channels: geo.cin,
            inner: taps,
        };
        if init.weights.view != want {
            return Err(spec_err(format!(
                "packed weights are {:?}, the layer needs {want:?}",
                init.weights.view
            )));
        }
        let cv = a.c_vector as usize;
        let nbc = geo.cin.div_ceil(cv);
        let cpad = nbc * cv;
        let kk = taps * cpad;
        let mut wm = vec![0i16; cout * kk];
        let mut we = vec![0i32; cout * taps * nbc];
        let t = &init.weights;
        for o in 0..cout {
            for tap in 0..taps {
                for c in 0..geo.cin {
                    wm[o * kk + tap * cpad + c] = t.mantissas[(o * geo.cin + c) * taps + tap];
                }
                for b in 0..nbc {
                    we[(o * taps + tap) * nbc + b] =
                        w.scale_log2(t.exponents[(o * nbc + b) * taps + tap]);
                }
            }
        }
        let wmant = if a.width <= 8 && w.width <= 8 {
            Mant::I8(wm.iter().map(|&v| v as i8).collect())
        } else {
            Mant::I16(wm)
        };
        Ok(FpgaLayer {
            name: name.to_string(),
            linear,
            geo,
            cout,
            acts: a,
            weights: init.weights,
            bias: init.bias,
            mode: init.mode,
            wmant,
            wexps: we,
        })
    }

    fn out_shape(&self) -> Vec<usize> {
        if self.linear {
            vec![self.cout]
        } else {
            vec![self.cout, self.geo.ho, self.geo.wo]
        }
    }

    /// FP32 result of one output + bias, leaving as FP16.
    #[inline]
    fn finish(&self, acc: f32, o: usize, reference: bool) -> f32 {
        let v = acc + self.bias.as_ref().map_or(0.0, |b| b[o]);
        if reference {
            f16_round_ref(v) as f32
        } else {
            half::f16::from_bits(f16_bits_saturating(v)).to_f32()
        }
    }

    fn forward_fast(&self, x: &[f32], b: usize) -> Result<Vec<f32>, NnError> {
        let g = self.geo;
        let (hw, taps) = (g.h * g.w, g.k * g.k);
        let cv = self.acts.c_vector as usize;
        let nbc = g.cin.div_ceil(cv);
        let cpad = nbc * cv;
        // NCHW -> NHWC: each pixel's channels contiguous, blocked per pixel.
        let mut xt = vec![0f32; x.len()];
        for n in 0..b {
            for c in 0..g.cin {
                for p in 0..hw {
                    xt[(n * hw + p) * g.cin + c] = x[(n * g.cin + c) * hw + p];
                }
            }
        }
        let tensor = format!("input activations of {}", self.name);
        let view = ChannelView {
            outer: b * hw,
            channels: g.cin,
            inner: 1,
        };
        let q = quantize_fpga(&xt, view, &self.acts, StreamKey::new(0, 0), &tensor)
            .map_err(|e| NnError::quant(&self.name, 0, e))?;
        // im2col with (tap, padded channel) columns; padding pixels are zero blocks.
        let (m, kk) = (b * g.ho * g.wo, taps * cpad);
        let zero_exp = self.acts.scale_log2(0);
        let mut am = vec![0i16; m * kk];
        let mut ae = vec![zero_exp; m * taps * nbc];
        for n in 0..b {
            for oy in 0..g.ho {
                for ox in 0..g.wo {
                    let row = (n * g.ho + oy) * g.wo + ox;
                    for ky in 0..g.k {
                        for kx in 0..g.k {
                            let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                            let ix = (ox * g.stride + kx) as isize - g.pad as isize;
                            if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                continue;
                            }
                            let pix = n * hw + iy as usize * g.w + ix as usize;
                            let tap = ky * g.k + kx;
                            am[row * kk + tap * cpad..][..g.cin]
                                .copy_from_slice(&q.mantissas[pix * g.cin..(pix + 1) * g.cin]);
                            for bb in 0..nbc {
                                ae[(row * taps + tap) * nbc + bb] =
                                    self.acts.scale_log2(q.exponents[pix * nbc + bb]);
                            }
                        }
                    }
                }
            }
        }
        let mut y = vec![0f32; m * self.cout];
        let kerr = |e: lowprec_kernels::KernelError| NnError::kernel(&self.name, e);
        match &self.wmant {
            Mant::I8(wm) => {
                let a8: Vec<i8> = am.iter().map(|&v| v as i8).collect();
                let a = BlockOperand {
                    mant: &a8,
                    rows: m,
                    k: kk,
                    exps: &ae,
                    max_abs: self.acts.max_abs(),
                };
                let w = BlockOperand {
                    mant: wm,
                    rows: self.cout,
                    k: kk,
                    exps: &self.wexps,
                    max_abs: self.weights.format.max_abs(),
                };
                block_gemm_i8(&a, &w, cv, &mut y).map_err(kerr)?;
            }
            Mant::I16(wm) => {
                let a = BlockOperand {
                    mant: &am,
                    rows: m,
                    k: kk,
                    exps: &ae,
                    max_abs: self.acts.max_abs(),
                };
                let w = BlockOperand {
                    mant: wm,
                    rows: self.cout,
                    k: kk,
                    exps: &self.wexps,
                    max_abs: self.weights.format.max_abs(),
                };
                block_gemm_i16(&a, &w, cv, &mut y).map_err(kerr)?;
            }
        }
        // (pixel, out) -> NCHW, bias, FP16 out
        let po = g.ho * g.wo;
        let mut out = vec![0f32; b * self.cout * po];
        for n in 0..b {
            for p in 0..po {
                for o in 0..self.cout {
                    out[(n * self.cout + o) * po + p] =
                        self.finish(y[(n * po + p) * self.cout + o], o, false);
                }
            }
        }
        Ok(out)
    }

    fn forward_reference(&self, x: &[f32], b: usize) -> Result<Vec<f32>, NnError> {
        let g = self.geo;
        let (hw, taps) = (g.h * g.w, g.k * g.k);
        let cv = self.acts.c_vector as usize;
        let nbc = g.cin.div_ceil(cv);
        let view = ChannelView {
            outer: b,
            channels: g.cin,
            inner: hw,
        };
        let (q, e) = quantize_fpga_ref(x, view, &self.acts, StreamKey::new(0, 0))
            .map_err(|e| NnError::quant(&self.name, 0, e))?;
        let wt = &self.weights;
        let wf = wt.format;
        let mut out = vec![0f32; b * self.cout * g.ho * g.wo];
        let mut idx = 0;
        for n in 0..b {
            for o in 0..self.cout {
                for oy in 0..g.ho {
                    for ox in 0..g.wo {
                        // one output: per tap, per channel block, an exact integer sum and one
                        // FP32 addition (block_gemm_ref on a 1 x 1 product of that block)
                        let mut acc = 0f32;
                        for ky in 0..g.k {
                            for kx in 0..g.k {
                                let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                                let ix = (ox * g.stride + kx) as isize - g.pad as isize;
                                if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                    continue;
                                }
                                let p = iy as usize * g.w + ix as usize;
                                let tap = ky * g.k + kx;
                                for bb in 0..nbc {
                                    let cs = bb * cv..((bb + 1) * cv).min(g.cin);
                                    let av: Vec<i32> =
                                        cs.clone().map(|c| q[(n * g.cin + c) * hw + p]).collect();
                                    let wv: Vec<i32> = cs
                                        .map(|c| wt.mantissas[(o * g.cin + c) * taps + tap] as i32)
                                        .collect();
                                    let len = av.len();
                                    let mut pad_a = av;
                                    let mut pad_w = wv;
                                    pad_a.resize(cv, 0);
                                    pad_w.resize(cv, 0);
                                    let ea = [self.acts.scale_log2(e[(n * nbc + bb) * hw + p])];
                                    let ew =
                                        [wf.scale_log2(wt.exponents[(o * nbc + bb) * taps + tap])];
                                    debug_assert!(len <= cv);
                                    let mut v = [0f32];
                                    block_gemm_ref(
                                        &BlockOperand {
                                            mant: &pad_a,
                                            rows: 1,
                                            k: cv,
                                            exps: &ea,
                                            max_abs: self.acts.max_abs(),
                                        },
                                        &BlockOperand {
                                            mant: &pad_w,
                                            rows: 1,
                                            k: cv,
                                            exps: &ew,
                                            max_abs: wf.max_abs(),
                                        },
                                        cv,
                                        &mut v,
                                    )
                                    .map_err(|e| NnError::kernel(&self.name, e))?;
                                    acc += v[0];
                                }
                            }
                        }
                        out[idx] = self.finish(acc, o, true);
                        idx += 1;
                    }
                }
            }
        }
        Ok(out)
    }
}

impl Layer for FpgaLayer {
    fn name(&self) -> &str {
        &self.name
    }
    fn describe(&self) -> String {
        format!(
            "fpga {} acts {} weights {} ({:?})",
            if self.linear { "linear" } else { "conv" },
            self.acts,
            self.weights.format,
            self.mode
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
        if x.data.len() != b * per {
            return Err(NnError::shape(
                &self.name,
                format!("input {:?} does not hold {per} values per example", x.shape),
            ));
        }
        let y = match self.mode {
            Mode::Reference => self.forward_reference(&x.data, b)?,
            _ => self.forward_fast(&x.data, b)?,
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

/// The quantised network, ready to run.
pub struct Engine {
    pub model: Model,
    pub mode: Mode,
    /// Per node: whether it is an FPGA layer.
    pub quantized: Vec<bool>,
    last_use: Vec<usize>,
    precision: Precision,
}

impl Engine {
    pub fn new(qm: &QuantizedModel, mode: Mode) -> Result<Self, InferError> {
        let spec = qm.network()?;
        let mut plan = HashMap::new();
        if mode != Mode::Float {
            for l in &qm.layers {
                let wname = format!("{}.weight", l.name);
                match (&l.weights, &l.acts, qm.packed.get(&wname)) {
                    (NumberFormat::F32, NumberFormat::F32, _) => {}
                    (NumberFormat::Fpga(_), NumberFormat::Fpga(a), Some(PackedWeights::Fpga(t))) => {
                        let bias = qm
                            .tensors
                            .get(&format!("param/{}.bias", l.name))
                            .map(|(_, v)| v.clone());
                        plan.insert(
                            l.name.clone(),
                            Init::Fpga(FpgaInit {
                                acts: *a,
                                weights: t.clone(),
                                bias,
                                mode,
                            }),
                        );
                    }
                    (
                        NumberFormat::LowBit(_),
                        NumberFormat::LowBit(a),
                        Some(PackedWeights::LowBit(t)),
                    ) => {
                        let bias = qm
                            .tensors
                            .get(&format!("param/{}.bias", l.name))
                            .map(|(_, v)| v.clone());
                        plan.insert(
                            l.name.clone(),
                            Init::LowBit(LowBitInit {
                                acts: *a,
                                weights: t.clone(),
                                bias,
                                reference: mode == Mode::Reference,
                            }),
                        );
                    }
                    (w, a, _) => {
                        return Err(InferError::Unsupported(format!(
                            "layer {}: weights {w} with activations {a}: the engine runs FPGA BFP weights with FPGA BFP activations, low-bit weights (ternary, wrpn<k>, twn, binary) with k-bit activations (a<k>), or fp32 with fp32",
                            l.name
                        )))
                    }
                }
            }
        }
        PLAN.with(|p| *p.borrow_mut() = plan);
        let built = Model::build_with_fusion(&spec, 0, factory, false);
        let left: Vec<String> = PLAN.with(|p| p.borrow_mut().drain().map(|(k, _)| k).collect());
        let mut model = built.map_err(|e| InferError::File(format!("network: {e}")))?;
        if let Some(n) = left.first() {
            return Err(InferError::File(format!(
                "layer {n} of the model file is not a layer of the network"
            )));
        }
        for p in model.params_mut() {
            let key = format!("param/{}", p.name);
            let (_, v) = qm
                .tensors
                .get(&key)
                .ok_or_else(|| InferError::File(format!("tensor {key} is missing")))?;
            p.value.clone_from(v);
        }
        for (name, b) in model.buffers_mut() {
            let key = format!("buffer/{name}");
            let (_, v) = qm
                .tensors
                .get(&key)
                .ok_or_else(|| InferError::File(format!("tensor {key} is missing")))?;
            b.clone_from(v);
        }
        let quantized = model
            .nodes
            .iter()
            .map(|n| {
                let d = n.layer.describe();
                d.starts_with("fpga ") || d.starts_with("lowbit ")
            })
            .collect();
        let mut last_use = vec![0usize; model.nodes.len() + 1];
        for (i, n) in model.nodes.iter().enumerate() {
            for &v in &n.inputs {
                last_use[v] = i;
            }
        }
        Ok(Engine {
            model,
            mode,
            quantized,
            last_use,
            precision: Precision::fp32(),
        })
    }

    /// Runs every node; with `keep`, returns every value (0 = input), else only the output.
    pub fn run(&mut self, x: Tensor, keep: bool) -> Result<Vec<Tensor>, InferError> {
        let backend = CpuBackend;
        let mut ctx = Ctx::new(&backend, &self.precision, 0);
        let n = self.model.nodes.len();
        let mut values: Vec<Option<Tensor>> = Vec::with_capacity(n + 1);
        values.push(Some(x));
        for i in 0..n {
            let node = &mut self.model.nodes[i];
            let ins: Vec<&Tensor> = node
                .inputs
                .iter()
                .map(|&v| values[v].as_ref().expect("kept until its last reader"))
                .collect();
            let out = node.layer.forward(&mut ctx, &ins, false)?;
            values.push(Some(out));
            if !keep {
                for &v in &self.model.nodes[i].inputs {
                    if self.last_use[v] == i {
                        values[v] = None;
                    }
                }
            }
        }
        Ok(if keep {
            values.into_iter().map(|v| v.expect("kept")).collect()
        } else {
            vec![values.pop().flatten().expect("output")]
        })
    }

    /// The network's output for `x`.
    pub fn forward(&mut self, x: Tensor) -> Result<Tensor, InferError> {
        Ok(self.run(x, false)?.pop().expect("one output"))
    }

    /// Node names, in order.
    pub fn node_names(&self) -> Vec<String> {
        self.model
            .nodes
            .iter()
            .map(|n| n.layer.name().to_string())
            .collect()
    }
}
