//! Detection on pre-windowed feature vectors: an `N x D` array (a `.npy` of float32/float64,
//! as RF data sets are usually shipped), one window per row, optionally with per-row labels.
//!
//! Protocol: the first `train_rows` rows train the auto-encoder ([`crate::autoencoder`], any
//! precision policy, with SWA) and fit the threshold; the remaining rows are scored. Each
//! column is standardised by the mean and standard deviation of the training rows (a constant
//! column by 1), so features of any scale train at the same learning rate. With labels, the
//! summary has F1 at the chosen threshold, the best-threshold F1, ROC AUC and PR AUC of the
//! scored rows, and the F1 every compared unsupervised rule would give. With a calibration set
//! (labelled rows, standardised the same way) the threshold is the one the calibration target
//! picks on its scores instead of the unsupervised rule.

use std::path::{Path, PathBuf};
use std::time::Instant;

use lowprec_kernels::GemmBackend;

use crate::autoencoder::{parse_precision, AeConfig, Autoencoder, ModelOptions};
use crate::experiment::{compare_rules, compared_rules, RuleResult};
use crate::metrics::{calibrate_threshold, Calibration, ScoreSummary};
use crate::RfError;

/// Rows of feature vectors and their labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Vectors {
    pub dim: usize,
    /// `rows x dim`, row-major.
    pub x: Vec<f32>,
    pub labels: Option<Vec<bool>>,
    /// Where the rows came from, for messages.
    pub source: PathBuf,
}

impl Vectors {
    pub fn rows(&self) -> usize {
        self.x.len().checked_div(self.dim).unwrap_or(0)
    }
}

fn data_err(e: lowprec_data::DataError) -> RfError {
    RfError::InvalidArgument(e.to_string())
}

/// Reads `N x D` vectors (float32 or float64 `.npy`; `[N]` is `N x 1`) and, if given, `N`
/// labels (integers 0/1 or bools, shape `[N]` or `[N, 1]`). Non-finite values, other dtypes,
/// other label values and a label count that is not `N` are errors naming the file.
pub fn read_vectors(path: &Path, labels: Option<&Path>) -> Result<Vectors, RfError> {
    let a = lowprec_data::read_npy(path).map_err(data_err)?;
    let bad = |what: String| RfError::InvalidArgument(format!("{}: {what}", path.display()));
    let x = match a.values {
        lowprec_data::NpyValues::F32(v) => v,
        _ => {
            return Err(bad(format!(
                "dtype {} is not supported: feature vectors are float32 or float64",
                a.dtype
            )))
        }
    };
    let (rows, dim) = match a.shape[..] {
        [n] => (n, 1),
        [n, d] => (n, d),
        _ => {
            return Err(bad(format!(
                "shape {:?}: expected [N, D] (one window per row)",
                a.shape
            )))
        }
    };
    if rows == 0 || dim == 0 {
        return Err(bad(format!("shape {:?} holds no vectors", a.shape)));
    }
    if let Some(k) = x.iter().position(|v| !v.is_finite()) {
        return Err(bad(format!(
            "non-finite value {} at row {}, column {}",
            x[k],
            k / dim,
            k % dim
        )));
    }
    let labels = match labels {
        None => None,
        Some(lp) => Some(read_labels(lp, rows)?),
    };
    Ok(Vectors {
        dim,
        x,
        labels,
        source: path.to_path_buf(),
    })
}

/// Reads `rows` labels, each 0 (normal) or 1 (anomalous).
pub fn read_labels(path: &Path, rows: usize) -> Result<Vec<bool>, RfError> {
    let bad = |what: String| RfError::InvalidArgument(format!("{}: {what}", path.display()));
    let a = lowprec_data::read_npy(path).map_err(data_err)?;
    let ok = a.shape.len() == 1 || (a.shape.len() == 2 && a.shape[1] == 1);
    if !ok {
        return Err(bad(format!(
            "labels must have shape [N] or [N, 1], got {:?}",
            a.shape
        )));
    }
    let v = a.to_i64().map_err(data_err)?;
    if v.len() != rows {
        return Err(bad(format!("{} labels for {rows} vectors", v.len())));
    }
    v.iter()
        .enumerate()
        .map(|(i, &l)| match l {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(bad(format!(
                "label {l} at row {i}: labels are 0 (normal) or 1 (anomalous)"
            ))),
        })
        .collect()
}

/// Settings of [`run_vectors`].
#[derive(Clone, Debug)]
pub struct VectorConfig {
    /// Rows from the start that train the model and fit the threshold.
    pub train_rows: usize,
    /// The model (`dim` is set from the data).
    pub ae: AeConfig,
    /// Calibrate the threshold on labelled rows with this target instead of the rule.
    pub calibration: Option<Calibration>,
}

/// The calibration's result.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CalibrationSummary {
    pub source: String,
    pub target: String,
    pub rows: usize,
    pub threshold: f32,
    /// On the calibration rows themselves.
    pub f1: f64,
    pub false_alarm_rate: f64,
}

/// The summary of a run on vectors.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct VectorSummary {
    pub source: String,
    pub rows: usize,
    pub dim: usize,
    pub train_rows: usize,
    pub scored_rows: usize,
    pub flagged: usize,
    pub precision_policy: String,
    /// The unsupervised rule, or `calibrated:...`.
    pub threshold_rule: String,
    pub threshold: f32,
    pub iterations: u64,
    pub final_loss: f64,
    pub training_seconds: f64,
    pub scoring_seconds: f64,
    pub calibration: Option<CalibrationSummary>,
    /// Against the labels of the scored rows (with labels only).
    pub test: Option<ScoreSummary>,
    /// F1 on the scored rows under each compared unsupervised rule (with labels only).
    pub rules: Vec<RuleResult>,
}

/// Scores and flags of the scored rows, with the summary.
#[derive(Clone, Debug, PartialEq)]
pub struct VectorReport {
    pub summary: VectorSummary,
    /// Reconstruction error of each scored row (rows `train_rows..`).
    pub scores: Vec<f32>,
}

/// Per-column mean and standard deviation of the first `rows` rows (a constant column: 1).
fn column_stats(v: &Vectors, rows: usize) -> (Vec<f64>, Vec<f64>) {
    let d = v.dim;
    let mut mean = vec![0f64; d];
    for r in v.x[..rows * d].chunks_exact(d) {
        for (m, &x) in mean.iter_mut().zip(r) {
            *m += f64::from(x);
        }
    }
    mean.iter_mut().for_each(|m| *m /= rows as f64);
    let mut var = vec![0f64; d];
    for r in v.x[..rows * d].chunks_exact(d) {
        for ((s, &x), m) in var.iter_mut().zip(r).zip(&mean) {
            *s += (f64::from(x) - m).powi(2);
        }
    }
    let std = var
        .into_iter()
        .map(|s| {
            let sd = (s / rows as f64).sqrt();
            if sd > 0.0 {
                sd
            } else {
                1.0
            }
        })
        .collect();
    (mean, std)
}

fn standardise(x: &[f32], d: usize, mean: &[f64], std: &[f64]) -> Vec<f32> {
    x.chunks_exact(d)
        .flat_map(|r| {
            r.iter()
                .zip(mean.iter().zip(std))
                .map(|(&v, (m, s))| ((f64::from(v) - m) / s) as f32)
        })
        .collect()
}

/// Trains on the first `cfg.train_rows` rows of `data`, scores the rest.
pub fn run_vectors(
    data: &Vectors,
    calibration: Option<&Vectors>,
    cfg: &VectorConfig,
    backend: &dyn GemmBackend,
) -> Result<VectorReport, RfError> {
    let (rows, d) = (data.rows(), data.dim);
    if cfg.train_rows == 0 || cfg.train_rows >= rows {
        return Err(RfError::InvalidArgument(format!(
            "{}: {rows} vectors; --train-windows {} must leave at least one row to score \
             and train on at least one",
            data.source.display(),
            cfg.train_rows
        )));
    }
    if let Some(c) = calibration {
        if c.dim != d {
            return Err(RfError::InvalidArgument(format!(
                "{}: calibration vectors have {} columns, {} has {d}",
                c.source.display(),
                c.dim,
                data.source.display()
            )));
        }
        if c.labels.is_none() {
            return Err(RfError::InvalidArgument(format!(
                "{}: calibration needs labels",
                c.source.display()
            )));
        }
    }
    let target = match (calibration, cfg.calibration) {
        (Some(_), Some(t)) => Some(t),
        (Some(_), None) => Some(Calibration::MaxF1),
        (None, _) => None,
    };
    let ae_cfg = AeConfig {
        dim: d,
        ..cfg.ae.clone()
    };
    ae_cfg.validate()?;
    let (mean, std) = column_stats(data, cfg.train_rows);
    let x = standardise(&data.x, d, &mean, &std);
    let (train, scored) = x.split_at(cfg.train_rows * d);
    let mut ae = Autoencoder::new(ae_cfg.clone())?;
    let t0 = Instant::now();
    ae.reset_average();
    let mut final_loss = f64::NAN;
    for it in 0..ae_cfg.iterations {
        let (lr, avg) = (ae_cfg.lr_at(it), ae_cfg.averages_at(it));
        final_loss = ae.train_iteration(backend, train, it, lr, avg, None)?;
    }
    ae.publish();
    // One scoring of the training rows gives both the threshold and the rule comparison (a
    // second would draw other stochastic-rounding bits).
    let train_scores = ae.scores(backend, train)?;
    let rule_threshold = crate::metrics::select_threshold(&train_scores, ae_cfg.threshold)?;
    let training_seconds = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let scores = ae.scores(backend, scored)?;
    let scoring_seconds = t1.elapsed().as_secs_f64();

    let (threshold, rule, cal) = match (calibration, target) {
        (Some(c), Some(target)) => {
            let cx = standardise(&c.x, d, &mean, &std);
            let cl = c.labels.as_deref().unwrap_or_default();
            let cs = ae.scores(backend, &cx)?;
            let t = calibrate_threshold(&cs, cl, target)?;
            let conf = crate::metrics::Confusion::from_scores(&cs, cl, t)?;
            (
                t,
                target.to_string(),
                Some(CalibrationSummary {
                    source: c.source.display().to_string(),
                    target: target.to_string(),
                    rows: c.rows(),
                    threshold: t,
                    f1: conf.f1(),
                    false_alarm_rate: conf.false_positive_rate(),
                }),
            )
        }
        _ => (rule_threshold, ae_cfg.threshold.to_string(), None),
    };
    let (test, rules) = match &data.labels {
        Some(l) => {
            let l = &l[cfg.train_rows..];
            (
                Some(ScoreSummary::new(&scores, l, threshold)?),
                compare_rules(&compared_rules(), &train_scores, &scores, l)?,
            )
        }
        None => (None, Vec::new()),
    };
    Ok(VectorReport {
        summary: VectorSummary {
            source: data.source.display().to_string(),
            rows,
            dim: d,
            train_rows: cfg.train_rows,
            scored_rows: scores.len(),
            flagged: scores.iter().filter(|&&s| s > threshold).count(),
            precision_policy: ae_cfg.precision.name.clone(),
            threshold_rule: rule,
            threshold,
            iterations: ae_cfg.iterations,
            final_loss,
            training_seconds,
            scoring_seconds,
            calibration: cal,
            test,
            rules,
        },
        scores,
    })
}

/// The options of `rf detect --vectors`, as given; [`Self::prepare`] checks them and reads
/// the files.
#[derive(Clone, Debug, PartialEq)]
pub struct VectorOptions {
    /// The `.npy` of vectors (`--vectors`).
    pub vectors: PathBuf,
    /// Their labels (`--labels`).
    pub labels: Option<PathBuf>,
    /// Labelled calibration vectors (`--calibrate`), which need `calibrate_labels`.
    pub calibrate: Option<PathBuf>,
    pub calibrate_labels: Option<PathBuf>,
    /// `f1` or `far:R` ([`Calibration`]'s syntax).
    pub calibrate_target: String,
    /// Rows from the start that train (`--train-windows`).
    pub train_rows: usize,
    /// Precision policy (`--precision`).
    pub precision: String,
    pub model: ModelOptions,
}

/// Checked options with their data, ready for [`run_vectors`].
#[derive(Clone, Debug)]
pub struct PreparedVectors {
    pub data: Vectors,
    pub calibration: Option<Vectors>,
    pub config: VectorConfig,
}

impl VectorOptions {
    /// Reads the vectors (and calibration vectors) and builds the settings.
    pub fn prepare(&self) -> Result<PreparedVectors, RfError> {
        if self.calibrate.is_some() && self.calibrate_labels.is_none() {
            return Err(RfError::InvalidArgument(
                "--calibrate with --vectors needs --calibrate-labels".into(),
            ));
        }
        let data = read_vectors(&self.vectors, self.labels.as_deref())?;
        let calibration = match &self.calibrate {
            Some(c) => Some(read_vectors(c, self.calibrate_labels.as_deref())?),
            None => None,
        };
        let precision = parse_precision("--precision", &self.precision)?;
        let config = VectorConfig {
            train_rows: self.train_rows,
            ae: self.model.ae_config(data.dim, precision)?,
            calibration: Some(self.calibrate_target.parse()?),
        };
        Ok(PreparedVectors {
            data,
            calibration,
            config,
        })
    }
}

impl VectorReport {
    /// One JSON line per scored row: `row` (index in the file, from `train_rows`), `score`,
    /// `anomalous` and `label` (`null` without labels).
    pub fn to_jsonl(&self, labels: Option<&[bool]>, train_rows: usize) -> String {
        let mut out = String::with_capacity(self.scores.len() * 48);
        for (k, &s) in self.scores.iter().enumerate() {
            let row = train_rows + k;
            let line = serde_json::json!({
                "row": row,
                "score": s,
                "anomalous": s > self.summary.threshold,
                "label": labels.map(|l| l[row]),
            });
            out.push_str(&line.to_string());
            out.push('\n');
        }
        out
    }
}
