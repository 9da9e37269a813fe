//! The quantised model file: safetensors holding the network description, every FP32
//! parameter and buffer of the source checkpoint (the master weights retraining starts from),
//! and for each quantised weight its packed mantissas and 5-bit block exponents; metadata names
//! the formats per layer and carries a sha256 of every tensor. Written atomically, verified on
//! load: a missing, mis-shaped or truncated tensor, an unknown format or a checksum mismatch is
//! an error naming the tensor (and layer).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use lowprec_formats::{ChannelView, FpgaBfp, FpgaTensor, NumberFormat};
use lowprec_nn::{Model, NetworkSpec};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::lowbit_layer::LowBitTensor;
use crate::pack::{pack, packed_len, unpack};
use crate::InferError;

/// Metadata key and format tag of the file.
pub const FORMAT: &str = "lowprec-quantized-model-1";

/// The formats of one conv/linear layer. `fp32` leaves the layer in floats (first/last layers
/// by default in the shipped flows); anything else runs on the integer engine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerFormats {
    pub name: String,
    /// `conv` or `linear`.
    pub kind: String,
    pub weights: NumberFormat,
    pub acts: NumberFormat,
}

/// Packed weights of one layer in a format of the integer engine. New packed families
/// (ternary, binary, k-bit) are new variants.
#[derive(Clone, Debug, PartialEq)]
pub enum PackedWeights {
    Fpga(FpgaTensor),
    /// Ternary / binary / WRPN k-bit codes with their scales.
    LowBit(LowBitTensor),
}

impl PackedWeights {
    pub fn dequantize(&self) -> Vec<f32> {
        match self {
            PackedWeights::Fpga(t) => t.dequantize(),
            PackedWeights::LowBit(t) => t.q.dequantize(),
        }
    }
    /// The format as text.
    pub fn format_name(&self) -> String {
        match self {
            PackedWeights::Fpga(t) => t.format.to_string(),
            PackedWeights::LowBit(t) => t.format.to_string(),
        }
    }
}

/// A quantised model in memory.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedModel {
    /// The training description the checkpoint came from (TOML, with its `[model]`).
    pub config_toml: String,
    /// Conv/linear layers, in network order.
    pub layers: Vec<LayerFormats>,
    /// `param/<name>` and `buffer/<name>` -> (shape, values), FP32.
    pub tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    /// Weight name (`conv1.weight`) -> packed weights, for layers not in fp32.
    pub packed: BTreeMap<String, PackedWeights>,
    /// Free-form: source checkpoint and its sha256, epoch, PTQ options.
    pub extra: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
struct Meta {
    format: String,
    config: String,
    layers: Vec<LayerFormatsText>,
    packed: BTreeMap<String, PackedMeta>,
    extra: BTreeMap<String, String>,
    sha256: String,
}

/// Formats as text in the file, so that an unknown one is an error naming its layer.
#[derive(Serialize, Deserialize)]
struct LayerFormatsText {
    name: String,
    kind: String,
    weights: String,
    acts: String,
}

#[derive(Serialize, Deserialize)]
struct PackedMeta {
    format: String,
    shape: Vec<usize>,
    /// Bits per stored code (low-bit formats).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bits: Option<u32>,
}

/// A tensor as stored: name, dtype, shape, bytes.
type Stored = (String, Dtype, Vec<usize>, Vec<u8>);

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

impl QuantizedModel {
    /// The network description.
    pub fn network(&self) -> Result<NetworkSpec, InferError> {
        let cfg =
            lowprec_train::TrainConfig::from_toml(&self.config_toml, "the model file's config")
                .map_err(|e| InferError::File(format!("config: {e}")))?;
        Ok(cfg.model)
    }

    /// The formats of layer `name`, if it is a conv/linear layer.
    pub fn formats(&self, name: &str) -> Option<&LayerFormats> {
        self.layers.iter().find(|l| l.name == name)
    }

    /// Tensors as stored: (name, dtype, shape, bytes), sorted by name.
    fn stored(&self) -> Result<Vec<Stored>, InferError> {
        let mut out = Vec::new();
        for (n, (s, v)) in &self.tensors {
            out.push((n.clone(), Dtype::F32, s.clone(), f32_bytes(v)));
        }
        for (n, p) in &self.packed {
            match p {
                PackedWeights::Fpga(t) => {
                    let m = pack(&t.mantissas, t.format.width, t.format.code);
                    out.push((format!("packed/{n}.mantissa"), Dtype::U8, vec![m.len()], m));
                    out.push((
                        format!("packed/{n}.exponent"),
                        Dtype::U8,
                        vec![t.exponents.len()],
                        t.exponents.clone(),
                    ));
                }
                PackedWeights::LowBit(t) => {
                    let c = t
                        .pack_codes(&format!("packed/{n}.codes"))
                        .map_err(InferError::File)?;
                    out.push((format!("packed/{n}.codes"), Dtype::U8, vec![c.len()], c));
                    out.push((
                        format!("packed/{n}.scales"),
                        Dtype::F32,
                        vec![t.q.scales.len()],
                        f32_bytes(&t.q.scales),
                    ));
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Bytes of the packed weights (mantissas and exponents) and of the FP32 tensors.
    pub fn storage(&self) -> (usize, usize) {
        let mut packed = 0;
        let mut fp = 0;
        for (n, _, _, b) in self.stored().unwrap_or_default() {
            if n.starts_with("packed/") {
                packed += b.len();
            } else {
                fp += b.len();
            }
        }
        (packed, fp)
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, InferError> {
        let stored = self.stored()?;
        let mut h = Sha256::new();
        for (n, _, s, b) in &stored {
            h.update(n.as_bytes());
            for d in s {
                h.update((*d as u64).to_le_bytes());
            }
            h.update(b);
        }
        let sha: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        let meta = Meta {
            format: FORMAT.into(),
            config: self.config_toml.clone(),
            layers: self
                .layers
                .iter()
                .map(|l| LayerFormatsText {
                    name: l.name.clone(),
                    kind: l.kind.clone(),
                    weights: l.weights.to_string(),
                    acts: l.acts.to_string(),
                })
                .collect(),
            packed: self
                .packed
                .iter()
                .map(|(n, p)| {
                    let meta = match p {
                        PackedWeights::Fpga(t) => PackedMeta {
                            format: t.format.to_string(),
                            shape: self
                                .tensors
                                .get(&format!("param/{n}"))
                                .map(|(s, _)| s.clone())
                                .unwrap_or_else(|| {
                                    vec![t.view.outer, t.view.channels, t.view.inner]
                                }),
                            bits: None,
                        },
                        PackedWeights::LowBit(t) => PackedMeta {
                            format: t.format.to_string(),
                            shape: t.shape.clone(),
                            bits: Some(t.q.bits),
                        },
                    };
                    (n.clone(), meta)
                })
                .collect(),
            extra: self.extra.clone(),
            sha256: sha,
        };
        let views: Vec<(String, TensorView<'_>)> = stored
            .iter()
            .map(|(n, d, s, b)| {
                TensorView::new(*d, s.clone(), b)
                    .map(|v| (n.clone(), v))
                    .map_err(|e| InferError::File(format!("tensor {n}: {e:?}")))
            })
            .collect::<Result<_, _>>()?;
        let mut outer = HashMap::new();
        outer.insert(
            FORMAT.to_string(),
            serde_json::to_string(&meta).expect("serialises"),
        );
        safetensors::serialize(views, &Some(outer))
            .map_err(|e| InferError::File(format!("serialising: {e:?}")))
    }

    /// Writes the file atomically (temp file + rename).
    pub fn save(&self, path: &Path) -> Result<(), InferError> {
        let bytes = self.to_bytes()?;
        lowprec_train::checkpoint::write_atomic(path, &bytes)
            .map_err(|e| InferError::File(format!("{}: {e}", path.display())))
    }

    /// Whether `path` is a quantised model file (its metadata names this format).
    pub fn is_model_file(path: &Path) -> bool {
        std::fs::read(path)
            .ok()
            .and_then(|b| {
                SafeTensors::read_metadata(&b)
                    .ok()
                    .and_then(|(_, m)| m.metadata().as_ref().map(|m| m.contains_key(FORMAT)))
            })
            .unwrap_or(false)
    }

    pub fn load(path: &Path) -> Result<Self, InferError> {
        let bytes = std::fs::read(path)
            .map_err(|e| InferError::File(format!("{}: {e}", path.display())))?;
        Self::from_bytes(&bytes).map_err(|e| match e {
            InferError::File(m) => InferError::File(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, InferError> {
        let bad = |m: String| InferError::File(m);
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| bad(format!("not a safetensors file or truncated: {e:?}")))?;
        let (_, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| bad(format!("unreadable header: {e:?}")))?;
        let meta_text = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get(FORMAT))
            .ok_or_else(|| bad(format!("no `{FORMAT}` metadata: not a quantised model file (a checkpoint? run `lowprec quantize-model` on it)")))?;
        let meta: Meta =
            serde_json::from_str(meta_text).map_err(|e| bad(format!("metadata: {e}")))?;
        // checksum over every tensor, in name order
        let mut names: Vec<String> = st.names().into_iter().cloned().collect();
        names.sort();
        let mut h = Sha256::new();
        for n in &names {
            let t = st
                .tensor(n)
                .map_err(|e| bad(format!("tensor {n}: {e:?}")))?;
            h.update(n.as_bytes());
            for d in t.shape() {
                h.update((*d as u64).to_le_bytes());
            }
            h.update(t.data());
        }
        let sha: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        // Fuzzing builds (`cargo fuzz`) skip the comparison, so that mutated inputs reach the
        // checks after it instead of all failing here.
        if sha != meta.sha256 && !cfg!(fuzzing) {
            return Err(bad(format!(
                "checksum mismatch: tensors hash to {sha}, the file says {} (corrupt or edited)",
                meta.sha256
            )));
        }
        let mut layers = Vec::new();
        for l in &meta.layers {
            let parse = |what: &str, s: &str| {
                s.parse::<NumberFormat>().map_err(|e| {
                    bad(format!(
                        "layer {}: unknown {what} format in tensor {}.weight: {e}",
                        l.name, l.name
                    ))
                })
            };
            layers.push(LayerFormats {
                name: l.name.clone(),
                kind: l.kind.clone(),
                weights: parse("weight", &l.weights)?,
                acts: parse("activation", &l.acts)?,
            });
        }
        let mut tensors = BTreeMap::new();
        for n in &names {
            if n.starts_with("packed/") {
                continue;
            }
            let t = st
                .tensor(n)
                .map_err(|e| bad(format!("tensor {n}: {e:?}")))?;
            if t.dtype() != Dtype::F32 {
                return Err(bad(format!(
                    "tensor {n}: dtype {:?}, F32 expected",
                    t.dtype()
                )));
            }
            let v: Vec<f32> = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            tensors.insert(n.clone(), (t.shape().to_vec(), v));
        }
        let mut packed = BTreeMap::new();
        for (n, pm) in &meta.packed {
            if let Ok(NumberFormat::LowBit(lf)) = pm.format.parse::<NumberFormat>() {
                let key = format!("packed/{n}.codes");
                let codes = st
                    .tensor(&key)
                    .map_err(|_| bad(format!("tensor {key} is missing")))?;
                let skey = format!("packed/{n}.scales");
                let sc = st
                    .tensor(&skey)
                    .map_err(|_| bad(format!("tensor {skey} is missing")))?;
                if sc.dtype() != Dtype::F32 || codes.dtype() != Dtype::U8 {
                    return Err(bad(format!(
                        "tensors {key} / {skey}: dtypes {:?} / {:?}, U8 / F32 expected",
                        codes.dtype(),
                        sc.dtype()
                    )));
                }
                let scales: Vec<f32> = sc
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                let bits = pm.bits.ok_or_else(|| {
                    bad(format!("{key}: the metadata gives no bit count for {lf}"))
                })?;
                let t = LowBitTensor::unpack(lf, &pm.shape, bits, codes.data(), scales, n)
                    .map_err(bad)?;
                packed.insert(n.clone(), PackedWeights::LowBit(t));
                continue;
            }
            let fmt: FpgaBfp = pm
                .format
                .parse()
                .map_err(|e| bad(format!("tensor packed/{n}.mantissa: unknown format: {e}")))?;
            let get = |suffix: &str| {
                let key = format!("packed/{n}.{suffix}");
                st.tensor(&key)
                    .map_err(|_| bad(format!("tensor {key} is missing")))
                    .map(|t| t.data().to_vec())
            };
            let (mb, eb) = (get("mantissa")?, get("exponent")?);
            let view = ChannelView::from_shape(&pm.shape);
            let count = view.len();
            let mantissas = unpack(&mb, count, fmt.width, fmt.code).ok_or_else(|| {
                bad(format!(
                    "tensor packed/{n}.mantissa is truncated or too long: {} bytes, {} expected for {count} {}-bit mantissas",
                    mb.len(),
                    packed_len(count, fmt.width),
                    fmt.width
                ))
            })?;
            let nb = view.num_blocks(fmt.c_vector);
            if eb.len() != nb {
                return Err(bad(format!(
                    "tensor packed/{n}.exponent has {} exponents, {nb} expected for shape {:?} in blocks of {}",
                    eb.len(),
                    pm.shape,
                    fmt.c_vector
                )));
            }
            if let Some(i) = eb.iter().position(|&e| e > 30) {
                return Err(bad(format!(
                    "tensor packed/{n}.exponent: exponent {} at block {i} is not a finite FP16 exponent (0..=30)",
                    eb[i]
                )));
            }
            packed.insert(
                n.clone(),
                PackedWeights::Fpga(FpgaTensor {
                    format: fmt,
                    view,
                    mantissas,
                    exponents: eb,
                }),
            );
        }
        let qm = QuantizedModel {
            config_toml: meta.config,
            layers,
            tensors,
            packed,
            extra: meta.extra,
        };
        qm.check_against_network()?;
        Ok(qm)
    }

    /// Every parameter and buffer the network needs is present with its shape; every quantised
    /// layer has packed weights of its format and shape.
    pub fn check_against_network(&self) -> Result<(), InferError> {
        let bad = |m: String| InferError::File(m);
        let spec = self.network()?;
        let model = Model::build(&spec, 0).map_err(|e| bad(format!("network: {e}")))?;
        for p in model.params() {
            let key = format!("param/{}", p.name);
            match self.tensors.get(&key) {
                None => return Err(bad(format!("tensor {key} is missing (the network needs it)"))),
                Some((s, v)) if *s != p.shape || v.len() != p.value.len() => {
                    return Err(bad(format!(
                        "tensor {key}: shape {s:?} but the network needs {:?} (a checkpoint of another network?)",
                        p.shape
                    )))
                }
                _ => {}
            }
        }
        for (name, b) in model.buffers() {
            let key = format!("buffer/{name}");
            match self.tensors.get(&key) {
                Some((_, v)) if v.len() == b.len() => {}
                Some((_, v)) => {
                    return Err(bad(format!(
                        "tensor {key}: {} values but the network needs {}",
                        v.len(),
                        b.len()
                    )))
                }
                None => {
                    return Err(bad(format!(
                        "tensor {key} is missing (the network needs it)"
                    )))
                }
            }
        }
        for l in &self.layers {
            let wname = format!("{}.weight", l.name);
            let (shape, _) = self
                .tensors
                .get(&format!("param/{wname}"))
                .ok_or_else(|| bad(format!("layer {}: tensor param/{wname} is missing", l.name)))?;
            match (&l.weights, self.packed.get(&wname)) {
                (NumberFormat::F32, None) => {}
                (NumberFormat::Fpga(f), Some(PackedWeights::Fpga(t))) => {
                    if t.format != *f {
                        return Err(bad(format!(
                            "tensor packed/{wname}.mantissa is in {} but layer {} says {f}",
                            t.format, l.name
                        )));
                    }
                    if t.view != ChannelView::from_shape(shape) {
                        return Err(bad(format!(
                            "tensor packed/{wname}.mantissa: shape does not match param/{wname} {shape:?}"
                        )));
                    }
                }
                (NumberFormat::LowBit(f), Some(PackedWeights::LowBit(t))) => {
                    if t.format != *f {
                        return Err(bad(format!(
                            "tensor packed/{wname}.codes is in {} but layer {} says {f}",
                            t.format, l.name
                        )));
                    }
                    if t.shape != *shape {
                        return Err(bad(format!(
                            "tensor packed/{wname}.codes: shape {:?} does not match param/{wname} {shape:?}",
                            t.shape
                        )));
                    }
                    match l.acts {
                        NumberFormat::LowBit(a) if !a.is_weights() => {}
                        a => {
                            return Err(bad(format!(
                                "layer {}: weights in {f} need k-bit activations (a<k>), not {a}",
                                l.name
                            )))
                        }
                    }
                }
                (f, None) => {
                    return Err(bad(format!(
                        "layer {}: weights in {f} but its packed tensor (packed/{wname}.*) is missing",
                        l.name
                    )))
                }
                (f, Some(_)) => {
                    return Err(bad(format!(
                        "layer {}: weights in {f}, which the integer engine does not run, but packed/{wname} is present",
                        l.name
                    )))
                }
            }
        }
        Ok(())
    }
}
