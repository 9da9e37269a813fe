//! Precision schedule strings (`--schedule`, one inline TOML table per line, e.g.
//! `{ layers = ["fc1"], epochs = [0, 2], width = 4 }`): parsed, checked and resolved against a
//! small network under the bfp8 and g16m4 policies, with and without FAST.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lowprec_nn::{Model, NetworkSpec, Precision};
use lowprec_train::varprec::{FastConfig, PrecisionControl, ScheduleEntry, G16M4};

const NETWORK: &str = r#"
input = [1, 8, 8]
loss = "cross-entropy"
[[layer]]
type = "conv"
name = "conv1"
out = 4
kernel = 3
[[layer]]
type = "relu"
[[layer]]
type = "flatten"
[[layer]]
type = "linear"
name = "fc1"
out = 16
[[layer]]
type = "linear"
name = "fc2"
out = 10
"#;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut entries = Vec::new();
    for line in text.lines().take(8) {
        match ScheduleEntry::parse(line) {
            Ok(e) => entries.push(e),
            Err(_) => return,
        }
    }
    for e in &entries {
        let _ = e.validate();
    }
    let spec: NetworkSpec = toml::from_str(NETWORK).expect("the fixed network parses");
    let model = Model::build(&spec, 1).expect("the fixed network builds");
    let fast = FastConfig::default();
    for policy in ["bfp8", G16M4] {
        let base: Precision = policy.parse().expect("a built-in policy");
        for fast in [None, Some(&fast)] {
            for (per_epoch, epochs) in [(1, 1), (390, 200), (60_000, 1000)] {
                if let Ok(pc) =
                    PrecisionControl::new(&base, &model, &entries, fast, per_epoch, epochs)
                {
                    for step in [0, 1, per_epoch, per_epoch * epochs as u64 - 1, u64::MAX] {
                        let _ = pc.plan_at(step);
                    }
                }
            }
        }
    }
});
