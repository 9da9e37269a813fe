#![allow(dead_code)]
//! Shared test helpers: fresh random inputs (seed printed; LOWPREC_TEST_SEED replays).

use lowprec_formats::rng::splitmix64;

pub struct TestRng(u64);

impl TestRng {
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
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| ((self.uniform() * 2.0 - 1.0) as f32) * scale)
            .collect()
    }
}
