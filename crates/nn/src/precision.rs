//! Precision policies: which number format each kind of tensor uses.
//!
//! Named policies (`--precision` on the command line, `precision = "..."` in a network file):
//! - `fp32`: the float baseline; same code path with every quantiser off (f32 GEMM).
//! - `bfp8` (002 "ours"): weights, activations and errors in 8-bit BFP with stochastic rounding;
//!   one exponent for the weights, one per example for activations and errors; weight gradients,
//!   momentum, the update and master weights in FP32.
//! - `swalp`: as SWALP: additionally the gradient accumulator, the momentum and the weights after
//!   every update are quantised to 8-bit BFP (one exponent per tensor), so the update itself is
//!   low precision.
//!
//! Any of these can be followed by per-tensor-kind overrides, comma separated:
//! `bfp8,weights=bfp6:tensor:stochastic,errors=bfp8:example`. Kinds: `weights`, `acts`
//! (activations), `errors`, `grads`, `momentum`, `master` (weights after the update).

use lowprec_formats::{BfpFormat, Block, NumberFormat, Rounding};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

use crate::plan::TensorKind;
use crate::NnError;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Precision {
    /// The text this policy was parsed from (canonical form).
    pub name: String,
    /// Q_w: the weights the GEMMs see (quantised once per update).
    pub weights: NumberFormat,
    /// Q_a: input activations of conv/FC layers.
    pub acts: NumberFormat,
    /// Q_e: errors arriving at conv/FC layers in the backward pass.
    pub errors: NumberFormat,
    /// Gradient accumulator (SWALP).
    pub grads: NumberFormat,
    /// Momentum buffer (SWALP).
    pub momentum: NumberFormat,
    /// Master weights after every update (SWALP).
    pub master: NumberFormat,
}

fn bfp8(block: Block) -> NumberFormat {
    NumberFormat::Bfp(BfpFormat::new(8, block, Rounding::Stochastic).expect("valid"))
}

impl Precision {
    pub fn fp32() -> Self {
        Precision {
            name: "fp32".into(),
            weights: NumberFormat::F32,
            acts: NumberFormat::F32,
            errors: NumberFormat::F32,
            grads: NumberFormat::F32,
            momentum: NumberFormat::F32,
            master: NumberFormat::F32,
        }
    }

    pub fn bfp8() -> Self {
        Precision {
            name: "bfp8".into(),
            weights: bfp8(Block::Tensor),
            acts: bfp8(Block::Axis(0)),
            errors: bfp8(Block::Axis(0)),
            ..Precision::fp32()
        }
    }

    pub fn swalp() -> Self {
        Precision {
            name: "swalp".into(),
            grads: bfp8(Block::Tensor),
            momentum: bfp8(Block::Tensor),
            master: bfp8(Block::Tensor),
            ..Precision::bfp8()
        }
    }

    /// The format of tensor kind `k`.
    pub fn get(&self, k: TensorKind) -> &NumberFormat {
        match k {
            TensorKind::Weights => &self.weights,
            TensorKind::Acts => &self.acts,
            TensorKind::Errors => &self.errors,
            TensorKind::Grads => &self.grads,
            TensorKind::Momentum => &self.momentum,
            TensorKind::Master => &self.master,
        }
    }

    /// The format slot of tensor kind `k` (change [`Precision::name`] with it, e.g. through
    /// [`Precision::canonical_name`]).
    pub fn get_mut(&mut self, k: TensorKind) -> &mut NumberFormat {
        match k {
            TensorKind::Weights => &mut self.weights,
            TensorKind::Acts => &mut self.acts,
            TensorKind::Errors => &mut self.errors,
            TensorKind::Grads => &mut self.grads,
            TensorKind::Momentum => &mut self.momentum,
            TensorKind::Master => &mut self.master,
        }
    }

    /// Whether both name the same format for every tensor kind (names aside).
    pub fn same_formats(&self, other: &Precision) -> bool {
        TensorKind::ALL.iter().all(|&k| self.get(k) == other.get(k))
    }

    /// The name of these formats as a policy string: the named policy this one was parsed
    /// from (the first part of [`Precision::name`]), then `kind=format` for every kind that
    /// differs from it. Parsing it gives these formats back.
    pub fn canonical_name(&self) -> String {
        let head = self.name.split(',').next().unwrap_or("").trim();
        let named = match head {
            "bfp8" | "ours" => Precision::bfp8(),
            "swalp" => Precision::swalp(),
            _ => Precision::fp32(),
        };
        let mut s = named.name.clone();
        for k in TensorKind::ALL {
            if self.get(k) != named.get(k) {
                s += &format!(",{}={}", k.name(), self.get(k));
            }
        }
        s
    }

    /// True when no tensor is quantised.
    pub fn is_fp32(&self) -> bool {
        [
            self.weights,
            self.acts,
            self.errors,
            self.grads,
            self.momentum,
            self.master,
        ]
        .iter()
        .all(|f| f.is_f32())
    }
}

impl FromStr for Precision {
    type Err = NnError;
    fn from_str(s: &str) -> Result<Self, NnError> {
        let mut parts = s.split(',').map(str::trim).filter(|p| !p.is_empty());
        let base = parts
            .next()
            .ok_or_else(|| NnError::Precision("empty precision policy".into()))?;
        let mut p = match base {
            "fp32" | "float" => Precision::fp32(),
            "bfp8" | "ours" => Precision::bfp8(),
            "swalp" => Precision::swalp(),
            other => {
                return Err(NnError::Precision(format!(
                    "unknown policy `{other}` (fp32, bfp8, swalp, each optionally followed by kind=format overrides)"
                )))
            }
        };
        for o in parts {
            let (kind, fmt) = o.split_once('=').ok_or_else(|| {
                NnError::Precision(format!("override `{o}` must look like kind=format, e.g. weights=bfp6:tensor:stochastic"))
            })?;
            let f: NumberFormat = fmt
                .parse()
                .map_err(|e| NnError::Precision(format!("{e}")))?;
            *p.get_mut(kind.parse::<TensorKind>()?) = f;
        }
        p.name = s
            .split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .collect::<Vec<_>>()
            .join(",");
        Ok(p)
    }
}

impl TryFrom<String> for Precision {
    type Error = NnError;
    fn try_from(s: String) -> Result<Self, NnError> {
        s.parse()
    }
}

impl From<Precision> for String {
    fn from(p: Precision) -> String {
        p.name
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (weights {}, acts {}, errors {}, grads {}, momentum {}, master {})",
            self.name, self.weights, self.acts, self.errors, self.grads, self.momentum, self.master
        )
    }
}
