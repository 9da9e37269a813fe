//! Hostile inputs, several found by the fuzz targets (README "Fuzzing"): sizes claimed by
//! headers (tar and zip members, .npy headers) are errors when the bytes are not there, never
//! allocations of what they claim; shapes that overflow and headers that would take minutes to
//! parse are errors at once.

mod common;

use std::io::{Cursor, Write};
use std::path::Path;

use common::assert_err_mentions;
use lowprec_data::npy::{encode_npy, parse_npy, read_npz_from};
use lowprec_data::{decode_image_tarball_from, ImageSetSpec};

/// A tar whose one image member claims 1 TiB and holds 3 bytes.
#[test]
fn tar_member_claiming_a_terabyte_is_a_truncation_error() {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_path("train/cat/0.png").unwrap();
    h.set_size(1 << 40);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, &b"PNG"[..]).unwrap();
    let tar = b.into_inner().unwrap();
    let r = decode_image_tarball_from(&tar[..], Path::new("big.tar"), &ImageSetSpec::cifar10());
    assert_err_mentions(r, &["big.tar", "corrupt or truncated tarball"]);
}

/// A zip64 `.npz` member whose uncompressed size claims 1 TiB (local header and central
/// directory) over its 32 stored bytes: the loader used to reserve the claimed size before
/// reading (an allocation failure, the process aborted); now it reads the bytes there are.
#[test]
fn npz_member_claiming_a_terabyte_reserves_what_is_there() {
    use zip::write::SimpleFileOptions;
    let npy = encode_npy(&[1.0f32, 2.0], &[2]).unwrap();
    let mut z = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(true);
    z.start_file("x_train.npy", opts).unwrap();
    z.write_all(&npy).unwrap();
    let mut bytes = z.finish().unwrap().into_inner();
    // each zip64 extended-information field (header id 1, then its length) starts with the
    // uncompressed size
    let mut patched = 0;
    let mut i = 0;
    while i + 12 <= bytes.len() {
        if bytes[i..i + 2] == [1, 0] && matches!(bytes[i + 2..i + 4], [16, 0] | [24, 0] | [28, 0]) {
            bytes[i + 4..i + 12].copy_from_slice(&(1u64 << 40).to_le_bytes());
            patched += 1;
            i += 12;
        } else {
            i += 1;
        }
    }
    assert!(patched >= 1, "no zip64 field found");
    let mut zip = zip::ZipArchive::new(Cursor::new(&bytes)).unwrap();
    assert_eq!(
        zip.by_index(0).unwrap().size(),
        1 << 40,
        "the claim is in place"
    );
    let a = read_npz_from(Cursor::new(&bytes), Path::new("big.npz"), &["x_train"]).unwrap();
    assert_eq!(a[0].to_f32(), vec![1.0, 2.0]);
}

/// Found by the npy fuzz target: a format-2 header claiming 4 GiB of header made npyz allocate
/// it (libFuzzer: out-of-memory, malloc(4294967295)).
#[test]
fn npy_header_length_beyond_the_file_is_an_error() {
    let mut bytes = b"\x93NUMPY\x02\x00\xff\xff\xff\xff{'descr': '<f4'".to_vec();
    bytes.extend_from_slice(&[b' '; 20]);
    assert_err_mentions(
        parse_npy(&bytes, Path::new("x.npy")),
        &["x.npy", "claims 4294967295 header bytes, 35 follow"],
    );
    // format 1: a 2-byte length
    let v1 = b"\x93NUMPY\x01\x00\xff\x7f{}";
    assert_err_mentions(
        parse_npy(v1, Path::new("y.npy")),
        &["claims 32767 header bytes, 2 follow"],
    );
    assert_err_mentions(
        parse_npy(b"\x93NUMPY\x02\x00\x01", Path::new("z.npy")),
        &["no header length"],
    );
    // a valid file still parses
    let ok = encode_npy(&[1.0f32, 2.0], &[2]).unwrap();
    assert_eq!(parse_npy(&ok, Path::new("ok.npy")).unwrap().shape, vec![2]);
}

/// An empty split whose sample shape overflows (`[0, 2^22, 2^22, 2^22]` holds no values, so
/// its data length checks pass): an error naming the array, not an arithmetic overflow.
#[test]
fn empty_array_with_an_overflowing_sample_shape_is_an_error() {
    use lowprec_data::{NpyArray, NpyValues};
    let arr = |shape: Vec<usize>, values: NpyValues, name: &str| NpyArray {
        shape,
        dtype: "|u1".into(),
        values,
        origin: name.into(),
    };
    let big = 1usize << 22;
    let arrays = vec![
        arr(vec![0, big, big, big], NpyValues::U8(vec![]), "x_train"),
        arr(vec![0], NpyValues::U8(vec![]), "y_train"),
        arr(vec![1, 2], NpyValues::U8(vec![1, 2]), "x_test"),
        arr(vec![1], NpyValues::U8(vec![0]), "y_test"),
    ];
    assert_err_mentions(
        lowprec_data::source::splits_from_arrays(arrays, None),
        &["x_train", "shape [0, 4194304, 4194304, 4194304]"],
    );
}

/// Found by the npy fuzz target (a timeout): unclosed brackets in a 118-byte header made npyz's
/// Python-literal parser backtrack for over 30 s. They are refused before it runs.
#[test]
fn npy_header_with_unclosed_brackets_is_refused_at_once() {
    let bytes = b"\x93NUMPY\x01\x00v\x00{'descr': '<f4',         [ [     [ [      [[[[[[[[[[[[[[[[[   [       [PY           [   /                 se, 'shaper: (1, 1, ), }\x1b       a        ";
    let t = std::time::Instant::now();
    assert_err_mentions(
        parse_npy(bytes, Path::new("x.npy")),
        &["x.npy", "bad .npy header"],
    );
    assert!(t.elapsed().as_secs() < 5, "took {:?}", t.elapsed());
    let header = |h: &str| {
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(h.len() as u16).to_le_bytes());
        b.extend_from_slice(h.as_bytes());
        b
    };
    for (h, needle) in [
        ("{'descr': '<f4', 'shape': 1,)}", "unmatched ')'"),
        ("{'descr': '<f4', 'shape': (1,)", "unclosed '{'"),
        ("{'descr': '<f4, 'shape': ()}", "unterminated string"),
        ("{'d': [[[[[[1]]]]]]}", "nested more than 6 deep"),
    ] {
        assert_err_mentions(parse_npy(&header(h), Path::new("h.npy")), &[needle]);
    }
    // brackets and quotes inside strings do not count
    let ok = header("{'descr': '<f4', 'fortran_order': False, 'shape': (0,), 'x': '([\\'\"'}");
    let a = parse_npy(&ok, Path::new("ok.npy"));
    assert!(!format!("{a:?}").contains("bad .npy header"), "{a:?}");
}

/// Found by the npy fuzz target: a dimension of 64 digits overflowed npyz's unchecked product of
/// the shape (a panic under debug assertions, a wrapped count without them).
#[test]
fn npy_shape_whose_product_overflows_is_an_error_before_npyz() {
    let header = |h: &str| {
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(h.len() as u16).to_le_bytes());
        b.extend_from_slice(h.as_bytes());
        b
    };
    let found = "{'descr': '<f8', 'fortran_order': False, 'shape': \
                 (0000000000000000000000000000000000000000000006954058224618642544, 3, ),\x0c }";
    assert_err_mentions(
        parse_npy(&header(found), Path::new("f.npy")),
        &["f.npy", "bad .npy header", "more elements than fit 64 bits"],
    );
    for (h, needle) in [
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }",
            "more elements than fit 64 bits",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }",
            "does not fit 64 bits",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (0x10, 2), }",
            "not a decimal integer",
        ),
    ] {
        assert_err_mentions(parse_npy(&header(h), Path::new("h.npy")), &[needle]);
    }
    // an ordinary shape still reads
    let mut ok = header("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2), }");
    ok.extend_from_slice(&[0u8; 8]);
    assert_eq!(
        parse_npy(&ok, Path::new("ok.npy")).unwrap().shape,
        vec![1, 2]
    );
}
