//! Post-training quantisation and the per-layer error table.
//!
//! BFP needs no calibrated ranges: every block takes its exponent from its own largest value,
//! on the host for weights and on the device for activations. The calibration batches serve
//! the error table: the signal-to-quantisation-noise ratio (dB) of each layer's weights, of
//! its output when it alone is quantised (its float input fed to the integer layer), and of
//! the whole network's value at its output (errors of every layer before it included).
//! Formats that do need ranges (clipped activations) calibrate here.

use std::collections::BTreeMap;

use lowprec_formats::fpga::quantize_fpga;
use lowprec_formats::lowbit::{fit_clip, quantize_lowbit};
use lowprec_formats::{ActClip, ChannelView, FpgaRounding, LowBitFormat, NumberFormat, StreamKey};
use lowprec_kernels::CpuBackend;
use lowprec_nn::spec::LayerSpec;
use lowprec_nn::{Ctx, Model, Precision, Tensor};
use lowprec_train::Checkpoint;
use serde::Serialize;

use crate::lowbit_layer::LowBitTensor;
use crate::modelfile::{LayerFormats, PackedWeights, QuantizedModel};
use crate::{Engine, InferError, Mode};

/// What to quantise to.
#[derive(Clone, Debug)]
pub struct PtqOptions {
    pub weights: NumberFormat,
    pub acts: NumberFormat,
    /// Keep the first and last conv/linear layers in fp32.
    pub first_last_fp32: bool,
    /// Calibration batches (network inputs): `a<k>:fit` fits each layer's clip on them.
    pub calib: Vec<Tensor>,
}

/// Quantises the SGD weights of a training checkpoint.
pub fn quantize_checkpoint(
    ck: &Checkpoint,
    opts: &PtqOptions,
) -> Result<QuantizedModel, InferError> {
    let tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)> = ck
        .tensors
        .iter()
        .filter(|(k, _)| k.starts_with("param/") || k.starts_with("buffer/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut extra = BTreeMap::new();
    extra.insert("source_epoch".into(), ck.epoch.to_string());
    extra.insert("source_step".into(), ck.step.to_string());
    quantize_tensors(&ck.config_toml, tensors, opts, extra)
}

/// Quantises FP32 tensors (`param/..`, `buffer/..`) of the network in `config_toml`.
pub fn quantize_tensors(
    config_toml: &str,
    tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    opts: &PtqOptions,
    mut extra: BTreeMap<String, String>,
) -> Result<QuantizedModel, InferError> {
    check_pair(&opts.weights, &opts.acts)?;
    let mut qm = QuantizedModel {
        config_toml: config_toml.to_string(),
        layers: Vec::new(),
        tensors,
        packed: BTreeMap::new(),
        extra: BTreeMap::new(),
    };
    let spec = qm.network()?;
    let model = Model::build(&spec, 0).map_err(|e| InferError::File(format!("network: {e}")))?;
    let gemm_layers: Vec<(String, &'static str)> = model
        .nodes
        .iter()
        .zip(&spec.layers)
        .filter_map(|(n, e)| match e.kind {
            LayerSpec::Conv { .. } => Some((n.layer.name().to_string(), "conv")),
            LayerSpec::Linear { .. } => Some((n.layer.name().to_string(), "linear")),
            _ => None,
        })
        .collect();
    let last = gemm_layers.len().saturating_sub(1);
    for (i, (name, kind)) in gemm_layers.iter().enumerate() {
        let keep = opts.first_last_fp32 && (i == 0 || i == last);
        let (w, a) = if keep {
            (NumberFormat::F32, NumberFormat::F32)
        } else {
            (opts.weights, opts.acts)
        };
        pack_weights(&mut qm, name, &w)?;
        qm.layers.push(LayerFormats {
            name: name.clone(),
            kind: kind.to_string(),
            weights: w,
            acts: a,
        });
    }
    extra.insert("weights".into(), opts.weights.to_string());
    extra.insert("acts".into(), opts.acts.to_string());
    extra.insert(
        "first_last".into(),
        if opts.first_last_fp32 {
            "fp32"
        } else {
            "quantised"
        }
        .into(),
    );
    qm.extra = extra;
    fit_clips(&mut qm, &opts.calib)?;
    qm.check_against_network()?;
    Ok(qm)
}

/// Packs layer `name`'s weights in `w` (nothing for fp32).
fn pack_weights(qm: &mut QuantizedModel, name: &str, w: &NumberFormat) -> Result<(), InferError> {
    let wname = format!("{name}.weight");
    let get = |qm: &QuantizedModel| {
        qm.tensors
            .get(&format!("param/{wname}"))
            .cloned()
            .ok_or_else(|| InferError::File(format!("tensor param/{wname} is missing")))
    };
    match *w {
        NumberFormat::LowBit(f) => {
            let (shape, v) = get(qm)?;
            let q = quantize_lowbit(&v, shape[0], &f, &wname)?;
            qm.packed.insert(
                wname,
                PackedWeights::LowBit(LowBitTensor {
                    format: f,
                    shape,
                    q,
                }),
            );
        }
        NumberFormat::Fpga(f) => {
            let (shape, v) = get(qm)?;
            let t = quantize_fpga(
                &v,
                ChannelView::from_shape(&shape),
                &f,
                StreamKey::new(0, 0),
                &wname,
            )?;
            qm.packed.insert(wname, PackedWeights::Fpga(t));
        }
        _ => {}
    }
    Ok(())
}

/// Quantises FP32 tensors with the per-layer formats of `layers` (a model file's, fitted
/// clips included): what retraining writes back.
pub fn quantize_like(
    config_toml: &str,
    tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    layers: &[LayerFormats],
    extra: BTreeMap<String, String>,
) -> Result<QuantizedModel, InferError> {
    let mut qm = QuantizedModel {
        config_toml: config_toml.to_string(),
        layers: layers.to_vec(),
        tensors,
        packed: BTreeMap::new(),
        extra,
    };
    for l in layers {
        check_pair(&l.weights, &l.acts)
            .map_err(|e| InferError::Unsupported(format!("layer {}: {e}", l.name)))?;
        pack_weights(&mut qm, &l.name, &l.weights)?;
    }
    qm.check_against_network()?;
    Ok(qm)
}

/// Whether the engine runs `weights` with `acts` (either may be fp32 only with the other).
fn check_pair(weights: &NumberFormat, acts: &NumberFormat) -> Result<(), InferError> {
    match (weights, acts) {
        (NumberFormat::F32, NumberFormat::F32) => Ok(()),
        (NumberFormat::Fpga(w), NumberFormat::Fpga(a)) => {
            for (what, x) in [("weights", w), ("activations", a)] {
                if x.rounding == FpgaRounding::Stochastic {
                    return Err(InferError::Unsupported(format!(
                        "{what} {x}: stochastic rounding is for training; choose truncate, nearest or nearest-even"
                    )));
                }
            }
            if w.c_vector != a.c_vector {
                return Err(InferError::Unsupported(format!(
                    "weights {w} and activations {a} must share the c_vector"
                )));
            }
            Ok(())
        }
        (NumberFormat::LowBit(w), NumberFormat::LowBit(a)) if w.is_weights() && !a.is_weights() => {
            Ok(())
        }
        (NumberFormat::LowBit(w), a) if w.is_weights() => Err(InferError::Unsupported(format!(
            "weights {w} need k-bit activations (a<k>, a<k>:clip<C>, a<k>:fit), not {a}"
        ))),
        (NumberFormat::LowBit(w), _) => Err(InferError::Unsupported(format!(
            "{w} is an activation format; weights take ternary, wrpn<k>, twn[:channel] or binary[:channel]"
        ))),
        (w, a) => Err(InferError::Unsupported(format!(
            "weights {w} with activations {a}: the integer engine runs FPGA BFP formats (int4bfp, int5bfp, int7bfp, int8bfp, int9bfp, int12bfp, fpga<W>sm|tc) for both, low-bit weights (ternary, wrpn<k>, twn[:channel], binary[:channel]) with k-bit activations (a<k>[:clip<C>|:fit]), or fp32 for both"
        ))),
    }
}

/// Replaces every `a<k>:fit` by the clip [`fit_clip`] finds on the layer's input over `calib`
/// (the float model's values: weights and activations before it unquantised).
pub fn fit_clips(qm: &mut QuantizedModel, calib: &[Tensor]) -> Result<(), InferError> {
    let fit: Vec<usize> = qm
        .layers
        .iter()
        .enumerate()
        .filter(|(_, l)| {
            matches!(
                l.acts,
                NumberFormat::LowBit(LowBitFormat::Acts {
                    clip: ActClip::Fit,
                    ..
                })
            )
        })
        .map(|(i, _)| i)
        .collect();
    if fit.is_empty() {
        return Ok(());
    }
    if calib.is_empty() {
        return Err(InferError::Unsupported(format!(
            "layer {}: activations {} need calibration images to fit the clip",
            qm.layers[fit[0]].name, qm.layers[fit[0]].acts
        )));
    }
    let mut float = Engine::new(qm, Mode::Float)?;
    let names = float.node_names();
    let mut inputs: Vec<Vec<f32>> = vec![Vec::new(); fit.len()];
    for x in calib {
        let v = float.run(x.clone(), true)?;
        for (j, &li) in fit.iter().enumerate() {
            let name = &qm.layers[li].name;
            let i = names
                .iter()
                .position(|n| n == name)
                .ok_or_else(|| InferError::File(format!("layer {name} is not in the network")))?;
            let input = float.model.nodes[i].inputs[0];
            inputs[j].extend_from_slice(&v[input].data);
        }
    }
    for (j, &li) in fit.iter().enumerate() {
        let l = &mut qm.layers[li];
        let bits = match l.acts {
            NumberFormat::LowBit(f) => f.bits(),
            _ => unreachable!("filtered above"),
        };
        let clip = fit_clip(
            &inputs[j],
            bits,
            &format!("input activations of {}", l.name),
        )?;
        l.acts = NumberFormat::LowBit(LowBitFormat::acts(bits, clip));
    }
    Ok(())
}

/// SQNR in dB of `q` against the signal `s` (infinite when equal).
pub fn sqnr_db(signal: f64, noise: f64) -> f64 {
    if noise == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (signal / noise).log10()
    }
}

#[derive(Default, Clone, Copy)]
struct Acc {
    s: f64,
    n: f64,
}

impl Acc {
    fn add(&mut self, reference: &[f32], q: &[f32]) {
        for (&a, &b) in reference.iter().zip(q) {
            self.s += (a as f64) * (a as f64);
            self.n += ((a - b) as f64).powi(2);
        }
    }
    fn db(&self) -> f64 {
        sqnr_db(self.s, self.n)
    }
}

/// One row of the error table.
#[derive(Clone, Debug, Serialize)]
pub struct LayerError {
    pub layer: String,
    pub weights: String,
    pub acts: String,
    /// Weights against their quantised values.
    pub weight_sqnr_db: f64,
    /// The layer's output with only this layer quantised (float input).
    pub layer_sqnr_db: f64,
    /// The quantised network's value at this layer's input / output against the float model's.
    pub input_sqnr_db: f64,
    pub output_sqnr_db: f64,
}

/// The error table of every conv/linear layer over `batches`.
pub fn layer_errors(
    qm: &QuantizedModel,
    batches: &[Tensor],
) -> Result<Vec<LayerError>, InferError> {
    let mut float = Engine::new(qm, Mode::Float)?;
    let mut quant = Engine::new(qm, Mode::Fast)?;
    let names = quant.node_names();
    let nodes = names.len();
    let mut iso = vec![Acc::default(); nodes];
    let mut cum = vec![Acc::default(); nodes + 1];
    let precision = Precision::fp32();
    let backend = CpuBackend;
    for x in batches {
        let fv = float.run(x.clone(), true)?;
        let qv = quant.run(x.clone(), true)?;
        for v in 0..=nodes {
            cum[v].add(&fv[v].data, &qv[v].data);
        }
        for i in 0..nodes {
            if !quant.quantized[i] {
                continue;
            }
            let node = &mut quant.model.nodes[i];
            let ins: Vec<&Tensor> = node.inputs.iter().map(|&v| &fv[v]).collect();
            let mut ctx = Ctx::new(&backend, &precision, 0);
            let y = node.layer.forward(&mut ctx, &ins, false)?;
            iso[i].add(&fv[i + 1].data, &y.data);
        }
    }
    let mut rows = Vec::new();
    for l in &qm.layers {
        let Some(i) = names.iter().position(|n| *n == l.name) else {
            continue;
        };
        let wname = format!("{}.weight", l.name);
        let weight_sqnr_db = match (
            qm.packed.get(&wname),
            qm.tensors.get(&format!("param/{wname}")),
        ) {
            (Some(p), Some((_, w))) => {
                let mut a = Acc::default();
                a.add(w, &p.dequantize());
                a.db()
            }
            _ => f64::INFINITY,
        };
        let input = quant.model.nodes[i].inputs[0];
        rows.push(LayerError {
            layer: l.name.clone(),
            weights: l.weights.to_string(),
            acts: l.acts.to_string(),
            weight_sqnr_db,
            layer_sqnr_db: if quant.quantized[i] {
                iso[i].db()
            } else {
                f64::INFINITY
            },
            input_sqnr_db: cum[input].db(),
            output_sqnr_db: cum[i + 1].db(),
        });
    }
    Ok(rows)
}

/// How far the network's SQNR falls at each layer's output from the previous conv/linear
/// layer's output (0 for the first).
pub fn drops(rows: &[LayerError]) -> Vec<f64> {
    let mut prev: Option<f64> = None;
    rows.iter()
        .map(|r| {
            let d = match prev {
                Some(p) if p.is_finite() => p - r.output_sqnr_db,
                _ => 0.0,
            };
            prev = Some(r.output_sqnr_db);
            d
        })
        .collect()
}

/// The first layer at whose output the network's SQNR falls by at least `db` decibels below
/// the previous conv/linear layer's, with that fall.
pub fn first_jump(rows: &[LayerError], db: f64) -> Option<(&LayerError, f64)> {
    rows.iter().zip(drops(rows)).find(|(_, d)| *d >= db)
}

/// The table as text.
pub fn format_table(rows: &[LayerError]) -> String {
    let f = |v: f64| {
        if v.is_infinite() {
            "exact".to_string()
        } else {
            format!("{v:.1}")
        }
    };
    let mut s = format!(
        "{:<14} {:<26} {:<26} {:>9} {:>9} {:>9} {:>9} {:>6}\n",
        "layer", "weights", "acts", "w SQNR", "alone", "in", "out", "drop"
    );
    for (r, d) in rows.iter().zip(drops(rows)) {
        s += &format!(
            "{:<14} {:<26} {:<26} {:>9} {:>9} {:>9} {:>9} {:>6.1}\n",
            r.layer,
            r.weights,
            r.acts,
            f(r.weight_sqnr_db),
            f(r.layer_sqnr_db),
            f(r.input_sqnr_db),
            f(r.output_sqnr_db),
            d
        );
    }
    s
}
