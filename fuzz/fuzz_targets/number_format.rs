//! Number-format strings (`bfp8:tile32:stochastic`, `fixed8:4`, `float5:2`, `fpga:b8w8`,
//! `ternary`, ...): two `lowprec_fuzz::split` parts, the string and up to 256 little-endian f32
//! values. A format that parses must print as a string that parses back to it (model files and
//! checkpoints store formats as text) and must quantise the values, shaped `[n]` and
//! `[2, n / 2]`, without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lowprec_formats::{fake_quantize, FpgaBfp, NumberFormat, StreamKey};

fuzz_target!(|data: &[u8]| {
    let parts = lowprec_fuzz::split(data, 2);
    let Ok(text) = std::str::from_utf8(parts[0]) else {
        return;
    };
    let _ = text.parse::<FpgaBfp>();
    let Ok(f) = text.parse::<NumberFormat>() else {
        return;
    };
    let shown = f.to_string();
    let back: NumberFormat = shown
        .parse()
        .unwrap_or_else(|e| panic!("`{text}` prints as `{shown}`, which does not parse: {e}"));
    assert_eq!(
        back, f,
        "`{text}` prints as `{shown}`, which parses to another format"
    );
    let mut x = lowprec_fuzz::f32s(parts[1]);
    x.truncate(256);
    let n = x.len();
    let mut out = vec![0f32; n];
    let key = StreamKey::new(1, 2);
    let _ = fake_quantize(&x, &[n], &f, key, "fuzz", &mut out);
    if n >= 2 && n % 2 == 0 {
        let _ = fake_quantize(&x, &[2, n / 2], &f, key, "fuzz", &mut out);
    }
});
