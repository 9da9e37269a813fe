//! Packing of strided operands into the k-pair i16 panels the microkernels read.
//!
//! A K range of one *step* is a list of sub-ranges (one per chunk piece, see [`crate::qgemm`]);
//! each sub-range is padded to an even length with a zero so that a k-pair never straddles two
//! chunks. Layouts, with `P` the step's total number of pairs:
//!
//! * A~: strip `s` (rows `MR*s ..`) at offset `s * P * MR * 2`; row `r`, pair `p`, half `h` at
//!   `r * P * 2 + p * 2 + h` (each row is its k range widened, so row-major A packs as a plain
//!   widening copy). Rows past the matrix are zero.
//! * B~: strip `j` (columns `NR*j ..`) at offset `j * P * NR * 2`; pair `p`, column `c`, half `h`
//!   at `(p * NR + c) * 2 + h`. Columns past the matrix are zero.

use crate::im2col_b::Im2colPlan;
use crate::types::MatRef;
use crate::ukernel::{Isa, MR, NR};

/// Integer mantissa types the quantised GEMMs take.
pub trait QElem: Copy + Ord + Send + Sync + Into<i32> + 'static {
    /// Largest magnitude the type can hold (128 for i8, 32768 for i16).
    const TYPE_MAX_ABS: u32;
    fn widen(self) -> i16;
    /// The view as 8-bit mantissas, if that is what it holds (the k-quad family takes only
    /// those).
    fn as_i8<'a>(m: &MatRef<'a, Self>) -> Option<MatRef<'a, i8>>;
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
    /// Packs every full strip of `n0 .. n0 + full * NR` at once when a fast path exists for
    /// this layout (row-contiguous B: reading rows once, in order, instead of strip by strip,
    /// which thrashes a cache set when the row stride is a power of two); returns whether it
    /// did.
    #[inline]
    fn pack_b_full_strips_fast(
        _isa: Isa,
        _b: &MatRef<'_, Self>,
        _n0: usize,
        _full: usize,
        _ranges: &[(usize, usize)],
        _pairs: usize,
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
    fn as_i8<'a>(m: &MatRef<'a, i8>) -> Option<MatRef<'a, i8>> {
        Some(*m)
    }
    #[inline]
    fn pack_b_full_strips_fast(
        isa: Isa,
        b: &MatRef<'_, i8>,
        n0: usize,
        full: usize,
        ranges: &[(usize, usize)],
        pairs: usize,
        out: &mut [i16],
    ) -> bool {
        #[cfg(target_arch = "x86_64")]
        if isa.or_supported().has_avx2()
            && b.col_stride == 1
            && full > 0
            && n0 + full * NR <= b.cols
        {
            let strip_len = pairs * NR * 2;
            assert!(out.len() >= full * strip_len);
            let mut poff = 0;
            for &(k0, k1) in ranges {
                if k1 > k0 {
                    let last = (k1 - 1) * b.row_stride + n0 + full * NR;
                    assert!(last <= b.data.len());
                    // SAFETY: rows k0..k1, columns n0..n0+full*NR are inside `data` (asserted);
                    // outputs stay below `full * strip_len` (asserted); AVX2 is present.
                    unsafe {
                        avx2_pack::b_rows_i8_all(
                            b.data.as_ptr(),
                            b.row_stride,
                            n0,
                            full,
                            k0,
                            k1,
                            out.as_mut_ptr().add(poff * NR * 2),
                            strip_len,
                        )
                    };
                }
                poff += (k1 - k0).div_ceil(2);
            }
            return true;
        }
        let _ = (isa, b, n0, full, ranges, pairs, out);
        false
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
        if isa.or_supported().has_avx2() && b.row_stride == 1 && k1 >= k0 + 16 && n + NR <= b.cols {
            // Column-contiguous B (a transposed view): columns `n .. n+NR` read `k0 .. k1`.
            let last = (n + NR - 1) * b.col_stride + k1;
            assert!(last <= b.data.len() && out.len() >= (k1 - k0).div_ceil(2) * NR * 2);
            // SAFETY: bounds asserted above; AVX2 is present (isa).
            let done =
                unsafe { avx2_pack::b_cols_i8(b.data.as_ptr(), b.col_stride, n, k0, k1, out) };
            // The last `k1 - done` rows (fewer than 16) go through the portable loop.
            pack_b_strip_generic(b, n, NR, done, k1, &mut out[(done - k0) / 2 * NR * 2..]);
            return true;
        }
        #[cfg(target_arch = "x86_64")]
        if isa.or_supported().has_avx2() && b.col_stride == 1 && k1 > k0 && n + NR <= b.cols {
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
    fn as_i8<'a>(_m: &MatRef<'a, i16>) -> Option<MatRef<'a, i8>> {
        None
    }
}

/// Packs rows `m0 .. m0 + mlen` of A for the k sub-ranges `ranges` (total `pairs` pairs).
pub fn pack_a<T: QElem>(
    isa: Isa,
    a: &MatRef<'_, T>,
    m0: usize,
    mlen: usize,
    ranges: &[(usize, usize)],
    pairs: usize,
    out: &mut [i16],
) {
    // A safe function: never run AVX2 code on a CPU without it, whatever the caller passed.
    let isa = isa.or_supported();
    let strips = mlen.div_ceil(MR);
    let row_len = pairs * 2;
    let out = &mut out[..strips * MR * row_len];
    for (i, dst) in out.chunks_exact_mut(row_len).enumerate() {
        if i >= mlen {
            dst.fill(0);
            continue;
        }
        let row = m0 + i;
        let mut o = 0;
        for &(k0, k1) in ranges {
            let len = k1 - k0;
            let d = &mut dst[o..o + len.div_ceil(2) * 2];
            o += d.len();
            if a.col_stride == 1 {
                let base = row * a.row_stride;
                widen(isa, &a.data[base + k0..base + k1], &mut d[..len]);
            } else {
                let base = row * a.row_stride;
                for (j, v) in d[..len].iter_mut().enumerate() {
                    *v = a.data[base + (k0 + j) * a.col_stride].widen();
                }
            }
            if len % 2 == 1 {
                d[len] = 0;
            }
        }
    }
}

/// `dst[i] = src[i] as i16`, vectorised (AVX2 when the isa allows).
#[inline]
fn widen<T: QElem>(isa: Isa, src: &[T], dst: &mut [i16]) {
    #[inline(always)]
    fn body<T: QElem>(src: &[T], dst: &mut [i16]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = s.widen();
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn body_avx2<T: QElem>(src: &[T], dst: &mut [i16]) {
        body(src, dst)
    }
    #[cfg(target_arch = "x86_64")]
    if isa.has_avx2() {
        // SAFETY: AVX2 isas are only chosen when the CPU has AVX2.
        return unsafe { body_avx2(src, dst) };
    }
    body(src, dst)
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
    let isa = isa.or_supported();
    let strip_len = pairs * NR * 2;
    let full = nlen / NR;
    let out = &mut out[..nlen.div_ceil(NR) * strip_len];
    let first = if T::pack_b_full_strips_fast(isa, b, n0, full, ranges, pairs, out) {
        full
    } else {
        0
    };
    let segs = Segments {
        nr: NR,
        ku: 2,
        n0,
        nlen,
        ranges,
    };
    segs.walk(out, first, |n, valid, k0, k1, seg: &mut [i16]| {
        if !(valid == NR && T::pack_b_strip_fast(isa, b, n, k0, k1, seg)) {
            pack_b_strip_generic(b, n, valid, k0, k1, seg);
        }
    });
}

/// The strips of a packed B operand (either family): columns `n0 .. n0 + nlen` in strips of
/// `nr`, each holding the k sub-ranges `ranges` one after another, each padded to whole groups
/// of `ku`.
pub(crate) struct Segments<'r> {
    pub nr: usize,
    pub ku: usize,
    pub n0: usize,
    pub nlen: usize,
    pub ranges: &'r [(usize, usize)],
}

impl Segments<'_> {
    /// Calls `f(n, valid, k0, k1, segment)` for each strip of `out` from strip `skip` on and
    /// each sub-range in it, with the strip's first column `n` and its columns inside the
    /// matrix (`valid`); `out` holds whole strips.
    pub(crate) fn walk<P>(
        &self,
        out: &mut [P],
        skip: usize,
        mut f: impl FnMut(usize, usize, usize, usize, &mut [P]),
    ) {
        let (nr, ku) = (self.nr, self.ku);
        let strips = self.nlen.div_ceil(nr);
        if strips == 0 {
            return;
        }
        let strip_len = out.len() / strips;
        for (j, dst) in out.chunks_exact_mut(strip_len).enumerate().skip(skip) {
            let n = self.n0 + j * nr;
            let valid = nr.min(self.n0 + self.nlen - n);
            let mut goff = 0;
            for &(k0, k1) in self.ranges {
                let g = (k1 - k0).div_ceil(ku);
                f(
                    n,
                    valid,
                    k0,
                    k1,
                    &mut dst[goff * nr * ku..(goff + g) * nr * ku],
                );
                goff += g;
            }
        }
    }
}

/// Portable B strip packing: columns `n .. n + valid` (zeros up to `NR`), rows `k0 .. k1`.
fn pack_b_strip_generic<T: QElem>(
    b: &MatRef<'_, T>,
    n: usize,
    valid: usize,
    k0: usize,
    k1: usize,
    seg: &mut [i16],
) {
    for p in 0..(k1 - k0).div_ceil(2) {
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

/// Packs columns `n0 .. n0 + nlen` of an im2col B ([`crate::im2col_b`]) into k-pair panels,
/// as [`pack_b`] would pack the materialised matrix. On AVX2, a whole strip of the column
/// matrix (16 pixels of one example, `plan.bytes16`) takes each row as one 16-byte load from
/// its shifted plane, ANDed with the tap's border mask; a row whose 16 bytes would reach past
/// either end of the maps, partial strips and `col^T` go through the definition.
pub(crate) fn pack_b_im2col(
    isa: Isa,
    plan: &Im2colPlan<'_>,
    n0: usize,
    nlen: usize,
    ranges: &[(usize, usize)],
    pairs: usize,
    out: &mut [i16],
) {
    let isa = isa.or_supported();
    let strip_len = pairs * NR * 2;
    let out = &mut out[..nlen.div_ceil(NR) * strip_len];
    let (src, t) = (&plan.src, plan.transposed);
    let fast = isa.has_avx2() && !t && !plan.bytes16.is_empty();
    let at = |k: usize, n: usize| if t { src.at(n, k) } else { src.at(k, n) };
    let segs = Segments {
        nr: NR,
        ku: 2,
        n0,
        nlen,
        ranges,
    };
    segs.walk(out, 0, |n, valid, k0, k1, seg: &mut [i16]| {
        if fast && valid == NR && n.is_multiple_of(NR) {
            // SAFETY: AVX2 is present; `bytes16` exists, so `h * w % 16 == 0` and the strip
            // `n .. n + 16` lies inside one example; rows `k0..k1` are the plan's; `seg` holds
            // the strip's pairs of `k0..k1`.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                avx2_pack::im2col_strip(plan, n, k0, k1, seg)
            };
            return;
        }
        for (p, w) in seg.chunks_exact_mut(NR * 2).enumerate() {
            for h in 0..2 {
                let k = k0 + 2 * p + h;
                for c in 0..NR {
                    w[2 * c + h] = if k < k1 && c < valid {
                        at(k, n + c) as i16
                    } else {
                        0
                    };
                }
            }
        }
    });
}

#[cfg(target_arch = "x86_64")]
mod avx2_pack {
    use std::arch::x86_64::*;

    /// One whole 16-pixel strip of the column matrix from the maps (see
    /// [`super::pack_b_im2col`]): rows `k0..k1` as k-pairs into `seg`.
    ///
    /// # Safety
    /// AVX2 must be present; `plan.bytes16` must be non-empty (`h * w % 16 == 0`, not
    /// transposed); `n % 16 == 0` and `n + 16 <= ` the matrix's columns; `k1 <= ` its rows;
    /// `seg` must hold `ceil((k1 - k0) / 2) * 32` i16.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn im2col_strip(
        plan: &crate::im2col_b::Im2colPlan<'_>,
        n: usize,
        k0: usize,
        k1: usize,
        seg: &mut [i16],
    ) {
        let src = &plan.src;
        let hw = src.h * src.w;
        let (e, p0) = (n / hw, n % hw);
        let per = hw / 16;
        let len = src.maps.len() as isize;
        let base = (e * src.channels * hw + p0) as isize;
        assert!(seg.len() >= (k1 - k0).div_ceil(2) * 32 && k1 <= plan.row_offset.len());
        // Every row's tap is below `k * k` (`Im2colPlan::new`), so its masks are in bounds.
        assert!(plan.bytes16.len() == src.k * src.k * per * 16);
        let (maps, masks) = (src.maps.as_ptr(), plan.bytes16.as_ptr().add(p0 / 16 * 16));
        // Row `k`'s 16 bytes, masked: one load where they lie inside the maps, else (the
        // first and last rows of the whole maps only) through the definition.
        //
        // # Safety
        // `k` is a row of the plan; `masks` points at this strip's mask in tap 0's table of
        // `per` strips; `maps` holds `len` bytes; `base` is the strip's first pixel.
        #[inline(always)]
        unsafe fn row(
            plan: &crate::im2col_b::Im2colPlan<'_>,
            maps: *const i8,
            masks: *const i8,
            len: isize,
            base: isize,
            per: usize,
            k: usize,
            n: usize,
        ) -> __m128i {
            let mask = _mm_loadu_si128(
                masks.add(*plan.row_tap.get_unchecked(k) * per * 16) as *const __m128i
            );
            let at = base + *plan.row_offset.get_unchecked(k);
            if at >= 0 && at + 16 <= len {
                _mm_and_si128(_mm_loadu_si128(maps.offset(at) as *const __m128i), mask)
            } else {
                edge_row(plan, k, n)
            }
        }
        #[cold]
        #[inline(never)]
        fn edge_row(plan: &crate::im2col_b::Im2colPlan<'_>, k: usize, n: usize) -> __m128i {
            let mut b = [0i8; 16];
            for (i, v) in b.iter_mut().enumerate() {
                *v = plan.src.at(k, n + i);
            }
            // SAFETY: an unaligned load of a local 16-byte array (SSE2, baseline x86-64).
            unsafe { _mm_loadu_si128(b.as_ptr() as *const __m128i) }
        }
        let o = seg.as_mut_ptr() as *mut __m256i;
        let mut k = k0;
        let mut p = 0;
        while k < k1 {
            let x0 = row(plan, maps, masks, len, base, per, k, n);
            let x1 = if k + 1 < k1 {
                row(plan, maps, masks, len, base, per, k + 1, n)
            } else {
                _mm_setzero_si128()
            };
            _mm256_storeu_si256(
                o.add(2 * p),
                _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(x0, x1)),
            );
            _mm256_storeu_si256(
                o.add(2 * p + 1),
                _mm256_cvtepi8_epi16(_mm_unpackhi_epi8(x0, x1)),
            );
            k += 2;
            p += 1;
        }
    }

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

    /// Row-contiguous i8 B, all `full` strips: rows are read once, in order, and each pair of
    /// rows scatters 64-byte words to the strips (`strip_len` i16 apart).
    ///
    /// # Safety
    /// Rows `k0..k1` at columns `n0 .. n0 + 16 * full` must be readable; `out` must have room
    /// for `full` strips of `strip_len` i16 from its start; AVX2 must be present.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn b_rows_i8_all(
        data: *const i8,
        row_stride: usize,
        n0: usize,
        full: usize,
        k0: usize,
        k1: usize,
        out: *mut i16,
        strip_len: usize,
    ) {
        let mut k = k0;
        let mut p = 0;
        while k < k1 {
            let r0 = data.add(k * row_stride + n0);
            let pair = k + 1 < k1;
            let r1 = data.add((k + 1).min(k1 - 1) * row_stride + n0);
            for j in 0..full {
                if j % 4 == 0 && k + 3 < k1 {
                    // The next row pair, one 64-byte line ahead of use: rows are `row_stride`
                    // apart, so each row's run is short and the hardware prefetcher restarts.
                    _mm_prefetch::<_MM_HINT_T0>(r0.add(2 * row_stride + 16 * j));
                    _mm_prefetch::<_MM_HINT_T0>(r0.add(3 * row_stride + 16 * j));
                }
                let x0 = _mm_loadu_si128(r0.add(16 * j) as *const __m128i);
                let x1 = if pair {
                    _mm_loadu_si128(r1.add(16 * j) as *const __m128i)
                } else {
                    _mm_setzero_si128()
                };
                let o = out.add(j * strip_len + p * 32) as *mut __m256i;
                _mm256_storeu_si256(o, _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(x0, x1)));
                _mm256_storeu_si256(o.add(1), _mm256_cvtepi8_epi16(_mm_unpackhi_epi8(x0, x1)));
            }
            k += 2;
            p += 1;
        }
    }

    /// Column-contiguous i8 B: for 8 columns at a time, widen 16 k of each column (8 pair
    /// words) and transpose the 8x8 word block so that each pair's 8 columns are contiguous.
    /// Handles whole groups of 16 k and returns where it stopped.
    ///
    /// # Safety
    /// Columns `n..n+16` at rows `k0..k1` must be readable (column `c` at `c * col_stride`);
    /// `out` must hold `ceil((k1-k0)/2) * 32` i16; AVX2 must be present.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn b_cols_i8(
        data: *const i8,
        col_stride: usize,
        n: usize,
        k0: usize,
        k1: usize,
        out: &mut [i16],
    ) -> usize {
        let o = out.as_mut_ptr();
        // Half (8 columns) outer: the 8 column lines in use are consumed over 4 consecutive
        // k blocks before moving on, so a power-of-two column stride does not thrash a set.
        let kend = k0 + (k1 - k0) / 16 * 16;
        for half in 0..2 {
            let mut k = k0;
            while k < kend {
                let pbase = (k - k0) / 2;
                let c0 = n + 8 * half;
                let col = |c: usize| {
                    _mm256_cvtepi8_epi16(_mm_loadu_si128(
                        data.add((c0 + c) * col_stride + k) as *const __m128i
                    ))
                };
                let (v0, v1, v2, v3) = (col(0), col(1), col(2), col(3));
                let (v4, v5, v6, v7) = (col(4), col(5), col(6), col(7));
                let t0 = _mm256_unpacklo_epi32(v0, v1);
                let t1 = _mm256_unpackhi_epi32(v0, v1);
                let t2 = _mm256_unpacklo_epi32(v2, v3);
                let t3 = _mm256_unpackhi_epi32(v2, v3);
                let t4 = _mm256_unpacklo_epi32(v4, v5);
                let t5 = _mm256_unpackhi_epi32(v4, v5);
                let t6 = _mm256_unpacklo_epi32(v6, v7);
                let t7 = _mm256_unpackhi_epi32(v6, v7);
                let u0 = _mm256_unpacklo_epi64(t0, t2);
                let u1 = _mm256_unpackhi_epi64(t0, t2);
                let u2 = _mm256_unpacklo_epi64(t1, t3);
                let u3 = _mm256_unpackhi_epi64(t1, t3);
                let u4 = _mm256_unpacklo_epi64(t4, t6);
                let u5 = _mm256_unpackhi_epi64(t4, t6);
                let u6 = _mm256_unpacklo_epi64(t5, t7);
                let u7 = _mm256_unpackhi_epi64(t5, t7);
                let rows = [
                    _mm256_permute2x128_si256(u0, u4, 0x20),
                    _mm256_permute2x128_si256(u1, u5, 0x20),
                    _mm256_permute2x128_si256(u2, u6, 0x20),
                    _mm256_permute2x128_si256(u3, u7, 0x20),
                    _mm256_permute2x128_si256(u0, u4, 0x31),
                    _mm256_permute2x128_si256(u1, u5, 0x31),
                    _mm256_permute2x128_si256(u2, u6, 0x31),
                    _mm256_permute2x128_si256(u3, u7, 0x31),
                ];
                for (p, r) in rows.iter().enumerate() {
                    let dst = o.add(((pbase + p) * 16 + 8 * half) * 2) as *mut __m256i;
                    _mm256_storeu_si256(dst, *r);
                }
                k += 16;
            }
        }
        kend
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Scattered bytes of every value for packing tests (shared with `quad`'s).
    pub(crate) fn val(i: usize) -> i8 {
        ((i.wrapping_mul(2_654_435_761) >> 7) % 256) as u8 as i8
    }

    /// The AVX2 packing paths write exactly what the portable ones write, for row- and
    /// column-contiguous operands, odd and short k ranges, several ranges, partial strips.
    #[test]
    fn fast_packing_matches_portable() {
        if !Isa::cpu_best().has_avx2() {
            return; // nothing to compare on this CPU
        }
        let (rows, cols) = (77, 53);
        let data: Vec<i8> = (0..rows * cols).map(val).collect();
        let row_major = MatRef::row_major(&data, rows, cols).unwrap();
        let col_major = MatRef::row_major(&data, cols, rows).unwrap().t(); // rows x cols view
        let range_sets: [&[(usize, usize)]; 5] = [
            &[(0, 77)],
            &[(3, 19)],
            &[(0, 16), (16, 33), (40, 41)],
            &[(5, 6), (6, 70)],
            &[(1, 77)],
        ];
        for view in [row_major, col_major] {
            for ranges in range_sets {
                let pairs: usize = ranges.iter().map(|(a, b)| (b - a).div_ceil(2)).sum();
                for (n0, nlen) in [(0usize, 53usize), (5, 32), (37, 16), (2, 40)] {
                    let len = nlen.div_ceil(NR) * pairs * NR * 2;
                    let mut fast = vec![-7i16; len];
                    let mut slow = vec![7i16; len];
                    pack_b(Isa::Avx2, &view, n0, nlen, ranges, pairs, &mut fast);
                    pack_b(Isa::Generic, &view, n0, nlen, ranges, pairs, &mut slow);
                    assert_eq!(fast, slow, "B ranges {ranges:?} cols {n0}+{nlen}");
                }
                // A: rows are the view's columns here (k runs along the view's rows).
                let at = view.t();
                for (m0, mlen) in [(0usize, 53usize), (4, 7), (47, 6)] {
                    let len = mlen.div_ceil(MR) * MR * pairs * 2;
                    let mut fast = vec![-7i16; len];
                    let mut slow = vec![7i16; len];
                    pack_a(Isa::Avx2, &at, m0, mlen, ranges, pairs, &mut fast);
                    pack_a(Isa::Generic, &at, m0, mlen, ranges, pairs, &mut slow);
                    assert_eq!(fast, slow, "A ranges {ranges:?} rows {m0}+{mlen}");
                }
            }
        }
    }

    /// Packing an im2col B from the maps (AVX2 strips and the portable definition) writes
    /// what packing the materialised matrix writes: maps of 16-pixel multiples and not, kernel
    /// sides 1, 3 and 5, odd and several k ranges, partial and unaligned column ranges, and
    /// extremes in the first and last bytes of the maps (read through the fallback).
    #[test]
    fn im2col_packing_matches_packing_the_matrix() {
        use crate::im2col_b::{Im2colPlan, Im2colRef};
        for &(e, c, h, w, k) in &[
            (2, 3, 4, 4, 3),
            (1, 2, 8, 8, 5),
            (3, 5, 4, 8, 1),
            (2, 4, 5, 7, 3),
            (1, 1, 1, 16, 3),
            (2, 3, 32, 32, 3),
        ] {
            let mut maps: Vec<i8> = (0..e * c * h * w).map(|i| val(i + 11)).collect();
            maps[0] = -128;
            let last = maps.len() - 1;
            maps[last] = 127;
            let src = Im2colRef::new(&maps, e, c, h, w, k).unwrap();
            let col = src.materialize();
            let (rows, cols) = (src.rows(), src.cols());
            let mat = MatRef::row_major(&col, rows, cols).unwrap();
            let plan = Im2colPlan::new(src, false, false, false);
            let range_sets: Vec<Vec<(usize, usize)>> = vec![
                vec![(0, rows)],
                vec![(0, rows / 2), (rows / 2, rows)],
                vec![(1.min(rows - 1), rows)],
            ];
            for ranges in &range_sets {
                let pairs: usize = ranges.iter().map(|(a, b)| (b - a).div_ceil(2)).sum();
                for (n0, nlen) in [
                    (0, cols),
                    (16.min(cols - 1), cols - 16.min(cols - 1)),
                    (3, 1),
                ] {
                    if n0 + nlen > cols || nlen == 0 {
                        continue;
                    }
                    let len = nlen.div_ceil(NR) * pairs * NR * 2;
                    let mut want = vec![7i16; len];
                    pack_b(Isa::Generic, &mat, n0, nlen, ranges, pairs, &mut want);
                    for isa in [Isa::Generic, Isa::Avx2] {
                        let mut got = vec![-7i16; len];
                        pack_b_im2col(isa, &plan, n0, nlen, ranges, pairs, &mut got);
                        assert_eq!(
                            got, want,
                            "{isa:?} maps {e}x{c}x{h}x{w} k{k} ranges {ranges:?} cols {n0}+{nlen}"
                        );
                    }
                }
            }
        }
    }

    /// Packed panels hold the widened values at the documented positions, zero padded.
    #[test]
    fn packed_layout_is_as_documented() {
        let (rows, cols) = (9, 20);
        let data: Vec<i8> = (0..rows * cols).map(val).collect();
        let b = MatRef::row_major(&data, rows, cols).unwrap();
        let ranges = [(0, 5), (5, 9)];
        let pairs = 3 + 2;
        let mut out = vec![0i16; 2 * pairs * NR * 2];
        pack_b(Isa::detect(), &b, 0, cols, &ranges, pairs, &mut out);
        for (j, strip) in out.chunks_exact(pairs * NR * 2).enumerate() {
            let mut poff = 0;
            for &(k0, k1) in &ranges {
                for p in 0..(k1 - k0).div_ceil(2) {
                    for c in 0..NR {
                        for h in 0..2 {
                            let (k, n) = (k0 + 2 * p + h, j * NR + c);
                            let want = if k < k1 && n < cols {
                                b.at(k, n) as i16
                            } else {
                                0
                            };
                            assert_eq!(strip[((poff + p) * NR + c) * 2 + h], want);
                        }
                    }
                }
                poff += (k1 - k0).div_ceil(2);
            }
        }
        let a = b; // 9 x 20 as A: rows 0..9, k 0..20
        let ranges = [(0, 7), (7, 20)];
        let pairs = 4 + 7;
        let mut out = vec![0i16; 2 * MR * pairs * 2];
        pack_a(Isa::detect(), &a, 0, rows, &ranges, pairs, &mut out);
        for r in 0..2 * MR {
            let mut poff = 0;
            for &(k0, k1) in &ranges {
                for p in 0..(k1 - k0).div_ceil(2) {
                    for h in 0..2 {
                        let k = k0 + 2 * p + h;
                        let want = if k < k1 && r < rows {
                            a.at(r, k) as i16
                        } else {
                            0
                        };
                        assert_eq!(out[r * pairs * 2 + (poff + p) * 2 + h], want);
                    }
                }
                poff += (k1 - k0).div_ceil(2);
            }
        }
    }
}
