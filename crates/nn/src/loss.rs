//! Losses in FP32: softmax + cross-entropy (classification) and mean squared error
//! (the RF auto-encoder). Both return the mean loss over the batch and its gradient.

use serde::{Deserialize, Serialize};

use crate::{NnError, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossKind {
    CrossEntropy,
    Mse,
}

/// What the loss compares against.
pub enum Target<'a> {
    Labels(&'a [u8]),
    Values(&'a [f32]),
}

pub struct Loss {
    pub kind: LossKind,
}

/// Result of a loss evaluation.
pub struct LossOut {
    /// Mean loss over the batch.
    pub loss: f64,
    /// d(mean loss) / d(output).
    pub grad: Tensor,
    /// Correct predictions (cross-entropy only).
    pub correct: usize,
    /// Per-example loss (the anomaly score of the auto-encoder).
    pub per_example: Vec<f32>,
}

impl Loss {
    pub fn new(kind: LossKind) -> Self {
        Loss { kind }
    }

    pub fn forward(&self, out: &Tensor, target: Target<'_>) -> Result<LossOut, NnError> {
        let b = out.batch();
        let c = out.per_example();
        if b == 0 {
            return Err(NnError::shape("loss", "empty batch"));
        }
        match (self.kind, target) {
            (LossKind::CrossEntropy, Target::Labels(labels)) => {
                if labels.len() != b {
                    return Err(NnError::shape(
                        "loss",
                        format!("{} labels for a batch of {b}", labels.len()),
                    ));
                }
                let mut grad = vec![0f32; b * c];
                let mut total = 0f64;
                let mut correct = 0;
                let mut per = Vec::with_capacity(b);
                for (i, (row, g)) in out.data.chunks(c).zip(grad.chunks_mut(c)).enumerate() {
                    let y = labels[i] as usize;
                    if y >= c {
                        return Err(NnError::shape(
                            "loss",
                            format!("label {y} but only {c} classes"),
                        ));
                    }
                    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    if !max.is_finite() {
                        return Err(NnError::NonFinite {
                            tensor: "logits".into(),
                            layer: "loss".into(),
                            step: 0,
                            index: i * c,
                            value: max,
                        });
                    }
                    let sum: f64 = row.iter().map(|&v| ((v - max) as f64).exp()).sum();
                    let lse = max as f64 + sum.ln();
                    let l = lse - row[y] as f64;
                    total += l;
                    per.push(l as f32);
                    let argmax =
                        row.iter()
                            .enumerate()
                            .fold(0, |best, (j, &v)| if v > row[best] { j } else { best });
                    if argmax == y {
                        correct += 1;
                    }
                    for (j, gj) in g.iter_mut().enumerate() {
                        let p = ((row[j] as f64 - lse).exp()) as f32;
                        *gj = (p - if j == y { 1.0 } else { 0.0 }) / b as f32;
                    }
                }
                Ok(LossOut {
                    loss: total / b as f64,
                    grad: Tensor::new(grad, out.shape.clone())?,
                    correct,
                    per_example: per,
                })
            }
            (LossKind::Mse, Target::Values(t)) => {
                if t.len() != out.len() {
                    return Err(NnError::shape(
                        "loss",
                        format!("{} targets for {} outputs", t.len(), out.len()),
                    ));
                }
                // mean over all elements (PyTorch's MSELoss default)
                let n = out.len() as f32;
                let mut per = Vec::with_capacity(b);
                let mut total = 0f64;
                let mut grad = vec![0f32; out.len()];
                for (i, (o, tt)) in out.data.chunks(c).zip(t.chunks(c)).enumerate() {
                    let mut s = 0f64;
                    for j in 0..c {
                        let d = o[j] - tt[j];
                        s += (d as f64) * (d as f64);
                        grad[i * c + j] = 2.0 * d / n;
                    }
                    total += s;
                    per.push((s / c as f64) as f32);
                }
                Ok(LossOut {
                    loss: total / out.len() as f64,
                    grad: Tensor::new(grad, out.shape.clone())?,
                    correct: 0,
                    per_example: per,
                })
            }
            (k, _) => Err(NnError::Spec(format!(
                "loss {k:?} got the wrong kind of target"
            ))),
        }
    }
}
