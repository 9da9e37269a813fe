//! `lowprec quantize`: a `.npy` in, its quantised version out — how a numpy or QPyTorch user
//! checks lowprec's numbers against their own.

use anyhow::{bail, Result};
use clap::Args;
use lowprec_formats::{quantize_bfp, BfpTensor, Clamp, Mantissas, NumberFormat, StreamKey};
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct QuantizeArgs {
    /// Input array (.npy, float32 or float64, C order).
    pub input: PathBuf,
    /// Output array (.npy, float32): the dequantised values.
    pub output: PathBuf,
    /// Number format, e.g. `bfp8:tensor:nearest-even`, `bfp8:axis0:stochastic`,
    /// `bfp6:tile32:nearest-away`, `fixed8:4`, `fp8e4m3`.
    #[arg(long, short)]
    pub format: String,
    /// Seed of the stochastic-rounding generator.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Use the asymmetric clamp [-2^(wl-1), 2^(wl-1)-1] (default: symmetric).
    #[arg(long)]
    pub asymmetric: bool,
    /// Also write the packed integer mantissas (.npy, int8 or int16) — BFP formats only.
    #[arg(long)]
    pub mantissas: Option<PathBuf>,
    /// Also write the shared exponent of each block (.npy, int8) — BFP formats only.
    #[arg(long)]
    pub exponents: Option<PathBuf>,
}

/// Reads a float32/float64 `.npy` (lowprec_data's reader) as f32 values plus its shape.
pub fn read_npy_f32(path: &Path) -> Result<(Vec<f32>, Vec<usize>)> {
    let a = lowprec_data::read_npy(path)?;
    match a.values {
        lowprec_data::NpyValues::F32(v) => Ok((v, a.shape)),
        _ => bail!(
            "{}: dtype {} is not supported (float32 or float64 expected)",
            path.display(),
            a.dtype
        ),
    }
}

pub use lowprec_data::write_npy;

pub fn run(a: &QuantizeArgs) -> Result<()> {
    let mut fmt: NumberFormat = a.format.parse()?;
    if a.asymmetric {
        match &mut fmt {
            NumberFormat::Bfp(b) => b.clamp = Clamp::Asymmetric,
            NumberFormat::Fixed(f) => f.clamp = Clamp::Asymmetric,
            _ => bail!("--asymmetric applies to bfp and fixed formats only"),
        }
    }
    let (x, shape) = read_npy_f32(&a.input)?;
    let key = StreamKey::new(a.seed, 0);
    let tensor = a.input.display().to_string();
    let t0 = std::time::Instant::now();
    match fmt {
        NumberFormat::Bfp(b) => {
            let t: BfpTensor = quantize_bfp(&x, &shape, &b, key, &tensor)?;
            let deq = t.dequantize();
            write_npy(&a.output, &deq, &shape)?;
            if let Some(p) = &a.mantissas {
                match &t.mantissas {
                    Mantissas::I8(m) => write_npy(p, m, &shape)?,
                    Mantissas::I16(m) => write_npy(p, m, &shape)?,
                }
            }
            if let Some(p) = &a.exponents {
                write_npy(p, &t.exponents, &[t.exponents.len()])?;
            }
            eprintln!(
                "quantised {} values of shape {shape:?} to {b}: {} blocks, {} bytes packed ({:.2} bytes/value) in {:.1} ms",
                x.len(),
                t.exponents.len(),
                t.storage_bytes(),
                t.storage_bytes() as f64 / x.len().max(1) as f64,
                t0.elapsed().as_secs_f64() * 1e3
            );
        }
        other => {
            if a.mantissas.is_some() || a.exponents.is_some() {
                bail!("--mantissas/--exponents are only available for bfp formats");
            }
            let mut out = vec![0f32; x.len()];
            lowprec_formats::fake_quantize(&x, &shape, &other, key, &tensor, &mut out)?;
            write_npy(&a.output, &out, &shape)?;
            eprintln!("quantised {} values of shape {shape:?} to {other}", x.len());
        }
    }
    Ok(())
}
