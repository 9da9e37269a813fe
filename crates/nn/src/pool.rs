//! Pooling over NCHW feature maps in FP32: max, average and global average.
//!
//! Each `(example, channel)` plane is one rayon task in both passes, so the results do not
//! depend on the thread count. Max pooling keeps, per output, the offset of the winning input
//! inside its window (one byte; windows are at most 15x15), the first maximum on ties.

use rayon::prelude::*;

use crate::ctx::Category;
use crate::im2col::ConvGeom;
use crate::layer::Layer;
use crate::{Ctx, NnError, Tensor};

fn plane_input<'a>(
    name: &str,
    inputs: &[&'a Tensor],
    c: usize,
    h: usize,
    w: usize,
) -> Result<&'a Tensor, NnError> {
    match inputs {
        [x] if x.shape.len() == 4 && x.shape[1..] == [c, h, w] => Ok(x),
        _ => Err(NnError::shape(
            name,
            format!(
                "expects one [batch, {c}, {h}, {w}] input, got {:?}",
                inputs.iter().map(|t| &t.shape).collect::<Vec<_>>()
            ),
        )),
    }
}

fn chw(name: &str, in_shape: &[usize]) -> Result<(usize, usize, usize), NnError> {
    match in_shape {
        [c, h, w] => Ok((*c, *h, *w)),
        _ => Err(NnError::Spec(format!(
            "{name}: pooling expects [channels, height, width] inputs, got {in_shape:?}"
        ))),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Avg,
}

/// `k x k` max or average pooling with stride `stride` and no padding.
pub struct Pool2d {
    name: String,
    pub kind: PoolKind,
    pub geom: ConvGeom,
    /// Max: winning offset within the window per output; Avg: unused.
    argmax: Option<Vec<u8>>,
    batch: Option<usize>,
}

impl Pool2d {
    pub fn new(
        name: &str,
        kind: PoolKind,
        in_shape: &[usize],
        k: usize,
        stride: usize,
    ) -> Result<Self, NnError> {
        let (c, h, w) = chw(name, in_shape)?;
        if k > 15 {
            return Err(NnError::Spec(format!(
                "{name}: pooling window {k} is larger than 15"
            )));
        }
        let geom = ConvGeom::new(c, h, w, k, stride, 0)
            .map_err(|e| NnError::Spec(format!("{name}: {e}")))?;
        Ok(Pool2d {
            name: name.to_string(),
            kind,
            geom,
            argmax: None,
            batch: None,
        })
    }
}

impl Layer for Pool2d {
    fn name(&self) -> &str {
        &self.name
    }
    fn describe(&self) -> String {
        let kind = match self.kind {
            PoolKind::Max => "maxpool",
            PoolKind::Avg => "avgpool",
        };
        format!(
            "{kind} {}x{} s{}",
            self.geom.k, self.geom.k, self.geom.stride
        )
    }
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>, NnError> {
        let g = &self.geom;
        match inputs {
            [s] if *s == [g.cin, g.h, g.w] => Ok(vec![g.cin, g.ho, g.wo]),
            _ => Err(NnError::shape(
                &self.name,
                format!("unexpected inputs {inputs:?}"),
            )),
        }
    }
    fn forward(
        &mut self,
        ctx: &mut Ctx<'_>,
        inputs: &[&Tensor],
        train: bool,
    ) -> Result<Tensor, NnError> {
        let g = self.geom;
        let x = plane_input(&self.name, inputs, g.cin, g.h, g.w)?;
        let b = x.batch();
        let (hw, po) = (g.h * g.w, g.out_pixels());
        let mut y = vec![0f32; b * g.cin * po];
        let kind = self.kind;
        let mut arg = if kind == PoolKind::Max {
            vec![0u8; y.len()]
        } else {
            Vec::new()
        };
        ctx.timed(Category::Other, |_| {
            let inv = 1.0 / (g.k * g.k) as f32;
            if kind == PoolKind::Max && g.k == 2 && g.stride == 2 {
                y.par_chunks_mut(po)
                    .zip(arg.par_chunks_mut(po))
                    .enumerate()
                    .for_each(|(i, (yo, ao))| max2x2_plane(&x.data[i * hw..][..hw], &g, yo, ao));
            } else if kind == PoolKind::Max {
                y.par_chunks_mut(po)
                    .zip(arg.par_chunks_mut(po))
                    .enumerate()
                    .for_each(|(i, (yo, ao))| {
                        let plane = &x.data[i * hw..][..hw];
                        for oy in 0..g.ho {
                            for ox in 0..g.wo {
                                let (mut best, mut at) = (f32::NEG_INFINITY, 0u8);
                                let mut first = true;
                                for ki in 0..g.k {
                                    let row = &plane[(oy * g.stride + ki) * g.w + ox * g.stride..];
                                    for (kj, &v) in row[..g.k].iter().enumerate() {
                                        // NaN wins so that it reaches the next quantiser's check.
                                        if first || v > best || v.is_nan() && !best.is_nan() {
                                            best = v;
                                            at = (ki * g.k + kj) as u8;
                                            first = false;
                                        }
                                    }
                                }
                                yo[oy * g.wo + ox] = best;
                                ao[oy * g.wo + ox] = at;
                            }
                        }
                    });
            } else {
                y.par_chunks_mut(po).enumerate().for_each(|(i, yo)| {
                    let plane = &x.data[i * hw..][..hw];
                    for oy in 0..g.ho {
                        for ox in 0..g.wo {
                            let mut s = 0f32;
                            for ki in 0..g.k {
                                let row = &plane[(oy * g.stride + ki) * g.w + ox * g.stride..];
                                s += row[..g.k].iter().sum::<f32>();
                            }
                            yo[oy * g.wo + ox] = s * inv;
                        }
                    }
                });
            }
        });
        self.argmax = (train && kind == PoolKind::Max).then_some(arg);
        self.batch = train.then_some(b);
        Tensor::new(y, vec![b, g.cin, g.ho, g.wo])
    }
    fn backward(&mut self, ctx: &mut Ctx<'_>, dy: Tensor) -> Result<Vec<Tensor>, NnError> {
        let g = self.geom;
        let b = self.batch.take().ok_or_else(|| NnError::NoForward {
            layer: self.name.clone(),
        })?;
        let (hw, po) = (g.h * g.w, g.out_pixels());
        if dy.len() != b * g.cin * po {
            return Err(NnError::shape(
                &self.name,
                format!("gradient {:?} does not match the forward pass", dy.shape),
            ));
        }
        let mut dx = vec![0f32; b * g.cin * hw];
        let arg = self.argmax.take();
        let kind = self.kind;
        ctx.timed(Category::Other, |_| {
            let inv = 1.0 / (g.k * g.k) as f32;
            if let (PoolKind::Max, Some(a), 2, 2) = (kind, &arg, g.k, g.stride) {
                dx.par_chunks_mut(hw).enumerate().for_each(|(i, plane)| {
                    let (d, at) = (&dy.data[i * po..][..po], &a[i * po..][..po]);
                    unmax2x2_plane(d, at, &g, plane)
                });
                return;
            }
            dx.par_chunks_mut(hw).enumerate().for_each(|(i, plane)| {
                let d = &dy.data[i * po..][..po];
                for oy in 0..g.ho {
                    for ox in 0..g.wo {
                        let o = oy * g.wo + ox;
                        let (y0, x0) = (oy * g.stride, ox * g.stride);
                        match (kind, &arg) {
                            (PoolKind::Max, Some(a)) => {
                                let at = a[i * po + o] as usize;
                                plane[(y0 + at / g.k) * g.w + x0 + at % g.k] += d[o];
                            }
                            _ => {
                                let v = d[o] * inv;
                                for ki in 0..g.k {
                                    for e in &mut plane[(y0 + ki) * g.w + x0..][..g.k] {
                                        *e += v;
                                    }
                                }
                            }
                        }
                    }
                }
            })
        });
        Ok(vec![Tensor::new(dx, vec![b, g.cin, g.h, g.w])?])
    }
    fn saved_bytes(&self) -> usize {
        self.argmax.as_ref().map_or(0, |a| a.len())
    }
    fn clear_saved(&mut self) {
        self.argmax = None;
        self.batch = None;
    }
}

/// 2x2 max pooling with stride 2 of one plane: the general loop's result (first maximum in
/// window order, a NaN wins over numbers), without its per-element branches and bounds
/// checks.
fn max2x2_plane(plane: &[f32], g: &ConvGeom, yo: &mut [f32], ao: &mut [u8]) {
    /// Whether `v` replaces `best` (strictly greater, or the first NaN).
    #[inline(always)]
    fn wins(v: f32, best: f32) -> bool {
        v > best || (v.is_nan() & !best.is_nan())
    }
    for oy in 0..g.ho {
        let r0 = &plane[2 * oy * g.w..][..2 * g.wo];
        let r1 = &plane[(2 * oy + 1) * g.w..][..2 * g.wo];
        let (yr, ar) = (&mut yo[oy * g.wo..][..g.wo], &mut ao[oy * g.wo..][..g.wo]);
        for (ox, (yv, av)) in yr.iter_mut().zip(ar.iter_mut()).enumerate() {
            let (mut best, mut at) = (r0[2 * ox], 0u8);
            for (v, idx) in [(r0[2 * ox + 1], 1u8), (r1[2 * ox], 2), (r1[2 * ox + 1], 3)] {
                let w = wins(v, best);
                best = if w { v } else { best };
                at = if w { idx } else { at };
            }
            *yv = best;
            *av = at;
        }
    }
}

/// The gradient of [`max2x2_plane`]: each output's error to its window's winner, 0 elsewhere
/// (windows do not overlap, so every input is written once; rows and columns past the last
/// whole window stay 0).
fn unmax2x2_plane(d: &[f32], at: &[u8], g: &ConvGeom, plane: &mut [f32]) {
    for oy in 0..g.ho {
        let (dr, ar) = (&d[oy * g.wo..][..g.wo], &at[oy * g.wo..][..g.wo]);
        let (top, bottom) = plane[2 * oy * g.w..].split_at_mut(g.w);
        let (r0, r1) = (&mut top[..2 * g.wo], &mut bottom[..2 * g.wo]);
        for ox in 0..g.wo {
            let (v, a) = (dr[ox], ar[ox]);
            let pick = |i: u8| if a == i { v } else { 0.0 };
            r0[2 * ox] = pick(0);
            r0[2 * ox + 1] = pick(1);
            r1[2 * ox] = pick(2);
            r1[2 * ox + 1] = pick(3);
        }
    }
}

/// Mean over each channel's plane: `[C, H, W] -> [C]`.
pub struct GlobalAvgPool {
    name: String,
    c: usize,
    hw: usize,
    in_shape: Vec<usize>,
    batch: Option<usize>,
}

impl GlobalAvgPool {
    pub fn new(name: &str, in_shape: &[usize]) -> Result<Self, NnError> {
        let (c, h, w) = chw(name, in_shape)?;
        Ok(GlobalAvgPool {
            name: name.to_string(),
            c,
            hw: h * w,
            in_shape: in_shape.to_vec(),
            batch: None,
        })
    }
}

impl Layer for GlobalAvgPool {
    fn name(&self) -> &str {
        &self.name
    }
    fn describe(&self) -> String {
        "global-avg-pool".into()
    }
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>, NnError> {
        match inputs {
            [s] if *s == self.in_shape.as_slice() => Ok(vec![self.c]),
            _ => Err(NnError::shape(
                &self.name,
                format!("unexpected inputs {inputs:?}"),
            )),
        }
    }
    fn forward(
        &mut self,
        ctx: &mut Ctx<'_>,
        inputs: &[&Tensor],
        train: bool,
    ) -> Result<Tensor, NnError> {
        let (c, h, w) = (self.in_shape[0], self.in_shape[1], self.in_shape[2]);
        let x = plane_input(&self.name, inputs, c, h, w)?;
        let b = x.batch();
        let hw = self.hw;
        let y = ctx.timed(Category::Other, |_| {
            x.data
                .par_chunks(hw)
                .map(|p| (p.iter().map(|&v| v as f64).sum::<f64>() / hw as f64) as f32)
                .collect::<Vec<f32>>()
        });
        self.batch = train.then_some(b);
        Tensor::new(y, vec![b, c])
    }
    fn backward(&mut self, ctx: &mut Ctx<'_>, dy: Tensor) -> Result<Vec<Tensor>, NnError> {
        let b = self.batch.take().ok_or_else(|| NnError::NoForward {
            layer: self.name.clone(),
        })?;
        if dy.len() != b * self.c {
            return Err(NnError::shape(
                &self.name,
                format!("gradient {:?} does not match the forward pass", dy.shape),
            ));
        }
        let hw = self.hw;
        let inv = 1.0 / hw as f32;
        let mut dx = vec![0f32; b * self.c * hw];
        ctx.timed(Category::Other, |_| {
            dx.par_chunks_mut(hw)
                .zip(dy.data.par_iter())
                .for_each(|(p, &d)| p.fill(d * inv))
        });
        let mut shape = vec![b];
        shape.extend_from_slice(&self.in_shape);
        Ok(vec![Tensor::new(dx, shape)?])
    }
    fn clear_saved(&mut self) {
        self.batch = None;
    }
}
