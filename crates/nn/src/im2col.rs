//! im2col / col2im for channels-first (NCHW) images (002 Section II-A).
//!
//! A convolution of `nb` examples becomes one GEMM `W[Cout, Cin*K*K] x col[Cin*K*K, nb*P]`,
//! where `P = Ho*Wo` and column `j*P + p` holds the receptive field of output pixel `p` of
//! example `j`. Rows are ordered `(c, ki, kj)`, matching a PyTorch weight `[Cout, Cin, K, K]`.
//! Each row of `col` is written by one task (rayon over rows), and each input plane of
//! `col2im` is summed by one task in a fixed order, so results do not depend on the thread
//! count. `im2col` is generic: the convolution runs it on 8-bit mantissas (a quarter of the
//! memory traffic of floats), zero padding being mantissa 0.

use rayon::prelude::*;

/// Shape of one 2-D convolution (or pooling window) over a `cin x h x w` example.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    /// Square kernel side.
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub ho: usize,
    pub wo: usize,
}

impl ConvGeom {
    /// Validates the geometry; the message says what is wrong.
    pub fn new(
        cin: usize,
        h: usize,
        w: usize,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> Result<Self, String> {
        if cin == 0 || h == 0 || w == 0 {
            return Err(format!("input {cin}x{h}x{w} has a zero dimension"));
        }
        if k == 0 || stride == 0 {
            return Err(format!("kernel {k} and stride {stride} must both be >= 1"));
        }
        if pad >= k {
            return Err(format!(
                "padding {pad} must be smaller than the kernel {k} (a window would see only padding)"
            ));
        }
        if h + 2 * pad < k || w + 2 * pad < k {
            return Err(format!(
                "kernel {k} is larger than the padded input {}x{}",
                h + 2 * pad,
                w + 2 * pad
            ));
        }
        let ho = (h + 2 * pad - k) / stride + 1;
        let wo = (w + 2 * pad - k) / stride + 1;
        Ok(ConvGeom {
            cin,
            h,
            w,
            k,
            stride,
            pad,
            ho,
            wo,
        })
    }

    /// A "same" convolution: stride 1 and an output as large as the input (so an odd kernel
    /// with padding `k / 2`), whose every im2col row is its input plane shifted.
    pub fn is_same(&self) -> bool {
        self.stride == 1 && (self.ho, self.wo) == (self.h, self.w)
    }

    /// A 3x3, stride-2, padding-1 convolution that halves an even-sized map (ResNets'
    /// downsampling), which im2col and col2im take row by row.
    pub fn is_k3s2p1_halving(&self) -> bool {
        (self.k, self.stride, self.pad) == (3, 2, 1)
            && (self.h, self.w) == (2 * self.ho, 2 * self.wo)
    }

    /// Rows of `col` (the GEMM's K): `cin * k * k`.
    pub fn col_rows(&self) -> usize {
        self.cin * self.k * self.k
    }
    /// Output pixels per example (`ho * wo`).
    pub fn out_pixels(&self) -> usize {
        self.ho * self.wo
    }
    /// Values of one input example (`cin * h * w`).
    pub fn in_len(&self) -> usize {
        self.cin * self.h * self.w
    }

    /// Range of output columns `ox` whose input column `ox * stride + kj - pad` lies inside
    /// `[0, w)`.
    fn valid_ox(&self, kj: usize) -> (usize, usize) {
        valid_range(self.wo, self.w, self.stride, kj, self.pad)
    }
    fn valid_oy(&self, ki: usize) -> (usize, usize) {
        valid_range(self.ho, self.h, self.stride, ki, self.pad)
    }
}

/// Outputs `o < n_out` with `0 <= o * stride + off - pad < n_in`, as a half-open range.
fn valid_range(n_out: usize, n_in: usize, stride: usize, off: usize, pad: usize) -> (usize, usize) {
    let lo = if pad > off {
        (pad - off).div_ceil(stride)
    } else {
        0
    };
    // o * stride + off < n_in + pad  <=>  o < ceil((n_in + pad - off) / stride)
    let hi = (n_in + pad).saturating_sub(off).div_ceil(stride).min(n_out);
    (lo.min(hi), hi)
}

/// Output widths at or below which im2col/col2im use per-offset gather tables: on small maps
/// the per-row slice copies cost more than the data.
const TABLE_MAX_WIDTH: usize = 8;

/// Widths from which "same" convolutions take the shifted-plane copy instead of the tables:
/// faster from 4x4 maps up, slower on 2x2 ones, which stay on the tables.
const SHIFT_MIN_WIDTH: usize = 3;

/// For each kernel offset `(ki, kj)`, the input index `iy * w + ix` read by each output pixel,
/// or -1 where it falls in the padding: `k * k * P` entries.
fn gather_tables(g: &ConvGeom) -> Vec<i32> {
    let p = g.out_pixels();
    let mut t = vec![-1i32; g.k * g.k * p];
    for ki in 0..g.k {
        for kj in 0..g.k {
            let tab = &mut t[(ki * g.k + kj) * p..][..p];
            for oy in 0..g.ho {
                for ox in 0..g.wo {
                    let iy = (oy * g.stride + ki) as isize - g.pad as isize;
                    let ix = (ox * g.stride + kj) as isize - g.pad as isize;
                    if iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w {
                        tab[oy * g.wo + ox] = (iy as usize * g.w + ix as usize) as i32;
                    }
                }
            }
        }
    }
    t
}

/// Writes the `col_rows() x nb*P` matrix of `nb` examples `x` (each `cin*h*w`, NCHW) into
/// `col` (row-major). Padding becomes `T::default()` (0).
pub fn im2col<T: Copy + Default + Send + Sync>(g: &ConvGeom, x: &[T], nb: usize, col: &mut [T]) {
    im2col_rows(g, x, nb, 0, g.ho, col);
}

/// [`im2col`] restricted to output rows `oy0 .. oy1` of every example: the `col_rows() x
/// nb*(oy1-oy0)*wo` matrix whose column `j*(oy1-oy0)*wo + (oy-oy0)*wo + ox` is the receptive
/// field of output pixel `(oy, ox)` of example `j`. A float convolution cuts one large example
/// into such pieces so that each piece's columns stay in L2 until its GEMM reads them.
pub fn im2col_rows<T: Copy + Default + Send + Sync>(
    g: &ConvGeom,
    x: &[T],
    nb: usize,
    oy0: usize,
    oy1: usize,
    col: &mut [T],
) {
    assert!(
        oy0 <= oy1 && oy1 <= g.ho,
        "im2col output rows {oy0}..{oy1} of {}",
        g.ho
    );
    // `p`: columns per example in `col`; `q0`: the first output pixel they hold.
    let (p, q0) = ((oy1 - oy0) * g.wo, oy0 * g.wo);
    let n = nb * p;
    assert_eq!(x.len(), nb * g.in_len(), "im2col input length");
    assert_eq!(col.len(), g.col_rows() * n, "im2col output length");
    if n == 0 {
        return;
    }
    let (k, hw) = (g.k, g.h * g.w);
    if g.is_same() && g.wo >= SHIFT_MIN_WIDTH {
        // "Same" convolutions: each row of `col` is its input plane shifted by a constant
        // offset, so one copy per (row, example) plus zeroing the rows and border columns that
        // fall in the padding (where the shifted copy wrapped around), instead of one short
        // copy per output row. Maps narrower than `SHIFT_MIN_WIDTH` stay on the tables below, the
        // per-example loop dominating there.
        col.par_chunks_mut(n).enumerate().for_each(|(r, row)| {
            let (c, ki, kj) = (r / (k * k), (r / k) % k, r % k);
            // Pixel `q` of an example's part of the row is plane value `q0 + q + d`.
            let d = (ki as isize - g.pad as isize) * g.w as isize + kj as isize - g.pad as isize;
            for (j, dst) in row.chunks_exact_mut(p).enumerate() {
                let plane = &x[(j * g.cin + c) * hw..][..hw];
                shifted_copy(dst, plane, q0 as isize + d, g.w, g.valid_ox(kj));
            }
        });
        return;
    }
    if g.is_k3s2p1_halving() {
        im2col_k3s2p1(g, x, nb, oy0, oy1, col);
        return;
    }
    if g.wo <= TABLE_MAX_WIDTH {
        let tables = gather_tables(g);
        let pa = g.out_pixels();
        col.par_chunks_mut(n).enumerate().for_each(|(r, row)| {
            let (c, off) = (r / (k * k), r % (k * k));
            let tab = &tables[off * pa + q0..][..p];
            for (j, dst) in row.chunks_exact_mut(p).enumerate() {
                let plane = &x[(j * g.cin + c) * hw..][..hw];
                for (d, &i) in dst.iter_mut().zip(tab) {
                    *d = if i >= 0 {
                        plane[i as usize]
                    } else {
                        T::default()
                    };
                }
            }
        });
        return;
    }
    col.par_chunks_mut(n).enumerate().for_each(|(r, row)| {
        let (c, ki, kj) = (r / (k * k), (r / k) % k, r % k);
        let (oy_lo, oy_hi) = g.valid_oy(ki);
        let (oy_lo, oy_hi) = (oy_lo.clamp(oy0, oy1), oy_hi.clamp(oy0, oy1));
        let (ox_lo, ox_hi) = g.valid_ox(kj);
        let ix0 = (ox_lo * g.stride + kj).saturating_sub(g.pad);
        let width = ox_hi.saturating_sub(ox_lo);
        for j in 0..nb {
            let plane = &x[(j * g.cin + c) * hw..][..hw];
            let dst = &mut row[j * p..][..p];
            // One fill of the example's whole row, then the valid part of each output row
            // over it: two short fills per output row (the padding columns, 0 or 1 values)
            // were two `memset` calls each.
            dst.fill(T::default());
            if width == 0 {
                continue;
            }
            for oy in oy_lo..oy_hi {
                let iy = oy * g.stride + ki - g.pad;
                let src = &plane[iy * g.w + ix0..(iy + 1) * g.w];
                let out = &mut dst[(oy - oy0) * g.wo + ox_lo..][..width];
                match g.stride {
                    1 => out.copy_from_slice(&src[..width]),
                    // Pairs, which the compiler reads with vector loads and shuffles (faster
                    // than the `step_by` loop below).
                    2 => {
                        let full = (src.len() / 2).min(width);
                        for (o, pair) in out[..full].iter_mut().zip(src.chunks_exact(2)) {
                            *o = pair[0];
                        }
                        if full < width {
                            out[full] = src[2 * full];
                        }
                    }
                    s => {
                        for (o, v) in out.iter_mut().zip(src.iter().step_by(s)) {
                            *o = *v;
                        }
                    }
                }
            }
        }
    });
}

/// The length of each row of the kernel-row-shared columns ([`im2col_shift_rows`]) of output
/// rows `oy0 .. oy1`: their input rows and the `k - 1` the kernel reaches beyond them.
pub fn shift_rows_len(g: &ConvGeom, oy0: usize, oy1: usize) -> usize {
    (oy1 - oy0 + g.k - 1) * g.w
}

/// The columns of output rows `oy0 .. oy1` of one example `x` of a "same" convolution
/// ([`ConvGeom::is_same`]) shared by the kernel rows: a `cin*k x shift_rows_len` matrix whose
/// row `(c, kj)` holds input rows `oy0 - pad .. oy1 - pad + k - 1` of channel `c` shifted by
/// `kj - pad` columns, zero outside the input. [`im2col_rows`]'s row `(c, ki, kj)` is the
/// window of `(oy1 - oy0) * w` values from column `ki * w` of row `(c, kj)`: the convolution
/// becomes `k` GEMMs over the windows, summed, on a matrix a `k`-th of im2col's size.
pub fn im2col_shift_rows<T: Copy + Default + Send + Sync>(
    g: &ConvGeom,
    x: &[T],
    oy0: usize,
    oy1: usize,
    col: &mut [T],
) {
    assert!(g.is_same(), "kernel-row-shared columns of {g:?}");
    assert!(
        oy0 <= oy1 && oy1 <= g.ho,
        "im2col output rows {oy0}..{oy1} of {}",
        g.ho
    );
    let len = shift_rows_len(g, oy0, oy1);
    let (k, w, hw) = (g.k, g.w, g.h * g.w);
    assert_eq!(x.len(), g.in_len(), "im2col input length");
    assert_eq!(col.len(), g.cin * k * len, "im2col output length");
    if len == 0 {
        return;
    }
    col.par_chunks_mut(len).enumerate().for_each(|(r, row)| {
        let (c, kj) = (r / k, r % k);
        let d = (oy0 as isize - g.pad as isize) * w as isize + kj as isize - g.pad as isize;
        shifted_copy(row, &x[c * hw..][..hw], d, w, g.valid_ox(kj));
    });
}

/// `dst[q] = plane[q + d]`, `dst` starting at a row of a plane `w` wide: zero where `q + d`
/// falls outside the plane, and in the columns `q % w` outside `ox_lo .. ox_hi`, where the
/// shifted copy wrapped around a border (a "same" convolution's padding). One copy, then the
/// border columns one at a time down the rows: a `fill` per row and side was a `memset` call
/// per byte.
fn shifted_copy<T: Copy + Default>(
    dst: &mut [T],
    plane: &[T],
    d: isize,
    w: usize,
    (ox_lo, ox_hi): (usize, usize),
) {
    let len = dst.len() as isize;
    let a = (-d).clamp(0, len) as usize;
    let b = (plane.len() as isize - d).clamp(a as isize, len) as usize;
    dst[..a].fill(T::default());
    if a < b {
        let s0 = (a as isize + d) as usize;
        dst[a..b].copy_from_slice(&plane[s0..s0 + (b - a)]);
    }
    dst[b..].fill(T::default());
    for ox in (0..ox_lo).chain(ox_hi..w) {
        for v in dst.iter_mut().skip(ox).step_by(w) {
            *v = T::default();
        }
    }
}

/// [`im2col_rows`] of a 3x3, stride-2, padding-1 convolution that halves an even-sized map
/// ([`ConvGeom::is_k3s2p1_halving`]), one task per input channel (its nine rows of `col`): each
/// input row read is split once into its even and odd columns, which are the rows of kernel
/// columns 1 and 2, and the odd ones one column later that of kernel column 0 (its first
/// column in the padding). Input row `2 * oy + ki - 1` feeds kernel row `ki` of output row
/// `oy`; only `oy = 0, ki = 0` falls in the padding.
fn im2col_k3s2p1<T: Copy + Default + Send + Sync>(
    g: &ConvGeom,
    x: &[T],
    nb: usize,
    oy0: usize,
    oy1: usize,
    col: &mut [T],
) {
    let (p, wo, hw) = ((oy1 - oy0) * g.wo, g.wo, g.h * g.w);
    let n = nb * p;
    col.par_chunks_mut(9 * n)
        .enumerate()
        .for_each(|(c, rows9)| {
            let mut rows: Vec<&mut [T]> = rows9.chunks_mut(n).collect();
            for j in 0..nb {
                let plane = &x[(j * g.cin + c) * hw..][..hw];
                for oy in oy0..oy1 {
                    let at = j * p + (oy - oy0) * wo;
                    for ki in 0..3 {
                        let [r0, r1, r2] = &mut rows[3 * ki..3 * ki + 3] else {
                            unreachable!("nine rows per channel")
                        };
                        let (d0, d1, d2) = (
                            &mut r0[at..at + wo],
                            &mut r1[at..at + wo],
                            &mut r2[at..at + wo],
                        );
                        if oy == 0 && ki == 0 {
                            d0.fill(T::default());
                            d1.fill(T::default());
                            d2.fill(T::default());
                            continue;
                        }
                        let iy = 2 * oy + ki - 1;
                        let src = &plane[iy * g.w..][..g.w];
                        for ((e, o), pair) in
                            d1.iter_mut().zip(d2.iter_mut()).zip(src.chunks_exact(2))
                        {
                            *e = pair[0];
                            *o = pair[1];
                        }
                        d0[0] = T::default();
                        d0[1..].copy_from_slice(&d2[..wo - 1]);
                    }
                }
            }
        });
}

/// The adjoint of [`im2col`]: sums `col` (`col_rows() x nb*P`) back into `nb` examples `dx`
/// (overwritten). Each input plane is one task; within it the kernel offsets are visited in
/// `(ki, kj)` order, so the float sums are the same at any thread count.
pub fn col2im(g: &ConvGeom, col: &[f32], nb: usize, dx: &mut [f32]) {
    let p = g.out_pixels();
    let n = nb * p;
    assert_eq!(dx.len(), nb * g.in_len(), "col2im output length");
    assert_eq!(col.len(), g.col_rows() * n, "col2im input length");
    let (k, hw) = (g.k, g.h * g.w);
    if hw == 0 {
        return;
    }
    if g.is_k3s2p1_halving() {
        col2im_k3s2p1(g, col, nb, dx);
        return;
    }
    if g.wo <= TABLE_MAX_WIDTH {
        // Same order of additions as below: kernel offsets in (ki, kj) order, and one offset
        // never adds twice to an input pixel.
        let tables = gather_tables(g);
        planes_channel_major(dx, nb, g.cin, hw, |j, c, plane| {
            plane.fill(0.0);
            for off in 0..k * k {
                let tab = &tables[off * p..][..p];
                let src = &col[(c * k * k + off) * n + j * p..][..p];
                for (&t, &v) in tab.iter().zip(src) {
                    if t >= 0 {
                        plane[t as usize] += v;
                    }
                }
            }
        });
        return;
    }
    dx.par_chunks_mut(hw).enumerate().for_each(|(i, plane)| {
        let (j, c) = (i / g.cin, i % g.cin);
        plane.fill(0.0);
        for ki in 0..k {
            let (oy_lo, oy_hi) = g.valid_oy(ki);
            for kj in 0..k {
                let (ox_lo, ox_hi) = g.valid_ox(kj);
                if ox_lo >= ox_hi {
                    continue;
                }
                let r = (c * k + ki) * k + kj;
                let src = &col[r * n + j * p..][..p];
                for oy in oy_lo..oy_hi {
                    let iy = oy * g.stride + ki - g.pad;
                    let s = &src[oy * g.wo..][..g.wo];
                    let d = &mut plane[iy * g.w..][..g.w];
                    let ix0 = ox_lo * g.stride + kj - g.pad;
                    if g.stride == 1 {
                        for (dv, sv) in d[ix0..ix0 + (ox_hi - ox_lo)]
                            .iter_mut()
                            .zip(&s[ox_lo..ox_hi])
                        {
                            *dv += sv;
                        }
                    } else {
                        for (ix, sv) in (ix0..).step_by(g.stride).zip(&s[ox_lo..ox_hi]) {
                            d[ix] += sv;
                        }
                    }
                }
            }
        }
    });
}

/// Runs `plane(j, c, out)` for every input plane (example `j`, channel `c`) of `dx`
/// (`[nb, cin, hw]`), the tasks going channel by channel. A plane reads `P` values from each
/// of its channel's `k*k` rows of `col`, at offset `j*P`: taken channel-major, consecutive
/// planes read on along the same rows, where example-major order jumps to `k*k` rows a page
/// or more apart for every small plane. The planes are made in that order in a pooled buffer
/// (`plane` writes the whole of `out`) and copied into place, which costs more than it saves
/// once planes are large (the 3x3 stride-2 path keeps example-major order).
fn planes_channel_major(
    dx: &mut [f32],
    nb: usize,
    cin: usize,
    hw: usize,
    plane: impl Fn(usize, usize, &mut [f32]) + Sync,
) {
    let mut by_channel = crate::scratch::Scratch::<f32>::new(dx.len());
    by_channel
        .par_chunks_mut(hw)
        .enumerate()
        .for_each(|(i, out)| plane(i % nb, i / nb, out));
    dx.par_chunks_mut(hw).enumerate().for_each(|(i, out)| {
        let (j, c) = (i / cin, i % cin);
        out.copy_from_slice(&by_channel[(c * nb + j) * hw..][..hw]);
    });
}

/// [`col2im`] of the 3x3, stride-2, padding-1 convolutions that halve an even-sized map
/// (ResNets' downsampling), input row by input row. An even input row `2t` takes kernel row 1
/// of output row `t`; an odd one `2t + 1` kernel row 0 of output row `t + 1`, then kernel row
/// 2 of output row `t`; within a row, even columns `2u` take kernel column 1 of output column
/// `u`, odd ones kernel column 0 of `u + 1`, then kernel column 2 of `u`. Each input pixel
/// gets its terms in the `(ki, kj)` order of the general loop, from 0, so the sums are the
/// same bits; but each row is written once, in one pass with contiguous reads, instead of
/// nine strided passes over the plane (for 8x8 outputs it also replaces the gather
/// tables).
fn col2im_k3s2p1(g: &ConvGeom, col: &[f32], nb: usize, dx: &mut [f32]) {
    let (p, n, hw, wo) = (g.out_pixels(), nb * g.out_pixels(), g.h * g.w, g.wo);
    dx.par_chunks_mut(hw).enumerate().for_each(|(i, plane)| {
        let (j, c) = (i / g.cin, i % g.cin);
        // Output row `oy` of kernel offset `(ki, kj)`.
        let src = |ki: usize, kj: usize, oy: usize| {
            let r = (c * 3 + ki) * 3 + kj;
            &col[r * n + j * p + oy * wo..][..wo]
        };
        for (iy, d) in plane.chunks_exact_mut(g.w).enumerate() {
            d.fill(0.0);
            let t = iy / 2;
            let terms: [Option<(usize, usize)>; 2] = if iy % 2 == 0 {
                [Some((1, t)), None]
            } else {
                [(t + 1 < g.ho).then_some((0, t + 1)), Some((2, t))]
            };
            for (ki, oy) in terms.into_iter().flatten() {
                let (s0, s1, s2) = (src(ki, 0, oy), src(ki, 1, oy), src(ki, 2, oy));
                for (u, pair) in d.chunks_exact_mut(2).enumerate() {
                    pair[0] += s1[u];
                    if u + 1 < wo {
                        pair[1] += s0[u + 1];
                    }
                    pair[1] += s2[u];
                }
            }
        }
    });
}

/// Visits every tap of the convolution that falls inside the input as `(index in col, index
/// in x)`, rows `(c, ki, kj)` outer and output pixels inner (so each input pixel sees its
/// kernel offsets in `(ki, kj)` order): the plain loops of the two references below.
fn for_each_tap(g: &ConvGeom, nb: usize, mut f: impl FnMut(usize, usize)) {
    let (p, n) = (g.out_pixels(), nb * g.out_pixels());
    for c in 0..g.cin {
        for ki in 0..g.k {
            for kj in 0..g.k {
                let r = (c * g.k + ki) * g.k + kj;
                for j in 0..nb {
                    for oy in 0..g.ho {
                        for ox in 0..g.wo {
                            let iy = (oy * g.stride + ki) as isize - g.pad as isize;
                            let ix = (ox * g.stride + kj) as isize - g.pad as isize;
                            if iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w {
                                f(
                                    r * n + j * p + oy * g.wo + ox,
                                    ((j * g.cin + c) * g.h + iy as usize) * g.w + ix as usize,
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Plain scalar im2col (the reference the tests compare [`im2col`] against).
pub fn im2col_ref<T: Copy + Default>(g: &ConvGeom, x: &[T], nb: usize) -> Vec<T> {
    let mut col = vec![T::default(); g.col_rows() * nb * g.out_pixels()];
    for_each_tap(g, nb, |ci, xi| col[ci] = x[xi]);
    col
}

/// Plain scalar col2im (the reference the tests compare [`col2im`] against): every term added
/// in f32 onto zeros, kernel offsets in `(ki, kj)` order.
pub fn col2im_ref(g: &ConvGeom, col: &[f32], nb: usize) -> Vec<f32> {
    let mut dx = vec![0f32; nb * g.in_len()];
    for_each_tap(g, nb, |ci, xi| dx[xi] += col[ci]);
    dx
}
