//! The experiment of 002 Fig. 9: F1 on a held-out labelled recording after every training
//! iteration, per precision, against iterations, wall time and the accelerator's projected
//! time.
//!
//! # Protocol
//! * Data: [`StandardPairConfig::detection`] by default. The training batch is the first
//!   `train_windows` (1000) windows of the training recording, as the online detector would
//!   collect them; the normalisation scale is fitted on their samples. The test set is every
//!   window of the test recording (8192 with the defaults, 1152 anomalous).
//! * Per precision: a fresh [`Autoencoder`] (same seed) trained for `ae.iterations`
//!   iterations on the CPU backend. After every iteration the scoring model is published,
//!   the threshold refitted on the training batch and the test set scored; none of this
//!   evaluation counts in the times.
//! * `seconds`: cumulative wall time of the training iterations (forward, backward, SGD
//!   step, SWA update) on this machine.
//! * `projected_seconds`: 002's system, where GEMMs run on the FPGA and the rest on the
//!   processor: per iteration, the measured non-GEMM time (iteration wall time minus the
//!   GEMM time the layers' profile records) plus the simulated core time of the same
//!   iteration's GEMMs on the [`FpgaSim`] (`zcu111-16x16`, 200 MHz, from its cycle counts).
//!   The simulated run trains a second model on the simulator backend and must give the
//!   same losses bit for bit (checked: `backends_agree`). Float GEMMs (fp32) cannot use the
//!   8-bit core, so for fp32 the projection equals the measured time. The processor here
//!   is an x86 core, not the ZCU111's ARM Cortex-A53, so the projection is optimistic for
//!   the non-GEMM part; the raw parts are reported separately.
//! * Baselines on the same windows: PCA-8 residual (the optimal linear auto-encoder) and
//!   the window-energy detector, both with the same threshold rule.

use std::time::Instant;

use lowprec_hw::sim::FpgaSim;
use lowprec_kernels::{CpuBackend, GemmBackend};
use lowprec_nn::{Category, Precision, Profile};

use crate::autoencoder::{parse_precision, AeConfig, Autoencoder, ModelOptions};
use crate::baseline::PcaDetector;
use crate::metrics::{roc_auc, select_threshold, Confusion, ScoreSummary, ThresholdRule};
use crate::pair::{standard_pair, PairFm, StandardPairConfig};
use crate::window::{make_windows, Normaliser, WindowConfig, Windows};
use crate::RfError;

/// Settings; the defaults reproduce Fig. 9's setting.
#[derive(Clone, Debug)]
pub struct ExperimentConfig {
    pub pair: StandardPairConfig,
    pub window: WindowConfig,
    pub train_windows: usize,
    /// The model; `precision` is replaced by each entry of `precisions`.
    pub ae: AeConfig,
    pub precisions: Vec<Precision>,
    /// Simulator design for the projection (`None`: no projection).
    pub fpga: Option<String>,
    /// The F1 whose first crossing is reported (`iterations_to_f1_0.87`).
    pub target_f1: f64,
}

impl Default for ExperimentConfig {
    fn default() -> Self {
        ExperimentConfig {
            pair: StandardPairConfig::detection(),
            window: WindowConfig::default(),
            train_windows: 1000,
            ae: AeConfig::default(),
            precisions: vec![Precision::fp32(), Precision::bfp8()],
            fpga: Some("zcu111-16x16".into()),
            target_f1: 0.87,
        }
    }
}

/// The options of `rf experiment`, as given; [`Self::config`] checks them. The defaults are
/// the command's.
#[derive(Clone, Debug, PartialEq)]
pub struct ExperimentOptions {
    /// Precision policies to compare (`--precisions`).
    pub precisions: Vec<String>,
    /// Simulator design for the projected time; `none`: no projection.
    pub fpga: String,
    /// Seed of the recordings.
    pub seed: u64,
    pub anomaly_power_db: f64,
    pub snr_db: f64,
    /// The standard pair's wideband transmission instead of the narrowband channel.
    pub wideband: bool,
    pub train_windows: usize,
    pub target_f1: f64,
    pub model: ModelOptions,
}

impl Default for ExperimentOptions {
    fn default() -> Self {
        ExperimentOptions {
            precisions: vec!["fp32".into(), "bfp8".into()],
            fpga: "zcu111-16x16".into(),
            seed: 1,
            anomaly_power_db: -12.0,
            snr_db: 20.0,
            wideband: false,
            train_windows: 1000,
            target_f1: 0.87,
            model: ModelOptions::default(),
        }
    }
}

impl ExperimentOptions {
    /// The checked settings, on the default windows.
    pub fn config(&self) -> Result<ExperimentConfig, RfError> {
        let precisions = self
            .precisions
            .iter()
            .map(|p| parse_precision("--precisions", p))
            .collect::<Result<Vec<_>, _>>()?;
        let window = WindowConfig::default();
        Ok(ExperimentConfig {
            pair: StandardPairConfig {
                seed: self.seed,
                snr_db: self.snr_db,
                anomaly_power_db: self.anomaly_power_db,
                fm: if self.wideband {
                    PairFm::WIDEBAND
                } else {
                    PairFm::NARROWBAND
                },
                ..StandardPairConfig::default()
            },
            window,
            train_windows: self.train_windows,
            ae: self.model.ae_config(window.dim(), Precision::fp32())?,
            precisions,
            fpga: (self.fpga != "none").then(|| self.fpga.clone()),
            target_f1: self.target_f1,
        })
    }
}

/// One point of a curve.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CurvePoint {
    /// Iterations done (1-based).
    pub iteration: u64,
    pub precision: String,
    pub f1: f64,
    pub precision_score: f64,
    pub recall: f64,
    pub threshold: f32,
    /// Training loss of this iteration's minibatch (before its step).
    pub loss: f64,
    /// Cumulative training wall time.
    pub seconds: f64,
    /// Cumulative GEMM time inside that.
    pub gemm_seconds: f64,
    /// Cumulative simulated FPGA core time of the GEMMs (8-bit policies with a simulator).
    pub fpga_gemm_seconds: Option<f64>,
    /// Cumulative projected time on 002's system (see the module docs).
    pub projected_seconds: Option<f64>,
    /// Threshold-free: ROC AUC of this iteration's test scores.
    pub roc_auc: Option<f64>,
}

/// The end of one precision's run.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct FinalResult {
    pub precision: String,
    pub f1: f64,
    pub precision_score: f64,
    pub recall: f64,
    /// First iteration with F1 >= the target, if any.
    pub iterations_to_target: Option<u64>,
    pub iterations: u64,
    pub seconds: f64,
    pub projected_seconds: Option<f64>,
    /// The simulator run reproduced every loss bit for bit.
    pub backends_agree: Option<bool>,
    /// Simulated FPGA cycles of all training GEMMs.
    pub fpga_cycles: Option<u64>,
    /// The final model's test scores at the chosen rule's threshold, with ROC AUC, PR AUC and
    /// the best-threshold F1.
    pub test: ScoreSummary,
    /// F1 of the final model's test scores under each compared threshold rule (fitted on the
    /// training batch), `(rule, threshold, f1)`.
    pub rules: Vec<RuleResult>,
}

/// One threshold rule's result on the final model.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RuleResult {
    pub rule: String,
    pub threshold: f32,
    pub f1: f64,
    pub precision: f64,
    pub recall: f64,
}

/// The unsupervised rules every summary compares: the 99th percentile (002), mean + 3 std,
/// median + 6 MAD and the EVT tail at 1e-4.
pub fn compared_rules() -> Vec<ThresholdRule> {
    vec![
        ThresholdRule::Percentile(99.0),
        ThresholdRule::MeanStd(3.0),
        ThresholdRule::Mad(6.0),
        ThresholdRule::Evt(1e-4),
    ]
}

/// F1 of `test_scores` under each rule fitted on `train_scores`.
pub fn compare_rules(
    rules: &[ThresholdRule],
    train_scores: &[f32],
    test_scores: &[f32],
    labels: &[bool],
) -> Result<Vec<RuleResult>, RfError> {
    rules
        .iter()
        .map(|&rule| {
            let t = select_threshold(train_scores, rule)?;
            let c = Confusion::from_scores(test_scores, labels, t)?;
            Ok(RuleResult {
                rule: rule.to_string(),
                threshold: t,
                f1: c.f1(),
                precision: c.precision(),
                recall: c.recall(),
            })
        })
        .collect()
}

/// A baseline detector's result on the same windows.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct BaselineResult {
    pub detector: String,
    pub f1: f64,
    pub precision_score: f64,
    pub recall: f64,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ExperimentResult {
    pub curve: Vec<CurvePoint>,
    pub finals: Vec<FinalResult>,
    pub baselines: Vec<BaselineResult>,
    pub train_windows: usize,
    pub test_windows: usize,
    pub test_anomalous: usize,
    pub target_f1: f64,
    pub fpga: Option<String>,
}

impl ExperimentResult {
    /// The curve as JSON lines, one [`CurvePoint`] each.
    pub fn curve_jsonl(&self) -> Result<Vec<u8>, RfError> {
        let mut out = Vec::new();
        for pt in &self.curve {
            serde_json::to_writer(&mut out, pt)
                .map_err(|e| RfError::InvalidArgument(format!("curve point: {e}")))?;
            out.push(b'\n');
        }
        Ok(out)
    }

    /// `final.json`: one object per precision (its final F1, precision, recall, iterations to
    /// the target F1 under `iterations_to_f1_<target>`, times, the simulator's agreement,
    /// test summary and rule comparison) at the top level, next to the baselines, window
    /// counts, simulator design and the pair (`seed`, `snr_db`, `anomaly_power_db` and its
    /// transmission) of `pair`.
    pub fn final_json(&self, pair: &StandardPairConfig) -> serde_json::Value {
        let key = format!("iterations_to_f1_{}", self.target_f1);
        let mut top = serde_json::Map::new();
        for f in &self.finals {
            top.insert(
                f.precision.clone(),
                serde_json::json!({
                    "f1": f.f1,
                    "precision_score": f.precision_score,
                    "recall": f.recall,
                    key.as_str(): f.iterations_to_target,
                    "iterations": f.iterations,
                    "seconds": f.seconds,
                    "projected_seconds": f.projected_seconds,
                    "backends_agree": f.backends_agree,
                    "fpga_cycles": f.fpga_cycles,
                    "test": f.test,
                    "rules": f.rules,
                }),
            );
        }
        let transmission = if pair.fm == PairFm::WIDEBAND {
            "wideband"
        } else if pair.fm == PairFm::NARROWBAND {
            "narrowband"
        } else {
            "custom"
        };
        let context = serde_json::json!({
            "baselines": self.baselines,
            "train_windows": self.train_windows,
            "test_windows": self.test_windows,
            "test_anomalous": self.test_anomalous,
            "fpga": self.fpga,
            "pair": {
                "seed": pair.seed, "snr_db": pair.snr_db,
                "anomaly_power_db": pair.anomaly_power_db,
                "transmission": transmission,
            },
        });
        if let serde_json::Value::Object(context) = context {
            top.extend(context);
        }
        serde_json::Value::Object(top)
    }
}

/// The training batch and test windows of the protocol.
pub fn experiment_windows(cfg: &ExperimentConfig) -> Result<(Windows, Windows), RfError> {
    let data = standard_pair(&cfg.pair)?.generate()?;
    let w = cfg.window;
    let need = (cfg.train_windows.max(1) - 1) * w.stride + w.len;
    if data.train.len() < need {
        return Err(RfError::InvalidArgument(format!(
            "the training recording has {} samples; {} windows need {need}",
            data.train.len(),
            cfg.train_windows
        )));
    }
    let head = &data.train[..need];
    let norm = Normaliser::fit(head)?;
    let train = make_windows(head, w, norm, &[])?;
    let test = make_windows(&data.test, w, norm, &data.test_labels)?;
    if test.is_empty() {
        return Err(RfError::InvalidArgument(
            "the test recording has no complete window".into(),
        ));
    }
    Ok((train, test))
}

fn gemm_seconds(p: &Profile) -> f64 {
    p.times
        .iter()
        .filter(|((_, _, c), _)| *c == Category::Gemm)
        .map(|(_, d)| d.as_secs_f64())
        .sum()
}

/// Window-energy detector: score `|energy - mean training energy|`.
fn energy_scores(w: &Windows, mean: f64) -> Vec<f32> {
    (0..w.len())
        .map(|k| {
            let e: f64 = w.input(k).iter().map(|&v| f64::from(v).powi(2)).sum();
            (e - mean).abs() as f32
        })
        .collect()
}

fn baselines(
    cfg: &ExperimentConfig,
    train: &Windows,
    test: &Windows,
) -> Result<Vec<BaselineResult>, RfError> {
    let rule = cfg.ae.threshold;
    let k = cfg
        .ae
        .hidden
        .iter()
        .copied()
        .min()
        .unwrap_or(8)
        .min(train.dim);
    let pca = PcaDetector::fit(train, k)?;
    let t = select_threshold(&pca.scores(train)?, rule)?;
    let c = Confusion::from_scores(&pca.scores(test)?, &test.labels, t)?;
    let mean = energy_scores(train, 0.0)
        .iter()
        .map(|&e| f64::from(e))
        .sum::<f64>()
        / train.len() as f64;
    let te = select_threshold(&energy_scores(train, mean), rule)?;
    let ce = Confusion::from_scores(&energy_scores(test, mean), &test.labels, te)?;
    let result = |name: String, c: Confusion| BaselineResult {
        detector: name,
        f1: c.f1(),
        precision_score: c.precision(),
        recall: c.recall(),
    };
    Ok(vec![
        result(format!("pca{k}"), c),
        result("energy".into(), ce),
    ])
}

/// Runs the experiment; `progress(precision, iteration, f1)` after every iteration.
pub fn run_experiment(
    cfg: &ExperimentConfig,
    progress: &mut dyn FnMut(&str, u64, f64),
) -> Result<ExperimentResult, RfError> {
    if cfg.ae.dim != cfg.window.dim() {
        return Err(RfError::InvalidArgument(format!(
            "the auto-encoder takes {} reals, windows give {}",
            cfg.ae.dim,
            cfg.window.dim()
        )));
    }
    if cfg.precisions.is_empty() {
        return Err(RfError::InvalidArgument("no precision to run".into()));
    }
    let (train, test) = experiment_windows(cfg)?;
    let mut curve = Vec::new();
    let mut finals = Vec::new();
    for precision in &cfg.precisions {
        let ae_cfg = AeConfig {
            precision: precision.clone(),
            ..cfg.ae.clone()
        };
        let cpu = CpuBackend;
        let mut ae = Autoencoder::new(ae_cfg.clone())?;
        // The simulated run: only for policies whose GEMMs the 8-bit core can take.
        let quantised = !precision.is_fp32();
        let sim = match (&cfg.fpga, quantised) {
            (Some(spec), true) => Some(
                FpgaSim::from_spec(spec)
                    .map_err(|e| RfError::InvalidArgument(format!("FPGA design {spec}: {e}")))?,
            ),
            _ => None,
        };
        let mut sim_ae = match &sim {
            Some(_) => Some(Autoencoder::new(ae_cfg.clone())?),
            None => None,
        };
        let mut agree = sim.as_ref().map(|_| true);
        let (mut seconds, mut gemm, mut fpga, mut projected) = (0.0, 0.0, 0.0, 0.0);
        let mut first_hit = None;
        let mut last = None;
        for it in 0..ae_cfg.iterations {
            let (lr, avg) = (ae_cfg.lr_at(it), ae_cfg.averages_at(it));
            let mut profile = Profile::default();
            let t0 = Instant::now();
            let loss = ae.train_iteration(&cpu, &train.inputs, it, lr, avg, Some(&mut profile))?;
            let dt = t0.elapsed().as_secs_f64();
            let dg = gemm_seconds(&profile);
            seconds += dt;
            gemm += dg;
            if let (Some(sim), Some(sae)) = (&sim, sim_ae.as_mut()) {
                let before = sim.counters().total_cycles;
                let backend: &dyn GemmBackend = sim;
                let sim_loss = sae.train_iteration(backend, &train.inputs, it, lr, avg, None)?;
                if sim_loss.to_bits() != loss.to_bits() {
                    agree = Some(false);
                }
                let cycles = sim.counters().total_cycles - before;
                let core = cycles as f64 / sim.config().clock_hz;
                fpga += core;
                projected += (dt - dg).max(0.0) + core;
            } else {
                projected += dt;
            }
            ae.publish();
            // One scoring of the training batch gives both the threshold and the rule
            // comparison (a second would draw other stochastic-rounding bits).
            let train_scores = ae.scores(&cpu, &train.inputs)?;
            let threshold = select_threshold(&train_scores, ae_cfg.threshold)?;
            let scores = ae.scores(&cpu, &test.inputs)?;
            let c = Confusion::from_scores(&scores, &test.labels, threshold)?;
            if first_hit.is_none() && c.f1() >= cfg.target_f1 {
                first_hit = Some(it + 1);
            }
            progress(&precision.name, it + 1, c.f1());
            curve.push(CurvePoint {
                iteration: it + 1,
                precision: precision.name.clone(),
                f1: c.f1(),
                precision_score: c.precision(),
                recall: c.recall(),
                threshold,
                loss,
                seconds,
                gemm_seconds: gemm,
                fpga_gemm_seconds: sim.as_ref().map(|_| fpga),
                projected_seconds: cfg.fpga.as_ref().map(|_| projected),
                roc_auc: roc_auc(&scores, &test.labels)?,
            });
            last = Some((threshold, train_scores, scores));
        }
        let (threshold, train_scores, test_scores) = last.ok_or_else(|| {
            RfError::InvalidArgument("the experiment needs at least one iteration".into())
        })?;
        let summary = ScoreSummary::new(&test_scores, &test.labels, threshold)?;
        let rules = compare_rules(&compared_rules(), &train_scores, &test_scores, &test.labels)?;
        let last_point = curve.last().cloned();
        let (f1, p, r) = last_point
            .as_ref()
            .map_or((0.0, 0.0, 0.0), |l| (l.f1, l.precision_score, l.recall));
        finals.push(FinalResult {
            precision: precision.name.clone(),
            f1,
            precision_score: p,
            recall: r,
            iterations_to_target: first_hit,
            iterations: ae_cfg.iterations,
            seconds,
            projected_seconds: cfg.fpga.as_ref().map(|_| projected),
            backends_agree: agree,
            fpga_cycles: sim.as_ref().map(|s| s.counters().total_cycles),
            test: summary,
            rules,
        });
    }
    Ok(ExperimentResult {
        curve,
        finals,
        baselines: baselines(cfg, &train, &test)?,
        train_windows: train.len(),
        test_windows: test.len(),
        test_anomalous: test.anomalous(),
        target_f1: cfg.target_f1,
        fpga: cfg.fpga.clone(),
    })
}
