//! A concrete PE-array design: board, array size N, the on-chip capacity for A (A_max rows x
//! columns) and the clock. Construction validates the design against the board.

use crate::catalog::{Board, Catalog};
use crate::resources::{self, ResourceEstimate};
use crate::{HwError, Result};

/// An N x N design of paper 002's GEMM core on a board.
#[derive(Clone, Debug)]
pub struct ArrayDesign {
    pub board: Board,
    /// PEs per side (a power of two).
    pub n: usize,
    /// Largest stored matrix: rows x columns of A held on chip (A_max).
    pub a_rows: usize,
    pub a_cols: usize,
    pub clock_mhz: f64,
}

impl ArrayDesign {
    /// Builds and validates a design. Errors name what is impossible: N not a power of two, an
    /// A_max that needs more BRAM than the board has, an array that needs more DSPs, a clock out
    /// of range.
    pub fn new(
        board_name: &str,
        n: usize,
        a_rows: usize,
        a_cols: usize,
        clock_mhz: f64,
    ) -> Result<Self> {
        let board = Catalog::get().board(board_name)?.clone();
        if n < 2 || !n.is_power_of_two() {
            return Err(HwError::InvalidDesign(format!(
                "array size {n}x{n}: N must be a power of two >= 2 (HLS partitions A by power-of-two factors)"
            )));
        }
        if n > 256 {
            return Err(HwError::InvalidDesign(format!(
                "array size {n}x{n} exceeds the modelled maximum of 256x256"
            )));
        }
        if a_rows == 0 || a_cols == 0 {
            return Err(HwError::InvalidDesign(format!(
                "A_max {a_rows}x{a_cols} must be at least 1x1"
            )));
        }
        if !(clock_mhz.is_finite() && clock_mhz > 0.0 && clock_mhz <= 1000.0) {
            return Err(HwError::InvalidDesign(format!(
                "clock {clock_mhz} MHz is outside (0, 1000]"
            )));
        }
        let d = Self {
            board,
            n,
            a_rows,
            a_cols,
            clock_mhz,
        };
        let est = d.resources()?;
        let b = &d.board;
        if est.bram36 > b.bram36 as f64 {
            return Err(HwError::InvalidDesign(format!(
                "{}x{} with A_max {}x{} needs {:.1} BRAM36 but {} has {}",
                n, n, a_rows, a_cols, est.bram36, b.id, b.bram36
            )));
        }
        if est.dsp > b.dsp {
            return Err(HwError::InvalidDesign(format!(
                "{n}x{n} needs {} DSPs but {} has {}",
                est.dsp, b.id, b.dsp
            )));
        }
        if est.lut > b.lut || est.ff > b.ff {
            return Err(HwError::InvalidDesign(format!(
                "{n}x{n} needs {} LUTs / {} FFs but {} has {} / {}",
                est.lut, est.ff, b.id, b.lut, b.ff
            )));
        }
        Ok(d)
    }

    /// The paper design of `board` with array size `n` and the largest A_max in the catalogue.
    pub fn paper_design(board_name: &str, n: usize) -> Result<Self> {
        let cat = Catalog::get();
        let board = cat.board(board_name)?;
        let best = cat
            .designs_on(&board.id)
            .into_iter()
            .filter(|d| d.n as usize == n)
            .max_by_key(|d| d.a_rows as u64 * d.a_cols as u64);
        match best {
            Some(d) => Self::new(
                &board.id,
                n,
                d.a_rows as usize,
                d.a_cols as usize,
                d.clock_mhz,
            ),
            None => Self::largest(board_name, n, board.default_clock_mhz),
        }
    }

    /// The largest A_max an `n x n` array can hold on the board: the biggest power-of-two bank
    /// depth that fits the free BRAM, shaped 1:9 (rows : columns) for 3x3 convolutions as in 002.
    pub fn largest(board_name: &str, n: usize, clock_mhz: f64) -> Result<Self> {
        let cat = Catalog::get();
        let board = cat.board(board_name)?;
        if n < 2 || !n.is_power_of_two() {
            return Err(HwError::InvalidDesign(format!(
                "array size {n}x{n}: N must be a power of two >= 2"
            )));
        }
        let fam = cat.family(&board.family)?;
        let free18 = 2 * (board.bram36.saturating_sub(fam.platform_bram36)) as usize;
        let per_bank = free18 / (n * n);
        if per_bank == 0 {
            return Err(HwError::InvalidDesign(format!(
                "{n}x{n} needs {} BRAM18 banks but {} has only {free18} free",
                n * n,
                board.id
            )));
        }
        let per_bank = 1usize << (usize::BITS - 1 - per_bank.leading_zeros());
        let words = per_bank * resources::BRAM18_WORDS;
        // rows_per_bank * cols_per_bank <= words with cols ~ 9 x rows.
        let r = ((words as f64 / 9.0).sqrt().floor() as usize).max(1);
        let c = words / r;
        Self::new(&board.id, n, r * n, c * n, clock_mhz)
    }

    /// Parses `board-NxN[-RxC][@MHz]`, e.g. `zcu111-32x32`, `pynq-z1-8x8-168x1520@100`.
    /// Without `-RxC` the catalogue's largest design for that board and N is used.
    pub fn from_spec(spec: &str) -> Result<Self> {
        let bad = |why: &str| {
            HwError::InvalidArgument(format!(
                "design spec '{spec}': {why} (expected board-NxN[-RxC][@MHz], e.g. zcu111-32x32)"
            ))
        };
        let (body, clock) = match spec.split_once('@') {
            Some((b, c)) => {
                let mhz: f64 = c
                    .trim()
                    .trim_end_matches("MHz")
                    .trim_end_matches("mhz")
                    .parse()
                    .map_err(|_| bad("clock is not a number"))?;
                (b, Some(mhz))
            }
            None => (spec, None),
        };
        let tokens: Vec<&str> = body.split('-').collect();
        let pos = tokens
            .iter()
            .position(|t| parse_dims(t).is_some())
            .ok_or_else(|| bad("no NxN array size"))?;
        if pos == 0 {
            return Err(bad("missing board name"));
        }
        let board = tokens[..pos].join("-");
        let (n1, n2) = parse_dims(tokens[pos]).expect("checked above");
        if n1 != n2 {
            return Err(bad("the 002 array is square (N x N)"));
        }
        let rest = &tokens[pos + 1..];
        match rest {
            [] => {
                let mut d = Self::paper_design(&board, n1)?;
                if let Some(mhz) = clock {
                    d = Self::new(&d.board.id, d.n, d.a_rows, d.a_cols, mhz)?;
                }
                Ok(d)
            }
            [amax] => {
                let (r, c) = parse_dims(amax).ok_or_else(|| bad("A_max is not RxC"))?;
                let b = Catalog::get().board(&board)?;
                let mhz = clock.unwrap_or(b.default_clock_mhz);
                Self::new(&board, n1, r, c, mhz)
            }
            _ => Err(bad("trailing text after A_max")),
        }
    }

    /// Canonical spec string (`zcu111-32x32-672x6080@181`).
    pub fn spec(&self) -> String {
        format!(
            "{}-{}x{}-{}x{}@{}",
            self.board.id, self.n, self.n, self.a_rows, self.a_cols, self.clock_mhz
        )
    }

    pub fn clock_hz(&self) -> f64 {
        self.clock_mhz * 1e6
    }

    /// Words (bytes of A) each of the N^2 banks must hold: A is partitioned cyclically by N
    /// along both axes so that both row- and column-major reads hit N^2 distinct banks.
    pub fn bank_words(&self) -> usize {
        self.a_rows.div_ceil(self.n) * self.a_cols.div_ceil(self.n)
    }

    /// Bytes per second the core can stream: the AXI port (bytes/cycle x clock) or the DRAM,
    /// whichever is lower.
    pub fn dma_bytes_per_s(&self) -> f64 {
        (self.board.axi_bytes_per_cycle as f64 * self.clock_hz()).min(self.board.dram_bytes_per_s())
    }

    /// Peak MAC/s of the array: N^2 MACs per cycle.
    pub fn peak_macs(&self) -> f64 {
        (self.n * self.n) as f64 * self.clock_hz()
    }

    pub fn resources(&self) -> Result<ResourceEstimate> {
        resources::estimate(&self.board, self.n, self.a_rows, self.a_cols)
    }

    /// Largest square convolution (`c` input and `c` output channels, `k x k` kernel) whose
    /// weights fit in one piece: `c <= a_rows` and `c k^2 <= a_cols` (002: 672 channels on the
    /// ZCU111, 168 on the Pynq-Z1 for 3x3 kernels). Its feature map must also satisfy
    /// `w h <= a_cols` for the weight-gradient GEMM (see [`Self::max_feature_pixels`]).
    pub fn max_conv_channels(&self, k: usize) -> usize {
        self.a_rows.min(self.a_cols / (k * k).max(1))
    }

    /// Largest `w x h` output feature map whose per-example error (`oc x w h`) fits on chip.
    pub fn max_feature_pixels(&self) -> usize {
        self.a_cols
    }

    /// Whether an A operand of `rows x cols` fits on chip in one piece, in either orientation
    /// (the runtime row/column-major read serves W and W^T from one copy).
    pub fn fits_a(&self, rows: usize, cols: usize) -> bool {
        (rows <= self.a_rows && cols <= self.a_cols) || (cols <= self.a_rows && rows <= self.a_cols)
    }
}

fn parse_dims(t: &str) -> Option<(usize, usize)> {
    let (a, b) = t.split_once(['x', 'X'])?;
    Some((a.parse().ok()?, b.parse().ok()?))
}
