//! Packed ternary / binary GEMMs: every family bit-exact against the plain integer reference
//! on awkward sizes, all-zero / all-one inputs, strided views and thread counts; bad codes and
//! shapes are errors.

mod common;

use common::int_in;
use lowprec_kernels::lowbit::{
    gemm_ternary_planes_with, gemm_xnor_with, line_words, lowbit_gemm_ref, BitCode, BitIsa,
    PackedBits,
};
use lowprec_kernels::{MatMut, MatRef};

fn codes(seed: u64, stream: u64, len: usize, lo: i64, hi: i64, sign: bool) -> Vec<i8> {
    (0..len)
        .map(|i| {
            let v = int_in(seed, stream, i as u64, lo, hi) as i8;
            if sign && v == 0 {
                1
            } else {
                v
            }
        })
        .collect()
}

fn reference(a: &[i8], b: &[i8], m: usize, k: usize, n: usize) -> Vec<i32> {
    let mut c = vec![0i32; m * n];
    lowbit_gemm_ref(
        MatRef::row_major(a, m, k).unwrap(),
        MatRef::row_major(b, k, n).unwrap(),
        MatMut::row_major(&mut c, m, n).unwrap(),
    )
    .unwrap();
    c
}

/// Runs the ternary x planes GEMM on every family and checks it against the reference.
fn check_ternary(a: &[i8], b: &[i8], m: usize, k: usize, n: usize, bits: u32) {
    let want = reference(a, b, m, k, n);
    let pa =
        PackedBits::from_rows(MatRef::row_major(a, m, k).unwrap(), BitCode::Ternary, "A").unwrap();
    let pb = PackedBits::from_cols(
        MatRef::row_major(b, k, n).unwrap(),
        BitCode::Unsigned(bits),
        "B",
    )
    .unwrap();
    assert_eq!(pa.words, line_words(k));
    for isa in BitIsa::available() {
        let mut c = vec![i32::MIN; m * n];
        gemm_ternary_planes_with(isa, &pa, &pb, MatMut::row_major(&mut c, m, n).unwrap()).unwrap();
        assert_eq!(c, want, "{isa:?} ternary {m}x{k}x{n} bits {bits}");
    }
}

fn check_xnor(a: &[i8], b: &[i8], m: usize, k: usize, n: usize) {
    let want = reference(a, b, m, k, n);
    let pa =
        PackedBits::from_rows(MatRef::row_major(a, m, k).unwrap(), BitCode::Sign, "A").unwrap();
    let pb =
        PackedBits::from_cols(MatRef::row_major(b, k, n).unwrap(), BitCode::Sign, "B").unwrap();
    for isa in BitIsa::available() {
        let mut c = vec![i32::MIN; m * n];
        gemm_xnor_with(isa, &pa, &pb, MatMut::row_major(&mut c, m, n).unwrap()).unwrap();
        assert_eq!(c, want, "{isa:?} xnor {m}x{k}x{n}");
    }
}

const SIZES: [usize; 6] = [1, 7, 33, 63, 65, 130];
const KS: [usize; 10] = [1, 7, 63, 64, 65, 511, 513, 900, 1000, 1600];

#[test]
fn families_present() {
    let fams = BitIsa::available();
    assert_eq!(fams[0], BitIsa::Portable);
    // the best family the CPU runs, unless LOWPREC_ISA caps it lower
    use lowprec_formats::isa::{cap, IsaLevel};
    let best = *fams.iter().rev().find(|b| b.within_cap()).unwrap();
    assert_eq!(BitIsa::detect(), best);
    if cap() == IsaLevel::Avx512 {
        assert_eq!(best, *fams.last().unwrap());
    }
    eprintln!("packed low-bit families on this CPU: {fams:?}");
}

#[test]
fn ternary_planes_awkward_sizes() {
    let mut s = 0;
    for &m in &SIZES {
        for &k in &KS {
            let n = SIZES[(s + 2) % SIZES.len()];
            let bits = [2u32, 1, 3, 7][s % 4];
            s += 1;
            let a = codes(s as u64, 0, m * k, -1, 1, false);
            let b = codes(s as u64, 1, k * n, 0, (1 << bits) - 1, false);
            check_ternary(&a, &b, m, k, n, bits);
        }
    }
}

#[test]
fn binary_weights_through_the_ternary_kernel() {
    let (m, k, n) = (9, 1000, 70);
    let a = codes(3, 0, m * k, -1, 1, true);
    let b = codes(3, 1, k * n, 0, 3, false);
    check_ternary(&a, &b, m, k, n, 2);
}

#[test]
fn xnor_awkward_sizes() {
    let mut s = 100;
    for &m in &SIZES {
        for &k in &KS {
            let n = SIZES[(s + 1) % SIZES.len()];
            s += 1;
            let a = codes(s as u64, 0, m * k, -1, 1, true);
            let b = codes(s as u64, 1, k * n, -1, 1, true);
            check_xnor(&a, &b, m, k, n);
        }
    }
}

#[test]
fn large_k_and_many_columns() {
    // K beyond the AVX2 byte-fold (31 chunks of 256 bits = 7936) and N over a task's columns.
    let (m, k, n) = (5, 20_001, 300);
    let a = codes(7, 0, m * k, -1, 1, false);
    let b = codes(7, 1, k * n, 0, 3, false);
    check_ternary(&a, &b, m, k, n, 2);
    let a = codes(8, 0, m * k, -1, 1, true);
    let b = codes(8, 1, k * n, -1, 1, true);
    check_xnor(&a, &b, m, k, n);
}

#[test]
fn extremes_all_zero_all_one() {
    for &(m, k, n) in &[(1, 1, 1), (7, 65, 9), (17, 1000, 33)] {
        let zeros_a = vec![0i8; m * k];
        let zeros_b = vec![0i8; k * n];
        let ones_a = vec![1i8; m * k];
        let minus_a = vec![-1i8; m * k];
        let max_b = vec![3i8; k * n];
        check_ternary(&zeros_a, &max_b, m, k, n, 2);
        check_ternary(&ones_a, &zeros_b, m, k, n, 2);
        check_ternary(&ones_a, &max_b, m, k, n, 2);
        check_ternary(&minus_a, &max_b, m, k, n, 2);
        let full = vec![127i8; k * n];
        check_ternary(&minus_a, &full, m, k, n, 7);
        let ones_b = vec![1i8; k * n];
        let minus_b = vec![-1i8; k * n];
        check_xnor(&ones_a, &ones_b, m, k, n);
        check_xnor(&minus_a, &ones_b, m, k, n);
        check_xnor(&minus_a, &minus_b, m, k, n);
    }
    // every ternary x 3 product at K = 3 * 64: the top and bottom of the range
    let mut c = [0i32; 1];
    let a = vec![-1i8; 192];
    let b = vec![3i8; 192];
    let pa = PackedBits::from_rows(
        MatRef::row_major(&a, 1, 192).unwrap(),
        BitCode::Ternary,
        "A",
    )
    .unwrap();
    let pb = PackedBits::from_cols(
        MatRef::row_major(&b, 192, 1).unwrap(),
        BitCode::Unsigned(2),
        "B",
    )
    .unwrap();
    for isa in BitIsa::available() {
        gemm_ternary_planes_with(isa, &pa, &pb, MatMut::row_major(&mut c, 1, 1).unwrap()).unwrap();
        assert_eq!(c[0], -576);
    }
}

#[test]
fn strided_views_pack_like_contiguous() {
    let (m, k, n) = (6, 100, 5);
    let at = codes(11, 0, k * m, -1, 1, false); // stored K x M: A is its transpose
    let b = codes(11, 1, k * n, 0, 3, false);
    let a_view = MatRef::row_major(&at, k, m).unwrap().t();
    let a: Vec<i8> = (0..m * k).map(|i| a_view.at(i / k, i % k)).collect();
    let p1 = PackedBits::from_rows(a_view, BitCode::Ternary, "A").unwrap();
    let p2 =
        PackedBits::from_rows(MatRef::row_major(&a, m, k).unwrap(), BitCode::Ternary, "A").unwrap();
    assert_eq!(p1, p2);
    let bt: Vec<i8> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect(); // N x K
    let q1 = PackedBits::from_rows(
        MatRef::row_major(&bt, n, k).unwrap(),
        BitCode::Unsigned(2),
        "B",
    )
    .unwrap();
    let q2 = PackedBits::from_cols(
        MatRef::row_major(&b, k, n).unwrap(),
        BitCode::Unsigned(2),
        "B",
    )
    .unwrap();
    assert_eq!(q1, q2);
    check_ternary(&a, &b, m, k, n, 2);
}

#[test]
fn same_bits_at_any_thread_count() {
    let (m, k, n) = (40, 777, 600);
    let a = codes(21, 0, m * k, -1, 1, false);
    let b = codes(21, 1, k * n, 0, 3, false);
    let pa =
        PackedBits::from_rows(MatRef::row_major(&a, m, k).unwrap(), BitCode::Ternary, "A").unwrap();
    let pb = PackedBits::from_cols(
        MatRef::row_major(&b, k, n).unwrap(),
        BitCode::Unsigned(2),
        "B",
    )
    .unwrap();
    let run = |t: usize| {
        let mut c = vec![0i32; m * n];
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build()
            .unwrap()
            .install(|| {
                gemm_ternary_planes_with(
                    BitIsa::detect(),
                    &pa,
                    &pb,
                    MatMut::row_major(&mut c, m, n).unwrap(),
                )
            })
            .unwrap();
        c
    };
    let one = run(1);
    assert_eq!(one, run(2));
    assert_eq!(one, run(3));
    assert_eq!(one, reference(&a, &b, m, k, n));
}

#[test]
fn bad_codes_and_shapes_are_errors() {
    let a = vec![0i8, 1, 2, -1];
    let e = PackedBits::from_rows(MatRef::row_major(&a, 2, 2).unwrap(), BitCode::Ternary, "W")
        .unwrap_err()
        .to_string();
    assert!(e.contains("W[1,0] = 2"), "{e}");
    let b = vec![0i8, 3, 4, 1];
    let e = PackedBits::from_cols(
        MatRef::row_major(&b, 2, 2).unwrap(),
        BitCode::Unsigned(2),
        "X",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("X[1,0] = 4"), "{e}");
    let s = vec![1i8, 0];
    assert!(
        PackedBits::from_rows(MatRef::row_major(&s, 1, 2).unwrap(), BitCode::Sign, "S").is_err()
    );
    assert!(PackedBits::from_cols(
        MatRef::row_major(&b, 2, 2).unwrap(),
        BitCode::Unsigned(8),
        "X"
    )
    .is_err());
    // K mismatch, wrong kinds, C too small
    let pa = PackedBits::from_rows(
        MatRef::row_major(&[1i8, 0, -1], 1, 3).unwrap(),
        BitCode::Ternary,
        "A",
    )
    .unwrap();
    let pb = PackedBits::from_cols(
        MatRef::row_major(&[1i8, 2], 2, 1).unwrap(),
        BitCode::Unsigned(2),
        "B",
    )
    .unwrap();
    let mut c = [0i32; 1];
    assert!(gemm_ternary_planes_with(
        BitIsa::Portable,
        &pa,
        &pb,
        MatMut::row_major(&mut c, 1, 1).unwrap()
    )
    .is_err());
    assert!(gemm_xnor_with(
        BitIsa::Portable,
        &pa,
        &pa,
        MatMut::row_major(&mut c, 1, 1).unwrap()
    )
    .is_err());
    let pb3 = PackedBits::from_cols(
        MatRef::row_major(&[1i8, 2, 0, 1, 1, 1], 3, 2).unwrap(),
        BitCode::Unsigned(2),
        "B",
    )
    .unwrap();
    let mut small = [0i32; 1];
    let e = gemm_ternary_planes_with(
        BitIsa::Portable,
        &pa,
        &pb3,
        MatMut {
            data: &mut small,
            rows: 1,
            cols: 2,
            ld: 2,
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("C is 1x2"), "{e}");
    // truncated packed data
    let mut broken = pa.clone();
    broken.data.pop();
    assert!(gemm_ternary_planes_with(
        BitIsa::Portable,
        &broken,
        &pb3,
        MatMut::row_major(&mut [0i32; 2], 1, 2).unwrap()
    )
    .is_err());
}

#[test]
fn empty_operands() {
    let pa = PackedBits::from_rows(MatRef::row_major(&[], 0, 5).unwrap(), BitCode::Ternary, "A")
        .unwrap();
    let pb = PackedBits::from_cols(
        MatRef::row_major(&[0i8; 10], 5, 2).unwrap(),
        BitCode::Unsigned(2),
        "B",
    )
    .unwrap();
    for isa in BitIsa::available() {
        gemm_ternary_planes_with(isa, &pa, &pb, MatMut::row_major(&mut [], 0, 2).unwrap()).unwrap();
    }
    // K = 0: every dot is 0 (xnor: K - 2 * 0 = 0)
    let pa =
        PackedBits::from_rows(MatRef::row_major(&[], 3, 0).unwrap(), BitCode::Sign, "A").unwrap();
    let pb =
        PackedBits::from_cols(MatRef::row_major(&[], 0, 2).unwrap(), BitCode::Sign, "B").unwrap();
    for isa in BitIsa::available() {
        let mut c = [7i32; 6];
        gemm_xnor_with(isa, &pa, &pb, MatMut::row_major(&mut c, 3, 2).unwrap()).unwrap();
        assert_eq!(c, [0; 6]);
    }
}

#[test]
fn transpose64_matches_the_definition() {
    let mut a: [u64; 64] = std::array::from_fn(|i| common::draw(5, 0, i as u64));
    let orig = a;
    lowprec_kernels::lowbit::transpose64(&mut a);
    for r in 0..64 {
        for c in 0..64 {
            assert_eq!((a[c] >> r) & 1, (orig[r] >> c) & 1, "({r},{c})");
        }
    }
}

#[test]
fn column_packing_reports_the_first_bad_code_in_row_major_order() {
    // 70 columns (two packing tasks), bad codes in both; the first in row-major order wins.
    let (k, n) = (130, 70);
    let mut b = codes(9, 1, k * n, 0, 3, false);
    b[100 * n + 3] = -1;
    b[65 * n + 69] = 4;
    b[65 * n + 68] = 9;
    let e = PackedBits::from_cols(
        MatRef::row_major(&b, k, n).unwrap(),
        BitCode::Unsigned(2),
        "act",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("act[65,68] = 9"), "{e}");
    let mut t = codes(9, 2, k * n, -1, 1, false);
    t[7 * n + 50] = 2;
    let e = PackedBits::from_cols(MatRef::row_major(&t, k, n).unwrap(), BitCode::Ternary, "w")
        .unwrap_err()
        .to_string();
    assert!(e.contains("w[7,50] = 2"), "{e}");
    t[7 * n + 50] = 0;
    let e = PackedBits::from_cols(MatRef::row_major(&t, k, n).unwrap(), BitCode::Sign, "s")
        .unwrap_err()
        .to_string();
    assert!(e.contains("= 0 is not one of the binary codes"), "{e}");
    // the ternary columns pack as the rows of the transpose
    let tt: Vec<i8> = (0..n * k).map(|i| t[(i % k) * n + i / k]).collect();
    assert_eq!(
        PackedBits::from_cols(MatRef::row_major(&t, k, n).unwrap(), BitCode::Ternary, "w").unwrap(),
        PackedBits::from_rows(MatRef::row_major(&tt, n, k).unwrap(), BitCode::Ternary, "w")
            .unwrap()
    );
}
