//! The in-memory data set every loader produces: u8 images (or f32 features), channels-first,
//! and u8 labels.

use crate::error::{DataError, Result};

/// A training split and a test split.
#[derive(Clone, Debug, PartialEq)]
pub struct Splits {
    pub train: Dataset,
    pub test: Dataset,
}

/// A labelled data set held in memory.
///
/// Pixels are bytes in `images` (images, decoded or from IDX/uint8 arrays) or, for feature
/// sets given as floats or integers wider than a byte, f32 values in `features`; the other
/// vector is empty. Either holds `len() x channels x height x width` values, sample-major and
/// channels-first (sample `i`, channel `c`, row `y`, column `x` is at
/// `((i * C + c) * H + y) * W + x`). Every label is below `classes`.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    pub images: Vec<u8>,
    pub features: Vec<f32>,
    pub labels: Vec<u8>,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub classes: usize,
    /// What each sample is trained towards: its label, a row of `targets`, or its own input.
    pub target: TargetKind,
    /// Regression targets, `len() x n` values for [`TargetKind::Values`]`(n)`; empty otherwise.
    pub targets: Vec<f32>,
}

/// The training target of a data set's samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetKind {
    /// The class label (cross-entropy).
    Class,
    /// A vector of this many f32 values per sample (regression, mean squared error).
    Values(usize),
    /// The sample's own normalised input (an auto-encoder, mean squared error).
    Input,
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
        let sample = Self::check_shape(images.len(), &labels, channels, height, width, classes)?;
        debug_assert!(sample > 0);
        Ok(Dataset {
            images,
            features: Vec::new(),
            labels,
            channels,
            height,
            width,
            classes,
            target: TargetKind::Class,
            targets: Vec::new(),
        })
    }

    /// Builds a data set of f32 features; as [`Dataset::new`], and every value must be finite.
    pub fn from_f32(
        features: Vec<f32>,
        labels: Vec<u8>,
        channels: usize,
        height: usize,
        width: usize,
        classes: usize,
    ) -> Result<Self> {
        let sample = Self::check_shape(features.len(), &labels, channels, height, width, classes)?;
        if let Some(k) = features.iter().position(|v| !v.is_finite()) {
            return Err(DataError::InvalidArgument(format!(
                "feature {} of sample {} is {}",
                k % sample,
                k / sample,
                features[k]
            )));
        }
        Ok(Dataset {
            images: Vec::new(),
            features,
            labels,
            channels,
            height,
            width,
            classes,
            target: TargetKind::Class,
            targets: Vec::new(),
        })
    }

    /// Checks sizes and labels; returns the values per sample.
    fn check_shape(
        values: usize,
        labels: &[u8],
        channels: usize,
        height: usize,
        width: usize,
        classes: usize,
    ) -> Result<usize> {
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
        if values != expected {
            return Err(DataError::InvalidArgument(format!(
                "{} labels of {channels}x{height}x{width} samples need {expected} values, got {values}",
                labels.len(),
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
        Ok(sample)
    }

    /// True when the pixels are f32 features rather than bytes.
    pub fn is_float(&self) -> bool {
        !self.features.is_empty()
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

    /// The pixels of sample `i` of a byte set, channels-first (empty for a float set).
    /// Panics if `i >= len()`, like slice indexing.
    pub fn image(&self, i: usize) -> &[u8] {
        if self.images.is_empty() {
            return &[];
        }
        let s = self.sample_len();
        &self.images[i * s..(i + 1) * s]
    }

    /// The features of sample `i` of a float set (empty for a byte set).
    pub fn feature_row(&self, i: usize) -> &[f32] {
        if self.features.is_empty() {
            return &[];
        }
        let s = self.sample_len();
        &self.features[i * s..(i + 1) * s]
    }

    /// The first `n` samples, as a new data set. `n` larger than the set is an error.
    pub fn subset(&self, n: usize) -> Result<Dataset> {
        if n > self.len() {
            return Err(DataError::InvalidArgument(format!(
                "subset of {n} samples asked from a data set of {}",
                self.len()
            )));
        }
        self.select(&(0..n).collect::<Vec<_>>())
    }

    /// The samples at `indices`, in that order, as a new data set.
    pub fn select(&self, indices: &[usize]) -> Result<Dataset> {
        if let Some(&i) = indices.iter().find(|&&i| i >= self.len()) {
            return Err(DataError::InvalidArgument(format!(
                "sample {i} asked from a data set of {}",
                self.len()
            )));
        }
        let s = self.sample_len();
        let labels = indices.iter().map(|&i| self.labels[i]).collect();
        let (images, features) = if self.features.is_empty() {
            let mut v = Vec::with_capacity(indices.len() * s);
            indices
                .iter()
                .for_each(|&i| v.extend_from_slice(self.image(i)));
            (v, Vec::new())
        } else {
            let mut v = Vec::with_capacity(indices.len() * s);
            indices
                .iter()
                .for_each(|&i| v.extend_from_slice(self.feature_row(i)));
            (Vec::new(), v)
        };
        Ok(Dataset {
            images,
            features,
            labels,
            channels: self.channels,
            height: self.height,
            width: self.width,
            classes: self.classes,
            target: self.target,
            targets: match self.target {
                TargetKind::Values(n) => indices
                    .iter()
                    .flat_map(|&i| &self.targets[i * n..(i + 1) * n])
                    .copied()
                    .collect(),
                _ => Vec::new(),
            },
        })
    }

    /// The same samples trained towards `targets` (`len() x n` finite values) instead of labels.
    pub fn with_value_targets(mut self, targets: Vec<f32>, n: usize) -> Result<Self> {
        if n == 0 || targets.len() != self.len() * n {
            return Err(DataError::InvalidArgument(format!(
                "{} target values for {} samples of {n} targets each",
                targets.len(),
                self.len()
            )));
        }
        if let Some(k) = targets.iter().position(|v| !v.is_finite()) {
            return Err(DataError::InvalidArgument(format!(
                "target {} of sample {} is {}",
                k % n,
                k / n,
                targets[k]
            )));
        }
        self.target = TargetKind::Values(n);
        self.targets = targets;
        Ok(self)
    }

    /// The same samples trained to reproduce their own input (an auto-encoder).
    pub fn as_auto_encoder(mut self) -> Self {
        self.target = TargetKind::Input;
        self.targets = Vec::new();
        self
    }

    /// Values a network's output must have per sample: the class count, the target length or
    /// the input length.
    pub fn output_len(&self) -> usize {
        match self.target {
            TargetKind::Class => self.classes,
            TargetKind::Values(n) => n,
            TargetKind::Input => self.sample_len(),
        }
    }

    /// The regression targets of sample `i` (empty unless [`TargetKind::Values`]).
    pub fn target_row(&self, i: usize) -> &[f32] {
        match self.target {
            TargetKind::Values(n) => &self.targets[i * n..(i + 1) * n],
            _ => &[],
        }
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
    /// accumulated exactly in integers and finished in f64; of a float set, of the features as
    /// they are, accumulated in f64. An empty set is an error.
    pub fn channel_stats(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        if self.is_empty() {
            return Err(DataError::InvalidArgument(
                "channel statistics of an empty data set".into(),
            ));
        }
        let plane = self.height * self.width;
        if !self.features.is_empty() {
            let mut sum = vec![0f64; self.channels];
            for (p, chunk) in self.features.chunks_exact(plane).enumerate() {
                sum[p % self.channels] += chunk.iter().map(|&v| f64::from(v)).sum::<f64>();
            }
            let count = (self.len() * plane) as f64;
            let mean: Vec<f64> = sum.iter().map(|s| s / count).collect();
            // Two passes: the centred sum of squares keeps its precision for large offsets.
            let mut sq = vec![0f64; self.channels];
            for (p, chunk) in self.features.chunks_exact(plane).enumerate() {
                let m = mean[p % self.channels];
                sq[p % self.channels] += chunk
                    .iter()
                    .map(|&v| (f64::from(v) - m).powi(2))
                    .sum::<f64>();
            }
            return Ok((
                mean.iter().map(|&m| m as f32).collect(),
                sq.iter().map(|&q| (q / count).sqrt() as f32).collect(),
            ));
        }
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
