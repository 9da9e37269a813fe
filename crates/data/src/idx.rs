//! IDX files (the MNIST format): a 4-byte magic `00 00 <dtype> <ndims>`, `ndims` big-endian u32
//! dimensions, then the values, big-endian. [`parse_idx`] reads unsigned bytes (0x08, MNIST's);
//! [`parse_idx_values`] reads every IDX type (u8, i8, i16, i32, f32, f64). Files may be raw or
//! gzipped; gzip is detected by its magic bytes, not the name.

use std::path::Path;

use crate::error::{DataError, Result};
use crate::fsutil;
use crate::npy::NpyValues;

/// IDX dtype code for unsigned bytes.
pub const IDX_DTYPE_U8: u8 = 0x08;

/// An IDX array of u8 values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

fn dtype_name(code: u8) -> &'static str {
    match code {
        0x08 => "unsigned byte",
        0x09 => "signed byte",
        0x0B => "i16",
        0x0C => "i32",
        0x0D => "f32",
        0x0E => "f64",
        _ => "unknown",
    }
}

/// Bytes per value of an IDX dtype, `None` for an unknown code.
fn dtype_size(code: u8) -> Option<usize> {
    match code {
        0x08 | 0x09 => Some(1),
        0x0B => Some(2),
        0x0C | 0x0D => Some(4),
        0x0E => Some(8),
        _ => None,
    }
}

/// Checks the header and the data length: `(dtype, dims, header_len)`.
fn parse_header(bytes: &[u8], path: &Path) -> Result<(u8, Vec<usize>, usize)> {
    if bytes.len() < 4 {
        return Err(DataError::malformed(
            path,
            format!(
                "truncated IDX header: {} bytes, need at least 4",
                bytes.len()
            ),
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(DataError::malformed(
            path,
            format!(
                "bad IDX magic {:02x} {:02x} {:02x} {:02x}: an IDX file starts with 00 00 <dtype> <ndims>",
                bytes[0], bytes[1], bytes[2], bytes[3]
            ),
        ));
    }
    let dtype = bytes[2];
    let size = dtype_size(dtype)
        .ok_or_else(|| DataError::malformed(path, format!("unknown IDX dtype 0x{dtype:02x}")))?;
    let ndims = usize::from(bytes[3]);
    if ndims == 0 {
        return Err(DataError::malformed(
            path,
            "IDX header declares 0 dimensions",
        ));
    }
    let header_len = 4 + 4 * ndims;
    if bytes.len() < header_len {
        return Err(DataError::malformed(
            path,
            format!(
                "truncated IDX header: {ndims} dimensions need {header_len} header bytes, file has {}",
                bytes.len()
            ),
        ));
    }
    let dims: Vec<usize> = bytes[4..header_len]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let count = dims
        .iter()
        .try_fold(size, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| DataError::malformed(path, format!("IDX dimensions {dims:?} overflow")))?;
    let body = bytes.len() - header_len;
    if body < count {
        return Err(DataError::malformed(
            path,
            format!("truncated IDX data: dimensions {dims:?} need {count} bytes after the header, file has {body}"),
        ));
    }
    if body > count {
        return Err(DataError::malformed(
            path,
            format!(
                "{} trailing bytes after the IDX data (dimensions {dims:?} need {count})",
                body - count
            ),
        ));
    }
    Ok((dtype, dims, header_len))
}

/// Parses IDX bytes (already gunzipped) of unsigned bytes. `path` only names the source in
/// errors.
pub fn parse_idx(bytes: &[u8], path: &Path) -> Result<IdxArray> {
    if bytes.len() >= 4 && bytes[0] == 0 && bytes[1] == 0 && bytes[2] != IDX_DTYPE_U8 {
        return Err(DataError::malformed(
            path,
            format!(
                "unsupported IDX dtype 0x{:02x} ({}); only 0x08 (unsigned byte) is supported",
                bytes[2],
                dtype_name(bytes[2])
            ),
        ));
    }
    let (_, dims, header_len) = parse_header(bytes, path)?;
    Ok(IdxArray {
        dims,
        data: bytes[header_len..].to_vec(),
    })
}

/// Parses IDX bytes of any dtype: unsigned bytes stay bytes, signed integers become i64 and
/// floats f32 (f64 rounded), in [`NpyValues`] like NumPy arrays.
pub fn parse_idx_values(bytes: &[u8], path: &Path) -> Result<(Vec<usize>, NpyValues)> {
    let (dtype, dims, header_len) = parse_header(bytes, path)?;
    let body = &bytes[header_len..];
    let values = match dtype {
        0x08 => NpyValues::U8(body.to_vec()),
        0x09 => NpyValues::I64(body.iter().map(|&b| i64::from(b as i8)).collect()),
        0x0B => NpyValues::I64(
            body.chunks_exact(2)
                .map(|c| i64::from(i16::from_be_bytes([c[0], c[1]])))
                .collect(),
        ),
        0x0C => NpyValues::I64(
            body.chunks_exact(4)
                .map(|c| i64::from(i32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
        ),
        0x0D => NpyValues::F32(
            body.chunks_exact(4)
                .map(|c| f32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        _ => NpyValues::F32(
            body.chunks_exact(8)
                .map(|c| f64::from_be_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect(),
        ),
    };
    Ok((dims, values))
}

/// Reads an IDX file of any dtype, raw or gzipped.
pub fn read_idx_values(path: &Path) -> Result<(Vec<usize>, NpyValues)> {
    let bytes = fsutil::read_maybe_gz(path)?;
    parse_idx_values(&bytes, path)
}

/// Reads an IDX file, raw or gzipped.
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let bytes = fsutil::read_maybe_gz(path)?;
    parse_idx(&bytes, path)
}

/// Encodes a u8 IDX array (header + data).
pub fn encode_idx(dims: &[usize], data: &[u8]) -> Result<Vec<u8>> {
    if dims.is_empty() || dims.len() > 255 {
        return Err(DataError::InvalidArgument(format!(
            "IDX needs 1..=255 dimensions, got {}",
            dims.len()
        )));
    }
    let count = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| DataError::InvalidArgument(format!("IDX dimensions {dims:?} overflow")))?;
    if count != data.len() {
        return Err(DataError::InvalidArgument(format!(
            "IDX dimensions {dims:?} need {count} values, got {}",
            data.len()
        )));
    }
    let mut out = Vec::with_capacity(4 + 4 * dims.len() + data.len());
    out.extend_from_slice(&[0, 0, IDX_DTYPE_U8, dims.len() as u8]);
    for &d in dims {
        let d = u32::try_from(d)
            .map_err(|_| DataError::InvalidArgument(format!("IDX dimension {d} exceeds u32")))?;
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    Ok(out)
}

/// Writes a u8 IDX file atomically, gzipped when `gzip` is true.
pub fn write_idx(path: &Path, dims: &[usize], data: &[u8], gzip: bool) -> Result<()> {
    let bytes = encode_idx(dims, data)?;
    fsutil::write_atomic(path, |w| {
        if gzip {
            let mut enc = flate2::write::GzEncoder::new(w, flate2::Compression::default());
            std::io::Write::write_all(&mut enc, &bytes)?;
            enc.finish()?;
            Ok(())
        } else {
            w.write_all(&bytes)
        }
    })
}
