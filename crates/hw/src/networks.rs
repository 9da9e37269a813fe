//! Layer-shape tables of the networks the models use (embedded from `data/networks.toml`),
//! and the GEMMs one training iteration issues on paper 002's accelerator. Networks that lowprec
//! also trains (VGG16, PreResNet-20) are not tabled there but derived from their one
//! description in `lowprec_nn::zoo` ([`Network::from_spec`]).

use crate::design::ArrayDesign;
use crate::{HwError, Result};
use serde::Deserialize;
use std::sync::OnceLock;

const NETWORKS_TOML: &str = include_str!("../data/networks.toml");

/// One layer. Convolutions use "same" padding: the output is `w/stride x h/stride x oc`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Layer {
    Conv {
        k: usize,
        ic: usize,
        oc: usize,
        w: usize,
        h: usize,
        #[serde(default = "one")]
        stride: usize,
    },
    Pool {
        c: usize,
        w: usize,
        h: usize,
    },
    Avgpool {
        c: usize,
        w: usize,
        h: usize,
    },
    Fc {
        i: usize,
        o: usize,
    },
}

fn one() -> usize {
    1
}

impl Layer {
    /// Trainable weights (no biases: 002 trains without bias and batch norm).
    pub fn params(&self) -> usize {
        match *self {
            Layer::Conv { k, ic, oc, .. } => k * k * ic * oc,
            Layer::Fc { i, o } => i * o,
            _ => 0,
        }
    }
    /// Output elements per example.
    pub fn outputs(&self) -> usize {
        match *self {
            Layer::Conv {
                oc, w, h, stride, ..
            } => oc * (w / stride) * (h / stride),
            Layer::Pool { c, w, h } => c * (w / 2) * (h / 2),
            Layer::Avgpool { c, .. } => c,
            Layer::Fc { o, .. } => o,
        }
    }
    /// Input elements per example.
    pub fn inputs(&self) -> usize {
        match *self {
            Layer::Conv { ic, w, h, .. } => ic * w * h,
            Layer::Pool { c, w, h } | Layer::Avgpool { c, w, h } => c * w * h,
            Layer::Fc { i, .. } => i,
        }
    }
    /// Whether the layer runs GEMMs on the accelerator.
    pub fn is_compute(&self) -> bool {
        matches!(self, Layer::Conv { .. } | Layer::Fc { .. })
    }
    /// im2col elements per example (the GEMM B operand of the forward pass); 0 for others.
    pub fn im2col_elems(&self) -> usize {
        match *self {
            Layer::Conv {
                k,
                ic,
                w,
                h,
                stride,
                ..
            } => k * k * ic * (w / stride) * (h / stride),
            _ => 0,
        }
    }
    /// Forward MACs per example.
    pub fn macs(&self) -> usize {
        match *self {
            Layer::Conv { .. } => self.im2col_elems() * self.outputs() / self.out_pixels(),
            Layer::Fc { i, o } => i * o,
            _ => 0,
        }
    }
    fn out_pixels(&self) -> usize {
        match *self {
            Layer::Conv { w, h, stride, .. } => (w / stride) * (h / stride),
            _ => 1,
        }
    }
}

/// Which GEMM of Algorithm 1 (paper 002).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Pass {
    Forward,
    WeightGrad,
    DataGrad,
}

/// One GEMM as the driver issues it: `A (m x k)` resident, `n` B rows streamed, repeated
/// `repeat` times per iteration (once per example for convolutions: 002 does not batch them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct GemmOp {
    pub layer: usize,
    pub pass: Pass,
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub repeat: usize,
    /// A is read column-major (W^T served from the stored W).
    pub transposed: bool,
    /// K segment length the core runs with. Every op of the paper system uses the whole K:
    /// convolutions run one example per call, and Table VI's LogReg times (about 51 us per
    /// example on the Pynq-Z1) only fit a batched fully-connected weight gradient accumulated
    /// over the whole batch; per-example segments (`segment = 1`) would cost one array step per
    /// example and output block (+16 us per example there).
    pub segment: usize,
}

impl GemmOp {
    pub fn macs(&self) -> u64 {
        (self.m * self.k * self.n * self.repeat) as u64
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct Network {
    pub id: String,
    pub name: String,
    /// Input elements per example.
    pub input: usize,
    pub layers: Vec<Layer>,
}

/// An entry of `networks.toml`: a layer table, or the built-in description to derive it from.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    id: String,
    name: String,
    #[serde(default)]
    input: Option<usize>,
    #[serde(default)]
    layers: Option<Vec<Layer>>,
    #[serde(default)]
    spec: Option<String>,
}

#[derive(Deserialize)]
struct NetworkFile {
    network: Vec<Entry>,
}

fn resolve(e: Entry) -> Result<Network> {
    match (e.spec, e.layers, e.input) {
        (Some(spec), None, None) => {
            let s = lowprec_nn::zoo::get(&spec).map_err(HwError::Catalog)?;
            Network::from_spec(&e.id, &e.name, &s)
        }
        (None, Some(layers), Some(input)) => Ok(Network {
            id: e.id,
            name: e.name,
            input,
            layers,
        }),
        _ => Err(HwError::Catalog(format!(
            "network {}: give either `spec` or both `input` and `layers`",
            e.id
        ))),
    }
}

/// All embedded networks.
pub fn all() -> &'static [Network] {
    static NETS: OnceLock<Vec<Network>> = OnceLock::new();
    NETS.get_or_init(|| {
        toml::from_str::<NetworkFile>(NETWORKS_TOML)
            .expect("embedded networks.toml is valid")
            .network
            .into_iter()
            .map(|e| resolve(e).expect("embedded networks derive"))
            .collect()
    })
}

/// Looks a network up by id (`vgg16`, `logreg`, `rf-autoencoder`, `preresnet20`).
pub fn get(id: &str) -> Result<&'static Network> {
    let id = id.trim().to_ascii_lowercase();
    all()
        .iter()
        .find(|n| n.id == id)
        .ok_or_else(|| HwError::Unknown {
            what: "network preset",
            name: id.clone(),
            known: all()
                .iter()
                .map(|n| n.id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

impl Network {
    /// The layer shapes of a network description, as the accelerator model sees them:
    /// convolutions and fully connected layers (biases aside), 2x2 max pooling and global
    /// average pooling; ReLU, dropout, flatten, batch norm and residual additions cost the
    /// model nothing. A layer the model cannot represent (a convolution whose output is not
    /// `input / stride`, other pooling windows) is an error naming it.
    pub fn from_spec(
        id: &str,
        name: &str,
        spec: &lowprec_nn::spec::NetworkSpec,
    ) -> Result<Network> {
        use lowprec_nn::spec::LayerSpec;
        let model = lowprec_nn::Model::build(spec, 0)
            .map_err(|e| HwError::Catalog(format!("network {id}: {e}")))?;
        let bad = |layer: &str, why: String| {
            HwError::Catalog(format!("network {id}, layer {layer}: {why}"))
        };
        let mut layers = Vec::new();
        for (i, node) in model.nodes.iter().enumerate() {
            let lname = node.layer.name();
            let ins = &model.shapes[node.inputs[0]];
            let out = &model.shapes[i + 1];
            let chw = || match ins.as_slice() {
                &[c, h, w] => Ok((c, h, w)),
                s => Err(bad(lname, format!("expects a [C, H, W] input, got {s:?}"))),
            };
            match spec.layers[i].kind {
                LayerSpec::Conv { kernel, stride, .. } => {
                    let (ic, h, w) = chw()?;
                    if out[1..] != [h / stride, w / stride] {
                        return Err(bad(lname, format!("output {out:?} is not the input {ins:?} / stride {stride} the model assumes")));
                    }
                    layers.push(Layer::Conv {
                        k: kernel,
                        ic,
                        oc: out[0],
                        w,
                        h,
                        stride,
                    });
                }
                LayerSpec::Maxpool { kernel, stride } => {
                    let (c, h, w) = chw()?;
                    if kernel != 2 || stride.unwrap_or(kernel) != 2 {
                        return Err(bad(
                            lname,
                            "only 2x2 max pooling with stride 2 is modelled".into(),
                        ));
                    }
                    layers.push(Layer::Pool { c, w, h });
                }
                LayerSpec::GlobalAvgPool => {
                    let (c, h, w) = chw()?;
                    layers.push(Layer::Avgpool { c, w, h });
                }
                LayerSpec::Linear { out: o, .. } => layers.push(Layer::Fc {
                    i: ins.iter().product(),
                    o,
                }),
                LayerSpec::Avgpool { .. } => {
                    return Err(bad(
                        lname,
                        "windowed average pooling is not modelled".into(),
                    ))
                }
                LayerSpec::Relu
                | LayerSpec::Dropout { .. }
                | LayerSpec::Flatten
                | LayerSpec::Batchnorm { .. }
                | LayerSpec::Add => {}
            }
        }
        Ok(Network {
            id: id.into(),
            name: name.into(),
            input: spec.input.iter().product(),
            layers,
        })
    }

    pub fn params(&self) -> usize {
        self.layers.iter().map(Layer::params).sum()
    }
    /// Forward MACs per example.
    pub fn macs(&self) -> usize {
        self.layers.iter().map(Layer::macs).sum()
    }
    fn first_compute(&self) -> Option<usize> {
        self.layers.iter().position(Layer::is_compute)
    }

    /// The GEMMs of one training iteration at `batch` (Algorithm 1 of 002).
    pub fn gemms(&self, batch: usize) -> Vec<GemmOp> {
        let first = self.first_compute();
        let mut out = Vec::new();
        for (li, l) in self.layers.iter().enumerate() {
            let needs_dgrad = Some(li) != first;
            match *l {
                Layer::Conv {
                    k,
                    ic,
                    oc,
                    w,
                    h,
                    stride,
                } => {
                    let kk = k * k * ic;
                    let wh = (w / stride) * (h / stride);
                    out.push(GemmOp {
                        layer: li,
                        pass: Pass::Forward,
                        m: oc,
                        k: kk,
                        n: wh,
                        repeat: batch,
                        transposed: false,
                        segment: usize::MAX,
                    });
                    out.push(GemmOp {
                        layer: li,
                        pass: Pass::WeightGrad,
                        m: oc,
                        k: wh,
                        n: kk,
                        repeat: batch,
                        transposed: false,
                        segment: usize::MAX,
                    });
                    if needs_dgrad {
                        out.push(GemmOp {
                            layer: li,
                            pass: Pass::DataGrad,
                            m: kk,
                            k: oc,
                            n: wh,
                            repeat: batch,
                            transposed: true,
                            segment: usize::MAX,
                        });
                    }
                }
                Layer::Fc { i, o } => {
                    out.push(GemmOp {
                        layer: li,
                        pass: Pass::Forward,
                        m: o,
                        k: i,
                        n: batch,
                        repeat: 1,
                        transposed: false,
                        segment: usize::MAX,
                    });
                    out.push(GemmOp {
                        layer: li,
                        pass: Pass::WeightGrad,
                        m: o,
                        k: batch,
                        n: i,
                        repeat: 1,
                        transposed: false,
                        segment: usize::MAX,
                    });
                    if needs_dgrad {
                        out.push(GemmOp {
                            layer: li,
                            pass: Pass::DataGrad,
                            m: i,
                            k: o,
                            n: batch,
                            repeat: 1,
                            transposed: true,
                            segment: usize::MAX,
                        });
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// Training MACs per iteration (all three GEMMs).
    pub fn train_macs(&self, batch: usize) -> u64 {
        self.gemms(batch).iter().map(GemmOp::macs).sum()
    }

    /// On-chip A needed to run every layer in one call: the stored weights `oc x (ic k^2)`
    /// and the per-example error `oc x (w h)` (002: A_fpga >= max(oc ic k^2, oc w h)).
    pub fn a_requirements(&self) -> Vec<(usize, usize, usize)> {
        let mut v = Vec::new();
        for (li, l) in self.layers.iter().enumerate() {
            match *l {
                Layer::Conv {
                    k,
                    ic,
                    oc,
                    w,
                    h,
                    stride,
                } => {
                    v.push((li, oc, k * k * ic));
                    v.push((li, oc, (w / stride) * (h / stride)));
                }
                Layer::Fc { i, o } => v.push((li, o, i)),
                _ => {}
            }
        }
        v
    }

    /// Layers whose A does not fit the design in one call (they run as several tiles).
    pub fn layers_not_fitting(&self, d: &ArrayDesign) -> Vec<usize> {
        let mut bad: Vec<usize> = self
            .a_requirements()
            .into_iter()
            .filter(|&(_, r, c)| !d.fits_a(r, c))
            .map(|(li, _, _)| li)
            .collect();
        bad.dedup();
        bad
    }

    /// Largest on-chip A (elements) any layer needs.
    pub fn largest_a(&self) -> usize {
        self.a_requirements()
            .iter()
            .map(|&(_, r, c)| r * c)
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layer tables these networks had before they were derived: VGG16 is 002's Table I
    /// plus the 512-512-10 classifier.
    const TABLED: &str = r#"
[[network]]
id = "vgg16"
name = "VGG16 for CIFAR10 (Table I + classifier 512-512-10)"
input = 3072
layers = [
  { kind = "conv", k = 3, ic = 3, oc = 64, w = 32, h = 32, stride = 1 },
  { kind = "conv", k = 3, ic = 64, oc = 64, w = 32, h = 32, stride = 1 },
  { kind = "pool", c = 64, w = 32, h = 32 },
  { kind = "conv", k = 3, ic = 64, oc = 128, w = 16, h = 16, stride = 1 },
  { kind = "conv", k = 3, ic = 128, oc = 128, w = 16, h = 16, stride = 1 },
  { kind = "pool", c = 128, w = 16, h = 16 },
  { kind = "conv", k = 3, ic = 128, oc = 256, w = 8, h = 8, stride = 1 },
  { kind = "conv", k = 3, ic = 256, oc = 256, w = 8, h = 8, stride = 1 },
  { kind = "conv", k = 3, ic = 256, oc = 256, w = 8, h = 8, stride = 1 },
  { kind = "pool", c = 256, w = 8, h = 8 },
  { kind = "conv", k = 3, ic = 256, oc = 512, w = 4, h = 4, stride = 1 },
  { kind = "conv", k = 3, ic = 512, oc = 512, w = 4, h = 4, stride = 1 },
  { kind = "conv", k = 3, ic = 512, oc = 512, w = 4, h = 4, stride = 1 },
  { kind = "pool", c = 512, w = 4, h = 4 },
  { kind = "conv", k = 3, ic = 512, oc = 512, w = 2, h = 2, stride = 1 },
  { kind = "conv", k = 3, ic = 512, oc = 512, w = 2, h = 2, stride = 1 },
  { kind = "conv", k = 3, ic = 512, oc = 512, w = 2, h = 2, stride = 1 },
  { kind = "pool", c = 512, w = 2, h = 2 },
  { kind = "fc", i = 512, o = 512 },
  { kind = "fc", i = 512, o = 512 },
  { kind = "fc", i = 512, o = 10 },
]

[[network]]
id = "preresnet20"
name = "PreResNet-20 for CIFAR10"
input = 3072
layers = [
  { kind = "conv", k = 3, ic = 3, oc = 16, w = 32, h = 32, stride = 1 },
  { kind = "conv", k = 3, ic = 16, oc = 16, w = 32, h = 32, stride = 1 },
  { kind = "conv", k = 3, ic = 16, oc = 16, w = 32, h = 32, stride = 1 },
  { kind = "conv", k = 3, ic = 16, oc = 16, w = 32, h = 32, stride = 1 },
  { kind = "conv", k = 3, ic = 16, oc = 16, w = 32, h = 32, stride = 1 },
  { kind = "conv", k = 3, ic = 16, oc = 16, w = 32, h = 32, stride = 1 },
  { kind = "conv", k = 3, ic = 16, oc = 16, w = 32, h = 32, stride = 1 },
  { kind = "conv", k = 3, ic = 16, oc = 32, w = 32, h = 32, stride = 2 },
  { kind = "conv", k = 3, ic = 32, oc = 32, w = 16, h = 16, stride = 1 },
  { kind = "conv", k = 1, ic = 16, oc = 32, w = 32, h = 32, stride = 2 },
  { kind = "conv", k = 3, ic = 32, oc = 32, w = 16, h = 16, stride = 1 },
  { kind = "conv", k = 3, ic = 32, oc = 32, w = 16, h = 16, stride = 1 },
  { kind = "conv", k = 3, ic = 32, oc = 32, w = 16, h = 16, stride = 1 },
  { kind = "conv", k = 3, ic = 32, oc = 32, w = 16, h = 16, stride = 1 },
  { kind = "conv", k = 3, ic = 32, oc = 64, w = 16, h = 16, stride = 2 },
  { kind = "conv", k = 3, ic = 64, oc = 64, w = 8, h = 8, stride = 1 },
  { kind = "conv", k = 1, ic = 32, oc = 64, w = 16, h = 16, stride = 2 },
  { kind = "conv", k = 3, ic = 64, oc = 64, w = 8, h = 8, stride = 1 },
  { kind = "conv", k = 3, ic = 64, oc = 64, w = 8, h = 8, stride = 1 },
  { kind = "conv", k = 3, ic = 64, oc = 64, w = 8, h = 8, stride = 1 },
  { kind = "conv", k = 3, ic = 64, oc = 64, w = 8, h = 8, stride = 1 },
  { kind = "avgpool", c = 64, w = 8, h = 8 },
  { kind = "fc", i = 64, o = 10 },
]
"#;

    fn tabled(id: &str) -> Network {
        #[derive(Deserialize)]
        struct F {
            network: Vec<Network>,
        }
        toml::from_str::<F>(TABLED)
            .unwrap()
            .network
            .into_iter()
            .find(|n| n.id == id)
            .unwrap()
    }

    #[test]
    fn vgg16_derived_from_its_description_is_table_one() {
        let got = get("vgg16").unwrap();
        let want = tabled("vgg16");
        assert_eq!(got.layers, want.layers);
        assert_eq!(got.input, 3072);
        assert_eq!(got.macs(), want.macs());
    }

    #[test]
    fn preresnet20_derived_from_its_description_has_the_tabled_layers() {
        let got = get("preresnet20").unwrap();
        let want = tabled("preresnet20");
        assert_eq!(got.layers, want.layers);
        assert_eq!(got.params(), want.params());
    }

    #[test]
    fn a_layer_the_model_cannot_represent_is_named() {
        let spec: lowprec_nn::spec::NetworkSpec = toml::from_str(
            "input = [3, 8, 8]\nloss = \"cross-entropy\"\n[[layer]]\ntype = \"conv\"\nname = \"valid\"\nout = 4\nkernel = 3\n[[layer]]\ntype = \"flatten\"\n[[layer]]\ntype = \"linear\"\nout = 10\n",
        )
        .unwrap();
        let e = Network::from_spec("x", "x", &spec).unwrap_err().to_string();
        assert!(e.contains("valid") && e.contains("stride"), "{e}");
        let spec: lowprec_nn::spec::NetworkSpec = toml::from_str(
            "input = [3, 8, 8]\nloss = \"cross-entropy\"\n[[layer]]\ntype = \"maxpool\"\nname = \"p3\"\nkernel = 3\n[[layer]]\ntype = \"flatten\"\n[[layer]]\ntype = \"linear\"\nout = 10\n",
        )
        .unwrap();
        let e = Network::from_spec("x", "x", &spec).unwrap_err().to_string();
        assert!(e.contains("p3") && e.contains("2x2"), "{e}");
    }
}
