mod common;

use common::*;
use lowprec_rf::signal::{place_anomalies, AnomalyKind, Message};
use lowprec_rf::{Generator, Iq, RfError};

fn phase_step(a: Iq, b: Iq) -> f64 {
    // arg(b * conj(a))
    let (ar, ai, br, bi) = (
        f64::from(a.i),
        f64::from(a.q),
        f64::from(b.i),
        f64::from(b.q),
    );
    (bi * ar - br * ai).atan2(br * ar + bi * ai)
}

/// Tolerance: 0.1% of the deviation. The generator's frequency over one sampling interval is
/// the interval mean of the message; comparing with the midpoint value costs at most
/// (pi f / fs)^2 / 6 relative (4e-4 at 15 kHz / 1 MHz), f32 storage about 0.02 Hz.
#[test]
fn instantaneous_frequency_follows_message() {
    for spec in [tone_spec(20_000, None, 3), {
        let mut s = tone_spec(20_000, None, 3);
        s.fm.message = Message::Noise {
            low_hz: 500.0,
            high_hz: 15_000.0,
            components: 16,
            seed: 9,
        };
        s.time_offset = 123_456_789;
        s
    }] {
        let g = Generator::new(spec.clone()).unwrap();
        let x = g.generate_all().unwrap();
        let fdev = spec.fm.deviation_hz;
        let mut max_err: f64 = 0.0;
        let mut max_m: f64 = 0.0;
        for n in 1..x.len() {
            let f = phase_step(x[n - 1], x[n]) * FS / std::f64::consts::TAU;
            let t = (spec.time_offset + n as u64) as f64 - 0.5;
            let m = g.message_at(t);
            max_m = max_m.max(m.abs());
            let expect = spec.fm.carrier_offset_hz + fdev * m;
            max_err = max_err.max((f - expect).abs());
        }
        assert!(max_err < 1e-3 * fdev, "max frequency error {max_err} Hz");
        // The message really modulates (not a constant carrier); tone messages are normalised
        // to |m| <= 1 (noise messages to RMS 1/3, so their peaks may exceed 1).
        assert!(max_m > 0.3, "max |m| = {max_m}");
        if matches!(spec.fm.message, Message::Tones { .. }) {
            assert!(max_m <= 1.0 + 1e-9, "max |m| = {max_m}");
        }
    }
}

#[test]
fn unit_envelope_and_snr_definition() {
    let clean = Generator::new(tone_spec(50_000, None, 5))
        .unwrap()
        .generate_all()
        .unwrap();
    for s in &clean {
        let p = f64::from(s.i).powi(2) + f64::from(s.q).powi(2);
        assert!((p - 1.0).abs() < 1e-6);
    }
    for snr in [0.0, 10.0, 20.0] {
        let noisy = Generator::new(tone_spec(50_000, Some(snr), 5))
            .unwrap()
            .generate_all()
            .unwrap();
        let mut pn = 0.0;
        let mut pi = 0.0;
        for (a, b) in noisy.iter().zip(&clean) {
            let di = f64::from(a.i) - f64::from(b.i);
            let dq = f64::from(a.q) - f64::from(b.q);
            pn += di * di + dq * dq;
            pi += di * di;
        }
        let pn = pn / clean.len() as f64;
        let want = 10f64.powf(-snr / 10.0);
        // 50k complex draws: relative standard error of the power about 0.45%.
        assert!(
            (pn / want - 1.0).abs() < 0.03,
            "snr {snr}: noise power {pn}, want {want}"
        );
        // Split evenly between I and Q.
        assert!((pi / clean.len() as f64 / (want / 2.0) - 1.0).abs() < 0.04);
    }
}

/// Samples outside the annotation are bit-identical to the anomaly-free recording; inside,
/// the added component has the stated power and sits at the expected frequencies.
#[test]
fn anomalies_appear_where_annotated() {
    let n = 40_960u64;
    let (start, count) = (16_384u64, 8_192u64);
    let cases = [
        AnomalyKind::Bandpass {
            center_hz: -250_000.0,
            bandwidth_hz: 100_000.0,
        },
        AnomalyKind::Chirp {
            start_hz: -400_000.0,
            end_hz: 400_000.0,
        },
        AnomalyKind::Sine { freq_hz: 300_000.0 },
    ];
    let base = tone_spec(n, Some(20.0), 11);
    let clean = Generator::new(base.clone())
        .unwrap()
        .generate_all()
        .unwrap();
    for kind in cases {
        let power_db = -3.0;
        let spec = with_anomaly(base.clone(), kind.clone(), start, count, power_db);
        let x = Generator::new(spec).unwrap().generate_all().unwrap();
        let s = start as usize;
        let e = (start + count) as usize;
        assert_eq!(
            bytes_of(&x[..s]),
            bytes_of(&clean[..s]),
            "{kind:?} leaked before its window"
        );
        assert_eq!(
            bytes_of(&x[e..]),
            bytes_of(&clean[e..]),
            "{kind:?} leaked after its window"
        );
        let added: Vec<Iq> = x[s..e]
            .iter()
            .zip(&clean[s..e])
            .map(|(a, b)| Iq {
                i: a.i - b.i,
                q: a.q - b.q,
            })
            .collect();
        let p = added
            .iter()
            .map(|v| f64::from(v.i).powi(2) + f64::from(v.q).powi(2))
            .sum::<f64>()
            / count as f64;
        let want = 10f64.powf(power_db / 10.0);
        assert!(
            (p / want - 1.0).abs() < 0.1,
            "{kind:?}: added power {p}, want {want}"
        );

        // Spectral check on 1024-sample segments: energy in the anomaly's band (a) exceeds the
        // anomaly-free recording's at the same time by at least 70% of the anomaly's power,
        // and (b) where the band misses the FM signal (about [-80, 120] kHz), is 30 times the
        // energy in that band in a segment outside the window.
        let seg = 1024usize;
        let quarters = 4;
        for qi in 0..quarters {
            let a = s + qi * (count as usize / quarters);
            let inside = power_spectrum(&x[a..a + seg]);
            let reference = power_spectrum(&clean[a..a + seg]);
            let outside = power_spectrum(&x[1024..1024 + seg]);
            let (lo, hi) = match kind {
                AnomalyKind::Chirp { start_hz, end_hz } => {
                    // Frequency over this segment moves linearly with time.
                    let f =
                        |u: usize| start_hz + (end_hz - start_hz) * (u - s) as f64 / count as f64;
                    (f(a) - 5_000.0, f(a + seg) + 5_000.0)
                }
                _ => {
                    let (lo, hi) = kind.freq_edges();
                    (lo - 5_000.0, hi + 5_000.0)
                }
            };
            let pin = band_power(&inside, FS, lo, hi);
            let pref = band_power(&reference, FS, lo, hi);
            let pout = band_power(&outside, FS, lo, hi);
            assert!(
                pin - pref > 0.7 * want,
                "{kind:?} quarter {qi}: band [{lo}, {hi}] power {pin}, {pref} without the anomaly"
            );
            if hi < -80_000.0 || lo > 120_000.0 {
                assert!(
                    pin > 30.0 * pout,
                    "{kind:?} quarter {qi}: band [{lo}, {hi}] power {pin} inside vs {pout} outside"
                );
            }
        }
        // The FM signal itself is still there, at unchanged power, inside the window.
        let inside = power_spectrum(&x[s..s + seg]);
        let fm_band = band_power(&inside, FS, -80_000.0, 120_000.0);
        assert!(
            fm_band > 0.8,
            "FM band power {fm_band} inside the anomaly window"
        );
    }
}

#[test]
fn sine_anomaly_peaks_at_its_frequency() {
    let spec = with_anomaly(
        tone_spec(8192, Some(20.0), 2),
        AnomalyKind::Sine { freq_hz: 312_500.0 },
        0,
        8192,
        0.0,
    );
    let x = Generator::new(spec).unwrap().generate_all().unwrap();
    let sp = power_spectrum(&x[4096..4096 + 1024]);
    let peak = (0..sp.len())
        .max_by(|&a, &b| sp[a].total_cmp(&sp[b]))
        .unwrap();
    assert_eq!(peak as f64 * FS / 1024.0, 312_500.0);
}

#[test]
fn same_seed_same_bytes_different_seed_different() {
    let mk = |seed| {
        let spec = with_anomaly(
            tone_spec(5000, Some(10.0), seed),
            AnomalyKind::Bandpass {
                center_hz: 100_000.0,
                bandwidth_hz: 50_000.0,
            },
            1000,
            2000,
            0.0,
        );
        bytes_of(&Generator::new(spec).unwrap().generate_all().unwrap())
    };
    assert_eq!(mk(42), mk(42));
    let (a, b) = (mk(42), mk(43));
    assert_eq!(a.len(), b.len());
    assert_ne!(a, b);
}

/// Every chunking gives the same bytes, including chunk edges inside each anomaly (the
/// band-pass filter reads noise from before the chunk).
#[test]
fn chunk_size_does_not_change_bytes() {
    let mut spec = tone_spec(10_007, Some(15.0), 77);
    spec.anomalies = place_anomalies(
        &[
            AnomalyKind::Bandpass {
                center_hz: -200_000.0,
                bandwidth_hz: 20_000.0,
            },
            AnomalyKind::Chirp {
                start_hz: 100_000.0,
                end_hz: -100_000.0,
            },
            AnomalyKind::Sine { freq_hz: 123_456.0 },
        ],
        10_007,
        1500,
        -6.0,
        100,
        77,
    )
    .unwrap();
    let g = Generator::new(spec).unwrap();
    let whole = bytes_of(&g.generate_all().unwrap());
    for chunk in [1usize, 7, 33, 1000, 4096, 10_007] {
        let mut out = vec![Iq::default(); 10_007];
        for (k, c) in out.chunks_mut(chunk).enumerate() {
            g.fill((k * chunk) as u64, c).unwrap();
        }
        assert_eq!(bytes_of(&out), whole, "chunk {chunk}");
    }
    // Random access: a single sample in the middle of the band-pass anomaly.
    let mut one = [Iq::default()];
    let a0 = g.spec().anomalies[0].start + 17;
    g.fill(a0, &mut one).unwrap();
    assert_eq!(bytes_of(&one), whole[a0 as usize * 8..a0 as usize * 8 + 8]);
}

#[test]
fn time_offset_continues_the_transmission() {
    let long = Generator::new(tone_spec(3000, Some(20.0), 8))
        .unwrap()
        .generate_all()
        .unwrap();
    let mut tail = tone_spec(1000, Some(20.0), 8);
    tail.time_offset = 2000;
    let tail = Generator::new(tail).unwrap().generate_all().unwrap();
    assert_eq!(bytes_of(&tail), bytes_of(&long[2000..]));
}

#[test]
fn fill_out_of_range_is_an_error() {
    let g = Generator::new(tone_spec(100, None, 0)).unwrap();
    let mut buf = vec![Iq::default(); 10];
    assert!(g.fill(95, &mut buf).is_err());
    assert!(g.fill(u64::MAX - 3, &mut buf).is_err());
    assert!(g.fill(90, &mut buf).is_ok());
    assert!(g.fill(100, &mut []).is_ok());
}

fn config_error(spec: lowprec_rf::SignalSpec, needle: &str) {
    match Generator::new(spec) {
        Err(RfError::Config(msg)) => assert!(msg.contains(needle), "{msg:?} lacks {needle:?}"),
        other => panic!("expected a config error mentioning {needle:?}, got {other:?}"),
    }
}

#[test]
fn bad_configs_are_rejected_with_names() {
    let ok = tone_spec(1000, Some(20.0), 1);
    let mut s = ok.clone();
    s.fm.sample_rate_hz = f64::NAN;
    config_error(s, "sample_rate_hz");
    let mut s = ok.clone();
    s.fm.sample_rate_hz = -1.0;
    config_error(s, "sample_rate_hz");
    let mut s = ok.clone();
    s.fm.deviation_hz = 490_000.0;
    config_error(s, "alias");
    let mut s = ok.clone();
    s.fm.snr_db = Some(f64::INFINITY);
    config_error(s, "snr_db");
    let mut s = ok.clone();
    s.fm.message = Message::Tones { tones: vec![] };
    config_error(s, "at least one tone");
    let mut s = ok.clone();
    if let Message::Tones { tones } = &mut s.fm.message {
        tones[1].freq_hz = 0.0;
    }
    config_error(s, "tone 1 freq_hz");
    let mut s = ok.clone();
    s.fm.message = Message::Noise {
        low_hz: 2000.0,
        high_hz: 1000.0,
        components: 4,
        seed: 0,
    };
    config_error(s, "empty");
    let mut s = ok.clone();
    s.fm.message = Message::Noise {
        low_hz: 1000.0,
        high_hz: 2000.0,
        components: 0,
        seed: 0,
    };
    config_error(s, "component");
    config_error(
        with_anomaly(
            ok.clone(),
            AnomalyKind::Sine { freq_hz: 1e3 },
            900,
            101,
            0.0,
        ),
        "extend past",
    );
    config_error(
        with_anomaly(
            ok.clone(),
            AnomalyKind::Sine { freq_hz: 1e3 },
            u64::MAX,
            2,
            0.0,
        ),
        "extend past",
    );
    config_error(
        with_anomaly(ok.clone(), AnomalyKind::Sine { freq_hz: 1e3 }, 0, 0, 0.0),
        "count",
    );
    config_error(
        with_anomaly(ok.clone(), AnomalyKind::Sine { freq_hz: 6e5 }, 0, 10, 0.0),
        "anomaly 0 (sine) freq_hz",
    );
    config_error(
        with_anomaly(
            ok.clone(),
            AnomalyKind::Chirp {
                start_hz: 0.0,
                end_hz: f64::NAN,
            },
            0,
            10,
            0.0,
        ),
        "end_hz",
    );
    config_error(
        with_anomaly(
            ok.clone(),
            AnomalyKind::Bandpass {
                center_hz: 480e3,
                bandwidth_hz: 100e3,
            },
            0,
            10,
            0.0,
        ),
        "upper band edge",
    );
    config_error(
        with_anomaly(
            ok.clone(),
            AnomalyKind::Bandpass {
                center_hz: 0.0,
                bandwidth_hz: 0.0,
            },
            0,
            10,
            0.0,
        ),
        "bandwidth_hz",
    );
    config_error(
        with_anomaly(ok, AnomalyKind::Sine { freq_hz: 1e3 }, 0, 10, f64::NAN),
        "power_db",
    );
}

#[test]
fn placement_is_inside_slots_and_checked() {
    let kinds: Vec<AnomalyKind> = (0..7).map(|_| AnomalyKind::Sine { freq_hz: 1.0 }).collect();
    let a = place_anomalies(&kinds, 70_001, 2000, -3.0, 500, 5).unwrap();
    assert_eq!(a.len(), 7);
    let slot = 70_001 / 7;
    for (j, an) in a.iter().enumerate() {
        let j = j as u64;
        assert!(
            an.start >= j * slot + 500 && an.start + 2000 + 500 <= (j + 1) * slot,
            "{an:?}"
        );
        assert_eq!(an.power_db, -3.0);
    }
    assert_eq!(
        a,
        place_anomalies(&kinds, 70_001, 2000, -3.0, 500, 5).unwrap()
    );
    assert!(place_anomalies(&kinds, 7 * 2999, 2000, 0.0, 500, 5).is_err());
    assert!(place_anomalies(&kinds, 7 * 3000, 2000, 0.0, 500, 5).is_ok());
    assert!(place_anomalies(&kinds, 100, 0, 0.0, 0, 5).is_err());
    assert!(place_anomalies(&[], 0, 10, 0.0, 0, 5).unwrap().is_empty());
}

#[test]
fn spec_round_trips_through_json() {
    let spec = with_anomaly(
        tone_spec(100, Some(3.0), 1),
        AnomalyKind::Chirp {
            start_hz: 1.0,
            end_hz: 2.0,
        },
        0,
        5,
        -1.0,
    );
    let text = serde_json::to_string(&spec).unwrap();
    let back: lowprec_rf::SignalSpec = serde_json::from_str(&text).unwrap();
    assert_eq!(back, spec);
}

/// Parallel fill gives the same bits whatever the thread count, and the same as a serial
/// chunked fill, with anomalies straddling the parallel blocks.
#[test]
fn thread_count_does_not_change_bytes() {
    let n = 100_003u64;
    let mut spec = tone_spec(n, Some(10.0), 21);
    spec.fm.message = Message::Noise {
        low_hz: 500.0,
        high_hz: 15_000.0,
        components: 8,
        seed: 2,
    };
    for (k, start) in [16_000u64, 32_700, 49_100].into_iter().enumerate() {
        let kind = [
            AnomalyKind::Bandpass {
                center_hz: 200e3,
                bandwidth_hz: 30e3,
            },
            AnomalyKind::Chirp {
                start_hz: -1e5,
                end_hz: 1e5,
            },
            AnomalyKind::Sine { freq_hz: -4e5 },
        ][k]
            .clone();
        spec = with_anomaly(spec, kind, start, 1000, -3.0);
    }
    let g = Generator::new(spec).unwrap();
    let mut serial = vec![Iq::default(); n as usize];
    for (k, c) in serial.chunks_mut(1000).enumerate() {
        g.fill(k as u64 * 1000, c).unwrap();
    }
    let serial = bytes_of(&serial);
    for threads in [1, 2, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let all = pool.install(|| g.generate_all()).unwrap();
        assert_eq!(bytes_of(&all), serial, "{threads} threads");
    }
}
