//! Generator throughput in samples per second for a few signal configurations:
//! `cargo run --release -p lowprec-rf --example generate_throughput`. Timings on a shared
//! machine are noisy; run it twice.

use std::time::Instant;

use lowprec_rf::pair::{standard_anomaly_kinds, standard_fm};
use lowprec_rf::signal::place_anomalies;
use lowprec_rf::{Generator, Iq, Message, SignalSpec, Tone};

fn main() -> Result<(), lowprec_rf::RfError> {
    let n: u64 = 1 << 21;
    let noise_fm = standard_fm(1e6, 20.0, 1);
    let mut tone_fm = noise_fm.clone();
    tone_fm.message = Message::Tones {
        tones: vec![Tone {
            freq_hz: 1e3,
            amplitude: 1.0,
            phase_rad: 0.0,
        }],
    };
    let mut quiet = noise_fm.clone();
    quiet.snr_db = None;
    let kinds: Vec<_> = (0..30).flat_map(|_| standard_anomaly_kinds(1e6)).collect();
    let cases = [
        ("1 tone, AWGN", tone_fm, false),
        ("noise message (16), no AWGN", quiet, false),
        ("noise message (16), AWGN", noise_fm.clone(), false),
        (
            "noise message, AWGN, 90 x 2048-sample anomalies",
            noise_fm,
            true,
        ),
    ];
    let mut out = vec![Iq::default(); n as usize];
    for (name, fm, anomalies) in cases {
        let anomalies = if anomalies {
            place_anomalies(&kinds, n, 2048, -6.0, 0, 1)?
        } else {
            vec![]
        };
        let g = Generator::new(SignalSpec {
            fm,
            anomalies,
            num_samples: n,
            time_offset: 0,
            seed: 1,
        })?;
        let mut best = f64::INFINITY;
        for _ in 0..3 {
            let t = Instant::now();
            g.fill(0, &mut out)?;
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "{name:50} {:8.2} Msamples/s ({} threads available)",
            n as f64 / best / 1e6,
            std::thread::available_parallelism()
                .map(|p| p.get())
                .unwrap_or(1)
        );
    }
    Ok(())
}
