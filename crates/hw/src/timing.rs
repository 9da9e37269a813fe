//! Time per training iteration on a board (paper 002, Table VI), FPGA-accelerated versus
//! processor only.
//!
//! FPGA path = PE-array time from the simulator's cycle model (every GEMM of Algorithm 1 is
//! planned and timed call by call: preload, DMA of B rows and C, stalls, drain; weights stay
//! resident across the per-example calls of a layer) + the processor's share:
//! stochastic-rounding quantisation of activations and deltas, im2col / col2im, `dW += C`,
//! elementwise float work (activation, pooling), the per-iteration weight update and
//! re-quantisation, and a driver overhead per accelerator call.
//! Processor-only path = float GEMM MACs + elementwise work + the fp32 weight update.
//!
//! Per-element processor costs are given for the Cortex-A53 of the ZCU111; the Cortex-A9 of the
//! Pynq-Z1 is one scale factor slower. Which costs are FITTED (by [`calibrate`], solving the
//! model's linear equations exactly) and against which Table VI entries:
//! - `mac_s`, `update_s`: A53 float, VGG16 batch 1 and 128;
//! - `a9_factor`: A9 float, LogReg batch 128;
//! - `a9_sw_factor`: Pynq-Z1 FPGA, LogReg batch 128;
//! - `quant_s`, `layout_s`, `weight_quant_s`: ZCU111 FPGA, LogReg batch 128 and VGG16 batch 1
//!   and 128.
//!
//! ASSUMED (not fitted): `elem_s` = 3 ns per elementwise float op, `acc_s` = 5 ns per `dW += C`
//! element (12 bytes of streaming traffic at about 2.4 GB/s), `call_s` = 20 us per
//! accelerator call (driver and DMA set-up), the clocks of 002 Section IV-C (Pynq-Z1 8x8 at
//! 100 MHz, ZCU111 32x32 at 180 MHz) and the AXI port widths of the catalogue. All other
//! Table VI entries are predictions.

use crate::design::ArrayDesign;
use crate::networks::{self, GemmOp, Layer, Network, Pass};
use crate::sim::{CoreConfig, GemmShape, ReadOrder, SimCounters};
use crate::{HwError, Result};
use lowprec_kernels::types::k_safe;
use std::sync::OnceLock;

/// Per-element processor costs in seconds on the Cortex-A53 (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct CpuCosts {
    /// fp32 GEMM, per MAC (Darknet's GEMM on the processor).
    pub mac_s: f64,
    /// fp32 SGD update, per parameter per iteration.
    pub update_s: f64,
    /// Elementwise float work (activation, pooling), per element.
    pub elem_s: f64,
    /// Stochastic-rounding BFP quantisation, per element.
    pub quant_s: f64,
    /// im2col / col2im, per element.
    pub layout_s: f64,
    /// `dW += C`, per element.
    pub acc_s: f64,
    /// FPGA path: per parameter per iteration (fp32 update + weight re-quantisation + copy
    /// into contiguous memory).
    pub weight_quant_s: f64,
    /// Driver overhead per accelerator call.
    pub call_s: f64,
}

/// Calibrated processor costs.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Calibration {
    pub a53: CpuCosts,
    /// How many times slower the Cortex-A9 is than the A53 on float (processor-only) work.
    pub a9_factor: f64,
    /// How many times slower the Cortex-A9 is on the FPGA path's scalar software.
    pub a9_sw_factor: f64,
}

impl Calibration {
    /// Slow-down factor of a board's processor relative to the A53 for processor-only work.
    pub fn factor(&self, board_family: &str) -> f64 {
        if board_family == "zynq7" {
            self.a9_factor
        } else {
            1.0
        }
    }
    /// Slow-down factor for the FPGA path's software share.
    pub fn sw_factor(&self, board_family: &str) -> f64 {
        if board_family == "zynq7" {
            self.a9_sw_factor
        } else {
            1.0
        }
    }
}

/// Processor work of one iteration, in elements.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct SoftwareWork {
    pub quantised: u64,
    pub layout: u64,
    pub accumulated: u64,
    pub elementwise: u64,
    pub params: u64,
}

/// The processor-side work of one training iteration of `net` at `batch` on the FPGA path.
pub fn software_work(net: &Network, batch: usize) -> SoftwareWork {
    let b = batch as u64;
    let first = net.layers.iter().position(Layer::is_compute);
    let mut w = SoftwareWork {
        params: net.params() as u64,
        ..Default::default()
    };
    for (li, l) in net.layers.iter().enumerate() {
        w.elementwise += 2 * b * l.outputs() as u64;
        if l.is_compute() {
            w.quantised += b * (l.inputs() + l.outputs()) as u64;
        }
        match l {
            Layer::Conv { .. } => {
                let im = l.im2col_elems() as u64;
                // im2col forward, im2col of the transposed input for dW, col2im of dX.
                w.layout += b * im * if Some(li) == first { 2 } else { 3 };
                w.accumulated += b * l.params() as u64;
            }
            Layer::Fc { .. } => w.accumulated += l.params() as u64,
            _ => {}
        }
    }
    w
}

/// Timing of one GEMM op of an iteration on the core.
#[derive(Clone, Debug, serde::Serialize)]
pub struct OpTiming {
    pub op: GemmOp,
    pub counters: SimCounters,
    pub seconds: f64,
}

/// Simulated core counters of one op, repeated `op.repeat` times. A layer's weights stay
/// resident across its per-example forward and data-gradient calls; the weight-gradient A
/// (one example's error) changes every call.
pub fn op_counters(cfg: &CoreConfig, op: &GemmOp) -> SimCounters {
    let order = if op.transposed {
        ReadOrder::ColMajor
    } else {
        ReadOrder::RowMajor
    };
    let plan = cfg.plan(
        GemmShape {
            m: op.m,
            k: op.k,
            n: op.n,
            segment: op.segment,
            k_safe: k_safe(127, 127),
            accumulate: false,
        },
        order,
    );
    let first = cfg.time_plan(&plan);
    let mut total = first;
    if op.repeat > 1 {
        let shared_a = op.pass != Pass::WeightGrad && plan.calls.len() == 1;
        let later = if shared_a {
            let mut c = cfg.time_call(&plan.calls[0], op.n, true);
            c.gemm_calls = 1;
            c
        } else {
            first
        };
        total.add(&later.scaled(op.repeat as u64 - 1));
    }
    total
}

/// Breakdown of one FPGA-accelerated training iteration.
#[derive(Clone, Debug, serde::Serialize)]
pub struct IterationEstimate {
    pub network: String,
    pub design: String,
    pub batch: usize,
    pub core: SimCounters,
    pub core_s: f64,
    pub calls_s: f64,
    pub quant_s: f64,
    pub layout_s: f64,
    pub acc_s: f64,
    pub elem_s: f64,
    pub weights_s: f64,
    pub fpga_total_s: f64,
    pub cpu_only_s: f64,
    pub ops: Vec<OpTiming>,
}

impl IterationEstimate {
    pub fn speedup(&self) -> f64 {
        self.cpu_only_s / self.fpga_total_s
    }
}

/// Processor-only (fp32) time of one iteration on a processor `factor` times slower than
/// the A53.
pub fn cpu_iteration_s(net: &Network, batch: usize, c: &CpuCosts, factor: f64) -> f64 {
    let w = software_work(net, batch);
    factor
        * (net.train_macs(batch) as f64 * c.mac_s
            + w.params as f64 * c.update_s
            + w.elementwise as f64 * c.elem_s)
}

/// FPGA-path estimate with explicit costs.
pub fn fpga_iteration_with(
    net: &Network,
    batch: usize,
    design: &ArrayDesign,
    cal: &Calibration,
) -> IterationEstimate {
    let cfg = CoreConfig {
        n: design.n,
        a_rows: design.a_rows,
        a_cols: design.a_cols,
        clock_hz: design.clock_hz(),
        dma_bytes_per_s: design.dma_bytes_per_s(),
    };
    let f = cal.sw_factor(&design.board.family);
    let c = &cal.a53;
    let mut core = SimCounters::default();
    let mut ops = Vec::new();
    for op in net.gemms(batch) {
        let ct = op_counters(&cfg, &op);
        core.add(&ct);
        ops.push(OpTiming {
            op,
            counters: ct,
            seconds: ct.total_cycles as f64 / cfg.clock_hz,
        });
    }
    let w = software_work(net, batch);
    let core_s = core.total_cycles as f64 / cfg.clock_hz;
    let calls_s = f * core.core_calls as f64 * c.call_s;
    let quant_s = f * w.quantised as f64 * c.quant_s;
    let layout_s = f * w.layout as f64 * c.layout_s;
    let acc_s = f * w.accumulated as f64 * c.acc_s;
    let elem_s = f * w.elementwise as f64 * c.elem_s;
    let weights_s = f * w.params as f64 * c.weight_quant_s;
    IterationEstimate {
        network: net.id.clone(),
        design: design.spec(),
        batch,
        core,
        core_s,
        calls_s,
        quant_s,
        layout_s,
        acc_s,
        elem_s,
        weights_s,
        fpga_total_s: core_s + calls_s + quant_s + layout_s + acc_s + elem_s + weights_s,
        cpu_only_s: cpu_iteration_s(net, batch, c, cal.factor(&design.board.family)),
        ops,
    }
}

/// Paper 002 Table VI (seconds per iteration): network, batch, board, processor, FPGA.
pub const TABLE_VI: [(&str, usize, &str, f64, f64); 7] = [
    ("vgg16", 1, "zcu111", 5.6, 1.58),
    ("vgg16", 32, "zcu111", 172.0, 9.89),
    ("vgg16", 128, "zcu111", 680.0, 38.6),
    ("logreg", 128, "pynq-z1", 0.0401, 0.0084),
    ("logreg", 256, "pynq-z1", 0.0824, 0.0149),
    ("logreg", 128, "zcu111", 0.0121, 0.0031),
    ("logreg", 256, "zcu111", 0.0247, 0.0057),
];

/// The design and clock 002 used for Table VI on a board (Section IV-C).
pub fn table_vi_design(board: &str) -> Result<ArrayDesign> {
    match board {
        "zcu111" => ArrayDesign::new("zcu111", 32, 672, 6080, 180.0),
        "pynq-z1" => ArrayDesign::new("pynq-z1", 8, 168, 1520, 100.0),
        other => ArrayDesign::paper_design(other, 32),
    }
}

/// Assumed (not fitted) costs.
pub const ASSUMED_ELEM_S: f64 = 3e-9;
pub const ASSUMED_ACC_S: f64 = 5e-9;
pub const ASSUMED_CALL_S: f64 = 20e-6;

fn solve3(a: [[f64; 3]; 3], y: [f64; 3]) -> Option<[f64; 3]> {
    let det = |m: [[f64; 3]; 3]| {
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    };
    let d = det(a);
    if d.abs() < 1e-300 || !d.is_finite() {
        return None;
    }
    let mut out = [0.0; 3];
    for (j, o) in out.iter_mut().enumerate() {
        let mut m = a;
        for i in 0..3 {
            m[i][j] = y[i];
        }
        *o = det(m) / d;
    }
    Some(out)
}

fn paper_row(net: &str, batch: usize, board: &str) -> (f64, f64) {
    TABLE_VI
        .iter()
        .find(|r| r.0 == net && r.1 == batch && r.2 == board)
        .map(|r| (r.3, r.4))
        .expect("row of TABLE_VI")
}

/// Fits the costs marked FITTED in the module docs to Table VI (exact solves).
pub fn calibrate() -> Result<Calibration> {
    let vgg = networks::get("vgg16")?;
    let lr = networks::get("logreg")?;
    let mut c = CpuCosts {
        mac_s: 0.0,
        update_s: 0.0,
        elem_s: ASSUMED_ELEM_S,
        quant_s: 0.0,
        layout_s: 0.0,
        acc_s: ASSUMED_ACC_S,
        weight_quant_s: 0.0,
        call_s: ASSUMED_CALL_S,
    };
    // Processor only, A53: t - elementwise = mac * MACs + update * P at batch 1 and 128.
    let eq = |b: usize| {
        let w = software_work(vgg, b);
        let t = paper_row("vgg16", b, "zcu111").0 - w.elementwise as f64 * c.elem_s;
        (vgg.train_macs(b) as f64, w.params as f64, t)
    };
    let (m1, p1, t1) = eq(1);
    let (m2, p2, t2) = eq(128);
    let det = m1 * p2 - m2 * p1;
    c.mac_s = (t1 * p2 - t2 * p1) / det;
    c.update_s = (m1 * t2 - m2 * t1) / det;
    let a9_factor = paper_row("logreg", 128, "pynq-z1").0 / cpu_iteration_s(lr, 128, &c, 1.0);

    // FPGA path: linear in (quant, layout, weight_quant); three equations.
    let zcu = table_vi_design("zcu111")?;
    let probe = |c: &CpuCosts, net: &Network, b: usize| {
        fpga_iteration_with(
            net,
            b,
            &zcu,
            &Calibration {
                a53: *c,
                a9_factor,
                a9_sw_factor: 1.0,
            },
        )
        .fpga_total_s
    };
    let rows: [(&Network, usize, &str); 3] =
        [(lr, 128, "logreg"), (vgg, 1, "vgg16"), (vgg, 128, "vgg16")];
    let mut a = [[0.0; 3]; 3];
    let mut y = [0.0; 3];
    for (i, &(net, b, id)) in rows.iter().enumerate() {
        let base = probe(&c, net, b);
        for (j, coef) in a[i].iter_mut().enumerate() {
            let mut cj = c;
            match j {
                0 => cj.quant_s = 1e-9,
                1 => cj.layout_s = 1e-9,
                _ => cj.weight_quant_s = 1e-9,
            }
            *coef = (probe(&cj, net, b) - base) / 1e-9;
        }
        y[i] = paper_row(id, b, "zcu111").1 - base;
    }
    let x = solve3(a, y)
        .ok_or_else(|| HwError::Catalog("Table VI calibration system is singular".into()))?;
    c.quant_s = x[0];
    c.layout_s = x[1];
    c.weight_quant_s = x[2];
    // Pynq-Z1 FPGA path: core time + a9_sw_factor * (software seconds on the A53).
    let pynq = table_vi_design("pynq-z1")?;
    let one = Calibration {
        a53: c,
        a9_factor,
        a9_sw_factor: 1.0,
    };
    let e = fpga_iteration_with(lr, 128, &pynq, &one);
    let a9_sw_factor =
        (paper_row("logreg", 128, "pynq-z1").1 - e.core_s) / (e.fpga_total_s - e.core_s);
    let all = [
        a9_sw_factor,
        c.mac_s,
        c.update_s,
        c.quant_s,
        c.layout_s,
        c.weight_quant_s,
        a9_factor,
    ];
    if all.iter().any(|v| !v.is_finite() || *v <= 0.0) {
        return Err(HwError::Catalog(format!(
            "Table VI calibration gave a non-positive cost: {c:?}, A9 factors {a9_factor}, {a9_sw_factor}"
        )));
    }
    Ok(Calibration {
        a53: c,
        a9_factor,
        a9_sw_factor,
    })
}

/// The calibration, computed once.
pub fn calibration() -> Result<&'static Calibration> {
    static CAL: OnceLock<std::result::Result<Calibration, String>> = OnceLock::new();
    CAL.get_or_init(|| calibrate().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| HwError::Catalog(e.clone()))
}

/// FPGA-path estimate with the calibrated costs.
/// The largest batch the timing model accepts: the model counts every GEMM tile, so its cost
/// grows with the batch, and a million examples per iteration is beyond any board modelled.
pub const MAX_BATCH: usize = 1 << 20;

pub fn fpga_iteration(
    net: &Network,
    batch: usize,
    design: &ArrayDesign,
) -> Result<IterationEstimate> {
    if batch == 0 || batch > MAX_BATCH {
        return Err(HwError::InvalidArgument(format!(
            "batch must be between 1 and {MAX_BATCH}, got {batch}"
        )));
    }
    Ok(fpga_iteration_with(net, batch, design, calibration()?))
}
