//! Run kernels: quantise one contiguous run of elements that share a scale.
//!
//! [`quantize_run`] picks the widest kernel the CPU runs (AVX-512, AVX2, else portable) at run
//! time; all are tested bit for bit against [`crate::scalar::quantize_scalar_ref`] (see
//! [`RunKernel`]). The portable one follows [`crate::scalar::round_scaled_f32`]; the SIMD ones
//! do too, but for stochastic rounding, which they do in integers (`avx2::stochastic_vec`).

use crate::format::Rounding;
use crate::rng::{hash_lo, StreamKey};
use crate::scalar::{round_scaled_f32, ScaledInt};

/// Where a run's results go.
pub enum OutRun<'a> {
    /// Mantissas as i8 (wl <= 8).
    I8(&'a mut [i8]),
    /// Mantissas as i16 (wl <= 16).
    I16(&'a mut [i16]),
    /// Mantissas as i32 (fixed point up to 24 bits).
    I32(&'a mut [i32]),
    /// Dequantised values `q * 2^-k` ("fake quantisation").
    F32(&'a mut [f32]),
}

impl OutRun<'_> {
    pub fn len(&self) -> usize {
        match self {
            OutRun::I8(o) => o.len(),
            OutRun::I16(o) => o.len(),
            OutRun::I32(o) => o.len(),
            OutRun::F32(o) => o.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Element types a run can be quantised into.
pub trait RunSink: Sized + Send {
    fn wrap(s: &mut [Self]) -> OutRun<'_>;
}
impl RunSink for i8 {
    fn wrap(s: &mut [i8]) -> OutRun<'_> {
        OutRun::I8(s)
    }
}
impl RunSink for i16 {
    fn wrap(s: &mut [i16]) -> OutRun<'_> {
        OutRun::I16(s)
    }
}
impl RunSink for i32 {
    fn wrap(s: &mut [i32]) -> OutRun<'_> {
        OutRun::I32(s)
    }
}
impl RunSink for f32 {
    fn wrap(s: &mut [f32]) -> OutRun<'_> {
        OutRun::F32(s)
    }
}

/// The implementations of [`quantize_run`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunKernel {
    /// Element by element, portable.
    Generic,
    /// 8 lanes (AVX2 + FMA).
    Avx2,
    /// 16 lanes (AVX-512 F): twice the AVX2 kernel's elements per instruction, which is what
    /// stochastic rounding (two hash rounds per element) is bound by.
    Avx512,
}

impl RunKernel {
    /// The kernels this CPU can run, portable first.
    pub fn available() -> Vec<RunKernel> {
        let mut v = vec![RunKernel::Generic];
        if has_avx2() {
            v.push(RunKernel::Avx2);
        }
        if has_avx512() {
            v.push(RunKernel::Avx512);
        }
        v
    }
    /// The kernel [`quantize_run`] uses on this CPU.
    pub fn best() -> RunKernel {
        use crate::isa::{allows, IsaLevel};
        if has_avx512() && allows(IsaLevel::Avx512) {
            RunKernel::Avx512
        } else if has_avx2() && allows(IsaLevel::Avx2) {
            RunKernel::Avx2
        } else {
            RunKernel::Generic
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            RunKernel::Generic => "generic",
            RunKernel::Avx2 => "avx2",
            RunKernel::Avx512 => "avx512",
        }
    }
}

/// Which implementation [`quantize_run`] uses on this CPU.
pub fn kernel_name() -> &'static str {
    RunKernel::best().name()
}

#[inline]
fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[inline]
fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        has_avx2() && std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Quantises `x` (elements `base..base + x.len()` of a tensor) into `out` under `p`.
/// `key` is required for stochastic rounding.
pub fn quantize_run(x: &[f32], out: OutRun<'_>, p: &ScaledInt, key: StreamKey, base: u64) {
    let done = quantize_run_with(RunKernel::best(), x, out, p, key, base);
    debug_assert!(done.is_some(), "the best kernel is always available");
}

/// [`quantize_run`] on a chosen kernel (tests compare them); `None` when the CPU cannot run it.
pub fn quantize_run_with(
    kernel: RunKernel,
    x: &[f32],
    out: OutRun<'_>,
    p: &ScaledInt,
    key: StreamKey,
    base: u64,
) -> Option<()> {
    assert_eq!(x.len(), out.len(), "run output length");
    type Simd = unsafe fn(&[f32], OutRun<'_>, &ScaledInt, StreamKey, u64);
    let simd: Simd = match kernel {
        RunKernel::Generic => {
            quantize_run_generic(x, out, p, key, base);
            return Some(());
        }
        #[cfg(target_arch = "x86_64")]
        RunKernel::Avx2 if has_avx2() => avx2::quantize_run_avx2,
        #[cfg(target_arch = "x86_64")]
        RunKernel::Avx512 if has_avx512() => avx512::quantize_run_avx512,
        _ => return None,
    };
    // The SIMD kernels keep the high word of the element index constant inside a call (one
    // pair of round keys): the run is cut where it changes.
    let (mut x, mut out, mut base) = (x, out, base);
    loop {
        let to_wrap = ((((base >> 32) + 1) << 32) - base) as usize;
        if to_wrap >= x.len() {
            // SAFETY: the kernel's instruction set was checked above.
            unsafe { simd(x, out, p, key, base) };
            return Some(());
        }
        let (xa, xb) = x.split_at(to_wrap);
        let (oa, ob) = split_out(out, to_wrap);
        // SAFETY: as above.
        unsafe { simd(xa, oa, p, key, base) };
        (x, out, base) = (xb, ob, base + to_wrap as u64);
    }
}

/// The portable kernel (element by element, the f32 formulation).
pub fn quantize_run_generic(
    x: &[f32],
    mut out: OutRun<'_>,
    p: &ScaledInt,
    key: StreamKey,
    base: u64,
) {
    let f = p.factors();
    let ulp = p.ulp();
    let sr = p.rounding == Rounding::Stochastic;
    let mut keys = key.round_keys((base >> 32) as u32);
    let mut cur_hi = base >> 32;
    for (i, &v) in x.iter().enumerate() {
        let idx = base + i as u64;
        let r = if sr {
            if idx >> 32 != cur_hi {
                cur_hi = idx >> 32;
                keys = key.round_keys(cur_hi as u32);
            }
            hash_lo(keys.0, keys.1, idx as u32) >> 8
        } else {
            0
        };
        let q = round_scaled_f32(v, p, f, r);
        match &mut out {
            OutRun::I8(o) => o[i] = q as i8,
            OutRun::I16(o) => o[i] = q as i16,
            OutRun::I32(o) => o[i] = q as i32,
            OutRun::F32(o) => o[i] = q * ulp,
        }
    }
}

/// Largest `|x|` as raw bits (`0x7f80_0000` and above means Inf or NaN is present).
pub fn max_abs_bits(x: &[f32]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2 checked above.
        return unsafe { avx2::max_abs_bits_avx2(x) };
    }
    max_abs_bits_generic(x)
}

pub fn max_abs_bits_generic(x: &[f32]) -> u32 {
    x.iter()
        .map(|v| v.to_bits() & 0x7fff_ffff)
        .max()
        .unwrap_or(0)
}

/// The generator's hash ([`crate::rng::hash_lo`]) on AVX2 and AVX-512 vectors, for stochastic
/// rounding: `U` vectors at a time, each step applied to all of them before the next, so that
/// their latency chains (four multiplies each) overlap instead of filling the scheduler one
/// vector at a time.
#[cfg(target_arch = "x86_64")]
mod hash {
    use std::arch::x86_64::*;

    /// The lane operations the hash needs. Implementations are `#[inline(always)]` wrappers of
    /// single intrinsics, to be inlined into a caller compiled with the matching features.
    pub(super) trait Lanes: Copy {
        /// Elements per vector.
        const N: u32;
        /// # Safety
        /// The CPU must have the vector's instruction set (as for every method here).
        unsafe fn splat(v: u32) -> Self;
        /// `lo, lo + 1, ..., lo + N - 1`.
        unsafe fn iota(lo: u32) -> Self;
        unsafe fn xor(self, o: Self) -> Self;
        unsafe fn add(self, o: Self) -> Self;
        unsafe fn mullo(self, o: Self) -> Self;
        /// Logical right shifts by the hash's three distances.
        unsafe fn shr8(self) -> Self;
        unsafe fn shr13(self) -> Self;
        unsafe fn shr16(self) -> Self;
    }

    impl Lanes for __m256i {
        const N: u32 = 8;
        #[inline(always)]
        unsafe fn splat(v: u32) -> Self {
            _mm256_set1_epi32(v as i32)
        }
        #[inline(always)]
        unsafe fn iota(lo: u32) -> Self {
            _mm256_add_epi32(
                _mm256_set1_epi32(lo as i32),
                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
            )
        }
        #[inline(always)]
        unsafe fn xor(self, o: Self) -> Self {
            _mm256_xor_si256(self, o)
        }
        #[inline(always)]
        unsafe fn add(self, o: Self) -> Self {
            _mm256_add_epi32(self, o)
        }
        #[inline(always)]
        unsafe fn mullo(self, o: Self) -> Self {
            _mm256_mullo_epi32(self, o)
        }
        #[inline(always)]
        unsafe fn shr8(self) -> Self {
            _mm256_srli_epi32::<8>(self)
        }
        #[inline(always)]
        unsafe fn shr13(self) -> Self {
            _mm256_srli_epi32::<13>(self)
        }
        #[inline(always)]
        unsafe fn shr16(self) -> Self {
            _mm256_srli_epi32::<16>(self)
        }
    }

    impl Lanes for __m512i {
        const N: u32 = 16;
        #[inline(always)]
        unsafe fn splat(v: u32) -> Self {
            _mm512_set1_epi32(v as i32)
        }
        #[inline(always)]
        unsafe fn iota(lo: u32) -> Self {
            _mm512_add_epi32(
                _mm512_set1_epi32(lo as i32),
                _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
            )
        }
        #[inline(always)]
        unsafe fn xor(self, o: Self) -> Self {
            _mm512_xor_si512(self, o)
        }
        #[inline(always)]
        unsafe fn add(self, o: Self) -> Self {
            _mm512_add_epi32(self, o)
        }
        #[inline(always)]
        unsafe fn mullo(self, o: Self) -> Self {
            _mm512_mullo_epi32(self, o)
        }
        #[inline(always)]
        unsafe fn shr8(self) -> Self {
            _mm512_srli_epi32::<8>(self)
        }
        #[inline(always)]
        unsafe fn shr13(self) -> Self {
            _mm512_srli_epi32::<13>(self)
        }
        #[inline(always)]
        unsafe fn shr16(self) -> Self {
            _mm512_srli_epi32::<16>(self)
        }
    }

    /// `rng::fmix32` on every lane of `U` vectors.
    #[inline(always)]
    unsafe fn fmix32<V: Lanes, const U: usize>(mut h: [V; U]) -> [V; U] {
        let (m1, m2) = (V::splat(0x85EB_CA6B), V::splat(0xC2B2_AE35));
        for v in h.iter_mut() {
            *v = v.xor(v.shr16());
        }
        for v in h.iter_mut() {
            *v = v.mullo(m1);
        }
        for v in h.iter_mut() {
            *v = v.xor(v.shr13());
        }
        for v in h.iter_mut() {
            *v = v.mullo(m2);
        }
        for v in h.iter_mut() {
            *v = v.xor(v.shr16());
        }
        h
    }

    /// The 24 random bits (`hash_lo(k1, k2, i) >> 8`) of elements `lo .. lo + U * N` (low words
    /// of the indices), vector by vector.
    ///
    /// # Safety
    /// The CPU must have `V`'s instruction set.
    #[inline(always)]
    pub(super) unsafe fn bits<V: Lanes, const U: usize>(lo: u32, k1: u32, k2: u32) -> [V; U] {
        let (vk1, vk2) = (V::splat(k1), V::splat(k2));
        let mut h = [V::splat(0); U];
        for (v, hv) in h.iter_mut().enumerate() {
            *hv = V::iota(lo.wrapping_add(V::N * v as u32)).xor(vk1);
        }
        let mut h = fmix32(h);
        for hv in h.iter_mut() {
            *hv = hv.add(vk2);
        }
        let mut h = fmix32(h);
        for hv in h.iter_mut() {
            *hv = hv.shr8();
        }
        h
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn max_abs_bits_avx2(x: &[f32]) -> u32 {
        let mask = _mm256_set1_epi32(0x7fff_ffff);
        let mut m0 = _mm256_setzero_si256();
        let mut m1 = _mm256_setzero_si256();
        let chunks = x.len() / 16;
        let p = x.as_ptr();
        for c in 0..chunks {
            let a = _mm256_loadu_si256(p.add(c * 16) as *const __m256i);
            let b = _mm256_loadu_si256(p.add(c * 16 + 8) as *const __m256i);
            m0 = _mm256_max_epu32(m0, _mm256_and_si256(a, mask));
            m1 = _mm256_max_epu32(m1, _mm256_and_si256(b, mask));
        }
        let m = _mm256_max_epu32(m0, m1);
        let mut lanes = [0u32; 8];
        _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, m);
        let mut best = lanes.into_iter().max().unwrap_or(0);
        for v in &x[chunks * 16..] {
            best = best.max(v.to_bits() & 0x7fff_ffff);
        }
        best
    }

    /// # Safety
    /// AVX2 and FMA must be present; the element indices `base .. base + x.len()` must share
    /// their high 32 bits (`quantize_run_with` cuts runs there).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn quantize_run_avx2(
        x: &[f32],
        mut out: OutRun<'_>,
        p: &ScaledInt,
        key: StreamKey,
        base: u64,
    ) {
        let n = x.len();
        debug_assert!(base >> 32 == (base + n.saturating_sub(1) as u64) >> 32);
        let chunks = n / 8;
        // One loop per (rounding, output) pair: no branch on either inside it.
        let (optr, o) = match &mut out {
            OutRun::I8(o) => (o.as_mut_ptr() as *mut u8, OUT_I8),
            OutRun::I16(o) => (o.as_mut_ptr() as *mut u8, OUT_I16),
            OutRun::I32(o) => (o.as_mut_ptr() as *mut u8, OUT_I32),
            OutRun::F32(o) => (o.as_mut_ptr() as *mut u8, OUT_F32),
        };
        macro_rules! go {
            ($m:expr) => {
                match o {
                    OUT_I8 => chunks_avx2::<{ $m }, OUT_I8>(x, optr, chunks, p, key, base),
                    OUT_I16 => chunks_avx2::<{ $m }, OUT_I16>(x, optr, chunks, p, key, base),
                    OUT_I32 => chunks_avx2::<{ $m }, OUT_I32>(x, optr, chunks, p, key, base),
                    _ => chunks_avx2::<{ $m }, OUT_F32>(x, optr, chunks, p, key, base),
                }
            };
        }
        match p.rounding {
            Rounding::NearestEven => go!(RND_EVEN),
            Rounding::TowardZero => go!(RND_ZERO),
            Rounding::NearestAway => go!(RND_AWAY),
            Rounding::Stochastic => go!(RND_STOCH),
        }
        let done = chunks * 8;
        if done < n {
            let (_, tail) = split_out(out, done);
            quantize_run_generic(&x[done..], tail, p, key, base + done as u64);
        }
    }

    const RND_EVEN: u8 = 0;
    const RND_ZERO: u8 = 1;
    const RND_AWAY: u8 = 2;
    const RND_STOCH: u8 = 3;
    const OUT_I8: u8 = 0;
    const OUT_I16: u8 = 1;
    const OUT_I32: u8 = 2;
    const OUT_F32: u8 = 3;

    /// Broadcast constants of one run.
    struct Consts {
        f0: __m256,
        f1: __m256,
        lo: __m256,
        hi: __m256,
        ulp: __m256,
        absmask: __m256,
        signmask: __m256,
        one: __m256,
        half: __m256,
        two24: __m256,
    }

    /// One vector `xv`: its rounded, clamped mantissas (`r`: its random bits when stochastic).
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA (the caller is compiled with them).
    #[inline(always)]
    unsafe fn round_vec<const M: u8>(k: &Consts, xv: __m256, r: __m256i) -> __m256i {
        let y = _mm256_mul_ps(_mm256_mul_ps(xv, k.f0), k.f1);
        if M == RND_STOCH {
            return stochastic_vec(k, xv, y, r);
        }
        let q = match M {
            RND_EVEN => _mm256_round_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC),
            RND_ZERO => _mm256_round_ps(y, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC),
            _ => {
                let a = _mm256_and_ps(y, k.absmask);
                let fa = _mm256_floor_ps(a);
                let fr = _mm256_sub_ps(a, fa);
                let sign = _mm256_and_ps(y, k.signmask);
                let bump = _mm256_cmp_ps(fr, k.half, _CMP_GE_OQ);
                let m = _mm256_add_ps(fa, _mm256_and_ps(bump, k.one));
                _mm256_or_ps(m, sign)
            }
        };
        _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(q, k.lo), k.hi))
    }

    /// Stochastic rounding of `y = x * 2^k` (`x` = `xv`) with draws `r`: `floor(y + r / 2^24)`
    /// in integers, as the reference states it. With `a = floor(y)` and `b = floor(y * 2^24) -
    /// a * 2^24` (the fraction's first 24 bits, in `[0, 2^24)`), it is `a + ((b + r) >> 24)`,
    /// exactly: `r` is an integer, so flooring the fraction before adding it loses nothing.
    /// `y` is clamped to `[lo, hi]` first, which changes no result (a value beyond a bound
    /// rounds onto or beyond it) and keeps `y * 2^24` and `a` exact in f32 and i32 (|lo|, |hi|
    /// <= 2^23). Fewer operations than `round_scaled_f32`'s form, and no blend.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA (the caller is compiled with them).
    #[inline(always)]
    unsafe fn stochastic_vec(k: &Consts, xv: __m256, y: __m256, r: __m256i) -> __m256i {
        let yc = _mm256_min_ps(_mm256_max_ps(y, k.lo), k.hi);
        let a = _mm256_floor_ps(yc);
        let z = _mm256_floor_ps(_mm256_mul_ps(yc, k.two24));
        // `z - a * 2^24` is an integer in [0, 2^24): the fused form is exact.
        let b = _mm256_fnmadd_ps(a, k.two24, z);
        let carry = _mm256_srli_epi32::<24>(_mm256_add_epi32(_mm256_cvttps_epi32(b), r));
        let q = _mm256_add_epi32(_mm256_cvtps_epi32(a), carry);
        // A negative `x` whose `y` underflowed to -0.0 lost its fraction; with a zero draw it
        // rounds to -1 (then clamped). Rare, so tested for first.
        let yi = _mm256_castps_si256(y);
        let neg_zero = _mm256_cmpeq_epi32(yi, _mm256_castps_si256(k.signmask));
        if _mm256_movemask_epi8(neg_zero) != 0 {
            let r_zero = _mm256_cmpeq_epi32(r, _mm256_setzero_si256());
            let x_nonzero =
                _mm256_castps_si256(_mm256_cmp_ps(xv, _mm256_setzero_ps(), _CMP_NEQ_OQ));
            let minus_one = _mm256_and_si256(_mm256_and_si256(neg_zero, r_zero), x_nonzero);
            return _mm256_max_epi32(_mm256_add_epi32(q, minus_one), _mm256_cvtps_epi32(k.lo));
        }
        q
    }

    /// Writes one vector's mantissas at element `off` of an output of kind `O`.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA; `optr` points to an output of kind `O` (elements of
    /// `i8`, `i16`, `i32` or `f32`) with at least `off + 8` elements.
    #[inline(always)]
    unsafe fn store_vec<const O: u8>(k: &Consts, optr: *mut u8, off: usize, v: __m256i) {
        match O {
            OUT_F32 => _mm256_storeu_ps(
                (optr as *mut f32).add(off),
                _mm256_mul_ps(_mm256_cvtepi32_ps(v), k.ulp),
            ),
            OUT_I32 => _mm256_storeu_si256((optr as *mut i32).add(off) as *mut __m256i, v),
            OUT_I16 => {
                let p16 = _mm256_packs_epi32(v, v);
                let p16 = _mm256_permute4x64_epi64(p16, 0b10_00);
                _mm_storeu_si128(
                    (optr as *mut i16).add(off) as *mut __m128i,
                    _mm256_castsi256_si128(p16),
                );
            }
            _ => {
                let p16 = _mm256_packs_epi32(v, v);
                let p8 = _mm256_packs_epi16(p16, p16);
                let lo = _mm256_castsi256_si128(p8);
                let hi = _mm256_extracti128_si256(p8, 1);
                let both = _mm_unpacklo_epi32(lo, hi);
                _mm_storel_epi64(optr.add(off) as *mut __m128i, both);
            }
        }
    }

    /// The first `chunks * 8` elements of [`quantize_run_avx2`] for rounding `M` into output
    /// kind `O`.
    ///
    /// # Safety
    /// As [`quantize_run_avx2`]; `optr` holds `chunks * 8` elements of the kind `O` names.
    #[inline(always)]
    unsafe fn chunks_avx2<const M: u8, const O: u8>(
        x: &[f32],
        optr: *mut u8,
        chunks: usize,
        p: &ScaledInt,
        key: StreamKey,
        base: u64,
    ) {
        let (f0, f1) = p.factors();
        let k = Consts {
            f0: _mm256_set1_ps(f0),
            f1: _mm256_set1_ps(f1),
            lo: _mm256_set1_ps(p.lo as f32),
            hi: _mm256_set1_ps(p.hi as f32),
            ulp: _mm256_set1_ps(p.ulp()),
            absmask: _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff)),
            signmask: _mm256_castsi256_ps(_mm256_set1_epi32(i32::MIN)),
            one: _mm256_set1_ps(1.0),
            half: _mm256_set1_ps(0.5),
            two24: _mm256_set1_ps(16_777_216.0),
        };
        let (k1, k2) = key.round_keys((base >> 32) as u32);
        let xp = x.as_ptr();
        let lo = |c: usize| (base as u32).wrapping_add((c * 8) as u32);
        let full = chunks / 4 * 4;
        let mut c = 0;
        while c < full {
            let rs = if M == RND_STOCH {
                hash::bits::<__m256i, 4>(lo(c), k1, k2)
            } else {
                [_mm256_setzero_si256(); 4]
            };
            let mut qs = [_mm256_setzero_si256(); 4];
            for (v, q) in qs.iter_mut().enumerate() {
                *q = round_vec::<M>(&k, _mm256_loadu_ps(xp.add((c + v) * 8)), rs[v]);
            }
            if O == OUT_I8 {
                // 32 mantissas in one store: two rounds of saturating packs (exact: every
                // value is within [lo, hi]) leave the 4-byte groups in the order
                // q0[0..4] q1[0..4] q2[0..4] q3[0..4] | q0[4..8] q1[4..8] ..., which one
                // permutation restores.
                let p01 = _mm256_packs_epi32(qs[0], qs[1]);
                let p23 = _mm256_packs_epi32(qs[2], qs[3]);
                let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
                _mm256_storeu_si256(
                    optr.add(c * 8) as *mut __m256i,
                    _mm256_permutevar8x32_epi32(_mm256_packs_epi16(p01, p23), order),
                );
            } else {
                for (v, &q) in qs.iter().enumerate() {
                    store_vec::<O>(&k, optr, (c + v) * 8, q);
                }
            }
            c += 4;
        }
        while c < chunks {
            let r = if M == RND_STOCH {
                hash::bits::<__m256i, 1>(lo(c), k1, k2)[0]
            } else {
                _mm256_setzero_si256()
            };
            store_vec::<O>(
                &k,
                optr,
                c * 8,
                round_vec::<M>(&k, _mm256_loadu_ps(xp.add(c * 8)), r),
            );
            c += 1;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::*;
    use std::arch::x86_64::*;

    /// The AVX2 kernel's operations, 16 lanes at a time, with mask registers for its
    /// comparisons: the same value in every lane, so the same bits.
    ///
    /// # Safety
    /// AVX-512 F (and AVX2) must be present; indices as for the AVX2 kernel.
    #[target_feature(enable = "avx2,fma,avx512f")]
    pub unsafe fn quantize_run_avx512(
        x: &[f32],
        mut out: OutRun<'_>,
        p: &ScaledInt,
        key: StreamKey,
        base: u64,
    ) {
        let n = x.len();
        debug_assert!(base >> 32 == (base + n.saturating_sub(1) as u64) >> 32);
        let (f0, f1) = p.factors();
        let vf0 = _mm512_set1_ps(f0);
        let vf1 = _mm512_set1_ps(f1);
        let vlo = _mm512_set1_ps(p.lo as f32);
        let vhi = _mm512_set1_ps(p.hi as f32);
        let vulp = _mm512_set1_ps(p.ulp());
        let absmask = _mm512_set1_epi32(0x7fff_ffff);
        let signmask = _mm512_set1_epi32(i32::MIN);
        let one = _mm512_set1_ps(1.0);
        let half = _mm512_set1_ps(0.5);
        let zero = _mm512_setzero_ps();
        let two24 = _mm512_set1_ps(16_777_216.0);
        let (k1, k2) = key.round_keys((base >> 32) as u32);
        let rounding = p.rounding;
        let chunks = n / 16;
        let xp = x.as_ptr();
        let mut c0 = 0;
        while c0 < chunks {
            let nv = (chunks - c0).min(4);
            let rs = if rounding == Rounding::Stochastic {
                hash::bits::<__m512i, 4>((base as u32).wrapping_add((c0 * 16) as u32), k1, k2)
            } else {
                [_mm512_setzero_si512(); 4]
            };
            for (c, r) in (c0..c0 + nv).zip(rs) {
                let xv = _mm512_loadu_ps(xp.add(c * 16));
                let y = _mm512_mul_ps(_mm512_mul_ps(xv, vf0), vf1);
                let yb = _mm512_castps_si512(y);
                let q = match rounding {
                    Rounding::NearestEven => {
                        _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(y)
                    }
                    Rounding::TowardZero => {
                        _mm512_roundscale_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(y)
                    }
                    Rounding::NearestAway => {
                        let a = _mm512_castsi512_ps(_mm512_and_si512(yb, absmask));
                        let fa = _mm512_roundscale_ps::<
                            { _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC },
                        >(a);
                        let fr = _mm512_sub_ps(a, fa);
                        let sign = _mm512_and_si512(yb, signmask);
                        let bump = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(fr, half);
                        let m = _mm512_mask_add_ps(fa, bump, fa, one);
                        _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(m), sign))
                    }
                    Rounding::Stochastic => {
                        // The AVX2 kernel's integer form (`avx2::stochastic_vec`).
                        let yc = _mm512_min_ps(_mm512_max_ps(y, vlo), vhi);
                        let a = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(
                            yc,
                        );
                        let z = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(
                            _mm512_mul_ps(yc, two24),
                        );
                        let b = _mm512_fnmadd_ps(a, two24, z);
                        let carry =
                            _mm512_srli_epi32::<24>(_mm512_add_epi32(_mm512_cvttps_epi32(b), r));
                        let mut q = _mm512_add_epi32(_mm512_cvtps_epi32(a), carry);
                        let neg_zero = _mm512_cmpeq_epi32_mask(yb, signmask);
                        if neg_zero != 0 {
                            let r_zero = _mm512_cmpeq_epi32_mask(r, _mm512_setzero_si512());
                            let x_nonzero = _mm512_cmp_ps_mask::<_CMP_NEQ_OQ>(xv, zero);
                            let m = neg_zero & r_zero & x_nonzero;
                            q = _mm512_max_epi32(
                                _mm512_mask_sub_epi32(q, m, q, _mm512_set1_epi32(1)),
                                _mm512_set1_epi32(p.lo),
                            );
                        }
                        store16(&mut out, c * 16, q, vulp);
                        continue;
                    }
                };
                let q = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(q, vlo), vhi));
                store16(&mut out, c * 16, q, vulp);
            }
            c0 += nv;
        }
        let done = chunks * 16;
        if done < n {
            let (_, tail) = split_out(out, done);
            super::avx2::quantize_run_avx2(&x[done..], tail, p, key, base + done as u64);
        }
    }

    /// Writes 16 mantissas at element `off` of `out` (`ulp`: the value of one step, for f32).
    ///
    /// # Safety
    /// AVX-512 F must be present; `out` holds at least `off + 16` elements.
    #[inline(always)]
    unsafe fn store16(out: &mut OutRun<'_>, off: usize, q: __m512i, ulp: __m512) {
        match out {
            OutRun::F32(o) => _mm512_storeu_ps(
                o.as_mut_ptr().add(off),
                _mm512_mul_ps(_mm512_cvtepi32_ps(q), ulp),
            ),
            OutRun::I32(o) => _mm512_storeu_si512(o.as_mut_ptr().add(off) as *mut __m512i, q),
            OutRun::I16(o) => _mm256_storeu_si256(
                o.as_mut_ptr().add(off) as *mut __m256i,
                _mm512_cvtsepi32_epi16(q),
            ),
            OutRun::I8(o) => _mm_storeu_si128(
                o.as_mut_ptr().add(off) as *mut __m128i,
                _mm512_cvtsepi32_epi8(q),
            ),
        }
    }
}

/// `out` split at element `at`.
fn split_out(out: OutRun<'_>, at: usize) -> (OutRun<'_>, OutRun<'_>) {
    match out {
        OutRun::I8(o) => {
            let (a, b) = o.split_at_mut(at);
            (OutRun::I8(a), OutRun::I8(b))
        }
        OutRun::I16(o) => {
            let (a, b) = o.split_at_mut(at);
            (OutRun::I16(a), OutRun::I16(b))
        }
        OutRun::I32(o) => {
            let (a, b) = o.split_at_mut(at);
            (OutRun::I32(a), OutRun::I32(b))
        }
        OutRun::F32(o) => {
            let (a, b) = o.split_at_mut(at);
            (OutRun::F32(a), OutRun::F32(b))
        }
    }
}
