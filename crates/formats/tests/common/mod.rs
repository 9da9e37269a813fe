//! Test helpers: fresh random inputs (seed printed, overridable with LOWPREC_TEST_SEED).
#![allow(dead_code)]

use lowprec_formats::rng::splitmix64;

pub struct TestRng(u64);

impl TestRng {
    /// A generator seeded from the clock unless `LOWPREC_TEST_SEED` is set; prints the seed so
    /// a failure can be replayed.
    pub fn fresh(name: &str) -> Self {
        let seed = std::env::var("LOWPREC_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("{name}: LOWPREC_TEST_SEED={seed}");
        TestRng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        splitmix64(self.0)
    }
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    /// Values spanning many binades, with zeros, exact powers of two, ties and subnormals.
    pub fn awkward_f32(&mut self) -> f32 {
        let sign = if self.next_u64() & 1 == 1 {
            -1.0f32
        } else {
            1.0
        };
        match self.below(10) {
            0 => 0.0 * sign,
            1 => sign * 2f32.powi(self.below(40) as i32 - 20),
            2 => sign * f32::from_bits(1 + self.below(0x007f_ffff) as u32), // subnormal
            3 => sign * (self.below(256) as f32 + 0.5) * 2f32.powi(self.below(10) as i32 - 8), // ties
            4 => sign * f32::MAX * self.uniform() as f32,
            _ => sign * (self.uniform() as f32) * 2f32.powi(self.below(60) as i32 - 30),
        }
    }
    pub fn vec_awkward(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.awkward_f32()).collect()
    }
    /// Values of one scale (normal training-like data).
    pub fn vec_normalish(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| ((self.uniform() * 2.0 - 1.0) as f32) * scale)
            .collect()
    }
}
