//! Whole-network plumbing: an MLP's gradients (model backward, ReLU, softmax cross-entropy)
//! against finite differences of an f64 reference; MSE; dropout; description errors.

mod common;

use common::TestRng;
use lowprec_kernels::CpuBackend;
use lowprec_nn::loss::Target;
use lowprec_nn::{Ctx, Loss, LossKind, Model, NetworkSpec, Precision, Tensor};

fn spec(text: &str) -> NetworkSpec {
    toml::from_str(text).unwrap()
}

const MLP: &str = r#"
input = [2, 3]
loss = "cross-entropy"
[[layer]]
type = "flatten"
[[layer]]
type = "linear"
name = "fc1"
out = 5
bias = true
[[layer]]
type = "relu"
[[layer]]
type = "linear"
name = "fc2"
out = 4
"#;

/// f64 reference of the MLP's mean cross-entropy.
fn mlp_loss_f64(x: &[f64], w1: &[f64], b1: &[f64], w2: &[f64], labels: &[u8], batch: usize) -> f64 {
    let mut total = 0.0;
    for r in 0..batch {
        let h: Vec<f64> = (0..5)
            .map(|j| (b1[j] + (0..6).map(|k| x[r * 6 + k] * w1[j * 6 + k]).sum::<f64>()).max(0.0))
            .collect();
        let z: Vec<f64> = (0..4)
            .map(|c| (0..5).map(|j| h[j] * w2[c * 5 + j]).sum())
            .collect();
        let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + z.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        total += lse - z[labels[r] as usize];
    }
    total / batch as f64
}

#[test]
fn mlp_gradients_match_finite_differences() {
    let mut rng = TestRng::fresh("mlp_fd");
    let batch = 3;
    let mut model = Model::build(&spec(MLP), rng.next_u64()).unwrap();
    let x = rng.vec(batch * 6, 1.0);
    let labels = [0u8, 3, 1];
    let policy = Precision::fp32();
    let backend = CpuBackend;
    let mut ctx = Ctx::new(&backend, &policy, 0);
    let out = model
        .forward(
            &mut ctx,
            Tensor::new(x.clone(), vec![batch, 2, 3]).unwrap(),
            true,
        )
        .unwrap();
    let lo = Loss::new(LossKind::CrossEntropy)
        .forward(&out, Target::Labels(&labels))
        .unwrap();
    model.backward(&mut ctx, lo.grad).unwrap();
    let p = model.params();
    let names: Vec<&str> = p.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["fc1.weight", "fc1.bias", "fc2.weight"]);
    let vals: Vec<Vec<f64>> = p
        .iter()
        .map(|p| p.value.iter().map(|&v| v as f64).collect())
        .collect();
    let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let f = |v: &[Vec<f64>]| mlp_loss_f64(&x64, &v[0], &v[1], &v[2], &labels, batch);
    assert!(
        (f(&vals) - lo.loss).abs() < 1e-5,
        "loss {} vs {}",
        lo.loss,
        f(&vals)
    );
    let h = 1e-6;
    for (pi, param) in p.iter().enumerate() {
        for k in 0..param.value.len() {
            let (mut a, mut b) = (vals.clone(), vals.clone());
            a[pi][k] += h;
            b[pi][k] -= h;
            let fd = (f(&a) - f(&b)) / (2.0 * h);
            let g = param.grad[k] as f64;
            assert!(
                (g - fd).abs() <= 1e-4 * (1.0 + fd.abs()),
                "{}[{k}]: {g} vs {fd}",
                param.name
            );
        }
    }
}

#[test]
fn cross_entropy_and_mse_gradients_match_finite_differences() {
    let mut rng = TestRng::fresh("loss_fd");
    let (b, c) = (4, 7);
    let z: Vec<f32> = rng.vec(b * c, 3.0);
    let labels = [0u8, 6, 2, 2];
    let t = Tensor::new(z.clone(), vec![b, c]).unwrap();
    let lo = Loss::new(LossKind::CrossEntropy)
        .forward(&t, Target::Labels(&labels))
        .unwrap();
    let ce = |z: &[f64]| -> f64 {
        (0..b)
            .map(|r| {
                let row = &z[r * c..(r + 1) * c];
                let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln() - row[labels[r] as usize]
            })
            .sum::<f64>()
            / b as f64
    };
    let target = rng.vec(b * c, 1.0);
    let mo = Loss::new(LossKind::Mse)
        .forward(&t, Target::Values(&target))
        .unwrap();
    let mse = |z: &[f64]| -> f64 {
        z.iter()
            .zip(&target)
            .map(|(a, t)| (a - *t as f64).powi(2))
            .sum::<f64>()
            / (b * c) as f64
    };
    let z64: Vec<f64> = z.iter().map(|&v| v as f64).collect();
    assert!((ce(&z64) - lo.loss).abs() < 1e-6 && (mse(&z64) - mo.loss).abs() < 1e-6);
    for k in 0..z.len() {
        let (mut p, mut m) = (z64.clone(), z64.clone());
        p[k] += 1e-6;
        m[k] -= 1e-6;
        let fd = (ce(&p) - ce(&m)) / 2e-6;
        assert!((lo.grad.data[k] as f64 - fd).abs() < 1e-5, "ce[{k}]");
        let fd = (mse(&p) - mse(&m)) / 2e-6;
        assert!((mo.grad.data[k] as f64 - fd).abs() < 1e-5, "mse[{k}]");
    }
    // per-example MSE is the anomaly score of the auto-encoder
    assert_eq!(mo.per_example.len(), b);
    assert!(Loss::new(LossKind::CrossEntropy)
        .forward(&t, Target::Labels(&[0, 1]))
        .is_err());
    assert!(Loss::new(LossKind::CrossEntropy)
        .forward(&t, Target::Labels(&[0, 1, 2, 9]))
        .is_err());
}

#[test]
fn dropout_is_seeded_unbiased_and_its_backward_uses_the_mask() {
    let s = spec(
        r#"
input = [1000]
loss = "mse"
[[layer]]
type = "dropout"
p = 0.3
"#,
    );
    let mut model = Model::build(&s, 1).unwrap();
    let policy = Precision::fp32();
    let backend = CpuBackend;
    let x = Tensor::new(vec![1.0; 4000], vec![4, 1000]).unwrap();
    let run = |model: &mut Model, step| {
        let mut ctx = Ctx::new(&backend, &policy, 5);
        ctx.step = step;
        model.forward(&mut ctx, x.clone(), true).unwrap()
    };
    let a = run(&mut model, 1);
    let b = run(&mut model, 1);
    let c = run(&mut model, 2);
    assert_eq!(a, b, "same seed and step, same mask");
    assert_ne!(a, c);
    let zeros = a.data.iter().filter(|&&v| v == 0.0).count() as f64 / 4000.0;
    assert!((zeros - 0.3).abs() < 0.03, "drop rate {zeros}");
    let mean = a.data.iter().sum::<f32>() / 4000.0;
    assert!(
        (mean - 1.0).abs() < 0.05,
        "inverted dropout keeps the mean: {mean}"
    );
    // eval mode is the identity
    let mut ctx = Ctx::new(&backend, &policy, 5);
    assert_eq!(model.forward(&mut ctx, x.clone(), false).unwrap(), x);
}

#[test]
fn bad_descriptions_are_clear_errors() {
    let cases = [
        (
            r#"input = [4]
loss = "mse"
layer = []"#,
            "no layers",
        ),
        (
            r#"input = [0, 4]
loss = "mse"
[[layer]]
type = "relu""#,
            "zero",
        ),
        (
            r#"input = [4]
loss = "mse"
[[layer]]
type = "linear"
out = 0"#,
            "out >= 1",
        ),
        (
            r#"input = [4]
loss = "mse"
[[layer]]
type = "relu"
name = "a"
[[layer]]
type = "relu"
name = "a""#,
            "used twice",
        ),
        (
            r#"input = [4]
loss = "mse"
[[layer]]
type = "relu"
from = ["nowhere"]"#,
            "nowhere",
        ),
        (
            r#"input = [4]
loss = "mse"
[[layer]]
type = "dropout"
p = 1.5"#,
            "dropout probability",
        ),
    ];
    for (text, needle) in cases {
        let e = match toml::from_str::<NetworkSpec>(text) {
            Err(e) => e.to_string(),
            Ok(s) => Model::build(&s, 0).err().expect("must fail").to_string(),
        };
        assert!(e.contains(needle), "`{needle}` not in: {e}");
    }
    // a batch of the wrong example shape
    let mut m = Model::build(&spec(MLP), 0).unwrap();
    let policy = Precision::fp32();
    let backend = CpuBackend;
    let mut ctx = Ctx::new(&backend, &policy, 0);
    let e = m
        .forward(&mut ctx, Tensor::zeros(vec![2, 3, 2]), true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("examples of shape"), "{e}");
}

#[test]
fn precision_policies_parse_with_overrides() {
    let p: Precision = "bfp8,weights=bfp6:tensor:stochastic,errors=bfp8:example"
        .parse()
        .unwrap();
    assert_eq!(p.weights.to_string(), "bfp6:tensor:stochastic");
    assert_eq!(p.errors.to_string(), "bfp8:axis0:stochastic");
    assert!(p.grads.is_f32());
    let s: Precision = "swalp".parse().unwrap();
    assert!(!s.grads.is_f32() && !s.momentum.is_f32() && !s.master.is_f32());
    assert!(Precision::fp32().is_fp32());
    for bad in [
        "",
        "int8",
        "bfp8,weights",
        "bfp8,foo=bfp8",
        "bfp8,weights=bfp99",
    ] {
        assert!(bad.parse::<Precision>().is_err(), "{bad}");
    }
}

/// The in-place ReLU (input and gradient handed over) against the borrowing one and against
/// the definition (`max(x, 0)` with NaN to 0; the gradient where `x > 0`), bit for bit, on
/// awkward lengths with zeros of both signs, NaN, infinities and the largest floats.
#[test]
fn relu_in_place_matches_the_allocating_relu() {
    use lowprec_nn::activation::Relu;
    use lowprec_nn::Layer;
    let policy = Precision::fp32();
    let backend = CpuBackend;
    let mut rng = TestRng::fresh("relu_in_place");
    let specials = [
        0.0,
        -0.0,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
        -f32::MAX,
        f32::MIN_POSITIVE,
        -1e-45,
    ];
    for n in [0usize, 1, 7, 33, 1000, 70_001] {
        let mut x = rng.vec(n, 2.0);
        for (i, s) in specials.iter().enumerate() {
            if i < n {
                x[(i * 7919) % n] = *s;
            }
        }
        let dy = rng.vec(n, 1.0);
        let xt = Tensor::new(x, vec![1, n]).unwrap();
        let dyt = Tensor::new(dy, vec![1, n]).unwrap();
        let mut ctx = Ctx::new(&backend, &policy, 3);
        let (mut a, mut b) = (Relu::new("a"), Relu::new("b"));
        let ya = a.forward(&mut ctx, &[&xt], true).unwrap();
        let yb = b.forward_owned(&mut ctx, xt.clone(), true).unwrap();
        let bits = |t: &Tensor| t.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&ya), bits(&yb), "forward, n = {n}");
        let want: Vec<u32> = xt
            .data
            .iter()
            .map(|&v| if v > 0.0 { v } else { 0.0 }.to_bits())
            .collect();
        assert_eq!(bits(&yb), want, "forward against the definition, n = {n}");
        let want_dx: Vec<u32> = (xt.data.iter().zip(&dyt.data))
            .map(|(&v, &g)| if v > 0.0 { g } else { 0.0 }.to_bits())
            .collect();
        let da = a.backward(&mut ctx, dyt.clone()).unwrap();
        let db = b.backward(&mut ctx, dyt.clone()).unwrap();
        assert_eq!(bits(&da[0]), bits(&db[0]), "backward, n = {n}");
        assert_eq!(
            bits(&db[0]),
            want_dx,
            "backward against the definition, n = {n}"
        );
        assert!(b.backward(&mut ctx, dyt).is_err(), "no second backward");
        // Evaluation keeps no mask.
        let ye = b.forward_owned(&mut ctx, xt, false).unwrap();
        assert_eq!(bits(&ye), bits(&ya));
        assert_eq!(b.saved_bytes(), 0);
    }
}
