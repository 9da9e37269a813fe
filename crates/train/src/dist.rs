//! Data-parallel training: every rank trains on its shard of each global batch and the ranks
//! all-reduce their gradients before the one SGD step, so all ranks apply the same update.
//!
//! The reduction is done here, not by the transport: a [`Transport`] only gathers every rank's
//! bytes in rank order (MPI's allgather, or [`Loopback`] between threads), and each rank decodes
//! and sums the contributions in rank order 0, 1, ..., N-1. Every rank therefore computes the
//! same bits, whatever order the messages arrived in.
//!
//! Gradients travel as fp32 or as 8-bit BFP ([`ExchangeFormat`]): per tile (or per tensor) one
//! shared exponent byte and one signed 8-bit mantissa per value, stochastically rounded with
//! draws from the counter-based generator keyed by `(seed, step, rank, element)`. A rank's own
//! contribution is decoded like the others', so the ranks agree bit for bit. There is no error
//! feedback: the rounding error of a step is not carried into the next (stochastic rounding
//! keeps it unbiased); its size is measured ([`ExchangeStats::relative_error`]).

use lowprec_formats::rng::{stream_id, uniform_f32, StreamKey};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::TrainError;

/// Moves bytes between the ranks of a job.
pub trait Transport: Send {
    /// This process's rank, `0..size()`.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn size(&self) -> usize;
    /// Every rank's `mine` (all of the same length), concatenated in rank order.
    fn allgather(&mut self, mine: &[u8]) -> Result<Vec<u8>, TrainError>;
    /// What carries the bytes (for reports).
    fn name(&self) -> String;
}

/// How gradients are encoded on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExchangeFormat {
    Fp32,
    /// 8-bit BFP with a shared exponent per `tile` values (`None`: per tensor).
    Bfp8 {
        tile: Option<usize>,
    },
}

/// Tile of `--exchange bfp8` without a size.
pub const DEFAULT_TILE: usize = 32;

impl FromStr for ExchangeFormat {
    type Err = TrainError;

    fn from_str(s: &str) -> Result<Self, TrainError> {
        let bad = || {
            TrainError::Config(format!(
                "exchange format `{s}`: expected fp32, bfp8, bfp8:tileK (K >= 1) or bfp8:tensor"
            ))
        };
        match s {
            "fp32" => Ok(ExchangeFormat::Fp32),
            "bfp8" => Ok(ExchangeFormat::Bfp8 {
                tile: Some(DEFAULT_TILE),
            }),
            "bfp8:tensor" => Ok(ExchangeFormat::Bfp8 { tile: None }),
            _ => {
                let k = s.strip_prefix("bfp8:tile").ok_or_else(bad)?;
                let k: usize = k.parse().map_err(|_| bad())?;
                if k == 0 || k > u32::MAX as usize {
                    return Err(bad());
                }
                Ok(ExchangeFormat::Bfp8 { tile: Some(k) })
            }
        }
    }
}

impl fmt::Display for ExchangeFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExchangeFormat::Fp32 => write!(f, "fp32"),
            ExchangeFormat::Bfp8 { tile: None } => write!(f, "bfp8:tensor"),
            ExchangeFormat::Bfp8 { tile: Some(k) } => write!(f, "bfp8:tile{k}"),
        }
    }
}

/// Mantissa bits below the sign: values are `q * 2^(e - 6)`, `|q| <= 127`.
const MANT_SHIFT: i32 = 6;

/// Encodes `x` as 8-bit BFP: for each tile of `tile` values one exponent byte (the biased f32
/// exponent of the tile's largest magnitude, 0 for a tile of zeros or values below 2^-126, which
/// are flushed to zero) and one mantissa per value, `q = floor(x * 2^(6 - e) + u)` clamped to
/// `[-127, 127]` with `u = uniform_f32(key, first + i)`. Returns the sum of the squared
/// errors of the decoded values; a NaN or infinity is refused: the error is its index.
pub fn encode_bfp8(
    x: &[f32],
    tile: usize,
    key: StreamKey,
    first: u64,
    exps: &mut Vec<u8>,
    mants: &mut Vec<i8>,
) -> Result<f64, usize> {
    assert!(tile > 0, "tile of 0 values");
    let mut err_sq = 0f64;
    for (t, chunk) in x.chunks(tile).enumerate() {
        let mut max = 0f32;
        for (i, &v) in chunk.iter().enumerate() {
            if !v.is_finite() {
                return Err(t * tile + i);
            }
            max = max.max(v.abs());
        }
        let biased = (max.to_bits() >> 23) & 0xff;
        if biased == 0 {
            exps.push(0);
            mants.extend(std::iter::repeat_n(0, chunk.len()));
            err_sq += chunk
                .iter()
                .map(|&v| f64::from(v) * f64::from(v))
                .sum::<f64>();
            continue;
        }
        exps.push(biased as u8);
        let scale = exp2(MANT_SHIFT - (biased as i32 - 127));
        let step = exp2(biased as i32 - 127 - MANT_SHIFT);
        let base = first + (t * tile) as u64;
        for (i, &v) in chunk.iter().enumerate() {
            let u = f64::from(uniform_f32(key, base + i as u64));
            let q = (f64::from(v) * scale + u).floor().clamp(-127.0, 127.0);
            mants.push(q as i8);
            let e = f64::from((q * step) as f32) - f64::from(v);
            err_sq += e * e;
        }
    }
    Ok(err_sq)
}

/// Decodes what [`encode_bfp8`] wrote into `out` (`exps` holds one byte per tile of `out`).
pub fn decode_bfp8(exps: &[u8], mants: &[i8], tile: usize, out: &mut [f32]) {
    let bytes: Vec<u8> = mants.iter().map(|&m| m as u8).collect();
    decode_bfp8_bytes(exps, &bytes, tile, out, false);
}

/// [`decode_bfp8`] from the mantissas' bytes, adding to `out` when `add` (in f32, as the
/// rank-order sum does) instead of storing.
fn decode_bfp8_bytes(exps: &[u8], mants: &[u8], tile: usize, out: &mut [f32], add: bool) {
    for ((o, m), &e) in out.chunks_mut(tile).zip(mants.chunks(tile)).zip(exps) {
        if e == 0 {
            if !add {
                o.fill(0.0);
            }
            continue;
        }
        let scale = exp2(i32::from(e) - 127 - MANT_SHIFT);
        for (o, &q) in o.iter_mut().zip(m) {
            let v = (f64::from(q as i8) * scale) as f32;
            if add {
                *o += v;
            } else {
                *o = v;
            }
        }
    }
}

/// `2^k` exactly (|k| well inside f64's range).
fn exp2(k: i32) -> f64 {
    f64::from_bits(((1023 + k as i64) as u64) << 52)
}

/// Bytes of the encoding of tensors of `lens` values (without the header).
pub fn encoded_len(format: ExchangeFormat, lens: &[usize]) -> usize {
    match format {
        ExchangeFormat::Fp32 => 4 * lens.iter().sum::<usize>(),
        ExchangeFormat::Bfp8 { tile } => lens
            .iter()
            .map(|&n| n + n.div_ceil(tile.unwrap_or(n.max(1))))
            .sum(),
    }
}

const MAGIC: &[u8; 4] = b"LPX1";
/// magic, kind, status, 2 spare, tag, count, bad index, two f64 statistics.
pub const HEADER_BYTES: usize = 48;
const KIND_FP32: u8 = 0;
const KIND_BFP8: u8 = 1;
const STATUS_OK: u8 = 0;
const STATUS_NONFINITE: u8 = 1;
/// Stream of the exchange's stochastic rounding ("XCHG").
const EXCHANGE_DOMAIN: u64 = 0x5843_4847;
/// Tag of the collectives outside the training steps (they count down from here).
const TAG_SETUP: u64 = u64::MAX;

struct Header {
    kind: u8,
    status: u8,
    tag: u64,
    count: u64,
    bad: u64,
    stats: [f64; 2],
}

impl Header {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&[self.kind, self.status, 0, 0]);
        out.extend_from_slice(&self.tag.to_le_bytes());
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&self.bad.to_le_bytes());
        out.extend_from_slice(&self.stats[0].to_le_bytes());
        out.extend_from_slice(&self.stats[1].to_le_bytes());
    }

    fn read(b: &[u8], rank: usize) -> Result<Header, TrainError> {
        if b.len() < HEADER_BYTES || &b[..4] != MAGIC {
            return Err(TrainError::Exchange(format!(
                "rank {rank} sent {} bytes that are not a gradient message",
                b.len()
            )));
        }
        let u = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        Ok(Header {
            kind: b[4],
            status: b[5],
            tag: u(8),
            count: u(16),
            bad: u(24),
            stats: [f64::from_bits(u(32)), f64::from_bits(u(40))],
        })
    }
}

/// What the exchange did over a run (this invocation).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExchangeStats {
    /// Gradient all-reduces done.
    pub iterations: u64,
    /// Bytes this rank contributes to one gradient all-reduce (header included).
    pub bytes_per_iteration: u64,
    /// Wall time in gradient all-reduces (encode, transport, decode and sum).
    pub seconds: f64,
    /// Sums over all steps of this rank's squared encoding error and squared gradient norm.
    pub err_sq: f64,
    pub norm_sq: f64,
}

impl ExchangeStats {
    /// `sqrt(sum |decoded - sent|^2 / sum |sent|^2)` of this rank's contributions (0 for fp32).
    pub fn relative_error(&self) -> f64 {
        if self.norm_sq > 0.0 {
            (self.err_sq / self.norm_sq).sqrt()
        } else {
            0.0
        }
    }
}

/// A collective that must finish within a time limit; [`Watchdog::guard`] marks one.
pub struct Watchdog {
    state: Arc<(Mutex<WatchState>, Condvar)>,
    timeout: Duration,
}

struct WatchState {
    current: Option<(Instant, String)>,
    stop: bool,
}

/// Marks a collective in progress; dropping it ends the mark.
pub struct WatchGuard<'a> {
    dog: &'a Watchdog,
}

impl Watchdog {
    /// Starts a thread that calls `on_timeout(what, timeout)` once if a guarded collective
    /// runs longer than `timeout` (the CLI's handler prints the error and exits).
    pub fn start(
        timeout: Duration,
        on_timeout: impl Fn(&str, Duration) + Send + 'static,
    ) -> Watchdog {
        let state = Arc::new((
            Mutex::new(WatchState {
                current: None,
                stop: false,
            }),
            Condvar::new(),
        ));
        let s = state.clone();
        let poll = (timeout / 10).clamp(Duration::from_millis(10), Duration::from_millis(500));
        std::thread::Builder::new()
            .name("collective-watchdog".into())
            .spawn(move || {
                let (lock, cv) = &*s;
                let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    if st.stop {
                        return;
                    }
                    if let Some((t0, what)) = &st.current {
                        if t0.elapsed() > timeout {
                            let what = what.clone();
                            drop(st);
                            on_timeout(&what, timeout);
                            return;
                        }
                    }
                    st = cv
                        .wait_timeout(st, poll)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            })
            .expect("the watchdog thread starts");
        Watchdog { state, timeout }
    }

    /// The time limit of one collective.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Marks the collective `what` as running until the guard is dropped.
    pub fn guard(&self, what: String) -> WatchGuard<'_> {
        let mut st = self.state.0.lock().unwrap_or_else(|e| e.into_inner());
        st.current = Some((Instant::now(), what));
        WatchGuard { dog: self }
    }
}

impl Drop for WatchGuard<'_> {
    fn drop(&mut self) {
        let mut st = self.dog.state.0.lock().unwrap_or_else(|e| e.into_inner());
        st.current = None;
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let mut st = self.state.0.lock().unwrap_or_else(|e| e.into_inner());
        st.stop = true;
        self.state.1.notify_all();
    }
}

/// The gradient exchange of one rank: a transport, a wire format and the run's seed.
pub struct Exchange {
    transport: Box<dyn Transport>,
    format: ExchangeFormat,
    seed: u64,
    watchdog: Option<Watchdog>,
    /// Collectives outside the training steps so far (their tags).
    setup_calls: u64,
    pub stats: ExchangeStats,
    buf: Vec<u8>,
    acc: Vec<f32>,
}

impl Exchange {
    pub fn new(transport: Box<dyn Transport>, format: ExchangeFormat, seed: u64) -> Self {
        Exchange {
            transport,
            format,
            seed,
            watchdog: None,
            setup_calls: 0,
            stats: ExchangeStats::default(),
            buf: Vec::new(),
            acc: Vec::new(),
        }
    }

    /// Every collective of this exchange must then finish within the watchdog's limit.
    pub fn with_watchdog(mut self, w: Watchdog) -> Self {
        self.watchdog = Some(w);
        self
    }

    pub fn rank(&self) -> usize {
        self.transport.rank()
    }

    pub fn size(&self) -> usize {
        self.transport.size()
    }

    pub fn format(&self) -> ExchangeFormat {
        self.format
    }

    pub fn transport_name(&self) -> String {
        self.transport.name()
    }

    fn gather(&mut self, what: &str) -> Result<Vec<u8>, TrainError> {
        let _g = self.watchdog.as_ref().map(|w| w.guard(what.to_string()));
        let all = self.transport.allgather(&self.buf)?;
        if all.len() != self.buf.len() * self.size() {
            return Err(TrainError::Exchange(format!(
                "{what}: gathered {} bytes from {} ranks of {} bytes each",
                all.len(),
                self.size(),
                self.buf.len()
            )));
        }
        Ok(all)
    }

    /// Compares the sha256 of every rank's `config` (the resolved configuration) and of its
    /// `state` (the starting weights); an error names each rank that differs from rank 0.
    pub fn check_same(&mut self, config: &str, state: &[u8]) -> Result<(), TrainError> {
        let c: [u8; 32] = Sha256::digest(config.as_bytes()).into();
        let s: [u8; 32] = Sha256::digest(state).into();
        self.buf.clear();
        self.buf.extend_from_slice(&c);
        self.buf.extend_from_slice(&s);
        self.setup_calls += 1;
        let all = self.gather("the configuration check")?;
        let hex = |b: &[u8]| {
            b[..6]
                .iter()
                .map(|x| format!("{x:02x}"))
                .collect::<String>()
        };
        let mut bad = Vec::new();
        for (r, h) in all.chunks(64).enumerate().skip(1) {
            if h[..32] != all[..32] {
                bad.push(format!(
                    "rank {r}'s configuration differs from rank 0's (sha256 {}... vs {}...)",
                    hex(&h[..32]),
                    hex(&all[..32])
                ));
            } else if h[32..] != all[32..64] {
                bad.push(format!(
                    "rank {r} starts from other weights than rank 0 (another checkpoint?)"
                ));
            }
        }
        if bad.is_empty() {
            Ok(())
        } else {
            Err(TrainError::Exchange(format!(
                "{}: start every rank with the same preset, options and checkpoint",
                bad.join("; ")
            )))
        }
    }

    /// Replaces `grads` (this rank's gradients, already scaled so that the ranks' sum is the
    /// gradient of the global batch) by the sum over ranks, in rank order, of their encoded
    /// values; `stats` are summed (in f64, rank order) and returned. Every rank gets the same
    /// bits. `names` name the tensors in errors.
    pub fn all_reduce(
        &mut self,
        step: u64,
        names: &[&str],
        grads: &mut [&mut [f32]],
        stats: [f64; 2],
    ) -> Result<[f64; 2], TrainError> {
        let t0 = Instant::now();
        let lens: Vec<usize> = grads.iter().map(|g| g.len()).collect();
        let count: usize = lens.iter().sum();
        let rank = self.rank();
        // encode
        let mut bad = None;
        let mut payload = Vec::with_capacity(encoded_len(self.format, &lens));
        let kind = match self.format {
            ExchangeFormat::Fp32 => {
                for (i, v) in grads.iter().flat_map(|g| g.iter()).enumerate() {
                    if bad.is_none() && !v.is_finite() {
                        bad = Some(i);
                    }
                }
                for g in grads.iter() {
                    payload.extend(g.iter().flat_map(|v| v.to_le_bytes()));
                }
                KIND_FP32
            }
            ExchangeFormat::Bfp8 { tile } => {
                let key =
                    StreamKey::new(self.seed, stream_id(&[EXCHANGE_DOMAIN, step, rank as u64]));
                let (mut exps, mut mants) = (Vec::new(), Vec::with_capacity(count));
                let mut first = 0u64;
                let (mut err_sq, mut norm_sq) = (0f64, 0f64);
                for g in grads.iter() {
                    let t = tile.unwrap_or(g.len()).max(1);
                    match encode_bfp8(g, t, key, first, &mut exps, &mut mants) {
                        Ok(e) => err_sq += e,
                        Err(i) => {
                            bad = Some(first as usize + i);
                            break;
                        }
                    }
                    norm_sq += g.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>();
                    first += g.len() as u64;
                }
                if bad.is_none() {
                    self.stats.err_sq += err_sq;
                    self.stats.norm_sq += norm_sq;
                }
                payload.extend_from_slice(&exps);
                payload.extend(mants.iter().map(|&m| m as u8));
                KIND_BFP8
            }
        };
        let expect = encoded_len(self.format, &lens);
        if bad.is_some() {
            payload.resize(expect, 0);
        }
        self.buf.clear();
        Header {
            kind,
            status: if bad.is_some() {
                STATUS_NONFINITE
            } else {
                STATUS_OK
            },
            tag: step,
            count: count as u64,
            bad: bad.unwrap_or(0) as u64,
            stats,
        }
        .write(&mut self.buf);
        self.buf.extend_from_slice(&payload);
        let msg_len = self.buf.len();
        let all = self.gather(&format!("the gradient all-reduce of step {step}"))?;
        // decode and sum in rank order
        let mut out_stats = [0f64; 2];
        let mut acc = std::mem::take(&mut self.acc);
        acc.resize(count, 0.0);
        let result = (|| {
            for (r, m) in all.chunks(msg_len).enumerate() {
                let h = Header::read(m, r)?;
                if h.kind != kind || h.count != count as u64 || h.tag != step {
                    return Err(TrainError::Exchange(format!(
                        "rank {r} sent step {} ({} values, kind {}), rank {rank} is at step \
                         {step} ({count} values, kind {kind}): the ranks are out of step",
                        h.tag, h.count, h.kind
                    )));
                }
                if h.status == STATUS_NONFINITE {
                    let (name, at) = locate(names, &lens, h.bad as usize);
                    return Err(TrainError::Exchange(format!(
                        "rank {r}: the gradient of {name} has a non-finite value (element \
                         {at}) at step {step}; lower the learning rate or check the data"
                    )));
                }
                let body = &m[HEADER_BYTES..];
                // rank 0's values are stored, the others' added in f32
                let add = r > 0;
                match self.format {
                    ExchangeFormat::Fp32 => {
                        for (d, c) in acc.iter_mut().zip(body.chunks_exact(4)) {
                            let v = f32::from_le_bytes(c.try_into().expect("4 bytes"));
                            if add {
                                *d += v;
                            } else {
                                *d = v;
                            }
                        }
                    }
                    ExchangeFormat::Bfp8 { .. } => {
                        let tiles = body.len() - count;
                        self.decode_into(&body[..tiles], &body[tiles..], &lens, &mut acc, add);
                    }
                }
                out_stats[0] += h.stats[0];
                out_stats[1] += h.stats[1];
            }
            let mut off = 0;
            for g in grads.iter_mut() {
                g.copy_from_slice(&acc[off..off + g.len()]);
                off += g.len();
            }
            Ok(())
        })();
        self.acc = acc;
        result?;
        self.stats.iterations += 1;
        self.stats.bytes_per_iteration = msg_len as u64;
        self.stats.seconds += t0.elapsed().as_secs_f64();
        Ok(out_stats)
    }

    fn decode_into(&self, exps: &[u8], mants: &[u8], lens: &[usize], out: &mut [f32], add: bool) {
        let ExchangeFormat::Bfp8 { tile } = self.format else {
            unreachable!("decode of a bfp8 message")
        };
        let (mut e0, mut m0) = (0, 0);
        for &n in lens {
            let t = tile.unwrap_or(n).max(1);
            let tiles = n.div_ceil(t);
            decode_bfp8_bytes(
                &exps[e0..e0 + tiles],
                &mants[m0..m0 + n],
                t,
                &mut out[m0..m0 + n],
                add,
            );
            e0 += tiles;
            m0 += n;
        }
    }

    /// Replaces each of `bufs` by its mean over the ranks (fp32, summed in rank order; a
    /// single rank's values are left as they are). Used for batch-norm running statistics.
    pub fn average(&mut self, bufs: &mut [&mut Vec<f32>]) -> Result<(), TrainError> {
        let count: usize = bufs.iter().map(|b| b.len()).sum();
        self.setup_calls += 1;
        let tag = TAG_SETUP - self.setup_calls;
        self.buf.clear();
        Header {
            kind: KIND_FP32,
            status: STATUS_OK,
            tag,
            count: count as u64,
            bad: 0,
            stats: [0.0; 2],
        }
        .write(&mut self.buf);
        for v in bufs.iter().flat_map(|b| b.iter()) {
            self.buf.extend_from_slice(&v.to_le_bytes());
        }
        let msg_len = self.buf.len();
        let all = self.gather("the average of the batch-norm statistics")?;
        let n = self.size();
        let mut acc = vec![0f32; count];
        for (r, m) in all.chunks(msg_len).enumerate() {
            let h = Header::read(m, r)?;
            if h.tag != tag || h.count != count as u64 {
                return Err(TrainError::Exchange(format!(
                    "rank {r} is out of step in the average of the batch-norm statistics"
                )));
            }
            for (i, c) in m[HEADER_BYTES..].chunks_exact(4).enumerate() {
                let v = f32::from_le_bytes(c.try_into().expect("4 bytes"));
                acc[i] = if r == 0 { v } else { acc[i] + v };
            }
        }
        if n > 1 {
            let inv = 1.0 / n as f32;
            acc.iter_mut().for_each(|a| *a *= inv);
        }
        let mut off = 0;
        for b in bufs.iter_mut() {
            let len = b.len();
            b.copy_from_slice(&acc[off..off + len]);
            off += len;
        }
        Ok(())
    }
}

/// The tensor name and offset of flat element `i`.
fn locate<'a>(names: &[&'a str], lens: &[usize], mut i: usize) -> (&'a str, usize) {
    for (n, &l) in names.iter().zip(lens) {
        if i < l {
            return (n, i);
        }
        i -= l;
    }
    ("?", i)
}

/// N ranks in one process (threads): a [`Transport`] for tests and for trying the exchange
/// without MPI. Make the endpoints with [`Loopback::ranks`], move one into each thread.
pub struct Loopback {
    rank: usize,
    shared: Arc<LoopShared>,
    timeout: Duration,
}

struct LoopShared {
    size: usize,
    state: Mutex<LoopState>,
    cv: Condvar,
}

struct LoopState {
    /// Contributions of the round being gathered.
    slots: Vec<Option<Vec<u8>>>,
    /// Result of the last completed round, and how many ranks have not yet taken it.
    done: Option<(u64, Vec<u8>)>,
    left_to_take: usize,
    round: u64,
    /// Ranks whose endpoint was dropped.
    gone: Vec<usize>,
}

impl Loopback {
    /// Endpoints of `n` ranks; a collective that waits longer than `timeout` for the others
    /// fails with an error.
    pub fn ranks(n: usize, timeout: Duration) -> Vec<Loopback> {
        let shared = Arc::new(LoopShared {
            size: n,
            state: Mutex::new(LoopState {
                slots: vec![None; n],
                done: None,
                left_to_take: 0,
                round: 0,
                gone: Vec::new(),
            }),
            cv: Condvar::new(),
        });
        (0..n)
            .map(|rank| Loopback {
                rank,
                shared: shared.clone(),
                timeout,
            })
            .collect()
    }
}

impl Transport for Loopback {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.shared.size
    }

    fn name(&self) -> String {
        "loopback".into()
    }

    fn allgather(&mut self, mine: &[u8]) -> Result<Vec<u8>, TrainError> {
        let sh = &*self.shared;
        let deadline = Instant::now() + self.timeout;
        let mut st = sh.state.lock().unwrap_or_else(|e| e.into_inner());
        fn wait<'a>(
            cv: &Condvar,
            st: MutexGuard<'a, LoopState>,
            deadline: Instant,
        ) -> MutexGuard<'a, LoopState> {
            let left = deadline.saturating_duration_since(Instant::now());
            cv.wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0
        }
        let fail = |st: &LoopState, what: &str| -> Option<TrainError> {
            if let Some(r) = st.gone.first() {
                return Some(TrainError::Exchange(format!(
                    "rank {r} left the job during {what}"
                )));
            }
            if Instant::now() >= deadline {
                return Some(TrainError::Exchange(format!(
                    "{what} did not complete within {:.1} s",
                    self.timeout.as_secs_f64()
                )));
            }
            None
        };
        // wait until the previous round's result has been taken by everyone
        while st.left_to_take > 0 {
            if let Some(e) = fail(&st, "a collective") {
                return Err(e);
            }
            st = wait(&sh.cv, st, deadline);
        }
        let round = st.round;
        st.slots[self.rank] = Some(mine.to_vec());
        if st.slots.iter().all(Option::is_some) {
            let all: Vec<u8> = st
                .slots
                .iter_mut()
                .flat_map(|s| s.take().unwrap())
                .collect();
            st.done = Some((round, all));
            st.left_to_take = sh.size;
            st.round += 1;
            sh.cv.notify_all();
        }
        loop {
            if let Some((r, all)) = &st.done {
                if *r == round {
                    let out = all.clone();
                    st.left_to_take -= 1;
                    if st.left_to_take == 0 {
                        st.done = None;
                        sh.cv.notify_all();
                    }
                    return Ok(out);
                }
            }
            if let Some(e) = fail(&st, "a collective") {
                return Err(e);
            }
            st = wait(&sh.cv, st, deadline);
        }
    }
}

impl Drop for Loopback {
    fn drop(&mut self) {
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        // a rank that finished normally has taken every result; it leaves only if others wait
        st.gone.push(self.rank);
        self.shared.cv.notify_all();
    }
}
