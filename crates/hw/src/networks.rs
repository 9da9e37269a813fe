//! Layer-shape tables of the networks the models use (embedded from `data/networks.toml`),
//! and the GEMMs one training iteration issues on paper 002's accelerator.

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

#[derive(Deserialize)]
struct NetworkFile {
    network: Vec<Network>,
}

/// All embedded networks.
pub fn all() -> &'static [Network] {
    static NETS: OnceLock<Vec<Network>> = OnceLock::new();
    NETS.get_or_init(|| {
        toml::from_str::<NetworkFile>(NETWORKS_TOML)
            .expect("embedded networks.toml is valid")
            .network
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
