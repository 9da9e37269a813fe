//! The CIFAR-10 JPEG tarball (gzipped or plain tar of `<split>/<class>/<name>.jpg|png`): its
//! member index and every image in it, decoded as `lowprec_data::load_cifar10` does.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use lowprec_data::ImageSetSpec;

fuzz_target!(|data: &[u8]| {
    let spec = ImageSetSpec::cifar10();
    let _ = lowprec_data::decode_image_tarball_from(data, Path::new("cifar10-jpeg.tar.gz"), &spec);
});
