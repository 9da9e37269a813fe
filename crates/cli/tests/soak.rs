//! Crash safety, end to end: training is killed with SIGKILL at pseudo-random moments (during
//! epochs and during checkpoint writes) many times and resumed each time. After every kill the
//! output directory holds a loadable checkpoint (once the first epoch has ended), and the run that
//! finally completes ends with the same checkpoint bytes as a run that was never interrupted.
//!
//! Uses MNIST (fetched into the data directory on first use, as the train crate's tests do), on
//! a subset so that an epoch takes a fraction of a second.

use lowprec_train::Checkpoint;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ARGS: [&str; 12] = [
    "train",
    "mnist-logreg",
    "--epochs",
    "16",
    "--train-subset",
    "6000",
    "--test-subset",
    "500",
    "--threads",
    "1",
    "--seed",
    "5",
];

fn lowprec() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lowprec"));
    c.stdin(Stdio::null());
    c
}

/// Starts a run in `out` (resuming when a checkpoint is there) and returns the child.
fn start(out: &Path) -> std::process::Child {
    let mut c = lowprec();
    c.args(ARGS).arg("--out").arg(out).arg("--quiet");
    if out.join("checkpoint.safetensors").exists() {
        c.arg("--resume");
    }
    c.stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("lowprec starts")
}

#[test]
fn sigkill_at_random_moments_then_resume_gives_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference");
    let t0 = Instant::now();
    let out = lowprec()
        .args(ARGS)
        .arg("--out")
        .arg(&reference)
        .arg("--quiet")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let full_run = t0.elapsed();
    // the start-up (loading the data, building the model) is timed apart, so that every kill
    // falls after it: a run killed before its first epoch ends makes no progress
    let t1 = Instant::now();
    let st = lowprec()
        .args(ARGS)
        .args(["--stop-after", "0", "--quiet"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let startup = t1.elapsed();
    let epoch = full_run.saturating_sub(startup) / 16;
    eprintln!("soak: full run {full_run:?}, start-up {startup:?}, epoch {epoch:?}");
    let want = std::fs::read(reference.join("checkpoint.safetensors")).unwrap();

    // rounds of kill-and-resume until at least 25 kills in all; each round's run must end
    // with the reference's bytes
    let (mut kills, mut rounds, mut attempt) = (0usize, 0usize, 0u64);
    while kills < 25 {
        assert!(rounds < 40, "only {kills} kills in {rounds} rounds");
        let soak = dir.path().join(format!("soak{rounds}"));
        let round_kills = kills;
        loop {
            assert!(
                attempt < 2000,
                "runs stopped making progress ({kills} kills)"
            );
            let mut child = start(&soak);
            // kill up to 2.5 epochs after start-up: on average an epoch and a bit of progress,
            // at any moment of an epoch or of the writes that end it
            let h = lowprec_formats::rng::splitmix64(0x50a6 ^ attempt);
            attempt += 1;
            let wait = startup + epoch.mul_f64(2.5 * (h % 1000) as f64 / 1000.0);
            let deadline = Instant::now() + wait;
            let mut exited = None;
            while Instant::now() < deadline {
                if let Some(st) = child.try_wait().unwrap() {
                    exited = Some(st);
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            if let Some(st) = exited {
                let mut err = String::new();
                use std::io::Read;
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                assert!(st.success(), "attempt {attempt}: {err}");
                break;
            }
            child.kill().unwrap(); // SIGKILL on Unix
            child.wait().unwrap();
            kills += 1;
            let ck = soak.join("checkpoint.safetensors");
            if ck.exists() {
                Checkpoint::load(&ck).unwrap_or_else(|e| {
                    panic!("after kill {kills} the checkpoint does not load: {e}")
                });
            }
        }
        let got = std::fs::read(soak.join("checkpoint.safetensors")).unwrap();
        assert!(
            got == want,
            "round {rounds}: after {} kills and resumes the final checkpoint differs from the \
             uninterrupted run's",
            kills - round_kills
        );
        let leftovers: Vec<String> = std::fs::read_dir(&soak)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "stale temp files: {leftovers:?}");
        rounds += 1;
    }
    eprintln!(
        "soak: {kills} SIGKILLs in {rounds} runs, resumed each time, every final checkpoint \
         identical to the uninterrupted run's"
    );
}

/// A full disk in the middle of a run: the run stops with an error naming the file and the
/// cause, and the last good checkpoint stays loadable. Needs a small tmpfs (root); where
/// mounting is not allowed the test says so and checks nothing else.
#[test]
fn full_disk_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&mnt)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("full-disk test not run: cannot mount a tmpfs here (needs root)");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _guard = Unmount(&mnt);
    // leave room for one checkpoint (about 64 KB) and its temp file, not for two
    std::fs::write(mnt.join("filler"), vec![0u8; 256 * 1024 - 112 * 1024]).unwrap();
    let out = mnt.join("run");
    let o = lowprec()
        .args(ARGS)
        .arg("--out")
        .arg(&out)
        .arg("--quiet")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "the run should fail on a full disk");
    assert!(
        err.contains("No space left") && err.contains(&*mnt.to_string_lossy()),
        "{err}"
    );
    let ck = Checkpoint::load(&out.join("checkpoint.safetensors")).expect("last good checkpoint");
    assert!(ck.epoch >= 1, "epoch {}", ck.epoch);
    let temps: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(temps.is_empty(), "temp files left: {temps:?}");
    eprintln!(
        "full disk at epoch {}: {}",
        ck.epoch + 1,
        err.lines().last().unwrap_or("")
    );
}
