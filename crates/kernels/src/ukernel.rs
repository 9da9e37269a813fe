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
//! Why this family stays for general signed operands rather than `vpmaddubsw` (32 MACs per
//! instruction): that multiplies u8 by s8 and saturates the i16 pair sums, so full-range
//! s8 x s8 needs a sign transfer per product, and exact sums need the pairs widened to i32 by a
//! `vpmaddwd` by ones. Where B is non-negative (post-ReLU activations) no sign transfer is
//! needed, and [`Isa::Avx2Quad`] runs those products on the k-quad panels of [`crate::quad`].
//! On AMD family 23 (Zen 1/2) the widening trio issues at half `vpmaddubsw`'s rate, no more
//! MACs per cycle than `vpmaddwd + vpaddd`, so there [`Isa::detect`] keeps this family; for
//! signed B, moving the sign with `vpsignb` costs the trio as much as it gains (`lowprec bench
//! peak` measures each form; the README gives the figures per processor).

/// Rows of the C tile (A broadcasts per k-pair).
pub const MR: usize = 6;
/// Columns of the C tile (two 8-lane i32 vectors).
pub const NR: usize = 16;
/// i32 elements in one tile, row-major with leading dimension `NR`.
pub const TILE: usize = MR * NR;

/// Which microkernels run: an instruction set and, with it, a kernel family (the k-pair i16
/// panels of this module, or the k-quad byte panels of [`crate::quad`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// Portable scalar Rust on k-pair panels (the compiler may vectorise it for the baseline
    /// target).
    Generic,
    /// AVX2 `vpmaddwd` 6x16 kernel on k-pair panels, when the CPU has AVX2 and FMA.
    Avx2,
    /// AVX2 `vpmaddubsw` 8x32 kernel on k-quad panels for 8-bit products whose B is
    /// non-negative (post-ReLU activations) and small enough that no i16 pair sum saturates
    /// (`2 * max|a| * max|b| <= 32767`): B is packed unbiased as u8. Every other product runs
    /// the `Avx2` k-pair family. Same CPU requirements as `Avx2`.
    Avx2Quad,
    /// Portable Rust version of the k-quad family (8x32 tiles, biased byte panels): the packing
    /// and driver of `Avx512Vnni` with a scalar microkernel, so that they are tested bit for
    /// bit on every CPU.
    GenericQuad,
    /// AVX-512 VNNI `vpdpbusd` 8x32 kernel on k-quad panels (8-bit mantissas; 16-bit ones run
    /// the AVX2 kernel), when the CPU has AVX-512 F, BW, VL and VNNI besides AVX2 and FMA.
    Avx512Vnni,
}

impl Isa {
    /// The best kernel family this CPU supports under the `LOWPREC_ISA` cap
    /// ([`lowprec_formats::isa`]).
    pub fn detect() -> Self {
        use lowprec_formats::isa::{allows, IsaLevel};
        let cpu = Isa::cpu_best();
        match cpu {
            Isa::Avx512Vnni if allows(IsaLevel::Avx512) => Isa::Avx512Vnni,
            Isa::Avx512Vnni | Isa::Avx2 if allows(IsaLevel::Avx2) => {
                if maddubs_pays() {
                    Isa::Avx2Quad
                } else {
                    Isa::Avx2
                }
            }
            _ => Isa::Generic,
        }
    }

    /// The best kernel family this CPU supports, ignoring the cap (what tests compare).
    pub fn cpu_best() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx2") && has!("fma") {
                if has!("avx512f") && has!("avx512bw") && has!("avx512vl") && has!("avx512vnni") {
                    return Isa::Avx512Vnni;
                }
                return Isa::Avx2;
            }
        }
        Isa::Generic
    }

    /// `self` if this CPU can run it, otherwise the best family below it that it can
    /// (`Avx512Vnni` -> `Avx2` -> `Generic`).
    pub fn or_supported(self) -> Self {
        let best = Isa::cpu_best();
        match self {
            Isa::Generic | Isa::GenericQuad => self,
            Isa::Avx2 | Isa::Avx2Quad if best.has_avx2() => self,
            Isa::Avx512Vnni if best == Isa::Avx512Vnni => Isa::Avx512Vnni,
            Isa::Avx512Vnni if best.has_avx2() => Isa::Avx2,
            _ => Isa::Generic,
        }
    }

    /// Whether code compiled for AVX2 + FMA may run under this family.
    pub fn has_avx2(self) -> bool {
        matches!(self, Isa::Avx2 | Isa::Avx2Quad | Isa::Avx512Vnni)
    }

    /// Whether 8-bit GEMMs run on the k-quad family (`Avx2Quad`: only those whose B qualifies,
    /// see [`Isa::quads_take`]).
    pub fn uses_quads(self) -> bool {
        matches!(self, Isa::GenericQuad | Isa::Avx2Quad | Isa::Avx512Vnni)
    }

    /// Whether B is packed as is (u8, non-negative) rather than biased by 128.
    pub fn unbiased_b(self) -> bool {
        self == Isa::Avx2Quad
    }

    /// Whether an 8-bit product with these bounds runs on the k-quad family: always where the
    /// family multiplies biased B exactly; for `Avx2Quad` only when no `vpmaddubsw` pair sum
    /// can saturate and B is non-negative (`b_non_negative` scans it, only then).
    pub fn quads_take(
        self,
        a_max_abs: u32,
        b_max_abs: u32,
        b_non_negative: impl FnOnce() -> bool,
    ) -> bool {
        match self {
            Isa::Avx2Quad => {
                2 * a_max_abs as u64 * b_max_abs as u64 <= i16::MAX as u64 && b_non_negative()
            }
            _ => self.uses_quads(),
        }
    }

    /// The k-pair kernels this family uses for what it does not run on quads (16-bit
    /// mantissas, exact i32 products): `Avx2` or `Generic`.
    /// Assumes `self` is supported (see [`Isa::or_supported`]).
    pub fn pair_isa(self) -> Self {
        if self.has_avx2() {
            Isa::Avx2
        } else {
            Isa::Generic
        }
    }
}

/// Whether the `vpmaddubsw + vpmaddwd + vpaddd` route beats `vpmaddwd + vpaddd` on this CPU:
/// everywhere but AMD family 23 (Zen 1/2), where the trio issues at half the rate of one
/// `vpmaddubsw` and gives the same MACs per cycle as `vpmaddwd` (see the module docs).
fn maddubs_pays() -> bool {
    // CPUID can trap to the hypervisor in a VM: asked once.
    static PAYS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PAYS.get_or_init(maddubs_pays_cpuid)
}

fn maddubs_pays_cpuid() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // CPUID leaves 0 and 1 exist on every x86-64 CPU.
        let (v, f) = (std::arch::x86_64::__cpuid(0), std::arch::x86_64::__cpuid(1));
        let amd = (v.ebx, v.edx, v.ecx) == (0x6874_7541, 0x6974_6e65, 0x444d_4163);
        let base = (f.eax >> 8) & 0xf;
        let family = if base == 0xf {
            base + ((f.eax >> 20) & 0xff)
        } else {
            base
        };
        !(amd && family == 0x17)
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
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
    match isa.pair_isa() {
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

/// How [`run_q`] writes C.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    /// `C = C + t`.
    Accumulate,
    /// `C = 0.0 + t` (the semantics start from 0.0, which turns a -0.0 product into +0.0).
    Overwrite,
}

/// The portable epilogue of a whole `mr x nr` tile (row-major i32): `C[r, c] = (C or 0.0) +
/// ((tile[r, c] as f32) * sa[r]) * sb[c]`, shared by both families' portable kernels.
///
/// # Safety
/// `c` must address an `mr x nr` block with leading dimension `ldc`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn store_tile(
    tile: &[i32],
    mr: usize,
    nr: usize,
    c: *mut f32,
    ldc: usize,
    sa: &[f32],
    sb: &[f32],
    mode: Store,
) {
    for r in 0..mr {
        for cc in 0..nr {
            let t = ((tile[r * nr + cc] as f32) * sa[r]) * sb[cc];
            let v = c.add(r * ldc + cc);
            // `0.0 + t` (not `t`) when overwriting: the semantics start from 0.0, which turns
            // a -0.0 product into +0.0. Overwritten slots are never read: they may be
            // uninitialised.
            if mode == Store::Accumulate {
                *v += t;
            } else {
                v.write(0.0 + t);
            }
        }
    }
}

/// One whole chunk for the first `rows` rows of a tile (`1..=MR`), fused with its epilogue:
/// `C[r, c] = (C or 0.0) + ((acc[r, c] as f32) * sa[r]) * sb[c]` with
/// `acc = sum_{p < kp} A~[p] (x) B~[p]`. Skips the i32 tile round trip, which matters when
/// chunks are short (small K or short segments).
///
/// # Safety
/// As [`run`] for the panels; `c` must address a `rows x NR` block with leading dimension `ldc`.
#[inline]
#[allow(clippy::too_many_arguments)]
pub unsafe fn run_q(
    isa: Isa,
    kp: usize,
    a: *const i16,
    a_stride: usize,
    b: *const i16,
    c: *mut f32,
    ldc: usize,
    sa: &[f32; MR],
    sb: &[f32; NR],
    mode: Store,
    rows: usize,
) {
    let rows = rows.min(MR);
    match isa.pair_isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => avx2::kernel_q(kp, a, a_stride, b, c, ldc, sa, sb, mode, rows),
        _ => {
            let mut tile = [0i32; TILE];
            generic(kp, a, a_stride, b, &mut tile, true);
            store_tile(&tile, rows, NR, c, ldc, sa, sb, mode);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Store, MR, NR, TILE};
    use std::arch::x86_64::*;

    /// Runs `kp` k-pairs of the 6x16 tile on the accumulators `acc` (row `r`, half `h` at
    /// `acc[2 * r + h]`): 2 B loads + 6 broadcasts + 12 `vpmaddwd` + 12 `vpaddd` per pair
    /// (`MR = 6`, `NR = 16` are baked into the offsets below).
    ///
    /// # Safety
    /// AVX2 must be present; `a` must address 6 rows `a_stride` i16 apart of at least `2 * kp`
    /// readable i16 each, and `b` `kp * 2 * NR` readable i16.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn accumulate(
        kp: usize,
        a: *const i16,
        a_stride: usize,
        b: *const i16,
        acc: [__m256i; 12],
    ) -> [__m256i; 12] {
        let [mut c00, mut c01, mut c10, mut c11, mut c20, mut c21, mut c30, mut c31, mut c40, mut c41, mut c50, mut c51] =
            acc;
        // The k loop is written in assembly: with intrinsics, LLVM re-associates the i32 adds
        // of the unrolled steps (legal for integers) and spills accumulators to the stack.
        // 12 accumulators (ymm4..15) + 2 B vectors + broadcast + product use all 16 registers.
        // Both multiplies of a row go before their adds: on Zen 3 the adds compete with
        // `vpmaddwd` for the vector pipes.
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
        [c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51]
    }

    /// The first 4 rows of [`accumulate`] from zero: `kp` k-pairs of rows 0..4 of the A strip
    /// against the B panel, one pair per iteration (2 B loads + 4 broadcasts + 8 `vpmaddwd` +
    /// 8 `vpaddd`).
    ///
    /// # Safety
    /// As [`accumulate`], for the first 4 rows of A only.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn accumulate4(
        kp: usize,
        a: *const i16,
        a_stride: usize,
        b: *const i16,
    ) -> [__m256i; 8] {
        let z = _mm256_setzero_si256();
        let [mut c00, mut c01, mut c10, mut c11, mut c20, mut c21, mut c30, mut c31] = [z; 8];
        if kp > 0 {
            std::arch::asm!(
                "2:",
                "vmovdqu ymm0, ymmword ptr [{b}]",
                "vmovdqu ymm1, ymmword ptr [{b} + 32]",
                "vpbroadcastd ymm2, dword ptr [{a}]",
                "vpmaddwd ymm3, ymm2, ymm0",
                "vpmaddwd ymm2, ymm2, ymm1",
                "vpaddd {c00}, {c00}, ymm3",
                "vpaddd {c01}, {c01}, ymm2",
                "vpbroadcastd ymm2, dword ptr [{a} + {s}]",
                "vpmaddwd ymm3, ymm2, ymm0",
                "vpmaddwd ymm2, ymm2, ymm1",
                "vpaddd {c10}, {c10}, ymm3",
                "vpaddd {c11}, {c11}, ymm2",
                "vpbroadcastd ymm2, dword ptr [{a} + {s}*2]",
                "vpmaddwd ymm3, ymm2, ymm0",
                "vpmaddwd ymm2, ymm2, ymm1",
                "vpaddd {c20}, {c20}, ymm3",
                "vpaddd {c21}, {c21}, ymm2",
                "vpbroadcastd ymm2, dword ptr [{a3}]",
                "vpmaddwd ymm3, ymm2, ymm0",
                "vpmaddwd ymm2, ymm2, ymm1",
                "vpaddd {c30}, {c30}, ymm3",
                "vpaddd {c31}, {c31}, ymm2",
                "add {a}, 4",
                "add {a3}, 4",
                "add {b}, 64",
                "dec {n}",
                "jnz 2b",
                a = inout(reg) a => _,
                a3 = inout(reg) a.add(3 * a_stride) => _,
                s = in(reg) a_stride * 2,
                b = inout(reg) b => _,
                n = inout(reg) kp => _,
                out("ymm0") _,
                out("ymm1") _,
                out("ymm2") _,
                out("ymm3") _,
                c00 = inout(ymm_reg) c00,
                c01 = inout(ymm_reg) c01,
                c10 = inout(ymm_reg) c10,
                c11 = inout(ymm_reg) c11,
                c20 = inout(ymm_reg) c20,
                c21 = inout(ymm_reg) c21,
                c30 = inout(ymm_reg) c30,
                c31 = inout(ymm_reg) c31,
                options(nostack, readonly),
            );
        }
        [c00, c01, c10, c11, c20, c21, c30, c31]
    }

    /// The tile kernel of [`super::run`].
    ///
    /// # Safety
    /// As [`accumulate`] for the panels.
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
        let mut acc = [_mm256_setzero_si256(); 12];
        if !first {
            for (i, v) in acc.iter_mut().enumerate() {
                *v = _mm256_loadu_si256(t.add(i));
            }
        }
        let acc = accumulate(kp, a, a_stride, b, acc);
        for (i, v) in acc.iter().enumerate() {
            _mm256_storeu_si256(t.add(i), *v);
        }
    }

    /// A whole chunk straight into the first `rows <= MR` rows of C (see [`super::run_q`]).
    ///
    /// # Safety
    /// As [`accumulate`] for the panels; `c` must address `rows` rows of `NR` writable floats,
    /// `ldc` apart, that nothing else accesses during the call.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn kernel_q(
        kp: usize,
        a: *const i16,
        a_stride: usize,
        b: *const i16,
        c: *mut f32,
        ldc: usize,
        sa: &[f32; MR],
        sb: &[f32; NR],
        mode: Store,
        rows: usize,
    ) {
        let acc = if rows <= 4 {
            // A last strip of at most 4 rows: the rows past them are zero pads, and 4 rows
            // take two thirds of the multiplies of 6.
            let a4 = accumulate4(kp, a, a_stride, b);
            let mut acc = [_mm256_setzero_si256(); 12];
            acc[..8].copy_from_slice(&a4);
            acc
        } else {
            accumulate(kp, a, a_stride, b, [_mm256_setzero_si256(); 12])
        };
        let sb0 = _mm256_loadu_ps(sb.as_ptr());
        let sb1 = _mm256_loadu_ps(sb.as_ptr().add(8));
        let zero = _mm256_setzero_ps();
        for r in 0..rows.min(MR) {
            let s = _mm256_set1_ps(sa[r]);
            let row = c.add(r * ldc);
            let t0 = _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(acc[2 * r]), s), sb0);
            let t1 = _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(acc[2 * r + 1]), s), sb1);
            match mode {
                Store::Accumulate => {
                    _mm256_storeu_ps(row, _mm256_add_ps(_mm256_loadu_ps(row), t0));
                    _mm256_storeu_ps(row.add(8), _mm256_add_ps(_mm256_loadu_ps(row.add(8)), t1));
                }
                Store::Overwrite => {
                    _mm256_storeu_ps(row, _mm256_add_ps(zero, t0));
                    _mm256_storeu_ps(row.add(8), _mm256_add_ps(zero, t1));
                }
            }
        }
    }
}
