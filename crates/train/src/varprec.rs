//! Variable precision over a run: precision schedules (per tensor kind, per layer, per phase)
//! and FAST's adaptive precision-raising rule (paper 004), resolved into the trainer's
//! [`PrecisionPlan`] before every step.
//!
//! A schedule entry (`[[precision_schedule]]` in the training TOML, `--schedule` on the
//! command line as an inline table) names
//! - kinds: `kinds = ["weights", "acts", "errors", "grads", "momentum", "master"]` (default
//!   weights, acts and errors);
//! - layers: `layers = ["fc1", ...]` by name, `index = [first, end)` over the GEMM layers (conv
//!   and linear, 0-based, in network order), or `depth = [from, to)` as a fraction of them; none
//!   of these: every GEMM layer;
//! - a phase: `iterations = [first, end)` or `epochs = [first, end)` (none: the whole run);
//! - what to use: `width = w` (the mantissa width of the policy's BFP format for that kind,
//!   an even 2..=16) or `format = "..."` (any number format).
//!
//! Entries that touch the same layer and kind in overlapping phases are rejected, so the
//! result never depends on their order. The plan at step `s` of epoch `e` is a pure function of
//! `(s, e)` and, for FAST, of the widths it has decided so far (kept in the checkpoint), so a
//! run resumed across a change is bit-identical to one that never stopped.
//!
//! FAST ([`FastConfig`]): every `every` iterations, for each GEMM layer `l` and each adaptive
//! kind, the signal `r(X)` of that tensor (see [`relative_change`]) is compared with
//! `eps(l, i) = alpha - beta * i / I - beta * l / L`; when `r > eps` the kind's mantissa width
//! rises by 2 bits (up to `max_width`), from the next step on. Widths never fall. Every
//! evaluation is logged as a [`Decision`].

use lowprec_formats::{fake_quantize, BfpFormat, NumberFormat, Rounding, StreamKey};
use lowprec_nn::spec::LayerSpec;
use lowprec_nn::{Model, Precision, PrecisionPlan, TensorKind};
use serde::{Deserialize, Serialize};

use crate::TrainError;

/// The fixed g16m4 baseline (paper 004's strongest): 4-bit mantissas (sign included) in
/// groups of 16 along the last axis with a 4-bit shared exponent, for weights, activations and
/// errors (gradients, momentum and the update as in bfp8).
pub const G16M4: &str = "bfp8,weights=bfp4:tile16:e4,acts=bfp4:tile16:e4,errors=bfp4:tile16:e4";

/// g16m4's groups of 16 with an 8-bit shared exponent (`g16e8`): the 4-bit exponent's range
/// (2^-8 .. 2^7) flushes small back-propagated errors to zero, 8 bits (2^-128 .. 2^127) do not.
pub const G16E8: &str = "bfp8,weights=bfp4:tile16,acts=bfp4:tile16,errors=bfp4:tile16";

/// One entry of a precision schedule (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleEntry {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<TensorKind>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<[usize; 2]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<[f64; 2]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterations: Option<[u64; 2]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<[usize; 2]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<NumberFormat>,
}

/// Checks a mantissa width: even, 2..=16.
fn check_width(w: u32) -> Result<(), String> {
    if w == 0 || !w.is_multiple_of(2) || w > 16 {
        return Err(format!(
            "width {w} must be an even number of bits from 2 to 16"
        ));
    }
    Ok(())
}

impl ScheduleEntry {
    /// Parses an inline TOML table, e.g. `{ layers = ["fc1"], epochs = [0, 2], width = 4 }`.
    pub fn parse(text: &str) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct Wrap {
            e: ScheduleEntry,
        }
        toml::from_str::<Wrap>(&format!("e = {text}"))
            .map(|w| w.e)
            .map_err(|e| format!("`{text}`: {}", e.message()))
    }

    /// The checks that need no model.
    pub fn validate(&self) -> Result<(), String> {
        match (self.width, &self.format) {
            (Some(_), Some(_)) => return Err("give `width` or `format`, not both".into()),
            (None, None) => return Err("needs `width` or `format`".into()),
            (Some(w), None) => check_width(w)?,
            (None, Some(NumberFormat::Bfp(b))) => {
                check_width(b.wl).map_err(|e| format!("format {b}: mantissa {e}"))?
            }
            _ => {}
        }
        let sel = [
            !self.layers.is_empty(),
            self.index.is_some(),
            self.depth.is_some(),
        ];
        if sel.iter().filter(|&&s| s).count() > 1 {
            return Err("select layers by one of `layers`, `index` or `depth`".into());
        }
        if let Some([a, b]) = self.index {
            if a >= b {
                return Err(format!("index [{a}, {b}) is empty"));
            }
        }
        if let Some([a, b]) = self.depth {
            if !(0.0..=1.0).contains(&a) || !(0.0..=1.0).contains(&b) || a >= b {
                return Err(format!(
                    "depth [{a}, {b}) must be a non-empty range within [0, 1]"
                ));
            }
        }
        if self.iterations.is_some() && self.epochs.is_some() {
            return Err("give `iterations` or `epochs`, not both".into());
        }
        if let Some([a, b]) = self.iterations {
            if a >= b {
                return Err(format!("iterations [{a}, {b}) is empty"));
            }
        }
        if let Some([a, b]) = self.epochs {
            if a >= b {
                return Err(format!("epochs [{a}, {b}) is empty"));
            }
        }
        Ok(())
    }

    fn kinds(&self) -> Vec<TensorKind> {
        if self.kinds.is_empty() {
            vec![TensorKind::Weights, TensorKind::Acts, TensorKind::Errors]
        } else {
            self.kinds.clone()
        }
    }

    /// The iteration range `[first, end)` this entry is active in.
    fn steps(&self, per_epoch: u64) -> (u64, u64) {
        match (self.iterations, self.epochs) {
            (Some([a, b]), _) => (a, b),
            (None, Some([a, b])) => (a as u64 * per_epoch, b as u64 * per_epoch),
            (None, None) => (0, u64::MAX),
        }
    }
}

/// A conv or linear layer: where the GEMMs (and their precision) are.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GemmLayer {
    /// Node index in the model (the plan's layer index).
    pub node: usize,
    pub name: String,
    /// Forward GEMM per example: output features (rows of W), reduction length (columns of
    /// W) and output positions (1 for linear).
    pub out: usize,
    pub k: usize,
    pub positions: usize,
    /// Whether no input gradient is computed for the layer (it reads the network input,
    /// directly or through parameter-free layers such as a flatten): no dX GEMM.
    pub first: bool,
}

/// The GEMM layers of `model`, in network order.
pub fn gemm_layers(model: &Model) -> Vec<GemmLayer> {
    let mut v = Vec::new();
    for (i, (node, entry)) in model.nodes.iter().zip(&model.spec.layers).enumerate() {
        let in_shape = &model.shapes[node.inputs[0]];
        let out_shape = &model.shapes[i + 1];
        let (out, k, positions) = match &entry.kind {
            LayerSpec::Linear { out, .. } => (*out, in_shape.iter().product(), 1),
            LayerSpec::Conv { out, kernel, .. } => (
                *out,
                in_shape[0] * kernel * kernel,
                out_shape[1..].iter().product(),
            ),
            _ => continue,
        };
        v.push(GemmLayer {
            node: i,
            name: node.layer.name().to_string(),
            out,
            k,
            positions,
            first: !model.needs_input_grad(i),
        });
    }
    v
}

/// FAST's options (`[fast]` in the training TOML).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FastConfig {
    /// eps at the first iteration of the first layer.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// How far eps falls over the run, and over the depth.
    #[serde(default = "default_beta")]
    pub beta: f64,
    /// Iterations between evaluations of r (the first at iteration 0).
    #[serde(default = "default_every")]
    pub every: u64,
    /// The kinds that adapt (each decides on its own); the others keep the policy's format.
    #[serde(default = "default_fast_kinds")]
    pub kinds: Vec<TensorKind>,
    #[serde(default = "default_start")]
    pub start_width: u32,
    #[serde(default = "default_max")]
    pub max_width: u32,
}

fn default_alpha() -> f64 {
    0.5
}
fn default_beta() -> f64 {
    0.3
}
fn default_every() -> u64 {
    50
}
fn default_fast_kinds() -> Vec<TensorKind> {
    vec![TensorKind::Weights, TensorKind::Acts, TensorKind::Errors]
}
fn default_start() -> u32 {
    2
}
fn default_max() -> u32 {
    8
}

impl Default for FastConfig {
    fn default() -> Self {
        FastConfig {
            alpha: default_alpha(),
            beta: default_beta(),
            every: default_every(),
            kinds: default_fast_kinds(),
            start_width: default_start(),
            max_width: default_max(),
        }
    }
}

impl FastConfig {
    pub fn validate(&self) -> Result<(), String> {
        for (what, v) in [("fast.alpha", self.alpha), ("fast.beta", self.beta)] {
            if !v.is_finite() || v < 0.0 {
                return Err(format!("{what} = {v} must be finite and >= 0"));
            }
        }
        if self.every == 0 {
            return Err("fast.every must be >= 1 iteration".into());
        }
        check_width(self.start_width).map_err(|e| format!("fast.start_width: {e}"))?;
        check_width(self.max_width).map_err(|e| format!("fast.max_width: {e}"))?;
        if self.start_width > self.max_width || self.max_width > 8 {
            return Err(format!(
                "fast widths {}..{} must rise and stay within 8 bits (the int8 kernels)",
                self.start_width, self.max_width
            ));
        }
        if self.kinds.is_empty() {
            return Err("fast.kinds is empty".into());
        }
        for k in &self.kinds {
            if !matches!(
                k,
                TensorKind::Weights | TensorKind::Acts | TensorKind::Errors
            ) {
                return Err(format!(
                    "fast.kinds: {k} is not a GEMM operand (weights, acts, errors)"
                ));
            }
        }
        Ok(())
    }

    /// `eps(l, i)` for GEMM layer `l` of `layers` at iteration `i` of `total`.
    pub fn eps(&self, l: usize, layers: usize, i: u64, total: u64) -> f64 {
        self.alpha
            - self.beta * i as f64 / total.max(1) as f64
            - self.beta * l as f64 / layers.max(1) as f64
    }
}

/// One evaluation of the rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The first iteration that uses `width`.
    pub iteration: u64,
    pub layer: String,
    pub kind: TensorKind,
    pub r: f64,
    pub eps: f64,
    /// The width from `iteration` on (the same as before when `r <= eps`).
    pub width: u32,
}

/// The signal `r(X) = sum |BFP(X, w + 2) - BFP(X, w)| / sum |BFP(X, w)|` of a `rows x cols`
/// tensor in `fmt`'s block structure at mantissa width `w = fmt.wl` (round to nearest even,
/// so the signal is a function of X alone). At `w = 2` this is FAST's `r(X)`; the denominator
/// sums magnitudes (the paper writes `|sum_n BFP(X_n, 2)|`, which for zero-mean errors is near
/// zero and would make the signal meaningless).
pub fn relative_change(
    x: &[f32],
    rows: usize,
    cols: usize,
    fmt: &BfpFormat,
) -> Result<f64, TrainError> {
    let quant = |wl: u32| -> Result<Vec<f32>, TrainError> {
        let f = NumberFormat::Bfp(BfpFormat {
            wl,
            rounding: Rounding::NearestEven,
            ..*fmt
        });
        let mut out = vec![0f32; x.len()];
        fake_quantize(x, &[rows, cols], &f, StreamKey::new(0, 0), "r(X)", &mut out)
            .map_err(|e| TrainError::Config(format!("r(X): {e}")))?;
        Ok(out)
    };
    let (lo, hi) = (quant(fmt.wl)?, quant(fmt.wl + 2)?);
    let (mut num, mut den) = (0f64, 0f64);
    for (a, b) in lo.iter().zip(&hi) {
        num += (*b as f64 - *a as f64).abs();
        den += (*a as f64).abs();
    }
    Ok(if den > 0.0 {
        num / den
    } else if num > 0.0 {
        f64::INFINITY
    } else {
        0.0
    })
}

/// FAST's state: the width of every (GEMM layer, adaptive kind) and the decisions so far.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FastState {
    /// `widths[l][k]`: GEMM layer `l`, kind `cfg.kinds[k]`.
    pub widths: Vec<Vec<u32>>,
    pub log: Vec<Decision>,
}

/// What the trainer resolves its plan from: the base policy, the schedule and FAST.
pub struct PrecisionControl {
    pub base: Precision,
    pub gemm: Vec<GemmLayer>,
    schedule: Vec<(ScheduleEntry, Vec<usize>)>,
    pub per_epoch: u64,
    pub total: u64,
    pub fast: Option<(FastConfig, FastState)>,
    n_layers: usize,
    /// The GEMM-layer index of every node.
    node_gemm: Vec<Option<usize>>,
}

impl PrecisionControl {
    /// Checks `schedule` against `model` (names, ranges, formats, overlaps; errors name the
    /// entry as `precision_schedule[i]`) and sets FAST up.
    pub fn new(
        base: &Precision,
        model: &Model,
        schedule: &[ScheduleEntry],
        fast: Option<&FastConfig>,
        per_epoch: u64,
        epochs: usize,
    ) -> Result<Self, TrainError> {
        let gemm = gemm_layers(model);
        let nl = gemm.len();
        let mut resolved = Vec::new();
        for (ei, e) in schedule.iter().enumerate() {
            let bad = |m: String| TrainError::Config(format!("precision_schedule[{ei}]: {m}"));
            e.validate().map_err(bad)?;
            let layers: Vec<usize> = if !e.layers.is_empty() {
                e.layers
                    .iter()
                    .map(|n| {
                        gemm.iter().position(|g| g.name == *n).ok_or_else(|| {
                            let known: Vec<&str> = gemm.iter().map(|g| g.name.as_str()).collect();
                            bad(format!(
                                "unknown layer `{n}` (conv/linear layers: {})",
                                known.join(", ")
                            ))
                        })
                    })
                    .collect::<Result<_, _>>()?
            } else if let Some([a, b]) = e.index {
                if b > nl {
                    return Err(bad(format!(
                        "index [{a}, {b}) past the {nl} conv/linear layers"
                    )));
                }
                (a..b).collect()
            } else if let Some([a, b]) = e.depth {
                (0..nl)
                    .filter(|&l| {
                        let f = l as f64 / nl as f64;
                        f >= a && f < b
                    })
                    .collect()
            } else {
                (0..nl).collect()
            };
            if layers.is_empty() {
                return Err(bad("selects no layer".into()));
            }
            if let Some(w) = e.width {
                for k in e.kinds() {
                    if !matches!(base.get(k), NumberFormat::Bfp(_)) {
                        return Err(bad(format!(
                            "width {w} for {k}, but the policy's {k} format is {} (not BFP)",
                            base.get(k)
                        )));
                    }
                }
            }
            resolved.push((e.clone(), layers));
        }
        // overlaps: same layer and kind, intersecting phases
        for i in 0..resolved.len() {
            for j in i + 1..resolved.len() {
                let (ea, la) = &resolved[i];
                let (eb, lb) = &resolved[j];
                let (a0, a1) = ea.steps(per_epoch);
                let (b0, b1) = eb.steps(per_epoch);
                if a0 >= b1 || b0 >= a1 {
                    continue;
                }
                let ka = ea.kinds();
                let common_kind = eb.kinds().into_iter().find(|k| ka.contains(k));
                let common_layer = lb.iter().find(|l| la.contains(l));
                if let (Some(k), Some(&l)) = (common_kind, common_layer) {
                    return Err(TrainError::Config(format!(
                        "precision_schedule[{i}] and precision_schedule[{j}] overlap: both set {k} of layer `{}` in iterations [{}, {})",
                        gemm[l].name,
                        a0.max(b0),
                        a1.min(b1)
                    )));
                }
            }
        }
        let fast = match fast {
            Some(f) => {
                f.validate().map_err(TrainError::Config)?;
                for k in &f.kinds {
                    if !matches!(base.get(*k), NumberFormat::Bfp(_)) {
                        return Err(TrainError::Config(format!(
                            "fast: {k} adapts its BFP width, but the policy's {k} format is {}",
                            base.get(*k)
                        )));
                    }
                }
                let st = FastState {
                    widths: vec![vec![f.start_width; f.kinds.len()]; nl],
                    log: Vec::new(),
                };
                Some((f.clone(), st))
            }
            None => None,
        };
        let mut node_gemm = vec![None; model.num_layers()];
        for (l, g) in gemm.iter().enumerate() {
            node_gemm[g.node] = Some(l);
        }
        Ok(PrecisionControl {
            node_gemm,
            base: base.clone(),
            gemm,
            schedule: resolved,
            per_epoch,
            total: per_epoch * epochs as u64,
            fast,
            n_layers: model.num_layers(),
        })
    }

    /// Whether anything varies (otherwise the plan stays uniform in the base).
    pub fn is_static(&self) -> bool {
        self.schedule.is_empty() && self.fast.is_none()
    }

    /// The plan of iteration `step`.
    pub fn plan_at(&self, step: u64) -> PrecisionPlan {
        let mut plan = PrecisionPlan::uniform(self.base.clone(), self.n_layers);
        for (e, layers) in &self.schedule {
            let (a, b) = e.steps(self.per_epoch);
            if step < a || step >= b {
                continue;
            }
            for &l in layers {
                let node = self.gemm[l].node;
                for k in e.kinds() {
                    let f = match (e.width, &e.format) {
                        (_, Some(f)) => *f,
                        (Some(w), None) => with_width(self.base.get(k), w),
                        (None, None) => unreachable!("validated"),
                    };
                    plan.set(node, k, f);
                }
            }
        }
        if let Some((cfg, st)) = &self.fast {
            for (l, g) in self.gemm.iter().enumerate() {
                for (ki, &k) in cfg.kinds.iter().enumerate() {
                    let f = with_width(plan.layer(g.node).get(k), st.widths[l][ki]);
                    plan.set(g.node, k, f);
                }
            }
        }
        plan
    }

    /// Whether FAST evaluates its signal at iteration `step`.
    pub fn fast_evaluates(&self, step: u64) -> bool {
        self.fast
            .as_ref()
            .is_some_and(|(c, _)| step.is_multiple_of(c.every))
    }

    /// Empty signal slots (`[gemm layer][adaptive kind]`, NaN = not measured).
    pub fn fast_signal_slots(&self) -> Vec<Vec<f64>> {
        let nk = self.fast.as_ref().map_or(0, |(c, _)| c.kinds.len());
        vec![vec![f64::NAN; nk]; self.gemm.len()]
    }

    /// The slot of operand `kind` of node `layer` if FAST still adapts it, with its format.
    fn slot<'p>(
        &self,
        plan: &'p PrecisionPlan,
        layer: usize,
        kind: TensorKind,
    ) -> Option<(usize, usize, &'p BfpFormat)> {
        let (cfg, st) = self.fast.as_ref()?;
        let l = (*self.node_gemm.get(layer)?)?;
        let ki = cfg.kinds.iter().position(|&k| k == kind)?;
        if st.widths[l][ki] >= cfg.max_width {
            return None;
        }
        match plan.layer(layer).get(kind) {
            NumberFormat::Bfp(b) => Some((l, ki, b)),
            _ => None,
        }
    }

    /// Records `r(X)` of operand `kind` of node `layer` (the trainer's [`lowprec_nn::Ctx`]
    /// observer at evaluation steps).
    pub fn observe(
        &self,
        plan: &PrecisionPlan,
        signals: &mut [Vec<f64>],
        layer: usize,
        kind: TensorKind,
        x: &[f32],
        rows: usize,
        cols: usize,
    ) {
        if let Some((l, ki, f)) = self.slot(plan, layer, kind) {
            signals[l][ki] = relative_change(x, rows, cols, f).unwrap_or(f64::NAN);
        }
    }

    /// Records `r(W)` of every GEMM layer's weights.
    pub fn observe_weights(&self, plan: &PrecisionPlan, signals: &mut [Vec<f64>], model: &Model) {
        for g in &self.gemm {
            let params = model.nodes[g.node].layer.params();
            let Some(w) = params.first() else { continue };
            let rows = w.shape.first().copied().unwrap_or(1);
            let cols = w.value.len() / rows.max(1);
            self.observe(
                plan,
                signals,
                g.node,
                TensorKind::Weights,
                &w.value,
                rows,
                cols,
            );
        }
    }

    /// Applies FAST's rule to the signals measured at iteration `step` (`signals[l][k]`, NaN
    /// when not measured): the new widths take effect at `step + 1`.
    pub fn fast_decide(&mut self, step: u64, signals: &[Vec<f64>]) {
        let nl = self.gemm.len();
        let total = self.total;
        let Some((cfg, st)) = self.fast.as_mut() else {
            return;
        };
        for l in 0..nl {
            for (ki, &k) in cfg.kinds.iter().enumerate() {
                let r = signals[l][ki];
                if r.is_nan() {
                    continue;
                }
                let eps = cfg.eps(l, nl, step, total);
                let w = &mut st.widths[l][ki];
                if r > eps && *w < cfg.max_width {
                    *w += 2;
                }
                st.log.push(Decision {
                    iteration: step + 1,
                    layer: self.gemm[l].name.clone(),
                    kind: k,
                    r,
                    eps,
                    width: *w,
                });
            }
        }
    }
}

/// `f` with mantissa width `w` (unchanged when `f` is not BFP).
pub fn with_width(f: &NumberFormat, w: u32) -> NumberFormat {
    match f {
        NumberFormat::Bfp(b) => NumberFormat::Bfp(BfpFormat { wl: w, ..*b }),
        other => *other,
    }
}
