//! A training checkpoint (safetensors with lowprec metadata). One that loads must write back
//! to bytes that load to the same bytes again. (Fuzzing builds skip the checksum comparison,
//! so that mutated files reach the checks after it.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use lowprec_train::Checkpoint;

fuzz_target!(|data: &[u8]| {
    let Ok(ck) = Checkpoint::from_bytes(data, "fuzz.safetensors") else {
        return;
    };
    let bytes = ck.to_bytes().expect("a loaded checkpoint writes back");
    let again = Checkpoint::from_bytes(&bytes, "written back").expect("and reads back");
    assert!(again.to_bytes().expect("writes") == bytes);
});
