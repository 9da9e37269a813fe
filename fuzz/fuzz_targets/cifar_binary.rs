//! One CIFAR-10 binary batch file (`data_batch_N.bin`, 3073-byte records), raw or gzipped.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use lowprec_data::cifar::{parse_cifar_binary, CIFAR_IMAGE_LEN};
use lowprec_data::fsutil;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("data_batch_1.bin");
    let Ok(bytes) = fsutil::gunzip_if_gzip(data.to_vec(), path) else {
        return;
    };
    if let Ok((images, labels)) = parse_cifar_binary(&bytes, path) {
        assert_eq!(images.len(), labels.len() * CIFAR_IMAGE_LEN);
        lowprec_data::Dataset::new(images, labels, 3, 32, 32, 10)
            .expect("parsed records make a data set");
    }
});
