//! A SigMF recording: three `lowprec_fuzz::split` parts, a flags byte (bit 0: replace
//! non-finite samples by zero instead of failing; bit 1: skip the sha512 check), the
//! `.sigmf-meta` JSON and the `.sigmf-data` bytes (cf32_le).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use lowprec_rf::sigmf::{sigmf_stream, NonFinitePolicy, ReadOptions, SigMfMeta};

fuzz_target!(|data: &[u8]| {
    let parts = lowprec_fuzz::split(data, 3);
    let flags = parts[0].first().copied().unwrap_or(0);
    let Ok(text) = std::str::from_utf8(parts[1]) else {
        return;
    };
    let meta_path = Path::new("fuzz.sigmf-meta");
    let Ok(meta) = SigMfMeta::parse(text, meta_path) else {
        return;
    };
    let _ = meta.label_ranges();
    let opts = ReadOptions {
        non_finite: if flags & 1 == 1 {
            NonFinitePolicy::Zero
        } else {
            NonFinitePolicy::Error
        },
        verify_checksum: flags & 2 == 0,
    };
    let body = parts[2];
    let Ok(mut stream) = sigmf_stream(
        &meta,
        meta_path,
        body,
        "fuzz.sigmf-data".into(),
        body.len() as u64,
        opts,
    ) else {
        return;
    };
    if let Ok(samples) = stream.read_to_end() {
        assert_eq!(samples.len() * 8, body.len());
    }
});
