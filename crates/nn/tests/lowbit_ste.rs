//! Training under paper 001's low-bit formats: the forward pass sees the quantised weights
//! (TWN, per channel) and activations (2 bits, clip 1), the backward pass hands the gradient
//! straight through to the FP32 master weights (straight-through estimator).

use lowprec_formats::lowbit::{quantize_activations, quantize_twn, TWN_THRESHOLD};
use lowprec_formats::ScaleMode;
use lowprec_kernels::CpuBackend;
use lowprec_nn::model::build_layer;
use lowprec_nn::{Ctx, Model, NetworkSpec, Precision, PrecisionPlan, Tensor};

const NET: &str = r#"
input = [6]
loss = "cross-entropy"
[[layer]]
type = "linear"
name = "fc"
out = 3
"#;

#[test]
fn forward_quantises_backward_passes_straight_through() {
    let spec: NetworkSpec = toml::from_str(NET).unwrap();
    let mut model = Model::build_with_fusion(&spec, 5, build_layer, false).unwrap();
    let w = model.params()[0].value.clone();
    let p: Precision = "fp32,weights=twn:channel,acts=a2:clip1".parse().unwrap();
    let plan = PrecisionPlan::uniform(p, model.nodes.len());
    let backend = CpuBackend;
    let mut ctx = Ctx::with_plan(&backend, &plan, 11);
    let x: Vec<f32> = (0..12).map(|i| (i as f32 * 0.37) % 1.6 - 0.3).collect();
    let out = model
        .forward(&mut ctx, Tensor::new(x.clone(), vec![2, 6]).unwrap(), true)
        .unwrap();
    let xq = quantize_activations(&x, 2, 1.0, "x").unwrap().dequantize();
    let wq = quantize_twn(&w, 3, ScaleMode::PerChannel, TWN_THRESHOLD, "w")
        .unwrap()
        .dequantize();
    assert_ne!(wq, w);
    for b in 0..2 {
        for o in 0..3 {
            let want: f32 = (0..6).map(|k| xq[b * 6 + k] * wq[o * 6 + k]).sum();
            let got = out.data[b * 3 + o];
            assert!(
                (got - want).abs() <= 1e-5,
                "out[{b},{o}] = {got}, want {want}"
            );
        }
    }
    let dy = vec![0.5, -1.0, 0.25, 2.0, 0.75, -0.5];
    model
        .backward(&mut ctx, Tensor::new(dy.clone(), vec![2, 3]).unwrap())
        .unwrap();
    // dW = dY^T x_q (the quantised input), taken by the FP32 weights unchanged
    let g = &model.params()[0].grad;
    for o in 0..3 {
        for k in 0..6 {
            let want: f32 = (0..2).map(|b| dy[b * 3 + o] * xq[b * 6 + k]).sum();
            assert!(
                (g[o * 6 + k] - want).abs() <= 1e-5,
                "dW[{o},{k}] = {}, want {want}",
                g[o * 6 + k]
            );
        }
    }
}
