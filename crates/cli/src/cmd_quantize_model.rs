//! `lowprec quantize-model`: post-training quantisation of a checkpoint to the FPGA BFP
//! formats or paper 001's low-bit formats, with the per-layer error table.

use anyhow::{bail, Context, Result};
use clap::Args;
use lowprec_formats::NumberFormat;
use lowprec_infer::eval::batches;
use lowprec_infer::ptq::{first_jump, format_table, layer_errors, quantize_checkpoint, PtqOptions};
use lowprec_train::{Checkpoint, TrainConfig};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

#[derive(Args, Debug, Clone)]
pub struct QuantizeModelArgs {
    /// A checkpoint written by `lowprec train` (its SGD weights are quantised).
    pub checkpoint: PathBuf,
    /// Weight format, e.g. int4bfp, int8bfp:c16, int5bfp:c32:nearest; or low-bit: ternary,
    /// wrpn<k>, twn[:channel], binary[:channel].
    #[arg(long)]
    pub weights: String,
    /// Activation format, e.g. int5bfp; with low-bit weights a<k>[:clip<C>|:fit] (k unsigned
    /// bits in [0, C]; `fit` fits C per layer on the calibration images).
    #[arg(long)]
    pub activations: String,
    /// `fp32` keeps the first and last conv/linear layers in floats; `quantized` does not;
    /// `auto`: fp32 for low-bit formats, quantized for BFP.
    #[arg(long, default_value = "auto")]
    pub first_last: String,
    /// The quantised model file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Training batches used for the error table.
    #[arg(long, default_value_t = 2)]
    pub calib_batches: usize,
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[arg(long)]
    pub threads: Option<usize>,
}

pub fn parse_first_last(s: &str) -> Result<bool> {
    match s {
        "fp32" => Ok(true),
        "quantized" | "quantised" | "same" => Ok(false),
        _ => bail!("--first-last must be fp32 or quantized, not `{s}`"),
    }
}

/// sha256 of a file's bytes, hex.
pub fn file_sha256(p: &Path) -> Result<String> {
    let b = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
    Ok(Sha256::digest(&b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect())
}

/// The data splits of the network described by `config_toml`.
/// With `test_subset`, that many test images spread over the set.
pub fn load_data(
    config_toml: &str,
    data_dir: Option<PathBuf>,
    test_subset: Option<usize>,
) -> Result<lowprec_train::data::DataSplits> {
    let mut cfg = TrainConfig::from_toml(config_toml, "the model's config")?;
    if let Some(n) = test_subset {
        cfg.data.test_subset = n;
    }
    Ok(lowprec_train::data::load(&cfg.data, data_dir)?)
}

pub fn run(a: &QuantizeModelArgs) -> Result<()> {
    let threads = crate::util::threads_or_default(a.threads)?;
    let weights: NumberFormat = a.weights.parse().context("--weights")?;
    let acts: NumberFormat = a.activations.parse().context("--activations")?;
    let first_last_fp32 = if a.first_last == "auto" {
        matches!(weights, NumberFormat::LowBit(_))
    } else {
        parse_first_last(&a.first_last)?
    };
    let ck = Checkpoint::load(&a.checkpoint)
        .with_context(|| format!("loading {}", a.checkpoint.display()))?;
    crate::util::with_threads(threads, || -> Result<()> {
        let data = load_data(&ck.config_toml, a.data_dir.clone(), None)?;
        let calib: Vec<_> = batches(
            &data.train,
            &data.norm,
            a.batch,
            Some(a.calib_batches * a.batch),
        )?
        .into_iter()
        .map(|(x, _)| x)
        .collect();
        let opts = PtqOptions {
            weights,
            acts,
            first_last_fp32,
            calib: calib.clone(),
        };
        let mut qm = quantize_checkpoint(&ck, &opts)?;
        qm.extra
            .insert("source".into(), a.checkpoint.display().to_string());
        qm.extra
            .insert("source_sha256".into(), file_sha256(&a.checkpoint)?);
        qm.save(&a.out)?;
        let (packed, fp) = qm.storage();
        eprintln!(
            "wrote {} ({} packed weight bytes, {} FP32 bytes of master weights, biases and batch-norm state)",
            a.out.display(),
            packed,
            fp
        );
        let rows = layer_errors(&qm, &calib)?;
        println!(
            "signal-to-quantisation-noise (dB) over {} training images: weights; the layer's output with only it quantised; the network's value at its input and output against the float model; the fall from the previous layer's output",
            calib.iter().map(|x| x.shape[0]).sum::<usize>()
        );
        print!("{}", format_table(&rows));
        if let Some((r, d)) = first_jump(&rows, 3.0) {
            println!(
                "first layer whose error jumps (>= 3 dB): {} ({d:.1} dB)",
                r.layer
            );
        }
        let json = a.out.with_extension("sqnr.json");
        crate::util::write_atomic(&json, serde_json::to_string_pretty(&rows)?.as_bytes())?;
        eprintln!("wrote {}", json.display());
        Ok(())
    })?
}
