//! What `lowprec rf inspect` reports about a sample stream: how many samples, their mean and
//! peak power, how many were non-finite and replaced, and how its windows are labelled
//! (anomalous windows in all and per anomaly kind). The stream is read once, in chunks.

use std::io::Read;

use crate::sigmf::SampleStream;
use crate::window::{LabelRange, Normaliser, WindowConfig, WindowStream};
use crate::{Iq, RfError};

/// The summary of one stream.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamSummary {
    pub samples: u64,
    /// Sum of `I^2 + Q^2` over all samples.
    pub power_sum: f64,
    /// Largest `I^2 + Q^2`.
    pub peak_power: f64,
    /// Non-finite samples replaced by zero ([`crate::NonFinitePolicy::Zero`]).
    pub replaced: u64,
    /// Complete windows.
    pub windows: u64,
    /// Windows labelled anomalous.
    pub anomalous: u64,
    /// Anomalous windows per annotation label, in the labeller's order of kinds.
    pub per_kind: Vec<(String, u64)>,
}

impl StreamSummary {
    /// Mean `I^2 + Q^2` (`None` for an empty stream).
    pub fn mean_power(&self) -> Option<f64> {
        (self.samples > 0).then(|| self.power_sum / self.samples as f64)
    }
}

/// Reads `stream` to its end (with its end checks) in chunks of `chunk` samples (at least
/// 1), windowing it by `window` and labelling the windows from `ranges`.
pub fn summarise<R: Read>(
    stream: &mut SampleStream<R>,
    ranges: &[LabelRange],
    window: WindowConfig,
    chunk: usize,
) -> Result<StreamSummary, RfError> {
    let mut windows = WindowStream::new(window, Normaliser::identity(), ranges)?;
    let mut batch = windows.empty_windows();
    let mut per_kind = vec![0u64; batch.kind_names.len()];
    let (mut n_windows, mut n_anomalous) = (0u64, 0u64);
    let mut samples: Vec<Iq> = Vec::new();
    let (mut power, mut peak) = (0f64, 0f64);
    while stream.read_chunk(&mut samples, chunk.max(1))? > 0 {
        for s in &samples {
            let p = f64::from(s.i).powi(2) + f64::from(s.q).powi(2);
            power += p;
            peak = peak.max(p);
        }
        batch.clear();
        windows.push(&samples, &mut batch);
        n_windows += batch.len() as u64;
        for k in 0..batch.len() {
            if batch.labels[k] {
                n_anomalous += 1;
                if let Some(kind) = batch.kinds[k] {
                    per_kind[kind as usize] += 1;
                }
            }
        }
    }
    Ok(StreamSummary {
        samples: stream.position(),
        power_sum: power,
        peak_power: peak,
        replaced: stream.replaced(),
        windows: n_windows,
        anomalous: n_anomalous,
        per_kind: batch.kind_names.iter().cloned().zip(per_kind).collect(),
    })
}
