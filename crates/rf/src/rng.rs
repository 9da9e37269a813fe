//! Counter-based random numbers: Philox4x32-10 (Salmon et al., SC'11).
//!
//! Every draw is a pure function of `(seed, stream, index)`: nothing is advanced or shared, so
//! a sample's noise is the same whichever chunk, thread or call computes it. The 128-bit
//! counter is `(index low word, index high word, stream low word, stream high word)` and the
//! 64-bit key is the seed, so distinct streams are distinct counters under one key, never
//! shifted copies of one sequence.

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// Philox4x32 with 10 rounds on one 128-bit counter under one 64-bit key.
#[inline]
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(W0);
            k[1] = k[1].wrapping_add(W1);
        }
        let p0 = u64::from(M0) * u64::from(c[0]);
        let p1 = u64::from(M1) * u64::from(c[2]);
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// One random stream: a seed plus a stream id (what the numbers are for).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CounterRng {
    key: [u32; 2],
    stream: u64,
}

/// Stream ids used by the generator. Anomaly `k` uses `ANOMALY_BASE + k`.
pub mod streams {
    /// Additive white Gaussian noise, one complex draw per sample index.
    pub const AWGN: u64 = 1;
    /// Frequencies and phases of the band-limited-noise message's components.
    pub const MESSAGE: u64 = 2;
    /// Random placement of automatically placed anomalies.
    pub const PLACEMENT: u64 = 3;
    /// First anomaly's stream; anomaly `k` uses `ANOMALY_BASE + k`.
    pub const ANOMALY_BASE: u64 = 1 << 32;
}

impl CounterRng {
    pub fn new(seed: u64, stream: u64) -> Self {
        CounterRng {
            key: [seed as u32, (seed >> 32) as u32],
            stream,
        }
    }

    /// The four 32-bit words at `index`.
    #[inline]
    pub fn words(&self, index: u64) -> [u32; 4] {
        philox4x32_10(
            [
                index as u32,
                (index >> 32) as u32,
                self.stream as u32,
                (self.stream >> 32) as u32,
            ],
            self.key,
        )
    }

    /// Two uniforms in the open interval (0, 1), 53 random bits each, as `(k + 0.5) / 2^53`
    /// so that `ln` never sees 0.
    #[inline]
    pub fn uniform_pair(&self, index: u64) -> (f64, f64) {
        let w = self.words(index);
        let a = (u64::from(w[0]) | (u64::from(w[1]) << 32)) >> 11;
        let b = (u64::from(w[2]) | (u64::from(w[3]) << 32)) >> 11;
        const SCALE: f64 = 1.0 / (1u64 << 53) as f64;
        ((a as f64 + 0.5) * SCALE, (b as f64 + 0.5) * SCALE)
    }

    /// One uniform in (0, 1) at `index` (the first of [`CounterRng::uniform_pair`]).
    #[inline]
    pub fn uniform(&self, index: u64) -> f64 {
        self.uniform_pair(index).0
    }

    /// Two independent standard normal draws at `index` (Box-Muller on one counter).
    #[inline]
    pub fn normal_pair(&self, index: u64) -> (f64, f64) {
        let (u1, u2) = self.uniform_pair(index);
        let r = (-2.0 * u1.ln()).sqrt();
        let (s, c) = (std::f64::consts::TAU * u2).sin_cos();
        (r * c, r * s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known-answer vectors of the Random123 distribution (kat_vectors, philox4x32 10).
    #[test]
    fn philox_known_answers() {
        assert_eq!(
            philox4x32_10([0; 4], [0; 2]),
            [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]
        );
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344],
                [0xa409_3822, 0x299f_31d0]
            ),
            [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1]
        );
    }

    #[test]
    fn normal_moments_and_stream_independence() {
        let a = CounterRng::new(7, streams::AWGN);
        let b = CounterRng::new(7, streams::MESSAGE);
        let n = 200_000u64;
        let (mut s1, mut s2, mut cross, mut ab) = (0.0, 0.0, 0.0, 0.0);
        for i in 0..n {
            let (x, y) = a.normal_pair(i);
            let (z, _) = b.normal_pair(i);
            s1 += x + y;
            s2 += x * x + y * y;
            cross += x * y;
            ab += x * z;
        }
        let m = 2.0 * n as f64;
        assert!((s1 / m).abs() < 0.01, "mean {}", s1 / m);
        assert!((s2 / m - 1.0).abs() < 0.01, "variance {}", s2 / m);
        assert!((cross / n as f64).abs() < 0.01);
        assert!((ab / n as f64).abs() < 0.01);
    }

    #[test]
    fn uniforms_stay_inside_open_interval() {
        let r = CounterRng::new(0, 0);
        for i in 0..10_000 {
            let (u, v) = r.uniform_pair(i);
            assert!(u > 0.0 && u < 1.0 && v > 0.0 && v < 1.0);
        }
    }
}
