//! Plain scalar references: obviously correct, slow, and the yardstick every fast kernel and
//! every backend is tested against bit for bit.

use crate::types::{k_chunks, k_safe, segment_count, GemmSpec, MatMut, MatRef, QMatRef, Scales};
use crate::KernelError;

/// Checks shapes, scales and the declared magnitude bound; shared by every implementation.
pub fn validate_q<T: Copy + Into<i32>>(
    a: &QMatRef<'_, T>,
    b: &QMatRef<'_, T>,
    spec: &GemmSpec,
    c: &MatMut<'_, f32>,
) -> Result<(), KernelError> {
    validate_q_shapes(a, b, spec, c)?;
    check_range_ref("A", &a.mat, a.max_abs)?;
    check_range_ref("B", &b.mat, b.max_abs)
}

/// The shape and scale part of [`validate_q`] (everything but the element scan).
pub fn validate_q_shapes<T: Copy>(
    a: &QMatRef<'_, T>,
    b: &QMatRef<'_, T>,
    spec: &GemmSpec,
    c: &MatMut<'_, f32>,
) -> Result<(), KernelError> {
    validate_q_dims(
        a,
        (b.mat.rows, b.mat.cols),
        Some(&b.mat),
        &b.scales,
        spec,
        c,
    )
}

/// The checks of [`validate_q_shapes`] for a B given by its shape and scales, and its view
/// when it has one (an im2col operand's storage is the maps, checked where it is made).
pub fn validate_q_dims<T: Copy>(
    a: &QMatRef<'_, T>,
    (brows, n): (usize, usize),
    bmat: Option<&MatRef<'_, T>>,
    bscales: &Scales<'_>,
    spec: &GemmSpec,
    c: &MatMut<'_, f32>,
) -> Result<(), KernelError> {
    validate_q_operands(a, (brows, n), bmat, bscales, spec)?;
    let m = a.mat.rows;
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

/// The checks of [`validate_q_dims`] that do not concern C: inner dimensions, strides, segment
/// length and the scales' counts.
pub fn validate_q_operands<T: Copy>(
    a: &QMatRef<'_, T>,
    (brows, n): (usize, usize),
    bmat: Option<&MatRef<'_, T>>,
    bscales: &Scales<'_>,
    spec: &GemmSpec,
) -> Result<(), KernelError> {
    let (m, k) = (a.mat.rows, a.mat.cols);
    if brows != k {
        return Err(KernelError::Shape(format!(
            "A is {m}x{k} but B is {brows}x{n}: inner dimensions differ"
        )));
    }
    if spec.segment == 0 {
        return Err(KernelError::Shape("segment length must be >= 1".into()));
    }
    a.mat.check("A")?;
    if let Some(b) = bmat {
        b.check("B")?;
    }
    let segs = segment_count(k, spec.segment);
    a.scales.check("A scales", segs, m)?;
    bscales.check("B scales", segs, n)?;
    Ok(())
}

/// The element scan of [`validate_q`]: the first element (row-major order) above `max_abs`.
pub fn check_range_ref<T: Copy + Into<i32>>(
    name: &str,
    q: &MatRef<'_, T>,
    max_abs: u32,
) -> Result<(), KernelError> {
    for r in 0..q.rows {
        for cc in 0..q.cols {
            let v: i32 = q.at(r, cc).into();
            if v.unsigned_abs() > max_abs {
                return Err(KernelError::Range(format!(
                    "{name}[{r},{cc}] = {v} exceeds the declared bound {max_abs}"
                )));
            }
        }
    }
    Ok(())
}

fn gemm_q_ref<T: Copy + Into<i32>>(
    a: QMatRef<'_, T>,
    b: QMatRef<'_, T>,
    spec: GemmSpec,
    c: MatMut<'_, f32>,
) -> Result<(), KernelError> {
    validate_q(&a, &b, &spec, &c)?;
    let (m, k, n) = (a.mat.rows, a.mat.cols, b.mat.cols);
    let chunks = k_chunks(k, spec.segment, k_safe(a.max_abs, b.max_abs));
    for i in 0..m {
        for j in 0..n {
            let mut acc_f = if spec.accumulate {
                c.data[i * c.ld + j]
            } else {
                0.0f32
            };
            for &(s, k0, k1) in &chunks {
                let mut acc: i32 = 0;
                for kk in k0..k1 {
                    let p = a.mat.at(i, kk).into() * b.mat.at(kk, j).into();
                    acc = acc.checked_add(p).expect("k_safe bound violated");
                }
                acc_f += ((acc as f32) * a.scales.get(s, i)) * b.scales.get(s, j);
            }
            c.data[i * c.ld + j] = acc_f;
        }
    }
    Ok(())
}

/// Reference for [`crate::gemm_q8`]: 8-bit mantissas, i32 chunks, f32 epilogue.
pub fn gemm_q8_ref(
    a: QMatRef<'_, i8>,
    b: QMatRef<'_, i8>,
    spec: GemmSpec,
    c: MatMut<'_, f32>,
) -> Result<(), KernelError> {
    gemm_q_ref(a, b, spec, c)
}

/// Reference for [`crate::gemm_q16`]: 9..16-bit mantissas stored as i16.
pub fn gemm_q16_ref(
    a: QMatRef<'_, i16>,
    b: QMatRef<'_, i16>,
    spec: GemmSpec,
    c: MatMut<'_, f32>,
) -> Result<(), KernelError> {
    gemm_q_ref(a, b, spec, c)
}

/// Shape checks of [`crate::gemm_i8_i32`]: inner dimensions, C's extent, both views, and
/// K short enough that no i8 operands can overflow i32.
pub fn validate_i32_shapes(
    a: &MatRef<'_, i8>,
    b: &MatRef<'_, i8>,
    c: &MatMut<'_, i32>,
) -> Result<(), KernelError> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if b.rows != k
        || c.rows != m
        || c.cols != n
        || c.ld < n
        || (m > 0 && c.data.len() < (m - 1) * c.ld + n)
    {
        return Err(KernelError::Shape(format!(
            "A {m}x{k}, B {}x{n}, C {}x{} (ld {}, {} elements)",
            b.rows,
            c.rows,
            c.cols,
            c.ld,
            c.data.len()
        )));
    }
    a.check("A")?;
    b.check("B")?;
    if k > k_safe(128, 128) {
        return Err(KernelError::Range(format!(
            "K = {k} may overflow i32 (largest safe K for any i8 operands is {})",
            k_safe(128, 128)
        )));
    }
    Ok(())
}

/// Reference for [`crate::gemm_i8_i32`]: plain exact integer product, C = A * B in i32.
pub fn gemm_i8_i32_ref(
    a: MatRef<'_, i8>,
    b: MatRef<'_, i8>,
    c: MatMut<'_, i32>,
) -> Result<(), KernelError> {
    validate_i32_shapes(&a, &b, &c)?;
    let (m, k, n) = (a.rows, a.cols, b.cols);
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0i32;
            for kk in 0..k {
                acc += a.at(i, kk) as i32 * b.at(kk, j) as i32;
            }
            c.data[i * c.ld + j] = acc;
        }
    }
    Ok(())
}

/// f64 reference for f32 GEMM tests: C = A * B accumulated in f64.
pub fn gemm_f64_ref(a: MatRef<'_, f32>, b: MatRef<'_, f32>) -> Vec<f64> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let mut c = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0f64;
            for kk in 0..k {
                acc += a.at(i, kk) as f64 * b.at(kk, j) as f64;
            }
            c[i * n + j] = acc;
        }
    }
    c
}
