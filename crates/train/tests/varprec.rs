//! Variable precision: schedule parsing and validation (errors naming the entry), formats
//! changing at their exact step, FAST's signal against a plain f64 reference, runs resumed
//! across a precision change bit-identical to runs that never stopped, and the same bits at
//! one and two threads.

mod common;

use common::{in_pool, opts, splits};
use lowprec_formats::rng::splitmix64;
use lowprec_formats::{BfpFormat, Block, NumberFormat, Rounding};
use lowprec_nn::TensorKind;
use lowprec_train::checkpoint::Checkpoint;
use lowprec_train::varprec::{relative_change, ScheduleEntry};
use lowprec_train::{TrainConfig, Trainer};

/// 320 training examples in batches of 32: 10 iterations per epoch.
fn config(extra: &str, epochs: usize) -> TrainConfig {
    TrainConfig::from_toml(
        &format!(
            r#"
name = "varprec"
precision = "bfp8"
seed = 3
[data]
dataset = "mnist"
[model]
input = [1, 6, 6]
loss = "cross-entropy"
[[model.layer]]
type = "conv"
name = "conv1"
out = 3
kernel = 3
padding = 1
[[model.layer]]
type = "relu"
[[model.layer]]
type = "flatten"
[[model.layer]]
type = "linear"
name = "fc1"
out = 16
bias = true
[[model.layer]]
type = "relu"
[[model.layer]]
type = "linear"
name = "fc2"
out = 4
[train]
batch = 32
epochs = {epochs}
lr = 0.1
schedule = "linear"
momentum = 0.9
{extra}
"#
        ),
        "test",
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

const SCHEDULE: &str = r#"
[[precision_schedule]]
layers = ["fc1"]
iterations = [0, 15]
width = 4
[[precision_schedule]]
kinds = ["errors"]
depth = [0.5, 1.0]
epochs = [1, 3]
format = "bfp6:axis0:stochastic"
[[precision_schedule]]
index = [0, 1]
kinds = ["weights"]
iterations = [25, 1000]
width = 2
"#;

const FAST: &str = "[fast]\nalpha = 0.5\nbeta = 0.3\nevery = 4\n";

fn trainer(extra: &str, epochs: usize) -> Result<Trainer, String> {
    Trainer::with_data(config(extra, epochs), opts(None, None, None), splits())
        .map_err(|e| e.to_string())
}

#[test]
fn schedules_parse_and_bad_entries_are_named() {
    let e = ScheduleEntry::parse(r#"{ layers = ["fc1"], epochs = [0, 2], width = 4 }"#).unwrap();
    assert_eq!(e.layers, vec!["fc1".to_string()]);
    assert_eq!((e.epochs, e.width), (Some([0, 2]), Some(4)));
    let e = ScheduleEntry::parse(r#"{ kinds = ["acts"], format = "bfp6:tile16:e4" }"#).unwrap();
    assert_eq!(e.kinds, vec![TensorKind::Acts]);
    assert!(ScheduleEntry::parse("{ widht = 4 }").is_err());
    assert!(ScheduleEntry::parse("{ width = 4").is_err());
    // static errors, at load time, naming the entry
    let entry = |body: &str| {
        format!("[[precision_schedule]]\nwidth = 4\n\n[[precision_schedule]]\n{body}\n")
    };
    let load = |body: &str| {
        let text = format!("{}\n{}", config("", 1).to_toml(), entry(body));
        TrainConfig::from_toml(&text, "t")
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    for (body, needle) in [
        ("width = 0", "width 0"),
        ("width = 5", "width 5"),
        ("width = 18", "width 18"),
        ("format = \"bfp7:axis0\"", "mantissa width 7"),
        ("width = 4\nformat = \"bfp4\"", "not both"),
        ("layers = [\"fc1\"]", "needs `width` or `format`"),
        ("width = 4\nindex = [2, 2]", "empty"),
        ("width = 4\ndepth = [0.5, 1.5]", "depth"),
        ("width = 4\niterations = [3, 1]", "empty"),
        (
            "width = 4\niterations = [0, 5]\nepochs = [0, 1]",
            "not both",
        ),
        ("width = 4\nkinds = [\"bias\"]", "bias"),
    ] {
        let e = load(body).unwrap_err();
        assert!(
            e.contains("precision_schedule[1]") || e.contains("bias"),
            "{body}: {e}"
        );
        assert!(e.contains(needle), "{body}: expected `{needle}` in {e}");
    }
    // errors that need the model, at trainer construction
    for (sched, needle) in [
        (
            "[[precision_schedule]]\nlayers = [\"fc9\"]\nwidth = 4\n",
            "precision_schedule[0]: unknown layer `fc9`",
        ),
        (
            "[[precision_schedule]]\nindex = [1, 4]\nwidth = 4\n",
            "precision_schedule[0]: index [1, 4) past the 3",
        ),
        (
            "[[precision_schedule]]\nkinds = [\"grads\"]\nwidth = 4\n",
            "not BFP",
        ),
        (
            "[[precision_schedule]]\nlayers = [\"fc1\"]\nepochs = [0, 2]\nwidth = 4\n\
             [[precision_schedule]]\nindex = [1, 2]\nkinds = [\"acts\"]\niterations = [19, 30]\nwidth = 6\n",
            "precision_schedule[0] and precision_schedule[1] overlap: both set acts of layer `fc1` in iterations [19, 20)",
        ),
    ] {
        let e = trainer(sched, 2).err().unwrap();
        assert!(e.contains(needle), "expected `{needle}` in {e}");
    }
    // touching ranges do not overlap
    trainer(
        "[[precision_schedule]]\nlayers = [\"fc1\"]\nepochs = [0, 2]\nwidth = 4\n\
         [[precision_schedule]]\nlayers = [\"fc1\"]\niterations = [20, 30]\nwidth = 6\n",
        3,
    )
    .unwrap();
    // FAST's options
    for (fast, needle) in [
        ("[fast]\nevery = 0\n", "fast.every"),
        ("[fast]\nalpha = -1.0\n", "fast.alpha"),
        ("[fast]\nstart_width = 3\n", "fast.start_width"),
        ("[fast]\nmax_width = 10\n", "8 bits"),
        ("[fast]\nkinds = [\"grads\"]\n", "not a GEMM operand"),
    ] {
        let text = format!("{}\n{fast}", config("", 1).to_toml());
        let e = TrainConfig::from_toml(&text, "t").unwrap_err().to_string();
        assert!(e.contains(needle), "expected `{needle}` in {e}");
    }
}

#[test]
fn a_scheduled_format_changes_at_its_exact_step() {
    let t = trainer(SCHEDULE, 4).unwrap();
    let c = &t.control;
    assert_eq!(c.per_epoch, 10);
    let (conv1, fc1, fc2) = (0, 3, 5);
    let bits = |s: u64, node: usize, k: TensorKind| match c.plan_at(s).layer(node).get(k) {
        NumberFormat::Bfp(b) => b.wl,
        _ => 32,
    };
    let w = TensorKind::Weights;
    let e = TensorKind::Errors;
    for s in 0..40u64 {
        // entry 0: fc1 (all three GEMM operands) at 4 bits for iterations [0, 15)
        let want = if s < 15 { 4 } else { 8 };
        assert_eq!(bits(s, fc1, w), want, "fc1 weights at {s}");
        assert_eq!(bits(s, fc1, TensorKind::Acts), want, "fc1 acts at {s}");
        // entry 1: errors of the deeper half (fc1 at depth 1/3 is not in it) in epochs 1-2
        let want = if (10..30).contains(&s) { 6 } else { 8 };
        assert_eq!(bits(s, fc2, e), want, "fc2 errors at {s}");
        assert_eq!(bits(s, fc1, e), if s < 15 { 4 } else { 8 });
        // entry 2: conv1's weights at 2 bits from iteration 25
        assert_eq!(bits(s, conv1, w), if s >= 25 { 2 } else { 8 });
        assert_eq!(bits(s, conv1, TensorKind::Acts), 8);
        // the optimiser's kinds and the non-GEMM layers keep the policy
        assert_eq!(bits(s, fc1, TensorKind::Grads), 32);
        assert_eq!(bits(s, 1, w), 8);
    }
    // a run's weights follow the uniform run's up to the change and leave it after:
    // a change at iteration 10 (epoch 1) of fc2's weights
    let sched = "[[precision_schedule]]\nlayers = [\"fc2\"]\nkinds = [\"weights\"]\niterations = [10, 1000]\nwidth = 2\n";
    let run = |extra: &str, epochs| {
        let mut t = trainer(extra, 3).unwrap();
        for _ in 0..epochs {
            t.run_epoch().unwrap();
        }
        t.checkpoint().tensors
    };
    assert_eq!(run(sched, 1), run("", 1), "identical before the change");
    assert_ne!(run(sched, 2), run("", 2), "different after it");
}

/// Plain f64 BFP with round-to-nearest-even, one block per row (axis0) or per tensor.
fn bfp_ref(x: &[f32], rows: usize, cols: usize, wl: u32, per_row: bool) -> Vec<f64> {
    let blocks: Vec<(usize, usize)> = if per_row {
        (0..rows).map(|r| (r * cols, (r + 1) * cols)).collect()
    } else {
        vec![(0, rows * cols)]
    };
    let mut out = vec![0f64; x.len()];
    let hi = ((1i64 << (wl - 1)) - 1) as f64;
    for (a, b) in blocks {
        let m = x[a..b].iter().fold(0f64, |m, &v| m.max((v as f64).abs()));
        if m == 0.0 {
            continue;
        }
        let e = m.log2().floor();
        let ulp = 2f64.powf(e - (wl as f64 - 2.0));
        for i in a..b {
            let q = (x[i] as f64 / ulp).round_ties_even().clamp(-hi, hi);
            out[i] = q * ulp;
        }
    }
    out
}

#[test]
fn the_signal_matches_a_plain_reference() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("signal seed {seed}");
    let mut s = seed;
    let mut next = || {
        s = s.wrapping_add(1);
        (splitmix64(s) >> 11) as f64 / (1u64 << 53) as f64
    };
    for (rows, cols) in [(1, 1), (1, 7), (3, 33), (2, 1000), (7, 16)] {
        for per_row in [false, true] {
            for wl in [2, 4, 6] {
                let scale = 10f64.powf(next() * 6.0 - 3.0);
                let x: Vec<f32> = (0..rows * cols)
                    .map(|_| ((next() * 2.0 - 1.0) * scale) as f32)
                    .collect();
                let block = if per_row {
                    Block::Axis(0)
                } else {
                    Block::Tensor
                };
                let f = BfpFormat::new(wl, block, Rounding::Stochastic).unwrap();
                let got = relative_change(&x, rows, cols, &f).unwrap();
                let lo = bfp_ref(&x, rows, cols, wl, per_row);
                let hi = bfp_ref(&x, rows, cols, wl + 2, per_row);
                let num: f64 = lo.iter().zip(&hi).map(|(a, b)| (b - a).abs()).sum();
                let den: f64 = lo.iter().map(|a| a.abs()).sum();
                let want = num / den;
                assert!(
                    (got - want).abs() <= 1e-9 * want.max(1.0),
                    "{rows}x{cols} wl {wl} per_row {per_row}: {got} vs {want}"
                );
            }
        }
    }
    // zeros: no change; a tensor with NaN is an error
    let f = BfpFormat::new(2, Block::Tensor, Rounding::Stochastic).unwrap();
    assert_eq!(relative_change(&[0.0; 5], 1, 5, &f).unwrap(), 0.0);
    assert!(relative_change(&[1.0, f32::NAN], 1, 2, &f).is_err());
}

fn resumed_equals_straight(extra: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let cfg = || config(extra, 4);
    let mut t = Trainer::with_data(cfg(), opts(Some(&a), None, None), splits()).unwrap();
    let full = t.run().unwrap();
    let full_log = t.control.fast.as_ref().map(|f| f.1.clone());
    let mut t = Trainer::with_data(cfg(), opts(Some(&b), None, Some(2)), splits()).unwrap();
    t.run().unwrap();
    drop(t); // the interrupted run ends, releasing its output directory
    let ck = b.join("checkpoint.safetensors");
    let mut t = Trainer::with_data(cfg(), opts(Some(&b), Some(&ck), None), splits()).unwrap();
    assert_eq!(t.step, 20);
    let resumed = t.run().unwrap();
    let ca = Checkpoint::load(&a.join("checkpoint.safetensors")).unwrap();
    let cb = Checkpoint::load(&ck).unwrap();
    assert_eq!(ca.tensors, cb.tensors, "{extra}");
    assert_eq!(ca.extra.get("fast"), cb.extra.get("fast"), "{extra}");
    assert_eq!(full.test_acc, resumed.test_acc);
    assert_eq!(full_log, t.control.fast.as_ref().map(|f| f.1.clone()));
}

#[test]
fn resume_across_a_precision_change_is_bit_identical() {
    // the schedule changes formats at iterations 10, 15, 25 and 30, on both sides of the
    // interruption after iteration 20
    resumed_equals_straight(SCHEDULE);
    // FAST's widths move during the run; its state travels in the checkpoint
    resumed_equals_straight(FAST);
    let t = trainer(FAST, 1).unwrap();
    assert!(t.control.fast.is_some());
}

#[test]
fn fast_raises_widths_and_logs_every_decision() {
    let mut t = trainer(FAST, 4).unwrap();
    t.run().unwrap();
    let (cfg, st) = t.control.fast.as_ref().unwrap();
    assert_eq!(cfg.every, 4);
    // 40 iterations, evaluated at 0, 4, ..., 36; 3 layers x 3 kinds unless at 8 bits already
    let evals: std::collections::BTreeSet<u64> = st.log.iter().map(|d| d.iteration).collect();
    assert_eq!(
        evals.iter().copied().collect::<Vec<_>>(),
        (0..10).map(|i| i * 4 + 1).collect::<Vec<_>>()
    );
    for d in &st.log {
        let l = t
            .control
            .gemm
            .iter()
            .position(|g| g.name == d.layer)
            .unwrap();
        let want =
            cfg.alpha - cfg.beta * (d.iteration - 1) as f64 / 40.0 - cfg.beta * l as f64 / 3.0;
        assert!((d.eps - want).abs() < 1e-12, "{d:?}");
        assert!(d.r.is_finite() && d.r >= 0.0, "{d:?}");
        assert!([2, 4, 6, 8].contains(&d.width), "{d:?}");
    }
    // widths never fall, and rise exactly when r > eps
    for g in &t.control.gemm {
        for k in &cfg.kinds {
            let mut prev = cfg.start_width;
            for d in st.log.iter().filter(|d| d.layer == g.name && d.kind == *k) {
                let want = if d.r > d.eps { (prev + 2).min(8) } else { prev };
                assert_eq!(d.width, want, "{d:?}");
                prev = d.width;
            }
        }
    }
    assert!(
        st.log.iter().any(|d| d.width > cfg.start_width),
        "some width rose"
    );
}

#[test]
fn same_bits_at_one_and_two_threads() {
    for extra in [SCHEDULE, FAST] {
        let run = |threads| {
            in_pool(threads, || {
                let mut t = trainer(extra, 2).unwrap();
                t.run().unwrap();
                let ck = t.checkpoint();
                (ck.tensors, ck.extra.get("fast").cloned())
            })
        };
        assert_eq!(run(1), run(2), "{extra}");
    }
}

#[test]
fn a_four_bit_exponent_drowns_small_errors() {
    use lowprec_formats::{fake_quantize, StreamKey};
    use lowprec_nn::Precision;
    use lowprec_train::varprec::{G16E8, G16M4};
    // 4 x 16 back-propagated errors of magnitude 2^-12 .. 2^-11 (about 2.4e-4 .. 4.9e-4, the
    // size of a deep layer's errors at batch 128), signs mixed
    let (rows, cols) = (4, 16);
    let x: Vec<f32> = (0..rows * cols)
        .map(|i| {
            let u = (splitmix64(i as u64) >> 40) as f32 / (1u64 << 24) as f32;
            let s = if i % 3 == 0 { -1.0 } else { 1.0 };
            s * (1.0 + u) * 2f32.powi(-12)
        })
        .collect();
    let errors = |p: &str| match p.parse::<Precision>().unwrap().errors {
        NumberFormat::Bfp(b) => b,
        other => panic!("{other}"),
    };
    let (e4, e8) = (errors(G16M4), errors(G16E8));
    assert_eq!((e4.exp_bits, e8.exp_bits, e4.wl, e8.wl), (4, 8, 4, 4));
    assert_eq!((e4.block, e8.block), (Block::Tile(16), Block::Tile(16)));
    let quant = |f: BfpFormat| {
        let mut out = vec![0f32; x.len()];
        fake_quantize(
            &x,
            &[rows, cols],
            &NumberFormat::Bfp(f),
            StreamKey::new(7, 0),
            "errors",
            &mut out,
        )
        .unwrap();
        out
    };
    let zeros = |q: &[f32]| q.iter().filter(|v| **v == 0.0).count();
    let rel_l1 = |q: &[f32]| {
        let num: f64 = q.iter().zip(&x).map(|(a, b)| (*a - *b).abs() as f64).sum();
        num / x.iter().map(|v| v.abs() as f64).sum::<f64>()
    };
    // Nearest rounding: the 4-bit exponent saturates at -8, the step is 2^-10 and every value
    // (below half a step) flushes to zero; the 8-bit exponent (-12, step 2^-14) keeps each
    // within one step, sign and all.
    let nearest = |f: BfpFormat| BfpFormat {
        rounding: Rounding::NearestEven,
        ..f
    };
    let q4 = quant(nearest(e4));
    assert_eq!(zeros(&q4), x.len(), "{q4:?}");
    let q8 = quant(nearest(e8));
    assert_eq!(zeros(&q8), 0);
    for (q, v) in q8.iter().zip(&x) {
        assert!(
            (q - v).abs() <= 2f32.powi(-14) && q.signum() == v.signum(),
            "{q} {v}"
        );
    }
    assert!(rel_l1(&q8) < 0.15, "{}", rel_l1(&q8));
    // Stochastic rounding (the training formats'): still most values become zero at e4 and
    // the rest jump to a step 2-4x their size; e8 zeroes none.
    let (s4, s8) = (quant(e4), quant(e8));
    assert!(zeros(&s4) > x.len() / 2, "{} of {}", zeros(&s4), x.len());
    assert!(s4.iter().all(|v| *v == 0.0 || v.abs() == 2f32.powi(-10)));
    assert_eq!(zeros(&s8), 0);
    assert!(
        rel_l1(&s4) > 4.0 * rel_l1(&s8),
        "{} {}",
        rel_l1(&s4),
        rel_l1(&s8)
    );
}

#[test]
fn the_first_layer_has_no_dx_gemm() {
    // conv1 reads the network input: no input gradient is computed for it, and the cost model
    // charges no dX GEMM; the same for a linear layer behind a flatten of the input.
    let t = trainer("", 1).unwrap();
    let first: Vec<(String, bool)> = t
        .control
        .gemm
        .iter()
        .map(|g| (g.name.clone(), g.first))
        .collect();
    assert_eq!(
        first,
        vec![
            ("conv1".to_string(), true),
            ("fc1".to_string(), false),
            ("fc2".to_string(), false)
        ]
    );
    let mlp = TrainConfig::from_toml(
        r#"
name = "mlp"
[data]
dataset = "mnist"
[model]
input = [1, 6, 6]
loss = "cross-entropy"
[[model.layer]]
type = "flatten"
[[model.layer]]
type = "linear"
name = "fc1"
out = 8
[[model.layer]]
type = "relu"
[[model.layer]]
type = "linear"
name = "fc2"
out = 4
[train]
batch = 32
epochs = 1
lr = 0.1
"#,
        "test",
    )
    .unwrap();
    let t = Trainer::with_data(mlp, opts(None, None, None), splits()).unwrap();
    let g = &t.control.gemm;
    assert_eq!((g[0].name.as_str(), g[0].first), ("fc1", true));
    assert_eq!((g[1].name.as_str(), g[1].first), ("fc2", false));
    assert!(!t.model.needs_input_grad(1) && t.model.needs_input_grad(3));
}

#[test]
fn evaluating_every_n_iterations_changes_no_bits() {
    let run = |every: Option<u64>| {
        let mut t = trainer(FAST, 2).unwrap();
        t.eval_every = every;
        t.run().unwrap();
        let ck = t.checkpoint();
        (ck.tensors, ck.extra.get("fast").cloned(), t.step_evals)
    };
    let (plain, with) = (run(None), run(Some(3)));
    assert_eq!((&plain.0, &plain.1), (&with.0, &with.1));
    // 10 iterations per epoch: every 3 iterations, and at the epoch ends
    let steps: Vec<(u64, bool)> = with.2.iter().map(|e| (e.step, e.epoch_end)).collect();
    let mut want: Vec<(u64, bool)> = [3, 6, 9, 12, 15, 18].map(|s| (s, false)).to_vec();
    want.extend([(10, true), (20, true)]);
    want.sort();
    assert_eq!(steps, want);
    assert_eq!(plain.2.len(), 2, "epoch ends only");
    // an evaluation at an epoch end is the epoch's test accuracy
    assert_eq!(with.2[3].test_acc, plain.2[0].test_acc);
    assert!(with.2.iter().all(|e| (0.0..=1.0).contains(&e.test_acc)));
}
