//! Complex-baseband FM signal generator with injected anomalies.
//!
//! # Signal model
//! Sample `n` (absolute index `t = time_offset + n`, time `t / fs`) is
//!
//! ```text
//! x[n] = exp(j (2 pi fc t / fs + phi(t)))  +  w[t]  +  sum over anomalies a_k[t]
//! phi(t) = 2 pi f_dev * integral from 0 to t/fs of m(tau) d tau
//! ```
//!
//! * The FM signal has unit amplitude, so its power is exactly 1.
//! * **SNR definition**: `SNR = P_signal / P_noise` over the full sampled band `[-fs/2, fs/2)`,
//!   where `P_signal = E|s|^2 = 1` and `P_noise = E|w|^2 = 2 sigma^2` (complex white Gaussian
//!   noise, variance `sigma^2` in each of I and Q). So `sigma = sqrt(10^(-SNR_dB/10) / 2)`.
//!   Anomalies are not counted as signal or noise.
//! * The message `m` is either a sum of tones with relative amplitudes normalised to sum to 1
//!   (so `|m| <= 1` and `f_dev` is the peak frequency deviation), or band-limited noise: a
//!   random-phase multisine of `components` tones with frequencies drawn uniformly in
//!   `[low_hz, high_hz]`, scaled to RMS 1/3 (so `f_dev` is the 3-sigma deviation).
//! * Because `m` is a sum of cosines its integral is closed-form: every sample is a pure
//!   function of its index, so chunking, random access and thread count cannot change a bit.
//!   The instantaneous frequency between samples `t-1` and `t` is `fc + f_dev * mean(m)` over
//!   that sampling interval.
//! * Anomaly power is stated in dB relative to the FM signal's power (which is 1):
//!   `P_anomaly = 10^(power_db / 10)`.
//!   - `bandpass`: complex white Gaussian noise through a Blackman-windowed-sinc band-pass FIR
//!     centred at `center_hz` with passband width `bandwidth_hz`, scaled to the stated power.
//!     The filter reads noise from before the window, so the anomaly is stationary from its
//!     first sample.
//!   - `chirp`: a unit-envelope linear chirp whose frequency moves from `start_hz` at the first
//!     annotated sample to `end_hz` at the end of the annotation.
//!   - `sine`: a complex exponential at `freq_hz` with a random starting phase.

use serde::{Deserialize, Serialize};

use crate::rng::{streams, CounterRng};
use crate::{Iq, RfError};

/// One message tone: `amplitude * cos(2 pi freq_hz t + phase_rad)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tone {
    pub freq_hz: f64,
    pub amplitude: f64,
    #[serde(default)]
    pub phase_rad: f64,
}

/// The modulating message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// Sum of tones; amplitudes are relative (normalised to sum to 1).
    Tones { tones: Vec<Tone> },
    /// Band-limited noise: `components` random-phase tones uniform in `[low_hz, high_hz]`,
    /// drawn from `seed` (its own seed, so two recordings can share one message process).
    Noise {
        low_hz: f64,
        high_hz: f64,
        components: u32,
        seed: u64,
    },
}

/// Parameters of the FM transmission and channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FmConfig {
    pub sample_rate_hz: f64,
    pub message: Message,
    /// Peak deviation for a tone message, 3-sigma deviation for a noise message.
    pub deviation_hz: f64,
    /// Offset of the carrier from the centre of the baseband.
    pub carrier_offset_hz: f64,
    /// Signal-to-noise ratio in dB (see the module docs); `None` means no noise.
    pub snr_db: Option<f64>,
}

/// The three anomaly types, with their frequency parameters (Hz, baseband).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AnomalyKind {
    Bandpass { center_hz: f64, bandwidth_hz: f64 },
    Chirp { start_hz: f64, end_hz: f64 },
    Sine { freq_hz: f64 },
}

/// The labels written to `core:label`, in the order the kinds are listed above.
pub const ANOMALY_LABELS: [&str; 3] = ["bandpass", "chirp", "sine"];

impl AnomalyKind {
    /// The SigMF `core:label` of this kind.
    pub fn label(&self) -> &'static str {
        match self {
            AnomalyKind::Bandpass { .. } => ANOMALY_LABELS[0],
            AnomalyKind::Chirp { .. } => ANOMALY_LABELS[1],
            AnomalyKind::Sine { .. } => ANOMALY_LABELS[2],
        }
    }

    /// Lowest and highest baseband frequency the anomaly occupies (nominal passband edges).
    pub fn freq_edges(&self) -> (f64, f64) {
        match *self {
            AnomalyKind::Bandpass {
                center_hz,
                bandwidth_hz,
            } => (
                center_hz - bandwidth_hz / 2.0,
                center_hz + bandwidth_hz / 2.0,
            ),
            AnomalyKind::Chirp { start_hz, end_hz } => (start_hz.min(end_hz), start_hz.max(end_hz)),
            AnomalyKind::Sine { freq_hz } => (freq_hz, freq_hz),
        }
    }

    /// Default parameters of a kind named by its label, relative to the sample rate:
    /// bandpass centred at -0.25 fs, 0.1 fs wide; chirp from -0.4 fs to +0.4 fs; sine at 0.3 fs.
    pub fn default_for(label: &str, sample_rate_hz: f64) -> Result<AnomalyKind, RfError> {
        let fs = sample_rate_hz;
        match label.trim() {
            "bandpass" => Ok(AnomalyKind::Bandpass {
                center_hz: -0.25 * fs,
                bandwidth_hz: 0.1 * fs,
            }),
            "chirp" => Ok(AnomalyKind::Chirp {
                start_hz: -0.4 * fs,
                end_hz: 0.4 * fs,
            }),
            "sine" => Ok(AnomalyKind::Sine { freq_hz: 0.3 * fs }),
            other => Err(RfError::InvalidArgument(format!(
                "unknown anomaly type {other:?}; expected one of bandpass, chirp, sine"
            ))),
        }
    }
}

/// One injected anomaly: samples `[start, start + count)` of the recording.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Anomaly {
    pub kind: AnomalyKind,
    pub start: u64,
    pub count: u64,
    /// Power relative to the FM signal, dB.
    pub power_db: f64,
}

/// Everything that determines a recording's bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignalSpec {
    pub fm: FmConfig,
    pub anomalies: Vec<Anomaly>,
    pub num_samples: u64,
    /// Absolute index of the first sample: a recording with offset `k` continues, sample for
    /// sample, the transmission of one with offset 0 (fresh noise, same message process).
    #[serde(default)]
    pub time_offset: u64,
    pub seed: u64,
}

impl SignalSpec {
    /// The anomalies as label ranges (what the SigMF annotations will say).
    pub fn label_ranges(&self) -> Vec<crate::window::LabelRange> {
        self.anomalies
            .iter()
            .map(|a| crate::window::LabelRange {
                start: a.start,
                count: a.count,
                label: a.kind.label().into(),
            })
            .collect()
    }
}

/// Places anomalies of the given kinds, one per equal slot of the recording (in the order
/// given), each at a seeded random position inside its slot with at least `guard` samples to
/// either slot edge. Fails if a slot is shorter than `count + 2 * guard`.
pub fn place_anomalies(
    kinds: &[AnomalyKind],
    num_samples: u64,
    count: u64,
    power_db: f64,
    guard: u64,
    seed: u64,
) -> Result<Vec<Anomaly>, RfError> {
    if kinds.is_empty() {
        return Ok(Vec::new());
    }
    if count == 0 {
        return Err(RfError::InvalidArgument(
            "anomaly length must be at least 1 sample".into(),
        ));
    }
    let slot = num_samples / kinds.len() as u64;
    let need = count.saturating_add(guard.saturating_mul(2));
    if slot < need {
        return Err(RfError::InvalidArgument(format!(
            "{} anomalies of {count} samples (guard {guard}) do not fit in {num_samples} samples: \
             each needs a slot of {need} samples, slots are {slot}",
            kinds.len()
        )));
    }
    let rng = CounterRng::new(seed, streams::PLACEMENT);
    let free = slot - need;
    Ok(kinds
        .iter()
        .enumerate()
        .map(|(j, kind)| {
            let jitter = ((rng.uniform(j as u64) * (free + 1) as f64) as u64).min(free);
            Anomaly {
                kind: kind.clone(),
                start: j as u64 * slot + guard + jitter,
                count,
                power_db,
            }
        })
        .collect())
}

/// Band-pass FIR taps: the shortest odd length whose Blackman transition band (about
/// 5.5 / L cycles per sample) is at most a quarter of the passband, within [33, 4095].
fn bandpass_taps(center_hz: f64, bandwidth_hz: f64, fs: f64, power: f64) -> Vec<(f64, f64)> {
    let bw = bandwidth_hz / fs;
    let mut len = (22.0 / bw).ceil().clamp(33.0, 4095.0) as usize;
    if len.is_multiple_of(2) {
        len += 1;
    }
    let mid = (len - 1) as f64 / 2.0;
    let cutoff = bw / 2.0;
    let denom = (len - 1) as f64;
    let mut taps: Vec<(f64, f64)> = (0..len)
        .map(|j| {
            let x = j as f64 - mid;
            let sinc = if x == 0.0 {
                2.0 * cutoff
            } else {
                (std::f64::consts::TAU * cutoff * x).sin() / (std::f64::consts::PI * x)
            };
            let a = std::f64::consts::TAU * j as f64 / denom;
            let window = 0.42 - 0.5 * a.cos() + 0.08 * (2.0 * a).cos();
            let lp = sinc * window;
            let (s, c) = (std::f64::consts::TAU * center_hz / fs * x).sin_cos();
            (lp * c, lp * s)
        })
        .collect();
    // Unit-power input noise gives output power sum |h|^2: scale to the requested power.
    let energy: f64 = taps.iter().map(|(re, im)| re * re + im * im).sum();
    let g = (power / energy).sqrt();
    for t in &mut taps {
        t.0 *= g;
        t.1 *= g;
    }
    taps
}

/// Message components are computed exactly at absolute indices that are multiples of this
/// and by rotation in between (see [`Generator::fill`]).
pub const ANCHOR_SPACING: u64 = 64;

/// Largest absolute sample index (exclusive) a recording may reach: 2^53, where f64 stops
/// representing every integer.
pub const MAX_TIME_INDEX: u64 = 1 << 53;

/// Samples per parallel work item in [`Generator::fill`].
pub const PARALLEL_BLOCK: usize = 16_384;

/// `2 pi * frac(x)`: a phase in [0, 2 pi) from a cycle count, keeping precision for large x.
#[inline]
fn cycles_to_phase(x: f64) -> f64 {
    std::f64::consts::TAU * (x - x.floor())
}

#[derive(Clone, Debug)]
struct MessageComponent {
    /// Frequency in cycles per sample.
    cycles_per_sample: f64,
    phase0: f64,
    /// Normalised message amplitude of this component.
    amplitude: f64,
    /// Peak phase excursion `2 pi f_dev a / (2 pi f) = f_dev a / f`, radians.
    phase_gain: f64,
}

#[derive(Clone, Debug)]
enum AnomalyState {
    Sine {
        amp: f64,
        cycles_per_sample: f64,
        phase0: f64,
    },
    /// Phase in cycles at local index u: `c1 u + c2 u^2`.
    Chirp {
        amp: f64,
        c1: f64,
        c2: f64,
        phase0: f64,
    },
    Bandpass {
        taps: Vec<(f64, f64)>,
        rng: CounterRng,
    },
}

/// A validated [`SignalSpec`], ready to produce samples at any index.
#[derive(Clone, Debug)]
pub struct Generator {
    spec: SignalSpec,
    carrier_cycles_per_sample: f64,
    message: Vec<MessageComponent>,
    /// `-sum_k phase_gain_k sin(phase0_k)`, so that the message phase is 0 at time 0.
    message_phase_offset: f64,
    noise_sigma: f64,
    awgn: CounterRng,
    anomalies: Vec<AnomalyState>,
}

fn check_finite(name: &str, v: f64) -> Result<(), RfError> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(RfError::Config(format!("{name} must be finite, got {v}")))
    }
}

fn check_baseband(name: &str, f: f64, fs: f64) -> Result<(), RfError> {
    check_finite(name, f)?;
    if f.abs() > fs / 2.0 {
        return Err(RfError::Config(format!(
            "{name} = {f} Hz is outside the sampled band [-{0}, {0}] Hz",
            fs / 2.0
        )));
    }
    Ok(())
}

impl Generator {
    /// Validates the spec (finite values, frequencies inside the band, anomalies inside the
    /// recording) and precomputes filters and message components.
    pub fn new(spec: SignalSpec) -> Result<Generator, RfError> {
        let fm = &spec.fm;
        let fs = fm.sample_rate_hz;
        check_finite("sample_rate_hz", fs)?;
        if fs <= 0.0 {
            return Err(RfError::Config(format!(
                "sample_rate_hz must be positive, got {fs}"
            )));
        }
        check_finite("deviation_hz", fm.deviation_hz)?;
        if fm.deviation_hz < 0.0 {
            return Err(RfError::Config(format!(
                "deviation_hz must be >= 0, got {}",
                fm.deviation_hz
            )));
        }
        check_baseband("carrier_offset_hz", fm.carrier_offset_hz, fs)?;
        if fm.carrier_offset_hz.abs() + fm.deviation_hz >= fs / 2.0 {
            return Err(RfError::Config(format!(
                "carrier offset {} Hz +/- deviation {} Hz leaves the band (+/-{} Hz): it would alias",
                fm.carrier_offset_hz,
                fm.deviation_hz,
                fs / 2.0
            )));
        }
        // Phases are computed from f64 sample indices, exact only below 2^53.
        match spec.time_offset.checked_add(spec.num_samples) {
            Some(end) if end <= MAX_TIME_INDEX => {}
            _ => {
                return Err(RfError::Config(format!(
                    "time_offset {} + num_samples {} exceeds 2^53 samples",
                    spec.time_offset, spec.num_samples
                )))
            }
        }
        let message = Self::message_components(&fm.message, fs, fm.deviation_hz)?;
        let noise_sigma = match fm.snr_db {
            None => 0.0,
            Some(snr) => {
                check_finite("snr_db", snr)?;
                (10f64.powf(-snr / 10.0) / 2.0).sqrt()
            }
        };
        let mut anomalies = Vec::with_capacity(spec.anomalies.len());
        for (k, a) in spec.anomalies.iter().enumerate() {
            let what = format!("anomaly {k} ({})", a.kind.label());
            if a.count == 0 {
                return Err(RfError::Config(format!("{what}: count must be at least 1")));
            }
            match a.start.checked_add(a.count) {
                Some(end) if end <= spec.num_samples => {}
                _ => {
                    return Err(RfError::Config(format!(
                        "{what}: samples [{}, {}+{}) extend past the recording's {} samples",
                        a.start, a.start, a.count, spec.num_samples
                    )))
                }
            }
            check_finite(&format!("{what} power_db"), a.power_db)?;
            let power = 10f64.powf(a.power_db / 10.0);
            let rng = CounterRng::new(spec.seed, streams::ANOMALY_BASE + k as u64);
            let phase0 = std::f64::consts::TAU * rng.uniform(u64::MAX);
            let state = match a.kind {
                AnomalyKind::Sine { freq_hz } => {
                    check_baseband(&format!("{what} freq_hz"), freq_hz, fs)?;
                    AnomalyState::Sine {
                        amp: power.sqrt(),
                        cycles_per_sample: freq_hz / fs,
                        phase0,
                    }
                }
                AnomalyKind::Chirp { start_hz, end_hz } => {
                    check_baseband(&format!("{what} start_hz"), start_hz, fs)?;
                    check_baseband(&format!("{what} end_hz"), end_hz, fs)?;
                    AnomalyState::Chirp {
                        amp: power.sqrt(),
                        c1: start_hz / fs,
                        c2: (end_hz - start_hz) / fs / (2.0 * a.count as f64),
                        phase0,
                    }
                }
                AnomalyKind::Bandpass {
                    center_hz,
                    bandwidth_hz,
                } => {
                    check_finite(&format!("{what} bandwidth_hz"), bandwidth_hz)?;
                    if bandwidth_hz <= 0.0 {
                        return Err(RfError::Config(format!(
                            "{what}: bandwidth_hz must be positive, got {bandwidth_hz}"
                        )));
                    }
                    let (lo, hi) = a.kind.freq_edges();
                    check_baseband(&format!("{what} lower band edge"), lo, fs)?;
                    check_baseband(&format!("{what} upper band edge"), hi, fs)?;
                    AnomalyState::Bandpass {
                        taps: bandpass_taps(center_hz, bandwidth_hz, fs, power),
                        rng,
                    }
                }
            };
            anomalies.push(state);
        }
        let message_phase_offset = -message
            .iter()
            .map(|c| c.phase_gain * c.phase0.sin())
            .sum::<f64>();
        Ok(Generator {
            carrier_cycles_per_sample: fm.carrier_offset_hz / fs,
            message,
            message_phase_offset,
            noise_sigma,
            awgn: CounterRng::new(spec.seed, streams::AWGN),
            anomalies,
            spec,
        })
    }

    fn message_components(
        message: &Message,
        fs: f64,
        deviation: f64,
    ) -> Result<Vec<MessageComponent>, RfError> {
        let check_freq = |name: &str, f: f64| -> Result<(), RfError> {
            check_finite(name, f)?;
            if f <= 0.0 || f >= fs / 2.0 {
                return Err(RfError::Config(format!(
                    "{name} = {f} Hz must lie in (0, {}) Hz",
                    fs / 2.0
                )));
            }
            Ok(())
        };
        match message {
            Message::Tones { tones } => {
                if tones.is_empty() {
                    return Err(RfError::Config(
                        "tone message needs at least one tone".into(),
                    ));
                }
                let mut total = 0.0;
                for (k, t) in tones.iter().enumerate() {
                    check_freq(&format!("tone {k} freq_hz"), t.freq_hz)?;
                    check_finite(&format!("tone {k} amplitude"), t.amplitude)?;
                    check_finite(&format!("tone {k} phase_rad"), t.phase_rad)?;
                    if t.amplitude < 0.0 {
                        return Err(RfError::Config(format!(
                            "tone {k} amplitude must be >= 0, got {}",
                            t.amplitude
                        )));
                    }
                    total += t.amplitude;
                }
                if total <= 0.0 {
                    return Err(RfError::Config("tone amplitudes are all zero".into()));
                }
                Ok(tones
                    .iter()
                    .map(|t| MessageComponent {
                        cycles_per_sample: t.freq_hz / fs,
                        phase0: t.phase_rad,
                        amplitude: t.amplitude / total,
                        phase_gain: deviation * (t.amplitude / total) / t.freq_hz,
                    })
                    .collect())
            }
            &Message::Noise {
                low_hz,
                high_hz,
                components,
                seed,
            } => {
                check_freq("noise message low_hz", low_hz)?;
                check_freq("noise message high_hz", high_hz)?;
                if low_hz > high_hz {
                    return Err(RfError::Config(format!(
                        "noise message band is empty: low_hz {low_hz} > high_hz {high_hz}"
                    )));
                }
                if components == 0 {
                    return Err(RfError::Config(
                        "noise message needs at least 1 component".into(),
                    ));
                }
                // RMS of n equal tones of amplitude a is a sqrt(n / 2); make it 1/3.
                let amp = (2.0 / components as f64).sqrt() / 3.0;
                let rng = CounterRng::new(seed, streams::MESSAGE);
                Ok((0..components as u64)
                    .map(|k| {
                        let (u, v) = rng.uniform_pair(k);
                        let f = low_hz + u * (high_hz - low_hz);
                        MessageComponent {
                            cycles_per_sample: f / fs,
                            phase0: std::f64::consts::TAU * v,
                            amplitude: amp,
                            phase_gain: deviation * amp / f,
                        }
                    })
                    .collect())
            }
        }
    }

    pub fn spec(&self) -> &SignalSpec {
        &self.spec
    }

    pub fn num_samples(&self) -> u64 {
        self.spec.num_samples
    }

    pub fn sample_rate_hz(&self) -> f64 {
        self.spec.fm.sample_rate_hz
    }

    /// The message value `m` at absolute time index `t` (may be fractional, in samples).
    pub fn message_at(&self, t: f64) -> f64 {
        self.message
            .iter()
            .map(|c| c.amplitude * (cycles_to_phase(c.cycles_per_sample * t) + c.phase0).cos())
            .sum()
    }

    /// The message's phase contribution `phi(t)` for absolute indices `t0 .. t0 + out.len()`.
    ///
    /// Each component's `sin` comes from its exact value at the last multiple of
    /// [`ANCHOR_SPACING`] at or before `t`, advanced by complex rotation: a sample's value
    /// depends only on its absolute index (never on where a chunk starts), at a cost of one
    /// complex multiply instead of one `sin` per component and sample. The recurrence's
    /// rounding error over at most 63 steps is about 1e-14 relative.
    fn message_phase(&self, t0: u64, out: &mut [f64]) {
        out.fill(self.message_phase_offset);
        for c in &self.message {
            let (rot_s, rot_c) = (std::f64::consts::TAU * c.cycles_per_sample).sin_cos();
            let mut i = 0usize;
            while i < out.len() {
                let t = t0.wrapping_add(i as u64);
                let anchor = t - t % ANCHOR_SPACING;
                let (mut s, mut co) =
                    (cycles_to_phase(c.cycles_per_sample * anchor as f64) + c.phase0).sin_cos();
                for _ in anchor..t {
                    (s, co) = (s * rot_c + co * rot_s, co * rot_c - s * rot_s);
                }
                let run = ((anchor + ANCHOR_SPACING - t) as usize).min(out.len() - i);
                for o in &mut out[i..i + run] {
                    *o += c.phase_gain * s;
                    (s, co) = (s * rot_c + co * rot_s, co * rot_c - s * rot_s);
                }
                i += run;
            }
        }
    }

    /// Writes samples `[start, start + out.len())` of the recording into `out`. Each sample is
    /// a pure function of its index: any split into calls, and any number of threads, gives
    /// the same bits. Long requests are split into blocks of [`PARALLEL_BLOCK`] samples that
    /// rayon fills in parallel.
    pub fn fill(&self, start: u64, out: &mut [Iq]) -> Result<(), RfError> {
        use rayon::prelude::*;
        if out.len() < 2 * PARALLEL_BLOCK {
            return self.fill_serial(start, out);
        }
        match start.checked_add(out.len() as u64) {
            Some(end) if end <= self.spec.num_samples => {}
            // Out of range: the serial path reports it for the whole request.
            _ => return self.fill_serial(start, out),
        }
        out.par_chunks_mut(PARALLEL_BLOCK)
            .enumerate()
            .try_for_each(|(k, chunk)| self.fill_serial(start + (k * PARALLEL_BLOCK) as u64, chunk))
    }

    fn fill_serial(&self, start: u64, out: &mut [Iq]) -> Result<(), RfError> {
        let end = start
            .checked_add(out.len() as u64)
            .filter(|&e| e <= self.spec.num_samples);
        let Some(end) = end else {
            return Err(RfError::InvalidArgument(format!(
                "samples [{start}, {start}+{}) requested from a recording of {} samples",
                out.len(),
                self.spec.num_samples
            )));
        };
        let offset = self.spec.time_offset;
        let mut phase = vec![0.0; out.len()];
        self.message_phase(offset.wrapping_add(start), &mut phase);
        let mut acc: Vec<(f64, f64)> = (start..end)
            .zip(&phase)
            .map(|(n, &message_phase)| {
                let t = offset.wrapping_add(n);
                let carrier = cycles_to_phase(self.carrier_cycles_per_sample * t as f64);
                let (s, c) = (carrier + message_phase).sin_cos();
                let (mut re, mut im) = (c, s);
                if self.noise_sigma > 0.0 {
                    let (a, b) = self.awgn.normal_pair(t);
                    re += self.noise_sigma * a;
                    im += self.noise_sigma * b;
                }
                (re, im)
            })
            .collect();
        for (a, state) in self.spec.anomalies.iter().zip(&self.anomalies) {
            let lo = a.start.max(start);
            let hi = (a.start + a.count).min(end);
            if lo >= hi {
                continue;
            }
            let dst = &mut acc[(lo - start) as usize..(hi - start) as usize];
            match state {
                &AnomalyState::Sine {
                    amp,
                    cycles_per_sample,
                    phase0,
                } => {
                    for (u, d) in (lo - a.start..).zip(dst.iter_mut()) {
                        let (s, c) =
                            (cycles_to_phase(cycles_per_sample * u as f64) + phase0).sin_cos();
                        d.0 += amp * c;
                        d.1 += amp * s;
                    }
                }
                &AnomalyState::Chirp {
                    amp,
                    c1,
                    c2,
                    phase0,
                } => {
                    for (u, d) in (lo - a.start..).zip(dst.iter_mut()) {
                        let uf = u as f64;
                        let (s, c) = (cycles_to_phase(c1 * uf + c2 * uf * uf) + phase0).sin_cos();
                        d.0 += amp * c;
                        d.1 += amp * s;
                    }
                }
                AnomalyState::Bandpass { taps, rng } => {
                    // Input noise at absolute indices [lo - L + 1, hi), unit complex power.
                    let l = taps.len() as u64;
                    let first = offset.wrapping_add(lo).wrapping_sub(l - 1);
                    let noise: Vec<(f64, f64)> = (0..(hi - lo) + l - 1)
                        .map(|i| {
                            let (x, y) = rng.normal_pair(first.wrapping_add(i));
                            (
                                x * std::f64::consts::FRAC_1_SQRT_2,
                                y * std::f64::consts::FRAC_1_SQRT_2,
                            )
                        })
                        .collect();
                    for (i, d) in dst.iter_mut().enumerate() {
                        // y[n] = sum_j h[j] w[n - j]; w[n - j] is noise[i + L - 1 - j].
                        let (mut re, mut im) = (0.0, 0.0);
                        let window = &noise[i..i + taps.len()];
                        for (h, w) in taps.iter().zip(window.iter().rev()) {
                            re += h.0 * w.0 - h.1 * w.1;
                            im += h.0 * w.1 + h.1 * w.0;
                        }
                        d.0 += re;
                        d.1 += im;
                    }
                }
            }
        }
        for (o, (re, im)) in out.iter_mut().zip(acc) {
            *o = Iq {
                i: re as f32,
                q: im as f32,
            };
        }
        Ok(())
    }

    /// The whole recording in memory.
    pub fn generate_all(&self) -> Result<Vec<Iq>, RfError> {
        let n = usize::try_from(self.spec.num_samples).map_err(|_| {
            RfError::InvalidArgument(format!(
                "{} samples do not fit in memory",
                self.spec.num_samples
            ))
        })?;
        let mut out = vec![Iq::default(); n];
        for (k, chunk) in out.chunks_mut(1 << 16).enumerate() {
            self.fill((k as u64) << 16, chunk)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The anchored rotation matches the direct `sin` formula to within the rounding of the
    /// f64 cycle counts both start from: `sum_k gain_k 2 pi 8 eps (f_k t / fs + 1)` plus
    /// 1e-10 rad (about 5e-8 rad at index 1e7, 5e-3 rad near index 1e12, i.e. 11 days at
    /// 1 MHz, where any f64 phase of a 1e10-cycle count is that coarse).
    #[test]
    fn anchored_message_phase_matches_direct_formula() {
        let spec = SignalSpec {
            fm: FmConfig {
                sample_rate_hz: 1e6,
                message: Message::Noise {
                    low_hz: 500.0,
                    high_hz: 15e3,
                    components: 16,
                    seed: 4,
                },
                deviation_hz: 75e3,
                carrier_offset_hz: 0.0,
                snr_db: None,
            },
            anomalies: vec![],
            num_samples: 1 << 20,
            time_offset: 987_654_321_123,
            seed: 0,
        };
        let g = Generator::new(spec).unwrap();
        for t0 in [
            0u64,
            1,
            63,
            64,
            65,
            10_000_037,
            (1 << 32) - 1001,
            987_654_321_123 + 77,
        ] {
            let mut fast = vec![0.0; 1000];
            g.message_phase(t0, &mut fast);
            for (i, f) in fast.iter().enumerate() {
                let t = (t0 + i as u64) as f64;
                let direct: f64 = g
                    .message
                    .iter()
                    .map(|c| {
                        let arg = cycles_to_phase(c.cycles_per_sample * t) + c.phase0;
                        c.phase_gain * (arg.sin() - c.phase0.sin())
                    })
                    .sum();
                let tol = 1e-10
                    + g.message
                        .iter()
                        .map(|c| {
                            c.phase_gain
                                * std::f64::consts::TAU
                                * 8.0
                                * f64::EPSILON
                                * (c.cycles_per_sample * t + 1.0)
                        })
                        .sum::<f64>();
                assert!((f - direct).abs() < tol, "t {t}: {f} vs {direct}");
            }
        }
    }
}
