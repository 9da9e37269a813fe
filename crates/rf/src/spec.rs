//! A [`SignalSpec`] from generator options as a user writes them (the options of
//! `lowprec rf generate`): the sample count from `--samples` or `--seconds` (bounded by
//! [`MAX_GENERATE_SAMPLES`]), message tones `FREQ[@AMPLITUDE]` or a noise band `LOW:HIGH`,
//! anomalies by type (placed one per equal slot) or explicitly at `TYPE@START+COUNT`, and
//! per-kind frequency overrides. Errors name the option and the value they reject
//! ([`RfError::BadOption`]); the signal itself is checked by [`crate::Generator::new`].

use crate::signal::{place_anomalies, Anomaly, AnomalyKind, FmConfig, Message, SignalSpec, Tone};
use crate::RfError;

/// The most samples one generated recording may have (16 GiB of `cf32_le`): a typo such as
/// `--samples 1e15` is an error, not a disk filled for hours.
pub const MAX_GENERATE_SAMPLES: u64 = 1 << 31;

/// Samples generated when neither a count nor a duration is given.
pub const DEFAULT_GENERATE_SAMPLES: u64 = 1 << 18;

/// A finite number, or why `s` is not one.
fn finite(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|e| format!("not a number ({e})"))?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err("not finite".into())
    }
}

/// Parses the value of `option` as a finite number.
pub fn parse_f64(option: &str, s: &str) -> Result<f64, RfError> {
    finite(s).map_err(|reason| RfError::bad_option(option, format!("{s:?}"), reason))
}

/// Parses one `--tones` entry, `FREQ[@AMPLITUDE]` in Hz (amplitude 1 when left out).
pub fn parse_tone(s: &str) -> Result<Tone, RfError> {
    let part = |what: &str, v: &str| {
        finite(v).map_err(|r| {
            RfError::bad_option("--tones", format!("{s:?}"), format!("{what} {v:?}: {r}"))
        })
    };
    let (f, a) = match s.split_once('@') {
        Some((f, a)) => (f, part("amplitude", a)?),
        None => (s, 1.0),
    };
    Ok(Tone {
        freq_hz: part("frequency", f)?,
        amplitude: a,
        phase_rad: 0.0,
    })
}

/// Parses every `--tones` entry.
pub fn parse_tones(specs: &[String]) -> Result<Vec<Tone>, RfError> {
    specs.iter().map(|t| parse_tone(t)).collect()
}

/// Parses `--noise-band LOW:HIGH` (Hz).
pub fn parse_noise_band(s: &str) -> Result<(f64, f64), RfError> {
    let value = || format!("{s:?}");
    let (lo, hi) = s
        .split_once(':')
        .ok_or_else(|| RfError::bad_option("--noise-band", value(), "expected LOW:HIGH"))?;
    let part = |what: &str, v: &str| {
        finite(v)
            .map_err(|r| RfError::bad_option("--noise-band", value(), format!("{what} {v:?}: {r}")))
    };
    Ok((part("low", lo)?, part("high", hi)?))
}

/// Per-kind frequency parameters that replace [`AnomalyKind::default_for`]'s (Hz; `None`
/// keeps the default).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct KindOverrides {
    pub bandpass_center_hz: Option<f64>,
    pub bandpass_width_hz: Option<f64>,
    pub chirp_start_hz: Option<f64>,
    pub chirp_end_hz: Option<f64>,
    pub sine_freq_hz: Option<f64>,
}

impl KindOverrides {
    /// The kind named `label` at sample rate `sample_rate_hz`, with these overrides.
    pub fn kind(&self, label: &str, sample_rate_hz: f64) -> Result<AnomalyKind, RfError> {
        Ok(match AnomalyKind::default_for(label, sample_rate_hz)? {
            AnomalyKind::Bandpass {
                center_hz,
                bandwidth_hz,
            } => AnomalyKind::Bandpass {
                center_hz: self.bandpass_center_hz.unwrap_or(center_hz),
                bandwidth_hz: self.bandpass_width_hz.unwrap_or(bandwidth_hz),
            },
            AnomalyKind::Chirp { start_hz, end_hz } => AnomalyKind::Chirp {
                start_hz: self.chirp_start_hz.unwrap_or(start_hz),
                end_hz: self.chirp_end_hz.unwrap_or(end_hz),
            },
            AnomalyKind::Sine { freq_hz } => AnomalyKind::Sine {
                freq_hz: self.sine_freq_hz.unwrap_or(freq_hz),
            },
        })
    }

    /// [`Self::kind`] with an unknown label reported against `option` and its `value`.
    fn kind_for(
        &self,
        option: &str,
        value: &str,
        label: &str,
        sample_rate_hz: f64,
    ) -> Result<AnomalyKind, RfError> {
        self.kind(label, sample_rate_hz).map_err(|e| {
            let reason = match e {
                RfError::InvalidArgument(m) => m,
                other => other.to_string(),
            };
            RfError::bad_option(option, format!("{value:?}"), reason)
        })
    }
}

/// Parses one `--anomaly TYPE@START+COUNT` (samples), e.g. `chirp@100000+4096`.
pub fn parse_anomaly_at(
    s: &str,
    overrides: &KindOverrides,
    sample_rate_hz: f64,
    power_db: f64,
) -> Result<Anomaly, RfError> {
    let bad = || RfError::bad_option("--anomaly", format!("{s:?}"), "expected TYPE@START+COUNT");
    let (label, at) = s.split_once('@').ok_or_else(bad)?;
    let (start, count) = at.split_once('+').ok_or_else(bad)?;
    Ok(Anomaly {
        kind: overrides.kind_for("--anomaly", s, label, sample_rate_hz)?,
        start: start.trim().parse().map_err(|_| bad())?,
        count: count.trim().parse().map_err(|_| bad())?,
        power_db,
    })
}

/// The sample count from `--samples` or else `--seconds` at `sample_rate_hz` (rounded to
/// whole samples), else [`DEFAULT_GENERATE_SAMPLES`]; at most [`MAX_GENERATE_SAMPLES`].
pub fn sample_count(
    samples: Option<u64>,
    seconds: Option<f64>,
    sample_rate_hz: f64,
) -> Result<u64, RfError> {
    let fs = sample_rate_hz;
    let limit = format!(
        "more than `rf generate` writes ({MAX_GENERATE_SAMPLES} samples, {} GiB of cf32_le)",
        (MAX_GENERATE_SAMPLES * 8) >> 30
    );
    match (samples, seconds) {
        (Some(n), _) if n > MAX_GENERATE_SAMPLES => {
            Err(RfError::bad_option("--samples", n.to_string(), limit))
        }
        (Some(n), _) => Ok(n),
        (None, Some(s)) => {
            if !(s.is_finite() && s >= 0.0) {
                return Err(RfError::bad_option(
                    "--seconds",
                    s.to_string(),
                    "must be a non-negative number",
                ));
            }
            let n = (s * fs).round();
            // Compared as f64: the cast of a huge product would saturate.
            if n > MAX_GENERATE_SAMPLES as f64 {
                return Err(RfError::bad_option(
                    "--seconds",
                    format!("{s} at {fs} Hz"),
                    format!("{n} samples, {limit}"),
                ));
            }
            Ok(n as u64)
        }
        (None, None) => Ok(DEFAULT_GENERATE_SAMPLES),
    }
}

/// The generator options of `rf generate`, as given; [`Self::spec`] checks them and builds the
/// recording's [`SignalSpec`]. The defaults are the command's.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateOptions {
    /// Complex samples (`--samples`); takes precedence over `seconds`.
    pub samples: Option<u64>,
    /// Duration (`--seconds`), rounded to whole samples.
    pub seconds: Option<f64>,
    pub sample_rate_hz: f64,
    /// `None`: no additive noise.
    pub snr_db: Option<f64>,
    pub deviation_hz: f64,
    pub carrier_offset_hz: f64,
    /// Message tones, `FREQ[@AMPLITUDE]` each; empty: a noise message in `noise_band`.
    pub tones: Vec<String>,
    /// `LOW:HIGH` in Hz (read only for a noise message).
    pub noise_band: String,
    pub noise_components: u32,
    /// Anomaly types placed one per equal slot (`--anomalies`); ignored when `anomaly_at` is
    /// not empty.
    pub anomalies: Vec<String>,
    /// Explicitly placed anomalies, `TYPE@START+COUNT` each (`--anomaly`).
    pub anomaly_at: Vec<String>,
    /// Length of each auto-placed anomaly, samples.
    pub anomaly_samples: u64,
    pub anomaly_power_db: f64,
    pub overrides: KindOverrides,
    pub seed: u64,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            samples: None,
            seconds: None,
            sample_rate_hz: 1e6,
            snr_db: Some(20.0),
            deviation_hz: 75e3,
            carrier_offset_hz: 0.0,
            tones: Vec::new(),
            noise_band: "500:15000".into(),
            noise_components: 16,
            anomalies: Vec::new(),
            anomaly_at: Vec::new(),
            anomaly_samples: 2048,
            anomaly_power_db: -6.0,
            overrides: KindOverrides::default(),
            seed: 0,
        }
    }
}

impl GenerateOptions {
    /// Checks the options and builds the spec. Auto-placed anomalies keep a quarter of their
    /// length to either slot edge.
    pub fn spec(&self) -> Result<SignalSpec, RfError> {
        let fs = self.sample_rate_hz;
        if !(fs.is_finite() && fs > 0.0) {
            return Err(RfError::bad_option(
                "--sample-rate",
                fs.to_string(),
                "must be a positive number",
            ));
        }
        let num_samples = sample_count(self.samples, self.seconds, fs)?;
        let message = if self.tones.is_empty() {
            let (low_hz, high_hz) = parse_noise_band(&self.noise_band)?;
            Message::Noise {
                low_hz,
                high_hz,
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
            deviation_hz: self.deviation_hz,
            carrier_offset_hz: self.carrier_offset_hz,
            snr_db: self.snr_db,
        };
        let anomalies = if !self.anomaly_at.is_empty() {
            self.anomaly_at
                .iter()
                .map(|a| parse_anomaly_at(a, &self.overrides, fs, self.anomaly_power_db))
                .collect::<Result<Vec<_>, _>>()?
        } else {
            let kinds = self
                .anomalies
                .iter()
                .map(|l| self.overrides.kind_for("--anomalies", l, l, fs))
                .collect::<Result<Vec<_>, _>>()?;
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
