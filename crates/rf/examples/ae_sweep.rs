//! Exploration tool behind the detection recipe (see `StandardPairConfig::detection`):
//! auto-encoder F1 every 20 iterations (at the p-th percentile threshold / oracle best F1 /
//! loss) next to the PCA-8 and window-energy detectors, for a pair variant.
//! `ae_sweep POWER_DB LR SWA_LR [SNR_DB BIAS(1/0) PERCENTILE]`; environment: `NB=1`
//! narrowband transmission (`DEV`, `CO` deviation and carrier offset), `TONES=f1,f2` tone
//! message, `MB` minibatch, `SPI` steps per iteration, `ITERS`, `MOM`, `HIDDEN=16,8,16`.
use lowprec_kernels::CpuBackend;
use lowprec_rf::autoencoder::{AeConfig, Autoencoder};
use lowprec_rf::baseline::PcaDetector;
use lowprec_rf::metrics::best_f1;
use lowprec_rf::window::make_windows;
use lowprec_rf::*;

fn main() -> Result<(), RfError> {
    let args: Vec<String> = std::env::args().collect();
    let power: f64 = args.get(1).map(|s| s.parse().unwrap()).unwrap_or(-15.0);
    let lr: f64 = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(0.5);
    let swa_lr: f64 = args.get(3).map(|s| s.parse().unwrap()).unwrap_or(0.1);
    let snr: f64 = args.get(4).map(|s| s.parse().unwrap()).unwrap_or(20.0);
    let bias: bool = args.get(5).map(|s| s == "1").unwrap_or(true);
    let pct: f64 = args.get(6).map(|s| s.parse().unwrap()).unwrap_or(99.0);
    let env = |k: &str, d: f64| {
        std::env::var(k)
            .ok()
            .map(|v| v.parse::<f64>().unwrap())
            .unwrap_or(d)
    };
    let mb = env("MB", 0.0) as usize;
    let iters = env("ITERS", 200.0) as u64;
    let steps_per_it = env("SPI", 1.0) as u64;
    let mom = env("MOM", 0.9);
    let hidden: Vec<usize> = std::env::var("HIDDEN")
        .unwrap_or("16,8,16".into())
        .split(',')
        .map(|x| x.parse().unwrap())
        .collect();
    let env = |k: &str, d: f64| {
        std::env::var(k)
            .ok()
            .map(|v| v.parse::<f64>().unwrap())
            .unwrap_or(d)
    };
    let cfg = StandardPairConfig {
        anomaly_power_db: power,
        snr_db: snr,
        ..Default::default()
    };
    let mut pair = standard_pair(&cfg)?;
    if let Ok(t) = std::env::var("TONES") {
        let tones: Vec<Tone> = t
            .split(',')
            .map(|f| Tone {
                freq_hz: f.parse().unwrap(),
                amplitude: 1.0,
                phase_rad: 0.0,
            })
            .collect();
        for spec in [&mut pair.train, &mut pair.test] {
            spec.fm.message = Message::Tones {
                tones: tones.clone(),
            };
            spec.fm.deviation_hz = env("DEV", 75e3);
        }
    }
    if std::env::var("NB").is_ok() {
        for spec in [&mut pair.train, &mut pair.test] {
            if let Message::Noise {
                low_hz, high_hz, ..
            } = &mut spec.fm.message
            {
                *low_hz = 300.0;
                *high_hz = 3000.0;
            }
            spec.fm.deviation_hz = env("DEV", 5e3);
            spec.fm.carrier_offset_hz = env("CO", 0.0);
        }
    }
    let data = pair.generate()?;
    let nb = 1000usize;
    let head = &data.train[..nb * 16];
    let norm = Normaliser::fit(head)?;
    let wtrain = make_windows(head, WindowConfig::default(), norm, &[])?;
    let wtest = make_windows(&data.test, WindowConfig::default(), norm, &data.test_labels)?;
    let pca = PcaDetector::fit(&wtrain, 8)?;
    let t = select_threshold(&pca.scores(&wtrain)?, ThresholdRule::Percentile(pct))?;
    let c = Confusion::from_scores(&pca.scores(&wtest)?, &wtest.labels, t)?;
    let ps = pca.scores(&wtrain)?;
    println!(
        "PCA-8 train mean residual {:.5}",
        ps.iter().sum::<f32>() / ps.len() as f32
    );
    let e = energy(&wtrain, &wtest, pct)?;
    println!("power {power} snr {snr}: PCA-8 (1000 windows) {c}; energy F1 {e:.4}");
    for prec in ["fp32", "bfp8"] {
        let ae_cfg = AeConfig {
            precision: prec.parse().unwrap(),
            lr,
            swa_lr,
            bias,
            minibatch: mb,
            iterations: iters,
            swa_start: Some(iters * 3 / 4),
            momentum: mom,
            hidden: hidden.clone(),
            threshold: ThresholdRule::Percentile(pct),
            ..Default::default()
        };
        let mut ae = Autoencoder::new(ae_cfg.clone())?;
        let mut line = String::new();
        let t0 = std::time::Instant::now();
        for it in 0..ae_cfg.iterations {
            let mut loss = 0.0;
            for j in 0..steps_per_it {
                loss = ae.train_iteration(
                    &CpuBackend,
                    &wtrain.inputs,
                    it * steps_per_it + j,
                    ae_cfg.lr_at(it),
                    ae_cfg.averages_at(it) && j + 1 == steps_per_it,
                    None,
                )?;
            }
            if it % (iters / 10) == iters / 10 - 1 || it == 0 {
                ae.publish();
                let th = ae.fit_threshold(&CpuBackend, &wtrain.inputs)?;
                let s = ae.scores(&CpuBackend, &wtest.inputs)?;
                let c = Confusion::from_scores(&s, &wtest.labels, th)?;
                let (_, b) = best_f1(&s, &wtest.labels)?;
                line += &format!(" {}:{:.3}/{:.3}/L{:.4}", it + 1, c.f1(), b.f1(), loss);
            }
        }
        {
            let tr = ae.scores(&CpuBackend, &wtrain.inputs)?;
            let te = ae.scores(&CpuBackend, &wtest.inputs)?;
            let norm_s: Vec<f32> = te
                .iter()
                .zip(&wtest.labels)
                .filter(|(_, &l)| !l)
                .map(|(s, _)| *s)
                .collect();
            let an_s: Vec<f32> = te
                .iter()
                .zip(&wtest.labels)
                .filter(|(_, &l)| l)
                .map(|(s, _)| *s)
                .collect();
            let freq = |x: &[f32]| -> f32 {
                let (mut re, mut im) = (0f32, 0f32);
                for t in 0..15 {
                    let (a, b, c, d) = (x[2 * t], x[2 * t + 1], x[2 * t + 2], x[2 * t + 3]);
                    re += c * a + d * b;
                    im += d * a - c * b;
                }
                im.atan2(re) / std::f32::consts::TAU * 1e3
            };
            let p99 = lowprec_rf::metrics::percentile(&tr, 99.0).unwrap() as f32;
            let fr: Vec<f32> = (0..wtrain.len()).map(|k| freq(wtrain.input(k))).collect();
            let hi: Vec<String> = (0..wtrain.len())
                .filter(|&k| tr[k] > p99)
                .map(|k| format!("{:.0}", fr[k]))
                .collect();
            let mut fs = fr.clone();
            fs.sort_by(f32::total_cmp);
            println!(
                "  freq kHz quantiles: {:.0} {:.0} {:.0} {:.0} {:.0}; high-error windows' freq: {}",
                fs[10],
                fs[100],
                fs[500],
                fs[900],
                fs[990],
                hi.join(" ")
            );
            for (name, v) in [
                ("train", &tr),
                ("test normal", &norm_s),
                ("test anomalous", &an_s),
            ] {
                let q: Vec<String> = [1.0, 10.0, 50.0, 90.0, 99.0, 100.0]
                    .iter()
                    .map(|&p| format!("{:.4}", lowprec_rf::metrics::percentile(v, p).unwrap()))
                    .collect();
                println!("  {name}: {}", q.join(" "));
            }
        }
        println!(
            "{prec} lr {lr} swa {swa_lr} ({:.2}s):{line}",
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

fn energy(tr: &lowprec_rf::Windows, te: &lowprec_rf::Windows, pct: f64) -> Result<f64, RfError> {
    let e = |w: &lowprec_rf::Windows| -> Vec<f32> {
        (0..w.len())
            .map(|k| w.input(k).iter().map(|v| v * v).sum::<f32>())
            .collect()
    };
    let tr_s = e(tr);
    let mean = tr_s.iter().sum::<f32>() / tr_s.len() as f32;
    let dev = |v: Vec<f32>| -> Vec<f32> { v.into_iter().map(|x| (x - mean).abs()).collect() };
    let t = select_threshold(&dev(tr_s.clone()), ThresholdRule::Percentile(pct))?;
    Ok(Confusion::from_scores(&dev(e(te)), &te.labels, t)?.f1())
}
