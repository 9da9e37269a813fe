//! The instruction-set cap every run-time dispatch of lowprec honours: the environment variable
//! `LOWPREC_ISA` (`avx512`, `avx2` or `generic`; unset means no cap). It lets an AVX-512 machine
//! run, and be measured on, exactly the kernels an AVX2-only or a plain x86-64 processor would
//! run. Every kernel family gives the same bits, so the cap changes speed only.
//!
//! Each dispatch site asks [`allows`] before choosing a family the CPU supports; tests that
//! compare every family against the reference keep testing all that the CPU supports.

use std::sync::OnceLock;

/// Instruction-set levels, lowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum IsaLevel {
    /// Portable code only (x86-64 baseline, SSE2).
    Generic,
    /// AVX2 + FMA.
    Avx2,
    /// AVX-512 (with VNNI where a kernel uses it).
    Avx512,
}

impl IsaLevel {
    pub fn name(self) -> &'static str {
        match self {
            IsaLevel::Generic => "generic",
            IsaLevel::Avx2 => "avx2",
            IsaLevel::Avx512 => "avx512",
        }
    }

    /// Parses a `LOWPREC_ISA` value.
    pub fn parse(s: &str) -> Result<IsaLevel, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "avx512" | "avx-512" | "avx512vnni" => Ok(IsaLevel::Avx512),
            "avx2" => Ok(IsaLevel::Avx2),
            "generic" | "portable" | "none" => Ok(IsaLevel::Generic),
            other => Err(format!(
                "LOWPREC_ISA={other:?}: expected avx512, avx2 or generic"
            )),
        }
    }
}

/// The cap from `LOWPREC_ISA`, or an error naming a bad value (the CLI reports it at start).
pub fn cap_from_env() -> Result<IsaLevel, String> {
    match std::env::var("LOWPREC_ISA") {
        Ok(v) if !v.trim().is_empty() => IsaLevel::parse(&v),
        _ => Ok(IsaLevel::Avx512),
    }
}

/// The cap in force (read once; a bad value caps nothing here, and the CLI refuses it).
pub fn cap() -> IsaLevel {
    static CAP: OnceLock<IsaLevel> = OnceLock::new();
    *CAP.get_or_init(|| cap_from_env().unwrap_or(IsaLevel::Avx512))
}

/// Whether kernels of `level` may run (the cap allows them; the CPU must still support them).
pub fn allows(level: IsaLevel) -> bool {
    level <= cap()
}

/// The highest level this CPU supports, ignoring the cap.
pub fn cpu_level() -> IsaLevel {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx2") && has!("fma") {
            if has!("avx512f") && has!("avx512bw") && has!("avx512vl") {
                return IsaLevel::Avx512;
            }
            return IsaLevel::Avx2;
        }
    }
    IsaLevel::Generic
}

/// The level dispatch uses: the CPU's, capped.
pub fn level() -> IsaLevel {
    cpu_level().min(cap())
}

/// Defines `fn NAME(args) { body }` compiled three times (AVX-512, AVX2 + FMA, baseline) and
/// dispatched at run time by [`level`], so it honours the `LOWPREC_ISA` cap (the role
/// `multiversion` played, which cannot be capped). Arguments must be plain `name: Type` pairs.
/// The body must not depend on the ISA for its result beyond what the compiler may legally do
/// (no fast-math is enabled, so every version gives the same bits).
#[macro_export]
macro_rules! isa_versions {
    ($(#[$meta:meta])* $vis:vis fn $name:ident $(<$($lt:lifetime),*>)? ($($arg:ident : $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        $vis fn $name $(<$($lt),*>)? ($($arg: $ty),*) {
            #[inline(always)]
            fn imp $(<$($lt),*>)? ($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                /// # Safety
                /// The CPU must support AVX-512 F/BW/DQ/VL, AVX2 and FMA.
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                unsafe fn v4 $(<$($lt),*>)? ($($arg: $ty),*) {
                    imp($($arg),*)
                }
                /// # Safety
                /// The CPU must support AVX2 and FMA.
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3 $(<$($lt),*>)? ($($arg: $ty),*) {
                    imp($($arg),*)
                }
                match $crate::isa::level() {
                    // SAFETY: `level` never exceeds what the CPU supports.
                    $crate::isa::IsaLevel::Avx512 => unsafe { v4($($arg),*) },
                    // SAFETY: as above.
                    $crate::isa::IsaLevel::Avx2 => unsafe { v3($($arg),*) },
                    $crate::isa::IsaLevel::Generic => imp($($arg),*),
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                imp($($arg),*)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders() {
        assert_eq!(IsaLevel::parse("AVX2"), Ok(IsaLevel::Avx2));
        assert_eq!(IsaLevel::parse("generic"), Ok(IsaLevel::Generic));
        assert_eq!(IsaLevel::parse("avx512"), Ok(IsaLevel::Avx512));
        assert!(IsaLevel::parse("sse9").unwrap_err().contains("sse9"));
        assert!(IsaLevel::Generic < IsaLevel::Avx2 && IsaLevel::Avx2 < IsaLevel::Avx512);
        assert!(level() <= cpu_level());
    }
}
