//! `lowprec`: train and run neural networks in low precision, and model the hardware.
//!
//! The binary is a thin layer over the workspace crates: each subcommand lives in its own
//! `cmd_*.rs` module and calls into the libraries.

mod cmd_bench_quantize;
mod cmd_quantize;
mod util;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "lowprec",
    version,
    about = "Low-precision (BFP8) training and inference toolkit"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Quantise a .npy array to a number format (BFP, fixed point, small floats).
    Quantize(cmd_quantize::QuantizeArgs),
    /// Benchmarks writing tables and JSON.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Quantisation throughput.
    Quantize(cmd_bench_quantize::BenchQuantizeArgs),
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::Quantize(a) => cmd_quantize::run(a),
        Command::Bench(BenchCommand::Quantize(a)) => cmd_bench_quantize::run(a),
    }
}
