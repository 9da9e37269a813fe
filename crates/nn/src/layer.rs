//! The layer interface: explicit forward and backward over flat buffers.

use crate::{Ctx, NnError, Tensor};

/// A trainable tensor with its gradient.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    /// `<layer>.<what>`, e.g. `fc1.weight` (the checkpoint key).
    pub name: String,
    pub shape: Vec<usize>,
    pub value: Vec<f32>,
    pub grad: Vec<f32>,
    /// Whether weight decay applies (weights yes, biases and batch-norm parameters no).
    pub decay: bool,
    /// Bumped whenever `value` changes, so layers know to re-quantise (Q_w once per update).
    pub version: u64,
}

impl Param {
    pub fn new(name: String, shape: Vec<usize>, value: Vec<f32>, decay: bool) -> Self {
        let n = value.len();
        Param {
            name,
            shape,
            value,
            grad: vec![0.0; n],
            decay,
            version: 0,
        }
    }
}

/// One node of a network: an explicit forward and backward over flat buffers.
///
/// The model owns every tensor that passes between layers and hands it to a layer in one of
/// the ways below, as its ownership allows; a layer implements those it can put to use and
/// inherits the rest, which give the same bits:
///
/// - [`Layer::forward`] borrows the inputs (one for most layers, several for a residual sum):
///   the model calls it while a later layer still reads an input.
/// - [`Layer::forward_owned`] takes a one-input layer's input by value, when no later layer
///   reads it: a layer whose output has the input's shape can write it in place of the input
///   (no fresh memory, whose first touch the kernel clears page by page), and a layer that
///   keeps its input for backward can keep this one instead of a copy. By default, `forward`.
/// - [`Layer::backward`] takes the gradient of the loss with respect to the output by value
///   (the model has no other use for it: a layer that passes it on or masks it does so in
///   place) and returns one gradient per input, accumulating parameter gradients into its
///   [`Param`]s.
/// - [`Layer::backward_onto`] is the backward of a one-input layer whose input already has a
///   gradient `acc` from another reader (a residual block's input), and returns `acc + dx`,
///   element by element, `acc` first. By default, `backward` then the sum; a layer whose last
///   pass writes `dx` adds there instead: one pass over the data less.
/// - [`Layer::backward_shared`] borrows the gradient, when it is also another value's (a
///   residual sum hands its output gradient to every input, [`Layer::passes_gradient`]). By
///   default a copy for `backward`; a layer that only reads its gradient takes it as it is.
pub trait Layer: Send {
    /// Instance name (`fc1`, `conv3`, ...).
    fn name(&self) -> &str;
    /// One-line description for listings.
    fn describe(&self) -> String;
    /// Output shape of one example given the input example shapes.
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>, NnError>;
    /// The forward pass on borrowed inputs; with `train`, keeps what backward needs.
    fn forward(
        &mut self,
        ctx: &mut Ctx<'_>,
        inputs: &[&Tensor],
        train: bool,
    ) -> Result<Tensor, NnError>;
    /// The forward pass of a one-input layer on its input handed over.
    fn forward_owned(
        &mut self,
        ctx: &mut Ctx<'_>,
        x: Tensor,
        train: bool,
    ) -> Result<Tensor, NnError> {
        self.forward(ctx, &[&x], train)
    }
    /// The backward pass from the output gradient `dy`: one gradient per input.
    fn backward(&mut self, ctx: &mut Ctx<'_>, dy: Tensor) -> Result<Vec<Tensor>, NnError>;
    /// The backward pass of a one-input layer onto its input's gradient so far: `acc + dx`.
    fn backward_onto(
        &mut self,
        ctx: &mut Ctx<'_>,
        dy: Tensor,
        mut acc: Tensor,
    ) -> Result<Tensor, NnError> {
        let dx = self.backward(ctx, dy)?.into_iter().next();
        match dx {
            Some(dx) if dx.shape == acc.shape => {
                crate::tensor::add_into(&mut acc.data, &dx.data);
                Ok(acc)
            }
            _ => Err(NnError::shape(
                self.name(),
                format!(
                    "backward gave no input gradient of the accumulated shape {:?}",
                    acc.shape
                ),
            )),
        }
    }
    /// The backward pass from a gradient that another value shares: one gradient per input.
    fn backward_shared(&mut self, ctx: &mut Ctx<'_>, dy: &Tensor) -> Result<Vec<Tensor>, NnError> {
        self.backward(ctx, dy.clone())
    }
    /// For a layer each of whose inputs' gradient is its output's gradient itself (a residual
    /// sum): checks and clears what the forward kept, and returns true; the model then hands
    /// the gradient to every input without a copy. Others return false (the default), and the
    /// model calls a backward.
    fn passes_gradient(&mut self) -> Result<bool, NnError> {
        Ok(false)
    }
    fn params(&self) -> Vec<&Param> {
        Vec::new()
    }
    fn params_mut(&mut self) -> Vec<&mut Param> {
        Vec::new()
    }
    /// Non-trainable state saved in checkpoints (batch-norm running statistics).
    fn buffers(&self) -> Vec<(String, &Vec<f32>)> {
        Vec::new()
    }
    fn buffers_mut(&mut self) -> Vec<(String, &mut Vec<f32>)> {
        Vec::new()
    }
    /// Multiply-accumulates of one example's forward pass (for listings and the hw model).
    fn macs_per_example(&self, _inputs: &[&[usize]]) -> u64 {
        0
    }
    /// Bytes this layer keeps from the last training forward for its backward.
    fn saved_bytes(&self) -> usize {
        0
    }
    /// Drops what the last forward saved (evaluation, or memory accounting).
    fn clear_saved(&mut self) {}
    /// Asks the layer to apply a ReLU to its own output (forward) and to mask its incoming
    /// gradient by it (backward), bit for bit what a separate ReLU layer after it would do;
    /// returns whether it will. The model asks when a ReLU is the only reader of this layer's
    /// output, and then skips that ReLU: one pass over the data less each way.
    fn absorb_relu(&mut self) -> bool {
        false
    }
    /// Batch-statistics recomputation (SWA with batch norm): `begin` resets the running
    /// statistics and switches to a cumulative average over the following training-mode
    /// forwards; `end` switches back. Layers without batch statistics ignore both.
    fn begin_stats_recompute(&mut self) {}
    fn end_stats_recompute(&mut self) {}
}
