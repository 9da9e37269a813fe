//! SGD with momentum and weight decay, optionally in low precision (SWALP), and SWA.
//!
//! One step, per parameter tensor (PyTorch's SGD, with SWALP's quantisers where the policy
//! names a format; every `Q` is the identity under `fp32`):
//!
//! ```text
//! g   = Q_grads(grad + weight_decay * w)
//! buf = Q_momentum(momentum * buf + g)
//! w   = Q_master(w - lr * buf)
//! ```
//!
//! The 002 policy (`bfp8`) keeps all three in FP32; `swalp` quantises them to 8-bit BFP.

use lowprec_formats::rng::stream_id;
use lowprec_formats::{fake_quantize, NumberFormat, StreamKey};
use lowprec_nn::ctx::StreamKind;
use lowprec_nn::{NnError, Param, Precision, PrecisionPlan};
use rayon::prelude::*;

const PAR_MIN: usize = 1 << 16;

pub struct Sgd {
    pub momentum: f32,
    pub weight_decay: f32,
    /// One momentum buffer per parameter tensor (same order as the model's parameters).
    pub buffers: Vec<Vec<f32>>,
}

fn quantize_in_place(
    v: &mut Vec<f32>,
    shape: &[usize],
    fmt: &NumberFormat,
    key: StreamKey,
    what: &str,
    step: u64,
) -> Result<(), NnError> {
    if fmt.is_f32() {
        return Ok(());
    }
    let mut out = vec![0f32; v.len()];
    fake_quantize(v, shape, fmt, key, what, &mut out)
        .map_err(|e| NnError::quant("optimiser", step, e))?;
    *v = out;
    Ok(())
}

impl Sgd {
    pub fn new(momentum: f64, weight_decay: f64, params: &[&Param]) -> Self {
        Sgd {
            momentum: momentum as f32,
            weight_decay: weight_decay as f32,
            buffers: params.iter().map(|p| vec![0.0; p.value.len()]).collect(),
        }
    }

    /// Applies one update with learning rate `lr`, every parameter in `policy`; `step` is the
    /// number of updates done before this one (it keys the stochastic rounding and becomes the
    /// weights' version + 1).
    pub fn step(
        &mut self,
        params: &mut [&mut Param],
        lr: f32,
        policy: &Precision,
        seed: u64,
        step: u64,
    ) -> Result<(), NnError> {
        self.step_with(params, lr, |_| policy, seed, step)
    }

    /// [`Sgd::step`] with each parameter in the policy of its layer in `plan`; `layers[i]` is
    /// parameter `i`'s layer ([`lowprec_nn::Model::param_layers`]).
    pub fn step_plan(
        &mut self,
        params: &mut [&mut Param],
        lr: f32,
        plan: &PrecisionPlan,
        layers: &[usize],
        seed: u64,
        step: u64,
    ) -> Result<(), NnError> {
        if layers.len() != params.len() {
            return Err(NnError::Spec(format!(
                "{} parameter layers for {} parameters",
                layers.len(),
                params.len()
            )));
        }
        self.step_with(params, lr, |i| plan.layer(layers[i]), seed, step)
    }

    fn step_with<'p>(
        &mut self,
        params: &mut [&mut Param],
        lr: f32,
        policy_of: impl Fn(usize) -> &'p Precision,
        seed: u64,
        step: u64,
    ) -> Result<(), NnError> {
        if params.len() != self.buffers.len() {
            return Err(NnError::Spec(format!(
                "optimiser has {} buffers for {} parameters",
                self.buffers.len(),
                params.len()
            )));
        }
        let (mom, wd) = (self.momentum, self.weight_decay);
        for (pi, (p, buf)) in params.iter_mut().zip(self.buffers.iter_mut()).enumerate() {
            let key = |kind: StreamKind| {
                StreamKey::new(seed, stream_id(&[0x0971, pi as u64, kind as u64, step]))
            };
            let decay = if p.decay { wd } else { 0.0 };
            let policy = policy_of(pi);
            if policy.grads.is_f32() && policy.momentum.is_f32() && policy.master.is_f32() {
                // Nothing to round between the three steps below: one pass over the weights,
                // gradient and momentum with the same operations in the same order (three
                // passes and a gradient copy were a visible share of a VGG16 iteration).
                let upd = |((w, gr), b): ((&mut f32, &f32), &mut f32)| {
                    let g = gr + decay * *w;
                    *b = mom * *b + g;
                    *w -= lr * *b;
                };
                // Pieces of at least PAR_MIN values: a small tensor stays one piece.
                p.value
                    .par_iter_mut()
                    .with_min_len(PAR_MIN)
                    .zip(p.grad.par_iter())
                    .zip(buf.par_iter_mut())
                    .for_each(upd);
                p.version = step + 1;
                continue;
            }
            // g = grad + wd * w
            let mut g: Vec<f32> = if p.value.len() >= PAR_MIN {
                p.grad
                    .par_iter()
                    .zip(p.value.par_iter())
                    .map(|(g, w)| g + decay * w)
                    .collect()
            } else {
                p.grad
                    .iter()
                    .zip(&p.value)
                    .map(|(g, w)| g + decay * w)
                    .collect()
            };
            let shape = p.shape.clone();
            quantize_in_place(
                &mut g,
                &shape,
                &policy.grads,
                key(StreamKind::Grads),
                &format!("gradient of {}", p.name),
                step,
            )?;
            // buf = momentum * buf + g
            let upd = |(b, gv): (&mut f32, &f32)| *b = mom * *b + gv;
            if buf.len() >= PAR_MIN {
                buf.par_iter_mut().zip(g.par_iter()).for_each(upd);
            } else {
                buf.iter_mut().zip(g.iter()).for_each(upd);
            }
            quantize_in_place(
                buf,
                &shape,
                &policy.momentum,
                key(StreamKind::Momentum),
                &format!("momentum of {}", p.name),
                step,
            )?;
            // w = w - lr * buf
            let upd = |(w, b): (&mut f32, &f32)| *w -= lr * b;
            if p.value.len() >= PAR_MIN {
                p.value.par_iter_mut().zip(buf.par_iter()).for_each(upd);
            } else {
                p.value.iter_mut().zip(buf.iter()).for_each(upd);
            }
            let name = format!("weights of {}", p.name);
            quantize_in_place(
                &mut p.value,
                &shape,
                &policy.master,
                key(StreamKind::Master),
                &name,
                step,
            )?;
            p.version = step + 1;
        }
        Ok(())
    }
}

/// Stochastic weight averaging: an FP32 running mean of the weights.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Swa {
    pub avg: Vec<Vec<f32>>,
    /// Models averaged so far.
    pub n: u64,
}

impl Swa {
    pub fn new() -> Self {
        Swa::default()
    }

    /// Adds the current weights to the average.
    pub fn update(&mut self, params: &[&Param]) {
        if self.n == 0 {
            self.avg = params.iter().map(|p| p.value.clone()).collect();
        } else {
            let inv = 1.0 / (self.n + 1) as f32;
            for (a, p) in self.avg.iter_mut().zip(params) {
                a.iter_mut()
                    .zip(&p.value)
                    .for_each(|(a, w)| *a += (w - *a) * inv);
            }
        }
        self.n += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lowprec_formats::rng::uniform_f32;

    fn rand(n: usize, seed: u64) -> Vec<f32> {
        let key = StreamKey::new(seed, 7);
        (0..n as u64)
            .map(|i| uniform_f32(key, i) * 2.0 - 1.0)
            .collect()
    }

    #[test]
    fn fp32_step_is_the_three_formulas_bit_for_bit() {
        // One tensor below and one above the parallel threshold, with and without decay.
        for (n, decay) in [(7, true), (PAR_MIN + 33, false), (PAR_MIN * 2, true)] {
            let mut p = Param::new("w".into(), vec![n], rand(n, 1), decay);
            let mut sgd = Sgd::new(0.9, 5e-4, &[&p]);
            let (mut w, mut buf) = (p.value.clone(), vec![0f32; n]);
            for step in 0..3 {
                p.grad = rand(n, 10 + step);
                sgd.step(&mut [&mut p], 0.05, &Precision::fp32(), 0, step)
                    .unwrap();
                let wd = if decay { 5e-4f32 } else { 0.0 };
                for i in 0..n {
                    let g = p.grad[i] + wd * w[i];
                    buf[i] = 0.9 * buf[i] + g;
                    w[i] -= 0.05 * buf[i];
                }
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert!(bits(&p.value) == bits(&w), "weights, n {n}, step {step}");
                assert!(
                    bits(&sgd.buffers[0]) == bits(&buf),
                    "momentum, n {n}, step {step}"
                );
                assert_eq!(p.version, step + 1);
            }
        }
    }
}
