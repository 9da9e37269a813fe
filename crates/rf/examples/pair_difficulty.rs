//! Sweeps the standard pair's anomaly power and prints the PCA reference detector's F1, to
//! show how hard the recipe is: `cargo run --release -p lowprec-rf --example pair_difficulty`.

use lowprec_rf::baseline::PcaDetector;
use lowprec_rf::metrics::{best_f1, recall_by_kind};
use lowprec_rf::window::make_windows;
use lowprec_rf::{
    select_threshold, standard_pair, Confusion, Normaliser, StandardPairConfig, ThresholdRule,
    WindowConfig,
};

fn main() -> Result<(), lowprec_rf::RfError> {
    let components = [4usize, 8, 16];
    println!("power_db  snr_db  components  f1@p99  best_f1  recall bandpass/chirp/sine @p99");
    for snr_db in [20.0, 10.0] {
        for power_db in [-3.0, -6.0, -10.0, -15.0] {
            let cfg = StandardPairConfig {
                anomaly_power_db: power_db,
                snr_db,
                ..Default::default()
            };
            let data = standard_pair(&cfg)?.generate()?;
            let norm = Normaliser::fit(&data.train)?;
            let wtrain = make_windows(&data.train, WindowConfig::default(), norm, &[])?;
            let wtest = make_windows(&data.test, WindowConfig::default(), norm, &data.test_labels)?;
            for &k in &components {
                let pca = PcaDetector::fit(&wtrain, k)?;
                let t = select_threshold(&pca.scores(&wtrain)?, ThresholdRule::Percentile(99.0))?;
                let scores = pca.scores(&wtest)?;
                let c = Confusion::from_scores(&scores, &wtest.labels, t)?;
                let (_, best) = best_f1(&scores, &wtest.labels)?;
                let per: Vec<String> = recall_by_kind(&scores, &wtest, t)?
                    .iter()
                    .map(|r| format!("{:.2}", r.detected as f64 / r.total as f64))
                    .collect();
                println!(
                    "{power_db:8} {snr_db:7} {k:11} {:7.4} {:8.4}  {}",
                    c.f1(),
                    best.f1(),
                    per.join("/")
                );
            }
        }
    }
    Ok(())
}
