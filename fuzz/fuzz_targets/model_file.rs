//! A quantised model file (`.lpq`, crates/infer/src/modelfile.rs): safetensors with the
//! network, FP32 tensors, packed weights and formats; its network is built under a memory
//! budget of `lowprec_fuzz::NETWORK_BUDGET_MB`. One that loads must write back to bytes that
//! load to the same bytes again. (Fuzzing builds skip the checksum comparison, so that mutated
//! files reach the checks after it.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use lowprec_infer::QuantizedModel;

fuzz_target!(
    init: lowprec_fuzz::limit_network_memory(),
    |data: &[u8]| {
        let Ok(qm) = QuantizedModel::from_bytes(data) else {
            return;
        };
        let _ = qm.storage();
        let bytes = qm.to_bytes().expect("a loaded model file writes back");
        let again = QuantizedModel::from_bytes(&bytes).expect("and reads back");
        assert!(again.to_bytes().expect("writes") == bytes);
    }
);
