//! What one chunk of examples computes in each step of the convolution: the forward GEMM
//! (also the stride-1 transposed convolution of dX), the float weight gradient and the strided
//! layers' dX through col2im, and one piece of the 8-bit weight gradient. [`super::schedule`]
//! decides which chunks run where; [`super::layout`] holds the copies around the GEMMs.

use lowprec_kernels::{
    GemmBackend, GemmSpec, GroupedMut, Im2colRef, MatMut, MatRef, QIm2colRef, QMatRef, Scales,
};
use std::borrow::Cow;
use std::mem::MaybeUninit;

use super::layout::{
    gather_errors, gather_errors_of, gather_errors_t, gather_examples, row_major, scatter,
};
use super::schedule::{clock, ChunkTimes};
use crate::im2col::{col2im, im2col, im2col_rows, im2col_shift_rows, shift_rows_len, ConvGeom};
use crate::operand::{I8Rows, Operand};
use crate::scratch::Scratch;
use crate::NnError;

/// One chunk of the forward GEMM (and of the stride-1 transposed convolution): examples
/// `b0 .. b0 + nb` of `xq` into `yc` (`[nb, Cout, P]`, every slot written):
///
/// ```text
/// C[Cout, nb*P] = W~[Cout, rows] col(X~)[rows, nb*P]     (8-bit: exact sums, one rescale)
/// yc            = scatter(C) + bias
/// ```
///
/// Without a bias, where the backend packs the columns from the maps, the 8-bit GEMM writes C
/// straight into `yc` (its column groups are the examples' planes) and there is no scatter.
///
/// Integer GEMM when both operands are 8-bit mantissas (weights with one scale or one per row,
/// examples with one scale each), float GEMM otherwise (`wf`: the weights as floats), in pieces
/// of `piece_rows` output rows (the whole map when `piece_rows >= ho`, which it is unless the
/// chunk is one example), each im2col'd, multiplied and scattered in turn; with `wf.by_row`
/// (one-example chunks of "same" convolutions), each piece's columns are shared by the kernel
/// rows and it is `k` GEMMs ([`gemm_shift_rows`]).
#[allow(clippy::too_many_arguments)]
pub(super) fn forward_chunk(
    backend: &dyn GemmBackend,
    name: &str,
    g: &ConvGeom,
    cout: usize,
    wq: &Operand,
    wf: Option<FloatWeights<'_>>,
    xq: &Operand,
    bias: Option<&[f32]>,
    b0: usize,
    nb: usize,
    piece_rows: usize,
    yc: &mut [MaybeUninit<f32>],
) -> Result<ChunkTimes, NnError> {
    let (rows, p) = (g.col_rows(), g.out_pixels());
    let n = nb * p;
    let kerr = |e| NnError::kernel(name, e);
    let mut t = ChunkTimes::default();
    if let (Some(w), Some(x)) = (wq.i8_rows(), xq.i8_rows()) {
        let xin = &x.mant[b0 * g.in_len()..(b0 + nb) * g.in_len()];
        let a = QMatRef {
            mat: row_major(w.mant, cout, rows),
            scales: if w.per_row {
                Scales::per_index(w.scales)
            } else {
                Scales::uniform(w.scales)
            },
            max_abs: w.max_abs,
        };
        let (sb, bound) = (
            Scales::per_group(&x.scales[b0..b0 + nb], p),
            i8_operand_bound(x.max_abs),
        );
        let cols = Columns {
            g,
            maps: xin,
            examples: nb,
            transposed: false,
            scales: sb,
            bound,
        };
        // Without a bias the product's column groups are the examples' output planes: written
        // in place.
        if bias.is_none() {
            if let Some(bq) = cols.packed_by(backend, a.max_abs).map_err(kerr)? {
                let c = GroupedMut::new(yc, cout, n, p).map_err(kerr)?;
                clock(&mut t.gemm, || backend.gemm_q8_im2col_grouped(a, bq, c)).map_err(kerr)?;
                return Ok(t);
            }
        }
        let mut cbuf = Scratch::<f32>::new(cout * n);
        let cm = MatMut::row_major(&mut cbuf, cout, n).map_err(kerr)?;
        gemm_on_columns(backend, a, &cols, GemmSpec::whole_k(), cm, &mut t).map_err(kerr)?;
        clock(&mut t.other, || scatter(&cbuf, cout, p, 0, bias, yc));
        return Ok(t);
    }
    // Float: Y[Cout, n] = W col, both operands row-major along K, which the `gemm` crate reads
    // in place (W) or packs by contiguous copies (col); for the transposed product, Y^T = col^T
    // W^T, it would gather both element by element. One example too large for the float
    // budget (then alone in its chunk) runs in pieces of output rows, each scattered while its
    // columns are in L2.
    let wf = wf.expect("float weights prepared by the caller");
    debug_assert!(
        nb == 1 || piece_rows >= g.ho,
        "pieces of a one-example chunk only"
    );
    let step = piece_rows.clamp(1, g.ho.max(1));
    let xf = xq.rows_f32(b0, nb);
    let w = row_major(wf.w, cout, rows);
    let n_max = nb * step * g.wo;
    let col_max = match wf.by_row {
        Some(_) => g.cin * g.k * shift_rows_len(g, 0, step),
        None => rows * n_max,
    };
    let (mut col_buf, mut c_buf) = (
        Scratch::<f32>::new(col_max),
        Scratch::<f32>::new(cout * n_max),
    );
    for oy0 in (0..g.ho).step_by(step) {
        let oy1 = (oy0 + step).min(g.ho);
        let np = nb * (oy1 - oy0) * g.wo;
        let cbuf = &mut c_buf[..cout * np];
        let cm = MatMut::row_major(cbuf, cout, np).map_err(kerr)?;
        match wf.by_row {
            Some(taps) => {
                assert_eq!(nb, 1, "kernel-row-shared columns of one example");
                let col = &mut col_buf[..g.cin * g.k * shift_rows_len(g, oy0, oy1)];
                clock(&mut t.im2col, || im2col_shift_rows(g, &xf, oy0, oy1, col));
                clock(&mut t.gemm, || {
                    gemm_shift_rows(backend, g, cout, taps, col, oy1 - oy0, cm)
                })
                .map_err(kerr)?;
            }
            None => {
                let col = &mut col_buf[..rows * np];
                clock(&mut t.im2col, || im2col_rows(g, &xf, nb, oy0, oy1, col));
                let colm = row_major(col, rows, np);
                clock(&mut t.gemm, || backend.gemm_f32(w, colm, false, cm)).map_err(kerr)?;
            }
        }
        let cbuf = &c_buf[..cout * np];
        clock(&mut t.other, || {
            scatter(cbuf, cout, p, oy0 * g.wo, bias, yc)
        });
    }
    Ok(t)
}

/// The float weights of a chunk's GEMMs: `[Cout, rows]`, and for one-example chunks of a
/// "same" convolution with `k > 1` the same split by kernel row
/// ([`super::layout::split_kernel_rows`]), the A operands of [`gemm_shift_rows`].
#[derive(Clone, Copy)]
pub(super) struct FloatWeights<'a> {
    pub w: &'a [f32],
    pub by_row: Option<&'a [f32]>,
}

/// Whether one-example float chunks of `g` take the kernel-row-shared columns: "same"
/// convolutions with kernels wider than 1, whose im2col is `k` times larger.
pub(super) fn shares_kernel_rows(g: &ConvGeom) -> bool {
    g.is_same() && g.k > 1
}

/// `C[Cout, rows_out * w] = W col` for `rows_out` output rows of one example, from the
/// kernel-row-shared columns `shared` ([`im2col_shift_rows`]) and the weights split by kernel
/// row (`taps`, `[k, Cout, Cin*k]`):
///
/// ```text
/// C  = W_0 window_0(shared);  C += W_ki window_ki(shared)  for ki = 1 .. k-1
/// ```
///
/// `window_ki` is the `Cin*k x rows_out*w` view from column `ki * w`, read in place with the
/// shared matrix's row stride.
fn gemm_shift_rows(
    backend: &dyn GemmBackend,
    g: &ConvGeom,
    cout: usize,
    taps: &[f32],
    shared: &[f32],
    rows_out: usize,
    c: MatMut<'_, f32>,
) -> Result<(), lowprec_kernels::KernelError> {
    let (k, kc) = (g.k, g.cin * g.k);
    let len = shared.len() / kc.max(1);
    for ki in 0..k {
        let a = row_major(&taps[ki * cout * kc..][..cout * kc], cout, kc);
        let b = MatRef {
            data: &shared[(ki * g.w).min(shared.len())..],
            rows: kc,
            cols: rows_out * g.w,
            row_stride: len,
            col_stride: 1,
        };
        let c = MatMut {
            data: &mut *c.data,
            rows: c.rows,
            cols: c.cols,
            ld: c.ld,
        };
        backend.gemm_f32(a, b, ki > 0, c)?;
    }
    Ok(())
}

/// The 8-bit im2col columns of `examples` maps of a layer (`col`, or `col^T` with
/// `transposed`) as a GEMM's B operand, with their scales and declared bound.
pub(super) struct Columns<'a> {
    pub g: &'a ConvGeom,
    pub maps: &'a [i8],
    pub examples: usize,
    pub transposed: bool,
    pub scales: Scales<'a>,
    pub bound: u32,
}

impl<'a> Columns<'a> {
    /// The columns as an operand `backend` packs from the maps, for an A bounded by
    /// `a_max_abs`: "same" convolutions whose maps it takes whole; `None` otherwise.
    fn packed_by(
        &self,
        backend: &dyn GemmBackend,
        a_max_abs: u32,
    ) -> Result<Option<QIm2colRef<'a>>, lowprec_kernels::KernelError> {
        let g = self.g;
        if !g.is_same() {
            return Ok(None);
        }
        let bq = QIm2colRef {
            src: Im2colRef::new(self.maps, self.examples, g.cin, g.h, g.w, g.k)?,
            transposed: self.transposed,
            scales: self.scales,
            max_abs: self.bound,
        };
        Ok(backend.packs_im2col(a_max_abs, &bq).then_some(bq))
    }
}

/// `C (+)= A B` with B the columns: packed by the backend straight from the maps
/// ([`lowprec_kernels::im2col_b`]) for "same" convolutions it packs whole, else through this
/// layer's im2col matrix. The maps route saves writing a matrix 9 times the maps and the
/// GEMM's packer reading it back.
pub(super) fn gemm_on_columns(
    backend: &dyn GemmBackend,
    a: QMatRef<'_, i8>,
    b: &Columns<'_>,
    spec: GemmSpec,
    c: MatMut<'_, f32>,
    t: &mut ChunkTimes,
) -> Result<(), lowprec_kernels::KernelError> {
    if let Some(bq) = b.packed_by(backend, a.max_abs)? {
        return clock(&mut t.gemm, || backend.gemm_q8_im2col(a, bq, spec, c));
    }
    let g = b.g;
    let (rows, n) = (g.col_rows(), b.examples * g.out_pixels());
    let mut col = Scratch::<i8>::new(rows * n);
    clock(&mut t.im2col, || im2col(g, b.maps, b.examples, &mut col));
    let mat = row_major(&col, rows, n);
    let bq = QMatRef {
        mat: if b.transposed { mat.t() } else { mat },
        scales: b.scales,
        max_abs: b.bound,
    };
    clock(&mut t.gemm, || backend.gemm_q8(a, bq, spec, c))
}

/// The bound declared to the integer GEMM for a large 8-bit operand built here (im2col
/// columns, gathered errors) from mantissas within `format_bound`: for 8-bit formats (bound
/// 127) the full i8 range, 128. Any i8 meets it, so the GEMM need not scan the operand to
/// check it; the price is a K limit per exact sum of 132104 products instead of 133144 (see
/// `lowprec_kernels::k_safe`), which the weight gradient's pieces take into account.
/// Narrower formats keep their bound, whose larger K limits are worth the scan.
pub(super) fn i8_operand_bound(format_bound: u32) -> u32 {
    if format_bound == 127 {
        128
    } else {
        format_bound
    }
}

/// One backward group's float dW^T sum (if the float path ran) and its busy times.
pub(super) type GroupResult = (Option<Vec<f32>>, ChunkTimes);

/// The backward pass's work per chunk of examples: the float path's weight gradient and the
/// strided layers' dX through col2im.
pub(super) struct BackwardChunks<'a> {
    pub backend: &'a dyn GemmBackend,
    pub name: &'a str,
    pub g: &'a ConvGeom,
    pub cout: usize,
    pub wq: Option<&'a Operand>,
    /// The weights as floats (`[Cout, rows]`), when the col2im route's dcol GEMM runs in
    /// float; it reads them transposed through strides.
    pub wf: Option<&'a [f32]>,
    pub dyq: &'a Operand,
    pub xq: &'a Operand,
    pub chunk: usize,
    pub need_dcol: bool,
    pub float_dw: bool,
    /// The float dW as `dW[Cout, rows] (+)= dY[Cout, n] col^T[n, rows]` (see
    /// [`float_dw_cout_major`]) rather than transposed.
    pub dw_cout_major: bool,
}

/// Output channels from which the float weight gradient runs with Cout as M, written in the
/// parameter's own layout, rather than as `dW^T[rows, Cout] = col dY^T` and transposed after.
/// With few channels the transposed form wins (the GEMM with Cout as M is slow for 16
/// channels, and 128 or 256 still lose more GEMM time than the transposes cost); with 512,
/// the transposes of the errors and of dW cost more than the column-major `col^T` costs the
/// GEMM.
const DW_COUT_MAJOR_MIN: usize = 512;

pub(super) fn float_dw_cout_major(cout: usize) -> bool {
    cout >= DW_COUT_MAJOR_MIN
}

impl BackwardChunks<'_> {
    /// Examples `e0 .. e1` (whole chunks) on this thread: returns the float path's dW^T sum
    /// over them (`[rows, Cout]`, chunks added in order) and writes their dX into `dx` (the
    /// strided layers' col2im route).
    ///
    /// `store`, when given, is storage for the dW sum (its contents are overwritten).
    pub fn run(
        &self,
        e0: usize,
        e1: usize,
        dx: &mut [f32],
        mut store: Option<Vec<f32>>,
    ) -> Result<GroupResult, NnError> {
        let (g, cout) = (self.g, self.cout);
        let (rows, p) = (g.col_rows(), g.out_pixels());
        let kerr = |e| NnError::kernel(self.name, e);
        let backend = self.backend;
        let mut t = ChunkTimes::default();
        let mut gwt: Option<Vec<f32>> = None;
        for b0 in (e0..e1).step_by(self.chunk) {
            let nb = self.chunk.min(e1 - b0);
            let n = nb * p;
            let dxc = if self.need_dcol {
                &mut dx[(b0 - e0) * g.in_len()..(b0 - e0 + nb) * g.in_len()]
            } else {
                &mut []
            };
            // The errors as `[Cout, n]` for the dcol GEMM ([`by_channel`]). One example's
            // errors are also read in place by the dW GEMM, through a transposed view, rather
            // than transposed: the float path's small layers run one example per chunk.
            let one = nb == 1;
            let mut eft: Option<Cow<'_, [f32]>> = None;
            let mut et_q: Option<Vec<i8>> = None;
            if self.float_dw {
                // Float path (fp32, or formats the integer GEMM cannot take), in the
                // orientation `float_dw_cout_major` chooses for this layer.
                let xf = self.xq.rows_f32(b0, nb);
                let mut col = Scratch::<f32>::new(rows * n);
                clock(&mut t.im2col, || im2col(g, &xf, nb, &mut col));
                drop(xf);
                let ef = self.dyq.rows_f32(b0, nb);
                let accumulate = gwt.is_some();
                let acc = gwt.get_or_insert_with(|| match store.take() {
                    // The first GEMM does not accumulate: any contents do.
                    Some(v) if v.len() == rows * cout => v,
                    _ => vec![0f32; rows * cout],
                });
                if self.dw_cout_major {
                    // dW[Cout, rows] (+)= dY[Cout, n] col^T[n, rows]
                    let ec = by_channel(ef, cout, p, nb, &mut t);
                    let cm = MatMut::row_major(acc, cout, rows).map_err(kerr)?;
                    let (a, b) = (row_major(&ec, cout, n), row_major(&col, rows, n).t());
                    clock(&mut t.gemm, || backend.gemm_f32(a, b, accumulate, cm)).map_err(kerr)?;
                    eft = Some(ec);
                } else {
                    // dW^T[rows, Cout] (+)= col[rows, n] dY^T[n, Cout]
                    let et_t;
                    let b = if one {
                        row_major(&ef, cout, n).t()
                    } else {
                        et_t = clock(&mut t.im2col, || gather_errors_t(cout, p, &ef));
                        row_major(&et_t, n, cout)
                    };
                    let cm = MatMut::row_major(acc, rows, cout).map_err(kerr)?;
                    let a = row_major(&col, rows, n);
                    clock(&mut t.gemm, || backend.gemm_f32(a, b, accumulate, cm)).map_err(kerr)?;
                    if self.need_dcol {
                        eft = Some(by_channel(ef, cout, p, nb, &mut t));
                    }
                }
            } else if let Some(e) = self.dyq.i8_rows() {
                et_q = Some(clock(&mut t.im2col, || {
                    gather_errors(cout, p, e.mant, b0, nb)
                }));
            }
            if !self.need_dcol {
                continue;
            }
            // dX by col2im: dcol[rows, n] = W^T dY (written whole by the GEMM), then col2im.
            // The float W^T is transposed in memory, once per step: through a transposed view
            // the `gemm` crate would gather it element by element in every call.
            let mut dcol = Scratch::<f32>::new(rows * n);
            match (
                self.wq.and_then(Operand::i8_rows),
                self.dyq.i8_rows(),
                &et_q,
            ) {
                (Some(w), Some(e), Some(et)) => {
                    // W^T: per-channel scales run along K, so one segment per K index; a
                    // tensor scale needs no segments.
                    let (sa, segment) = if w.per_row {
                        (Scales::per_segment(w.scales), 1)
                    } else {
                        (Scales::uniform(w.scales), usize::MAX)
                    };
                    let a = QMatRef {
                        mat: row_major(w.mant, cout, rows).t(),
                        scales: sa,
                        max_abs: w.max_abs,
                    };
                    let bq = QMatRef {
                        mat: row_major(et, cout, n),
                        scales: Scales::per_group(&e.scales[b0..b0 + nb], p),
                        max_abs: i8_operand_bound(e.max_abs),
                    };
                    let spec = GemmSpec {
                        segment,
                        accumulate: false,
                    };
                    let cm = MatMut::row_major(&mut dcol, rows, n).map_err(kerr)?;
                    clock(&mut t.gemm, || backend.gemm_q8(a, bq, spec, cm)).map_err(kerr)?;
                }
                _ => {
                    let wf = self.wf.expect("float weights prepared by the caller");
                    let eft = match eft {
                        Some(e) => e,
                        None => by_channel(self.dyq.rows_f32(b0, nb), cout, p, nb, &mut t),
                    };
                    let cm = MatMut::row_major(&mut dcol, rows, n).map_err(kerr)?;
                    clock(&mut t.gemm, || {
                        backend.gemm_f32(
                            row_major(wf, cout, rows).t(),
                            row_major(&eft, cout, n),
                            false,
                            cm,
                        )
                    })
                    .map_err(kerr)?;
                }
            }
            clock(&mut t.im2col, || col2im(g, &dcol, nb, dxc));
        }
        Ok((gwt, t))
    }
}

/// A float chunk's errors `ef` (`[nb, Cout, P]`) as `[Cout, nb*P]`: gathered, or `ef` itself
/// for one example, which is that already.
fn by_channel<'e>(
    ef: Cow<'e, [f32]>,
    cout: usize,
    p: usize,
    nb: usize,
    t: &mut ChunkTimes,
) -> Cow<'e, [f32]> {
    if nb == 1 {
        return ef;
    }
    Cow::Owned(clock(&mut t.im2col, || gather_errors(cout, p, &ef, 0, nb)))
}

/// One piece of the 8-bit weight gradient (examples `piece` of the batch, all with the scale
/// product `prod`): their errors and maps gathered, then
///
/// ```text
/// gw (+)= tofloat(dY~[Cout, piece] col(X~[piece])^T, prod)    (one exact integer sum)
/// ```
pub(super) fn weight_grad_piece(
    backend: &dyn GemmBackend,
    name: &str,
    g: &ConvGeom,
    cout: usize,
    e: I8Rows<'_>,
    x: I8Rows<'_>,
    prod: f32,
    piece: &[usize],
    accumulate: bool,
    gw: &mut [f32],
) -> Result<ChunkTimes, NnError> {
    let kerr = |e| NnError::kernel(name, e);
    let (rows, p) = (g.col_rows(), g.out_pixels());
    let mut t = ChunkTimes::default();
    let n = piece.len() * p;
    let (et, xin) = clock(&mut t.im2col, || {
        (
            gather_errors_of(cout, p, e.mant, piece),
            gather_examples(g.in_len(), x.mant, piece),
        )
    });
    let prod = [prod];
    let one = [1f32];
    let a = QMatRef {
        mat: row_major(&et, cout, n),
        scales: Scales::uniform(&prod),
        max_abs: e.max_abs,
    };
    let spec = GemmSpec {
        segment: usize::MAX,
        accumulate,
    };
    let cm = MatMut::row_major(gw, cout, rows).map_err(kerr)?;
    let cols = Columns {
        g,
        maps: &xin,
        examples: piece.len(),
        transposed: true,
        scales: Scales::uniform(&one),
        bound: i8_operand_bound(x.max_abs),
    };
    gemm_on_columns(backend, a, &cols, spec, cm, &mut t).map_err(kerr)?;
    Ok(t)
}
