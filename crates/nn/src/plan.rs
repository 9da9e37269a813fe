//! The per-layer precision plan: one resolved [`Precision`] per model layer (node), over a base.
//!
//! Layers read their weight, activation and error formats through [`crate::Ctx::layer_policy`],
//! which looks the running layer up here; the optimiser reads the gradient, momentum and master
//! formats of each parameter's layer. Changing an entry ([`PrecisionPlan::set`]) swaps a format
//! in place: no tensor is reallocated, and a layer's cached quantised weights are re-made at the
//! next forward because their format no longer matches. A uniform plan (every layer the base)
//! is exactly the single policy the layers read before plans existed.

use lowprec_formats::NumberFormat;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

use crate::{NnError, Precision};

/// The kinds of tensor a [`Precision`] names a format for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TensorKind {
    /// Q_w: the weights the GEMMs see.
    Weights,
    /// Q_a: input activations of conv/FC layers.
    Acts,
    /// Q_e: errors arriving at conv/FC layers.
    Errors,
    /// The gradient accumulator of the optimiser.
    Grads,
    /// The momentum buffer.
    Momentum,
    /// Master weights after every update.
    Master,
}

impl TensorKind {
    pub const ALL: [TensorKind; 6] = [
        TensorKind::Weights,
        TensorKind::Acts,
        TensorKind::Errors,
        TensorKind::Grads,
        TensorKind::Momentum,
        TensorKind::Master,
    ];

    /// The name used in policy strings, files and logs (`weights`, `acts`, ...).
    pub fn name(self) -> &'static str {
        match self {
            TensorKind::Weights => "weights",
            TensorKind::Acts => "acts",
            TensorKind::Errors => "errors",
            TensorKind::Grads => "grads",
            TensorKind::Momentum => "momentum",
            TensorKind::Master => "master",
        }
    }
}

impl FromStr for TensorKind {
    type Err = NnError;
    fn from_str(s: &str) -> Result<Self, NnError> {
        Ok(match s.trim() {
            "weights" | "w" => TensorKind::Weights,
            "acts" | "activations" | "a" => TensorKind::Acts,
            "errors" | "e" => TensorKind::Errors,
            "grads" | "gradients" | "g" => TensorKind::Grads,
            "momentum" | "m" => TensorKind::Momentum,
            "master" | "update" => TensorKind::Master,
            k => {
                return Err(NnError::Precision(format!(
                    "unknown tensor kind `{k}` (weights, acts, errors, grads, momentum, master)"
                )))
            }
        })
    }
}

impl fmt::Display for TensorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A base [`Precision`] and one resolved [`Precision`] per model layer (the model's node
/// index, as [`crate::Ctx::layer_index`] counts them).
#[derive(Clone, Debug, PartialEq)]
pub struct PrecisionPlan {
    base: Precision,
    layers: Vec<Precision>,
}

impl PrecisionPlan {
    /// Every one of `n_layers` layers in `base`.
    pub fn uniform(base: Precision, n_layers: usize) -> Self {
        PrecisionPlan {
            layers: vec![base.clone(); n_layers],
            base,
        }
    }

    pub fn base(&self) -> &Precision {
        &self.base
    }

    /// Layer `i`'s policy; the base for an index past the plan's layers.
    pub fn layer(&self, i: usize) -> &Precision {
        self.layers.get(i).unwrap_or(&self.base)
    }

    /// Sets tensor kind `kind` of layer `layer` to `fmt` (a layer past the end is added, the
    /// ones between taking the base). Only the format changes: no tensor is reallocated.
    pub fn set(&mut self, layer: usize, kind: TensorKind, fmt: NumberFormat) {
        self.grow(layer);
        let p = &mut self.layers[layer];
        if *p.get(kind) != fmt {
            *p.get_mut(kind) = fmt;
            p.name = p.canonical_name();
        }
    }

    /// Replaces layer `layer`'s whole policy.
    pub fn set_layer(&mut self, layer: usize, p: Precision) {
        self.grow(layer);
        self.layers[layer] = p;
    }

    /// Layers with an entry of their own.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// Whether every layer has the base's formats.
    pub fn is_uniform(&self) -> bool {
        self.layers.iter().all(|p| p.same_formats(&self.base))
    }

    /// Whether no layer quantises anything.
    pub fn is_fp32(&self) -> bool {
        self.base.is_fp32() && self.layers.iter().all(Precision::is_fp32)
    }

    fn grow(&mut self, layer: usize) {
        if layer >= self.layers.len() {
            self.layers.resize(layer + 1, self.base.clone());
        }
    }
}

impl fmt::Display for PrecisionPlan {
    /// The base's name, then `layer i: name` for every layer that differs from it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base.name)?;
        for (i, p) in self.layers.iter().enumerate() {
            if !p.same_formats(&self.base) {
                write!(f, "; layer {i}: {}", p.name)?;
            }
        }
        Ok(())
    }
}
