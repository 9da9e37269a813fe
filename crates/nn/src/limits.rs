//! Size checks made before anything is allocated: a typo in a network description
//! (`out = 100000000`) is an error naming the layer and the bytes it would need, not an
//! out-of-memory kill or an allocation abort.
//!
//! The budget is the machine's memory (`MemTotal` in /proc/meminfo; 1 TiB where that cannot be
//! read), or less where `LOWPREC_MEMORY_LIMIT_MB` says so (the fuzz targets set it to their
//! allocation bound). A layer's parameters are charged four f32 copies (weights, gradient,
//! momentum, SWA average); a training batch its values' outputs and gradients.

use crate::spec::LayerSpec;
use crate::NnError;

/// Environment variable lowering the memory budget to this many MiB.
pub const MEMORY_LIMIT_ENV: &str = "LOWPREC_MEMORY_LIMIT_MB";

/// Bytes of memory this machine has, or [`MEMORY_LIMIT_ENV`] if that is less (the limit every
/// check uses).
pub fn memory_budget() -> u64 {
    let limit = std::env::var(MEMORY_LIMIT_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(u64::MAX, |mb| mb.saturating_mul(1 << 20));
    machine_memory().min(limit)
}

fn machine_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(1 << 40)
}

/// Human-readable bytes.
pub fn show_bytes(b: u128) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

/// Errors when `bytes` (None: beyond any count) exceeds the budget.
pub fn check_bytes(layer: &str, what: &str, bytes: Option<u128>) -> Result<(), NnError> {
    let budget = memory_budget() as u128;
    match bytes {
        Some(b) if b <= budget => Ok(()),
        Some(b) => Err(NnError::Spec(format!(
            "{layer}: {what} would need {} ({b} bytes), more than this machine's memory ({})",
            show_bytes(b),
            show_bytes(budget)
        ))),
        None => Err(NnError::Spec(format!(
            "{layer}: {what} would need more bytes than can be counted (check the layer's sizes)"
        ))),
    }
}

fn product(xs: &[usize]) -> Option<u128> {
    xs.iter()
        .try_fold(1u128, |acc, &x| acc.checked_mul(x as u128))
}

/// Checks the parameters `spec` would allocate for inputs of `in_shapes` (per example), and
/// returns the bytes charged for them, so that a caller can check the whole network's sum.
pub fn check_layer_params(
    name: &str,
    spec: &LayerSpec,
    in_shapes: &[&[usize]],
) -> Result<u128, NnError> {
    let input = in_shapes.first().copied().unwrap_or(&[]);
    let elems = match spec {
        LayerSpec::Linear { out, .. } => product(input)
            .and_then(|f| f.checked_mul(*out as u128))
            .and_then(|w| w.checked_add(*out as u128)),
        LayerSpec::Conv { out, kernel, .. } => input
            .first()
            .and_then(|&c| product(&[c, *out, *kernel, *kernel]))
            .and_then(|w| w.checked_add(*out as u128)),
        _ => Some(0),
    };
    let bytes = elems.and_then(|e| e.checked_mul(16));
    check_bytes(
        name,
        "its parameters (weights, gradient, momentum, SWA average)",
        bytes,
    )?;
    Ok(bytes.unwrap_or(u128::MAX))
}

/// Checks one example's output of a layer (f32).
pub fn check_layer_output(name: &str, shape: &[usize]) -> Result<(), NnError> {
    check_bytes(
        name,
        "one example's output",
        product(shape).and_then(|e| e.checked_mul(4)),
    )
}
