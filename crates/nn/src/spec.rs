//! Network descriptions: a readable TOML table that says what the network is (Darknet's cfg in
//! spirit). Example:
//!
//! ```toml
//! input = [1, 28, 28]
//! loss = "cross-entropy"
//!
//! [[layer]]
//! type = "flatten"
//!
//! [[layer]]
//! type = "linear"
//! out = 10
//! ```
//!
//! Each layer may carry a `name` (default `<type><index>`) and `from`, the names of the layers
//! it reads (default: the previous layer; `input` is the network input). Layers with several
//! inputs (a residual `add`) list them all.

use serde::{Deserialize, Serialize};

use crate::LossKind;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// Shape of one example, e.g. `[1, 28, 28]` or `[3, 32, 32]` (channels first) or `[32]`.
    pub input: Vec<usize>,
    pub loss: LossKind,
    #[serde(rename = "layer")]
    pub layers: Vec<LayerEntry>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Vec<String>>,
    #[serde(flatten)]
    pub kind: LayerSpec,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum LayerSpec {
    /// Fully connected: `out` features, optional bias (the papers' networks have none).
    Linear {
        out: usize,
        #[serde(default)]
        bias: bool,
    },
    Relu,
    Dropout {
        p: f32,
    },
    Flatten,
    /// 2-D convolution over `[channels, height, width]`: `out` filters of `kernel x kernel`.
    Conv {
        out: usize,
        kernel: usize,
        #[serde(default = "one")]
        stride: usize,
        #[serde(default)]
        padding: usize,
        #[serde(default)]
        bias: bool,
    },
    /// Max pooling, `kernel x kernel` windows, stride defaulting to the kernel.
    Maxpool {
        kernel: usize,
        #[serde(default)]
        stride: Option<usize>,
    },
    /// Average pooling, `kernel x kernel` windows, stride defaulting to the kernel.
    Avgpool {
        kernel: usize,
        #[serde(default)]
        stride: Option<usize>,
    },
    /// Mean over each channel's plane: `[C, H, W] -> [C]`.
    GlobalAvgPool,
    /// Batch normalisation per channel.
    Batchnorm {
        #[serde(default = "default_bn_eps")]
        eps: f32,
        #[serde(default = "default_bn_momentum")]
        momentum: f32,
    },
    /// Residual addition of the layers named in `from`.
    Add,
}

fn one() -> usize {
    1
}
fn default_bn_eps() -> f32 {
    1e-5
}
fn default_bn_momentum() -> f32 {
    0.1
}

impl LayerSpec {
    pub fn type_name(&self) -> &'static str {
        match self {
            LayerSpec::Linear { .. } => "linear",
            LayerSpec::Relu => "relu",
            LayerSpec::Dropout { .. } => "dropout",
            LayerSpec::Flatten => "flatten",
            LayerSpec::Conv { .. } => "conv",
            LayerSpec::Maxpool { .. } => "maxpool",
            LayerSpec::Avgpool { .. } => "avgpool",
            LayerSpec::GlobalAvgPool => "global-avg-pool",
            LayerSpec::Batchnorm { .. } => "batchnorm",
            LayerSpec::Add => "add",
        }
    }
}

impl NetworkSpec {
    /// Multiplies the outputs of every conv and linear layer by `k` (WRPN's width multiplier),
    /// except the last conv/linear layer, whose outputs are the classes. Errors when `k` is 0
    /// or a width overflows.
    pub fn widen(&mut self, k: usize) -> Result<(), String> {
        if k == 0 {
            return Err("width multiplier must be at least 1".into());
        }
        let last = self
            .layers
            .iter()
            .rposition(|l| matches!(l.kind, LayerSpec::Conv { .. } | LayerSpec::Linear { .. }));
        for (i, l) in self.layers.iter_mut().enumerate() {
            if Some(i) == last {
                continue;
            }
            if let LayerSpec::Conv { out, .. } | LayerSpec::Linear { out, .. } = &mut l.kind {
                let name = l.name.clone().unwrap_or_else(|| format!("layer {i}"));
                *out = out
                    .checked_mul(k)
                    .ok_or_else(|| format!("{name}: {out} x {k} outputs overflow"))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod widen_tests {
    use super::*;

    #[test]
    fn widen_scales_all_but_the_classifier() {
        let mut s: NetworkSpec = toml::from_str(
            "input = [1, 8, 8]\nloss = \"cross-entropy\"\n[[layer]]\ntype = \"conv\"\nout = 4\nkernel = 3\n[[layer]]\ntype = \"flatten\"\n[[layer]]\ntype = \"linear\"\nout = 7\n[[layer]]\ntype = \"linear\"\nout = 10\n",
        )
        .unwrap();
        s.widen(3).unwrap();
        let outs: Vec<usize> = s
            .layers
            .iter()
            .filter_map(|l| match l.kind {
                LayerSpec::Conv { out, .. } | LayerSpec::Linear { out, .. } => Some(out),
                _ => None,
            })
            .collect();
        assert_eq!(outs, vec![12, 21, 10]);
        assert!(s.widen(0).is_err());
        assert!(s.widen(usize::MAX).is_err());
    }
}
