//! A training description (TOML: name, precision policy, `[data]`, `[model]`, `[train]`,
//! `[swa]`, `[[precision_schedule]]`, `[fast]`): parsed and checked, written back and re-read
//! (a run's checkpoint stores it), its network built (memory budget
//! `lowprec_fuzz::NETWORK_BUDGET_MB`) and its precision schedule resolved against it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lowprec_nn::Model;
use lowprec_train::varprec::PrecisionControl;
use lowprec_train::TrainConfig;

fuzz_target!(
    init: lowprec_fuzz::limit_network_memory(),
    |data: &[u8]| {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        let Ok(cfg) = TrainConfig::from_toml(text, "fuzz.toml") else {
            return;
        };
        let again = TrainConfig::from_toml(&cfg.to_toml(), "written back")
            .expect("a valid description reads back");
        assert_eq!(again.to_toml(), cfg.to_toml());
        let Ok(model) = Model::build(&cfg.model, cfg.seed) else {
            return;
        };
        // batches per epoch: 1 (a tiny set) to 60000 (MNIST at batch 1)
        for per_epoch in [1, 390, 60_000] {
            if let Ok(pc) = PrecisionControl::new(
                &cfg.precision,
                &model,
                &cfg.precision_schedule,
                cfg.fast.as_ref(),
                per_epoch,
                cfg.train.epochs,
            ) {
                for step in [0, 1, per_epoch, u64::MAX] {
                    let _ = pc.plan_at(step);
                }
            }
        }
    }
);
