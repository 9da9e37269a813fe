//! Packing of strided operands into the k-pair i16 panels the microkernels read.
//!
//! A K range of one *step* is a list of sub-ranges (one per chunk piece, see [`crate::qgemm`]);
//! each sub-range is padded to an even length with a zero so that a k-pair never straddles two
//! chunks. Layouts, with `P` the step's total number of pairs:
//!
//! * A~: strip `s` (rows `MR*s ..`) at offset `s * P * MR * 2`; pair `p`, row `r`, half `h` at
//!   `(p * MR + r) * 2 + h`. Rows past the matrix are zero.
//! * B~: strip `j` (columns `NR*j ..`) at offset `j * P * NR * 2`; pair `p`, column `c`, half `h`
//!   at `(p * NR + c) * 2 + h`. Columns past the matrix are zero.

use crate::types::MatRef;
use crate::ukernel::{Isa, MR, NR};

/// Integer mantissa types the quantised GEMMs take.
pub trait QElem: Copy + Send + Sync + Into<i32> + 'static {
    /// Largest magnitude the type can hold (128 for i8, 32768 for i16).
    const TYPE_MAX_ABS: u32;
    fn widen(self) -> i16;
    /// Packs one full B strip (`NR` columns starting at `n`) for the pair rows of `k0..k1`
    /// into `out`, if a fast path exists for this layout; returns false otherwise.
    #[inline]
    fn pack_b_strip_fast(
        _isa: Isa,
        _b: &MatRef<'_, Self>,
        _n: usize,
        _k0: usize,
        _k1: usize,
        _out: &mut [i16],
    ) -> bool {
        false
    }
}

impl QElem for i8 {
    const TYPE_MAX_ABS: u32 = 128;
    #[inline]
    fn widen(self) -> i16 {
        self as i16
    }
    #[inline]
    fn pack_b_strip_fast(
        isa: Isa,
        b: &MatRef<'_, i8>,
        n: usize,
        k0: usize,
        k1: usize,
        out: &mut [i16],
    ) -> bool {
        #[cfg(target_arch = "x86_64")]
        if isa == Isa::Avx2 && b.col_stride == 1 && k1 > k0 && n + NR <= b.cols {
            // Every row read is `data[k * row_stride + n .. + NR]`; the last one lies inside the
            // view, which `MatRef::check` validated.
            let last = (k1 - 1) * b.row_stride + n + NR;
            assert!(last <= b.data.len() && out.len() >= (k1 - k0).div_ceil(2) * NR * 2);
            // SAFETY: bounds asserted above; AVX2 is present (isa).
            unsafe { avx2_pack::b_rows_i8(b.data.as_ptr(), b.row_stride, n, k0, k1, out) };
            return true;
        }
        let _ = (isa, b, n, k0, k1, out);
        false
    }
}

impl QElem for i16 {
    const TYPE_MAX_ABS: u32 = 32768;
    #[inline]
    fn widen(self) -> i16 {
        self
    }
}

/// Packs rows `m0 .. m0 + mlen` of A for the k sub-ranges `ranges` (total `pairs` pairs).
pub fn pack_a<T: QElem>(
    a: &MatRef<'_, T>,
    m0: usize,
    mlen: usize,
    ranges: &[(usize, usize)],
    pairs: usize,
    out: &mut [i16],
) {
    let strips = mlen.div_ceil(MR);
    let strip_len = pairs * MR * 2;
    let out = &mut out[..strips * strip_len];
    for (s, dst) in out.chunks_exact_mut(strip_len).enumerate() {
        for r in 0..MR {
            let row = m0 + s * MR + r;
            let mut poff = 0;
            for &(k0, k1) in ranges {
                let q = (k1 - k0).div_ceil(2);
                if row >= m0 + mlen {
                    for p in 0..q {
                        let w = ((poff + p) * MR + r) * 2;
                        dst[w] = 0;
                        dst[w + 1] = 0;
                    }
                } else if a.col_stride == 1 {
                    let src = &a.data[row * a.row_stride + k0..row * a.row_stride + k1];
                    for p in 0..q {
                        let w = ((poff + p) * MR + r) * 2;
                        dst[w] = src[2 * p].widen();
                        dst[w + 1] = src.get(2 * p + 1).map_or(0, |v| v.widen());
                    }
                } else {
                    let base = row * a.row_stride;
                    for p in 0..q {
                        let w = ((poff + p) * MR + r) * 2;
                        let k = k0 + 2 * p;
                        dst[w] = a.data[base + k * a.col_stride].widen();
                        dst[w + 1] = if k + 1 < k1 {
                            a.data[base + (k + 1) * a.col_stride].widen()
                        } else {
                            0
                        };
                    }
                }
                poff += q;
            }
        }
    }
}

/// Packs columns `n0 .. n0 + nlen` of B for the k sub-ranges `ranges` (total `pairs` pairs).
pub fn pack_b<T: QElem>(
    isa: Isa,
    b: &MatRef<'_, T>,
    n0: usize,
    nlen: usize,
    ranges: &[(usize, usize)],
    pairs: usize,
    out: &mut [i16],
) {
    let strips = nlen.div_ceil(NR);
    let strip_len = pairs * NR * 2;
    let out = &mut out[..strips * strip_len];
    for (j, dst) in out.chunks_exact_mut(strip_len).enumerate() {
        let n = n0 + j * NR;
        let valid = NR.min(n0 + nlen - n);
        let mut poff = 0;
        for &(k0, k1) in ranges {
            let q = (k1 - k0).div_ceil(2);
            let seg = &mut dst[poff * NR * 2..(poff + q) * NR * 2];
            poff += q;
            if valid == NR && T::pack_b_strip_fast(isa, b, n, k0, k1, seg) {
                continue;
            }
            for p in 0..q {
                let w = &mut seg[p * NR * 2..(p + 1) * NR * 2];
                for h in 0..2 {
                    let k = k0 + 2 * p + h;
                    if k >= k1 {
                        for c in 0..NR {
                            w[2 * c + h] = 0;
                        }
                        continue;
                    }
                    let base = k * b.row_stride;
                    for c in 0..NR {
                        w[2 * c + h] = if c < valid {
                            b.data[base + (n + c) * b.col_stride].widen()
                        } else {
                            0
                        };
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2_pack {
    use std::arch::x86_64::*;

    /// Row-contiguous i8 B: interleave rows `k, k+1` byte-wise and sign-extend to i16 words.
    ///
    /// # Safety
    /// Rows `k0..k1` at columns `n..n+16` must be readable; `out` must hold
    /// `ceil((k1-k0)/2) * 32` i16; AVX2 must be present.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn b_rows_i8(
        data: *const i8,
        row_stride: usize,
        n: usize,
        k0: usize,
        k1: usize,
        out: &mut [i16],
    ) {
        let mut o = out.as_mut_ptr() as *mut __m256i;
        let mut k = k0;
        while k < k1 {
            let x0 = _mm_loadu_si128(data.add(k * row_stride + n) as *const __m128i);
            let x1 = if k + 1 < k1 {
                _mm_loadu_si128(data.add((k + 1) * row_stride + n) as *const __m128i)
            } else {
                _mm_setzero_si128()
            };
            let lo = _mm_unpacklo_epi8(x0, x1);
            let hi = _mm_unpackhi_epi8(x0, x1);
            _mm256_storeu_si256(o, _mm256_cvtepi8_epi16(lo));
            _mm256_storeu_si256(o.add(1), _mm256_cvtepi8_epi16(hi));
            o = o.add(2);
            k += 2;
        }
    }
}
