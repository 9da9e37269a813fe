//! The implicit-im2col GEMM against the reference GEMM on the explicit im2col matrix, bit for
//! bit, and the default backend method (which materialises the matrix) against both.

mod common;

use common::*;
use lowprec_kernels::conv::im2col_ref;
use lowprec_kernels::reference::gemm_q8_ref;
use lowprec_kernels::{
    gemm_q8_conv_with, ConvShape, CpuBackend, GemmBackend, GemmSpec, Isa, KernelError, MatMut,
    MatRef, QConvRef, QMatRef, Scales,
};

/// A backend that only has the explicit path: exercises the trait's default `gemm_q8_conv`.
struct ExplicitOnly;

impl GemmBackend for ExplicitOnly {
    fn name(&self) -> String {
        "explicit".into()
    }
    fn gemm_q8(
        &self,
        a: QMatRef<'_, i8>,
        b: QMatRef<'_, i8>,
        spec: GemmSpec,
        c: MatMut<'_, f32>,
    ) -> Result<(), KernelError> {
        gemm_q8_ref(a, b, spec, c)
    }
    fn gemm_q16(
        &self,
        a: QMatRef<'_, i16>,
        b: QMatRef<'_, i16>,
        spec: GemmSpec,
        c: MatMut<'_, f32>,
    ) -> Result<(), KernelError> {
        lowprec_kernels::reference::gemm_q16_ref(a, b, spec, c)
    }
    fn gemm_f32(
        &self,
        a: MatRef<'_, f32>,
        b: MatRef<'_, f32>,
        accumulate: bool,
        c: MatMut<'_, f32>,
    ) -> Result<(), KernelError> {
        CpuBackend.gemm_f32(a, b, accumulate, c)
    }
}

fn assert_bits(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits(),
            "{what}: element {i}: got {g:e}, want {w:e}"
        );
    }
}

/// One convolution GEMM: `m` output channels, per-example input scales, per-row or uniform
/// weight scales, overwrite or accumulate.
fn check(seed: u64, s: ConvShape, batch: usize, m: usize, max_abs: u32, accumulate: bool) {
    let k = s.col_rows();
    let n = batch * s.out_pixels();
    let adata = rand_i8(seed, 1, m * k, max_abs);
    let xdata = rand_i8(seed, 2, batch * s.in_len(), max_abs);
    let sa = rand_scales(seed, 3, m);
    let sx = rand_scales(seed, 4, batch);
    let c0: Vec<f32> = (0..m * n)
        .map(|i| f32_in(seed, 5, i as u64, -4.0, 4.0))
        .collect();
    let a = QMatRef {
        mat: MatRef::row_major(&adata, m, k).unwrap(),
        scales: if seed.is_multiple_of(2) {
            Scales::per_index(&sa)
        } else {
            Scales::uniform(&sa[..1])
        },
        max_abs,
    };
    let scales = Scales::per_group(&sx, s.out_pixels());
    let col = im2col_ref(&s, &xdata, batch);
    let b_explicit = QMatRef {
        mat: MatRef::row_major(&col, k, n).unwrap(),
        scales,
        max_abs,
    };
    let b = QConvRef {
        data: &xdata,
        batch,
        shape: s,
        scales,
        max_abs,
    };
    let spec = GemmSpec {
        segment: usize::MAX,
        accumulate,
    };
    let mut want = c0.clone();
    gemm_q8_ref(
        a,
        b_explicit,
        spec,
        MatMut::row_major(&mut want, m, n).unwrap(),
    )
    .unwrap();
    let what = format!("{s:?} batch {batch} m {m} seed {seed}");
    for isa in [Isa::Generic, Isa::Avx2] {
        let mut got = c0.clone();
        gemm_q8_conv_with(isa, a, b, spec, MatMut::row_major(&mut got, m, n).unwrap()).unwrap();
        assert_bits(&got, &want, &format!("{isa:?} {what}"));
    }
    for backend in [&CpuBackend as &dyn GemmBackend, &ExplicitOnly] {
        let mut got = c0.clone();
        backend
            .gemm_q8_conv(a, b, spec, MatMut::row_major(&mut got, m, n).unwrap())
            .unwrap();
        assert_bits(&got, &want, &format!("{} {what}", backend.name()));
    }
}

fn shape(cin: usize, h: usize, w: usize, k: usize, stride: usize, pad: usize) -> ConvShape {
    ConvShape {
        cin,
        h,
        w,
        k,
        stride,
        pad,
    }
}

#[test]
fn implicit_conv_gemm_matches_reference() {
    let cases = [
        // (shape, batch, m): same 3x3 convolutions on maps of 32, 16 and 8 (the fast and the
        // portable packers), a 1x1, strided, valid and wide-kernel ones, awkward sizes.
        (shape(3, 32, 32, 3, 1, 1), 2, 16),
        (shape(16, 16, 16, 3, 1, 1), 3, 7),
        (shape(5, 16, 48, 3, 1, 1), 1, 33),
        (shape(8, 8, 8, 3, 1, 1), 5, 1),
        (shape(7, 16, 16, 1, 1, 0), 2, 6),
        (shape(4, 17, 17, 3, 2, 1), 2, 12),
        (shape(1, 18, 18, 3, 1, 0), 1, 5),
        (shape(2, 20, 16, 5, 1, 4), 1, 3),
        (shape(1, 1, 1, 1, 1, 0), 1, 1),
        // big enough to be split over threads
        (shape(16, 32, 32, 3, 1, 1), 2, 16),
        // K past one packing step (512): 64 channels x 9 = 576 rows
        (shape(64, 16, 16, 3, 1, 1), 1, 10),
    ];
    let mut seed = 1;
    for (s, batch, m) in cases {
        for accumulate in [false, true] {
            seed += 1;
            check(seed, s, batch, m, 127, accumulate);
        }
    }
    // 1000+ columns and rows at the extremes (every mantissa +-127)
    check(99, shape(2, 32, 32, 3, 1, 1), 2, 7, 127, false);
}

#[test]
fn implicit_conv_gemm_extremes() {
    // All mantissas at the largest magnitude, one sign: the longest exact sums.
    let s = shape(64, 16, 16, 3, 1, 1);
    let (m, batch) = (6, 2);
    let (k, n) = (s.col_rows(), batch * s.out_pixels());
    let adata = vec![127i8; m * k];
    let xdata = vec![-127i8; batch * s.in_len()];
    let one = [1.0f32];
    let a = QMatRef {
        mat: MatRef::row_major(&adata, m, k).unwrap(),
        scales: Scales::uniform(&one),
        max_abs: 127,
    };
    let b = QConvRef {
        data: &xdata,
        batch,
        shape: s,
        scales: Scales::uniform(&one),
        max_abs: 127,
    };
    let mut got = vec![f32::NAN; m * n];
    gemm_q8_conv_with(
        Isa::detect(),
        a,
        b,
        GemmSpec::whole_k(),
        MatMut::row_major(&mut got, m, n).unwrap(),
    )
    .unwrap();
    // an interior pixel sees all 576 taps, a corner 4 * 64
    let inner = s.w + 1;
    assert_eq!(got[inner], -(127.0 * 127.0 * 576.0));
    assert_eq!(got[0], -(127.0 * 127.0 * 4.0 * 64.0));
}

#[test]
fn implicit_conv_gemm_errors() {
    let s = shape(2, 4, 4, 3, 1, 1);
    let (m, batch) = (3, 2);
    let k = s.col_rows();
    let n = batch * s.out_pixels();
    let adata = vec![1i8; m * k];
    let one = [1.0f32];
    let a = QMatRef {
        mat: MatRef::row_major(&adata, m, k).unwrap(),
        scales: Scales::uniform(&one),
        max_abs: 127,
    };
    let mut xdata = vec![1i8; batch * s.in_len()];
    xdata[17] = -128; // outside max_abs 127
    let b = QConvRef {
        data: &xdata,
        batch,
        shape: s,
        scales: Scales::uniform(&one),
        max_abs: 127,
    };
    let mut c = vec![0f32; m * n];
    let e = gemm_q8_conv_with(
        Isa::detect(),
        a,
        b,
        GemmSpec::whole_k(),
        MatMut::row_major(&mut c, m, n).unwrap(),
    )
    .unwrap_err();
    assert!(matches!(e, KernelError::Range(_)), "{e}");
    assert!(e.to_string().contains('B'), "{e}");
    // wrong number of input values
    let short = QConvRef {
        data: &xdata[1..],
        ..b
    };
    let e = gemm_q8_conv_with(
        Isa::detect(),
        a,
        short,
        GemmSpec::whole_k(),
        MatMut::row_major(&mut c, m, n).unwrap(),
    )
    .unwrap_err();
    assert!(matches!(e, KernelError::Shape(_)), "{e}");
    // A with the wrong K
    let a_bad = QMatRef {
        mat: MatRef::row_major(&adata, m, k - 1).unwrap(),
        ..a
    };
    let ok = QConvRef { data: &xdata, ..b };
    let e = gemm_q8_conv_with(
        Isa::detect(),
        a_bad,
        ok,
        GemmSpec::whole_k(),
        MatMut::row_major(&mut c, m, n).unwrap(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("inner dimensions"), "{e}");
}
