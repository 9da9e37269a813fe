//! A batch of values: a flat buffer and a shape whose first axis is the batch.

use rayon::prelude::*;

use crate::NnError;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tensor {
    pub data: Vec<f32>,
    pub shape: Vec<usize>,
}

impl Tensor {
    pub fn new(data: Vec<f32>, shape: Vec<usize>) -> Result<Self, NnError> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(NnError::shape(
                "tensor",
                format!("shape {shape:?} needs {n} values, got {}", data.len()),
            ));
        }
        Ok(Tensor { data, shape })
    }

    pub fn zeros(shape: Vec<usize>) -> Self {
        let n = shape.iter().product();
        Tensor {
            data: vec![0.0; n],
            shape,
        }
    }

    /// Batch size (first axis).
    pub fn batch(&self) -> usize {
        self.shape.first().copied().unwrap_or(0)
    }

    /// Values per example.
    pub fn per_example(&self) -> usize {
        self.shape.iter().skip(1).product()
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// `acc[i] += x[i]`, in parallel pieces (two readers' gradients of one tensor, or partial
/// weight gradients added in a fixed order: the same sums at any thread count).
pub(crate) fn add_into(acc: &mut [f32], x: &[f32]) {
    assert_eq!(acc.len(), x.len(), "sum of unequal lengths");
    acc.par_iter_mut()
        .with_min_len(1 << 14)
        .zip(x)
        .for_each(|(a, b)| *a += b);
}
