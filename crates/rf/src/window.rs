//! Sliding windows of I/Q samples: the auto-encoder's input vectors, with labels.
//!
//! * A window is `len` consecutive complex samples (default 16), flattened as
//!   `I0, Q0, I1, Q1, ...` into `2 * len` reals (default 32, the input width of 002's
//!   auto-encoder). Windows start every `stride` samples (default 16: adjacent, not
//!   overlapping), at indices `0, stride, 2 stride, ...` of the recording; a trailing partial
//!   window is not emitted.
//! * **Normalisation**: every I and Q value is divided by one scale, the per-component RMS of
//!   a training segment, `sqrt(mean((I^2 + Q^2) / 2))`. Normal training windows then have
//!   unit mean square per input; the same scale is applied to test data (never re-estimated on
//!   it, so an anomaly's extra power shows up as larger inputs).
//! * **Labels**: a window is anomalous when at least `ceil(min_overlap * len)` of its samples
//!   (default `min_overlap` 0.5, at least 1 sample) lie inside the union of the annotated
//!   ranges. Its kind is the label of the single annotation overlapping it most (ties: the
//!   annotation listed first).

use crate::{Iq, RfError};

/// An annotated range of samples `[start, start + count)` with its label (anomaly type).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelRange {
    pub start: u64,
    pub count: u64,
    pub label: String,
}

/// Window shape and labelling rule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WindowConfig {
    /// Complex samples per window.
    pub len: usize,
    /// Complex samples between window starts.
    pub stride: usize,
    /// Fraction of a window that must be annotated for it to count as anomalous, in (0, 1].
    pub min_overlap: f64,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            len: 16,
            stride: 16,
            min_overlap: 0.5,
        }
    }
}

impl WindowConfig {
    pub fn validate(&self) -> Result<(), RfError> {
        if self.len == 0 || self.stride == 0 {
            return Err(RfError::InvalidArgument(format!(
                "window length and stride must be at least 1 sample (got len {}, stride {})",
                self.len, self.stride
            )));
        }
        if !(self.min_overlap > 0.0 && self.min_overlap <= 1.0) {
            return Err(RfError::InvalidArgument(format!(
                "window min_overlap must be in (0, 1], got {}",
                self.min_overlap
            )));
        }
        Ok(())
    }

    /// Reals per window (`2 * len`).
    pub fn dim(&self) -> usize {
        2 * self.len
    }

    /// Annotated samples needed for a window to be labelled anomalous.
    pub fn min_annotated(&self) -> u64 {
        ((self.min_overlap * self.len as f64).ceil() as u64).clamp(1, self.len as u64)
    }

    /// Number of complete windows in a recording of `samples` samples.
    pub fn count_for(&self, samples: u64) -> u64 {
        if samples < self.len as u64 {
            0
        } else {
            (samples - self.len as u64) / self.stride as u64 + 1
        }
    }
}

/// Divides every I and Q value by `scale`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normaliser {
    pub scale: f32,
}

impl Normaliser {
    /// No scaling.
    pub fn identity() -> Normaliser {
        Normaliser { scale: 1.0 }
    }

    /// The per-component RMS of a training segment (see the module docs).
    pub fn fit(samples: &[Iq]) -> Result<Normaliser, RfError> {
        if samples.is_empty() {
            return Err(RfError::InvalidArgument(
                "cannot estimate a normalisation scale from an empty training segment".into(),
            ));
        }
        let sum: f64 = samples
            .iter()
            .map(|s| f64::from(s.i) * f64::from(s.i) + f64::from(s.q) * f64::from(s.q))
            .sum();
        let scale = (sum / (2.0 * samples.len() as f64)).sqrt();
        if !(scale.is_finite() && scale > 0.0) {
            return Err(RfError::InvalidArgument(format!(
                "training segment of {} samples has RMS {scale}: cannot normalise by it",
                samples.len()
            )));
        }
        Ok(Normaliser {
            scale: scale as f32,
        })
    }

    pub fn validate(&self) -> Result<(), RfError> {
        if self.scale.is_finite() && self.scale > 0.0 {
            Ok(())
        } else {
            Err(RfError::InvalidArgument(format!(
                "normalisation scale must be positive and finite, got {}",
                self.scale
            )))
        }
    }
}

/// Labels windows from annotated ranges.
#[derive(Clone, Debug)]
struct Labeller {
    /// Annotations sorted by start (stable), with their kind index.
    /// `(start, end, kind, index in the caller's list)`.
    ranges: Vec<(u64, u64, u16, usize)>,
    /// Union of the annotations as disjoint sorted `[start, end)` intervals.
    merged: Vec<(u64, u64)>,
    names: Vec<String>,
    /// Longest annotation, to bound the backwards search for overlapping ranges.
    longest: u64,
}

impl Labeller {
    fn new(ranges: &[LabelRange]) -> Result<Labeller, RfError> {
        let mut names: Vec<String> = Vec::new();
        let mut sorted = Vec::with_capacity(ranges.len());
        for (k, r) in ranges.iter().enumerate() {
            let end = r.start.checked_add(r.count).ok_or_else(|| {
                RfError::InvalidArgument(format!("label range {k}: start + count overflows"))
            })?;
            if r.count == 0 {
                continue;
            }
            let kind = match names.iter().position(|n| *n == r.label) {
                Some(p) => p,
                None => {
                    names.push(r.label.clone());
                    names.len() - 1
                }
            };
            let kind = u16::try_from(kind).map_err(|_| {
                RfError::InvalidArgument("more than 65535 distinct annotation labels".into())
            })?;
            sorted.push((r.start, end, kind, k));
        }
        sorted.sort_by_key(|&(s, _, _, _)| s);
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for &(s, e, _, _) in &sorted {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        let longest = sorted.iter().map(|&(s, e, _, _)| e - s).max().unwrap_or(0);
        Ok(Labeller {
            ranges: sorted,
            merged,
            names,
            longest,
        })
    }

    /// `(annotated samples in [s, e), kind of the most-overlapping annotation)`.
    fn label(&self, s: u64, e: u64) -> (u64, Option<u16>) {
        let first = self.merged.partition_point(|&(_, end)| end <= s);
        let covered: u64 = self.merged[first..]
            .iter()
            .take_while(|&&(start, _)| start < e)
            .map(|&(start, end)| end.min(e) - start.max(s))
            .sum();
        if covered == 0 {
            return (0, None);
        }
        // Annotations overlapping [s, e) start in [s - longest, e).
        let lo = self
            .ranges
            .partition_point(|&(start, _, _, _)| start < s.saturating_sub(self.longest));
        // (overlap, caller's index, kind): most overlap, then first listed.
        let mut best: Option<(u64, usize, u16)> = None;
        for &(start, end, kind, index) in &self.ranges[lo..] {
            if start >= e {
                break;
            }
            let overlap = end.min(e).saturating_sub(start.max(s));
            let better = best.is_none_or(|(b, bi, _)| overlap > b || (overlap == b && index < bi));
            if overlap > 0 && better {
                best = Some((overlap, index, kind));
            }
        }
        (covered, best.map(|(_, _, kind)| kind))
    }
}

/// A batch of windows: inputs row-major, one row of `dim` reals per window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Windows {
    pub dim: usize,
    pub inputs: Vec<f32>,
    /// Index of each window's first sample in the recording.
    pub starts: Vec<u64>,
    pub labels: Vec<bool>,
    /// Index into `kind_names` of each window's dominant annotation, if any overlaps it.
    pub kinds: Vec<Option<u16>>,
    pub kind_names: Vec<String>,
}

impl Windows {
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// Window `k`'s inputs.
    pub fn input(&self, k: usize) -> &[f32] {
        &self.inputs[k * self.dim..(k + 1) * self.dim]
    }

    /// Window `k`'s kind name (`None` for windows no annotation overlaps).
    pub fn kind_name(&self, k: usize) -> Option<&str> {
        self.kinds[k].map(|i| self.kind_names[i as usize].as_str())
    }

    /// Number of windows labelled anomalous.
    pub fn anomalous(&self) -> usize {
        self.labels.iter().filter(|&&l| l).count()
    }

    /// Removes all windows, keeping `dim` and the kind names.
    pub fn clear(&mut self) {
        self.inputs.clear();
        self.starts.clear();
        self.labels.clear();
        self.kinds.clear();
    }
}

/// Incremental windowing for streamed input: push chunks of any size, get the same windows
/// as one call on the whole recording.
#[derive(Clone, Debug)]
pub struct WindowStream {
    cfg: WindowConfig,
    norm: Normaliser,
    labeller: Labeller,
    buf: Vec<Iq>,
    /// Recording index of `buf[0]`.
    buf_start: u64,
    /// Recording index of the next window's first sample.
    next_start: u64,
}

impl WindowStream {
    pub fn new(
        cfg: WindowConfig,
        norm: Normaliser,
        ranges: &[LabelRange],
    ) -> Result<WindowStream, RfError> {
        cfg.validate()?;
        norm.validate()?;
        Ok(WindowStream {
            cfg,
            norm,
            labeller: Labeller::new(ranges)?,
            buf: Vec::new(),
            buf_start: 0,
            next_start: 0,
        })
    }

    /// An empty batch with this stream's `dim` and kind names.
    pub fn empty_windows(&self) -> Windows {
        Windows {
            dim: self.cfg.dim(),
            kind_names: self.labeller.names.clone(),
            ..Default::default()
        }
    }

    /// Appends the windows completed by `chunk` to `out`.
    pub fn push(&mut self, chunk: &[Iq], out: &mut Windows) {
        if out.dim == 0 && out.is_empty() {
            out.dim = self.cfg.dim();
        }
        if out.kind_names.is_empty() {
            out.kind_names = self.labeller.names.clone();
        }
        self.buf.extend_from_slice(chunk);
        let len = self.cfg.len as u64;
        let min_annotated = self.cfg.min_annotated();
        let inv = 1.0 / self.norm.scale;
        while self.next_start + len <= self.buf_start + self.buf.len() as u64 {
            let off = (self.next_start - self.buf_start) as usize;
            for s in &self.buf[off..off + self.cfg.len] {
                out.inputs.push(s.i * inv);
                out.inputs.push(s.q * inv);
            }
            let (covered, kind) = self.labeller.label(self.next_start, self.next_start + len);
            out.starts.push(self.next_start);
            out.labels.push(covered >= min_annotated);
            out.kinds.push(kind);
            self.next_start += self.cfg.stride as u64;
        }
        let drop = ((self.next_start - self.buf_start) as usize).min(self.buf.len());
        self.buf.drain(..drop);
        self.buf_start += drop as u64;
    }
}

/// Windows of a whole recording (samples indexed from 0, as the annotations are).
pub fn make_windows(
    samples: &[Iq],
    cfg: WindowConfig,
    norm: Normaliser,
    ranges: &[LabelRange],
) -> Result<Windows, RfError> {
    let mut stream = WindowStream::new(cfg, norm, ranges)?;
    let mut out = stream.empty_windows();
    let n = cfg.count_for(samples.len() as u64) as usize;
    out.inputs.reserve(n * cfg.dim());
    stream.push(samples, &mut out);
    Ok(out)
}
