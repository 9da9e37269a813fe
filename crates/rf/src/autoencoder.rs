//! The auto-encoder anomaly detector of 002 Fig. 8, trained in low precision.
//!
//! * **Network**: fully connected `dim -> 16 -> 8 -> 16 -> dim` (for the default 32-real
//!   windows: 32-16-8-16-32) with ReLU after the first three layers and a linear output,
//!   each layer with a bias (see [`autoencoder_spec`]); mean-squared-error loss against the
//!   input window itself.
//! * **Training**: one *iteration* is one SGD step (momentum, optional weight decay) on a
//!   minibatch of the training batch; by default the minibatch is the whole batch of 1000
//!   windows, as in 002 ("iterating low-precision SGD over a batch of 1000 inputs"). The
//!   learning rate is constant, `lr`, until `swa_start`; from there it is `swa_lr` and the
//!   weights are averaged after every iteration (SWA); the average is the model that scores.
//!   Precision policies are the workspace's (`fp32`, `bfp8`, `swalp`, see
//!   [`lowprec_nn::Precision`]): every GEMM goes through a [`GemmBackend`], so the same
//!   training runs on the CPU kernels or on the FPGA simulator, with identical bits.
//! * **Score** of a window: its reconstruction error, the mean over its `dim` reals of
//!   `(output - input)^2` (the per-example MSE loss), computed by the scoring model.
//! * **Threshold rule**: a window is anomalous when its score is strictly greater than the
//!   `threshold` rule (default the 99th percentile, see [`crate::metrics`]) applied to the
//!   scores of the training batch under the scoring model, recomputed whenever the scoring
//!   model changes.
//!
//! Randomness: weights are initialised from `seed`; stochastic rounding in training step `s`
//! is keyed by `(seed, layer, tensor kind, s)`, in scoring batch `b` by `(seed, layer, kind,
//! SCORE_STEP_BASE + b)`, so results depend on the seed and the batching only, never on the
//! thread count.

use lowprec_kernels::GemmBackend;
use lowprec_nn::loss::Target;
use lowprec_nn::spec::LayerEntry;
use lowprec_nn::{Ctx, LayerSpec, Loss, LossKind, Model, NetworkSpec, Precision, Tensor};
use lowprec_train::optim::{Sgd, Swa};
use lowprec_train::step::forward_backward;

use crate::metrics::{select_threshold, ThresholdRule};
use crate::rng::CounterRng;
use crate::RfError;

/// Scoring batches key their stochastic rounding with steps from here on, far above any
/// training step, so scoring never reuses a training step's random stream.
pub const SCORE_STEP_BASE: u64 = 1 << 40;

/// The auto-encoder's network description: `dim -> hidden[0] -> ... -> dim`, ReLU after every
/// hidden layer, linear output, MSE loss.
pub fn autoencoder_spec(dim: usize, hidden: &[usize], bias: bool) -> NetworkSpec {
    let mut layers = Vec::new();
    for (i, &h) in hidden.iter().enumerate() {
        layers.push(LayerEntry {
            name: Some(format!("fc{}", i + 1)),
            from: None,
            kind: LayerSpec::Linear { out: h, bias },
        });
        layers.push(LayerEntry {
            name: Some(format!("relu{}", i + 1)),
            from: None,
            kind: LayerSpec::Relu,
        });
    }
    layers.push(LayerEntry {
        name: Some(format!("fc{}", hidden.len() + 1)),
        from: None,
        kind: LayerSpec::Linear { out: dim, bias },
    });
    NetworkSpec {
        input: vec![dim],
        loss: LossKind::Mse,
        layers,
    }
}

/// Re-initialises the weights for a ReLU network (He uniform, `bound = sqrt(6 / fan_in)`,
/// so activations keep their scale through the layers; PyTorch's default bound
/// `1 / sqrt(fan_in)` shrinks them six-fold per ReLU layer and this narrow four-layer network
/// then barely leaves its starting plateau in 200 full-batch iterations), the output layer
/// LeCun uniform scaled by [`OUTPUT_INIT_SCALE`] (`0.1 sqrt(3 / fan_in)`), biases zero. Draws come from the counter-based
/// generator keyed by `(seed, parameter index, element)`.
fn he_init(model: &mut Model, seed: u64) {
    let mut params = model.params_mut();
    let last_weight = params.iter().rposition(|p| p.shape.len() == 2);
    for (pi, p) in params.iter_mut().enumerate() {
        if p.shape.len() != 2 {
            p.value.iter_mut().for_each(|v| *v = 0.0);
            continue;
        }
        let fan_in = p.shape[1].max(1) as f64;
        let bound = if Some(pi) == last_weight {
            OUTPUT_INIT_SCALE * (3.0 / fan_in).sqrt()
        } else {
            (6.0 / fan_in).sqrt()
        };
        let rng = CounterRng::new(seed, INIT_STREAM + pi as u64);
        for (k, v) in p.value.iter_mut().enumerate() {
            *v = ((rng.uniform(k as u64) * 2.0 - 1.0) * bound) as f32;
        }
        p.version += 1;
    }
}

/// The output layer starts at a tenth of LeCun's bound. At full scale the first reconstruction
/// is noise larger than the input (loss about 1.2 on unit-RMS windows), and SGD's quickest way
/// down is to shrink the output weights towards zero, which also silences the gradient to the
/// layers below: the network sits on the `output = 0` saddle (loss near the input's variance)
/// for a number of iterations that depends on the seed and the data. With 200 iterations that
/// left 2 of 10 recordings of `rf experiment` at F1 0.07 and 0.22; starting small, the hidden
/// features are informative from the first step and every seed trains (see the README).
const OUTPUT_INIT_SCALE: f64 = 0.1;

/// Stream of the weight initialisation in [`CounterRng`] (one per parameter tensor above it).
const INIT_STREAM: u64 = 0xAE00_0000;

/// Hyper-parameters of the detector; the defaults are the recipe used for 002's Fig. 9.
#[derive(Clone, Debug, PartialEq)]
pub struct AeConfig {
    /// Reals per window (`2 x` complex samples).
    pub dim: usize,
    /// Hidden widths (002 Fig. 8: 16, 8, 16).
    pub hidden: Vec<usize>,
    pub bias: bool,
    pub precision: Precision,
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    /// Windows per SGD step; 0 means the whole training batch.
    pub minibatch: usize,
    /// Iterations of the initial training.
    pub iterations: u64,
    /// First iteration (0-based) of the SWA phase; `None`: no SWA, the SGD weights score.
    pub swa_start: Option<u64>,
    /// Constant learning rate of the SWA phase.
    pub swa_lr: f64,
    pub threshold: ThresholdRule,
    pub seed: u64,
}

impl Default for AeConfig {
    fn default() -> Self {
        AeConfig {
            dim: 32,
            hidden: vec![16, 8, 16],
            bias: true,
            precision: Precision::bfp8(),
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.0,
            minibatch: 0,
            iterations: 200,
            swa_start: Some(150),
            swa_lr: 0.05,
            threshold: ThresholdRule::Percentile(99.0),
            seed: 0,
        }
    }
}

impl AeConfig {
    pub fn validate(&self) -> Result<(), RfError> {
        let bad = |m: String| Err(RfError::InvalidArgument(m));
        if self.dim == 0 || self.hidden.contains(&0) {
            return bad(format!(
                "auto-encoder widths must be positive (dim {}, hidden {:?})",
                self.dim, self.hidden
            ));
        }
        for (name, v) in [
            ("learning rate", self.lr),
            ("SWA learning rate", self.swa_lr),
            ("weight decay", self.weight_decay),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(format!("{name} must be finite and >= 0, got {v}"));
            }
        }
        if !(self.momentum.is_finite() && (0.0..1.0).contains(&self.momentum)) {
            return bad(format!("momentum must be in [0, 1), got {}", self.momentum));
        }
        self.threshold.validate()
    }

    /// Learning rate of iteration `it` of a training phase.
    pub fn lr_at(&self, it: u64) -> f64 {
        match self.swa_start {
            Some(s) if it >= s => self.swa_lr,
            _ => self.lr,
        }
    }

    /// Whether the weights after iteration `it` enter the SWA average.
    pub fn averages_at(&self, it: u64) -> bool {
        matches!(self.swa_start, Some(s) if it >= s)
    }
}

/// Parses a precision policy given to `option` (`fp32`, `bfp8`, `swalp`, with overrides).
pub fn parse_precision(option: &str, s: &str) -> Result<Precision, RfError> {
    s.parse().map_err(|e: lowprec_nn::NnError| {
        RfError::bad_option(option, format!("{s:?}"), e.to_string())
    })
}

/// `--swa-start` as given: `None` is 3/4 of `iterations`, `none` disables SWA, else the first
/// SWA iteration.
pub fn parse_swa_start(value: Option<&str>, iterations: u64) -> Result<Option<u64>, RfError> {
    match value {
        None => Ok(Some(iterations * 3 / 4)),
        Some("none") => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            RfError::bad_option(
                "--swa-start",
                format!("{v:?}"),
                "expected an iteration or none",
            )
        }),
    }
}

/// The model and training options of `rf detect` and `rf experiment`, as given;
/// [`Self::ae_config`] checks them. The defaults are the commands'.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelOptions {
    pub iterations: u64,
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    /// See [`parse_swa_start`].
    pub swa_start: Option<String>,
    pub swa_lr: f64,
    /// Windows per SGD step (0: the whole batch).
    pub minibatch: usize,
    /// Threshold rule ([`ThresholdRule`]'s syntax).
    pub threshold: String,
    /// Seed of the weights and of stochastic rounding.
    pub seed: u64,
}

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions {
            iterations: 200,
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.0,
            swa_start: None,
            swa_lr: 0.05,
            minibatch: 0,
            threshold: "p99".into(),
            seed: 0,
        }
    }
}

impl ModelOptions {
    /// The checked configuration of a `dim`-input auto-encoder at `precision`.
    pub fn ae_config(&self, dim: usize, precision: Precision) -> Result<AeConfig, RfError> {
        let cfg = AeConfig {
            dim,
            precision,
            lr: self.lr,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            minibatch: self.minibatch,
            iterations: self.iterations,
            swa_start: parse_swa_start(self.swa_start.as_deref(), self.iterations)?,
            swa_lr: self.swa_lr,
            threshold: self.threshold.parse()?,
            seed: self.seed,
            ..AeConfig::default()
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// The trainable auto-encoder with its optimiser state, SWA average and scoring model.
pub struct Autoencoder {
    pub cfg: AeConfig,
    /// The SGD iterate.
    train_model: Model,
    /// The model that scores: a copy of the SWA average (or of the SGD weights).
    score_model: Model,
    sgd: Sgd,
    swa: Swa,
    loss: Loss,
    /// SGD steps taken so far (keys the stochastic rounding of training).
    step: u64,
    /// Scoring batches run so far (keys the stochastic rounding of scoring).
    score_batches: u64,
    /// Times weights were copied into the scoring model (its weight version).
    published: u64,
    threshold: Option<f32>,
}

impl std::fmt::Debug for Autoencoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Autoencoder")
            .field("cfg", &self.cfg)
            .field("step", &self.step)
            .field("threshold", &self.threshold)
            .finish()
    }
}

impl Autoencoder {
    pub fn new(cfg: AeConfig) -> Result<Autoencoder, RfError> {
        cfg.validate()?;
        let spec = autoencoder_spec(cfg.dim, &cfg.hidden, cfg.bias);
        let mut train_model = Model::build(&spec, cfg.seed)?;
        he_init(&mut train_model, cfg.seed);
        let mut score_model = Model::build(&spec, cfg.seed)?;
        he_init(&mut score_model, cfg.seed);
        let sgd = Sgd::new(cfg.momentum, cfg.weight_decay, &train_model.params());
        Ok(Autoencoder {
            cfg,
            train_model,
            score_model,
            sgd,
            swa: Swa::new(),
            loss: Loss::new(LossKind::Mse),
            step: 0,
            score_batches: 0,
            published: 0,
            threshold: None,
        })
    }

    /// SGD steps taken so far.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// The current detection threshold (after [`Autoencoder::fit_threshold`]).
    pub fn threshold(&self) -> Option<f32> {
        self.threshold
    }

    /// Multiply-accumulates of one window's forward pass.
    pub fn macs_per_window(&self) -> u64 {
        self.score_model.macs_per_example()
    }

    /// The network listing.
    pub fn summary(&self) -> String {
        self.train_model.summary()
    }

    fn check_batch(&self, what: &str, inputs: &[f32]) -> Result<usize, RfError> {
        let d = self.cfg.dim;
        if inputs.is_empty() || !inputs.len().is_multiple_of(d) {
            return Err(RfError::InvalidArgument(format!(
                "{what}: {} values is not a positive whole number of {d}-real windows",
                inputs.len()
            )));
        }
        // The all-finite fold vectorises; the position is only looked for on failure.
        let all_finite = inputs.iter().fold(true, |ok, v| ok & v.is_finite());
        if let Some(k) = (!all_finite)
            .then(|| inputs.iter().position(|v| !v.is_finite()))
            .flatten()
        {
            return Err(RfError::InvalidArgument(format!(
                "{what}: value {} (window {}, element {}) is {}",
                k,
                k / d,
                k % d,
                inputs[k]
            )));
        }
        Ok(inputs.len() / d)
    }

    /// One SGD step with learning rate `lr` on minibatch `it` of `batch` (row-major windows),
    /// adding the new weights to the SWA average when `average`. Returns the minibatch loss
    /// before the step. With `profile`, adds the time of each layer's GEMMs, quantisation and
    /// other work to it. Does not touch the scoring model: call [`Autoencoder::publish`].
    pub fn train_iteration(
        &mut self,
        backend: &dyn GemmBackend,
        batch: &[f32],
        it: u64,
        lr: f64,
        average: bool,
        ctx_profile: Option<&mut lowprec_nn::Profile>,
    ) -> Result<f64, RfError> {
        let n = self.check_batch("training batch", batch)?;
        let d = self.cfg.dim;
        let mb = if self.cfg.minibatch == 0 {
            n
        } else {
            self.cfg.minibatch.min(n)
        };
        // Minibatches are consecutive slices, cycling through the batch.
        let first = (it as usize * mb) % n;
        let mut x = Vec::with_capacity(mb * d);
        for r in 0..mb {
            let w = (first + r) % n;
            x.extend_from_slice(&batch[w * d..(w + 1) * d]);
        }
        let mut ctx = Ctx::new(backend, &self.cfg.precision, self.cfg.seed);
        ctx.step = self.step;
        if ctx_profile.is_some() {
            ctx.profile = Some(Default::default());
        }
        let input = Tensor::new(x.clone(), vec![mb, d])?;
        let lo = forward_backward(
            &mut self.train_model,
            &mut ctx,
            &self.loss,
            input,
            Target::Values(&x),
        )?;
        let mut params = self.train_model.params_mut();
        self.sgd.step(
            &mut params,
            lr as f32,
            &self.cfg.precision,
            self.cfg.seed,
            self.step,
        )?;
        self.step += 1;
        if average {
            self.swa.update(&self.train_model.params());
        }
        if let (Some(dst), Some(p)) = (ctx_profile, ctx.profile.take()) {
            for (k, v) in p.times {
                *dst.times.entry(k).or_default() += v;
            }
        }
        Ok(lo.loss)
    }

    /// Starts a new SWA average (the next training phase averages afresh).
    pub fn reset_average(&mut self) {
        self.swa = Swa::new();
    }

    /// Copies the model that scores into the scoring network: the SWA average when one has
    /// been taken, else the SGD weights.
    pub fn publish(&mut self) {
        self.published += 1;
        let version = self.published;
        let src: Vec<Vec<f32>> = if self.swa.n > 0 {
            self.swa.avg.clone()
        } else {
            self.train_model
                .params()
                .iter()
                .map(|p| p.value.clone())
                .collect()
        };
        for (p, v) in self.score_model.params_mut().into_iter().zip(src) {
            p.value = v;
            // A new version makes the layers re-quantise the weights (Q_w per update).
            p.version = version;
        }
    }

    /// Reconstruction errors of `windows` (row-major) under the scoring model, in one batch.
    pub fn scores(
        &mut self,
        backend: &dyn GemmBackend,
        windows: &[f32],
    ) -> Result<Vec<f32>, RfError> {
        let n = self.check_batch("windows to score", windows)?;
        let mut ctx = Ctx::new(backend, &self.cfg.precision, self.cfg.seed);
        ctx.step = SCORE_STEP_BASE + self.score_batches;
        self.score_batches += 1;
        let input = Tensor::new(windows.to_vec(), vec![n, self.cfg.dim])?;
        let out = self.score_model.forward(&mut ctx, input, false)?;
        // The per-example MSE loss, without the gradient the loss module would also build.
        let d = self.cfg.dim;
        let scores: Vec<f32> = out
            .data
            .chunks_exact(d)
            .zip(windows.chunks_exact(d))
            .map(|(o, x)| {
                let s: f64 = o
                    .iter()
                    .zip(x)
                    .map(|(&a, &b)| {
                        let e = f64::from(a - b);
                        e * e
                    })
                    .sum();
                (s / d as f64) as f32
            })
            .collect();
        if let Some(k) = scores.iter().position(|s| !s.is_finite()) {
            return Err(RfError::InvalidArgument(format!(
                "reconstruction error of window {k} is {} (diverged model?)",
                scores[k]
            )));
        }
        Ok(scores)
    }

    /// Sets the threshold directly (a calibrated one).
    pub fn set_threshold(&mut self, threshold: f32) {
        self.threshold = Some(threshold);
    }

    /// Sets the threshold from the scores of `normal` windows (the training batch) under the
    /// scoring model, by the configured rule. Returns it.
    pub fn fit_threshold(
        &mut self,
        backend: &dyn GemmBackend,
        normal: &[f32],
    ) -> Result<f32, RfError> {
        let s = self.scores(backend, normal)?;
        let t = select_threshold(&s, self.cfg.threshold)?;
        self.threshold = Some(t);
        Ok(t)
    }

    /// The initial training: `cfg.iterations` iterations on `batch` with the schedule of
    /// [`AeConfig`] (constant `lr`, then SWA at `swa_lr`), then publishes the scoring model and
    /// fits the threshold on `batch`. Returns the threshold.
    pub fn train(&mut self, backend: &dyn GemmBackend, batch: &[f32]) -> Result<f32, RfError> {
        self.reset_average();
        for it in 0..self.cfg.iterations {
            let (lr, avg) = (self.cfg.lr_at(it), self.cfg.averages_at(it));
            self.train_iteration(backend, batch, it, lr, avg, None)?;
        }
        self.publish();
        self.fit_threshold(backend, batch)
    }

    /// A refresh: `iterations` more iterations on `batch` continuing from the SGD weights, at
    /// the SWA learning rate and averaged afresh (at `lr` and not averaged without SWA), then
    /// publish and refit the threshold on `batch`. Returns the threshold.
    pub fn refresh(
        &mut self,
        backend: &dyn GemmBackend,
        batch: &[f32],
        iterations: u64,
    ) -> Result<f32, RfError> {
        self.reset_average();
        let swa = self.cfg.swa_start.is_some();
        let lr = if swa { self.cfg.swa_lr } else { self.cfg.lr };
        for it in 0..iterations {
            self.train_iteration(backend, batch, it, lr, swa, None)?;
        }
        self.publish();
        self.fit_threshold(backend, batch)
    }
}
