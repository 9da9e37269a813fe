//! `lowprec rf ...`: RF signals for the anomaly-detection case study (002 Section V).
//!
//! * `generate`: an FM recording with injected anomalies, as SigMF (`cf32_le`) or raw cf32 on
//!   stdout.
//! * `pair`: the standard labelled train/test pair of the experiment.
//! * `inspect`: read and validate a recording (SigMF, raw file or stdin, streamed in chunks)
//!   and summarise its samples, annotations and window labels.
//! * `baseline`: the PCA reconstruction-error detector (a linear auto-encoder) on a train/test
//!   pair, with the percentile threshold rule and precision/recall/F1.
//! * `detect`: the online auto-encoder detector; `experiment`: 002 Fig. 9.
//!
//! This module parses arguments into the rf crate's option structs and prints results (and
//! draws Fig. 9); checking the options and doing the work belong to `lowprec_rf`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use lowprec_data::fsutil::write_atomic;
use lowprec_rf::autoencoder::ModelOptions;
use lowprec_rf::baseline::run_baseline;
use lowprec_rf::detect::{run_detector_jsonl, DetectOptions, Progress};
use lowprec_rf::experiment::{run_experiment, ExperimentOptions};
use lowprec_rf::inspect::summarise;
use lowprec_rf::pair::write_pair;
use lowprec_rf::sigmf::{
    atomic_write, open_input, sigmf_paths, write_cf32, write_meta, InputSource,
};
use lowprec_rf::spec::{GenerateOptions, KindOverrides};
use lowprec_rf::vectors::{run_vectors, VectorOptions};
use lowprec_rf::{
    write_sigmf, Generator, NonFinitePolicy, PairFm, ReadOptions, SigMfMeta, StandardPairConfig,
    ThresholdRule, WindowConfig,
};

#[derive(Subcommand, Debug)]
pub enum RfCommand {
    /// Generate an FM recording with anomalies (SigMF cf32_le, or raw cf32 on stdout).
    Generate(Box<GenerateArgs>),
    /// Write the standard train/test recording pair of the anomaly-detection experiment.
    Pair(PairArgs),
    /// Read and validate a recording; summarise samples, annotations and window labels.
    Inspect(InspectArgs),
    /// PCA reconstruction-error detector (linear auto-encoder reference) on a train/test pair.
    Baseline(BaselineArgs),
    /// Online auto-encoder anomaly detector on a recording or stdin: one JSONL line per window.
    Detect(Box<DetectArgs>),
    /// 002 Fig. 9: F1 vs training iterations, wall time and projected FPGA time (fp32, bfp8).
    Experiment(Box<ExperimentArgs>),
}

pub fn run(cmd: &RfCommand) -> Result<()> {
    match cmd {
        RfCommand::Generate(a) => generate(a),
        RfCommand::Pair(a) => pair(a),
        RfCommand::Inspect(a) => inspect(a),
        RfCommand::Baseline(a) => baseline(a),
        RfCommand::Detect(a) => with_threads(a.threads, || detect(a)),
        RfCommand::Experiment(a) => with_threads(a.threads, || experiment(a)),
    }
}

/// Runs `f` on a rayon pool of `threads` threads (0: rayon's default).
fn with_threads(threads: usize, f: impl FnOnce() -> Result<()> + Send) -> Result<()> {
    let threads = crate::util::threads_or_default((threads > 0).then_some(threads))?;
    crate::util::with_threads(threads, f)?
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Output base name: writes OUT.sigmf-data and OUT.sigmf-meta (each atomically). `-`
    /// streams raw cf32_le to stdout (metadata only with --meta).
    #[arg(long)]
    pub out: PathBuf,
    /// With `--out -`: also write the SigMF metadata (with checksum) to this file.
    #[arg(long)]
    pub meta: Option<PathBuf>,
    /// Number of complex samples [default: 262144].
    #[arg(long, conflicts_with = "seconds")]
    pub samples: Option<u64>,
    /// Duration in seconds (rounded to whole samples).
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Sample rate, Hz.
    #[arg(long, default_value_t = 1e6)]
    pub sample_rate: f64,
    /// Signal-to-noise ratio in dB: FM power (1) over complex AWGN power across the whole
    /// sampled band.
    #[arg(long, default_value_t = 20.0, allow_negative_numbers = true)]
    pub snr_db: f64,
    /// No additive noise at all (overrides --snr-db).
    #[arg(long)]
    pub no_noise: bool,
    /// Frequency deviation, Hz (peak for tones, 3-sigma for a noise message).
    #[arg(long, default_value_t = 75e3)]
    pub deviation: f64,
    /// Carrier offset from the band centre, Hz.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub carrier_offset: f64,
    /// Message tones, FREQ[@AMPLITUDE] in Hz, comma-separated (e.g. `1000,2500@0.5`);
    /// amplitudes are relative. Default: a band-limited noise message.
    #[arg(long, value_delimiter = ',', conflicts_with = "noise_band")]
    pub tones: Vec<String>,
    /// Band of the noise message, LOW:HIGH in Hz.
    #[arg(long, default_value = "500:15000")]
    pub noise_band: String,
    /// Random tones making up the noise message.
    #[arg(long, default_value_t = 16)]
    pub noise_components: u32,
    /// Anomaly types to inject, comma-separated, repeats allowed (bandpass, chirp, sine): one
    /// per equal slot of the recording, at a seeded position.
    #[arg(long, value_delimiter = ',')]
    pub anomalies: Vec<String>,
    /// Explicitly placed anomaly, TYPE@START+COUNT in samples (e.g. `chirp@100000+4096`);
    /// repeatable. Cannot be combined with --anomalies.
    #[arg(long = "anomaly", conflicts_with = "anomalies")]
    pub anomaly_at: Vec<String>,
    /// Length of each auto-placed anomaly, samples.
    #[arg(long, default_value_t = 2048)]
    pub anomaly_samples: u64,
    /// Anomaly power relative to the FM signal, dB.
    #[arg(long, default_value_t = -6.0, allow_negative_numbers = true)]
    pub anomaly_power_db: f64,
    /// Band-pass anomaly centre, Hz [default: -0.25 x sample rate].
    #[arg(long, allow_negative_numbers = true)]
    pub bandpass_center: Option<f64>,
    /// Band-pass anomaly width, Hz [default: 0.1 x sample rate].
    #[arg(long)]
    pub bandpass_width: Option<f64>,
    /// Chirp start frequency, Hz [default: -0.4 x sample rate].
    #[arg(long, allow_negative_numbers = true)]
    pub chirp_start: Option<f64>,
    /// Chirp end frequency, Hz [default: +0.4 x sample rate].
    #[arg(long, allow_negative_numbers = true)]
    pub chirp_end: Option<f64>,
    /// Sine anomaly frequency, Hz [default: 0.3 x sample rate].
    #[arg(long, allow_negative_numbers = true)]
    pub sine_freq: Option<f64>,
    /// Seed: same seed and arguments give the same bytes.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Samples generated per write (memory only; never changes the bytes).
    #[arg(long, default_value_t = 1 << 16)]
    pub chunk: usize,
    /// Free-text `core:description`.
    #[arg(long)]
    pub description: Option<String>,
}

impl GenerateArgs {
    fn options(&self) -> GenerateOptions {
        GenerateOptions {
            samples: self.samples,
            seconds: self.seconds,
            sample_rate_hz: self.sample_rate,
            snr_db: (!self.no_noise).then_some(self.snr_db),
            deviation_hz: self.deviation,
            carrier_offset_hz: self.carrier_offset,
            tones: self.tones.clone(),
            noise_band: self.noise_band.clone(),
            noise_components: self.noise_components,
            anomalies: self.anomalies.clone(),
            anomaly_at: self.anomaly_at.clone(),
            anomaly_samples: self.anomaly_samples,
            anomaly_power_db: self.anomaly_power_db,
            overrides: KindOverrides {
                bandpass_center_hz: self.bandpass_center,
                bandpass_width_hz: self.bandpass_width,
                chirp_start_hz: self.chirp_start,
                chirp_end_hz: self.chirp_end,
                sine_freq_hz: self.sine_freq,
            },
            seed: self.seed,
        }
    }
}

fn print_annotations(meta: &SigMfMeta) {
    for ann in &meta.annotations {
        println!(
            "  {:>8} at samples [{}, {})",
            ann.label.as_deref().unwrap_or("?"),
            ann.sample_start,
            ann.sample_start + ann.sample_count.unwrap_or(0)
        );
    }
}

fn generate(a: &GenerateArgs) -> Result<()> {
    let generator = Generator::new(a.options().spec()?)?;
    let meta = SigMfMeta::for_generator(&generator, a.description.clone());
    let n = generator.num_samples();
    if a.out.as_os_str() == "-" {
        let stdout = std::io::stdout();
        let mut w = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
        let sha = write_cf32(&mut w, &generator, a.chunk)?;
        if let Some(path) = &a.meta {
            let mut meta = meta;
            meta.global.sha512 = Some(sha);
            meta.global.sample_count = Some(n);
            write_meta(path, &meta)?;
        }
        eprintln!("wrote {n} samples of cf32_le to stdout");
        return Ok(());
    }
    if a.meta.is_some() {
        bail!("--meta is only for --out - (a SigMF recording carries its own metadata)");
    }
    let meta = write_sigmf(&a.out, meta, &generator, a.chunk)?;
    let (meta_path, data_path) = sigmf_paths(&a.out);
    println!(
        "wrote {} ({n} samples, {:.3} s at {} Hz) and {}",
        data_path.display(),
        n as f64 / a.sample_rate,
        a.sample_rate,
        meta_path.display()
    );
    print_annotations(&meta);
    Ok(())
}

#[derive(Args, Debug)]
pub struct PairArgs {
    /// Directory for train.sigmf-{data,meta} and test.sigmf-{data,meta} (created if absent).
    #[arg(long)]
    pub out_dir: PathBuf,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, default_value_t = 1e6)]
    pub sample_rate: f64,
    #[arg(long, default_value_t = 1 << 18)]
    pub train_samples: u64,
    #[arg(long, default_value_t = 1 << 17)]
    pub test_samples: u64,
    #[arg(long, default_value_t = 20.0, allow_negative_numbers = true)]
    pub snr_db: f64,
    #[arg(long, default_value_t = 2048)]
    pub anomaly_samples: u64,
    #[arg(long, default_value_t = 3)]
    pub anomalies_per_kind: u32,
    #[arg(long, default_value_t = -6.0, allow_negative_numbers = true)]
    pub anomaly_power_db: f64,
    /// Anomalies of each type in the training recording (contamination).
    #[arg(long, default_value_t = 0)]
    pub train_anomalies_per_kind: u32,
    /// Narrowband FM (message 0.3-3 kHz, deviation 3 kHz, no offset) instead of the wideband
    /// default; with --anomaly-power-db -12 this is the detection experiment's pair.
    #[arg(long)]
    pub narrowband: bool,
}

fn pair(a: &PairArgs) -> Result<()> {
    let cfg = StandardPairConfig {
        seed: a.seed,
        sample_rate_hz: a.sample_rate,
        train_samples: a.train_samples,
        test_samples: a.test_samples,
        snr_db: a.snr_db,
        anomaly_samples: a.anomaly_samples,
        anomalies_per_kind: a.anomalies_per_kind,
        anomaly_power_db: a.anomaly_power_db,
        train_anomalies_per_kind: a.train_anomalies_per_kind,
        fm: if a.narrowband {
            PairFm::NARROWBAND
        } else {
            PairFm::WIDEBAND
        },
    };
    for w in write_pair(&cfg, &a.out_dir)? {
        println!(
            "wrote {} ({} samples, {} anomalies)",
            w.base.display(),
            w.samples,
            w.anomalies
        );
    }
    Ok(())
}

#[derive(Args, Debug, Clone)]
pub struct WindowArgs {
    /// Complex samples per window (the network sees twice as many reals).
    #[arg(long, default_value_t = 16)]
    pub window: usize,
    /// Complex samples between window starts.
    #[arg(long, default_value_t = 16)]
    pub stride: usize,
    /// Fraction of a window that must be annotated for it to be labelled anomalous.
    #[arg(long, default_value_t = 0.5)]
    pub min_overlap: f64,
}

impl WindowArgs {
    fn config(&self) -> WindowConfig {
        WindowConfig {
            len: self.window,
            stride: self.stride,
            min_overlap: self.min_overlap,
        }
    }
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Recording: SigMF base name or either file; a raw cf32_le file with --raw; `-` reads raw
    /// cf32_le from stdin.
    pub input: PathBuf,
    /// Treat INPUT as a raw headerless cf32_le file.
    #[arg(long)]
    pub raw: bool,
    /// For raw input or stdin: take sample rate and annotations from this .sigmf-meta.
    #[arg(long)]
    pub meta: Option<PathBuf>,
    /// Replace NaN/Inf samples by 0 (and count them) instead of failing.
    #[arg(long)]
    pub zero_non_finite: bool,
    /// Skip the core:sha512 check.
    #[arg(long)]
    pub no_verify: bool,
    /// Samples read per chunk.
    #[arg(long, default_value_t = 1 << 16)]
    pub chunk: usize,
    #[command(flatten)]
    pub windows: WindowArgs,
}

fn read_options(zero_non_finite: bool, no_verify: bool) -> ReadOptions {
    ReadOptions {
        non_finite: if zero_non_finite {
            NonFinitePolicy::Zero
        } else {
            NonFinitePolicy::Error
        },
        verify_checksum: !no_verify,
    }
}

fn inspect(a: &InspectArgs) -> Result<()> {
    let source = InputSource::new(&a.input, a.raw);
    if source.is_raw() && a.meta.is_none() {
        eprintln!("note: raw input without --meta: no sample rate, no annotations");
    }
    let opts = read_options(a.zero_non_finite, a.no_verify);
    let mut input = open_input(&source, a.meta.as_deref(), opts)?;
    let cfg = a.windows.config();
    let ranges = input.label_ranges()?;
    let s = summarise(&mut input.stream, &ranges, cfg, a.chunk)?;
    println!("samples: {}", s.samples);
    if let Some(fs) = input.sample_rate_hz() {
        println!("sample rate: {fs} Hz ({:.6} s)", s.samples as f64 / fs);
    }
    if let Some(mean) = s.mean_power() {
        println!(
            "mean power: {mean:.4} ({:.2} dB), peak power: {:.4}",
            10.0 * mean.log10(),
            s.peak_power
        );
    }
    if s.replaced > 0 {
        println!("non-finite samples replaced by 0: {}", s.replaced);
    }
    if let Some(m) = &input.meta {
        println!("annotations: {}", m.annotations.len());
        print_annotations(m);
    }
    println!(
        "windows of {} samples every {}: {}, anomalous (>= {} annotated samples): {}",
        cfg.len,
        cfg.stride,
        s.windows,
        cfg.min_annotated(),
        s.anomalous
    );
    for (name, count) in &s.per_kind {
        println!("  {name}: {count}");
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct BaselineArgs {
    /// Training recording (normal data), SigMF.
    #[arg(long)]
    pub train: PathBuf,
    /// Test recording with annotated anomalies, SigMF.
    #[arg(long)]
    pub test: PathBuf,
    /// Principal components kept (8 matches the auto-encoder's bottleneck).
    #[arg(long, default_value_t = 8)]
    pub components: usize,
    /// Threshold rule on the training errors: pNN (percentile) or mean+Kstd.
    #[arg(long, default_value = "p99")]
    pub threshold: String,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub windows: WindowArgs,
}

fn baseline(a: &BaselineArgs) -> Result<()> {
    let rule: ThresholdRule = a.threshold.parse()?;
    let r = run_baseline(&a.train, &a.test, a.components, rule, a.windows.config())?;
    if r.train_anomalous > 0 {
        eprintln!(
            "note: {} of {} training windows are annotated anomalous; fitting on all of them",
            r.train_anomalous, r.train_windows
        );
    }
    println!(
        "PCA-{} on {} training windows (normalisation scale {:.4}), threshold {rule} = {:.6}",
        a.components, r.train_windows, r.normalisation_scale, r.threshold
    );
    println!(
        "test ({} windows, {} anomalous): {}",
        r.test_windows, r.test_anomalous, r.test
    );
    for k in &r.recall_by_kind {
        println!("  {}: {}/{} detected", k.kind, k.detected, k.total);
    }
    println!(
        "oracle threshold {:.6} (reference only): {}",
        r.oracle_threshold, r.oracle
    );
    if let Some(path) = &a.json {
        let mut text = serde_json::to_vec_pretty(&r.to_json())?;
        text.push(b'\n');
        write_atomic(path, |w| w.write_all(&text))?;
    }
    Ok(())
}

/// Model and training options shared by `detect` and `experiment`.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Initial training iterations (one SGD step on the minibatch each).
    #[arg(long, default_value_t = 200)]
    pub iterations: u64,
    /// Learning rate before the SWA phase.
    #[arg(long, default_value_t = 0.1)]
    pub lr: f64,
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// First SWA iteration [default: 3/4 of --iterations]; `none` disables SWA.
    #[arg(long)]
    pub swa_start: Option<String>,
    /// Constant learning rate of the SWA phase (and of refreshes).
    #[arg(long, default_value_t = 0.05)]
    pub swa_lr: f64,
    /// Windows per SGD step (0: the whole training batch, as in 002).
    #[arg(long, default_value_t = 0)]
    pub minibatch: usize,
    /// Threshold rule on the training windows' errors: pNN (percentile) or mean+Kstd.
    #[arg(long, default_value = "p99")]
    pub threshold: String,
    /// Seed of the weights and of stochastic rounding.
    #[arg(long, default_value_t = 0)]
    pub model_seed: u64,
}

impl ModelArgs {
    fn options(&self) -> ModelOptions {
        ModelOptions {
            iterations: self.iterations,
            lr: self.lr,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            swa_start: self.swa_start.clone(),
            swa_lr: self.swa_lr,
            minibatch: self.minibatch,
            threshold: self.threshold.clone(),
            seed: self.model_seed,
        }
    }
}

#[derive(Args, Debug)]
pub struct DetectArgs {
    /// Recording: SigMF base name or either file; a raw cf32_le file with --raw; `-` reads raw
    /// cf32_le from stdin.
    #[arg(required_unless_present = "vectors")]
    pub input: Option<PathBuf>,
    /// Pre-windowed feature vectors instead of a recording: an N x D float32/float64 .npy, one
    /// window per row; the first --train-windows rows train, the rest are scored.
    #[arg(long, conflicts_with_all = ["input", "raw", "meta", "sample_rate", "zero_non_finite", "no_verify", "refresh_every"])]
    pub vectors: Option<PathBuf>,
    /// Labels of the --vectors rows: a .npy of N values, 0 (normal) or 1 (anomalous).
    #[arg(long, requires = "vectors")]
    pub labels: Option<PathBuf>,
    /// Labelled windows whose scores set the threshold (--calibrate-target) instead of the
    /// unsupervised rule: an annotated SigMF recording (windowed and normalised like INPUT;
    /// refreshes recalibrate), or with --vectors a .npy of vectors with --calibrate-labels.
    #[arg(long)]
    pub calibrate: Option<PathBuf>,
    #[arg(long, requires_all = ["calibrate", "vectors"])]
    pub calibrate_labels: Option<PathBuf>,
    /// `f1` (the threshold with the best F1 on the calibration rows) or `far:R` (the lowest
    /// threshold with a false-alarm rate of at most R on their normal rows).
    #[arg(long, default_value = "f1")]
    pub calibrate_target: String,
    /// Treat INPUT as a raw headerless cf32_le file.
    #[arg(long)]
    pub raw: bool,
    /// For raw input or stdin: sample rate and annotations from this .sigmf-meta.
    #[arg(long)]
    pub meta: Option<PathBuf>,
    /// Sample rate in Hz for raw input without --meta (for the real-time factor).
    #[arg(long)]
    pub sample_rate: Option<f64>,
    /// Replace NaN/Inf samples by 0 (and count them) instead of failing.
    #[arg(long)]
    pub zero_non_finite: bool,
    /// Skip the core:sha512 check.
    #[arg(long)]
    pub no_verify: bool,
    /// Per-window JSONL output (`-`: stdout).
    #[arg(long, default_value = "-")]
    pub out: PathBuf,
    /// Also write the summary as JSON here (it always goes to stderr).
    #[arg(long)]
    pub summary: Option<PathBuf>,
    /// Precision policy: fp32, bfp8 or swalp (with optional overrides).
    #[arg(long, default_value = "bfp8")]
    pub precision: String,
    /// Windows collected for the first training batch (and for each refresh).
    #[arg(long, default_value_t = 1000)]
    pub train_windows: usize,
    /// Scored windows between model refreshes (0: never refresh).
    #[arg(long, default_value_t = 250_000)]
    pub refresh_every: u64,
    /// Iterations per refresh.
    #[arg(long, default_value_t = 10)]
    pub refresh_iterations: u64,
    /// Windows per scoring batch.
    #[arg(long, default_value_t = 1000)]
    pub score_batch: usize,
    /// Retrain from the next model seed when the threshold exceeds this many times the
    /// median training error (0: never).
    #[arg(long, default_value_t = 4.0)]
    pub max_spread: f64,
    /// Initial trainings at most (with --max-spread).
    #[arg(long, default_value_t = 4)]
    pub max_attempts: u32,
    /// GEMM backend: cpu, or an FPGA simulator design such as fpga-sim:zcu111-16x16.
    #[arg(long, default_value = "cpu")]
    pub backend: String,
    /// Worker threads (0: all cores). Results do not depend on it.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub windows: WindowArgs,
}

impl DetectArgs {
    fn options(&self) -> DetectOptions {
        DetectOptions {
            window: self.windows.config(),
            precision: self.precision.clone(),
            train_windows: self.train_windows,
            model: self.model.options(),
            refresh_every: self.refresh_every,
            refresh_iterations: self.refresh_iterations,
            score_batch: self.score_batch,
            max_spread: self.max_spread,
            max_attempts: self.max_attempts,
            calibrate: self.calibrate.clone(),
            calibrate_target: self.calibrate_target.clone(),
        }
    }
}

/// Writes `summary` as pretty JSON to `path` (if any) and always to stderr.
fn write_summary(path: Option<&Path>, summary: &impl serde::Serialize) -> Result<()> {
    let mut text = serde_json::to_vec_pretty(summary)?;
    text.push(b'\n');
    if let Some(p) = path {
        write_atomic(p, |w| w.write_all(&text))?;
    }
    eprintln!("{}", String::from_utf8_lossy(&text).trim_end());
    Ok(())
}

/// `rf detect --vectors`: the auto-encoder on rows of feature vectors.
fn detect_vectors(a: &DetectArgs, path: &Path) -> Result<()> {
    let v = VectorOptions {
        vectors: path.to_path_buf(),
        labels: a.labels.clone(),
        calibrate: a.calibrate.clone(),
        calibrate_labels: a.calibrate_labels.clone(),
        calibrate_target: a.calibrate_target.clone(),
        train_rows: a.train_windows,
        precision: a.precision.clone(),
        model: a.model.options(),
    };
    let v = v.prepare()?;
    let backend = crate::util::backend(&a.backend)?;
    let report = run_vectors(&v.data, v.calibration.as_ref(), &v.config, backend.as_ref())?;
    let out = report.to_jsonl(v.data.labels.as_deref(), a.train_windows);
    if a.out.as_os_str() == "-" {
        std::io::stdout().lock().write_all(out.as_bytes())?;
    } else {
        write_atomic(&a.out, |w| w.write_all(out.as_bytes()))?;
    }
    write_summary(a.summary.as_deref(), &report.summary)
}

fn detect(a: &DetectArgs) -> Result<()> {
    let input = match (&a.vectors, &a.input) {
        (Some(v), _) => return detect_vectors(a, v),
        (None, Some(i)) => i,
        (None, None) => bail!("give a recording (INPUT) or --vectors FILE.npy"),
    };
    let opts = read_options(a.zero_non_finite, a.no_verify);
    let cfg = a.options().config(opts)?;
    let backend = crate::util::backend(&a.backend)?;
    let mut input = open_input(&InputSource::new(input, a.raw), a.meta.as_deref(), opts)?;
    let ranges = input.label_ranges()?;
    let sample_rate = input.sample_rate_hz().or(a.sample_rate);
    let has_labels = input.has_annotations();
    let out_name = a.out.display().to_string();
    let quiet = a.quiet;
    let mut last = std::time::Instant::now();
    let mut progress = |p: &Progress| {
        if !quiet && last.elapsed().as_secs_f64() >= 1.0 {
            last = std::time::Instant::now();
            eprintln!(
                "{} samples, {} windows, {} flagged, {} refreshes, {:.0} samples/s",
                p.samples,
                p.windows,
                p.flagged,
                p.refreshes,
                p.samples as f64 / p.seconds.max(1e-9)
            );
        }
    };
    let mut run = |w: &mut dyn Write| {
        run_detector_jsonl(
            &mut input.stream,
            &ranges,
            has_labels,
            sample_rate,
            &cfg,
            backend.as_ref(),
            w,
            &out_name,
            &mut progress,
        )
    };
    // Records stream to stdout, or to a temporary file renamed into place at the end.
    let summary = if a.out.as_os_str() == "-" {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
        run(&mut w)?
    } else {
        atomic_write(&a.out, |w| run(w))?
    };
    write_summary(a.summary.as_deref(), &summary)
}

#[derive(Args, Debug)]
pub struct ExperimentArgs {
    /// Output directory: curve.jsonl, final.json, fig9.png.
    #[arg(long)]
    pub out: PathBuf,
    /// Precision policies to compare.
    #[arg(long, value_delimiter = ',', default_value = "fp32,bfp8")]
    pub precisions: Vec<String>,
    /// FPGA simulator design for the projected time (`none`: no projection).
    #[arg(long, default_value = "zcu111-16x16")]
    pub fpga: String,
    /// Seed of the recordings.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Anomaly power re the signal, dB.
    #[arg(long, default_value_t = -12.0, allow_negative_numbers = true)]
    pub anomaly_power_db: f64,
    #[arg(long, default_value_t = 20.0, allow_negative_numbers = true)]
    pub snr_db: f64,
    /// Use the wideband transmission of the standard pair instead of the narrowband channel.
    #[arg(long)]
    pub wideband: bool,
    /// Training batch (windows from the start of the training recording).
    #[arg(long, default_value_t = 1000)]
    pub train_windows: usize,
    /// The F1 whose first crossing is reported.
    #[arg(long, default_value_t = 0.87)]
    pub target_f1: f64,
    /// Worker threads (0: all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    #[command(flatten)]
    pub model: ModelArgs,
}

impl ExperimentArgs {
    fn options(&self) -> ExperimentOptions {
        ExperimentOptions {
            precisions: self.precisions.clone(),
            fpga: self.fpga.clone(),
            seed: self.seed,
            anomaly_power_db: self.anomaly_power_db,
            snr_db: self.snr_db,
            wideband: self.wideband,
            train_windows: self.train_windows,
            target_f1: self.target_f1,
            model: self.model.options(),
        }
    }
}

fn experiment(a: &ExperimentArgs) -> Result<()> {
    let cfg = a.options().config()?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut progress = |p: &str, it: u64, f1: f64| {
        if it.is_multiple_of(20) {
            eprintln!("{p}: iteration {it}, F1 {f1:.4}");
        }
    };
    let r = run_experiment(&cfg, &mut progress)?;
    let curve = r.curve_jsonl()?;
    write_atomic(&a.out.join("curve.jsonl"), |w| w.write_all(&curve))?;
    let mut text = serde_json::to_vec_pretty(&r.final_json(&cfg.pair))?;
    text.push(b'\n');
    write_atomic(&a.out.join("final.json"), |w| w.write_all(&text))?;
    crate::plot::plot_rf_experiment(&r, &a.out.join("fig9.png"))?;
    println!(
        "{:<8} {:>7} {:>9} {:>7} {:>7} {:>7} {:>7} {:>14} {:>10} {:>12}",
        "policy",
        "F1",
        "precision",
        "recall",
        "best F1",
        "ROC AUC",
        "PR AUC",
        "iters to F1>=",
        "seconds",
        "projected s"
    );
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
    for f in &r.finals {
        println!(
            "{:<8} {:>7.4} {:>9.4} {:>7.4} {:>7.4} {:>7} {:>7} {:>14} {:>10.4} {:>12}",
            f.precision,
            f.f1,
            f.precision_score,
            f.recall,
            f.test.best_f1,
            opt(f.test.roc_auc),
            opt(f.test.pr_auc),
            f.iterations_to_target
                .map_or("never".to_string(), |i| i.to_string()),
            f.seconds,
            f.projected_seconds
                .map_or("-".to_string(), |s| format!("{s:.4}"))
        );
    }
    for b in &r.baselines {
        println!(
            "baseline {:<8} F1 {:.4} precision {:.4} recall {:.4}",
            b.detector, b.f1, b.precision_score, b.recall
        );
    }
    println!(
        "wrote {}/curve.jsonl, final.json, fig9.png",
        a.out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct TestCli {
        #[command(subcommand)]
        rf: RfCommand,
    }

    fn parse(args: &[&str]) -> Result<RfCommand, clap::Error> {
        TestCli::try_parse_from(std::iter::once("rf").chain(args.iter().copied())).map(|c| c.rf)
    }

    // The end-to-end runs are in tests/rf.rs; the checks of the options in the rf crate.

    #[test]
    fn generate_arguments_become_the_options() {
        let RfCommand::Generate(a) = parse(&["generate", "--out", "x"]).unwrap() else {
            panic!("not generate")
        };
        assert_eq!(a.options(), GenerateOptions::default());
        let args = [
            "generate",
            "--out",
            "x",
            "--samples",
            "4000",
            "--tones",
            "1000,2500@0.5",
            "--no-noise",
            "--anomaly",
            "sine@100+200",
            "--anomaly",
            "chirp@3000+1000",
            "--sine-freq",
            "-123000",
            "--chirp-start",
            "-5",
            "--bandpass-width",
            "7",
            "--anomaly-power-db",
            "-12",
            "--seed",
            "3",
        ];
        let RfCommand::Generate(a) = parse(&args).unwrap() else {
            panic!("not generate")
        };
        let o = a.options();
        assert_eq!((o.samples, o.snr_db, o.seed), (Some(4000), None, 3));
        assert_eq!(o.tones, ["1000", "2500@0.5"]);
        assert_eq!(o.anomaly_at, ["sine@100+200", "chirp@3000+1000"]);
        assert_eq!(o.anomaly_power_db, -12.0);
        assert_eq!(
            o.overrides,
            KindOverrides {
                sine_freq_hz: Some(-123000.0),
                chirp_start_hz: Some(-5.0),
                bandpass_width_hz: Some(7.0),
                ..KindOverrides::default()
            }
        );
        let RfCommand::Generate(a) =
            parse(&["generate", "--out", "x", "--anomalies", "sine,chirp,sine"]).unwrap()
        else {
            panic!("not generate")
        };
        assert_eq!(a.options().anomalies, ["sine", "chirp", "sine"]);
        // Exclusive options are clap's to refuse.
        for args in [
            &["generate", "--out", "x", "--samples", "5", "--seconds", "1"][..],
            &[
                "generate",
                "--out",
                "x",
                "--tones",
                "1",
                "--noise-band",
                "1:2",
            ],
            &[
                "generate",
                "--out",
                "x",
                "--anomalies",
                "sine",
                "--anomaly",
                "sine@0+1",
            ],
        ] {
            assert!(parse(args).is_err(), "{args:?} parsed");
        }
    }

    #[test]
    fn detect_and_experiment_defaults_are_the_rf_crates() {
        let RfCommand::Detect(a) = parse(&["detect", "in"]).unwrap() else {
            panic!("not detect")
        };
        assert_eq!(a.options(), DetectOptions::default());
        let RfCommand::Experiment(a) = parse(&["experiment", "--out", "o"]).unwrap() else {
            panic!("not experiment")
        };
        assert_eq!(a.options(), ExperimentOptions::default());
        let RfCommand::Detect(a) = parse(&[
            "detect",
            "in",
            "--swa-start",
            "none",
            "--threshold",
            "mad:6",
            "--model-seed",
            "4",
            "--window",
            "8",
            "--stride",
            "4",
        ])
        .unwrap() else {
            panic!("not detect")
        };
        let o = a.options();
        assert_eq!(o.model.swa_start.as_deref(), Some("none"));
        assert_eq!((o.model.threshold.as_str(), o.model.seed), ("mad:6", 4));
        assert_eq!((o.window.len, o.window.stride), (8, 4));
    }
}
