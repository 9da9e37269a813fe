//! Implicit im2col: a convolution's column matrix as a GEMM operand that is never built.
//!
//! A convolution of `batch` channels-first examples `x[batch, cin, h, w]` is the GEMM
//! `W[Cout, cin*k*k] x col[cin*k*k, batch*ho*wo]` (002 Section II-A): row `(ci, ky, kx)` and
//! column `(j, oy, ox)` of `col` hold `x[j, ci, oy*stride + ky - pad, ox*stride + kx - pad]`,
//! 0 in the padding. [`QConvRef`] describes `col` by the input alone. The CPU driver packs
//! `col`'s k-pair panels straight from the input ([`pack_b_conv`]), which saves writing and
//! re-reading a matrix `k*k` times the size of the input between im2col and the GEMM.
//! [`im2col_ref`] builds `col` explicitly: it is the reference, and what a backend without an
//! implicit path runs (the default [`crate::GemmBackend::gemm_q8_conv`]).

use crate::pack::QElem;
use crate::types::Scales;
use crate::ukernel::{Isa, NR};
use crate::KernelError;

/// Geometry of a 2-D convolution over `cin x h x w` examples with a square `k x k` kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
}

impl ConvShape {
    /// Checks that the shape describes at least one window (the message says what is wrong).
    pub fn validate(&self) -> Result<(), KernelError> {
        let ConvShape {
            cin,
            h,
            w,
            k,
            stride,
            pad,
        } = *self;
        if cin == 0 || h == 0 || w == 0 || k == 0 || stride == 0 {
            return Err(KernelError::Shape(format!(
                "convolution {cin}x{h}x{w}, kernel {k}, stride {stride}: every size must be >= 1"
            )));
        }
        if h + 2 * pad < k || w + 2 * pad < k {
            return Err(KernelError::Shape(format!(
                "convolution kernel {k} is larger than the padded input {}x{}",
                h + 2 * pad,
                w + 2 * pad
            )));
        }
        Ok(())
    }
    /// Output height (valid shapes only).
    pub fn ho(&self) -> usize {
        (self.h + 2 * self.pad - self.k) / self.stride + 1
    }
    /// Output width (valid shapes only).
    pub fn wo(&self) -> usize {
        (self.w + 2 * self.pad - self.k) / self.stride + 1
    }
    /// Rows of `col`: `cin * k * k`.
    pub fn col_rows(&self) -> usize {
        self.cin * self.k * self.k
    }
    /// Output pixels per example.
    pub fn out_pixels(&self) -> usize {
        self.ho() * self.wo()
    }
    /// Values of one input example.
    pub fn in_len(&self) -> usize {
        self.cin * self.h * self.w
    }
}

/// The column matrix of a convolution of `batch` 8-bit examples, as the B operand of a
/// quantised GEMM: `col_rows() x batch * out_pixels()`, with `scales` over its columns (one
/// per example: `Scales::per_group(.., out_pixels())`).
#[derive(Clone, Copy, Debug)]
pub struct QConvRef<'a> {
    /// `[batch, cin, h, w]` mantissas.
    pub data: &'a [i8],
    pub batch: usize,
    pub shape: ConvShape,
    pub scales: Scales<'a>,
    pub max_abs: u32,
}

impl QConvRef<'_> {
    /// Rows of the implicit matrix.
    pub fn rows(&self) -> usize {
        self.shape.col_rows()
    }
    /// Columns of the implicit matrix.
    pub fn cols(&self) -> usize {
        self.batch * self.shape.out_pixels()
    }
    /// Checks the shape and that `data` holds exactly `batch` examples.
    pub fn validate(&self) -> Result<(), KernelError> {
        self.shape.validate()?;
        let want = self.batch * self.shape.in_len();
        if self.data.len() != want {
            return Err(KernelError::Shape(format!(
                "convolution input has {} values, {} examples of {}x{}x{} need {want}",
                self.data.len(),
                self.batch,
                self.shape.cin,
                self.shape.h,
                self.shape.w
            )));
        }
        Ok(())
    }
}

/// The column matrix, built explicitly by the definition (row-major,
/// `col_rows() x batch * out_pixels()`).
pub fn im2col_ref<T: Copy + Default>(s: &ConvShape, data: &[T], batch: usize) -> Vec<T> {
    let (ho, wo, p) = (s.ho(), s.wo(), s.out_pixels());
    let cols = batch * p;
    let mut col = vec![T::default(); s.col_rows() * cols];
    for ci in 0..s.cin {
        for ky in 0..s.k {
            for kx in 0..s.k {
                let row = (ci * s.k + ky) * s.k + kx;
                for j in 0..batch {
                    for oy in 0..ho {
                        for ox in 0..wo {
                            let iy = (oy * s.stride + ky) as isize - s.pad as isize;
                            let ix = (ox * s.stride + kx) as isize - s.pad as isize;
                            if iy >= 0 && ix >= 0 && (iy as usize) < s.h && (ix as usize) < s.w {
                                col[row * cols + j * p + oy * wo + ox] = data
                                    [((j * s.cin + ci) * s.h + iy as usize) * s.w + ix as usize];
                            }
                        }
                    }
                }
            }
        }
    }
    col
}

/// A convolution input prepared for packing: per row `k` of `col`, the channel offset and the
/// kernel offsets relative to the window's corner (one division per row per GEMM, not per
/// packed value).
#[derive(Clone, Debug)]
pub struct ConvSrc<'a, T> {
    data: &'a [T],
    s: ConvShape,
    ho: usize,
    wo: usize,
    /// `ci * h * w` of row `k`.
    chan_off: Vec<usize>,
    /// `ky - pad` and `kx - pad` of row `k`.
    dy: Vec<isize>,
    dx: Vec<isize>,
}

impl<'a, T: QElem> ConvSrc<'a, T> {
    pub(crate) fn new(data: &'a [T], s: ConvShape) -> Self {
        let kk = s.k * s.k;
        let rows = s.col_rows();
        let mut chan_off = Vec::with_capacity(rows);
        let mut dy = Vec::with_capacity(rows);
        let mut dx = Vec::with_capacity(rows);
        for k in 0..rows {
            let (ci, r) = (k / kk, k % kk);
            chan_off.push(ci * s.h * s.w);
            dy.push((r / s.k) as isize - s.pad as isize);
            dx.push((r % s.k) as isize - s.pad as isize);
        }
        ConvSrc {
            data,
            s,
            ho: s.ho(),
            wo: s.wo(),
            chan_off,
            dy,
            dx,
        }
    }

    /// Element `(k, n)` of `col`, widened (0 in the padding).
    #[inline]
    fn at(&self, k: usize, n: usize) -> i16 {
        let p = self.ho * self.wo;
        let (j, q) = (n / p, n % p);
        let (oy, ox) = (q / self.wo, q % self.wo);
        let iy = (oy * self.s.stride) as isize + self.dy[k];
        let ix = (ox * self.s.stride) as isize + self.dx[k];
        if iy < 0 || ix < 0 || iy as usize >= self.s.h || ix as usize >= self.s.w {
            return 0;
        }
        self.data[j * self.s.in_len() + self.chan_off[k] + iy as usize * self.s.w + ix as usize]
            .widen()
    }
}

/// Packs columns `n0 .. n0 + nlen` of the implicit `col` for the k sub-ranges `ranges` (total
/// `pairs` pairs), in the B~ layout of [`crate::pack`]: exactly what [`crate::pack::pack_b`]
/// writes for the explicit matrix.
pub(crate) fn pack_b_conv<T: QElem>(
    isa: Isa,
    src: &ConvSrc<'_, T>,
    n0: usize,
    nlen: usize,
    ranges: &[(usize, usize)],
    pairs: usize,
    out: &mut [i16],
) {
    let isa = isa.or_supported();
    let strips = nlen.div_ceil(NR);
    let strip_len = pairs * NR * 2;
    let full = nlen / NR;
    let first = if T::pack_b_conv_full_strips_fast(isa, src, n0, full, ranges, pairs, out) {
        full
    } else {
        0
    };
    for (jstrip, dst) in out[..strips * strip_len]
        .chunks_exact_mut(strip_len)
        .enumerate()
        .skip(first)
    {
        let n = n0 + jstrip * NR;
        let valid = NR.min(n0 + nlen - n);
        if valid == NR && T::pack_b_conv_strip_fast(isa, src, n, ranges, dst) {
            continue;
        }
        pack_b_conv_strip_generic(src, n, valid, ranges, dst);
    }
}

/// Portable strip packing: columns `n .. n + valid` (zeros up to `NR`).
fn pack_b_conv_strip_generic<T: QElem>(
    src: &ConvSrc<'_, T>,
    n: usize,
    valid: usize,
    ranges: &[(usize, usize)],
    dst: &mut [i16],
) {
    let mut poff = 0;
    for &(k0, k1) in ranges {
        for p in 0..(k1 - k0).div_ceil(2) {
            let w = &mut dst[(poff + p) * NR * 2..(poff + p + 1) * NR * 2];
            for h in 0..2 {
                let k = k0 + 2 * p + h;
                for c in 0..NR {
                    w[2 * c + h] = if k < k1 && c < valid {
                        src.at(k, n + c)
                    } else {
                        0
                    };
                }
            }
        }
        poff += (k1 - k0).div_ceil(2);
    }
}

/// Whether the CPU packs this convolution's column matrix with its vector path (stride 1,
/// output rows a multiple of 16 wide, input rows at least 16 wide) when AVX2 is present. Other
/// shapes take a portable per-value packer, slower than building the matrix with a tuned
/// im2col: callers with such an im2col use this to choose.
pub fn implicit_packs_fast(s: &ConvShape) -> bool {
    Isa::detect() == Isa::Avx2
        && s.validate().is_ok()
        && s.stride == 1
        && s.wo().is_multiple_of(NR)
        && s.w >= 16
}

/// The AVX2 packer of all `full` strips from `n0`, for 8-bit inputs when
/// [`implicit_packs_fast`] holds: row pairs outer, strips inner, so each row's offsets are
/// read once for all strips (the explicit packer's order too). Returns false when the shape
/// does not qualify.
#[cfg(target_arch = "x86_64")]
pub(crate) fn pack_full_strips_i8_fast(
    isa: Isa,
    src: &ConvSrc<'_, i8>,
    n0: usize,
    full: usize,
    ranges: &[(usize, usize)],
    pairs: usize,
    out: &mut [i16],
) -> bool {
    let s = &src.s;
    if isa != Isa::Avx2
        || s.stride != 1
        || !src.wo.is_multiple_of(NR)
        || s.w < 16
        || !n0.is_multiple_of(NR)
    {
        return false;
    }
    if full == 0 {
        return true;
    }
    let p = src.ho * src.wo;
    // (example offset, oy, ox0) of each strip: a strip never wraps a row (wo % 16 == 0 and
    // strips start at multiples of 16).
    let strips: Vec<(usize, usize, usize)> = (0..full)
        .map(|t| {
            let n = n0 + t * NR;
            let (j, q) = (n / p, n % p);
            (j * s.in_len(), q / src.wo, q % src.wo)
        })
        .collect();
    let strip_len = pairs * NR * 2;
    assert!(out.len() >= full * strip_len);
    assert!(src.data.len() >= ((n0 + full * NR - 1) / p + 1) * s.in_len());
    // SAFETY: AVX2 is present; loads are bounded by the example's planes (checked per row in
    // `row16`, examples asserted above); stores stay below `full * strip_len` (asserted).
    unsafe { avx2_conv::pack_all(src, &strips, ranges, out.as_mut_ptr(), strip_len) };
    true
}

/// The AVX2 strip packer for 8-bit inputs: stride 1, the strip's 16 columns one run of an
/// output row (`wo` a multiple of 16), rows at least 16 wide. Each row `k` of the strip is one
/// 16-byte load from the input row, shifted with `pshufb` where the window hangs over the left
/// or right padding; rows in the top or bottom padding are zero.
#[cfg(target_arch = "x86_64")]
pub(crate) fn pack_strip_i8_fast(
    isa: Isa,
    src: &ConvSrc<'_, i8>,
    n: usize,
    ranges: &[(usize, usize)],
    dst: &mut [i16],
) -> bool {
    let s = &src.s;
    if isa != Isa::Avx2 || s.stride != 1 || !src.wo.is_multiple_of(NR) || s.w < 16 {
        return false;
    }
    let p = src.ho * src.wo;
    let (j, q) = (n / p, n % p);
    let (oy, ox0) = (q / src.wo, q % src.wo);
    if ox0 + NR > src.wo {
        return false; // the strip wraps to the next output row
    }
    let pairs: usize = ranges.iter().map(|(a, b)| (b - a).div_ceil(2)).sum();
    assert!(dst.len() >= pairs * NR * 2 && (j + 1) * s.in_len() <= src.data.len());
    // SAFETY: AVX2 is present (isa); every load is checked against the example's bounds in
    // `row16`; stores stay below `pairs * 32` i16 (asserted).
    unsafe { avx2_conv::pack_strip(src, j, oy, ox0, ranges, dst) };
    true
}

#[cfg(target_arch = "x86_64")]
mod avx2_conv {
    use super::ConvSrc;
    use std::arch::x86_64::*;

    /// `pshufb` masks: 16 bytes read at `16 - s` shift a vector left by `s` bytes (zeros in),
    /// at `16 + s` right by `s` bytes (negative entries zero a byte).
    static SHIFT: [i8; 48] = {
        let mut t = [-128i8; 48];
        let mut i = 0;
        while i < 16 {
            t[16 + i] = i as i8;
            i += 1;
        }
        t
    };

    /// One row of `col` as seen by one kernel offset: the channel plane, the offsets `dy`,
    /// `dx` of the window, and the map size (hoisted out of the loop over strips).
    #[derive(Clone, Copy)]
    struct Tap {
        plane: usize,
        dy: isize,
        dx: isize,
    }

    /// `x[ex + plane + (oy + dy) * w + ox0 + dx .. + 16]`, zeros outside the map.
    #[inline(always)]
    unsafe fn row16(
        data: *const i8,
        h: usize,
        w: usize,
        t: Tap,
        ex: usize,
        oy: usize,
        ox0: usize,
    ) -> __m128i {
        let iy = oy as isize + t.dy;
        if iy < 0 || iy as usize >= h {
            return _mm_setzero_si128();
        }
        let base = data.add(ex + t.plane + iy as usize * w);
        let ix0 = ox0 as isize + t.dx;
        if ix0 >= 0 && ix0 as usize + 16 <= w {
            return _mm_loadu_si128(base.add(ix0 as usize) as *const __m128i);
        }
        row16_edge(base, w, ix0)
    }

    /// A row hanging over the left or right padding (`w >= 16`).
    #[inline(never)]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn row16_edge(base: *const i8, w: usize, ix0: isize) -> __m128i {
        if ix0 < 0 && ix0 > -16 {
            // left padding: load x[0..16], shift in s = -ix0 zeros
            let s = (-ix0) as usize;
            let x = _mm_loadu_si128(base as *const __m128i);
            let m = _mm_loadu_si128(SHIFT.as_ptr().add(16 - s) as *const __m128i);
            return _mm_shuffle_epi8(x, m);
        }
        let over = ix0 + 16 - w as isize;
        if ix0 >= 0 && over > 0 && over < 16 {
            // right padding: load x[w-16..w], drop the first s = over bytes
            let s = over as usize;
            let x = _mm_loadu_si128(base.add(w - 16) as *const __m128i);
            let m = _mm_loadu_si128(SHIFT.as_ptr().add(16 + s) as *const __m128i);
            return _mm_shuffle_epi8(x, m);
        }
        // A window entirely in the padding (kernels far wider than the pad allows for).
        let mut t = [0i8; 16];
        for (i, v) in t.iter_mut().enumerate() {
            let ix = ix0 + i as isize;
            if ix >= 0 && (ix as usize) < w {
                *v = *base.add(ix as usize);
            }
        }
        _mm_loadu_si128(t.as_ptr() as *const __m128i)
    }

    fn tap(src: &ConvSrc<'_, i8>, k: usize) -> Tap {
        Tap {
            plane: src.chan_off[k],
            dy: src.dy[k],
            dx: src.dx[k],
        }
    }

    /// All strips, row pairs outer.
    ///
    /// # Safety
    /// AVX2 present; `out` holds `strips.len()` strips of `strip_len`; every strip's example
    /// lies inside `src.data`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn pack_all(
        src: &ConvSrc<'_, i8>,
        strips: &[(usize, usize, usize)],
        ranges: &[(usize, usize)],
        out: *mut i16,
        strip_len: usize,
    ) {
        let (data, h, w) = (src.data.as_ptr(), src.s.h, src.s.w);
        let mut p = 0;
        for &(k0, k1) in ranges {
            let mut k = k0;
            while k < k1 {
                let pair = k + 1 < k1;
                let t0 = tap(src, k);
                let t1 = if pair { tap(src, k + 1) } else { t0 };
                for (t, &(ex, oy, ox0)) in strips.iter().enumerate() {
                    let x0 = row16(data, h, w, t0, ex, oy, ox0);
                    let x1 = if pair {
                        row16(data, h, w, t1, ex, oy, ox0)
                    } else {
                        _mm_setzero_si128()
                    };
                    let o = out.add(t * strip_len + p * 32) as *mut __m256i;
                    _mm256_storeu_si256(o, _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(x0, x1)));
                    _mm256_storeu_si256(o.add(1), _mm256_cvtepi8_epi16(_mm_unpackhi_epi8(x0, x1)));
                }
                k += 2;
                p += 1;
            }
        }
    }

    /// # Safety
    /// AVX2 present; `dst` holds the strip's pairs; example `j` lies inside `src.data`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn pack_strip(
        src: &ConvSrc<'_, i8>,
        j: usize,
        oy: usize,
        ox0: usize,
        ranges: &[(usize, usize)],
        dst: &mut [i16],
    ) {
        let ex = j * src.s.in_len();
        let (data, h, w) = (src.data.as_ptr(), src.s.h, src.s.w);
        let mut o = dst.as_mut_ptr() as *mut __m256i;
        for &(k0, k1) in ranges {
            let mut k = k0;
            while k < k1 {
                let x0 = row16(data, h, w, tap(src, k), ex, oy, ox0);
                let x1 = if k + 1 < k1 {
                    row16(data, h, w, tap(src, k + 1), ex, oy, ox0)
                } else {
                    _mm_setzero_si128()
                };
                _mm256_storeu_si256(o, _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(x0, x1)));
                _mm256_storeu_si256(o.add(1), _mm256_cvtepi8_epi16(_mm_unpackhi_epi8(x0, x1)));
                o = o.add(2);
                k += 2;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::pack_b;
    use crate::types::MatRef;

    fn val(i: usize) -> i8 {
        ((i.wrapping_mul(2_654_435_761) >> 9) % 255) as u8 as i8
    }

    /// Packing the implicit matrix writes exactly what packing the explicit im2col matrix
    /// writes, on the fast and the portable paths, for same, valid, strided, wide-kernel and
    /// narrow shapes, split k ranges and partial strips.
    #[test]
    fn implicit_packing_matches_explicit() {
        let shapes = [
            // (cin, h, w, k, stride, pad, batch)
            (3, 32, 32, 3, 1, 1, 2),
            (2, 16, 16, 3, 1, 1, 3),
            (5, 16, 48, 3, 1, 1, 1),
            (1, 18, 18, 3, 1, 0, 2), // valid conv: wo 16
            (2, 12, 12, 5, 1, 2, 2), // w < 16: portable path
            (3, 8, 8, 3, 1, 1, 5),
            (2, 16, 16, 1, 1, 0, 2),
            (4, 17, 17, 3, 2, 1, 2),
            (1, 7, 9, 2, 1, 1, 3),
            (2, 20, 16, 5, 1, 4, 1), // pad > k/2: windows partly or wholly in the padding
        ];
        for (cin, h, w, k, stride, pad, batch) in shapes {
            let s = ConvShape {
                cin,
                h,
                w,
                k,
                stride,
                pad,
            };
            s.validate().unwrap();
            let data: Vec<i8> = (0..batch * s.in_len()).map(|i| val(i + 3 * k)).collect();
            let col = im2col_ref(&s, &data, batch);
            let (rows, cols) = (s.col_rows(), batch * s.out_pixels());
            let m = MatRef::row_major(&col, rows, cols).unwrap();
            let src = ConvSrc::new(&data[..], s);
            let mut range_sets: Vec<Vec<(usize, usize)>> = vec![vec![(0, rows)]];
            if rows > 4 {
                range_sets.push(vec![(0, 3), (3, rows)]);
                range_sets.push(vec![(1, rows - 1)]);
            }
            for ranges in &range_sets {
                let pairs: usize = ranges.iter().map(|(a, b)| (b - a).div_ceil(2)).sum();
                for (n0, nlen) in [(0, cols), (16, cols.saturating_sub(16)), (0, cols.min(7))] {
                    if nlen == 0 {
                        continue;
                    }
                    let len = nlen.div_ceil(NR) * pairs * NR * 2;
                    let mut want = vec![1i16; len];
                    pack_b(Isa::Generic, &m, n0, nlen, ranges, pairs, &mut want);
                    for isa in [Isa::detect(), Isa::Generic] {
                        let mut got = vec![-1i16; len];
                        pack_b_conv(isa, &src, n0, nlen, ranges, pairs, &mut got);
                        assert_eq!(
                            got, want,
                            "{s:?} batch {batch} ranges {ranges:?} cols {n0}+{nlen} {isa:?}"
                        );
                    }
                }
            }
        }
    }

    /// The reference im2col against a direct reading of the definition on a small case.
    #[test]
    fn im2col_ref_by_hand() {
        // one 1x2x3 example, 2x2 kernel, pad 1, stride 2: output 2x2
        let s = ConvShape {
            cin: 1,
            h: 2,
            w: 3,
            k: 2,
            stride: 2,
            pad: 1,
        };
        let x = [1i8, 2, 3, 4, 5, 6];
        let col = im2col_ref(&s, &x, 1);
        // rows (ky, kx); columns (oy, ox) at input corners (-1,-1), (-1,1), (1,-1), (1,1)
        #[rustfmt::skip]
        let want = [
            0, 0, 0, 5,
            0, 0, 4, 6,
            0, 2, 0, 0,
            1, 3, 0, 0,
        ];
        assert_eq!(col, want);
    }

    #[test]
    fn bad_shapes_are_errors() {
        let s = ConvShape {
            cin: 1,
            h: 2,
            w: 2,
            k: 5,
            stride: 1,
            pad: 1,
        };
        assert!(s.validate().is_err());
        let ok = ConvShape { k: 3, ..s };
        let q = QConvRef {
            data: &[0i8; 3],
            batch: 1,
            shape: ok,
            scales: Scales::uniform(&[1.0]),
            max_abs: 127,
        };
        let e = q.validate().unwrap_err().to_string();
        assert!(e.contains("3 values"), "{e}");
    }
}
