//! Detector-independent metrics: thresholds from normal-data errors, and precision, recall
//! and F1 of window labels.
//!
//! Conventions:
//! * A window is **predicted anomalous when its score is strictly greater than the
//!   threshold**.
//! * `Percentile(p)` uses linear interpolation between closest ranks (NumPy's default): with
//!   the `n` errors sorted ascending as `x[0..n]`, rank `r = p / 100 * (n - 1)`, threshold
//!   `x[floor r] + (r - floor r) (x[ceil r] - x[floor r])`. So `p` percent of the training
//!   windows (up to ties and interpolation) fall at or below the threshold.
//! * `MeanStd(k)`: `mean + k * std` with the population standard deviation.
//! * A ratio with a zero denominator (precision with no predicted positives, recall with no
//!   actual positives, F1 with both zero) is 0.

use std::fmt;
use std::str::FromStr;

use crate::window::Windows;
use crate::RfError;

/// How to pick a detection threshold from reconstruction errors on normal training data.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ThresholdRule {
    /// The p-th percentile, `0 <= p <= 100`.
    Percentile(f64),
    /// Mean plus k population standard deviations.
    MeanStd(f64),
}

impl Default for ThresholdRule {
    fn default() -> Self {
        ThresholdRule::Percentile(99.0)
    }
}

impl fmt::Display for ThresholdRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ThresholdRule::Percentile(p) => write!(f, "p{p}"),
            ThresholdRule::MeanStd(k) => write!(f, "mean+{k}std"),
        }
    }
}

impl FromStr for ThresholdRule {
    type Err = RfError;

    /// Accepts `p99`, `p99.5`, `percentile:99` and `mean+3std`, `mean+2.5std`.
    fn from_str(s: &str) -> Result<Self, RfError> {
        let bad = || {
            RfError::InvalidArgument(format!(
                "threshold rule {s:?}: expected pNN (percentile, 0..=100) or mean+Kstd"
            ))
        };
        let t = s.trim();
        let rule = if let Some(p) = t
            .strip_prefix("percentile:")
            .or_else(|| t.strip_prefix('p'))
        {
            ThresholdRule::Percentile(p.parse().map_err(|_| bad())?)
        } else if let Some(k) = t.strip_prefix("mean+").and_then(|r| r.strip_suffix("std")) {
            ThresholdRule::MeanStd(k.parse().map_err(|_| bad())?)
        } else {
            return Err(bad());
        };
        rule.validate()?;
        Ok(rule)
    }
}

impl ThresholdRule {
    pub fn validate(&self) -> Result<(), RfError> {
        match *self {
            ThresholdRule::Percentile(p) if (0.0..=100.0).contains(&p) => Ok(()),
            ThresholdRule::MeanStd(k) if k.is_finite() => Ok(()),
            _ => Err(RfError::InvalidArgument(format!(
                "threshold rule {self}: percentile must be in [0, 100], k finite"
            ))),
        }
    }
}

fn check_scores(what: &str, values: &[f32]) -> Result<(), RfError> {
    if values.is_empty() {
        return Err(RfError::InvalidArgument(format!("{what}: no values")));
    }
    if let Some(k) = values.iter().position(|v| !v.is_finite()) {
        return Err(RfError::InvalidArgument(format!(
            "{what}: value {k} is {} (diverged detector?)",
            values[k]
        )));
    }
    Ok(())
}

/// The `p`-th percentile of `values` by linear interpolation (see the module docs), in f64.
pub fn percentile(values: &[f32], p: f64) -> Result<f64, RfError> {
    check_scores("percentile", values)?;
    ThresholdRule::Percentile(p).validate()?;
    let mut sorted: Vec<f32> = values.to_vec();
    sorted.sort_by(f32::total_cmp);
    let rank = p / 100.0 * (sorted.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    let (a, b) = (f64::from(sorted[lo]), f64::from(sorted[hi]));
    Ok(a + (rank - lo as f64) * (b - a))
}

/// The detection threshold for `errors` (reconstruction errors of normal training windows).
pub fn select_threshold(errors: &[f32], rule: ThresholdRule) -> Result<f32, RfError> {
    check_scores("training errors", errors)?;
    rule.validate()?;
    let t = match rule {
        ThresholdRule::Percentile(p) => percentile(errors, p)?,
        ThresholdRule::MeanStd(k) => {
            let n = errors.len() as f64;
            let mean = errors.iter().map(|&e| f64::from(e)).sum::<f64>() / n;
            let var = errors
                .iter()
                .map(|&e| (f64::from(e) - mean).powi(2))
                .sum::<f64>()
                / n;
            mean + k * var.sqrt()
        }
    };
    Ok(t as f32)
}

/// Counts of a binary detector against window labels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Confusion {
    pub tp: u64,
    pub fp: u64,
    pub tn: u64,
    pub fn_: u64,
}

fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

impl Confusion {
    /// Scores against labels (`true` = anomalous) at `threshold` (anomalous if score > it).
    pub fn from_scores(
        scores: &[f32],
        labels: &[bool],
        threshold: f32,
    ) -> Result<Confusion, RfError> {
        if scores.len() != labels.len() {
            return Err(RfError::InvalidArgument(format!(
                "{} scores but {} labels",
                scores.len(),
                labels.len()
            )));
        }
        if threshold.is_nan() {
            return Err(RfError::InvalidArgument("threshold is NaN".into()));
        }
        if let Some(k) = scores.iter().position(|s| s.is_nan()) {
            return Err(RfError::InvalidArgument(format!("score {k} is NaN")));
        }
        let mut c = Confusion::default();
        for (&s, &l) in scores.iter().zip(labels) {
            match (s > threshold, l) {
                (true, true) => c.tp += 1,
                (true, false) => c.fp += 1,
                (false, false) => c.tn += 1,
                (false, true) => c.fn_ += 1,
            }
        }
        Ok(c)
    }

    pub fn total(&self) -> u64 {
        self.tp + self.fp + self.tn + self.fn_
    }

    pub fn precision(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp)
    }

    pub fn recall(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }

    /// `2 tp / (2 tp + fp + fn)`, the harmonic mean of precision and recall.
    pub fn f1(&self) -> f64 {
        ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn_)
    }

    pub fn accuracy(&self) -> f64 {
        ratio(self.tp + self.tn, self.total())
    }

    pub fn false_positive_rate(&self) -> f64 {
        ratio(self.fp, self.fp + self.tn)
    }
}

impl fmt::Display for Confusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tp {} fp {} tn {} fn {}: precision {:.4} recall {:.4} F1 {:.4}",
            self.tp,
            self.fp,
            self.tn,
            self.fn_,
            self.precision(),
            self.recall(),
            self.f1()
        )
    }
}

/// The threshold with the best F1 on labelled data (an oracle, for reference only: a real
/// detector must pick its threshold from normal data). Among equal F1s the highest threshold
/// wins. Returns `(threshold, confusion)`; the threshold is one of the scores (or -inf, all
/// anomalous), so `score > threshold` reproduces the confusion exactly.
pub fn best_f1(scores: &[f32], labels: &[bool]) -> Result<(f32, Confusion), RfError> {
    if scores.is_empty() {
        return Err(RfError::InvalidArgument("scores: no values".into()));
    }
    // Infinite scores (a saturated detector) sort fine; NaN has no place in the order.
    if let Some(k) = scores.iter().position(|s| s.is_nan()) {
        return Err(RfError::InvalidArgument(format!("score {k} is NaN")));
    }
    if scores.len() != labels.len() {
        return Err(RfError::InvalidArgument(format!(
            "{} scores but {} labels",
            scores.len(),
            labels.len()
        )));
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let positives = labels.iter().filter(|&&l| l).count() as u64;
    let negatives = labels.len() as u64 - positives;
    // Threshold at the maximum: nothing predicted anomalous.
    let mut best = (
        scores[order[0]],
        Confusion {
            tp: 0,
            fp: 0,
            tn: negatives,
            fn_: positives,
        },
    );
    let (mut tp, mut fp) = (0u64, 0u64);
    let mut k = 0;
    while k < order.len() {
        let v = scores[order[k]];
        while k < order.len() && scores[order[k]] == v {
            if labels[order[k]] {
                tp += 1;
            } else {
                fp += 1;
            }
            k += 1;
        }
        let threshold = if k < order.len() {
            scores[order[k]]
        } else {
            f32::NEG_INFINITY
        };
        let c = Confusion {
            tp,
            fp,
            tn: negatives - fp,
            fn_: positives - tp,
        };
        if c.f1() > best.1.f1() {
            best = (threshold, c);
        }
    }
    Ok(best)
}

/// Detection rate of one anomaly kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KindRecall {
    pub kind: String,
    /// Anomalous windows of this kind scored above the threshold.
    pub detected: u64,
    /// Anomalous windows of this kind.
    pub total: u64,
}

/// Recall per anomaly kind over windows labelled anomalous, in `windows.kind_names` order.
pub fn recall_by_kind(
    scores: &[f32],
    windows: &Windows,
    threshold: f32,
) -> Result<Vec<KindRecall>, RfError> {
    if scores.len() != windows.len() {
        return Err(RfError::InvalidArgument(format!(
            "{} scores but {} windows",
            scores.len(),
            windows.len()
        )));
    }
    let mut out: Vec<KindRecall> = windows
        .kind_names
        .iter()
        .map(|k| KindRecall {
            kind: k.clone(),
            detected: 0,
            total: 0,
        })
        .collect();
    for (k, &s) in scores.iter().enumerate() {
        if let (true, Some(kind)) = (windows.labels[k], windows.kinds[k]) {
            let r = &mut out[kind as usize];
            r.total += 1;
            if s > threshold {
                r.detected += 1;
            }
        }
    }
    Ok(out)
}
