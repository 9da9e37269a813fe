//! The per-layer precision plan: an override changes only its layer's quantisation (against the
//! layers run one by one, each under its own uniform policy), a uniform plan is the single
//! policy bit for bit, a format change takes effect at the step it is made, and cached
//! quantised weights are re-made when their format changes.

mod common;

use common::TestRng;
use lowprec_formats::NumberFormat;
use lowprec_kernels::CpuBackend;
use lowprec_nn::conv::Conv2d;
use lowprec_nn::linear::Linear;
use lowprec_nn::loss::Target;
use lowprec_nn::model::build_layer;
use lowprec_nn::{
    Ctx, Layer, Loss, LossKind, Model, NetworkSpec, Precision, PrecisionPlan, Tensor, TensorKind,
};

const NET: &str = r#"
input = [2, 6, 6]
loss = "cross-entropy"
[[layer]]
type = "conv"
name = "conv1"
out = 3
kernel = 3
padding = 1
bias = true
[[layer]]
type = "relu"
[[layer]]
type = "flatten"
[[layer]]
type = "linear"
name = "fc1"
out = 9
bias = true
[[layer]]
type = "relu"
[[layer]]
type = "linear"
name = "fc2"
out = 4
"#;

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn fmt(s: &str) -> NumberFormat {
    s.parse().unwrap()
}

/// Output and parameter gradients of one training step of the model under `plan`.
fn model_step(seed: u64, plan: &PrecisionPlan, x: &[f32], labels: &[u8]) -> Vec<Vec<u32>> {
    let spec: NetworkSpec = toml::from_str(NET).unwrap();
    let mut model = Model::build_with_fusion(&spec, seed, build_layer, false).unwrap();
    let backend = CpuBackend;
    let mut ctx = Ctx::with_plan(&backend, plan, 11);
    ctx.step = 3;
    let b = labels.len();
    let out = model
        .forward(
            &mut ctx,
            Tensor::new(x.to_vec(), vec![b, 2, 6, 6]).unwrap(),
            true,
        )
        .unwrap();
    let lo = Loss::new(LossKind::CrossEntropy)
        .forward(&out, Target::Labels(labels))
        .unwrap();
    model.backward(&mut ctx, lo.grad).unwrap();
    let mut r = vec![bits(&out.data)];
    r.extend(model.params().iter().map(|p| bits(&p.grad)));
    r
}

/// The same step with every layer run by hand under its own single policy `policies[i]`.
fn layer_by_layer(seed: u64, policies: &[Precision], x: &[f32], labels: &[u8]) -> Vec<Vec<u32>> {
    let spec: NetworkSpec = toml::from_str(NET).unwrap();
    let mut model = Model::build_with_fusion(&spec, seed, build_layer, false).unwrap();
    let backend = CpuBackend;
    let b = labels.len();
    let mut v = Tensor::new(x.to_vec(), vec![b, 2, 6, 6]).unwrap();
    for (i, node) in model.nodes.iter_mut().enumerate() {
        let mut ctx = Ctx::new(&backend, &policies[i], 11);
        (ctx.step, ctx.layer_index) = (3, i);
        v = node.layer.forward(&mut ctx, &[&v], true).unwrap();
    }
    let out = v.clone();
    let lo = Loss::new(LossKind::CrossEntropy)
        .forward(&out, Target::Labels(labels))
        .unwrap();
    let mut g = lo.grad;
    for (i, node) in model.nodes.iter_mut().enumerate().rev() {
        let mut ctx = Ctx::new(&backend, &policies[i], 11);
        (ctx.step, ctx.layer_index, ctx.backward) = (3, i, true);
        ctx.need_input_grad = i > 0;
        let dx = node.layer.backward(&mut ctx, g.clone()).unwrap();
        if i > 0 {
            g = dx.into_iter().next().unwrap();
        }
    }
    let mut r = vec![bits(&out.data)];
    r.extend(model.params().iter().map(|p| bits(&p.grad)));
    r
}

#[test]
fn an_override_changes_only_its_layer() {
    let mut rng = TestRng::fresh("plan_override");
    let seed = rng.next_u64();
    let b = 5;
    let x = rng.vec(b * 72, 1.0);
    let labels: Vec<u8> = (0..b).map(|i| (i % 4) as u8).collect();
    let base = Precision::bfp8();
    let spec: NetworkSpec = toml::from_str(NET).unwrap();
    let model = Model::build_with_fusion(&spec, seed, build_layer, false).unwrap();
    let n = model.num_layers();
    assert_eq!(n, 6);
    let fc1 = model.layer_index("fc1").unwrap();
    let conv1 = model.layer_index("conv1").unwrap();
    assert_eq!((conv1, fc1), (0, 3));
    assert_eq!(model.layer_index("nope"), None);
    assert_eq!(model.param_layers(), vec![0, 0, 3, 3, 5]);

    // A uniform plan is the single policy.
    let uniform = PrecisionPlan::uniform(base.clone(), n);
    assert!(uniform.is_uniform());
    let single = layer_by_layer(seed, &vec![base.clone(); n], &x, &labels);
    assert_eq!(model_step(seed, &uniform, &x, &labels), single);

    // Overrides on fc1 (all three GEMM operands) and on conv1 (weights only).
    let fc1_p: Precision = "bfp8,weights=bfp4:tensor,acts=bfp6:axis0,errors=bfp4:axis0"
        .parse()
        .unwrap();
    let conv1_p: Precision = "bfp8,weights=bfp3:axis0".parse().unwrap();
    let mut plan = uniform.clone();
    plan.set_layer(fc1, fc1_p.clone());
    plan.set(conv1, TensorKind::Weights, fmt("bfp3:axis0"));
    assert!(!plan.is_uniform());
    assert!(plan.layer(conv1).same_formats(&conv1_p));
    assert_eq!(plan.layer(conv1).name, "bfp8,weights=bfp3:axis0:stochastic");
    assert_eq!(
        plan.layer(conv1)
            .name
            .parse::<Precision>()
            .unwrap()
            .get(TensorKind::Weights),
        &fmt("bfp3:axis0")
    );
    assert_eq!(plan.layer(n + 4), plan.base());
    let mut policies = vec![base.clone(); n];
    policies[fc1] = fc1_p;
    policies[conv1] = conv1_p;
    let got = model_step(seed, &plan, &x, &labels);
    assert_eq!(got, layer_by_layer(seed, &policies, &x, &labels));
    // and it is a different computation from the uniform one
    assert_ne!(got, single);
}

fn linear(seed: u64) -> Linear {
    Linear::new(7, "fc", 19, 5, true, seed)
}

/// Forward of `layer` as layer 2 of a plan, at `step`.
fn fwd(layer: &mut dyn Layer, plan: &PrecisionPlan, step: u64, x: &Tensor) -> Vec<u32> {
    let backend = CpuBackend;
    let mut ctx = Ctx::with_plan(&backend, plan, 5);
    (ctx.step, ctx.layer_index) = (step, 2);
    bits(&layer.forward(&mut ctx, &[x], false).unwrap().data)
}

#[test]
fn cached_weights_are_requantised_when_their_format_changes() {
    let mut rng = TestRng::fresh("plan_cache");
    let seed = rng.next_u64();
    let xl = Tensor::new(rng.vec(3 * 19, 2.0), vec![3, 19]).unwrap();
    let xc = Tensor::new(rng.vec(2 * 2 * 5 * 5, 2.0), vec![2, 2, 5, 5]).unwrap();
    let conv = || Conv2d::new(9, "conv", &[2, 5, 5], 4, 3, 1, 1, true, seed).unwrap();
    for new_fmt in ["bfp4:tensor", "bfp6:axis0:nearest-even", "fp32"] {
        let mut plan = PrecisionPlan::uniform(Precision::bfp8(), 4);
        let (mut l, mut c) = (linear(seed), conv());
        // step 0 quantises and caches the weights (version 0) in bfp8
        fwd(&mut l, &plan, 0, &xl);
        fwd(&mut c, &plan, 0, &xc);
        // a new weight format at step 1, the weights themselves unchanged
        plan.set(2, TensorKind::Weights, fmt(new_fmt));
        let want: Precision = format!("bfp8,weights={new_fmt}").parse().unwrap();
        let fresh = PrecisionPlan::uniform(want, 0);
        assert_eq!(
            fwd(&mut l, &plan, 1, &xl),
            fwd(&mut linear(seed), &fresh, 1, &xl),
            "linear, {new_fmt}"
        );
        assert_eq!(
            fwd(&mut c, &plan, 1, &xc),
            fwd(&mut conv(), &fresh, 1, &xc),
            "conv, {new_fmt}"
        );
        // and back: the bfp8 weights again, as a fresh layer would make them
        plan.set(
            2,
            TensorKind::Weights,
            *Precision::bfp8().get(TensorKind::Weights),
        );
        let b8 = PrecisionPlan::uniform(Precision::bfp8(), 0);
        assert_eq!(
            fwd(&mut l, &plan, 2, &xl),
            fwd(&mut linear(seed), &b8, 2, &xl)
        );
        assert_eq!(fwd(&mut c, &plan, 2, &xc), fwd(&mut conv(), &b8, 2, &xc));
    }
}

#[test]
fn a_format_change_takes_effect_at_its_step() {
    let mut rng = TestRng::fresh("plan_step");
    let seed = rng.next_u64();
    let xs: Vec<Tensor> = (0..5)
        .map(|_| Tensor::new(rng.vec(3 * 19, 2.0), vec![3, 19]).unwrap())
        .collect();
    // Outputs of steps 0..5 of a layer whose weights change every step (as after an update),
    // with the weight format switched to bfp4 at step `at` (never when `at` is 5).
    let run = |at: u64| -> Vec<Vec<u32>> {
        let mut plan = PrecisionPlan::uniform(Precision::bfp8(), 3);
        let mut l = linear(seed);
        (0..5u64)
            .map(|s| {
                if s == at {
                    plan.set(2, TensorKind::Weights, fmt("bfp4:tensor"));
                }
                let y = fwd(&mut l, &plan, s, &xs[s as usize]);
                l.weight.value.iter_mut().for_each(|w| *w *= 0.9);
                l.weight.version = s + 1;
                y
            })
            .collect()
    };
    let never = run(5);
    for at in 0..5u64 {
        let got = run(at);
        for s in 0..5 {
            if s < at {
                assert_eq!(got[s as usize], never[s as usize], "step {s} before {at}");
            } else {
                assert_ne!(got[s as usize], never[s as usize], "step {s} from {at}");
            }
        }
        // each changed step is what a bfp4 layer with those weights gives
        let mut l = linear(seed);
        let b4: Precision = "bfp8,weights=bfp4:tensor".parse().unwrap();
        let p4 = PrecisionPlan::uniform(b4, 0);
        for s in 0..5u64 {
            let y = fwd(&mut l, &p4, s, &xs[s as usize]);
            if s >= at {
                assert_eq!(got[s as usize], y, "step {s} from {at}");
            }
            l.weight.value.iter_mut().for_each(|w| *w *= 0.9);
            l.weight.version = s + 1;
        }
    }
}

#[test]
fn tensor_kinds_parse_and_name() {
    for k in TensorKind::ALL {
        assert_eq!(k.name().parse::<TensorKind>().unwrap(), k);
        let mut p = Precision::swalp();
        *p.get_mut(k) = fmt("bfp5:tile16:e4");
        p.name = p.canonical_name();
        assert_eq!(p.get(k), &fmt("bfp5:tile16:e4"));
        let q: Precision = p.name.parse().unwrap();
        assert!(q.same_formats(&p), "{}", p.name);
    }
    assert!("wieghts".parse::<TensorKind>().is_err());
}
