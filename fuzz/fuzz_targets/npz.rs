//! One `.npz` archive (`npz:FILE`): its member names, the four arrays of a classification set
//! and the two or four of a regression set, each through the loader's conversion into splits.
#![no_main]

use std::io::Cursor;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use lowprec_data::{npy, source, NPY_ARRAY_NAMES};

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.npz");
    let Ok(names) = npy::npz_array_names_from(Cursor::new(data), path) else {
        return;
    };
    if let Ok(arrays) = npy::read_npz_from(Cursor::new(data), path, &NPY_ARRAY_NAMES) {
        let _ = source::splits_from_arrays(arrays, None);
    }
    let has_y = names.iter().any(|n| n == "y_train");
    let wanted: &[&str] = if has_y {
        &NPY_ARRAY_NAMES
    } else {
        &["x_train", "x_test"]
    };
    if let Ok(arrays) = npy::read_npz_from(Cursor::new(data), path, wanted) {
        let _ = source::regression_splits_from_arrays(arrays);
    }
});
