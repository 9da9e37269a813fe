//! Helpers shared by the integration tests.
#![allow(dead_code)]

use lowprec_rf::signal::{Anomaly, AnomalyKind, FmConfig, Message, SignalSpec, Tone};
use lowprec_rf::Iq;

pub const FS: f64 = 1e6;

/// A three-tone FM spec without anomalies.
pub fn tone_spec(num_samples: u64, snr_db: Option<f64>, seed: u64) -> SignalSpec {
    SignalSpec {
        fm: FmConfig {
            sample_rate_hz: FS,
            message: Message::Tones {
                tones: vec![
                    Tone {
                        freq_hz: 1_000.0,
                        amplitude: 1.0,
                        phase_rad: 0.3,
                    },
                    Tone {
                        freq_hz: 3_700.0,
                        amplitude: 0.5,
                        phase_rad: 1.1,
                    },
                    Tone {
                        freq_hz: 11_000.0,
                        amplitude: 0.25,
                        phase_rad: -2.0,
                    },
                ],
            },
            deviation_hz: 50_000.0,
            carrier_offset_hz: 20_000.0,
            snr_db,
        },
        anomalies: Vec::new(),
        num_samples,
        time_offset: 0,
        seed,
    }
}

pub fn with_anomaly(
    mut spec: SignalSpec,
    kind: AnomalyKind,
    start: u64,
    count: u64,
    power_db: f64,
) -> SignalSpec {
    spec.anomalies.push(Anomaly {
        kind,
        start,
        count,
        power_db,
    });
    spec
}

/// Power spectrum (|X_k|^2 / N^2 with a Hann window normalised to unit power gain) of a
/// segment, bins k = 0..N at frequency k fs / N (wrapped to [-fs/2, fs/2)).
pub fn power_spectrum(x: &[Iq]) -> Vec<f64> {
    let n = x.len();
    let w: Vec<f64> = (0..n)
        .map(|k| 0.5 - 0.5 * (std::f64::consts::TAU * k as f64 / n as f64).cos())
        .collect();
    let wpow: f64 = w.iter().map(|v| v * v).sum::<f64>();
    (0..n)
        .map(|k| {
            let (mut re, mut im) = (0.0, 0.0);
            for (j, s) in x.iter().enumerate() {
                let ang = -std::f64::consts::TAU * ((k * j) % n) as f64 / n as f64;
                let (sn, cs) = ang.sin_cos();
                let (a, b) = (f64::from(s.i) * w[j], f64::from(s.q) * w[j]);
                re += a * cs - b * sn;
                im += a * sn + b * cs;
            }
            (re * re + im * im) / (wpow * n as f64)
        })
        .collect()
}

/// Sum of spectrum bins whose frequency lies in [lo, hi] Hz.
pub fn band_power(spectrum: &[f64], fs: f64, lo: f64, hi: f64) -> f64 {
    let n = spectrum.len();
    spectrum
        .iter()
        .enumerate()
        .filter(|(k, _)| {
            let mut f = *k as f64 * fs / n as f64;
            if f >= fs / 2.0 {
                f -= fs;
            }
            f >= lo && f <= hi
        })
        .map(|(_, p)| p)
        .sum()
}

pub fn bytes_of(samples: &[Iq]) -> Vec<u8> {
    let mut v = Vec::new();
    lowprec_rf::sigmf::encode_cf32(samples, &mut v);
    v
}
