//! Bit-exact, cycle-counting simulator of paper 002's GEMM core (Fig. 4).
//!
//! # The modelled hardware
//! An N x N array of PEs. The stored matrix S (A, or A^T when the column-major read is used)
//! is preloaded into N^2 on-chip banks, partitioned cyclically by N along both axes: element
//! `S[r, c]` lives in bank `(r mod N, c mod N)` at address `(r / N) * ceil(cols / N) + c / N`.
//! Every cycle the array reads one N x N tile of A (N lanes of K for each of N output rows): in
//! row-major mode from `S[m, k]`, in column-major mode from `S[k, m]`; either way the N^2
//! elements sit in N^2 distinct banks, so one copy serves W and W^T. B is streamed from DRAM one
//! row (one column of the mathematical B, i.e. K contiguous int8 values) at a time into a
//! double-buffered row buffer; each cycle an N-wide K slice is broadcast to all columns, each
//! column forms its N products and an adder tree reduces them into a 32-bit accumulator.
//! After the last K step of a chunk, the fixed-to-float stage converts the accumulator to f32,
//! multiplies by A's then B's block scale and adds it to the f32 output: exactly the order of
//! `lowprec_kernels::types`, so results are bit-identical to `gemm_q8_ref`.
//!
//! # The schedule (how a GEMM larger than A_max runs)
//! The driver picks the read order from A's memory layout (row-major view: row-major read;
//! transposed view: column-major read). S is cut into tiles of at most A_max (rows x cols);
//! for each M tile, K tiles run in increasing k order; each tile is one *core call*: preload
//! the tile (skipped when the identical tile is already resident), then stream all B rows.
//! Per B row and per block of N outputs, every K *piece* (the intersection of a `k_chunks`
//! chunk with the K tile) takes `ceil(len / N)` cycles: a chunk never shares a K step with the
//! next one (its last vector is zero-padded), because the accumulator must be flushed through
//! fixed-to-float at the chunk end. When a K tile boundary falls inside a chunk, the call
//! writes the 32-bit partial sums to DRAM and the next call reloads them into the
//! accumulators before continuing: integer partial sums are combined *before* fixed-to-float,
//! so the bits do not depend on A_max.
//!
//! # Timing
//! Per core call: the preload (A bytes over the DMA), then per B row a DMA in (K bytes of B,
//! plus 4-byte partial sums or prior C values when needed), compute (`row_cycles`) and a DMA
//! out (4-byte C values or partial sums). One DMA engine serves requests in a fixed order
//! (in 0, in 1, out 0, in 2, out 1, ...) at `dma_bytes_per_s`; compute of row n starts when its
//! input is in and row n-1 is done; cycles the array waits for input are stalls. A call ends
//! when its last output is written, plus the pipeline drain (adder tree + fixed-to-float).

use crate::design::ArrayDesign;
use lowprec_kernels::reference::validate_q;
use lowprec_kernels::types::{k_chunks, k_safe};
use lowprec_kernels::{GemmBackend, GemmSpec, KernelError, MatMut, MatRef, QMatRef};
use rayon::prelude::*;
use std::sync::Mutex;

/// Cycles of the fixed-to-float pipeline (int-to-float, two fp32 multiplies, one fp32 add).
pub const FIXED_TO_FLOAT_LATENCY: u64 = 20;
/// Cycles from a B vector entering the array to the multiplier outputs (BRAM read + DSP).
pub const ARRAY_INPUT_LATENCY: u64 = 3;

/// How the stored copy of A is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum ReadOrder {
    /// S = A: output row m reads `S[m, k]`.
    RowMajor,
    /// S = A^T: output row m reads `S[k, m]` (the transposed weights from the same copy).
    ColMajor,
}

/// Counters the simulator keeps (cumulative until [`FpgaSim::reset_counters`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SimCounters {
    /// `gemm_q8` calls served by the core.
    pub gemm_calls: u64,
    /// Core invocations (one per A tile).
    pub core_calls: u64,
    /// Useful multiply-accumulates.
    pub macs: u64,
    /// Cycles the PE array computes (N^2 MAC slots each).
    pub array_cycles: u64,
    /// Cycles the array waited for B rows after the preload.
    pub stall_cycles: u64,
    /// Cycles spent preloading A.
    pub preload_cycles: u64,
    /// Pipeline drain cycles (once per core call).
    pub drain_cycles: u64,
    /// Total cycles of all core calls.
    pub total_cycles: u64,
    pub bytes_a: u64,
    pub bytes_b: u64,
    pub bytes_c_in: u64,
    pub bytes_c_out: u64,
    pub bytes_partial_in: u64,
    pub bytes_partial_out: u64,
    /// Core calls whose A tile was already resident (no preload).
    pub a_resident_hits: u64,
    /// `gemm_q16` calls run on the processor (the core is 8-bit only).
    pub cpu_q16_calls: u64,
    /// `gemm_f32` calls run on the processor (float work runs on the ARM in 002).
    pub cpu_f32_calls: u64,
}

impl SimCounters {
    pub fn add(&mut self, o: &SimCounters) {
        self.gemm_calls += o.gemm_calls;
        self.core_calls += o.core_calls;
        self.macs += o.macs;
        self.array_cycles += o.array_cycles;
        self.stall_cycles += o.stall_cycles;
        self.preload_cycles += o.preload_cycles;
        self.drain_cycles += o.drain_cycles;
        self.total_cycles += o.total_cycles;
        self.bytes_a += o.bytes_a;
        self.bytes_b += o.bytes_b;
        self.bytes_c_in += o.bytes_c_in;
        self.bytes_c_out += o.bytes_c_out;
        self.bytes_partial_in += o.bytes_partial_in;
        self.bytes_partial_out += o.bytes_partial_out;
        self.a_resident_hits += o.a_resident_hits;
        self.cpu_q16_calls += o.cpu_q16_calls;
        self.cpu_f32_calls += o.cpu_f32_calls;
    }
    /// Every counter multiplied by `k` (k identical runs).
    pub fn scaled(&self, k: u64) -> SimCounters {
        let mut out = *self;
        out.gemm_calls *= k;
        out.core_calls *= k;
        out.macs *= k;
        out.array_cycles *= k;
        out.stall_cycles *= k;
        out.preload_cycles *= k;
        out.drain_cycles *= k;
        out.total_cycles *= k;
        out.bytes_a *= k;
        out.bytes_b *= k;
        out.bytes_c_in *= k;
        out.bytes_c_out *= k;
        out.bytes_partial_in *= k;
        out.bytes_partial_out *= k;
        out.a_resident_hits *= k;
        out.cpu_q16_calls *= k;
        out.cpu_f32_calls *= k;
        out
    }
    /// Total bytes over the DMA.
    pub fn bytes_total(&self) -> u64 {
        self.bytes_a
            + self.bytes_b
            + self.bytes_c_in
            + self.bytes_c_out
            + self.bytes_partial_in
            + self.bytes_partial_out
    }
    /// Fraction of PE MAC slots doing useful work over the whole run time.
    pub fn utilisation(&self, n: usize) -> f64 {
        if self.total_cycles == 0 {
            0.0
        } else {
            self.macs as f64 / (self.total_cycles as f64 * (n * n) as f64)
        }
    }
}

/// One K piece of a core call: the part of chunk `(seg, ..)` inside the call's K tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    pub seg: usize,
    pub start: usize,
    pub end: usize,
    /// The piece ends its chunk: the accumulator goes through fixed-to-float here.
    pub ends_chunk: bool,
}

/// One invocation of the core: a tile of the stored matrix and all B rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreCall {
    pub m0: usize,
    pub m1: usize,
    pub k0: usize,
    pub k1: usize,
    pub pieces: Vec<Piece>,
    /// Reload 32-bit partial sums (the K tile starts inside a chunk).
    pub carry_in: bool,
    /// Store 32-bit partial sums (the K tile ends inside a chunk).
    pub carry_out: bool,
    /// Read C's prior value before the first flush (accumulate, or an earlier call flushed).
    pub c_read: bool,
    /// At least one flush through fixed-to-float (C is written).
    pub flush: bool,
}

/// The schedule of one GEMM on the core.
#[derive(Clone, Debug)]
pub struct GemmPlan {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub order: ReadOrder,
    pub calls: Vec<CoreCall>,
}

/// Shape and K semantics of one GEMM: `A (m x k) * B (k x n)`, segments of `segment` along K
/// cut into chunks of at most `k_safe`, accumulating into C or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmShape {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub segment: usize,
    pub k_safe: usize,
    pub accumulate: bool,
}

/// Static configuration of the simulated core.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    pub n: usize,
    pub a_rows: usize,
    pub a_cols: usize,
    pub clock_hz: f64,
    pub dma_bytes_per_s: f64,
}

impl CoreConfig {
    fn dma_cycles(&self, bytes: u64) -> u64 {
        if bytes == 0 {
            0
        } else {
            (bytes as f64 * self.clock_hz / self.dma_bytes_per_s).ceil() as u64
        }
    }

    /// Pipeline drain per call: BRAM read + DSP, adder tree depth, fixed-to-float.
    pub fn drain_cycles(&self) -> u64 {
        ARRAY_INPUT_LATENCY + self.n.trailing_zeros() as u64 + FIXED_TO_FLOAT_LATENCY
    }

    /// Largest tile of the stored matrix as (M extent, K extent) for a read order.
    fn tile_limits(&self, order: ReadOrder) -> (usize, usize) {
        match order {
            ReadOrder::RowMajor => (self.a_rows, self.a_cols),
            ReadOrder::ColMajor => (self.a_cols, self.a_rows),
        }
    }

    /// The schedule for an `m x k` by `k x n` GEMM (see the module docs).
    pub fn plan(&self, shape: GemmShape, order: ReadOrder) -> GemmPlan {
        let GemmShape {
            m,
            k,
            n,
            segment,
            k_safe,
            accumulate,
        } = shape;
        let (tm, tk) = self.tile_limits(order);
        let chunks = k_chunks(k, segment, k_safe);
        let mut calls = Vec::new();
        if m > 0 && n > 0 && k > 0 {
            let mut m0 = 0;
            while m0 < m {
                let m1 = (m0 + tm).min(m);
                let mut c_live = accumulate;
                let mut k0 = 0;
                while k0 < k {
                    let k1 = (k0 + tk).min(k);
                    let mut pieces = Vec::new();
                    let mut carry_in = false;
                    for &(seg, c0, c1) in &chunks {
                        if c1 <= k0 || c0 >= k1 {
                            continue;
                        }
                        if pieces.is_empty() && c0 < k0 {
                            carry_in = true;
                        }
                        pieces.push(Piece {
                            seg,
                            start: c0.max(k0),
                            end: c1.min(k1),
                            ends_chunk: c1 <= k1,
                        });
                    }
                    let carry_out = pieces.last().is_some_and(|p| !p.ends_chunk);
                    let flush = pieces.iter().any(|p| p.ends_chunk);
                    calls.push(CoreCall {
                        m0,
                        m1,
                        k0,
                        k1,
                        pieces,
                        carry_in,
                        carry_out,
                        c_read: flush && c_live,
                        flush,
                    });
                    if flush {
                        c_live = true;
                    }
                    k0 = k1;
                }
                m0 = m1;
            }
        }
        GemmPlan {
            m,
            k,
            n,
            order,
            calls,
        }
    }

    /// Array cycles for one B row of a call.
    pub fn row_cycles(&self, call: &CoreCall) -> u64 {
        let steps: usize = call
            .pieces
            .iter()
            .map(|p| (p.end - p.start).div_ceil(self.n))
            .sum();
        ((call.m1 - call.m0).div_ceil(self.n) * steps) as u64
    }

    /// Simulates the timing of one core call over `rows` B rows.
    pub fn time_call(&self, call: &CoreCall, rows: usize, resident: bool) -> SimCounters {
        let tm = (call.m1 - call.m0) as u64;
        let tk = (call.k1 - call.k0) as u64;
        let mut c = SimCounters {
            core_calls: 1,
            ..Default::default()
        };
        if !resident {
            c.bytes_a = tm * tk;
        } else {
            c.a_resident_hits = 1;
        }
        c.preload_cycles = self.dma_cycles(c.bytes_a);
        let useful_k: u64 = call.pieces.iter().map(|p| (p.end - p.start) as u64).sum();
        c.macs = tm * useful_k * rows as u64;
        let row_cycles = self.row_cycles(call);
        let in_b = tk;
        let in_partial = if call.carry_in { 4 * tm } else { 0 };
        let in_c = if call.c_read { 4 * tm } else { 0 };
        let out_c = if call.flush { 4 * tm } else { 0 };
        let out_partial = if call.carry_out { 4 * tm } else { 0 };
        let in_cycles = self.dma_cycles(in_b + in_partial + in_c);
        let out_cycles = self.dma_cycles(out_c + out_partial);
        c.bytes_b = in_b * rows as u64;
        c.bytes_partial_in = in_partial * rows as u64;
        c.bytes_c_in = in_c * rows as u64;
        c.bytes_c_out = out_c * rows as u64;
        c.bytes_partial_out = out_partial * rows as u64;

        // Discrete-event walk over the rows: one in-order DMA queue, double-buffered input.
        let mut dma_free = c.preload_cycles;
        let mut in_done = [0u64; 2];
        let mut comp_done_prev = c.preload_cycles;
        let mut stalls = 0u64;
        let issue_in = |slot: &mut u64, ready: u64, dma_free: &mut u64| {
            let start = (*dma_free).max(ready);
            *slot = start + in_cycles;
            *dma_free = *slot;
        };
        if rows > 0 {
            issue_in(&mut in_done[0], 0, &mut dma_free);
        }
        if rows > 1 {
            issue_in(&mut in_done[1], 0, &mut dma_free);
        }
        for r in 0..rows {
            let ready = in_done[r % 2];
            let start = ready.max(comp_done_prev);
            stalls += start - comp_done_prev;
            let done = start + row_cycles;
            comp_done_prev = done;
            // Output of row r, then the input of row r + 2 into the freed buffer.
            let out_start = dma_free.max(done);
            dma_free = out_start + out_cycles;
            if r + 2 < rows {
                issue_in(&mut in_done[r % 2], done, &mut dma_free);
            }
        }
        c.array_cycles = row_cycles * rows as u64;
        c.stall_cycles = stalls;
        c.drain_cycles = self.drain_cycles();
        c.total_cycles = dma_free.max(comp_done_prev) + c.drain_cycles;
        c
    }

    /// Counters of a whole plan, assuming no tile is resident beforehand (consecutive calls of
    /// the plan never share a tile).
    pub fn time_plan(&self, plan: &GemmPlan) -> SimCounters {
        let mut total = SimCounters {
            gemm_calls: 1,
            ..Default::default()
        };
        for call in &plan.calls {
            total.add(&self.time_call(call, plan.n, false));
        }
        total
    }
}

/// The tile of A held on chip, in banked layout, and the identity of its content.
struct Resident {
    /// Stored-matrix rows, columns and content hash: the read order does not change what
    /// is stored, which is how W and W^T share one copy.
    key: (usize, usize, u64),
    store: Vec<i8>,
}

/// The simulator. One core: calls are serialised; arithmetic inside a call runs in parallel
/// over independent output blocks (which never changes the bits).
pub struct FpgaSim {
    design: ArrayDesign,
    cfg: CoreConfig,
    state: Mutex<SimState>,
}

struct SimState {
    counters: SimCounters,
    resident: Option<Resident>,
}

impl std::fmt::Debug for FpgaSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FpgaSim")
            .field("design", &self.design.spec())
            .finish()
    }
}

/// Largest N the gather buffer supports (the design check caps N at 256).
const MAX_N: usize = 256;

impl FpgaSim {
    pub fn new(design: ArrayDesign) -> Self {
        let cfg = CoreConfig {
            n: design.n,
            a_rows: design.a_rows,
            a_cols: design.a_cols,
            clock_hz: design.clock_hz(),
            dma_bytes_per_s: design.dma_bytes_per_s(),
        };
        Self {
            design,
            cfg,
            state: Mutex::new(SimState {
                counters: SimCounters::default(),
                resident: None,
            }),
        }
    }

    /// Parses a backend spec such as `zcu111-32x32` (see [`ArrayDesign::from_spec`]); a leading
    /// `fpga-sim:` is accepted so that `name()` round-trips.
    pub fn from_spec(spec: &str) -> crate::Result<Self> {
        let s = spec.strip_prefix("fpga-sim:").unwrap_or(spec);
        Ok(Self::new(ArrayDesign::from_spec(s)?))
    }

    /// Overrides the DMA bandwidth (bytes per second) used for stalls.
    pub fn with_dma_bandwidth(mut self, bytes_per_s: f64) -> crate::Result<Self> {
        if !(bytes_per_s.is_finite() && bytes_per_s > 0.0) {
            return Err(crate::HwError::InvalidArgument(format!(
                "DMA bandwidth {bytes_per_s} B/s must be positive"
            )));
        }
        self.cfg.dma_bytes_per_s = bytes_per_s;
        Ok(self)
    }

    pub fn design(&self) -> &ArrayDesign {
        &self.design
    }
    pub fn config(&self) -> &CoreConfig {
        &self.cfg
    }

    pub fn counters(&self) -> SimCounters {
        self.lock().counters
    }
    pub fn reset_counters(&self) {
        let mut st = self.lock();
        st.counters = SimCounters::default();
        st.resident = None;
    }
    /// Simulated seconds of the core calls so far.
    pub fn elapsed_s(&self) -> f64 {
        self.counters().total_cycles as f64 / self.cfg.clock_hz
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SimState> {
        // A panic inside a call cannot leave the counters half-updated in a harmful way.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The read order the driver uses for a view of A.
    pub fn read_order<T: Copy>(a: &MatRef<'_, T>) -> ReadOrder {
        if a.col_stride == 1 || a.cols <= 1 {
            ReadOrder::RowMajor
        } else if a.row_stride == 1 || a.rows <= 1 {
            ReadOrder::ColMajor
        } else {
            ReadOrder::RowMajor
        }
    }

    /// Bank-layout preload of the tile `m0..m1 x k0..k1` of A in the given order.
    fn preload(&self, a: &MatRef<'_, i8>, call: &CoreCall, order: ReadOrder) -> Vec<i8> {
        let n = self.cfg.n;
        let (sr, sc) = match order {
            ReadOrder::RowMajor => (call.m1 - call.m0, call.k1 - call.k0),
            ReadOrder::ColMajor => (call.k1 - call.k0, call.m1 - call.m0),
        };
        let cw = sc.div_ceil(n);
        let depth = sr.div_ceil(n) * cw;
        let mut store = vec![0i8; depth * n * n];
        let sh = n.trailing_zeros();
        let mask = n - 1;
        for r in 0..sr {
            let row_part = (r >> sh) * cw;
            let bank_row = (r & mask) * n;
            for c in 0..sc {
                let v = match order {
                    ReadOrder::RowMajor => a.at(call.m0 + r, call.k0 + c),
                    ReadOrder::ColMajor => a.at(call.m0 + c, call.k0 + r),
                };
                store[(row_part + (c >> sh)) * n * n + bank_row + (c & mask)] = v;
            }
        }
        store
    }
}

/// Index into the banked store of `S[r, c]`: address-major, then bank `(r mod N, c mod N)`.
#[inline]
pub fn bank_index(n: usize, cw: usize, r: usize, c: usize) -> usize {
    ((r / n) * cw + c / n) * n * n + (r % n) * n + (c % n)
}

fn fnv1a(bytes: &[i8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u8 as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[inline]
fn dot(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(&x, &y)| x as i32 * y as i32).sum()
}

/// Everything a block of output rows needs to run one core call.
struct CallCtx<'a> {
    n: usize,
    cw: usize,
    order: ReadOrder,
    call: &'a CoreCall,
    store: &'a [i8],
    b: &'a QMatRef<'a, i8>,
    a_scales: lowprec_kernels::Scales<'a>,
    ncols: usize,
    ld: usize,
}

impl CallCtx<'_> {
    /// Reads the A operands of output row `mi` for K lanes `ki..ki + out.len()` (tile-local).
    #[inline]
    fn read_lanes(&self, mi: usize, ki: usize, out: &mut [i8]) {
        let n = self.n;
        let sh = n.trailing_zeros();
        let mask = n - 1;
        let nn = n * n;
        match self.order {
            ReadOrder::RowMajor => {
                // S[mi, ki + l]: bank row fixed, bank column runs within an address.
                let row_base = (mi >> sh) * self.cw;
                let bank_row = (mi & mask) * n;
                let mut l = 0;
                while l < out.len() {
                    let c = ki + l;
                    let run = (n - (c & mask)).min(out.len() - l);
                    let base = (row_base + (c >> sh)) * nn + bank_row + (c & mask);
                    out[l..l + run].copy_from_slice(&self.store[base..base + run]);
                    l += run;
                }
            }
            ReadOrder::ColMajor => {
                // S[ki + l, mi]: bank column fixed, bank row steps by N within an address.
                let col_addr = mi >> sh;
                let bank_col = mi & mask;
                for (l, v) in out.iter_mut().enumerate() {
                    let r = ki + l;
                    *v = self.store
                        [((r >> sh) * self.cw + col_addr) * nn + (r & mask) * n + bank_col];
                }
            }
        }
    }

    /// Runs output rows `mb0..mb1` (global m) of the call: `c_rows` starts at row `mb0` of C,
    /// `carry_rows` (if any) at row `mb0` of the partial-sum buffer (row length `ncols`).
    fn run_block(
        &self,
        mb0: usize,
        mb1: usize,
        c_rows: &mut [f32],
        mut carry_rows: Option<&mut [i32]>,
    ) {
        let n = self.n;
        let call = self.call;
        let (k0, k1) = (call.k0, call.k1);
        let mut brow = vec![0i8; k1 - k0];
        let mut lanes = [0i8; MAX_N];
        for col in 0..self.ncols {
            // DMA of B row `col` (B's column) into the row buffer.
            for (i, v) in brow.iter_mut().enumerate() {
                *v = self.b.mat.at(k0 + i, col);
            }
            for m in mb0..mb1 {
                let mi = m - call.m0;
                let mut acc: i32 = match (&carry_rows, call.carry_in) {
                    (Some(cr), true) => cr[(m - mb0) * self.ncols + col],
                    _ => 0,
                };
                let cidx = (m - mb0) * self.ld + col;
                let mut first_flush = true;
                for p in &call.pieces {
                    let mut k = p.start;
                    while k < p.end {
                        let len = (p.end - k).min(n);
                        let ki = k - k0;
                        // One cycle: the N lanes of this column's adder tree, read from N
                        // distinct banks (runs of consecutive banks at one or two addresses).
                        self.read_lanes(mi, ki, &mut lanes[..len]);
                        acc = acc.wrapping_add(dot(&lanes[..len], &brow[ki..ki + len]));
                        k += len;
                    }
                    if p.ends_chunk {
                        let prior = if first_flush && !call.c_read {
                            0.0f32
                        } else {
                            c_rows[cidx]
                        };
                        first_flush = false;
                        let sa = self.a_scales.get(p.seg, m);
                        let sb = self.b.scales.get(p.seg, col);
                        c_rows[cidx] = prior + ((acc as f32) * sa) * sb;
                        acc = 0;
                    }
                }
                if call.carry_out {
                    if let Some(cr) = carry_rows.as_deref_mut() {
                        cr[(m - mb0) * self.ncols + col] = acc;
                    }
                }
            }
        }
    }
}

impl FpgaSim {
    /// Runs one planned GEMM on the simulated core, updating `c` and the counters.
    fn run_q8(
        &self,
        a: QMatRef<'_, i8>,
        b: QMatRef<'_, i8>,
        spec: GemmSpec,
        c: MatMut<'_, f32>,
    ) -> Result<(), KernelError> {
        validate_q(&a, &b, &spec, &c)?;
        if self.cfg.n > MAX_N {
            return Err(KernelError::Shape(format!(
                "simulated array {}x{} exceeds {MAX_N}",
                self.cfg.n, self.cfg.n
            )));
        }
        let (m, k, ncols) = (a.mat.rows, a.mat.cols, b.mat.cols);
        let order = Self::read_order(&a.mat);
        let plan = self.cfg.plan(
            GemmShape {
                m,
                k,
                n: ncols,
                segment: spec.segment,
                k_safe: k_safe(a.max_abs, b.max_abs),
                accumulate: spec.accumulate,
            },
            order,
        );
        let ld = c.ld;
        let cdata = c.data;
        if k == 0 && !spec.accumulate {
            // The driver clears C; no core call.
            for i in 0..m {
                cdata[i * ld..i * ld + ncols].fill(0.0);
            }
        }
        let needs_carry = plan.calls.iter().any(|cl| cl.carry_out);
        let mut carry = if needs_carry {
            vec![0i32; m * ncols]
        } else {
            Vec::new()
        };
        let n = self.cfg.n;
        let mut st = self.lock();
        let mut total = SimCounters {
            gemm_calls: 1,
            ..Default::default()
        };
        for call in &plan.calls {
            let store = self.preload(&a.mat, call, order);
            let (s_rows, s_cols) = match order {
                ReadOrder::RowMajor => (call.m1 - call.m0, call.k1 - call.k0),
                ReadOrder::ColMajor => (call.k1 - call.k0, call.m1 - call.m0),
            };
            let key = (s_rows, s_cols, fnv1a(&store));
            let resident = st
                .resident
                .as_ref()
                .is_some_and(|r| r.key == key && r.store == store);
            let cw = match order {
                ReadOrder::RowMajor => (call.k1 - call.k0).div_ceil(n),
                ReadOrder::ColMajor => (call.m1 - call.m0).div_ceil(n),
            };
            let ctx = CallCtx {
                n,
                cw,
                order,
                call,
                store: &store,
                b: &b,
                a_scales: a.scales,
                ncols,
                ld,
            };
            // Split C rows m0..m1 (and the partial sums) into blocks of N output rows.
            let c_start = call.m0 * ld;
            let c_end = ((call.m1 - 1) * ld + ncols).min(cdata.len());
            let c_slice = &mut cdata[c_start..c_end];
            let blocks: Vec<(usize, &mut [f32])> = c_slice
                .chunks_mut(n * ld)
                .enumerate()
                .map(|(i, s)| (call.m0 + i * n, s))
                .collect();
            let carry_blocks: Vec<Option<&mut [i32]>> = if needs_carry {
                carry[call.m0 * ncols..call.m1 * ncols]
                    .chunks_mut(n * ncols)
                    .map(Some)
                    .collect()
            } else {
                (0..blocks.len()).map(|_| None).collect()
            };
            blocks
                .into_par_iter()
                .zip(carry_blocks.into_par_iter())
                .for_each(|((mb0, crow), carry_rows)| {
                    let mb1 = (mb0 + n).min(call.m1);
                    ctx.run_block(mb0, mb1, crow, carry_rows);
                });
            total.add(&self.cfg.time_call(call, ncols, resident));
            st.resident = Some(Resident { key, store });
        }
        st.counters.add(&total);
        Ok(())
    }
}

impl GemmBackend for FpgaSim {
    fn name(&self) -> String {
        format!(
            "fpga-sim:{}-{}x{}",
            self.design.board.id, self.design.n, self.design.n
        )
    }

    fn gemm_q8(
        &self,
        a: QMatRef<'_, i8>,
        b: QMatRef<'_, i8>,
        spec: GemmSpec,
        c: MatMut<'_, f32>,
    ) -> Result<(), KernelError> {
        self.run_q8(a, b, spec, c)
    }

    /// One core with a resident matrix: the call order decides the DMA cycles counted, so
    /// calls come one at a time, in the layers' order.
    fn concurrent_calls(&self) -> bool {
        false
    }

    /// The 002 core is 8-bit only: wider mantissas run on the processor.
    fn gemm_q16(
        &self,
        a: QMatRef<'_, i16>,
        b: QMatRef<'_, i16>,
        spec: GemmSpec,
        c: MatMut<'_, f32>,
    ) -> Result<(), KernelError> {
        lowprec_kernels::gemm_q16(a, b, spec, c)?;
        self.lock().counters.cpu_q16_calls += 1;
        Ok(())
    }

    /// Float GEMMs run on the processor, as in 002.
    fn gemm_f32(
        &self,
        a: MatRef<'_, f32>,
        b: MatRef<'_, f32>,
        accumulate: bool,
        c: MatMut<'_, f32>,
    ) -> Result<(), KernelError> {
        lowprec_kernels::gemm_f32(a, b, accumulate, c)?;
        self.lock().counters.cpu_f32_calls += 1;
        Ok(())
    }
}
