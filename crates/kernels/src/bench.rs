//! GEMM throughput tables (the library side of `lowprec bench gemm` and the criterion bench).
//!
//! Each record is the median of `reps` timed runs after one warm-up run, on a rayon pool of the
//! requested size. One MAC counts as 2 operations.

use crate::f32gemm::{gemm_f32_with, F32Impl};
use crate::lowbit::{gemm_ternary_planes, gemm_xnor, BitCode, PackedBits};
use crate::types::{GemmSpec, MatMut, MatRef, QMatRef, Scales};
use crate::KernelError;
use std::time::Instant;

/// What a record measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum BenchKernel {
    /// [`crate::gemm_q8`]: exact i8 GEMM with the fused scale epilogue.
    #[serde(rename = "i8")]
    I8,
    /// [`crate::gemm_q8`] with B non-negative (post-ReLU activations, as in the forward and
    /// weight-gradient GEMMs of a ReLU network), which the AVX2 k-quad kernel takes.
    #[serde(rename = "i8-relu")]
    I8Relu,
    /// [`crate::gemm_f32`]: the f32 implementation chosen for the shape.
    #[serde(rename = "f32")]
    F32,
    /// The `gemm` crate, blocked as in [`crate::gemm_f32`].
    #[serde(rename = "f32-gemm")]
    F32Gemm,
    /// `matrixmultiply`, `C = A B`.
    #[serde(rename = "f32-matrixmultiply")]
    F32Mm,
    /// `matrixmultiply`, `C^T = B^T A^T`.
    #[serde(rename = "f32-matrixmultiply-t")]
    F32MmT,
    /// [`crate::lowbit::gemm_ternary_planes`]: ternary weights x 2-bit activations; A packed
    /// once outside the timing (weights), B's packing from codes inside it.
    #[serde(rename = "ternary-a2")]
    TernaryA2,
    /// [`crate::lowbit::gemm_xnor`]: binary x binary; A packed outside, B inside the timing.
    #[serde(rename = "binary-xnor")]
    BinaryXnor,
}

impl BenchKernel {
    pub fn name(self) -> &'static str {
        match self {
            BenchKernel::I8 => "i8",
            BenchKernel::I8Relu => "i8-relu",
            BenchKernel::F32 => "f32",
            BenchKernel::F32Gemm => "f32-gemm",
            BenchKernel::F32Mm => "f32-matrixmultiply",
            BenchKernel::F32MmT => "f32-matrixmultiply-t",
            BenchKernel::TernaryA2 => "ternary-a2",
            BenchKernel::BinaryXnor => "binary-xnor",
        }
    }

    /// The packed low-bit kernels (integer codes in, i32 out).
    pub fn is_lowbit(self) -> bool {
        matches!(self, BenchKernel::TernaryA2 | BenchKernel::BinaryXnor)
    }

    /// The 8-bit GEMMs.
    pub fn is_i8(self) -> bool {
        matches!(self, BenchKernel::I8 | BenchKernel::I8Relu)
    }

    /// The kernel family an 8-bit kernel runs on when `isa` is detected: `I8`'s B is signed,
    /// so it never takes the unbiased k-quad family ([`crate::Isa::quads_take`]).
    pub fn family(self, isa: crate::Isa) -> crate::Isa {
        if self == BenchKernel::I8 && isa.unbiased_b() {
            isa.pair_isa()
        } else {
            isa
        }
    }

    /// The f32 kernels.
    pub fn is_f32(self) -> bool {
        !self.is_lowbit() && !self.is_i8()
    }

    /// Parses [`BenchKernel::name`].
    pub fn parse(s: &str) -> Option<Self> {
        [
            BenchKernel::I8,
            BenchKernel::I8Relu,
            BenchKernel::F32,
            BenchKernel::F32Gemm,
            BenchKernel::F32Mm,
            BenchKernel::F32MmT,
            BenchKernel::TernaryA2,
            BenchKernel::BinaryXnor,
        ]
        .into_iter()
        .find(|k| k.name() == s)
    }
}

/// One measured (kernel, shape, threads) point.
#[derive(Clone, Debug, serde::Serialize)]
pub struct GemmRecord {
    pub kernel: BenchKernel,
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub threads: usize,
    /// Median throughput, 10^9 operations per second (1 MAC = 2 ops).
    pub gops: f64,
    pub median_ms: f64,
    pub reps: usize,
}

/// A GEMM shape, `M x K x N` (C is `M x N`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub m: usize,
    pub k: usize,
    pub n: usize,
}

impl Shape {
    /// Parses `MxKxN` (or a single number `S` for `SxSxS`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.trim().split(['x', 'X']).collect();
        let num = |p: &str| {
            p.trim()
                .parse::<usize>()
                .map_err(|e| format!("shape {s:?}: {p:?} is not a size ({e})"))
        };
        match parts.as_slice() {
            [d] => {
                let d = num(d)?;
                Ok(Shape { m: d, k: d, n: d })
            }
            [m, k, n] => Ok(Shape {
                m: num(m)?,
                k: num(k)?,
                n: num(n)?,
            }),
            _ => Err(format!("shape {s:?}: expected MxKxN")),
        }
    }
}

/// The default shapes: square GEMMs and the VGG16 convolution GEMMs of 002 (MxKxN).
pub fn default_shapes() -> Vec<Shape> {
    [
        (512, 512, 512),
        (1024, 1024, 1024),
        (64, 576, 131072),
        (64, 131072, 576),
        (576, 64, 131072),
        (512, 4608, 2048),
    ]
    .into_iter()
    .map(|(m, k, n)| Shape { m, k, n })
    .collect()
}

/// Deterministic operand contents (a hash of the index; no RNG state).
fn fill_i8(len: usize, salt: u64) -> Vec<i8> {
    (0..len as u64)
        .map(|i| {
            let z = (i ^ salt).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            ((z >> 56) as u8 as i8).max(-127)
        })
        .collect()
}

/// Deterministic codes in `lo..=hi` (0 mapped to 1 when `nonzero`).
fn fill_codes(len: usize, salt: u64, lo: i8, hi: i8, nonzero: bool) -> Vec<i8> {
    let span = (hi as i64 - lo as i64 + 1) as u64;
    (0..len as u64)
        .map(|i| {
            let z = (i ^ salt).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let v = (lo as i64 + ((z >> 40) % span) as i64) as i8;
            if nonzero && v == 0 {
                1
            } else {
                v
            }
        })
        .collect()
}

fn fill_f32(len: usize, salt: u64) -> Vec<f32> {
    (0..len as u64)
        .map(|i| {
            let z = (i ^ salt).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            ((z >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

fn median_ms(mut times: Vec<f64>) -> f64 {
    times.sort_by(|a, b| a.total_cmp(b));
    let n = times.len();
    if n % 2 == 1 {
        times[n / 2]
    } else {
        0.5 * (times[n / 2 - 1] + times[n / 2])
    }
}

/// Times `kernels` on every shape at every thread count; `reps >= 1` timed runs each.
pub fn gemm_table_with(
    kernels: &[BenchKernel],
    shapes: &[Shape],
    threads: &[usize],
    reps: usize,
) -> Result<Vec<GemmRecord>, KernelError> {
    let reps = reps.max(1);
    let mut out = Vec::new();
    for &sh in shapes {
        let Shape { m, k, n } = sh;
        let needs_i8 = kernels.iter().any(|k| k.is_i8());
        let needs_f32 = kernels.iter().any(|k| k.is_f32());
        let tern = if kernels.contains(&BenchKernel::TernaryA2) {
            let a = fill_codes(m * k, 5, -1, 1, false);
            let pa = PackedBits::from_rows(MatRef::row_major(&a, m, k)?, BitCode::Ternary, "A")?;
            Some((pa, fill_codes(k * n, 6, 0, 3, false)))
        } else {
            None
        };
        let xnor = if kernels.contains(&BenchKernel::BinaryXnor) {
            let a = fill_codes(m * k, 7, -1, 1, true);
            let pa = PackedBits::from_rows(MatRef::row_major(&a, m, k)?, BitCode::Sign, "A")?;
            Some((pa, fill_codes(k * n, 8, -1, 1, true)))
        } else {
            None
        };
        let mut ci = if tern.is_some() || xnor.is_some() {
            vec![0i32; m * n]
        } else {
            Vec::new()
        };
        let (a8, b8) = if needs_i8 {
            (fill_i8(m * k, 1), fill_i8(k * n, 2))
        } else {
            (Vec::new(), Vec::new())
        };
        let b8_relu: Vec<i8> = if kernels.contains(&BenchKernel::I8Relu) {
            b8.iter().map(|&v| v.max(0)).collect()
        } else {
            Vec::new()
        };
        let (af, bf) = if needs_f32 {
            (fill_f32(m * k, 3), fill_f32(k * n, 4))
        } else {
            (Vec::new(), Vec::new())
        };
        let mut c = vec![0f32; m * n];
        for &t in threads {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(t.max(1))
                .build()
                .map_err(|e| KernelError::Shape(format!("cannot build a {t}-thread pool: {e}")))?;
            for &kern in kernels {
                let mut run = || -> Result<(), KernelError> {
                    if let (BenchKernel::TernaryA2, Some((pa, b))) = (kern, &tern) {
                        let bv = MatRef::row_major(b, k, n)?;
                        let pb = PackedBits::from_cols(bv, BitCode::Unsigned(2), "B")?;
                        return gemm_ternary_planes(pa, &pb, MatMut::row_major(&mut ci, m, n)?);
                    }
                    if let (BenchKernel::BinaryXnor, Some((pa, b))) = (kern, &xnor) {
                        let bv = MatRef::row_major(b, k, n)?;
                        let pb = PackedBits::from_cols(bv, BitCode::Sign, "B")?;
                        return gemm_xnor(pa, &pb, MatMut::row_major(&mut ci, m, n)?);
                    }
                    let cm = MatMut::row_major(&mut c, m, n)?;
                    match kern {
                        BenchKernel::I8 | BenchKernel::I8Relu => {
                            let b8 = if kern == BenchKernel::I8 {
                                &b8
                            } else {
                                &b8_relu
                            };
                            let sa = [0.5f32];
                            let sb = [0.25f32];
                            let qa = QMatRef {
                                mat: MatRef::row_major(&a8, m, k)?,
                                scales: Scales::uniform(&sa),
                                max_abs: 127,
                            };
                            let qb = QMatRef {
                                mat: MatRef::row_major(b8, k, n)?,
                                scales: Scales::uniform(&sb),
                                max_abs: 127,
                            };
                            crate::gemm_q8(qa, qb, GemmSpec::whole_k(), cm)
                        }
                        f => {
                            let a = MatRef::row_major(&af, m, k)?;
                            let b = MatRef::row_major(&bf, k, n)?;
                            let imp = match f {
                                BenchKernel::F32Gemm => F32Impl::Gemm,
                                BenchKernel::F32Mm => F32Impl::MatrixMultiply,
                                BenchKernel::F32MmT => F32Impl::MatrixMultiplyT,
                                _ => F32Impl::choose(m, k, n),
                            };
                            gemm_f32_with(imp, a, b, false, cm)
                        }
                    }
                };
                let mut times = Vec::with_capacity(reps);
                pool.install(|| -> Result<(), KernelError> {
                    run()?; // warm-up: page faults, pool start, caches
                    for _ in 0..reps {
                        let t0 = Instant::now();
                        run()?;
                        times.push(t0.elapsed().as_secs_f64() * 1e3);
                    }
                    Ok(())
                })?;
                let med = median_ms(times);
                out.push(GemmRecord {
                    kernel: kern,
                    m,
                    k,
                    n,
                    threads: t,
                    gops: 2.0 * (m * k * n) as f64 / (med * 1e-3) / 1e9,
                    median_ms: med,
                    reps,
                });
            }
        }
    }
    Ok(out)
}

/// i8 and f32 (the implementation [`crate::gemm_f32`] picks) side by side.
pub fn gemm_table(
    shapes: &[Shape],
    threads: &[usize],
    reps: usize,
) -> Result<Vec<GemmRecord>, KernelError> {
    gemm_table_with(&[BenchKernel::I8, BenchKernel::F32], shapes, threads, reps)
}
