//! `lowprec`: train and run neural networks in low precision, and model the hardware.
//!
//! The binary is a thin layer over the workspace crates: each subcommand lives in its own
//! `cmd_*.rs` module and calls into the libraries.

mod cmd_bench_gemm;
mod cmd_bench_peak;
mod cmd_bench_quantize;
mod cmd_bench_train;
mod cmd_fast;
mod cmd_hw;
mod cmd_infer;
mod cmd_profile;
mod cmd_quantize;
mod cmd_quantize_model;
mod cmd_report;
mod cmd_retrain;
mod cmd_rf;
mod cmd_train;
mod plot;
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
    /// Train a network (a preset or a TOML file); with no argument, the main job: the MNIST
    /// logistic-regression row of 002's Table V in fp32, bfp8+SWA and swalp.
    Train(cmd_train::TrainArgs),
    /// Evaluate a checkpoint (SGD and SWA models) on the test set.
    Eval(cmd_train::EvalArgs),
    /// Plot test accuracy vs epoch of one or more runs (PNG).
    Plot(cmd_train::PlotArgs),
    /// List the built-in presets and networks, or print one network's description.
    Presets(cmd_train::PresetsArgs),
    /// Per-layer forward/backward time (GEMM, quantisation, im2col, other) and peak memory.
    Profile(cmd_profile::ProfileArgs),
    /// The accelerator model: boards, estimates, roofline, the papers' tables.
    #[command(subcommand)]
    Hw(cmd_hw::HwCommand),
    /// RF anomaly detection: signal generation and detection.
    #[command(subcommand)]
    Rf(cmd_rf::RfCommand),
    /// Quantise a .npy array to a number format (BFP, fixed point, small floats).
    Quantize(cmd_quantize::QuantizeArgs),
    /// Paper 004 (FAST): fp32, fixed bfp8, fixed g16m4 and FAST's adaptive precision on one
    /// preset, with projected accelerator time to accuracy (fast.json, precision.jsonl,
    /// fast.png).
    Fast(cmd_fast::FastArgs),
    /// Post-training quantisation of a checkpoint to FPGA BFP formats (a model file), with a
    /// per-layer error table.
    QuantizeModel(cmd_quantize_model::QuantizeModelArgs),
    /// Fine-tune a quantised model with the bit-true formats in the forward pass.
    Retrain(cmd_retrain::RetrainArgs),
    /// Run a quantised model on the integer engine (accuracy, images/s, layer comparison).
    Infer(cmd_infer::InferArgs),
    /// Reports: `precision` (accuracy and FPGA estimates per format).
    #[command(subcommand)]
    Report(cmd_report::ReportCommand),
    /// Benchmarks writing tables and JSON.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Integer vs float GEMM throughput.
    Gemm(cmd_bench_gemm::BenchGemmArgs),
    /// Milliseconds per training iteration on a fixed random batch (like the PyTorch peer).
    Train(cmd_bench_train::BenchTrainArgs),
    /// Quantisation throughput.
    Quantize(cmd_bench_quantize::BenchQuantizeArgs),
    /// Measured instruction peaks (integer multiply-add forms, f32 FMA) of this CPU.
    Peak(cmd_bench_peak::BenchPeakArgs),
}

/// mimalloc instead of glibc's malloc: glibc serves every block of 32 MiB or more (VGG16's
/// 64-channel 32x32 maps at batch 128 are exactly 32 MiB of floats) with a fresh `mmap`, so each
/// such tensor page-faulted and was zeroed by the kernel in every layer of every iteration.
/// mimalloc keeps freed segments for reuse, trading some resident memory for far fewer page
/// faults (`lowprec profile vgg16-cifar --batch 128` shows both).
///
/// By default mimalloc hands memory freed for 10 ms back to the system, and each training step
/// then faults it in again, zeroed page by page: on PreResNet-20 b128 (bfp8, one thread, a Zen 2)
/// the kernel's page clearing was 5-7% of the step. lowprec keeps it ([`keep_freed_memory`])
/// unless `MIMALLOC_PURGE_DELAY` says otherwise; the resident size stays at the peak.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Sets mimalloc's purge delay to "never" unless the user set `MIMALLOC_PURGE_DELAY`.
fn keep_freed_memory() {
    // `mi_option_purge_delay` in mimalloc's `mi_option_e` (the same index in versions 2 and 3;
    // the sys crate names only the older options).
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a process-wide allocator option; mimalloc reads it when it next
        // schedules a purge, and any value is valid (-1: never purge).
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

fn main() {
    // `lowprec presets | head` should end quietly, as other Unix tools do, not panic in println!.
    // SAFETY: restoring the default disposition of a signal before any thread starts.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    keep_freed_memory();
    let cli = Cli::parse();
    if let Err(e) = lowprec_formats::isa::cap_from_env() {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
    if let Err(e) = run(cli) {
        eprintln!("error: {}", error_text(&e));
        std::process::exit(1);
    }
}

/// An error and its causes on one line, each cause left out when an earlier message already
/// says it (many error types repeat their source in their own message, which would otherwise
/// print it twice: `no such file (os error 2): no such file (os error 2)`).
fn error_text(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if out.contains(&s) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&s);
    }
    out
}

fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::Train(a) => cmd_train::run_train(a),
        Command::Eval(a) => cmd_train::run_eval(a),
        Command::Plot(a) => cmd_train::run_plot(a),
        Command::Presets(a) => cmd_train::run_presets(a),
        Command::Profile(a) => cmd_profile::run(a),
        Command::Hw(c) => cmd_hw::run(c),
        Command::Rf(c) => cmd_rf::run(c),
        Command::Bench(BenchCommand::Gemm(a)) => cmd_bench_gemm::run(a),
        Command::Bench(BenchCommand::Train(a)) => cmd_bench_train::run(a),
        Command::Quantize(a) => cmd_quantize::run(a),
        Command::Fast(a) => cmd_fast::run(a),
        Command::QuantizeModel(a) => cmd_quantize_model::run(a),
        Command::Retrain(a) => cmd_retrain::run(a),
        Command::Infer(a) => cmd_infer::run(a),
        Command::Report(c) => cmd_report::run(c),
        Command::Bench(BenchCommand::Quantize(a)) => cmd_bench_quantize::run(a),
        Command::Bench(BenchCommand::Peak(a)) => cmd_bench_peak::run(a),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn causes_already_in_the_message_are_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such recording");
        let e = anyhow::Error::new(lowprec_rf::RfError::Io {
            path: "x.sigmf-data".into(),
            source: io,
        })
        .context("reading the recording");
        let t = super::error_text(&e);
        assert_eq!(t.matches("no such recording").count(), 1, "{t}");
        assert!(t.starts_with("reading the recording: x.sigmf-data"), "{t}");
    }
}
