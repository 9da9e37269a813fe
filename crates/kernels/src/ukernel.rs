//! Register-blocked integer microkernels: one `MR x NR` tile of exact i32 sums from packed
//! i16 panels.
//!
//! Both operands are packed in *k-pairs* (see [`crate::pack`]): the A micro-panel holds, for
//! each of its `MR` rows (`a_stride` i16 apart), the words `(a[r, 2p], a[r, 2p+1])` in pair
//! order; the B micro-panel holds for pair `p` the `NR` words `(b[2p, c], b[2p+1, c])`.
//! `vpmaddwd` multiplies a broadcast A word against a B vector and adds the two products of each
//! word into an i32 lane: 16 exact MACs per instruction with no saturation (it can only wrap for
//! `(-32768)^2 * 2`, which the k_safe chunking rules out: such operands give `k_safe = 1`, so the
//! second half of every pair is a zero pad). Every partial sum is a sum of a subset of one
//! chunk's products, so it is bounded by the chunk's bound and i32 never overflows.
//!
//! Why not `vpmaddubsw` (32 MACs per instruction): it multiplies u8 by s8 and saturates the i16
//! pair sums, so full-range s8 x s8 needs a sign transfer per product and still saturates at
//! `2 * 128 * 128`; on Zen 3 the `vpmaddwd` + `vpaddd` pair is limited by the vector pipes the
//! adds share with the multiplies, not by the multiply count (measured: `vpmaddwd` alone 203
//! GOP/s per core, with the adds about 160).

/// Rows of the C tile (A broadcasts per k-pair).
pub const MR: usize = 6;
/// Columns of the C tile (two 8-lane i32 vectors).
pub const NR: usize = 16;
/// i32 elements in one tile, row-major with leading dimension `NR`.
pub const TILE: usize = MR * NR;

/// Which microkernel family runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// Portable scalar Rust (the compiler may vectorise it for the baseline target).
    Generic,
    /// AVX2 `vpmaddwd` kernel, selected when the CPU has AVX2 and FMA.
    Avx2,
}

impl Isa {
    /// The best kernel family this CPU supports.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa::Avx2;
            }
        }
        Isa::Generic
    }

    /// `self` if this CPU can run it, otherwise the portable kernels.
    pub fn or_supported(self) -> Self {
        match self {
            Isa::Avx2 if Isa::detect() == Isa::Avx2 => Isa::Avx2,
            _ => Isa::Generic,
        }
    }
}

/// `tile = (first ? 0 : tile) + sum_{p < kp} A~[p] (x) B~[p]` for one `MR x NR` tile.
///
/// # Safety
/// Rows `r < MR` of A must hold `2 * kp` readable i16 at `a + r * a_stride`, `b` must hold
/// `kp * NR * 2` readable i16, and `isa` must be supported.
#[inline]
pub unsafe fn run(
    isa: Isa,
    kp: usize,
    a: *const i16,
    a_stride: usize,
    b: *const i16,
    tile: &mut [i32; TILE],
    first: bool,
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => avx2::kernel(kp, a, a_stride, b, tile, first),
        _ => generic(kp, a, a_stride, b, tile, first),
    }
}

/// Portable microkernel (same contract as [`run`]).
///
/// # Safety
/// See [`run`].
pub unsafe fn generic(
    kp: usize,
    a: *const i16,
    a_stride: usize,
    b: *const i16,
    tile: &mut [i32; TILE],
    first: bool,
) {
    if first {
        tile.fill(0);
    }
    let b = std::slice::from_raw_parts(b, kp * NR * 2);
    for r in 0..MR {
        let arow = std::slice::from_raw_parts(a.add(r * a_stride), kp * 2);
        let row = &mut tile[r * NR..(r + 1) * NR];
        for p in 0..kp {
            let (a0, a1) = (arow[2 * p] as i32, arow[2 * p + 1] as i32);
            let bp = &b[p * NR * 2..(p + 1) * NR * 2];
            for (c, t) in row.iter_mut().enumerate() {
                *t += a0 * bp[2 * c] as i32 + a1 * bp[2 * c + 1] as i32;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::TILE;
    use std::arch::x86_64::*;

    /// 6x16 tile, 12 ymm accumulators, 2 B loads + 6 broadcasts + 12 `vpmaddwd` + 12 `vpaddd`
    /// per k-pair (`MR = 6`, `NR = 16` are baked into the offsets below).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn kernel(
        kp: usize,
        a: *const i16,
        a_stride: usize,
        b: *const i16,
        tile: &mut [i32; TILE],
        first: bool,
    ) {
        let t = tile.as_mut_ptr() as *mut __m256i;
        macro_rules! init {
            ($i:expr) => {
                if first {
                    _mm256_setzero_si256()
                } else {
                    _mm256_loadu_si256(t.add($i))
                }
            };
        }
        let (mut c00, mut c01) = (init!(0), init!(1));
        let (mut c10, mut c11) = (init!(2), init!(3));
        let (mut c20, mut c21) = (init!(4), init!(5));
        let (mut c30, mut c31) = (init!(6), init!(7));
        let (mut c40, mut c41) = (init!(8), init!(9));
        let (mut c50, mut c51) = (init!(10), init!(11));
        // The k loop is written in assembly: with intrinsics, LLVM re-associates the i32 adds
        // of the unrolled steps (legal for integers) and spills accumulators to the stack.
        // 12 accumulators (ymm4..15) + 2 B vectors + broadcast + product use all 16 registers.
        // Both multiplies of a row go before their adds: measured a few % faster on Zen 3,
        // where the adds compete with `vpmaddwd` for the vector pipes.
        std::arch::asm!(
            "cmp {n}, 4",
            "jb 3f",
            "2:",
            "vmovdqu ymm0, ymmword ptr [{b} + 0]",
            "vmovdqu ymm1, ymmword ptr [{b} + 32]",
            "vpbroadcastd ymm2, dword ptr [{a} + 0]",
            "vpmaddwd ymm3, ymm2, ymm0",
            "vpmaddwd ymm2, ymm2, ymm1",
            "vpaddd ymm4, ymm4, ymm3",
            "vpaddd ymm5, ymm5, ymm2",
            "vpbroadcastd ymm2, dword ptr [{a} + {s} + 0]",
            "vpmaddwd ymm3, ymm2, ymm0",
            "vpmaddwd ymm2, ymm2, ymm1",
            "vpaddd ymm6, ymm6, ymm3",
            "vpaddd ymm7, ymm7, ymm2",
            "vpbroadcastd ymm2, dword ptr [{a} + {s}*2 + 0]",
            "vpmaddwd ymm3, ymm2, ymm0",
            "vpmaddwd ymm2, ymm2, ymm1",
            "vpaddd ymm8, ymm8, ymm3",
            "vpaddd ymm9, ymm9, ymm2",
            "vpbroadcastd ymm2, dword ptr [{a3} + 0]",
            "vpmaddwd ymm3, ymm2, ymm0",
            "vpmaddwd ymm2, ymm2, ymm1",
            "vpaddd ymm10, ymm10, ymm3",
            "vpaddd ymm11, ymm11, ymm2",
            "vpbroadcastd ymm2, dword ptr [{a3} + {s} + 0]",
            "vpmaddwd ymm3, ymm2, ymm0",
            "vpmaddwd ymm2, ymm2, ymm1",
            "vpaddd ymm12, ymm12, ymm3",
            "vpaddd ymm13, ymm13, ymm2",
            "vpbroadcastd ymm2, dword ptr [{a3} + {s}*2 + 0]",
            "vpmaddwd ymm3, ymm2, ymm0",
            "vpmaddwd ymm2, ymm2, ymm1",
            "vpaddd ymm14, ymm14, ymm3",
            "vpaddd ymm15, ymm15, ymm2",
            "vmovdqu ymm0, ymmword ptr [{b} + 64]",
            "vmovdqu ymm1, ymmword ptr [{b} + 96]",
            "vpbroadcastd ymm2, dword ptr [{a} + 4]",
            "vpmaddwd ymm3, ymm2, ymm0",
            "vpmaddwd ymm2, ymm2, ymm1",
            "vpaddd ymm4, ymm4, ymm3",
            "vpaddd ymm5, ymm5, ymm2",
            "vpbroadcastd ymm2, dword ptr [{a} + {s} + 4]",
            "vpmaddwd ymm3, ymm2, ymm0",
            "vpmaddwd ymm2, ymm2, ymm1",
            "vpaddd ymm6, ymm6, ymm3",
            "vpaddd ymm7, ymm7, ymm2",
            "vpbroadcastd ymm2, dword ptr [{a} + {s}*2 + 4]",
            "vpmaddwd ymm3, ymm2, ymm0",
            "vpmaddwd ymm2, ymm2, ymm1",
            "vpaddd ymm8, ymm8, ymm3",
            "vpaddd ymm9, ymm9, ymm2",
            "vpbroadcastd ymm2, dword ptr [{a3} + 4]",
            "vpmaddwd ymm3, ymm2, ymm0",
            "vpmaddwd ymm2, ymm2, ymm1",
            "vpaddd ymm10, ymm10, ymm3",
            "vpaddd ymm11, ymm11, ymm2",
            "vpbroadcastd ymm2, dword ptr [{a3} + {s} + 4]",
            "vpmaddwd ymm3, ymm2, ymm0",
            "vpmaddwd ymm2, ymm2, ymm1",
            "vpaddd ymm12, ymm12, ymm3",
            "vpaddd ymm13, ymm13, ymm2",
            "vpbroadcastd ymm2, dword ptr [{a3} + {s}*2 + 4]",
            "vpmaddwd ymm3, ymm2, ymm0",
            "vpmaddwd ymm2, ymm2, ymm1",
            "vpaddd ymm14, ymm14, ymm3",
            "vpaddd ymm15, ymm15, ymm2",
            "vmovdqu ymm0, ymmword ptr [{b} + 128]",
            "vmovdqu ymm1, ymmword ptr [{b} + 160]",
            "vpbroadcastd ymm2, dword ptr [{a} + 8]",
            "vpmaddwd ymm3, ymm2, ymm0",
            "vpmaddwd ymm2, ymm2, ymm1",
            "vpaddd ymm4, ymm4, ymm3",
            "vpaddd ymm5, ymm5, ymm2",
            "vpbroadcastd ymm2, dword ptr [{a} + {s} + 8]",
            "vpmaddwd ymm3, ymm2, ymm0",
            "vpmaddwd ymm2, ymm2, ymm1",
            "vpaddd ymm6, ymm6, ymm3",
            "vpaddd ymm7, ymm7, ymm2",
            "vpbroadcastd ymm2, dword ptr [{a} + {s}*2 + 8]",
            "vpmaddwd ymm3, ymm2, ymm0",
            "vpmaddwd ymm2, ymm2, ymm1",
            "vpaddd ymm8, ymm8, ymm3",
            "vpaddd ymm9, ymm9, ymm2",
            "vpbroadcastd ymm2, dword ptr [{a3} + 8]",
            "vpmaddwd ymm3, ymm2, ymm0",
            "vpmaddwd ymm2, ymm2, ymm1",
            "vpaddd ymm10, ymm10, ymm3",
            "vpaddd ymm11, ymm11, ymm2",
            "vpbroadcastd ymm2, dword ptr [{a3} + {s} + 8]",
            "vpmaddwd ymm3, ymm2, ymm0",
            "vpmaddwd ymm2, ymm2, ymm1",
            "vpaddd ymm12, ymm12, ymm3",
            "vpaddd ymm13, ymm13, ymm2",
            "vpbroadcastd ymm2, dword ptr [{a3} + {s}*2 + 8]",
            "vpmaddwd ymm3, ymm2, ymm0",
            "vpmaddwd ymm2, ymm2, ymm1",
            "vpaddd ymm14, ymm14, ymm3",
            "vpaddd ymm15, ymm15, ymm2",
            "vmovdqu ymm0, ymmword ptr [{b} + 192]",
            "vmovdqu ymm1, ymmword ptr [{b} + 224]",
            "vpbroadcastd ymm2, dword ptr [{a} + 12]",
            "vpmaddwd ymm3, ymm2, ymm0",
            "vpmaddwd ymm2, ymm2, ymm1",
            "vpaddd ymm4, ymm4, ymm3",
            "vpaddd ymm5, ymm5, ymm2",
            "vpbroadcastd ymm2, dword ptr [{a} + {s} + 12]",
            "vpmaddwd ymm3, ymm2, ymm0",
            "vpmaddwd ymm2, ymm2, ymm1",
            "vpaddd ymm6, ymm6, ymm3",
            "vpaddd ymm7, ymm7, ymm2",
            "vpbroadcastd ymm2, dword ptr [{a} + {s}*2 + 12]",
            "vpmaddwd ymm3, ymm2, ymm0",
            "vpmaddwd ymm2, ymm2, ymm1",
            "vpaddd ymm8, ymm8, ymm3",
            "vpaddd ymm9, ymm9, ymm2",
            "vpbroadcastd ymm2, dword ptr [{a3} + 12]",
            "vpmaddwd ymm3, ymm2, ymm0",
            "vpmaddwd ymm2, ymm2, ymm1",
            "vpaddd ymm10, ymm10, ymm3",
            "vpaddd ymm11, ymm11, ymm2",
            "vpbroadcastd ymm2, dword ptr [{a3} + {s} + 12]",
            "vpmaddwd ymm3, ymm2, ymm0",
            "vpmaddwd ymm2, ymm2, ymm1",
            "vpaddd ymm12, ymm12, ymm3",
            "vpaddd ymm13, ymm13, ymm2",
            "vpbroadcastd ymm2, dword ptr [{a3} + {s}*2 + 12]",
            "vpmaddwd ymm3, ymm2, ymm0",
            "vpmaddwd ymm2, ymm2, ymm1",
            "vpaddd ymm14, ymm14, ymm3",
            "vpaddd ymm15, ymm15, ymm2",
            "add {a}, 16",
            "add {a3}, 16",
            "add {b}, 256",
            "sub {n}, 4",
            "cmp {n}, 4",
            "jae 2b",
            "3:",
            "test {n}, {n}",
            "jz 5f",
            "4:",
            "vmovdqu ymm0, ymmword ptr [{b} + 0]",
            "vmovdqu ymm1, ymmword ptr [{b} + 32]",
            "vpbroadcastd ymm2, dword ptr [{a} + 0]",
            "vpmaddwd ymm3, ymm2, ymm0",
            "vpmaddwd ymm2, ymm2, ymm1",
            "vpaddd ymm4, ymm4, ymm3",
            "vpaddd ymm5, ymm5, ymm2",
            "vpbroadcastd ymm2, dword ptr [{a} + {s} + 0]",
            "vpmaddwd ymm3, ymm2, ymm0",
            "vpmaddwd ymm2, ymm2, ymm1",
            "vpaddd ymm6, ymm6, ymm3",
            "vpaddd ymm7, ymm7, ymm2",
            "vpbroadcastd ymm2, dword ptr [{a} + {s}*2 + 0]",
            "vpmaddwd ymm3, ymm2, ymm0",
            "vpmaddwd ymm2, ymm2, ymm1",
            "vpaddd ymm8, ymm8, ymm3",
            "vpaddd ymm9, ymm9, ymm2",
            "vpbroadcastd ymm2, dword ptr [{a3} + 0]",
            "vpmaddwd ymm3, ymm2, ymm0",
            "vpmaddwd ymm2, ymm2, ymm1",
            "vpaddd ymm10, ymm10, ymm3",
            "vpaddd ymm11, ymm11, ymm2",
            "vpbroadcastd ymm2, dword ptr [{a3} + {s} + 0]",
            "vpmaddwd ymm3, ymm2, ymm0",
            "vpmaddwd ymm2, ymm2, ymm1",
            "vpaddd ymm12, ymm12, ymm3",
            "vpaddd ymm13, ymm13, ymm2",
            "vpbroadcastd ymm2, dword ptr [{a3} + {s}*2 + 0]",
            "vpmaddwd ymm3, ymm2, ymm0",
            "vpmaddwd ymm2, ymm2, ymm1",
            "vpaddd ymm14, ymm14, ymm3",
            "vpaddd ymm15, ymm15, ymm2",
            "add {a}, 4",
            "add {a3}, 4",
            "add {b}, 64",
            "dec {n}",
            "jnz 4b",
            "5:",
            a = inout(reg) a => _,
            a3 = inout(reg) a.add(3 * a_stride) => _,
            s = in(reg) a_stride * 2,
            b = inout(reg) b => _,
            n = inout(reg) kp => _,
            out("ymm0") _,
            out("ymm1") _,
            out("ymm2") _,
            out("ymm3") _,
            inout("ymm4") c00,
            inout("ymm5") c01,
            inout("ymm6") c10,
            inout("ymm7") c11,
            inout("ymm8") c20,
            inout("ymm9") c21,
            inout("ymm10") c30,
            inout("ymm11") c31,
            inout("ymm12") c40,
            inout("ymm13") c41,
            inout("ymm14") c50,
            inout("ymm15") c51,
            options(nostack, readonly),
        );
        _mm256_storeu_si256(t, c00);
        _mm256_storeu_si256(t.add(1), c01);
        _mm256_storeu_si256(t.add(2), c10);
        _mm256_storeu_si256(t.add(3), c11);
        _mm256_storeu_si256(t.add(4), c20);
        _mm256_storeu_si256(t.add(5), c21);
        _mm256_storeu_si256(t.add(6), c30);
        _mm256_storeu_si256(t.add(7), c31);
        _mm256_storeu_si256(t.add(8), c40);
        _mm256_storeu_si256(t.add(9), c41);
        _mm256_storeu_si256(t.add(10), c50);
        _mm256_storeu_si256(t.add(11), c51);
    }
}
