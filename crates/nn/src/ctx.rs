//! What a layer needs besides its inputs: the GEMM backend, the precision plan, the random
//! stream identity (seed, step) and an optional profiler.

use lowprec_formats::rng::stream_id;
use lowprec_formats::StreamKey;
use lowprec_kernels::GemmBackend;
use std::borrow::Cow;
use std::time::{Duration, Instant};

use crate::{Precision, PrecisionPlan};

/// Where time goes inside a layer (the split of 002's Figs. 6 and 7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    Gemm,
    Quantize,
    Im2col,
    Other,
}

impl Category {
    pub const ALL: [Category; 4] = [
        Category::Gemm,
        Category::Quantize,
        Category::Im2col,
        Category::Other,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Category::Gemm => "gemm",
            Category::Quantize => "quantize",
            Category::Im2col => "im2col/col2im",
            Category::Other => "other",
        }
    }
}

/// Accumulated times per (layer, pass, category).
#[derive(Clone, Debug, Default)]
pub struct Profile {
    /// `(layer index, backward?, category) -> total time`.
    pub times: std::collections::BTreeMap<(usize, bool, Category), Duration>,
}

/// Kinds of random streams a layer draws from.
#[derive(Clone, Copy, Debug)]
#[repr(u64)]
pub enum StreamKind {
    Acts = 1,
    Errors = 2,
    Weights = 3,
    Dropout = 4,
    Init = 5,
    Grads = 6,
    Momentum = 7,
    Master = 8,
}

pub struct Ctx<'a> {
    pub backend: &'a dyn GemmBackend,
    /// The formats of every layer (borrowed, or a uniform plan of one policy).
    pub plan: Cow<'a, PrecisionPlan>,
    pub seed: u64,
    /// Training step (iteration) number: part of every random stream's identity.
    pub step: u64,
    pub profile: Option<Profile>,
    /// Index of the layer running now (set by the model).
    pub layer_index: usize,
    pub backward: bool,
    /// Whether the running layer's input gradient is needed (false for a layer fed by the
    /// network input: its dX GEMM is skipped).
    pub need_input_grad: bool,
}

impl<'a> Ctx<'a> {
    /// Every layer in `policy` (a uniform plan).
    pub fn new(backend: &'a dyn GemmBackend, policy: &Precision, seed: u64) -> Self {
        Self::make(
            backend,
            Cow::Owned(PrecisionPlan::uniform(policy.clone(), 0)),
            seed,
        )
    }

    /// Each layer in its entry of `plan`.
    pub fn with_plan(backend: &'a dyn GemmBackend, plan: &'a PrecisionPlan, seed: u64) -> Self {
        Self::make(backend, Cow::Borrowed(plan), seed)
    }

    fn make(backend: &'a dyn GemmBackend, plan: Cow<'a, PrecisionPlan>, seed: u64) -> Self {
        Ctx {
            backend,
            plan,
            seed,
            step: 0,
            profile: None,
            layer_index: 0,
            backward: false,
            need_input_grad: true,
        }
    }

    /// The policy of the layer running now ([`Ctx::layer_index`]).
    pub fn layer_policy(&self) -> &Precision {
        self.plan.layer(self.layer_index)
    }

    /// The stochastic-rounding key of tensor `kind` of layer `layer_id` at the current step.
    pub fn key(&self, layer_id: u64, kind: StreamKind) -> StreamKey {
        StreamKey::new(self.seed, stream_id(&[layer_id, kind as u64, self.step]))
    }

    /// The key of the weights of layer `layer_id` at weight `version`: keyed by the version,
    /// not the step, so re-quantising unchanged weights (evaluation, a resumed run) gives the
    /// same bits.
    pub fn weight_key(&self, layer_id: u64, version: u64) -> StreamKey {
        StreamKey::new(
            self.seed,
            stream_id(&[layer_id, StreamKind::Weights as u64, version]),
        )
    }

    /// Charges `wall`, the elapsed time of a parallel section, to the current layer's categories
    /// in proportion to `busy`, the time its tasks spent in each (summed over threads), so that
    /// the categories of a layer still add up to its wall time.
    pub fn charge_parallel(&mut self, wall: Duration, busy: &[(Category, Duration)]) {
        let total: f64 = busy.iter().map(|(_, d)| d.as_secs_f64()).sum();
        let (layer, backward) = (self.layer_index, self.backward);
        if let Some(p) = self.profile.as_mut() {
            for &(cat, d) in busy {
                let share = if total > 0.0 {
                    d.as_secs_f64() / total
                } else {
                    1.0 / busy.len() as f64
                };
                *p.times.entry((layer, backward, cat)).or_default() += wall.mul_f64(share);
            }
        }
    }

    /// Runs `f`, charging its time to `cat` of the current layer when profiling.
    pub fn timed<R>(&mut self, cat: Category, f: impl FnOnce(&mut Self) -> R) -> R {
        if self.profile.is_none() {
            return f(self);
        }
        let t0 = Instant::now();
        let r = f(self);
        let dt = t0.elapsed();
        let key = (self.layer_index, self.backward, cat);
        if let Some(p) = self.profile.as_mut() {
            *p.times.entry(key).or_default() += dt;
        }
        r
    }
}
