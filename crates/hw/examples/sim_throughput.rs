//! Simulated MACs per second of `FpgaSim` (see `lowprec_hw::bench`). Run with
//! `cargo run --release -p lowprec-hw --example sim_throughput [spec]`.

fn main() {
    let spec = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "zcu111-32x32".into());
    let sim = lowprec_hw::FpgaSim::from_spec(&spec).expect("valid design spec");
    println!(
        "design {} ({} rayon threads)",
        sim.design().spec(),
        rayon::current_num_threads()
    );
    for r in lowprec_hw::bench::run(&sim, 3).expect("benchmark") {
        println!(
            "{:<28} {:.3e} MACs in {:7.1} ms -> {:.2e} simulated MAC/s ({} cycles, utilisation {:.2})",
            r.name,
            r.macs as f64,
            r.wall_s * 1e3,
            r.macs_per_s,
            r.simulated_cycles,
            r.utilisation
        );
    }
}
