//! Matrix views, block scales and the descriptor of a quantised GEMM operand.
//!
//! These types define the *semantics* every integer GEMM in lowprec follows (CPU kernels, the
//! FPGA simulator in `lowprec-hw`, a future GPU backend):
//!
//! ```text
//! C[m,n] = (accumulate ? C[m,n] : 0.0)
//! for each K chunk c (in increasing k order):
//!     acc  = sum_{k in c} A[m,k] * B[k,n]            (exact, in i32)
//!     C[m,n] = C[m,n] + ((acc as f32) * sa(s(c), m)) * sb(s(c), n)
//! ```
//!
//! K is cut into *segments* of `GemmSpec::segment` elements (the last one may be short); segment
//! `s` has its own scales (this is how 002 computes a weight gradient one example at a time, each
//! example with its own activation and error exponents). A segment longer than the largest
//! reduction that cannot overflow i32 (`k_safe`) is cut further into chunks of `k_safe`, which
//! share the segment's scales. The float epilogue runs in exactly the order above, in f32, so
//! every backend that computes the integer sums exactly produces the same bits.

use std::mem::MaybeUninit;

use crate::KernelError;

/// A read-only strided matrix view: element `(r, c)` is `data[r * row_stride + c * col_stride]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a, T> {
    pub data: &'a [T],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a, T: Copy> MatRef<'a, T> {
    /// A row-major `rows x cols` view of `data`.
    pub fn row_major(data: &'a [T], rows: usize, cols: usize) -> Result<Self, KernelError> {
        if data.len() < rows * cols {
            return Err(KernelError::Shape(format!(
                "row-major {rows}x{cols} view needs {} elements, slice has {}",
                rows * cols,
                data.len()
            )));
        }
        Ok(Self {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        })
    }

    /// The transposed view (no copy).
    pub fn t(self) -> Self {
        Self {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    #[inline]
    pub fn at(&self, r: usize, c: usize) -> T {
        self.data[r * self.row_stride + c * self.col_stride]
    }

    /// Checks that every addressed element lies inside `data`.
    pub fn check(&self, what: &str) -> Result<(), KernelError> {
        if self.rows == 0 || self.cols == 0 {
            return Ok(());
        }
        let last = (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride;
        if last >= self.data.len() {
            return Err(KernelError::Shape(format!(
                "{what}: {}x{} view with strides ({}, {}) reaches element {last}, slice has {}",
                self.rows,
                self.cols,
                self.row_stride,
                self.col_stride,
                self.data.len()
            )));
        }
        Ok(())
    }
}

/// A mutable row-major output matrix with leading dimension `ld` (>= cols).
#[derive(Debug)]
pub struct MatMut<'a, T> {
    pub data: &'a mut [T],
    pub rows: usize,
    pub cols: usize,
    pub ld: usize,
}

impl<'a, T> MatMut<'a, T> {
    pub fn row_major(data: &'a mut [T], rows: usize, cols: usize) -> Result<Self, KernelError> {
        if data.len() < rows * cols {
            return Err(KernelError::Shape(format!(
                "row-major {rows}x{cols} output needs {} elements, slice has {}",
                rows * cols,
                data.len()
            )));
        }
        Ok(Self {
            data,
            rows,
            cols,
            ld: cols,
        })
    }
}

/// A GEMM result `rows x cols` stored as `cols / group` blocks of `rows x group`, each
/// row-major: element `(i, j)` at `(j / group) * rows * group + i * group + j % group`. A
/// convolution's `[examples, Cout, pixels]` output is its `Cout x (examples * pixels)` GEMM in
/// blocks of `pixels` columns. The slots need not be initialised: a GEMM writes each before it
/// reads it, and only overwrites.
pub struct GroupedMut<'a> {
    pub data: &'a mut [MaybeUninit<f32>],
    pub rows: usize,
    pub cols: usize,
    pub group: usize,
}

impl<'a> GroupedMut<'a> {
    /// Checks that `data` holds exactly `rows x cols` values in whole groups.
    pub fn new(
        data: &'a mut [MaybeUninit<f32>],
        rows: usize,
        cols: usize,
        group: usize,
    ) -> Result<Self, KernelError> {
        let c = Self {
            data,
            rows,
            cols,
            group,
        };
        c.check()?;
        Ok(c)
    }

    /// That the slots are exactly `rows x cols` in whole groups (the fields are public, so the
    /// GEMMs check again before writing).
    pub fn check(&self) -> Result<(), KernelError> {
        let (rows, cols, group) = (self.rows, self.cols, self.group);
        if group == 0
            || !cols.is_multiple_of(group)
            || Some(self.data.len()) != rows.checked_mul(cols)
        {
            return Err(KernelError::Shape(format!(
                "grouped {rows}x{cols} output in groups of {group} columns: {} elements given",
                self.data.len()
            )));
        }
        Ok(())
    }

    /// Writes the row-major `rows x cols` matrix `c` into this layout.
    pub fn fill_from_row_major(&mut self, c: &[f32]) {
        assert_eq!(c.len(), self.rows * self.cols, "row-major source size");
        let (rows, g) = (self.rows, self.group);
        for (blk, out) in self.data.chunks_mut((rows * g).max(1)).enumerate() {
            for (i, o) in out.chunks_mut(g).enumerate() {
                for (o, &v) in o.iter_mut().zip(&c[i * self.cols + blk * g..][..g]) {
                    o.write(v);
                }
            }
        }
    }
}

/// Block scales of one operand: `scale(s, i) = values[s * seg_stride + i / group]`, where `i`
/// is the operand's outer index (`m` for A, `n` for B) and `s` the K segment.
///
/// `group = usize::MAX` (see [`Scales::uniform`]) means one scale for every index; `group = 1`
/// one per row/column; `group = 1024` one per 1024 consecutive columns (an example of a
/// 32x32 feature map). `seg_stride = 0` means the same scales for every segment.
#[derive(Clone, Copy, Debug)]
pub struct Scales<'a> {
    pub values: &'a [f32],
    pub group: usize,
    pub seg_stride: usize,
}

impl<'a> Scales<'a> {
    /// One scale for the whole operand and every segment.
    pub fn uniform(value: &'a [f32]) -> Self {
        Self {
            values: value,
            group: usize::MAX,
            seg_stride: 0,
        }
    }
    /// One scale per outer index (row of A / column of B), same for every segment.
    pub fn per_index(values: &'a [f32]) -> Self {
        Self {
            values,
            group: 1,
            seg_stride: 0,
        }
    }
    /// One scale per `group` consecutive outer indices, same for every segment (a convolution's
    /// examples: the columns of one example's output pixels share its scale).
    pub fn per_group(values: &'a [f32], group: usize) -> Self {
        Self {
            values,
            group,
            seg_stride: 0,
        }
    }
    /// One scale per K segment, the same for every outer index (002's per-example weight
    /// gradient: segment `s` is example `s`).
    pub fn per_segment(values: &'a [f32]) -> Self {
        Self {
            values,
            group: usize::MAX,
            seg_stride: 1,
        }
    }

    #[inline]
    pub fn get(&self, s: usize, i: usize) -> f32 {
        let idx = if self.group == usize::MAX {
            0
        } else {
            i / self.group
        };
        self.values[s * self.seg_stride + idx]
    }

    /// Checks that every `(s, i)` with `s < segments`, `i < len` addresses `values`.
    pub fn check(&self, what: &str, segments: usize, len: usize) -> Result<(), KernelError> {
        if segments == 0 || len == 0 {
            return Ok(());
        }
        if self.group == 0 {
            return Err(KernelError::Shape(format!(
                "{what}: scale group must be >= 1"
            )));
        }
        let per_seg = if self.group == usize::MAX {
            1
        } else {
            len.div_ceil(self.group)
        };
        let need = (segments - 1) * self.seg_stride + per_seg;
        if need > self.values.len() {
            return Err(KernelError::Shape(format!(
                "{what}: scales for {segments} segment(s) x {len} indices need {need} values, got {}",
                self.values.len()
            )));
        }
        Ok(())
    }
}

/// A quantised GEMM operand: integer mantissas, their block scales, and the largest magnitude
/// the mantissas may take (127 for symmetric 8-bit, 128 for asymmetric, 2^(wl-1)-1 for wider
/// symmetric formats). `max_abs` decides how long a reduction can run in i32 without overflow;
/// kernels reject data that exceeds it.
#[derive(Clone, Copy, Debug)]
pub struct QMatRef<'a, T> {
    pub mat: MatRef<'a, T>,
    pub scales: Scales<'a>,
    pub max_abs: u32,
}

/// How K is segmented and whether C is accumulated into.
#[derive(Clone, Copy, Debug)]
pub struct GemmSpec {
    /// Segment length along K (>= 1); `usize::MAX` for one segment.
    pub segment: usize,
    /// Add into C instead of overwriting it.
    pub accumulate: bool,
}

impl GemmSpec {
    pub fn whole_k() -> Self {
        Self {
            segment: usize::MAX,
            accumulate: false,
        }
    }
}

/// The longest reduction whose i32 sum cannot overflow when `|a| <= max_a` and `|b| <= max_b`:
/// `floor((2^31 - 1) / (max_a * max_b))`. For symmetric 8-bit operands (127 x 127) this is
/// 133,144; with -128 allowed (128 x 128) it is 131,071.
pub fn k_safe(max_a: u32, max_b: u32) -> usize {
    let p = (max_a as u64) * (max_b as u64);
    if p == 0 {
        return usize::MAX;
    }
    ((i32::MAX as u64) / p) as usize
}

/// Chunks of K as `(segment index, start, end)`, in the order the epilogue adds them.
pub fn k_chunks(k: usize, segment: usize, k_safe: usize) -> Vec<(usize, usize, usize)> {
    let segment = segment.max(1);
    let step = segment.min(k_safe.max(1));
    let mut out = Vec::new();
    let mut seg_start = 0;
    let mut s = 0;
    while seg_start < k {
        let seg_end = seg_start.saturating_add(segment).min(k);
        let mut c = seg_start;
        while c < seg_end {
            let e = (c + step).min(seg_end);
            out.push((s, c, e));
            c = e;
        }
        seg_start = seg_end;
        s += 1;
    }
    out
}

/// Number of segments K is cut into.
pub fn segment_count(k: usize, segment: usize) -> usize {
    if k == 0 {
        0
    } else {
        k.div_ceil(segment.max(1))
    }
}
