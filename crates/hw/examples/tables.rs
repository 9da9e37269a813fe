//! Prints the reproduced tables: `cargo run -p lowprec-hw --example tables`.
fn main() {
    let rows = lowprec_hw::tables::all().expect("tables");
    print!("{}", lowprec_hw::tables::render(&rows));
    println!("{:?}", lowprec_hw::timing::calibration().unwrap());
}
