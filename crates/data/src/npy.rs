//! NumPy arrays: `.npy` files (format 1.0-3.0, C order) and `.npz` archives of them, read with
//! `npyz` (headers, dtypes) and `zip` (archives), written atomically.
//!
//! Values come back in one of three forms, whatever the stored dtype: bytes (`uint8`, kept exact
//! so images stay images), f32 (`float32`, and `float64` rounded to f32)
//! or i64 (every signed or unsigned integer type and `bool`). A file whose data is shorter or
//! longer than its header says is an error naming the file, as is a Fortran-order array.

use std::io::{Cursor, Read, Seek};
use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};
use crate::fsutil;

/// The values of an array, converted to one of three element types.
#[derive(Clone, Debug, PartialEq)]
pub enum NpyValues {
    U8(Vec<u8>),
    F32(Vec<f32>),
    I64(Vec<i64>),
}

impl NpyValues {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            NpyValues::U8(v) => v.len(),
            NpyValues::F32(v) => v.len(),
            NpyValues::I64(v) => v.len(),
        }
    }

    /// True when the array holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One array: its shape, the dtype as stored (`<f4`, `|u1`, ...) and its values.
#[derive(Clone, Debug, PartialEq)]
pub struct NpyArray {
    pub shape: Vec<usize>,
    pub dtype: String,
    pub values: NpyValues,
    /// Where it was read from (`file.npy` or `file.npz:name`), for error messages.
    pub origin: PathBuf,
}

impl NpyArray {
    /// The values as f32 (bytes and integers converted; integers beyond 2^24 lose precision).
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.values {
            NpyValues::U8(v) => v.iter().map(|&x| f32::from(x)).collect(),
            NpyValues::F32(v) => v.clone(),
            NpyValues::I64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    /// Integer values (labels): bytes and integers as they are; floats only when every value
    /// is a whole number, else an error naming the first one that is not.
    pub fn to_i64(&self) -> Result<Vec<i64>> {
        match &self.values {
            NpyValues::U8(v) => Ok(v.iter().map(|&x| i64::from(x)).collect()),
            NpyValues::I64(v) => Ok(v.clone()),
            NpyValues::F32(v) => v
                .iter()
                .enumerate()
                .map(|(i, &x)| {
                    if x.is_finite() && x.fract() == 0.0 && x.abs() < 16_777_216.0 {
                        Ok(x as i64)
                    } else {
                        Err(DataError::malformed(
                            &self.origin,
                            format!("value {x} at index {i} is not an integer label"),
                        ))
                    }
                })
                .collect(),
        }
    }

    /// The first value that is NaN or infinite, as `(index, value)`.
    pub fn first_non_finite(&self) -> Option<(usize, f32)> {
        match &self.values {
            NpyValues::F32(v) => v
                .iter()
                .enumerate()
                .find(|(_, x)| !x.is_finite())
                .map(|(i, &x)| (i, x)),
            _ => None,
        }
    }
}

/// Parses the bytes of one `.npy` file; `origin` names it in errors.
pub fn parse_npy(bytes: &[u8], origin: &Path) -> Result<NpyArray> {
    let bad = |what: String| DataError::malformed(origin, what);
    if !bytes.starts_with(b"\x93NUMPY") {
        return Err(bad(
            "not a .npy file (it does not start with \\x93NUMPY)".into()
        ));
    }
    check_header(bytes).map_err(bad)?;
    let mut cursor = Cursor::new(bytes);
    let header = npyz::NpyHeader::from_reader(&mut cursor)
        .map_err(|e| bad(format!("bad or truncated .npy header: {e}")))?;
    let start = cursor.position() as usize;
    let file = npyz::NpyFile::with_header(header, &bytes[start..]);
    if file.order() != npyz::Order::C {
        return Err(bad(
            "Fortran-order array; save it with np.ascontiguousarray first".into(),
        ));
    }
    let shape: Vec<usize> = file.shape().iter().map(|&d| d as usize).collect();
    let dtype = file.dtype();
    let descr = dtype.descr().trim_matches('\'').to_string();
    let item = dtype
        .num_bytes()
        .ok_or_else(|| bad(format!("dtype {descr} has no fixed size")))?;
    let count = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad(format!("shape {shape:?} overflows")))?;
    let need = count
        .checked_mul(item)
        .ok_or_else(|| bad(format!("shape {shape:?} overflows")))?;
    let have = bytes.len() - start;
    if have < need {
        return Err(bad(format!(
            "truncated .npy: shape {shape:?} of {descr} needs {need} data bytes, file has {have}"
        )));
    }
    if have > need {
        return Err(bad(format!(
            "{} trailing bytes after the data of shape {shape:?} of {descr}",
            have - need
        )));
    }
    let read_err = |e: std::io::Error| bad(format!("reading {descr} values: {e}"));
    let kind = descr.trim_start_matches(['<', '>', '|', '=']);
    let values = match kind {
        "u1" => NpyValues::U8(file.into_vec::<u8>().map_err(read_err)?),
        "f4" => NpyValues::F32(file.into_vec::<f32>().map_err(read_err)?),
        "f8" => NpyValues::F32(
            file.into_vec::<f64>()
                .map_err(read_err)?
                .into_iter()
                .map(|v| v as f32)
                .collect(),
        ),
        "b1" => NpyValues::I64(
            file.into_vec::<bool>()
                .map_err(read_err)?
                .into_iter()
                .map(i64::from)
                .collect(),
        ),
        "i1" => ints(file.into_vec::<i8>().map_err(read_err)?),
        "i2" => ints(file.into_vec::<i16>().map_err(read_err)?),
        "u2" => ints(file.into_vec::<u16>().map_err(read_err)?),
        "i4" => ints(file.into_vec::<i32>().map_err(read_err)?),
        "u4" => ints(file.into_vec::<u32>().map_err(read_err)?),
        "i8" => ints(file.into_vec::<i64>().map_err(read_err)?),
        "u8" => {
            let v = file.into_vec::<u64>().map_err(read_err)?;
            NpyValues::I64(
                v.into_iter()
                    .enumerate()
                    .map(|(i, x)| {
                        i64::try_from(x)
                            .map_err(|_| bad(format!("uint64 value {x} at index {i} is too large")))
                    })
                    .collect::<Result<_>>()?,
            )
        }
        _ => {
            return Err(bad(format!(
                "dtype {descr} is not supported (uint8, float32, float64, integers or bool)"
            )))
        }
    };
    Ok(NpyArray {
        shape,
        dtype: descr,
        values,
        origin: origin.to_path_buf(),
    })
}

/// What npyz is not given: a header length (2 bytes in format 1, 4 in formats 2 and 3) beyond
/// the bytes there are (npyz allocates what it claims before reading, 4 GiB at most; found by
/// the npy fuzz target), and brackets it would take minutes over ([`check_brackets`]).
fn check_header(bytes: &[u8]) -> std::result::Result<(), String> {
    let Some(&major) = bytes.get(6) else {
        return Err("truncated .npy header: no format version".into());
    };
    let start = match major {
        1 => 10,
        2 | 3 => 12,
        // npyz names the unsupported version
        _ => return Ok(()),
    };
    let Some(len) = bytes.get(8..start) else {
        return Err("truncated .npy header: no header length".into());
    };
    let claimed = len
        .iter()
        .rev()
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    let have = (bytes.len() - start) as u64;
    if claimed > have {
        return Err(format!(
            "truncated .npy header: it claims {claimed} header bytes, {have} follow"
        ));
    }
    let header = &bytes[start..start + claimed as usize];
    check_brackets(header)?;
    check_shape(header)
}

/// The shape tuple's dimensions must be decimal integers (`3` or Python 2's `3L`, as numpy
/// writes them) whose product fits 64 bits: npyz multiplies them unchecked (found by the npy
/// fuzz target: a 64-digit dimension overflowed inside npyz).
fn check_shape(header: &[u8]) -> std::result::Result<(), String> {
    let text = String::from_utf8_lossy(header);
    let Some(key) = text.find("'shape'").or_else(|| text.find("\"shape\"")) else {
        return Ok(()); // npyz names the missing key
    };
    let rest = text[key + 7..].trim_start();
    let Some(rest) = rest.strip_prefix(':') else {
        return Ok(());
    };
    let Some(tuple) = rest.trim_start().strip_prefix('(') else {
        return Ok(());
    };
    let Some(end) = tuple.find(')') else {
        return Ok(());
    };
    let mut count: u64 = 1;
    for part in tuple[..end]
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let digits = part.strip_suffix('L').unwrap_or(part);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "bad .npy header: shape dimension {part:?} is not a decimal integer"
            ));
        }
        let d: u64 = digits
            .parse()
            .map_err(|_| format!("bad .npy header: shape dimension {part} does not fit 64 bits"))?;
        count = count.checked_mul(d).ok_or_else(|| {
            format!(
                "bad .npy header: shape ({}) has more elements than fit 64 bits",
                &tuple[..end]
            )
        })?;
    }
    Ok(())
}

/// Deepest bracket nesting a header may have: the dict, a shape tuple and a structured dtype's
/// list, field tuple and sub-array shape need 5.
const HEADER_MAX_DEPTH: usize = 6;

/// The header's brackets (outside quoted strings) must pair up, nested at most
/// [`HEADER_MAX_DEPTH`] deep: npyz's Python-literal parser backtracks exponentially on unclosed
/// brackets (found by the npy fuzz target: 118 bytes of `[` took over 30 s).
fn check_brackets(header: &[u8]) -> std::result::Result<(), String> {
    let mut open = Vec::new();
    let mut quote = None;
    let mut escaped = false;
    for (i, &c) in header.iter().enumerate() {
        if let Some(q) = quote {
            match c {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                _ if c == q => quote = None,
                _ => {}
            }
            continue;
        }
        match c {
            b'\'' | b'"' => quote = Some(c),
            b'[' | b'(' | b'{' => {
                open.push(c);
                if open.len() > HEADER_MAX_DEPTH {
                    return Err(format!(
                        "bad .npy header: brackets nested more than {HEADER_MAX_DEPTH} deep \
                         (header byte {i})"
                    ));
                }
            }
            b']' | b')' | b'}' => {
                let want = match c {
                    b']' => b'[',
                    b')' => b'(',
                    _ => b'{',
                };
                if open.pop() != Some(want) {
                    return Err(format!(
                        "bad .npy header: unmatched '{}' at header byte {i}",
                        c as char
                    ));
                }
            }
            _ => {}
        }
    }
    if quote.is_some() {
        return Err("bad .npy header: unterminated string".into());
    }
    if let Some(&c) = open.last() {
        return Err(format!("bad .npy header: unclosed '{}'", c as char));
    }
    Ok(())
}

fn ints<T: Into<i64>>(v: Vec<T>) -> NpyValues {
    NpyValues::I64(v.into_iter().map(Into::into).collect())
}

/// Reads a `.npy` file.
pub fn read_npy(path: &Path) -> Result<NpyArray> {
    parse_npy(&fsutil::read_file(path)?, path)
}

/// The names of the arrays (`<name>.npy` members) in a `.npz` archive.
pub fn npz_array_names(path: &Path) -> Result<Vec<String>> {
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, "opening", e))?;
    npz_array_names_from(std::io::BufReader::new(file), path)
}

/// [`npz_array_names`] of an archive in any seekable reader (the bytes of a file); `path` names
/// it in errors.
pub fn npz_array_names_from<R: Read + Seek>(reader: R, path: &Path) -> Result<Vec<String>> {
    let zip = zip::ZipArchive::new(reader)
        .map_err(|e| DataError::malformed(path, format!("not a readable .npz (zip): {e}")))?;
    Ok(zip
        .file_names()
        .filter_map(|n| n.strip_suffix(".npy").map(str::to_string))
        .collect())
}

/// Reads the named arrays of a `.npz` archive (stored or deflated members `<name>.npy`).
/// A missing name is an error listing the names the archive has.
pub fn read_npz(path: &Path, names: &[&str]) -> Result<Vec<NpyArray>> {
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, "opening", e))?;
    read_npz_from(std::io::BufReader::new(file), path, names)
}

/// [`read_npz`] of an archive in any seekable reader (the bytes of a file); `path` names it in
/// errors.
pub fn read_npz_from<R: Read + Seek>(
    reader: R,
    path: &Path,
    names: &[&str],
) -> Result<Vec<NpyArray>> {
    let mut zip = zip::ZipArchive::new(reader)
        .map_err(|e| DataError::malformed(path, format!("not a readable .npz (zip): {e}")))?;
    let present: Vec<String> = zip
        .file_names()
        .filter_map(|n| n.strip_suffix(".npy").map(str::to_string))
        .collect();
    let mut out = Vec::with_capacity(names.len());
    for &name in names {
        let origin = PathBuf::from(format!("{}:{name}", path.display()));
        let mut member = match zip.by_name(&format!("{name}.npy")) {
            Ok(m) => m,
            Err(zip::result::ZipError::FileNotFound) => {
                let mut have = present.clone();
                have.sort();
                return Err(DataError::malformed(
                    path,
                    format!("no array '{name}' in the archive (it has {have:?})"),
                ));
            }
            Err(e) => {
                return Err(DataError::malformed(
                    &origin,
                    format!("corrupt .npz member: {e}"),
                ))
            }
        };
        // The size the zip directory claims only sizes the first allocation, capped, so that a
        // member claiming terabytes fails on its actual bytes instead of allocating them.
        let claimed = usize::try_from(member.size()).unwrap_or(usize::MAX);
        let mut bytes = Vec::with_capacity(claimed.min(PREALLOCATE_MAX));
        member.read_to_end(&mut bytes).map_err(|e| {
            DataError::malformed(&origin, format!("corrupt or truncated .npz member: {e}"))
        })?;
        out.push(parse_npy(&bytes, &origin)?);
    }
    Ok(out)
}

/// The most a size claimed by a header reserves before any byte is read (64 MiB).
pub(crate) const PREALLOCATE_MAX: usize = 64 << 20;

/// Encodes a C-order `.npy` (format 1.0) of `data` with `shape`.
pub fn encode_npy<T: npyz::AutoSerialize + Copy>(data: &[T], shape: &[usize]) -> Result<Vec<u8>> {
    let count: usize = shape.iter().product();
    if count != data.len() {
        return Err(DataError::InvalidArgument(format!(
            "shape {shape:?} needs {count} values, got {}",
            data.len()
        )));
    }
    let mut buf = Vec::new();
    let shape64: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let io = |e: std::io::Error| DataError::InvalidArgument(format!("encoding .npy: {e}"));
    {
        use npyz::WriterBuilder;
        let mut w = npyz::WriteOptions::new()
            .default_dtype()
            .shape(&shape64)
            .writer(&mut buf)
            .begin_nd()
            .map_err(io)?;
        w.extend(data.iter().copied()).map_err(io)?;
        w.finish().map_err(io)?;
    }
    Ok(buf)
}

/// Writes a `.npy` atomically (temp file + rename).
pub fn write_npy<T: npyz::AutoSerialize + Copy>(
    path: &Path,
    data: &[T],
    shape: &[usize],
) -> Result<()> {
    let bytes = encode_npy(data, shape)?;
    fsutil::write_atomic(path, |w| w.write_all(&bytes))
}
