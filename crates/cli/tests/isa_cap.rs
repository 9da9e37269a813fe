//! `LOWPREC_ISA` caps the kernel families, changes no bits, and a bad value is refused.

use std::process::Command;

fn lowprec(isa: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lowprec"));
    c.args(args);
    match isa {
        Some(v) => c.env("LOWPREC_ISA", v),
        None => c.env_remove("LOWPREC_ISA"),
    };
    c.output().unwrap()
}

#[test]
fn the_cap_selects_the_family_and_keeps_the_bits() {
    let bench = [
        "bench",
        "gemm",
        "--quick",
        "--shapes",
        "64x64x64",
        "--threads",
        "1",
    ];
    let out = lowprec(Some("generic"), &bench);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("i8 kernels: Generic") && text.contains("cap generic"),
        "{text}"
    );
    let out = lowprec(Some("avx2"), &bench);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("cap avx2") && !text.contains("Avx512Vnni"),
        "{text}"
    );

    // one training run per cap: identical checkpoints
    let dir = tempfile::tempdir().unwrap();
    let mut sums = Vec::new();
    for isa in ["generic", "avx2", "avx512"] {
        let out_dir = dir.path().join(isa);
        let o = lowprec(
            Some(isa),
            &[
                "train",
                "lenet5",
                "--precision",
                "bfp8",
                "--epochs",
                "1",
                "--train-subset",
                "512",
                "--test-subset",
                "256",
                "--threads",
                "2",
                "--quiet",
                "--out",
                out_dir.to_str().unwrap(),
            ],
        );
        assert!(
            o.status.success(),
            "{isa}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        sums.push(std::fs::read(out_dir.join("checkpoint.safetensors")).unwrap());
    }
    assert!(sums[0] == sums[1], "generic and avx2 checkpoints differ");
    assert!(sums[1] == sums[2], "avx2 and avx512 checkpoints differ");
}

#[test]
fn a_bad_value_is_refused() {
    let out = lowprec(Some("sse9"), &["presets"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("LOWPREC_ISA") && err.contains("sse9"), "{err}");
}
