//! `lowprec train --distributed`. Without the `mpi` feature it is refused with the rebuild
//! command; with it, 2-rank jobs run under `mpirun` on this machine: they learn, one rank
//! equals the plain run bit for bit, resume works with another rank count, mismatched ranks
//! are refused, and a stalled rank ends the job through the collective timeout.
//!
//! The data is a small synthetic IDX set (10 classes of 28x28 images) written by the test.

use std::process::{Command, Output, Stdio};

fn lowprec() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lowprec"));
    c.stdin(Stdio::null());
    c
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[cfg(not(feature = "mpi"))]
#[test]
fn distributed_without_the_feature_says_how_to_rebuild() {
    let o = lowprec()
        .args(["train", "mnist-mlp", "--distributed", "--exchange", "bfp8"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("--features mpi") && e.contains("mpirun -np N"),
        "{e}"
    );
}

#[cfg(feature = "mpi")]
mod mpi {
    use super::*;
    use std::path::Path;
    use std::time::{Duration, Instant};

    /// 10 classes of 28x28 images: class c lights one 5x14 patch, plus noise.
    fn write_idx(dir: &Path, n_train: usize, n_test: usize) {
        use lowprec_data::idx::encode_idx;
        let make = |n: usize, salt: u64| {
            let (mut img, mut lab) = (Vec::new(), Vec::new());
            for i in 0..n {
                let c = i % 10;
                lab.push(c as u8);
                for p in 0..784 {
                    let (y, x) = (p / 28, p % 28);
                    let lit = y / 5 == c / 2 && x / 14 == c % 2;
                    let h = (i as u64 * 784 + p as u64 + salt).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                    let noise = (h >> 58) as u8;
                    img.push(if lit { 150 + noise } else { noise });
                }
            }
            (img, lab)
        };
        let (ti, tl) = make(n_train, 1);
        let (vi, vl) = make(n_test, 2);
        let w = |name: &str, dims: &[usize], d: &[u8]| {
            std::fs::write(dir.join(name), encode_idx(dims, d).unwrap()).unwrap()
        };
        w("train-images-idx3-ubyte", &[n_train, 28, 28], &ti);
        w("train-labels-idx1-ubyte", &[n_train], &tl);
        w("t10k-images-idx3-ubyte", &[n_test, 28, 28], &vi);
        w("t10k-labels-idx1-ubyte", &[n_test], &vl);
    }

    fn mpirun_found() -> bool {
        Command::new("mpirun")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// `mpirun -np N lowprec train mnist-mlp --data idx:DATA ... ARGS` on this machine.
    fn mpirun(np: usize, data: &Path, args: &[&str]) -> Output {
        let mut c = Command::new("mpirun");
        c.stdin(Stdio::null());
        c.args([
            "--oversubscribe",
            "--allow-run-as-root",
            "-np",
            &np.to_string(),
        ]);
        c.args(["--mca", "btl", "self,vader,tcp"]);
        c.args(["--mca", "btl_vader_single_copy_mechanism", "none"]);
        c.arg(env!("CARGO_BIN_EXE_lowprec"));
        c.args(train_args(data));
        c.args(["--distributed", "--threads", "1"]);
        c.args(args);
        c.output().unwrap()
    }

    fn train_args(data: &Path) -> Vec<String> {
        [
            "train",
            "mnist-mlp",
            "--data",
            &format!("idx:{}", data.display()),
            "--epochs",
            "2",
            "--batch",
            "64",
            "--quiet",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    fn report(out: &Path) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(out.join("final.json")).unwrap()).unwrap()
    }

    #[test]
    fn two_ranks_on_loopback() {
        if !mpirun_found() {
            eprintln!("mpirun not found: skipped (.ci/run installs Open MPI)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        write_idx(&data, 1280, 300);
        let d = |s: &str| dir.path().join(s);

        // 2 ranks with each exchange: they learn; rank 0 alone reports
        for ex in ["fp32", "bfp8"] {
            let out = d(ex);
            let o = mpirun(
                2,
                &data,
                &["--exchange", ex, "--out", out.to_str().unwrap()],
            );
            assert!(o.status.success(), "{}", text(&o));
            let stdout = String::from_utf8_lossy(&o.stdout);
            assert_eq!(stdout.matches("\"test_acc\"").count(), 1, "{}", text(&o));
            let r = report(&out);
            assert_eq!(r["distributed"]["ranks"], 2);
            assert_eq!(
                r["distributed"]["exchange"],
                if ex == "fp32" { "fp32" } else { "bfp8:tile32" }
            );
            assert!(r["test_acc"].as_f64().unwrap() > 0.9, "{r}");
        }

        // one rank is the plain run, bit for bit
        let plain = d("plain");
        let mut c = lowprec();
        c.args(train_args(&data))
            .args(["--threads", "1", "--out", plain.to_str().unwrap()]);
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", text(&o));
        let one = d("one");
        let o = mpirun(1, &data, &["--out", one.to_str().unwrap()]);
        assert!(o.status.success(), "{}", text(&o));
        let ck = |p: &Path| std::fs::read(p.join("checkpoint.safetensors")).unwrap();
        assert!(
            ck(&plain) == ck(&one),
            "one rank differs from the plain run"
        );

        // interrupted with 2 ranks, resumed with 1 (and the run completes)
        let res = d("resume");
        let o = mpirun(
            2,
            &data,
            &[
                "--exchange",
                "bfp8",
                "--stop-after",
                "1",
                "--out",
                res.to_str().unwrap(),
            ],
        );
        assert!(o.status.success(), "{}", text(&o));
        let o = mpirun(
            1,
            &data,
            &[
                "--exchange",
                "bfp8",
                "--resume",
                "--out",
                res.to_str().unwrap(),
            ],
        );
        assert!(o.status.success(), "{}", text(&o));
        assert_eq!(report(&res)["epochs"], 2);

        // ranks started with different settings are refused, naming the rank
        let mut c = Command::new("mpirun");
        c.stdin(Stdio::null());
        c.args(["--oversubscribe", "--allow-run-as-root"]);
        c.args(["--mca", "btl_vader_single_copy_mechanism", "none"]);
        let bin = env!("CARGO_BIN_EXE_lowprec");
        for seed in ["1", "2"] {
            c.args(["-np", "1", bin]).args(train_args(&data));
            c.args(["--distributed", "--threads", "1", "--seed", seed]);
            if seed == "1" {
                c.arg(":");
            }
        }
        let o = c.output().unwrap();
        assert!(!o.status.success(), "{}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr)
                .contains("rank 1's configuration differs from rank 0's"),
            "{}",
            text(&o)
        );

        // a rank that hangs: the other's collective times out, the job ends with code 75
        let t0 = Instant::now();
        let o = mpirun(
            2,
            &data,
            &["--test-stall-rank", "1", "--collective-timeout", "3"],
        );
        assert!(t0.elapsed() < Duration::from_secs(120), "{}", text(&o));
        assert!(!o.status.success(), "{}", text(&o));
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(
            e.contains("rank 0: the configuration check did not complete within 3 s"),
            "{}",
            text(&o)
        );
    }
}
