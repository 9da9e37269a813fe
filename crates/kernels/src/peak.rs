//! Instruction peaks of this CPU, measured: how many multiply-add instructions per second one
//! core issues for each form the kernels could use, against a dependent scalar add chain that
//! runs at one per cycle (so the rates also come out per cycle without a cycle counter, which
//! many virtual machines hide).
//!
//! Each form runs in a loop of inline assembly with independent accumulators, so that the
//! compiler can neither fold nor reorder it and the figure is the issue rate, not a latency.
//! The i8 GEMMs' "% of peak" is taken against the exact form each family runs
//! ([`gemm_peak_form`]), measured on the machine that runs the GEMM.

use crate::ukernel::Isa;
use serde::Serialize;
use std::time::Instant;

/// One measured instruction form.
#[derive(Clone, Debug, Serialize)]
pub struct PeakRecord {
    /// The instruction sequence one unit stands for.
    pub form: &'static str,
    /// Multiply-adds per unit (0 for the clock chain).
    pub macs_per_unit: u32,
    /// Whether the form's integer sums are exact for the operands the i8 kernels feed it.
    pub exact: bool,
    /// Units issued per second (millions), median of the repetitions.
    pub munits_per_s: f64,
    /// Units per cycle (against the measured clock).
    pub per_cycle: f64,
    /// GOP/s (1 MAC = 2 ops).
    pub gops: f64,
}

type Loop = unsafe fn(u64);

struct Form {
    name: &'static str,
    macs: u32,
    exact: bool,
    units_per_iter: u32,
    run: Loop,
    /// The i8 kernel family whose inner loop issues this form (the 100% of `bench gemm`).
    kernel_of: Option<Isa>,
}

/// The forms this CPU can run under the `LOWPREC_ISA` cap (`isa`, lowered to what the CPU
/// has), clock first.
fn forms(isa: Isa) -> Vec<Form> {
    let isa = isa.or_supported();
    let mut v = vec![Form {
        name: "add r64 dependent chain (1 per cycle: the clock)",
        macs: 0,
        exact: true,
        units_per_iter: 8,
        run: x86::clock,
        kernel_of: None,
    }];
    #[cfg(target_arch = "x86_64")]
    {
        if isa.has_avx2() {
            v.extend([
                Form {
                    name: "vpmaddwd ymm + vpaddd (i16 pairs: the Avx2 i8 kernel)",
                    macs: 16,
                    exact: true,
                    units_per_iter: 8,
                    run: x86::maddwd_add,
                    kernel_of: Some(Isa::Avx2),
                },
                Form {
                    name: "vpmaddubsw ymm alone (u8 x s8, saturating i16)",
                    macs: 32,
                    exact: false,
                    units_per_iter: 8,
                    run: x86::maddubsw,
                    kernel_of: None,
                },
                Form {
                    name: "vpmaddubsw + vpmaddwd(1) + vpaddd (i32 sums: the Avx2Quad i8 kernel, B >= 0)",
                    macs: 32,
                    exact: true,
                    units_per_iter: 8,
                    run: x86::maddubsw_widen,
                    kernel_of: Some(Isa::Avx2Quad),
                },
                Form {
                    name: "vpsignb + vpmaddubsw + vpmaddwd(1) + vpaddd (i32 sums, signed B: sign moved onto A)",
                    macs: 32,
                    exact: true,
                    units_per_iter: 8,
                    run: x86::signb_maddubsw_widen,
                    kernel_of: None,
                },
                Form {
                    name: "vfmadd231ps ymm (f32)",
                    macs: 8,
                    exact: false,
                    units_per_iter: 12,
                    run: x86::fma_ymm,
                    kernel_of: None,
                },
            ]);
        }
        if isa.or_supported() == Isa::Avx512Vnni {
            v.extend([
                Form {
                    name: "vpdpbusd zmm (u8 x s8 quads: the Avx512Vnni i8 kernel)",
                    macs: 64,
                    exact: true,
                    units_per_iter: 12,
                    run: x86::dpbusd_zmm,
                    kernel_of: Some(Isa::Avx512Vnni),
                },
                Form {
                    name: "vfmadd231ps zmm (f32)",
                    macs: 16,
                    exact: false,
                    units_per_iter: 12,
                    run: x86::fma_zmm,
                    kernel_of: None,
                },
            ]);
        }
    }
    let _ = isa;
    v
}

/// The form each i8 kernel family's inner loop issues (the "% peak" of `lowprec bench gemm`).
pub fn gemm_peak_form(isa: Isa) -> Option<&'static str> {
    gemm_form(isa).map(|f| f.name)
}

fn gemm_form(isa: Isa) -> Option<Form> {
    let family = isa.or_supported();
    forms(isa).into_iter().find(|f| f.kernel_of == Some(family))
}

fn time_once(f: &Form, iters: u64) -> f64 {
    let t = Instant::now();
    // SAFETY: `forms` lists only the loops whose instruction set this CPU has.
    unsafe { (f.run)(iters) };
    t.elapsed().as_secs_f64()
}

/// Units per second of `f`: the median of `reps` runs of about `millis` ms each.
fn rate(f: &Form, millis: u64, reps: usize) -> f64 {
    // Calibrate the iteration count to about `millis` ms.
    let mut iters = 1u64 << 12;
    loop {
        let s = time_once(f, iters);
        if s * 1000.0 >= millis as f64 / 4.0 || iters >= 1 << 34 {
            iters = ((iters as f64) * (millis as f64 / 1000.0) / s.max(1e-9)).max(1.0) as u64;
            break;
        }
        iters *= 4;
    }
    let mut rates: Vec<f64> = (0..reps.max(1))
        .map(|_| (iters * f.units_per_iter as u64) as f64 / time_once(f, iters))
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

/// Measures every form this CPU runs under the cap, each `reps` times for about `millis` ms,
/// and reports the medians.
pub fn measure(isa: Isa, millis: u64, reps: usize) -> Vec<PeakRecord> {
    let mut clock_hz = f64::NAN;
    forms(isa)
        .iter()
        .map(|f| {
            let r = rate(f, millis, reps);
            if f.macs == 0 {
                clock_hz = r;
            }
            PeakRecord {
                form: f.name,
                macs_per_unit: f.macs,
                exact: f.exact,
                munits_per_s: r / 1e6,
                per_cycle: r / clock_hz,
                gops: r * f.macs as f64 * 2.0 / 1e9,
            }
        })
        .collect()
}

/// GOP/s per core of the form the `isa` family's i8 kernel issues, measured now (3 runs of
/// about `millis` ms; that form only), or `None` for the portable kernels.
pub fn gemm_peak_gops(isa: Isa, millis: u64) -> Option<(f64, &'static str)> {
    let f = gemm_form(isa)?;
    Some((rate(&f, millis, 3) * f.macs as f64 * 2.0 / 1e9, f.name))
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::asm;

    /// Eight dependent `add`s per iteration: one per cycle on every x86-64 core.
    ///
    /// # Safety
    /// None beyond x86-64 (the signature is `unsafe` to share the table's type).
    pub unsafe fn clock(n: u64) {
        // Register operands: Intel's Golden Cove and later fold chains of adds of an
        // immediate at rename, running several per cycle.
        asm!("2:", "add {x}, {y}", "add {x}, {y}", "add {x}, {y}", "add {x}, {y}",
             "add {x}, {y}", "add {x}, {y}", "add {x}, {y}", "add {x}, {y}",
             "dec {n}", "jnz 2b",
             n = inout(reg) n.max(1) => _, x = inout(reg) 0u64 => _, y = in(reg) 1u64,
             options(nomem, nostack));
    }

    macro_rules! ymm_loop {
        ($(#[$doc:meta])* $name:ident, $feat:literal, [$($ins:literal),+ $(,)?]) => {
            $(#[$doc])*
            ///
            /// # Safety
            #[doc = concat!("The CPU must support ", $feat, ".")]
            #[target_feature(enable = $feat)]
            pub unsafe fn $name(n: u64) {
                asm!(
                    "vpxor xmm0, xmm0, xmm0", "vpxor xmm1, xmm1, xmm1", "vpxor xmm2, xmm2, xmm2",
                    "vpxor xmm3, xmm3, xmm3", "vpxor xmm4, xmm4, xmm4", "vpxor xmm5, xmm5, xmm5",
                    "vpxor xmm6, xmm6, xmm6", "vpxor xmm7, xmm7, xmm7", "vpxor xmm8, xmm8, xmm8",
                    "vpxor xmm9, xmm9, xmm9", "vpxor xmm10, xmm10, xmm10",
                    "vpxor xmm11, xmm11, xmm11", "vpxor xmm12, xmm12, xmm12",
                    "vpcmpeqw ymm13, ymm13, ymm13",
                    "vpabsw ymm13, ymm13", "vpxor xmm14, xmm14, xmm14", "vpxor xmm15, xmm15, xmm15",
                    "2:",
                    $($ins,)+
                    "dec {n}", "jnz 2b",
                    n = inout(reg) n.max(1) => _,
                    out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _, out("ymm4") _,
                    out("ymm5") _, out("ymm6") _, out("ymm7") _, out("ymm8") _, out("ymm9") _,
                    out("ymm10") _, out("ymm11") _, out("ymm12") _, out("ymm13") _,
                    out("ymm14") _, out("ymm15") _,
                    options(nomem, nostack),
                );
            }
        };
    }

    ymm_loop!(
        /// 8 x (`vpmaddwd` into a temporary, `vpaddd` into one of 8 accumulators).
        maddwd_add, "avx2", [
        "vpmaddwd ymm8, ymm14, ymm15", "vpaddd ymm0, ymm0, ymm8",
        "vpmaddwd ymm9, ymm14, ymm15", "vpaddd ymm1, ymm1, ymm9",
        "vpmaddwd ymm10, ymm14, ymm15", "vpaddd ymm2, ymm2, ymm10",
        "vpmaddwd ymm11, ymm14, ymm15", "vpaddd ymm3, ymm3, ymm11",
        "vpmaddwd ymm8, ymm14, ymm15", "vpaddd ymm4, ymm4, ymm8",
        "vpmaddwd ymm9, ymm14, ymm15", "vpaddd ymm5, ymm5, ymm9",
        "vpmaddwd ymm10, ymm14, ymm15", "vpaddd ymm6, ymm6, ymm10",
        "vpmaddwd ymm11, ymm14, ymm15", "vpaddd ymm7, ymm7, ymm11",
    ]);

    ymm_loop!(
        /// 8 independent `vpmaddubsw`.
        maddubsw, "avx2", [
        "vpmaddubsw ymm0, ymm14, ymm15", "vpmaddubsw ymm1, ymm14, ymm15",
        "vpmaddubsw ymm2, ymm14, ymm15", "vpmaddubsw ymm3, ymm14, ymm15",
        "vpmaddubsw ymm4, ymm14, ymm15", "vpmaddubsw ymm5, ymm14, ymm15",
        "vpmaddubsw ymm6, ymm14, ymm15", "vpmaddubsw ymm7, ymm14, ymm15",
    ]);

    ymm_loop!(
        /// 8 x (`vpmaddubsw`, `vpmaddwd` by ones to widen the pair sums, `vpaddd`).
        maddubsw_widen, "avx2", [
        "vpmaddubsw ymm8, ymm14, ymm15", "vpmaddwd ymm8, ymm8, ymm13", "vpaddd ymm0, ymm0, ymm8",
        "vpmaddubsw ymm9, ymm14, ymm15", "vpmaddwd ymm9, ymm9, ymm13", "vpaddd ymm1, ymm1, ymm9",
        "vpmaddubsw ymm10, ymm14, ymm15", "vpmaddwd ymm10, ymm10, ymm13", "vpaddd ymm2, ymm2, ymm10",
        "vpmaddubsw ymm11, ymm14, ymm15", "vpmaddwd ymm11, ymm11, ymm13", "vpaddd ymm3, ymm3, ymm11",
        "vpmaddubsw ymm8, ymm14, ymm15", "vpmaddwd ymm8, ymm8, ymm13", "vpaddd ymm4, ymm4, ymm8",
        "vpmaddubsw ymm9, ymm14, ymm15", "vpmaddwd ymm9, ymm9, ymm13", "vpaddd ymm5, ymm5, ymm9",
        "vpmaddubsw ymm10, ymm14, ymm15", "vpmaddwd ymm10, ymm10, ymm13", "vpaddd ymm6, ymm6, ymm10",
        "vpmaddubsw ymm11, ymm14, ymm15", "vpmaddwd ymm11, ymm11, ymm13", "vpaddd ymm7, ymm7, ymm11",
    ]);

    ymm_loop!(
        /// 8 x (`vpsignb` moving B's sign onto A, then the trio of [`maddubsw_widen`] on |B|).
        signb_maddubsw_widen, "avx2", [
        "vpsignb ymm8, ymm14, ymm15", "vpmaddubsw ymm8, ymm12, ymm8", "vpmaddwd ymm8, ymm8, ymm13", "vpaddd ymm0, ymm0, ymm8",
        "vpsignb ymm9, ymm14, ymm15", "vpmaddubsw ymm9, ymm12, ymm9", "vpmaddwd ymm9, ymm9, ymm13", "vpaddd ymm1, ymm1, ymm9",
        "vpsignb ymm10, ymm14, ymm15", "vpmaddubsw ymm10, ymm12, ymm10", "vpmaddwd ymm10, ymm10, ymm13", "vpaddd ymm2, ymm2, ymm10",
        "vpsignb ymm11, ymm14, ymm15", "vpmaddubsw ymm11, ymm12, ymm11", "vpmaddwd ymm11, ymm11, ymm13", "vpaddd ymm3, ymm3, ymm11",
        "vpsignb ymm8, ymm14, ymm15", "vpmaddubsw ymm8, ymm12, ymm8", "vpmaddwd ymm8, ymm8, ymm13", "vpaddd ymm4, ymm4, ymm8",
        "vpsignb ymm9, ymm14, ymm15", "vpmaddubsw ymm9, ymm12, ymm9", "vpmaddwd ymm9, ymm9, ymm13", "vpaddd ymm5, ymm5, ymm9",
        "vpsignb ymm10, ymm14, ymm15", "vpmaddubsw ymm10, ymm12, ymm10", "vpmaddwd ymm10, ymm10, ymm13", "vpaddd ymm6, ymm6, ymm10",
        "vpsignb ymm11, ymm14, ymm15", "vpmaddubsw ymm11, ymm12, ymm11", "vpmaddwd ymm11, ymm11, ymm13", "vpaddd ymm7, ymm7, ymm11",
    ]);

    ymm_loop!(
        /// 12 independent `vfmadd231ps` accumulators (more than latency x pipes on current cores).
        fma_ymm, "avx2,fma", [
        "vfmadd231ps ymm0, ymm14, ymm15", "vfmadd231ps ymm1, ymm14, ymm15",
        "vfmadd231ps ymm2, ymm14, ymm15", "vfmadd231ps ymm3, ymm14, ymm15",
        "vfmadd231ps ymm4, ymm14, ymm15", "vfmadd231ps ymm5, ymm14, ymm15",
        "vfmadd231ps ymm6, ymm14, ymm15", "vfmadd231ps ymm7, ymm14, ymm15",
        "vfmadd231ps ymm8, ymm14, ymm15", "vfmadd231ps ymm9, ymm14, ymm15",
        "vfmadd231ps ymm10, ymm14, ymm15", "vfmadd231ps ymm11, ymm14, ymm15",
    ]);

    macro_rules! zmm_loop {
        ($(#[$doc:meta])* $name:ident, $feat:literal, $op:literal) => {
            $(#[$doc])*
            ///
            /// # Safety
            #[doc = concat!("The CPU must support ", $feat, ".")]
            #[target_feature(enable = $feat)]
            pub unsafe fn $name(n: u64) {
                asm!(
                    "vpxord zmm0, zmm0, zmm0", "vpxord zmm1, zmm1, zmm1", "vpxord zmm2, zmm2, zmm2",
                    "vpxord zmm3, zmm3, zmm3", "vpxord zmm4, zmm4, zmm4", "vpxord zmm5, zmm5, zmm5",
                    "vpxord zmm6, zmm6, zmm6", "vpxord zmm7, zmm7, zmm7", "vpxord zmm8, zmm8, zmm8",
                    "vpxord zmm9, zmm9, zmm9", "vpxord zmm10, zmm10, zmm10",
                    "vpxord zmm11, zmm11, zmm11", "vpxord zmm14, zmm14, zmm14",
                    "vpxord zmm15, zmm15, zmm15",
                    "2:",
                    concat!($op, " zmm0, zmm14, zmm15"), concat!($op, " zmm1, zmm14, zmm15"),
                    concat!($op, " zmm2, zmm14, zmm15"), concat!($op, " zmm3, zmm14, zmm15"),
                    concat!($op, " zmm4, zmm14, zmm15"), concat!($op, " zmm5, zmm14, zmm15"),
                    concat!($op, " zmm6, zmm14, zmm15"), concat!($op, " zmm7, zmm14, zmm15"),
                    concat!($op, " zmm8, zmm14, zmm15"), concat!($op, " zmm9, zmm14, zmm15"),
                    concat!($op, " zmm10, zmm14, zmm15"), concat!($op, " zmm11, zmm14, zmm15"),
                    "dec {n}", "jnz 2b",
                    n = inout(reg) n.max(1) => _,
                    out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _, out("zmm4") _,
                    out("zmm5") _, out("zmm6") _, out("zmm7") _, out("zmm8") _, out("zmm9") _,
                    out("zmm10") _, out("zmm11") _, out("zmm14") _, out("zmm15") _,
                    options(nomem, nostack),
                );
            }
        };
    }

    zmm_loop!(
        /// 12 independent `vpdpbusd zmm` accumulators.
        dpbusd_zmm, "avx512f,avx512bw,avx512vnni", "vpdpbusd");
    zmm_loop!(
        /// 12 independent `vfmadd231ps zmm` accumulators.
        fma_zmm, "avx512f,fma", "vfmadd231ps");
}

#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    /// A portable dependent chain (the clock estimate is only as good as the compiler keeps it).
    ///
    /// # Safety
    /// None.
    pub unsafe fn clock(n: u64) {
        let mut x = 0u64;
        for _ in 0..n * 8 {
            x = std::hint::black_box(x + 1);
        }
        std::hint::black_box(x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_this_cpu_runs_is_measured_with_sane_rates() {
        let recs = measure(Isa::detect(), 5, 1);
        assert_eq!(recs[0].macs_per_unit, 0, "the clock comes first");
        // A core between 0.2 and 10 GHz, whatever the load.
        assert!(
            recs[0].munits_per_s > 200.0 && recs[0].munits_per_s < 10_000.0,
            "{recs:?}"
        );
        for r in &recs {
            assert!(r.munits_per_s.is_finite() && r.munits_per_s > 0.0, "{r:?}");
            // Both from one rate, by different roundings: equal to 1e-12 relative.
            let want = r.munits_per_s * 1e6 * r.macs_per_unit as f64 * 2.0 / 1e9;
            assert!((r.gops - want).abs() <= 1e-12 * want.abs(), "{r:?}");
        }
        if Isa::detect().has_avx2() {
            assert!(recs
                .iter()
                .any(|r| Some(r.form) == gemm_peak_form(Isa::Avx2)));
            assert!(gemm_peak_gops(Isa::Avx2, 5).unwrap().0 > 0.0);
        }
        assert!(gemm_peak_gops(Isa::Generic, 5).is_none());
    }
}
