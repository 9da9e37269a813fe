//! GEMM operands as layers hold them: packed BFP mantissas with block scales, or floats. One
//! type, [`Operand`], for the linear and the convolution layers alike: their Q_a(X), Q_e(dY)
//! and Q_w(W).
//!
//! [`quantize_matrix`] applies one of the policy's formats to a `rows x cols` matrix; BFP
//! formats produce packed integers (8-bit storage really costs a byte per element), other
//! formats are fake-quantised to floats. [`matmul`] then multiplies two operands, each possibly
//! transposed, on the integer GEMM with the fused rescale whenever both are BFP and their block
//! structures map onto the GEMM's scale model (rows/columns, or K segments); otherwise it
//! dequantises and runs the float GEMM, which gives the same values up to float summation order.
//! The convolution's GEMMs take 8-bit operands with one scale per row (example or output
//! channel) or one in all ([`Operand::i8_rows`]); [`Operand::into_row_scaled`] brings an
//! operand to that form, or to floats.

use lowprec_formats::{
    fake_quantize, quantize_bfp_i16_into, quantize_bfp_i8_into, BfpFormat, Block, BlockLayout,
    NumberFormat, StreamKey,
};
use lowprec_kernels::{GemmBackend, GemmSpec, MatMut, MatRef, QMatRef, Scales};
use rayon::prelude::*;
use std::borrow::Cow;

use crate::NnError;

/// Packed mantissas.
#[derive(Clone, Debug, PartialEq)]
pub enum QData {
    I8(Vec<i8>),
    I16(Vec<i16>),
}

/// A BFP-quantised `rows x cols` matrix (row-major) with one scale per block.
#[derive(Clone, Debug, PartialEq)]
pub struct QMatrix {
    pub fmt: BfpFormat,
    pub rows: usize,
    pub cols: usize,
    pub data: QData,
    /// One scale per block, in [`BlockLayout`] block order.
    pub scales: Vec<f32>,
}

impl QMatrix {
    /// The values as floats (exact: every value is representable).
    pub fn to_f32(&self) -> Vec<f32> {
        let layout =
            BlockLayout::new(&[self.rows, self.cols], self.fmt.block).expect("valid layout");
        let mut out = vec![0f32; self.rows * self.cols];
        for r in layout.runs() {
            let s = self.scales[r.block];
            for i in r.start..r.start + r.len {
                out[i] = match &self.data {
                    QData::I8(v) => v[i] as f32 * s,
                    QData::I16(v) => v[i] as f32 * s,
                };
            }
        }
        out
    }
}

/// A GEMM operand: a `rows x cols` matrix, row-major.
#[derive(Clone, Debug, PartialEq)]
pub enum Operand {
    Q(QMatrix),
    /// Floats (`fp32`, or a fixed-point/small-float format already applied).
    F {
        data: Vec<f32>,
        rows: usize,
        cols: usize,
    },
    /// fp32 values used in place: the layer's own parameter, which the reader passes along
    /// ([`Operand::floats`]), instead of a copy made at every update.
    Param {
        rows: usize,
        cols: usize,
    },
}

/// An 8-bit operand as the convolution's GEMMs take it (see [`Operand::i8_rows`]).
#[derive(Clone, Copy, Debug)]
pub struct I8Rows<'a> {
    pub mant: &'a [i8],
    /// One scale per row with `per_row`, else one for the whole matrix.
    pub scales: &'a [f32],
    pub per_row: bool,
    pub max_abs: u32,
}

impl Operand {
    pub fn dims(&self) -> (usize, usize) {
        match self {
            Operand::Q(q) => (q.rows, q.cols),
            Operand::F { rows, cols, .. } | Operand::Param { rows, cols } => (*rows, *cols),
        }
    }

    /// Bytes this operand occupies (what a layer pays to keep it for backward); the parameter
    /// itself costs nothing more.
    pub fn bytes(&self) -> usize {
        match self {
            Operand::Q(q) => {
                let m = match &q.data {
                    QData::I8(v) => v.len(),
                    QData::I16(v) => 2 * v.len(),
                };
                m + 4 * q.scales.len()
            }
            Operand::F { data, .. } => 4 * data.len(),
            Operand::Param { .. } => 0,
        }
    }

    /// The values as floats (exact for BFP: every value is representable); `param` is the
    /// parameter an [`Operand::Param`] stands for (others ignore it).
    pub fn floats<'a>(&'a self, param: &'a [f32]) -> Cow<'a, [f32]> {
        match self {
            Operand::F { data, .. } => Cow::Borrowed(data),
            Operand::Param { .. } => Cow::Borrowed(param),
            Operand::Q(q) => Cow::Owned(match self.i8_rows() {
                Some(v) => {
                    let cols = q.cols.max(1);
                    v.mant
                        .iter()
                        .enumerate()
                        .map(|(i, &m)| {
                            let s = if v.per_row {
                                v.scales[i / cols]
                            } else {
                                v.scales[0]
                            };
                            m as f32 * s
                        })
                        .collect()
                }
                None => q.to_f32(),
            }),
        }
    }

    /// Rows `r0 .. r0 + n` as floats (borrowed when they are floats), one task per row.
    pub fn rows_f32(&self, r0: usize, n: usize) -> Cow<'_, [f32]> {
        let cols = self.dims().1;
        match (self, self.i8_rows()) {
            (Operand::F { data, .. }, _) => Cow::Borrowed(&data[r0 * cols..(r0 + n) * cols]),
            (_, Some(v)) => {
                let mut out = vec![0f32; n * cols];
                out.par_chunks_mut(cols.max(1))
                    .enumerate()
                    .for_each(|(j, o)| {
                        let s = v.scales[if v.per_row { r0 + j } else { 0 }];
                        let m = &v.mant[(r0 + j) * cols..][..cols];
                        o.iter_mut().zip(m).for_each(|(d, &v)| *d = v as f32 * s);
                    });
                Cow::Owned(out)
            }
            _ => Cow::Owned(self.floats(&[])[r0 * cols..(r0 + n) * cols].to_vec()),
        }
    }

    /// The 8-bit mantissas with one scale per row or one in all, if that is this operand.
    pub fn i8_rows(&self) -> Option<I8Rows<'_>> {
        match self {
            Operand::Q(QMatrix {
                fmt,
                data: QData::I8(mant),
                scales,
                ..
            }) if matches!(fmt.block, Block::Tensor | Block::Axis(0)) => Some(I8Rows {
                mant,
                scales,
                per_row: fmt.block == Block::Axis(0),
                max_abs: fmt.max_abs(),
            }),
            _ => None,
        }
    }

    /// This operand in a form [`Operand::i8_rows`] takes (with `per_row`, one scale per row:
    /// a tensor scale is repeated), or as floats: other BFP blocks and 9..16-bit mantissas are
    /// dequantised (exactly).
    pub fn into_row_scaled(self, per_row: bool) -> Operand {
        match self {
            Operand::Q(mut q) => match (&q.data, q.fmt.block) {
                (QData::I8(_), Block::Tensor) if per_row => {
                    q.scales = vec![q.scales.first().copied().unwrap_or(1.0); q.rows];
                    q.fmt.block = Block::Axis(0);
                    Operand::Q(q)
                }
                (QData::I8(_), Block::Tensor | Block::Axis(0)) => Operand::Q(q),
                _ => Operand::F {
                    data: q.to_f32(),
                    rows: q.rows,
                    cols: q.cols,
                },
            },
            other => other,
        }
    }
}

/// Quantises a `rows x cols` matrix under `fmt`. `tensor` and `layer` name it in errors.
pub fn quantize_matrix(
    x: &[f32],
    rows: usize,
    cols: usize,
    fmt: &NumberFormat,
    key: StreamKey,
    tensor: &str,
    layer: &str,
    step: u64,
) -> Result<Operand, NnError> {
    if x.len() != rows * cols {
        return Err(NnError::shape(
            layer,
            format!("{tensor}: {} values for a {rows}x{cols} matrix", x.len()),
        ));
    }
    let qerr = |e| NnError::quant(layer, step, e);
    match fmt {
        NumberFormat::Bfp(b) => {
            let layout = BlockLayout::new(&[rows, cols], b.block).map_err(qerr)?;
            let mut scales = Vec::new();
            let data = if b.fits_i8() {
                let mut m = vec![0i8; x.len()];
                quantize_bfp_i8_into(x, &layout, b, key, tensor, &mut m, &mut scales)
                    .map_err(qerr)?;
                QData::I8(m)
            } else {
                let mut m = vec![0i16; x.len()];
                quantize_bfp_i16_into(x, &layout, b, key, tensor, &mut m, &mut scales)
                    .map_err(qerr)?;
                QData::I16(m)
            };
            Ok(Operand::Q(QMatrix {
                fmt: *b,
                rows,
                cols,
                data,
                scales,
            }))
        }
        NumberFormat::F32 => Ok(Operand::F {
            data: copy_finite(x, tensor, layer, step)?,
            rows,
            cols,
        }),
        other => {
            let mut out = vec![0f32; x.len()];
            fake_quantize(x, &[rows, cols], other, key, tensor, &mut out).map_err(qerr)?;
            Ok(Operand::F {
                data: out,
                rows,
                cols,
            })
        }
    }
}

/// [`quantize_matrix`] of a matrix whose columns are `cols / inner` channels of `inner`
/// values each (a convolution's NCHW maps, or its `[out, in, kh, kw]` weights): formats
/// blocked along channels (FPGA BFP's `c_vector` blocks) see that structure; the others the
/// plain matrix.
pub fn quantize_matrix_channels(
    x: &[f32],
    rows: usize,
    cols: usize,
    inner: usize,
    fmt: &NumberFormat,
    key: StreamKey,
    tensor: &str,
    layer: &str,
    step: u64,
) -> Result<Operand, NnError> {
    if let NumberFormat::Fpga(_) = fmt {
        if inner > 1 && cols.is_multiple_of(inner) && x.len() == rows * cols {
            let mut out = vec![0f32; x.len()];
            fake_quantize(x, &[rows, cols / inner, inner], fmt, key, tensor, &mut out)
                .map_err(|e| NnError::quant(layer, step, e))?;
            return Ok(Operand::F {
                data: out,
                rows,
                cols,
            });
        }
    }
    quantize_matrix(x, rows, cols, fmt, key, tensor, layer, step)
}

/// [`quantize_matrix_channels`] of `rows` examples of `cols` values (channels of `inner`),
/// in the form the convolution's GEMMs take ([`Operand::into_row_scaled`], one scale per
/// example). fp32 values handed over become the float operand as they are, after the check for
/// Inf and NaN, instead of a copy.
pub fn quantize_examples(
    x: Cow<'_, [f32]>,
    rows: usize,
    cols: usize,
    inner: usize,
    fmt: &NumberFormat,
    key: StreamKey,
    tensor: &str,
    layer: &str,
    step: u64,
) -> Result<Operand, NnError> {
    if let (NumberFormat::F32, Cow::Owned(_)) = (fmt, &x) {
        check_finite(&x, tensor, layer, step)?;
        return Ok(Operand::F {
            data: x.into_owned(),
            rows,
            cols,
        });
    }
    let op = quantize_matrix_channels(&x, rows, cols, inner, fmt, key, tensor, layer, step)?;
    Ok(op.into_row_scaled(true))
}

/// The fp32 operand: a copy of `x`, in parallel pieces that are checked for Inf and NaN as
/// they are copied (a serial check, then a serial copy, do not get faster with a second
/// thread); the error is [`check_finite`]'s.
fn copy_finite(x: &[f32], tensor: &str, layer: &str, step: u64) -> Result<Vec<f32>, NnError> {
    const PIECE: usize = 1 << 16;
    let mut out = crate::scratch::Fill::<f32>::new(x.len());
    let worst = out
        .slots()
        .par_chunks_mut(PIECE)
        .zip(x.par_chunks(PIECE))
        .map(|(o, s)| {
            for (d, &v) in o.iter_mut().zip(s) {
                d.write(v);
            }
            lowprec_formats::run::max_abs_bits(s)
        })
        .max()
        .unwrap_or(0);
    if worst >= 0x7f80_0000 {
        check_finite(x, tensor, layer, step)?;
    }
    // SAFETY: the pieces of `out` and `x` pair up one to one, and each was copied whole.
    Ok(unsafe { out.assume_init() })
}

/// The fp32 "quantiser": an error naming the tensor, layer, step and first element that is
/// Inf or NaN. The vectorised bit scan first (Inf and NaN are the bit patterns from
/// 0x7f80_0000 up), the position only when there is one (an early-exit search does not
/// vectorise).
pub fn check_finite(x: &[f32], tensor: &str, layer: &str, step: u64) -> Result<(), NnError> {
    // In pieces on the pool: the scan of a whole activation on one thread left the others idle.
    const PIECE: usize = 1 << 16;
    let worst = if x.len() > PIECE {
        x.par_chunks(PIECE)
            .map(lowprec_formats::run::max_abs_bits)
            .max()
            .unwrap_or(0)
    } else {
        lowprec_formats::run::max_abs_bits(x)
    };
    if worst < 0x7f80_0000 {
        return Ok(());
    }
    match x.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(NnError::NonFinite {
            tensor: tensor.to_string(),
            layer: layer.to_string(),
            step,
            index: i,
            value: x[i],
        }),
        None => Ok(()),
    }
}

/// How one operand's scales vary, seen from the GEMM.
enum ScaleMap {
    /// Scales per segment of `seg` along K (`None`: independent of K), laid out for
    /// [`Scales`] with `group` and `seg_stride`.
    Ok {
        seg: Option<usize>,
        values: Vec<f32>,
        group: usize,
        seg_stride: usize,
    },
    Unsupported,
}

/// Maps a stored `rows x cols` BFP matrix used as A (`outer` = logical rows) or B (`outer` =
/// logical columns); `outer_is_rows`: the stored rows are the operand's outer index.
fn scale_map(q: &QMatrix, outer_is_rows: bool) -> ScaleMap {
    let (rows, cols) = (q.rows, q.cols);
    match q.fmt.block {
        Block::Tensor => ScaleMap::Ok {
            seg: None,
            values: q.scales.clone(),
            group: usize::MAX,
            seg_stride: 0,
        },
        Block::Axis(0) => {
            if outer_is_rows {
                ScaleMap::Ok {
                    seg: None,
                    values: q.scales.clone(),
                    group: 1,
                    seg_stride: 0,
                }
            } else {
                // rows are K: one scale per K index
                ScaleMap::Ok {
                    seg: Some(1),
                    values: q.scales.clone(),
                    group: usize::MAX,
                    seg_stride: 1,
                }
            }
        }
        Block::Axis(1) => {
            if outer_is_rows {
                ScaleMap::Ok {
                    seg: Some(1),
                    values: q.scales.clone(),
                    group: usize::MAX,
                    seg_stride: 1,
                }
            } else {
                ScaleMap::Ok {
                    seg: None,
                    values: q.scales.clone(),
                    group: 1,
                    seg_stride: 0,
                }
            }
        }
        Block::Tile(k) => {
            let tiles = cols.div_ceil(k.max(1));
            if outer_is_rows {
                // tiles run along K: segment k, scale (t, r) = block r * tiles + t.
                let mut v = vec![0f32; tiles * rows];
                for r in 0..rows {
                    for t in 0..tiles {
                        v[t * rows + r] = q.scales[r * tiles + t];
                    }
                }
                ScaleMap::Ok {
                    seg: Some(k),
                    values: v,
                    group: 1,
                    seg_stride: rows,
                }
            } else {
                // rows are K (one segment each), tiles group the outer index.
                ScaleMap::Ok {
                    seg: Some(1),
                    values: q.scales.clone(),
                    group: k,
                    seg_stride: tiles,
                }
            }
        }
        Block::Axis(_) => ScaleMap::Unsupported,
    }
}

fn view<T: Copy>(data: &[T], rows: usize, cols: usize, transposed: bool) -> MatRef<'_, T> {
    let m = MatRef {
        data,
        rows,
        cols,
        row_stride: cols,
        col_stride: 1,
    };
    if transposed {
        m.t()
    } else {
        m
    }
}

fn widen(d: &QData) -> Cow<'_, [i16]> {
    match d {
        QData::I16(v) => Cow::Borrowed(v),
        QData::I8(v) => Cow::Owned(v.iter().map(|&x| x as i16).collect()),
    }
}

/// `C (+)= op(A) * op(B)` where `op` transposes when the flag is set; C is row-major.
/// Returns whether the integer path ran.
pub fn matmul(
    backend: &dyn GemmBackend,
    a: &Operand,
    ta: bool,
    b: &Operand,
    tb: bool,
    c: &mut [f32],
    accumulate: bool,
    layer: &str,
) -> Result<bool, NnError> {
    let (ar, ac) = a.dims();
    let (br, bc) = b.dims();
    let (m, ka) = if ta { (ac, ar) } else { (ar, ac) };
    let (kb, n) = if tb { (bc, br) } else { (br, bc) };
    if ka != kb {
        return Err(NnError::shape(
            layer,
            format!("GEMM inner dimensions differ: {m}x{ka} times {kb}x{n}"),
        ));
    }
    if c.len() != m * n {
        return Err(NnError::shape(
            layer,
            format!("GEMM output has {} values, {m}x{n} expected", c.len()),
        ));
    }
    let kerr = |e| NnError::kernel(layer, e);
    if let (Operand::Q(qa), Operand::Q(qb)) = (a, b) {
        // A's outer index is its logical row: stored rows unless transposed.
        let ma = scale_map(qa, !ta);
        // B's outer index is its logical column: stored columns unless transposed.
        let mb = scale_map(qb, tb);
        if let (
            ScaleMap::Ok {
                seg: sa_seg,
                values: va,
                group: ga,
                seg_stride: ssa,
            },
            ScaleMap::Ok {
                seg: sb_seg,
                values: vb,
                group: gb,
                seg_stride: ssb,
            },
        ) = (ma, mb)
        {
            let segment = match (sa_seg, sb_seg) {
                (None, None) => Some(usize::MAX),
                (Some(s), None) | (None, Some(s)) => Some(s),
                (Some(x), Some(y)) if x == y => Some(x),
                _ => None,
            };
            if let Some(segment) = segment {
                let spec = GemmSpec {
                    segment,
                    accumulate,
                };
                let sa = Scales {
                    values: &va,
                    group: ga,
                    seg_stride: ssa,
                };
                let sb = Scales {
                    values: &vb,
                    group: gb,
                    seg_stride: ssb,
                };
                let cm = MatMut::row_major(c, m, n).map_err(kerr)?;
                match (&qa.data, &qb.data) {
                    (QData::I8(da), QData::I8(db)) => {
                        let aq = QMatRef {
                            mat: view(da, ar, ac, ta),
                            scales: sa,
                            max_abs: qa.fmt.max_abs(),
                        };
                        let bq = QMatRef {
                            mat: view(db, br, bc, tb),
                            scales: sb,
                            max_abs: qb.fmt.max_abs(),
                        };
                        backend.gemm_q8(aq, bq, spec, cm).map_err(kerr)?;
                    }
                    (da, db) => {
                        let (wa, wb) = (widen(da), widen(db));
                        let aq = QMatRef {
                            mat: view(&wa, ar, ac, ta),
                            scales: sa,
                            max_abs: qa.fmt.max_abs(),
                        };
                        let bq = QMatRef {
                            mat: view(&wb, br, bc, tb),
                            scales: sb,
                            max_abs: qb.fmt.max_abs(),
                        };
                        backend.gemm_q16(aq, bq, spec, cm).map_err(kerr)?;
                    }
                }
                return Ok(true);
            }
        }
    }
    // Float path: dequantise what is quantised. (An `Operand::Param` is given no parameter
    // here: its empty values are a shape error of the GEMM.)
    let (fa, fb) = (a.floats(&[]), b.floats(&[]));
    let cm = MatMut::row_major(c, m, n).map_err(kerr)?;
    backend
        .gemm_f32(view(&fa, ar, ac, ta), view(&fb, br, bc, tb), accumulate, cm)
        .map_err(kerr)?;
    Ok(false)
}
