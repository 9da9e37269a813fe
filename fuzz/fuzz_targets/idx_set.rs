//! The four IDX files of a set (`idx:DIR`: train images, train labels, test images, test
//! labels) as four `lowprec_fuzz::split` parts, each raw or gzipped; they go through the
//! loader's conversion into train and test splits.
#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use lowprec_data::{fsutil, idx, NpyArray, IDX_FILE_NAMES};

fuzz_target!(|data: &[u8]| {
    let mut arrays = Vec::new();
    for (part, name) in lowprec_fuzz::split(data, 4).into_iter().zip(IDX_FILE_NAMES) {
        let origin = PathBuf::from(name);
        let Ok(bytes) = fsutil::gunzip_if_gzip(part.to_vec(), &origin) else {
            return;
        };
        let Ok((shape, values)) = idx::parse_idx_values(&bytes, &origin) else {
            return;
        };
        arrays.push(NpyArray {
            shape,
            dtype: "idx".into(),
            values,
            origin,
        });
    }
    if let Ok(s) = lowprec_data::source::splits_from_arrays(arrays, None) {
        assert!(!s.train.is_empty());
        assert_eq!(s.train.classes, s.test.classes);
    }
});
