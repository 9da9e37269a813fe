//! The distributed-training exchange's decoder (crates/train/src/dist.rs): what the other ranks
//! send. Byte 0 picks the number of ranks (2 to 4), byte 1 the exchange format; the rest is the
//! stream the other ranks' messages are cut from (see `lowprec_fuzz::exchange`). Rank 0 runs the
//! configuration check, a batch-norm average and two gradient all-reduces on it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lowprec_fuzz::exchange::{run, Peers};

fuzz_target!(|data: &[u8]| {
    let [ranks, format, stream @ ..] = data else {
        return;
    };
    let _ = run(Peers::new(*ranks, stream), *format);
});
