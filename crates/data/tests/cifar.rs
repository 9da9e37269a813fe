//! CIFAR-10 binary records, image folders and tarballs, and the decoded cache, on files the tests
//! write; the real JPEG tarball when it is present.

mod common;

use std::path::Path;

use common::{assert_err_mentions, bytes, labels};
use image::{ImageEncoder, RgbImage};
use lowprec_data::cache::{
    folder_cache_key, tarball_cache_key, tarball_cache_paths, CACHE_HEADER_LEN,
};
use lowprec_data::cifar::{encode_cifar_binary, parse_cifar_binary, CIFAR_RECORD_LEN};
use lowprec_data::{
    decode_image_tarball, default_cifar_tarball, load_cifar10, load_cifar10_jpeg,
    load_cifar_binary, load_image_folder, load_image_folder_cached, load_image_folder_split,
    load_image_tarball_cached, read_cache, read_cifar_binary_files, write_cache, DataDir,
    DataError, Dataset, ImageSetSpec, CIFAR10_CLASSES,
};

fn cifar_set(seed: u64, n: usize) -> Dataset {
    Dataset::new(
        bytes(seed, n * 3072),
        labels(seed + 1, n, 10),
        3,
        32,
        32,
        10,
    )
    .unwrap()
}

#[test]
fn binary_records_parse_exactly() {
    for n in [1usize, 7, 33] {
        let ds = cifar_set(n as u64, n);
        let enc = encode_cifar_binary(&ds).unwrap();
        assert_eq!(enc.len(), n * CIFAR_RECORD_LEN);
        // Record layout: label byte, then R, G, B planes.
        assert_eq!(enc[0], ds.labels[0]);
        assert_eq!(&enc[1..1 + 1024], &ds.image(0)[..1024]);
        let (images, lab) = parse_cifar_binary(&enc, Path::new("x.bin")).unwrap();
        assert_eq!(images, ds.images);
        assert_eq!(lab, ds.labels);
    }
}

#[test]
fn binary_release_directory_loads_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("cifar-10-batches-bin");
    std::fs::create_dir(&sub).unwrap();
    let parts: Vec<Dataset> = (0..6).map(|k| cifar_set(100 + k, 3 + k as usize)).collect();
    for (k, part) in parts.iter().enumerate() {
        let name = if k < 5 {
            format!("data_batch_{}.bin", k + 1)
        } else {
            "test_batch.bin".into()
        };
        std::fs::write(sub.join(name), encode_cifar_binary(part).unwrap()).unwrap();
    }
    // Both the directory holding the files and its parent work.
    for root in [dir.path(), sub.as_path()] {
        let s = load_cifar_binary(root).unwrap();
        let want_train: Vec<u8> = parts[..5].iter().flat_map(|p| p.images.clone()).collect();
        assert_eq!(s.train.images, want_train);
        assert_eq!(s.train.len(), 3 + 4 + 5 + 6 + 7);
        assert_eq!(s.test, parts[5]);
    }
    // A gzipped batch file is read too.
    let gz_path = dir.path().join("one.bin.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut enc, &encode_cifar_binary(&parts[0]).unwrap()).unwrap();
    std::fs::write(&gz_path, enc.finish().unwrap()).unwrap();
    assert_eq!(read_cifar_binary_files(&[gz_path]).unwrap(), parts[0]);

    std::fs::remove_file(sub.join("data_batch_3.bin")).unwrap();
    assert_err_mentions(load_cifar_binary(&sub), &["missing", "data_batch_3.bin"]);
}

#[test]
fn binary_malformed_files_name_file_and_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data_batch_1.bin");
    let mut enc = encode_cifar_binary(&cifar_set(5, 4)).unwrap();
    enc.truncate(3 * CIFAR_RECORD_LEN + 100);
    std::fs::write(&path, &enc).unwrap();
    assert_err_mentions(
        read_cifar_binary_files(std::slice::from_ref(&path)),
        &["data_batch_1.bin", "record 3", "truncated to 100 bytes"],
    );
    let mut enc = encode_cifar_binary(&cifar_set(5, 4)).unwrap();
    enc[2 * CIFAR_RECORD_LEN] = 10;
    std::fs::write(&path, &enc).unwrap();
    assert_err_mentions(
        read_cifar_binary_files(std::slice::from_ref(&path)),
        &["data_batch_1.bin", "record 2", "label 10"],
    );
    std::fs::write(&path, b"").unwrap();
    assert_err_mentions(
        read_cifar_binary_files(&[path]),
        &["data_batch_1.bin", "empty"],
    );
    assert!(matches!(
        read_cifar_binary_files(&[]),
        Err(DataError::InvalidArgument(_))
    ));
    let grey = Dataset::new(vec![0; 4], vec![0], 1, 2, 2, 10).unwrap();
    assert!(encode_cifar_binary(&grey).is_err());
}

/// A 3x32x32 test image (channels-first) and its interleaved RGB encoding.
fn test_image(seed: u64, h: u32, w: u32) -> (Vec<u8>, RgbImage) {
    let rgb = bytes(seed, (h * w * 3) as usize);
    let chw = test_chw_from_rgb(&rgb);
    (chw, RgbImage::from_raw(w, h, rgb).unwrap())
}

fn encoded(img: &RgbImage, png: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let (raw, w, h) = (img.as_raw(), img.width(), img.height());
    let rgb = image::ExtendedColorType::Rgb8;
    if png {
        image::codecs::png::PngEncoder::new(&mut out).write_image(raw, w, h, rgb)
    } else {
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90).write_image(raw, w, h, rgb)
    }
    .unwrap();
    out
}

fn png_bytes(img: &RgbImage) -> Vec<u8> {
    encoded(img, true)
}

fn jpeg_bytes(img: &RgbImage) -> Vec<u8> {
    encoded(img, false)
}

fn decoded_chw(encoded: &[u8]) -> Vec<u8> {
    let rgb = image::load_from_memory(encoded).unwrap().to_rgb8();
    test_chw_from_rgb(rgb.as_raw())
}

fn test_chw_from_rgb(rgb: &[u8]) -> Vec<u8> {
    let plane = rgb.len() / 3;
    let mut chw = vec![0u8; rgb.len()];
    for p in 0..plane {
        for c in 0..3 {
            chw[c * plane + p] = rgb[3 * p + c];
        }
    }
    chw
}

/// Writes `<root>/<split>/<class>/<name>` files; returns the expected (images, labels) of the
/// train split in loader order.
fn write_folder(root: &Path) -> (Vec<u8>, Vec<u8>) {
    // (split, class, name, png?) - names deliberately out of order; 10 must come after 2.
    let files = [
        ("train", "cat", "10.png", true),
        ("train", "cat", "2.jpg", false),
        ("train", "airplane", "0.png", true),
        ("train", "truck", "5.jpeg", false),
        ("test", "bird", "0.png", true),
    ];
    let mut expected: Vec<(usize, u64, Vec<u8>)> = Vec::new();
    for (k, (split, class, name, png)) in files.iter().enumerate() {
        let (chw, img) = test_image(k as u64 + 40, 32, 32);
        let enc = if *png {
            png_bytes(&img)
        } else {
            jpeg_bytes(&img)
        };
        let dir = root.join(split).join(class);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), &enc).unwrap();
        if *split == "train" {
            let class_idx = CIFAR10_CLASSES.iter().position(|c| c == class).unwrap();
            let num: u64 = name.split('.').next().unwrap().parse().unwrap();
            // PNG is lossless: the exact pixels. JPEG: whatever the decoder makes of the bytes.
            let pixels = if *png { chw } else { decoded_chw(&enc) };
            expected.push((class_idx, num, pixels));
        }
    }
    // A stray non-image file is ignored.
    std::fs::write(root.join("train/cat/notes.txt"), b"ignored").unwrap();
    expected.sort_by_key(|e| (e.0, e.1));
    let images = expected.iter().flat_map(|e| e.2.clone()).collect();
    let labels = expected.iter().map(|e| e.0 as u8).collect();
    (images, labels)
}

fn write_tarball(root: &Path, out: &Path, prefix: &str) {
    let file = std::fs::File::create(out).unwrap();
    let enc = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut builder = tar::Builder::new(enc);
    builder.append_dir_all(prefix, root).unwrap();
    builder.into_inner().unwrap().finish().unwrap();
}

#[test]
fn image_folder_and_tarball_decode_identically() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("imgs");
    let (images, labels) = write_folder(&root);
    let spec = ImageSetSpec::cifar10();
    let folder = load_image_folder(&root, &spec).unwrap();
    assert_eq!(folder.train.labels, labels);
    assert_eq!(folder.train.labels, vec![0, 3, 3, 9]);
    assert_eq!(folder.train.images, images);
    assert_eq!(folder.test.labels, vec![2]);
    assert_eq!(
        (
            folder.train.channels,
            folder.train.height,
            folder.train.width
        ),
        (3, 32, 32)
    );

    let tgz = dir.path().join("imgs.tar.gz");
    write_tarball(&root, &tgz, "cifar10-jpeg");
    let tarred = decode_image_tarball(&tgz, &spec).unwrap();
    assert_eq!(tarred, folder);

    // Grey conversion, one channel.
    let grey = ImageSetSpec {
        channels: 1,
        ..ImageSetSpec::cifar10()
    };
    let g = load_image_folder_split(&root, "train", &grey).unwrap();
    assert_eq!(g.sample_len(), 32 * 32);
    assert_eq!(g.labels, labels);
}

#[test]
fn image_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("imgs");
    write_folder(&root);
    let spec = ImageSetSpec::cifar10();

    // A truncated JPEG.
    let (_, img) = test_image(1, 32, 32);
    let jpg = jpeg_bytes(&img);
    let broken = root.join("train/dog/7.jpg");
    std::fs::create_dir_all(broken.parent().unwrap()).unwrap();
    std::fs::write(&broken, &jpg[..jpg.len() / 3]).unwrap();
    assert_err_mentions(
        load_image_folder_split(&root, "train", &spec),
        &["train/dog/7.jpg", "cannot decode"],
    );
    let tgz = dir.path().join("broken.tar.gz");
    write_tarball(&root, &tgz, "cifar10-jpeg");
    assert_err_mentions(
        decode_image_tarball(&tgz, &spec),
        &[
            "broken.tar.gz:cifar10-jpeg/train/dog/7.jpg",
            "cannot decode",
        ],
    );
    // A truncated PNG.
    let png = png_bytes(&img);
    std::fs::write(&broken, &png[..png.len() - 20]).unwrap();
    assert_err_mentions(
        load_image_folder_split(&root, "train", &spec),
        &["train/dog/7.jpg", "cannot decode"],
    );
    // Garbage bytes with an image name.
    std::fs::write(&broken, b"definitely not a jpeg").unwrap();
    assert_err_mentions(
        load_image_folder_split(&root, "train", &spec),
        &["train/dog/7.jpg"],
    );
    // Wrong size.
    let (_, small) = test_image(2, 31, 32);
    std::fs::write(&broken, png_bytes(&small)).unwrap();
    std::fs::rename(&broken, root.join("train/dog/7.png")).unwrap();
    assert_err_mentions(
        load_image_folder_split(&root, "train", &spec),
        &["train/dog/7.png", "32x31", "expected 32x32"],
    );
    std::fs::remove_file(root.join("train/dog/7.png")).unwrap();
    // A directory that is not a class.
    std::fs::create_dir_all(root.join("train/kangaroo")).unwrap();
    assert_err_mentions(
        load_image_folder_split(&root, "train", &spec),
        &["kangaroo", "not one of the classes"],
    );
    assert_err_mentions(
        load_image_folder_split(&root, "valid", &spec),
        &["valid", "listing split directory"],
    );
    let tgz = dir.path().join("kangaroo.tar.gz");
    std::fs::write(root.join("train/kangaroo/1.png"), png_bytes(&img)).unwrap();
    write_tarball(&root, &tgz, "x");
    assert_err_mentions(
        decode_image_tarball(&tgz, &spec),
        &["x/train/kangaroo/1.png", "kangaroo"],
    );
    // A truncated tarball and an empty one.
    let bytes = std::fs::read(&tgz).unwrap();
    std::fs::write(&tgz, &bytes[..bytes.len() / 2]).unwrap();
    assert_err_mentions(decode_image_tarball(&tgz, &spec), &["kangaroo.tar.gz"]);
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    write_tarball(&empty, &tgz, "nothing");
    assert_err_mentions(decode_image_tarball(&tgz, &spec), &["no images found"]);
    let bad_spec = ImageSetSpec {
        channels: 2,
        ..ImageSetSpec::cifar10()
    };
    assert!(matches!(
        load_image_folder_split(&root, "train", &bad_spec),
        Err(DataError::InvalidArgument(_))
    ));
}

#[test]
fn cache_round_trip_and_rejections() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.u8cache");
    let key = [7u8; 32];
    for n in [0usize, 1, 7, 33] {
        let ds = Dataset::new(bytes(n as u64, n * 3 * 5 * 2), labels(3, n, 4), 3, 5, 2, 4).unwrap();
        write_cache(&path, &ds, &key).unwrap();
        assert_eq!(read_cache(&path, &key).unwrap(), ds);
    }
    let good = std::fs::read(&path).unwrap();
    assert_err_mentions(
        read_cache(&path, &[8u8; 32]),
        &["c.u8cache", "another source"],
    );
    let mut bad = good.clone();
    bad[0] = b'X';
    std::fs::write(&path, &bad).unwrap();
    assert_err_mentions(read_cache(&path, &key), &["c.u8cache", "magic"]);
    let mut bad = good.clone();
    bad[8] = 99;
    std::fs::write(&path, &bad).unwrap();
    assert_err_mentions(read_cache(&path, &key), &["version 99"]);
    std::fs::write(&path, &good[..good.len() - 1]).unwrap();
    assert_err_mentions(read_cache(&path, &key), &["c.u8cache", "needs"]);
    std::fs::write(&path, &good[..10]).unwrap();
    assert_err_mentions(read_cache(&path, &key), &["truncated cache"]);
    let mut bad = good.clone();
    *bad.last_mut().unwrap() ^= 1;
    std::fs::write(&path, &bad).unwrap();
    assert_err_mentions(read_cache(&path, &key), &["c.u8cache", "XXH3-128 mismatch"]);
    // A label byte out of range with a matching checksum still fails Dataset's checks.
    let ds = Dataset::new(vec![1; 30], vec![0], 3, 5, 2, 4).unwrap();
    write_cache(&path, &ds, &key).unwrap();
    forge_cache(&path, |payload| payload[0] = 9);
    assert_err_mentions(
        read_cache(&path, &key),
        &["c.u8cache", "inconsistent", "label 9"],
    );
}

/// Changes a cache file's payload and rewrites its checksum so that the file stays valid.
fn forge_cache(path: &Path, change: impl FnOnce(&mut [u8])) {
    let mut raw = std::fs::read(path).unwrap();
    change(&mut raw[CACHE_HEADER_LEN..]);
    let hash = xxhash_rust::xxh3::xxh3_128(&raw[CACHE_HEADER_LEN..]).to_le_bytes();
    raw[CACHE_HEADER_LEN - 16..CACHE_HEADER_LEN].copy_from_slice(&hash);
    std::fs::write(path, &raw).unwrap();
}

#[test]
fn cached_tarball_loads_decode_once_and_recover_from_bad_caches() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("imgs");
    write_folder(&root);
    let tgz = dir.path().join("mini.tar.gz");
    write_tarball(&root, &tgz, "mini");
    let spec = ImageSetSpec::cifar10();
    let data = DataDir::new(dir.path().join("data"));
    let first = load_image_tarball_cached(&tgz, &spec, &data, None).unwrap();
    assert_eq!(first, decode_image_tarball(&tgz, &spec).unwrap());
    let hash = lowprec_data::fsutil::sha256_file(&tgz).unwrap();
    let key = tarball_cache_key(&hash, &spec);
    let (train_cache, test_cache) = tarball_cache_paths(&data, &tgz, &key);
    assert!(train_cache.is_file() && test_cache.is_file());
    assert!(train_cache
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("mini-"));
    assert_eq!(read_cache(&train_cache, &key).unwrap(), first.train);
    assert_eq!(
        load_image_tarball_cached(&tgz, &spec, &data, None).unwrap(),
        first
    );
    // The second load really reads the cache: a forged but valid cache is what comes back.
    forge_cache(&train_cache, |payload| payload[first.train.len()] ^= 0x55);
    let forged = load_image_tarball_cached(&tgz, &spec, &data, None).unwrap();
    assert_eq!(forged.train.images[0], first.train.images[0] ^ 0x55);
    assert_eq!(forged.test, first.test);
    std::fs::remove_file(&train_cache).unwrap();
    assert_eq!(
        load_image_tarball_cached(&tgz, &spec, &data, None).unwrap(),
        first
    );
    // A corrupted cache is reported and rebuilt, not trusted.
    let mut raw = std::fs::read(&train_cache).unwrap();
    let last = raw.len() - 1;
    raw[last] ^= 0xff;
    std::fs::write(&train_cache, &raw).unwrap();
    let third = load_image_tarball_cached(&tgz, &spec, &data, None).unwrap();
    assert_eq!(third, first);
    assert_eq!(read_cache(&train_cache, &key).unwrap(), first.train);
    // A different decode spec gets a different key (and so its own cache files).
    let grey = ImageSetSpec {
        channels: 1,
        ..ImageSetSpec::cifar10()
    };
    assert_ne!(tarball_cache_key(&hash, &grey), key);
    // Expected-checksum mismatch.
    assert_err_mentions(
        load_image_tarball_cached(&tgz, &spec, &data, Some("00")),
        &["mini.tar.gz", "sha256 mismatch"],
    );
    // The CIFAR-10 loader insists on the published tarball.
    assert_err_mentions(
        load_cifar10_jpeg(Some(&tgz), &data),
        &["mini.tar.gz", "sha256 mismatch"],
    );
    assert_err_mentions(
        load_cifar10_jpeg(Some(&dir.path().join("nope.tar.gz")), &data),
        &["nope.tar.gz", "not found"],
    );
}

/// The project's real CIFAR-10 JPEG tarball, when it is present next to the repository (or
/// named by LOWPREC_CIFAR_TARBALL). Decodes into a temporary data directory, then loads again
/// from the cache.
#[test]
fn real_cifar10_jpeg_when_present() {
    let tarball = match default_cifar_tarball() {
        Ok(p) => p,
        Err(e) => {
            println!("SKIP real_cifar10_jpeg_when_present: {e}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::new(dir.path());
    let t = std::time::Instant::now();
    let s = load_cifar10_jpeg(Some(&tarball), &data).unwrap();
    let decode = t.elapsed();
    assert_eq!((s.train.len(), s.test.len()), (50000, 10000));
    assert_eq!(s.train.class_counts(), vec![5000; 10]);
    assert_eq!(s.test.class_counts(), vec![1000; 10]);
    assert_eq!(
        (s.train.channels, s.train.height, s.train.width),
        (3, 32, 32)
    );
    let t = std::time::Instant::now();
    let again = load_cifar10_jpeg(Some(&tarball), &data).unwrap();
    let cached = t.elapsed();
    assert!(again == s, "cached load differs from the decode");
    let (mean, _) = s.train.channel_stats().unwrap();
    // CIFAR-10's well-known channel means, allowing for JPEG's small pixel changes.
    for (m, want) in mean.iter().zip([0.4914, 0.4822, 0.4465]) {
        assert!((m - want).abs() < 0.01, "channel mean {m} far from {want}");
    }
    println!("real CIFAR-10: decode {decode:?}, cached load {cached:?} (noisy shared machine)");
}

#[test]
fn cached_image_folder_reloads_from_cache_and_notices_changes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("imgs");
    write_folder(&root);
    let spec = ImageSetSpec::cifar10();
    let data = DataDir::new(dir.path().join("data"));
    let first = load_image_folder_cached(&root, &spec, &data).unwrap();
    assert_eq!(first, load_image_folder(&root, &spec).unwrap());
    let key = folder_cache_key(&root, &spec).unwrap();
    assert_eq!(
        folder_cache_key(&root, &spec).unwrap(),
        key,
        "the key is stable"
    );
    let caches: Vec<_> = std::fs::read_dir(data.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(caches.len(), 2, "{caches:?}");
    let train_cache = caches
        .iter()
        .find(|p| p.to_string_lossy().ends_with("-train.u8cache"))
        .unwrap();
    // Served from the cache: a forged (valid) cache is what comes back.
    forge_cache(train_cache, |payload| payload[first.train.len()] ^= 0x0f);
    let again = load_image_folder_cached(&root, &spec, &data).unwrap();
    assert_eq!(again.train.images[0], first.train.images[0] ^ 0x0f);
    // Adding an image changes the key, so the folder is decoded again.
    let (chw, img) = test_image(99, 32, 32);
    std::fs::write(root.join("train/airplane/1.png"), png_bytes(&img)).unwrap();
    assert_ne!(folder_cache_key(&root, &spec).unwrap(), key);
    let grown = load_image_folder_cached(&root, &spec, &data).unwrap();
    assert_eq!(grown.train.len(), first.train.len() + 1);
    assert_eq!(grown.train.image(1), &chw[..]);
    assert_eq!(grown.train.image(0), first.train.image(0));
    assert_err_mentions(
        load_image_folder_cached(&dir.path().join("nope"), &spec, &data),
        &["nope"],
    );
}

#[test]
fn load_cifar10_accepts_each_kind_of_source() {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::new(dir.path().join("data"));
    // Binary release directory.
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let parts: Vec<Dataset> = (0..6).map(|k| cifar_set(200 + k, 2)).collect();
    for (k, part) in parts.iter().enumerate() {
        let name = if k < 5 {
            format!("data_batch_{}.bin", k + 1)
        } else {
            "test_batch.bin".into()
        };
        std::fs::write(bin.join(name), encode_cifar_binary(part).unwrap()).unwrap();
    }
    let from_bin = load_cifar10(Some(&bin), &data).unwrap();
    assert_eq!(
        (from_bin.train.len(), from_bin.test),
        (10, parts[5].clone())
    );
    // Image folder and tarball of it.
    let root = dir.path().join("imgs");
    write_folder(&root);
    let folder = load_cifar10(Some(&root), &data).unwrap();
    assert_eq!(
        folder,
        load_image_folder(&root, &ImageSetSpec::cifar10()).unwrap()
    );
    let tgz = dir.path().join("imgs.tar.gz");
    write_tarball(&root, &tgz, "imgs");
    assert_eq!(load_cifar10(Some(&tgz), &data).unwrap(), folder);
    assert_err_mentions(
        load_cifar10(Some(&dir.path().join("missing")), &data),
        &["missing", "not found"],
    );
}
