//! Shared test helpers: a counter-based generator (no shared mutable RNG) and matrix builders.
#![allow(dead_code)]

use lowprec_kernels::{Isa, MatRef};

/// Every kernel family (the tests lower each to what the CPU supports).
pub const ISAS: [Isa; 5] = [
    Isa::Generic,
    Isa::Avx2,
    Isa::GenericQuad,
    Isa::Avx2Quad,
    Isa::Avx512Vnni,
];

/// SplitMix64 finaliser of `(seed, stream, index)`: draw `index` of stream `stream` under `seed`.
pub fn draw(seed: u64, stream: u64, index: u64) -> u64 {
    let mut z = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(stream.wrapping_mul(0xD1B5_4A32_D192_ED03))
        .wrapping_add(index.wrapping_mul(0xBF58_476D_1CE4_E5B9))
        .wrapping_add(0x94D0_49BB_1331_11EB);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Uniform integer in `lo..=hi`.
pub fn int_in(seed: u64, stream: u64, index: u64, lo: i64, hi: i64) -> i64 {
    let span = (hi - lo + 1) as u64;
    lo + (draw(seed, stream, index) % span) as i64
}

/// Uniform f32 in `[lo, hi)`.
pub fn f32_in(seed: u64, stream: u64, index: u64, lo: f32, hi: f32) -> f32 {
    let u = (draw(seed, stream, index) >> 40) as f32 / (1u64 << 24) as f32;
    lo + (hi - lo) * u
}

pub fn rand_i8(seed: u64, stream: u64, len: usize, max_abs: u32) -> Vec<i8> {
    let lo = -(max_abs.min(128) as i64);
    let hi = (max_abs.min(127)) as i64;
    (0..len)
        .map(|i| int_in(seed, stream, i as u64, lo, hi) as i8)
        .collect()
}

pub fn rand_i16(seed: u64, stream: u64, len: usize, max_abs: u32) -> Vec<i16> {
    let lo = -(max_abs.min(32768) as i64);
    let hi = (max_abs.min(32767)) as i64;
    (0..len)
        .map(|i| int_in(seed, stream, i as u64, lo, hi) as i16)
        .collect()
}

/// Scales that are powers of two times a random mantissa, so float rounding is exercised.
pub fn rand_scales(seed: u64, stream: u64, len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| {
            let e = int_in(seed, stream, 2 * i as u64, -20, 4) as i32;
            f32_in(seed, stream, 2 * i as u64 + 1, 0.5, 1.0) * (2f32).powi(e)
        })
        .collect()
}

/// Storage for a `rows x cols` operand in one of four layouts, and its view.
#[derive(Clone, Copy, Debug)]
pub enum Layout {
    RowMajor,
    /// Stored as the transpose (column-major), viewed through `MatRef::t`.
    Transposed,
    /// Row-major with 3 padding elements per row.
    Padded,
    /// Column-major with padding: neither stride is 1 after a column skip.
    Strided,
}

pub const LAYOUTS: [Layout; 4] = [
    Layout::RowMajor,
    Layout::Transposed,
    Layout::Padded,
    Layout::Strided,
];

/// Allocation length needed for `rows x cols` in `layout`.
pub fn storage_len(layout: Layout, rows: usize, cols: usize) -> usize {
    match layout {
        Layout::RowMajor | Layout::Transposed => rows * cols,
        Layout::Padded => rows * (cols + 3),
        Layout::Strided => (rows * 2 + 1) * cols.max(1) + 2 * rows + 1,
    }
}

pub fn view<T: Copy>(layout: Layout, data: &[T], rows: usize, cols: usize) -> MatRef<'_, T> {
    match layout {
        Layout::RowMajor => MatRef::row_major(data, rows, cols).unwrap(),
        Layout::Transposed => MatRef::row_major(data, cols, rows).unwrap().t(),
        Layout::Padded => MatRef {
            data,
            rows,
            cols,
            row_stride: cols + 3,
            col_stride: 1,
        },
        Layout::Strided => MatRef {
            data,
            rows,
            cols,
            row_stride: 2,
            col_stride: rows * 2 + 1,
        },
    }
}
