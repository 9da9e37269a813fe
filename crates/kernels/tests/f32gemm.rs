//! f32 GEMM: against the f64 reference within a stated tolerance, and the same bits at any
//! thread count.

mod common;

use common::*;
use lowprec_kernels::reference::gemm_f64_ref;
use lowprec_kernels::{gemm_f32, gemm_f32_with, F32Impl, KernelError, MatMut, MatRef};

const IMPLS: [F32Impl; 3] = [
    F32Impl::Gemm,
    F32Impl::MatrixMultiply,
    F32Impl::MatrixMultiplyT,
];

fn rand_f32(seed: u64, stream: u64, len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| f32_in(seed, stream, i as u64, -1.0, 1.0))
        .collect()
}

/// Tolerance: with inputs in [-1, 1), an f32 dot product of length K accumulated in any order
/// is within about K * 2^-24 * sum|a||b| of the exact value; we allow `2 * K * eps * sum|a||b|`
/// (plus the rounding of the accumulated C).
fn check_close(got: &[f32], want: &[f64], abs_sum: &[f64], k: usize, what: &str) {
    let eps = f32::EPSILON as f64;
    for (i, ((&g, &w), &s)) in got.iter().zip(want).zip(abs_sum).enumerate() {
        let tol = 2.0 * (k as f64 + 2.0) * eps * (s + w.abs()) + 1e-30;
        assert!(
            ((g as f64) - w).abs() <= tol,
            "{what}: element {i}: got {g}, want {w}, tolerance {tol:e}"
        );
    }
}

#[test]
fn f32_matches_f64_reference() {
    let shapes = [
        (1, 1, 1),
        (7, 7, 7),
        (33, 65, 17),
        (5, 1000, 3),
        (300, 40, 270),
        (64, 300, 1100),
    ];
    for (i, &(m, k, n)) in shapes.iter().enumerate() {
        let seed = 10 + i as u64;
        for (la, lb) in [
            (Layout::RowMajor, Layout::RowMajor),
            (Layout::Transposed, Layout::RowMajor),
            (Layout::RowMajor, Layout::Transposed),
            (Layout::Padded, Layout::Strided),
        ] {
            let a = rand_f32(seed, 1, storage_len(la, m, k));
            let b = rand_f32(seed, 2, storage_len(lb, k, n));
            let (va, vb) = (view(la, &a, m, k), view(lb, &b, k, n));
            let exact = gemm_f64_ref(va, vb);
            let abs_a: Vec<f32> = a.iter().map(|x| x.abs()).collect();
            let abs_b: Vec<f32> = b.iter().map(|x| x.abs()).collect();
            let abs_sum = gemm_f64_ref(view(la, &abs_a, m, k), view(lb, &abs_b, k, n));
            let c0 = rand_f32(seed, 3, m * n);
            for imp in IMPLS {
                for accumulate in [false, true] {
                    let mut got = if accumulate {
                        c0.clone()
                    } else {
                        vec![f32::NAN; m * n]
                    };
                    gemm_f32_with(
                        imp,
                        va,
                        vb,
                        accumulate,
                        MatMut::row_major(&mut got, m, n).unwrap(),
                    )
                    .unwrap();
                    let want: Vec<f64> = exact
                        .iter()
                        .zip(&c0)
                        .map(|(&e, &c)| if accumulate { e + c as f64 } else { e })
                        .collect();
                    check_close(
                        &got,
                        &want,
                        &abs_sum,
                        k,
                        &format!("{imp:?} {m}x{k}x{n} {la:?}/{lb:?} acc {accumulate}"),
                    );
                }
            }
        }
    }
}

/// The same bits at 1 to 4 threads, on shapes that `gemm` runs as one call on one thread and
/// in blocks on more (C at least 16 wide), shapes whose blocks follow the shape alone (a side
/// under 16), and the crate's own special paths; in the layouts the layers pass (row-major,
/// transposed views) and accumulating.
#[test]
fn f32_same_bits_at_1_2_3_4_threads() {
    let shapes = [
        (64, 576, 3000),
        (600, 64, 700),
        (513, 300, 257),
        (256, 2304, 448),
        (16, 9000, 33),
        (1000, 33, 16),
        (17, 4100, 130),
        (129, 1025, 7),
        (260, 8200, 2),
        (2, 8200, 260),
        (2, 8200, 256),
        (300, 2, 4000),
        (1, 3000, 1000),
        (15, 20000, 15),
        // One block per thread at the shortest such block (96 along the cut side).
        (120, 200, 192),
        (288, 300, 100),
    ];
    for (i, &(m, k, n)) in shapes.iter().enumerate() {
        let seed = 50 + i as u64;
        for (la, lb) in [
            (Layout::RowMajor, Layout::RowMajor),
            (Layout::Transposed, Layout::Transposed),
            (Layout::RowMajor, Layout::Transposed),
            (Layout::Transposed, Layout::RowMajor),
        ] {
            let a = rand_f32(seed, 1, storage_len(la, m, k));
            let b = rand_f32(seed, 2, storage_len(lb, k, n));
            let c0 = rand_f32(seed, 3, m * n);
            for imp in IMPLS {
                for accumulate in [false, true] {
                    let mut first: Option<Vec<f32>> = None;
                    for threads in [1, 2, 3, 4] {
                        let pool = rayon::ThreadPoolBuilder::new()
                            .num_threads(threads)
                            .build()
                            .unwrap();
                        let mut c = c0.clone();
                        pool.install(|| {
                            gemm_f32_with(
                                imp,
                                view(la, &a, m, k),
                                view(lb, &b, k, n),
                                accumulate,
                                MatMut::row_major(&mut c, m, n).unwrap(),
                            )
                        })
                        .unwrap();
                        match &first {
                            None => first = Some(c),
                            Some(f) => assert!(
                                f.iter().zip(&c).all(|(x, y)| x.to_bits() == y.to_bits()),
                                "{imp:?} {m}x{k}x{n} {la:?}/{lb:?} acc {accumulate}: \
                                 {threads} threads differ from 1"
                            ),
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn f32_empty_and_shape_errors() {
    let a = vec![1f32; 12];
    let b = vec![1f32; 12];
    let mut c = vec![3f32; 9];
    // K = 0: C is zeroed, or kept when accumulating.
    gemm_f32(
        MatRef::row_major(&a, 3, 0).unwrap(),
        MatRef::row_major(&b, 0, 3).unwrap(),
        true,
        MatMut::row_major(&mut c, 3, 3).unwrap(),
    )
    .unwrap();
    assert!(c.iter().all(|&x| x == 3.0));
    gemm_f32(
        MatRef::row_major(&a, 3, 0).unwrap(),
        MatRef::row_major(&b, 0, 3).unwrap(),
        false,
        MatMut::row_major(&mut c, 3, 3).unwrap(),
    )
    .unwrap();
    assert!(c.iter().all(|&x| x == 0.0));
    gemm_f32(
        MatRef::row_major(&a, 0, 4).unwrap(),
        MatRef::row_major(&b, 4, 3).unwrap(),
        false,
        MatMut::row_major(&mut c, 0, 3).unwrap(),
    )
    .unwrap();
    assert!(matches!(
        gemm_f32(
            MatRef::row_major(&a, 3, 4).unwrap(),
            MatRef::row_major(&b, 3, 4).unwrap(),
            false,
            MatMut::row_major(&mut c, 3, 3).unwrap()
        ),
        Err(KernelError::Shape(_))
    ));
    let past = MatRef {
        data: &a[..],
        rows: 3,
        cols: 4,
        row_stride: 5,
        col_stride: 1,
    };
    assert!(matches!(
        gemm_f32(
            past,
            MatRef::row_major(&b, 4, 3).unwrap(),
            false,
            MatMut::row_major(&mut c, 3, 3).unwrap()
        ),
        Err(KernelError::Shape(_))
    ));
}
