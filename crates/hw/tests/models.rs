//! The analytic models against paper 002's tables (with the tolerances of the brief), the
//! roofline, projections, network tables and catalogue errors.

use lowprec_hw::catalog::Catalog;
use lowprec_hw::design::ArrayDesign;
use lowprec_hw::{memory, networks, projection, roofline, tables, timing};

fn check(rows: &[tables::TableRow], tol: impl Fn(&tables::TableRow) -> f64) {
    assert!(!rows.is_empty());
    for r in rows {
        assert!(r.paper > 0.0 && r.model.is_finite(), "{r:?}");
        let t = tol(r);
        assert!(
            r.rel_error.abs() <= t,
            "Table {} {} {}: model {} vs paper {} ({:+.1}% > {:.0}%)",
            r.table,
            r.row,
            r.quantity,
            r.model,
            r.paper,
            100.0 * r.rel_error,
            100.0 * t
        );
    }
}

#[test]
fn resources_reproduce_tables_iii_and_iv() {
    let rows = tables::table_iii_iv().unwrap();
    assert_eq!(rows.len(), 6 * 4);
    check(&rows, |r| match r.quantity.as_str() {
        "BRAM36" | "DSP" => 0.10,
        _ => 0.25,
    });
    // Rows not used for fitting are genuine predictions and still close.
    let predicted: Vec<_> = rows.iter().filter(|r| !r.fitted).collect();
    assert_eq!(predicted.len(), 16);
}

#[test]
fn memory_reproduces_table_ii() {
    let rows = tables::table_ii().unwrap();
    assert_eq!(rows.len(), 18);
    check(&rows, |_| 0.15);
    // SWA costs exactly the fp32 weights: 61 MB for VGG16.
    let m = memory::training_memory(networks::get("vgg16").unwrap(), 1);
    assert!((m.swa_extra / 1e6 - 61.0).abs() < 0.1, "{}", m.swa_extra);
}

#[test]
fn iteration_times_reproduce_table_vi() {
    let rows = tables::table_vi().unwrap();
    check(&rows, |_| 0.25);
    for r in rows.iter().filter(|r| r.fitted && r.quantity != "speed-up") {
        assert!(
            r.rel_error.abs() < 1e-6,
            "a fitted row must be solved exactly: {r:?}"
        );
    }
    let predicted = rows.iter().filter(|r| !r.fitted).count();
    assert!(predicted >= 8, "{predicted} predicted figures");
    // Section V is reported, not held to a tolerance: the model over-predicts the RF
    // auto-encoder's speed-up (known limitation, documented).
    let rf = tables::section_v().unwrap();
    assert!(rf[0].model.is_finite() && rf[0].model > 1.0);
    let vgg = rows
        .iter()
        .find(|r| r.row.contains("vgg16 batch 128") && r.quantity == "speed-up")
        .unwrap();
    assert!(vgg.model > 16.0 && vgg.model < 19.0, "17x: {}", vgg.model);
}

#[test]
fn iteration_time_grows_with_batch_and_core_uses_the_cycle_model() {
    let vgg = networks::get("vgg16").unwrap();
    let d = timing::table_vi_design("zcu111").unwrap();
    let e1 = timing::fpga_iteration(vgg, 1, &d).unwrap();
    let e2 = timing::fpga_iteration(vgg, 2, &d).unwrap();
    assert!(e2.fpga_total_s > e1.fpga_total_s);
    assert_eq!(e1.core.macs, vgg.train_macs(1));
    assert!(e1.core.total_cycles >= e1.core.array_cycles);
    assert!(timing::fpga_iteration(vgg, 0, &d).is_err());
}

#[test]
fn network_fit_follows_a_max() {
    let vgg = networks::get("vgg16").unwrap();
    // 512 x 4608 weights: fit 672/6080, not 480/4160 (512 rows) nor the Pynq-Z1 designs.
    let big = ArrayDesign::new("zcu111", 32, 672, 6080, 181.0).unwrap();
    let small = ArrayDesign::new("zcu111", 32, 480, 4160, 246.0).unwrap();
    let pynq = ArrayDesign::paper_design("pynq-z1", 8).unwrap();
    assert!(vgg.layers_not_fitting(&big).is_empty());
    assert_eq!(big.max_conv_channels(3), 672);
    assert_eq!(
        ArrayDesign::paper_design("pynq-z1", 8)
            .unwrap()
            .max_conv_channels(3),
        168
    );
    assert!(!vgg.layers_not_fitting(&small).is_empty());
    assert!(!vgg.layers_not_fitting(&pynq).is_empty());
    assert_eq!(vgg.largest_a(), 512 * 512 * 9);
    let lr = networks::get("logreg").unwrap();
    assert!(lr.layers_not_fitting(&pynq).is_empty());
}

#[test]
fn network_tables_have_the_expected_sizes() {
    let vgg = networks::get("vgg16").unwrap();
    assert_eq!(vgg.params(), 15_239_872);
    // Convolutions 313,196,544 MACs + classifier 512*512*2 + 512*10.
    assert_eq!(vgg.macs(), 313_196_544 + 529_408);
    let convs = vgg
        .layers
        .iter()
        .filter(|l| matches!(l, networks::Layer::Conv { .. }))
        .count();
    assert_eq!(convs, 13);
    assert_eq!(networks::get("logreg").unwrap().params(), 7840);
    assert_eq!(
        networks::get("rf-autoencoder").unwrap().params(),
        32 * 16 + 16 * 8 + 8 * 16 + 16 * 32
    );
    let prn = networks::get("preresnet20").unwrap();
    assert!(
        prn.params() > 260_000 && prn.params() < 280_000,
        "{}",
        prn.params()
    );
    // Paper 001's networks: AlexNet 724.4 M MACs (grouped convolutions), ResNet-34 3.66 G.
    let alex = networks::get("alexnet").unwrap();
    assert_eq!(alex.macs(), 665_784_864 + 58_621_952);
    let r34 = networks::get("resnet34").unwrap();
    assert!(
        r34.macs() > 3_600_000_000 && r34.macs() < 3_700_000_000,
        "{}",
        r34.macs()
    );
    assert!(networks::get("lenet").is_err());
    // Training GEMMs: the first layer has no data gradient.
    let g = networks::get("logreg").unwrap().gemms(128);
    assert_eq!(g.len(), 2);
}

#[test]
fn roofline_matches_figure_5() {
    let vgg = networks::get("vgg16").unwrap();
    let d = ArrayDesign::from_spec("zcu111-32x32-672x6080@200").unwrap();
    let r = roofline::roofline(vgg, &d, 10e9).unwrap();
    assert!((r.compute_peak - 204.8e9).abs() < 1e6);
    assert!((r.dsp_peak - 4.6992e12).abs() < 1e9);
    let conv: Vec<_> = r.points.iter().filter(|p| p.layer < 18).collect();
    let max_i = conv.iter().map(|p| p.intensity).fold(0.0, f64::max);
    let min_i = conv.iter().map(|p| p.intensity).fold(f64::MAX, f64::min);
    assert_eq!(max_i, 4608.0);
    assert!((r.memory_roof(max_i) - 46.08e12).abs() < 1e9, "46 TOPs");
    assert_eq!(min_i, 64.0);
    assert!((r.memory_roof(min_i) - 640e9).abs() < 1e6);
    for p in &r.points {
        assert!(p.simulated <= r.compute_peak * 1.0000001, "{p:?}");
    }
    assert!(roofline::roofline(vgg, &d, 0.0).is_err());
    let dir = std::env::temp_dir().join(format!("lowprec-hw-roof-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let png = dir.join("roof.png");
    roofline::plot_png(&r, &png).unwrap();
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.len() > 10_000 && bytes.starts_with(b"\x89PNG"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn projections() {
    let cat = Catalog::get();
    let a10 = cat.intel("arria10").unwrap();
    let s10 = cat.intel("stratix10").unwrap();
    let alex = networks::get("alexnet").unwrap();
    let res = networks::get("resnet34").unwrap();
    let t2 = projection::Precision::new(2, 2).unwrap();
    let p = projection::project(a10, alex, t2).unwrap();
    assert!((p.images_per_s - 3700.0).abs() < 1e-6, "fitted point");
    assert!(
        p.efficiency > 0.0 && p.efficiency <= 1.0,
        "{}",
        p.efficiency
    );
    // Cheaper PEs project more, dearer ones less, on the same device and network.
    let b1 = projection::project(a10, alex, projection::Precision::new(1, 1).unwrap()).unwrap();
    let i8 = projection::project(a10, alex, projection::Precision::new(8, 8).unwrap()).unwrap();
    assert!(b1.images_per_s > p.images_per_s && p.images_per_s > i8.images_per_s);
    assert!(b1.peak_tops > p.peak_tops && p.peak_tops > i8.peak_tops);
    let ps = projection::project(s10, res, t2).unwrap();
    assert!(ps.tops > p.tops, "the bigger device projects higher");
    // 2 ops per MAC: sustained TOPS and images/s agree.
    assert!((ps.tops - 2.0 * ps.macs_per_image * ps.images_per_s / 1e12).abs() < 1e-9);
    // The fitted efficiency is shared: the ratio of two projections is the ratio of ideal times.
    let f = projection::clock_for_tops(s10, res, t2, ps.tops).unwrap();
    assert!((f - s10.fmax_mhz).abs() < 1e-9);
    assert!(projection::Precision::new(0, 2).is_err());
    assert!(projection::Precision::new(2, 17).is_err());
    assert_eq!(projection::parse_weight_bits("ternary").unwrap(), 2);
    assert_eq!(projection::parse_weight_bits("int8").unwrap(), 8);
    assert!(projection::parse_weight_bits("quaternary").is_err());
    assert_eq!(projection::fmac_chunk_products(8, 8).unwrap(), 16);
    assert_eq!(projection::fmac_chunk_products(3, 4).unwrap(), 4);
    assert_eq!(projection::fmac_relative_throughput(4, 4).unwrap(), 4.0);
    assert!(projection::fmac_chunk_products(0, 4).is_err());
    assert!(cat.intel("virtex").is_err());
}

#[test]
fn pe_costs_follow_the_alm_arithmetic() {
    let c = |w, a| projection::pe_cost(projection::Precision::new(w, a).unwrap());
    // ternary x 2-bit: 3-bit products, tree (3 + 2) / 2, registers (2 + 2) / 4
    let t = c(2, 2);
    assert_eq!(t.product_bits, 3);
    assert_eq!(t.total, 2.5 + 1.0);
    // binary x binary: XNOR into a popcount tree
    assert_eq!(c(1, 1).total, 1.5 + 0.5);
    // 8 x 8 soft multiplier: 32 + tree of 16-bit products 9 + registers 4
    assert_eq!(c(8, 8).total, 45.0);
    assert!(c(1, 2).total < t.total && t.total < c(2, 4).total && c(4, 4).total < c(8, 8).total);
}

#[test]
fn table_001_rows() {
    let rows = tables::table_001().unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.table == "001"));
    assert!(rows[0].fitted && rows[0].rel_error.abs() < 1e-9);
    assert!(!rows[1].fitted && rows[1].paper == 55.5);
    let grid = tables::projections_001().unwrap();
    assert_eq!(grid.len(), 2 * 2 * projection::table_precisions().len());
    assert!(tables::render_projections(&grid).contains("resnet34"));
}

#[test]
fn catalogue_and_design_errors() {
    assert!(Catalog::parse("not toml [").is_err());
    let bad =
        include_str!("../data/catalog.toml").replace("family = \"zynq7\"", "family = \"nope\"");
    assert!(Catalog::parse(&bad)
        .unwrap_err()
        .to_string()
        .contains("nope"));
    assert!(Catalog::get().board("RFSoC").is_ok(), "aliases, any case");
    // A_max beyond the board's BRAM, DSPs beyond the board.
    assert!(ArrayDesign::new("pynq-z1", 8, 336, 3040, 100.0).is_err());
    assert!(
        ArrayDesign::new("pynq-z1", 16, 16, 16, 100.0).is_err(),
        "256 DSPs > 220"
    );
    let d = ArrayDesign::largest("pynq-z1", 8, 100.0).unwrap();
    assert!(d.resources().unwrap().bram36 <= 140.0);
    // Two BRAM18 per bank, shaped 1:9: the paper's 168-channel limit on the Pynq-Z1.
    assert_eq!((d.a_rows, d.a_cols), (168, 1560));
    let z = ArrayDesign::largest("zcu111", 32, 200.0).unwrap();
    assert_eq!(z.a_rows, 672, "the paper's 672-channel limit on the ZCU111");
    assert!(ArrayDesign::largest("zcu111", 64, 200.0).is_err());
}

#[test]
fn atomic_write_replaces_the_file() {
    let dir = std::env::temp_dir().join(format!("lowprec-hw-atomic-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("t.json");
    lowprec_hw::write_atomic(&p, b"one").unwrap();
    lowprec_hw::write_atomic(&p, b"two").unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"two");
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        1,
        "no temp file left"
    );
    // missing directories are made, as by every other writer of lowprec (one helper)
    lowprec_hw::write_atomic(&dir.join("missing/x"), b"x").unwrap();
    assert_eq!(std::fs::read(dir.join("missing/x")).unwrap(), b"x");
    assert!(
        lowprec_hw::write_atomic(&dir, b"x").is_err(),
        "a directory is refused"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn table_rows_serialise_with_the_cli_json_fields() {
    let rows = tables::all().unwrap();
    let v = serde_json::to_value(&rows).unwrap();
    let first = v.as_array().unwrap()[0].as_object().unwrap();
    for key in [
        "table",
        "row",
        "quantity",
        "paper",
        "model",
        "rel_error",
        "fitted",
    ] {
        assert!(first.contains_key(key), "missing {key}");
    }
    for t in ["II", "III", "IV", "VI", "V"] {
        assert!(rows.iter().any(|r| r.table == t), "table {t}");
    }
    let text = tables::render(&rows);
    assert_eq!(text.lines().count(), rows.len() + 1);
}
