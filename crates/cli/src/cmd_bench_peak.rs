//! `lowprec bench peak`: the measured instruction peaks of this CPU (multiply-add forms, f32
//! FMA), the ceilings the GEMM figures are judged against.

use anyhow::Result;
use clap::Args;
use lowprec_kernels::peak::{gemm_peak_form, measure};
use lowprec_kernels::Isa;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct BenchPeakArgs {
    /// Milliseconds per timed repetition of each form.
    #[arg(long, default_value_t = 200)]
    pub millis: u64,
    /// Timed repetitions per form (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Write the records as a JSON array here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

pub fn run(a: &BenchPeakArgs) -> Result<()> {
    anyhow::ensure!(a.millis >= 1, "--millis must be at least 1");
    let isa = Isa::detect();
    let recs = measure(isa, a.millis, a.reps);
    let clock = recs[0].munits_per_s / 1e3;
    println!(
        "{:<58} {:>6} {:>9} {:>9} {:>9}",
        "form (one thread)", "MAC", "M/s", "per cycle", "GOP/s"
    );
    for r in &recs {
        let mark = if Some(r.form) == gemm_peak_form(isa) {
            " *"
        } else {
            ""
        };
        println!(
            "{:<58} {:>6} {:>9.0} {:>9.2} {:>9.1}{mark}",
            r.form, r.macs_per_unit, r.munits_per_s, r.per_cycle, r.gops
        );
    }
    println!(
        "(clock {clock:.2} GHz from the dependent chain; 1 MAC = 2 ops; * = the form the i8 \
         kernels' inner loop issues, the 100% of `bench gemm`)\n({})",
        crate::util::machine_line()
    );
    if let Some(p) = &a.json {
        crate::util::write_atomic(p, serde_json::to_string_pretty(&recs)?.as_bytes())?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_clock_and_every_form_as_json() {
        let dir = std::env::temp_dir().join(format!("lowprec-bench-peak-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let json = dir.join("peak.json");
        run(&BenchPeakArgs {
            millis: 2,
            reps: 1,
            json: Some(json.clone()),
        })
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        let recs = v.as_array().unwrap();
        assert_eq!(recs[0]["macs_per_unit"], 0);
        assert!(recs
            .iter()
            .all(|r| r["munits_per_s"].as_f64().unwrap() > 0.0));
        if Isa::detect().has_avx2() {
            assert!(recs.len() >= 5, "{v}");
        }
        assert!(run(&BenchPeakArgs {
            millis: 0,
            reps: 1,
            json: None
        })
        .is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
