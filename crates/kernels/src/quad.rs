//! The k-quad kernel family, for CPUs with AVX-512 VNNI: `vpdpbusd` multiplies 4 unsigned by 4
//! signed bytes and adds the 4 products into an i32 lane, 64 MACs per instruction with the add
//! fused (AVX2's `vpmaddwd` does 16 and needs a separate `vpaddd`).
//!
//! On AVX2 the same panels feed `vpmaddubsw` (u8 x s8, adjacent products summed into a
//! saturating i16), `vpmaddwd` by ones (the two pair sums of a quad into i32) and `vpaddd`: 32
//! MACs per three instructions ([`Isa::Avx2Quad`]). That route is exact only when no pair sum
//! saturates, so it takes B unbiased, as u8, and only products whose B is non-negative
//! (activations after a ReLU) with `2 * max|a| * max|b| <= 32767`; the caller scans B's sign
//! and sends the rest to the k-pair family. There the row sums are 0 and pads in B are 0.
//!
//! Exact s8 x s8 through a u8 x s8 instruction: B is packed biased, `b + 128` (its sign bit
//! flipped), so the kernel sums `a * (b + 128) = a * b + 128 * a`, and each row's accumulators
//! start at `-128 * sum_k a[r, k]` over the piece (row sums made while packing A). Everything
//! wraps modulo 2^32, and the true sum of a chunk fits in i32 (the `k_safe` chunking of
//! [`crate::types`]), so the wrapped result is the exact sum even where a biased partial sum
//! would overflow. Pads in A are 0, so whatever B holds opposite them adds nothing.
//!
//! Layouts, with `Q` the step's total quads (each K sub-range padded with zeros to a multiple
//! of 4, so that a quad never straddles two chunks):
//!
//! * A~: strip `s` (rows `MR*s ..`) at `s * Q * MR * 4`; quad `q`, row `r`, byte `h` at
//!   `(q * MR + r) * 4 + h`: quad-major, so the kernel broadcasts each row's dword from a fixed
//!   offset. Rows past the matrix and pads are 0.
//! * Row sums: strip `s`, sub-range `i`, row `r` at `(s * ranges + i) * MR + r`.
//! * B~: strip `j` (columns `NR*j ..`) at `j * Q * NR * 4`; quad `q`, column `c`, byte `h` at
//!   `(q * NR + c) * 4 + h`, holding `b ^ 0x80` (`b + 128` as u8). Pads hold 0x80 (b = 0);
//!   columns past the matrix are never read back into C.
//!
//! Each piece here has a portable version ([`Isa::GenericQuad`]) that runs on any CPU, so the
//! packing and the driver of this family are tested bit for bit on every machine, and the
//! AVX-512 and AVX2 kernels wherever the CPU has them (the portable microkernel computes
//! unbiased panels exactly too, given row sums of 0).

use crate::im2col_b::Im2colPlan;
use crate::types::MatRef;
use crate::ukernel::{Isa, Store};

/// Rows of the C tile (A broadcasts per quad).
pub const MR: usize = 8;
/// Columns of the C tile (two 16-lane i32 vectors).
pub const NR: usize = 32;
/// i32 elements in one tile, row-major with leading dimension `NR`.
pub const TILE: usize = MR * NR;
/// Quads per step: the B micro-panel (`KC_QUADS * NR * 4` bytes = 18 KiB) stays in L1, and
/// K = 576 (a 3x3 convolution over 64 channels) is one step, so its tiles take the fused
/// epilogue rather than an i32 round trip.
pub const KC_QUADS: usize = 144;

/// Whether `isa` runs the AVX-512 code of this family on this CPU.
#[inline]
fn vnni(isa: Isa) -> bool {
    isa.or_supported() == Isa::Avx512Vnni
}

/// Whether `isa` runs the AVX2 `vpmaddubsw` code of this family (unbiased B) on this CPU.
#[inline]
fn maddubs(isa: Isa) -> bool {
    isa.or_supported() == Isa::Avx2Quad
}

/// The byte XORed onto B's values when packing (`b + 128` for the biased kernels, `b` as is
/// for the unbiased one); pads hold it too (b = 0).
#[inline]
fn b_flip(isa: Isa) -> u8 {
    if isa.unbiased_b() {
        0
    } else {
        0x80
    }
}

/// Packs rows `m0 .. m0 + mlen` of A for the k sub-ranges `ranges` (total `quads` quads) and
/// writes each strip's row sums per sub-range into `sums`.
#[allow(clippy::too_many_arguments)]
pub fn pack_a(
    isa: Isa,
    a: &MatRef<'_, i8>,
    m0: usize,
    mlen: usize,
    ranges: &[(usize, usize)],
    quads: usize,
    out: &mut [i8],
    sums: &mut [i32],
) {
    let strips = mlen.div_ceil(MR);
    let strip_len = quads * MR * 4;
    let out = &mut out[..strips * strip_len];
    let sums = &mut sums[..strips * ranges.len() * MR];
    let isa = isa.or_supported();
    let fast = matches!(isa, Isa::Avx512Vnni | Isa::Avx2Quad) && a.col_stride == 1;
    let (avx2, biased) = (isa.has_avx2(), !isa.unbiased_b());
    for (s, dst) in out.chunks_exact_mut(strip_len).enumerate() {
        let r0 = m0 + s * MR;
        let valid = MR.min(m0 + mlen - r0);
        let mut qoff = 0;
        for (i, &(k0, k1)) in ranges.iter().enumerate() {
            let nq = (k1 - k0).div_ceil(4);
            let seg = &mut dst[qoff * MR * 4..(qoff + nq) * MR * 4];
            qoff += nq;
            let done = if fast && valid == MR {
                // SAFETY: rows r0..r0+MR, columns k0..k1 lie in the view (checked by the
                // caller's `MatRef::check`), so every line read is inside `a.data`; AVX2 is
                // present (implied by AVX-512).
                k0 + unsafe {
                    avx2::transpose_lines(
                        a.data,
                        r0 * a.row_stride + k0,
                        a.row_stride,
                        k1 - k0,
                        MR,
                        0,
                        as_bytes_mut(seg),
                        0x00,
                    )
                }
            } else {
                k0
            };
            pack_a_generic(a, r0, valid, done, k1, &mut seg[(done - k0) / 4 * MR * 4..]);
            for r in 0..MR {
                sums[(s * ranges.len() + i) * MR + r] = if r < valid && biased {
                    row_sum(avx2, a, r0 + r, k0, k1)
                } else {
                    0
                };
            }
        }
    }
}

/// The bytes of an i8 slice, for the byte shuffles shared with B.
fn as_bytes_mut(s: &mut [i8]) -> &mut [u8] {
    // SAFETY: i8 and u8 have the same size, alignment and validity.
    unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr() as *mut u8, s.len()) }
}

/// Portable A packing of rows `r0 .. r0 + valid` (zeros up to `MR`), columns `k0 .. k1`.
fn pack_a_generic(
    a: &MatRef<'_, i8>,
    r0: usize,
    valid: usize,
    k0: usize,
    k1: usize,
    seg: &mut [i8],
) {
    for q in 0..(k1 - k0).div_ceil(4) {
        for r in 0..MR {
            for h in 0..4 {
                let k = k0 + 4 * q + h;
                seg[(q * MR + r) * 4 + h] = if r < valid && k < k1 {
                    a.at(r0 + r, k)
                } else {
                    0
                };
            }
        }
    }
}

/// `sum_{k0 <= k < k1} a[row, k]` (exact: at most 2^31 / 128 terms of |v| <= 128); `avx2`
/// says whether this CPU has AVX2.
fn row_sum(avx2: bool, a: &MatRef<'_, i8>, row: usize, k0: usize, k1: usize) -> i32 {
    #[inline(always)]
    fn body(line: &[i8]) -> i32 {
        line.iter().map(|&v| v as i32).sum()
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn body_avx2(line: &[i8]) -> i32 {
        body(line)
    }
    if a.col_stride == 1 {
        let line = &a.data[row * a.row_stride + k0..row * a.row_stride + k1];
        #[cfg(target_arch = "x86_64")]
        if avx2 {
            // SAFETY: AVX2 is present.
            return unsafe { body_avx2(line) };
        }
        let _ = avx2;
        body(line)
    } else {
        (k0..k1).map(|k| a.at(row, k) as i32).sum()
    }
}

/// Packs columns `n0 .. n0 + nlen` of B for the k sub-ranges `ranges` (total `quads` quads).
pub fn pack_b(
    isa: Isa,
    b: &MatRef<'_, i8>,
    n0: usize,
    nlen: usize,
    ranges: &[(usize, usize)],
    quads: usize,
    out: &mut [u8],
) {
    let strips = nlen.div_ceil(NR);
    let strip_len = quads * NR * 4;
    let out = &mut out[..strips * strip_len];
    let full = nlen / NR;
    let (vnni, maddubs, flip) = (vnni(isa), maddubs(isa), b_flip(isa));
    let mut first = 0;
    if (vnni || maddubs) && b.col_stride == 1 && full > 0 {
        // Row-contiguous B: rows are read once, in order, for all full strips (strip by strip
        // a power-of-two row stride would thrash one cache set).
        let mut qoff = 0;
        for &(k0, k1) in ranges {
            if k1 > k0 {
                let last = (k1 - 1) * b.row_stride + n0 + full * NR;
                assert!(last <= b.data.len());
                let dst = out[qoff * NR * 4..].as_mut_ptr();
                // SAFETY: rows k0..k1 at columns n0..n0+full*NR are inside `data` (asserted);
                // writes stay inside `full` strips of `strip_len` bytes; AVX-512 is present
                // for the VNNI family, AVX2 for the other.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    let data = b.data.as_ptr();
                    if vnni {
                        avx512::b_rows(data, b.row_stride, n0, full, k0, k1, dst, strip_len)
                    } else {
                        avx2::b_rows(data, b.row_stride, n0, full, k0, k1, dst, strip_len)
                    }
                };
            }
            qoff += (k1 - k0).div_ceil(4);
        }
        first = full;
    }
    let segs = crate::pack::Segments {
        nr: NR,
        ku: 4,
        n0,
        nlen,
        ranges,
    };
    segs.walk(out, first, |n, valid, k0, k1, seg: &mut [u8]| {
        if (vnni || maddubs) && b.row_stride == 1 {
            pack_b_cols(vnni, flip, b, n, 0, valid, k0, k1, seg);
        } else if maddubs && b.col_stride == 1 && k1 > k0 {
            // The partial last strip of a row-contiguous B (the full ones are packed above).
            assert!((k1 - 1) * b.row_stride + n + valid <= b.data.len());
            assert!(valid <= NR && seg.len() >= (k1 - k0).div_ceil(4) * NR * 4);
            // SAFETY: rows k0..k1 at columns n..n+valid are inside `data` and `seg` holds the
            // strip's quads of k0..k1 (asserted); AVX2 is present (the family's requirement).
            #[cfg(target_arch = "x86_64")]
            unsafe {
                avx2::b_rows_tail(
                    b.data.as_ptr(),
                    b.row_stride,
                    n,
                    valid,
                    k0,
                    k1,
                    seg.as_mut_ptr(),
                )
            };
        } else {
            pack_b_generic_cols(flip, |k, c| b.at(k, c), n, 0, valid, k0, k1, seg);
        }
        pad_b_cols(flip, valid, seg);
    });
}

/// Packs columns `n0 .. n0 + nlen` of an im2col B ([`crate::im2col_b`]) for the k sub-ranges
/// `ranges` (total `quads` quads): the same bytes as [`pack_b`] of the materialised matrix.
///
/// * B the column matrix: whole strips of one example go through one masked 32-byte load per
///   tap (AVX-512). Two strips per 64-byte load, interleaved as `b_rows` does, were slower
///   (`lowprec bench train preresnet20-cifar --batch 128 --precision bfp8` shows it).
/// * B = `col^T` (rows are pixels, columns taps: the weight gradient's operand): sixteen taps
///   at a time go through [`pack_b_cols`]'s 16x16 dword transpose, each tap's 64 pixels one
///   masked load from its shifted plane (maps of whole 64-pixel blocks, ranges starting on
///   one).
///
/// On AVX2 ([`Isa::Avx2Quad`], unbiased): whole strips of the column matrix take each row as
/// one 32-byte load ANDed with the tap's byte mask; `col^T` takes eight taps at a time, each
/// tap's 32 pixels one such load, through the 8x8 dword transpose.
///
/// The rest goes through [`crate::im2col_b::Im2colRef::at`].
pub(crate) fn pack_b_im2col(
    isa: Isa,
    plan: &Im2colPlan<'_>,
    n0: usize,
    nlen: usize,
    ranges: &[(usize, usize)],
    quads: usize,
    out: &mut [u8],
) {
    let strip_len = quads * NR * 4;
    let out = &mut out[..nlen.div_ceil(NR) * strip_len];
    let (src, t) = (&plan.src, plan.transposed);
    let strips_fast = vnni(isa) && plan.strips && !t && n0.is_multiple_of(NR);
    let blocks_fast = vnni(isa) && plan.strips && t && (src.h * src.w).is_multiple_of(64);
    let bytes_fast = maddubs(isa) && !plan.bytes32.is_empty() && !t && n0.is_multiple_of(NR);
    let tbytes_fast = maddubs(isa) && !plan.bytes32.is_empty() && t;
    let flip = b_flip(isa.or_supported());
    // B's element `(k, column)`, by the definition.
    let at = |k: usize, n: usize| if t { src.at(n, k) } else { src.at(k, n) };
    let segs = crate::pack::Segments {
        nr: NR,
        ku: 4,
        n0,
        nlen,
        ranges,
    };
    segs.walk(out, 0, |n, valid, k0, k1, seg: &mut [u8]| {
        // Columns the fast paths packed.
        let mut c = 0;
        if strips_fast && valid == NR {
            // SAFETY: the VNNI family implies AVX-512 F/BW/VL; `n` starts a strip inside
            // one example (`plan.strips`, `n0 % NR == 0`), rows `k0..k1` are the plan's.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                avx512::im2col_strip(plan, n, k0, k1, seg)
            };
            c = NR;
        }
        if bytes_fast && valid == NR {
            // SAFETY: AVX2 is present (the family's requirement); `bytes32` exists, so the
            // strip `n .. n + 32` (`n0 % NR == 0`) lies inside one example; rows `k0..k1` are
            // the plan's; `seg` holds the strip's quads of `k0..k1`.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                avx2::im2col_strip(plan, n, k0, k1, seg)
            };
            c = NR;
        }
        if blocks_fast && k0.is_multiple_of(64) {
            while valid - c >= 16 {
                let blocks = (k1 - k0) / 64;
                // SAFETY: the VNNI family implies AVX-512 F/BW/VL; taps `n + c ..` and
                // the 64-pixel blocks from `k0` lie in the matrix, each block inside one
                // example (`h * w % 64 == 0`, `k0 % 64 == 0`); `seg` holds the strip's
                // quads of `k0..k1` (asserted).
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    avx512::im2col_t_lines(plan, n + c, k0, blocks, c, seg)
                };
                let (ks, tail) = (k0 + 64 * blocks, &mut seg[16 * blocks * NR * 4..]);
                pack_b_generic_cols(flip, at, n, c, c + 16, ks, k1, tail);
                c += 16;
            }
        }
        if tbytes_fast && k0.is_multiple_of(32) {
            while valid - c >= 8 {
                let blocks = (k1 - k0) / 32;
                // SAFETY: AVX2 is present (the family's requirement); `bytes32` exists, so
                // `h * w % 32 == 0` and each 32-pixel block from `k0` (`k0 % 32 == 0`) lies
                // inside one example; taps `n + c ..` and the blocks lie in the matrix; `seg`
                // holds the strip's quads of `k0..k1` (asserted).
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    avx2::im2col_t_lines(plan, n + c, k0, blocks, c, seg)
                };
                let (ks, tail) = (k0 + 32 * blocks, &mut seg[8 * blocks * NR * 4..]);
                pack_b_generic_cols(flip, at, n, c, c + 8, ks, k1, tail);
                c += 8;
            }
        }
        pack_b_generic_cols(flip, at, n, c, valid, k0, k1, seg);
        pad_b_cols(flip, valid, seg);
    });
}

/// Column-contiguous B (a transposed view, the weight gradient's `col^T`): strip columns
/// `c0 .. c1` (matrix columns `n + c`, all inside the matrix), rows `k0 .. k1`, into `seg` (the
/// strip's quads from `k0`). Each column's quads are dwords: 16 columns at a time go through a
/// 16x16 dword transpose (AVX-512, `wide`), 8 through the 8x8 one (AVX2), the rest and the k
/// tails through the portable loop; `flip` as [`b_flip`]. Only for the families with AVX2 (the
/// caller checks), `wide` only for the VNNI one.
#[allow(clippy::too_many_arguments)]
fn pack_b_cols(
    wide: bool,
    flip: u8,
    b: &MatRef<'_, i8>,
    n: usize,
    c0: usize,
    c1: usize,
    k0: usize,
    k1: usize,
    seg: &mut [u8],
) {
    let cs = b.col_stride;
    let mut c = c0;
    for width in [16, 8] {
        while c1 - c >= width && (wide || width == 8) {
            let base = (n + c) * cs + k0;
            // SAFETY: columns n+c .. n+c+width, rows k0..k1 lie in the view (checked by the
            // caller's `MatRef::check`; the transposers assert their reads); `wide` is only
            // set for the VNNI family (AVX-512 F/BW), and both families have AVX2.
            let done = unsafe {
                if width == 16 {
                    avx512::transpose16_lines(b.data, base, cs, k1 - k0, NR, c, seg, flip)
                } else {
                    avx2::transpose_lines(b.data, base, cs, k1 - k0, NR, c, seg, flip)
                }
            };
            let q = done / 4;
            let tail = &mut seg[q * NR * 4..];
            let at = |k, c| b.at(k, c);
            pack_b_generic_cols(flip, at, n, c, c + width, k0 + done, k1, tail);
            c += width;
        }
    }
    pack_b_generic_cols(flip, |k, c| b.at(k, c), n, c, c1, k0, k1, seg);
}

/// Portable packing of strip columns `ca .. cb` (all inside the matrix), rows `k0 .. k1`, into
/// `seg` from its first quad; `at(k, column)` is B's element, stored XORed with `flip`.
#[allow(clippy::too_many_arguments)]
fn pack_b_generic_cols(
    flip: u8,
    at: impl Fn(usize, usize) -> i8,
    n: usize,
    ca: usize,
    cb: usize,
    k0: usize,
    k1: usize,
    seg: &mut [u8],
) {
    for q in 0..(k1.saturating_sub(k0)).div_ceil(4) {
        for c in ca..cb {
            for h in 0..4 {
                let k = k0 + 4 * q + h;
                let v = if k < k1 { at(k, n + c) } else { 0 };
                seg[(q * NR + c) * 4 + h] = (v as u8) ^ flip;
            }
        }
    }
}

/// Fills strip columns `valid .. NR` of every quad of `seg` with the pad byte `flip` (b = 0).
fn pad_b_cols(flip: u8, valid: usize, seg: &mut [u8]) {
    if valid < NR {
        for quad in seg.chunks_exact_mut(NR * 4) {
            quad[valid * 4..].fill(flip);
        }
    }
}

/// `tile = (first ? 0 : tile) + sum_{q < kq} A~[q] (x) B~[q]` for one `MR x NR` tile, exact
/// (wrapping) i32; `sums` holds the piece's `MR` row sums of A (0 for unbiased panels, which
/// the AVX2 kernel does not read). Only the first `cols` columns (`1..=NR`) of the tile are
/// defined afterwards: a kernel may skip the columns past them (the AVX2 one skips the second
/// half of a strip with at most 16 valid columns), so their tile values are unspecified.
///
/// # Safety
/// `a` must hold `kq * MR * 4` readable bytes, `b` `kq * NR * 4`, `sums` `MR` values, and
/// `tile` `TILE` writable values; `isa` must be supported by this CPU.
#[inline]
#[allow(clippy::too_many_arguments)]
pub unsafe fn run(
    isa: Isa,
    kq: usize,
    a: *const i8,
    sums: *const i32,
    b: *const u8,
    tile: *mut i32,
    first: bool,
    cols: usize,
) {
    #[cfg(target_arch = "x86_64")]
    match isa {
        Isa::Avx512Vnni => return avx512::kernel(kq, a, sums, b, tile, first),
        Isa::Avx2Quad => return avx2::kernel(kq, a, b, tile, first, cols),
        _ => {}
    }
    let _ = cols;
    generic(kq, a, sums, b, tile, first)
}

/// Portable microkernel (same contract as [`run`]).
///
/// # Safety
/// See [`run`].
pub unsafe fn generic(
    kq: usize,
    a: *const i8,
    sums: *const i32,
    b: *const u8,
    tile: *mut i32,
    first: bool,
) {
    let a = std::slice::from_raw_parts(a, kq * MR * 4);
    let b = std::slice::from_raw_parts(b, kq * NR * 4);
    let sums = std::slice::from_raw_parts(sums, MR);
    let tile = std::slice::from_raw_parts_mut(tile, TILE);
    for r in 0..MR {
        for c in 0..NR {
            let mut acc = if first { 0i32 } else { tile[r * NR + c] };
            acc = acc.wrapping_sub(sums[r].wrapping_mul(128));
            for q in 0..kq {
                for h in 0..4 {
                    let p = (a[(q * MR + r) * 4 + h] as i32) * (b[(q * NR + c) * 4 + h] as i32);
                    acc = acc.wrapping_add(p);
                }
            }
            tile[r * NR + c] = acc;
        }
    }
}

/// One whole chunk for a full tile, fused with its epilogue:
/// `C[r, c] = (C or 0.0) + ((acc[r, c] as f32) * sa[r]) * sb[c]`.
///
/// # Safety
/// As [`run`] for the panels; `c` must address a `rows x NR` block (`rows <= MR`: the first
/// rows of the tile) with leading dimension `ldc`; `sa` holds at least `MR` and `sb` at least
/// `NR` scales.
#[inline]
#[allow(clippy::too_many_arguments)]
pub unsafe fn run_q(
    isa: Isa,
    kq: usize,
    a: *const i8,
    sums: *const i32,
    b: *const u8,
    c: *mut f32,
    ldc: usize,
    sa: &[f32],
    sb: &[f32],
    mode: Store,
    rows: usize,
) {
    let rows = rows.min(MR);
    #[cfg(target_arch = "x86_64")]
    match isa {
        Isa::Avx512Vnni => return avx512::kernel_q(kq, a, sums, b, c, ldc, sa, sb, mode, rows),
        Isa::Avx2Quad => return avx2::kernel_q(kq, a, b, c, ldc, sa, sb, mode, rows),
        _ => {}
    }
    let mut tile = [0i32; TILE];
    generic(kq, a, sums, b, tile.as_mut_ptr(), true);
    crate::ukernel::store_tile(&tile, rows, NR, c, ldc, sa, sb, mode);
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Im2colPlan, Store, MR, NR};
    use std::arch::x86_64::*;

    /// Four rows of 32 columns (`x0..x3`, one byte per column) as the 128 bytes of one quad
    /// of a strip: column `c`'s four bytes at `4 * c`. Bytes then words are interleaved within
    /// 128-bit lanes, then the lanes regrouped.
    ///
    /// # Safety
    /// AVX2 must be present (the caller's target features); `o` must have room for 128 bytes.
    #[inline(always)]
    pub(super) unsafe fn interleave4(
        x0: __m256i,
        x1: __m256i,
        x2: __m256i,
        x3: __m256i,
        o: *mut u8,
    ) {
        let t0 = _mm256_unpacklo_epi8(x0, x1);
        let t1 = _mm256_unpackhi_epi8(x0, x1);
        let t2 = _mm256_unpacklo_epi8(x2, x3);
        let t3 = _mm256_unpackhi_epi8(x2, x3);
        let u0 = _mm256_unpacklo_epi16(t0, t2); // columns 0..4 | 16..20
        let u1 = _mm256_unpackhi_epi16(t0, t2); // 4..8 | 20..24
        let u2 = _mm256_unpacklo_epi16(t1, t3); // 8..12 | 24..28
        let u3 = _mm256_unpackhi_epi16(t1, t3); // 12..16 | 28..32
        let o = o as *mut __m256i;
        _mm256_storeu_si256(o, _mm256_permute2x128_si256::<0x20>(u0, u1));
        _mm256_storeu_si256(o.add(1), _mm256_permute2x128_si256::<0x20>(u2, u3));
        _mm256_storeu_si256(o.add(2), _mm256_permute2x128_si256::<0x31>(u0, u1));
        _mm256_storeu_si256(o.add(3), _mm256_permute2x128_si256::<0x31>(u2, u3));
    }

    /// Row-contiguous B, unbiased, all `full` strips: each quad of rows is read once in order
    /// (rows past `k1` read as 0), 32 columns per strip, through [`interleave4`].
    ///
    /// # Safety
    /// Rows `k0..k1` at columns `n0 .. n0 + 32 * full` must be readable; `out` must have room
    /// for `full` strips of `strip_len` bytes, each holding the quads of `k0..k1` from its start;
    /// AVX2 must be present.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn b_rows(
        data: *const i8,
        row_stride: usize,
        n0: usize,
        full: usize,
        k0: usize,
        k1: usize,
        out: *mut u8,
        strip_len: usize,
    ) {
        let (mut k, mut q) = (k0, 0);
        while k < k1 {
            let row = |h: usize| (k + h < k1).then(|| data.add((k + h) * row_stride + n0));
            let rows = [row(0), row(1), row(2), row(3)];
            for j in 0..full {
                let mut x = [_mm256_setzero_si256(); 4];
                for (xh, r) in x.iter_mut().zip(rows) {
                    if let Some(p) = r {
                        *xh = _mm256_loadu_si256(p.add(32 * j) as *const __m256i);
                    }
                }
                let o = out.add(j * strip_len + q * 128);
                interleave4(x[0], x[1], x[2], x[3], o);
            }
            k += 4;
            q += 1;
        }
    }

    /// Row-contiguous B, unbiased, one strip of `valid < 32` columns from `n`: each row's
    /// `valid` bytes copied into a zeroed 32-byte line (the pad columns are 0), then as
    /// [`b_rows`].
    ///
    /// # Safety
    /// Rows `k0..k1` at columns `n .. n + valid` must be readable, `valid <= 32`; `out` must
    /// hold the strip's quads of `k0..k1`; AVX2 must be present.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn b_rows_tail(
        data: *const i8,
        row_stride: usize,
        n: usize,
        valid: usize,
        k0: usize,
        k1: usize,
        out: *mut u8,
    ) {
        let (mut k, mut q) = (k0, 0);
        while k < k1 {
            let mut x = [_mm256_setzero_si256(); 4];
            for (h, xh) in x.iter_mut().enumerate() {
                if k + h < k1 {
                    let mut line = [0i8; 32];
                    let src = data.add((k + h) * row_stride + n);
                    std::ptr::copy_nonoverlapping(src, line.as_mut_ptr(), valid);
                    *xh = _mm256_loadu_si256(line.as_ptr() as *const __m256i);
                }
            }
            interleave4(x[0], x[1], x[2], x[3], out.add(q * 128));
            k += 4;
            q += 1;
        }
    }

    /// One strip (32 columns `n ..` inside one example) of an im2col B, unbiased, rows
    /// `k0 .. k1`: each row's 32 bytes are one load from its shifted plane ANDed with the tap's
    /// border mask (`plan.bytes32`); a row whose 32 bytes would reach past either end of the
    /// maps goes through the definition. Rows past `k1` are 0.
    ///
    /// # Safety
    /// AVX2 must be present; `plan.bytes32` must be non-empty (`h * w % 32 == 0`, not
    /// transposed); `n % 32 == 0` and `n + 32 <=` the matrix's columns; `k1` at most its rows;
    /// `seg` must hold the quads of `k0..k1` (asserted).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn im2col_strip(
        plan: &Im2colPlan<'_>,
        n: usize,
        k0: usize,
        k1: usize,
        seg: &mut [u8],
    ) {
        let src = &plan.src;
        let hw = src.h * src.w;
        assert!(n / hw < src.examples && k1 <= plan.row_offset.len());
        assert!(seg.len() >= (k1 - k0).div_ceil(4) * 128);
        check_masks(plan);
        for q in 0..(k1 - k0).div_ceil(4) {
            let k = k0 + 4 * q;
            let mut x = [_mm256_setzero_si256(); 4];
            for (h, xh) in x.iter_mut().enumerate().filter(|(h, _)| k + h < k1) {
                // SAFETY: AVX2 is present; `k + h < k1` is a row of the plan (asserted); the
                // masks were checked; `n .. n + 32` lie in one example (the contract).
                *xh = masked_row(plan, n, k + h);
            }
            interleave4(x[0], x[1], x[2], x[3], seg.as_mut_ptr().add(q * 128));
        }
    }

    /// Asserts that `plan.bytes32` holds every tap's masks (every row's tap is below `k * k`,
    /// see `Im2colPlan::new`), which [`masked_row`] relies on.
    fn check_masks(plan: &Im2colPlan<'_>) {
        let src = &plan.src;
        assert!(plan.bytes32.len() == src.k * src.k * (src.h * src.w / 32) * 32);
    }

    /// Row `k` of the column matrix at the 32 columns `n ..` (one example's 32-pixel strip):
    /// one load from the tap's shifted plane ANDed with its border mask, or the definition
    /// where the 32 bytes would reach past either end of the maps.
    ///
    /// # Safety
    /// AVX2 must be present; `k` a row of the plan; `plan.bytes32` as [`check_masks`] asserts;
    /// `n % 32 == 0` and `n + 32` at most the matrix's columns.
    #[inline(always)]
    unsafe fn masked_row(plan: &Im2colPlan<'_>, n: usize, k: usize) -> __m256i {
        let src = &plan.src;
        let hw = src.h * src.w;
        let (e, p0) = (n / hw, n % hw);
        let tap = *plan.row_tap.get_unchecked(k);
        let m = plan.bytes32.as_ptr().add((tap * (hw / 32) + p0 / 32) * 32);
        let at = (e * src.channels * hw + p0) as isize + *plan.row_offset.get_unchecked(k);
        if at >= 0 && at + 32 <= src.maps.len() as isize {
            let x = _mm256_loadu_si256(src.maps.as_ptr().offset(at) as *const __m256i);
            _mm256_and_si256(x, _mm256_loadu_si256(m as *const __m256i))
        } else {
            edge_row(plan, k, n)
        }
    }

    /// Row `k` of the column matrix at columns `n .. n + 32`, by the definition (for loads that
    /// would reach past either end of the maps).
    ///
    /// # Safety
    /// AVX2 must be present.
    #[cold]
    #[inline(never)]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn edge_row(plan: &Im2colPlan<'_>, k: usize, n: usize) -> __m256i {
        let mut b = [0i8; 32];
        for (i, v) in b.iter_mut().enumerate() {
            *v = plan.src.at(k, n + i);
        }
        _mm256_loadu_si256(b.as_ptr() as *const __m256i)
    }

    /// Eight taps `r0 .. r0 + 8` of a transposed im2col B (`col^T`, see
    /// [`super::pack_b_im2col`]), unbiased, over `blocks` blocks of 32 pixels from `px0`, into
    /// strip columns `col ..` of `seg`: each tap's block is one 32-byte load from its shifted
    /// plane ANDed with the tap's border mask (`plan.bytes32`; a load that would reach past
    /// either end of the maps goes through the definition), then the 8x8 dword transpose.
    ///
    /// # Safety
    /// AVX2 must be present; `plan.bytes32` must be non-empty (`h * w % 32 == 0`); taps,
    /// pixels and `seg` are asserted.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn im2col_t_lines(
        plan: &Im2colPlan<'_>,
        r0: usize,
        px0: usize,
        blocks: usize,
        col: usize,
        seg: &mut [u8],
    ) {
        assert!(col + 8 <= NR && r0 + 8 <= plan.row_offset.len());
        assert!(px0.is_multiple_of(32) && px0 + 32 * blocks <= plan.src.cols());
        assert!(seg.len() >= blocks * 8 * NR * 4);
        check_masks(plan);
        let dst = seg.as_mut_ptr();
        for t in 0..blocks {
            let px = px0 + 32 * t;
            let mut v = [_mm256_setzero_si256(); 8];
            for (i, vi) in v.iter_mut().enumerate() {
                // SAFETY: AVX2 is present; tap `r0 + i` is a row of the plan and the block
                // `px .. px + 32` lies in one example (asserted, `h * w % 32 == 0`); the
                // masks were checked.
                *vi = masked_row(plan, px, r0 + i);
            }
            for (q, o) in transpose8(v).iter().enumerate() {
                let at = ((8 * t + q) * NR + col) * 4;
                _mm256_storeu_si256(dst.add(at) as *mut __m256i, *o);
            }
        }
    }

    /// Adds `kq` quads of the 4x16 piece of the tile at rows `4 * rh ..`, columns `16 * ch ..`
    /// to `acc` (row `r`, half `h` at `acc[2 * r + h]`): per quad 2 B loads, 4 broadcasts and 8
    /// `vpmaddubsw` (u8 B x s8 A, exact pair sums: the family checks their bound) each widened
    /// by `vpmaddwd` with ones and added.
    #[inline(always)]
    unsafe fn piece(
        kq: usize,
        a: *const i8,
        b: *const u8,
        rh: usize,
        ch: usize,
        mut acc: [__m256i; 8],
    ) -> [__m256i; 8] {
        let ones = _mm256_set1_epi16(1);
        let (mut a, mut b) = (a.add(16 * rh), b.add(64 * ch));
        for _ in 0..kq {
            let b0 = _mm256_loadu_si256(b as *const __m256i);
            let b1 = _mm256_loadu_si256(b.add(32) as *const __m256i);
            for r in 0..4 {
                let x = _mm256_set1_epi32((a.add(4 * r) as *const i32).read_unaligned());
                let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(b0, x), ones);
                let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(b1, x), ones);
                acc[2 * r] = _mm256_add_epi32(acc[2 * r], p0);
                acc[2 * r + 1] = _mm256_add_epi32(acc[2 * r + 1], p1);
            }
            a = a.add(MR * 4);
            b = b.add(NR * 4);
        }
        acc
    }

    /// The pieces of the 8x32 tile, in the order [`kernel`] and [`kernel_q`] visit them.
    const PIECES: [(usize, usize); 4] = [(0, 0), (0, 1), (1, 0), (1, 1)];

    /// The tile kernel of [`super::run`] for unbiased panels (no row sums); the column half
    /// past `cols` valid columns is not computed.
    ///
    /// # Safety
    /// As [`super::run`]; AVX2 must be present.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn kernel(
        kq: usize,
        a: *const i8,
        b: *const u8,
        tile: *mut i32,
        first: bool,
        cols: usize,
    ) {
        for (rh, ch) in PIECES {
            if 16 * ch >= cols {
                continue;
            }
            let at = |r: usize, h: usize| tile.add((4 * rh + r) * NR + 16 * ch + 8 * h);
            let acc: [__m256i; 8] = std::array::from_fn(|i| {
                if first {
                    _mm256_setzero_si256()
                } else {
                    _mm256_loadu_si256(at(i / 2, i % 2) as *const __m256i)
                }
            });
            let acc = piece(kq, a, b, rh, ch, acc);
            for (i, v) in acc.iter().enumerate() {
                _mm256_storeu_si256(at(i / 2, i % 2) as *mut __m256i, *v);
            }
        }
    }

    /// A whole chunk straight into C (see [`super::run_q`]), unbiased panels.
    ///
    /// # Safety
    /// As [`super::run_q`]; AVX2 must be present.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn kernel_q(
        kq: usize,
        a: *const i8,
        b: *const u8,
        c: *mut f32,
        ldc: usize,
        sa: &[f32],
        sb: &[f32],
        mode: Store,
        rows: usize,
    ) {
        assert!(sa.len() >= MR && sb.len() >= NR);
        for (rh, ch) in PIECES {
            if 4 * rh >= rows {
                continue;
            }
            let acc = piece(kq, a, b, rh, ch, [_mm256_setzero_si256(); 8]);
            let sbv = [0, 1].map(|h| _mm256_loadu_ps(sb.as_ptr().add(16 * ch + 8 * h)));
            for r in 0..4.min(rows - 4 * rh) {
                let s = _mm256_set1_ps(sa[4 * rh + r]);
                for h in 0..2 {
                    let dst = c.add((4 * rh + r) * ldc + 16 * ch + 8 * h);
                    let t = _mm256_cvtepi32_ps(acc[2 * r + h]);
                    let t = _mm256_mul_ps(_mm256_mul_ps(t, s), sbv[h]);
                    // `0.0 + t` when overwriting: the semantics start from 0.0, which turns
                    // -0.0 into +0.0.
                    let base = match mode {
                        Store::Accumulate => _mm256_loadu_ps(dst),
                        Store::Overwrite => _mm256_setzero_ps(),
                    };
                    _mm256_storeu_ps(dst, _mm256_add_ps(base, t));
                }
            }
        }
    }

    /// Transposes an 8x8 block of dwords: lane `i` of `out[q]` is lane `q` of `v[i]`.
    #[inline(always)]
    unsafe fn transpose8(v: [__m256i; 8]) -> [__m256i; 8] {
        let t0 = _mm256_unpacklo_epi32(v[0], v[1]);
        let t1 = _mm256_unpackhi_epi32(v[0], v[1]);
        let t2 = _mm256_unpacklo_epi32(v[2], v[3]);
        let t3 = _mm256_unpackhi_epi32(v[2], v[3]);
        let t4 = _mm256_unpacklo_epi32(v[4], v[5]);
        let t5 = _mm256_unpackhi_epi32(v[4], v[5]);
        let t6 = _mm256_unpacklo_epi32(v[6], v[7]);
        let t7 = _mm256_unpackhi_epi32(v[6], v[7]);
        let u0 = _mm256_unpacklo_epi64(t0, t2);
        let u1 = _mm256_unpackhi_epi64(t0, t2);
        let u2 = _mm256_unpacklo_epi64(t1, t3);
        let u3 = _mm256_unpackhi_epi64(t1, t3);
        let u4 = _mm256_unpacklo_epi64(t4, t6);
        let u5 = _mm256_unpackhi_epi64(t4, t6);
        let u6 = _mm256_unpacklo_epi64(t5, t7);
        let u7 = _mm256_unpackhi_epi64(t5, t7);
        [
            _mm256_permute2x128_si256(u0, u4, 0x20),
            _mm256_permute2x128_si256(u1, u5, 0x20),
            _mm256_permute2x128_si256(u2, u6, 0x20),
            _mm256_permute2x128_si256(u3, u7, 0x20),
            _mm256_permute2x128_si256(u0, u4, 0x31),
            _mm256_permute2x128_si256(u1, u5, 0x31),
            _mm256_permute2x128_si256(u2, u6, 0x31),
            _mm256_permute2x128_si256(u3, u7, 0x31),
        ]
    }

    /// Quad-major packing of 8 k-contiguous lines (8 rows of A, or 8 columns of a B strip),
    /// line `i` starting at `data[base + i * stride]`: for every whole block of 32 k (8 quads),
    /// quad `q` of line `i` goes to `out[(q * width + col + i) * 4 ..]`, XORed with `flip`.
    /// Returns how many k it packed (the rest is the portable packer's).
    ///
    /// # Safety
    /// AVX2 must be present (the bounds are asserted).
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn transpose_lines(
        data: &[i8],
        base: usize,
        stride: usize,
        klen: usize,
        width: usize,
        col: usize,
        out: &mut [u8],
        flip: u8,
    ) -> usize {
        let blocks = klen / 32;
        if blocks == 0 {
            return 0;
        }
        assert!(col + 8 <= width);
        assert!(base + 7 * stride + blocks * 32 <= data.len());
        assert!(out.len() >= blocks * 8 * width * 4);
        let (src, dst) = (data.as_ptr().add(base), out.as_mut_ptr());
        let fl = _mm256_set1_epi8(flip as i8);
        for t in 0..blocks {
            let v: [__m256i; 8] = std::array::from_fn(|i| {
                _mm256_loadu_si256(src.add(i * stride + 32 * t) as *const __m256i)
            });
            for (q, o) in transpose8(v).iter().enumerate() {
                let at = ((8 * t + q) * width + col) * 4;
                _mm256_storeu_si256(dst.add(at) as *mut __m256i, _mm256_xor_si256(*o, fl));
            }
        }
        blocks * 32
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Im2colPlan, Store, MR, NR};
    use std::arch::x86_64::*;

    /// Runs `kq` quads of the 8x32 tile on the accumulators (row `r`, half `h` at
    /// `acc[2 * r + h]`): per quad 2 B loads, 8 broadcasts, 16 `vpdpbusd`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn accumulate(
        kq: usize,
        a: *const i8,
        b: *const u8,
        acc: [__m512i; 16],
    ) -> [__m512i; 16] {
        let [mut c0, mut c1, mut c2, mut c3, mut c4, mut c5, mut c6, mut c7, mut c8, mut c9, mut c10, mut c11, mut c12, mut c13, mut c14, mut c15] =
            acc;
        // The k loop in assembly, as for the AVX2 kernel: the accumulators stay in zmm16..31,
        // the B vectors in zmm0/1 and the row broadcasts in zmm2..9.
        // One quad: the two B vectors, then each row's broadcast dword against both.
        // `$q` is the quad's index inside a 4-quad step (byte offsets 32q into A~, 128q into B~).
        macro_rules! quad {
            ($q:literal) => {
                concat!(
                    "vmovdqu64 zmm0, zmmword ptr [{b} + 128*",
                    $q,
                    "]\n",
                    "vmovdqu64 zmm1, zmmword ptr [{b} + 128*",
                    $q,
                    " + 64]\n",
                    "vpbroadcastd zmm2, dword ptr [{a} + 32*",
                    $q,
                    "]\n",
                    "vpdpbusd zmm16, zmm0, zmm2\n",
                    "vpdpbusd zmm17, zmm1, zmm2\n",
                    "vpbroadcastd zmm3, dword ptr [{a} + 32*",
                    $q,
                    " + 4]\n",
                    "vpdpbusd zmm18, zmm0, zmm3\n",
                    "vpdpbusd zmm19, zmm1, zmm3\n",
                    "vpbroadcastd zmm4, dword ptr [{a} + 32*",
                    $q,
                    " + 8]\n",
                    "vpdpbusd zmm20, zmm0, zmm4\n",
                    "vpdpbusd zmm21, zmm1, zmm4\n",
                    "vpbroadcastd zmm5, dword ptr [{a} + 32*",
                    $q,
                    " + 12]\n",
                    "vpdpbusd zmm22, zmm0, zmm5\n",
                    "vpdpbusd zmm23, zmm1, zmm5\n",
                    "vpbroadcastd zmm6, dword ptr [{a} + 32*",
                    $q,
                    " + 16]\n",
                    "vpdpbusd zmm24, zmm0, zmm6\n",
                    "vpdpbusd zmm25, zmm1, zmm6\n",
                    "vpbroadcastd zmm7, dword ptr [{a} + 32*",
                    $q,
                    " + 20]\n",
                    "vpdpbusd zmm26, zmm0, zmm7\n",
                    "vpdpbusd zmm27, zmm1, zmm7\n",
                    "vpbroadcastd zmm8, dword ptr [{a} + 32*",
                    $q,
                    " + 24]\n",
                    "vpdpbusd zmm28, zmm0, zmm8\n",
                    "vpdpbusd zmm29, zmm1, zmm8\n",
                    "vpbroadcastd zmm9, dword ptr [{a} + 32*",
                    $q,
                    " + 28]\n",
                    "vpdpbusd zmm30, zmm0, zmm9\n",
                    "vpdpbusd zmm31, zmm1, zmm9\n",
                )
            };
        }
        std::arch::asm!(
            "cmp {n}, 4",
            "jb 3f",
            "2:",
            quad!("0"),
            quad!("1"),
            quad!("2"),
            quad!("3"),
            "add {a}, 128",
            "add {b}, 512",
            "sub {n}, 4",
            "cmp {n}, 4",
            "jae 2b",
            "3:",
            "test {n}, {n}",
            "jz 5f",
            "4:",
            quad!("0"),
            "add {a}, 32",
            "add {b}, 128",
            "dec {n}",
            "jnz 4b",
            "5:",
            a = inout(reg) a => _,
            b = inout(reg) b => _,
            n = inout(reg) kq => _,
            out("zmm0") _,
            out("zmm1") _,
            out("zmm2") _,
            out("zmm3") _,
            out("zmm4") _,
            out("zmm5") _,
            out("zmm6") _,
            out("zmm7") _,
            out("zmm8") _,
            out("zmm9") _,
            inout("zmm16") c0,
            inout("zmm17") c1,
            inout("zmm18") c2,
            inout("zmm19") c3,
            inout("zmm20") c4,
            inout("zmm21") c5,
            inout("zmm22") c6,
            inout("zmm23") c7,
            inout("zmm24") c8,
            inout("zmm25") c9,
            inout("zmm26") c10,
            inout("zmm27") c11,
            inout("zmm28") c12,
            inout("zmm29") c13,
            inout("zmm30") c14,
            inout("zmm31") c15,
            options(nostack, readonly),
        );
        [
            c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15,
        ]
    }

    /// The accumulators' start: `-128 * sums[r]` (wrapping), plus the tile when continuing.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn start(sums: *const i32, tile: Option<*const i32>) -> [__m512i; 16] {
        // A plain loop over a local array: a `from_fn` closure here was not inlined, a large
        // cost on skinny GEMMs.
        let mut acc = [_mm512_setzero_si512(); 16];
        for r in 0..MR {
            let corr = _mm512_set1_epi32((*sums.add(r)).wrapping_mul(-128));
            for h in 0..2 {
                let i = 2 * r + h;
                acc[i] = match tile {
                    Some(t) => {
                        _mm512_add_epi32(_mm512_loadu_si512(t.add(16 * i) as *const _), corr)
                    }
                    None => corr,
                };
            }
        }
        acc
    }

    /// Row-contiguous B, all `full` strips: each quad of rows is read once, 64 columns (two
    /// strips) at a time, the four rows interleaved byte-wise in 128-bit lanes (`b ^ 0x80`;
    /// rows past `k1` read as 0), then the lanes regrouped per strip with `vshufi32x4`. An odd
    /// last strip is loaded as 32 bytes, zero-extended, and only its strip stored.
    ///
    /// # Safety
    /// Rows `k0..k1` at columns `n0 .. n0 + 32 * full` must be readable; `out` must have room
    /// for `full` strips of `strip_len` bytes, each holding the quads of `k0..k1` from its start;
    /// AVX-512 F/BW must be present.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn b_rows(
        data: *const i8,
        row_stride: usize,
        n0: usize,
        full: usize,
        k0: usize,
        k1: usize,
        out: *mut u8,
        strip_len: usize,
    ) {
        let fl = _mm512_set1_epi8(0x80u8 as i8);
        let (mut k, mut q) = (k0, 0);
        while k < k1 {
            let row = |h: usize| (k + h < k1).then(|| data.add((k + h) * row_stride + n0));
            let rows = [row(0), row(1), row(2), row(3)];
            for j in 0..full.div_ceil(2) {
                let both = 2 * j + 1 < full;
                let ld = |r: Option<*const i8>| {
                    let v = match r {
                        Some(p) if both => _mm512_loadu_si512(p.add(64 * j) as *const _),
                        Some(p) => _mm512_zextsi256_si512(_mm256_loadu_si256(
                            p.add(64 * j) as *const __m256i
                        )),
                        None => _mm512_setzero_si512(),
                    };
                    _mm512_xor_si512(v, fl)
                };
                let (x0, x1, x2, x3) = (ld(rows[0]), ld(rows[1]), ld(rows[2]), ld(rows[3]));
                let t0 = _mm512_unpacklo_epi8(x0, x1);
                let t1 = _mm512_unpackhi_epi8(x0, x1);
                let t2 = _mm512_unpacklo_epi8(x2, x3);
                let t3 = _mm512_unpackhi_epi8(x2, x3);
                // In 128-bit lane L (columns 16L..16L+16): u0 columns 16L+0..4, u1 4..8,
                // u2 8..12, u3 12..16, one dword per column.
                let u0 = _mm512_unpacklo_epi16(t0, t2);
                let u1 = _mm512_unpackhi_epi16(t0, t2);
                let u2 = _mm512_unpacklo_epi16(t1, t3);
                let u3 = _mm512_unpackhi_epi16(t1, t3);
                let a = _mm512_shuffle_i32x4::<0b10_00_10_00>(u0, u1); // u0.L0 u0.L2 u1.L0 u1.L2
                let b = _mm512_shuffle_i32x4::<0b10_00_10_00>(u2, u3);
                let c = _mm512_shuffle_i32x4::<0b11_01_11_01>(u0, u1); // u0.L1 u0.L3 u1.L1 u1.L3
                let d = _mm512_shuffle_i32x4::<0b11_01_11_01>(u2, u3);
                // Strip 2j: columns 0..16 from lane 0, 16..32 from lane 1; strip 2j+1: lanes 2, 3.
                let s0 = out.add(2 * j * strip_len + q * 128);
                _mm512_storeu_si512(s0 as *mut _, _mm512_shuffle_i32x4::<0b10_00_10_00>(a, b));
                _mm512_storeu_si512(
                    s0.add(64) as *mut _,
                    _mm512_shuffle_i32x4::<0b10_00_10_00>(c, d),
                );
                if both {
                    let s1 = out.add((2 * j + 1) * strip_len + q * 128);
                    _mm512_storeu_si512(s1 as *mut _, _mm512_shuffle_i32x4::<0b11_01_11_01>(a, b));
                    _mm512_storeu_si512(
                        s1.add(64) as *mut _,
                        _mm512_shuffle_i32x4::<0b11_01_11_01>(c, d),
                    );
                }
            }
            k += 4;
            q += 1;
        }
    }

    /// One strip (32 columns `n ..` inside one example) of an im2col B, rows `k0 .. k1`:
    /// each row's 32 bytes are one masked load from its shifted plane (`plan.masks` zero the
    /// taps outside the plane, and masked-off bytes are never read), `b ^ 0x80`, then the
    /// four rows of a quad interleaved as in [`b_rows`]. Rows past `k1` are 0 (0x80 packed).
    ///
    /// # Safety
    /// AVX-512 F/BW/VL must be present; `n % 32 == 0` and `plan.strips`; `k1` at most the
    /// plan's rows; `seg` must hold the quads of `k0..k1` (asserted).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn im2col_strip(
        plan: &Im2colPlan<'_>,
        n: usize,
        k0: usize,
        k1: usize,
        seg: &mut [u8],
    ) {
        let src = &plan.src;
        let hw = src.h * src.w;
        let (e, p0) = (n / hw, n % hw);
        let (per, s) = (hw / 32, p0 / 32);
        assert!(e < src.examples && k1 <= plan.row_offset.len());
        let nq = (k1 - k0).div_ceil(4);
        assert!(seg.len() >= nq * 128);
        // The output pixel `p0` of example `e`, channel 0; a row adds its offset. Only lanes
        // whose tap lies inside the plane are read, so the pointer may point outside `maps`
        // for the others (hence `wrapping_offset`).
        let base = src.maps.as_ptr().wrapping_add(e * src.channels * hw + p0);
        let fl = _mm256_set1_epi8(0x80u8 as i8);
        let row = |k: usize| -> __m256i {
            if k >= k1 {
                return fl;
            }
            let mask = plan.masks[plan.row_tap[k] * per + s];
            let p = base.wrapping_offset(plan.row_offset[k]);
            _mm256_xor_si256(_mm256_maskz_loadu_epi8(mask, p), fl)
        };
        for q in 0..nq {
            let k = k0 + 4 * q;
            let (x0, x1, x2, x3) = (row(k), row(k + 1), row(k + 2), row(k + 3));
            super::avx2::interleave4(x0, x1, x2, x3, seg.as_mut_ptr().add(q * 128));
        }
    }

    /// [`super::avx2::transpose_lines`] for 16 lines and blocks of 64 k (16 quads): a 16x16
    /// dword transpose (unpacks within 128-bit lanes, then `vshufi32x4` across them).
    ///
    /// # Safety
    /// AVX-512 F/BW must be present (the bounds are asserted).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn transpose16_lines(
        data: &[i8],
        base: usize,
        stride: usize,
        klen: usize,
        width: usize,
        col: usize,
        out: &mut [u8],
        flip: u8,
    ) -> usize {
        let blocks = klen / 64;
        if blocks == 0 {
            return 0;
        }
        assert!(col + 16 <= width);
        assert!(base + 15 * stride + blocks * 64 <= data.len());
        assert!(out.len() >= blocks * 16 * width * 4);
        let src = data.as_ptr().add(base);
        let fl = _mm512_set1_epi8(flip as i8);
        transpose16_blocks(blocks, width, col, out.as_mut_ptr(), |i, t| {
            _mm512_xor_si512(
                _mm512_loadu_si512(src.add(i * stride + 64 * t) as *const _),
                fl,
            )
        });
        blocks * 64
    }

    /// The 16x16 dword transpose of [`transpose16_lines`] over `blocks` blocks of 16 lines x
    /// 64 bytes, line `i` of block `t` given by `load(i, t)` (already flipped): quad `4L + j`
    /// of the 16 lines goes to `dst + ((16 t + 4 L + j) * width + col) * 4`.
    ///
    /// # Safety
    /// AVX-512 F/BW must be present; `dst` must have room for `blocks * 16` quads of `width`
    /// columns.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    #[inline]
    unsafe fn transpose16_blocks(
        blocks: usize,
        width: usize,
        col: usize,
        dst: *mut u8,
        load: impl Fn(usize, usize) -> __m512i,
    ) {
        for t in 0..blocks {
            let mut v = [_mm512_setzero_si512(); 16];
            for (i, vi) in v.iter_mut().enumerate() {
                *vi = load(i, t);
            }
            // In each 128-bit lane L, u[4 * i + j] holds dword 4L + j of lines 4i .. 4i + 4.
            let mut u = [_mm512_setzero_si512(); 16];
            for i in 0..4 {
                let (v0, v1, v2, v3) = (v[4 * i], v[4 * i + 1], v[4 * i + 2], v[4 * i + 3]);
                let t0 = _mm512_unpacklo_epi32(v0, v1);
                let t1 = _mm512_unpackhi_epi32(v0, v1);
                let t2 = _mm512_unpacklo_epi32(v2, v3);
                let t3 = _mm512_unpackhi_epi32(v2, v3);
                u[4 * i] = _mm512_unpacklo_epi64(t0, t2);
                u[4 * i + 1] = _mm512_unpackhi_epi64(t0, t2);
                u[4 * i + 2] = _mm512_unpacklo_epi64(t1, t3);
                u[4 * i + 3] = _mm512_unpackhi_epi64(t1, t3);
            }
            for j in 0..4 {
                let x1 = _mm512_shuffle_i32x4::<0b10_00_10_00>(u[j], u[4 + j]);
                let x2 = _mm512_shuffle_i32x4::<0b11_01_11_01>(u[j], u[4 + j]);
                let y1 = _mm512_shuffle_i32x4::<0b10_00_10_00>(u[8 + j], u[12 + j]);
                let y2 = _mm512_shuffle_i32x4::<0b11_01_11_01>(u[8 + j], u[12 + j]);
                // Quad 4L + j of the 16 lines, for lanes L = 0, 1, 2, 3.
                let quads = [
                    _mm512_shuffle_i32x4::<0b10_00_10_00>(x1, y1),
                    _mm512_shuffle_i32x4::<0b10_00_10_00>(x2, y2),
                    _mm512_shuffle_i32x4::<0b11_01_11_01>(x1, y1),
                    _mm512_shuffle_i32x4::<0b11_01_11_01>(x2, y2),
                ];
                for (l, qv) in quads.iter().enumerate() {
                    let at = ((16 * t + 4 * l + j) * width + col) * 4;
                    _mm512_storeu_si512(dst.add(at) as *mut _, *qv);
                }
            }
        }
    }

    /// Sixteen taps `r0 .. r0 + 16` of a transposed im2col B (`col^T`, see
    /// [`super::pack_b_im2col`]) over `blocks` blocks of 64 pixels from `px0`, into strip
    /// columns `col ..` of `seg`: each tap's block is one masked 64-byte load from its shifted
    /// plane (masked-off bytes are never read), flipped, then [`transpose16_blocks`].
    ///
    /// # Safety
    /// AVX-512 F/BW/VL must be present; `plan.strips` with `h * w % 64 == 0` and
    /// `px0 % 64 == 0`; taps and pixels inside the matrix and `col + 16 <= NR` (asserted).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn im2col_t_lines(
        plan: &Im2colPlan<'_>,
        r0: usize,
        px0: usize,
        blocks: usize,
        col: usize,
        seg: &mut [u8],
    ) {
        let src = &plan.src;
        let hw = src.h * src.w;
        let per = hw / 32;
        assert!(col + 16 <= NR && r0 + 16 <= plan.row_offset.len());
        assert!(px0 + 64 * blocks <= src.cols() && seg.len() >= blocks * 16 * NR * 4);
        let fl = _mm512_set1_epi8(0x80u8 as i8);
        let maps = src.maps.as_ptr();
        transpose16_blocks(blocks, NR, col, seg.as_mut_ptr(), |i, t| {
            let (r, px) = (r0 + i, px0 + 64 * t);
            let (e, p0) = (px / hw, px % hw);
            let m = plan.row_tap[r] * per + p0 / 32;
            let mask = plan.masks[m] as u64 | (plan.masks[m + 1] as u64) << 32;
            // Only lanes whose tap lies inside the plane are read (`wrapping_*`: the others
            // may point outside `maps`).
            let p = maps
                .wrapping_add(e * src.channels * hw + p0)
                .wrapping_offset(plan.row_offset[r]);
            _mm512_xor_si512(_mm512_maskz_loadu_epi8(mask, p), fl)
        });
    }

    /// The tile kernel of [`super::run`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn kernel(
        kq: usize,
        a: *const i8,
        sums: *const i32,
        b: *const u8,
        tile: *mut i32,
        first: bool,
    ) {
        let acc = start(sums, (!first).then_some(tile as *const i32));
        let acc = accumulate(kq, a, b, acc);
        for (i, v) in acc.iter().enumerate() {
            _mm512_storeu_si512(tile.add(16 * i) as *mut _, *v);
        }
    }

    /// A whole chunk straight into C (see [`super::run_q`]).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn kernel_q(
        kq: usize,
        a: *const i8,
        sums: *const i32,
        b: *const u8,
        c: *mut f32,
        ldc: usize,
        sa: &[f32],
        sb: &[f32],
        mode: Store,
        rows: usize,
    ) {
        let acc = accumulate(kq, a, b, start(sums, None));
        assert!(sa.len() >= MR && sb.len() >= NR);
        let sb0 = _mm512_loadu_ps(sb.as_ptr());
        let sb1 = _mm512_loadu_ps(sb.as_ptr().add(16));
        let zero = _mm512_setzero_ps();
        for r in 0..rows.min(MR) {
            let s = _mm512_set1_ps(sa[r]);
            let row = c.add(r * ldc);
            let t0 = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc[2 * r]), s), sb0);
            let t1 = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc[2 * r + 1]), s), sb1);
            let (base0, base1) = match mode {
                Store::Accumulate => (_mm512_loadu_ps(row), _mm512_loadu_ps(row.add(16))),
                // `0.0 + t`: the semantics start from 0.0, which turns -0.0 into +0.0.
                Store::Overwrite => (zero, zero),
            };
            _mm512_storeu_ps(row, _mm512_add_ps(base0, t0));
            _mm512_storeu_ps(row.add(16), _mm512_add_ps(base1, t1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::tests::val;

    fn quads_of(ranges: &[(usize, usize)]) -> usize {
        ranges.iter().map(|(a, b)| (b - a).div_ceil(4)).sum()
    }

    const RANGE_SETS: [&[(usize, usize)]; 6] = [
        &[(0, 77)],
        &[(3, 19)],
        &[(0, 32), (32, 65), (70, 71)],
        &[(5, 6), (6, 75)],
        &[(1, 77)],
        &[(0, 64)],
    ];

    /// Packing an im2col B from the maps writes exactly what packing its materialised matrix
    /// writes, on the fast and the portable path: kernel sides 1, 3, 5; maps whose 32-column
    /// strips lie in one example (8x4, 8x8) and ones whose do not (5x7); one to three examples;
    /// several and odd k ranges; strips starting mid-example; a partial last strip.
    #[test]
    fn im2col_packing_matches_packing_the_matrix() {
        use crate::im2col_b::Im2colRef;
        // Every supported isa's im2col packing of `plan` against `pack_b` of `mat`, the
        // materialised matrix, for each set of k ranges and of columns `(n0, nlen)`.
        fn check(
            plan: &Im2colPlan<'_>,
            mat: &MatRef<'_, i8>,
            range_sets: &[&[(usize, usize)]],
            col_sets: &[(usize, usize)],
            what: &str,
        ) {
            let isas = [Isa::GenericQuad, Isa::Avx512Vnni, Isa::Avx2Quad];
            for ranges in range_sets {
                let quads = quads_of(ranges);
                for &(n0, nlen) in col_sets {
                    if nlen == 0 || quads == 0 {
                        continue;
                    }
                    let len = nlen.div_ceil(NR) * quads * NR * 4;
                    let mut want = vec![0u8; len];
                    pack_b(Isa::GenericQuad, mat, n0, nlen, ranges, quads, &mut want);
                    for isa in isas.into_iter().filter(|i| i.or_supported() == *i) {
                        let mut got = vec![0x55u8; len];
                        pack_b_im2col(isa, plan, n0, nlen, ranges, quads, &mut got);
                        // Unbiased panels: the same bytes without the flip.
                        let flip = 0x80 ^ b_flip(isa);
                        got.iter_mut().for_each(|v| *v ^= flip);
                        assert!(
                            got == want,
                            "{isa:?} {what} ranges {ranges:?} columns {n0}+{nlen}"
                        );
                    }
                }
            }
        }
        for (e, c, h, w, k) in [
            (1, 1, 8, 4, 3),
            (3, 2, 8, 8, 3),
            (2, 3, 5, 7, 3),
            (2, 1, 8, 4, 5),
            (1, 4, 4, 8, 1),
            (2, 4, 16, 16, 3),
            (3, 16, 8, 8, 3),
        ] {
            let maps: Vec<i8> = (0..e * c * h * w).map(|i| val(i * 7 + 3)).collect();
            let src = Im2colRef::new(&maps, e, c, h, w, k).unwrap();
            let plan = Im2colPlan::new(src, false, true, true);
            let (rows, cols) = (src.rows(), src.cols());
            let col = src.materialize();
            let mat = MatRef::row_major(&col, rows, cols).unwrap();
            let whole = [(0, rows)];
            let odd = [(0, rows.min(5)), (rows.min(5), rows)];
            let late = [(rows / 3, rows)];
            let what = format!("maps {e}x{c}x{h}x{w} k {k}");
            let c32 = 32.min(cols);
            let col_sets = [(0, cols), (c32, cols - c32), (0, 33.min(cols))];
            check(&plan, &mat, &[&whole, &odd, &late], &col_sets, &what);
            // B = col^T: pixels are K, taps the columns.
            let tplan = Im2colPlan::new(src, true, true, true);
            let whole = [(0, cols)];
            let from64 = [(64.min(cols), cols)];
            let odd = [(0, cols.min(70)), (cols.min(70), cols)];
            let short = [(0, cols.min(37))];
            let tap_sets = [(0, rows), (rows / 2, rows - rows / 2), (0, 17.min(rows))];
            let what = format!("col^T of {what}");
            check(
                &tplan,
                &mat.t(),
                &[&whole, &from64, &odd, &short],
                &tap_sets,
                &what,
            );
        }
    }

    /// The AVX2/AVX-512 packing paths write exactly what the portable ones write, for row- and
    /// column-contiguous operands, short and odd k ranges, several ranges, partial strips.
    #[test]
    fn fast_packing_matches_portable() {
        for fast in [Isa::Avx512Vnni, Isa::Avx2Quad] {
            if fast.or_supported() != fast {
                eprintln!("no {fast:?} on this CPU: its packing is not compared here");
                continue;
            }
            fast_packing_matches_portable_on(fast);
        }
    }

    fn fast_packing_matches_portable_on(fast_isa: Isa) {
        let flip = 0x80 ^ b_flip(fast_isa);
        let (rows, cols) = (77, 83);
        let data: Vec<i8> = (0..rows * cols).map(val).collect();
        let row_major = MatRef::row_major(&data, rows, cols).unwrap();
        let col_major = MatRef::row_major(&data, cols, rows).unwrap().t(); // rows x cols view
        for view in [row_major, col_major] {
            for ranges in RANGE_SETS {
                let quads = quads_of(ranges);
                for (n0, nlen) in [(0usize, 83usize), (5, 32), (37, 16), (2, 75), (40, 43)] {
                    let len = nlen.div_ceil(NR) * quads * NR * 4;
                    let mut fast = vec![7u8; len];
                    let mut slow = vec![9u8; len];
                    pack_b(fast_isa, &view, n0, nlen, ranges, quads, &mut fast);
                    pack_b(Isa::GenericQuad, &view, n0, nlen, ranges, quads, &mut slow);
                    fast.iter_mut().for_each(|v| *v ^= flip);
                    assert_eq!(
                        fast, slow,
                        "{fast_isa:?} B ranges {ranges:?} cols {n0}+{nlen}"
                    );
                }
                // A: rows are the view's columns here (k runs along the view's rows).
                let at = view.t();
                for (m0, mlen) in [(0usize, 83usize), (4, 7), (47, 16), (60, 23)] {
                    let strips = mlen.div_ceil(MR);
                    let len = strips * MR * quads * 4;
                    let (mut fast, mut slow) = (vec![7i8; len], vec![9i8; len]);
                    let slen = strips * ranges.len() * MR;
                    let (mut sf, mut ss) = (vec![7i32; slen], vec![9i32; slen]);
                    pack_a(fast_isa, &at, m0, mlen, ranges, quads, &mut fast, &mut sf);
                    pack_a(
                        Isa::GenericQuad,
                        &at,
                        m0,
                        mlen,
                        ranges,
                        quads,
                        &mut slow,
                        &mut ss,
                    );
                    assert_eq!(fast, slow, "A ranges {ranges:?} rows {m0}+{mlen}");
                    if fast_isa.unbiased_b() {
                        // No correction: the unbiased kernel ignores them, and they are 0.
                        ss.fill(0);
                    }
                    assert_eq!(sf, ss, "A sums, ranges {ranges:?} rows {m0}+{mlen}");
                }
            }
        }
    }

    /// Packed panels hold the values at the documented positions (B biased by 128), padded,
    /// and the row sums are the sums of each sub-range.
    #[test]
    fn packed_layout_is_as_documented() {
        let (rows, cols) = (11, 40);
        let data: Vec<i8> = (0..rows * cols).map(val).collect();
        let m = MatRef::row_major(&data, rows, cols).unwrap();
        for isa in [Isa::GenericQuad, Isa::Avx512Vnni] {
            let ranges = [(0, 5), (5, 11)];
            let quads = quads_of(&ranges);
            let mut out = vec![0u8; 2 * quads * NR * 4];
            pack_b(isa, &m, 0, cols, &ranges, quads, &mut out);
            for (j, strip) in out.chunks_exact(quads * NR * 4).enumerate() {
                let mut qoff = 0;
                for &(k0, k1) in &ranges {
                    for q in 0..(k1 - k0).div_ceil(4) {
                        for c in 0..NR {
                            for h in 0..4 {
                                let (k, n) = (k0 + 4 * q + h, j * NR + c);
                                let v = if k < k1 && n < cols { m.at(k, n) } else { 0 };
                                let got = strip[((qoff + q) * NR + c) * 4 + h];
                                assert_eq!(got, (v as u8) ^ 0x80, "{isa:?} B k {k} n {n}");
                            }
                        }
                    }
                    qoff += (k1 - k0).div_ceil(4);
                }
            }
            // A: the 11 x 40 matrix, k ranges over its columns.
            let ranges = [(0, 7), (7, 40)];
            let quads = quads_of(&ranges);
            let mut out = vec![0i8; 2 * MR * quads * 4];
            let mut sums = vec![0i32; 2 * ranges.len() * MR];
            pack_a(isa, &m, 0, rows, &ranges, quads, &mut out, &mut sums);
            for s in 0..2 {
                let strip = &out[s * quads * MR * 4..][..quads * MR * 4];
                let mut qoff = 0;
                for (i, &(k0, k1)) in ranges.iter().enumerate() {
                    for r in 0..MR {
                        let row = s * MR + r;
                        let mut want_sum = 0;
                        for q in 0..(k1 - k0).div_ceil(4) {
                            for h in 0..4 {
                                let k = k0 + 4 * q + h;
                                let v = if k < k1 && row < rows {
                                    m.at(row, k)
                                } else {
                                    0
                                };
                                want_sum += v as i32;
                                let got = strip[((qoff + q) * MR + r) * 4 + h];
                                assert_eq!(got, v, "{isa:?} A row {row} k {k}");
                            }
                        }
                        assert_eq!(sums[(s * ranges.len() + i) * MR + r], want_sum);
                    }
                    qoff += (k1 - k0).div_ceil(4);
                }
            }
        }
    }

    /// The biased kernel is exact at the extremes: all -128 against all -128 and +127, with
    /// the row sums the packer makes.
    #[test]
    fn kernels_exact_at_extremes() {
        let kq = 37;
        for isa in [Isa::GenericQuad, Isa::Avx512Vnni] {
            let isa = isa.or_supported();
            if !isa.uses_quads() {
                continue;
            }
            for (av, bv) in [
                (-128i8, -128i8),
                (-128, 127),
                (127, -128),
                (127, 127),
                (0, -128),
            ] {
                let a = vec![av; MR * kq * 4];
                let b: Vec<u8> = vec![(bv as u8) ^ 0x80; NR * kq * 4];
                let sums = [(av as i32) * (kq as i32) * 4; MR];
                let mut tile = [0i32; TILE];
                // SAFETY: panels hold kq quads; the tile holds TILE values.
                unsafe {
                    run(
                        isa,
                        kq,
                        a.as_ptr(),
                        sums.as_ptr(),
                        b.as_ptr(),
                        tile.as_mut_ptr(),
                        true,
                        NR,
                    )
                };
                let want = (av as i32) * (bv as i32) * (kq as i32) * 4;
                assert!(tile.iter().all(|&t| t == want), "{isa:?} {av} x {bv}");
            }
        }
    }

    /// The unbiased AVX2 kernel is exact at the extremes it admits: A at -128 and 127 against
    /// B at 0 and 127 (pair sums up to 2 * 128 * 127, just below `vpmaddubsw`'s saturation).
    #[test]
    fn unbiased_kernel_exact_at_extremes() {
        if Isa::Avx2Quad.or_supported() != Isa::Avx2Quad {
            eprintln!("no AVX2 on this CPU: the unbiased kernel does not run here");
            return;
        }
        let kq = 37;
        for (av, bv) in [(-128i8, 127u8), (127, 127), (-128, 0), (-1, 127)] {
            let a = vec![av; MR * kq * 4];
            let b = vec![bv; NR * kq * 4];
            let sums = [0i32; MR];
            let mut tile = [7i32; TILE];
            // SAFETY: panels hold kq quads; the tile holds TILE values; AVX2 is present.
            unsafe {
                run(
                    Isa::Avx2Quad,
                    kq,
                    a.as_ptr(),
                    sums.as_ptr(),
                    b.as_ptr(),
                    tile.as_mut_ptr(),
                    true,
                    NR,
                )
            };
            let want = (av as i32) * (bv as i32) * (kq as i32) * 4;
            assert!(tile.iter().all(|&t| t == want), "{av} x {bv}");
        }
    }

    /// The unbiased AVX2 tile kernels against the portable one on fresh random panels (A any
    /// byte, B 0..=127), for 1, 7, 33 and 130 quads: the i32 tile starting from zero and from
    /// a previous tile in its defined columns (all 32, or a partial strip's 17, 16, 9 or 1), and
    /// the fused epilogue for every row count and both store modes.
    #[test]
    fn unbiased_kernels_match_portable() {
        if Isa::Avx2Quad.or_supported() != Isa::Avx2Quad {
            eprintln!("no AVX2 on this CPU: the unbiased kernel does not run here");
            return;
        }
        use lowprec_formats::rng::{splitmix64, StreamKey};
        let key = StreamKey::new(17, 5);
        // Draw `i` of sub-stream `stream`: counter-based, no shared state.
        let draw = |stream: u64, i: usize| splitmix64(key.child(stream).0 ^ splitmix64(i as u64));
        for (t, kq) in [1usize, 7, 33, 130].into_iter().enumerate() {
            let t = t as u64;
            let a: Vec<i8> = (0..MR * kq * 4)
                .map(|i| draw(10 + t, i) as u8 as i8)
                .collect();
            let b: Vec<u8> = (0..NR * kq * 4)
                .map(|i| (draw(20 + t, i) % 128) as u8)
                .collect();
            let prev: Vec<i32> = (0..TILE).map(|i| draw(30 + t, i) as i32 >> 4).collect();
            let sums = [0i32; MR];
            for (first, cols) in [true, false]
                .into_iter()
                .flat_map(|f| [NR, 17, 16, 9, 1].map(|c| (f, c)))
            {
                let (mut got, mut want) = (prev.clone(), prev.clone());
                // SAFETY: panels hold kq quads; tiles hold TILE values; AVX2 is present.
                unsafe {
                    run(
                        Isa::Avx2Quad,
                        kq,
                        a.as_ptr(),
                        sums.as_ptr(),
                        b.as_ptr(),
                        got.as_mut_ptr(),
                        first,
                        cols,
                    );
                    generic(
                        kq,
                        a.as_ptr(),
                        sums.as_ptr(),
                        b.as_ptr(),
                        want.as_mut_ptr(),
                        first,
                    );
                }
                // The first `cols` columns are defined (the rest may be skipped).
                for r in 0..MR {
                    let row = r * NR..r * NR + cols;
                    assert_eq!(
                        got[row.clone()],
                        want[row],
                        "kq {kq} first {first} cols {cols} row {r}"
                    );
                }
            }
            let sa: Vec<f32> = (0..MR)
                .map(|i| 1.0 + (draw(40 + t, i) % 1000) as f32 / 997.0)
                .collect();
            let sb: Vec<f32> = (0..NR)
                .map(|i| -0.5 + (draw(50 + t, i) % 1000) as f32 / 1009.0)
                .collect();
            for rows in 1..=MR {
                for mode in [Store::Overwrite, Store::Accumulate] {
                    let c0: Vec<f32> = (0..MR * 40)
                        .map(|i| (draw(60 + t, i) % 2001) as f32 - 1000.0)
                        .collect();
                    let (mut got, mut want) = (c0.clone(), c0.clone());
                    let mut tile = [0i32; TILE];
                    // SAFETY: as above; C has MR rows of 40 (>= NR) floats.
                    unsafe {
                        run_q(
                            Isa::Avx2Quad,
                            kq,
                            a.as_ptr(),
                            sums.as_ptr(),
                            b.as_ptr(),
                            got.as_mut_ptr(),
                            40,
                            &sa,
                            &sb,
                            mode,
                            rows,
                        );
                        generic(
                            kq,
                            a.as_ptr(),
                            sums.as_ptr(),
                            b.as_ptr(),
                            tile.as_mut_ptr(),
                            true,
                        );
                        crate::ukernel::store_tile(
                            &tile,
                            rows,
                            NR,
                            want.as_mut_ptr(),
                            40,
                            &sa,
                            &sb,
                            mode,
                        );
                    }
                    let same = got
                        .iter()
                        .zip(&want)
                        .all(|(g, w)| g.to_bits() == w.to_bits());
                    assert!(same, "kq {kq} rows {rows} {mode:?}");
                }
            }
        }
    }
}
