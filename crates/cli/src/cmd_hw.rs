//! `lowprec hw ...`: the accelerator model of paper 002 (boards, estimates, roofline, tables,
//! simulator throughput) and paper 001's ternary/binary projections.

use anyhow::{bail, Context};
use clap::Subcommand;
use lowprec_hw::design::ArrayDesign;
use lowprec_hw::{catalog::Catalog, memory, networks, projection, roofline, tables, timing};
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug, Clone)]
pub enum HwCommand {
    /// List the boards, the paper's designs (002 and FAST's fMAC arrays) and the Intel devices
    /// of the catalogue.
    Boards,
    /// Resources, network fit, per-layer cycles, time per iteration and memory of a design.
    Estimate {
        /// Board id (pynq-z1, zcu111).
        #[arg(long)]
        board: String,
        /// PE array, e.g. 32x32.
        #[arg(long)]
        array: String,
        /// On-chip A capacity ROWSxCOLS; default: the paper's largest design for the board.
        #[arg(long)]
        amax: Option<String>,
        /// Clock in MHz; default: the paper design's clock (or the board default).
        #[arg(long)]
        clock: Option<f64>,
        /// Network preset (vgg16, logreg, rf-autoencoder, preresnet20).
        #[arg(long, default_value = "vgg16")]
        preset: String,
        /// Batch size.
        #[arg(long, default_value_t = 128)]
        batch: usize,
        /// Also write the estimate as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Roofline of a network's GEMMs (paper 002 Fig. 5), optionally as a PNG.
    Roofline {
        /// Design spec board-NxN[-RxC][@MHz]; Fig. 5 is a 32x32 array at 200 MHz.
        #[arg(long, default_value = "zcu111-32x32-672x6080@200")]
        design: String,
        #[arg(long, default_value = "vgg16")]
        preset: String,
        /// Memory bandwidth in GB/s (default: the board's, 10 GB/s on the ZCU111).
        #[arg(long)]
        bandwidth_gbs: Option<f64>,
        /// Write the plot here (PNG).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Regenerate Tables II, III, IV and VI (002) and the 001 figures beside the papers' numbers.
    Tables {
        /// Also write the rows as JSON (table, row, quantity, paper, model, rel_error, ...).
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Paper-001 projection (ternary/binary weights, low-bit activations) and paper-004 fMAC.
    Project {
        /// Intel device (arria10, stratix10).
        #[arg(long, default_value = "stratix10")]
        device: String,
        /// Weight width: ternary, binary, int8 or a bit count.
        #[arg(long, default_value = "ternary")]
        weights: String,
        /// Activation width in bits (1 = binary).
        #[arg(long, default_value_t = 2)]
        acts: u32,
        /// Network preset (alexnet, resnet34, vgg16, preresnet20, ...).
        #[arg(long, default_value = "resnet34")]
        network: String,
    },
    /// Measure the simulator's speed (simulated MACs per second) on VGG16 layer-8 GEMMs.
    Simbench {
        /// Backend spec, e.g. zcu111-32x32.
        #[arg(long, default_value = "zcu111-32x32")]
        backend: String,
        #[arg(long, default_value_t = 3)]
        reps: usize,
    },
}

fn parse_nxn(s: &str, what: &str) -> anyhow::Result<(usize, usize)> {
    let (a, b) = s
        .split_once(['x', 'X'])
        .with_context(|| format!("{what} '{s}' is not of the form AxB"))?;
    Ok((
        a.trim().parse().with_context(|| format!("{what} '{s}'"))?,
        b.trim().parse().with_context(|| format!("{what} '{s}'"))?,
    ))
}

fn write_json<T: serde::Serialize>(path: &Path, v: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(v)?;
    lowprec_hw::write_atomic(path, text.as_bytes())?;
    println!("wrote {}", path.display());
    Ok(())
}

pub fn run(cmd: &HwCommand) -> anyhow::Result<()> {
    match cmd {
        HwCommand::Boards => boards(),
        HwCommand::Estimate {
            board,
            array,
            amax,
            clock,
            preset,
            batch,
            json,
        } => estimate(
            board,
            array,
            amax.as_deref(),
            *clock,
            preset,
            *batch,
            json.as_deref(),
        ),
        HwCommand::Roofline {
            design,
            preset,
            bandwidth_gbs,
            out,
        } => {
            let d = ArrayDesign::from_spec(design)?;
            let net = networks::get(preset)?;
            let bw = bandwidth_gbs
                .map(|g| g * 1e9)
                .unwrap_or(d.board.dram_bytes_per_s());
            let r = roofline::roofline(net, &d, bw)?;
            println!(
                "{}: array roof {:.1} GMAC/s, DSP roof {:.2} TMAC/s, memory {:.1} GB/s",
                r.design,
                r.compute_peak / 1e9,
                r.dsp_peak / 1e12,
                r.bandwidth / 1e9
            );
            for (t, p) in &r.tile_roofs {
                println!("  tile x{t}: {:.1} GMAC/s", p / 1e9);
            }
            println!(
                "{:<32} {:>10} {:>14} {:>14} {:>14}",
                "GEMM (M x K x N)", "intensity", "memory roof", "attainable", "simulated"
            );
            for p in &r.points {
                println!(
                    "{:<32} {:>10.0} {:>11.1} G/s {:>11.1} G/s {:>11.1} G/s",
                    p.label,
                    p.intensity,
                    r.memory_roof(p.intensity) / 1e9,
                    p.attainable / 1e9,
                    p.simulated / 1e9
                );
            }
            if let Some(path) = out {
                roofline::plot_png(&r, path)?;
                println!("wrote {}", path.display());
            }
            Ok(())
        }
        HwCommand::Tables { json } => {
            let rows = tables::all()?;
            print!("{}", tables::render(&rows));
            println!("\npaper 001 projections (first and last layers at 8 bits on the DSPs; efficiency fitted to the Arria 10 AlexNet point):");
            print!(
                "{}",
                tables::render_projections(&tables::projections_001()?)
            );
            let s10 = Catalog::get().intel("stratix10")?;
            println!(
                "Stratix 10 clock at which ResNet-34 ternary/a2 reaches the paper's {} TOPS, all else equal: {:.0} MHz (model: {} MHz)",
                projection::PAPER_S10_TOPS,
                projection::clock_for_tops(
                    s10,
                    networks::get("resnet34")?,
                    projection::Precision::new(2, 2)?,
                    projection::PAPER_S10_TOPS
                )?,
                s10.fmax_mhz
            );
            let cal = timing::calibration()?;
            println!("\ncalibrated processor costs (A53): {:?}", cal.a53);
            println!(
                "A9 slow-down: {:.2}x (float), {:.2}x (FPGA-path software)",
                cal.a9_factor, cal.a9_sw_factor
            );
            if let Some(p) = json {
                write_json(p, &rows)?;
            }
            Ok(())
        }
        HwCommand::Project {
            device,
            weights,
            acts,
            network,
        } => {
            let dev = Catalog::get().intel(device)?;
            let w = projection::parse_weight_bits(weights)?;
            let p = projection::Precision::new(w, *acts)?;
            let net = networks::get(network)?;
            let pr = projection::project(dev, net, p)?;
            let cost = projection::pe_cost(p);
            println!(
                "{} at {} MHz, {} {}: {:.0} images/s, {:.2} TOPS sustained ({:.1} TOPS peak of the low-bit array)",
                pr.device,
                pr.clock_mhz,
                pr.network,
                p.label(),
                pr.images_per_s,
                pr.tops,
                pr.peak_tops
            );
            println!(
                "  PE: {:.2} ALMs per MAC ({}-bit products: multiplier {:.1} + adder tree {:.2} + registers {:.2}), {:.1}% of a soft 8x8-bit PE",
                cost.total,
                cost.product_bits,
                cost.multiplier_alms,
                cost.adder_tree_alms,
                cost.register_alms,
                100.0 * pr.cost_vs_int8
            );
            println!(
                "  {:.0} soft MACs/cycle ({:.0}% of {} ALMs), {:.0} 8-bit DSP MACs/cycle for the first and last layers ({:.1}% of {:.3} G MACs/image)",
                pr.soft_macs_per_cycle,
                100.0 * projection::USABLE_ALM_FRACTION,
                dev.alms,
                pr.dsp_macs_per_cycle,
                100.0 * (1.0 - pr.low_bit_macs / pr.macs_per_image),
                pr.macs_per_image / 1e9
            );
            println!(
                "  sustained efficiency {:.3} (fitted: paper 001's Arria 10 AlexNet at {} images/s)",
                pr.efficiency,
                projection::PAPER_A10_ALEXNET_IMG_S
            );
            println!("paper 004 fMAC (2-bit chunks): throughput relative to 8x8-bit");
            for m in [2u32, 4, 6, 8] {
                println!(
                    "  {m}x{m}-bit mantissas: {} chunk products, {:.2}x",
                    projection::fmac_chunk_products(m, m)?,
                    projection::fmac_relative_throughput(m, m)?
                );
            }
            Ok(())
        }
        HwCommand::Simbench { backend, reps } => {
            let sim = lowprec_hw::FpgaSim::from_spec(backend)?;
            println!("{} ({})", lowprec_kernels_name(&sim), sim.design().spec());
            for r in lowprec_hw::bench::run(&sim, *reps)? {
                println!(
                    "{:<28} {:.3e} MACs in {:8.1} ms -> {:.2e} simulated MAC/s, {} cycles, utilisation {:.2}",
                    r.name,
                    r.macs as f64,
                    r.wall_s * 1e3,
                    r.macs_per_s,
                    r.simulated_cycles,
                    r.utilisation
                );
            }
            Ok(())
        }
    }
}

fn lowprec_kernels_name(sim: &lowprec_hw::FpgaSim) -> String {
    use lowprec_kernels::GemmBackend;
    sim.name()
}

fn boards() -> anyhow::Result<()> {
    let cat = Catalog::get();
    for b in &cat.board {
        println!(
            "{:<8} {} — {}: {} BRAM36, {} DSP, {} LUT, {} FF; {} at {} MHz; DRAM {} GB/s",
            b.id,
            b.name,
            b.part,
            b.bram36,
            b.dsp,
            b.lut,
            b.ff,
            b.processor,
            b.cpu_mhz,
            b.dram_gbytes_per_s
        );
        for d in cat.designs_on(&b.id) {
            let ad = ArrayDesign::new(
                &d.board,
                d.n as usize,
                d.a_rows as usize,
                d.a_cols as usize,
                d.clock_mhz,
            )?;
            println!(
                "    {:<28} Table {:<3} peak {:.1} GMAC/s, {} bytes per bank, 3x3 conv up to {} channels",
                ad.spec(),
                d.table,
                ad.peak_macs() / 1e9,
                ad.bank_words(),
                ad.max_conv_channels(3)
            );
        }
        for d in lowprec_hw::fast::FastDesign::catalogued(&b.id)? {
            let r = d.resources()?;
            println!(
                "    {:<28} FAST (004) {} fMACs, peak {:.1} G group-passes/s; {} LUT ({:.1}%), {} FF, {:.0} BRAM36, {} DSP",
                d.spec(),
                r.fmacs,
                d.peak_group_passes() / 1e9,
                r.lut,
                100.0 * r.lut_frac,
                r.ff,
                r.bram36,
                r.dsp
            );
        }
    }
    for d in &cat.intel {
        println!(
            "{:<18} {}: {} ALMs, {} DSP, {} M20K, {} MHz ({})",
            d.id, d.name, d.alms, d.dsp, d.m20k, d.fmax_mhz, d.source
        );
    }
    Ok(())
}

fn estimate(
    board: &str,
    array: &str,
    amax: Option<&str>,
    clock: Option<f64>,
    preset: &str,
    batch: usize,
    json: Option<&Path>,
) -> anyhow::Result<()> {
    let (n1, n2) = parse_nxn(array, "--array")?;
    if n1 != n2 {
        bail!("--array {array}: the 002 PE array is square (N x N)");
    }
    if batch == 0 || batch > lowprec_hw::timing::MAX_BATCH {
        bail!(
            "--batch must be between 1 and {}, got {batch}",
            lowprec_hw::timing::MAX_BATCH
        );
    }
    let cat = Catalog::get();
    let b = cat.board(board)?;
    let design = match amax {
        Some(s) => {
            let (r, c) = parse_nxn(s, "--amax")?;
            ArrayDesign::new(&b.id, n1, r, c, clock.unwrap_or(b.default_clock_mhz))?
        }
        None => {
            let d = ArrayDesign::paper_design(&b.id, n1)?;
            match clock {
                Some(mhz) => ArrayDesign::new(&b.id, n1, d.a_rows, d.a_cols, mhz)?,
                None => d,
            }
        }
    };
    let net = networks::get(preset)?;
    let res = design.resources()?;
    println!("design {} on {} ({})", design.spec(), b.name, b.part);
    println!(
        "resources: {:.1}/{} BRAM36, {}/{} DSP, {}/{} LUT, {}/{} FF ({} bytes per bank, {} BRAM18 per bank{})",
        res.bram36,
        b.bram36,
        res.dsp,
        b.dsp,
        res.lut,
        b.lut,
        res.ff,
        b.ff,
        res.bank_words,
        res.bram18_per_bank,
        if res.lutram_tail { ", LUTRAM tails" } else { "" }
    );
    println!(
        "largest layer in one call: 3x3 convolutions up to {} channels, 1x1 up to {}, feature maps up to {} pixels",
        design.max_conv_channels(3),
        design.max_conv_channels(1),
        design.max_feature_pixels()
    );
    let bad = net.layers_not_fitting(&design);
    println!(
        "{}: {} parameters, largest on-chip A {} bytes; {}",
        net.name,
        net.params(),
        net.largest_a(),
        if bad.is_empty() {
            "every layer fits A_max (one call per GEMM)".to_string()
        } else {
            format!("layers {bad:?} exceed A_max and run as several tiles")
        }
    );
    let est = timing::fpga_iteration(net, batch, &design)?;
    println!(
        "{:<6} {:<11} {:>6} {:>6} {:>6} {:>6} {:>12} {:>10} {:>10}",
        "layer", "pass", "M", "K", "N", "calls", "cycles", "stalls", "ms"
    );
    for op in &est.ops {
        println!(
            "{:<6} {:<11} {:>6} {:>6} {:>6} {:>6} {:>12} {:>10} {:>10.3}",
            op.op.layer,
            format!("{:?}", op.op.pass),
            op.op.m,
            op.op.k,
            op.op.n,
            op.counters.core_calls,
            op.counters.total_cycles,
            op.counters.stall_cycles,
            op.seconds * 1e3
        );
    }
    println!(
        "time per iteration at batch {batch}: FPGA path {:.4} s (array {:.4}, driver calls {:.4}, quantisation {:.4}, im2col/col2im {:.4}, dW+=C {:.4}, elementwise {:.4}, weights {:.4}); processor only {:.4} s; speed-up {:.1}x",
        est.fpga_total_s,
        est.core_s,
        est.calls_s,
        est.quant_s,
        est.layout_s,
        est.acc_s,
        est.elem_s,
        est.weights_s,
        est.cpu_only_s,
        est.speedup()
    );
    let mem = memory::training_memory(net, batch);
    println!(
        "memory (MB): float {:.1}; 8-bit malloc {:.1} + cma {:.1} = {:.1}; with SWA {:.1}",
        mem.float_total / 1e6,
        mem.int8_malloc / 1e6,
        mem.int8_cma / 1e6,
        mem.int8_total() / 1e6,
        mem.swa_total() / 1e6
    );
    if let Some(p) = json {
        write_json(
            p,
            &serde_json::json!({
                "design": design.spec(),
                "resources": res,
                "layers_not_fitting": bad,
                "iteration": est,
                "memory": mem,
            }),
        )?;
    }
    Ok(())
}
