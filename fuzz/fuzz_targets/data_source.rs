//! Data-source settings: two `lowprec_fuzz::split` parts, a `[data]` table of a training
//! description (its body, TOML) and a `--data KIND:PATH` string, applied to it as the command
//! line does. A table that passes its checks must still pass them after `--data`, or the
//! change must be refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lowprec_train::config::DataConfig;

fuzz_target!(|data: &[u8]| {
    let parts = lowprec_fuzz::split(data, 2);
    let Ok(kind_path) = std::str::from_utf8(parts[1]) else {
        return;
    };
    if let Ok((kind, path)) = lowprec_data::parse_kind_path(kind_path) {
        assert!(!path.as_os_str().is_empty());
        assert_eq!(
            kind.name().parse::<lowprec_data::SourceKind>().ok(),
            Some(kind)
        );
    }
    let Ok(table) = std::str::from_utf8(parts[0]) else {
        return;
    };
    let Ok(mut cfg) = toml::from_str::<DataConfig>(table) else {
        return;
    };
    if cfg.validate().is_err() {
        return;
    }
    let _ = cfg.is_own();
    if cfg.set_source(kind_path).is_ok() {
        cfg.validate().expect("set_source leaves a valid table");
        assert!(cfg.is_own());
    }
});
