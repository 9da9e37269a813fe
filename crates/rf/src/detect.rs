//! The online detector (`lowprec rf detect`): learn "normal" from the start of a stream, then
//! score every window while the model keeps learning.
//!
//! # Operation
//! 1. **Collect**: read samples until `train_windows` windows (default 1000) are complete.
//!    The normalisation scale ([`Normaliser::fit`]) is estimated on exactly those samples and
//!    fixed from then on.
//! 2. **Train**: `ae.iterations` iterations of low-precision SGD on that batch
//!    ([`Autoencoder::train`]: constant learning rate, then SWA), threshold from the batch's
//!    reconstruction errors by the configured rule. Health check (no labels needed): if
//!    the threshold exceeds `max_spread` (4) times the batch's median error, the training
//!    got stuck with part of the normal signal badly reconstructed (measured: a spread of
//!    about 2.3 when training works, 5 to 20 when it does not), and the model is
//!    retrained from the next model seed, at most `max_attempts` (4) trainings in all; if
//!    none passes, the one with the smallest spread runs.
//!    The batch's own windows are then scored by the chosen model, so every window of the
//!    stream gets a record.
//! 3. **Score** every following window, in scoring batches of `score_batch` windows (a batch
//!    is cut only by the window count, so the results never depend on how the input arrives).
//! 4. **Refresh schedule**: after every `refresh_every` scored windows (counted from the end
//!    of the training batch), `refresh_iterations` more iterations run on the most recent
//!    `train_windows` windows that were *not* flagged (so anomalies are not learned as
//!    normal), continuing from the SGD weights at the SWA learning rate with a fresh average;
//!    the new average scores from the next batch on and the threshold is refitted on that
//!    refresh batch. A refresh needs a full batch of unflagged windows, else it is skipped.
//!
//! The per-window record is `(index, sample offset, error, flag)`, plus the label when the
//! recording is annotated; the summary adds the throughput and, with labels, precision,
//! recall and F1 over all windows.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use lowprec_kernels::GemmBackend;

use crate::autoencoder::{parse_precision, AeConfig, Autoencoder, ModelOptions};
use crate::metrics::{
    best_f1, calibrate_threshold, percentile, pr_auc, roc_auc, Calibration, Confusion,
};
use crate::sigmf::{read_recording, ReadOptions, SampleStream};
use crate::window::{make_windows, LabelRange, Normaliser, WindowConfig, WindowStream, Windows};
use crate::{Iq, RfError};

/// Settings of the online detector; the defaults are the documented schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct DetectConfig {
    pub window: WindowConfig,
    /// Windows collected for the first training batch (and kept for each refresh).
    pub train_windows: usize,
    /// The model; `ae.iterations` is the number of initial training iterations.
    pub ae: AeConfig,
    /// Scored windows between refreshes; 0 disables refreshing.
    pub refresh_every: u64,
    pub refresh_iterations: u64,
    /// Windows per scoring batch.
    pub score_batch: usize,
    /// Samples read from the input per chunk.
    pub chunk_samples: usize,
    /// Health check of the initial training (label-free): when the threshold exceeds
    /// `max_spread` times the median training error, the model is retrained from the next
    /// model seed, up to `max_attempts` trainings in all. 0 disables the check.
    pub max_spread: f64,
    pub max_attempts: u32,
    /// Set the threshold on labelled windows instead of by the rule (after the initial
    /// training and after each refresh).
    pub calibration: Option<StreamCalibration>,
}

/// A labelled recording whose windows (normalised like the stream's) calibrate the threshold.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamCalibration {
    /// Its name, for the summary.
    pub name: String,
    pub samples: Vec<Iq>,
    pub labels: Vec<LabelRange>,
    pub target: Calibration,
}

/// The calibration's result in the summary.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CalibrationJson {
    pub source: String,
    pub target: String,
    pub windows: usize,
    pub anomalous: usize,
    /// Threshold after the initial training (refreshes recalibrate: see `thresholds`).
    pub threshold: f32,
    /// On the calibration windows, at that threshold.
    pub f1: f64,
    pub false_alarm_rate: f64,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            window: WindowConfig::default(),
            train_windows: 1000,
            ae: AeConfig::default(),
            // Four seconds of a 1 MS/s stream with 16-sample windows: 10 bfp8 iterations
            // cost about 50 ms here, so refreshing keeps to about 1% of the stream's time.
            refresh_every: 250_000,
            refresh_iterations: 10,
            score_batch: 1000,
            chunk_samples: 1 << 16,
            max_spread: 4.0,
            max_attempts: 4,
            calibration: None,
        }
    }
}

impl DetectConfig {
    pub fn validate(&self) -> Result<(), RfError> {
        self.window.validate()?;
        self.ae.validate()?;
        if self.ae.dim != self.window.dim() {
            return Err(RfError::InvalidArgument(format!(
                "the auto-encoder takes {} reals but windows of {} samples give {}",
                self.ae.dim,
                self.window.len,
                self.window.dim()
            )));
        }
        if self.train_windows < 2 || self.score_batch == 0 || self.chunk_samples == 0 {
            return Err(RfError::InvalidArgument(format!(
                "need at least 2 training windows, a scoring batch and a chunk of at least 1 \
                 (got {}, {}, {})",
                self.train_windows, self.score_batch, self.chunk_samples
            )));
        }
        Ok(())
    }
}

/// The options of `rf detect` on a recording, as given; [`Self::config`] checks them and
/// builds the [`DetectConfig`].
#[derive(Clone, Debug, PartialEq)]
pub struct DetectOptions {
    pub window: WindowConfig,
    /// Precision policy (`--precision`).
    pub precision: String,
    pub train_windows: usize,
    pub model: ModelOptions,
    pub refresh_every: u64,
    pub refresh_iterations: u64,
    pub score_batch: usize,
    pub max_spread: f64,
    pub max_attempts: u32,
    /// Annotated SigMF recording whose windows calibrate the threshold (`--calibrate`).
    pub calibrate: Option<PathBuf>,
    /// `f1` or `far:R` ([`Calibration`]'s syntax).
    pub calibrate_target: String,
}

impl Default for DetectOptions {
    fn default() -> Self {
        let d = DetectConfig::default();
        DetectOptions {
            window: d.window,
            precision: "bfp8".into(),
            train_windows: d.train_windows,
            model: ModelOptions::default(),
            refresh_every: d.refresh_every,
            refresh_iterations: d.refresh_iterations,
            score_batch: d.score_batch,
            max_spread: d.max_spread,
            max_attempts: d.max_attempts,
            calibrate: None,
            calibrate_target: "f1".into(),
        }
    }
}

impl DetectOptions {
    /// The checked settings; the calibration recording, if any, is read with `read`.
    pub fn config(&self, read: ReadOptions) -> Result<DetectConfig, RfError> {
        let window = self.window;
        window.validate()?;
        let precision = parse_precision("--precision", &self.precision)?;
        let calibration = match &self.calibrate {
            None => None,
            Some(path) => Some(load_calibration(path, &self.calibrate_target, read)?),
        };
        let cfg = DetectConfig {
            window,
            train_windows: self.train_windows,
            ae: self.model.ae_config(window.dim(), precision)?,
            refresh_every: self.refresh_every,
            refresh_iterations: self.refresh_iterations,
            score_batch: self.score_batch,
            chunk_samples: DetectConfig::default().chunk_samples,
            max_spread: self.max_spread,
            max_attempts: self.max_attempts,
            calibration,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Reads the annotated SigMF recording at `path` as a calibration set with `target` (`f1` or
/// `far:R`); a recording without annotations is an error.
pub fn load_calibration(
    path: &Path,
    target: &str,
    read: ReadOptions,
) -> Result<StreamCalibration, RfError> {
    let rec = read_recording(path, read)?;
    let labels = rec.label_ranges()?;
    if labels.is_empty() {
        return Err(RfError::bad_option(
            "--calibrate",
            path.display().to_string(),
            "the recording has no annotations to calibrate on",
        ));
    }
    Ok(StreamCalibration {
        name: path.display().to_string(),
        samples: rec.samples,
        labels,
        target: target.parse()?,
    })
}

/// [`run_detector`] with every record written to `out` as a JSON line (`out_name` names it in
/// errors), flushed at the end.
pub fn run_detector_jsonl<R: Read>(
    stream: &mut SampleStream<R>,
    labels: &[LabelRange],
    has_labels: bool,
    sample_rate_hz: Option<f64>,
    cfg: &DetectConfig,
    backend: &dyn GemmBackend,
    out: &mut dyn Write,
    out_name: &str,
    progress: &mut dyn FnMut(&Progress),
) -> Result<DetectSummary, RfError> {
    let mut line = String::with_capacity(128);
    let mut sink = |r: &WindowRecord| {
        line.clear();
        r.to_json_line(&mut line);
        line.push('\n');
        out.write_all(line.as_bytes())
            .map_err(|e| RfError::io(out_name, e))
    };
    let summary = run_detector(
        stream,
        labels,
        has_labels,
        sample_rate_hz,
        cfg,
        backend,
        &mut sink,
        progress,
    )?;
    out.flush().map_err(|e| RfError::io(out_name, e))?;
    Ok(summary)
}

/// One scored window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WindowRecord {
    /// Window number in the stream (0-based).
    pub index: u64,
    /// Index of its first sample.
    pub offset: u64,
    /// Reconstruction error (mean squared error over its reals).
    pub error: f32,
    /// `error > threshold` at the time it was scored.
    pub flag: bool,
    /// Whether the annotations mark it anomalous (annotated recordings only).
    pub label: Option<bool>,
}

impl WindowRecord {
    /// The record as one JSON line (no trailing newline):
    /// `{"index":..,"offset":..,"error":..,"flag":..}` plus `"label"` when known.
    pub fn to_json_line(&self, out: &mut String) {
        // itoa/zmij instead of `write!`: formatting is a visible share of the detector's time
        // at millions of windows per second. zmij prints the shortest round-trip form.
        let mut int = itoa::Buffer::new();
        let mut float = zmij::Buffer::new();
        out.push_str("{\"index\":");
        out.push_str(int.format(self.index));
        out.push_str(",\"offset\":");
        out.push_str(int.format(self.offset));
        out.push_str(",\"error\":");
        out.push_str(float.format_finite(self.error));
        out.push_str(if self.flag {
            ",\"flag\":true"
        } else {
            ",\"flag\":false"
        });
        match self.label {
            Some(true) => out.push_str(",\"label\":true"),
            Some(false) => out.push_str(",\"label\":false"),
            None => {}
        }
        out.push('}');
    }
}

/// Where the detector is (for progress reports).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Progress {
    pub samples: u64,
    pub windows: u64,
    pub flagged: u64,
    pub refreshes: u64,
    pub seconds: f64,
}

/// What a run did.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct DetectSummary {
    pub samples: u64,
    pub windows: u64,
    pub flagged: u64,
    pub train_windows: usize,
    pub initial_iterations: u64,
    /// Initial trainings run (more than 1 when the health check rejected a model).
    pub training_attempts: u32,
    /// The model seed of the model that ran.
    pub model_seed: u64,
    /// Threshold over median training error of each attempt.
    pub training_spreads: Vec<f64>,
    pub refreshes: u64,
    pub skipped_refreshes: u64,
    pub precision_policy: String,
    pub threshold_rule: String,
    pub normalisation_scale: f32,
    /// Threshold after the initial training and after each refresh.
    pub thresholds: Vec<f32>,
    /// Wall time of the whole run (reading, training, scoring, writing records).
    pub seconds: f64,
    pub initial_training_seconds: f64,
    pub refresh_seconds: f64,
    pub scoring_seconds: f64,
    pub samples_per_second: f64,
    /// `samples_per_second / sample_rate` when the sample rate is known.
    pub realtime_factor: Option<f64>,
    pub sample_rate_hz: Option<f64>,
    /// Against the annotations (annotated recordings only).
    pub confusion: Option<ConfusionJson>,
    /// Threshold-free figures over every scored window (annotated recordings only): ROC AUC,
    /// PR AUC and the best-threshold F1, beside the F1 at the thresholds used in `confusion`.
    /// Scores after a refresh come from the refreshed model.
    pub roc_auc: Option<f64>,
    pub pr_auc: Option<f64>,
    pub best_f1: Option<f64>,
    /// With a calibration recording: its windows and the threshold they set.
    pub calibration: Option<CalibrationJson>,
}

/// Confusion counts and ratios for JSON.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ConfusionJson {
    pub tp: u64,
    pub fp: u64,
    pub tn: u64,
    #[serde(rename = "fn")]
    pub fn_: u64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

impl From<Confusion> for ConfusionJson {
    fn from(c: Confusion) -> Self {
        ConfusionJson {
            tp: c.tp,
            fp: c.fp,
            tn: c.tn,
            fn_: c.fn_,
            precision: c.precision(),
            recall: c.recall(),
            f1: c.f1(),
        }
    }
}

/// The running detector's state after the first training.
struct Running<'a> {
    cfg: &'a DetectConfig,
    backend: &'a dyn GemmBackend,
    ae: Autoencoder,
    has_labels: bool,
    /// Windows waiting to be scored.
    pending: Windows,
    /// Most recent unflagged windows, for refreshes.
    ring: Ring,
    next_index: u64,
    since_refresh: u64,
    confusion: Confusion,
    /// Calibration windows and target, when the threshold is calibrated.
    calibration: Option<(Windows, Calibration)>,
    /// Every scored window's error and label (annotated recordings only).
    labelled_scores: Vec<(f32, bool)>,
    flagged: u64,
    refreshes: u64,
    skipped_refreshes: u64,
    thresholds: Vec<f32>,
    refresh_seconds: f64,
    scoring_seconds: f64,
}

impl Running<'_> {
    fn score_pending(
        &mut self,
        sink: &mut dyn FnMut(&WindowRecord) -> Result<(), RfError>,
    ) -> Result<(), RfError> {
        let d = self.cfg.window.dim();
        let mut start = 0;
        while start < self.pending.len() {
            let end = (start + self.cfg.score_batch).min(self.pending.len());
            let t0 = Instant::now();
            let scores = self
                .ae
                .scores(self.backend, &self.pending.inputs[start * d..end * d])?;
            self.scoring_seconds += t0.elapsed().as_secs_f64();
            let threshold = self.ae.threshold().expect("fitted in training");
            for (k, &error) in scores.iter().enumerate() {
                let w = start + k;
                let flag = error > threshold;
                let label = self.has_labels.then(|| self.pending.labels[w]);
                let rec = WindowRecord {
                    index: self.next_index,
                    offset: self.pending.starts[w],
                    error,
                    flag,
                    label,
                };
                self.next_index += 1;
                if flag {
                    self.flagged += 1;
                } else {
                    self.ring.push(&self.pending.inputs[w * d..(w + 1) * d]);
                }
                if let Some(l) = label {
                    self.labelled_scores.push((error, l));
                    match (flag, l) {
                        (true, true) => self.confusion.tp += 1,
                        (true, false) => self.confusion.fp += 1,
                        (false, false) => self.confusion.tn += 1,
                        (false, true) => self.confusion.fn_ += 1,
                    }
                }
                sink(&rec)?;
            }
            self.since_refresh += (end - start) as u64;
            if self.cfg.refresh_every > 0 && self.since_refresh >= self.cfg.refresh_every {
                self.refresh()?;
            }
            start = end;
        }
        self.pending.clear();
        Ok(())
    }

    fn refresh(&mut self) -> Result<(), RfError> {
        self.since_refresh = 0;
        let Some(batch) = self.ring.ordered() else {
            self.skipped_refreshes += 1;
            return Ok(());
        };
        let t0 = Instant::now();
        let mut t = self
            .ae
            .refresh(self.backend, &batch, self.cfg.refresh_iterations)?;
        if let Some((w, target)) = &self.calibration {
            t = calibrate(&mut self.ae, self.backend, w, *target)?.0;
        }
        self.refresh_seconds += t0.elapsed().as_secs_f64();
        self.thresholds.push(t);
        self.refreshes += 1;
        Ok(())
    }
}

/// The last `cap` windows pushed (rows of `dim` reals).
struct Ring {
    dim: usize,
    cap: usize,
    data: Vec<f32>,
    len: usize,
    next: usize,
}

impl Ring {
    fn new(dim: usize, cap: usize) -> Ring {
        Ring {
            dim,
            cap,
            data: vec![0.0; dim * cap],
            len: 0,
            next: 0,
        }
    }

    fn push(&mut self, window: &[f32]) {
        let d = self.dim;
        self.data[self.next * d..(self.next + 1) * d].copy_from_slice(window);
        self.next = (self.next + 1) % self.cap;
        self.len = (self.len + 1).min(self.cap);
    }

    /// The windows oldest first (stream order), once the ring is full.
    fn ordered(&self) -> Option<Vec<f32>> {
        if self.len < self.cap {
            return None;
        }
        let split = self.next * self.dim;
        let mut out = Vec::with_capacity(self.data.len());
        out.extend_from_slice(&self.data[split..]);
        out.extend_from_slice(&self.data[..split]);
        Some(out)
    }
}

/// Runs the online detector over a sample stream. `labels` are the recording's annotations
/// (empty for raw input; `has_labels` says whether records carry labels). Every window's
/// record goes to `sink` in stream order; `progress` is called after every chunk read.
pub fn run_detector<R: Read>(
    stream: &mut SampleStream<R>,
    labels: &[LabelRange],
    has_labels: bool,
    sample_rate_hz: Option<f64>,
    cfg: &DetectConfig,
    backend: &dyn GemmBackend,
    sink: &mut dyn FnMut(&WindowRecord) -> Result<(), RfError>,
    progress: &mut dyn FnMut(&Progress),
) -> Result<DetectSummary, RfError> {
    cfg.validate()?;
    let t_start = Instant::now();
    let wcfg = cfg.window;
    // 1. Collect the samples of the first training batch.
    let need = (cfg.train_windows as u64 - 1) * wcfg.stride as u64 + wcfg.len as u64;
    let mut head: Vec<Iq> = Vec::new();
    let mut chunk: Vec<Iq> = Vec::new();
    let mut ended = false;
    while (head.len() as u64) < need {
        let want = (need - head.len() as u64).min(cfg.chunk_samples as u64) as usize;
        if stream.read_chunk(&mut chunk, want)? == 0 {
            ended = true;
            break;
        }
        head.extend_from_slice(&chunk);
    }
    if (head.len() as u64) < need {
        return Err(RfError::InvalidArgument(format!(
            "the stream ended after {} samples; the first training batch of {} windows of {} \
             samples every {} needs {need}",
            head.len(),
            cfg.train_windows,
            wcfg.len,
            wcfg.stride
        )));
    }
    let norm = Normaliser::fit(&head)?;
    let mut windows = WindowStream::new(wcfg, norm, labels)?;
    let mut train = windows.empty_windows();
    windows.push(&head, &mut train);
    debug_assert_eq!(train.len(), cfg.train_windows);
    // 2. Train on it, retraining from the next seed if the errors of the batch itself are
    // spread far above their median (a model that reconstructs part of the normal signal
    // badly: its threshold would hide the anomalies).
    let t0 = Instant::now();
    let mut spreads = Vec::new();
    let mut attempt = 0u32;
    // (spread, model, threshold) of the best attempt so far.
    let mut best: Option<(f64, Autoencoder, f32)> = None;
    let (ae, threshold) = loop {
        let seed = cfg.ae.seed.wrapping_add(u64::from(attempt));
        let mut ae = Autoencoder::new(AeConfig {
            seed,
            ..cfg.ae.clone()
        })?;
        let threshold = ae.train(backend, &train.inputs)?;
        attempt += 1;
        if cfg.max_spread <= 0.0 {
            break (ae, threshold);
        }
        let median = percentile(&ae.scores(backend, &train.inputs)?, 50.0)?;
        let spread = f64::from(threshold) / median.max(f64::MIN_POSITIVE);
        spreads.push(spread);
        if spread <= cfg.max_spread {
            break (ae, threshold);
        }
        if best.as_ref().is_none_or(|b| spread < b.0) {
            best = Some((spread, ae, threshold));
        }
        if attempt >= cfg.max_attempts.max(1) {
            // None passed: the least spread one.
            let (_, ae, threshold) = best.take().expect("at least one attempt");
            break (ae, threshold);
        }
    };
    // 2b. Calibration: the threshold from labelled windows instead of the rule.
    let mut ae = ae;
    let (threshold, calibration, calibration_json) = match &cfg.calibration {
        None => (threshold, None, None),
        Some(c) => {
            let w = make_windows(&c.samples, wcfg, norm, &c.labels)?;
            if w.is_empty() {
                return Err(RfError::InvalidArgument(format!(
                    "{}: the calibration recording has no complete window",
                    c.name
                )));
            }
            let (t, conf) = calibrate(&mut ae, backend, &w, c.target)?;
            let json = CalibrationJson {
                source: c.name.clone(),
                target: c.target.to_string(),
                windows: w.len(),
                anomalous: w.anomalous(),
                threshold: t,
                f1: conf.f1(),
                false_alarm_rate: conf.false_positive_rate(),
            };
            (t, Some((w, c.target)), Some(json))
        }
    };
    let initial_training_seconds = t0.elapsed().as_secs_f64();
    let mut run = Running {
        cfg,
        backend,
        ae,
        has_labels,
        pending: train,
        ring: Ring::new(wcfg.dim(), cfg.train_windows),
        next_index: 0,
        since_refresh: 0,
        confusion: Confusion::default(),
        calibration,
        labelled_scores: Vec::new(),
        flagged: 0,
        refreshes: 0,
        skipped_refreshes: 0,
        thresholds: vec![threshold],
        refresh_seconds: 0.0,
        scoring_seconds: 0.0,
    };
    // The training windows themselves: scored, but they do not count towards a refresh.
    run.score_pending(sink)?;
    run.since_refresh = 0;
    let report = |run: &Running<'_>, samples: u64| Progress {
        samples,
        windows: run.next_index,
        flagged: run.flagged,
        refreshes: run.refreshes,
        seconds: t_start.elapsed().as_secs_f64(),
    };
    progress(&report(&run, stream.position()));
    // 3. Score the rest as it arrives.
    let d = wcfg.dim();
    if !ended {
        while stream.read_chunk(&mut chunk, cfg.chunk_samples)? > 0 {
            windows.push(&chunk, &mut run.pending);
            // Score whole batches now, keep the remainder for the next chunk.
            let whole = run.pending.len() / cfg.score_batch * cfg.score_batch;
            if whole > 0 {
                let rest = split_off_windows(&mut run.pending, whole, d);
                run.score_pending(sink)?;
                run.pending = rest;
            }
            progress(&report(&run, stream.position()));
        }
    }
    run.score_pending(sink)?;
    let seconds = t_start.elapsed().as_secs_f64();
    let samples = stream.position();
    let samples_per_second = samples as f64 / seconds.max(1e-12);
    let (scores, labels): (Vec<f32>, Vec<bool>) = run.labelled_scores.iter().copied().unzip();
    let (roc, pr, best) = if has_labels && !scores.is_empty() {
        (
            roc_auc(&scores, &labels)?,
            pr_auc(&scores, &labels)?,
            Some(best_f1(&scores, &labels)?.1.f1()),
        )
    } else {
        (None, None, None)
    };
    Ok(DetectSummary {
        samples,
        windows: run.next_index,
        flagged: run.flagged,
        train_windows: cfg.train_windows,
        initial_iterations: cfg.ae.iterations,
        training_attempts: attempt,
        model_seed: run.ae.cfg.seed,
        training_spreads: spreads,
        refreshes: run.refreshes,
        skipped_refreshes: run.skipped_refreshes,
        precision_policy: cfg.ae.precision.name.clone(),
        threshold_rule: match &cfg.calibration {
            Some(c) => c.target.to_string(),
            None => cfg.ae.threshold.to_string(),
        },
        normalisation_scale: norm.scale,
        thresholds: run.thresholds,
        seconds,
        initial_training_seconds,
        refresh_seconds: run.refresh_seconds,
        scoring_seconds: run.scoring_seconds,
        samples_per_second,
        realtime_factor: sample_rate_hz.map(|fs| samples_per_second / fs),
        sample_rate_hz,
        confusion: has_labels.then(|| run.confusion.into()),
        roc_auc: roc,
        pr_auc: pr,
        best_f1: best,
        calibration: calibration_json,
    })
}

/// Sets `ae`'s threshold from its scores of the labelled windows `w`; returns it and the
/// confusion on `w`.
fn calibrate(
    ae: &mut Autoencoder,
    backend: &dyn GemmBackend,
    w: &Windows,
    target: Calibration,
) -> Result<(f32, Confusion), RfError> {
    let scores = ae.scores(backend, &w.inputs)?;
    let t = calibrate_threshold(&scores, &w.labels, target)?;
    ae.set_threshold(t);
    Ok((t, Confusion::from_scores(&scores, &w.labels, t)?))
}

/// Splits `w` after its first `at` windows, returning the rest.
fn split_off_windows(w: &mut Windows, at: usize, dim: usize) -> Windows {
    Windows {
        dim: w.dim,
        inputs: w.inputs.split_off(at * dim),
        starts: w.starts.split_off(at),
        labels: w.labels.split_off(at),
        kinds: w.kinds.split_off(at),
        kind_names: w.kind_names.clone(),
    }
}
