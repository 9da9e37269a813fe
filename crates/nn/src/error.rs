//! Errors of layers and models.

use lowprec_formats::QuantError;
use lowprec_kernels::KernelError;

#[derive(Debug, thiserror::Error)]
pub enum NnError {
    /// A NaN or Inf reached a quantiser: names the tensor, the layer and the training step.
    #[error("non-finite value {value} in {tensor} of {layer} at step {step} (element {index})")]
    NonFinite {
        tensor: String,
        layer: String,
        step: u64,
        index: usize,
        value: f32,
    },
    /// The loss of a training step is NaN or infinite.
    #[error("training diverged: loss {loss} at step {step} (lower the learning rate)")]
    Diverged { loss: f64, step: u64 },
    #[error("shape error in {layer}: {msg}")]
    Shape { layer: String, msg: String },
    #[error("invalid network description: {0}")]
    Spec(String),
    #[error("invalid precision policy: {0}")]
    Precision(String),
    #[error("{layer}: backward called before a training forward pass")]
    NoForward { layer: String },
    #[error("quantisation in {layer}: {source}")]
    Quant { layer: String, source: QuantError },
    #[error("GEMM in {layer}: {source}")]
    Kernel { layer: String, source: KernelError },
}

impl NnError {
    pub fn shape(layer: &str, msg: impl Into<String>) -> Self {
        NnError::Shape {
            layer: layer.to_string(),
            msg: msg.into(),
        }
    }

    /// Wraps a quantiser error, turning non-finite values into the training engine's message.
    pub fn quant(layer: &str, step: u64, e: QuantError) -> Self {
        match e {
            QuantError::NonFinite {
                tensor,
                index,
                value,
            } => NnError::NonFinite {
                tensor,
                layer: layer.to_string(),
                step,
                index,
                value,
            },
            other => NnError::Quant {
                layer: layer.to_string(),
                source: other,
            },
        }
    }

    pub fn kernel(layer: &str, e: KernelError) -> Self {
        NnError::Kernel {
            layer: layer.to_string(),
            source: e,
        }
    }
}
