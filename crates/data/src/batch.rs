//! Batching: f32 batches `[B, C, H, W]`, normalised per channel, with seeded shuffling and
//! CIFAR-style augmentation (random crop with zero padding, random horizontal flip).
//!
//! Every random decision is a pure function of `(seed, epoch, index)` through
//! [`counter_hash`]; there is no RNG state. A run resumed at epoch `e` sees exactly the order and
//! augmentations it would have seen, whatever the number of threads filling the batches.

use rayon::prelude::*;

use crate::dataset::{Dataset, TargetKind};
use crate::error::{DataError, Result};

/// SplitMix64's finaliser: a bijective 64-bit mixer with full avalanche.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// A counter-based hash of `(seed, stream, index)`: 64 well-mixed bits, the same on every
/// machine and thread. Distinct inputs give independent-looking outputs.
pub fn counter_hash(seed: u64, stream: u64, index: u64) -> u64 {
    let h = mix64(seed.wrapping_add(GOLDEN));
    let h = mix64(
        h ^ stream
            .wrapping_mul(GOLDEN)
            .wrapping_add(0x632b_e59b_d9b4_e019),
    );
    mix64(h ^ index.wrapping_add(0xd1b5_4a32_d192_ed03))
}

/// Streams keep the draws of different purposes apart.
const SHUFFLE_DOMAIN: u64 = 0x5348_5546_4c45; // "SHUFLE"
const AUGMENT_DOMAIN: u64 = 0x4155_474d_4e54; // "AUGMNT"

fn stream(domain: u64, epoch: u64) -> u64 {
    mix64(domain) ^ epoch
}

/// A uniform draw in `0..n` (n >= 1) from 64 hash bits (multiply-shift; bias below n / 2^64).
fn below(hash: u64, n: u64) -> u64 {
    ((u128::from(hash) * u128::from(n)) >> 64) as u64
}

/// The sample order of `epoch`: a permutation of `0..n` from a Fisher-Yates shuffle whose
/// swap at position `i` is drawn from `counter_hash(seed, shuffle stream of epoch, i)`.
pub fn epoch_permutation(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let s = stream(SHUFFLE_DOMAIN, epoch);
    for i in (1..n).rev() {
        let j = below(counter_hash(seed, s, i as u64), i as u64 + 1) as usize;
        order.swap(i, j);
    }
    order
}

/// Per-channel normalisation: of bytes scaled to [0, 1], `(v / 255 - mean[c]) / std[c]`; of
/// f32 features (no scaling), `(v - mean[c]) / std[c]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Normalization {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalization {
    /// Given means and standard deviations; all finite, std > 0, same length >= 1.
    pub fn new(mean: Vec<f32>, std: Vec<f32>) -> Result<Self> {
        if mean.is_empty() || mean.len() != std.len() {
            return Err(DataError::InvalidArgument(format!(
                "normalisation needs one mean and one std per channel, got {} means and {} stds",
                mean.len(),
                std.len()
            )));
        }
        if let Some(m) = mean.iter().find(|m| !m.is_finite()) {
            return Err(DataError::InvalidArgument(format!(
                "normalisation mean {m} is not finite"
            )));
        }
        if let Some(s) = std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(DataError::InvalidArgument(format!(
                "normalisation std {s} must be finite and positive"
            )));
        }
        Ok(Normalization { mean, std })
    }

    /// Plain `v / 255` (bytes) or `v` (features) for each of `channels` channels.
    pub fn unit(channels: usize) -> Self {
        Normalization {
            mean: vec![0.0; channels],
            std: vec![1.0; channels],
        }
    }

    /// MNIST's customary `(v / 255 - 0.1307) / 0.3081`.
    pub fn mnist() -> Self {
        Normalization {
            mean: vec![0.1307],
            std: vec![0.3081],
        }
    }

    /// Mean and std of each channel of `ds` (normally the training set). A channel with zero
    /// variance gets std 1 so that it maps to zero instead of dividing by zero.
    pub fn from_dataset(ds: &Dataset) -> Result<Self> {
        let (mean, std) = ds.channel_stats()?;
        let std = std
            .into_iter()
            .map(|s| if s > 0.0 { s } else { 1.0 })
            .collect();
        Normalization::new(mean, std)
    }

    /// The normalised value of byte `v` in channel `c`; the one formula every path uses.
    #[inline]
    pub fn apply(&self, c: usize, v: u8) -> f32 {
        (f32::from(v) / 255.0 - self.mean[c]) / self.std[c]
    }

    /// The normalised value of f32 feature `v` in channel `c`.
    #[inline]
    pub fn apply_f32(&self, c: usize, v: f32) -> f32 {
        (v - self.mean[c]) / self.std[c]
    }

    fn tables(&self) -> Vec<[f32; 256]> {
        (0..self.mean.len())
            .map(|c| std::array::from_fn(|v| self.apply(c, v as u8)))
            .collect()
    }
}

/// Data augmentation applied when batching.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Augment {
    None,
    /// Pad each side with `pad` zero pixels (raw value 0, before normalisation, as torchvision
    /// does), take a random HxW crop, then flip it horizontally with probability 1/2.
    CropFlip {
        pad: usize,
    },
}

/// One sample's crop offset into the padded image (`0..=2*pad` each) and flip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CropFlip {
    pub dy: usize,
    pub dx: usize,
    pub flip: bool,
}

/// The augmentation of dataset sample `index` in `epoch`, from `counter_hash(seed, augment
/// stream of epoch, index)`: `dy` from the low 32 bits, `dx` from bits 32..63, flip from bit 63.
pub fn crop_flip_decision(seed: u64, epoch: u64, index: usize, pad: usize) -> CropFlip {
    let h = counter_hash(seed, stream(AUGMENT_DOMAIN, epoch), index as u64);
    let span = 2 * pad as u64 + 1;
    CropFlip {
        dy: (((h & 0xffff_ffff) * span) >> 32) as usize,
        dx: ((((h >> 32) & 0x7fff_ffff) * span) >> 31) as usize,
        flip: h >> 63 == 1,
    }
}

/// How to cut a data set into batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchConfig {
    pub batch_size: usize,
    /// Permute the samples each epoch (see [`epoch_permutation`]); otherwise dataset order.
    pub shuffle: bool,
    /// Drop a final batch smaller than `batch_size`; otherwise keep it.
    pub drop_last: bool,
    pub seed: u64,
    pub augment: Augment,
}

impl BatchConfig {
    /// Training: shuffled, last partial batch dropped, no augmentation.
    pub fn train(batch_size: usize, seed: u64) -> Self {
        BatchConfig {
            batch_size,
            shuffle: true,
            drop_last: true,
            seed,
            augment: Augment::None,
        }
    }

    /// Evaluation: dataset order, every sample kept, no augmentation.
    pub fn eval(batch_size: usize) -> Self {
        BatchConfig {
            batch_size,
            shuffle: false,
            drop_last: false,
            seed: 0,
            augment: Augment::None,
        }
    }

    /// The same with augmentation set.
    pub fn with_augment(self, augment: Augment) -> Self {
        BatchConfig { augment, ..self }
    }
}

/// One batch: `images` is `[len, C, H, W]` row-major f32, `labels[i]` and `indices[i]` (the
/// dataset index) belong to image `i`. `targets` holds the regression targets of a data set
/// that has them, or a copy of `images` for an auto-encoder's; empty for class labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub images: Vec<f32>,
    pub labels: Vec<u8>,
    pub targets: Vec<f32>,
    pub indices: Vec<usize>,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl Batch {
    /// Number of samples in the batch.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True for a batch without samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// `[B, C, H, W]`.
    pub fn shape(&self) -> [usize; 4] {
        [self.len(), self.channels, self.height, self.width]
    }
}

/// The batches of one epoch over a data set. Batches can be taken in any order ([`Self::batch`])
/// or iterated ([`Self::iter`]); each is filled in parallel, one sample per task.
pub struct EpochBatches<'a> {
    ds: &'a Dataset,
    norm: Normalization,
    tables: Vec<[f32; 256]>,
    cfg: BatchConfig,
    epoch: u64,
    order: Vec<usize>,
}

impl<'a> EpochBatches<'a> {
    /// Plans epoch `epoch` of `ds`. The normalisation must have one entry per channel.
    pub fn new(
        ds: &'a Dataset,
        norm: &Normalization,
        cfg: BatchConfig,
        epoch: u64,
    ) -> Result<Self> {
        if cfg.batch_size == 0 {
            return Err(DataError::InvalidArgument("batch size 0".into()));
        }
        if norm.mean.len() != ds.channels || norm.std.len() != ds.channels {
            return Err(DataError::InvalidArgument(format!(
                "normalisation has {} means / {} stds for a data set of {} channels",
                norm.mean.len(),
                norm.std.len(),
                ds.channels
            )));
        }
        let norm = Normalization::new(norm.mean.clone(), norm.std.clone())?;
        let order = if cfg.shuffle {
            epoch_permutation(ds.len(), cfg.seed, epoch)
        } else {
            (0..ds.len()).collect()
        };
        Ok(EpochBatches {
            ds,
            tables: norm.tables(),
            norm,
            cfg,
            epoch,
            order,
        })
    }

    /// Number of batches this epoch.
    pub fn num_batches(&self) -> usize {
        let n = self.order.len();
        if self.cfg.drop_last {
            n / self.cfg.batch_size
        } else {
            n.div_ceil(self.cfg.batch_size)
        }
    }

    /// Dataset indices in the order this epoch visits them.
    pub fn order(&self) -> &[usize] {
        &self.order
    }

    /// Dataset indices of batch `b`; empty past the end.
    pub fn batch_indices(&self, b: usize) -> &[usize] {
        if b >= self.num_batches() {
            return &[];
        }
        let start = b * self.cfg.batch_size;
        let end = (start + self.cfg.batch_size).min(self.order.len());
        &self.order[start..end]
    }

    /// The row range of part `part` of `parts` of batch `b` (see [`Self::fill_batch_part`]);
    /// an error unless `part < parts` and every part gets at least one row.
    pub fn part_range(&self, b: usize, part: usize, parts: usize) -> Result<(usize, usize)> {
        let n = self.batch_indices(b).len();
        if parts == 0 || part >= parts {
            return Err(DataError::InvalidArgument(format!(
                "part {part} of {parts} asked: parts must be at least 1 and part below it"
            )));
        }
        if n < parts {
            return Err(DataError::InvalidArgument(format!(
                "batch {b} has {n} rows, fewer than the {parts} parts it is split into \
                 (use a batch of at least one row per rank)"
            )));
        }
        Ok((part * n / parts, (part + 1) * n / parts))
    }

    /// Batch `b`, or an error past the end.
    pub fn batch(&self, b: usize) -> Result<Batch> {
        let mut batch = Batch {
            images: Vec::new(),
            labels: Vec::new(),
            targets: Vec::new(),
            indices: Vec::new(),
            channels: self.ds.channels,
            height: self.ds.height,
            width: self.ds.width,
        };
        self.fill_batch(b, &mut batch)?;
        Ok(batch)
    }

    /// Fills `out` with batch `b`, reusing its buffers.
    pub fn fill_batch(&self, b: usize, out: &mut Batch) -> Result<()> {
        self.fill_batch_part(b, 0, 1, out)
    }

    /// Rows `[part * B / parts, (part + 1) * B / parts)` of batch `b` (of `B` rows): one rank's
    /// shard of a global batch. Each example gets the draws it gets in the whole batch (they are
    /// keyed by its dataset index), so the parts of all ranks together are the batch.
    pub fn fill_batch_part(
        &self,
        b: usize,
        part: usize,
        parts: usize,
        out: &mut Batch,
    ) -> Result<()> {
        if b >= self.num_batches() {
            return Err(DataError::InvalidArgument(format!(
                "batch {b} asked, the epoch has {}",
                self.num_batches()
            )));
        }
        let (start, end) = self.part_range(b, part, parts)?;
        let idx = &self.batch_indices(b)[start..end];
        let sample = self.ds.sample_len();
        out.channels = self.ds.channels;
        out.height = self.ds.height;
        out.width = self.ds.width;
        out.indices.clear();
        out.indices.extend_from_slice(idx);
        out.labels.clear();
        out.labels.extend(idx.iter().map(|&i| self.ds.labels[i]));
        out.images.resize(idx.len() * sample, 0.0);
        out.images
            .par_chunks_mut(sample)
            .zip(idx.par_iter())
            .for_each(|(dst, &i)| self.fill_sample(i, dst));
        out.targets.clear();
        match self.ds.target {
            TargetKind::Class => {}
            TargetKind::Values(_) => out
                .targets
                .extend(idx.iter().flat_map(|&i| self.ds.target_row(i))),
            TargetKind::Input => out.targets.extend_from_slice(&out.images),
        }
        Ok(())
    }

    fn fill_sample(&self, index: usize, dst: &mut [f32]) {
        if self.ds.features.is_empty() {
            let src = self.ds.image(index);
            if self.cfg.augment == Augment::None {
                // The common case as one table lookup per byte, without index arithmetic.
                let plane = self.ds.height * self.ds.width;
                for (c, (d, s)) in dst
                    .chunks_exact_mut(plane)
                    .zip(src.chunks_exact(plane))
                    .enumerate()
                {
                    let t = &self.tables[c];
                    d.iter_mut()
                        .zip(s)
                        .for_each(|(d, &v)| *d = t[usize::from(v)]);
                }
                return;
            }
            self.fill_with(
                index,
                dst,
                |c, k| self.tables[c][usize::from(src[k])],
                |c| self.tables[c][0],
            );
        } else {
            let src = self.ds.feature_row(index);
            self.fill_with(
                index,
                dst,
                |c, k| self.norm.apply_f32(c, src[k]),
                |c| self.norm.apply_f32(c, 0.0),
            );
        }
    }

    /// Fills one sample; `px(c, k)` is the normalised value of the sample's raw value `k` (in
    /// channel `c`), `zero(c)` that of a raw zero (the padding).
    fn fill_with(
        &self,
        index: usize,
        dst: &mut [f32],
        px: impl Fn(usize, usize) -> f32,
        zero: impl Fn(usize) -> f32,
    ) {
        let (c_n, h, w) = (self.ds.channels, self.ds.height, self.ds.width);
        match self.cfg.augment {
            Augment::None => {
                for c in 0..c_n {
                    let plane = c * h * w;
                    for (k, d) in dst[plane..plane + h * w].iter_mut().enumerate() {
                        *d = px(c, plane + k);
                    }
                }
            }
            Augment::CropFlip { pad } => {
                let d = crop_flip_decision(self.cfg.seed, self.epoch, index, pad);
                for c in 0..c_n {
                    let z = zero(c);
                    let plane = c * h * w;
                    let out = &mut dst[plane..plane + h * w];
                    for y in 0..h {
                        let row = &mut out[y * w..(y + 1) * w];
                        // Source row in the unpadded image; rows in the padding are all zero.
                        let sy = (y + d.dy).wrapping_sub(pad);
                        if sy >= h {
                            row.fill(z);
                            continue;
                        }
                        for (x, o) in row.iter_mut().enumerate() {
                            let xc = if d.flip { w - 1 - x } else { x };
                            let sx = (xc + d.dx).wrapping_sub(pad);
                            *o = if sx < w {
                                px(c, plane + sy * w + sx)
                            } else {
                                z
                            };
                        }
                    }
                }
            }
        }
    }

    /// The batches in order.
    pub fn iter(&self) -> BatchIter<'_, 'a> {
        BatchIter {
            epoch: self,
            next: 0,
        }
    }

    /// The normalisation in use.
    pub fn normalization(&self) -> &Normalization {
        &self.norm
    }
}

/// Iterator over an epoch's batches.
pub struct BatchIter<'e, 'a> {
    epoch: &'e EpochBatches<'a>,
    next: usize,
}

impl Iterator for BatchIter<'_, '_> {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        let b = self.epoch.batch(self.next).ok()?;
        self.next += 1;
        Some(b)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.epoch.num_batches().saturating_sub(self.next);
        (left, Some(left))
    }
}

impl ExactSizeIterator for BatchIter<'_, '_> {}

/// Plain scalar reference for one sample's normalised, augmented pixels, written straight from
/// the definition (pad, crop, flip, normalise) with no tables, for tests against the fast path.
pub fn reference_sample(
    ds: &Dataset,
    norm: &Normalization,
    augment: Augment,
    seed: u64,
    epoch: u64,
    index: usize,
) -> Vec<f32> {
    let (c_n, h, w) = (ds.channels, ds.height, ds.width);
    // Raw values as f32 (bytes exactly), normalised at the end by the formula of their kind.
    let src: Vec<f32> = if ds.features.is_empty() {
        ds.image(index).iter().map(|&v| f32::from(v)).collect()
    } else {
        ds.feature_row(index).to_vec()
    };
    let normalise = |c: usize, v: f32| {
        if ds.features.is_empty() {
            norm.apply(c, v as u8)
        } else {
            norm.apply_f32(c, v)
        }
    };
    let mut out = Vec::with_capacity(c_n * h * w);
    let (pad, d) = match augment {
        Augment::None => (
            0,
            CropFlip {
                dy: 0,
                dx: 0,
                flip: false,
            },
        ),
        Augment::CropFlip { pad } => (pad, crop_flip_decision(seed, epoch, index, pad)),
    };
    for c in 0..c_n {
        // The zero-padded image, (h + 2 pad) x (w + 2 pad).
        let (ph, pw) = (h + 2 * pad, w + 2 * pad);
        let mut padded = vec![0f32; ph * pw];
        for y in 0..h {
            for x in 0..w {
                padded[(y + pad) * pw + x + pad] = src[(c * h + y) * w + x];
            }
        }
        for y in 0..h {
            for x in 0..w {
                let cropped_x = if d.flip { w - 1 - x } else { x };
                let v = padded[(y + d.dy) * pw + cropped_x + d.dx];
                out.push(normalise(c, v));
            }
        }
    }
    out
}
