//! Packed mantissas: `width`-bit fields in a little-endian bit stream (field `i` starts at bit
//! `i * width`, least significant bit first). Sign-magnitude fields keep the sign in their top
//! bit; two's-complement fields are the low `width` bits of the value.

use lowprec_formats::MantissaCode;

/// Bytes of `n` fields of `width` bits.
pub fn packed_len(n: usize, width: u32) -> usize {
    (n * width as usize).div_ceil(8)
}

fn encode(q: i16, width: u32, code: MantissaCode) -> u32 {
    let mask = (1u32 << width) - 1;
    match code {
        MantissaCode::SignMagnitude => {
            let mag = q.unsigned_abs() as u32;
            let sign = if q < 0 { 1u32 << (width - 1) } else { 0 };
            (sign | mag) & mask
        }
        MantissaCode::TwosComplement => (q as i32 as u32) & mask,
    }
}

fn decode(f: u32, width: u32, code: MantissaCode) -> i16 {
    match code {
        MantissaCode::SignMagnitude => {
            let mag = (f & ((1u32 << (width - 1)) - 1)) as i16;
            if f >> (width - 1) & 1 == 1 {
                -mag
            } else {
                mag
            }
        }
        MantissaCode::TwosComplement => {
            let shift = 32 - width;
            (((f << shift) as i32) >> shift) as i16
        }
    }
}

/// Packs mantissas (each within the format's range) into bytes.
pub fn pack(q: &[i16], width: u32, code: MantissaCode) -> Vec<u8> {
    let mut out = vec![0u8; packed_len(q.len(), width)];
    let mut bit = 0usize;
    for &v in q {
        let f = encode(v, width, code);
        for b in 0..width as usize {
            if f >> b & 1 == 1 {
                out[(bit + b) / 8] |= 1 << ((bit + b) % 8);
            }
        }
        bit += width as usize;
    }
    out
}

/// Unpacks `n` mantissas; `None` when `bytes` is not exactly [`packed_len`] long.
pub fn unpack(bytes: &[u8], n: usize, width: u32, code: MantissaCode) -> Option<Vec<i16>> {
    if bytes.len() != packed_len(n, width) {
        return None;
    }
    let mut out = Vec::with_capacity(n);
    let mut bit = 0usize;
    for _ in 0..n {
        let mut f = 0u32;
        for b in 0..width as usize {
            f |= ((bytes[(bit + b) / 8] >> ((bit + b) % 8)) as u32 & 1) << b;
        }
        out.push(decode(f, width, code));
        bit += width as usize;
    }
    Some(out)
}

/// Packs `width`-bit fields (each below `2^width`) into a little-endian bit stream.
pub fn pack_fields(fields: &[u32], width: u32) -> Vec<u8> {
    let mut out = vec![0u8; packed_len(fields.len(), width)];
    let mut bit = 0usize;
    for &f in fields {
        for b in 0..width as usize {
            if f >> b & 1 == 1 {
                out[(bit + b) / 8] |= 1 << ((bit + b) % 8);
            }
        }
        bit += width as usize;
    }
    out
}

/// Unpacks `n` fields of `width` bits; `None` when `bytes` is not exactly [`packed_len`] long.
pub fn unpack_fields(bytes: &[u8], n: usize, width: u32) -> Option<Vec<u32>> {
    if bytes.len() != packed_len(n, width) {
        return None;
    }
    let mut out = Vec::with_capacity(n);
    let mut bit = 0usize;
    for _ in 0..n {
        let mut f = 0u32;
        for b in 0..width as usize {
            f |= ((bytes[(bit + b) / 8] >> ((bit + b) % 8)) as u32 & 1) << b;
        }
        out.push(f);
        bit += width as usize;
    }
    Some(out)
}
