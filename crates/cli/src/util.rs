//! Small helpers shared by the commands.

use anyhow::{bail, Context, Result};
use lowprec_kernels::{CpuBackend, GemmBackend};
use std::path::Path;
use std::sync::Arc;

/// The one `--backend` parser (train, bench train, distributed runs, rf): `cpu`, or an FPGA
/// simulator design as `fpga-sim:<board>-<N>x<N>` or bare `<board>-<N>x<N>`.
pub fn backend(name: &str) -> Result<Arc<dyn GemmBackend>> {
    if name == "cpu" {
        return Ok(Arc::new(CpuBackend));
    }
    let spec = name.strip_prefix("fpga-sim:").unwrap_or(name);
    if spec.is_empty() {
        bail!("unknown backend `{name}` (cpu, fpga-sim:<board>-<N>x<N>)");
    }
    let sim = lowprec_hw::sim::FpgaSim::from_spec(spec).with_context(|| {
        format!("backend `{name}` (cpu, fpga-sim:<board>-<N>x<N>, e.g. fpga-sim:zcu111-32x32)")
    })?;
    Ok(Arc::new(sim))
}

/// Writes `bytes` to `path` atomically (the data crate's temp file + fsync + rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    Ok(lowprec_data::fsutil::write_atomic(path, |w| {
        w.write_all(bytes)
    })?)
}

/// The machine's hardware threads.
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Most threads a pool may have: 8 per hardware thread. More only adds scheduling overhead,
/// and a typo (`--threads 100000`) would otherwise start that many OS threads.
pub fn max_threads() -> usize {
    8 * cores()
}

/// A thread count from the command line, checked; `None` means all hardware threads.
pub fn threads_or_default(t: Option<usize>) -> Result<usize> {
    let t = t.unwrap_or_else(cores);
    check_threads(t)?;
    Ok(t)
}

/// Checks a thread count against 1 ..= [`max_threads`].
pub fn check_threads(t: usize) -> Result<()> {
    if t == 0 {
        bail!("--threads must be at least 1");
    }
    if t > max_threads() {
        bail!(
            "--threads {t} is more than 8 per hardware thread of this machine ({} cores: at most {})",
            cores(),
            max_threads()
        );
    }
    Ok(())
}

/// The line every benchmark prints under its figures: the processor and the kernel families
/// that ran ([`cpu_description`]; [`kernel_families`]).
pub fn machine_line() -> String {
    format!("{}; {}", cpu_description(), kernel_families())
}

/// The processor, as `/proc/cpuinfo` names it ("AMD EPYC, family 25 model 17"); "unknown CPU"
/// where that file is missing or says nothing.
fn cpu_description() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |key: &str| {
        info.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().to_string())
    };
    match (field("model name"), field("cpu family"), field("model")) {
        (Some(name), Some(fam), Some(model)) => format!("{name}, family {fam} model {model}"),
        (Some(name), _, _) => name,
        _ => "unknown CPU".to_string(),
    }
}

/// The kernel families this process runs: the i8 GEMM family, the `LOWPREC_ISA` cap beside what
/// the CPU has, and the f32 GEMM's build.
fn kernel_families() -> String {
    use lowprec_formats::isa;
    format!(
        "i8 kernels: {:?}; LOWPREC_ISA cap {} on a CPU with {}; f32-gemm picks its own kernels{}",
        lowprec_kernels::Isa::detect(),
        isa::cap().name(),
        isa::cpu_level().name(),
        if lowprec_kernels::f32gemm::GEMM_AVX512_BUILT {
            ""
        } else {
            " (built without gemm-avx512: AVX2/FMA at most)"
        }
    )
}

/// Runs `f` in a rayon pool of `threads` threads (checked by [`check_threads`]).
pub fn with_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> Result<R> {
    check_threads(threads)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    Ok(pool.install(f))
}

#[cfg(test)]
mod tests {
    use super::backend;

    #[test]
    fn one_backend_parser_for_every_command() {
        assert!(backend("cpu").is_ok());
        // train's spelling and rf's old bare spelling name the same design
        assert!(backend("fpga-sim:zcu111-16x16").is_ok());
        assert!(backend("zcu111-16x16").is_ok());
        for bad in [
            "",
            "fpga-sim:",
            "gpu",
            "fpga-sim:zcu111-0x16",
            "fpga-sim:nosuchboard-16x16",
        ] {
            let e = format!("{:#}", backend(bad).err().expect(bad));
            assert!(e.contains("backend") && e.contains("cpu"), "{bad}: {e}");
        }
    }
}
