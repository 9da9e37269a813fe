//! `lowprec rf ...`: RF signals for the anomaly-detection case study (002 Section V).
//!
//! * `generate`: an FM recording with injected anomalies, as SigMF (`cf32_le`) or raw cf32 on
//!   stdout.
//! * `pair`: the standard labelled train/test pair of the experiment.
//! * `inspect`: read and validate a recording (SigMF, raw file or stdin, streamed in chunks)
//!   and summarise its samples, annotations and window labels.
//! * `baseline`: the PCA reconstruction-error detector (a linear auto-encoder) on a train/test
//!   pair, with the percentile threshold rule and precision/recall/F1.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use lowprec_nn::Precision;
use lowprec_rf::autoencoder::AeConfig;
use lowprec_rf::baseline::PcaDetector;
use lowprec_rf::detect::{run_detector, DetectConfig, Progress};
use lowprec_rf::experiment::{run_experiment, ExperimentConfig, ExperimentResult};
use lowprec_rf::metrics::{best_f1, recall_by_kind};
use lowprec_rf::sigmf::{open_sigmf, sigmf_paths, write_cf32, SampleStream};
use lowprec_rf::signal::place_anomalies;
use lowprec_rf::window::make_windows;
use lowprec_rf::{
    read_recording, select_threshold, standard_pair, write_sigmf, Anomaly, AnomalyKind, Confusion,
    FmConfig, Generator, Iq, Message, NonFinitePolicy, Normaliser, PairFm, ReadOptions, SigMfMeta,
    SignalSpec, StandardPairConfig, ThresholdRule, Tone, WindowConfig, WindowStream,
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

fn parse_f64(what: &str, s: &str) -> Result<f64> {
    let v: f64 = s
        .trim()
        .parse()
        .with_context(|| format!("{what}: {s:?} is not a number"))?;
    if !v.is_finite() {
        bail!("{what}: {s:?} is not finite");
    }
    Ok(v)
}

fn parse_tones(specs: &[String]) -> Result<Vec<Tone>> {
    specs
        .iter()
        .map(|t| {
            let (f, a) = match t.split_once('@') {
                Some((f, a)) => (f, parse_f64("tone amplitude", a)?),
                None => (t.as_str(), 1.0),
            };
            Ok(Tone {
                freq_hz: parse_f64("tone frequency", f)?,
                amplitude: a,
                phase_rad: 0.0,
            })
        })
        .collect()
}

impl GenerateArgs {
    fn kind(&self, label: &str) -> Result<AnomalyKind> {
        let fs = self.sample_rate;
        Ok(match AnomalyKind::default_for(label, fs)? {
            AnomalyKind::Bandpass {
                center_hz,
                bandwidth_hz,
            } => AnomalyKind::Bandpass {
                center_hz: self.bandpass_center.unwrap_or(center_hz),
                bandwidth_hz: self.bandpass_width.unwrap_or(bandwidth_hz),
            },
            AnomalyKind::Chirp { start_hz, end_hz } => AnomalyKind::Chirp {
                start_hz: self.chirp_start.unwrap_or(start_hz),
                end_hz: self.chirp_end.unwrap_or(end_hz),
            },
            AnomalyKind::Sine { freq_hz } => AnomalyKind::Sine {
                freq_hz: self.sine_freq.unwrap_or(freq_hz),
            },
        })
    }

    fn spec(&self) -> Result<SignalSpec> {
        let fs = self.sample_rate;
        if !(fs.is_finite() && fs > 0.0) {
            bail!("--sample-rate must be a positive number, got {fs}");
        }
        let num_samples = match (self.samples, self.seconds) {
            (Some(n), _) => n,
            (None, Some(s)) => {
                if !(s.is_finite() && s >= 0.0) {
                    bail!("--seconds must be a non-negative number, got {s}");
                }
                let n = (s * fs).round();
                if n > u64::MAX as f64 / 2.0 {
                    bail!("--seconds {s} at {fs} Hz is too many samples");
                }
                n as u64
            }
            (None, None) => 1 << 18,
        };
        if num_samples > MAX_GENERATE_SAMPLES {
            bail!(
                "{num_samples} samples is more than `rf generate` writes ({MAX_GENERATE_SAMPLES}, \
                 {} GiB of cf32_le)",
                (MAX_GENERATE_SAMPLES * 8) >> 30
            );
        }
        let message = if self.tones.is_empty() {
            let (lo, hi) = self.noise_band.split_once(':').with_context(|| {
                format!("--noise-band {:?}: expected LOW:HIGH", self.noise_band)
            })?;
            Message::Noise {
                low_hz: parse_f64("--noise-band low", lo)?,
                high_hz: parse_f64("--noise-band high", hi)?,
                components: self.noise_components,
                seed: self.seed,
            }
        } else {
            Message::Tones {
                tones: parse_tones(&self.tones)?,
            }
        };
        let fm = FmConfig {
            sample_rate_hz: fs,
            message,
            deviation_hz: self.deviation,
            carrier_offset_hz: self.carrier_offset,
            snr_db: (!self.no_noise).then_some(self.snr_db),
        };
        let anomalies = if !self.anomaly_at.is_empty() {
            self.anomaly_at
                .iter()
                .map(|a| {
                    let bad = || format!("--anomaly {a:?}: expected TYPE@START+COUNT");
                    let (label, at) = a.split_once('@').with_context(bad)?;
                    let (start, count) = at.split_once('+').with_context(bad)?;
                    Ok(Anomaly {
                        kind: self.kind(label)?,
                        start: start.trim().parse().with_context(bad)?,
                        count: count.trim().parse().with_context(bad)?,
                        power_db: self.anomaly_power_db,
                    })
                })
                .collect::<Result<Vec<_>>>()?
        } else {
            let kinds = self
                .anomalies
                .iter()
                .map(|l| self.kind(l))
                .collect::<Result<Vec<_>>>()?;
            place_anomalies(
                &kinds,
                num_samples,
                self.anomaly_samples,
                self.anomaly_power_db,
                self.anomaly_samples / 4,
                self.seed,
            )?
        };
        Ok(SignalSpec {
            fm,
            anomalies,
            num_samples,
            time_offset: 0,
            seed: self.seed,
        })
    }
}

fn generate(a: &GenerateArgs) -> Result<()> {
    let generator = Generator::new(a.spec()?)?;
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
            let mut text = serde_json::to_vec_pretty(&meta)?;
            text.push(b'\n');
            write_file_atomic(path, &text)?;
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
    for ann in &meta.annotations {
        println!(
            "  {:>8} at samples [{}, {})",
            ann.label.as_deref().unwrap_or("?"),
            ann.sample_start,
            ann.sample_start + ann.sample_count.unwrap_or(0)
        );
    }
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
    let pair = standard_pair(&cfg)?;
    std::fs::create_dir_all(&a.out_dir)
        .with_context(|| format!("creating {}", a.out_dir.display()))?;
    for (name, spec) in [("train", pair.train), ("test", pair.test)] {
        let g = Generator::new(spec)?;
        let desc = format!(
            "lowprec standard RF anomaly pair, {name} recording, seed {}",
            a.seed
        );
        let meta = SigMfMeta::for_generator(&g, Some(desc));
        let base = a.out_dir.join(name);
        let meta = write_sigmf(&base, meta, &g, 1 << 16)?;
        println!(
            "wrote {} ({} samples, {} anomalies)",
            base.display(),
            g.num_samples(),
            meta.annotations.len()
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

fn inspect(a: &InspectArgs) -> Result<()> {
    let policy = if a.zero_non_finite {
        NonFinitePolicy::Zero
    } else {
        NonFinitePolicy::Error
    };
    let opts = ReadOptions {
        non_finite: policy,
        verify_checksum: !a.no_verify,
    };
    let side_meta = match &a.meta {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            Some(SigMfMeta::parse(&text, p)?)
        }
        None => None,
    };
    let is_stdin = a.input.as_os_str() == "-";
    if (is_stdin || a.raw) && side_meta.is_none() {
        eprintln!("note: raw input without --meta: no sample rate, no annotations");
    }
    let (meta, mut stream): (Option<SigMfMeta>, SampleStream<Box<dyn std::io::Read>>) = if is_stdin
    {
        let r: Box<dyn std::io::Read> = Box::new(std::io::stdin().lock());
        (side_meta, SampleStream::new(r, "<stdin>", policy))
    } else if a.raw {
        let f = std::fs::File::open(&a.input)
            .with_context(|| format!("opening {}", a.input.display()))?;
        let r: Box<dyn std::io::Read> = Box::new(std::io::BufReader::new(f));
        (
            side_meta,
            SampleStream::new(r, a.input.display().to_string(), policy),
        )
    } else {
        if side_meta.is_some() {
            bail!("--meta is for raw input or stdin; a SigMF recording has its own");
        }
        let (meta, s) = open_sigmf(&a.input, opts)?;
        // Re-box the stream's reader so both paths share one type.
        (Some(meta), rebox(s))
    };
    if is_stdin || a.raw {
        // A side metadata file can still vouch for the stream's length and content.
        if let Some(m) = &meta {
            if let Some(count) = m.global.sample_count {
                stream = stream.expect_count(count);
            }
            if let (Some(sha), true) = (&m.global.sha512, opts.verify_checksum) {
                stream = stream.expect_sha512(sha);
            }
        }
    }
    let ranges = match &meta {
        Some(m) => m.label_ranges()?,
        None => Vec::new(),
    };
    let mut windows = WindowStream::new(a.windows.config(), Normaliser::identity(), &ranges)?;
    let mut batch = windows.empty_windows();
    let mut per_kind = vec![0u64; batch.kind_names.len()];
    let (mut n_windows, mut n_anomalous) = (0u64, 0u64);
    let mut chunk: Vec<Iq> = Vec::new();
    let (mut power, mut peak) = (0f64, 0f64);
    while stream.read_chunk(&mut chunk, a.chunk.max(1))? > 0 {
        for s in &chunk {
            let p = f64::from(s.i).powi(2) + f64::from(s.q).powi(2);
            power += p;
            peak = peak.max(p);
        }
        batch.clear();
        windows.push(&chunk, &mut batch);
        n_windows += batch.len() as u64;
        for k in 0..batch.len() {
            if batch.labels[k] {
                n_anomalous += 1;
                if let Some(kind) = batch.kinds[k] {
                    per_kind[kind as usize] += 1;
                }
            }
        }
    }
    let n = stream.position();
    println!("samples: {n}");
    if let Some(fs) = meta.as_ref().and_then(|m| m.global.sample_rate) {
        println!("sample rate: {fs} Hz ({:.6} s)", n as f64 / fs);
    }
    if n > 0 {
        println!(
            "mean power: {:.4} ({:.2} dB), peak power: {:.4}",
            power / n as f64,
            10.0 * (power / n as f64).log10(),
            peak
        );
    }
    if stream.replaced() > 0 {
        println!("non-finite samples replaced by 0: {}", stream.replaced());
    }
    if let Some(m) = &meta {
        println!("annotations: {}", m.annotations.len());
        for ann in &m.annotations {
            println!(
                "  {:>8} at samples [{}, {})",
                ann.label.as_deref().unwrap_or("?"),
                ann.sample_start,
                ann.sample_start + ann.sample_count.unwrap_or(0)
            );
        }
    }
    let cfg = a.windows.config();
    println!(
        "windows of {} samples every {}: {n_windows}, anomalous (>= {} annotated samples): {n_anomalous}",
        cfg.len,
        cfg.stride,
        cfg.min_annotated()
    );
    for (name, count) in batch.kind_names.iter().zip(&per_kind) {
        println!("  {name}: {count}");
    }
    Ok(())
}

fn rebox<R: std::io::Read + 'static>(s: SampleStream<R>) -> SampleStream<Box<dyn std::io::Read>> {
    s.map_reader(|r| Box::new(r) as Box<dyn std::io::Read>)
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
    let cfg = a.windows.config();
    let train = read_recording(&a.train, ReadOptions::default())?;
    let test = read_recording(&a.test, ReadOptions::default())?;
    let norm = Normaliser::fit(&train.samples)?;
    // Labels of the training windows are not used for fitting (the detector is unsupervised);
    // they only tell the user how contaminated the training data is.
    let wtrain = make_windows(&train.samples, cfg, norm, &train.label_ranges()?)?;
    if wtrain.anomalous() > 0 {
        eprintln!(
            "note: {} of {} training windows are annotated anomalous; fitting on all of them",
            wtrain.anomalous(),
            wtrain.len()
        );
    }
    let wtest = make_windows(&test.samples, cfg, norm, &test.label_ranges()?)?;
    let pca = PcaDetector::fit(&wtrain, a.components)?;
    let train_scores = pca.scores(&wtrain)?;
    let threshold = select_threshold(&train_scores, rule)?;
    let scores = pca.scores(&wtest)?;
    let c = Confusion::from_scores(&scores, &wtest.labels, threshold)?;
    let (oracle_t, oracle) = best_f1(&scores, &wtest.labels)?;
    let per_kind = recall_by_kind(&scores, &wtest, threshold)?;
    println!(
        "PCA-{} on {} training windows (normalisation scale {:.4}), threshold {rule} = {threshold:.6}",
        a.components,
        wtrain.len(),
        norm.scale
    );
    println!(
        "test ({} windows, {} anomalous): {c}",
        wtest.len(),
        wtest.anomalous()
    );
    for r in &per_kind {
        println!("  {}: {}/{} detected", r.kind, r.detected, r.total);
    }
    println!("oracle threshold {oracle_t:.6} (reference only): {oracle}");
    if let Some(path) = &a.json {
        let v = serde_json::json!({
            "detector": format!("pca{}", a.components),
            "threshold_rule": rule.to_string(),
            "threshold": threshold,
            "normalisation_scale": norm.scale,
            "train_windows": wtrain.len(),
            "test_windows": wtest.len(),
            "tp": c.tp, "fp": c.fp, "tn": c.tn, "fn": c.fn_,
            "precision": c.precision(), "recall": c.recall(), "f1": c.f1(),
            "oracle_f1": oracle.f1(),
            "recall_by_kind": per_kind.iter().map(|r| serde_json::json!({
                "kind": r.kind, "detected": r.detected, "total": r.total
            })).collect::<Vec<_>>(),
        });
        let mut text = serde_json::to_vec_pretty(&v)?;
        text.push(b'\n');
        write_file_atomic(path, &text)?;
    }
    Ok(())
}

/// Runs `f` on a rayon pool of `threads` threads (0: rayon's default).
/// The most samples `rf generate` writes in one recording (16 GiB of cf32_le): a typo such as
/// `--samples 1e15` is an error, not a disk filled for hours.
const MAX_GENERATE_SAMPLES: u64 = 1 << 31;

fn with_threads(threads: usize, f: impl FnOnce() -> Result<()> + Send) -> Result<()> {
    let threads = crate::util::threads_or_default((threads > 0).then_some(threads))?;
    crate::util::with_threads(threads, f)?
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
    fn config(&self, dim: usize, precision: Precision) -> Result<AeConfig> {
        let swa_start = match self.swa_start.as_deref() {
            None => Some(self.iterations * 3 / 4),
            Some("none") => None,
            Some(v) => Some(
                v.parse()
                    .with_context(|| format!("--swa-start {v:?}: expected an iteration or none"))?,
            ),
        };
        let cfg = AeConfig {
            dim,
            precision,
            lr: self.lr,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            minibatch: self.minibatch,
            iterations: self.iterations,
            swa_start,
            swa_lr: self.swa_lr,
            threshold: self.threshold.parse()?,
            seed: self.model_seed,
            ..AeConfig::default()
        };
        cfg.validate()?;
        Ok(cfg)
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

/// `rf detect --vectors`: the auto-encoder on rows of feature vectors.
fn detect_vectors(a: &DetectArgs, path: &Path) -> Result<()> {
    if a.calibrate.is_some() && a.calibrate_labels.is_none() {
        bail!("--calibrate with --vectors needs --calibrate-labels");
    }
    let data = lowprec_rf::vectors::read_vectors(path, a.labels.as_deref())?;
    let calibration = match &a.calibrate {
        Some(c) => Some(lowprec_rf::vectors::read_vectors(
            c,
            a.calibrate_labels.as_deref(),
        )?),
        None => None,
    };
    let precision: Precision = a.precision.parse()?;
    let cfg = lowprec_rf::vectors::VectorConfig {
        train_rows: a.train_windows,
        ae: a.model.config(data.dim, precision)?,
        calibration: Some(a.calibrate_target.parse()?),
    };
    let backend = crate::util::backend(&a.backend)?;
    let report =
        lowprec_rf::vectors::run_vectors(&data, calibration.as_ref(), &cfg, backend.as_ref())?;
    // One JSON line per scored row.
    let mut out = String::with_capacity(report.scores.len() * 48);
    let labels = data.labels.as_deref();
    for (k, &s) in report.scores.iter().enumerate() {
        let row = a.train_windows + k;
        let line = serde_json::json!({
            "row": row,
            "score": s,
            "anomalous": s > report.summary.threshold,
            "label": labels.map(|l| l[row]),
        });
        out.push_str(&line.to_string());
        out.push('\n');
    }
    if a.out.as_os_str() == "-" {
        std::io::stdout().lock().write_all(out.as_bytes())?;
    } else {
        write_file_atomic(&a.out, out.as_bytes())?;
    }
    let mut text = serde_json::to_vec_pretty(&report.summary)?;
    text.push(b'\n');
    if let Some(p) = &a.summary {
        write_file_atomic(p, &text)?;
    }
    eprintln!("{}", String::from_utf8_lossy(&text).trim_end());
    Ok(())
}

fn detect(a: &DetectArgs) -> Result<()> {
    let input = match (&a.vectors, &a.input) {
        (Some(v), _) => return detect_vectors(a, v),
        (None, Some(i)) => i.clone(),
        (None, None) => bail!("give a recording (INPUT) or --vectors FILE.npy"),
    };
    let policy = if a.zero_non_finite {
        NonFinitePolicy::Zero
    } else {
        NonFinitePolicy::Error
    };
    let opts = ReadOptions {
        non_finite: policy,
        verify_checksum: !a.no_verify,
    };
    let wcfg = a.windows.config();
    wcfg.validate()?;
    let precision: Precision = a.precision.parse()?;
    let calibration = match &a.calibrate {
        None => None,
        Some(c) => {
            let rec = read_recording(c, opts)?;
            let labels = rec.label_ranges()?;
            if labels.is_empty() {
                bail!(
                    "--calibrate {}: the recording has no annotations to calibrate on",
                    c.display()
                );
            }
            Some(lowprec_rf::detect::StreamCalibration {
                name: c.display().to_string(),
                samples: rec.samples,
                labels,
                target: a.calibrate_target.parse()?,
            })
        }
    };
    let cfg = DetectConfig {
        window: wcfg,
        train_windows: a.train_windows,
        ae: a.model.config(wcfg.dim(), precision)?,
        refresh_every: a.refresh_every,
        refresh_iterations: a.refresh_iterations,
        score_batch: a.score_batch,
        chunk_samples: 1 << 16,
        max_spread: a.max_spread,
        max_attempts: a.max_attempts,
        calibration,
    };
    cfg.validate()?;
    let backend = crate::util::backend(&a.backend)?;
    let side_meta = match &a.meta {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            Some(SigMfMeta::parse(&text, p)?)
        }
        None => None,
    };
    let is_stdin = input.as_os_str() == "-";
    let (meta, mut stream): (Option<SigMfMeta>, SampleStream<Box<dyn std::io::Read>>) = if is_stdin
    {
        let r: Box<dyn std::io::Read> = Box::new(std::io::BufReader::with_capacity(
            1 << 20,
            std::io::stdin().lock(),
        ));
        (side_meta, SampleStream::new(r, "<stdin>", policy))
    } else if a.raw {
        let f =
            std::fs::File::open(&input).with_context(|| format!("opening {}", input.display()))?;
        let r: Box<dyn std::io::Read> = Box::new(std::io::BufReader::with_capacity(1 << 20, f));
        (
            side_meta,
            SampleStream::new(r, input.display().to_string(), policy),
        )
    } else {
        if side_meta.is_some() {
            bail!("--meta is for raw input or stdin; a SigMF recording has its own");
        }
        let (meta, s) = open_sigmf(&input, opts)?;
        (Some(meta), rebox(s))
    };
    if is_stdin || a.raw {
        if let Some(m) = &meta {
            if let Some(count) = m.global.sample_count {
                stream = stream.expect_count(count);
            }
            if let (Some(sha), true) = (&m.global.sha512, opts.verify_checksum) {
                stream = stream.expect_sha512(sha);
            }
        }
    }
    let ranges = match &meta {
        Some(m) => m.label_ranges()?,
        None => Vec::new(),
    };
    let sample_rate = meta
        .as_ref()
        .and_then(|m| m.global.sample_rate)
        .or(a.sample_rate);
    let to_stdout = a.out.as_os_str() == "-";
    let out_name = a.out.display().to_string();
    let quiet = a.quiet;
    let has_labels = meta.as_ref().is_some_and(|m| !m.annotations.is_empty());
    // Records stream to stdout, or to a temporary file renamed into place at the end.
    let mut run =
        |w: &mut dyn Write| -> Result<lowprec_rf::detect::DetectSummary, lowprec_rf::RfError> {
            let mut line = String::with_capacity(128);
            let mut sink = |r: &lowprec_rf::detect::WindowRecord| {
                line.clear();
                r.to_json_line(&mut line);
                line.push('\n');
                w.write_all(line.as_bytes())
                    .map_err(|e| lowprec_rf::RfError::io(&out_name, e))
            };
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
            let summary = run_detector(
                &mut stream,
                &ranges,
                has_labels,
                sample_rate,
                &cfg,
                backend.as_ref(),
                &mut sink,
                &mut progress,
            )?;
            w.flush()
                .map_err(|e| lowprec_rf::RfError::io(&out_name, e))?;
            Ok(summary)
        };
    let summary = if to_stdout {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
        run(&mut w)?
    } else {
        lowprec_rf::sigmf::atomic_write(&a.out, |w| run(w))?
    };
    let mut text = serde_json::to_vec_pretty(&summary)?;
    text.push(b'\n');
    if let Some(p) = &a.summary {
        write_file_atomic(p, &text)?;
    }
    eprintln!("{}", String::from_utf8_lossy(&text).trim_end());
    Ok(())
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

fn experiment(a: &ExperimentArgs) -> Result<()> {
    let precisions: Vec<Precision> = a
        .precisions
        .iter()
        .map(|p| p.parse())
        .collect::<Result<_, _>>()?;
    let window = WindowConfig::default();
    let cfg = ExperimentConfig {
        pair: StandardPairConfig {
            seed: a.seed,
            snr_db: a.snr_db,
            anomaly_power_db: a.anomaly_power_db,
            fm: if a.wideband {
                PairFm::WIDEBAND
            } else {
                PairFm::NARROWBAND
            },
            ..StandardPairConfig::default()
        },
        window,
        train_windows: a.train_windows,
        ae: a.model.config(window.dim(), Precision::fp32())?,
        precisions,
        fpga: (a.fpga != "none").then(|| a.fpga.clone()),
        target_f1: a.target_f1,
    };
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut progress = |p: &str, it: u64, f1: f64| {
        if it.is_multiple_of(20) {
            eprintln!("{p}: iteration {it}, F1 {f1:.4}");
        }
    };
    let r = run_experiment(&cfg, &mut progress)?;
    let mut curve = Vec::new();
    for pt in &r.curve {
        serde_json::to_writer(&mut curve, pt)?;
        curve.push(b'\n');
    }
    write_file_atomic(&a.out.join("curve.jsonl"), &curve)?;
    let key = format!("iterations_to_f1_{}", a.target_f1);
    let mut fin = serde_json::Map::new();
    for f in &r.finals {
        fin.insert(
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
    let v = serde_json::json!({
        "precisions": fin,
        "baselines": r.baselines,
        "train_windows": r.train_windows,
        "test_windows": r.test_windows,
        "test_anomalous": r.test_anomalous,
        "fpga": r.fpga,
        "pair": {
            "seed": a.seed, "snr_db": a.snr_db, "anomaly_power_db": a.anomaly_power_db,
            "transmission": if a.wideband { "wideband" } else { "narrowband" },
        },
    });
    // final.json: the per-precision objects at the top level, plus the context.
    let mut top = fin.clone();
    for (k, val) in v.as_object().expect("object") {
        if k != "precisions" {
            top.insert(k.clone(), val.clone());
        }
    }
    let mut text = serde_json::to_vec_pretty(&serde_json::Value::Object(top))?;
    text.push(b'\n');
    write_file_atomic(&a.out.join("final.json"), &text)?;
    plot_experiment(&r, &a.out.join("fig9.png"))?;
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

/// Three panels: F1 against iterations, training seconds and projected seconds.
fn plot_experiment(r: &ExperimentResult, out: &Path) -> Result<()> {
    use plotters::prelude::*;
    crate::plot::register_font()?;
    let root = BitMapBackend::new(out, (1500, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((1, 3));
    let mut names: Vec<String> = Vec::new();
    for p in &r.curve {
        if !names.contains(&p.precision) {
            names.push(p.precision.clone());
        }
    }
    let pca = r.baselines.first().map(|b| (b.detector.clone(), b.f1));
    type Getter = fn(&lowprec_rf::experiment::CurvePoint) -> Option<f64>;
    let axes: [(&str, Getter); 3] = [
        ("iterations", |p| Some(p.iteration as f64)),
        ("training time on this CPU (s)", |p| Some(p.seconds)),
        ("projected time, GEMMs on the FPGA model (s)", |p| {
            p.projected_seconds
        }),
    ];
    for (panel, (xlabel, get)) in panels.iter().zip(axes) {
        let xmax = r
            .curve
            .iter()
            .filter_map(get)
            .fold(0.0f64, f64::max)
            .max(1e-9);
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("F1 vs {xlabel}"), ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..xmax * 1.02, 0f64..1f64)?;
        chart
            .configure_mesh()
            .x_desc(xlabel)
            .y_desc("test F1")
            .label_style(("sans-serif", 13))
            .draw()?;
        for (i, name) in names.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let pts: Vec<(f64, f64)> = r
                .curve
                .iter()
                .filter(|p| &p.precision == name)
                .filter_map(|p| get(p).map(|x| (x, p.f1)))
                .collect();
            chart
                .draw_series(LineSeries::new(pts, color.stroke_width(2)))?
                .label(name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        if let Some((label, f1)) = &pca {
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(0.0, *f1), (xmax * 1.02, *f1)],
                    6,
                    4,
                    BLACK.stroke_width(1),
                ))?
                .label(format!("{label} (F1 {f1:.3})"))
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
        }
        let t = r.target_f1;
        chart
            .draw_series(DashedLineSeries::new(
                vec![(0.0, t), (xmax * 1.02, t)],
                2,
                4,
                RED.stroke_width(1),
            ))?
            .label(format!("F1 {t}"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .position(SeriesLabelPosition::LowerRight)
            .draw()?;
    }
    root.present()
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    lowprec_rf::sigmf::atomic_write(path, |f| {
        f.write_all(bytes).map_err(|e| lowprec_rf::RfError::Io {
            path: path.into(),
            source: e,
        })
    })?;
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

    fn run_args(args: &[&str]) -> Result<()> {
        run(&parse(args)?)
    }

    #[test]
    fn generate_inspect_pair_and_baseline_run() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("rec");
        let b = base.to_str().unwrap();
        run_args(&[
            "generate",
            "--out",
            b,
            "--samples",
            "50000",
            "--anomalies",
            "bandpass,chirp,sine",
            "--snr-db",
            "-3",
            "--carrier-offset",
            "-20000",
            "--seed",
            "5",
        ])
        .unwrap();
        let first = std::fs::read(dir.path().join("rec.sigmf-data")).unwrap();
        assert_eq!(first.len(), 50000 * 8);
        // Same arguments and seed, other chunk size: same bytes.
        run_args(&[
            "generate",
            "--out",
            b,
            "--samples",
            "50000",
            "--anomalies",
            "bandpass,chirp,sine",
            "--snr-db",
            "-3",
            "--carrier-offset",
            "-20000",
            "--seed",
            "5",
            "--chunk",
            "33",
        ])
        .unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("rec.sigmf-data")).unwrap(),
            first
        );
        let rec = read_recording(&base, ReadOptions::default()).unwrap();
        assert_eq!(rec.label_ranges().unwrap().len(), 3);
        run_args(&["inspect", b]).unwrap();
        run_args(&[
            "inspect",
            dir.path().join("rec.sigmf-data").to_str().unwrap(),
            "--raw",
        ])
        .unwrap();

        let pair_dir = dir.path().join("pair");
        let p = pair_dir.to_str().unwrap();
        run_args(&[
            "pair",
            "--out-dir",
            p,
            "--train-samples",
            "65536",
            "--test-samples",
            "32768",
            "--anomaly-samples",
            "1024",
        ])
        .unwrap();
        let json = dir.path().join("baseline.json");
        run_args(&[
            "baseline",
            "--train",
            &format!("{p}/train"),
            "--test",
            &format!("{p}/test"),
            "--json",
            json.to_str().unwrap(),
        ])
        .unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(v["test_windows"], 2048);
        assert!(v["f1"].as_f64().unwrap() > 0.5, "{v}");
    }

    #[test]
    fn detect_writes_jsonl_and_summary() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("nb");
        let b = base.to_str().unwrap();
        run_args(&[
            "generate",
            "--out",
            b,
            "--samples",
            "40000",
            "--deviation",
            "3000",
            "--noise-band",
            "300:3000",
            "--anomaly",
            "sine@30000+2000",
            "--anomaly-power-db",
            "-12",
            "--seed",
            "2",
        ])
        .unwrap();
        let out = dir.path().join("sub/records.jsonl");
        let summary = dir.path().join("summary.json");
        run_args(&[
            "detect",
            b,
            "--out",
            out.to_str().unwrap(),
            "--summary",
            summary.to_str().unwrap(),
            "--train-windows",
            "500",
            "--iterations",
            "40",
            "--refresh-every",
            "1000",
            "--threads",
            "1",
            "--quiet",
        ])
        .unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2500);
        assert_eq!(lines[7]["index"], 7);
        assert_eq!(lines[7]["offset"], 112);
        assert!(lines[7]["error"].as_f64().unwrap() >= 0.0);
        assert!(lines[7]["flag"].is_boolean());
        assert_eq!(lines[1900]["label"], true);
        let s: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
        assert_eq!(s["windows"], 2500);
        assert_eq!(s["samples"], 40000);
        assert_eq!(
            s["refreshes"].as_u64().unwrap() + s["skipped_refreshes"].as_u64().unwrap(),
            2
        );
        assert!(s["confusion"]["f1"].as_f64().is_some());
        assert_eq!(
            s["flagged"].as_u64().unwrap() as usize,
            lines.iter().filter(|l| l["flag"] == true).count()
        );
        // Raw input without metadata: no labels, same errors.
        let raw_out = dir.path().join("raw.jsonl");
        run_args(&[
            "detect",
            dir.path().join("nb.sigmf-data").to_str().unwrap(),
            "--raw",
            "--sample-rate",
            "1e6",
            "--out",
            raw_out.to_str().unwrap(),
            "--train-windows",
            "500",
            "--iterations",
            "40",
            "--refresh-every",
            "1000",
            "--quiet",
        ])
        .unwrap();
        let raw = std::fs::read_to_string(&raw_out).unwrap();
        let first: serde_json::Value = serde_json::from_str(raw.lines().next().unwrap()).unwrap();
        assert!(first.get("label").is_none());
        assert_eq!(first["error"], lines[0]["error"]);
        // Bad arguments fail without leaving the output behind.
        let bad = dir.path().join("bad.jsonl");
        let bo = bad.to_str().unwrap();
        for args in [
            vec!["detect", b, "--out", bo, "--precision", "int3"],
            vec!["detect", b, "--out", bo, "--backend", "tpu"],
            vec!["detect", b, "--out", bo, "--threshold", "q9"],
            vec!["detect", b, "--out", bo, "--window", "0"],
            vec!["detect", b, "--out", bo, "--swa-start", "soon"],
            vec!["detect", b, "--out", bo, "--train-windows", "5000"],
        ] {
            assert!(run_args(&args).is_err(), "{args:?} succeeded");
        }
        assert!(!bad.exists());
    }

    #[test]
    fn experiment_writes_curve_final_and_plot() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("fig9");
        run_args(&[
            "experiment",
            "--out",
            out.to_str().unwrap(),
            "--iterations",
            "30",
        ])
        .unwrap();
        let curve = std::fs::read_to_string(out.join("curve.jsonl")).unwrap();
        let rows: Vec<serde_json::Value> = curve
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(rows.len(), 60);
        for r in &rows {
            for k in [
                "iteration",
                "precision",
                "f1",
                "seconds",
                "projected_seconds",
            ] {
                assert!(r.get(k).is_some(), "{k} missing in {r}");
            }
        }
        assert_eq!(rows[30]["precision"], "bfp8");
        assert_eq!(rows[30]["iteration"], 1);
        let fin: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("final.json")).unwrap())
                .unwrap();
        for p in ["fp32", "bfp8"] {
            for k in ["f1", "precision_score", "recall", "iterations_to_f1_0.87"] {
                assert!(fin[p].get(k).is_some(), "{p}.{k} missing in {fin}");
            }
        }
        assert_eq!(fin["bfp8"]["backends_agree"], true);
        let png = std::fs::read(out.join("fig9.png")).unwrap();
        assert_eq!(&png[1..4], b"PNG");
    }

    #[test]
    fn explicit_anomalies_and_tones() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("t");
        run_args(&[
            "generate",
            "--out",
            base.to_str().unwrap(),
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
        ])
        .unwrap();
        let rec = read_recording(&base, ReadOptions::default()).unwrap();
        let meta = rec.meta.unwrap();
        let spec: SignalSpec =
            serde_json::from_value(meta.global.generator.clone().unwrap()).unwrap();
        assert_eq!(spec.fm.snr_db, None);
        assert_eq!(
            spec.anomalies[0].kind,
            AnomalyKind::Sine { freq_hz: -123000.0 }
        );
        assert_eq!(
            (spec.anomalies[1].start, spec.anomalies[1].count),
            (3000, 1000)
        );
        match &spec.fm.message {
            Message::Tones { tones } => {
                assert_eq!(tones.len(), 2);
                assert_eq!((tones[1].freq_hz, tones[1].amplitude), (2500.0, 0.5));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_arguments_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("x");
        let o = out.to_str().unwrap();
        for args in [
            vec![
                "generate",
                "--out",
                o,
                "--samples",
                "1000",
                "--anomalies",
                "foo",
            ],
            vec![
                "generate",
                "--out",
                o,
                "--samples",
                "1000",
                "--anomalies",
                "chirp",
            ],
            vec![
                "generate",
                "--out",
                o,
                "--samples",
                "1000",
                "--anomaly",
                "chirp@900+200",
            ],
            vec![
                "generate",
                "--out",
                o,
                "--samples",
                "1000",
                "--anomaly",
                "chirp900",
            ],
            vec![
                "generate",
                "--out",
                o,
                "--samples",
                "1000",
                "--tones",
                "abc",
            ],
            vec![
                "generate",
                "--out",
                o,
                "--samples",
                "1000",
                "--noise-band",
                "5",
            ],
            vec![
                "generate",
                "--out",
                o,
                "--samples",
                "1000",
                "--sample-rate",
                "0",
            ],
            vec!["generate", "--out", o, "--seconds", "-1"],
            vec![
                "generate",
                "--out",
                o,
                "--samples",
                "10",
                "--deviation",
                "6e5",
            ],
            vec!["generate", "--out", o, "--samples", "10", "--meta", o],
            vec!["inspect", o],
            vec!["baseline", "--train", o, "--test", o, "--threshold", "q7"],
        ] {
            let r = run_args(&args);
            assert!(r.is_err(), "{args:?} succeeded");
        }
        assert!(parse(&["generate", "--out", o, "--samples", "5", "--seconds", "1"]).is_err());
        assert!(
            std::fs::read_dir(dir.path()).unwrap().next().is_none(),
            "files left behind"
        );
    }
}
