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
use lowprec_rf::baseline::PcaDetector;
use lowprec_rf::metrics::{best_f1, recall_by_kind};
use lowprec_rf::sigmf::{open_sigmf, sigmf_paths, write_cf32, SampleStream};
use lowprec_rf::signal::place_anomalies;
use lowprec_rf::window::make_windows;
use lowprec_rf::{
    read_recording, select_threshold, standard_pair, write_sigmf, Anomaly, AnomalyKind, Confusion,
    FmConfig, Generator, Iq, Message, NonFinitePolicy, Normaliser, ReadOptions, SigMfMeta,
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
}

pub fn run(cmd: &RfCommand) -> Result<()> {
    match cmd {
        RfCommand::Generate(a) => generate(a),
        RfCommand::Pair(a) => pair(a),
        RfCommand::Inspect(a) => inspect(a),
        RfCommand::Baseline(a) => baseline(a),
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
