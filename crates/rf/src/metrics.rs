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
//! * `Mad(k)`: `median + k * 1.4826 * MAD`, MAD the median absolute deviation from the median
//!   (1.4826 MAD estimates the standard deviation of normal data). Robust: a few badly
//!   reconstructed training windows move it little, where they drag a high percentile.
//! * `Evt(q)`: peaks over threshold (Pickands-Balkema-de Haan): the errors above their 90th
//!   percentile `u` are fitted with a generalised Pareto tail by the method of moments (mean
//!   `m` and variance `v` of the excesses: shape `xi = (1 - m^2 / v) / 2`, scale
//!   `sigma = m (m^2 / v + 1) / 2`), and the threshold is the level a normal window exceeds
//!   with probability `q`: `u + sigma / xi ((q n / n_u)^-xi - 1)` (`u + sigma ln(n_u / (q n))`
//!   when `xi` is 0). It extrapolates beyond the largest training error when `q` is below
//!   `1 / n`, which no percentile can.
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
    /// Median plus k scaled median absolute deviations.
    Mad(f64),
    /// The generalised-Pareto tail level exceeded with probability q.
    Evt(f64),
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
            ThresholdRule::Mad(k) => write!(f, "median+{k}mad"),
            ThresholdRule::Evt(q) => write!(f, "evt:{q}"),
        }
    }
}

impl FromStr for ThresholdRule {
    type Err = RfError;

    /// Accepts `p99`, `p99.5`, `percentile:99`, `mean+3std`, `mean+2.5std`, `median+6mad`
    /// (or `mad:6`) and `evt:1e-4`.
    fn from_str(s: &str) -> Result<Self, RfError> {
        let bad = || {
            RfError::InvalidArgument(format!(
                "threshold rule {s:?}: expected pNN (percentile, 0..=100), mean+Kstd, median+Kmad \
                 or evt:Q (tail probability, 0 < Q < 0.1)"
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
        } else if let Some(k) = t
            .strip_prefix("median+")
            .and_then(|r| r.strip_suffix("mad"))
            .or_else(|| t.strip_prefix("mad:"))
        {
            ThresholdRule::Mad(k.parse().map_err(|_| bad())?)
        } else if let Some(q) = t.strip_prefix("evt:") {
            ThresholdRule::Evt(q.parse().map_err(|_| bad())?)
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
            ThresholdRule::MeanStd(k) | ThresholdRule::Mad(k) if k.is_finite() => Ok(()),
            ThresholdRule::Evt(q) if q > 0.0 && q < EVT_TAIL_FRACTION => Ok(()),
            _ => Err(RfError::InvalidArgument(format!(
                "threshold rule {self}: percentile must be in [0, 100], k finite, the EVT tail \
                 probability in (0, {EVT_TAIL_FRACTION})"
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

/// Fraction of the errors the EVT rule fits its tail to (those above the 90th percentile).
pub const EVT_TAIL_FRACTION: f64 = 0.1;

/// Median of `values` (the 50th percentile as defined above).
pub fn median(values: &[f32]) -> Result<f64, RfError> {
    percentile(values, 50.0)
}

/// `median + k * 1.4826 * MAD`.
fn mad_threshold(errors: &[f32], k: f64) -> Result<f64, RfError> {
    let m = median(errors)?;
    let dev: Vec<f32> = errors
        .iter()
        .map(|&e| (f64::from(e) - m).abs() as f32)
        .collect();
    Ok(m + k * 1.4826 * median(&dev)?)
}

/// The peaks-over-threshold level exceeded with probability `q` (see the module docs).
fn evt_threshold(errors: &[f32], q: f64) -> Result<f64, RfError> {
    let u = percentile(errors, 100.0 * (1.0 - EVT_TAIL_FRACTION))?;
    let excess: Vec<f64> = errors
        .iter()
        .map(|&e| f64::from(e) - u)
        .filter(|&x| x > 0.0)
        .collect();
    if excess.len() < 3 {
        return Err(RfError::InvalidArgument(format!(
            "EVT threshold: {} errors above the 90th percentile; the tail fit needs at least 3 \
             (more training windows, or a percentile rule)",
            excess.len()
        )));
    }
    let nu = excess.len() as f64;
    let m = excess.iter().sum::<f64>() / nu;
    let v = excess.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (nu - 1.0);
    let ratio = q * errors.len() as f64 / nu;
    if v <= 0.0 {
        return Ok(u + m);
    }
    let xi = 0.5 * (1.0 - m * m / v);
    let sigma = 0.5 * m * (m * m / v + 1.0);
    Ok(if xi.abs() < 1e-9 {
        u - sigma * ratio.ln()
    } else {
        u + sigma / xi * (ratio.powf(-xi) - 1.0)
    })
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
        ThresholdRule::Mad(k) => mad_threshold(errors, k)?,
        ThresholdRule::Evt(q) => evt_threshold(errors, q)?,
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

/// Area under the ROC curve: the probability that a random anomalous window scores above a
/// random normal one, ties counting one half (the Mann-Whitney statistic, from average
/// ranks). `None` without both classes. NaN scores are an error.
pub fn roc_auc(scores: &[f32], labels: &[bool]) -> Result<Option<f64>, RfError> {
    let order = ranked(scores, labels)?;
    let pos = labels.iter().filter(|&&l| l).count() as f64;
    let neg = labels.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return Ok(None);
    }
    // Ascending order; ties share the mean of their ranks (1-based).
    let mut rank_sum = 0.0;
    let mut k = 0;
    while k < order.len() {
        let mut j = k;
        while j < order.len() && scores[order[j]] == scores[order[k]] {
            j += 1;
        }
        let mean_rank = (k + 1 + j) as f64 / 2.0;
        rank_sum += mean_rank * order[k..j].iter().filter(|&&i| labels[i]).count() as f64;
        k = j;
    }
    Ok(Some((rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)))
}

/// Area under the precision-recall curve as average precision: the sum over the distinct
/// thresholds, highest first, of precision times the recall gained there (scikit-learn's
/// `average_precision_score`). `None` without anomalous windows.
pub fn pr_auc(scores: &[f32], labels: &[bool]) -> Result<Option<f64>, RfError> {
    let mut order = ranked(scores, labels)?;
    order.reverse();
    let pos = labels.iter().filter(|&&l| l).count() as f64;
    if pos == 0.0 {
        return Ok(None);
    }
    let (mut tp, mut seen, mut ap) = (0.0, 0.0, 0.0);
    let mut k = 0;
    while k < order.len() {
        let mut j = k;
        let mut gained = 0.0;
        while j < order.len() && scores[order[j]] == scores[order[k]] {
            if labels[order[j]] {
                gained += 1.0;
            }
            j += 1;
        }
        tp += gained;
        seen += (j - k) as f64;
        ap += (tp / seen) * (gained / pos);
        k = j;
    }
    Ok(Some(ap))
}

/// Indices sorted by ascending score, after checking lengths and NaNs.
fn ranked(scores: &[f32], labels: &[bool]) -> Result<Vec<usize>, RfError> {
    if scores.len() != labels.len() {
        return Err(RfError::InvalidArgument(format!(
            "{} scores but {} labels",
            scores.len(),
            labels.len()
        )));
    }
    if let Some(k) = scores.iter().position(|s| s.is_nan()) {
        return Err(RfError::InvalidArgument(format!("score {k} is NaN")));
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    Ok(order)
}

/// How `--calibrate` picks a threshold from labelled windows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Calibration {
    /// The threshold with the best F1 on the calibration windows.
    MaxF1,
    /// The lowest threshold whose false-alarm rate on the calibration's normal windows is at
    /// most this.
    FalseAlarmRate(f64),
}

impl FromStr for Calibration {
    type Err = RfError;
    /// `f1` or `far:0.01`.
    fn from_str(s: &str) -> Result<Self, RfError> {
        if s == "f1" {
            return Ok(Calibration::MaxF1);
        }
        match s.strip_prefix("far:").map(str::parse::<f64>) {
            Some(Ok(r)) if (0.0..=1.0).contains(&r) => Ok(Calibration::FalseAlarmRate(r)),
            _ => Err(RfError::InvalidArgument(format!(
                "calibration target {s:?}: expected f1 or far:R (false-alarm rate, 0..=1)"
            ))),
        }
    }
}

impl fmt::Display for Calibration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Calibration::MaxF1 => write!(f, "calibrated:f1"),
            Calibration::FalseAlarmRate(r) => write!(f, "calibrated:far:{r}"),
        }
    }
}

/// The threshold `target` picks on labelled windows' scores.
pub fn calibrate_threshold(
    scores: &[f32],
    labels: &[bool],
    target: Calibration,
) -> Result<f32, RfError> {
    match target {
        Calibration::MaxF1 => {
            if !labels.iter().any(|&l| l) {
                return Err(RfError::InvalidArgument(
                    "calibration for F1 needs anomalous windows among the labelled ones".into(),
                ));
            }
            Ok(best_f1(scores, labels)?.0)
        }
        Calibration::FalseAlarmRate(r) => {
            ranked(scores, labels)?;
            let mut normal: Vec<f32> = scores
                .iter()
                .zip(labels)
                .filter(|(_, &l)| !l)
                .map(|(&s, _)| s)
                .collect();
            if normal.is_empty() {
                return Err(RfError::InvalidArgument(
                    "calibration for a false-alarm rate needs normal windows among the labelled ones"
                        .into(),
                ));
            }
            normal.sort_by(|a, b| b.total_cmp(a));
            // At most `allowed` normal windows may score strictly above the threshold; with
            // ties at the cut, step up to the next distinct value.
            let allowed = (r * normal.len() as f64).floor() as usize;
            if allowed >= normal.len() {
                return Ok(f32::NEG_INFINITY);
            }
            Ok(normal[allowed])
        }
    }
}

/// Threshold-free figures and F1 at a threshold, for a summary.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ScoreSummary {
    pub windows: usize,
    pub anomalous: usize,
    pub threshold: f32,
    pub tp: u64,
    pub fp: u64,
    pub tn: u64,
    #[serde(rename = "fn")]
    pub fn_: u64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// F1 at the best threshold for these labels (an oracle, for reference) and that threshold.
    pub best_f1: f64,
    pub best_threshold: f32,
    pub roc_auc: Option<f64>,
    pub pr_auc: Option<f64>,
}

impl ScoreSummary {
    pub fn new(scores: &[f32], labels: &[bool], threshold: f32) -> Result<Self, RfError> {
        let c = Confusion::from_scores(scores, labels, threshold)?;
        let (best_threshold, best) = best_f1(scores, labels)?;
        Ok(ScoreSummary {
            windows: scores.len(),
            anomalous: labels.iter().filter(|&&l| l).count(),
            threshold,
            tp: c.tp,
            fp: c.fp,
            tn: c.tn,
            fn_: c.fn_,
            precision: c.precision(),
            recall: c.recall(),
            f1: c.f1(),
            best_f1: best.f1(),
            best_threshold,
            roc_auc: roc_auc(scores, labels)?,
            pr_auc: pr_auc(scores, labels)?,
        })
    }
}
