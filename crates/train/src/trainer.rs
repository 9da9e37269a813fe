//! The training loop: epochs of SGD over shuffled batches, SWA, evaluation, metrics and
//! checkpoints.
//!
//! Everything random (shuffling, augmentation, dropout, stochastic rounding) is a pure function
//! of `(seed, epoch or step, index)`, and the only state carried from one step to the next is
//! what the checkpoint holds (weights, momentum, SWA average, layer buffers, epoch, step). So a
//! run resumed from the checkpoint of epoch `e` produces the same bytes as one that never
//! stopped.

use indicatif::{ProgressBar, ProgressStyle};
use lowprec_data::{Batch, BatchConfig, EpochBatches, TargetKind};
use lowprec_kernels::GemmBackend;
use lowprec_nn::loss::Target;
use lowprec_nn::{Ctx, Loss, Model, PrecisionPlan, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::checkpoint::{write_atomic, Checkpoint};
use crate::config::TrainConfig;
use crate::data::{self, DataSplits};
use crate::dist::Exchange;
use crate::optim::{Sgd, Swa};
use crate::rundir::{Existing, RunDir};
use crate::schedule::learning_rate;
use crate::step::forward_backward;
use crate::varprec::{FastState, PrecisionControl};
use crate::TrainError;

/// Stochastic-rounding steps used by evaluation passes (far from any training step).
/// The loss target of a batch: its labels, or its regression / auto-encoder values.
fn target_of(batch: &Batch) -> Target<'_> {
    if batch.targets.is_empty() {
        Target::Labels(&batch.labels)
    } else {
        Target::Values(&batch.targets)
    }
}

fn nan() -> f64 {
    f64::NAN
}

/// An f64 that is NaN where it has no meaning, written as JSON `null` and read back as NaN.
mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_nan() {
            s.serialize_none()
        } else {
            s.serialize_f64(*v)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

const EVAL_STEP_BASE: u64 = 1 << 62;

/// Seed offset of the batches that recompute batch-norm statistics for the SWA model.
const BN_RECOMPUTE_SEED: u64 = 0x5eed_b7a7_5eed_b7a7;
/// Weight version marking "SWA weights loaded" (forces re-quantisation).
const SWA_VERSION: u64 = u64::MAX - 7;

pub struct RunOptions {
    /// Directory for metrics.jsonl, final.json and checkpoints (none: keep nothing).
    pub out_dir: Option<PathBuf>,
    /// Resume from this checkpoint.
    pub resume_from: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub backend: Arc<dyn GemmBackend>,
    /// Threads of the pool the run is executed in (recorded in the outputs).
    pub threads: usize,
    pub progress: bool,
    /// Stop after this many epochs of this invocation (a deliberate interruption, for tests).
    pub stop_after: Option<usize>,
    /// Print a line per epoch on stderr.
    pub verbose: bool,
    /// Replace the results already in `out_dir` (without it, and without `resume_from`, a
    /// directory that holds a run is refused).
    pub overwrite: bool,
    /// Resume even if the configuration differs from the checkpoint's; the change is recorded
    /// in the checkpoint's metadata (`config_changes`). Without it such a resume is refused.
    pub allow_config_change: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub step: u64,
    pub lr: f64,
    pub train_loss: f64,
    /// Accuracies are NaN (`null` in JSON) for a regression or auto-encoder set.
    #[serde(with = "nan_as_null")]
    pub train_acc: f64,
    pub test_loss: f64,
    #[serde(with = "nan_as_null")]
    pub test_acc: f64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub swa_test_acc: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub swa_test_loss: Option<f64>,
    pub seconds: f64,
    pub samples_per_sec: f64,
    pub precision: String,
}

/// A test evaluation at an iteration boundary ([`Trainer::eval_every`], and every epoch end).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepEval {
    /// Iterations done when the model was evaluated.
    pub step: u64,
    /// Whether this is an epoch end.
    pub epoch_end: bool,
    pub test_loss: f64,
    #[serde(with = "nan_as_null")]
    pub test_acc: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FinalReport {
    pub name: String,
    pub precision: String,
    pub backend: String,
    pub seed: u64,
    pub threads: usize,
    pub epochs: usize,
    pub steps: u64,
    #[serde(with = "nan_as_null")]
    pub test_acc: f64,
    pub swa_test_acc: Option<f64>,
    pub train_loss: f64,
    /// The last epoch's test loss (cross-entropy, or the mean squared error of a regression).
    #[serde(default = "nan", with = "nan_as_null")]
    pub test_loss: f64,
    /// The SWA model's last test loss, where SWA ran.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub swa_test_loss: Option<f64>,
    /// Wall time of all epochs of this run, including those before a resume.
    pub seconds: f64,
    pub seconds_per_iteration: f64,
    /// Data-parallel runs only: ranks, exchange format and its measured cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distributed: Option<DistributedReport>,
}

/// The gradient exchange of a data-parallel run, as seen by the rank that reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DistributedReport {
    pub ranks: usize,
    pub exchange: String,
    pub transport: String,
    /// Bytes one rank contributes to each gradient all-reduce (header included).
    pub bytes_per_iteration: u64,
    /// Wall time per iteration spent in the all-reduce (encode, transport, decode, sum).
    pub exchange_seconds_per_iteration: f64,
    /// Relative L2 error of the encoded gradients (0 for fp32), over this invocation.
    pub exchange_relative_error: f64,
}

pub struct Trainer {
    pub cfg: TrainConfig,
    pub model: Model,
    pub sgd: Sgd,
    pub swa: Swa,
    pub data: DataSplits,
    pub epoch: usize,
    pub step: u64,
    pub history: Vec<EpochMetrics>,
    /// Also evaluate the test set every this many iterations (`None`: at epoch ends only).
    /// Evaluation changes no training state, so the run's bits do not depend on it.
    pub eval_every: Option<u64>,
    /// Every evaluation so far (at `eval_every` iterations and at epoch ends), in order.
    pub step_evals: Vec<StepEval>,
    /// Configuration changes accepted at resumes (`--allow-config-change`), oldest first.
    pub config_changes: Vec<String>,
    /// The formats of every layer (uniform in `cfg.precision` unless changed).
    pub plan: PrecisionPlan,
    /// The layer of every parameter (for the optimiser's per-layer formats).
    param_layers: Vec<usize>,
    /// Where the plan comes from at every step: the schedule and FAST.
    pub control: PrecisionControl,
    opts: RunOptions,
    loss: Loss,
    /// The claimed output directory (locked while the trainer lives).
    run_dir: Option<RunDir>,
    /// Data-parallel training: this rank's gradient exchange.
    exchange: Option<Exchange>,
}

impl Trainer {
    pub fn new(cfg: TrainConfig, opts: RunOptions) -> Result<Self, TrainError> {
        // the output directory is claimed before the data are loaded, so that a directory that
        // cannot be written or is in use fails at once
        let run_dir = claim_out_dir(&opts)?;
        let regression = cfg.model.loss == lowprec_nn::LossKind::Mse;
        let data = data::load_with_targets(&cfg.data, regression, opts.data_dir.clone())?;
        Self::build(cfg, opts, data, run_dir)
    }

    /// Builds a trainer on data already in memory.
    pub fn with_data(
        cfg: TrainConfig,
        opts: RunOptions,
        data: DataSplits,
    ) -> Result<Self, TrainError> {
        let run_dir = claim_out_dir(&opts)?;
        Self::build(cfg, opts, data, run_dir)
    }

    fn build(
        cfg: TrainConfig,
        opts: RunOptions,
        data: DataSplits,
        run_dir: Option<RunDir>,
    ) -> Result<Self, TrainError> {
        let ds = &data.train;
        let want = vec![ds.channels, ds.height, ds.width];
        let spec_in: usize = cfg.model.input.iter().product();
        if spec_in != ds.channels * ds.height * ds.width {
            return Err(TrainError::Config(format!(
                "model.input {:?} ({spec_in} values) does not match the examples of the data ({}), \
                 {want:?} ({} values)",
                cfg.model.input,
                cfg.data.path.as_deref().unwrap_or(&cfg.data.dataset),
                ds.sample_len()
            )));
        }
        let mut cfg = cfg;
        cfg.model.input = want;
        let model = Model::build(&cfg.model, cfg.seed)?;
        model.check_training_memory(cfg.train.batch)?;
        let outputs: usize = model.output_shape().iter().product();
        if outputs != ds.output_len() {
            let what = match ds.target {
                TargetKind::Class => format!("{} classes", ds.classes),
                TargetKind::Values(n) => format!("{n} target values per example"),
                TargetKind::Input => {
                    format!("examples of {} values to reconstruct", ds.sample_len())
                }
            };
            return Err(TrainError::Config(format!(
                "the data ({}) has {what} but the network's last layer has {outputs} outputs: \
                 change the last layer's `out`{}",
                cfg.data.path.as_deref().unwrap_or(&cfg.data.dataset),
                if ds.target == TargetKind::Class {
                    " (or set data.classes)"
                } else {
                    ""
                }
            )));
        }
        let sgd = Sgd::new(cfg.train.momentum, cfg.train.weight_decay, &model.params());
        let loss = Loss::new(cfg.model.loss);
        let plan = PrecisionPlan::uniform(cfg.precision.clone(), model.num_layers());
        let param_layers = model.param_layers();
        let per_epoch = EpochBatches::new(
            &data.train,
            &data.norm,
            BatchConfig::train(cfg.train.batch, cfg.seed),
            0,
        )?
        .num_batches() as u64;
        let control = PrecisionControl::new(
            &cfg.precision,
            &model,
            &cfg.precision_schedule,
            cfg.fast.as_ref(),
            per_epoch,
            cfg.train.epochs,
        )?;
        let mut t = Trainer {
            cfg,
            model,
            sgd,
            swa: Swa::new(),
            data,
            epoch: 0,
            step: 0,
            history: Vec::new(),
            eval_every: None,
            step_evals: Vec::new(),
            config_changes: Vec::new(),
            plan,
            param_layers,
            control,
            opts,
            loss,
            run_dir,
            exchange: None,
        };
        if let Some(p) = t.opts.resume_from.clone() {
            let ck = Checkpoint::load(&p)?;
            t.restore(&ck)?;
            if t.opts.verbose {
                eprintln!(
                    "resumed from {} at epoch {} (step {})",
                    p.display(),
                    t.epoch,
                    t.step
                );
            }
        }
        Ok(t)
    }

    /// Makes this trainer one rank of a data-parallel run: each step it trains on its part of
    /// the global batch and the ranks all-reduce their gradients through `ex` before the SGD
    /// step. The ranks' configurations and starting weights are compared first.
    pub fn set_exchange(&mut self, mut ex: Exchange) -> Result<(), TrainError> {
        if self.control.fast.is_some() {
            return Err(TrainError::Config(
                "FAST's adaptive precision decides from one process's statistics and is not \
                 supported in distributed training"
                    .into(),
            ));
        }
        if self.cfg.train.batch < ex.size() {
            return Err(TrainError::Config(format!(
                "batch {} is smaller than the {} ranks: each rank needs at least one example",
                self.cfg.train.batch,
                ex.size()
            )));
        }
        let config = format!(
            "{}\n# exchange {} ranks {}",
            self.cfg.to_toml(),
            ex.format(),
            ex.size()
        );
        let mut state = Vec::new();
        state.extend_from_slice(&(self.epoch as u64).to_le_bytes());
        state.extend_from_slice(&self.step.to_le_bytes());
        for p in self.model.params() {
            state.extend(p.value.iter().flat_map(|v| v.to_le_bytes()));
        }
        ex.check_same(&config, &state)?;
        self.exchange = Some(ex);
        Ok(())
    }

    /// This process's exchange, when it is one rank of a data-parallel run.
    pub fn exchange(&self) -> Option<&Exchange> {
        self.exchange.as_ref()
    }

    fn swa_start(&self) -> Option<usize> {
        self.cfg
            .swa
            .as_ref()
            .map(|s| s.start(self.cfg.train.epochs))
    }

    /// Trains until `train.epochs` (or `stop_after` more epochs), evaluating after each epoch.
    pub fn run(&mut self) -> Result<FinalReport, TrainError> {
        let mut done_here = 0;
        while self.epoch < self.cfg.train.epochs {
            if self.opts.stop_after.is_some_and(|s| done_here >= s) {
                break;
            }
            let m = self.run_epoch()?;
            if self.opts.verbose {
                let quality = if m.test_acc.is_nan() {
                    format!(
                        "test loss {:.5}{}",
                        m.test_loss,
                        m.swa_test_loss
                            .map(|l| format!(" swa {l:.5}"))
                            .unwrap_or_default()
                    )
                } else {
                    format!(
                        "train {:.2}% test {:.2}%{}",
                        100.0 * m.train_acc,
                        100.0 * m.test_acc,
                        m.swa_test_acc
                            .map(|a| format!(" swa {:.2}%", 100.0 * a))
                            .unwrap_or_default()
                    )
                };
                eprintln!(
                    "epoch {:>3}/{} lr {:.4} loss {:.4} {quality} ({:.1}s, {:.0} samples/s)",
                    m.epoch + 1,
                    self.cfg.train.epochs,
                    m.lr,
                    m.train_loss,
                    m.seconds,
                    m.samples_per_sec
                );
            }
            self.history.push(m);
            self.save_outputs()?;
            done_here += 1;
        }
        let report = self.report();
        if let Some(dir) = self.run_dir.as_ref().map(|d| &d.path) {
            if self.epoch >= self.cfg.train.epochs {
                let j = serde_json::to_string_pretty(&report).expect("serialises");
                write_atomic(&dir.join("final.json"), j.as_bytes())?;
            }
        }
        Ok(report)
    }

    fn report(&self) -> FinalReport {
        let last = self.history.last();
        let seconds: f64 = self.history.iter().map(|m| m.seconds).sum();
        FinalReport {
            name: self.cfg.name.clone(),
            precision: self.cfg.precision.name.clone(),
            backend: self.opts.backend.name(),
            seed: self.cfg.seed,
            threads: self.opts.threads,
            epochs: self.epoch,
            steps: self.step,
            test_acc: last.map_or(f64::NAN, |m| m.test_acc),
            swa_test_acc: last.and_then(|m| m.swa_test_acc),
            train_loss: last.map_or(f64::NAN, |m| m.train_loss),
            test_loss: last.map_or(f64::NAN, |m| m.test_loss),
            swa_test_loss: last.and_then(|m| m.swa_test_loss),
            seconds,
            seconds_per_iteration: if self.step > 0 {
                seconds / self.step as f64
            } else {
                f64::NAN
            },
            distributed: self.exchange.as_ref().map(|ex| DistributedReport {
                ranks: ex.size(),
                exchange: ex.format().to_string(),
                transport: ex.transport_name(),
                bytes_per_iteration: ex.stats.bytes_per_iteration,
                exchange_seconds_per_iteration: ex.stats.seconds
                    / ex.stats.iterations.max(1) as f64,
                exchange_relative_error: ex.stats.relative_error(),
            }),
        }
    }

    /// One epoch of training, then evaluation of the SGD (and SWA) model.
    pub fn run_epoch(&mut self) -> Result<EpochMetrics, TrainError> {
        let epoch = self.epoch;
        let t0 = Instant::now();
        let cfg =
            BatchConfig::train(self.cfg.train.batch, self.cfg.seed).with_augment(self.data.augment);
        let batches = EpochBatches::new(&self.data.train, &self.data.norm, cfg, epoch as u64)?;
        let nb = batches.num_batches();
        if nb == 0 {
            return Err(TrainError::Config(format!(
                "the training set ({} examples) is smaller than one batch ({})",
                self.data.train.len(),
                self.cfg.train.batch
            )));
        }
        let pb = self.progress_bar(nb as u64, epoch);
        let swa_start = self.swa_start();
        let swa_every = self.cfg.swa.as_ref().and_then(|s| s.every_iterations());
        let mut batch = batches.batch(0)?;
        let (mut loss_sum, mut correct, mut seen) = (0f64, 0usize, 0usize);
        let mut lr = 0.0;
        let (rank, ranks) = self
            .exchange
            .as_ref()
            .map_or((0, 1), |ex| (ex.rank(), ex.size()));
        for b in 0..nb {
            batches.fill_batch_part(b, rank, ranks, &mut batch)?;
            let global_rows = batches.batch_indices(b).len();
            let x = Tensor::new(std::mem::take(&mut batch.images), batch.shape().to_vec())?;
            if !self.control.is_static() {
                let p = self.control.plan_at(self.step);
                if p != self.plan {
                    self.plan = p;
                }
            }
            let backend = self.opts.backend.clone();
            let fast = self.control.fast_evaluates(self.step);
            let mut signals = self.control.fast_signal_slots();
            let mut ctx = Ctx::with_plan(backend.as_ref(), &self.plan, self.cfg.seed);
            ctx.step = self.step;
            if fast {
                let (control, plan, sig) = (&self.control, &self.plan, &mut signals);
                ctx.observer = Some(Box::new(move |layer, kind, x, rows, cols| {
                    control.observe(plan, sig, layer, kind, x, rows, cols)
                }));
            }
            let lo = forward_backward(&mut self.model, &mut ctx, &self.loss, x, target_of(&batch))?;
            drop(ctx);
            let (mut step_loss, mut step_correct) = (lo.loss * batch.len() as f64, lo.correct);
            if let Some(ex) = self.exchange.as_mut() {
                // this rank's mean gradient, weighted so that the ranks' sum is the global mean
                let weight = batch.len() as f32 / global_rows as f32;
                let mut params = self.model.params_mut();
                let (mut names, mut grads) = (Vec::new(), Vec::new());
                for p in params.iter_mut() {
                    let lowprec_nn::Param { name, grad, .. } = &mut **p;
                    if batch.len() != global_rows {
                        grad.iter_mut().for_each(|g| *g *= weight);
                    }
                    names.push(name.as_str());
                    grads.push(grad.as_mut_slice());
                }
                let st = ex.all_reduce(
                    self.step,
                    &names,
                    &mut grads,
                    [step_loss, step_correct as f64],
                )?;
                (step_loss, step_correct) = (st[0], st[1] as usize);
            }
            if fast {
                self.control
                    .observe_weights(&self.plan, &mut signals, &self.model);
                self.control.fast_decide(self.step, &signals);
            }
            lr = learning_rate(
                &self.cfg.train,
                self.cfg.swa.as_ref(),
                epoch as f64 + b as f64 / nb as f64,
            );
            let mut params = self.model.params_mut();
            self.sgd.step_plan(
                &mut params,
                lr as f32,
                &self.plan,
                &self.param_layers,
                self.cfg.seed,
                self.step,
            )?;
            self.step += 1;
            if let Some(n) = self.eval_every {
                // the epoch's last iteration is evaluated below, with the epoch's metrics
                if b + 1 < nb && self.step.is_multiple_of(n) {
                    // on the fields it needs: the epoch's batches hold the training set
                    let backend = self.opts.backend.clone();
                    let eval = Eval {
                        data: &self.data,
                        loss: &self.loss,
                        plan: &self.plan,
                        backend: backend.as_ref(),
                        seed: self.cfg.seed,
                        batch: self.cfg.train.batch,
                    };
                    let (test_loss, test_acc) = eval.run(&mut self.model)?;
                    self.step_evals.push(StepEval {
                        step: self.step,
                        epoch_end: false,
                        test_loss,
                        test_acc,
                    });
                }
            }
            if let (Some(start), Some(every)) = (swa_start, swa_every) {
                if epoch >= start && self.step.is_multiple_of(every) {
                    self.swa.update(&self.model.params());
                }
            }
            loss_sum += step_loss;
            correct += step_correct;
            seen += global_rows;
            batch.images = lo.out.data; // reuse an allocation for the next batch
            if let Some(pb) = &pb {
                pb.inc(1);
                if b % 8 == 0 || b + 1 == nb {
                    let sps = seen as f64 / t0.elapsed().as_secs_f64();
                    let acc = self.accuracy(correct, seen);
                    let acc = if acc.is_nan() {
                        String::new()
                    } else {
                        format!(" acc {:.2}%", 100.0 * acc)
                    };
                    pb.set_message(format!(
                        "loss {:.4}{acc} {sps:.0} samples/s",
                        loss_sum / seen as f64
                    ));
                }
            }
        }
        if let Some(pb) = pb {
            pb.finish_and_clear();
        }
        if let Some(start) = swa_start {
            if swa_every.is_none() && epoch >= start {
                self.swa.update(&self.model.params());
            }
        }
        if let Some(ex) = self.exchange.as_mut() {
            // batch-norm running statistics: each rank's are of its own shards; their mean
            let mut bufs: Vec<&mut Vec<f32>> = self
                .model
                .buffers_mut()
                .into_iter()
                .map(|(_, b)| b)
                .collect();
            if !bufs.is_empty() {
                ex.average(&mut bufs)?;
            }
        }
        self.epoch += 1;
        let train_secs = t0.elapsed().as_secs_f64();
        let (test_loss, test_acc) = self.evaluate()?;
        self.step_evals.push(StepEval {
            step: self.step,
            epoch_end: true,
            test_loss,
            test_acc,
        });
        let swa = if self.swa.n > 0 {
            Some(self.evaluate_swa()?)
        } else {
            None
        };
        Ok(EpochMetrics {
            epoch,
            step: self.step,
            lr,
            train_loss: loss_sum / seen as f64,
            train_acc: self.accuracy(correct, seen),
            test_loss,
            test_acc,
            swa_test_acc: swa.map(|s| s.1).filter(|a| !a.is_nan()),
            swa_test_loss: swa.map(|s| s.0),
            seconds: train_secs,
            samples_per_sec: seen as f64 / train_secs,
            precision: self.cfg.precision.name.clone(),
        })
    }

    fn progress_bar(&self, n: u64, epoch: usize) -> Option<ProgressBar> {
        if !self.opts.progress {
            return None;
        }
        let pb = ProgressBar::new(n);
        pb.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}<{eta})")
                .expect("valid template")
                .progress_chars("=> "),
        );
        pb.set_prefix(format!("epoch {}/{}", epoch + 1, self.cfg.train.epochs));
        Some(pb)
    }

    /// Test loss and accuracy of the current weights.
    pub fn evaluate(&mut self) -> Result<(f64, f64), TrainError> {
        let backend = self.opts.backend.clone();
        let eval = Eval {
            data: &self.data,
            loss: &self.loss,
            plan: &self.plan,
            backend: backend.as_ref(),
            seed: self.cfg.seed,
            batch: self.cfg.train.batch,
        };
        eval.run(&mut self.model)
    }

    /// The fraction correct, or NaN where the data has no classes (regression, auto-encoder).
    fn accuracy(&self, correct: usize, seen: usize) -> f64 {
        if self.data.train.target == TargetKind::Class {
            correct as f64 / seen.max(1) as f64
        } else {
            f64::NAN
        }
    }

    /// Swaps the SWA average into the model (or back).
    fn swap_swa(&mut self) {
        let mut params = self.model.params_mut();
        for (p, a) in params.iter_mut().zip(self.swa.avg.iter_mut()) {
            std::mem::swap(&mut p.value, a);
            // any change of version makes the layers re-quantise
            p.version = if p.version == SWA_VERSION {
                self.step
            } else {
                SWA_VERSION
            };
        }
    }

    /// Test loss and accuracy of the SWA model; with batch norm, its statistics are first
    /// recomputed over the training set (the SGD model's statistics are restored after).
    pub fn evaluate_swa(&mut self) -> Result<(f64, f64), TrainError> {
        self.swap_swa();
        let saved: Vec<Vec<f32>> = self
            .model
            .buffers()
            .into_iter()
            .map(|(_, b)| b.clone())
            .collect();
        let result = (|| {
            if self.model.has_batch_stats() {
                self.recompute_batch_stats()?;
            }
            self.evaluate()
        })();
        for ((_, b), s) in self.model.buffers_mut().into_iter().zip(saved) {
            *b = s;
        }
        self.swap_swa();
        result
    }

    /// Batch-norm statistics of the current weights: the cumulative average over one pass of
    /// the training set, in batches drawn as in training (shuffled and augmented, as SWA's
    /// `bn_update` over the training loader), from a fixed seed so the result is reproducible.
    /// Un-augmented images give the wrong statistics for a network trained on augmented ones
    /// (several points of test accuracy on PreResNet-20).
    fn recompute_batch_stats(&mut self) -> Result<(), TrainError> {
        let cfg = BatchConfig {
            drop_last: false,
            ..BatchConfig::train(self.cfg.train.batch, self.cfg.seed ^ BN_RECOMPUTE_SEED)
        }
        .with_augment(self.data.augment);
        let batches = EpochBatches::new(&self.data.train, &self.data.norm, cfg, 0)?;
        self.model.begin_stats_recompute();
        let mut batch = batches.batch(0)?;
        for b in 0..batches.num_batches() {
            batches.fill_batch(b, &mut batch)?;
            let x = Tensor::new(std::mem::take(&mut batch.images), batch.shape().to_vec())?;
            let backend = self.opts.backend.clone();
            let mut ctx = Ctx::with_plan(backend.as_ref(), &self.plan, self.cfg.seed);
            ctx.step = EVAL_STEP_BASE + (1 << 40) + b as u64;
            let out = self.model.forward(&mut ctx, x, true)?;
            batch.images = out.data;
        }
        self.model.clear_saved();
        self.model.end_stats_recompute();
        Ok(())
    }

    /// The run's state as a checkpoint.
    pub fn checkpoint(&self) -> Checkpoint {
        let mut tensors = BTreeMap::new();
        for (i, p) in self.model.params().iter().enumerate() {
            tensors.insert(
                format!("param/{}", p.name),
                (p.shape.clone(), p.value.clone()),
            );
            tensors.insert(
                format!("momentum/{}", p.name),
                (p.shape.clone(), self.sgd.buffers[i].clone()),
            );
            if self.swa.n > 0 {
                tensors.insert(
                    format!("swa/{}", p.name),
                    (p.shape.clone(), self.swa.avg[i].clone()),
                );
            }
        }
        for (name, b) in self.model.buffers() {
            tensors.insert(format!("buffer/{name}"), (vec![b.len()], b.clone()));
        }
        let mut extra = BTreeMap::new();
        extra.insert("precision".into(), self.cfg.precision.name.clone());
        extra.insert("seed".into(), self.cfg.seed.to_string());
        if let Some((_, st)) = &self.control.fast {
            extra.insert(
                "fast".into(),
                serde_json::to_string(st).expect("serialises"),
            );
        }
        // Wall-clock fields are left out so that the same run gives the same bytes at any
        // thread count; a resume takes them back from metrics.jsonl when it is there.
        let history: Vec<EpochMetrics> = self
            .history
            .iter()
            .map(|m| EpochMetrics {
                seconds: 0.0,
                samples_per_sec: 0.0,
                ..m.clone()
            })
            .collect();
        extra.insert(
            "history".into(),
            serde_json::to_string(&history).expect("serialises"),
        );
        extra.insert(
            "step_evals".into(),
            serde_json::to_string(&self.step_evals).expect("serialises"),
        );
        if !self.config_changes.is_empty() {
            extra.insert(
                "config_changes".into(),
                serde_json::to_string(&self.config_changes).expect("serialises"),
            );
        }
        Checkpoint {
            epoch: self.epoch,
            step: self.step,
            config_toml: self.cfg.to_toml(),
            tensors,
            swa_n: self.swa.n,
            extra,
        }
    }

    /// Loads a checkpoint's state into this trainer (same network).
    pub fn restore(&mut self, ck: &Checkpoint) -> Result<(), TrainError> {
        self.config_changes = match ck.extra.get("config_changes") {
            Some(h) => serde_json::from_str(h)
                .map_err(|e| TrainError::Checkpoint(format!("config_changes: {e}")))?,
            None => Vec::new(),
        };
        let ours = self.cfg.to_toml();
        if ck.config_toml != ours {
            let diff = config_diff(&ck.config_toml, &ours)?;
            if !self.opts.allow_config_change {
                return Err(TrainError::Config(format!(
                    "the checkpoint was made with other settings ({diff}); resume with the \
                     checkpoint's settings, or pass --allow-config-change to continue with the \
                     new ones (the change is recorded in the checkpoint)"
                )));
            }
            self.config_changes
                .push(format!("epoch {} step {}: {diff}", ck.epoch, ck.step));
        }
        let get = |k: &str, len: usize| -> Result<Vec<f32>, TrainError> {
            let (_, v) = ck
                .tensors
                .get(k)
                .ok_or_else(|| TrainError::Checkpoint(format!("missing tensor {k}")))?;
            if v.len() != len {
                return Err(TrainError::Checkpoint(format!(
                    "{k}: {} values, the model needs {len}",
                    v.len()
                )));
            }
            Ok(v.clone())
        };
        let names: Vec<(String, usize)> = self
            .model
            .params()
            .iter()
            .map(|p| (p.name.clone(), p.value.len()))
            .collect();
        let mut swa_avg = Vec::new();
        for (i, (name, len)) in names.iter().enumerate() {
            let v = get(&format!("param/{name}"), *len)?;
            let m = get(&format!("momentum/{name}"), *len)?;
            let mut params = self.model.params_mut();
            params[i].value = v;
            params[i].version = ck.step;
            self.sgd.buffers[i] = m;
            if ck.swa_n > 0 {
                swa_avg.push(get(&format!("swa/{name}"), *len)?);
            }
        }
        let mut bufs: Vec<(String, usize)> = self
            .model
            .buffers()
            .iter()
            .map(|(n, b)| (n.clone(), b.len()))
            .collect();
        for (name, len) in bufs.drain(..) {
            let v = get(&format!("buffer/{name}"), len)?;
            if let Some((_, b)) = self
                .model
                .buffers_mut()
                .into_iter()
                .find(|(n, _)| *n == name)
            {
                *b = v;
            }
        }
        self.swa = Swa {
            avg: swa_avg,
            n: ck.swa_n,
        };
        if let Some((_, st)) = self.control.fast.as_mut() {
            let text = ck.extra.get("fast").ok_or_else(|| {
                TrainError::Checkpoint("no FAST state in the checkpoint of a FAST run".into())
            })?;
            let saved: FastState = serde_json::from_str(text)
                .map_err(|e| TrainError::Checkpoint(format!("FAST state: {e}")))?;
            if saved.widths.len() != st.widths.len()
                || saved
                    .widths
                    .iter()
                    .zip(&st.widths)
                    .any(|(a, b)| a.len() != b.len())
            {
                return Err(TrainError::Checkpoint(
                    "FAST state: widths do not match this network and configuration".into(),
                ));
            }
            *st = saved;
        }
        self.epoch = ck.epoch;
        self.step = ck.step;
        if !self.control.is_static() {
            self.plan = self.control.plan_at(self.step);
        }
        self.history = match ck.extra.get("history") {
            Some(h) => serde_json::from_str(h)
                .map_err(|e| TrainError::Checkpoint(format!("history: {e}")))?,
            None => Vec::new(),
        };
        self.step_evals = match ck.extra.get("step_evals") {
            Some(h) => serde_json::from_str(h)
                .map_err(|e| TrainError::Checkpoint(format!("step_evals: {e}")))?,
            None => Vec::new(),
        };
        // timings of the epochs before the interruption, from the metrics file if present
        if let Some(dir) = &self.opts.out_dir {
            if let Ok(text) = std::fs::read_to_string(dir.join("metrics.jsonl")) {
                for line in text.lines() {
                    if let Ok(m) = serde_json::from_str::<EpochMetrics>(line) {
                        if let Some(h) = self.history.iter_mut().find(|h| h.epoch == m.epoch) {
                            h.seconds = m.seconds;
                            h.samples_per_sec = m.samples_per_sec;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The checkpoint, then metrics.jsonl (whole history), both written atomically. In that
    /// order: a run killed between the two has a checkpoint to resume from, whose history
    /// rewrites the metrics; the other order left a first epoch's metrics with no checkpoint,
    /// a directory that neither `--resume` nor a plain run would take.
    fn save_outputs(&self) -> Result<(), TrainError> {
        let Some(dir) = self.run_dir.as_ref().map(|d| &d.path) else {
            return Ok(());
        };
        self.checkpoint()
            .save(&dir.join("checkpoint.safetensors"))?;
        let mut lines = String::new();
        for m in &self.history {
            lines += &serde_json::to_string(m).expect("serialises");
            lines.push('\n');
        }
        write_atomic(&dir.join("metrics.jsonl"), lines.as_bytes())?;
        Ok(())
    }
}

/// What a test evaluation reads ([`Trainer::evaluate`]).
struct Eval<'a> {
    data: &'a DataSplits,
    loss: &'a Loss,
    plan: &'a PrecisionPlan,
    backend: &'a dyn GemmBackend,
    seed: u64,
    batch: usize,
}

impl Eval<'_> {
    /// Test loss and accuracy (NaN without classes) of `model`.
    fn run(&self, model: &mut Model) -> Result<(f64, f64), TrainError> {
        let cfg = BatchConfig::eval(self.batch.max(256));
        let batches = EpochBatches::new(&self.data.test, &self.data.norm, cfg, 0)?;
        let (mut loss_sum, mut correct, mut seen) = (0f64, 0usize, 0usize);
        let mut batch = batches.batch(0)?;
        for b in 0..batches.num_batches() {
            batches.fill_batch(b, &mut batch)?;
            let x = Tensor::new(std::mem::take(&mut batch.images), batch.shape().to_vec())?;
            let mut ctx = Ctx::with_plan(self.backend, self.plan, self.seed);
            ctx.step = EVAL_STEP_BASE + b as u64;
            let out = model.forward(&mut ctx, x, false)?;
            let lo = self.loss.forward(&out, target_of(&batch))?;
            loss_sum += lo.loss * batch.len() as f64;
            correct += lo.correct;
            seen += batch.len();
            batch.images = out.data;
        }
        let acc = if self.data.train.target == TargetKind::Class {
            correct as f64 / seen.max(1) as f64
        } else {
            f64::NAN
        };
        Ok((loss_sum / seen.max(1) as f64, acc))
    }
}

/// Claims the run's output directory, if it has one.
fn claim_out_dir(opts: &RunOptions) -> Result<Option<RunDir>, TrainError> {
    let Some(dir) = &opts.out_dir else {
        return Ok(None);
    };
    let existing = if opts.resume_from.is_some() {
        Existing::Resume
    } else if opts.overwrite {
        Existing::Overwrite
    } else {
        Existing::Refuse
    };
    RunDir::claim(dir, existing).map(Some)
}

/// The settings that differ between two training descriptions, as `key: old -> new` items.
fn config_diff(old: &str, new: &str) -> Result<String, TrainError> {
    fn flatten(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, String>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    flatten(&key, v, out);
                }
            }
            other => {
                out.insert(prefix.to_string(), other.to_string());
            }
        }
    }
    let parse = |s: &str, what: &str| {
        s.parse::<toml::Value>()
            .map_err(|e| TrainError::Checkpoint(format!("{what} configuration: {e}")))
    };
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    flatten("", &parse(old, "the checkpoint's")?, &mut a);
    flatten("", &parse(new, "this run's")?, &mut b);
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let items: Vec<String> = keys
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            let show = |m: &BTreeMap<String, String>| {
                m.get(k).cloned().unwrap_or_else(|| "(unset)".into())
            };
            format!("{k}: {} -> {}", show(&a), show(&b))
        })
        .collect();
    Ok(items.join("; "))
}
