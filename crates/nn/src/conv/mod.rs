//! 2-D convolution on the integer GEMM, following 002's Algorithm 1 and Fig. 3.
//!
//! ```text
//! forward:   X~, qa = Q_a(X)                      (one exponent per example)
//!            W~, qw = Q_w(W)                      (once per weight update)
//!            col    = im2col(X~)                  (on the 8-bit mantissas)
//!            Y      = tofloat(W~ col, qw, qa) + b (one GEMM for a chunk of examples)
//! backward:  db     = sum over examples and pixels of dY            (float)
//!            dY~, qe = Q_e(dY)                    (one exponent per example)
//!            dW     = sum over groups G of examples with equal qe_j * qa_j:
//!                     tofloat(dY~(G) col(G)^T, qe_j * qa_j)    (one exact integer sum per group)
//!            dX     = tofloat(rot180(W~)^T (*) dY~, qw, qe)   (stride 1: transposed convolution)
//!                     col2im(tofloat(W~^T dY~, qw, qe))       (strided layers)
//! ```
//!
//! `Conv2d::forward_input` and `Conv2d::backward_errors` are these steps in this order.
//! What one chunk of examples computes in a step is in `chunk`, how the chunks are cut and
//! shared among threads in `schedule`, the copies between NCHW tensors and GEMM operands
//! in `layout`. The quantised operands are [`crate::operand::Operand`]s, as in the linear
//! layer, in the form the GEMMs here take: 8-bit mantissas with one scale per example (X~,
//! dY~), one per output channel or one in all (W~), or floats.
//!
//! Grouping the weight gradient by scale instead of one K segment per example gives the same
//! mathematical sum with fewer roundings (products with one power-of-two scale add exactly in
//! integers) and reads and writes dW once per group instead of once per example, which is what
//! made small feature maps slow (segments of 16 and 4 values in VGG16's last layers). The
//! transposed convolution keeps dX's GEMM output the size of dX, where col2im needed a float
//! `dcol` k*k times larger.
//!
//! Layout: channels first (NCHW), what the data crate produces, so the network input needs no
//! transpose. With NCHW the GEMM output `[Cout, nb*P]` (P = output pixels) is `[nb, Cout, P]`
//! in column groups of P: the 8-bit GEMMs that pack from the maps write it in place
//! ([`lowprec_kernels::GroupedMut`]); the other routes scatter it (one float copy of the
//! output), and the errors are gathered the other way (one byte per value in BFP8): both
//! memory-bound copies, small next to the GEMMs
//! (`2*K` operations per output value, K = Cin*k*k >= 27). Channels-last would make the GEMM
//! output directly usable but would cost a transpose of every input image and of every
//! feature map entering a pooling or batch-norm layer written for planes.
//!
//! Examples are processed in chunks whose `col` stays below [`COL_BUDGET`] values (fewer on
//! the float path for small layers, [`COL_MIN_F32`]; [`COL_BUDGET_I8`] bytes for the 8-bit
//! weight gradient), bounding the memory of im2col buffers; chunks and groups depend only on
//! the layer's shape and the scales, never on the thread count. The layer keeps the quantised
//! input (one byte per value in BFP8) for backward and recomputes its im2col there. Weights
//! are He-initialised from the fan-out (`uniform(+-sqrt(6 / (k*k*Cout)))`, SWALP's
//! `normal(0, sqrt(2/n))` in uniform form); biases start at 0.

mod chunk;
mod layout;
mod schedule;

use lowprec_formats::NumberFormat;
use rayon::prelude::*;
use std::borrow::Cow;

use crate::ctx::{Category, StreamKind};
use crate::im2col::ConvGeom;
use crate::init;
use crate::layer::{Layer, Param};
use crate::operand::{check_finite, quantize_examples, quantize_matrix_channels, Operand};
use crate::{Ctx, NnError, Tensor, TensorKind};
use chunk::{float_dw_cout_major, i8_operand_bound, weight_grad_piece, BackwardChunks};
use layout::{flip_weights, transpose_into};
use schedule::{
    backward_chunks, chunk_for, chunk_for_float, conv_gemm, even_chunk, weight_grad_pieces,
    weight_grad_run,
};
pub use schedule::{COL_BUDGET, COL_BUDGET_I8, COL_MIN_F32, COL_MIN_I8};

pub struct Conv2d {
    id: u64,
    name: String,
    pub geom: ConvGeom,
    pub cout: usize,
    pub weight: Param,
    pub bias: Option<Param>,
    wq: Option<(u64, Operand)>,
    /// The format `wq` was made in (a format change re-quantises as a weight change does).
    wq_fmt: NumberFormat,
    saved_x: Option<Operand>,
}

/// How the backward pass computes dX.
#[derive(Clone, Copy, PartialEq, Eq)]
enum DxRoute {
    /// Not needed (nothing upstream learns from it).
    None,
    /// Stride 1: the transposed convolution, one GEMM `rot180(W~)^T x im2col(dY~)` whose
    /// output is already the size of dX; every product of an input pixel's gradient lands in
    /// one integer sum, rescaled once.
    Transposed,
    /// `dcol = W~^T dY~` per chunk, then col2im: writes and re-reads a float `dcol` k*k times
    /// the size of dX.
    Col2im,
}

impl DxRoute {
    /// The transposed convolution wherever the stride allows, except where flipping the
    /// weights (a copy of `Cout * Cin * k * k` values) costs more than `dcol` (`Cin * k * k *
    /// B * P` values): with float weights and no more output pixels in the batch than output
    /// channels. With 8-bit weights the integer dcol GEMM is the slower one even there; with
    /// per-channel scales (which run along K once transposed) only col2im applies.
    fn choose(need_dx: bool, g: &ConvGeom, wq: Option<&Operand>, cout: usize, b: usize) -> Self {
        if !need_dx {
            return DxRoute::None;
        }
        let transposed = g.stride == 1
            && match wq.and_then(Operand::i8_rows) {
                Some(w) => !w.per_row,
                None => cout < b * g.out_pixels(),
            };
        if transposed {
            DxRoute::Transposed
        } else {
            DxRoute::Col2im
        }
    }
}

impl Conv2d {
    /// A `k x k` convolution with `cout` filters over `[cin, h, w]` examples.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: u64,
        name: &str,
        in_shape: &[usize],
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
        bias: bool,
        seed: u64,
    ) -> Result<Self, NnError> {
        let [cin, h, w] = in_shape else {
            return Err(NnError::Spec(format!(
                "{name}: conv expects [channels, height, width] inputs, got {in_shape:?}"
            )));
        };
        if cout == 0 {
            return Err(NnError::Spec(format!("{name}: conv needs out >= 1")));
        }
        let geom = ConvGeom::new(*cin, *h, *w, k, stride, pad)
            .map_err(|e| NnError::Spec(format!("{name}: {e}")))?;
        let rows = geom.col_rows();
        let bound = init::kaiming_bound(k * k * cout);
        let weight = Param::new(
            format!("{name}.weight"),
            vec![cout, *cin, k, k],
            init::uniform(cout * rows, bound, seed, id, 0),
            true,
        );
        let bias =
            bias.then(|| Param::new(format!("{name}.bias"), vec![cout], vec![0.0; cout], false));
        Ok(Conv2d {
            id,
            name: name.to_string(),
            geom,
            cout,
            weight,
            bias,
            wq: None,
            wq_fmt: NumberFormat::F32,
            saved_x: None,
        })
    }

    /// Examples per chunk on the 8-bit path: as many as keep `col` within [`COL_BUDGET`] (at
    /// least one).
    pub fn chunk_examples(&self) -> usize {
        chunk_for(&self.geom)
    }

    /// Examples per chunk on the float path (see [`COL_MIN_F32`]).
    pub fn chunk_examples_float(&self) -> usize {
        chunk_for_float(&self.geom, self.cout)
    }

    /// The forward pass of an input of batch shape `shape` (borrowed or handed over).
    fn forward_input(
        &mut self,
        ctx: &mut Ctx<'_>,
        shape: &[usize],
        x: Cow<'_, [f32]>,
        train: bool,
    ) -> Result<Tensor, NnError> {
        let g = self.geom;
        if shape.len() != 4 || shape[1..] != [g.cin, g.h, g.w] {
            return Err(self.bad_inputs(vec![shape]));
        }
        let b = shape[0];
        // X~ = Q_a(X), one exponent per example.
        let xq = self.quantize_input(ctx, x, b)?;
        // W~ = Q_w(W), once per weight update.
        self.quantized_weights(ctx)?;
        // Y = tofloat(W~ im2col(X~)) + b, chunk by chunk.
        let wq = &self.wq.as_ref().expect("quantised above").1;
        let bias = self.bias.as_ref().map(|p| p.value.as_slice());
        let y = conv_gemm(
            ctx,
            &self.name,
            &g,
            self.cout,
            wq,
            &self.weight.value,
            &xq,
            bias,
        )?;
        self.saved_x = if train { Some(xq) } else { None };
        Tensor::new(y, vec![b, self.cout, g.ho, g.wo])
    }

    /// The backward pass from the errors `dy` of batch shape `shape` (borrowed or handed over).
    fn backward_errors(
        &mut self,
        ctx: &mut Ctx<'_>,
        shape: &[usize],
        dy: Cow<'_, [f32]>,
    ) -> Result<Vec<Tensor>, NnError> {
        let xq = self.take_saved(shape)?;
        let g = self.geom;
        let b = shape.first().copied().unwrap_or(0);
        if b == 0 {
            return Ok(vec![self.empty_backward(ctx)]);
        }
        // db = sum of dY over examples and pixels.
        if let Some(bias) = &mut self.bias {
            ctx.timed(Category::Other, |_| {
                bias_grad(&dy, b, self.cout, g.out_pixels(), &mut bias.grad)
            });
        }
        // dY~ = Q_e(dY), one exponent per example.
        let dyq = self.quantize_errors(ctx, dy, b)?;
        // dW with 8-bit operands: exact integer sums per group of examples sharing a scale.
        let int_dw = dyq.i8_rows().is_some() && xq.i8_rows().is_some();
        if int_dw {
            self.weight_grad_grouped(ctx, &dyq, &xq)?;
        }
        let need_dx = ctx.need_input_grad;
        if need_dx && self.wq.is_none() {
            return Err(NnError::NoForward {
                layer: self.name.clone(),
            });
        }
        let wq = self.wq.as_ref().map(|w| &w.1);
        let route = DxRoute::choose(need_dx, &g, wq, self.cout, b);
        // dW in float (fp32, or formats the integer GEMM cannot take) and dX through col2im,
        // chunk by chunk in one pass (they share the errors' gather).
        let mut dx = Vec::new();
        if !int_dw || route == DxRoute::Col2im {
            dx = self.float_dw_and_col2im_dx(ctx, &dyq, &xq, route == DxRoute::Col2im, b)?;
        }
        // dX by the transposed convolution.
        match route {
            DxRoute::None => return Ok(vec![Tensor::zeros(vec![0])]),
            DxRoute::Transposed => dx = self.transposed_conv_dx(ctx, &dyq)?,
            DxRoute::Col2im => {}
        }
        Ok(vec![Tensor::new(dx, vec![b, g.cin, g.h, g.w])?])
    }

    /// Q_a on the input `x` of `b` examples.
    fn quantize_input(
        &self,
        ctx: &mut Ctx<'_>,
        x: Cow<'_, [f32]>,
        b: usize,
    ) -> Result<Operand, NnError> {
        let g = self.geom;
        ctx.observe(TensorKind::Acts, &x, b, g.in_len());
        let key = ctx.key(self.id, StreamKind::Acts);
        let (fmt, step) = (ctx.layer_policy().acts, ctx.step);
        let tensor = format!("input activations of {}", self.name);
        ctx.timed(Category::Quantize, |_| {
            quantize_examples(
                x,
                b,
                g.in_len(),
                g.h * g.w,
                &fmt,
                key,
                &tensor,
                &self.name,
                step,
            )
        })
    }

    /// Q_e on the errors `dy` of `b` examples.
    fn quantize_errors(
        &self,
        ctx: &mut Ctx<'_>,
        dy: Cow<'_, [f32]>,
        b: usize,
    ) -> Result<Operand, NnError> {
        let p = self.geom.out_pixels();
        let cout = self.cout;
        ctx.observe(TensorKind::Errors, &dy, b, cout * p);
        let key = ctx.key(self.id, StreamKind::Errors);
        let (fmt, step) = (ctx.layer_policy().errors, ctx.step);
        let tensor = format!("errors of {}", self.name);
        ctx.timed(Category::Quantize, |_| {
            quantize_examples(dy, b, cout * p, p, &fmt, key, &tensor, &self.name, step)
        })
    }

    /// Q_w, recomputed only when the weights or their format changed since the last call.
    fn quantized_weights(&mut self, ctx: &mut Ctx<'_>) -> Result<(), NnError> {
        let v = self.weight.version;
        let fmt = ctx.layer_policy().weights;
        if matches!(&self.wq, Some((ver, _)) if *ver == v) && self.wq_fmt == fmt {
            return Ok(());
        }
        self.wq_fmt = fmt;
        let key = ctx.weight_key(self.id, v);
        let tensor = format!("weights of {}", self.name);
        let (o, i) = (self.cout, self.geom.col_rows());
        let (w, step) = (&self.weight.value, ctx.step);
        if fmt == NumberFormat::F32 {
            // fp32 "quantisation" is the finiteness check; the values are used in place.
            check_finite(w, &tensor, &self.name, step)?;
            self.wq = Some((v, Operand::Param { rows: o, cols: i }));
            return Ok(());
        }
        let kk = self.geom.k * self.geom.k;
        let q = ctx.timed(Category::Quantize, |_| {
            quantize_matrix_channels(w, o, i, kk, &fmt, key, &tensor, &self.name, step)
        })?;
        self.wq = Some((v, q.into_row_scaled(false)));
        Ok(())
    }

    /// dW from 8-bit errors and activations, exactly summed per group of examples:
    ///
    /// ```text
    /// groups: the examples with the same scale product qe_j * qa_j, in order of first
    ///         appearance in the batch; each group cut into pieces (see
    ///         `schedule::weight_grad_pieces`), in batch order
    /// dW = 0;  for each piece:  dW += tofloat(dY~[Cout, piece] col[piece]^T, qe_j * qa_j)
    /// ```
    ///
    /// Every example of a piece shares one power-of-two scale, so its products sum exactly in
    /// one integer reduction and are rescaled once. One segment per example (002's literal
    /// reading) reads and writes the whole float dW once per example, which dominated the
    /// backward pass on small maps (VGG16's 4x4 and 2x2 layers: segments of 16 and 4 values);
    /// a batch holds only a few distinct exponent sums, so the groups are long. The grouping
    /// depends on the scales alone, never on threads.
    fn weight_grad_grouped(
        &mut self,
        ctx: &mut Ctx<'_>,
        dyq: &Operand,
        xq: &Operand,
    ) -> Result<(), NnError> {
        let (Some(e), Some(x)) = (dyq.i8_rows(), xq.i8_rows()) else {
            unreachable!("called with 8-bit operands only")
        };
        // One scale per example (`quantize_examples`).
        let (es, xs) = (e.scales, x.scales);
        let mut groups: Vec<(f32, Vec<usize>)> = Vec::new();
        for j in 0..es.len() {
            let prod = es[j] * xs[j];
            match groups
                .iter_mut()
                .find(|(s, _)| s.to_bits() == prod.to_bits())
            {
                Some((_, members)) => members.push(j),
                None => groups.push((prod, vec![j])),
            }
        }
        let g = self.geom;
        let cout = self.cout;
        let k_max = lowprec_kernels::k_safe(e.max_abs, i8_operand_bound(x.max_abs));
        let pieces = weight_grad_pieces(&groups, &g, cout, k_max);
        let (backend, name) = (ctx.backend, self.name.as_str());
        weight_grad_run(
            ctx,
            &pieces,
            &mut self.weight.grad,
            |prod, piece, acc, gw| {
                weight_grad_piece(backend, name, &g, cout, e, x, prod, piece, acc, gw)
            },
        )
    }

    /// The float weight gradient (unless it ran in integers) and, with `col2im_dx`, dX through
    /// col2im, in one pass over the chunks of the batch. Returns dX (empty without
    /// `col2im_dx`).
    fn float_dw_and_col2im_dx(
        &mut self,
        ctx: &mut Ctx<'_>,
        dyq: &Operand,
        xq: &Operand,
        col2im_dx: bool,
        b: usize,
    ) -> Result<Vec<f32>, NnError> {
        let g = self.geom;
        let (rows, cout) = (g.col_rows(), self.cout);
        let float_dw = dyq.i8_rows().is_none() || xq.i8_rows().is_none();
        let wq = self.wq.as_ref().map(|w| &w.1);
        // Float weights for the dcol GEMM (read transposed in place) unless it runs on 8-bit
        // weights and errors (the float dW path leaves the errors without their 8-bit gather).
        let int_dcol = !float_dw && wq.and_then(Operand::i8_rows).is_some();
        let wf = match wq {
            Some(w) if col2im_dx && !int_dcol => Some(w.floats(&self.weight.value)),
            _ => None,
        };
        let dw_cout_major = float_dw_cout_major(cout);
        let job = BackwardChunks {
            backend: ctx.backend,
            name: &self.name,
            g: &g,
            cout,
            wq,
            wf: wf.as_deref(),
            dyq,
            xq,
            chunk: even_chunk(
                if float_dw {
                    chunk_for_float(&g, cout)
                } else {
                    chunk_for(&g)
                },
                b,
            ),
            need_dcol: col2im_dx,
            float_dw,
            dw_cout_major,
        };
        let mut dx = if col2im_dx {
            vec![0f32; b * g.in_len()]
        } else {
            Vec::new()
        };
        // The parameter's gradient storage holds group 0's dW sum when it is in the
        // parameter's layout (it is overwritten below anyway).
        let store0 = (float_dw && dw_cout_major)
            .then(|| std::mem::take(&mut self.weight.grad))
            .filter(|v| v.len() == rows * cout);
        let gw_float = backward_chunks(ctx, &job, b, &mut dx, store0)?;
        if let Some(gwf) = gw_float {
            let gw = &mut self.weight.grad;
            if dw_cout_major {
                *gw = gwf;
            } else {
                ctx.timed(Category::Other, |_| transpose_into(&gwf, rows, cout, gw));
            }
        }
        Ok(dx)
    }

    /// dX of a stride-1 layer as the transposed convolution of the errors with the flipped
    /// weights: the forward pass's chunked GEMM on geometry `[Cout, Ho, Wo]`, `k`, pad
    /// `k - 1 - pad`.
    fn transposed_conv_dx(&self, ctx: &mut Ctx<'_>, dyq: &Operand) -> Result<Vec<f32>, NnError> {
        let g = self.geom;
        let tg = ConvGeom::new(self.cout, g.ho, g.wo, g.k, 1, g.k - 1 - g.pad)
            .map_err(|e| NnError::Spec(format!("{}: transposed geometry: {e}", self.name)))?;
        debug_assert_eq!((tg.ho, tg.wo), (g.h, g.w));
        let w = self
            .wq
            .as_ref()
            .map(|w| &w.1)
            .expect("checked by the caller");
        let raw = &self.weight.value;
        let wt = ctx.timed(Category::Other, |_| {
            flip_weights(w, self.cout, g.cin, g.k, raw)
        });
        // `wt` is never a `Param` (flipping copies), so no parameter slice is needed.
        conv_gemm(ctx, &self.name, &tg, g.cin, &wt, &[], dyq, None)
    }

    /// The saved quantised input, checked against errors of batch shape `shape`.
    fn take_saved(&mut self, shape: &[usize]) -> Result<Operand, NnError> {
        let xq = self.saved_x.take().ok_or_else(|| NnError::NoForward {
            layer: self.name.clone(),
        })?;
        let g = self.geom;
        let b = shape.first().copied().unwrap_or(0);
        if shape.iter().skip(1).product::<usize>() != self.cout * g.out_pixels() || xq.dims().0 != b
        {
            return Err(NnError::shape(
                &self.name,
                format!("gradient {shape:?} does not match the forward pass"),
            ));
        }
        Ok(xq)
    }

    /// The backward pass of an empty batch: zero parameter gradients, an empty dX.
    fn empty_backward(&mut self, ctx: &Ctx<'_>) -> Tensor {
        self.weight.grad.fill(0.0);
        if let Some(bias) = &mut self.bias {
            bias.grad.fill(0.0);
        }
        let g = self.geom;
        Tensor::zeros(if ctx.need_input_grad {
            vec![0, g.cin, g.h, g.w]
        } else {
            vec![0]
        })
    }

    fn bad_inputs(&self, shapes: Vec<&[usize]>) -> NnError {
        let g = self.geom;
        NnError::shape(
            &self.name,
            format!(
                "expects one [batch, {}, {}, {}] input, got {shapes:?}",
                g.cin, g.h, g.w
            ),
        )
    }
}

/// `gb[co] = sum over examples j and pixels of dy[j, co, :]` for `b` examples of `[Cout, P]`:
/// per channel, eight f64 lanes (a sequential f64 sum waits for each add) added in a fixed
/// order.
fn bias_grad(dy: &[f32], b: usize, cout: usize, p: usize, gb: &mut [f32]) {
    gb.par_iter_mut().enumerate().for_each(|(co, gb)| {
        let mut lanes = [0f64; 8];
        let mut tail = 0f64;
        for j in 0..b {
            let plane = &dy[(j * cout + co) * p..][..p];
            let chunks = plane.chunks_exact(8);
            tail += chunks.remainder().iter().map(|&v| v as f64).sum::<f64>();
            for c8 in chunks {
                for (l, &v) in lanes.iter_mut().zip(c8) {
                    *l += v as f64;
                }
            }
        }
        *gb = (lanes.iter().sum::<f64>() + tail) as f32;
    })
}

impl Layer for Conv2d {
    fn name(&self) -> &str {
        &self.name
    }

    fn describe(&self) -> String {
        let g = &self.geom;
        format!(
            "conv {}->{} {}x{} s{} p{}{}",
            g.cin,
            self.cout,
            g.k,
            g.k,
            g.stride,
            g.pad,
            if self.bias.is_some() { " (+bias)" } else { "" }
        )
    }

    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>, NnError> {
        let g = &self.geom;
        match inputs {
            [s] if *s == [g.cin, g.h, g.w] => Ok(vec![self.cout, g.ho, g.wo]),
            _ => Err(NnError::shape(
                &self.name,
                format!(
                    "expects one input of shape [{}, {}, {}], got {inputs:?}",
                    g.cin, g.h, g.w
                ),
            )),
        }
    }

    fn forward(
        &mut self,
        ctx: &mut Ctx<'_>,
        inputs: &[&Tensor],
        train: bool,
    ) -> Result<Tensor, NnError> {
        match inputs {
            [x] => self.forward_input(ctx, &x.shape, Cow::Borrowed(&x.data), train),
            _ => Err(self.bad_inputs(inputs.iter().map(|t| &t.shape[..]).collect())),
        }
    }

    /// Q_a takes the handed-over input as it is (in fp32 the saved input is the tensor itself).
    fn forward_owned(
        &mut self,
        ctx: &mut Ctx<'_>,
        x: Tensor,
        train: bool,
    ) -> Result<Tensor, NnError> {
        let Tensor { data, shape } = x;
        self.forward_input(ctx, &shape, Cow::Owned(data), train)
    }

    fn backward(&mut self, ctx: &mut Ctx<'_>, dy: Tensor) -> Result<Vec<Tensor>, NnError> {
        let Tensor { data, shape } = dy;
        self.backward_errors(ctx, &shape, Cow::Owned(data))
    }

    /// Q_e reads the errors where they are: no copy of a gradient the model shares.
    fn backward_shared(&mut self, ctx: &mut Ctx<'_>, dy: &Tensor) -> Result<Vec<Tensor>, NnError> {
        self.backward_errors(ctx, &dy.shape, Cow::Borrowed(&dy.data))
    }

    fn params(&self) -> Vec<&Param> {
        std::iter::once(&self.weight)
            .chain(self.bias.as_ref())
            .collect()
    }

    fn params_mut(&mut self) -> Vec<&mut Param> {
        std::iter::once(&mut self.weight)
            .chain(self.bias.as_mut())
            .collect()
    }

    fn macs_per_example(&self, _inputs: &[&[usize]]) -> u64 {
        (self.geom.col_rows() * self.geom.out_pixels() * self.cout) as u64
    }

    fn saved_bytes(&self) -> usize {
        self.saved_x.as_ref().map_or(0, |x| x.bytes())
    }

    fn clear_saved(&mut self) {
        self.saved_x = None;
    }
}
