//! Convolution, im2col/col2im, pooling, batch norm and residual add against plain references.

use lowprec_formats::rng::{stream_id, uniform_f32};
use lowprec_formats::StreamKey;
use lowprec_kernels::CpuBackend;
use lowprec_nn::batchnorm::BatchNorm2d;
use lowprec_nn::conv::Conv2d;
use lowprec_nn::ctx::StreamKind;
use lowprec_nn::im2col::{
    col2im, col2im_ref, im2col, im2col_ref, im2col_rows, im2col_shift_rows, shift_rows_len,
    ConvGeom,
};
use lowprec_nn::operand::{quantize_matrix, Operand, QData};
use lowprec_nn::pool::{GlobalAvgPool, Pool2d, PoolKind};
use lowprec_nn::residual::Add;
use lowprec_nn::{Ctx, Layer, Model, NetworkSpec, NnError, Precision, Tensor};

fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let key = StreamKey::new(seed, 77);
    (0..n)
        .map(|i| uniform_f32(key, i as u64) * 2.0 - 1.0)
        .collect()
}

fn pool(n: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .unwrap()
}

/// (cin, h, w, k, stride, pad, cout)
const SHAPES: &[(usize, usize, usize, usize, usize, usize, usize)] = &[
    (1, 1, 1, 1, 1, 0, 1),
    (3, 7, 5, 3, 1, 1, 7),
    (7, 9, 9, 3, 2, 1, 3),
    (2, 8, 6, 5, 2, 2, 4),
    (3, 6, 6, 1, 2, 0, 5),
    (1, 5, 7, 3, 3, 0, 2),
    (4, 3, 3, 3, 1, 2, 2),
    // Outputs wider than 8 take the row-copy paths of im2col/col2im (narrower ones use tables).
    (2, 11, 12, 3, 1, 1, 3),
    (3, 10, 20, 3, 2, 1, 2),
    (1, 9, 33, 5, 1, 2, 1),
    (2, 7, 30, 3, 3, 1, 2),
    // "Same" convolutions (stride 1, output = input size) from width 3 on take the
    // shifted-plane im2col; kernels wider than the map wrap around more than one border column.
    (5, 2, 2, 3, 1, 1, 3),
    (2, 8, 8, 3, 1, 1, 2),
    (3, 4, 4, 3, 1, 1, 2),
    (2, 3, 3, 3, 1, 1, 2),
    (1, 6, 4, 5, 1, 2, 1),
    (3, 1, 9, 3, 1, 1, 2),
    (2, 4, 10, 7, 1, 3, 2),
    (2, 3, 9, 9, 1, 4, 1),
    // 32 channels or more (once the float GEMM's transposed orientation on CPUs with AVX-512),
    // in the forward pass and in the transposed convolution of dX.
    (3, 9, 9, 3, 1, 1, 33),
    (33, 5, 6, 3, 1, 1, 4),
    (2, 6, 5, 3, 2, 1, 40),
    // 3x3 stride-2 convolutions halving an even map (im2col and col2im row by row), from a
    // 2x2 map up.
    (2, 8, 8, 3, 2, 1, 3),
    (1, 2, 2, 3, 2, 1, 2),
    (3, 4, 6, 3, 2, 1, 2),
    (2, 32, 18, 3, 2, 1, 2),
    // 512 channels or more: the float weight gradient with Cout as M (`DW_COUT_MAJOR_MIN`),
    // stride 1 and 2.
    (2, 3, 4, 3, 1, 1, 513),
    (3, 5, 5, 3, 2, 1, 512),
];

#[test]
fn im2col_matches_reference_i8_and_f32() {
    for (i, &(cin, h, w, k, s, p, _)) in SHAPES.iter().enumerate() {
        let g = ConvGeom::new(cin, h, w, k, s, p).unwrap();
        for nb in [1, 3] {
            let xf = rand_vec(nb * g.in_len(), i as u64);
            let xi: Vec<i8> = xf.iter().map(|v| (v * 127.0) as i8).collect();
            let mut cf = vec![f32::NAN; g.col_rows() * nb * g.out_pixels()];
            im2col(&g, &xf, nb, &mut cf);
            assert_eq!(cf, im2col_ref(&g, &xf, nb), "f32 {g:?}");
            let mut ci = vec![99i8; cf.len()];
            im2col(&g, &xi, nb, &mut ci);
            assert_eq!(ci, im2col_ref(&g, &xi, nb), "i8 {g:?}");
        }
    }
}

/// Output-row pieces of im2col (what the float path's large examples are cut into) are the
/// matching columns of the whole matrix, on every path (shifted planes, tables, row copies) and
/// for pieces that start or end in the padding.
#[test]
fn im2col_rows_are_column_pieces_of_im2col() {
    for (i, &(cin, h, w, k, s, p, _)) in SHAPES.iter().enumerate() {
        let g = ConvGeom::new(cin, h, w, k, s, p).unwrap();
        let nb = 2;
        let xf = rand_vec(nb * g.in_len(), 40 + i as u64);
        let full = im2col_ref(&g, &xf, nb);
        let (pa, ho, wo) = (g.out_pixels(), g.ho, g.wo);
        let mut ranges = vec![(0, ho), (0, 1), (ho - 1, ho), (ho / 2, ho / 2)];
        if ho > 2 {
            ranges.extend([(1, ho - 1), (0, ho / 2), (ho / 2, ho)]);
        }
        for (oy0, oy1) in ranges {
            let np = (oy1 - oy0) * wo;
            let mut piece = vec![f32::NAN; g.col_rows() * nb * np];
            im2col_rows(&g, &xf, nb, oy0, oy1, &mut piece);
            let want: Vec<f32> = (0..g.col_rows())
                .flat_map(|r| {
                    let full = &full;
                    (0..nb).flat_map(move |j| {
                        full[r * nb * pa + j * pa + oy0 * wo..][..np]
                            .iter()
                            .copied()
                    })
                })
                .collect();
            assert_eq!(piece, want, "{g:?} rows {oy0}..{oy1}");
        }
    }
}

/// The kernel-row-shared columns of "same" convolutions: every im2col row `(c, ki, kj)` of
/// output rows `oy0 .. oy1` is the window from column `ki * w` of shared row `(c, kj)`, for
/// kernels 1 to 9, maps from 1 to 33 wide and pieces that start or end in the padding; the
/// values around the windows are the padding's zeros or input values (no stale slots).
#[test]
fn shared_kernel_row_columns_hold_every_im2col_row() {
    let mut same = 0;
    for (i, &(cin, h, w, k, s, p, _)) in SHAPES.iter().enumerate() {
        let g = ConvGeom::new(cin, h, w, k, s, p).unwrap();
        if !g.is_same() {
            continue;
        }
        same += 1;
        let xf = rand_vec(g.in_len(), 60 + i as u64);
        let full = im2col_ref(&g, &xf, 1);
        let (pa, ho, wo) = (g.out_pixels(), g.ho, g.wo);
        let mut ranges = vec![(0, ho), (0, 1), (ho - 1, ho), (ho / 2, ho / 2)];
        if ho > 2 {
            ranges.extend([(1, ho - 1), (0, ho / 2), (ho / 2, ho)]);
        }
        for (oy0, oy1) in ranges {
            let len = shift_rows_len(&g, oy0, oy1);
            let mut shared = vec![f32::NAN; cin * k * len];
            im2col_shift_rows(&g, &xf, oy0, oy1, &mut shared);
            assert!(
                shared.iter().all(|v| v.is_finite()),
                "{g:?} rows {oy0}..{oy1}"
            );
            let np = (oy1 - oy0) * wo;
            for c in 0..cin {
                for ki in 0..k {
                    for kj in 0..k {
                        let r = (c * k + ki) * k + kj;
                        let want = &full[r * pa + oy0 * wo..][..np];
                        let got = &shared[(c * k + kj) * len + ki * g.w..][..np];
                        assert_eq!(got, want, "{g:?} rows {oy0}..{oy1}, row ({c}, {ki}, {kj})");
                    }
                }
            }
        }
    }
    assert!(same >= 8, "the shapes hold {same} same convolutions");
}

#[test]
fn col2im_is_the_adjoint_of_im2col() {
    for (i, &(cin, h, w, k, s, p, _)) in SHAPES.iter().enumerate() {
        let g = ConvGeom::new(cin, h, w, k, s, p).unwrap();
        let nb = 2;
        let x = rand_vec(nb * g.in_len(), 10 + i as u64);
        let y = rand_vec(g.col_rows() * nb * g.out_pixels(), 20 + i as u64);
        let mut col = vec![0f32; y.len()];
        im2col(&g, &x, nb, &mut col);
        let mut back = vec![f32::NAN; x.len()];
        col2im(&g, &y, nb, &mut back);
        let lhs: f64 = col.iter().zip(&y).map(|(a, b)| *a as f64 * *b as f64).sum();
        let rhs: f64 = x
            .iter()
            .zip(&back)
            .map(|(a, b)| *a as f64 * *b as f64)
            .sum();
        assert!(
            (lhs - rhs).abs() <= 1e-5 * (1.0 + lhs.abs()),
            "{g:?}: {lhs} vs {rhs}"
        );
    }
}

#[test]
fn col2im_matches_reference_bit_for_bit() {
    // The SHAPES, then halving 3x3 stride-2 layers (their own row-by-row path), narrow and
    // wide, and one whose input is odd (the general loop).
    let extra = [
        (2, 8, 6, 3, 2, 1),
        (1, 2, 2, 3, 2, 1),
        (3, 32, 32, 3, 2, 1),
        (2, 4, 34, 3, 2, 1),
        (2, 9, 8, 3, 2, 1),
    ];
    let shapes = SHAPES
        .iter()
        .map(|&(cin, h, w, k, s, p, _)| (cin, h, w, k, s, p))
        .chain(extra);
    for (i, (cin, h, w, k, s, p)) in shapes.enumerate() {
        let g = ConvGeom::new(cin, h, w, k, s, p).unwrap();
        for nb in [1, 3] {
            let col = rand_vec(g.col_rows() * nb * g.out_pixels(), 40 + i as u64);
            let mut dx = vec![f32::NAN; nb * g.in_len()];
            col2im(&g, &col, nb, &mut dx);
            let want = col2im_ref(&g, &col, nb);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert!(bits(&dx) == bits(&want), "{g:?}, {nb} examples");
        }
    }
}

#[test]
fn geometry_errors_are_clear() {
    assert!(ConvGeom::new(3, 2, 2, 5, 1, 0)
        .unwrap_err()
        .contains("larger"));
    assert!(ConvGeom::new(3, 2, 2, 0, 1, 0).is_err());
    assert!(ConvGeom::new(0, 2, 2, 1, 1, 0).is_err());
    assert!(Conv2d::new(1, "c", &[12], 4, 3, 1, 1, false, 0).is_err());
}

/// Direct seven-loop convolution in f64.
fn conv_ref(g: &ConvGeom, cout: usize, x: &[f64], w: &[f64], bias: &[f64], b: usize) -> Vec<f64> {
    let mut y = vec![0f64; b * cout * g.out_pixels()];
    for n in 0..b {
        for co in 0..cout {
            for oy in 0..g.ho {
                for ox in 0..g.wo {
                    let mut s = bias.get(co).copied().unwrap_or(0.0);
                    for c in 0..g.cin {
                        for ki in 0..g.k {
                            for kj in 0..g.k {
                                let iy = (oy * g.stride + ki) as isize - g.pad as isize;
                                let ix = (ox * g.stride + kj) as isize - g.pad as isize;
                                if iy < 0 || ix < 0 || iy as usize >= g.h || ix as usize >= g.w {
                                    continue;
                                }
                                s += w[((co * g.cin + c) * g.k + ki) * g.k + kj]
                                    * x[((n * g.cin + c) * g.h + iy as usize) * g.w + ix as usize];
                            }
                        }
                    }
                    y[((n * cout + co) * g.ho + oy) * g.wo + ox] = s;
                }
            }
        }
    }
    y
}

/// Gradients of `sum(y * dy)` by the same seven loops: (dx, dw, db).
fn conv_grad_ref(
    g: &ConvGeom,
    cout: usize,
    x: &[f64],
    w: &[f64],
    dy: &[f64],
    b: usize,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut dx = vec![0f64; x.len()];
    let mut dw = vec![0f64; w.len()];
    let mut db = vec![0f64; cout];
    for n in 0..b {
        for co in 0..cout {
            for oy in 0..g.ho {
                for ox in 0..g.wo {
                    let d = dy[((n * cout + co) * g.ho + oy) * g.wo + ox];
                    db[co] += d;
                    for c in 0..g.cin {
                        for ki in 0..g.k {
                            for kj in 0..g.k {
                                let iy = (oy * g.stride + ki) as isize - g.pad as isize;
                                let ix = (ox * g.stride + kj) as isize - g.pad as isize;
                                if iy < 0 || ix < 0 || iy as usize >= g.h || ix as usize >= g.w {
                                    continue;
                                }
                                let xi = ((n * g.cin + c) * g.h + iy as usize) * g.w + ix as usize;
                                let wi = ((co * g.cin + c) * g.k + ki) * g.k + kj;
                                dx[xi] += w[wi] * d;
                                dw[wi] += x[xi] * d;
                            }
                        }
                    }
                }
            }
        }
    }
    (dx, dw, db)
}

fn close(a: &[f32], b: &[f64], tol: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let scale = b.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (*x as f64 - y).abs() <= tol * scale,
            "{what}[{i}]: {x} vs {y} (scale {scale})"
        );
    }
}

fn to64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

#[test]
fn fp32_conv_forward_backward_match_seven_loop_reference() {
    let backend = CpuBackend;
    let policy = Precision::fp32();
    for (i, &(cin, h, w, k, s, p, cout)) in SHAPES.iter().enumerate() {
        for b in [1, 3] {
            let mut conv = Conv2d::new(1, "c", &[cin, h, w], cout, k, s, p, true, 7).unwrap();
            let g = conv.geom;
            conv.bias.as_mut().unwrap().value = rand_vec(cout, 5);
            let x = rand_vec(b * g.in_len(), 100 + i as u64);
            let mut ctx = Ctx::new(&backend, &policy, 1);
            let xt = Tensor::new(x.clone(), vec![b, cin, h, w]).unwrap();
            let y = conv.forward(&mut ctx, &[&xt], true).unwrap();
            assert_eq!(y.shape, vec![b, cout, g.ho, g.wo]);
            let (x64, w64) = (to64(&x), to64(&conv.weight.value));
            let b64 = to64(&conv.bias.as_ref().unwrap().value);
            close(&y.data, &conv_ref(&g, cout, &x64, &w64, &b64, b), 1e-5, "y");
            let dy = rand_vec(y.len(), 200 + i as u64);
            let dxs = conv
                .backward(&mut ctx, Tensor::new(dy.clone(), y.shape.clone()).unwrap())
                .unwrap();
            let (dx, dw, db) = conv_grad_ref(&g, cout, &x64, &w64, &to64(&dy), b);
            close(&dxs[0].data, &dx, 1e-5, "dx");
            close(&conv.weight.grad, &dw, 1e-5, "dw");
            close(&conv.bias.as_ref().unwrap().grad, &db, 1e-5, "db");
        }
    }
}

#[test]
fn conv_finite_differences() {
    // loss = sum(y * r); central differences on a few inputs and weights.
    let backend = CpuBackend;
    let policy = Precision::fp32();
    let mut conv = Conv2d::new(3, "c", &[2, 5, 4], 3, 3, 2, 1, true, 11).unwrap();
    let b = 2;
    let x = rand_vec(b * 40, 31);
    let r = rand_vec(b * 3 * conv.geom.out_pixels(), 32);
    let loss = |conv: &mut Conv2d, x: &[f32]| -> f64 {
        let mut ctx = Ctx::new(&backend, &policy, 1);
        let y = conv
            .forward(
                &mut ctx,
                &[&Tensor::new(x.to_vec(), vec![b, 2, 5, 4]).unwrap()],
                false,
            )
            .unwrap();
        y.data
            .iter()
            .zip(&r)
            .map(|(a, b)| *a as f64 * *b as f64)
            .sum()
    };
    let mut ctx = Ctx::new(&backend, &policy, 1);
    let xt = Tensor::new(x.clone(), vec![b, 2, 5, 4]).unwrap();
    let y = conv.forward(&mut ctx, &[&xt], true).unwrap();
    let dx = conv
        .backward(&mut ctx, Tensor::new(r.clone(), y.shape).unwrap())
        .unwrap()
        .remove(0);
    let eps = 1e-2f32;
    for i in [0, 7, 19, 40, 79] {
        let (mut xp, mut xm) = (x.clone(), x.clone());
        xp[i] += eps;
        xm[i] -= eps;
        let fd = (loss(&mut conv, &xp) - loss(&mut conv, &xm)) / (2.0 * eps as f64);
        assert!(
            (fd - dx.data[i] as f64).abs() < 1e-3,
            "dx[{i}] {fd} vs {}",
            dx.data[i]
        );
    }
    let gw = conv.weight.grad.clone();
    for i in [0, 5, 17, 53] {
        let w0 = conv.weight.value[i];
        conv.weight.value[i] = w0 + eps;
        conv.weight.version += 1;
        let lp = loss(&mut conv, &x);
        conv.weight.value[i] = w0 - eps;
        conv.weight.version += 1;
        let lm = loss(&mut conv, &x);
        conv.weight.value[i] = w0;
        conv.weight.version += 1;
        let fd = (lp - lm) / (2.0 * eps as f64);
        assert!(
            (fd - gw[i] as f64).abs() < 1e-3,
            "dw[{i}] {fd} vs {}",
            gw[i]
        );
    }
}

/// Mantissas and scales as the layer's quantiser produces them.
fn quantized(
    x: &[f32],
    rows: usize,
    cols: usize,
    fmt: &lowprec_formats::NumberFormat,
    key: StreamKey,
) -> (Vec<i64>, Vec<f32>) {
    match quantize_matrix(x, rows, cols, fmt, key, "t", "test", 0).unwrap() {
        Operand::Q(q) => {
            let m = match q.data {
                QData::I8(v) => v.iter().map(|&a| a as i64).collect(),
                QData::I16(v) => v.iter().map(|&a| a as i64).collect(),
            };
            let s = if q.scales.len() == 1 {
                vec![q.scales[0]; rows]
            } else {
                q.scales
            };
            (m, s)
        }
        _ => panic!("expected BFP"),
    }
}

#[test]
fn bfp8_conv_is_bit_exact_against_integer_reference() {
    // 002's per-example exponents, and one exponent per tensor for activations and errors.
    for policy in [
        "bfp8",
        "bfp8,acts=bfp8:tensor:stochastic,errors=bfp8:tensor:stochastic",
    ] {
        bit_exact_case(&policy.parse().unwrap());
    }
}

fn bit_exact_case(policy: &Precision) {
    let backend = CpuBackend;
    let (id, seed, step) = (4u64, 9u64, 3u64);
    for (i, &(cin, h, w, k, s, p, cout)) in SHAPES.iter().enumerate() {
        let b = 3;
        let mut conv = Conv2d::new(id, "c", &[cin, h, w], cout, k, s, p, true, 1).unwrap();
        conv.bias.as_mut().unwrap().value = rand_vec(cout, 8);
        conv.weight.version = 5;
        let g = conv.geom;
        let (rows, pp) = (g.col_rows(), g.out_pixels());
        // Awkward magnitudes: one example tiny, one large.
        let mut x = rand_vec(b * g.in_len(), 300 + i as u64);
        x[..g.in_len()].iter_mut().for_each(|v| *v *= 1e-6);
        x[2 * g.in_len()..].iter_mut().for_each(|v| *v *= 1e5);
        let mut ctx = Ctx::new(&backend, policy, seed);
        ctx.step = step;
        let xt = Tensor::new(x.clone(), vec![b, cin, h, w]).unwrap();
        let y = conv.forward(&mut ctx, &[&xt], true).unwrap();

        let (xm, xs) = quantized(
            &x,
            b,
            g.in_len(),
            &policy.acts,
            ctx.key(id, StreamKind::Acts),
        );
        let wkey = StreamKey::new(seed, stream_id(&[id, StreamKind::Weights as u64, 5]));
        let (wm, ws) = quantized(&conv.weight.value, cout, rows, &policy.weights, wkey);
        let col = im2col_ref(&g, &xm, b);
        let n = b * pp;
        let bias = &conv.bias.as_ref().unwrap().value;
        for j in 0..b {
            for co in 0..cout {
                for q in 0..pp {
                    let acc: i64 = (0..rows)
                        .map(|r| wm[co * rows + r] * col[r * n + j * pp + q])
                        .sum();
                    let want = ((acc as f32) * ws[co]) * xs[j] + bias[co];
                    let got = y.data[(j * cout + co) * pp + q];
                    assert_eq!(got.to_bits(), want.to_bits(), "y {g:?} ({j},{co},{q})");
                }
            }
        }

        let dy = rand_vec(y.len(), 400 + i as u64);
        let dxs = conv
            .backward(&mut ctx, Tensor::new(dy.clone(), y.shape.clone()).unwrap())
            .unwrap();
        let (em, es) = quantized(
            &dy,
            b,
            cout * pp,
            &policy.errors,
            ctx.key(id, StreamKind::Errors),
        );
        // dW: examples grouped by the product of their two scales (in order of first
        // appearance); one exact integer sum per group, rescaled by that product, groups added
        // in order (three examples fit one piece of every group).
        let mut groups: Vec<(f32, Vec<usize>)> = Vec::new();
        for j in 0..b {
            let prod = es[j] * xs[j];
            match groups
                .iter_mut()
                .find(|(s, _)| s.to_bits() == prod.to_bits())
            {
                Some((_, m)) => m.push(j),
                None => groups.push((prod, vec![j])),
            }
        }
        if policy.name == "bfp8" {
            // Per-example exponents and examples 1e11 apart: more than one group.
            assert!(
                groups.len() >= 2,
                "the test wants examples with different scales"
            );
        }
        for co in 0..cout {
            for r in 0..rows {
                let mut c = 0f32;
                for (prod, members) in &groups {
                    let acc: i64 = members
                        .iter()
                        .flat_map(|&j| (0..pp).map(move |q| (j, q)))
                        .map(|(j, q)| em[(j * cout + co) * pp + q] * col[r * n + j * pp + q])
                        .sum();
                    c += (acc as f32) * prod;
                }
                assert_eq!(
                    conv.weight.grad[co * rows + r].to_bits(),
                    c.to_bits(),
                    "dw {g:?}"
                );
            }
        }
        if s == 1 {
            // Stride 1: dX is the transposed convolution, one integer sum per input value over
            // every (output channel, kernel offset) that reads it, rescaled once.
            let mut dx = vec![0f32; b * g.in_len()];
            for j in 0..b {
                for ci in 0..cin {
                    for iy in 0..h {
                        for ix in 0..w {
                            let mut acc = 0i64;
                            for co in 0..cout {
                                for ki in 0..k {
                                    for kj in 0..k {
                                        let oy = iy as isize + p as isize - ki as isize;
                                        let ox = ix as isize + p as isize - kj as isize;
                                        if oy < 0
                                            || ox < 0
                                            || oy as usize >= g.ho
                                            || ox as usize >= g.wo
                                        {
                                            continue;
                                        }
                                        let q = oy as usize * g.wo + ox as usize;
                                        acc += wm[((co * cin + ci) * k + ki) * k + kj]
                                            * em[(j * cout + co) * pp + q];
                                    }
                                }
                            }
                            dx[((j * cin + ci) * h + iy) * w + ix] = ((acc as f32) * ws[0]) * es[j];
                        }
                    }
                }
            }
            let same = dx
                .iter()
                .zip(&dxs[0].data)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "dx (transposed) {g:?}");
            continue;
        }
        // Strided: dcol = W~^T dY~ rescaled, then col2im (tested against the adjoint above).
        let mut dcol = vec![0f32; rows * n];
        for r in 0..rows {
            for j in 0..b {
                for q in 0..pp {
                    let acc: i64 = (0..cout)
                        .map(|co| wm[co * rows + r] * em[(j * cout + co) * pp + q])
                        .sum();
                    dcol[r * n + j * pp + q] = ((acc as f32) * ws[0]) * es[j];
                }
            }
        }
        let mut dx = vec![0f32; b * g.in_len()];
        col2im(&g, &dcol, b, &mut dx);
        let same = dx
            .iter()
            .zip(&dxs[0].data)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "dx {g:?}");
    }
}

fn run_net(spec: &str, precision: &str, threads: usize, b: usize) -> (Vec<u32>, Vec<u32>) {
    run_net_fused(spec, precision, threads, b, true)
}

/// Forward (training mode) and backward of `spec` on a random batch: the output bits, then the
/// parameter gradients' bits followed by the evaluation-mode output's.
fn run_net_fused(
    spec: &str,
    precision: &str,
    threads: usize,
    b: usize,
    fuse: bool,
) -> (Vec<u32>, Vec<u32>) {
    run_net_with(
        spec,
        precision,
        threads,
        b,
        lowprec_nn::model::build_layer,
        fuse,
    )
}

fn run_net_with(
    spec: &str,
    precision: &str,
    threads: usize,
    b: usize,
    factory: lowprec_nn::model::LayerFactory,
    fuse: bool,
) -> (Vec<u32>, Vec<u32>) {
    let spec: NetworkSpec = toml::from_str(spec).unwrap();
    let policy: Precision = precision.parse().unwrap();
    pool(threads).install(|| {
        let mut model = Model::build_with_fusion(&spec, 3, factory, fuse).unwrap();
        let backend = CpuBackend;
        let mut ctx = Ctx::new(&backend, &policy, 5);
        let mut shape = vec![b];
        shape.extend_from_slice(&spec.input);
        let n: usize = shape.iter().product();
        let x = Tensor::new(rand_vec(n, 61), shape).unwrap();
        let y = model.forward(&mut ctx, x, true).unwrap();
        let dy = Tensor::new(rand_vec(y.len(), 62), y.shape.clone()).unwrap();
        model.backward(&mut ctx, dy).unwrap();
        let mut grads: Vec<u32> = model
            .params()
            .iter()
            .flat_map(|p| p.grad.iter().map(|v| v.to_bits()))
            .collect();
        let x = Tensor::new(
            rand_vec(n, 63),
            y.shape[..1].iter().chain(&spec.input).copied().collect(),
        )
        .unwrap();
        let ye = model.forward(&mut ctx, x, false).unwrap();
        grads.extend(ye.data.iter().map(|v| v.to_bits()));
        (y.data.iter().map(|v| v.to_bits()).collect(), grads)
    })
}

/// Batch norm with the following ReLU folded in computes exactly what the two layers compute
/// one after the other: outputs, every parameter gradient, evaluation outputs.
#[test]
fn relu_folded_into_batch_norm_gives_the_same_bits() {
    let spec: NetworkSpec = toml::from_str(SMALL_RESNET).unwrap();
    let fused = Model::build(&spec, 3).unwrap();
    assert_eq!(
        fused.summary().matches("+relu").count(),
        2,
        "{}",
        fused.summary()
    );
    assert_eq!(fused.nodes.iter().filter(|n| n.absorbed).count(), 2);
    let plain = Model::build_with_fusion(&spec, 3, lowprec_nn::model::build_layer, false).unwrap();
    assert!(!plain.summary().contains("+relu"));
    for precision in ["bfp8", "fp32"] {
        for threads in [1, 2] {
            let a = run_net_fused(SMALL_RESNET, precision, threads, 5, true);
            let b = run_net_fused(SMALL_RESNET, precision, threads, 5, false);
            assert!(
                a == b,
                "{precision} at {threads} threads: folding changed the bits"
            );
        }
    }
}

const SMALL_RESNET: &str = r#"
input = [3, 12, 12]
loss = "cross-entropy"
[[layer]]
type = "conv"
name = "stem"
out = 8
kernel = 3
padding = 1
[[layer]]
type = "batchnorm"
[[layer]]
type = "relu"
name = "r1"
[[layer]]
type = "conv"
out = 16
kernel = 3
stride = 2
padding = 1
[[layer]]
type = "batchnorm"
[[layer]]
type = "relu"
[[layer]]
type = "conv"
name = "c2"
out = 16
kernel = 3
padding = 1
[[layer]]
type = "conv"
name = "down"
from = ["r1"]
out = 16
kernel = 1
stride = 2
[[layer]]
type = "add"
from = ["c2", "down"]
[[layer]]
type = "maxpool"
kernel = 2
[[layer]]
type = "avgpool"
kernel = 3
stride = 1
[[layer]]
type = "global-avg-pool"
[[layer]]
type = "dropout"
p = 0.25
[[layer]]
type = "linear"
out = 10
"#;

/// A layer as [`lowprec_nn::model::build_layer`] makes it, with the `Layer` defaults for a
/// shared gradient: the model copies a residual sum's gradient for every input but the last
/// (what it did before sharing it).
struct Copying(Box<dyn Layer>);

impl Layer for Copying {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn describe(&self) -> String {
        self.0.describe()
    }
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>, NnError> {
        self.0.output_shape(inputs)
    }
    fn forward(
        &mut self,
        ctx: &mut Ctx<'_>,
        inputs: &[&Tensor],
        train: bool,
    ) -> Result<Tensor, NnError> {
        self.0.forward(ctx, inputs, train)
    }
    fn forward_owned(
        &mut self,
        ctx: &mut Ctx<'_>,
        x: Tensor,
        train: bool,
    ) -> Result<Tensor, NnError> {
        self.0.forward_owned(ctx, x, train)
    }
    fn backward(&mut self, ctx: &mut Ctx<'_>, dy: Tensor) -> Result<Vec<Tensor>, NnError> {
        self.0.backward(ctx, dy)
    }
    fn backward_onto(
        &mut self,
        ctx: &mut Ctx<'_>,
        dy: Tensor,
        acc: Tensor,
    ) -> Result<Tensor, NnError> {
        self.0.backward_onto(ctx, dy, acc)
    }
    fn params(&self) -> Vec<&lowprec_nn::Param> {
        self.0.params()
    }
    fn params_mut(&mut self) -> Vec<&mut lowprec_nn::Param> {
        self.0.params_mut()
    }
    fn clear_saved(&mut self) {
        self.0.clear_saved()
    }
    fn absorb_relu(&mut self) -> bool {
        self.0.absorb_relu()
    }
}

fn copying_layer(
    id: u64,
    name: &str,
    spec: &lowprec_nn::spec::LayerSpec,
    in_shapes: &[&[usize]],
    seed: u64,
) -> Result<Box<dyn Layer>, NnError> {
    let layer = lowprec_nn::model::build_layer(id, name, spec, in_shapes, seed)?;
    Ok(Box::new(Copying(layer)))
}

/// Residual sums whose gradient the model shares among their inputs instead of copying it:
/// a shortcut whose gradient batch norm adds onto, a sum of one value twice, a three-input sum
/// reading an earlier sum (whose gradient then changes while the other reader's is shared),
/// and the strided block of `SMALL_RESNET`. The same bits as copying, in bfp8 and fp32, at 1
/// and 2 threads.
#[test]
fn shared_residual_gradients_give_the_bits_of_copies() {
    const SUMS: &str = r#"
input = [3, 8, 8]
loss = "cross-entropy"
[[layer]]
type = "conv"
name = "s"
out = 4
kernel = 3
padding = 1
[[layer]]
type = "batchnorm"
[[layer]]
type = "relu"
[[layer]]
type = "conv"
name = "c1"
out = 4
kernel = 3
padding = 1
[[layer]]
type = "add"
name = "a1"
from = ["c1", "s"]
[[layer]]
type = "add"
name = "a2"
from = ["a1", "a1"]
[[layer]]
type = "conv"
name = "c2"
out = 4
kernel = 3
padding = 1
[[layer]]
type = "add"
from = ["c2", "a2", "a1"]
[[layer]]
type = "global-avg-pool"
[[layer]]
type = "linear"
out = 10
"#;
    for spec in [SUMS, SMALL_RESNET] {
        for precision in ["bfp8", "fp32"] {
            for threads in [1, 2] {
                let shared = run_net_fused(spec, precision, threads, 3, true);
                let copied = run_net_with(spec, precision, threads, 3, copying_layer, true);
                assert!(
                    shared == copied,
                    "{precision} at {threads} threads: sharing changed the bits"
                );
            }
        }
    }
}

#[test]
fn same_bits_at_one_and_two_threads() {
    for precision in ["bfp8", "fp32"] {
        for b in [1, 5] {
            let one = run_net(SMALL_RESNET, precision, 1, b);
            let two = run_net(SMALL_RESNET, precision, 2, b);
            assert!(
                one == two,
                "{precision} b={b}: thread count changed the bits"
            );
        }
    }
}

/// 8x8 maps at batch 64 are one chunk of the 8-bit forward GEMM on one thread and eight
/// parallel chunks of 8 examples on two (`schedule::int_chunk`), in the forward pass and in
/// the second convolution's transposed dX: the same bits either way.
#[test]
fn bfp8_rechunked_for_two_threads_same_bits() {
    let conv_relu = "[[layer]]\ntype = \"conv\"\nout = 8\nkernel = 3\npadding = 1\n\
                     [[layer]]\ntype = \"relu\"\n";
    let net = format!(
        "input = [4, 8, 8]\nloss = \"cross-entropy\"\n{conv_relu}{conv_relu}\
         [[layer]]\ntype = \"global-avg-pool\"\n[[layer]]\ntype = \"linear\"\nout = 3\n"
    );
    let one = run_net(&net, "bfp8", 1, 64);
    let two = run_net(&net, "bfp8", 2, 64);
    assert!(one == two, "re-chunking for two threads changed the bits");
}

/// The bfp8 weight gradient from many pieces (examples of many exponents): the same bits
/// whether the pieces run one after another (1 thread) or in parallel into their own buffers
/// and are added after (2 and 3 threads).
#[test]
fn bfp8_weight_gradient_pieces_same_bits_at_any_thread_count() {
    let policy: Precision = "bfp8".parse().unwrap();
    let (cin, h, w, cout, b) = (2, 12, 12, 4, 24);
    let run = |threads: usize| {
        pool(threads).install(|| {
            let backend = CpuBackend;
            let mut conv = Conv2d::new(1, "c", &[cin, h, w], cout, 3, 1, 1, false, 9).unwrap();
            let n = cin * h * w;
            // Seven magnitudes 2^0 .. 2^18 apart: several groups and pieces, whose sums round.
            let x: Vec<f32> = rand_vec(b * n, 71)
                .iter()
                .enumerate()
                .map(|(i, v)| v * (1u32 << (3 * ((i / n) % 7))) as f32)
                .collect();
            let mut ctx = Ctx::new(&backend, &policy, 4);
            let y = conv
                .forward(
                    &mut ctx,
                    &[&Tensor::new(x, vec![b, cin, h, w]).unwrap()],
                    true,
                )
                .unwrap();
            let dy = Tensor::new(rand_vec(y.len(), 72), y.shape.clone()).unwrap();
            conv.backward(&mut ctx, dy.clone()).unwrap();
            conv.weight
                .grad
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<u32>>()
        })
    };
    let one = run(1);
    assert!(one.iter().any(|&v| v != 0));
    assert_eq!(one, run(2));
    assert_eq!(one, run(3));
}

#[test]
fn conv_chunking_keeps_bfp8_weight_gradients() {
    // One more example than fits in COL_BUDGET: the layer processes two chunks, accumulating
    // the weight gradient across them.
    let backend = CpuBackend;
    let policy = Precision::bfp8();
    let mut conv = Conv2d::new(2, "c", &[64, 34, 34], 2, 3, 1, 1, false, 1).unwrap();
    let b = conv.chunk_examples() + 1;
    let x = rand_vec(b * conv.geom.in_len(), 1);
    let mut ctx = Ctx::new(&backend, &policy, 2);
    let y = conv
        .forward(
            &mut ctx,
            &[&Tensor::new(x.clone(), vec![b, 64, 34, 34]).unwrap()],
            true,
        )
        .unwrap();
    let dy = Tensor::new(rand_vec(y.len(), 2), y.shape.clone()).unwrap();
    ctx.need_input_grad = false;
    conv.backward(&mut ctx, dy.clone()).unwrap();
    let full = conv.weight.grad.clone();
    // Stochastic rounding makes it differ from the exact gradient by a few percent at most.
    let g = conv.geom;
    let (dxr, dw, _) = conv_grad_ref(
        &g,
        2,
        &to64(&x),
        &to64(&conv.weight.value),
        &to64(&dy.data),
        b,
    );
    drop(dxr);
    close(&full, &dw, 0.05, "chunked bfp8 dw vs f64");
}

/// fp32 chunks are cut smaller than bfp8's on small layers (`COL_MIN_F32`): a batch of
/// several float chunks, stride 1 (dX by the transposed convolution) and stride 2 (dX by
/// col2im), with 2 examples per chunk and with 1 (whose errors the GEMMs read in place), with
/// 16 and 48 output channels, and examples cut into pieces
/// of output rows (86x86 maps of 4 channels: 266256 column values, three pieces; their dX
/// convolution, of 16 channels, nine), matches the f64 reference, bias included, and the
/// weight gradient summed over the chunks has the same bits at 1 and 2 threads. The
/// one-example chunks of these "same" convolutions take the kernel-row-shared columns in the
/// forward pass and in the transposed convolution of dX.
#[test]
fn conv_chunking_keeps_fp32_gradients() {
    let policy = Precision::fp32();
    let cases = [
        (20, 1, 16, 16, 2),
        (20, 2, 16, 16, 9),
        (32, 1, 16, 16, 1),
        (32, 1, 16, 48, 1),
        (46, 2, 16, 16, 1),
        (86, 1, 4, 16, 1),
    ];
    for (hw, stride, cin, cout, per_chunk) in cases {
        let run = |threads: usize| {
            pool(threads).install(|| {
                let backend = CpuBackend;
                let mut conv =
                    Conv2d::new(2, "c", &[cin, hw, hw], cout, 3, stride, 1, true, 3).unwrap();
                conv.bias.as_mut().unwrap().value = rand_vec(cout, 13);
                let per = conv.chunk_examples_float();
                assert_eq!(per, per_chunk, "examples per float chunk");
                assert!(per < conv.chunk_examples(), "float chunks are the smaller");
                let b = 2 * per + 1;
                let x = rand_vec(b * conv.geom.in_len(), 11);
                let mut ctx = Ctx::new(&backend, &policy, 2);
                let xt = Tensor::new(x.clone(), vec![b, cin, hw, hw]).unwrap();
                let y = conv.forward(&mut ctx, &[&xt], true).unwrap();
                let dy = Tensor::new(rand_vec(y.len(), 12), y.shape.clone()).unwrap();
                let dx = conv.backward(&mut ctx, dy.clone()).unwrap();
                (conv, x, y, dy, dx, b)
            })
        };
        let (conv, x, y, dy, dx, b) = run(1);
        let g = conv.geom;
        let w = to64(&conv.weight.value);
        let bias = to64(&conv.bias.as_ref().unwrap().value);
        let (dxr, dwr, dbr) = conv_grad_ref(&g, cout, &to64(&x), &w, &to64(&dy.data), b);
        let yr = conv_ref(&g, cout, &to64(&x), &w, &bias, b);
        let what = format!("{cin}x{hw}x{hw} stride {stride} cout {cout}");
        close(&y.data, &yr, 1e-5, &format!("chunked fp32 y, {what}"));
        close(&dx[0].data, &dxr, 1e-5, &format!("chunked fp32 dx, {what}"));
        close(
            &conv.weight.grad,
            &dwr,
            1e-5,
            &format!("chunked fp32 dw, {what}"),
        );
        close(
            &conv.bias.as_ref().unwrap().grad,
            &dbr,
            1e-5,
            &format!("chunked fp32 db, {what}"),
        );
        let two = run(2).0;
        assert!(
            conv.weight.grad.iter().map(|v| v.to_bits()).eq(two
                .weight
                .grad
                .iter()
                .map(|v| v.to_bits())),
            "{what}: the thread count changed the chunked fp32 weight gradient"
        );
    }
}

#[test]
fn non_finite_inputs_are_named() {
    let backend = CpuBackend;
    for precision in ["bfp8", "fp32"] {
        let policy: Precision = precision.parse().unwrap();
        let mut conv = Conv2d::new(1, "conv7", &[1, 3, 3], 2, 3, 1, 1, false, 1).unwrap();
        let mut x = vec![0.5f32; 9];
        x[4] = f32::NAN;
        let mut ctx = Ctx::new(&backend, &policy, 1);
        let e = conv
            .forward(
                &mut ctx,
                &[&Tensor::new(x, vec![1, 1, 3, 3]).unwrap()],
                true,
            )
            .unwrap_err();
        assert!(
            matches!(&e, NnError::NonFinite { layer, index: 4, .. } if layer == "conv7"),
            "{precision}: {e}"
        );
    }
}

#[test]
fn empty_batches_pass_through() {
    let backend = CpuBackend;
    for precision in ["bfp8", "fp32", "bfp8,acts=bfp8:tensor:stochastic"] {
        let policy: Precision = precision.parse().unwrap();
        let mut ctx = Ctx::new(&backend, &policy, 1);
        let mut conv = Conv2d::new(1, "c", &[2, 4, 4], 3, 3, 1, 1, true, 1).unwrap();
        let y = conv
            .forward(&mut ctx, &[&Tensor::zeros(vec![0, 2, 4, 4])], true)
            .unwrap();
        assert_eq!(y.shape, vec![0, 3, 4, 4]);
        let dx = conv.backward(&mut ctx, y.clone()).unwrap();
        assert_eq!(dx[0].shape, vec![0, 2, 4, 4]);
        assert!(conv.weight.grad.iter().all(|&g| g == 0.0));
    }
}

#[test]
fn backward_without_forward_is_an_error() {
    let backend = CpuBackend;
    let policy = Precision::bfp8();
    let mut ctx = Ctx::new(&backend, &policy, 1);
    let mut conv = Conv2d::new(1, "c", &[1, 3, 3], 2, 3, 1, 1, false, 1).unwrap();
    let dy = Tensor::zeros(vec![1, 2, 3, 3]);
    assert!(matches!(
        conv.backward(&mut ctx, dy.clone()),
        Err(NnError::NoForward { .. })
    ));
    let x = Tensor::zeros(vec![1, 2, 3, 3]);
    assert!(matches!(
        conv.forward(&mut ctx, &[&x], true),
        Err(NnError::Shape { .. })
    ));
}

fn bn_loss(bn: &mut BatchNorm2d, x: &[f32], shape: &[usize], r: &[f32]) -> f64 {
    let backend = CpuBackend;
    let policy = Precision::fp32();
    let mut ctx = Ctx::new(&backend, &policy, 1);
    let (m, v) = (bn.running_mean.clone(), bn.running_var.clone());
    let y = bn
        .forward(
            &mut ctx,
            &[&Tensor::new(x.to_vec(), shape.to_vec()).unwrap()],
            true,
        )
        .unwrap();
    bn.running_mean = m;
    bn.running_var = v;
    bn.clear_saved();
    y.data
        .iter()
        .zip(r)
        .map(|(a, b)| *a as f64 * *b as f64)
        .sum()
}

#[test]
fn batchnorm_gradients_match_finite_differences() {
    let backend = CpuBackend;
    let policy = Precision::fp32();
    let shape = vec![3, 2, 3, 2];
    let n = 36;
    let x: Vec<f32> = rand_vec(n, 41).iter().map(|v| v * 3.0 + 1.0).collect();
    let r = rand_vec(n, 42);
    let mut bn = BatchNorm2d::new("bn", &[2, 3, 2], 1e-5, 0.1).unwrap();
    bn.gamma.value = vec![1.5, -0.7];
    bn.beta.value = vec![0.2, 0.3];
    let mut ctx = Ctx::new(&backend, &policy, 1);
    bn.forward(
        &mut ctx,
        &[&Tensor::new(x.clone(), shape.clone()).unwrap()],
        true,
    )
    .unwrap();
    let dx = bn
        .backward(&mut ctx, Tensor::new(r.clone(), shape.clone()).unwrap())
        .unwrap()
        .remove(0);
    let eps = 1e-2f32;
    for i in 0..n {
        let (mut xp, mut xm) = (x.clone(), x.clone());
        xp[i] += eps;
        xm[i] -= eps;
        let fd = (bn_loss(&mut bn, &xp, &shape, &r) - bn_loss(&mut bn, &xm, &shape, &r))
            / (2.0 * eps as f64);
        assert!(
            (fd - dx.data[i] as f64).abs() < 2e-3,
            "dx[{i}] {fd} vs {}",
            dx.data[i]
        );
    }
    let (gg, gb) = (bn.gamma.grad.clone(), bn.beta.grad.clone());
    for ch in 0..2 {
        for (which, grad) in [(0, &gg), (1, &gb)] {
            let p = if which == 0 {
                &mut bn.gamma
            } else {
                &mut bn.beta
            };
            let v0 = p.value[ch];
            p.value[ch] = v0 + eps;
            let lp = bn_loss(&mut bn, &x, &shape, &r);
            let p = if which == 0 {
                &mut bn.gamma
            } else {
                &mut bn.beta
            };
            p.value[ch] = v0 - eps;
            let lm = bn_loss(&mut bn, &x, &shape, &r);
            let p = if which == 0 {
                &mut bn.gamma
            } else {
                &mut bn.beta
            };
            p.value[ch] = v0;
            let fd = (lp - lm) / (2.0 * eps as f64);
            assert!(
                (fd - grad[ch] as f64).abs() < 2e-3,
                "param {which} ch {ch}: {fd} vs {}",
                grad[ch]
            );
        }
    }
}

/// Training-mode statistics against a two-pass f64 reference, on channels whose mean is far
/// from zero (1e4 with unit spread: a naive one-pass E[x^2] - E[x]^2 in f32 would lose all of
/// the variance) and on 1007 values per channel (awkward length for the 8-lane sums).
#[test]
fn batchnorm_statistics_match_f64_reference_with_large_offsets() {
    let backend = CpuBackend;
    let policy = Precision::fp32();
    let mut ctx = Ctx::new(&backend, &policy, 1);
    let (b, c, h, w) = (1, 3, 19, 53);
    let offsets = [1e4f32, -3.0, 0.0];
    let mut x = rand_vec(b * c * h * w, 77);
    for (i, v) in x.iter_mut().enumerate() {
        *v += offsets[(i / (h * w)) % c];
    }
    let mut bn = BatchNorm2d::new("bn", &[c, h, w], 1e-5, 1.0).unwrap();
    let y = bn
        .forward(
            &mut ctx,
            &[&Tensor::new(x.clone(), vec![b, c, h, w]).unwrap()],
            true,
        )
        .unwrap();
    let n = (h * w) as f64;
    for ch in 0..c {
        let plane = &x[ch * h * w..(ch + 1) * h * w];
        let mean = plane.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = plane
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        // momentum 1: the running statistics are this batch's (variance unbiased)
        let rm = bn.running_mean[ch] as f64;
        let rv = bn.running_var[ch] as f64;
        assert!(
            (rm - mean).abs() <= 1e-6 * mean.abs().max(1.0),
            "mean {rm} vs {mean}"
        );
        assert!(
            (rv - var * n / (n - 1.0)).abs() < 1e-5 * var,
            "var {rv} vs {var}"
        );
        for (i, &v) in plane.iter().enumerate() {
            let want = (v as f64 - mean) / (var + 1e-5).sqrt();
            let got = y.data[ch * h * w + i] as f64;
            // f32 inputs near 1e4 carry absolute errors of 5e-4 before normalising
            assert!(
                (got - want).abs() < 2e-3,
                "channel {ch} value {i}: {got} vs {want}"
            );
        }
    }
}

#[test]
fn batchnorm_running_statistics_and_recompute() {
    let backend = CpuBackend;
    let policy = Precision::fp32();
    let mut ctx = Ctx::new(&backend, &policy, 1);
    let mut bn = BatchNorm2d::new("bn", &[1, 2, 2], 1e-5, 0.1).unwrap();
    let a = Tensor::new(vec![1., 2., 3., 4., 5., 6., 7., 8.], vec![2, 1, 2, 2]).unwrap();
    let y = bn.forward(&mut ctx, &[&a], true).unwrap();
    // mean 4.5, biased var 5.25, unbiased 6.
    assert!((bn.running_mean[0] - 0.45).abs() < 1e-6);
    assert!((bn.running_var[0] - (0.9 + 0.6)).abs() < 1e-6);
    let m: f32 = y.data.iter().sum::<f32>() / 8.0;
    assert!(m.abs() < 1e-6);
    // Cumulative average over two batches.
    bn.begin_stats_recompute();
    assert!(bn.buffers().iter().any(|(n, _)| n == "bn.running_var"));
    bn.forward(&mut ctx, &[&a], true).unwrap();
    let b2 = Tensor::new(a.data.iter().map(|v| v + 10.0).collect(), a.shape.clone()).unwrap();
    bn.forward(&mut ctx, &[&b2], true).unwrap();
    bn.end_stats_recompute();
    assert!(
        (bn.running_mean[0] - 9.5).abs() < 1e-5,
        "{:?}",
        bn.running_mean
    );
    assert!(
        (bn.running_var[0] - 6.0).abs() < 1e-5,
        "{:?}",
        bn.running_var
    );
    // Evaluation uses the running statistics.
    let y = bn.forward(&mut ctx, &[&a], false).unwrap();
    let want = (1.0 - 9.5) / (6.0f32 + 1e-5).sqrt();
    assert!((y.data[0] - want).abs() < 1e-5);
    bn.forward(&mut ctx, &[&a], true).unwrap();
    assert!((bn.running_mean[0] - (0.9 * 9.5 + 0.45)).abs() < 1e-4);
}

#[test]
fn pooling_forward_and_gradients() {
    let backend = CpuBackend;
    let policy = Precision::fp32();
    let mut ctx = Ctx::new(&backend, &policy, 1);
    // Max pool 2x2: the gradient goes to the (first) maximum of each window.
    let mut mp = Pool2d::new("mp", PoolKind::Max, &[1, 2, 4], 2, 2).unwrap();
    let x = Tensor::new(vec![1., 5., 2., 2., 3., 0., 2., -1.], vec![1, 1, 2, 4]).unwrap();
    let y = mp.forward(&mut ctx, &[&x], true).unwrap();
    assert_eq!(y.data, vec![5., 2.]);
    let dx = mp
        .backward(
            &mut ctx,
            Tensor::new(vec![10., 20.], vec![1, 1, 1, 2]).unwrap(),
        )
        .unwrap()
        .remove(0);
    assert_eq!(dx.data, vec![0., 10., 20., 0., 0., 0., 0., 0.]);
    // Overlapping windows (stride 1): gradients add up.
    let mut mp = Pool2d::new("mp", PoolKind::Max, &[1, 1, 3], 1, 1).unwrap();
    let t = Tensor::new(vec![1., 2., 3.], vec![1, 1, 1, 3]).unwrap();
    assert_eq!(
        mp.forward(&mut ctx, &[&t], true).unwrap().data,
        vec![1., 2., 3.]
    );
    // Avg pool: linear, so compare with the adjoint identity <A x, r> = <x, A^T r>.
    let mut ap = Pool2d::new("ap", PoolKind::Avg, &[3, 7, 5], 3, 2).unwrap();
    let x = Tensor::new(rand_vec(2 * 105, 3), vec![2, 3, 7, 5]).unwrap();
    let y = ap.forward(&mut ctx, &[&x], true).unwrap();
    assert_eq!(y.shape, vec![2, 3, 3, 2]);
    let r = rand_vec(y.len(), 4);
    let dx = ap
        .backward(&mut ctx, Tensor::new(r.clone(), y.shape.clone()).unwrap())
        .unwrap()
        .remove(0);
    let lhs: f64 = y
        .data
        .iter()
        .zip(&r)
        .map(|(a, b)| *a as f64 * *b as f64)
        .sum();
    let rhs: f64 = x
        .data
        .iter()
        .zip(&dx.data)
        .map(|(a, b)| *a as f64 * *b as f64)
        .sum();
    assert!((lhs - rhs).abs() < 1e-5, "{lhs} vs {rhs}");
    // Global average pool.
    let mut gp = GlobalAvgPool::new("gp", &[2, 1, 2]).unwrap();
    let x = Tensor::new(vec![1., 3., 10., 20.], vec![1, 2, 1, 2]).unwrap();
    let y = gp.forward(&mut ctx, &[&x], true).unwrap();
    assert_eq!(
        (y.data.clone(), y.shape.clone()),
        (vec![2., 15.], vec![1, 2])
    );
    let dx = gp
        .backward(&mut ctx, Tensor::new(vec![2., 4.], vec![1, 2]).unwrap())
        .unwrap()
        .remove(0);
    assert_eq!(dx.data, vec![1., 1., 2., 2.]);
    // Max pool with a NaN lets the NaN through (the next quantiser names it).
    let mut mp = Pool2d::new("mp", PoolKind::Max, &[1, 2, 2], 2, 2).unwrap();
    let t = Tensor::new(vec![1., f32::NAN, 3., 0.], vec![1, 1, 2, 2]).unwrap();
    assert!(mp.forward(&mut ctx, &[&t], false).unwrap().data[0].is_nan());
}

/// The 2x2 stride-2 max pool (a fast path) against a plain reference on random planes with
/// ties, NaNs and odd sizes (the last row/column outside every window gets no gradient).
#[test]
fn maxpool_2x2_matches_reference_with_ties_nans_and_odd_sizes() {
    let backend = CpuBackend;
    let policy = Precision::fp32();
    let mut ctx = Ctx::new(&backend, &policy, 1);
    for (i, &(c, h, w)) in [
        (3usize, 7usize, 5usize),
        (2, 4, 4),
        (1, 2, 2),
        (5, 9, 16),
        (1, 3, 2),
    ]
    .iter()
    .enumerate()
    {
        let b = 2;
        let n = b * c * h * w;
        let x: Vec<f32> = rand_vec(n, 40 + i as u64)
            .iter()
            .enumerate()
            .map(|(j, &v)| match j % 11 {
                3 => f32::NAN,
                5 | 7 => 0.5, // ties
                _ => (v * 4.0).round() / 4.0,
            })
            .collect();
        let mut mp = Pool2d::new("mp", PoolKind::Max, &[c, h, w], 2, 2).unwrap();
        let xt = Tensor::new(x.clone(), vec![b, c, h, w]).unwrap();
        let y = mp.forward(&mut ctx, &[&xt], true).unwrap();
        let (ho, wo) = (h / 2, w / 2);
        let d = rand_vec(b * c * ho * wo, 50 + i as u64);
        let dx = mp
            .backward(&mut ctx, Tensor::new(d.clone(), y.shape.clone()).unwrap())
            .unwrap()
            .remove(0);
        let mut want_dx = vec![0f32; n];
        for pl in 0..b * c {
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut best: Option<(f32, usize)> = None;
                    for ki in 0..2 {
                        for kj in 0..2 {
                            let at = pl * h * w + (2 * oy + ki) * w + 2 * ox + kj;
                            let v = x[at];
                            best = match best {
                                None => Some((v, at)),
                                Some((bv, _)) if v > bv || (v.is_nan() && !bv.is_nan()) => {
                                    Some((v, at))
                                }
                                keep => keep,
                            };
                        }
                    }
                    let (bv, at) = best.unwrap();
                    let o = (pl * ho + oy) * wo + ox;
                    assert_eq!(y.data[o].to_bits(), bv.to_bits(), "{c}x{h}x{w} output {o}");
                    want_dx[at] = d[o];
                }
            }
        }
        assert_eq!(dx.data, want_dx, "{c}x{h}x{w} gradient");
    }
}

#[test]
fn residual_add_sums_and_splits_gradients() {
    let backend = CpuBackend;
    let policy = Precision::fp32();
    let mut ctx = Ctx::new(&backend, &policy, 1);
    let s: &[usize] = &[2];
    let mut add = Add::new("add", &[s, s]).unwrap();
    let a = Tensor::new(vec![1., 2.], vec![1, 2]).unwrap();
    let b = Tensor::new(vec![10., 20.], vec![1, 2]).unwrap();
    assert_eq!(
        add.forward(&mut ctx, &[&a, &b], true).unwrap().data,
        vec![11., 22.]
    );
    let g = add.backward(&mut ctx, a.clone()).unwrap();
    assert_eq!(g.len(), 2);
    assert!(Add::new("add", &[s]).is_err());
    let t: &[usize] = &[3];
    assert!(Add::new("add", &[s, t]).is_err());
}

#[test]
fn network_description_with_conv_layers_builds_and_checks_shapes() {
    let spec: NetworkSpec = toml::from_str(SMALL_RESNET).unwrap();
    let m = Model::build(&spec, 1).unwrap();
    assert_eq!(m.output_shape(), &[10]);
    assert!(m.has_batch_stats());
    assert!(m.summary().contains("conv 3->8 3x3 s1 p1"));
    // A conv on flat inputs, an add of mismatched shapes and an unknown field are errors.
    let bad = r#"
input = [12]
loss = "cross-entropy"
[[layer]]
type = "conv"
out = 4
kernel = 3
"#;
    let e = Model::build(&toml::from_str(bad).unwrap(), 1)
        .err()
        .unwrap();
    assert!(e.to_string().contains("conv1"), "{e}");
    let bad = r#"
input = [1, 4, 4]
loss = "cross-entropy"
[[layer]]
type = "conv"
name = "a"
out = 2
kernel = 3
[[layer]]
type = "add"
from = ["a", "input"]
"#;
    assert!(Model::build(&toml::from_str(bad).unwrap(), 1).is_err());
    let bad = "input = [1, 4, 4]\nloss = \"cross-entropy\"\n[[layer]]\ntype = \"conv\"\nout = 2\nkernel = 3\nstrides = 2\n";
    assert!(toml::from_str::<NetworkSpec>(bad).is_err());
}

#[test]
fn batchnorm_backward_onto_a_gradient_gives_the_bits_of_adding_after() {
    // What a residual block's input gets: the shortcut's gradient plus batch norm's dx, added
    // in batch norm's last pass instead of after it.
    let backend = CpuBackend;
    let policy = Precision::fp32();
    for (relu, (b, c, h, w)) in [
        (false, (3, 4, 7, 5)),
        (true, (2, 3, 33, 1)),
        (true, (1, 1, 1, 2)),
    ] {
        let n = b * c * h * w;
        let x = Tensor::new(rand_vec(n, 500 + n as u64), vec![b, c, h, w]).unwrap();
        let dy = Tensor::new(rand_vec(n, 600 + n as u64), vec![b, c, h, w]).unwrap();
        let acc = Tensor::new(rand_vec(n, 700 + n as u64), vec![b, c, h, w]).unwrap();
        let run = |onto: bool| {
            let mut bn = BatchNorm2d::new("bn", &[c, h, w], 1e-5, 0.1).unwrap();
            if relu {
                assert!(bn.absorb_relu());
            }
            let mut ctx = Ctx::new(&backend, &policy, 1);
            bn.forward(&mut ctx, &[&x], true).unwrap();
            let sum = if onto {
                bn.backward_onto(&mut ctx, dy.clone(), acc.clone()).unwrap()
            } else {
                let dx = bn.backward(&mut ctx, dy.clone()).unwrap().remove(0);
                let data = acc.data.iter().zip(&dx.data).map(|(a, d)| a + d).collect();
                Tensor::new(data, acc.shape.clone()).unwrap()
            };
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            (bits(&sum.data), bits(&bn.gamma.grad), bits(&bn.beta.grad))
        };
        assert!(
            run(true) == run(false),
            "relu {relu}, shape {:?}",
            (b, c, h, w)
        );
    }
    // A gradient of another shape is refused, naming the layer.
    let mut bn = BatchNorm2d::new("bn7", &[1, 2, 2], 1e-5, 0.1).unwrap();
    let mut ctx = Ctx::new(&backend, &policy, 1);
    let x = Tensor::new(rand_vec(8, 1), vec![2, 1, 2, 2]).unwrap();
    bn.forward(&mut ctx, &[&x], true).unwrap();
    let wrong = Tensor::new(vec![0.0; 4], vec![1, 1, 2, 2]).unwrap();
    let err = bn
        .backward_onto(&mut ctx, x.clone(), wrong)
        .unwrap_err()
        .to_string();
    assert!(err.contains("bn7"), "{err}");
}

#[test]
fn batchnorm_keeping_its_handed_over_input_gives_the_bits_of_a_borrowed_one() {
    // `forward_owned` keeps the input itself where `forward` keeps a copy made in its pass:
    // outputs, parameter gradients and dx (written or added onto a gradient) must not change
    // by a bit, with and without the absorbed ReLU, on awkward shapes, with a mean far from
    // zero and a constant channel.
    let backend = CpuBackend;
    let policy = Precision::fp32();
    for (relu, onto, (b, c, h, w)) in [
        (false, false, (3, 4, 7, 5)),
        (true, false, (2, 3, 33, 1)),
        (true, true, (5, 2, 1, 1)),
        (false, true, (1, 3, 32, 33)),
        (true, false, (1, 1, 1, 2)),
    ] {
        let n = b * c * h * w;
        let mut xv = rand_vec(n, 800 + n as u64);
        let hw = h * w;
        for j in 0..b {
            // channel 0: offset by 1000; the last channel constant.
            for v in &mut xv[(j * c) * hw..(j * c + 1) * hw] {
                *v += 1000.0;
            }
            if c > 1 {
                xv[(j * c + c - 1) * hw..(j * c + c) * hw].fill(0.25);
            }
        }
        let x = Tensor::new(xv, vec![b, c, h, w]).unwrap();
        let dy = Tensor::new(rand_vec(n, 900 + n as u64), vec![b, c, h, w]).unwrap();
        let acc = Tensor::new(rand_vec(n, 950 + n as u64), vec![b, c, h, w]).unwrap();
        let run = |owned: bool| {
            let mut bn = BatchNorm2d::new("bn", &[c, h, w], 1e-5, 0.1).unwrap();
            if relu {
                assert!(bn.absorb_relu());
            }
            let mut ctx = Ctx::new(&backend, &policy, 1);
            let y = if owned {
                bn.forward_owned(&mut ctx, x.clone(), true).unwrap()
            } else {
                bn.forward(&mut ctx, &[&x], true).unwrap()
            };
            let saved = bn.saved_bytes();
            let dx = if onto {
                bn.backward_onto(&mut ctx, dy.clone(), acc.clone()).unwrap()
            } else {
                bn.backward(&mut ctx, dy.clone()).unwrap().remove(0)
            };
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            let stats = (bits(&bn.running_mean), bits(&bn.running_var));
            (
                bits(&y.data),
                bits(&dx.data),
                bits(&bn.gamma.grad),
                bits(&bn.beta.grad),
                stats,
                saved >= 4 * n,
            )
        };
        assert!(
            run(true) == run(false),
            "relu {relu}, onto {onto}, shape {:?}",
            (b, c, h, w)
        );
    }
    // Evaluation keeps nothing; a wrong shape is refused by name.
    let mut bn = BatchNorm2d::new("bn9", &[2, 2, 2], 1e-5, 0.1).unwrap();
    let mut ctx = Ctx::new(&backend, &policy, 1);
    let x = Tensor::new(rand_vec(16, 3), vec![2, 2, 2, 2]).unwrap();
    bn.forward_owned(&mut ctx, x.clone(), false).unwrap();
    assert_eq!(bn.saved_bytes(), 0);
    let wrong = Tensor::new(rand_vec(16, 3), vec![2, 4, 2, 1]).unwrap();
    let err = bn
        .forward_owned(&mut ctx, wrong, true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("bn9"), "{err}");
}

/// The finiteness check scans large tensors in pieces on the pool: a NaN or Inf in any piece,
/// the last one included, is found and the first one named, at any thread count.
#[test]
fn non_finite_found_in_any_piece_of_a_large_tensor() {
    let n = (1 << 18) + 7;
    for threads in [1, 2] {
        for (first, bad) in [
            (5, f32::NAN),
            ((1 << 17) + 3, f32::INFINITY),
            (n - 1, f32::NEG_INFINITY),
        ] {
            let mut x = vec![0.25f32; n];
            x[first] = bad;
            if first + 70_000 < n {
                x[first + 70_000] = f32::NAN;
            }
            let e = pool(threads)
                .install(|| lowprec_nn::operand::check_finite(&x, "dY", "conv3", 7))
                .unwrap_err();
            assert!(
                matches!(&e, NnError::NonFinite { index, layer, step: 7, .. } if *index == first && layer == "conv3"),
                "{e}"
            );
        }
        let x = vec![-3.0e38f32; n];
        assert!(pool(threads)
            .install(|| lowprec_nn::operand::check_finite(&x, "dY", "conv3", 7))
            .is_ok());
    }
}
