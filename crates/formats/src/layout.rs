//! Which elements of a tensor share an exponent, as contiguous runs.
//!
//! A tensor is a flat row-major buffer with a shape. A block granularity cuts it into blocks;
//! every block is a set of contiguous runs. The quantisers walk runs in increasing element order,
//! so every element knows its block without per-element index arithmetic.

use crate::format::Block;
use crate::QuantError;

/// A contiguous run of elements `[start, start + len)` belonging to block `block`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub start: usize,
    pub len: usize,
    pub block: usize,
}

/// The block structure of one tensor shape under one [`Block`] granularity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockLayout {
    pub shape: Vec<usize>,
    pub block: Block,
    pub num_blocks: usize,
    runs: Vec<Run>,
}

impl BlockLayout {
    pub fn new(shape: &[usize], block: Block) -> Result<Self, QuantError> {
        let n: usize = shape.iter().product();
        let mut runs = Vec::new();
        let num_blocks;
        match block {
            Block::Tensor => {
                num_blocks = 1;
                if n > 0 {
                    runs.push(Run {
                        start: 0,
                        len: n,
                        block: 0,
                    });
                }
            }
            Block::Axis(d) => {
                if d >= shape.len() {
                    return Err(QuantError::Shape(format!(
                        "block axis{d} does not exist for a tensor of shape {shape:?}"
                    )));
                }
                let outer: usize = shape[..d].iter().product();
                let dim = shape[d];
                let inner: usize = shape[d + 1..].iter().product();
                num_blocks = dim;
                if inner > 0 {
                    for o in 0..outer {
                        for i in 0..dim {
                            runs.push(Run {
                                start: (o * dim + i) * inner,
                                len: inner,
                                block: i,
                            });
                        }
                    }
                }
            }
            Block::Tile(k) => {
                if k == 0 {
                    return Err(QuantError::Shape("tile size must be >= 1".into()));
                }
                let last = shape.last().copied().unwrap_or(1);
                let rows = n.checked_div(last).unwrap_or(0);
                let tiles = last.div_ceil(k);
                num_blocks = rows * tiles;
                for r in 0..rows {
                    for t in 0..tiles {
                        let s = t * k;
                        runs.push(Run {
                            start: r * last + s,
                            len: k.min(last - s),
                            block: r * tiles + t,
                        });
                    }
                }
            }
        }
        Ok(BlockLayout {
            shape: shape.to_vec(),
            block,
            num_blocks,
            runs,
        })
    }

    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs in increasing element order, covering every element once.
    pub fn runs(&self) -> &[Run] {
        &self.runs
    }

    /// Runs cut to at most `max_len` elements (for splitting work over threads); still in order.
    pub fn runs_split(&self, max_len: usize) -> Vec<Run> {
        let max_len = max_len.max(1);
        let mut out = Vec::with_capacity(self.runs.len());
        for r in &self.runs {
            let mut s = 0;
            while s < r.len {
                let l = max_len.min(r.len - s);
                out.push(Run {
                    start: r.start + s,
                    len: l,
                    block: r.block,
                });
                s += l;
            }
        }
        out
    }

    /// The block of element `index` (slow: for tests and error messages).
    pub fn block_of(&self, index: usize) -> Option<usize> {
        let i = self.runs.partition_point(|r| r.start + r.len <= index);
        self.runs
            .get(i)
            .filter(|r| r.start <= index)
            .map(|r| r.block)
    }
}
