//! Writes the seed corpora of the fuzz targets, each file made by lowprec's own writers where
//! there is one (IDX, CIFAR records, .npy, SigMF, checkpoints, model files, training
//! descriptions, exchange messages): a few small valid inputs and a few invalid ones per target.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example make_corpus -- fuzz/corpus`
//! (replaces the `seed-*` files; corpus files libFuzzer added are left alone).

use std::collections::BTreeMap;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use lowprec_data::cifar::encode_cifar_binary;
use lowprec_data::idx::encode_idx;
use lowprec_data::npy::encode_npy;
use lowprec_data::Dataset;
use lowprec_fuzz::join;
use lowprec_infer::ptq::{quantize_tensors, PtqOptions};
use lowprec_nn::{Model, Tensor};
use lowprec_rf::sigmf::{write_sigmf, SigMfMeta};
use lowprec_rf::Iq;
use lowprec_train::{Checkpoint, TrainConfig, PRESETS};

type Seeds = Vec<(String, Vec<u8>)>;

fn seed(name: &str, bytes: impl Into<Vec<u8>>) -> (String, Vec<u8>) {
    (name.to_string(), bytes.into())
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// An IDX file of another dtype than u8 (the writer only writes bytes): header and values.
fn idx_typed(dtype: u8, dims: &[u32], values: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, dtype, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(values);
    out
}

fn idx_seeds() -> Seeds {
    let img = encode_idx(
        &[3, 2, 2],
        &[0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 255],
    )
    .unwrap();
    let f32s: Vec<u8> = [1.5f32, -2.0, 0.25]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect();
    vec![
        seed("seed-u8", img.clone()),
        seed("seed-u8-gz", gzip(&img)),
        seed("seed-i16", idx_typed(0x0B, &[2], &[0xff, 0xfe, 0, 7])),
        seed("seed-f32", idx_typed(0x0D, &[3, 1], &f32s)),
        seed("seed-f64", idx_typed(0x0E, &[1], &2.5f64.to_be_bytes())),
        seed("seed-bad-truncated", img[..10].to_vec()),
        seed(
            "seed-bad-huge-dims",
            idx_typed(0x08, &[1 << 20, 1 << 20], &[1, 2, 3]),
        ),
    ]
}

fn idx_set_seeds() -> Seeds {
    let x_train = encode_idx(&[4, 2, 2], &(0..16).map(|v| v * 16).collect::<Vec<u8>>()).unwrap();
    let y_train = encode_idx(&[4], &[0, 1, 2, 1]).unwrap();
    let x_test = encode_idx(&[2, 2, 2], &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
    let y_test = encode_idx(&[2], &[2, 0]).unwrap();
    let f32_train: Vec<u8> = (0..8)
        .flat_map(|v| (v as f32 * 0.5).to_be_bytes())
        .collect();
    let f32_test: Vec<u8> = (0..4)
        .flat_map(|v| (v as f32 - 1.0).to_be_bytes())
        .collect();
    vec![
        seed(
            "seed-mnist-like",
            join(&[&x_train, &y_train, &x_test, &y_test]),
        ),
        seed(
            "seed-gz",
            join(&[&gzip(&x_train), &y_train, &gzip(&x_test), &y_test]),
        ),
        seed(
            "seed-f32-features",
            join(&[
                &idx_typed(0x0D, &[4, 2], &f32_train),
                &y_train,
                &idx_typed(0x0D, &[2, 2], &f32_test),
                &y_test,
            ]),
        ),
        seed(
            "seed-bad-label-count",
            join(&[&x_train, &y_test, &x_test, &y_test]),
        ),
    ]
}

fn cifar_binary_seeds() -> Seeds {
    let images: Vec<u8> = (0..2 * 3072).map(|i| (i % 251) as u8).collect();
    let ds = Dataset::new(images, vec![3, 9], 3, 32, 32, 10).unwrap();
    let bytes = encode_cifar_binary(&ds).unwrap();
    let mut bad_label = bytes.clone();
    bad_label[3073] = 10;
    vec![
        seed("seed-two-records", bytes.clone()),
        seed("seed-gz", gzip(&bytes)),
        seed("seed-bad-label", bad_label),
        seed("seed-bad-truncated", bytes[..3000].to_vec()),
    ]
}

fn png(w: u32, h: u32, grey: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let img: image::DynamicImage = if grey {
        image::GrayImage::from_fn(w, h, |x, y| image::Luma([(x * 8 + y) as u8])).into()
    } else {
        image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 8) as u8, (y * 8) as u8, 128]))
            .into()
    };
    img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

fn jpeg(w: u32, h: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let img: image::DynamicImage =
        image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 8) as u8, 64, (y * 8) as u8]))
            .into();
    img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Jpeg)
        .unwrap();
    out
}

fn tarball(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, bytes) in members {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, name, *bytes).unwrap();
    }
    b.into_inner().unwrap()
}

fn cifar_tarball_seeds() -> Seeds {
    let (p, j) = (png(32, 32, false), jpeg(32, 32));
    let tar = tarball(&[
        ("cifar10/train/cat/0.png", &p),
        ("cifar10/train/ship/1.jpg", &j),
        ("cifar10/test/dog/2.png", &p),
        ("cifar10/README", b"not an image"),
    ]);
    vec![
        seed("seed-tar-gz", gzip(&tar)),
        seed("seed-tar", tar),
        seed(
            "seed-bad-class",
            gzip(&tarball(&[("train/unicorn/0.png", &p)])),
        ),
        seed(
            "seed-bad-size",
            tarball(&[("train/cat/0.png", &png(4, 4, false))]),
        ),
    ]
}

fn image_seeds() -> Seeds {
    let with = |mode: u8, bytes: Vec<u8>| [vec![mode], bytes].concat();
    let j = jpeg(32, 32);
    vec![
        seed("seed-png-cifar", with(0, png(32, 32, false))),
        seed("seed-jpeg-cifar", with(0, j.clone())),
        seed("seed-png-grey-resized", with(1, png(5, 3, true))),
        seed("seed-jpeg-rgb-resized", with(2, jpeg(13, 7))),
        seed(
            "seed-bad-truncated-jpeg",
            with(0, j[..j.len() / 2].to_vec()),
        ),
    ]
}

fn npy_files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "f32",
            encode_npy(&[0.5f32, -1.0, 2.0, 3.5, 0.0, 1e-3], &[2, 3]).unwrap(),
        ),
        ("f64", encode_npy(&[1.0f64, 2.0], &[2, 1]).unwrap()),
        ("u8", encode_npy(&[0u8, 1, 2, 255], &[4]).unwrap()),
        ("i64", encode_npy(&[3i64, -4, 5], &[3]).unwrap()),
        ("u16", encode_npy(&[7u16, 8], &[2]).unwrap()),
        ("bool", encode_npy(&[true, false, true], &[3]).unwrap()),
        ("u64", encode_npy(&[u64::MAX], &[1]).unwrap()),
    ]
}

fn npy_seeds() -> Seeds {
    let mut out: Seeds = npy_files()
        .into_iter()
        .map(|(n, b)| seed(&format!("seed-{n}"), b))
        .collect();
    let f = encode_npy(&[0.5f32, -1.0], &[2]).unwrap();
    out.push(seed("seed-bad-truncated", f[..f.len() - 3].to_vec()));
    out.push(seed(
        "seed-bad-fortran",
        String::from_utf8_lossy(&f)
            .replace("'fortran_order': False", "'fortran_order': True")
            .into_bytes(),
    ));
    out
}

fn zip_of(members: &[(&str, &[u8])], deflate: bool) -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    let mut z = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let method = if deflate {
        zip::CompressionMethod::Deflated
    } else {
        zip::CompressionMethod::Stored
    };
    for (name, bytes) in members {
        z.start_file(
            *name,
            SimpleFileOptions::default().compression_method(method),
        )
        .unwrap();
        z.write_all(bytes).unwrap();
    }
    z.finish().unwrap().into_inner()
}

fn npz_seeds() -> Seeds {
    let x_train = encode_npy(
        &(0..12).map(|v| v as u8 * 20).collect::<Vec<u8>>(),
        &[3, 2, 2],
    )
    .unwrap();
    let y_train = encode_npy(&[0i64, 1, 2], &[3]).unwrap();
    let x_test = encode_npy(&[1u8, 2, 3, 4], &[1, 2, 2]).unwrap();
    let y_test = encode_npy(&[1i64], &[1]).unwrap();
    let xf_train = encode_npy(&[0.5f32, 1.5, -2.0, 0.0, 3.0, 4.0], &[3, 2]).unwrap();
    let xf_test = encode_npy(&[1.0f32, 2.0], &[1, 2]).unwrap();
    let yv_train = encode_npy(&[0.1f32, 0.2, 0.3], &[3, 1]).unwrap();
    let yv_test = encode_npy(&[0.4f32], &[1, 1]).unwrap();
    let nhwc = encode_npy(
        &(0..24).map(|v| v as u8).collect::<Vec<u8>>(),
        &[2, 2, 2, 3],
    )
    .unwrap();
    let set = [
        ("x_train.npy", &x_train[..]),
        ("y_train.npy", &y_train[..]),
        ("x_test.npy", &x_test[..]),
        ("y_test.npy", &y_test[..]),
    ];
    vec![
        seed("seed-stored", zip_of(&set, false)),
        seed("seed-deflated", zip_of(&set, true)),
        seed(
            "seed-channels-last",
            zip_of(
                &[
                    ("x_train.npy", &nhwc),
                    ("y_train.npy", &encode_npy(&[0u8, 1], &[2, 1]).unwrap()),
                    ("x_test.npy", &nhwc),
                    ("y_test.npy", &encode_npy(&[1u8, 1], &[2]).unwrap()),
                ],
                false,
            ),
        ),
        seed(
            "seed-regression",
            zip_of(
                &[
                    ("x_train.npy", &xf_train),
                    ("y_train.npy", &yv_train),
                    ("x_test.npy", &xf_test),
                    ("y_test.npy", &yv_test),
                ],
                true,
            ),
        ),
        seed(
            "seed-auto-encoder",
            zip_of(
                &[("x_train.npy", &xf_train), ("x_test.npy", &xf_test)],
                false,
            ),
        ),
        seed(
            "seed-bad-missing-array",
            zip_of(&[("x_train.npy", &x_train)], false),
        ),
    ]
}

fn sigmf_seeds(tmp: &Path) -> Seeds {
    let samples: Vec<Iq> = (0..16)
        .map(|k| Iq {
            i: (k as f32 * 0.3).sin(),
            q: (k as f32 * 0.3).cos(),
        })
        .collect();
    let mut meta = SigMfMeta::new(1.0e6);
    meta.global.description = Some("fuzz seed".into());
    meta.annotations.push(lowprec_rf::sigmf::Annotation {
        sample_start: 4,
        sample_count: Some(8),
        label: Some("tone".into()),
        freq_lower_edge: Some(-1.0e3),
        freq_upper_edge: Some(1.0e3),
        generator: None,
        comment: None,
    });
    let base = tmp.join("rec");
    write_sigmf(&base, meta, &samples[..], 4).unwrap();
    let meta_text = std::fs::read(base.with_extension("sigmf-meta")).unwrap();
    let data = std::fs::read(base.with_extension("sigmf-data")).unwrap();
    let minimal = serde_json::to_vec(&SigMfMeta::new(48_000.0)).unwrap();
    let mut nan = data.clone();
    nan[8..12].copy_from_slice(&f32::NAN.to_le_bytes());
    vec![
        seed("seed-written", join(&[&[0], &meta_text, &data])),
        seed("seed-minimal", join(&[&[0], &minimal, &data[..40]])),
        seed("seed-nan-zeroed", join(&[&[3], &minimal, &nan])),
        seed("seed-bad-sha512", join(&[&[0], &meta_text, &nan])),
        seed(
            "seed-bad-partial-sample",
            join(&[&[0], &minimal, &data[..13]]),
        ),
    ]
}

fn presets() -> Vec<(&'static str, TrainConfig)> {
    PRESETS
        .iter()
        .map(|(n, t)| (*n, TrainConfig::from_toml(t, n).unwrap()))
        .collect()
}

fn network_spec_seeds() -> Seeds {
    let mut out: Seeds = presets()
        .into_iter()
        .filter(|(n, _)| !n.starts_with("preresnet20-cifar-"))
        .map(|(n, c)| seed(&format!("seed-{n}"), toml::to_string(&c.model).unwrap()))
        .collect();
    out.push(seed(
        "seed-bad-huge-linear",
        "input = [1, 28, 28]\nloss = \"cross-entropy\"\n[[layer]]\ntype = \"flatten\"\n\
         [[layer]]\ntype = \"linear\"\nout = 100000000000\n",
    ));
    out.push(seed(
        "seed-bad-from",
        "input = [4]\nloss = \"mse\"\n[[layer]]\ntype = \"linear\"\nout = 2\nfrom = [\"nowhere\"]\n",
    ));
    out
}

fn train_config_seeds() -> Seeds {
    let mut out: Seeds = PRESETS
        .iter()
        .filter(|(n, _)| !n.starts_with("preresnet20-cifar-"))
        .map(|(n, t)| seed(&format!("seed-{n}"), *t))
        .collect();
    let mnist = TrainConfig::from_toml(PRESETS[1].1, "mnist-mlp").unwrap();
    let varprec = format!(
        "{}\n{}",
        mnist
            .to_toml()
            .replace("precision = \"fp32\"", "precision = \"bfp8\""),
        "[[precision_schedule]]\nlayers = [\"fc1\"]\nepochs = [0, 2]\nwidth = 4\n\n\
         [[precision_schedule]]\nkinds = [\"grads\"]\ndepth = [0.5, 1.0]\niterations = [10, 20]\n\
         format = \"bfp6:tile8\"\n\n[fast]\nevery = 10\nmax_width = 8\n"
    );
    TrainConfig::from_toml(&varprec, "varprec").unwrap();
    out.push(seed("seed-varprec-fast", varprec));
    let own = mnist.to_toml().replace(
        "dataset = \"mnist\"",
        "dataset = \"npz\"\npath = \"set.npz\"\nclasses = 10\nchannels = 1\nimage_size = [28, 28]",
    );
    out.push(seed("seed-own-data", own));
    out.push(seed(
        "seed-bad-unknown-key",
        mnist
            .to_toml()
            .replace("[train]", "[train]\nlearning_rate = 1"),
    ));
    out
}

fn schedule_seeds() -> Seeds {
    vec![
        seed(
            "seed-width",
            "{ layers = [\"fc1\"], epochs = [0, 2], width = 4 }",
        ),
        seed(
            "seed-two",
            "{ index = [0, 2], iterations = [0, 100], width = 6 }\n\
             { kinds = [\"grads\", \"momentum\"], depth = [0.5, 1.0], format = \"bfp8:tile16\" }",
        ),
        seed(
            "seed-format",
            "{ kinds = [\"acts\"], format = \"bfp4:tile16:e4\" }",
        ),
        seed(
            "seed-bad-overlap",
            "{ width = 4 }\n{ layers = [\"conv1\"], width = 6 }",
        ),
        seed("seed-bad-width", "{ width = 5 }"),
    ]
}

fn number_format_seeds() -> Seeds {
    let values: Vec<u8> = [0.5f32, -1.25, 3.0, 1e-6, -7.5, 0.0, 100.0, 0.125]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    [
        "fp32",
        "bfp8",
        "bfp8:tile32:stochastic",
        "bfp6:tensor:nearest",
        "bfp4:tile16:e4:asym",
        "bfp8:axis0",
        "fixed8:4",
        "fixed16:8:nearest",
        "float5:2",
        "float8:3:nearest",
        "int8bfp",
        "int4bfp",
        "ternary",
        "twn:channel",
        "binary",
        "wrpn3",
        "a2:clip1.5",
        "a3:fit",
        "bfp8:tile0",
        "bfp9:tile4:tile8",
    ]
    .iter()
    .enumerate()
    .map(|(i, f)| {
        let name = f.replace(':', "_");
        seed(
            &format!("seed-{i:02}-{name}"),
            join(&[f.as_bytes(), &values]),
        )
    })
    .collect()
}

fn precision_policy_seeds() -> Seeds {
    [
        "fp32",
        "bfp8",
        "swalp",
        "bfp8,weights=bfp6:tensor:stochastic",
        "swalp,acts=bfp4:tile16:e4,errors=fixed8:4",
        lowprec_train::varprec::G16M4,
        "bfp8:tile32",
        "weights",
        "bfp8:tensor",
        "bfp8:tile7",
        "fp32,master=bfp",
    ]
    .iter()
    .enumerate()
    .map(|(i, p)| seed(&format!("seed-{i:02}"), *p))
    .collect()
}

fn data_source_seeds() -> Seeds {
    let tables = [
        "dataset = \"mnist\"\nnormalize = \"mnist\"\n",
        "dataset = \"cifar10\"\nnormalize = \"dataset\"\naugment = true\n",
        "dataset = \"npz\"\npath = \"set.npz\"\nclasses = 4\n",
        "dataset = \"image-folder\"\npath = \"imgs\"\nchannels = 1\nimage_size = [8, 8]\n\
         normalize = \"explicit\"\nmean = [0.5]\nstd = [0.25]\n",
        "dataset = \"idx\"\npath = \"d\"\n[sha256]\n\"train-images-idx3-ubyte\" = \"00\"\n",
    ];
    let sources = [
        "idx:data/mnist",
        "npz:set.npz",
        "npy:arrays",
        "image-folder:imgs",
        "csv:x",
    ];
    tables
        .iter()
        .zip(sources)
        .enumerate()
        .map(|(i, (t, s))| seed(&format!("seed-{i}"), join(&[t.as_bytes(), s.as_bytes()])))
        .collect()
}

/// A small network with a convolution, batch norm and a linear layer: small model files.
const SMALL: &str = r#"
name = "small"
precision = "fp32"
[data]
dataset = "mnist"
[model]
input = [1, 4, 4]
loss = "cross-entropy"
[[model.layer]]
type = "conv"
name = "c1"
out = 2
kernel = 3
padding = 1
bias = true
[[model.layer]]
type = "batchnorm"
name = "bn1"
[[model.layer]]
type = "relu"
[[model.layer]]
type = "flatten"
[[model.layer]]
type = "linear"
name = "fc"
out = 3
bias = true
[train]
batch = 2
epochs = 1
lr = 0.1
"#;

fn small_tensors() -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let cfg = TrainConfig::from_toml(SMALL, "small").unwrap();
    let model = Model::build(&cfg.model, 5).unwrap();
    let mut t = BTreeMap::new();
    for p in model.params() {
        t.insert(
            format!("param/{}", p.name),
            (p.shape.clone(), p.value.clone()),
        );
    }
    for (n, b) in model.buffers() {
        t.insert(format!("buffer/{n}"), (vec![b.len()], b.clone()));
    }
    t
}

fn checkpoint_seeds() -> Seeds {
    let mut tensors = small_tensors();
    let momentum: Vec<(String, (Vec<usize>, Vec<f32>))> = tensors
        .iter()
        .filter(|(k, _)| k.starts_with("param/"))
        .map(|(k, (s, v))| {
            (
                k.replace("param/", "momentum/"),
                (s.clone(), vec![0.0; v.len()]),
            )
        })
        .collect();
    tensors.extend(momentum);
    let mut extra = BTreeMap::new();
    extra.insert("precision".into(), "fp32".into());
    extra.insert("seed".into(), "5".into());
    let ck = Checkpoint {
        epoch: 1,
        step: 8,
        config_toml: SMALL.into(),
        tensors,
        swa_n: 0,
        extra,
    };
    let bytes = ck.to_bytes().unwrap();
    let mut flipped = bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x40;
    vec![
        seed("seed-small", bytes.clone()),
        seed("seed-bad-truncated", bytes[..bytes.len() - 7].to_vec()),
        seed("seed-bad-flipped", flipped),
    ]
}

fn model_file_seeds() -> Seeds {
    let calib = Tensor::new(
        (0..32).map(|i| (i as f32 * 0.37).sin()).collect(),
        vec![2, 1, 4, 4],
    )
    .unwrap();
    let mut out = Seeds::new();
    for (w, a) in [
        ("int8bfp", "int8bfp"),
        ("int4bfp", "int5bfp"),
        ("ternary", "a2"),
        ("wrpn3", "a2:clip1.5"),
        ("binary:channel", "a1:fit"),
    ] {
        let opts = PtqOptions {
            weights: w.parse().unwrap(),
            acts: a.parse().unwrap(),
            first_last_fp32: false,
            calib: vec![calib.clone()],
        };
        let qm = quantize_tensors(SMALL, small_tensors(), &opts, BTreeMap::new()).unwrap();
        let name = format!("seed-{}-{}", w.replace(':', "_"), a.replace(':', "_"));
        out.push(seed(&name, qm.to_bytes().unwrap()));
    }
    let (_, first) = out[0].clone();
    out.push(seed(
        "seed-bad-truncated",
        first[..first.len() - 5].to_vec(),
    ));
    out
}

fn dist_exchange_seeds() -> Seeds {
    use lowprec_fuzz::exchange::{run, Peers};
    let mut out = Seeds::new();
    for (ranks, format) in [(0u8, 0u8), (0, 1), (1, 2), (2, 3)] {
        // Rank 0's own messages, replayed as every other rank's: a job whose ranks agree. Each
        // message depends on the replies to the calls before it (the summed gradients), so the
        // replay is recorded again until it runs to the end.
        let size = 2 + usize::from(ranks % 3);
        let mut stream: Vec<u8> = Vec::new();
        let mut done = false;
        for _ in 0..8 {
            let (sent, result) = run(Peers::new(ranks, &stream), format);
            if result.is_ok() {
                done = true;
                break;
            }
            stream = sent
                .iter()
                .flat_map(|m| {
                    std::iter::repeat_n(m.as_slice(), size - 1)
                        .flatten()
                        .copied()
                })
                .collect();
        }
        assert!(done, "the replayed exchange runs to the end");
        out.push(seed(
            &format!("seed-ranks{size}-format{format}"),
            [vec![ranks, format], stream].concat(),
        ));
    }
    out.push(seed(
        "seed-bad-garbage",
        b"\x00\x01LPX1 not a message".to_vec(),
    ));
    out
}

fn main() {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/corpus".to_string()),
    );
    let tmp = std::env::temp_dir().join(format!("lowprec-fuzz-corpus-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let targets: Vec<(&str, Seeds)> = vec![
        ("idx", idx_seeds()),
        ("idx_set", idx_set_seeds()),
        ("cifar_binary", cifar_binary_seeds()),
        ("cifar_tarball", cifar_tarball_seeds()),
        ("image", image_seeds()),
        ("npy", npy_seeds()),
        ("npz", npz_seeds()),
        ("sigmf", sigmf_seeds(&tmp)),
        ("network_spec", network_spec_seeds()),
        ("train_config", train_config_seeds()),
        ("schedule", schedule_seeds()),
        ("number_format", number_format_seeds()),
        ("precision_policy", precision_policy_seeds()),
        ("data_source", data_source_seeds()),
        ("checkpoint", checkpoint_seeds()),
        ("model_file", model_file_seeds()),
        ("dist_exchange", dist_exchange_seeds()),
    ];
    std::fs::remove_dir_all(&tmp).ok();
    let mut total = 0;
    for (target, seeds) in targets {
        let d = dir.join(target);
        std::fs::create_dir_all(&d).unwrap();
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("seed-"))
            {
                std::fs::remove_file(p).unwrap();
            }
        }
        let bytes: usize = seeds.iter().map(|(_, b)| b.len()).sum();
        for (name, b) in &seeds {
            std::fs::write(d.join(name), b).unwrap();
        }
        println!("{target:17} {:2} seeds, {bytes:6} bytes", seeds.len());
        total += bytes;
    }
    println!("total {total} bytes");
}
