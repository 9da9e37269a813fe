//! A network description (the `[model]` TOML of a training description, or `--network`): parsed
//! and built into a model, whose training memory is then checked, under a memory budget of
//! `lowprec_fuzz::NETWORK_BUDGET_MB`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lowprec_nn::{Model, NetworkSpec};

fuzz_target!(
    init: lowprec_fuzz::limit_network_memory(),
    |data: &[u8]| {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        let Ok(spec) = toml::from_str::<NetworkSpec>(text) else {
            return;
        };
        if let Ok(model) = Model::build(&spec, 1) {
            let _ = model.check_training_memory(1);
            let _ = model.check_training_memory(usize::MAX);
            let mut widened = spec.clone();
            let _ = widened.widen(3);
        }
    }
);
