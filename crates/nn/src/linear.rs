//! Fully connected layer, following 002's Algorithm 1:
//!
//! ```text
//! forward:   X~, qa = Q_a(X)              (per-example blocks)
//!            W~, qw = Q_w(W)              (once per weight update)
//!            Y      = tofloat(X~ W~^T, qa, qw) + b
//! backward:  dY~, qe = Q_e(dY)
//!            dW     = sum_i tofloat(dY~(i)^T X~(i), qe_i, qa_i)   (one K segment per example)
//!            dX     = tofloat(dY~ W~, qe, qw)
//!            db     = sum_i dY(i)                                   (float)
//! ```
//!
//! The weights are stored `[out, in]`, so "per output channel" is `axis0`. The layer keeps the
//! quantised X~ (one byte per value in BFP8) for the weight gradient.

use crate::ctx::{Category, StreamKind};
use crate::init;
use crate::layer::{Layer, Param};
use crate::operand::{matmul, quantize_matrix, Operand};
use crate::{Ctx, NnError, Tensor, TensorKind};
use lowprec_formats::NumberFormat;

pub struct Linear {
    id: u64,
    name: String,
    pub in_features: usize,
    pub out_features: usize,
    pub weight: Param,
    pub bias: Option<Param>,
    /// Q_w(W), the weight version and the format it was made from.
    wq: Option<(u64, NumberFormat, Operand)>,
    saved_x: Option<Operand>,
}

impl Linear {
    pub fn new(
        id: u64,
        name: &str,
        in_features: usize,
        out_features: usize,
        bias: bool,
        seed: u64,
    ) -> Self {
        let bound = init::default_bound(in_features);
        let w = init::uniform(in_features * out_features, bound, seed, id, 0);
        let weight = Param::new(
            format!("{name}.weight"),
            vec![out_features, in_features],
            w,
            true,
        );
        let bias = bias.then(|| {
            Param::new(
                format!("{name}.bias"),
                vec![out_features],
                init::uniform(out_features, bound, seed, id, 1),
                false,
            )
        });
        Linear {
            id,
            name: name.to_string(),
            in_features,
            out_features,
            weight,
            bias,
            wq: None,
            saved_x: None,
        }
    }

    /// Q_w(W), recomputed only when the weights or their format changed since the last call.
    fn quantized_weights(&mut self, ctx: &mut Ctx<'_>) -> Result<(), NnError> {
        let v = self.weight.version;
        let fmt = ctx.layer_policy().weights;
        if matches!(&self.wq, Some((ver, f, _)) if *ver == v && *f == fmt) {
            return Ok(());
        }
        let key = ctx.weight_key(self.id, v);
        let tensor = format!("weights of {}", self.name);
        let (o, i) = (self.out_features, self.in_features);
        let (w, step) = (&self.weight.value, ctx.step);
        let q = ctx.timed(Category::Quantize, |_| {
            quantize_matrix(w, o, i, &fmt, key, &tensor, &self.name, step)
        })?;
        self.wq = Some((v, fmt, q));
        Ok(())
    }
}

impl Layer for Linear {
    fn name(&self) -> &str {
        &self.name
    }

    fn describe(&self) -> String {
        format!(
            "linear {} -> {}{}",
            self.in_features,
            self.out_features,
            if self.bias.is_some() { " (+bias)" } else { "" }
        )
    }

    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>, NnError> {
        let n: usize = inputs.first().map(|s| s.iter().product()).unwrap_or(0);
        if inputs.len() != 1 || n != self.in_features {
            return Err(NnError::shape(
                &self.name,
                format!(
                    "expects one input of {} features, got {inputs:?}",
                    self.in_features
                ),
            ));
        }
        Ok(vec![self.out_features])
    }

    fn forward(
        &mut self,
        ctx: &mut Ctx<'_>,
        inputs: &[&Tensor],
        train: bool,
    ) -> Result<Tensor, NnError> {
        let x = inputs[0];
        let b = x.batch();
        if x.per_example() != self.in_features {
            return Err(NnError::shape(
                &self.name,
                format!(
                    "input {:?}, {} features expected",
                    x.shape, self.in_features
                ),
            ));
        }
        // Q_a on the input activations.
        ctx.observe(TensorKind::Acts, &x.data, b, self.in_features);
        let key = ctx.key(self.id, StreamKind::Acts);
        let (fmt, step) = (ctx.layer_policy().acts, ctx.step);
        let tensor = format!("input activations of {}", self.name);
        let xq = ctx.timed(Category::Quantize, |_| {
            quantize_matrix(
                &x.data,
                b,
                self.in_features,
                &fmt,
                key,
                &tensor,
                &self.name,
                step,
            )
        })?;
        // Q_w once per update.
        self.quantized_weights(ctx)?;
        let wq = &self.wq.as_ref().expect("quantised above").2;
        let mut y = vec![0f32; b * self.out_features];
        let backend = ctx.backend;
        // Y = X~ W~^T, rescaled.
        ctx.timed(Category::Gemm, |_| {
            matmul(backend, &xq, false, wq, true, &mut y, false, &self.name)
        })?;
        if let Some(bias) = &self.bias {
            ctx.timed(Category::Other, |_| {
                for row in y.chunks_mut(self.out_features) {
                    for (v, bv) in row.iter_mut().zip(&bias.value) {
                        *v += bv;
                    }
                }
            });
        }
        self.saved_x = if train { Some(xq) } else { None };
        Tensor::new(y, vec![b, self.out_features])
    }

    fn backward(&mut self, ctx: &mut Ctx<'_>, dy: Tensor) -> Result<Vec<Tensor>, NnError> {
        let xq = self.saved_x.take().ok_or_else(|| NnError::NoForward {
            layer: self.name.clone(),
        })?;
        let b = dy.batch();
        if dy.per_example() != self.out_features || xq.dims().0 != b {
            return Err(NnError::shape(
                &self.name,
                format!("gradient {:?} does not match the forward pass", dy.shape),
            ));
        }
        // Q_e on the incoming errors.
        ctx.observe(TensorKind::Errors, &dy.data, b, self.out_features);
        let key = ctx.key(self.id, StreamKind::Errors);
        let (fmt, step) = (ctx.layer_policy().errors, ctx.step);
        let tensor = format!("errors of {}", self.name);
        let dyq = ctx.timed(Category::Quantize, |_| {
            quantize_matrix(
                &dy.data,
                b,
                self.out_features,
                &fmt,
                key,
                &tensor,
                &self.name,
                step,
            )
        })?;
        let backend = ctx.backend;
        // dW = dY~^T X~ (per-example K segments when the blocks are per example).
        let gw = &mut self.weight.grad;
        ctx.timed(Category::Gemm, |_| {
            matmul(backend, &dyq, true, &xq, false, gw, false, &self.name)
        })?;
        if let Some(bias) = &mut self.bias {
            ctx.timed(Category::Other, |_| {
                bias.grad.iter_mut().for_each(|g| *g = 0.0);
                for row in dy.data.chunks(self.out_features) {
                    for (g, v) in bias.grad.iter_mut().zip(row) {
                        *g += v;
                    }
                }
            });
        }
        if !ctx.need_input_grad {
            return Ok(vec![Tensor::zeros(vec![0])]);
        }
        // dX = dY~ W~.
        let wq = &self
            .wq
            .as_ref()
            .ok_or_else(|| NnError::NoForward {
                layer: self.name.clone(),
            })?
            .2;
        let mut dx = vec![0f32; b * self.in_features];
        ctx.timed(Category::Gemm, |_| {
            matmul(backend, &dyq, false, wq, false, &mut dx, false, &self.name)
        })?;
        Ok(vec![Tensor::new(dx, vec![b, self.in_features])?])
    }

    fn params(&self) -> Vec<&Param> {
        std::iter::once(&self.weight)
            .chain(self.bias.as_ref())
            .collect()
    }

    fn params_mut(&mut self) -> Vec<&mut Param> {
        std::iter::once(&mut self.weight)
            .chain(self.bias.as_mut())
            .collect()
    }

    fn macs_per_example(&self, _inputs: &[&[usize]]) -> u64 {
        (self.in_features * self.out_features) as u64
    }

    fn saved_bytes(&self) -> usize {
        self.saved_x.as_ref().map_or(0, |o| o.bytes())
    }

    fn clear_saved(&mut self) {
        self.saved_x = None;
    }
}
