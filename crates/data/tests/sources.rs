//! A user's own data sets: IDX directories, .npy/.npz arrays and image folders, on small files
//! the tests write, and the errors bad files give.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use common::{assert_err_mentions, bytes, labels};
use lowprec_data::batch::reference_sample as reference;
use lowprec_data::npy::{encode_npy, parse_npy};
use lowprec_data::{
    load_idx_dir, load_source, parse_kind_path, write_idx, write_npy, Augment, BatchConfig,
    DataDir, Dataset, EpochBatches, Normalization, SourceKind, SourceOptions, IDX_FILE_NAMES,
};

fn opts() -> SourceOptions {
    SourceOptions::default()
}

/// Writes an IDX set of `n_train` / `n_test` 5x7 images with labels below `classes`.
fn write_idx_set(dir: &Path, n_train: usize, n_test: usize, classes: u8, gzip: bool) {
    let sfx = if gzip { ".gz" } else { "" };
    for (k, n) in [(0, n_train), (2, n_test)] {
        write_idx(
            &dir.join(format!("{}{sfx}", IDX_FILE_NAMES[k])),
            &[n, 5, 7],
            &bytes(k as u64, n * 35),
            gzip,
        )
        .unwrap();
        write_idx(
            &dir.join(format!("{}{sfx}", IDX_FILE_NAMES[k + 1])),
            &[n],
            &labels(k as u64 + 1, n, classes),
            gzip,
        )
        .unwrap();
    }
}

#[test]
fn idx_any_size_and_class_count_raw_and_gzipped() {
    for gzip in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        write_idx_set(dir.path(), 40, 9, 13, gzip);
        let s = load_idx_dir(dir.path(), &opts()).unwrap();
        assert_eq!((s.train.channels, s.train.height, s.train.width), (1, 5, 7));
        assert_eq!((s.train.len(), s.test.len()), (40, 9));
        let max = s.train.labels.iter().chain(&s.test.labels).max().unwrap();
        assert_eq!(s.train.classes, usize::from(*max) + 1);
        assert_eq!(s.train.images, bytes(0, 40 * 35));
        assert_eq!(s.test.labels, labels(3, 9, 13));
        assert!(!s.train.is_float());
        // The same through the kind:path front door.
        let (kind, path) = parse_kind_path(&format!("idx:{}", dir.path().display())).unwrap();
        assert_eq!(kind, SourceKind::Idx);
        let dd = DataDir::new(dir.path().join("cache"));
        assert_eq!(load_source(kind, &path, &opts(), &dd).unwrap(), s);
    }
}

#[test]
fn idx_sha256_is_checked_when_given() {
    let dir = tempfile::tempdir().unwrap();
    write_idx_set(dir.path(), 6, 3, 4, true);
    let name = format!("{}.gz", IDX_FILE_NAMES[0]);
    let path = dir.path().join(&name);
    let good = lowprec_data::fsutil::hex(&lowprec_data::fsutil::sha256_file(&path).unwrap());
    let mut o = opts();
    o.sha256 = BTreeMap::from([(name.clone(), good)]);
    load_idx_dir(dir.path(), &o).unwrap();
    o.sha256 = BTreeMap::from([(name.clone(), "00".repeat(32))]);
    assert_err_mentions(load_idx_dir(dir.path(), &o), &[&name, "sha256 mismatch"]);
    o.sha256 = BTreeMap::from([("nosuchfile".into(), "00".into())]);
    assert_err_mentions(load_idx_dir(dir.path(), &o), &["nosuchfile"]);
}

#[test]
fn idx_bad_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    write_idx_set(dir.path(), 6, 3, 4, false);
    // A label file shorter than its image file.
    let labels_path = dir.path().join(IDX_FILE_NAMES[1]);
    write_idx(&labels_path, &[5], &[0, 1, 2, 3, 0], false).unwrap();
    assert_err_mentions(
        load_idx_dir(dir.path(), &opts()),
        &[IDX_FILE_NAMES[1], "5 labels for the 6 samples"],
    );
    // Labels above a declared class count.
    write_idx(&labels_path, &[6], &[0, 1, 2, 3, 9, 0], false).unwrap();
    let mut o = opts();
    o.classes = Some(4);
    assert_err_mentions(
        load_idx_dir(dir.path(), &o),
        &[IDX_FILE_NAMES[1], "label 9 at index 4", "class count 4"],
    );
    // Trailing bytes after the data.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&labels_path)
        .unwrap();
    f.write_all(&[1, 2]).unwrap();
    drop(f);
    assert_err_mentions(
        load_idx_dir(dir.path(), &opts()),
        &[IDX_FILE_NAMES[1], "2 trailing bytes"],
    );
    // A missing file.
    std::fs::remove_file(&labels_path).unwrap();
    assert_err_mentions(
        load_idx_dir(dir.path(), &opts()),
        &["missing", IDX_FILE_NAMES[1]],
    );
    // A truncated gzip stream.
    let dir2 = tempfile::tempdir().unwrap();
    write_idx_set(dir2.path(), 6, 3, 4, true);
    let p = dir2.path().join(format!("{}.gz", IDX_FILE_NAMES[2]));
    let b = std::fs::read(&p).unwrap();
    std::fs::write(&p, &b[..b.len() / 2]).unwrap();
    assert_err_mentions(
        load_idx_dir(dir2.path(), &opts()),
        &[IDX_FILE_NAMES[2], "gzip"],
    );
}

/// Writes an .npz of stored (and, for `x_test`, deflated) members.
fn write_npz(path: &Path, members: &[(&str, Vec<u8>)]) {
    let f = std::fs::File::create(path).unwrap();
    let mut z = zip::ZipWriter::new(f);
    for (name, bytes) in members {
        let method = if *name == "x_test" {
            zip::CompressionMethod::Deflated
        } else {
            zip::CompressionMethod::Stored
        };
        let o = zip::write::SimpleFileOptions::default().compression_method(method);
        z.start_file(format!("{name}.npy"), o).unwrap();
        z.write_all(bytes).unwrap();
    }
    z.finish().unwrap();
}

fn floats(seed: u64, n: usize) -> Vec<f32> {
    bytes(seed, n)
        .into_iter()
        .map(|b| f32::from(b) / 16.0 - 8.0)
        .collect()
}

#[test]
fn npz_float_features_int_labels() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("set.npz");
    let (xtr, xte) = (floats(1, 11 * 6), floats(2, 4 * 6));
    let ytr: Vec<i64> = (0..11).map(|i| i % 5).collect();
    let yte: Vec<i32> = vec![4, 0, 1, 2];
    let xte64: Vec<f64> = xte.iter().map(|&v| f64::from(v)).collect();
    write_npz(
        &p,
        &[
            ("x_train", encode_npy(&xtr, &[11, 6]).unwrap()),
            ("y_train", encode_npy(&ytr, &[11]).unwrap()),
            ("x_test", encode_npy(&xte64, &[4, 6]).unwrap()),
            ("y_test", encode_npy(&yte, &[4, 1]).unwrap()),
        ],
    );
    let dd = DataDir::new(dir.path().join("cache"));
    let s = load_source(SourceKind::Npz, &p, &opts(), &dd).unwrap();
    assert!(s.train.is_float() && s.test.is_float());
    assert_eq!((s.train.channels, s.train.height, s.train.width), (1, 1, 6));
    assert_eq!(s.train.features, xtr);
    assert_eq!(s.test.features, xte);
    assert_eq!(s.train.classes, 5);
    assert_eq!(s.test.labels, vec![4, 0, 1, 2]);
    // Nothing was cached for arrays.
    assert!(!dd.path().exists());

    // A missing array is named with those the archive has.
    let q = dir.path().join("short.npz");
    write_npz(&q, &[("x_train", encode_npy(&xtr, &[11, 6]).unwrap())]);
    assert_err_mentions(
        load_source(SourceKind::Npz, &q, &opts(), &dd),
        &["short.npz", "no array 'y_train'", "x_train"],
    );
}

#[test]
fn npy_dir_uint8_channels_last_images_are_transposed() {
    let dir = tempfile::tempdir().unwrap();
    let (n, h, w, c) = (3, 4, 5, 3);
    let x = bytes(9, n * h * w * c);
    write_npy(&dir.path().join("x_train.npy"), &x, &[n, h, w, c]).unwrap();
    write_npy(&dir.path().join("y_train.npy"), &[0u8, 1, 1], &[n]).unwrap();
    write_npy(&dir.path().join("x_test.npy"), &x, &[n, h, w, c]).unwrap();
    write_npy(&dir.path().join("y_test.npy"), &[1u8, 0, 1], &[n]).unwrap();
    let dd = DataDir::new(dir.path().join("cache"));
    let s = load_source(SourceKind::Npy, dir.path(), &opts(), &dd).unwrap();
    assert_eq!((s.train.channels, s.train.height, s.train.width), (3, 4, 5));
    assert!(!s.train.is_float());
    for i in 0..n {
        for y in 0..h {
            for xx in 0..w {
                for ch in 0..c {
                    assert_eq!(
                        s.train.images[((i * c + ch) * h + y) * w + xx],
                        x[((i * h + y) * w + xx) * c + ch]
                    );
                }
            }
        }
    }
    assert_eq!(s.train.classes, 2);
}

#[test]
fn npy_bad_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let dd = DataDir::new(d.join("cache"));
    let good = |name: &str| {
        if name.starts_with('x') {
            write_npy(&d.join(format!("{name}.npy")), &floats(3, 8), &[4, 2]).unwrap();
        } else {
            write_npy(&d.join(format!("{name}.npy")), &[0i64, 1, 2, 1], &[4]).unwrap();
        }
    };
    for n in ["x_train", "y_train", "x_test", "y_test"] {
        good(n);
    }
    load_source(SourceKind::Npy, d, &opts(), &dd).unwrap();
    let load = || load_source(SourceKind::Npy, d, &opts(), &dd);

    // Truncated data and trailing bytes.
    let xp = d.join("x_train.npy");
    let b = std::fs::read(&xp).unwrap();
    std::fs::write(&xp, &b[..b.len() - 3]).unwrap();
    assert_err_mentions(
        load(),
        &[
            "x_train.npy",
            "truncated .npy",
            "needs 32 data bytes, file has 29",
        ],
    );
    let mut longer = b.clone();
    longer.extend_from_slice(&[0; 5]);
    std::fs::write(&xp, &longer).unwrap();
    assert_err_mentions(load(), &["x_train.npy", "5 trailing bytes"]);
    // A truncated header, and not an .npy at all.
    std::fs::write(&xp, &b[..20]).unwrap();
    assert_err_mentions(load(), &["x_train.npy", "header"]);
    std::fs::write(&xp, b"hello").unwrap();
    assert_err_mentions(load(), &["x_train.npy", "not a .npy"]);
    good("x_train");

    // Labels out of range, negative, fractional, one-hot, and too few.
    let yp = d.join("y_test.npy");
    write_npy(&yp, &[0i64, 1, 300, 1], &[4]).unwrap();
    assert_err_mentions(
        load(),
        &["y_test.npy", "label 300 at index 2", "out of range"],
    );
    write_npy(&yp, &[0i64, -1, 0, 1], &[4]).unwrap();
    assert_err_mentions(load(), &["y_test.npy", "label -1 at index 1"]);
    write_npy(&yp, &[0f32, 1.5, 0.0, 1.0], &[4]).unwrap();
    assert_err_mentions(load(), &["y_test.npy", "1.5", "not an integer"]);
    write_npy(&yp, &[0u8; 8], &[4, 2]).unwrap();
    assert_err_mentions(load(), &["y_test.npy", "[N]"]);
    write_npy(&yp, &[0i64, 1, 2], &[3]).unwrap();
    assert_err_mentions(load(), &["y_test.npy", "3 labels for the 4 samples"]);
    good("y_test");

    // Non-finite features, unsupported dtype, mismatched shapes between splits.
    write_npy(
        &d.join("x_test.npy"),
        &[0f32, f32::NAN, 0.0, 0.0, 1.0, 1.0, 2.0, 2.0],
        &[4, 2],
    )
    .unwrap();
    assert_err_mentions(load(), &["x_test.npy", "NaN", "index 1"]);
    write_npy(&d.join("x_test.npy"), &floats(1, 12), &[4, 3]).unwrap();
    assert_err_mentions(load(), &["x_test.npy", "1x1x3", "1x1x2"]);
    good("x_test");
    load().unwrap();
    // Nothing written to the data directory by arrays, failed or not.
    assert!(!dd.path().exists());
}

#[test]
fn npy_parse_checks_dtypes() {
    let p = Path::new("mem.npy");
    let b = encode_npy(&[1u16, 2, 3], &[3]).unwrap();
    let a = parse_npy(&b, p).unwrap();
    assert_eq!(a.to_i64().unwrap(), vec![1, 2, 3]);
    let b = encode_npy(&[1.25f64, -2.0], &[2]).unwrap();
    assert_eq!(parse_npy(&b, p).unwrap().to_f32(), vec![1.25, -2.0]);
    let b = encode_npy(&[true, false], &[2]).unwrap();
    assert_eq!(parse_npy(&b, p).unwrap().to_i64().unwrap(), vec![1, 0]);
}

/// Writes a `w x h` RGB PNG filled from `seed`.
fn png(path: &Path, w: u32, h: u32, seed: u64) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let img = image::RgbImage::from_raw(w, h, bytes(seed, (w * h * 3) as usize)).unwrap();
    img.save(path).unwrap();
}

#[test]
fn image_folder_discovers_classes_resizes_and_caches() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("pets");
    png(&root.join("train/dog/1.png"), 12, 10, 1);
    png(&root.join("train/dog/2.png"), 7, 9, 2);
    png(&root.join("train/cat/1.png"), 12, 10, 3);
    png(&root.join("test/cat/9.png"), 30, 20, 4);
    let dd = DataDir::new(dir.path().join("cache"));
    let mut o = opts();
    o.image_size = Some([6, 8]);
    let s = load_source(SourceKind::ImageFolder, &root, &o, &dd).unwrap();
    assert_eq!((s.train.channels, s.train.height, s.train.width), (3, 6, 8));
    // Classes sorted by name: cat 0, dog 1.
    assert_eq!(s.train.labels, vec![0, 1, 1]);
    assert_eq!(s.test.labels, vec![0]);
    assert_eq!(s.train.classes, 2);
    let cached: Vec<_> = std::fs::read_dir(dd.path()).unwrap().collect();
    assert_eq!(cached.len(), 2, "train and test caches");
    // Second load: the same, from the cache.
    assert_eq!(
        load_source(SourceKind::ImageFolder, &root, &o, &dd).unwrap(),
        s
    );
    // Default size: the first training image's (cat/1.png, 12 x 10), grey.
    o.image_size = None;
    o.channels = Some(1);
    let g = load_source(SourceKind::ImageFolder, &root, &o, &dd).unwrap();
    assert_eq!(
        (g.train.channels, g.train.height, g.train.width),
        (1, 10, 12)
    );
    // A declared class count that contradicts the folders.
    o.classes = Some(3);
    assert_err_mentions(
        load_source(SourceKind::ImageFolder, &root, &o, &dd),
        &["2 class directories", "3 classes"],
    );
}

#[test]
fn image_folder_bad_input_is_named_and_never_cached() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("set");
    png(&root.join("train/a/1.png"), 4, 4, 1);
    png(&root.join("train/b/1.png"), 4, 4, 2);
    png(&root.join("test/a/1.png"), 4, 4, 3);
    let dd = DataDir::new(dir.path().join("cache"));
    let load = || load_source(SourceKind::ImageFolder, &root, &opts(), &dd);
    // An empty class folder.
    std::fs::create_dir_all(root.join("train/c")).unwrap();
    assert_err_mentions(load(), &["train/c", "empty class directory"]);
    std::fs::remove_dir(root.join("train/c")).unwrap();
    // An unreadable image.
    std::fs::write(root.join("train/b/2.png"), b"not a png at all").unwrap();
    assert_err_mentions(load(), &["train/b/2.png", "cannot decode image"]);
    assert!(
        !dd.path().exists() || std::fs::read_dir(dd.path()).unwrap().next().is_none(),
        "a failed load cached something"
    );
    // A test class the training split does not have.
    std::fs::remove_file(root.join("train/b/2.png")).unwrap();
    png(&root.join("test/z/1.png"), 4, 4, 5);
    assert_err_mentions(load(), &["test/z", "not one of the classes"]);
    std::fs::remove_dir_all(root.join("test/z")).unwrap();
    // No train split at all.
    assert_err_mentions(
        load_source(
            SourceKind::ImageFolder,
            &dir.path().join("nothing"),
            &opts(),
            &dd,
        ),
        &["nothing/train"],
    );
    let s = load().unwrap();
    assert_eq!(s.train.len(), 2);
}

#[test]
fn kind_path_parsing() {
    assert_eq!(
        parse_kind_path("image-folder:/a/b").unwrap(),
        (SourceKind::ImageFolder, "/a/b".into())
    );
    assert!(parse_kind_path("npz").is_err());
    assert!(parse_kind_path("npz:").is_err());
    assert_err_mentions(parse_kind_path("csv:/x").map(|_| ()), &["csv", "idx, npz"]);
}

#[test]
fn float_sets_batch_like_their_reference() {
    let (n, c, h, w) = (9, 2, 5, 3);
    let ds = Dataset::from_f32(floats(5, n * c * h * w), labels(6, n, 3), c, h, w, 3).unwrap();
    let norm = Normalization::from_dataset(&ds).unwrap();
    // The statistics are of the raw features, not scaled by 255.
    let plane: Vec<f64> = (0..n)
        .flat_map(|i| ds.feature_row(i)[..h * w].to_vec())
        .map(f64::from)
        .collect();
    let mean0 = plane.iter().sum::<f64>() / plane.len() as f64;
    assert!((f64::from(norm.mean[0]) - mean0).abs() < 1e-5);
    for augment in [Augment::None, Augment::CropFlip { pad: 2 }] {
        let cfg = BatchConfig::train(4, 7).with_augment(augment);
        let epoch = EpochBatches::new(&ds, &norm, cfg, 3).unwrap();
        for b in epoch.iter() {
            for (k, &i) in b.indices.iter().enumerate() {
                let want = reference(&ds, &norm, augment, 7, 3, i);
                assert_eq!(&b.images[k * c * h * w..(k + 1) * c * h * w], &want[..]);
            }
        }
    }
    assert_err_mentions(
        Dataset::from_f32(vec![0.0, f32::INFINITY], vec![0, 0], 1, 1, 1, 2),
        &["inf"],
    );
    let sub = ds.select(&[4, 1]).unwrap();
    assert_eq!(sub.feature_row(0), ds.feature_row(4));
    assert_eq!(sub.labels, vec![ds.labels[4], ds.labels[1]]);
}

/// An IDX file of `dtype` with big-endian `values` (given as f64, converted to the type).
fn typed_idx(dtype: u8, dims: &[u32], values: &[f64]) -> Vec<u8> {
    let mut b = vec![0, 0, dtype, dims.len() as u8];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    for &v in values {
        match dtype {
            0x08 => b.push(v as u8),
            0x09 => b.push(v as i8 as u8),
            0x0B => b.extend_from_slice(&(v as i16).to_be_bytes()),
            0x0C => b.extend_from_slice(&(v as i32).to_be_bytes()),
            0x0D => b.extend_from_slice(&(v as f32).to_be_bytes()),
            _ => b.extend_from_slice(&v.to_be_bytes()),
        }
    }
    b
}

#[test]
fn idx_of_every_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let x: Vec<f64> = (0..12).map(|i| f64::from(i) * 0.5 - 2.0).collect();
    let xi: Vec<f64> = (0..12).map(|i| f64::from(i) - 6.0).collect();
    for (xt, yt) in [(0x0D, 0x0C), (0x0E, 0x0B), (0x0C, 0x09), (0x09, 0x08)] {
        let xs = if xt == 0x0D || xt == 0x0E { &x } else { &xi };
        let write =
            |k: usize, b: Vec<u8>| std::fs::write(dir.path().join(IDX_FILE_NAMES[k]), b).unwrap();
        write(0, typed_idx(xt, &[3, 2, 2], xs));
        write(1, typed_idx(yt, &[3], &[0.0, 2.0, 1.0]));
        write(2, typed_idx(xt, &[3, 2, 2], xs));
        write(3, typed_idx(yt, &[3], &[1.0, 1.0, 0.0]));
        let s = load_idx_dir(dir.path(), &opts()).unwrap();
        assert!(s.train.is_float(), "dtype {xt:#x}");
        let want: Vec<f32> = xs.iter().map(|&v| v as f32).collect();
        assert_eq!(s.train.features, want, "dtype {xt:#x}");
        assert_eq!(
            (s.train.classes, s.train.labels.clone()),
            (3, vec![0, 2, 1])
        );
        assert_eq!((s.train.channels, s.train.height, s.train.width), (1, 2, 2));
    }
    // Negative labels and a truncated float file are named.
    let write =
        |k: usize, b: Vec<u8>| std::fs::write(dir.path().join(IDX_FILE_NAMES[k]), b).unwrap();
    write(1, typed_idx(0x09, &[3], &[0.0, -1.0, 1.0]));
    assert_err_mentions(
        load_idx_dir(dir.path(), &opts()),
        &[IDX_FILE_NAMES[1], "label -1 at index 1"],
    );
    write(1, typed_idx(0x08, &[3], &[0.0, 1.0, 1.0]));
    let mut b = typed_idx(0x0D, &[3, 2, 2], &x);
    b.truncate(b.len() - 2);
    write(0, b);
    assert_err_mentions(
        load_idx_dir(dir.path(), &opts()),
        &[IDX_FILE_NAMES[0], "truncated IDX data", "need 48 bytes"],
    );
}
