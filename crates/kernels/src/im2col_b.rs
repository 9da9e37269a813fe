//! A GEMM B operand that is the im2col matrix of 8-bit feature maps, packed by the k-quad
//! family (and, for the column matrix itself, by the k-pair family) straight from the maps
//! instead of from a materialised column matrix.
//!
//! For a "same" convolution (stride 1, odd kernel side `k`, padding `k / 2`) over `E` examples
//! of `C` planes `h x w`, the column matrix has `C * k * k` rows (tap `(c, ky, kx)`) and
//! `E * h * w` columns (output pixel `(e, oy, ox)`):
//!
//! ```text
//! B[(c, ky, kx), (e, oy, ox)] = maps[e, c, oy + ky - pad, ox + kx - pad]   (0 outside the plane)
//! ```
//!
//! Row `(c, ky, kx)` of one example is the plane shifted by a constant offset with the
//! border zeroed, so 32 consecutive columns of one example are one masked 32-byte load. The
//! convolution layers used to write this matrix whole (`K x N` bytes, 9 times the maps) and the
//! packer read it back; here the packer reads the maps (in cache) and the matrix never exists.
//! [`Im2colRef::at`] is the plain definition the packers and tests are checked against.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::types::{MatRef, QMatRef, Scales};
use crate::KernelError;

/// The im2col matrix of `examples x channels x h x w` 8-bit maps for a `k x k` "same"
/// convolution (see the module docs). A view: nothing is copied.
#[derive(Clone, Copy, Debug)]
pub struct Im2colRef<'a> {
    pub maps: &'a [i8],
    pub examples: usize,
    pub channels: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
}

impl<'a> Im2colRef<'a> {
    /// Checks that `maps` holds the examples and that `k` is an odd kernel side.
    pub fn new(
        maps: &'a [i8],
        examples: usize,
        channels: usize,
        h: usize,
        w: usize,
        k: usize,
    ) -> Result<Self, KernelError> {
        if k.is_multiple_of(2) {
            return Err(KernelError::Shape(format!(
                "im2col operand: kernel side {k} must be odd for a same-size convolution"
            )));
        }
        let need = examples * channels * h * w;
        if maps.len() != need {
            return Err(KernelError::Shape(format!(
                "im2col operand: {examples} examples of {channels}x{h}x{w} need {need} values, \
                 got {}",
                maps.len()
            )));
        }
        Ok(Im2colRef {
            maps,
            examples,
            channels,
            h,
            w,
            k,
        })
    }

    /// Rows of the column matrix (`channels * k * k`).
    pub fn rows(&self) -> usize {
        self.channels * self.k * self.k
    }

    /// Columns of the column matrix (`examples * h * w`).
    pub fn cols(&self) -> usize {
        self.examples * self.h * self.w
    }

    pub fn pad(&self) -> usize {
        self.k / 2
    }

    /// Element `(r, n)` of the column matrix, by the definition.
    pub fn at(&self, r: usize, n: usize) -> i8 {
        let (k, hw) = (self.k, self.h * self.w);
        let (c, ky, kx) = (r / (k * k), (r / k) % k, r % k);
        let (e, p) = (n / hw, n % hw);
        let iy = (p / self.w + ky) as isize - self.pad() as isize;
        let ix = (p % self.w + kx) as isize - self.pad() as isize;
        if iy < 0 || ix < 0 || iy >= self.h as isize || ix >= self.w as isize {
            return 0;
        }
        self.maps[((e * self.channels + c) * self.h + iy as usize) * self.w + ix as usize]
    }

    /// The whole column matrix, row-major (`rows x cols`), by the definition.
    pub fn materialize(&self) -> Vec<i8> {
        let (rows, cols) = (self.rows(), self.cols());
        let mut out = Vec::with_capacity(rows * cols);
        for r in 0..rows {
            out.extend((0..cols).map(|n| self.at(r, n)));
        }
        out
    }
}

/// An im2col B operand with its block scales (per column, as a [`crate::QMatRef`]'s) and a
/// bound on its magnitudes (that of the maps; padding adds zeros). With `transposed`, B is
/// the column matrix's transpose (`pixels x taps`: the weight gradient's `col^T`).
#[derive(Clone, Copy, Debug)]
pub struct QIm2colRef<'a> {
    pub src: Im2colRef<'a>,
    pub transposed: bool,
    pub scales: Scales<'a>,
    pub max_abs: u32,
}

impl QIm2colRef<'_> {
    /// B's rows and columns.
    pub fn shape(&self) -> (usize, usize) {
        let (r, c) = (self.src.rows(), self.src.cols());
        if self.transposed {
            (c, r)
        } else {
            (r, c)
        }
    }

    /// Whether the AVX-512 packer takes all of B from the maps, with no scalar tail: the
    /// column matrix in whole 32-pixel strips of one example; `col^T` in whole 64-pixel
    /// blocks and taps in sixteens (a first layer's 27 taps would leave 11 to the scalar
    /// path, slower than the layer's own im2col).
    pub fn packs_whole(&self) -> bool {
        let hw = self.src.h * self.src.w;
        if self.transposed {
            hw.is_multiple_of(64) && self.src.rows().is_multiple_of(16)
        } else {
            hw.is_multiple_of(32)
        }
    }

    /// Whether the AVX2 k-quad packer takes all of B from the maps with 32-byte loads: the
    /// column matrix in whole 32-pixel strips of one example; `col^T` in 32-pixel blocks and
    /// taps in eights.
    pub fn avx2_quads_pack_whole(&self) -> bool {
        let strips = (self.src.h * self.src.w).is_multiple_of(32);
        strips && (!self.transposed || self.src.rows().is_multiple_of(8))
    }

    /// Whether the k-pair packer takes all of B from the maps with 16-byte loads: the column
    /// matrix (not its transpose) in whole 16-pixel strips of one example.
    pub fn pairs_pack_whole(&self) -> bool {
        !self.transposed && (self.src.h * self.src.w).is_multiple_of(16)
    }

    /// `f` of B materialised by its definition, as an ordinary operand (the route of CPUs
    /// and backends that do not pack from the maps).
    pub fn with_materialized(
        &self,
        f: impl FnOnce(QMatRef<'_, i8>) -> Result<(), KernelError>,
    ) -> Result<(), KernelError> {
        let col = self.src.materialize();
        let mat = MatRef::row_major(&col, self.src.rows(), self.src.cols())?;
        f(QMatRef {
            mat: if self.transposed { mat.t() } else { mat },
            scales: self.scales,
            max_abs: self.max_abs,
        })
    }
}

/// What the packer needs per row and per 32-column strip. The tables depend on the geometry
/// alone and a convolution makes a plan for every chunk of examples of each of its GEMMs, so
/// they are built once per geometry and shared ([`plan_tables`]).
pub(crate) struct Im2colPlan<'a> {
    pub src: Im2colRef<'a>,
    /// B is the column matrix's transpose.
    pub transposed: bool,
    /// Per row `(c, ky, kx)`: the offset of its source value from the output pixel's own
    /// position, `c * h * w + (ky - pad) * w + (kx - pad)`, and its tap `ky * k + kx`.
    pub row_offset: Arc<[isize]>,
    pub row_tap: Arc<[usize]>,
    /// Whether the strips of 32 columns lie inside one example each (`h * w % 32 == 0`, k-quad
    /// plans only), so that the masked-load packer applies.
    pub strips: bool,
    /// `masks[tap * strips_per_example + s]`: bit `i` set when column `32 s + i` of an example
    /// reads inside the plane at that tap.
    pub masks: Arc<[u32]>,
    /// The k-pair family's strips of 16 columns (`h * w % 16 == 0`, not transposed):
    /// `bytes16[(tap * (h * w / 16) + s) * 16 + i]` is -1 (all bits) when column `16 s + i` of
    /// an example reads inside the plane at that tap, else 0: an AND mask for a 16-byte load.
    pub bytes16: Arc<[i8]>,
    /// The AVX2 k-quad packer's strips of 32 pixels (`strips`): as `bytes16`,
    /// `bytes32[(tap * (h * w / 32) + s) * 32 + i]`.
    pub bytes32: Arc<[i8]>,
}

/// The geometry-only part of an [`Im2colPlan`] (its fields of the same names).
#[derive(Clone)]
struct PlanTables {
    row_offset: Arc<[isize]>,
    row_tap: Arc<[usize]>,
    masks: Arc<[u32]>,
    bytes16: Arc<[i8]>,
    bytes32: Arc<[i8]>,
}

/// What a plan's tables depend on: `(channels, k, h, w, transposed, quads, bytes)`.
type PlanKey = (usize, usize, usize, usize, bool, bool, bool);

/// Geometries whose tables are kept; past this the cache starts again (a network has a few
/// dozen layers, a fuzzer or a test of random shapes more).
const PLAN_CACHE_MAX: usize = 256;

/// The tables of `key`, built on first use and shared after.
fn plan_tables(src: &Im2colRef<'_>, key: PlanKey) -> PlanTables {
    static CACHE: OnceLock<Mutex<HashMap<PlanKey, PlanTables>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    // A poisoned lock only means another thread panicked while holding it; the map is
    // always whole, so keep using it.
    if let Some(t) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return t.clone();
    }
    let t = build_tables(src, key);
    let mut map = cache.lock().unwrap_or_else(|e| e.into_inner());
    if map.len() >= PLAN_CACHE_MAX {
        map.clear();
    }
    map.entry(key).or_insert(t).clone()
}

/// The tables of `key` by their definitions (see [`Im2colPlan`]'s fields).
fn build_tables(src: &Im2colRef<'_>, key: PlanKey) -> PlanTables {
    let (_, k, h, w, transposed, quads, bytes) = key;
    let (hw, pad) = (h * w, src.pad() as isize);
    let rows = src.rows();
    let mut row_offset = Vec::with_capacity(rows);
    let mut row_tap = Vec::with_capacity(rows);
    for r in 0..rows {
        let (c, ky, kx) = (r / (k * k), (r / k) % k, r % k);
        row_offset.push((c * hw) as isize + (ky as isize - pad) * w as isize + kx as isize - pad);
        row_tap.push(ky * k + kx);
    }
    let wide = if quads && hw % 32 == 0 {
        strip_masks(src, 32)
    } else {
        Vec::new()
    };
    let masks: Vec<u32> = wide.iter().map(|&m| m as u32).collect();
    let bytes32 = if bytes {
        mask_bytes(&wide, 32)
    } else {
        Vec::new()
    };
    let bytes16 = if !quads && hw % 16 == 0 && !transposed {
        mask_bytes(&strip_masks(src, 16), 16)
    } else {
        Vec::new()
    };
    PlanTables {
        row_offset: row_offset.into(),
        row_tap: row_tap.into(),
        masks: masks.into(),
        bytes16: bytes16.into(),
        bytes32: bytes32.into(),
    }
}

impl<'a> Im2colPlan<'a> {
    /// The plan for the family that packs (`quads`: the k-quad family's 32-column masks, and
    /// with `bytes` the AVX2 k-quad packer's byte masks too; otherwise the k-pair family's
    /// 16-byte masks).
    pub fn new(src: Im2colRef<'a>, transposed: bool, quads: bool, bytes: bool) -> Self {
        let key = (src.channels, src.k, src.h, src.w, transposed, quads, bytes);
        let t = plan_tables(&src, key);
        Im2colPlan {
            src,
            transposed,
            row_offset: t.row_offset,
            row_tap: t.row_tap,
            strips: quads && (src.h * src.w).is_multiple_of(32),
            masks: t.masks,
            bytes16: t.bytes16,
            bytes32: t.bytes32,
        }
    }
}

/// Bit masks of `width`-column strips as byte masks (-1 where the bit is set, else 0).
fn mask_bytes(masks: &[u64], width: usize) -> Vec<i8> {
    masks
        .iter()
        .flat_map(|&m| (0..width).map(move |i| -(((m >> i) & 1) as i8)))
        .collect()
}

/// For strips of `width <= 64` columns (`h * w % width == 0`): `out[tap * strips + s]` has bit
/// `i` set when column `width * s + i` of an example reads inside the plane at that tap. One
/// run of bits per output row a strip touches (a pixel-by-pixel loop over every tap was 20 us
/// per plan, one plan per GEMM: a fifth of a PreResNet-20 iteration).
fn strip_masks(src: &Im2colRef<'_>, width: usize) -> Vec<u64> {
    let (k, h, w) = (src.k, src.h, src.w);
    let (pad, per) = (src.pad() as isize, h * w / width);
    let mut masks = Vec::with_capacity(k * k * per);
    let (hi, wi) = (h as isize, w as isize);
    for tap in 0..k * k {
        let (dy, dx) = ((tap / k) as isize - pad, (tap % k) as isize - pad);
        // Output rows and columns whose tap lies inside the plane.
        let (ylo, yhi) = ((-dy).max(0), (hi - dy).min(hi));
        let (xlo, xhi) = ((-dx).max(0), (wi - dx).min(wi));
        for s in 0..per {
            let (p0, mut p, mut mask) = (width * s, width * s, 0u128);
            while p < p0 + width {
                let (oy, ox) = ((p / w) as isize, (p % w) as isize);
                let run = (w - p % w).min(p0 + width - p) as isize;
                let (a, b) = (ox.max(xlo), (ox + run).min(xhi));
                if (ylo..yhi).contains(&oy) && a < b {
                    let at = (p - p0) as isize - ox;
                    mask |= (1u128 << (b + at)) - (1u128 << (a + at));
                }
                p += run as usize;
            }
            masks.push(mask as u64);
        }
    }
    masks
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plan's shared tables are those its geometry builds, whichever geometries came before
    /// (each key is asked for twice, interleaved, so the second answer comes from the cache).
    #[test]
    fn cached_plan_tables_match_their_geometry() {
        let geoms = [
            (16, 3, 32, 32),
            (3, 3, 32, 32),
            (32, 3, 16, 16),
            (5, 5, 7, 9),
        ];
        let maps = vec![0i8; 5 * 32 * 32 * 32];
        for _ in 0..2 {
            for &(c, k, h, w) in &geoms {
                for (t, quads, bytes) in [
                    (false, true, true),
                    (true, true, false),
                    (false, false, false),
                    (true, false, false),
                ] {
                    let src = Im2colRef::new(&maps[..c * h * w], 1, c, h, w, k).unwrap();
                    let plan = Im2colPlan::new(src, t, quads, bytes);
                    let want = build_tables(&src, (c, k, h, w, t, quads, bytes));
                    assert_eq!(*plan.row_offset, *want.row_offset, "{c}x{h}x{w} k{k}");
                    assert_eq!(*plan.row_tap, *want.row_tap);
                    assert_eq!(*plan.masks, *want.masks);
                    assert_eq!(*plan.bytes16, *want.bytes16);
                    assert_eq!(*plan.bytes32, *want.bytes32);
                    assert_eq!(plan.strips, quads && (h * w) % 32 == 0);
                    assert_eq!(plan.row_offset.len(), c * k * k);
                }
            }
        }
    }
}
