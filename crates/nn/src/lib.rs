//! Layers and models: explicit forward/backward functions over flat buffers.
//!
//! This crate owns the network: a [`Tensor`] is a flat `Vec<f32>` with a shape whose first axis
//! is the batch; every layer is a pair of `forward`/`backward` functions you can read top to
//! bottom (llm.c style). Fully connected and convolution layers follow 002's
//! Algorithm 1: quantise input activations (Q_a), incoming errors (Q_e) and weights (Q_w, once
//! per update), keep the results as one quantised-operand type ([`operand::Operand`]), run
//! their three GEMMs on a [`lowprec_kernels::GemmBackend`] (integer with the fused rescale when
//! the formats allow, float otherwise), and hand floats to the rest of the network. The
//! [`Layer`] trait documents, once, how the model hands tensors to layers. A [`Precision`] policy names the format of each tensor kind; a [`PrecisionPlan`] holds
//! one per layer, so formats can differ by layer and change at any step. Networks are built from
//! a readable description ([`spec::NetworkSpec`], Darknet's cfg in spirit) into a [`Model`]; the
//! papers' networks are such descriptions, one file each ([`zoo`]).

pub mod activation;
pub mod batchnorm;
pub mod conv;
pub mod ctx;
pub mod error;
pub mod im2col;
pub mod init;
pub mod layer;
pub mod limits;
pub mod linear;
pub mod loss;
pub mod model;
pub mod operand;
pub mod plan;
pub mod pool;
pub mod precision;
pub mod residual;
pub mod scratch;
pub mod spec;
pub mod tensor;
pub mod zoo;

pub use ctx::{Category, Ctx, Profile};
pub use error::NnError;
pub use layer::{Layer, Param};
pub use loss::{Loss, LossKind};
pub use model::Model;
pub use plan::{PrecisionPlan, TensorKind};
pub use precision::Precision;
pub use spec::{LayerSpec, NetworkSpec};
pub use tensor::Tensor;
