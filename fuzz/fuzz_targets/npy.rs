//! One `.npy` file.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = lowprec_data::npy::parse_npy(data, Path::new("fuzz.npy")) {
        assert_eq!(a.values.len(), a.shape.iter().product::<usize>());
        let _ = a.to_i64();
        let _ = a.first_non_finite();
        assert_eq!(a.to_f32().len(), a.values.len());
    }
});
