//! Residual addition: `y = x_1 + x_2 + ...` over inputs of one shape (a ResNet shortcut).
//! Backward hands the incoming gradient to every input unchanged.

use rayon::prelude::*;

use crate::ctx::Category;
use crate::layer::Layer;
use crate::scratch::Fill;
use crate::{Ctx, NnError, Tensor};

pub struct Add {
    name: String,
    inputs: usize,
    trained: bool,
}

impl Add {
    pub fn new(name: &str, in_shapes: &[&[usize]]) -> Result<Self, NnError> {
        if in_shapes.len() < 2 {
            return Err(NnError::Spec(format!(
                "{name}: add needs at least two inputs (`from = [..]`), got {}",
                in_shapes.len()
            )));
        }
        if in_shapes.iter().any(|s| *s != in_shapes[0]) {
            return Err(NnError::Spec(format!(
                "{name}: add inputs must have one shape, got {in_shapes:?}"
            )));
        }
        Ok(Add {
            name: name.to_string(),
            inputs: in_shapes.len(),
            trained: false,
        })
    }
}

impl Layer for Add {
    fn name(&self) -> &str {
        &self.name
    }
    fn describe(&self) -> String {
        format!("add ({} inputs)", self.inputs)
    }
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>, NnError> {
        match inputs.first() {
            Some(s) if inputs.len() == self.inputs && inputs.iter().all(|t| t == s) => {
                Ok(s.to_vec())
            }
            _ => Err(NnError::shape(
                &self.name,
                format!(
                    "expects {} inputs of one shape, got {inputs:?}",
                    self.inputs
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
        if inputs.len() != self.inputs || inputs.iter().any(|t| t.shape != inputs[0].shape) {
            return Err(NnError::shape(
                &self.name,
                format!(
                    "expects {} inputs of one shape, got {:?}",
                    self.inputs,
                    inputs.iter().map(|t| &t.shape).collect::<Vec<_>>()
                ),
            ));
        }
        let y = ctx.timed(Category::Other, |_| {
            // The first two in one pass into a new buffer (not a copy of the first, then an
            // add pass): the same sums.
            let mut y = Fill::<f32>::new(inputs[0].len());
            y.slots()
                .par_chunks_mut(4096)
                .zip(inputs[0].data.par_chunks(4096))
                .zip(inputs[1].data.par_chunks(4096))
                .for_each(|((o, a), b)| {
                    for ((o, a), b) in o.iter_mut().zip(a).zip(b) {
                        o.write(a + b);
                    }
                });
            // SAFETY: the inputs have the output's length (checked above): every slot written.
            let mut y = unsafe { y.assume_init() };
            for t in &inputs[2..] {
                crate::tensor::add_into(&mut y, &t.data);
            }
            y
        });
        self.trained = train;
        Tensor::new(y, inputs[0].shape.clone())
    }
    fn backward(&mut self, _ctx: &mut Ctx<'_>, dy: Tensor) -> Result<Vec<Tensor>, NnError> {
        self.passes_gradient()?;
        // Copies for all inputs but the last, which gets the gradient itself.
        let mut out: Vec<Tensor> = (1..self.inputs).map(|_| dy.clone()).collect();
        out.push(dy);
        Ok(out)
    }
    /// The model hands the gradient to every input itself (see [`Layer::passes_gradient`]).
    fn passes_gradient(&mut self) -> Result<bool, NnError> {
        if !std::mem::take(&mut self.trained) {
            return Err(NnError::NoForward {
                layer: self.name.clone(),
            });
        }
        Ok(true)
    }
    fn clear_saved(&mut self) {
        self.trained = false;
    }
}
