//! The one training step that every loop runs (`train`, `rf`, `bench train`, `profile`):
//! forward in training mode, the loss, a check that it is finite, backward. It leaves the
//! gradients in the model's parameters; the caller applies them with [`crate::optim::Sgd`],
//! after whatever must happen in between (the gradient exchange of a data-parallel run, FAST's
//! precision decisions, a timer).

use lowprec_nn::loss::{LossOut, Target};
use lowprec_nn::{Ctx, Loss, Model, NnError, Tensor};

/// What one step's forward and backward left besides the gradients.
pub struct StepOut {
    /// The network's output (its buffer may be reused for the next batch).
    pub out: Tensor,
    /// Mean loss over the batch.
    pub loss: f64,
    /// Examples whose arg-max matched the label (0 for value targets).
    pub correct: usize,
    /// Bytes the layers kept from the forward pass for backward.
    pub saved_bytes: usize,
}

/// Forward, loss and backward of one batch at `ctx.step`. A non-finite loss is
/// [`NnError::Diverged`] before any gradient is computed.
pub fn forward_backward(
    model: &mut Model,
    ctx: &mut Ctx<'_>,
    loss: &Loss,
    x: Tensor,
    target: Target<'_>,
) -> Result<StepOut, NnError> {
    let out = model.forward(ctx, x, true)?;
    let saved_bytes = model.saved_bytes();
    let LossOut {
        loss: l,
        grad,
        correct,
        ..
    } = loss.forward(&out, target)?;
    if !l.is_finite() {
        return Err(NnError::Diverged {
            loss: l,
            step: ctx.step,
        });
    }
    model.backward(ctx, grad)?;
    Ok(StepOut {
        out,
        loss: l,
        correct,
        saved_bytes,
    })
}
