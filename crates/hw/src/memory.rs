//! Training memory model (paper 002, Table II): Darknet fp32 versus the 8-bit system, whose
//! memory splits into ordinary heap (`malloc`) and contiguous DMA-able memory (`cma`), with and
//! without the fp32 copy of the weights that stochastic weight averaging keeps.
//!
//! The inventory (sizes in bytes; `P` parameters, per-example terms times the batch):
//! - fp32 Darknet: weights and weight updates (`8P`), the im2col workspace for the largest
//!   layer (fp32, one example), and per example the output and delta of every layer plus, for
//!   each convolution, the batch-norm buffers `x` and `x_norm` (Darknet's convolutional layer
//!   allocates them when its configuration is batch-normalised), plus the input.
//! - 8-bit `malloc`: per example the fp32 output and delta of every layer, the fp32 pre-
//!   quantisation copy `x` of each convolution output, and each compute layer's 8-bit input.
//! - 8-bit `cma`: the 8-bit weights (`P`), two fp32 buffers of the largest layer's weight
//!   gradient (the GEMM output C of one example and the layer's accumulator `dW += C`), the
//!   8-bit B buffer for the largest im2col, and per example the 8-bit activation and delta of
//!   the largest layer (Algorithm 1 quantises the whole batch before the per-example loop).
//! - SWA adds the fp32 copy of the weights (`4P`) to `malloc`.
//!
//! FITTED: only the *number* of fp32 buffers per convolution output element (4 for Darknet,
//! 3 for the 8-bit layer), chosen from the per-example slope of Table II; everything else is
//! counted from the layer shapes. MB means 10^6 bytes, as in the paper (61 MB for VGG16's
//! 15.24 M fp32 weights).

use crate::networks::{Layer, Network};

/// fp32 buffers per convolution output element (see the module docs; fitted counts).
pub const FLOAT_CONV_BUFFERS: usize = 4;
pub const INT8_CONV_BUFFERS: usize = 3;
/// fp32 buffers per output element of other layers (output and delta).
pub const OTHER_BUFFERS: usize = 2;

/// Memory of one training configuration, in bytes.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct MemoryEstimate {
    pub batch: usize,
    pub float_total: f64,
    pub int8_malloc: f64,
    pub int8_cma: f64,
    pub swa_extra: f64,
}

impl MemoryEstimate {
    pub fn int8_total(&self) -> f64 {
        self.int8_malloc + self.int8_cma
    }
    pub fn swa_malloc(&self) -> f64 {
        self.int8_malloc + self.swa_extra
    }
    pub fn swa_total(&self) -> f64 {
        self.int8_total() + self.swa_extra
    }
}

/// Per-network counts the memory model uses.
#[derive(Clone, Debug, Default)]
struct Counts {
    params: usize,
    outputs: usize,
    conv_outputs: usize,
    compute_inputs: usize,
    largest_im2col: usize,
    largest_layer_params: usize,
    largest_activation: usize,
}

fn counts(net: &Network) -> Counts {
    let mut c = Counts::default();
    for l in &net.layers {
        c.params += l.params();
        c.outputs += l.outputs();
        c.largest_layer_params = c.largest_layer_params.max(l.params());
        if let Layer::Conv { .. } = l {
            c.conv_outputs += l.outputs();
            c.largest_im2col = c.largest_im2col.max(l.im2col_elems());
            c.largest_activation = c.largest_activation.max(l.inputs()).max(l.outputs());
        }
        if l.is_compute() {
            c.compute_inputs += l.inputs();
            if let Layer::Fc { i, o } = *l {
                c.largest_activation = c.largest_activation.max(i).max(o);
            }
        }
    }
    c
}

/// Table II style estimate for `net` at `batch`.
pub fn training_memory(net: &Network, batch: usize) -> MemoryEstimate {
    let c = counts(net);
    let b = batch as f64;
    let f32b = 4.0;
    let float_fixed = f32b * (2 * c.params + c.largest_im2col) as f64;
    let float_per_ex = f32b
        * (OTHER_BUFFERS * c.outputs
            + (FLOAT_CONV_BUFFERS - OTHER_BUFFERS) * c.conv_outputs
            + net.input) as f64;
    let malloc_per_ex = f32b
        * (OTHER_BUFFERS * c.outputs + (INT8_CONV_BUFFERS - OTHER_BUFFERS) * c.conv_outputs) as f64
        + c.compute_inputs as f64;
    let cma_fixed =
        c.params as f64 + 2.0 * f32b * c.largest_layer_params as f64 + c.largest_im2col as f64;
    let cma_per_ex = 2.0 * c.largest_activation as f64;
    MemoryEstimate {
        batch,
        float_total: float_fixed + b * float_per_ex,
        int8_malloc: b * malloc_per_ex,
        int8_cma: cma_fixed + b * cma_per_ex,
        swa_extra: f32b * c.params as f64,
    }
}

/// Paper 002 Table II (MB): batch, float, malloc, cma, total, SWA malloc, SWA cma, SWA total.
pub const TABLE_II: [[f64; 8]; 3] = [
    [1.0, 141.0, 4.0, 34.0, 38.0, 65.0, 34.0, 99.0],
    [32.0, 276.0, 110.0, 38.0, 148.0, 171.0, 38.0, 209.0],
    [128.0, 722.0, 438.0, 51.0, 489.0, 499.0, 51.0, 550.0],
];
