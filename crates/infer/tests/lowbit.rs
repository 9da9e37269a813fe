//! Paper 001's low-bit formats through the pipeline (c2's K = 81 crosses a 64-bit word): the packed engine against its plain
//! reference (bit for bit, at 1 and 2 threads), the model file's round trip and its errors
//! (wrong bit counts, codes outside the format, wrong sizes), fitted clips.

use std::collections::BTreeMap;

use lowprec_formats::lowbit::quantize_lowbit;
use lowprec_formats::{ActClip, LowBitFormat, NumberFormat};
use lowprec_infer::modelfile::PackedWeights;
use lowprec_infer::ptq::{quantize_like, quantize_tensors, PtqOptions};
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
out = 9
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
type = "relu"

[[model.layer]]
type = "flatten"

[[model.layer]]
type = "linear"
name = "fc1"
out = 70
bias = true

[[model.layer]]
type = "relu"

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

fn tensors() -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let cfg = lowprec_train::TrainConfig::from_toml(CONFIG, "test").unwrap();
    let model = Model::build(&cfg.model, 11).unwrap();
    let mut t = BTreeMap::new();
    for p in model.params() {
        let mut v = p.value.clone();
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
    let n = b * 3 * 9 * 9;
    let v: Vec<f32> = (0..n)
        .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 2001) as f32 / 500.0 - 2.0)
        .collect();
    Tensor::new(v, vec![b, 3, 9, 9]).unwrap()
}

fn opts(w: &str, a: &str, first_last_fp32: bool) -> PtqOptions {
    PtqOptions {
        weights: w.parse().unwrap(),
        acts: a.parse().unwrap(),
        first_last_fp32,
        calib: vec![input(4, 77)],
    }
}

fn qmodel(w: &str, a: &str, first_last_fp32: bool) -> QuantizedModel {
    quantize_tensors(
        CONFIG,
        tensors(),
        &opts(w, a, first_last_fp32),
        BTreeMap::new(),
    )
    .unwrap()
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.data.iter().map(|v| v.to_bits()).collect()
}

fn run_in(threads: usize, qm: &QuantizedModel, mode: Mode, x: &Tensor) -> Vec<Tensor> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| Engine::new(qm, mode).unwrap().run(x.clone(), true).unwrap())
}

#[test]
fn packed_engine_equals_reference_bit_for_bit() {
    let cases = [
        ("ternary", "a2"),
        ("wrpn3", "a2:clip1.5"),
        ("wrpn8", "a3:fit"),
        ("twn", "a2:fit"),
        ("twn:channel", "a2:fit"),
        ("twn:channel", "a4:clip0.8"),
        ("binary", "a2:fit"),
        ("binary:channel", "a1:fit"),
        ("binary", "a1:clip0.5"),
        ("twn:channel", "a1:fit"),
    ];
    for (w, a) in cases {
        for fl in [false, true] {
            let qm = qmodel(w, a, fl);
            let lowbit = qm
                .layers
                .iter()
                .filter(|l| matches!(l.weights, NumberFormat::LowBit(_)))
                .count();
            assert_eq!(lowbit, if fl { 3 } else { 5 }, "{w}/{a}");
            for (b, seed) in [(1, 1), (3, 2)] {
                let x = input(b, seed);
                let yr = run_in(1, &qm, Mode::Reference, &x);
                for threads in [1, 2] {
                    let yf = run_in(threads, &qm, Mode::Fast, &x);
                    for (i, (f, r)) in yf.iter().zip(&yr).enumerate() {
                        assert_eq!(
                            bits(f),
                            bits(r),
                            "{w}/{a} first/last fp32 {fl}, {threads} threads: value {i} differs"
                        );
                    }
                }
                // the quantised model is not the float one
                let yfl = run_in(1, &qm, Mode::Float, &x);
                assert_ne!(bits(yfl.last().unwrap()), bits(yr.last().unwrap()));
            }
        }
    }
}

#[test]
fn packed_weights_are_the_quantisers_codes() {
    let qm = qmodel("twn:channel", "a2:fit", false);
    let t = tensors();
    for (n, p) in &qm.packed {
        let (shape, v) = &t[&format!("param/{n}")];
        let want = quantize_lowbit(
            v,
            shape[0],
            &LowBitFormat::Twn {
                mode: lowprec_formats::ScaleMode::PerChannel,
            },
            n,
        )
        .unwrap();
        let PackedWeights::LowBit(lt) = p else {
            panic!("{n}: not low-bit")
        };
        assert_eq!(lt.q, want, "{n}");
        assert_eq!(lt.q.scales.len(), shape[0]);
    }
    // fitted clips: a fixed, positive clip per layer, which the file keeps
    for l in &qm.layers {
        match l.acts {
            NumberFormat::LowBit(f) => assert!(f.clip().is_some_and(|c| c > 0.0), "{}", l.name),
            other => panic!("{}: {other}", l.name),
        }
    }
    let back = QuantizedModel::from_bytes(&qm.to_bytes().unwrap()).unwrap();
    assert_eq!(back, qm);
    // 2 bits per code plus one f32 scale per channel
    let (packed, _) = qm.storage();
    let want: usize = qm
        .packed
        .values()
        .map(|p| match p {
            PackedWeights::LowBit(t) => (t.q.codes.len() * 2).div_ceil(8) + 4 * t.q.scales.len(),
            _ => unreachable!(),
        })
        .sum();
    assert_eq!(packed, want);
    // re-quantising with the file's formats keeps the clips and gives the same model
    let again = quantize_like(
        &qm.config_toml,
        qm.tensors.clone(),
        &qm.layers,
        qm.extra.clone(),
    )
    .unwrap();
    assert_eq!(again, qm);
    // every format survives the file
    for (w, a) in [
        ("ternary", "a2"),
        ("wrpn5", "a3"),
        ("binary", "a1"),
        ("twn", "a2"),
    ] {
        let qm = qmodel(w, a, true);
        assert_eq!(
            QuantizedModel::from_bytes(&qm.to_bytes().unwrap()).unwrap(),
            qm
        );
    }
}

fn load_err(qm: &QuantizedModel) -> String {
    QuantizedModel::from_bytes(&qm.to_bytes().unwrap())
        .unwrap_err()
        .to_string()
}

fn lowbit_mut<'a>(qm: &'a mut QuantizedModel, n: &str) -> &'a mut lowprec_infer::LowBitTensor {
    match qm.packed.get_mut(n) {
        Some(PackedWeights::LowBit(t)) => t,
        _ => panic!("{n} is not low-bit"),
    }
}

#[test]
fn bad_low_bit_files_are_clear_errors() {
    let qm = qmodel("twn:channel", "a2:fit", false);
    // wrong bit count: 3-bit codes for a 2-bit format
    let mut t = qm.clone();
    lowbit_mut(&mut t, "c2.weight").q.bits = 3;
    let e = load_err(&t);
    assert!(
        e.contains("packed/c2.weight.codes") && e.contains("3-bit") && e.contains("2-bit"),
        "{e}"
    );
    // a code outside the format (-2 fits two bits but is not ternary)
    let mut t = qm.clone();
    lowbit_mut(&mut t, "fc1.weight").q.codes[17] = -2;
    let e = load_err(&t);
    assert!(
        e.contains("packed/fc1.weight.codes") && e.contains("code -2 at element 17"),
        "{e}"
    );
    // truncated codes
    let mut t = qm.clone();
    lowbit_mut(&mut t, "c3.weight").q.codes.truncate(10);
    let e = load_err(&t);
    assert!(
        e.contains("packed/c3.weight.codes") && e.contains("truncated"),
        "{e}"
    );
    // wrong number of scales
    let mut t = qm.clone();
    lowbit_mut(&mut t, "c2.weight").q.scales.pop();
    let e = load_err(&t);
    assert!(
        e.contains("packed/c2.weight.scales") && e.contains("6 scales, 7 expected"),
        "{e}"
    );
    // a non-finite scale
    let mut t = qm.clone();
    lowbit_mut(&mut t, "c2.weight").q.scales[1] = f32::NAN;
    let e = load_err(&t);
    assert!(e.contains("packed/c2.weight.scales"), "{e}");
    // shape that is not the parameter's
    let mut t = qm.clone();
    lowbit_mut(&mut t, "c1.weight").shape = vec![9, 27];
    let e = load_err(&t);
    assert!(
        e.contains("packed/c1.weight.codes") && e.contains("shape"),
        "{e}"
    );
    // the layer says another format than the packed tensor
    let mut t = qm.clone();
    lowbit_mut(&mut t, "c2.weight").format = LowBitFormat::Wrpn { bits: 2 };
    let e = load_err(&t);
    assert!(e.contains("c2.weight") && e.contains("ternary"), "{e}");
    // low-bit weights with activations that are not a<k>
    let mut t = qm.clone();
    t.layers[1].acts = NumberFormat::F32;
    let e = load_err(&t);
    assert!(e.contains("layer c2") && e.contains("a<k>"), "{e}");
    // binary: a zero cannot be written
    let mut b = qmodel("binary", "a2", false);
    lowbit_mut(&mut b, "c2.weight").q.codes[0] = 0;
    let e = b.to_bytes().unwrap_err().to_string();
    assert!(
        e.contains("packed/c2.weight.codes") && e.contains("not binary"),
        "{e}"
    );
    // WRPN's scale is fixed
    let mut w = qmodel("wrpn4", "a2", false);
    lowbit_mut(&mut w, "c2.weight").q.scales[0] = 0.5;
    let e = load_err(&w);
    assert!(
        e.contains("packed/c2.weight.scales") && e.contains("1/7"),
        "{e}"
    );
}

#[test]
fn bad_low_bit_options_are_errors() {
    let mk = |w: &str, a: &str, calib: bool| {
        let mut o = opts(w, a, false);
        if !calib {
            o.calib.clear();
        }
        quantize_tensors(CONFIG, tensors(), &o, BTreeMap::new())
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    assert!(mk("ternary", "int5bfp", true).contains("a<k>"));
    assert!(mk("a2", "a2", true).contains("activation format"));
    assert!(mk("int4bfp", "a2", true).contains("int4bfp"));
    let e = mk("twn", "a2:fit", false);
    assert!(e.contains("calibration") && e.contains("layer c1"), "{e}");
    // an unfitted clip in a model the engine is asked to run
    let mut qm = qmodel("twn", "a2", false);
    qm.layers[1].acts = NumberFormat::LowBit(LowBitFormat::Acts {
        bits: 2,
        clip: ActClip::Fit,
    });
    let e = Engine::new(&qm, Mode::Fast).err().unwrap().to_string();
    assert!(e.contains("c2") && e.contains("fit"), "{e}");
    // format strings
    for bad in [
        "wrpn9",
        "wrpn1",
        "a8",
        "a0",
        "a2:clip-1",
        "a2:clip0",
        "twn:row",
        "ternary:channel",
        "a2:fit:clip1",
    ] {
        assert!(bad.parse::<NumberFormat>().is_err(), "{bad}");
    }
    for good in [
        "ternary",
        "wrpn4",
        "twn",
        "twn:channel",
        "binary:channel",
        "a2",
        "a2:fit",
        "a3:clip2.5",
        "a2:clip0.1",
    ] {
        let f: NumberFormat = good.parse().unwrap();
        let back: NumberFormat = f.to_string().parse().unwrap();
        assert_eq!(back, f, "{good}");
    }
    assert_eq!(
        "a2".parse::<NumberFormat>().unwrap().to_string(),
        "a2:clip1"
    );
}
