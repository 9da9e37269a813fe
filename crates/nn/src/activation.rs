//! Element-wise and reshaping layers in FP32: ReLU, dropout, flatten.

use lowprec_formats::rng::{stream_id, uniform24};
use lowprec_formats::StreamKey;

use rayon::prelude::*;

use crate::ctx::{Category, StreamKind};
use crate::layer::Layer;
use crate::{Ctx, NnError, Tensor};

fn one_input<'a>(name: &str, inputs: &[&'a Tensor]) -> Result<&'a Tensor, NnError> {
    match inputs {
        [x] => Ok(x),
        _ => Err(NnError::shape(
            name,
            format!("expects one input, got {}", inputs.len()),
        )),
    }
}

/// ReLU of one value, as every layer applies it (NaN becomes 0).
#[inline(always)]
pub(crate) fn relu(v: f32) -> f32 {
    if v > 0.0 {
        v
    } else {
        0.0
    }
}

/// `y = max(x, 0)`; keeps a one-byte mask for backward.
pub struct Relu {
    name: String,
    mask: Option<Vec<u8>>,
}

impl Relu {
    pub fn new(name: &str) -> Self {
        Relu {
            name: name.to_string(),
            mask: None,
        }
    }
}

impl Relu {
    /// The forward's mask, for a gradient of `len` values.
    fn take_mask(&mut self, len: usize) -> Result<Vec<u8>, NnError> {
        let mask = self.mask.take().ok_or_else(|| NnError::NoForward {
            layer: self.name.clone(),
        })?;
        if mask.len() != len {
            return Err(NnError::shape(
                &self.name,
                "gradient does not match the forward pass",
            ));
        }
        Ok(mask)
    }
}

impl Layer for Relu {
    fn name(&self) -> &str {
        &self.name
    }
    fn describe(&self) -> String {
        "relu".into()
    }
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>, NnError> {
        inputs
            .first()
            .map(|s| s.to_vec())
            .ok_or_else(|| NnError::shape(&self.name, "no input"))
    }
    /// On a copy of the input, as [`Layer::forward_owned`] does in place.
    fn forward(
        &mut self,
        ctx: &mut Ctx<'_>,
        inputs: &[&Tensor],
        train: bool,
    ) -> Result<Tensor, NnError> {
        let x = one_input(&self.name, inputs)?;
        self.forward_owned(ctx, x.clone(), train)
    }
    /// In place over the handed-over input, the mask made in the same pass: no fresh output
    /// buffer.
    fn forward_owned(
        &mut self,
        ctx: &mut Ctx<'_>,
        mut x: Tensor,
        train: bool,
    ) -> Result<Tensor, NnError> {
        ctx.timed(Category::Other, |_| {
            if train {
                let mask = x
                    .data
                    .par_iter_mut()
                    .with_min_len(1 << 14)
                    .map(|v| {
                        let m = (*v > 0.0) as u8;
                        *v = relu(*v);
                        m
                    })
                    .collect();
                self.mask = Some(mask);
            } else {
                x.data
                    .par_iter_mut()
                    .with_min_len(1 << 14)
                    .for_each(|v| *v = relu(*v));
                self.mask = None;
            }
        });
        Ok(x)
    }
    /// Masks the gradient in place.
    fn backward(&mut self, ctx: &mut Ctx<'_>, mut dy: Tensor) -> Result<Vec<Tensor>, NnError> {
        let mask = self.take_mask(dy.len())?;
        ctx.timed(Category::Other, |_| {
            dy.data
                .par_iter_mut()
                .with_min_len(1 << 14)
                .zip(&mask)
                // A store to every slot (a conditional store does not vectorise).
                .for_each(|(g, &m)| *g = if m != 0 { *g } else { 0.0 })
        });
        Ok(vec![dy])
    }
    fn saved_bytes(&self) -> usize {
        self.mask.as_ref().map_or(0, |m| m.len())
    }
    fn clear_saved(&mut self) {
        self.mask = None;
    }
}

/// Inverted dropout: in training, zero each value with probability `p` and scale the rest by
/// `1 / (1 - p)`; the mask is drawn from `(seed, layer, step, element)`.
pub struct Dropout {
    id: u64,
    name: String,
    pub p: f32,
    mask: Option<Vec<f32>>,
}

impl Dropout {
    pub fn new(id: u64, name: &str, p: f32) -> Result<Self, NnError> {
        if !(0.0..1.0).contains(&p) {
            return Err(NnError::Spec(format!(
                "{name}: dropout probability {p} must be in [0, 1)"
            )));
        }
        Ok(Dropout {
            id,
            name: name.to_string(),
            p,
            mask: None,
        })
    }
}

impl Layer for Dropout {
    fn name(&self) -> &str {
        &self.name
    }
    fn describe(&self) -> String {
        format!("dropout p={}", self.p)
    }
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>, NnError> {
        inputs
            .first()
            .map(|s| s.to_vec())
            .ok_or_else(|| NnError::shape(&self.name, "no input"))
    }
    fn forward(
        &mut self,
        ctx: &mut Ctx<'_>,
        inputs: &[&Tensor],
        train: bool,
    ) -> Result<Tensor, NnError> {
        let x = one_input(&self.name, inputs)?;
        if !train || self.p == 0.0 {
            self.mask = train.then(|| vec![1.0; x.len()]);
            return Ok(x.clone());
        }
        let key = StreamKey::new(
            ctx.seed,
            stream_id(&[self.id, StreamKind::Dropout as u64, ctx.step]),
        );
        let threshold = (self.p as f64 * 16_777_216.0) as u32;
        let scale = 1.0 / (1.0 - self.p);
        let mask: Vec<f32> = (0..x.len())
            .map(|i| {
                if uniform24(key, i as u64) < threshold {
                    0.0
                } else {
                    scale
                }
            })
            .collect();
        let y = x.data.iter().zip(&mask).map(|(a, m)| a * m).collect();
        self.mask = Some(mask);
        Tensor::new(y, x.shape.clone())
    }
    fn backward(&mut self, _ctx: &mut Ctx<'_>, dy: Tensor) -> Result<Vec<Tensor>, NnError> {
        let mask = self.mask.take().ok_or_else(|| NnError::NoForward {
            layer: self.name.clone(),
        })?;
        if mask.len() != dy.len() {
            return Err(NnError::shape(
                &self.name,
                "gradient does not match the forward pass",
            ));
        }
        let dx = dy.data.iter().zip(&mask).map(|(a, m)| a * m).collect();
        Ok(vec![Tensor::new(dx, dy.shape.clone())?])
    }
    fn clear_saved(&mut self) {
        self.mask = None;
    }
}

/// Reshapes `[B, ...]` to `[B, prod(...)]`.
pub struct Flatten {
    name: String,
    in_shape: Option<Vec<usize>>,
}

impl Flatten {
    pub fn new(name: &str) -> Self {
        Flatten {
            name: name.to_string(),
            in_shape: None,
        }
    }
}

impl Layer for Flatten {
    fn name(&self) -> &str {
        &self.name
    }
    fn describe(&self) -> String {
        "flatten".into()
    }
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>, NnError> {
        inputs
            .first()
            .map(|s| vec![s.iter().product()])
            .ok_or_else(|| NnError::shape(&self.name, "no input"))
    }
    fn forward(
        &mut self,
        ctx: &mut Ctx<'_>,
        inputs: &[&Tensor],
        train: bool,
    ) -> Result<Tensor, NnError> {
        let x = one_input(&self.name, inputs)?;
        self.forward_owned(ctx, x.clone(), train)
    }
    /// A reshape: the handed-over buffer becomes the output, no copy.
    fn forward_owned(
        &mut self,
        _ctx: &mut Ctx<'_>,
        x: Tensor,
        _train: bool,
    ) -> Result<Tensor, NnError> {
        let shape = vec![x.batch(), x.per_example()];
        self.in_shape = Some(x.shape);
        Tensor::new(x.data, shape)
    }
    fn backward(&mut self, _ctx: &mut Ctx<'_>, dy: Tensor) -> Result<Vec<Tensor>, NnError> {
        let shape = self.in_shape.clone().ok_or_else(|| NnError::NoForward {
            layer: self.name.clone(),
        })?;
        Ok(vec![Tensor::new(dy.data, shape)?])
    }
}
