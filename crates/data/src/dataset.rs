//! The in-memory data set every loader produces: u8 images, channels-first, and u8 labels.

use crate::error::{DataError, Result};

/// A training split and a test split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Splits {
    pub train: Dataset,
    pub test: Dataset,
}

/// A labelled image data set held in memory.
///
/// `images` holds `len() x channels x height x width` bytes, sample-major and channels-first
/// (sample `i`, channel `c`, row `y`, column `x` is at `((i * C + c) * H + y) * W + x`).
/// Every label is below `classes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dataset {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub classes: usize,
}

impl Dataset {
    /// Builds a data set, checking that the image buffer matches the label count and shape and
    /// that every label is below `classes`.
    pub fn new(
        images: Vec<u8>,
        labels: Vec<u8>,
        channels: usize,
        height: usize,
        width: usize,
        classes: usize,
    ) -> Result<Self> {
        if channels == 0 || height == 0 || width == 0 {
            return Err(DataError::InvalidArgument(format!(
                "image shape {channels}x{height}x{width} has a zero dimension"
            )));
        }
        if classes == 0 || classes > 256 {
            return Err(DataError::InvalidArgument(format!(
                "{classes} classes: u8 labels need 1..=256 classes"
            )));
        }
        let sample = channels
            .checked_mul(height)
            .and_then(|v| v.checked_mul(width))
            .ok_or_else(|| DataError::InvalidArgument("image shape overflows usize".into()))?;
        let expected = labels
            .len()
            .checked_mul(sample)
            .ok_or_else(|| DataError::InvalidArgument("data set size overflows usize".into()))?;
        if images.len() != expected {
            return Err(DataError::InvalidArgument(format!(
                "{} labels of {channels}x{height}x{width} images need {expected} image bytes, got {}",
                labels.len(),
                images.len()
            )));
        }
        if let Some((i, &l)) = labels
            .iter()
            .enumerate()
            .find(|(_, &l)| usize::from(l) >= classes)
        {
            return Err(DataError::InvalidArgument(format!(
                "label {l} of sample {i} is not below the class count {classes}"
            )));
        }
        Ok(Dataset {
            images,
            labels,
            channels,
            height,
            width,
            classes,
        })
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the set holds no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes per sample: `channels * height * width`.
    pub fn sample_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// The pixels of sample `i`, channels-first. Panics if `i >= len()`, like slice indexing.
    pub fn image(&self, i: usize) -> &[u8] {
        let s = self.sample_len();
        &self.images[i * s..(i + 1) * s]
    }

    /// The first `n` samples, as a new data set. `n` larger than the set is an error.
    pub fn subset(&self, n: usize) -> Result<Dataset> {
        if n > self.len() {
            return Err(DataError::InvalidArgument(format!(
                "subset of {n} samples asked from a data set of {}",
                self.len()
            )));
        }
        Ok(Dataset {
            images: self.images[..n * self.sample_len()].to_vec(),
            labels: self.labels[..n].to_vec(),
            ..*self
        })
    }

    /// How many samples each class has.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0usize; self.classes];
        for &l in &self.labels {
            counts[usize::from(l)] += 1;
        }
        counts
    }

    /// Per-channel mean and (population) standard deviation of the pixels scaled to [0, 1],
    /// accumulated exactly in integers and finished in f64. An empty set is an error.
    pub fn channel_stats(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        if self.is_empty() {
            return Err(DataError::InvalidArgument(
                "channel statistics of an empty data set".into(),
            ));
        }
        let plane = self.height * self.width;
        let mut sum = vec![0u64; self.channels];
        let mut sum_sq = vec![0u64; self.channels];
        for (p, chunk) in self.images.chunks_exact(plane).enumerate() {
            let c = p % self.channels;
            let (mut s, mut q) = (0u64, 0u64);
            for &v in chunk {
                s += u64::from(v);
                q += u64::from(v) * u64::from(v);
            }
            sum[c] += s;
            sum_sq[c] += q;
        }
        let count = (self.len() * plane) as f64;
        let mut mean = Vec::with_capacity(self.channels);
        let mut std = Vec::with_capacity(self.channels);
        for c in 0..self.channels {
            let m = sum[c] as f64 / count;
            let var = (sum_sq[c] as f64 / count - m * m).max(0.0);
            mean.push((m / 255.0) as f32);
            std.push((var.sqrt() / 255.0) as f32);
        }
        Ok((mean, std))
    }
}
