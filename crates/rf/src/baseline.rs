//! A linear reference detector: PCA reconstruction error.
//!
//! A linear auto-encoder trained to optimum spans the top principal subspace of its training
//! data, so the PCA residual is what 002's auto-encoder has to beat (or match) on the same
//! windows. Fit: mean and covariance of the training windows (f64), eigenvectors by cyclic
//! Jacobi rotations, keep the `components` largest. Score of a window: mean squared error
//! of its reconstruction, `|x - mu - P P^T (x - mu)|^2 / dim`, the same quantity as the
//! auto-encoder's MSE loss.
//!
//! [`run_baseline`] is `lowprec rf baseline`: fit on a training recording, threshold from the
//! training errors by a rule, scored against a labelled test recording.

use std::path::Path;

use crate::metrics::{
    best_f1, recall_by_kind, select_threshold, Confusion, KindRecall, ThresholdRule,
};
use crate::sigmf::{read_recording, ReadOptions};
use crate::window::{make_windows, Normaliser, WindowConfig, Windows};
use crate::RfError;

/// Eigen-decomposition of a symmetric `n x n` matrix (row-major) by cyclic Jacobi rotations.
/// Returns eigenvalues in descending order and the matching eigenvectors as rows.
pub fn symmetric_eigen(matrix: &[f64], n: usize) -> Result<(Vec<f64>, Vec<Vec<f64>>), RfError> {
    if matrix.len() != n * n {
        return Err(RfError::InvalidArgument(format!(
            "symmetric_eigen: {} values for a {n} x {n} matrix",
            matrix.len()
        )));
    }
    if matrix.iter().any(|v| !v.is_finite()) {
        return Err(RfError::InvalidArgument(
            "symmetric_eigen: non-finite entry".into(),
        ));
    }
    let mut a = matrix.to_vec();
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let scale: f64 = a
        .iter()
        .map(|x| x * x)
        .sum::<f64>()
        .sqrt()
        .max(f64::MIN_POSITIVE);
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j].powi(2))
            .sum();
        if off.sqrt() <= 1e-14 * scale {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                // A <- J^T A J on rows/columns p and q.
                for k in 0..n {
                    let akp = a[k * n + p];
                    let akq = a[k * n + q];
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let apk = a[p * n + k];
                    let aqk = a[q * n + k];
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let vkp = v[k * n + p];
                    let vkq = v[k * n + q];
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| a[j * n + j].total_cmp(&a[i * n + i]));
    let values = order.iter().map(|&i| a[i * n + i]).collect();
    let vectors = order
        .iter()
        .map(|&i| (0..n).map(|k| v[k * n + i]).collect())
        .collect();
    Ok((values, vectors))
}

/// A fitted PCA residual detector.
#[derive(Clone, Debug)]
pub struct PcaDetector {
    pub mean: Vec<f64>,
    /// Principal directions (unit rows), largest variance first.
    pub components: Vec<Vec<f64>>,
    /// Variance along each kept direction.
    pub variances: Vec<f64>,
}

impl PcaDetector {
    /// Fits on (normal) training windows, keeping `components` directions.
    pub fn fit(train: &Windows, components: usize) -> Result<PcaDetector, RfError> {
        let d = train.dim;
        if train.is_empty() || d == 0 {
            return Err(RfError::InvalidArgument(
                "PCA fit: no training windows".into(),
            ));
        }
        if components > d {
            return Err(RfError::InvalidArgument(format!(
                "PCA fit: {components} components requested for {d}-dimensional windows"
            )));
        }
        let n = train.len() as f64;
        let mut mean = vec![0.0; d];
        for k in 0..train.len() {
            for (m, &x) in mean.iter_mut().zip(train.input(k)) {
                *m += f64::from(x);
            }
        }
        mean.iter_mut().for_each(|m| *m /= n);
        let mut cov = vec![0.0; d * d];
        let mut centred = vec![0.0; d];
        for k in 0..train.len() {
            for ((c, &x), m) in centred.iter_mut().zip(train.input(k)).zip(&mean) {
                *c = f64::from(x) - m;
            }
            for i in 0..d {
                let ci = centred[i];
                for j in i..d {
                    cov[i * d + j] += ci * centred[j];
                }
            }
        }
        for i in 0..d {
            for j in i..d {
                cov[i * d + j] /= n;
                cov[j * d + i] = cov[i * d + j];
            }
        }
        let (values, vectors) = symmetric_eigen(&cov, d)?;
        Ok(PcaDetector {
            mean,
            components: vectors.into_iter().take(components).collect(),
            variances: values.into_iter().take(components).collect(),
        })
    }

    /// Mean squared reconstruction error of each window.
    pub fn scores(&self, windows: &Windows) -> Result<Vec<f32>, RfError> {
        let d = self.mean.len();
        if windows.dim != d {
            return Err(RfError::InvalidArgument(format!(
                "PCA detector fitted on {d}-dimensional windows, given {}",
                windows.dim
            )));
        }
        let mut centred = vec![0.0; d];
        Ok((0..windows.len())
            .map(|k| {
                for ((c, &x), m) in centred.iter_mut().zip(windows.input(k)).zip(&self.mean) {
                    *c = f64::from(x) - m;
                }
                let total: f64 = centred.iter().map(|c| c * c).sum();
                let explained: f64 = self
                    .components
                    .iter()
                    .map(|p| {
                        p.iter()
                            .zip(&centred)
                            .map(|(a, b)| a * b)
                            .sum::<f64>()
                            .powi(2)
                    })
                    .sum();
                ((total - explained).max(0.0) / d as f64) as f32
            })
            .collect())
    }
}

/// The result of [`run_baseline`].
#[derive(Clone, Debug, PartialEq)]
pub struct BaselineReport {
    pub components: usize,
    pub rule: ThresholdRule,
    pub threshold: f32,
    /// Of the training recording, applied to both.
    pub normalisation_scale: f32,
    pub train_windows: usize,
    /// Training windows that are annotated anomalous (fitted on all the same: the detector is
    /// unsupervised; this says how contaminated the training data is).
    pub train_anomalous: usize,
    pub test_windows: usize,
    pub test_anomalous: usize,
    /// Test windows at `threshold`.
    pub test: Confusion,
    /// The threshold with the best test F1 (a reference only: it looks at the test labels).
    pub oracle_threshold: f32,
    pub oracle: Confusion,
    pub recall_by_kind: Vec<KindRecall>,
}

impl BaselineReport {
    /// The report as the JSON object `rf baseline --json` writes.
    pub fn to_json(&self) -> serde_json::Value {
        let c = &self.test;
        serde_json::json!({
            "detector": format!("pca{}", self.components),
            "threshold_rule": self.rule.to_string(),
            "threshold": self.threshold,
            "normalisation_scale": self.normalisation_scale,
            "train_windows": self.train_windows,
            "test_windows": self.test_windows,
            "tp": c.tp, "fp": c.fp, "tn": c.tn, "fn": c.fn_,
            "precision": c.precision(), "recall": c.recall(), "f1": c.f1(),
            "oracle_f1": self.oracle.f1(),
            "recall_by_kind": self.recall_by_kind.iter().map(|r| serde_json::json!({
                "kind": r.kind, "detected": r.detected, "total": r.total
            })).collect::<Vec<_>>(),
        })
    }
}

/// PCA-`components` fitted on the windows of the SigMF recording `train` (normalised by its
/// RMS), threshold by `rule` on its training errors, scored on the windows of `test`.
pub fn run_baseline(
    train: &Path,
    test: &Path,
    components: usize,
    rule: ThresholdRule,
    window: WindowConfig,
) -> Result<BaselineReport, RfError> {
    let train = read_recording(train, ReadOptions::default())?;
    let test = read_recording(test, ReadOptions::default())?;
    let norm = Normaliser::fit(&train.samples)?;
    let wtrain = make_windows(&train.samples, window, norm, &train.label_ranges()?)?;
    let wtest = make_windows(&test.samples, window, norm, &test.label_ranges()?)?;
    let pca = PcaDetector::fit(&wtrain, components)?;
    let threshold = select_threshold(&pca.scores(&wtrain)?, rule)?;
    let scores = pca.scores(&wtest)?;
    let c = Confusion::from_scores(&scores, &wtest.labels, threshold)?;
    let (oracle_threshold, oracle) = best_f1(&scores, &wtest.labels)?;
    Ok(BaselineReport {
        components,
        rule,
        threshold,
        normalisation_scale: norm.scale,
        train_windows: wtrain.len(),
        train_anomalous: wtrain.anomalous(),
        test_windows: wtest.len(),
        test_anomalous: wtest.anomalous(),
        test: c,
        oracle_threshold,
        oracle,
        recall_by_kind: recall_by_kind(&scores, &wtest, threshold)?,
    })
}
