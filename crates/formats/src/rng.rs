//! The counter-based generator behind stochastic rounding.
//!
//! A draw is a pure function of `(seed, stream, element index)`: no state is shared or advanced,
//! so the bits a tensor gets do not depend on how its elements are split over threads or SIMD
//! lanes, and any element's draw can be recomputed in isolation (which is how the vectorised
//! quantisers are tested against the scalar reference).
//!
//! Construction: `(seed, stream)` are mixed by SplitMix64 into a 64-bit key; the element index
//! is split into a 32-bit low word (the SIMD lane counter) and a high word folded into the key.
//! Two rounds of the murmur3 32-bit finaliser, each keyed by an independent 32-bit word,
//! scramble the counter. Two keys therefore do not produce shifted copies of one sequence (a
//! one-round `fmix(i + key)` would). The top 24 bits of the result are the uniform draw.

/// SplitMix64 finaliser: a bijective 64-bit mixer.
#[inline]
pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// murmur3's 32-bit finaliser (bijective).
#[inline]
pub fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85EB_CA6B);
    h ^= h >> 13;
    h = h.wrapping_mul(0xC2B2_AE35);
    h ^= h >> 16;
    h
}

/// The key of one random stream: a tensor at one step of one layer, say.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StreamKey(pub u64);

impl StreamKey {
    /// Key for `(seed, stream)`. Compose `stream` from whatever identifies the tensor (layer,
    /// tensor kind, step) with [`StreamKey::child`] or [`stream_id`].
    pub fn new(seed: u64, stream: u64) -> Self {
        StreamKey(splitmix64(
            seed ^ splitmix64(stream.wrapping_add(0x632B_E59B_D9B4_E019)),
        ))
    }

    /// A derived key for a sub-stream (e.g. one step of a layer's activation stream).
    pub fn child(self, sub: u64) -> Self {
        StreamKey(splitmix64(self.0 ^ splitmix64(sub ^ 0xD6E8_FEB8_6659_FD93)))
    }

    /// The two 32-bit round keys used for elements whose index has high word `hi`.
    #[inline]
    pub fn round_keys(self, hi: u32) -> (u32, u32) {
        let k = if hi == 0 {
            self.0
        } else {
            splitmix64(self.0 ^ (hi as u64))
        };
        (k as u32, (k >> 32) as u32)
    }
}

/// Combines small identifiers into one stream id (order matters).
pub fn stream_id(parts: &[u64]) -> u64 {
    parts
        .iter()
        .fold(0x243F_6A88_85A3_08D3u64, |acc, &p| splitmix64(acc ^ p))
}

/// 32 scrambled bits for element `lo` under round keys `(k1, k2)`.
#[inline]
pub fn hash_lo(k1: u32, k2: u32, lo: u32) -> u32 {
    let h = fmix32(lo ^ k1);
    fmix32(h.wrapping_add(k2))
}

/// A 24-bit uniform integer in `[0, 2^24)` for element `index` of the stream.
#[inline]
pub fn uniform24(key: StreamKey, index: u64) -> u32 {
    let (k1, k2) = key.round_keys((index >> 32) as u32);
    hash_lo(k1, k2, index as u32) >> 8
}

/// A uniform f32 in `[0, 1)` with 24 random bits (exactly representable).
#[inline]
pub fn uniform_f32(key: StreamKey, index: u64) -> f32 {
    uniform24(key, index) as f32 * (1.0 / 16_777_216.0)
}
