//! Data-parallel training with the in-process transport: N = 1 is the one-process run bit for
//! bit, N = 2 gives the same bits on every run and at any thread count, resume works with another
//! N, mismatched ranks are refused, a failing rank ends the others; and the bfp8 wire codec
//! against a plain reference.

mod common;

use common::{in_pool, opts, splits};
use lowprec_formats::rng::{uniform_f32, StreamKey};
use lowprec_train::checkpoint::Checkpoint;
use lowprec_train::dist::{
    decode_bfp8, encode_bfp8, encoded_len, Exchange, ExchangeFormat, Loopback, Transport, Watchdog,
    HEADER_BYTES,
};
use lowprec_train::{FinalReport, TrainConfig, TrainError, Trainer};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn config(precision: &str, epochs: usize, seed: u64, bn: bool) -> TrainConfig {
    let bn = if bn {
        "[[model.layer]]\ntype = \"conv\"\nout = 4\nkernel = 3\npadding = 1\n\
         [[model.layer]]\ntype = \"batchnorm\"\n[[model.layer]]\ntype = \"relu\"\n"
    } else {
        ""
    };
    TrainConfig::from_toml(
        &format!(
            r#"
name = "synthetic"
precision = "{precision}"
seed = {seed}
[data]
dataset = "mnist"
[model]
input = [1, 6, 6]
loss = "cross-entropy"
{bn}
[[model.layer]]
type = "flatten"
[[model.layer]]
type = "linear"
out = 16
bias = true
[[model.layer]]
type = "relu"
[[model.layer]]
type = "dropout"
p = 0.25
[[model.layer]]
type = "linear"
out = 4
[train]
batch = 32
epochs = {epochs}
lr = 0.1
schedule = "linear"
momentum = 0.9
weight_decay = 5e-4
[swa]
start_fraction = 0.5
lr = 0.02
"#
        ),
        "test",
    )
    .unwrap()
}

type RankResult = Result<(FinalReport, Checkpoint), TrainError>;

struct Job<'a> {
    ranks: usize,
    threads: usize,
    format: ExchangeFormat,
    precision: &'a str,
    epochs: usize,
    bn: bool,
    out: Option<&'a Path>,
    resume: Option<PathBuf>,
    stop_after: Option<usize>,
    /// Seed of each rank (normally all the same).
    seeds: Vec<u64>,
}

impl<'a> Job<'a> {
    fn new(ranks: usize, format: &str, precision: &'a str) -> Self {
        Job {
            ranks,
            threads: 1,
            format: format.parse().unwrap(),
            precision,
            epochs: 4,
            bn: false,
            out: None,
            resume: None,
            stop_after: None,
            seeds: vec![7; ranks],
        }
    }

    /// Runs the ranks as threads; rank 0 alone writes to `out`.
    fn run(&self) -> Vec<RankResult> {
        self.run_with(|ep| Box::new(ep))
    }

    fn run_with(&self, wrap: impl Fn(Loopback) -> Box<dyn Transport> + Sync) -> Vec<RankResult> {
        let eps = Loopback::ranks(self.ranks, Duration::from_secs(60));
        std::thread::scope(|s| {
            let handles: Vec<_> = eps
                .into_iter()
                .enumerate()
                .map(|(r, ep)| {
                    let wrap = &wrap;
                    s.spawn(move || {
                        in_pool(self.threads, || -> RankResult {
                            let cfg = config(self.precision, self.epochs, self.seeds[r], self.bn);
                            let out = if r == 0 { self.out } else { None };
                            let o = opts(out, self.resume.as_deref(), self.stop_after);
                            let mut t = Trainer::with_data(cfg, o, splits())?;
                            let seed = t.cfg.seed;
                            t.set_exchange(Exchange::new(wrap(ep), self.format, seed))?;
                            let rep = t.run()?;
                            Ok((rep, t.checkpoint()))
                        })
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }
}

fn plain_run(precision: &str, epochs: usize, out: &Path, resume: Option<&Path>) -> FinalReport {
    let mut t = Trainer::with_data(
        config(precision, epochs, 7, false),
        opts(Some(out), resume, None),
        splits(),
    )
    .unwrap();
    t.run().unwrap()
}

fn ck_bytes(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("checkpoint.safetensors")).unwrap()
}

#[test]
fn one_rank_is_the_one_process_run_bit_for_bit() {
    for precision in ["fp32", "bfp8"] {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let plain = plain_run(precision, 4, &a, None);
        let mut job = Job::new(1, "fp32", precision);
        job.out = Some(&b);
        let r = job.run().pop().unwrap().unwrap().0;
        assert_eq!(ck_bytes(&a), ck_bytes(&b), "{precision}");
        assert_eq!(plain.test_acc.to_bits(), r.test_acc.to_bits());
        assert_eq!(plain.train_loss.to_bits(), r.train_loss.to_bits());
        let d = r.distributed.unwrap();
        assert_eq!((d.ranks, d.exchange.as_str()), (1, "fp32"));
        let params = 36 * 16 + 16 + 16 * 4;
        assert_eq!(d.bytes_per_iteration as usize, HEADER_BYTES + 4 * params);
    }
}

#[test]
fn two_ranks_same_bits_every_run_and_thread_count_and_ranks_agree() {
    for (format, precision, bn) in [
        ("fp32", "fp32", false),
        ("bfp8", "bfp8", false),
        ("bfp8:tensor", "fp32", true),
    ] {
        let mut first: Option<Vec<u8>> = None;
        let mut acc = 0.0;
        for threads in [1, 2, 1] {
            let dir = tempfile::tempdir().unwrap();
            let mut job = Job::new(2, format, precision);
            job.threads = threads;
            job.bn = bn;
            job.out = Some(dir.path());
            let res: Vec<_> = job.run().into_iter().map(Result::unwrap).collect();
            // every rank ends with the same state, rank 0's being the one written
            assert_eq!(res[0].1.tensors, res[1].1.tensors, "{format} ranks agree");
            assert_eq!(
                res[0].1,
                Checkpoint::load(&dir.path().join("checkpoint.safetensors")).unwrap()
            );
            let bytes = ck_bytes(dir.path());
            match &first {
                None => first = Some(bytes),
                Some(f) => assert!(*f == bytes, "{format}: {threads} threads per rank differ"),
            }
            acc = res[0].0.test_acc;
            let d = res[0].0.distributed.clone().unwrap();
            assert_eq!(d.ranks, 2);
            if format == "fp32" {
                assert_eq!(d.exchange_relative_error, 0.0);
            } else {
                assert!(d.exchange_relative_error > 0.0 && d.exchange_relative_error < 0.05);
            }
        }
        // and it learns about as well as one process
        let dir = tempfile::tempdir().unwrap();
        let mut t = Trainer::with_data(
            config(precision, 4, 7, bn),
            opts(Some(dir.path()), None, None),
            splits(),
        )
        .unwrap();
        let one = t.run().unwrap().test_acc;
        // two ranks are not the one-process run: other sum order, per-shard draws and BN
        assert!(ck_bytes(dir.path()) != first.clone().unwrap(), "{format}");
        assert!(
            (acc - one).abs() <= 0.1,
            "{format}: 2 ranks {acc}, 1 process {one}"
        );
        assert!(acc > 0.8, "{format}: {acc}");
    }
}

#[test]
fn resume_with_another_number_of_ranks() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c, d) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
        dir.path().join("d"),
    );
    // 2 ranks, interrupted after 2 of 4 epochs
    let mut job = Job::new(2, "bfp8", "bfp8");
    job.out = Some(&a);
    job.stop_after = Some(2);
    for r in job.run() {
        assert_eq!(r.unwrap().1.epoch, 2);
    }
    let ck = a.join("checkpoint.safetensors");
    for x in [&b, &c, &d] {
        std::fs::create_dir_all(x).unwrap();
        std::fs::copy(&ck, x.join("checkpoint.safetensors")).unwrap();
    }
    // one process resumes it; so does 1 rank of the exchange (fp32), to the same bits
    plain_run("bfp8", 4, &b, Some(&b.join("checkpoint.safetensors")));
    let mut job = Job::new(1, "fp32", "bfp8");
    job.out = Some(&c);
    job.resume = Some(c.join("checkpoint.safetensors"));
    job.run().pop().unwrap().unwrap();
    assert_eq!(ck_bytes(&b), ck_bytes(&c));
    // 3 ranks resume it too
    let mut job = Job::new(3, "bfp8", "bfp8");
    job.out = Some(&d);
    job.resume = Some(d.join("checkpoint.safetensors"));
    let res = job.run();
    let r0 = res[0].as_ref().unwrap();
    assert_eq!(
        (r0.1.epoch, r0.0.distributed.as_ref().unwrap().ranks),
        (4, 3)
    );
    assert!(r0.0.test_acc > 0.8);
    // and 2 ranks resumed equal 2 ranks never interrupted
    let (e, f) = (dir.path().join("e"), dir.path().join("f"));
    let mut job = Job::new(2, "bfp8", "bfp8");
    job.out = Some(&e);
    job.run();
    std::fs::create_dir_all(&f).unwrap();
    std::fs::copy(&ck, f.join("checkpoint.safetensors")).unwrap();
    job.out = Some(&f);
    job.resume = Some(f.join("checkpoint.safetensors"));
    job.run();
    assert_eq!(ck_bytes(&e), ck_bytes(&f));
}

#[test]
fn mismatched_ranks_are_refused_naming_the_rank() {
    let mut job = Job::new(3, "fp32", "fp32");
    job.seeds = vec![7, 7, 8];
    for r in job.run() {
        let e = r.unwrap_err().to_string();
        assert!(
            e.contains("rank 2's configuration differs from rank 0's") && !e.contains("rank 1"),
            "{e}"
        );
    }
}

/// A transport that fails (and leaves) at its `n`-th collective.
struct Dying {
    inner: Option<Loopback>,
    left: usize,
    rank: usize,
}

impl Transport for Dying {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        2
    }
    fn name(&self) -> String {
        "dying".into()
    }
    fn allgather(&mut self, mine: &[u8]) -> Result<Vec<u8>, TrainError> {
        if self.left == 0 {
            self.inner = None;
            return Err(TrainError::Io("rank died".into()));
        }
        self.left -= 1;
        self.inner.as_mut().unwrap().allgather(mine)
    }
}

#[test]
fn a_rank_that_dies_ends_the_others_with_an_error() {
    let job = Job::new(2, "fp32", "fp32");
    let t0 = std::time::Instant::now();
    let res = job.run_with(|ep| {
        if ep.rank() == 1 {
            Box::new(Dying {
                inner: Some(ep),
                left: 5,
                rank: 1,
            })
        } else {
            Box::new(ep)
        }
    });
    assert!(t0.elapsed() < Duration::from_secs(30));
    let e0 = res[0].as_ref().err().unwrap().to_string();
    assert!(e0.contains("rank 1 left the job"), "{e0}");
    assert!(res[1]
        .as_ref()
        .err()
        .unwrap()
        .to_string()
        .contains("rank died"));
}

#[test]
fn a_rank_with_a_non_finite_gradient_stops_every_rank() {
    // learning rate so large that the weights overflow
    let eps = Loopback::ranks(2, Duration::from_secs(10));
    let res: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = eps
            .into_iter()
            .map(|ep| {
                s.spawn(move || {
                    let mut ex = Exchange::new(Box::new(ep), ExchangeFormat::Fp32, 1);
                    let bad = if ex.rank() == 1 { f32::NAN } else { 1.0 };
                    let mut g = [1.0f32, 2.0, bad];
                    let mut h = [3.0f32];
                    let e = ex
                        .all_reduce(9, &["w", "b"], &mut [&mut h, &mut g], [0.0, 0.0])
                        .unwrap_err();
                    e.to_string()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for e in res {
        assert!(
            e.contains("rank 1: the gradient of b has a non-finite value (element 2) at step 9"),
            "{e}"
        );
    }
}

#[test]
fn watchdog_fires_only_for_a_collective_that_overruns() {
    let fired = Arc::new(Mutex::new(Vec::<String>::new()));
    let f = fired.clone();
    let w = Watchdog::start(Duration::from_millis(100), move |what, _| {
        f.lock().unwrap().push(what.to_string())
    });
    {
        let _g = w.guard("quick".into());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(250));
    assert!(fired.lock().unwrap().is_empty());
    {
        let _g = w.guard("the all-reduce of step 3".into());
        std::thread::sleep(Duration::from_millis(400));
    }
    assert_eq!(
        *fired.lock().unwrap(),
        vec!["the all-reduce of step 3".to_string()]
    );
}

#[test]
fn exchange_format_parses_and_refuses() {
    for (s, f) in [
        ("fp32", ExchangeFormat::Fp32),
        ("bfp8", ExchangeFormat::Bfp8 { tile: Some(32) }),
        ("bfp8:tile7", ExchangeFormat::Bfp8 { tile: Some(7) }),
        ("bfp8:tensor", ExchangeFormat::Bfp8 { tile: None }),
    ] {
        let p: ExchangeFormat = s.parse().unwrap();
        assert_eq!(p, f);
        assert_eq!(p.to_string().parse::<ExchangeFormat>().unwrap(), f);
    }
    for s in ["", "bfp4", "bfp8:tile0", "bfp8:tile", "bfp8:tilex", "fp16"] {
        let e = s.parse::<ExchangeFormat>().unwrap_err().to_string();
        assert!(e.contains("expected fp32, bfp8"), "{s}: {e}");
    }
    assert_eq!(encoded_len(ExchangeFormat::Fp32, &[3, 5]), 32);
    assert_eq!(
        encoded_len(ExchangeFormat::Bfp8 { tile: Some(4) }, &[3, 5]),
        8 + 1 + 2
    );
    assert_eq!(
        encoded_len(ExchangeFormat::Bfp8 { tile: None }, &[3, 5, 0]),
        8 + 2
    );
}

/// The codec written from its definition, in f64 with `log2`.
fn reference(x: &[f32], tile: usize, key: StreamKey, first: u64) -> Vec<f32> {
    let mut out = Vec::new();
    for (t, c) in x.chunks(tile).enumerate() {
        let max = c.iter().fold(0f64, |m, &v| m.max(f64::from(v).abs()));
        if max < f64::from(f32::MIN_POSITIVE) {
            out.extend(std::iter::repeat_n(0.0, c.len()));
            continue;
        }
        let e = max.log2().floor();
        let step = 2f64.powf(e - 6.0);
        for (i, &v) in c.iter().enumerate() {
            let u = f64::from(uniform_f32(key, first + (t * tile + i) as u64));
            let q = (f64::from(v) / step + u).floor().clamp(-127.0, 127.0);
            out.push((q * step) as f32);
        }
    }
    out
}

#[test]
fn bfp8_codec_matches_the_reference() {
    let key = StreamKey::new(3, 11);
    let mut seed = 1u64;
    let mut next = move || {
        seed = lowprec_formats::rng::splitmix64(seed);
        seed
    };
    for n in [1usize, 7, 33, 1000, 1031] {
        for tile in [1usize, 7, 32, n] {
            let x: Vec<f32> = (0..n)
                .map(|i| {
                    let h = next();
                    let mag =
                        ((h >> 40) as f32 / (1u64 << 24) as f32) * 2f32.powi((h % 40) as i32 - 30);
                    match i % 11 {
                        0 => 0.0,
                        1 => -mag,
                        2 => 1.0e-39, // subnormal
                        _ => mag,
                    }
                })
                .collect();
            let (mut e, mut m) = (Vec::new(), Vec::new());
            let err_sq = encode_bfp8(&x, tile, key, 100, &mut e, &mut m).unwrap();
            assert_eq!((e.len(), m.len()), (n.div_ceil(tile), n));
            let mut d = vec![f32::NAN; n];
            decode_bfp8(&e, &m, tile, &mut d);
            let r = reference(&x, tile, key, 100);
            let want: f64 = d
                .iter()
                .zip(&x)
                .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
                .sum();
            assert!(
                (err_sq - want).abs() <= 1e-9 * want.max(1e-30),
                "{err_sq} {want}"
            );
            for i in 0..n {
                assert_eq!(
                    d[i].to_bits(),
                    r[i].to_bits(),
                    "n {n} tile {tile} i {i}: {}",
                    x[i]
                );
            }
        }
    }
    // zeros encode as zero tiles
    let (mut e, mut m) = (Vec::new(), Vec::new());
    encode_bfp8(&[0.0; 9], 4, key, 0, &mut e, &mut m).unwrap();
    assert_eq!((e, m), (vec![0u8; 3], vec![0i8; 9]));
    // stochastic rounding is unbiased: the mean of many encodings of 0.3 (step 2^-8)
    let x = vec![0.3f32; 4096];
    let (mut e, mut m) = (Vec::new(), Vec::new());
    encode_bfp8(&x, 4096, key, 0, &mut e, &mut m).unwrap();
    let mut d = vec![0f32; 4096];
    decode_bfp8(&e, &m, 4096, &mut d);
    let mean = d.iter().map(|&v| f64::from(v)).sum::<f64>() / 4096.0;
    assert!((mean - 0.3).abs() < 1e-4, "{mean}");
    // NaN and infinities are refused with their index
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut x = vec![1.0f32; 40];
        x[37] = bad;
        let (mut e, mut m) = (Vec::new(), Vec::new());
        assert_eq!(encode_bfp8(&x, 32, key, 0, &mut e, &mut m), Err(37));
    }
}

#[test]
fn loopback_gathers_in_rank_order_whatever_the_arrival_order() {
    for round in 0..20 {
        let eps = Loopback::ranks(4, Duration::from_secs(10));
        let arrivals = Arc::new(AtomicUsize::new(0));
        let res: Vec<Vec<u8>> = std::thread::scope(|s| {
            let hs: Vec<_> = eps
                .into_iter()
                .map(|mut ep| {
                    let arrivals = arrivals.clone();
                    s.spawn(move || {
                        let r = ep.rank();
                        std::thread::sleep(Duration::from_micros(
                            ((r * 7 + round) % 5) as u64 * 300,
                        ));
                        arrivals.fetch_add(1, Ordering::SeqCst);
                        let a = ep.allgather(&[r as u8, 10 + r as u8]).unwrap();
                        let b = ep.allgather(&[100 + r as u8]).unwrap();
                        [a, b].concat()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for r in res {
            assert_eq!(r, vec![0, 10, 1, 11, 2, 12, 3, 13, 100, 101, 102, 103]);
        }
    }
}
