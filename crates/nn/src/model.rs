//! A network: layers in topological order, each reading the outputs of earlier layers.
//!
//! `forward` runs the layers in order and frees every intermediate output as soon as its last
//! reader has run (layers keep what their backward needs, quantised where the policy says so).
//! `backward` walks the layers in reverse, summing gradients where an output fed several layers.

use std::collections::HashMap;
use std::rc::Rc;

use crate::activation::{Dropout, Flatten, Relu};
use crate::batchnorm::BatchNorm2d;
use crate::conv::Conv2d;
use crate::layer::{Layer, Param};
use crate::linear::Linear;
use crate::pool::{GlobalAvgPool, Pool2d, PoolKind};
use crate::residual::Add;
use crate::spec::{LayerSpec, NetworkSpec};
use crate::{Ctx, NnError, Tensor};

pub struct Node {
    pub layer: Box<dyn Layer>,
    /// Value indices read: 0 is the network input, `i + 1` the output of node `i`.
    pub inputs: Vec<usize>,
    /// A ReLU whose work the layer before it does (see [`Layer::absorb_relu`]): its output is
    /// its input, moved, and its gradient passes straight through.
    pub absorbed: bool,
}

pub struct Model {
    pub spec: NetworkSpec,
    pub nodes: Vec<Node>,
    /// Per-example shape of every value (0 = input).
    pub shapes: Vec<Vec<usize>>,
    last_use: Vec<usize>,
    /// Whether the loss gradient with respect to each value is needed: false for the input
    /// and for values computed from it by parameter-free layers only.
    requires_grad: Vec<bool>,
}

/// Builds one layer from its description; `in_shapes` are the per-example input shapes.
pub type LayerFactory = fn(
    id: u64,
    name: &str,
    spec: &LayerSpec,
    in_shapes: &[&[usize]],
    seed: u64,
) -> Result<Box<dyn Layer>, NnError>;

/// The factory for the layers this crate defines.
pub fn build_layer(
    id: u64,
    name: &str,
    spec: &LayerSpec,
    in_shapes: &[&[usize]],
    seed: u64,
) -> Result<Box<dyn Layer>, NnError> {
    let features = || {
        in_shapes
            .first()
            .map(|s| s.iter().product::<usize>())
            .unwrap_or(0)
    };
    Ok(match spec {
        LayerSpec::Linear { out, bias } => {
            if *out == 0 {
                return Err(NnError::Spec(format!(
                    "{name}: linear layer needs out >= 1"
                )));
            }
            Box::new(Linear::new(id, name, features(), *out, *bias, seed))
        }
        LayerSpec::Relu => Box::new(Relu::new(name)),
        LayerSpec::Dropout { p } => Box::new(Dropout::new(id, name, *p)?),
        LayerSpec::Flatten => Box::new(Flatten::new(name)),
        LayerSpec::Conv {
            out,
            kernel,
            stride,
            padding,
            bias,
        } => Box::new(Conv2d::new(
            id,
            name,
            first_shape(name, in_shapes)?,
            *out,
            *kernel,
            *stride,
            *padding,
            *bias,
            seed,
        )?),
        LayerSpec::Maxpool { kernel, stride } => Box::new(Pool2d::new(
            name,
            PoolKind::Max,
            first_shape(name, in_shapes)?,
            *kernel,
            stride.unwrap_or(*kernel),
        )?),
        LayerSpec::Avgpool { kernel, stride } => Box::new(Pool2d::new(
            name,
            PoolKind::Avg,
            first_shape(name, in_shapes)?,
            *kernel,
            stride.unwrap_or(*kernel),
        )?),
        LayerSpec::GlobalAvgPool => {
            Box::new(GlobalAvgPool::new(name, first_shape(name, in_shapes)?)?)
        }
        LayerSpec::Batchnorm { eps, momentum } => Box::new(BatchNorm2d::new(
            name,
            first_shape(name, in_shapes)?,
            *eps,
            *momentum,
        )?),
        LayerSpec::Add => Box::new(Add::new(name, in_shapes)?),
    })
}

/// The single input shape of a one-input layer.
fn first_shape<'a>(name: &str, in_shapes: &[&'a [usize]]) -> Result<&'a [usize], NnError> {
    match in_shapes {
        [s] => Ok(s),
        _ => Err(NnError::Spec(format!(
            "{name}: expects one input, `from` names {}",
            in_shapes.len()
        ))),
    }
}

impl Model {
    /// Builds the network with this crate's layers.
    pub fn build(spec: &NetworkSpec, seed: u64) -> Result<Model, NnError> {
        Self::build_with(spec, seed, build_layer)
    }

    /// Builds the network with a caller-provided factory (crates adding layer types wrap
    /// [`build_layer`]).
    pub fn build_with(
        spec: &NetworkSpec,
        seed: u64,
        factory: LayerFactory,
    ) -> Result<Model, NnError> {
        Self::build_with_fusion(spec, seed, factory, true)
    }

    /// [`Model::build_with`], choosing whether ReLUs may be folded into the layer before them
    /// (`false` runs every layer as described: the reference the fused model is tested against,
    /// bit for bit).
    pub fn build_with_fusion(
        spec: &NetworkSpec,
        seed: u64,
        factory: LayerFactory,
        fuse: bool,
    ) -> Result<Model, NnError> {
        if spec.input.is_empty() || spec.input.contains(&0) {
            return Err(NnError::Spec(format!(
                "input shape {:?} must be non-empty with no zero dimension",
                spec.input
            )));
        }
        if spec.layers.is_empty() {
            return Err(NnError::Spec("the network has no layers".into()));
        }
        let mut names: HashMap<String, usize> = HashMap::new();
        names.insert("input".into(), 0);
        let mut shapes = vec![spec.input.clone()];
        let mut nodes = Vec::new();
        let mut params_bytes = 0u128;
        for (i, entry) in spec.layers.iter().enumerate() {
            let name = entry
                .name
                .clone()
                .unwrap_or_else(|| format!("{}{}", entry.kind.type_name(), i + 1));
            if names.contains_key(&name) {
                return Err(NnError::Spec(format!("layer name `{name}` is used twice")));
            }
            let inputs: Vec<usize> = match &entry.from {
                None => vec![i],
                Some(from) => from
                    .iter()
                    .map(|f| {
                        names.get(f).copied().ok_or_else(|| {
                            NnError::Spec(format!(
                                "layer `{name}` reads `{f}`, which is not an earlier layer"
                            ))
                        })
                    })
                    .collect::<Result<_, _>>()?,
            };
            if inputs.is_empty() {
                return Err(NnError::Spec(format!("layer `{name}` has an empty `from`")));
            }
            let in_shapes: Vec<&[usize]> = inputs.iter().map(|&v| shapes[v].as_slice()).collect();
            // Each layer fits on its own, and so must all of them together: many layers just
            // below the budget would otherwise allocate several times the memory there is.
            let bytes = crate::limits::check_layer_params(&name, &entry.kind, &in_shapes)?;
            params_bytes = params_bytes.saturating_add(bytes);
            crate::limits::check_bytes(
                &format!("the layers up to {name}"),
                "their parameters (weights, gradient, momentum, SWA average)",
                Some(params_bytes),
            )?;
            let layer = factory(i as u64 + 1, &name, &entry.kind, &in_shapes, seed)?;
            let out = layer
                .output_shape(&in_shapes)
                .map_err(|e| NnError::Spec(format!("{e}")))?;
            crate::limits::check_layer_output(&name, &out)?;
            shapes.push(out);
            names.insert(name, i + 1);
            nodes.push(Node {
                layer,
                inputs,
                absorbed: false,
            });
        }
        let mut requires_grad = vec![false; shapes.len()];
        for (i, n) in nodes.iter().enumerate() {
            requires_grad[i + 1] =
                !n.layer.params().is_empty() || n.inputs.iter().any(|&v| requires_grad[v]);
        }
        let mut last_use = vec![0usize; shapes.len()];
        let mut readers = vec![0usize; shapes.len()];
        for (i, n) in nodes.iter().enumerate() {
            for &v in &n.inputs {
                last_use[v] = i;
                readers[v] += 1;
            }
        }
        if fuse {
            // A ReLU that is the only reader of a layer's output is folded into that layer
            // when the layer can apply it itself (batch norm before a convolution in
            // PreResNet's blocks).
            for i in 0..nodes.len() {
                let relu = matches!(spec.layers[i].kind, LayerSpec::Relu);
                if let ([v], true) = (nodes[i].inputs.as_slice(), relu) {
                    let v = *v;
                    if v >= 1 && readers[v] == 1 && !nodes[v - 1].absorbed {
                        nodes[i].absorbed = nodes[v - 1].layer.absorb_relu();
                    }
                }
            }
        }
        Ok(Model {
            spec: spec.clone(),
            nodes,
            shapes,
            last_use,
            requires_grad,
        })
    }

    /// Checks that training at batch size `batch` fits in this machine's memory: every
    /// parameter four times (weights, gradient, momentum, SWA) and every value's output and
    /// gradient for the batch. The error names the layer with the largest output.
    pub fn check_training_memory(&self, batch: usize) -> Result<(), NnError> {
        let per_example: Option<u128> = self.shapes.iter().try_fold(0u128, |acc, s| {
            s.iter()
                .try_fold(1u128, |p, &d| p.checked_mul(d as u128))
                .and_then(|e| acc.checked_add(e))
        });
        let params: u128 = self
            .params()
            .iter()
            .map(|p| p.value.len() as u128)
            .sum::<u128>();
        let bytes = per_example
            .and_then(|e| e.checked_mul(batch as u128))
            .and_then(|e| e.checked_mul(8))
            .and_then(|a| a.checked_add(params * 16));
        let largest = self
            .nodes
            .iter()
            .zip(&self.shapes[1..])
            .max_by_key(|(_, s)| s.iter().map(|&d| d as u128).product::<u128>())
            .map(|(n, s)| format!("largest output: {} {:?} per example", n.layer.name(), s))
            .unwrap_or_default();
        crate::limits::check_bytes(
            &format!("training at batch {batch} ({largest})"),
            "the outputs, gradients and parameters",
            bytes,
        )
    }

    pub fn output_shape(&self) -> &[usize] {
        self.shapes.last().expect("non-empty")
    }

    /// Runs the network. With `train`, layers keep what backward needs.
    pub fn forward(
        &mut self,
        ctx: &mut Ctx<'_>,
        x: Tensor,
        train: bool,
    ) -> Result<Tensor, NnError> {
        if x.shape.len() != self.spec.input.len() + 1 || x.shape[1..] != self.spec.input[..] {
            return Err(NnError::shape(
                "input",
                format!(
                    "batch of shape {:?}, examples of shape {:?} expected",
                    x.shape, self.spec.input
                ),
            ));
        }
        let n = self.nodes.len();
        let mut values: Vec<Option<Tensor>> = vec![None; n + 1];
        values[0] = Some(x);
        ctx.backward = false;
        for i in 0..n {
            ctx.layer_index = i;
            let node = &mut self.nodes[i];
            if node.absorbed {
                // Its only input, already passed through the ReLU by the layer that made it.
                values[i + 1] = values[node.inputs[0]].take();
                continue;
            }
            // An input no later layer reads is handed over (`forward_owned`).
            if let [v] = node.inputs[..] {
                if self.last_use[v] == i {
                    let x = values[v].take().expect("value computed and not yet freed");
                    values[i + 1] = Some(node.layer.forward_owned(ctx, x, train)?);
                    continue;
                }
            }
            let out = {
                let ins: Vec<&Tensor> = node
                    .inputs
                    .iter()
                    .map(|&v| {
                        values[v]
                            .as_ref()
                            .expect("value computed and not yet freed")
                    })
                    .collect();
                node.layer.forward(ctx, &ins, train)?
            };
            values[i + 1] = Some(out);
            for &v in &node.inputs {
                if self.last_use[v] == i {
                    values[v] = None;
                }
            }
        }
        Ok(values[n].take().expect("last output"))
    }

    /// Back-propagates `grad` (d loss / d output) through every layer.
    pub fn backward(&mut self, ctx: &mut Ctx<'_>, grad: Tensor) -> Result<(), NnError> {
        let n = self.nodes.len();
        // A value's gradient may be another's too (a residual sum hands its gradient to every
        // input): shared until one of them must change, and only then copied.
        let mut grads: Vec<Option<Rc<Tensor>>> = vec![None; n + 1];
        grads[n] = Some(Rc::new(grad));
        ctx.backward = true;
        for i in (0..n).rev() {
            let Some(g) = grads[i + 1].take() else {
                continue;
            };
            let node = &mut self.nodes[i];
            if node.absorbed {
                // The layer that made the input masks this gradient itself.
                grads[node.inputs[0]] = Some(g);
                continue;
            }
            ctx.need_input_grad = node.inputs.iter().any(|&v| self.requires_grad[v]);
            if !ctx.need_input_grad && node.layer.params().is_empty() {
                continue; // nothing upstream learns from this gradient
            }
            ctx.layer_index = i;
            if node.layer.passes_gradient()? {
                for &v in &node.inputs {
                    if self.requires_grad[v] {
                        accumulate(&mut grads[v], Rc::clone(&g));
                    }
                }
                continue;
            }
            // A one-input layer whose input already has a gradient from another reader (a
            // residual block's input) adds its own onto it.
            if let [v] = node.inputs[..] {
                if self.requires_grad[v] {
                    if let Some(acc) = grads[v].take() {
                        let dx = node.layer.backward_onto(ctx, owned(g), owned(acc))?;
                        grads[v] = Some(Rc::new(dx));
                        continue;
                    }
                }
            }
            let dxs = match Rc::try_unwrap(g) {
                Ok(g) => node.layer.backward(ctx, g)?,
                Err(shared) => node.layer.backward_shared(ctx, &shared)?,
            };
            let mut dxs = dxs.into_iter();
            for &v in &node.inputs {
                let dx = dxs.next();
                if !self.requires_grad[v] {
                    continue;
                }
                let dx = dx.ok_or_else(|| {
                    NnError::shape(node.layer.name(), "backward returned too few gradients")
                })?;
                accumulate(&mut grads[v], Rc::new(dx));
            }
        }
        ctx.backward = false;
        ctx.need_input_grad = true;
        Ok(())
    }

    /// Whether backward computes the input gradient of node `i` (false for the layers that
    /// only the network input, or parameter-free layers on it, feed: no dX GEMM there).
    pub fn needs_input_grad(&self, i: usize) -> bool {
        self.nodes[i].inputs.iter().any(|&v| self.requires_grad[v])
    }

    /// Number of layers (nodes), the length of a [`crate::PrecisionPlan`] for this model.
    pub fn num_layers(&self) -> usize {
        self.nodes.len()
    }

    /// The index (as [`Ctx::layer_index`] counts) of the layer named `name`.
    pub fn layer_index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.layer.name() == name)
    }

    /// The layer index of every parameter, in [`Model::params`] order.
    pub fn param_layers(&self) -> Vec<usize> {
        self.nodes
            .iter()
            .enumerate()
            .flat_map(|(i, n)| std::iter::repeat_n(i, n.layer.params().len()))
            .collect()
    }

    pub fn params(&self) -> Vec<&Param> {
        self.nodes.iter().flat_map(|n| n.layer.params()).collect()
    }

    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        self.nodes
            .iter_mut()
            .flat_map(|n| n.layer.params_mut())
            .collect()
    }

    pub fn buffers(&self) -> Vec<(String, &Vec<f32>)> {
        self.nodes.iter().flat_map(|n| n.layer.buffers()).collect()
    }

    pub fn buffers_mut(&mut self) -> Vec<(String, &mut Vec<f32>)> {
        self.nodes
            .iter_mut()
            .flat_map(|n| n.layer.buffers_mut())
            .collect()
    }

    pub fn num_params(&self) -> usize {
        self.params().iter().map(|p| p.value.len()).sum()
    }

    /// Multiply-accumulates of one example's forward pass.
    pub fn macs_per_example(&self) -> u64 {
        self.nodes
            .iter()
            .map(|n| {
                let ins: Vec<&[usize]> = n
                    .inputs
                    .iter()
                    .map(|&v| self.shapes[v].as_slice())
                    .collect();
                n.layer.macs_per_example(&ins)
            })
            .sum()
    }

    /// Bytes kept by the layers for backward right now.
    pub fn saved_bytes(&self) -> usize {
        self.nodes.iter().map(|n| n.layer.saved_bytes()).sum()
    }

    /// Whether any layer keeps batch statistics (then an SWA model needs them recomputed).
    pub fn has_batch_stats(&self) -> bool {
        !self.buffers().is_empty()
    }

    pub fn begin_stats_recompute(&mut self) {
        self.nodes
            .iter_mut()
            .for_each(|n| n.layer.begin_stats_recompute());
    }

    pub fn end_stats_recompute(&mut self) {
        self.nodes
            .iter_mut()
            .for_each(|n| n.layer.end_stats_recompute());
    }

    pub fn clear_saved(&mut self) {
        self.nodes.iter_mut().for_each(|n| n.layer.clear_saved());
    }

    /// A table of layers, output shapes and parameter counts.
    pub fn summary(&self) -> String {
        let mut s = format!("input {:?}\n", self.spec.input);
        for (i, n) in self.nodes.iter().enumerate() {
            let p: usize = n.layer.params().iter().map(|p| p.value.len()).sum();
            let describe = if n.absorbed {
                format!("{} (in the layer before)", n.layer.describe())
            } else {
                n.layer.describe()
            };
            s += &format!(
                "{:>3} {:<12} {:<40} -> {:?}{}\n",
                i + 1,
                n.layer.name(),
                describe,
                self.shapes[i + 1],
                if p > 0 {
                    format!("  ({p} params)")
                } else {
                    String::new()
                }
            );
        }
        s += &format!(
            "{} parameters, {} MACs per example\n",
            self.num_params(),
            self.macs_per_example()
        );
        s
    }
}

/// A gradient to change: itself when no other value shares it, else a copy.
fn owned(g: Rc<Tensor>) -> Tensor {
    Rc::try_unwrap(g).unwrap_or_else(|shared| (*shared).clone())
}

/// Adds `dx` to a value's gradient `slot` (copying it first if another value shares it), or
/// makes `dx` that gradient (shared as it is).
fn accumulate(slot: &mut Option<Rc<Tensor>>, dx: Rc<Tensor>) {
    match slot {
        Some(acc) => crate::tensor::add_into(&mut Rc::make_mut(acc).data, &dx.data),
        None => *slot = Some(dx),
    }
}
