//! Weight initialisation from the counter-based generator (reproducible from the seed alone).

use lowprec_formats::rng::{stream_id, uniform_f32};
use lowprec_formats::StreamKey;

/// Uniform in `[-bound, bound)`, element `i` drawn from `(seed, layer_id, what, i)`.
pub fn uniform(n: usize, bound: f32, seed: u64, layer_id: u64, what: u64) -> Vec<f32> {
    let key = StreamKey::new(seed, stream_id(&[layer_id, 0x1417, what]));
    (0..n)
        .map(|i| (uniform_f32(key, i as u64) * 2.0 - 1.0) * bound)
        .collect()
}

/// PyTorch's default for linear and conv weights (Kaiming uniform with a = sqrt(5)):
/// bound = 1 / sqrt(fan_in).
pub fn default_bound(fan_in: usize) -> f32 {
    1.0 / (fan_in.max(1) as f32).sqrt()
}

/// Kaiming (He) uniform for ReLU networks: bound = sqrt(6 / fan_in).
pub fn kaiming_bound(fan_in: usize) -> f32 {
    (6.0 / fan_in.max(1) as f32).sqrt()
}
