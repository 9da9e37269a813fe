//! Paper 004 (FAST): the fMAC cost model and a FAST PE-array design with its resource estimate.
//!
//! **fMAC.** One fMAC takes a group of [`GROUP`] = 16 BFP values from each operand (one shared
//! exponent each) and multiplies them in 2-bit mantissa chunks: in one pass (one cycle) it
//! multiplies one 2-bit chunk of every A mantissa by one 2-bit chunk of every B mantissa (16
//! signed 2b x 2b multipliers), sums the 16 products in an adder tree and adds the sum, shifted
//! by the chunks' positions, into the group's partial dot product. An `a`-bit by `b`-bit group
//! product therefore takes `ceil(a/2) * ceil(b/2)` passes ([`passes`]: 4 x 2 bits is 2 passes,
//! 8 x 8 bits 16); the partial sum is then scaled by the two exponents and added to the
//! output's accumulator. fp32 operands are costed as 24-bit significands on the same array
//! (144 passes per group), a convention that lets an fp32 run be placed on the same time axis.
//!
//! **Array.** `rows x cols` fMACs, output-stationary: each fMAC owns one output of the current
//! `rows x cols` output tile; A groups flow along rows and B groups down columns. A GEMM of
//! `m x k` by `k x n` takes, per output tile, `ceil(k / 16)` group steps of `passes` cycles
//! plus `rows + cols - 2` cycles to fill and drain the wavefront ([`FastDesign::gemm_cycles`]).
//! The three training GEMMs of a layer (forward, dX, dW) run on the same array, each with its
//! operands' widths ([`TrainingGemms`]). Only array time is modelled: quantisation, the weight
//! update and data movement are left out (the host or other units overlap them in FAST).
//!
//! **Timing** ([`Timing`]). `per-tile` (above): every output tile pays the wavefront's fill
//! and drain before the next starts. `overlapped`: operand (weight) loads and output registers
//! are double-buffered, so the next tile streams in while the previous tile's outputs shift
//! out; consecutive tiles of a GEMM, and the forward, dX and dW GEMMs of a step, follow each
//! other without a gap. Every tile but the last then costs `max(ceil(k / 16) * passes, rows)`
//! cycles (at least the `rows` cycles its outputs take to leave the array, one row per cycle,
//! behind the next tile's stream); the last streams its groups and pays the GEMM's one
//! `rows + cols - 2` fill/drain. So a one-tile GEMM costs the same under both timings, and
//! overlapped is never slower. Low widths gain most from it: at 2 x 2 bits a short reduction
//! is dominated by the per-tile fill and drain.
//!
//! **Resources** ([`FastDesign::resources`]), ASSUMED per-unit costs derived from the fMAC's
//! structure, not fitted to a synthesis: per fMAC 16 2b x 2b signed multipliers (3 LUTs each),
//! a 16-input adder tree of 4-bit products (100 LUTs), the chunk-position shifter (40), the
//! 20-bit group accumulator (20), the exponent adder (8) and the alignment shifter plus 32-bit
//! output accumulator (112): 328 LUTs, no DSP; registers: the 16 x 8-bit A and B groups passing
//! through (256 FFs) and the accumulators (52 FFs). Operand buffers: one bank per array row and
//! column, 16 bytes wide and 1024 groups deep (4 BRAM36 each). Platform LUT/FF/BRAM/DSP as the
//! family's in the catalogue (the same data movers as 002's designs). Energy: ASSUMED
//! [`PJ_PER_PASS`] per fMAC pass, for relative comparisons only.

use crate::catalog::{Board, Catalog};
use crate::{HwError, Result};

/// Values per BFP group (one shared exponent), along the reduction axis.
pub const GROUP: usize = 16;
/// Mantissa bits an fMAC multiplies per pass and operand.
pub const CHUNK_BITS: u32 = 2;
/// fp32 operands costed as 24-bit significands.
pub const FP32_WIDTH: u32 = 24;
/// ASSUMED energy of one fMAC pass (16 chunk products, the adder tree, the accumulate), pJ.
pub const PJ_PER_PASS: f64 = 1.0;

pub const LUT_PER_FMAC: u32 = 16 * 3 + 100 + 40 + 20 + 8 + 112;
pub const FF_PER_FMAC: u32 = 256 + 52;
/// BRAM36 per operand bank (16 bytes x 1024 groups).
pub const BRAM36_PER_BANK: u32 = 4;

/// Passes of an fMAC for an `a`-bit by `b`-bit group product.
pub fn passes(a: u32, b: u32) -> u64 {
    (a.div_ceil(CHUNK_BITS) as u64) * (b.div_ceil(CHUNK_BITS) as u64)
}

/// How the array's cycles per GEMM are counted (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Timing {
    /// Every output tile fills and drains the wavefront before the next starts.
    PerTile,
    /// Double-buffered operand loads and outputs: tiles and GEMMs back to back.
    Overlapped,
}

impl Timing {
    pub const ALL: [Timing; 2] = [Timing::PerTile, Timing::Overlapped];

    pub fn name(self) -> &'static str {
        match self {
            Timing::PerTile => "per-tile",
            Timing::Overlapped => "overlapped",
        }
    }
}

impl std::fmt::Display for Timing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Timing {
    type Err = HwError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "per-tile" => Ok(Timing::PerTile),
            "overlapped" => Ok(Timing::Overlapped),
            other => Err(HwError::InvalidDesign(format!(
                "timing `{other}`: per-tile or overlapped"
            ))),
        }
    }
}

/// `m x k` times `k x n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct GemmDims {
    pub m: usize,
    pub k: usize,
    pub n: usize,
}

/// The three GEMMs of one conv or linear layer in one training iteration at some batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TrainingGemms {
    /// Y = W X: `out x k` by `k x batch*positions`.
    pub forward: GemmDims,
    /// dX = W^T dY (absent for a layer fed by the network input).
    pub dx: Option<GemmDims>,
    /// dW = dY X^T: `out x batch*positions` by `batch*positions x k`.
    pub dw: GemmDims,
}

impl TrainingGemms {
    /// A layer with `out` outputs per position, reduction length `k` (`cin * kh * kw`, or the
    /// input features), `positions` output pixels (1 for linear), at `batch`; `first`: it
    /// reads the network input.
    pub fn new(out: usize, k: usize, positions: usize, batch: usize, first: bool) -> Self {
        let cols = batch * positions;
        TrainingGemms {
            forward: GemmDims { m: out, k, n: cols },
            dx: (!first).then_some(GemmDims {
                m: k,
                k: out,
                n: cols,
            }),
            dw: GemmDims {
                m: out,
                k: cols,
                n: k,
            },
        }
    }
}

/// Mantissa widths of a layer's three GEMM operands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct OperandWidths {
    pub weights: u32,
    pub acts: u32,
    pub errors: u32,
}

/// Cycles and fMAC passes of work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct FastCost {
    pub cycles: u64,
    /// fMAC passes actually done (group products x passes), for the energy.
    pub passes: u64,
}

impl std::ops::AddAssign for FastCost {
    fn add_assign(&mut self, o: FastCost) {
        self.cycles += o.cycles;
        self.passes += o.passes;
    }
}

/// An `rows x cols` array of fMACs on a board.
#[derive(Clone, Debug)]
pub struct FastDesign {
    pub board: Board,
    pub rows: usize,
    pub cols: usize,
    pub clock_mhz: f64,
}

/// Estimated utilisation of a FAST design.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct FastResources {
    pub fmacs: usize,
    pub lut: u32,
    pub ff: u32,
    pub dsp: u32,
    pub bram36: f64,
    /// Fractions of the board's LUT, FF, DSP and BRAM.
    pub lut_frac: f64,
    pub ff_frac: f64,
    pub dsp_frac: f64,
    pub bram_frac: f64,
}

impl FastDesign {
    /// Builds a design and checks that it fits the board.
    pub fn new(board: &str, rows: usize, cols: usize, clock_mhz: f64) -> Result<Self> {
        let board = Catalog::get().board(board)?.clone();
        if rows == 0 || cols == 0 || rows > 128 || cols > 128 {
            return Err(HwError::InvalidDesign(format!(
                "FAST array {rows}x{cols}: each side must be 1..=128 fMACs"
            )));
        }
        if !(clock_mhz.is_finite() && clock_mhz > 0.0 && clock_mhz <= 1000.0) {
            return Err(HwError::InvalidDesign(format!(
                "clock {clock_mhz} MHz is outside (0, 1000]"
            )));
        }
        let d = FastDesign {
            board,
            rows,
            cols,
            clock_mhz,
        };
        let r = d.resources()?;
        let b = &d.board;
        if r.lut > b.lut || r.ff > b.ff || r.bram36 > b.bram36 as f64 || r.dsp > b.dsp {
            return Err(HwError::InvalidDesign(format!(
                "FAST {rows}x{cols} needs {} LUTs, {} FFs, {:.0} BRAM36, {} DSPs; {} has {}, {}, {}, {}",
                r.lut, r.ff, r.bram36, r.dsp, b.id, b.lut, b.ff, b.bram36, b.dsp
            )));
        }
        Ok(d)
    }

    /// The design the FAST figures use: 16 x 16 fMACs on the ZCU111 at 200 MHz.
    pub fn reference() -> Self {
        Self::new("zcu111", 16, 16, 200.0).expect("the reference design fits")
    }

    /// The FAST designs listed for a board in the catalogue (`lowprec hw boards`): the
    /// reference 16 x 16 array at 200 MHz where it fits, and the largest square power-of-two
    /// array (up to 64 x 64) that fits, at the board's default clock.
    pub fn catalogued(board: &str) -> Result<Vec<FastDesign>> {
        let b = Catalog::get().board(board)?.clone();
        let mut v: Vec<FastDesign> = Vec::new();
        if let Ok(d) = Self::new(&b.id, 16, 16, 200.0) {
            v.push(d);
        }
        for n in [64, 32, 16, 8, 4, 2, 1] {
            if let Ok(d) = Self::new(&b.id, n, n, b.default_clock_mhz) {
                if !v.iter().any(|o| o.spec() == d.spec()) {
                    v.push(d);
                }
                break;
            }
        }
        Ok(v)
    }

    /// Peak group-pass rate of the array at 2 x 2 bits (group products per second; halve it
    /// for 4 x 2 bits, and so on).
    pub fn peak_group_passes(&self) -> f64 {
        (self.rows * self.cols) as f64 * self.clock_mhz * 1e6
    }

    pub fn spec(&self) -> String {
        format!(
            "fast:{}-{}x{}@{}",
            self.board.id, self.rows, self.cols, self.clock_mhz
        )
    }

    pub fn resources(&self) -> Result<FastResources> {
        let fam = Catalog::get().family(&self.board.family)?;
        let fmacs = self.rows * self.cols;
        let lut = fam.platform_lut + LUT_PER_FMAC * fmacs as u32;
        let ff = fam.platform_ff + FF_PER_FMAC * fmacs as u32;
        // fp32 scaling of the outputs as in 002's fixed-to-float stage.
        let dsp = fam.platform_dsp + crate::resources::FIXED_TO_FLOAT_DSP;
        let bram36 =
            fam.platform_bram36 as f64 + (BRAM36_PER_BANK * (self.rows + self.cols) as u32) as f64;
        let b = &self.board;
        Ok(FastResources {
            fmacs,
            lut,
            ff,
            dsp,
            bram36,
            lut_frac: lut as f64 / b.lut as f64,
            ff_frac: ff as f64 / b.ff as f64,
            dsp_frac: dsp as f64 / b.dsp as f64,
            bram_frac: bram36 / b.bram36 as f64,
        })
    }

    /// One GEMM with `a`-bit A and `b`-bit B mantissas, per-tile timing (see the module docs).
    pub fn gemm_cost(&self, d: GemmDims, a: u32, b: u32) -> FastCost {
        self.gemm_cost_timed(d, a, b, Timing::PerTile)
    }

    /// One GEMM under `timing`.
    pub fn gemm_cost_timed(&self, d: GemmDims, a: u32, b: u32, timing: Timing) -> FastCost {
        if d.m == 0 || d.n == 0 || d.k == 0 {
            return FastCost::default();
        }
        let p = passes(a, b);
        let groups = d.k.div_ceil(GROUP) as u64;
        let tiles = (d.m.div_ceil(self.rows) * d.n.div_ceil(self.cols)) as u64;
        let fill = (self.rows + self.cols - 2) as u64;
        let cycles = match timing {
            Timing::PerTile => tiles * (groups * p + fill),
            Timing::Overlapped => {
                (tiles - 1) * (groups * p).max(self.rows as u64) + groups * p + fill
            }
        };
        FastCost {
            cycles,
            passes: (d.m * d.n) as u64 * groups * p,
        }
    }

    pub fn gemm_cycles(&self, d: GemmDims, a: u32, b: u32) -> u64 {
        self.gemm_cost(d, a, b).cycles
    }

    /// A layer's three training GEMMs: forward W x A, dX with E x W, dW with E x A
    /// (per-tile timing).
    pub fn layer_cost(&self, g: &TrainingGemms, w: OperandWidths) -> FastCost {
        self.layer_cost_timed(g, w, Timing::PerTile)
    }

    /// A layer's three training GEMMs under `timing`.
    pub fn layer_cost_timed(&self, g: &TrainingGemms, w: OperandWidths, t: Timing) -> FastCost {
        let mut c = self.gemm_cost_timed(g.forward, w.weights, w.acts, t);
        if let Some(dx) = g.dx {
            c += self.gemm_cost_timed(dx, w.weights, w.errors, t);
        }
        c += self.gemm_cost_timed(g.dw, w.errors, w.acts, t);
        c
    }

    pub fn seconds(&self, cycles: u64) -> f64 {
        cycles as f64 / (self.clock_mhz * 1e6)
    }

    pub fn joules(&self, c: FastCost) -> f64 {
        c.passes as f64 * PJ_PER_PASS * 1e-12
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_follow_the_chunks() {
        assert_eq!(passes(4, 2), 2);
        assert_eq!(passes(2, 2), 1);
        assert_eq!(passes(8, 8), 16);
        assert_eq!(passes(4, 4), 4);
        assert_eq!(passes(6, 8), 12);
        assert_eq!(passes(3, 2), 2, "an odd width costs its next chunk");
        assert_eq!(passes(FP32_WIDTH, FP32_WIDTH), 144);
    }

    #[test]
    fn gemm_cycles_by_hand() {
        let d = FastDesign::new("zcu111", 4, 4, 100.0).unwrap();
        // 4x4 outputs, k = 16: one tile, one group, fill/drain 6.
        let g = GemmDims { m: 4, k: 16, n: 4 };
        assert_eq!(d.gemm_cycles(g, 2, 2), 1 + 6);
        assert_eq!(d.gemm_cycles(g, 8, 8), 16 + 6);
        assert_eq!(d.gemm_cycles(g, 4, 2), 2 + 6);
        // m = 5 (two row tiles), n = 9 (three column tiles), k = 33 (three groups, the last
        // short): 6 tiles x (3 x 4 passes + 6)
        let g = GemmDims { m: 5, k: 33, n: 9 };
        assert_eq!(d.gemm_cycles(g, 4, 4), 6 * (3 * 4 + 6));
        let c = d.gemm_cost(g, 4, 4);
        assert_eq!(c.passes, 5 * 9 * 3 * 4);
        assert_eq!(d.gemm_cycles(GemmDims { m: 0, k: 3, n: 3 }, 8, 8), 0);
        assert!((d.seconds(100) - 1e-6).abs() < 1e-18);
    }

    #[test]
    fn a_layer_costs_its_three_gemms() {
        let d = FastDesign::new("zcu111", 2, 2, 100.0).unwrap();
        // linear 3 -> 2 at batch 2: forward 2x3 by 3x2, dX 3x2 by 2x2, dW 2x2 by 2x3.
        let g = TrainingGemms::new(2, 3, 1, 2, false);
        let w = OperandWidths {
            weights: 4,
            acts: 2,
            errors: 8,
        };
        // forward: 1 tile x (1 group x 2 passes + 2); dX: 2 tiles x (1 x 8 + 2);
        // dW: 2 tiles x (1 x 4 + 2)
        assert_eq!(d.layer_cost(&g, w).cycles, 4 + 20 + 12);
        let first = TrainingGemms::new(2, 3, 1, 2, true);
        assert_eq!(d.layer_cost(&first, w).cycles, 4 + 12);
    }

    #[test]
    fn overlapped_timing_by_hand() {
        let d = FastDesign::new("zcu111", 4, 4, 100.0).unwrap();
        let t = Timing::Overlapped;
        // one tile, one group: as per-tile, 1 pass + fill/drain 6
        let g = GemmDims { m: 4, k: 16, n: 4 };
        assert_eq!(d.gemm_cost_timed(g, 2, 2, t).cycles, 1 + 6);
        assert_eq!(d.gemm_cost_timed(g, 8, 8, t).cycles, 16 + 6);
        // 5 tiles x max(3 groups x 4 passes, 4 rows) + the last's 12 + 6 (per-tile: 6 x 18)
        let g = GemmDims { m: 5, k: 33, n: 9 };
        assert_eq!(d.gemm_cost_timed(g, 4, 4, t).cycles, 5 * 12 + 12 + 6);
        // 5 tiles x max(3 groups x 1 pass, 4 rows) + 3 + 6
        assert_eq!(d.gemm_cost_timed(g, 2, 2, t).cycles, 5 * 4 + 3 + 6);
        assert!(d.gemm_cost_timed(g, 2, 2, t).cycles < d.gemm_cycles(g, 2, 2));
        // the passes (energy) do not depend on the timing
        assert_eq!(
            d.gemm_cost_timed(g, 4, 4, t).passes,
            d.gemm_cost(g, 4, 4).passes
        );
        // the linear layer of `a_layer_costs_its_three_gemms` on a 2 x 2 array: forward
        // 1 tile, 2 + 2; dX 2 tiles, max(8, 2) + 8 + 2; dW 2 tiles, max(4, 2) + 4 + 2
        let d = FastDesign::new("zcu111", 2, 2, 100.0).unwrap();
        let w = OperandWidths {
            weights: 4,
            acts: 2,
            errors: 8,
        };
        let g = TrainingGemms::new(2, 3, 1, 2, false);
        assert_eq!(d.layer_cost_timed(&g, w, t).cycles, 4 + 18 + 10);
        let first = TrainingGemms::new(2, 3, 1, 2, true);
        assert_eq!(d.layer_cost_timed(&first, w, t).cycles, 4 + 10);
        assert_eq!("overlapped".parse::<Timing>().unwrap(), t);
        let e = "overlap".parse::<Timing>().unwrap_err().to_string();
        assert!(e.contains("per-tile or overlapped"), "{e}");
    }

    #[test]
    fn the_catalogue_lists_fitting_designs() {
        let z: Vec<String> = FastDesign::catalogued("zcu111")
            .unwrap()
            .iter()
            .map(|d| d.spec())
            .collect();
        assert_eq!(z[0], "fast:zcu111-16x16@200");
        assert!(z.len() <= 2, "{z:?}");
        for b in ["zcu111", "pynq-z1"] {
            let v = FastDesign::catalogued(b).unwrap();
            assert!(!v.is_empty(), "{b}");
            for d in &v {
                let r = d.resources().unwrap();
                assert!(r.lut_frac <= 1.0 && r.bram_frac <= 1.0 && r.ff_frac <= 1.0);
            }
        }
        assert!(FastDesign::catalogued("nope").is_err());
    }

    #[test]
    fn designs_are_checked() {
        let r = FastDesign::reference().resources().unwrap();
        assert_eq!(r.fmacs, 256);
        assert!(r.lut_frac < 1.0 && r.ff_frac < 1.0);
        assert!(FastDesign::new("zcu111", 0, 4, 100.0).is_err());
        assert!(FastDesign::new("zcu111", 4, 4, f64::NAN).is_err());
        let e = FastDesign::new("pynq-z1", 64, 64, 100.0).unwrap_err();
        assert!(e.to_string().contains("LUTs"), "{e}");
        assert!(FastDesign::new("nope", 4, 4, 100.0).is_err());
    }
}
