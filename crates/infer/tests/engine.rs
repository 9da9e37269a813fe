//! The integer engine against its reference path (bit for bit), PTQ of representable weights,
//! and the model file's errors.

use std::collections::BTreeMap;

use lowprec_formats::{FpgaBfp, FpgaRounding, MantissaCode, NumberFormat};
use lowprec_infer::modelfile::PackedWeights;
use lowprec_infer::ptq::{layer_errors, quantize_tensors, PtqOptions};
use lowprec_infer::{Engine, Mode, QuantizedModel};
use lowprec_nn::{Model, Tensor};

const CONFIG: &str = r#"
name = "tiny"
description = "test network"
precision = "fp32"
seed = 3

[data]
dataset = "mnist"

[model]
input = [3, 9, 9]
loss = "cross-entropy"

[[model.layer]]
type = "conv"
name = "c1"
out = 5
kernel = 3
padding = 1
bias = true

[[model.layer]]
type = "batchnorm"
name = "bn1"

[[model.layer]]
type = "relu"

[[model.layer]]
type = "conv"
name = "c2"
out = 7
kernel = 3
stride = 2
padding = 1

[[model.layer]]
type = "conv"
name = "c3"
from = ["bn1"]
out = 7
kernel = 1
stride = 2

[[model.layer]]
type = "add"
name = "sum"
from = ["c2", "c3"]

[[model.layer]]
type = "maxpool"
kernel = 2

[[model.layer]]
type = "flatten"

[[model.layer]]
type = "linear"
name = "fc"
out = 4
bias = true

[train]
batch = 4
epochs = 1
lr = 0.1
"#;

/// More channels than one block at small `c_vector`s, a 5x5 kernel, a strided unpadded conv
/// and a linear layer over a 4x4 map.
const WIDE: &str = r#"
name = "wide"
description = "test network"
precision = "fp32"
seed = 5

[data]
dataset = "mnist"

[model]
input = [3, 11, 10]
loss = "cross-entropy"

[[model.layer]]
type = "conv"
name = "c1"
out = 20
kernel = 5
padding = 2
bias = true

[[model.layer]]
type = "relu"

[[model.layer]]
type = "conv"
name = "c2"
out = 12
kernel = 3
stride = 2

[[model.layer]]
type = "conv"
name = "c3"
out = 36
kernel = 3
padding = 1
bias = true

[[model.layer]]
type = "flatten"

[[model.layer]]
type = "linear"
name = "fc"
out = 9
bias = true

[train]
batch = 4
epochs = 1
lr = 0.1
"#;

fn tensors() -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    tensors_of(CONFIG)
}

fn tensors_of(config: &str) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let cfg = lowprec_train::TrainConfig::from_toml(config, "test").unwrap();
    let model = Model::build(&cfg.model, 11).unwrap();
    let mut t = BTreeMap::new();
    for p in model.params() {
        let mut v = p.value.clone();
        // non-trivial biases and batch-norm affine parameters
        for (i, x) in v.iter_mut().enumerate() {
            if p.name.ends_with(".bias") || p.name.starts_with("bn1") {
                *x += 0.1 * ((i as f32) * 0.7).sin();
            }
        }
        t.insert(format!("param/{}", p.name), (p.shape.clone(), v));
    }
    for (n, b) in model.buffers() {
        let v: Vec<f32> = b
            .iter()
            .enumerate()
            .map(|(i, &x)| x + 0.05 * (i as f32 + 1.0))
            .collect();
        t.insert(format!("buffer/{n}"), (vec![b.len()], v));
    }
    t
}

fn input(b: usize, seed: u32) -> Tensor {
    input_of(b, seed, [3, 9, 9])
}

fn input_of(b: usize, seed: u32, [c, h, w]: [usize; 3]) -> Tensor {
    let n = b * c * h * w;
    let v: Vec<f32> = (0..n)
        .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 2001) as f32 / 500.0 - 2.0)
        .collect();
    Tensor::new(v, vec![b, c, h, w]).unwrap()
}

fn qmodel(w: FpgaBfp, a: FpgaBfp, first_last_fp32: bool) -> QuantizedModel {
    qmodel_of(CONFIG, w, a, first_last_fp32)
}

fn qmodel_of(config: &str, w: FpgaBfp, a: FpgaBfp, first_last_fp32: bool) -> QuantizedModel {
    quantize_tensors(
        config,
        tensors_of(config),
        &PtqOptions {
            weights: NumberFormat::Fpga(w),
            acts: NumberFormat::Fpga(a),
            first_last_fp32,
            calib: vec![],
        },
        BTreeMap::new(),
    )
    .unwrap()
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.data.iter().map(|v| v.to_bits()).collect()
}

fn run_in(threads: usize, engine: &mut Engine, x: &Tensor) -> Vec<Tensor> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| engine.run(x.clone(), true).unwrap())
}

/// Both fast routes at 1 and 2 threads against the reference path, every value of every layer
/// (the direct convolution runs where the CPU has AVX-512 VNNI; elsewhere both are im2col).
fn fast_equals_reference(config: &str, shape: [usize; 3], batches: &[(usize, u32)]) {
    let cases = [
        (FpgaBfp::INT4, FpgaBfp::INT5, false),
        (FpgaBfp::INT4, FpgaBfp::INT5, true),
        (FpgaBfp::INT8, FpgaBfp::INT8, false),
        (FpgaBfp::INT7, FpgaBfp::INT7, false),
        (FpgaBfp::INT12, FpgaBfp::INT9, false),
    ];
    for (w, a, fl) in cases {
        for cv in [4, 8, 32] {
            for r in [
                FpgaRounding::Truncate,
                FpgaRounding::Nearest,
                FpgaRounding::NearestEven,
            ] {
                let w = FpgaBfp {
                    c_vector: cv,
                    rounding: r,
                    ..w
                };
                let a = FpgaBfp {
                    c_vector: cv,
                    rounding: r,
                    ..a
                };
                let qm = qmodel_of(config, w, a, fl);
                let mut refe = Engine::new(&qm, Mode::Reference).unwrap();
                for mode in [Mode::Fast, Mode::FastIm2col] {
                    let mut fast = Engine::new(&qm, mode).unwrap();
                    for &(b, seed) in batches {
                        let x = input_of(b, seed, shape);
                        let yr = refe.run(x.clone(), true).unwrap();
                        for threads in [1, 2] {
                            let yf = run_in(threads, &mut fast, &x);
                            for (i, (f, r)) in yf.iter().zip(&yr).enumerate() {
                                assert_eq!(
                                    bits(f),
                                    bits(r),
                                    "{w} / {a} {mode:?}: value {i} differs, batch {b}, \
                                     {threads} threads"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn fast_engine_equals_reference_bit_for_bit() {
    fast_equals_reference(CONFIG, [3, 9, 9], &[(1, 1), (3, 2), (8, 4)]);
}

#[test]
fn fast_engine_equals_reference_on_wide_layers() {
    fast_equals_reference(WIDE, [3, 11, 10], &[(1, 3), (5, 6)]);
}

#[test]
fn ptq_of_representable_weights_changes_nothing() {
    let w = FpgaBfp {
        c_vector: 4,
        ..FpgaBfp::INT4
    };
    let a = FpgaBfp {
        c_vector: 4,
        ..FpgaBfp::INT5
    };
    let qm = qmodel(w, a, false);
    // replace every quantised weight by its quantised value, quantise again
    let mut t = qm.tensors.clone();
    for (n, p) in &qm.packed {
        t.get_mut(&format!("param/{n}")).unwrap().1 = p.dequantize();
    }
    let opts = PtqOptions {
        weights: NumberFormat::Fpga(w),
        acts: NumberFormat::Fpga(a),
        first_last_fp32: false,
        calib: vec![],
    };
    let qm2 = quantize_tensors(CONFIG, t, &opts, BTreeMap::new()).unwrap();
    assert_eq!(qm.packed, qm2.packed);
    let x = input(2, 9);
    let y1 = Engine::new(&qm, Mode::Fast)
        .unwrap()
        .forward(x.clone())
        .unwrap();
    let y2 = Engine::new(&qm2, Mode::Fast)
        .unwrap()
        .forward(x.clone())
        .unwrap();
    assert_eq!(bits(&y1), bits(&y2));
    // and the float model with those weights gives the same outputs as the float model of the
    // quantised one (the master weights are the representable values)
    let f2 = Engine::new(&qm2, Mode::Float).unwrap().forward(x).unwrap();
    assert!(f2.data.iter().all(|v| v.is_finite()));
}

#[test]
fn file_round_trip_and_table() {
    let qm = qmodel(FpgaBfp::INT4, FpgaBfp::INT5, true);
    let bytes = qm.to_bytes().unwrap();
    let back = QuantizedModel::from_bytes(&bytes).unwrap();
    assert_eq!(back, qm);
    let (packed, _) = qm.storage();
    assert!(packed > 0);
    let rows = layer_errors(&qm, &[input(2, 5)]).unwrap();
    assert_eq!(rows.len(), 4);
    // first and last in fp32: exact; the middle ones finite and positive
    assert!(rows[0].weight_sqnr_db.is_infinite());
    assert!(rows[1].weight_sqnr_db > 5.0 && rows[1].weight_sqnr_db < 40.0);
    assert!(rows[1].layer_sqnr_db.is_finite());
    // a two's-complement format survives the file too
    let qm = qmodel(
        FpgaBfp {
            code: MantissaCode::TwosComplement,
            width: 6,
            ..FpgaBfp::INT8
        },
        FpgaBfp::INT8,
        false,
    );
    let back = QuantizedModel::from_bytes(&qm.to_bytes().unwrap()).unwrap();
    assert_eq!(back, qm);
}

fn load_err(bytes: &[u8]) -> String {
    QuantizedModel::from_bytes(bytes).unwrap_err().to_string()
}

#[test]
fn bad_files_name_the_tensor() {
    let qm = qmodel(FpgaBfp::INT4, FpgaBfp::INT5, false);
    // truncated packed tensor
    let mut t = qm.clone();
    if let Some(PackedWeights::Fpga(p)) = t.packed.get_mut("c2.weight") {
        p.mantissas.truncate(p.mantissas.len() - 5);
    }
    let e = load_err(&t.to_bytes().unwrap());
    assert!(
        e.contains("packed/c2.weight.mantissa") && e.contains("truncated"),
        "{e}"
    );
    // unknown format (same length, so the header stays valid)
    let bytes = qm.to_bytes().unwrap();
    let mut edited = bytes.clone();
    let (from, to) = (b"int4bfp", b"int3zzz");
    let mut i = 0;
    while i + from.len() <= edited.len() {
        if &edited[i..i + from.len()] == from {
            edited[i..i + from.len()].copy_from_slice(to);
        }
        i += 1;
    }
    let e = load_err(&edited);
    assert!(e.contains("unknown") && e.contains(".weight"), "{e}");
    // mismatched checkpoint: a parameter of another shape
    let mut t = qm.clone();
    t.tensors.get_mut("param/fc.bias").unwrap().0 = vec![2, 2];
    let e = load_err(&t.to_bytes().unwrap());
    assert!(e.contains("param/fc.bias"), "{e}");
    // missing buffer
    let mut t = qm.clone();
    t.tensors.remove("buffer/bn1.running_var");
    let e = load_err(&t.to_bytes().unwrap());
    assert!(
        e.contains("buffer/bn1.running_var") && e.contains("missing"),
        "{e}"
    );
    // a flipped byte in the data: checksum
    let mut b = bytes.clone();
    let n = b.len();
    b[n - 3] ^= 0x40;
    let e = load_err(&b);
    assert!(e.contains("checksum"), "{e}");
    // a truncated file
    let e = load_err(&bytes[..bytes.len() - 100]);
    assert!(e.contains("truncated") || e.contains("safetensors"), "{e}");
    // a plain checkpoint is not a model file
    assert!(load_err(b"not a file").contains("safetensors"));
}

#[test]
fn bad_options_are_errors() {
    let t = tensors();
    let mk = |w: &str, a: &str| {
        quantize_tensors(
            CONFIG,
            t.clone(),
            &PtqOptions {
                weights: w.parse().unwrap(),
                acts: a.parse().unwrap(),
                first_last_fp32: false,
                calib: vec![],
            },
            BTreeMap::new(),
        )
        .map(|_| ())
        .unwrap_err()
        .to_string()
    };
    assert!(mk("int4bfp:c16", "int5bfp:c32").contains("c_vector"));
    assert!(mk("int4bfp:stochastic", "int5bfp").contains("stochastic"));
    assert!(mk("bfp8", "int5bfp").contains("FPGA BFP"));
    assert!(mk("int4bfp", "fp32").contains("both"));
}
