//! One IDX file (MNIST's format), raw or gzipped: the bytes of the file.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use lowprec_data::{fsutil, idx};

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.idx");
    let Ok(bytes) = fsutil::gunzip_if_gzip(data.to_vec(), path) else {
        return;
    };
    if let Ok(a) = idx::parse_idx(&bytes, path) {
        assert_eq!(a.data.len(), a.dims.iter().product::<usize>());
    }
    if let Ok((dims, values)) = idx::parse_idx_values(&bytes, path) {
        assert_eq!(values.len(), dims.iter().product::<usize>());
    }
});
