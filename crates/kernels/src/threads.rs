//! How a GEMM is shared among threads: C is cut into [`Block`]s along M or N (never K, so the
//! integer sums and the epilogue's float operations are the same whatever the split), each block
//! written by one task through a shared [`SendPtr`]; [`serial`] keeps the GEMMs a task starts on
//! its own thread (for callers that already run independent GEMMs in parallel).
//!
//! Used by the integer driver ([`crate::qgemm`]), its direct path for short segments
//! (`smallseg`) and the f32 GEMM ([`crate::f32gemm`]).

/// Below this many MACs the work runs on the calling thread.
const PAR_MIN_MACS: usize = 1 << 21;

/// A raw pointer that tasks writing disjoint parts of C may share.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr<T>(pub *mut T);
// SAFETY: every task writes a disjoint block of C (see `partition`), and the caller's exclusive
// borrow of C outlives the parallel section.
unsafe impl<T> Send for SendPtr<T> {}
// SAFETY: as for `Send`: tasks share the pointer only to write disjoint blocks.
unsafe impl<T> Sync for SendPtr<T> {}

/// A block of C computed by one task: rows `m0..m1`, columns `n0..n1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Block {
    pub m0: usize,
    pub m1: usize,
    pub n0: usize,
    pub n1: usize,
}

thread_local! {
    /// Set inside [`serial`]: GEMMs started on this thread run on it alone.
    static SERIAL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with every GEMM it starts on this thread kept on this thread (one block, no
/// parallel split). For callers that already run independent GEMMs in parallel (one chunk of
/// examples per task): the other threads are busy with their own chunks, and each chunk's
/// operands stay in the cache of the core that wrote them. Results are the same bits either
/// way (blocking never changes them).
pub fn serial<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            SERIAL.with(|s| s.set(self.0));
        }
    }
    let _restore = Restore(SERIAL.with(|s| s.replace(true)));
    f()
}

/// The worker count GEMMs started on this thread may use.
pub(crate) fn gemm_threads() -> usize {
    if SERIAL.with(|s| s.get()) {
        1
    } else {
        rayon::current_num_threads()
    }
}

/// Cuts C into blocks for `threads` workers, splitting the longer of M and N (never K) at
/// multiples of the tile side `mr` / `nr`.
///
/// A few more blocks than threads even out a busy core; each block keeps at least `min_cols`
/// columns / `min_rows` rows so that packing the other operand stays cheap.
pub(crate) fn partition(
    m: usize,
    n: usize,
    macs: usize,
    threads: usize,
    mr: usize,
    nr: usize,
) -> Vec<Block> {
    let whole = vec![Block {
        m0: 0,
        m1: m,
        n0: 0,
        n1: n,
    }];
    if threads <= 1 || macs < PAR_MIN_MACS {
        return whole;
    }
    let split_n = n >= m;
    let (len, align, min_len) = if split_n { (n, nr, 64) } else { (m, mr, 48) };
    let units = len.div_ceil(align);
    // Two blocks per thread even out a core shared with other work, when blocks stay wide
    // enough (each block repacks the whole other operand).
    let per_thread = if len / (threads * 2) >= 512 { 2 } else { 1 };
    let want = (threads * per_thread)
        .min(len / min_len)
        .max(threads.min(units));
    let parts = want.clamp(1, units);
    if parts <= 1 {
        return whole;
    }
    let mut out = Vec::with_capacity(parts);
    for i in 0..parts {
        let a = (units * i / parts * align).min(len);
        let b = (units * (i + 1) / parts * align).min(len);
        if a < b {
            out.push(if split_n {
                Block {
                    m0: 0,
                    m1: m,
                    n0: a,
                    n1: b,
                }
            } else {
                Block {
                    m0: a,
                    m1: b,
                    n0: 0,
                    n1: n,
                }
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_is_disjoint_and_complete() {
        for (m, n, t) in [
            (64, 131072, 2),
            (1024, 1024, 3),
            (576, 64, 2),
            (7, 5, 2),
            (1, 1000, 3),
        ] {
            let blocks = partition(m, n, m * n * 4096, t, 6, 16);
            let mut seen = vec![0u8; m * n];
            for b in &blocks {
                for i in b.m0..b.m1 {
                    for j in b.n0..b.n1 {
                        seen[i * n + j] += 1;
                    }
                }
            }
            assert!(seen.iter().all(|&x| x == 1), "{m}x{n} at {t} threads");
        }
    }
}
