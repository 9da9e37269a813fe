//! Batch normalisation over NCHW feature maps (per channel, over batch and pixels), in FP32
//! with f64 sums.
//!
//! Training mode normalises with the batch statistics (biased variance) and updates the running
//! statistics with momentum (`r = (1 - m) r + m s`, unbiased variance, as PyTorch). Between
//! [`Layer::begin_stats_recompute`] and [`Layer::end_stats_recompute`] the running statistics
//! are instead the cumulative average of the batch statistics seen (SWA's `bn_update`).
//! Evaluation mode normalises with the running statistics. `gamma` and `beta` are parameters
//! without weight decay; the running mean and variance are checkpointed buffers.
//! Per-channel sums are one rayon task per channel; the element-wise passes one task per
//! `(example, channel)` plane, so the bits do not depend on the thread count.

use rayon::prelude::*;
use std::mem::MaybeUninit;

use crate::activation;
use crate::scratch::Fill;

use crate::ctx::Category;
use crate::layer::{Layer, Param};
use crate::{Ctx, NnError, Tensor};

/// The gradient an absorbed ReLU lets through: `g` where the output `xh * gm + bt` (the
/// forward's own expression, so the same mask bit for bit) was positive, else +0.0 as the ReLU
/// layer gives. Branch-free, a select on the bits: the signs are random, and a branch
/// mispredicted half the time made the pass many times slower.
#[inline(always)]
fn relu_grad(g: f32, xh: f32, gm: f32, bt: f32) -> f32 {
    let keep = ((xh * gm + bt > 0.0) as u32).wrapping_neg();
    f32::from_bits(g.to_bits() & keep)
}

/// Eight f64 lanes and a tail per sum: how every channel sum below accumulates one plane
/// after another (lanes combined at the end, in a fixed order), so that the sums vectorise and
/// the bits do not depend on the thread count or the instruction set.
#[derive(Clone, Copy, Default)]
struct LaneSums {
    l0: [f64; 8],
    l1: [f64; 8],
    t0: f64,
    t1: f64,
}

impl LaneSums {
    fn total(&self) -> (f64, f64) {
        (
            self.l0.iter().sum::<f64>() + self.t0,
            self.l1.iter().sum::<f64>() + self.t1,
        )
    }
}

// The plane kernels are compiled for AVX-512 and AVX2 besides the baseline and chosen at run
// time under the `LOWPREC_ISA` cap (`isa_versions!`); none lets the compiler contract or reorder float operations, so every
// version gives the same bits.

lowprec_formats::isa_versions! {
/// `(sum d, sum d^2)` with `d = x - shift` in f64 (the forward statistics).
fn plane_shifted_sums(x: &[f32], shift: f64, s: &mut LaneSums) {
    let cx = x.chunks_exact(8);
    for &v in cx.remainder() {
        let d = v as f64 - shift;
        s.t0 += d;
        s.t1 += d * d;
    }
    for c8 in cx {
        for l in 0..8 {
            let d = c8[l] as f64 - shift;
            s.l0[l] += d;
            s.l1[l] += d * d;
        }
    }
}
}

lowprec_formats::isa_versions! {
/// `(sum g, sum g * xhat)` (the backward sums), with `g = relu_grad(dy, xhat, gm, bt)` when
/// a ReLU is absorbed; `xhat = (x - mu) * is` is recomputed from the input `x` exactly as the
/// forward made it.
fn plane_grad_sums(
    dy: &[f32],
    x: &[f32],
    norm: (f32, f32),
    relu: Option<(f32, f32)>,
    s: &mut LaneSums,
) {
    /// The sums once, for any gradient mask: each use below is its own loop, with nothing
    /// decided per element.
    #[inline(always)]
    fn sums(
        dy: &[f32],
        x: &[f32],
        (mu, is): (f32, f32),
        mask: impl Fn(f32, f32) -> f32,
        s: &mut LaneSums,
    ) {
        let (cd, cx) = (dy.chunks_exact(8), x.chunks_exact(8));
        let (rd, rx) = (cd.remainder(), cx.remainder());
        for (&g, &v) in rd.iter().zip(rx) {
            let h = (v - mu) * is;
            let g = mask(g, h) as f64;
            s.t0 += g;
            s.t1 += g * h as f64;
        }
        for (d8, x8) in cd.zip(cx) {
            for l in 0..8 {
                let h = (x8[l] - mu) * is;
                let g = mask(d8[l], h) as f64;
                s.l0[l] += g;
                s.l1[l] += g * h as f64;
            }
        }
    }
    match relu {
        None => sums(dy, x, norm, |g, _| g, s),
        Some((gm, bt)) => sums(dy, x, norm, |g, h| relu_grad(g, h, gm, bt), s),
    }
}
}

lowprec_formats::isa_versions! {
/// The forward's normalisation of one plane, `y = (x - mu) * is * g + be`, then the absorbed
/// ReLU if any. Writes every slot of `y`.
fn plane_normalise(
    x: &[f32],
    y: &mut [MaybeUninit<f32>],
    affine: (f32, f32, f32, f32),
    relu: bool,
) {
    let (mu, is, g, be) = affine;
    assert_eq!(x.len(), y.len());
    if relu {
        for (yv, &v) in y.iter_mut().zip(x) {
            yv.write(activation::relu((v - mu) * is * g + be));
        }
    } else {
        for (yv, &v) in y.iter_mut().zip(x) {
            yv.write((v - mu) * is * g + be);
        }
    }
}
}

/// Where the backward's `dx` of a plane goes: written, or added onto a gradient already there
/// (see [`Layer::backward_onto`]).
enum DxOut<'a> {
    Write(&'a mut [MaybeUninit<f32>]),
    Onto(&'a mut [f32]),
}

lowprec_formats::isa_versions! {
/// The backward's `dx = k * (g - mdy - xhat * mdyx)` for one plane, `g` masked by the
/// absorbed ReLU if any: written into every slot, or added onto `acc` as `acc + dx`.
fn plane_input_grad<'a>(
    dy: &[f32],
    x: &[f32],
    norm: (f32, f32),
    dx: DxOut<'a>,
    consts: (f32, f32, f32),
    relu: Option<(f32, f32)>,
) {
    /// The formula once, over any output slots (`put` stores or adds), `xhat` recomputed from
    /// the input as in [`plane_grad_sums`]: each use below is its own loop, with nothing
    /// decided per element.
    #[inline(always)]
    fn each<O>(
        out: &mut [O],
        dy: &[f32],
        x: &[f32],
        (mu, is): (f32, f32),
        (k, mdy, mdyx): (f32, f32, f32),
        mask: impl Fn(f32, f32) -> f32,
        put: impl Fn(&mut O, f32),
    ) {
        assert!(out.len() == dy.len() && x.len() == dy.len());
        for ((o, &g), &v) in out.iter_mut().zip(dy).zip(x) {
            let h = (v - mu) * is;
            put(o, k * (mask(g, h) - mdy - h * mdyx));
        }
    }
    let write = |o: &mut MaybeUninit<f32>, v: f32| {
        o.write(v);
    };
    let onto = |o: &mut f32, v: f32| *o += v;
    let (n, c) = (norm, consts);
    match (dx, relu) {
        (DxOut::Write(d), None) => each(d, dy, x, n, c, |g, _| g, write),
        (DxOut::Write(d), Some((gm, bt))) => {
            each(d, dy, x, n, c, |g, h| relu_grad(g, h, gm, bt), write)
        }
        (DxOut::Onto(a), None) => each(a, dy, x, n, c, |g, _| g, onto),
        (DxOut::Onto(a), Some((gm, bt))) => {
            each(a, dy, x, n, c, |g, h| relu_grad(g, h, gm, bt), onto)
        }
    }
}
}

pub struct BatchNorm2d {
    name: String,
    pub c: usize,
    pub hw: usize,
    in_shape: Vec<usize>,
    pub eps: f32,
    pub momentum: f32,
    pub gamma: Param,
    pub beta: Param,
    pub running_mean: Vec<f32>,
    pub running_var: Vec<f32>,
    /// Examples averaged so far while recomputing statistics (`None`: momentum updates).
    recompute: Option<u64>,
    /// A ReLU absorbed from the next layer (see [`Layer::absorb_relu`]).
    relu: bool,
    /// What the training forward kept for backward.
    saved: Option<Saved>,
}

/// The training forward's values for backward: its input (handed over by the model when no
/// later layer reads it, else copied in the normalising pass) and the batch statistics, from
/// which backward recomputes `xhat` with the forward's operations. Writing `xhat` instead was
/// one pass more for an input handed over, for the same bytes kept.
struct Saved {
    input: Vec<f32>,
    mean: Vec<f32>,
    inv_std: Vec<f32>,
    batch: usize,
}

impl BatchNorm2d {
    pub fn new(name: &str, in_shape: &[usize], eps: f32, momentum: f32) -> Result<Self, NnError> {
        let (c, hw) = match in_shape {
            [c, h, w] => (*c, h * w),
            [c] => (*c, 1),
            _ => {
                return Err(NnError::Spec(format!(
                    "{name}: batch norm expects [channels, height, width] or [features] inputs, got {in_shape:?}"
                )))
            }
        };
        if !(eps > 0.0 && eps.is_finite() && (0.0..=1.0).contains(&momentum)) {
            return Err(NnError::Spec(format!(
                "{name}: batch norm needs eps > 0 and momentum in [0, 1] (got {eps}, {momentum})"
            )));
        }
        Ok(BatchNorm2d {
            name: name.to_string(),
            c,
            hw,
            in_shape: in_shape.to_vec(),
            eps,
            momentum,
            gamma: Param::new(format!("{name}.weight"), vec![c], vec![1.0; c], false),
            beta: Param::new(format!("{name}.bias"), vec![c], vec![0.0; c], false),
            running_mean: vec![0.0; c],
            running_var: vec![1.0; c],
            recompute: None,
            relu: false,
            saved: None,
        })
    }

    /// The backward pass: dgamma and dbeta into the parameters, and dx, written into a new
    /// tensor or added onto `onto`.
    fn input_grad(
        &mut self,
        ctx: &mut Ctx<'_>,
        dy: &Tensor,
        onto: Option<Tensor>,
    ) -> Result<Tensor, NnError> {
        let Saved {
            input: xs,
            mean,
            inv_std,
            batch: b,
        } = self.saved.take().ok_or_else(|| NnError::NoForward {
            layer: self.name.clone(),
        })?;
        if dy.len() != xs.len() || onto.as_ref().is_some_and(|t| t.shape != dy.shape) {
            return Err(NnError::shape(
                &self.name,
                format!("gradient {:?} does not match the forward pass", dy.shape),
            ));
        }
        let (c, hw) = (self.c, self.hw);
        let count = (b * hw) as f64;
        let (relu, gamma, beta) = (self.relu, self.gamma.value.clone(), self.beta.value.clone());
        // With an absorbed ReLU the incoming gradient passes where the output was positive
        // (`relu_grad`).
        ctx.timed(Category::Other, |_| {
            // dbeta = sum dy, dgamma = sum dy * xhat
            let norm = |ch: usize| (mean[ch], inv_std[ch]);
            let sums = self.channel_sums(b, |ch, base, s| {
                let r = relu.then(|| (gamma[ch], beta[ch]));
                let (dyp, xp) = (&dy.data[base..base + hw], &xs[base..base + hw]);
                plane_grad_sums(dyp, xp, norm(ch), r, s)
            });
            for (ch, &(dbeta, dgamma)) in sums.iter().enumerate() {
                self.beta.grad[ch] = dbeta as f32;
                self.gamma.grad[ch] = dgamma as f32;
            }
            // dx = gamma * inv_std * (dy - mean(dy) - xhat * mean(dy * xhat))
            let plane = |i: usize, out: DxOut<'_>| {
                let ch = i % c;
                let k = gamma[ch] * inv_std[ch];
                let (dbeta, dgamma) = sums[ch];
                let (mdy, mdyx) = ((dbeta / count) as f32, (dgamma / count) as f32);
                let (dyi, xi) = (&dy.data[i * hw..][..hw], &xs[i * hw..][..hw]);
                let r = relu.then(|| (gamma[ch], beta[ch]));
                plane_input_grad(dyi, xi, norm(ch), out, (k, mdy, mdyx), r);
            };
            match onto {
                Some(mut acc) => {
                    acc.data
                        .par_chunks_mut(hw)
                        .enumerate()
                        .for_each(|(i, d)| plane(i, DxOut::Onto(d)));
                    Ok(acc)
                }
                None => {
                    let mut dx = Fill::<f32>::new(dy.len());
                    dx.slots()
                        .par_chunks_mut(hw)
                        .enumerate()
                        .for_each(|(i, d)| plane(i, DxOut::Write(d)));
                    // SAFETY: `plane_input_grad` wrote every plane.
                    Tensor::new(unsafe { dx.assume_init() }, dy.shape.clone())
                }
            }
        })
    }

    /// The forward pass over `x`; in training keeps what backward needs (see [`Saved`]), with
    /// a copy of `x` made in the same pass when `copy_input`, else an empty input for the
    /// caller to fill with `x` itself.
    fn normalise(
        &mut self,
        ctx: &mut Ctx<'_>,
        x: &Tensor,
        train: bool,
        copy_input: bool,
    ) -> Result<Tensor, NnError> {
        if x.shape.len() != self.in_shape.len() + 1 || x.shape[1..] != self.in_shape[..] {
            return Err(self.bad_inputs(&[x]));
        }
        let b = x.batch();
        let (c, hw) = (self.c, self.hw);
        let count = (b * hw) as f64;
        if train && b * hw < 2 {
            return Err(NnError::shape(
                &self.name,
                "training-mode batch norm needs more than one value per channel",
            ));
        }
        ctx.timed(Category::Other, |_| {
            let (mean, inv_std): (Vec<f32>, Vec<f32>) = if train {
                // Sum and sum of squares in one pass, shifted by the channel's first value so
                // that a mean far from zero does not cancel the variance away:
                // var = E[(x - s)^2] - (E[x - s])^2, in f64.
                let shift: Vec<f64> = (0..c).map(|ch| x.data[ch * hw] as f64).collect();
                let sums = self.channel_sums(b, |ch, base, s| {
                    plane_shifted_sums(&x.data[base..base + hw], shift[ch], s)
                });
                let mean64: Vec<f64> = sums
                    .iter()
                    .zip(&shift)
                    .map(|((s, _), sh)| sh + s / count)
                    .collect();
                let var: Vec<f64> = sums
                    .iter()
                    .map(|(s, sq)| {
                        let m = s / count;
                        (sq / count - m * m).max(0.0)
                    })
                    .collect();
                // Running statistics (unbiased variance, as PyTorch).
                let m = match &mut self.recompute {
                    // Weighted by examples, as SWA's bn_update (momentum b / (n + b)): a short
                    // last batch counts for what it holds.
                    Some(n) => {
                        *n += b as u64;
                        b as f64 / *n as f64
                    }
                    None => self.momentum as f64,
                };
                let unbias = count / (count - 1.0);
                for ch in 0..c {
                    self.running_mean[ch] =
                        ((1.0 - m) * self.running_mean[ch] as f64 + m * mean64[ch]) as f32;
                    self.running_var[ch] =
                        ((1.0 - m) * self.running_var[ch] as f64 + m * var[ch] * unbias) as f32;
                }
                (
                    mean64.iter().map(|&v| v as f32).collect(),
                    var.iter()
                        .map(|&v| (1.0 / (v + self.eps as f64).sqrt()) as f32)
                        .collect(),
                )
            } else {
                (
                    self.running_mean.clone(),
                    self.running_var
                        .iter()
                        .map(|&v| (1.0 / (v as f64 + self.eps as f64).sqrt()) as f32)
                        .collect(),
                )
            };
            let (gamma, beta) = (&self.gamma.value, &self.beta.value);
            // Every plane is written whole by `plane_normalise` (and copied whole).
            let mut y = Fill::<f32>::new(x.len());
            let copy = train && copy_input;
            let mut kept = Fill::<f32>::new(if copy { x.len() } else { 0 });
            let relu = self.relu;
            let work = |i: usize, yo: &mut [MaybeUninit<f32>]| {
                let ch = i % c;
                let consts = (mean[ch], inv_std[ch], gamma[ch], beta[ch]);
                let xp = &x.data[i * hw..][..hw];
                plane_normalise(xp, yo, consts, relu);
                xp
            };
            let planes = y.slots().par_chunks_mut(hw).enumerate();
            if copy {
                planes
                    .zip(kept.slots().par_chunks_mut(hw))
                    .for_each(|((i, yo), ko)| {
                        for (k, &v) in ko.iter_mut().zip(work(i, yo)) {
                            k.write(v);
                        }
                    });
            } else {
                planes.for_each(|(i, yo)| {
                    work(i, yo);
                });
            }
            self.saved = train.then(|| Saved {
                // SAFETY: every plane was copied whole when `copy`, and `kept` is empty else.
                input: unsafe { kept.assume_init() },
                mean,
                inv_std,
                batch: b,
            });
            // SAFETY: as above.
            Tensor::new(unsafe { y.assume_init() }, x.shape.clone())
        })
    }

    fn bad_inputs(&self, inputs: &[&Tensor]) -> NnError {
        NnError::shape(
            &self.name,
            format!(
                "expects one input of example shape {:?}, got {:?}",
                self.in_shape,
                inputs.iter().map(|t| &t.shape).collect::<Vec<_>>()
            ),
        )
    }

    /// Per channel, `plane(ch, base, sums)` over the channel's planes in batch order (`base`
    /// is the plane's offset), so the same bits at any thread count. The tasks take blocks of
    /// channels and walk the batch example by example, reading each example's planes of the
    /// block in one run: one task per channel read its planes a whole example apart, which
    /// the hardware prefetchers did not follow.
    fn channel_sums(
        &self,
        batch: usize,
        plane: impl Fn(usize, usize, &mut LaneSums) + Sync,
    ) -> Vec<(f64, f64)> {
        let (c, hw) = (self.c, self.hw);
        let block = c.div_ceil(2 * rayon::current_num_threads()).max(1);
        let mut sums = vec![LaneSums::default(); c];
        sums.par_chunks_mut(block).enumerate().for_each(|(blk, s)| {
            let c0 = blk * block;
            for j in 0..batch {
                for (dc, s) in s.iter_mut().enumerate() {
                    plane(c0 + dc, (j * c + c0 + dc) * hw, s);
                }
            }
        });
        sums.iter().map(LaneSums::total).collect()
    }
}

impl Layer for BatchNorm2d {
    fn name(&self) -> &str {
        &self.name
    }
    fn describe(&self) -> String {
        format!(
            "batchnorm {} eps={} momentum={}{}",
            self.c,
            self.eps,
            self.momentum,
            if self.relu { " +relu" } else { "" }
        )
    }
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>, NnError> {
        match inputs {
            [s] if *s == self.in_shape.as_slice() => Ok(self.in_shape.clone()),
            _ => Err(NnError::shape(
                &self.name,
                format!("unexpected inputs {inputs:?}"),
            )),
        }
    }
    fn forward(
        &mut self,
        ctx: &mut Ctx<'_>,
        inputs: &[&Tensor],
        train: bool,
    ) -> Result<Tensor, NnError> {
        let x = match inputs {
            [x] => *x,
            _ => return Err(self.bad_inputs(inputs)),
        };
        self.normalise(ctx, x, train, true)
    }
    /// Keeps the handed-over input itself for backward, not a copy (see [`Saved`]).
    fn forward_owned(
        &mut self,
        ctx: &mut Ctx<'_>,
        x: Tensor,
        train: bool,
    ) -> Result<Tensor, NnError> {
        let y = self.normalise(ctx, &x, train, false)?;
        if let Some(saved) = &mut self.saved {
            saved.input = x.data;
        }
        Ok(y)
    }
    fn backward(&mut self, ctx: &mut Ctx<'_>, dy: Tensor) -> Result<Vec<Tensor>, NnError> {
        Ok(vec![self.input_grad(ctx, &dy, None)?])
    }
    fn backward_onto(
        &mut self,
        ctx: &mut Ctx<'_>,
        dy: Tensor,
        acc: Tensor,
    ) -> Result<Tensor, NnError> {
        self.input_grad(ctx, &dy, Some(acc))
    }
    fn params(&self) -> Vec<&Param> {
        vec![&self.gamma, &self.beta]
    }
    fn params_mut(&mut self) -> Vec<&mut Param> {
        vec![&mut self.gamma, &mut self.beta]
    }
    fn buffers(&self) -> Vec<(String, &Vec<f32>)> {
        vec![
            (format!("{}.running_mean", self.name), &self.running_mean),
            (format!("{}.running_var", self.name), &self.running_var),
        ]
    }
    fn buffers_mut(&mut self) -> Vec<(String, &mut Vec<f32>)> {
        vec![
            (
                format!("{}.running_mean", self.name),
                &mut self.running_mean,
            ),
            (format!("{}.running_var", self.name), &mut self.running_var),
        ]
    }
    fn saved_bytes(&self) -> usize {
        self.saved
            .as_ref()
            .map_or(0, |s| 4 * (s.input.len() + s.mean.len() + s.inv_std.len()))
    }
    fn clear_saved(&mut self) {
        self.saved = None;
    }
    fn absorb_relu(&mut self) -> bool {
        self.relu = true;
        true
    }
    fn begin_stats_recompute(&mut self) {
        self.running_mean.fill(0.0);
        self.running_var.fill(0.0);
        self.recompute = Some(0);
    }
    fn end_stats_recompute(&mut self) {
        self.recompute = None;
    }
}
