//! Block floating point over whole tensors: exponents per block, packed mantissas, fake
//! quantisation, in parallel, with bits independent of the thread count.

use rayon::prelude::*;

use crate::format::{pow2, BfpFormat};
use crate::layout::{BlockLayout, Run};
use crate::rng::StreamKey;
use crate::run::{max_abs_bits, quantize_run, RunSink};
use crate::scalar::ScaledInt;
use crate::QuantError;

/// Below this many elements a tensor is quantised on the calling thread.
const PAR_THRESHOLD: usize = 1 << 15;
/// Work unit for parallel passes.
const PAR_CHUNK: usize = 1 << 14;
/// Work unit of the per-block pass ([`quantize_blocks`]): whole blocks, so smaller than
/// `PAR_CHUNK` for the threads to share a small tensor evenly (LogReg's 128 blocks of 784).
const BLOCK_TASK: usize = 1 << 12;

/// `floor(log2(v))` of a positive finite float given its raw bits (frexp-style: exact for powers
/// of two and for subnormals).
#[inline]
pub fn floor_log2_bits(bits: u32) -> i32 {
    let bits = bits & 0x7fff_ffff;
    debug_assert!(bits != 0 && bits < 0x7f80_0000);
    let e = (bits >> 23) as i32;
    if e > 0 {
        e - 127
    } else {
        // Subnormal: value = m * 2^-149.
        (31 - bits.leading_zeros() as i32) - 149
    }
}

/// The shared exponent of a block whose largest magnitude has raw bits `max_bits`, saturated
/// to the format's exponent range. An all-zero block gets the smallest exponent.
#[inline]
pub fn shared_exponent(fmt: &BfpFormat, max_bits: u32) -> i32 {
    let (emin, emax) = fmt.exp_range();
    if max_bits & 0x7fff_ffff == 0 {
        return emin;
    }
    floor_log2_bits(max_bits).clamp(emin, emax)
}

/// The run parameters of a block with shared exponent `e`.
#[inline]
pub fn block_params(fmt: &BfpFormat, e: i32) -> ScaledInt {
    let (lo, hi) = fmt.mantissa_range();
    ScaledInt {
        k: fmt.wl as i32 - 2 - e,
        lo,
        hi,
        rounding: fmt.rounding,
    }
}

fn first_non_finite(x: &[f32], runs: &[Run]) -> Option<usize> {
    runs.iter()
        .flat_map(|r| r.start..r.start + r.len)
        .find(|&i| !x[i].is_finite())
}

/// Shared exponents of every block of `x` (one pass). Errors on NaN/Inf, naming `tensor`.
pub fn block_exponents(
    x: &[f32],
    layout: &BlockLayout,
    fmt: &BfpFormat,
    tensor: &str,
) -> Result<Vec<i8>, QuantError> {
    check_len(x.len(), layout, tensor)?;
    let runs: Vec<Run> = if x.len() >= PAR_THRESHOLD {
        layout.runs_split(PAR_CHUNK)
    } else {
        layout.runs().to_vec()
    };
    let maxes: Vec<u32> = if x.len() >= PAR_THRESHOLD {
        runs.par_iter()
            .map(|r| max_abs_bits(&x[r.start..r.start + r.len]))
            .collect()
    } else {
        runs.iter()
            .map(|r| max_abs_bits(&x[r.start..r.start + r.len]))
            .collect()
    };
    let mut block_max = vec![0u32; layout.num_blocks];
    for (r, &m) in runs.iter().zip(&maxes) {
        block_max[r.block] = block_max[r.block].max(m);
    }
    if block_max.iter().any(|&m| m >= 0x7f80_0000) {
        let i = first_non_finite(x, &runs).unwrap_or(0);
        return Err(QuantError::NonFinite {
            tensor: tensor.to_string(),
            index: i,
            value: x[i],
        });
    }
    Ok(block_max
        .iter()
        .map(|&m| shared_exponent(fmt, m) as i8)
        .collect())
}

fn check_len(n: usize, layout: &BlockLayout, tensor: &str) -> Result<(), QuantError> {
    if n != layout.len() {
        return Err(QuantError::Shape(format!(
            "{tensor}: {n} elements but shape {:?} has {}",
            layout.shape,
            layout.len()
        )));
    }
    Ok(())
}

/// Quantises every run with its block's exponent into `out` (split per run).
fn quantize_runs<T: RunSink>(
    x: &[f32],
    out: &mut [T],
    layout: &BlockLayout,
    fmt: &BfpFormat,
    exps: &[i8],
    key: StreamKey,
) {
    let par = x.len() >= PAR_THRESHOLD;
    let runs: Vec<Run> = if par {
        layout.runs_split(PAR_CHUNK)
    } else {
        layout.runs().to_vec()
    };
    // Runs are contiguous and ordered, so the output splits into matching slices.
    let mut pieces: Vec<(Run, &mut [T])> = Vec::with_capacity(runs.len());
    let mut rest = out;
    let mut pos = 0;
    for r in runs {
        let skip = r.start - pos;
        let tmp = std::mem::take(&mut rest);
        let (_, tail) = tmp.split_at_mut(skip);
        let (piece, tail) = tail.split_at_mut(r.len);
        pieces.push((r, piece));
        rest = tail;
        pos = r.start + r.len;
    }
    let work = |(r, piece): (Run, &mut [T])| {
        let p = block_params(fmt, exps[r.block] as i32);
        quantize_run(
            &x[r.start..r.start + r.len],
            T::wrap(piece),
            &p,
            key,
            r.start as u64,
        );
    };
    if par {
        pieces.into_par_iter().for_each(work);
    } else {
        pieces.into_iter().for_each(work);
    }
}

/// Largest block the fused pass ([`quantize_blocks`]) takes: 256 KiB of f32, so that its
/// rounding re-reads the block from L2 rather than from memory.
const FUSED_MAX: usize = 1 << 16;

/// One task of [`quantize_blocks`]: its runs (one per block), its slice of the output (from
/// the first run's start, which is the last field), and its blocks' exponents.
type BlockTask<'a, T> = (&'a [Run], &'a mut [T], &'a mut [i8], usize);

/// Shared exponents of every block of `x`, and its mantissas (or fake-quantised values) in
/// `out`. Where each block is one contiguous run of at most [`FUSED_MAX`] elements (per-example
/// blocks of activations and errors), each block is done whole, its maximum and then its
/// rounding, in one parallel pass over the blocks; otherwise [`block_exponents`] and then
/// [`quantize_runs`], two passes over the tensor. The same bits either way: exponents come from
/// the same maxima, and a run's rounding does not depend on how the runs are cut.
fn quantize_blocks<T: RunSink>(
    x: &[f32],
    out: &mut [T],
    layout: &BlockLayout,
    fmt: &BfpFormat,
    key: StreamKey,
    tensor: &str,
) -> Result<Vec<i8>, QuantError> {
    let runs = layout.runs();
    let fused = layout.num_blocks >= 2
        && runs.len() == layout.num_blocks
        && runs
            .iter()
            .enumerate()
            .all(|(i, r)| r.block == i && r.len <= FUSED_MAX);
    if !fused {
        let exps = block_exponents(x, layout, fmt, tensor)?;
        quantize_runs(x, out, layout, fmt, &exps, key);
        return Ok(exps);
    }
    check_len(x.len(), layout, tensor)?;
    let mut exps = vec![0i8; runs.len()];
    // Tasks of consecutive blocks, about `BLOCK_TASK` elements each, with their slices of the
    // output (runs are ordered and disjoint) and of the exponents.
    let mut tasks: Vec<BlockTask<'_, T>> = Vec::new();
    let (mut rest, mut erest, mut pos, mut b0) = (out, exps.as_mut_slice(), 0, 0);
    while b0 < runs.len() {
        let (mut b1, mut n) = (b0, 0);
        while b1 < runs.len() && (b1 == b0 || n + runs[b1].len <= BLOCK_TASK) {
            n += runs[b1].len;
            b1 += 1;
        }
        let (start, end) = (runs[b0].start, runs[b1 - 1].start + runs[b1 - 1].len);
        let (_, tail) = std::mem::take(&mut rest).split_at_mut(start - pos);
        let (piece, tail) = tail.split_at_mut(end - start);
        let (e, etail) = std::mem::take(&mut erest).split_at_mut(b1 - b0);
        tasks.push((&runs[b0..b1], piece, e, start));
        (rest, erest, pos, b0) = (tail, etail, end, b1);
    }
    // Whether the task met a non-finite value (it stops there; the error names the first).
    let work = |(rs, piece, e, base): BlockTask<'_, T>| -> bool {
        for (r, eo) in rs.iter().zip(e.iter_mut()) {
            let xs = &x[r.start..r.start + r.len];
            let m = max_abs_bits(xs);
            if m >= 0x7f80_0000 {
                return true;
            }
            let ex = shared_exponent(fmt, m);
            *eo = ex as i8;
            let o = &mut piece[r.start - base..r.start - base + r.len];
            quantize_run(xs, T::wrap(o), &block_params(fmt, ex), key, r.start as u64);
        }
        false
    };
    let bad = if x.len() >= PAR_THRESHOLD {
        tasks
            .into_par_iter()
            .map(work)
            .reduce(|| false, |a, b| a | b)
    } else {
        tasks.into_iter().map(work).fold(false, |a, b| a | b)
    };
    if bad {
        let i = first_non_finite(x, runs).unwrap_or(0);
        return Err(QuantError::NonFinite {
            tensor: tensor.to_string(),
            index: i,
            value: x[i],
        });
    }
    Ok(exps)
}

/// Mantissa storage: one byte per element for wl <= 8, two otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mantissas {
    I8(Vec<i8>),
    I16(Vec<i16>),
}

impl Mantissas {
    pub fn len(&self) -> usize {
        match self {
            Mantissas::I8(v) => v.len(),
            Mantissas::I16(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Bytes of mantissa storage.
    pub fn bytes(&self) -> usize {
        match self {
            Mantissas::I8(v) => v.len(),
            Mantissas::I16(v) => 2 * v.len(),
        }
    }
    pub fn get(&self, i: usize) -> i32 {
        match self {
            Mantissas::I8(v) => v[i] as i32,
            Mantissas::I16(v) => v[i] as i32,
        }
    }
}

/// A tensor in block floating point: packed mantissas plus one exponent per block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BfpTensor {
    pub format: BfpFormat,
    pub layout: BlockLayout,
    pub mantissas: Mantissas,
    /// The shared exponent `e` of each block (value = mantissa * 2^(e - (wl - 2))).
    pub exponents: Vec<i8>,
}

impl BfpTensor {
    pub fn shape(&self) -> &[usize] {
        &self.layout.shape
    }
    /// The scale `2^(e - (wl - 2))` of every block.
    pub fn scales(&self) -> Vec<f32> {
        self.exponents
            .iter()
            .map(|&e| self.format.scale(e as i32))
            .collect()
    }
    /// Storage in bytes: mantissas plus one byte per exponent.
    pub fn storage_bytes(&self) -> usize {
        self.mantissas.bytes() + self.exponents.len()
    }
    /// The values this tensor represents, as f32 (exact: every value is representable).
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.mantissas.len()];
        let scales = self.scales();
        for r in self.layout.runs() {
            let s = scales[r.block];
            for i in r.start..r.start + r.len {
                out[i] = self.mantissas.get(i) as f32 * s;
            }
        }
        out
    }
}

/// Quantises `x` (shape `shape`) to packed BFP. `key` drives stochastic rounding; `tensor`
/// names the tensor in errors.
pub fn quantize_bfp(
    x: &[f32],
    shape: &[usize],
    fmt: &BfpFormat,
    key: StreamKey,
    tensor: &str,
) -> Result<BfpTensor, QuantError> {
    fmt.validate().map_err(QuantError::Format)?;
    let layout = BlockLayout::new(shape, fmt.block)?;
    let (mantissas, exponents) = if fmt.fits_i8() {
        let mut m = vec![0i8; x.len()];
        let e = quantize_blocks(x, &mut m, &layout, fmt, key, tensor)?;
        (Mantissas::I8(m), e)
    } else {
        let mut m = vec![0i16; x.len()];
        let e = quantize_blocks(x, &mut m, &layout, fmt, key, tensor)?;
        (Mantissas::I16(m), e)
    };
    Ok(BfpTensor {
        format: *fmt,
        layout,
        mantissas,
        exponents,
    })
}

/// Quantises into caller-owned buffers (no allocation in the training loop): 8-bit mantissas
/// into `mant`, and each block's scale into `scales` (resized to the block count).
pub fn quantize_bfp_i8_into(
    x: &[f32],
    layout: &BlockLayout,
    fmt: &BfpFormat,
    key: StreamKey,
    tensor: &str,
    mant: &mut [i8],
    scales: &mut Vec<f32>,
) -> Result<(), QuantError> {
    if !fmt.fits_i8() {
        return Err(QuantError::Shape(format!(
            "{tensor}: {fmt} needs 16-bit mantissas"
        )));
    }
    check_len(mant.len(), layout, tensor)?;
    let exps = quantize_blocks(x, mant, layout, fmt, key, tensor)?;
    scales.clear();
    scales.extend(exps.iter().map(|&e| fmt.scale(e as i32)));
    Ok(())
}

/// As [`quantize_bfp_i8_into`] for 9..16-bit mantissas.
pub fn quantize_bfp_i16_into(
    x: &[f32],
    layout: &BlockLayout,
    fmt: &BfpFormat,
    key: StreamKey,
    tensor: &str,
    mant: &mut [i16],
    scales: &mut Vec<f32>,
) -> Result<(), QuantError> {
    check_len(mant.len(), layout, tensor)?;
    let exps = quantize_blocks(x, mant, layout, fmt, key, tensor)?;
    scales.clear();
    scales.extend(exps.iter().map(|&e| fmt.scale(e as i32)));
    Ok(())
}

/// Fake quantisation: writes the dequantised BFP values of `x` into `out` (same bits as
/// `quantize_bfp(..).dequantize()`).
pub fn fake_quantize_bfp(
    x: &[f32],
    layout: &BlockLayout,
    fmt: &BfpFormat,
    key: StreamKey,
    tensor: &str,
    out: &mut [f32],
) -> Result<(), QuantError> {
    fmt.validate().map_err(QuantError::Format)?;
    check_len(out.len(), layout, tensor)?;
    quantize_blocks(x, out, layout, fmt, key, tensor)?;
    Ok(())
}

/// Reference BFP quantiser: element by element, f64 arithmetic, no SIMD, no threads.
/// Returns (mantissas as i32, exponents).
pub fn quantize_bfp_ref(
    x: &[f32],
    shape: &[usize],
    fmt: &BfpFormat,
    key: StreamKey,
) -> Result<(Vec<i32>, Vec<i32>), QuantError> {
    let layout = BlockLayout::new(shape, fmt.block)?;
    check_len(x.len(), &layout, "x")?;
    let mut maxv = vec![0f32; layout.num_blocks];
    for r in layout.runs() {
        for i in r.start..r.start + r.len {
            if !x[i].is_finite() {
                return Err(QuantError::NonFinite {
                    tensor: "x".into(),
                    index: i,
                    value: x[i],
                });
            }
            maxv[r.block] = maxv[r.block].max(x[i].abs());
        }
    }
    let (emin, emax) = fmt.exp_range();
    // floor(log2 m) by comparison with exact powers of two: obviously right, slow.
    let exps: Vec<i32> = maxv
        .iter()
        .map(|&m| {
            if m == 0.0 {
                return emin;
            }
            let mut e = -149;
            while e < 127 && pow2(e + 1) <= m {
                e += 1;
            }
            e.clamp(emin, emax)
        })
        .collect();
    let mut q = vec![0i32; x.len()];
    for r in layout.runs() {
        let p = block_params(fmt, exps[r.block]);
        for i in r.start..r.start + r.len {
            let u = if fmt.rounding.is_stochastic() {
                crate::rng::uniform24(key, i as u64)
            } else {
                0
            };
            q[i] = crate::scalar::quantize_scalar_ref(x[i], &p, u);
        }
    }
    Ok((q, exps))
}
