//! One image of an image folder (`image-folder:DIR`, `<split>/<class>/<name>.jpg|png`): the
//! first byte picks the loader's settings (RGB 32x32 as found, or grey or RGB resized to
//! 8x8), the rest is the file.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use lowprec_data::ImageSetSpec;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    let spec = match mode % 3 {
        0 => ImageSetSpec::cifar10(),
        m => ImageSetSpec {
            classes: vec!["a".into()],
            channels: if m == 1 { 1 } else { 3 },
            height: 8,
            width: 8,
            train_split: "train".into(),
            test_split: "test".into(),
            resize: true,
        },
    };
    let mut out = vec![0u8; spec.channels * spec.height * spec.width];
    let _ = lowprec_data::decode_image_into(&mut out, bytes, Path::new("train/a/0.png"), &spec);
});
