//! Helpers shared by the integration tests.
#![allow(dead_code)]

/// Deterministic pseudo-random bytes for test inputs (SplitMix64), independent of the crate's
/// own hash so that tests do not check the code with itself.
pub fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) as u8
        })
        .collect()
}

/// Labels in 0..classes.
pub fn labels(seed: u64, n: usize, classes: u8) -> Vec<u8> {
    bytes(seed, n).into_iter().map(|b| b % classes).collect()
}

/// The error's message must mention every needle.
pub fn assert_err_mentions<T>(r: lowprec_data::Result<T>, needles: &[&str]) {
    let Err(e) = r else {
        panic!("expected an error mentioning {needles:?}, got Ok");
    };
    let msg = e.to_string();
    for n in needles {
        assert!(msg.contains(n), "error {msg:?} does not mention {n:?}");
    }
}
