//! FPGA resource model of an N x N design with a given A_max (paper 002, Tables III and IV).
//!
//! Derived from the architecture:
//! - **BRAM**: A is partitioned cyclically by N along rows and columns (equal power-of-two
//!   factors, so row- and column-major reads both hit N^2 distinct banks), giving N^2 banks of
//!   `ceil(rows/N) * ceil(cols/N)` bytes. A bank is built from BRAM18 primitives in 2K x 9 mode
//!   (2048 bytes each; a BRAM36 is two of them, 4K x 9). A bank whose depth exceeds a BRAM18
//!   multiple by at most 64 words keeps the tail in a 64 x 8 distributed RAM (8 LUTs) instead of
//!   a whole extra BRAM18 (the 16x16 240/2198 design of Table III only fits its 149 BRAMs so).
//! - **DSP**: one DSP48 per PE (an 8 x 8 multiply), plus 6 for the two fp32 multipliers of the
//!   fixed-to-float stage (3 DSPs each).
//! - **LUT**: per PE, a 32-bit adder-tree node (32 LUTs), the 2:1 row/column-major select on
//!   the 8-bit A read (8) and the broadcast B lane register fan-out (8); plus the LUTRAM tails.
//! - **FF**: per PE, the 8-bit A operand register.
//!
//! FITTED per device family (`data/catalog.toml`, one design row each): the platform BRAM
//! (data movers, FIFOs), the remaining DSPs (address generation, control), and the platform
//! LUT/FF base.

use crate::catalog::{Board, Catalog};
use crate::Result;

/// Bytes of a BRAM18 in 2K x 9 mode used 8 bits wide.
pub const BRAM18_WORDS: usize = 2048;
/// Bank tails up to this many words go to distributed RAM.
pub const LUTRAM_TAIL_WORDS: usize = 64;
/// LUTs of a 64 x 8 distributed RAM tail.
pub const LUTRAM_TAIL_LUTS: u32 = 8;
/// DSPs of the fixed-to-float stage: two fp32 multipliers at 3 DSPs each.
pub const FIXED_TO_FLOAT_DSP: u32 = 6;
/// LUTs per PE: adder-tree node (32) + row/column read select (8) + B lane fan-out (8).
pub const LUT_PER_PE: u32 = 48;
/// FFs per PE: the registered 8-bit A operand.
pub const FF_PER_PE: u32 = 8;

/// Estimated utilisation of a design.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ResourceEstimate {
    /// BRAM36 equivalents (a BRAM18 counts one half).
    pub bram36: f64,
    pub dsp: u32,
    pub lut: u32,
    pub ff: u32,
    /// Bytes per bank and BRAM18 per bank.
    pub bank_words: usize,
    pub bram18_per_bank: usize,
    /// Whether bank tails went to distributed RAM.
    pub lutram_tail: bool,
    /// BRAM36 holding A (without the platform share).
    pub a_bram36: f64,
}

/// Resource estimate for an `n x n` array holding A of `a_rows x a_cols` on `board`.
pub fn estimate(board: &Board, n: usize, a_rows: usize, a_cols: usize) -> Result<ResourceEstimate> {
    let fam = Catalog::get().family(&board.family)?;
    let banks = n * n;
    let bank_words = a_rows.div_ceil(n) * a_cols.div_ceil(n);
    let full = bank_words / BRAM18_WORDS;
    let tail = bank_words % BRAM18_WORDS;
    let (bram18_per_bank, lutram_tail) = if tail == 0 {
        (full, false)
    } else if tail <= LUTRAM_TAIL_WORDS && full > 0 {
        (full, true)
    } else {
        (full + 1, false)
    };
    let a_bram36 = (banks * bram18_per_bank) as f64 / 2.0;
    let pe = (n * n) as u32;
    let lut = fam.platform_lut
        + LUT_PER_PE * pe
        + if lutram_tail {
            LUTRAM_TAIL_LUTS * banks as u32
        } else {
            0
        };
    Ok(ResourceEstimate {
        bram36: a_bram36 + fam.platform_bram36 as f64,
        dsp: pe + FIXED_TO_FLOAT_DSP + fam.platform_dsp,
        lut,
        ff: fam.platform_ff + FF_PER_PE * pe,
        bank_words,
        bram18_per_bank,
        lutram_tail,
        a_bram36,
    })
}
