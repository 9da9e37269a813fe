//! Precision-policy strings (`--precision`, `precision = "..."`: `bfp8`,
//! `swalp,weights=bfp6:tensor`, ...), tensor-kind names and gradient-exchange formats
//! (`--exchange fp32|bfp8|bfp8:tileK|bfp8:tensor`). A policy that parses must parse again
//! from its canonical name to the same formats.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lowprec_nn::{Precision, TensorKind};
use lowprec_train::dist::ExchangeFormat;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = text.parse::<TensorKind>();
    if let Ok(x) = text.parse::<ExchangeFormat>() {
        assert_eq!(x.to_string().parse::<ExchangeFormat>().ok(), Some(x));
    }
    let Ok(p) = text.parse::<Precision>() else {
        return;
    };
    let _ = p.to_string();
    let name = p.canonical_name();
    let again: Precision = name
        .parse()
        .unwrap_or_else(|e| panic!("`{text}`: canonical name `{name}` does not parse: {e}"));
    assert!(
        again.same_formats(&p),
        "`{text}`: canonical name `{name}` gives other formats"
    );
});
