//! Prints the iteration-time breakdown: `cargo run -p lowprec-hw --example breakdown -- NET BATCH BOARD`.
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let net = lowprec_hw::networks::get(&a[1]).unwrap();
    let b: usize = a[2].parse().unwrap();
    let d = lowprec_hw::timing::table_vi_design(&a[3]).unwrap();
    let e = lowprec_hw::timing::fpga_iteration(net, b, &d).unwrap();
    for op in &e.ops {
        println!(
            "{:?} m{} k{} n{} x{}: {:.3} ms, cycles {}, stall {}, preload {}",
            op.op.pass,
            op.op.m,
            op.op.k,
            op.op.n,
            op.op.repeat,
            op.seconds * 1e3,
            op.counters.total_cycles,
            op.counters.stall_cycles,
            op.counters.preload_cycles
        );
    }
    println!("core {:.4} calls {:.4} quant {:.4} layout {:.4} acc {:.4} elem {:.4} weights {:.4} total {:.4} cpu {:.4}", e.core_s, e.calls_s, e.quant_s, e.layout_s, e.acc_s, e.elem_s, e.weights_s, e.fpga_total_s, e.cpu_only_s);
}
