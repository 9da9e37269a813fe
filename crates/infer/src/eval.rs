//! Accuracy and throughput of an engine on a dataset split.

use std::time::Instant;

use lowprec_data::{BatchConfig, Dataset, EpochBatches, Normalization};
use lowprec_nn::Tensor;

use crate::{Engine, InferError};

/// The first `limit` examples of `ds` (all when `None`) in batches of `batch`, normalised.
pub fn batches(
    ds: &Dataset,
    norm: &Normalization,
    batch: usize,
    limit: Option<usize>,
) -> Result<Vec<(Tensor, Vec<u8>)>, InferError> {
    let derr = |e: lowprec_data::DataError| InferError::Data(e.to_string());
    let it = EpochBatches::new(ds, norm, BatchConfig::eval(batch), 0).map_err(derr)?;
    let mut out = Vec::new();
    let mut seen = 0;
    for b in 0..it.num_batches() {
        if limit.is_some_and(|l| seen >= l) {
            break;
        }
        let mut bt = it.batch(b).map_err(derr)?;
        it.fill_batch(b, &mut bt).map_err(derr)?;
        let mut n = bt.len();
        if let Some(l) = limit {
            n = n.min(l - seen);
        }
        let shape = bt.shape();
        let per: usize = shape[1..].iter().product();
        bt.images.truncate(n * per);
        bt.labels.truncate(n);
        let t = Tensor::new(bt.images, vec![n, shape[1], shape[2], shape[3]])?;
        out.push((t, bt.labels));
        seen += n;
    }
    Ok(out)
}

/// Top-1 accuracy and images per second (forward passes only, batches already in memory).
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct EvalResult {
    pub accuracy: f64,
    pub images: usize,
    pub seconds: f64,
    pub images_per_second: f64,
}

pub fn evaluate(engine: &mut Engine, data: &[(Tensor, Vec<u8>)]) -> Result<EvalResult, InferError> {
    let t0 = Instant::now();
    let (mut correct, mut n) = (0usize, 0usize);
    for (x, labels) in data {
        let y = engine.forward(x.clone())?;
        let classes = y.data.len() / labels.len().max(1);
        for (i, &l) in labels.iter().enumerate() {
            let row = &y.data[i * classes..(i + 1) * classes];
            let best = row
                .iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |(bi, bv), (j, &v)| {
                    if v > bv {
                        (j, v)
                    } else {
                        (bi, bv)
                    }
                })
                .0;
            correct += (best == l as usize) as usize;
        }
        n += labels.len();
    }
    let seconds = t0.elapsed().as_secs_f64();
    Ok(EvalResult {
        accuracy: correct as f64 / n.max(1) as f64,
        images: n,
        seconds,
        images_per_second: n as f64 / seconds.max(1e-9),
    })
}
