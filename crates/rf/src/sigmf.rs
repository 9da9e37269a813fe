//! SigMF recordings (`.sigmf-meta` JSON + `.sigmf-data` samples) and raw `cf32_le` streams.
//!
//! Writing: the data file is streamed through a temporary file in the destination directory,
//! hashed (SHA-512, stored as `core:sha512`) and renamed into place; the metadata follows the
//! same way. A reader therefore never sees a half-written file under the final name.
//!
//! Reading validates, and reports with the file and sample index:
//! * a missing `.sigmf-meta` next to a `.sigmf-data` ([`RfError::MissingMeta`]);
//! * malformed JSON, a missing required field, a `core:datatype` other than `cf32_le`, more
//!   than one channel, a non-positive sample rate ([`RfError::Meta`]);
//! * a byte count that is not a multiple of 8 ([`RfError::PartialSample`]; a truncated file
//!   usually ends mid-sample);
//! * fewer or more samples than `lowprec:sample_count` ([`RfError::LengthMismatch`]), data not
//!   matching `core:sha512` ([`RfError::Checksum`]), annotations reaching past the data;
//! * NaN or infinite values: an error by default ([`NonFinitePolicy::Error`]); with
//!   [`NonFinitePolicy::Zero`] the whole sample is replaced by `0 + 0j` and counted, which keeps
//!   every later sample at its index (so annotations still line up). Samples are never
//!   dropped.

use std::fs::File;
use std::io::{BufReader, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha512};

use crate::signal::Generator;
use crate::window::LabelRange;
use crate::{Iq, RfError, CF32_BYTES};

/// The SigMF version written.
pub const SIGMF_VERSION: &str = "1.2.0";
/// Largest number of samples buffered per read or write call (32 MiB); larger requests are
/// served in several calls.
pub const MAX_CHUNK_SAMPLES: usize = 1 << 22;

/// The only datatype this crate reads or writes.
pub const DATATYPE: &str = "cf32_le";

/// A declared SigMF extension namespace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Extension {
    pub name: String,
    pub version: String,
    pub optional: bool,
}

/// The `global` object. Fields this crate does not use are ignored when reading (a plain
/// struct, not a catch-all map, so parse errors can name the offending field).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Global {
    #[serde(rename = "core:datatype")]
    pub datatype: String,
    #[serde(
        rename = "core:sample_rate",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub sample_rate: Option<f64>,
    #[serde(rename = "core:version")]
    pub version: String,
    #[serde(
        rename = "core:num_channels",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub num_channels: Option<u64>,
    #[serde(
        rename = "core:sha512",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub sha512: Option<String>,
    #[serde(
        rename = "core:description",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub description: Option<String>,
    #[serde(
        rename = "core:recorder",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub recorder: Option<String>,
    #[serde(
        rename = "core:extensions",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub extensions: Option<Vec<Extension>>,
    /// Bytes after the samples (non-conforming datasets); only 0 is supported.
    #[serde(
        rename = "core:trailing_bytes",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub trailing_bytes: Option<u64>,
    /// A metadata-only recording has no samples; rejected by the reader.
    #[serde(
        rename = "core:metadata_only",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub metadata_only: Option<bool>,
    /// Number of samples in the data file (lowprec extension; lets a reader detect truncation
    /// without hashing).
    #[serde(
        rename = "lowprec:sample_count",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub sample_count: Option<u64>,
    /// The [`crate::SignalSpec`] that generated the data, as JSON (lowprec extension).
    #[serde(
        rename = "lowprec:generator",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub generator: Option<serde_json::Value>,
}

/// One `captures` segment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Capture {
    #[serde(rename = "core:sample_start")]
    pub sample_start: u64,
    #[serde(
        rename = "core:frequency",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub frequency: Option<f64>,
    /// Bytes of header before this capture's samples; only 0 is supported.
    #[serde(
        rename = "core:header_bytes",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub header_bytes: Option<u64>,
}

/// One `annotations` entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Annotation {
    #[serde(rename = "core:sample_start")]
    pub sample_start: u64,
    #[serde(
        rename = "core:sample_count",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub sample_count: Option<u64>,
    #[serde(
        rename = "core:label",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub label: Option<String>,
    #[serde(
        rename = "core:freq_lower_edge",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub freq_lower_edge: Option<f64>,
    #[serde(
        rename = "core:freq_upper_edge",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub freq_upper_edge: Option<f64>,
    #[serde(
        rename = "core:generator",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub generator: Option<String>,
    #[serde(
        rename = "core:comment",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub comment: Option<String>,
}

/// A whole `.sigmf-meta` document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SigMfMeta {
    pub global: Global,
    #[serde(default)]
    pub captures: Vec<Capture>,
    #[serde(default)]
    pub annotations: Vec<Annotation>,
}

impl SigMfMeta {
    /// Minimal metadata for `cf32_le` data at `sample_rate` Hz, one capture at sample 0.
    pub fn new(sample_rate: f64) -> SigMfMeta {
        SigMfMeta {
            global: Global {
                datatype: DATATYPE.into(),
                sample_rate: Some(sample_rate),
                version: SIGMF_VERSION.into(),
                num_channels: Some(1),
                sha512: None,
                description: None,
                recorder: None,
                extensions: None,
                trailing_bytes: None,
                metadata_only: None,
                sample_count: None,
                generator: None,
            },
            captures: vec![Capture {
                sample_start: 0,
                frequency: None,
                header_bytes: None,
            }],
            annotations: Vec::new(),
        }
    }

    /// Metadata describing a generated recording: the spec under `lowprec:generator` and one
    /// annotation per anomaly (label = type, frequency edges, power in the comment). The
    /// capture has no `core:frequency` (no RF centre is simulated), so the annotations'
    /// frequency edges are baseband offsets in Hz.
    pub fn for_generator(generator: &Generator, description: Option<String>) -> SigMfMeta {
        let spec = generator.spec();
        let mut meta = SigMfMeta::new(spec.fm.sample_rate_hz);
        meta.global.description = description;
        meta.global.recorder = Some(format!("lowprec-rf {}", env!("CARGO_PKG_VERSION")));
        meta.global.extensions = Some(vec![Extension {
            name: "lowprec".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            optional: true,
        }]);
        meta.global.generator = serde_json::to_value(spec).ok();
        meta.annotations = spec
            .anomalies
            .iter()
            .map(|a| {
                let (lo, hi) = a.kind.freq_edges();
                Annotation {
                    sample_start: a.start,
                    sample_count: Some(a.count),
                    label: Some(a.kind.label().into()),
                    freq_lower_edge: Some(lo),
                    freq_upper_edge: Some(hi),
                    generator: Some("lowprec-rf".into()),
                    comment: Some(format!(
                        "{} anomaly, {} dB re signal",
                        a.kind.label(),
                        a.power_db
                    )),
                }
            })
            .collect();
        meta
    }

    /// Parses and validates a metadata document (`path` is only used in errors).
    pub fn parse(text: &str, path: &Path) -> Result<SigMfMeta, RfError> {
        let mut de = serde_json::Deserializer::from_str(text);
        let meta: SigMfMeta = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let at = e.path().to_string();
            let msg = if at.is_empty() || at == "." {
                e.inner().to_string()
            } else {
                format!("at {at}: {}", e.inner())
            };
            RfError::Meta {
                path: path.into(),
                msg,
            }
        })?;
        meta.validate(path)?;
        Ok(meta)
    }

    /// Checks what this reader depends on.
    pub fn validate(&self, path: &Path) -> Result<(), RfError> {
        let bad = |msg: String| {
            Err(RfError::Meta {
                path: path.into(),
                msg,
            })
        };
        let g = &self.global;
        if g.datatype != DATATYPE {
            return bad(format!(
                "core:datatype is {:?}; only {DATATYPE:?} (complex f32 little-endian) is supported",
                g.datatype
            ));
        }
        if g.version.trim().is_empty() {
            return bad("core:version is empty".into());
        }
        if let Some(fs) = g.sample_rate {
            if !(fs.is_finite() && fs > 0.0) {
                return bad(format!(
                    "core:sample_rate must be a positive number, got {fs}"
                ));
            }
        }
        if let Some(ch) = g.num_channels {
            if ch != 1 {
                return bad(format!(
                    "core:num_channels is {ch}; only single-channel data is supported"
                ));
            }
        }
        if let Some(h) = &g.sha512 {
            if h.len() != 128 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                return bad(format!("core:sha512 is not 128 hex digits: {h:?}"));
            }
        }
        if g.trailing_bytes.unwrap_or(0) != 0 {
            return bad(
                "core:trailing_bytes is not 0; datasets with trailing bytes are not supported"
                    .into(),
            );
        }
        if g.metadata_only == Some(true) {
            return bad("core:metadata_only is true: this recording has no samples to read".into());
        }
        for (k, c) in self.captures.iter().enumerate() {
            if c.header_bytes.unwrap_or(0) != 0 {
                return bad(format!(
                    "capture {k} has core:header_bytes {}; datasets with headers are not supported",
                    c.header_bytes.unwrap_or(0)
                ));
            }
        }
        for (k, a) in self.annotations.iter().enumerate() {
            if let Some(c) = a.sample_count {
                if a.sample_start.checked_add(c).is_none() {
                    return bad(format!(
                        "annotation {k}: sample_start + sample_count overflows"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks annotations and captures against the number of samples actually present.
    pub fn check_against_length(&self, path: &Path, samples: u64) -> Result<(), RfError> {
        for (k, a) in self.annotations.iter().enumerate() {
            let end = a.sample_start.saturating_add(a.sample_count.unwrap_or(0));
            if a.sample_start > samples || end > samples {
                return Err(RfError::Meta {
                    path: path.into(),
                    msg: format!(
                        "annotation {k} ({}) covers samples [{}, {end}) but the data holds only \
                         {samples} samples (truncated data?)",
                        a.label.as_deref().unwrap_or("unlabelled"),
                        a.sample_start
                    ),
                });
            }
        }
        for (k, c) in self.captures.iter().enumerate() {
            if c.sample_start > samples {
                return Err(RfError::Meta {
                    path: path.into(),
                    msg: format!(
                        "capture {k} starts at sample {} but the data holds only {samples} samples",
                        c.sample_start
                    ),
                });
            }
        }
        Ok(())
    }

    /// The annotations as label ranges for windowing. Annotations without a
    /// `core:sample_count` are rejected (their extent is unknown).
    pub fn label_ranges(&self) -> Result<Vec<LabelRange>, RfError> {
        self.annotations
            .iter()
            .enumerate()
            .map(|(k, a)| {
                let count = a.sample_count.ok_or_else(|| {
                    RfError::InvalidArgument(format!(
                        "annotation {k} at sample {} has no core:sample_count, so its extent is \
                         unknown",
                        a.sample_start
                    ))
                })?;
                Ok(LabelRange {
                    start: a.sample_start,
                    count,
                    label: a.label.clone().unwrap_or_else(|| "anomaly".into()),
                })
            })
            .collect()
    }
}

/// The metadata and data paths of a recording named by its base name or either file.
pub fn sigmf_paths(path: &Path) -> (PathBuf, PathBuf) {
    let s = path.as_os_str().to_string_lossy();
    let base = s
        .strip_suffix(".sigmf-meta")
        .or_else(|| s.strip_suffix(".sigmf-data"))
        .map(|b| b.to_string())
        .unwrap_or_else(|| s.to_string());
    (
        PathBuf::from(format!("{base}.sigmf-meta")),
        PathBuf::from(format!("{base}.sigmf-data")),
    )
}

/// Something that can produce samples `[start, start + out.len())` of a recording.
pub trait SampleSource {
    fn num_samples(&self) -> u64;
    fn fill(&self, start: u64, out: &mut [Iq]) -> Result<(), RfError>;
}

impl SampleSource for Generator {
    fn num_samples(&self) -> u64 {
        Generator::num_samples(self)
    }
    fn fill(&self, start: u64, out: &mut [Iq]) -> Result<(), RfError> {
        Generator::fill(self, start, out)
    }
}

impl SampleSource for [Iq] {
    fn num_samples(&self) -> u64 {
        self.len() as u64
    }
    fn fill(&self, start: u64, out: &mut [Iq]) -> Result<(), RfError> {
        let s = usize::try_from(start)
            .ok()
            .filter(|&s| s + out.len() <= self.len())
            .ok_or_else(|| {
                RfError::InvalidArgument(format!(
                    "samples from {start} requested past {}",
                    self.len()
                ))
            })?;
        out.copy_from_slice(&self[s..s + out.len()]);
        Ok(())
    }
}

/// Encodes samples as `cf32_le` bytes.
pub fn encode_cf32(samples: &[Iq], out: &mut Vec<u8>) {
    out.reserve(samples.len() * CF32_BYTES);
    for s in samples {
        out.extend_from_slice(&s.i.to_le_bytes());
        out.extend_from_slice(&s.q.to_le_bytes());
    }
}

/// Streams `source` as raw `cf32_le` into `w`, `chunk` samples at a time (the chunk size only
/// affects memory use, never the bytes). Returns the SHA-512 of what was written, as hex.
pub fn write_cf32<W: Write>(
    w: &mut W,
    source: &(impl SampleSource + ?Sized),
    chunk: usize,
) -> Result<String, RfError> {
    let chunk = chunk.clamp(1, MAX_CHUNK_SAMPLES);
    let n = source.num_samples();
    let mut samples = vec![Iq::default(); chunk.min(n as usize)];
    let mut bytes = Vec::with_capacity(samples.len() * CF32_BYTES);
    let mut hasher = Sha512::new();
    let mut start = 0u64;
    while start < n {
        let len = chunk.min((n - start) as usize);
        source.fill(start, &mut samples[..len])?;
        bytes.clear();
        encode_cf32(&samples[..len], &mut bytes);
        hasher.update(&bytes);
        w.write_all(&bytes)
            .map_err(|e| RfError::io("<output>", e))?;
        start += len as u64;
    }
    w.flush().map_err(|e| RfError::io("<output>", e))?;
    Ok(to_hex(&hasher.finalize()))
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `path` atomically through the data crate's helper (temp file beside it, fsync,
/// rename; a pipe or device written in place; the temp file removed on error), for writers
/// that return a value and fail with this crate's errors.
pub fn atomic_write<T>(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> Result<T, RfError>,
) -> Result<T, RfError> {
    let mut written: Option<Result<T, RfError>> = None;
    let io = lowprec_data::fsutil::write_atomic(path, |w| {
        let r = write(w);
        let failed = r.is_err();
        written = Some(r);
        if failed {
            // makes the helper remove its temp file; the writer's own error is returned
            Err(std::io::Error::other("writer failed"))
        } else {
            Ok(())
        }
    });
    match (written, io) {
        (Some(Err(e)), _) => Err(e),
        (_, Err(e)) => Err(RfError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        }),
        (Some(Ok(v)), Ok(())) => Ok(v),
        (None, Ok(())) => Err(RfError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other("the writer was not called"),
        }),
    }
}

/// Writes a SigMF recording at base name `base` (`base.sigmf-data`, then `base.sigmf-meta`),
/// each atomically. `meta`'s `core:sha512` and `lowprec:sample_count` are filled in; the
/// metadata as written is returned.
pub fn write_sigmf(
    base: &Path,
    mut meta: SigMfMeta,
    source: &(impl SampleSource + ?Sized),
    chunk: usize,
) -> Result<SigMfMeta, RfError> {
    let (meta_path, data_path) = sigmf_paths(base);
    meta.validate(&meta_path)?;
    let n = source.num_samples();
    meta.check_against_length(&meta_path, n)?;
    let sha = atomic_write(&data_path, |mut w| write_cf32(&mut w, source, chunk))?;
    meta.global.sha512 = Some(sha);
    meta.global.sample_count = Some(n);
    write_meta(&meta_path, &meta)?;
    Ok(meta)
}

/// Writes `meta` as pretty JSON with a final newline to `path`, atomically (a `.sigmf-meta`
/// on its own, e.g. beside raw samples streamed elsewhere).
pub fn write_meta(path: &Path, meta: &SigMfMeta) -> Result<(), RfError> {
    atomic_write(path, |w| {
        serde_json::to_writer_pretty(&mut *w, meta)
            .map_err(|e| RfError::io(path, std::io::Error::other(e)))?;
        w.write_all(b"\n").map_err(|e| RfError::io(path, e))
    })
}

/// What to do with NaN/Inf samples.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NonFinitePolicy {
    /// Fail with [`RfError::NonFinite`] naming the sample index.
    #[default]
    Error,
    /// Replace the whole sample by `0 + 0j` and count it (indices are preserved).
    Zero,
}

/// Reader options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadOptions {
    pub non_finite: NonFinitePolicy,
    /// Verify `core:sha512` when the metadata has one (costs one hash pass, about 1 GB/s).
    pub verify_checksum: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            non_finite: NonFinitePolicy::Error,
            verify_checksum: true,
        }
    }
}

/// Reads `cf32_le` samples from any byte stream (file, stdin, pipe) in chunks, tolerating
/// short reads, with the checks described in the module docs.
pub struct SampleStream<R: Read> {
    reader: R,
    name: String,
    policy: NonFinitePolicy,
    /// Bytes of an incomplete sample carried to the next read (0..=7 bytes).
    pending: Vec<u8>,
    bytes: Vec<u8>,
    index: u64,
    replaced: u64,
    expected_count: Option<u64>,
    checksum: Option<(Sha512, String)>,
    finished: bool,
}

impl<R: Read> SampleStream<R> {
    /// A stream over raw `cf32_le` bytes; `name` appears in errors (a path or `<stdin>`).
    pub fn new(reader: R, name: impl Into<String>, policy: NonFinitePolicy) -> Self {
        SampleStream {
            reader,
            name: name.into(),
            policy,
            pending: Vec::with_capacity(CF32_BYTES),
            bytes: Vec::new(),
            index: 0,
            replaced: 0,
            expected_count: None,
            checksum: None,
            finished: false,
        }
    }

    /// Fail at the end of the stream unless exactly `count` samples were read.
    pub fn expect_count(mut self, count: u64) -> Self {
        self.expected_count = Some(count);
        self
    }

    /// Fail at the end of the stream unless the bytes hash to `sha512_hex`.
    pub fn expect_sha512(mut self, sha512_hex: &str) -> Self {
        self.checksum = Some((Sha512::new(), sha512_hex.to_ascii_lowercase()));
        self
    }

    /// The same stream over a wrapped reader (e.g. boxed, to unify stream types).
    pub fn map_reader<S: Read>(self, f: impl FnOnce(R) -> S) -> SampleStream<S> {
        SampleStream {
            reader: f(self.reader),
            name: self.name,
            policy: self.policy,
            pending: self.pending,
            bytes: self.bytes,
            index: self.index,
            replaced: self.replaced,
            expected_count: self.expected_count,
            checksum: self.checksum,
            finished: self.finished,
        }
    }

    /// Samples delivered so far (the index of the next sample).
    pub fn position(&self) -> u64 {
        self.index
    }

    /// Non-finite samples replaced by zero so far ([`NonFinitePolicy::Zero`]).
    pub fn replaced(&self) -> u64 {
        self.replaced
    }

    /// Clears `out` and fills it with up to `max` samples (at most [`MAX_CHUNK_SAMPLES`]);
    /// fewer only at the end of the stream. Returns the number read; 0 means the stream ended
    /// and passed its end checks.
    pub fn read_chunk(&mut self, out: &mut Vec<Iq>, max: usize) -> Result<usize, RfError> {
        out.clear();
        if self.finished || max == 0 {
            return Ok(0);
        }
        let want = max.min(MAX_CHUNK_SAMPLES) * CF32_BYTES;
        self.bytes.clear();
        self.bytes.extend_from_slice(&self.pending);
        self.pending.clear();
        let mut eof = false;
        let mut filled = self.bytes.len();
        self.bytes.resize(want.max(filled), 0);
        while filled < want {
            match self.reader.read(&mut self.bytes[filled..want]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(k) => {
                    if let Some((h, _)) = &mut self.checksum {
                        h.update(&self.bytes[filled..filled + k]);
                    }
                    filled += k;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(RfError::io(&self.name, e)),
            }
        }
        let whole = filled / CF32_BYTES * CF32_BYTES;
        self.pending.extend_from_slice(&self.bytes[whole..filled]);
        out.reserve(whole / CF32_BYTES);
        for b in self.bytes[..whole].chunks_exact(CF32_BYTES) {
            let i = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            let q = f32::from_le_bytes([b[4], b[5], b[6], b[7]]);
            let mut s = Iq { i, q };
            if !(i.is_finite() && q.is_finite()) {
                match self.policy {
                    NonFinitePolicy::Error => {
                        let (component, value) = if i.is_finite() { ("Q", q) } else { ("I", i) };
                        return Err(RfError::NonFinite {
                            source_name: self.name.clone(),
                            index: self.index + out.len() as u64,
                            component,
                            value,
                        });
                    }
                    NonFinitePolicy::Zero => {
                        s = Iq::default();
                        self.replaced += 1;
                    }
                }
            }
            out.push(s);
        }
        self.index += out.len() as u64;
        if eof {
            self.finish()?;
        }
        Ok(out.len())
    }

    fn finish(&mut self) -> Result<(), RfError> {
        self.finished = true;
        if !self.pending.is_empty() {
            let rem = self.pending.len() as u64;
            return Err(RfError::PartialSample {
                source_name: self.name.clone(),
                bytes: self.index * CF32_BYTES as u64 + rem,
                rem,
                samples: self.index,
            });
        }
        if let Some(expected) = self.expected_count {
            if expected != self.index {
                return Err(RfError::LengthMismatch {
                    source_name: self.name.clone(),
                    expected,
                    actual: self.index,
                });
            }
        }
        if let Some((h, want)) = self.checksum.take() {
            if to_hex(&h.finalize()) != want {
                return Err(RfError::Checksum {
                    source_name: self.name.clone(),
                });
            }
        }
        Ok(())
    }

    /// Reads everything that is left.
    pub fn read_to_end(&mut self) -> Result<Vec<Iq>, RfError> {
        let mut all = Vec::new();
        let mut chunk = Vec::new();
        while self.read_chunk(&mut chunk, 1 << 16)? > 0 {
            all.extend_from_slice(&chunk);
        }
        Ok(all)
    }
}

/// Opens a SigMF recording for streaming: loads and validates the metadata, checks the data
/// file's size against it (partial sample, sample count, annotation extents) before any
/// sample is read, and arms the count and checksum checks for the end of the stream.
pub fn open_sigmf(
    path: &Path,
    opts: ReadOptions,
) -> Result<(SigMfMeta, SampleStream<BufReader<File>>), RfError> {
    let (meta_path, data_path) = sigmf_paths(path);
    if !meta_path.exists() {
        return Err(if data_path.exists() {
            RfError::MissingMeta {
                data: data_path,
                meta: meta_path,
            }
        } else {
            RfError::io(
                &meta_path,
                std::io::Error::new(ErrorKind::NotFound, "no such recording"),
            )
        });
    }
    let text = std::fs::read_to_string(&meta_path).map_err(|e| RfError::io(&meta_path, e))?;
    let meta = SigMfMeta::parse(&text, &meta_path)?;
    let file = File::open(&data_path).map_err(|e| RfError::io(&data_path, e))?;
    let bytes = file
        .metadata()
        .map_err(|e| RfError::io(&data_path, e))?
        .len();
    let stream = sigmf_stream(
        &meta,
        &meta_path,
        BufReader::with_capacity(1 << 20, file),
        data_path.display().to_string(),
        bytes,
        opts,
    )?;
    Ok((meta, stream))
}

/// The stream of [`open_sigmf`] over data of `bytes` bytes in `reader` (named `name` in
/// errors), described by `meta` (read from `meta_path`): the data's size is checked against
/// the metadata (partial sample, sample count, annotation extents) before any sample is read,
/// and the count and checksum checks are armed for the end of the stream.
pub fn sigmf_stream<R: Read>(
    meta: &SigMfMeta,
    meta_path: &Path,
    reader: R,
    name: String,
    bytes: u64,
    opts: ReadOptions,
) -> Result<SampleStream<R>, RfError> {
    let rem = bytes % CF32_BYTES as u64;
    let samples = bytes / CF32_BYTES as u64;
    if rem != 0 {
        return Err(RfError::PartialSample {
            source_name: name,
            bytes,
            rem,
            samples,
        });
    }
    if let Some(expected) = meta.global.sample_count {
        if expected != samples {
            return Err(RfError::LengthMismatch {
                source_name: name,
                expected,
                actual: samples,
            });
        }
    }
    meta.check_against_length(meta_path, samples)?;
    let mut stream = SampleStream::new(reader, name, opts.non_finite).expect_count(samples);
    if opts.verify_checksum {
        if let Some(sha) = &meta.global.sha512 {
            stream = stream.expect_sha512(sha);
        }
    }
    Ok(stream)
}

/// A recording in memory.
#[derive(Clone, Debug)]
pub struct Recording {
    /// `None` for raw cf32 input.
    pub meta: Option<SigMfMeta>,
    pub samples: Vec<Iq>,
    pub sample_rate_hz: Option<f64>,
    /// Non-finite samples replaced by zero while reading.
    pub replaced: u64,
}

impl Recording {
    /// Label ranges from the annotations (none for raw input).
    pub fn label_ranges(&self) -> Result<Vec<LabelRange>, RfError> {
        match &self.meta {
            Some(m) => m.label_ranges(),
            None => Ok(Vec::new()),
        }
    }
}

/// Reads a whole SigMF recording named by its base name, `.sigmf-meta` or `.sigmf-data` path.
pub fn read_recording(path: &Path, opts: ReadOptions) -> Result<Recording, RfError> {
    let (meta, mut stream) = open_sigmf(path, opts)?;
    let samples = stream.read_to_end()?;
    Ok(Recording {
        sample_rate_hz: meta.global.sample_rate,
        meta: Some(meta),
        samples,
        replaced: stream.replaced(),
    })
}

/// Reads a raw headerless `cf32_le` file (no metadata, no annotations).
pub fn read_raw(
    path: &Path,
    sample_rate_hz: Option<f64>,
    policy: NonFinitePolicy,
) -> Result<Recording, RfError> {
    let file = File::open(path).map_err(|e| RfError::io(path, e))?;
    let mut stream = SampleStream::new(BufReader::new(file), path.display().to_string(), policy);
    let samples = stream.read_to_end()?;
    Ok(Recording {
        meta: None,
        samples,
        sample_rate_hz,
        replaced: stream.replaced(),
    })
}

/// Where a sample stream comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputSource {
    /// Raw `cf32_le` on standard input.
    Stdin,
    /// A raw headerless `cf32_le` file.
    Raw(PathBuf),
    /// A SigMF recording: base name, `.sigmf-meta` or `.sigmf-data` path.
    SigMf(PathBuf),
}

impl InputSource {
    /// `-` is standard input; any other path a raw file when `raw`, else a SigMF recording.
    pub fn new(path: &Path, raw: bool) -> InputSource {
        if path.as_os_str() == "-" {
            InputSource::Stdin
        } else if raw {
            InputSource::Raw(path.to_path_buf())
        } else {
            InputSource::SigMf(path.to_path_buf())
        }
    }

    /// Stdin or a raw file: samples without metadata of their own.
    pub fn is_raw(&self) -> bool {
        !matches!(self, InputSource::SigMf(_))
    }
}

/// An input opened by [`open_input`]: the metadata (the recording's own, or the side file
/// given for raw input) and the checked sample stream.
pub struct OpenInput {
    pub meta: Option<SigMfMeta>,
    pub stream: SampleStream<Box<dyn Read>>,
}

impl OpenInput {
    /// Label ranges from the annotations (none without metadata).
    pub fn label_ranges(&self) -> Result<Vec<LabelRange>, RfError> {
        match &self.meta {
            Some(m) => m.label_ranges(),
            None => Ok(Vec::new()),
        }
    }

    /// The metadata's sample rate, if any.
    pub fn sample_rate_hz(&self) -> Option<f64> {
        self.meta.as_ref().and_then(|m| m.global.sample_rate)
    }

    /// Whether the metadata has annotations (so windows carry labels).
    pub fn has_annotations(&self) -> bool {
        self.meta
            .as_ref()
            .is_some_and(|m| !m.annotations.is_empty())
    }
}

/// Reads and validates a `.sigmf-meta` file on its own.
pub fn read_meta(path: &Path) -> Result<SigMfMeta, RfError> {
    let text = std::fs::read_to_string(path).map_err(|e| RfError::io(path, e))?;
    SigMfMeta::parse(&text, path)
}

/// Opens `source` for streaming with the checks of [`SampleStream`]. `side_meta` (raw input
/// only: a SigMF recording has its own) supplies sample rate and annotations, and its sample
/// count and checksum (when verifying) are checked at the end of the stream.
pub fn open_input(
    source: &InputSource,
    side_meta: Option<&Path>,
    opts: ReadOptions,
) -> Result<OpenInput, RfError> {
    let policy = opts.non_finite;
    let (meta, mut stream): (Option<SigMfMeta>, SampleStream<Box<dyn Read>>) = match source {
        InputSource::SigMf(path) => {
            if let Some(p) = side_meta {
                return Err(RfError::bad_option(
                    "--meta",
                    p.display().to_string(),
                    "is for raw input or stdin; a SigMF recording has its own",
                ));
            }
            let (meta, s) = open_sigmf(path, opts)?;
            let s = s.map_reader(|r| Box::new(r) as Box<dyn Read>);
            return Ok(OpenInput {
                meta: Some(meta),
                stream: s,
            });
        }
        InputSource::Stdin => {
            let r: Box<dyn Read> =
                Box::new(BufReader::with_capacity(1 << 20, std::io::stdin().lock()));
            (
                side_meta.map(read_meta).transpose()?,
                SampleStream::new(r, "<stdin>", policy),
            )
        }
        InputSource::Raw(path) => {
            let meta = side_meta.map(read_meta).transpose()?;
            let f = File::open(path).map_err(|e| RfError::io(path, e))?;
            let r: Box<dyn Read> = Box::new(BufReader::with_capacity(1 << 20, f));
            (
                meta,
                SampleStream::new(r, path.display().to_string(), policy),
            )
        }
    };
    // A side metadata file still vouches for the stream's length and content.
    if let Some(m) = &meta {
        if let Some(count) = m.global.sample_count {
            stream = stream.expect_count(count);
        }
        if let (Some(sha), true) = (&m.global.sha512, opts.verify_checksum) {
            stream = stream.expect_sha512(sha);
        }
    }
    Ok(OpenInput { meta, stream })
}
