//! The fully connected layer: gradients against finite differences in f64 (quantisers off), and
//! with BFP8 on, the three GEMMs equal "quantise, exact integer product, rescale" bit for bit.

mod common;

use common::TestRng;
use lowprec_formats::rng::stream_id;
use lowprec_formats::{quantize_bfp, BfpTensor, NumberFormat, StreamKey};
use lowprec_kernels::CpuBackend;
use lowprec_nn::ctx::StreamKind;
use lowprec_nn::linear::Linear;
use lowprec_nn::{Ctx, Layer, Precision, Tensor};

/// f64 reference: y = x W^T + b.
fn linear_f64(
    x: &[f64],
    w: &[f64],
    b: Option<&[f64]>,
    batch: usize,
    i: usize,
    o: usize,
) -> Vec<f64> {
    let mut y = vec![0f64; batch * o];
    for r in 0..batch {
        for c in 0..o {
            let mut s = b.map_or(0.0, |b| b[c]);
            for k in 0..i {
                s += x[r * i + k] * w[c * i + k];
            }
            y[r * o + c] = s;
        }
    }
    y
}

#[test]
fn linear_gradients_match_finite_differences_in_f64() {
    let mut rng = TestRng::fresh("linear_fd");
    for &(batch, i, o, bias) in &[
        (1, 1, 1, false),
        (3, 7, 5, true),
        (4, 33, 2, true),
        (2, 130, 9, false),
    ] {
        let mut layer = Linear::new(1, "fc", i, o, bias, rng.next_u64());
        let x = rng.vec(batch * i, 1.0);
        let g = rng.vec(batch * o, 1.0); // dL/dy: L = sum(g * y)
        let policy = Precision::fp32();
        let backend = CpuBackend;
        let mut ctx = Ctx::new(&backend, &policy, 0);
        let xt = Tensor::new(x.clone(), vec![batch, i]).unwrap();
        let y = layer.forward(&mut ctx, &[&xt], true).unwrap();
        let dx = layer
            .backward(&mut ctx, Tensor::new(g.clone(), vec![batch, o]).unwrap())
            .unwrap();
        let w64: Vec<f64> = layer.weight.value.iter().map(|&v| v as f64).collect();
        let b64: Option<Vec<f64>> = layer
            .bias
            .as_ref()
            .map(|b| b.value.iter().map(|&v| v as f64).collect());
        let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        // forward against the f64 reference (f32 GEMM: relative 1e-5)
        let y64 = linear_f64(&x64, &w64, b64.as_deref(), batch, i, o);
        for (a, b) in y.data.iter().zip(&y64) {
            assert!(
                (*a as f64 - b).abs() <= 1e-5 * (1.0 + b.abs()),
                "forward {a} vs {b}"
            );
        }
        let loss = |x: &[f64], w: &[f64], b: Option<&[f64]>| -> f64 {
            linear_f64(x, w, b, batch, i, o)
                .iter()
                .zip(&g)
                .map(|(y, g)| y * *g as f64)
                .sum()
        };
        let h = 1e-6;
        let tol = |fd: f64| 1e-5 * (1.0 + fd.abs());
        for k in 0..x64.len() {
            let (mut p, mut m) = (x64.clone(), x64.clone());
            p[k] += h;
            m[k] -= h;
            let fd = (loss(&p, &w64, b64.as_deref()) - loss(&m, &w64, b64.as_deref())) / (2.0 * h);
            assert!(
                (dx[0].data[k] as f64 - fd).abs() <= tol(fd),
                "dx[{k}] {} vs {fd}",
                dx[0].data[k]
            );
        }
        for k in 0..w64.len() {
            let (mut p, mut m) = (w64.clone(), w64.clone());
            p[k] += h;
            m[k] -= h;
            let fd = (loss(&x64, &p, b64.as_deref()) - loss(&x64, &m, b64.as_deref())) / (2.0 * h);
            assert!(
                (layer.weight.grad[k] as f64 - fd).abs() <= tol(fd),
                "dw[{k}]"
            );
        }
        if let Some(b) = &b64 {
            for k in 0..o {
                let (mut p, mut m) = (b.clone(), b.clone());
                p[k] += h;
                m[k] -= h;
                let fd = (loss(&x64, &w64, Some(&p)) - loss(&x64, &w64, Some(&m))) / (2.0 * h);
                assert!(
                    (layer.bias.as_ref().unwrap().grad[k] as f64 - fd).abs() <= tol(fd),
                    "db[{k}]"
                );
            }
        }
    }
}

fn mant(t: &BfpTensor) -> Vec<i64> {
    (0..t.mantissas.len())
        .map(|i| t.mantissas.get(i) as i64)
        .collect()
}

#[test]
fn bfp8_linear_is_quantise_exact_integer_gemm_rescale_bit_for_bit() {
    let mut rng = TestRng::fresh("linear_bfp8_exact");
    let policy = Precision::bfp8();
    let (NumberFormat::Bfp(fa), NumberFormat::Bfp(fw), NumberFormat::Bfp(fe)) =
        (policy.acts, policy.weights, policy.errors)
    else {
        panic!("bfp8 policy must be BFP")
    };
    for &(batch, i, o) in &[(1, 1, 1), (7, 33, 5), (16, 100, 10), (33, 7, 3)] {
        let seed = rng.next_u64();
        let id = 1;
        let mut layer = Linear::new(id, "fc", i, o, false, seed);
        let x = rng.vec(batch * i, 3.0);
        let g = rng.vec(batch * o, 0.01);
        let backend = CpuBackend;
        let mut ctx = Ctx::new(&backend, &policy, seed);
        ctx.step = 17;
        let y = layer
            .forward(
                &mut ctx,
                &[&Tensor::new(x.clone(), vec![batch, i]).unwrap()],
                true,
            )
            .unwrap();
        let dx = layer
            .backward(&mut ctx, Tensor::new(g.clone(), vec![batch, o]).unwrap())
            .unwrap();

        // Reproduce every quantiser with the layer's keys.
        let kx = ctx.key(id, StreamKind::Acts);
        let ke = ctx.key(id, StreamKind::Errors);
        let kw = StreamKey::new(
            seed,
            stream_id(&[id, StreamKind::Weights as u64, layer.weight.version]),
        );
        let qx = quantize_bfp(&x, &[batch, i], &fa, kx, "x").unwrap();
        let qw = quantize_bfp(&layer.weight.value, &[o, i], &fw, kw, "w").unwrap();
        let qe = quantize_bfp(&g, &[batch, o], &fe, ke, "e").unwrap();
        let (mx, mw, me) = (mant(&qx), mant(&qw), mant(&qe));
        let (sx, sw, se) = (qx.scales(), qw.scales(), qe.scales());
        // forward: one chunk (K = i), y = ((acc as f32) * sx[b]) * sw
        for b in 0..batch {
            for c in 0..o {
                let acc: i64 = (0..i).map(|k| mx[b * i + k] * mw[c * i + k]).sum();
                let want = 0.0f32 + ((acc as i32 as f32) * sx[b]) * sw[0];
                assert_eq!(y.data[b * o + c].to_bits(), want.to_bits(), "y[{b},{c}]");
            }
        }
        // weight gradient: one K segment per example, added in example order
        for c in 0..o {
            for k in 0..i {
                let mut acc = 0.0f32;
                for b in 0..batch {
                    let p = (me[b * o + c] * mx[b * i + k]) as i32;
                    acc += ((p as f32) * se[b]) * sx[b];
                }
                assert_eq!(
                    layer.weight.grad[c * i + k].to_bits(),
                    acc.to_bits(),
                    "dw[{c},{k}]"
                );
            }
        }
        // error: dx = ((acc as f32) * se[b]) * sw
        for b in 0..batch {
            for k in 0..i {
                let acc: i64 = (0..o).map(|c| me[b * o + c] * mw[c * i + k]).sum();
                let want = 0.0f32 + ((acc as i32 as f32) * se[b]) * sw[0];
                assert_eq!(
                    dx[0].data[b * i + k].to_bits(),
                    want.to_bits(),
                    "dx[{b},{k}]"
                );
            }
        }
    }
}

#[test]
fn weights_are_quantised_once_per_update() {
    // Two forwards with unchanged weights use the same Q_w (same output bits even though the
    // activation stream changes with the step only through Q_a, here fp32 activations).
    let policy: Precision = "bfp8,acts=fp32,errors=fp32".parse().unwrap();
    let backend = CpuBackend;
    let mut layer = Linear::new(3, "fc", 20, 4, false, 9);
    let x = Tensor::new((0..40).map(|v| v as f32 * 0.01).collect(), vec![2, 20]).unwrap();
    let mut ctx = Ctx::new(&backend, &policy, 1);
    ctx.step = 1;
    let a = layer.forward(&mut ctx, &[&x], false).unwrap();
    ctx.step = 2;
    let b = layer.forward(&mut ctx, &[&x], false).unwrap();
    assert_eq!(a, b);
    layer.weight.version += 1; // an update happened: stochastic Q_w draws anew
    let c = layer.forward(&mut ctx, &[&x], false).unwrap();
    assert_ne!(a, c);
}

#[test]
fn non_finite_input_names_tensor_layer_and_step() {
    let policy = Precision::bfp8();
    let backend = CpuBackend;
    let mut layer = Linear::new(1, "fc7", 3, 2, false, 0);
    let mut ctx = Ctx::new(&backend, &policy, 0);
    ctx.step = 42;
    let x = Tensor::new(vec![1.0, f32::NAN, 0.0], vec![1, 3]).unwrap();
    let e = layer
        .forward(&mut ctx, &[&x], true)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("input activations of fc7") && e.contains("step 42") && e.contains("fc7"),
        "{e}"
    );
    let e = layer
        .backward(&mut ctx, Tensor::zeros(vec![1, 2]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("before a training forward"), "{e}");
    let bad = Tensor::new(vec![1.0; 4], vec![1, 4]).unwrap();
    assert!(layer.forward(&mut ctx, &[&bad], true).is_err());
}
