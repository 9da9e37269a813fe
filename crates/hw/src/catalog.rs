//! The board and design catalogue, embedded from `data/catalog.toml`.

use crate::{HwError, Result};
use serde::Deserialize;
use std::sync::OnceLock;

const CATALOG_TOML: &str = include_str!("../data/catalog.toml");

/// A Zynq board: programmable-logic totals, processor and memory system.
#[derive(Clone, Debug, Deserialize)]
pub struct Board {
    pub id: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    pub name: String,
    pub part: String,
    pub family: String,
    pub bram36: u32,
    pub dsp: u32,
    pub lut: u32,
    pub ff: u32,
    pub processor: String,
    pub cpu_mhz: f64,
    pub dram_gbytes_per_s: f64,
    pub axi_bytes_per_cycle: u32,
    pub dsp_peak_mhz: f64,
    pub dsp_macs_per_cycle: u32,
    pub default_clock_mhz: f64,
}

impl Board {
    /// DRAM bandwidth in bytes per second.
    pub fn dram_bytes_per_s(&self) -> f64 {
        self.dram_gbytes_per_s * 1e9
    }
    /// Peak 8-bit MAC/s if every DSP did `dsp_macs_per_cycle` MACs at `dsp_peak_mhz`.
    pub fn dsp_peak_macs(&self) -> f64 {
        self.dsp as f64 * self.dsp_macs_per_cycle as f64 * self.dsp_peak_mhz * 1e6
    }
}

/// Fitted platform constants of one device family (see the catalogue's comments).
#[derive(Clone, Debug, Deserialize)]
pub struct Family {
    pub id: String,
    pub platform_bram36: u32,
    pub platform_dsp: u32,
    pub platform_lut: u32,
    pub platform_ff: u32,
    pub fitted_from: String,
}

/// One design of paper 002 (Tables III / IV) with its reported utilisation.
#[derive(Clone, Debug, Deserialize)]
pub struct CatalogDesign {
    pub board: String,
    pub n: u32,
    pub a_rows: u32,
    pub a_cols: u32,
    pub clock_mhz: f64,
    pub table: String,
    pub paper_bram36: u32,
    pub paper_lut: u32,
    pub paper_dsp: u32,
    pub paper_ff: u32,
}

/// An Intel FPGA for the paper-001 projection.
#[derive(Clone, Debug, Deserialize)]
pub struct IntelDevice {
    pub id: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    pub name: String,
    pub alms: u32,
    pub dsp: u32,
    pub m20k: u32,
    pub fmax_mhz: f64,
    pub source: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Catalog {
    pub board: Vec<Board>,
    pub family: Vec<Family>,
    pub design: Vec<CatalogDesign>,
    pub intel: Vec<IntelDevice>,
}

fn matches(id: &str, aliases: &[String], name: &str) -> bool {
    let n = name.trim().to_ascii_lowercase();
    id == n || aliases.contains(&n)
}

impl Catalog {
    /// Parses a catalogue from TOML text and checks its cross references.
    pub fn parse(text: &str) -> Result<Self> {
        let cat: Catalog =
            toml::from_str(text).map_err(|e| HwError::Catalog(format!("catalog.toml: {e}")))?;
        for b in &cat.board {
            if !cat.family.iter().any(|f| f.id == b.family) {
                return Err(HwError::Catalog(format!(
                    "board '{}' names unknown family '{}'",
                    b.id, b.family
                )));
            }
        }
        for d in &cat.design {
            if !cat.board.iter().any(|b| b.id == d.board) {
                return Err(HwError::Catalog(format!(
                    "design {}x{} names unknown board '{}'",
                    d.n, d.n, d.board
                )));
            }
        }
        Ok(cat)
    }

    /// The catalogue embedded in the crate.
    pub fn get() -> &'static Catalog {
        static CAT: OnceLock<Catalog> = OnceLock::new();
        CAT.get_or_init(|| Catalog::parse(CATALOG_TOML).expect("embedded catalog.toml is valid"))
    }

    pub fn board(&self, name: &str) -> Result<&Board> {
        self.board
            .iter()
            .find(|b| matches(&b.id, &b.aliases, name))
            .ok_or_else(|| HwError::Unknown {
                what: "board",
                name: name.to_string(),
                known: self
                    .board
                    .iter()
                    .map(|b| b.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    pub fn family(&self, id: &str) -> Result<&Family> {
        self.family
            .iter()
            .find(|f| f.id == id)
            .ok_or_else(|| HwError::Catalog(format!("unknown family '{id}'")))
    }

    pub fn intel(&self, name: &str) -> Result<&IntelDevice> {
        self.intel
            .iter()
            .find(|d| matches(&d.id, &d.aliases, name))
            .ok_or_else(|| HwError::Unknown {
                what: "Intel device",
                name: name.to_string(),
                known: self
                    .intel
                    .iter()
                    .map(|d| d.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Paper designs on one board.
    pub fn designs_on(&self, board_id: &str) -> Vec<&CatalogDesign> {
        self.design.iter().filter(|d| d.board == board_id).collect()
    }
}
