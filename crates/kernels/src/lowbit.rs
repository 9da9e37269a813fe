//! Packed low-bit GEMMs of paper 001: ternary weights x k-bit unsigned activations as
//! additions and subtractions over bit planes, and binary x binary as XNOR-popcount.
//!
//! Operands are integer codes (`i8`, from `lowprec_formats::lowbit`) packed 64 to a `u64`
//! along K, each line (a row of A, a column of B) padded with zero bits to whole words:
//! - **ternary** A (codes in {-1, 0, +1}; binary weights {-1, +1} are a special case): two
//!   masks per row, `plus` (code = +1) and `minus` (code = -1);
//! - **unsigned planes** B (codes in `0..2^bits`, `bits` in 1..=7): one plane per bit;
//! - **sign** A and B (codes in {-1, +1}): one bit per code, set for +1.
//!
//! Decompositions (exact integer identities, every kernel computes them in i32/u64):
//! - ternary x unsigned: `sum_k a_k b_k = sum_p 2^p (popcnt(b_p & plus) - popcnt(b_p & minus))`;
//! - sign x sign: `sum_k a_k b_k = K - 2 popcnt(a xor b)` (padding bits are 0 in both).
//!
//! Families, chosen at run time by [`BitIsa::detect`]: portable Rust (`count_ones`), AVX2
//! (nibble-table popcount with `vpshufb`, byte counts folded by `vpsadbw`), AVX-512 with
//! VPOPCNTDQ (`vpopcntq` on 512-bit words). All return the same integers as
//! [`lowbit_gemm_ref`], the plain product of the codes. Threads take disjoint row blocks of C
//! (never splitting K), so results do not depend on the thread count.

use rayon::prelude::*;

use crate::types::{MatMut, MatRef};
use crate::KernelError;

/// Bits of K per packed word.
pub const WORD_BITS: usize = 64;

/// Words per packed line of `k` codes.
pub fn line_words(k: usize) -> usize {
    k.div_ceil(WORD_BITS)
}

/// What the bits of a [`PackedBits`] mean.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BitCode {
    /// Codes in {-1, 0, +1}: plane 0 = (code == +1), plane 1 = (code == -1).
    Ternary,
    /// Codes in `0..2^bits`: plane p = bit p of the code.
    Unsigned(u32),
    /// Codes in {-1, +1}: plane 0 = (code == +1).
    Sign,
}

impl BitCode {
    fn planes(self) -> usize {
        match self {
            BitCode::Ternary => 2,
            BitCode::Unsigned(b) => b as usize,
            BitCode::Sign => 1,
        }
    }
    /// The planes' bits of `code`, or `None` when the code is outside the format.
    fn encode(self, code: i8) -> Option<u8> {
        match self {
            BitCode::Ternary => match code {
                1 => Some(1),
                -1 => Some(2),
                0 => Some(0),
                _ => None,
            },
            BitCode::Unsigned(b) => (code >= 0 && (code as u32) < (1 << b)).then_some(code as u8),
            BitCode::Sign => match code {
                1 => Some(1),
                -1 => Some(0),
                _ => None,
            },
        }
    }
    fn describe(self) -> String {
        match self {
            BitCode::Ternary => "ternary codes {-1, 0, +1}".into(),
            BitCode::Unsigned(b) => format!("{b}-bit unsigned codes 0..={}", (1u32 << b) - 1),
            BitCode::Sign => "binary codes {-1, +1}".into(),
        }
    }
}

/// `lines` packed lines of `k` codes: plane `p` of line `i` is
/// `data[(i * planes + p) * words .. + words]`, bit `kk % 64` of word `kk / 64` for code `kk`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackedBits {
    pub code: BitCode,
    pub lines: usize,
    pub k: usize,
    pub words: usize,
    pub data: Vec<u64>,
}

impl PackedBits {
    pub fn planes(&self) -> usize {
        self.code.planes()
    }
    /// Packs the rows of `a` (each row one line along K).
    pub fn from_rows(a: MatRef<'_, i8>, code: BitCode, what: &str) -> Result<Self, KernelError> {
        a.check(what)?;
        pack_lines(
            a.rows,
            a.cols,
            code,
            what,
            |line, kk| a.at(line, kk),
            |l, kk| (l, kk),
        )
    }
    /// Packs the columns of `b` (a `K x N` matrix: each column one line along K).
    pub fn from_cols(b: MatRef<'_, i8>, code: BitCode, what: &str) -> Result<Self, KernelError> {
        b.check(what)?;
        // Rows of B contiguous: 64 codes of one K index at a time, turned into bit masks.
        #[cfg(target_arch = "x86_64")]
        let fast = (b.col_stride == 1
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw"))
        .then_some(b);
        #[cfg(not(target_arch = "x86_64"))]
        let fast = None;
        pack_lines_with(
            fast,
            b.cols,
            b.rows,
            code,
            what,
            |line, kk| b.at(kk, line),
            |l, kk| (kk, l),
        )
    }
}

/// Lines per packing task: a task reads 64 codes of each of its lines in turn, so a row-major
/// B's 64 x 64-byte block stays in L1 while its columns are packed.
const LINES_PER_TASK: usize = 64;

fn pack_lines(
    lines: usize,
    k: usize,
    code: BitCode,
    what: &str,
    get: impl Fn(usize, usize) -> i8 + Sync,
    index: impl Fn(usize, usize) -> (usize, usize) + Sync,
) -> Result<PackedBits, KernelError> {
    pack_lines_with(None, lines, k, code, what, get, index)
}

/// [`pack_lines`], from `fast` (a `K x N` matrix with contiguous rows whose columns are the
/// lines) with AVX-512 BW when given: the same bits.
fn pack_lines_with(
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))] fast: Option<MatRef<'_, i8>>,
    lines: usize,
    k: usize,
    code: BitCode,
    what: &str,
    get: impl Fn(usize, usize) -> i8 + Sync,
    index: impl Fn(usize, usize) -> (usize, usize) + Sync,
) -> Result<PackedBits, KernelError> {
    if let BitCode::Unsigned(b) = code {
        if !(1..=7).contains(&b) {
            return Err(KernelError::Range(format!(
                "{what}: unsigned planes need 1..=7 bits, got {b}"
            )));
        }
    }
    let planes = code.planes();
    let words = line_words(k);
    let mut data = vec![0u64; lines * planes * words];
    let task = LINES_PER_TASK * planes * words;
    // Each task packs its lines word by word (64 codes of one line into `planes` registers),
    // and reports the first bad code it met in row-major order of the matrix.
    let bad: Vec<(usize, usize, i8)> = if task == 0 {
        Vec::new()
    } else {
        data.par_chunks_mut(task)
            .enumerate()
            .filter_map(|(t, out)| {
                let task = PackTask {
                    l0: t * LINES_PER_TASK,
                    k,
                    words,
                    code,
                };
                #[cfg(target_arch = "x86_64")]
                if let Some(bm) = fast {
                    // SAFETY: `from_cols` checked AVX-512 F/BW and that `bm` addresses every
                    // element of its K x N extent.
                    return unsafe {
                        match planes {
                            1 => x86::pack_cols_avx512::<1>(&task, bm, out),
                            2 => x86::pack_cols_avx512::<2>(&task, bm, out),
                            3 => x86::pack_cols_avx512::<3>(&task, bm, out),
                            4 => x86::pack_cols_avx512::<4>(&task, bm, out),
                            5 => x86::pack_cols_avx512::<5>(&task, bm, out),
                            6 => x86::pack_cols_avx512::<6>(&task, bm, out),
                            _ => x86::pack_cols_avx512::<7>(&task, bm, out),
                        }
                    };
                }
                match planes {
                    1 => task.run::<1>(out, &get, &index),
                    2 => task.run::<2>(out, &get, &index),
                    3 => task.run::<3>(out, &get, &index),
                    4 => task.run::<4>(out, &get, &index),
                    5 => task.run::<5>(out, &get, &index),
                    6 => task.run::<6>(out, &get, &index),
                    _ => task.run::<7>(out, &get, &index),
                }
            })
            .collect()
    };
    if let Some(&(r, c, v)) = bad.iter().min_by_key(|&&(r, c, _)| (r, c)) {
        return Err(KernelError::Range(format!(
            "{what}[{r},{c}] = {v} is not one of the {}",
            code.describe()
        )));
    }
    Ok(PackedBits {
        code,
        lines,
        k,
        words,
        data,
    })
}

/// One packing task: lines `l0..` into `out`, with the plane count a constant so the
/// per-code loop over planes unrolls.
struct PackTask {
    l0: usize,
    k: usize,
    words: usize,
    code: BitCode,
}

impl PackTask {
    /// Packs the task's lines word by word (64 codes of one line into `P` registers); returns
    /// the first bad code met, in row-major order of the matrix.
    fn run<const P: usize>(
        &self,
        out: &mut [u64],
        get: &impl Fn(usize, usize) -> i8,
        index: &impl Fn(usize, usize) -> (usize, usize),
    ) -> Option<(usize, usize, i8)> {
        let (words, k) = (self.words, self.k);
        let nl = out.len() / (P * words);
        let mut bad: Option<(usize, usize, i8)> = None;
        for w in 0..k.div_ceil(WORD_BITS) {
            let kk0 = w * WORD_BITS;
            let kn = (k - kk0).min(WORD_BITS);
            for l in 0..nl {
                let line = self.l0 + l;
                let mut acc = [0u64; P];
                for bit in 0..kn {
                    let v = get(line, kk0 + bit);
                    let e = match self.code.encode(v) {
                        Some(e) => e as u64,
                        None => {
                            let (r, c) = index(line, kk0 + bit);
                            if bad.is_none_or(|(br, bc, _)| (r, c) < (br, bc)) {
                                bad = Some((r, c, v));
                            }
                            0
                        }
                    };
                    for (p, a) in acc.iter_mut().enumerate() {
                        *a |= ((e >> p) & 1) << bit;
                    }
                }
                for (p, &a) in acc.iter().enumerate() {
                    out[(l * P + p) * words + w] = a;
                }
            }
        }
        bad
    }
}

/// Transposes a 64 x 64 bit matrix in place: bit `c` of `a[r]` becomes bit `r` of `a[c]`
/// (block swaps of 32, 16, ..., 1 bits).
pub fn transpose64(a: &mut [u64; 64]) {
    const STEPS: [(usize, u64); 6] = [
        (32, 0x0000_0000_FFFF_FFFF),
        (16, 0x0000_FFFF_0000_FFFF),
        (8, 0x00FF_00FF_00FF_00FF),
        (4, 0x0F0F_0F0F_0F0F_0F0F),
        (2, 0x3333_3333_3333_3333),
        (1, 0x5555_5555_5555_5555),
    ];
    for (j, mask) in STEPS {
        for k in 0..64 {
            if k & j == 0 {
                let t = ((a[k] >> j) ^ a[k + j]) & mask;
                a[k] ^= t << j;
                a[k + j] ^= t;
            }
        }
    }
}

/// Reference: `C = A B` on the integer codes themselves, one product at a time (the
/// yardstick of every packed kernel; K any length, sums exact in i64 and checked to fit i32).
pub fn lowbit_gemm_ref(
    a: MatRef<'_, i8>,
    b: MatRef<'_, i8>,
    c: MatMut<'_, i32>,
) -> Result<(), KernelError> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    check_c(m, n, &c)?;
    if b.rows != k {
        return Err(KernelError::Shape(format!(
            "A is {m}x{k} but B is {}x{n}: inner dimensions differ",
            b.rows
        )));
    }
    a.check("A")?;
    b.check("B")?;
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0i64;
            for kk in 0..k {
                acc += a.at(i, kk) as i64 * b.at(kk, j) as i64;
            }
            c.data[i * c.ld + j] = i32::try_from(acc)
                .map_err(|_| KernelError::Range(format!("C[{i},{j}] = {acc} overflows i32")))?;
        }
    }
    Ok(())
}

fn check_c(m: usize, n: usize, c: &MatMut<'_, i32>) -> Result<(), KernelError> {
    if c.rows != m || c.cols != n || c.ld < n || (m > 0 && c.data.len() < (m - 1) * c.ld + n) {
        return Err(KernelError::Shape(format!(
            "C is {}x{} (ld {}, {} elements) but A*B is {m}x{n}",
            c.rows,
            c.cols,
            c.ld,
            c.data.len()
        )));
    }
    Ok(())
}

/// Kernel families of the packed GEMMs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum BitIsa {
    /// Portable Rust: `u64::count_ones` compiled for the baseline target.
    Portable,
    /// AVX2: nibble-table popcount (`vpshufb`), byte counts folded with `vpsadbw`; lines of
    /// fewer than 8 words on scalar `popcnt`.
    Avx2,
    /// AVX-512 F + VPOPCNTDQ: `vpopcntq` on 512 bits at a time; lines of fewer than 8 words
    /// on scalar `popcnt`.
    Avx512Vpopcnt,
}

impl BitIsa {
    /// The fastest family this CPU runs.
    pub fn detect() -> Self {
        *Self::available()
            .iter()
            .rev()
            .find(|b| b.within_cap())
            .expect("portable is always available")
    }
    /// Whether the `LOWPREC_ISA` cap lets this family run.
    pub fn within_cap(self) -> bool {
        use lowprec_formats::isa::{allows, IsaLevel};
        match self {
            BitIsa::Portable => true,
            BitIsa::Avx2 => allows(IsaLevel::Avx2),
            BitIsa::Avx512Vpopcnt => allows(IsaLevel::Avx512),
        }
    }
    /// Every family this CPU runs, slowest first (tests run them all).
    pub fn available() -> Vec<Self> {
        let mut v = vec![BitIsa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") {
                v.push(BitIsa::Avx2);
            }
            if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vpopcntdq") {
                v.push(BitIsa::Avx512Vpopcnt);
            }
        }
        v
    }
    fn check(self) -> Result<(), KernelError> {
        if Self::available().contains(&self) {
            Ok(())
        } else {
            Err(KernelError::Shape(format!(
                "kernel family {self:?} is not supported by this CPU"
            )))
        }
    }
}

/// Which product a packed GEMM computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Product {
    /// Ternary A x unsigned-plane B.
    TernaryPlanes,
    /// Sign A x sign B.
    Xnor,
}

/// Rows and columns per microkernel call: two A lines against four B lines share loads.
const MR: usize = 2;
const NR: usize = 4;
/// Most rows of C per threaded task, and columns per block inside a task (A's rows stay in
/// L1 across a block, B's four lines across the rows).
const TASK_ROWS: usize = 16;
const TASK_COLS: usize = 256;

/// Ternary weights x k-bit unsigned activations: `C = A B` in i32, on `isa`.
pub fn gemm_ternary_planes_with(
    isa: BitIsa,
    a: &PackedBits,
    b: &PackedBits,
    c: MatMut<'_, i32>,
) -> Result<(), KernelError> {
    if a.code != BitCode::Ternary {
        return Err(KernelError::Shape(format!(
            "A must hold ternary codes, holds {:?}",
            a.code
        )));
    }
    let BitCode::Unsigned(bits) = b.code else {
        return Err(KernelError::Shape(format!(
            "B must hold unsigned bit planes, holds {:?}",
            b.code
        )));
    };
    if a.k as u64 * ((1u64 << bits) - 1) > i32::MAX as u64 {
        return Err(KernelError::Range(format!(
            "K = {} with {bits}-bit activations may overflow i32",
            a.k
        )));
    }
    drive(isa, Product::TernaryPlanes, a, b, c)
}

/// [`gemm_ternary_planes_with`] on the fastest family this CPU runs.
pub fn gemm_ternary_planes(
    a: &PackedBits,
    b: &PackedBits,
    c: MatMut<'_, i32>,
) -> Result<(), KernelError> {
    gemm_ternary_planes_with(BitIsa::detect(), a, b, c)
}

/// Binary x binary (codes in {-1, +1}): `C = A B` in i32 by XNOR-popcount, on `isa`.
pub fn gemm_xnor_with(
    isa: BitIsa,
    a: &PackedBits,
    b: &PackedBits,
    c: MatMut<'_, i32>,
) -> Result<(), KernelError> {
    if a.code != BitCode::Sign || b.code != BitCode::Sign {
        return Err(KernelError::Shape(format!(
            "XNOR GEMM needs binary codes in A and B, got {:?} and {:?}",
            a.code, b.code
        )));
    }
    if a.k > i32::MAX as usize {
        return Err(KernelError::Range(format!("K = {} overflows i32", a.k)));
    }
    drive(isa, Product::Xnor, a, b, c)
}

/// [`gemm_xnor_with`] on the fastest family this CPU runs.
pub fn gemm_xnor(a: &PackedBits, b: &PackedBits, c: MatMut<'_, i32>) -> Result<(), KernelError> {
    gemm_xnor_with(BitIsa::detect(), a, b, c)
}

fn drive(
    isa: BitIsa,
    prod: Product,
    a: &PackedBits,
    b: &PackedBits,
    c: MatMut<'_, i32>,
) -> Result<(), KernelError> {
    isa.check()?;
    let (m, n) = (a.lines, b.lines);
    if a.k != b.k || a.words != b.words {
        return Err(KernelError::Shape(format!(
            "A has K = {} but B has K = {}",
            a.k, b.k
        )));
    }
    check_c(m, n, &c)?;
    for (what, p) in [("A", a), ("B", b)] {
        if p.words != line_words(p.k) || p.data.len() != p.lines * p.planes() * p.words {
            return Err(KernelError::Shape(format!(
                "{what}: packed data of {} words does not hold {} lines of K = {}",
                p.data.len(),
                p.lines,
                p.k
            )));
        }
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    // Row blocks small enough that every thread gets several, at most TASK_ROWS rows.
    let threads = rayon::current_num_threads().max(1);
    let rows = (m.div_ceil(4 * threads).div_ceil(MR) * MR).clamp(MR, TASK_ROWS);
    let ld = c.ld;
    let used = (m - 1) * ld + n;
    c.data[..used]
        .par_chunks_mut(rows * ld)
        .enumerate()
        .for_each(|(t, cblk)| {
            let i0 = t * rows;
            let mi = (m - i0).min(rows);
            let mut out = [[0i64; NR]; MR];
            for j0 in (0..n).step_by(TASK_COLS) {
                let nj = (n - j0).min(TASK_COLS);
                for jb in (j0..j0 + nj).step_by(NR) {
                    let nr = (j0 + nj - jb).min(NR);
                    for ib in (0..mi).step_by(MR) {
                        let mr = (mi - ib).min(MR);
                        micro(isa, prod, a, b, (i0 + ib, mr), (jb, nr), &mut out);
                        for r in 0..mr {
                            for q in 0..nr {
                                cblk[(ib + r) * ld + jb + q] = out[r][q] as i32;
                            }
                        }
                    }
                }
            }
        });
    Ok(())
}

/// `out[r][q]` = dot of A line `i0 + r` with B line `j0 + q` (`r < mr`, `q < nr`; the other
/// entries repeat the last line and are ignored).
#[inline]
fn micro(
    isa: BitIsa,
    prod: Product,
    a: &PackedBits,
    b: &PackedBits,
    (i0, mr): (usize, usize),
    (j0, nr): (usize, usize),
    out: &mut [[i64; NR]; MR],
) {
    let (ap, bp, words) = (a.planes(), b.planes(), b.words);
    let al: [&[u64]; MR] = std::array::from_fn(|r| {
        let s = (i0 + r.min(mr - 1)) * ap * words;
        &a.data[s..s + ap * words]
    });
    let bl: [&[u64]; NR] = std::array::from_fn(|q| {
        let s = (j0 + q.min(nr - 1)) * bp * words;
        &b.data[s..s + bp * words]
    });
    // Lines shorter than one 512-bit register: scalar `popcnt` beats vector reductions.
    #[cfg(target_arch = "x86_64")]
    if isa != BitIsa::Portable && words < 8 {
        // SAFETY: both x86 families require `popcnt` (`BitIsa::available`).
        *out = unsafe { x86::tile_popcnt(prod, &al, &bl, words, bp, a.k as i64) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if isa == BitIsa::Avx512Vpopcnt {
        // SAFETY: `drive` checked the CPU; every line holds its planes of `words` words.
        *out = unsafe {
            match prod {
                Product::TernaryPlanes => x86::tern_tile_avx512(&al, &bl, words, bp),
                Product::Xnor => x86::xnor_tile_avx512(&al, &bl, words, a.k as i64),
            }
        };
        return;
    }
    for r in 0..MR {
        match prod {
            Product::TernaryPlanes => {
                let (plus, minus) = (&al[r][..words], &al[r][words..]);
                out[r] = [0; NR];
                for p in 0..bp {
                    let planes: [&[u64]; NR] =
                        std::array::from_fn(|q| &bl[q][p * words..(p + 1) * words]);
                    let d = match isa {
                        // SAFETY: `drive` checked the CPU; slices of `words` words each.
                        #[cfg(target_arch = "x86_64")]
                        BitIsa::Avx2 => unsafe { x86::tern_avx2(plus, minus, &planes) },
                        _ => tern_portable(plus, minus, &planes),
                    };
                    for q in 0..NR {
                        out[r][q] += d[q] << p;
                    }
                }
            }
            Product::Xnor => {
                let x = match isa {
                    // SAFETY: as above.
                    #[cfg(target_arch = "x86_64")]
                    BitIsa::Avx2 => unsafe { x86::xor_avx2(al[r], &bl) },
                    _ => xor_portable(al[r], &bl),
                };
                for q in 0..NR {
                    out[r][q] = a.k as i64 - 2 * x[q] as i64;
                }
            }
        }
    }
}

/// `popcnt(b & plus) - popcnt(b & minus)` for each of the four B lines.
fn tern_portable(plus: &[u64], minus: &[u64], b: &[&[u64]; NR]) -> [i64; NR] {
    std::array::from_fn(|q| {
        let mut s = 0i64;
        for w in 0..plus.len() {
            s += (b[q][w] & plus[w]).count_ones() as i64;
            s -= (b[q][w] & minus[w]).count_ones() as i64;
        }
        s
    })
}

/// `popcnt(a xor b)` for each of the four B lines.
fn xor_portable(a: &[u64], b: &[&[u64]; NR]) -> [u64; NR] {
    std::array::from_fn(|q| {
        a.iter()
            .zip(b[q])
            .map(|(x, y)| (x ^ y).count_ones() as u64)
            .sum()
    })
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{transpose64, BitCode, PackTask, Product, MR, NR, WORD_BITS};
    use crate::types::MatRef;
    use std::arch::x86_64::*;

    /// [`PackTask::run`] for the columns of `b` (contiguous rows): per K index, the 64 codes
    /// of the task's lines are compared at once into one bit mask per plane (bit = line), and
    /// each 64 x 64 block of masks is transposed into the lines' words.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F and BW; `b.col_stride` must be 1 and `b` must address
    /// every element of its `rows x cols` extent; `out` holds the task's lines of `P` planes.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn pack_cols_avx512<const P: usize>(
        task: &PackTask,
        b: MatRef<'_, i8>,
        out: &mut [u64],
    ) -> Option<(usize, usize, i8)> {
        let words = task.words;
        let nl = out.len() / (P * words);
        let j0 = task.l0;
        let lanes: u64 = if nl == 64 { !0 } else { (1u64 << nl) - 1 };
        let mut bad: Option<(usize, usize, i8)> = None;
        let mut m = [[0u64; 64]; P];
        for w in 0..words {
            let kk0 = w * WORD_BITS;
            let kn = (task.k - kk0).min(WORD_BITS);
            for r in 0..kn {
                let kk = kk0 + r;
                let row = &b.data[kk * b.row_stride + j0..kk * b.row_stride + j0 + nl];
                // SAFETY: masked-off lanes are not read; the first `nl` lie in `row`.
                let v = unsafe { _mm512_maskz_loadu_epi8(lanes, row.as_ptr().cast()) };
                let eq = |c: i8| _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8(c));
                let ok = match task.code {
                    BitCode::Ternary => {
                        m[0][r] = eq(1);
                        if P > 1 {
                            m[1][r] = eq(-1);
                        }
                        eq(0) | eq(1) | eq(-1)
                    }
                    BitCode::Sign => {
                        m[0][r] = eq(1);
                        eq(1) | eq(-1)
                    }
                    BitCode::Unsigned(bits) => {
                        for (p, mp) in m.iter_mut().enumerate() {
                            mp[r] = _mm512_test_epi8_mask(v, _mm512_set1_epi8(1 << p));
                        }
                        // Codes 0..2^bits: no bit at or above `bits` (the sign bit included).
                        let high = (!((1u32 << bits) - 1)) as u8 as i8;
                        _mm512_testn_epi8_mask(v, _mm512_set1_epi8(high))
                    }
                };
                let wrong = !ok & lanes;
                if wrong != 0 {
                    let l = wrong.trailing_zeros() as usize;
                    if bad.is_none_or(|(br, bc, _)| (kk, j0 + l) < (br, bc)) {
                        bad = Some((kk, j0 + l, row[l]));
                    }
                }
            }
            for mp in m.iter_mut() {
                mp[kn..].fill(0);
                transpose64(mp);
            }
            for l in 0..nl {
                for (p, mp) in m.iter().enumerate() {
                    out[(l * P + p) * words + w] = mp[l];
                }
            }
        }
        bad
    }

    /// A 2 x 4 tile on scalar `popcnt`, for lines of a few words.
    ///
    /// # Safety
    /// The CPU must support `popcnt`; every `al[r]` must hold its planes (2 for ternary, 1
    /// for sign) of `words` words and every `bl[q]` `planes * words`.
    #[target_feature(enable = "popcnt")]
    pub unsafe fn tile_popcnt(
        prod: Product,
        al: &[&[u64]; MR],
        bl: &[&[u64]; NR],
        words: usize,
        planes: usize,
        k: i64,
    ) -> [[i64; NR]; MR] {
        std::array::from_fn(|r| {
            std::array::from_fn(|q| match prod {
                Product::TernaryPlanes => {
                    let (plus, minus) = (&al[r][..words], &al[r][words..2 * words]);
                    let mut acc = 0i64;
                    for p in 0..planes {
                        let bp = &bl[q][p * words..(p + 1) * words];
                        let mut d = 0i64;
                        for w in 0..words {
                            d += (bp[w] & plus[w]).count_ones() as i64;
                            d -= (bp[w] & minus[w]).count_ones() as i64;
                        }
                        acc += d << p;
                    }
                    acc
                }
                Product::Xnor => {
                    let x: i64 = (0..words)
                        .map(|w| (al[r][w] ^ bl[q][w]).count_ones() as i64)
                        .sum();
                    k - 2 * x
                }
            })
        })
    }

    /// Byte-wise popcount of a 256-bit vector (nibble table).
    #[inline]
    #[target_feature(enable = "avx2")]
    fn cnt8(x: __m256i, lut: __m256i, low: __m256i) -> __m256i {
        let lo = _mm256_and_si256(x, low);
        let hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), low);
        _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi))
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn hsum4(v: __m256i) -> u64 {
        let mut t = [0u64; 4];
        // SAFETY: `t` is 32 bytes; unaligned store.
        unsafe { _mm256_storeu_si256(t.as_mut_ptr() as *mut __m256i, v) };
        t.iter().sum()
    }

    /// Words `4c..4c+4` of `s`.
    ///
    /// # Safety
    /// AVX2 must be available and `s` must hold at least `4c + 4` words.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn ld256(s: &[u64], c: usize) -> __m256i {
        debug_assert!(s.len() >= 4 * c + 4);
        // SAFETY: AVX2 is enabled on this fn and the caller guarantees 4c + 4 words in `s`.
        unsafe { _mm256_loadu_si256(s.as_ptr().add(4 * c) as *const __m256i) }
    }

    /// Words `off..off+n` of `s` (`n <= 8`), zeros in the lanes past `n`.
    ///
    /// # Safety
    /// AVX-512 F must be available and `s` must hold at least `off + n` words.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn ld512(s: &[u64], off: usize, n: usize) -> __m512i {
        debug_assert!(n <= 8 && s.len() >= off + n);
        // SAFETY: the caller guarantees `off + n` words in `s`, so `off` is in bounds or one past.
        let p = unsafe { s.as_ptr().add(off) };
        if n == 8 {
            // SAFETY: AVX-512 F is enabled on this fn; eight words from `off` lie inside `s`.
            unsafe { _mm512_loadu_si512(p.cast()) }
        } else {
            // Masked-off lanes are not read, so the load stays inside `s`.
            // SAFETY: AVX-512 F is enabled on this fn; only the `n` lanes inside `s` are read.
            unsafe { _mm512_maskz_loadu_epi64(((1u32 << n) - 1) as u8, p.cast()) }
        }
    }

    fn lut() -> [i8; 32] {
        let n: [i8; 16] = [0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4];
        std::array::from_fn(|i| n[i % 16])
    }

    /// Chunks of 256 bits whose byte counts (at most 8 per chunk) fit a byte: 31 x 8 = 248.
    const FOLD: usize = 31;

    /// AVX2 `popcnt(b & plus) - popcnt(b & minus)` for four B lines (words past the last
    /// multiple of 4 counted with `popcnt` on scalars).
    ///
    /// # Safety
    /// The CPU must support AVX2; `plus`, `minus` and every `b[q]` must have the same length.
    #[target_feature(enable = "avx2")]
    pub unsafe fn tern_avx2(plus: &[u64], minus: &[u64], b: &[&[u64]; NR]) -> [i64; NR] {
        let chunks = plus.len() / 4;
        let t = lut();
        // SAFETY: AVX2 is enabled on this fn; `t` holds 32 bytes.
        let lut = unsafe { _mm256_loadu_si256(t.as_ptr() as *const __m256i) };
        let low = _mm256_set1_epi8(0x0f);
        let zero = _mm256_setzero_si256();
        // SAFETY: AVX2 is enabled on this fn and `ld` is called only for chunks c < len / 4.
        let ld = |s: &[u64], c: usize| unsafe { ld256(s, c) };
        let mut pos = [zero; NR];
        let mut neg = [zero; NR];
        let mut c = 0;
        while c < chunks {
            let end = (c + FOLD).min(chunks);
            let mut bp = [zero; NR];
            let mut bn = [zero; NR];
            for ch in c..end {
                let (vp, vm) = (ld(plus, ch), ld(minus, ch));
                for q in 0..NR {
                    let vb = ld(b[q], ch);
                    bp[q] = _mm256_add_epi8(bp[q], cnt8(_mm256_and_si256(vb, vp), lut, low));
                    bn[q] = _mm256_add_epi8(bn[q], cnt8(_mm256_and_si256(vb, vm), lut, low));
                }
            }
            for q in 0..NR {
                pos[q] = _mm256_add_epi64(pos[q], _mm256_sad_epu8(bp[q], zero));
                neg[q] = _mm256_add_epi64(neg[q], _mm256_sad_epu8(bn[q], zero));
            }
            c = end;
        }
        std::array::from_fn(|q| {
            let tail: i64 = (4 * chunks..plus.len())
                .map(|w| {
                    (b[q][w] & plus[w]).count_ones() as i64
                        - (b[q][w] & minus[w]).count_ones() as i64
                })
                .sum();
            hsum4(pos[q]) as i64 - hsum4(neg[q]) as i64 + tail
        })
    }

    /// AVX2 `popcnt(a xor b)` for four B lines (words past the last multiple of 4 on scalars).
    ///
    /// # Safety
    /// The CPU must support AVX2; `a` and every `b[q]` must have the same length.
    #[target_feature(enable = "avx2")]
    pub unsafe fn xor_avx2(a: &[u64], b: &[&[u64]; NR]) -> [u64; NR] {
        let chunks = a.len() / 4;
        let t = lut();
        // SAFETY: AVX2 is enabled on this fn; `t` holds 32 bytes.
        let lut = unsafe { _mm256_loadu_si256(t.as_ptr() as *const __m256i) };
        let low = _mm256_set1_epi8(0x0f);
        let zero = _mm256_setzero_si256();
        // SAFETY: AVX2 is enabled on this fn and `ld` is called only for chunks c < len / 4.
        let ld = |s: &[u64], c: usize| unsafe { ld256(s, c) };
        let mut tot = [zero; NR];
        let mut c = 0;
        while c < chunks {
            let end = (c + FOLD).min(chunks);
            let mut bx = [zero; NR];
            for ch in c..end {
                let va = ld(a, ch);
                for q in 0..NR {
                    let x = _mm256_xor_si256(va, ld(b[q], ch));
                    bx[q] = _mm256_add_epi8(bx[q], cnt8(x, lut, low));
                }
            }
            for q in 0..NR {
                tot[q] = _mm256_add_epi64(tot[q], _mm256_sad_epu8(bx[q], zero));
            }
            c = end;
        }
        std::array::from_fn(|q| {
            let tail: u64 = (4 * chunks..a.len())
                .map(|w| (a[w] ^ b[q][w]).count_ones() as u64)
                .sum();
            hsum4(tot[q]) + tail
        })
    }

    /// AVX-512 ternary x unsigned planes on a 2 x 4 tile: `al[r]` holds `plus` then `minus`
    /// (`words` each), `bl[q]` holds `planes` planes of `words` words.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F and VPOPCNTDQ; every `al[r]` must hold `2 words` words
    /// and every `bl[q]` `planes * words`.
    #[target_feature(enable = "avx512f,avx512vpopcntdq")]
    pub unsafe fn tern_tile_avx512(
        al: &[&[u64]; MR],
        bl: &[&[u64]; NR],
        words: usize,
        planes: usize,
    ) -> [[i64; NR]; MR] {
        // SAFETY: AVX-512 F is enabled on this fn; `ld` is called with `off + n` within the line lengths of the `# Safety` contract.
        let ld = |s: &[u64], off: usize, n: usize| unsafe { ld512(s, off, n) };
        let mut acc = [[_mm512_setzero_si512(); NR]; MR];
        for p in 0..planes {
            let mut accp = [[_mm512_setzero_si512(); NR]; MR];
            for w in (0..words).step_by(8) {
                let n = (words - w).min(8);
                let vp: [__m512i; MR] = std::array::from_fn(|r| ld(al[r], w, n));
                let vm: [__m512i; MR] = std::array::from_fn(|r| ld(al[r], words + w, n));
                for q in 0..NR {
                    let vb = ld(bl[q], p * words + w, n);
                    for r in 0..MR {
                        let pos = _mm512_popcnt_epi64(_mm512_and_si512(vb, vp[r]));
                        let neg = _mm512_popcnt_epi64(_mm512_and_si512(vb, vm[r]));
                        accp[r][q] = _mm512_sub_epi64(_mm512_add_epi64(accp[r][q], pos), neg);
                    }
                }
            }
            let sh = _mm_cvtsi64_si128(p as i64);
            for r in 0..MR {
                for q in 0..NR {
                    acc[r][q] = _mm512_add_epi64(acc[r][q], _mm512_sll_epi64(accp[r][q], sh));
                }
            }
        }
        std::array::from_fn(|r| std::array::from_fn(|q| _mm512_reduce_add_epi64(acc[r][q])))
    }

    /// AVX-512 XNOR-popcount on a 2 x 4 tile: `k - 2 popcnt(a xor b)`.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F and VPOPCNTDQ; every line must hold `words` words.
    #[target_feature(enable = "avx512f,avx512vpopcntdq")]
    pub unsafe fn xnor_tile_avx512(
        al: &[&[u64]; MR],
        bl: &[&[u64]; NR],
        words: usize,
        k: i64,
    ) -> [[i64; NR]; MR] {
        // SAFETY: AVX-512 F is enabled on this fn; `ld` is called with `off + n` within the line lengths of the `# Safety` contract.
        let ld = |s: &[u64], off: usize, n: usize| unsafe { ld512(s, off, n) };
        let mut acc = [[_mm512_setzero_si512(); NR]; MR];
        for w in (0..words).step_by(8) {
            let n = (words - w).min(8);
            let va: [__m512i; MR] = std::array::from_fn(|r| ld(al[r], w, n));
            for q in 0..NR {
                let vb = ld(bl[q], w, n);
                for r in 0..MR {
                    let x = _mm512_popcnt_epi64(_mm512_xor_si512(va[r], vb));
                    acc[r][q] = _mm512_add_epi64(acc[r][q], x);
                }
            }
        }
        std::array::from_fn(|r| std::array::from_fn(|q| k - 2 * _mm512_reduce_add_epi64(acc[r][q])))
    }
}
