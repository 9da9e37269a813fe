//! The copies between the convolution's NCHW tensors and its GEMM operands: errors gathered
//! from `[B, Cout, P]` into `[Cout, n]` (or its transpose), GEMM outputs scattered back to
//! `[B, Cout, P]` with the bias, weights flipped for the transposed convolution, and the
//! blocked transposes they use. All are memory-bound copies; none rounds.

use lowprec_kernels::MatRef;
use rayon::prelude::*;
use std::mem::MaybeUninit;

use crate::operand::{Operand, QData, QMatrix};
use crate::scratch::Scratch;

/// `data` as a row-major `rows x cols` GEMM operand.
pub(super) fn row_major<T: Copy>(data: &[T], rows: usize, cols: usize) -> MatRef<'_, T> {
    MatRef {
        data,
        rows,
        cols,
        row_stride: cols,
        col_stride: 1,
    }
}

/// Gathers examples `[b0, b0+nb)` of `[B, Cout, P]` errors into `[Cout, nb*P]` (one task per
/// output channel).
pub(super) fn gather_errors<T: Copy + Default + Send + Sync>(
    cout: usize,
    p: usize,
    e: &[T],
    b0: usize,
    nb: usize,
) -> Vec<T> {
    let mut out = vec![T::default(); cout * nb * p];
    if out.is_empty() {
        return out;
    }
    out.par_chunks_mut(nb * p)
        .enumerate()
        .for_each(|(co, row)| {
            for j in 0..nb {
                row[j * p..][..p].copy_from_slice(&e[((b0 + j) * cout + co) * p..][..p]);
            }
        });
    out
}

/// All `nb` examples of `[nb, Cout, P]` errors as `[nb*P, Cout]` (one transpose per example).
pub(super) fn gather_errors_t(cout: usize, p: usize, e: &[f32]) -> Scratch<f32> {
    let mut out = Scratch::new(e.len());
    out.par_chunks_mut((cout * p).max(1))
        .zip(e.par_chunks((cout * p).max(1)))
        .for_each(|(dst, src)| transpose_blocks(src, cout, p, p, dst));
    out
}

/// The examples `piece` (indices, in this order) of `[B, Cout, P]` errors as `[Cout,
/// piece.len()*P]` (one task per output channel).
pub(super) fn gather_errors_of(cout: usize, p: usize, e: &[i8], piece: &[usize]) -> Scratch<i8> {
    let n = piece.len() * p;
    let mut out = Scratch::<i8>::new(cout * n);
    out.par_chunks_mut(n).enumerate().for_each(|(co, row)| {
        for (i, &j) in piece.iter().enumerate() {
            row[i * p..][..p].copy_from_slice(&e[(j * cout + co) * p..][..p]);
        }
    });
    out
}

/// The examples `piece` (indices, in this order) of `x`, `per` values each, one after another.
pub(super) fn gather_examples(per: usize, x: &[i8], piece: &[usize]) -> Scratch<i8> {
    let mut out = Scratch::<i8>::new(piece.len() * per);
    for (i, &j) in piece.iter().enumerate() {
        out[i * per..][..per].copy_from_slice(&x[j * per..][..per]);
    }
    out
}

/// `dst[c * rows + r] = src[r * ld + c]` for `r < rows`, `c < cols` on one thread, in 8x8
/// blocks held in registers (a block is 8 contiguous reads and 8 contiguous writes): element by
/// element, even tiled, is several times slower on large planes, and a column-by-column
/// transpose reads a cache line per value.
fn transpose_blocks<T: Copy + Default>(
    src: &[T],
    rows: usize,
    cols: usize,
    ld: usize,
    dst: &mut [T],
) {
    const B: usize = 8;
    let (rb, cb) = (rows / B * B, cols / B * B);
    for r0 in (0..rb).step_by(B) {
        for c0 in (0..cb).step_by(B) {
            let mut t = [[T::default(); B]; B];
            for (i, row) in t.iter_mut().enumerate() {
                row.copy_from_slice(&src[(r0 + i) * ld + c0..][..B]);
            }
            for j in 0..B {
                let out = &mut dst[(c0 + j) * rows + r0..][..B];
                for (i, o) in out.iter_mut().enumerate() {
                    *o = t[i][j];
                }
            }
        }
    }
    // The right and bottom edges.
    for r in 0..rows {
        let c_from = if r < rb { cb } else { 0 };
        for c in c_from..cols {
            dst[c * rows + r] = src[r * ld + c];
        }
    }
}

/// Destination rows per task of [`transpose_into`].
const TRANSPOSE_BAND: usize = 32;

/// `dst[c * rows + r] = src[r * cols + c]` (`src` is `rows x cols`), one task per band of
/// `TRANSPOSE_BAND` destination rows.
pub(super) fn transpose_into<T: Copy + Default + Send + Sync>(
    src: &[T],
    rows: usize,
    cols: usize,
    dst: &mut [T],
) {
    assert!(src.len() >= rows * cols && dst.len() >= rows * cols);
    if rows == 0 || cols == 0 {
        return;
    }
    dst[..rows * cols]
        .par_chunks_mut(TRANSPOSE_BAND * rows)
        .enumerate()
        .for_each(|(band, out)| {
            let c0 = band * TRANSPOSE_BAND;
            let cw = out.len() / rows;
            transpose_blocks(&src[c0..], rows, cw, cols, out);
        });
}

/// Scatters a chunk's GEMM output for output pixels `q0 .. q0 + np` of each of its `nb`
/// examples, `[Cout, nb*np]`, into their `[nb, Cout, P]` output `out`, adding the bias: slots
/// `q0 .. q0 + np` of every channel (all of `out` for a whole chunk, `q0 = 0`, `np = P`). One
/// task per example, so that chunks run one after another still scatter on every thread.
pub(super) fn scatter(
    c: &[f32],
    cout: usize,
    p: usize,
    q0: usize,
    bias: Option<&[f32]>,
    out: &mut [MaybeUninit<f32>],
) {
    let (nb, n) = (out.len() / (cout * p).max(1), c.len() / cout.max(1));
    let np = n / nb.max(1);
    assert!(
        q0 + np <= p && nb * np == n,
        "scatter of {n} columns at {q0} into {nb} x {p}"
    );
    out.par_chunks_mut((cout * p).max(1))
        .enumerate()
        .for_each(|(j, ex)| {
            for (co, o) in ex.chunks_mut(p).enumerate() {
                let src = &c[co * n + j * np..][..np];
                write_channel(&mut o[q0..q0 + np], src, bias.map(|b| b[co]));
            }
        });
}

/// `out[q] = src[q] + bias`, or a copy of `src` without a bias (not `s + 0.0`, which would
/// turn -0.0 into +0.0).
fn write_channel(out: &mut [MaybeUninit<f32>], src: &[f32], bias: Option<f32>) {
    match bias {
        Some(b) => out.iter_mut().zip(src).for_each(|(o, s)| {
            o.write(s + b);
        }),
        None => out.iter_mut().zip(src).for_each(|(o, &s)| {
            o.write(s);
        }),
    }
}

/// The weights of the transposed convolution: `W[co, ci, ki, kj]` becomes
/// `Wt[ci, co, k-1-ki, k-1-kj]`, a `[Cin, Cout*k*k]` operand with the same scale (a tensor
/// scale only: per-channel scales would run along K). `raw` is the parameter an
/// [`Operand::Param`] stands for; the result is never one (flipping copies).
pub(super) fn flip_weights(w: &Operand, cout: usize, cin: usize, k: usize, raw: &[f32]) -> Operand {
    let (rows, cols) = (cin, cout * k * k);
    match w {
        Operand::Q(q) => {
            debug_assert!(
                q.fmt.block != lowprec_formats::Block::Axis(0),
                "per-channel scales run along K when transposed"
            );
            let data = match &q.data {
                QData::I8(m) => QData::I8(flip(m, cout, cin, k)),
                QData::I16(m) => QData::I16(flip(m, cout, cin, k)),
            };
            Operand::Q(QMatrix {
                fmt: q.fmt,
                rows,
                cols,
                data,
                scales: q.scales.clone(),
            })
        }
        Operand::F { data, .. } => Operand::F {
            data: flip(data, cout, cin, k),
            rows,
            cols,
        },
        Operand::Param { .. } => Operand::F {
            data: flip(raw, cout, cin, k),
            rows,
            cols,
        },
    }
}

fn flip<T: Copy + Default + Send + Sync>(w: &[T], cout: usize, cin: usize, k: usize) -> Vec<T> {
    // Common filter sizes reverse as fixed-size arrays, which the compiler unrolls: a loop of
    // run-time length per filter made the flip about twice as slow.
    match k * k {
        9 => flip_with(w, cout, cin, 9, reverse_fixed::<T, 9>),
        1 => flip_with(w, cout, cin, 1, reverse_fixed::<T, 1>),
        kk => flip_with(w, cout, cin, kk, |src: &[T], dst: &mut [T]| {
            for (o, &v) in dst.iter_mut().zip(src.iter().rev()) {
                *o = v;
            }
        }),
    }
}

/// `dst` = `src` reversed, both `KK` long.
#[inline(always)]
fn reverse_fixed<T: Copy, const KK: usize>(src: &[T], dst: &mut [T]) {
    let src: &[T; KK] = src.try_into().expect("a filter of KK weights");
    let dst: &mut [T; KK] = dst.try_into().expect("a filter of KK weights");
    *dst = std::array::from_fn(|j| src[KK - 1 - j]);
}

/// [`flip`] with filters of `kk` weights, each reversed by `reverse(src, dst)`.
fn flip_with<T: Copy + Default + Send + Sync>(
    w: &[T],
    cout: usize,
    cin: usize,
    kk: usize,
    reverse: impl Fn(&[T], &mut [T]) + Sync,
) -> Vec<T> {
    let mut t = vec![T::default(); w.len()];
    // One task per block of 16 input channels, output channels inner: each task writes a
    // contiguous run and reads 16 short runs per output channel.
    const CB: usize = 16;
    t.par_chunks_mut((CB * cout * kk).max(1))
        .enumerate()
        .for_each(|(blk, out)| {
            let ci0 = blk * CB;
            for (dci, dst_ci) in out.chunks_mut(cout * kk).enumerate() {
                let ci = ci0 + dci;
                for co in 0..cout {
                    reverse(
                        &w[(co * cin + ci) * kk..][..kk],
                        &mut dst_ci[co * kk..][..kk],
                    );
                }
            }
        });
    t
}

/// Float weights `[Cout, Cin*k*k]` (columns `(c, ki, kj)`) split by kernel row for the
/// kernel-row-shared columns (`crate::im2col::im2col_shift_rows`): `[k, Cout, Cin*k]`, the
/// block of kernel row `ki` holding columns `(c, kj)`.
pub(super) fn split_kernel_rows(w: &[f32], cout: usize, cin: usize, k: usize) -> Vec<f32> {
    assert_eq!(
        w.len(),
        cout * cin * k * k,
        "weights to split by kernel row"
    );
    let mut out = vec![0f32; w.len()];
    for (ki, block) in out.chunks_mut((cout * cin * k).max(1)).enumerate() {
        for (co, row) in block.chunks_mut((cin * k).max(1)).enumerate() {
            for (c, taps) in row.chunks_mut(k).enumerate() {
                taps.copy_from_slice(&w[((co * cin + c) * k + ki) * k..][..k]);
            }
        }
    }
    out
}
