//! The training loop (design §3.2, §8.1): antithetic times, sub-token masking, objective `paper`
//! or `elbo`, gradient accumulation, global-norm clipping, AdamW, warm-up LR, EMA, periodic
//! validation and atomic checkpoints, exact resume.
//!
//! Reproducibility: every random draw of step n (batch choice, times, masks, dropout) comes from
//! generators seeded by `(seed, n)`, so a run resumed from a checkpoint at step k continues
//! exactly as if it had never stopped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use mdm_prime_core::config::{OnWriteError, RunConfig};
use mdm_prime_core::data::Dataset;
use mdm_prime_core::schedule::sample_times;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::json;

use crate::batch::noised_batch;
use crate::checkpoint::{self, RunDir, TrainState, code_version};
use crate::eval::{EvalReport, EvalSettings, evaluate};
use crate::model::{Denoiser, Network};
use crate::optim::{AdamW, clip_factor, ema_decay, ema_update, global_norm, learning_rate};
use crate::params::{grads_by_path, materialize};
use crate::subtoken::PrimeTables;
use crate::{Error, Result};

/// What the loop reports as it goes.
#[derive(Debug, Clone)]
pub enum TrainEvent {
    /// The run starts (or resumes) at `step` of `total`.
    Start {
        step: u64,
        total: u64,
        params: usize,
        resumed: bool,
    },
    /// After every optimiser step.
    Step {
        step: u64,
        loss: f64,
        lr: f64,
        grad_norm: f64,
        tokens_per_s: f64,
    },
    /// A step whose loss or gradient norm was not finite: skipped (no update); `consecutive`
    /// such steps in a row so far.
    Skipped {
        step: u64,
        loss: f64,
        grad_norm: f64,
        consecutive: u64,
    },
    /// A checkpoint could not be written (the previous one is intact); with
    /// `train.on_write_error = "retry"` training goes on and the write is tried again.
    WriteFailed { step: u64, error: String },
    /// A validation pass finished.
    Eval { step: u64, report: EvalReport },
    /// A checkpoint was written.
    Checkpoint { step: u64 },
    /// A [`Probe`] measured the EMA model.
    Probe { step: u64, name: String, value: f64 },
}

/// How a training run ended.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    pub step: u64,
    pub interrupted: bool,
    pub last_eval: Option<EvalReport>,
}

pub use mdm_prime_core::rng::step_seed;

/// A step whose loss or gradient norm is not finite: [`Trainer::step`] does not apply it, and
/// [`run`] counts it (the one rule both follow).
pub fn is_bad_step(loss: f64, grad_norm: f64) -> bool {
    !(loss.is_finite() && grad_norm.is_finite())
}

/// A copy of the model on another device, for data-parallel training: it computes the
/// gradients of its shard of each batch; [`Trainer::step`] sums them on the first device,
/// updates the weights there and copies them back.
struct Replica {
    model: Network,
    tables: PrimeTables,
    device: Device,
}

/// The model and its training state, in memory.
pub struct Trainer {
    pub cfg: RunConfig,
    pub run: RunDir,
    pub model: Network,
    pub ema: Network,
    pub optim: AdamW,
    pub state: TrainState,
    pub tables: PrimeTables,
    device: Device,
    /// Devices 2…K of a data-parallel run (empty on one device).
    replicas: Vec<Replica>,
    /// What opening the run directory had to repair after a crash (see [`checkpoint::recover`]).
    pub recovery: checkpoint::Recovery,
    /// Measurements of the EMA model taken every [`Probe::every`] steps (e.g. FID).
    probes: Vec<Box<dyn Probe>>,
    /// `resumed at step N by <version>`, for version.txt at this resumed run's first checkpoint.
    resumed: std::sync::Mutex<Option<String>>,
    /// The run directory's writer lock, held while this trainer lives.
    _lock: std::fs::File,
}

/// A measurement of the EMA model that training takes every [`Probe::every`] steps and at the
/// end, logged in metrics.jsonl as `{"step": s, <name>: value}`. The trainer knows neither what
/// it measures nor how (FID: `crate::inception::FidProbe`).
pub trait Probe {
    /// The key in metrics.jsonl.
    fn name(&self) -> &str;
    /// Steps between measurements (≥ 1).
    fn every(&self) -> u64;
    /// One measurement of `model` (the EMA weights) on `device`.
    fn measure(
        &mut self,
        model: &Network,
        tables: &PrimeTables,
        cfg: &RunConfig,
        device: &Device,
    ) -> Result<f64>;
}

impl Trainer {
    /// Starts a new run in `run` (which must not hold a checkpoint) or resumes the one there.
    pub fn open(cfg: &RunConfig, run: RunDir, resume: bool, device: &Device) -> Result<Self> {
        let codec = cfg.codec()?;
        let tables = PrimeTables::new(&codec, device);
        let ad = match cfg.train.gradient_checkpointing {
            true => device.clone().autodiff().gradient_checkpointing(),
            false => device.clone().autodiff(),
        };
        device.seed(cfg.seed);
        let bf16 = cfg.train.precision == mdm_prime_core::config::Precision::Bf16;
        let fresh = Network::init(cfg, &codec, &ad)?.with_bf16_matmuls(bf16);
        materialize(&fresh);
        let mut optim = AdamW::new(&cfg.train);
        let no_checkpoint = || {
            Error::checkpoint(
                &run.root,
                "no checkpoint to resume (state.json is missing); drop --resume to start a new run",
            )
        };
        if !run.root.is_dir() {
            if resume {
                return Err(no_checkpoint());
            }
            std::fs::create_dir_all(&run.root).map_err(|e| Error::io(&run.root, e))?;
        }
        // The writer lock before anything is read: a crash may have left a checkpoint half
        // installed, which only the one writer may complete.
        let lock = run.lock()?;
        let recovery = checkpoint::recover(&run.root)?;
        let (model, ema, state, resumed) = match resume {
            true => {
                if !run.has_checkpoint() {
                    return Err(no_checkpoint());
                }
                let stored = mdm_prime_core::config::RunConfig::load(&run.config(), &[])?;
                let diffs = stored.architecture_differences(cfg);
                if !diffs.is_empty() {
                    return Err(Error::checkpoint(
                        run.config(),
                        format!(
                            "the run was made with another architecture: {}; resume with the run's own config or start a new run",
                            diffs.join(", ")
                        ),
                    ));
                }
                let mut state = run.read_state()?;
                let model = checkpoint::load_module(fresh, &run.model())?;
                // The EMA (validation, eval, sampling) computes in f32 whatever the training
                // precision.
                let ema =
                    checkpoint::load_module(model.valid().with_bf16_matmuls(false), &run.ema())?;
                checkpoint::load_optimizer(&mut optim, &run.optim(), device)?;
                if optim.step + state.skipped_steps != state.step {
                    return Err(Error::checkpoint(
                        &run.root,
                        format!(
                            "optimizer is at step {} but state.json says {} ({} skipped): the checkpoint is inconsistent",
                            optim.step, state.step, state.skipped_steps
                        ),
                    ));
                }
                trim_metrics(&run, state.step)?;
                // Every binary that trains the run is on record: state.json names this one from
                // the next checkpoint on, which also adds a line to version.txt (`save`).
                state.code_version = code_version();
                // The resumed config may change training-only keys (steps, lr, ...); record it.
                checkpoint::write_atomic(&run.config(), cfg.to_toml()?.as_bytes())?;
                let line = format!("resumed at step {} by {}", state.step, code_version());
                (model, ema, state, Some(line))
            }
            false => {
                if run.has_checkpoint() {
                    return Err(Error::checkpoint(
                        &run.root,
                        "already holds a run; pass --resume to continue it, or choose another --name / --run-dir",
                    ));
                }
                checkpoint::write_atomic(&run.config(), cfg.to_toml()?.as_bytes())?;
                checkpoint::write_atomic(
                    &run.version(),
                    format!("{}\n", code_version()).as_bytes(),
                )?;
                let _ = std::fs::remove_file(run.metrics());
                let ema = fresh.valid().with_bf16_matmuls(false);
                let state = checkpoint::fresh_state();
                (fresh, ema, state, None)
            }
        };
        Ok(Trainer {
            cfg: cfg.clone(),
            run,
            model,
            ema,
            optim,
            state,
            tables,
            device: device.clone(),
            replicas: Vec::new(),
            recovery,
            probes: Vec::new(),
            resumed: std::sync::Mutex::new(resumed),
            _lock: lock,
        })
    }

    /// One optimiser step on `data`; returns (loss, grad norm before clipping, lr).
    ///
    /// The batch is drawn on the host as `grad_accum` rounds of `batch_size / grad_accum`
    /// sequences (examples, then times — stratified over the whole round when antithetic —, then
    /// masks, from one random stream); with several devices each round is cut into equal shards,
    /// one per device, in order. Each shard's loss is its mean over its tokens divided by
    /// (rounds × shards), so the summed gradients are the gradient of the round-averaged mean
    /// loss: the same as one device taking the whole batch (to float rounding; tested), whatever
    /// the number of devices.
    pub fn step(&mut self, data: &Dataset) -> Result<(f64, f64, f64)> {
        let cfg = &self.cfg;
        let step = self.state.step;
        let mut rng = StdRng::seed_from_u64(step_seed(cfg.seed, step, 1));
        self.device.seed(step_seed(cfg.seed, step, 2)); // dropout
        for (k, r) in self.replicas.iter().enumerate() {
            r.device.seed(step_seed(cfg.seed, step, 3 + k as u64));
        }
        let shards = 1 + self.replicas.len();
        let round = cfg.train.batch_size / cfg.train.grad_accum;
        let per_shard = cfg.train.shard_size(shards)?;
        let scale = (cfg.train.grad_accum * shards) as f64;
        let mut grads: HashMap<String, Tensor<1>> = HashMap::new();
        let mut loss_sum = 0.0;
        for _ in 0..cfg.train.grad_accum {
            let span = crate::profile::span("batch");
            // Images may be flipped at random (one more draw only then, so the text stream is
            // unchanged).
            let flip = cfg.data.flip && data.image.is_some();
            let examples: Vec<_> = (0..round)
                .map(|_| {
                    let i = rng.random_range(0..data.n_train());
                    data.train_example(i, flip && rng.random::<bool>())
                })
                .collect();
            let blocks: Vec<&[u32]> = examples.iter().map(|e| e.as_ref()).collect();
            let t = sample_times(
                &mut rng,
                round,
                cfg.train.antithetic,
                cfg.train.sampling_eps,
            );
            let sigma = self.model.sigma(&cfg.schedule, &t);
            let mut batches = Vec::with_capacity(shards);
            for k in 0..shards {
                let rows = k * per_shard..(k + 1) * per_shard;
                let device = match k {
                    0 => &self.device,
                    _ => &self.replicas[k - 1].device,
                };
                let batch = noised_batch(
                    self.tables.codec(),
                    &cfg.schedule,
                    &blocks[rows.clone()],
                    t[rows.clone()].to_vec(),
                    &mut rng,
                    device,
                )?;
                batches.push((batch, sigma[rows].to_vec()));
            }
            drop(span);
            let shard_grads =
                |model: &Network, tables: &PrimeTables, (batch, sigma): &(_, Vec<f32>)| {
                    let loss = model
                        .batch_loss(
                            tables,
                            cfg.train.objective,
                            batch,
                            sigma,
                            cfg.prime.carry_over,
                            true,
                        )
                        .div_scalar(scale);
                    let _span = crate::profile::span("backward");
                    let grads = grads_by_path(model, &loss.backward());
                    (loss, grads)
                };
            let mut results = vec![shard_grads(&self.model, &self.tables, &batches[0])];
            results.extend(
                self.replicas
                    .iter()
                    .zip(&batches[1..])
                    .map(|(r, b)| shard_grads(&r.model, &r.tables, b)),
            );
            // Read back only now, so that devices are not waited for one by one. Gradients are
            // summed on the first device, in shard order (deterministic).
            for (loss, grads_now) in results {
                loss_sum += loss.into_scalar::<f32>() as f64;
                for (path, g) in grads_now {
                    let g = match shards {
                        1 => g,
                        _ => g.to_device(&self.device),
                    };
                    let g = match grads.remove(&path) {
                        Some(acc) => acc + g,
                        None => g,
                    };
                    grads.insert(path, g);
                }
            }
        }
        let span = crate::profile::span("optimizer");
        let norm = global_norm(&grads);
        let lr = learning_rate(&cfg.train, step);
        if is_bad_step(loss_sum, norm) {
            // A bad step: the batch is consumed, the weights, optimiser and EMA stay as they are.
            self.state.skipped_steps += 1;
            self.state.advance(cfg.train.batch_size * data.seq_len);
            return Ok((loss_sum, norm, lr));
        }
        let model = self.model.clone();
        self.model = self
            .optim
            .step(model, &grads, lr, clip_factor(norm, cfg.train.grad_clip));
        drop(span);
        let _span = crate::profile::span("ema");
        let decay = ema_decay(cfg.train.ema_decay, step);
        let ema = self.ema.clone();
        self.ema = ema_update(ema, &self.model, decay);
        let tokens = cfg.train.batch_size * data.seq_len;
        self.broadcast();
        self.state.advance(tokens);
        Ok((loss_sum, norm, lr))
    }

    /// Evaluates the EMA weights on the first `max` validation blocks (0 = all).
    pub fn validate(&self, data: &Dataset, max: usize) -> Result<EvalReport> {
        let n = if max == 0 {
            data.n_val()
        } else {
            max.min(data.n_val())
        };
        let blocks: Vec<&[u32]> = (0..n).map(|i| data.val_block(i)).collect();
        let settings = EvalSettings::from_config(&self.cfg);
        evaluate(
            &self.ema,
            &self.tables,
            self.tables.codec(),
            &self.cfg.schedule,
            &blocks,
            &settings,
            &self.device,
            &mut |_, _| {},
        )
    }

    /// Adds a measurement taken every [`Probe::every`] steps and at the end of [`run`].
    pub fn add_probe(&mut self, probe: Box<dyn Probe>) {
        self.probes.push(probe);
    }

    /// Takes the probes due at `step` (all of them when `last`) and logs each value.
    fn run_probes(&mut self, step: u64, last: bool) -> Result<Vec<(String, f64)>> {
        let mut probes = std::mem::take(&mut self.probes);
        let mut out = Vec::new();
        let mut result = Ok(());
        for p in probes
            .iter_mut()
            .filter(|p| last || step.is_multiple_of(p.every().max(1)))
        {
            match p.measure(&self.ema, &self.tables, &self.cfg, &self.device) {
                Ok(v) => {
                    result = self.log(json!({"step": step, p.name(): v}));
                    out.push((p.name().to_string(), v));
                }
                Err(e) => result = Err(e),
            }
            if result.is_err() {
                break;
            }
        }
        self.probes = probes;
        result.map(|()| out)
    }

    /// [`Trainer::open`] on `devices[0]`, with one replica of the model on each further device
    /// (data-parallel: every step's batch is split evenly over the devices, see
    /// [`Trainer::step`]). The devices may repeat (several replicas on one device: what the CPU
    /// tests use to check the arithmetic).
    pub fn open_parallel(
        cfg: &RunConfig,
        run: RunDir,
        resume: bool,
        devices: &[Device],
    ) -> Result<Self> {
        let Some((first, rest)) = devices.split_first() else {
            return Err(Error::Device("no device to train on".into()));
        };
        cfg.train.shard_size(devices.len())?;
        let mut trainer = Trainer::open(cfg, run, resume, first)?;
        let codec = cfg.codec()?;
        trainer.replicas = rest
            .iter()
            .map(|d| Replica {
                model: trainer.model.clone().fork(d),
                tables: PrimeTables::new(&codec, d),
                device: d.clone(),
            })
            .collect();
        Ok(trainer)
    }

    /// Copies the weights of the first device to every replica.
    fn broadcast(&mut self) {
        for r in &mut self.replicas {
            r.model = self.model.clone().fork(&r.device);
        }
    }

    /// How many devices this trainer computes on.
    pub fn n_devices(&self) -> usize {
        1 + self.replicas.len()
    }

    /// The device this trainer computes on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Writes weights, EMA, optimiser and the state file as one checkpoint (all written before any
    /// replaces its predecessor, the state file renamed last, so it never points at weights that
    /// are not there), and redraws the loss curve.
    pub fn save(&self) -> Result<()> {
        let mut meta = HashMap::new();
        meta.insert("step".to_string(), self.state.step.to_string());
        meta.insert("ell".to_string(), self.cfg.prime.ell.to_string());
        meta.insert(
            "vocab_size".to_string(),
            self.tables.codec().vocab_size().to_string(),
        );
        // The config the weights were written with, whatever config.toml says later.
        meta.insert("config".to_string(), self.cfg.to_toml()?);
        // All four written before any replaces its predecessor; state.json last.
        checkpoint::write_all_atomic(&[
            checkpoint::module_file(&self.model, self.run.model(), meta.clone())?,
            checkpoint::module_file(&self.ema, self.run.ema(), meta)?,
            checkpoint::optimizer_file(&self.optim, self.run.optim())?,
            self.run.state_file(&self.state)?,
        ])?;
        // The first checkpoint of a resumed run records the binary that continued it (a resume
        // that fails or stops before checkpointing trained nothing, and leaves no line).
        if let Ok(mut resumed) = self.resumed.lock()
            && let Some(line) = resumed.as_deref()
        {
            checkpoint::append_line(&self.run.version(), line)?;
            *resumed = None; // written: not again (a failed write is retried at the next save)
        }
        plot_metrics(&self.run, &self.cfg.metric_names())
    }

    fn log(&self, value: serde_json::Value) -> Result<()> {
        use std::io::Write;
        let path = self.run.metrics();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        writeln!(f, "{value}").map_err(|e| Error::io(&path, e))
    }
}

/// Trains until `cfg.train.steps`, Ctrl-C (`stop`) or the time limit; checkpoints on the way and
/// at the end; validates every `eval_every` steps and at the end.
pub fn run(
    trainer: &mut Trainer,
    data: &Dataset,
    stop: &AtomicBool,
    on_event: &mut dyn FnMut(&TrainEvent),
) -> Result<TrainOutcome> {
    let total = trainer.cfg.train.steps;
    on_event(&TrainEvent::Start {
        step: trainer.state.step,
        total,
        params: trainer.model.num_params(),
        resumed: trainer.state.step > 0,
    });
    let started = Instant::now();
    let elapsed0 = trainer.state.elapsed_s;
    let mut last_eval = None;
    let mut interrupted = false;
    let mut bad_streak = 0u64;
    let mut pending_save = false;
    while trainer.state.step < total {
        let t0 = Instant::now();
        let (loss, grad_norm, lr) = trainer.step(data)?;
        let step = trainer.state.step;
        let tokens_per_s =
            (trainer.cfg.train.batch_size * data.seq_len) as f64 / t0.elapsed().as_secs_f64();
        trainer.state.elapsed_s = elapsed0 + started.elapsed().as_secs_f64();
        if is_bad_step(loss, grad_norm) {
            bad_streak += 1;
            trainer.log(
                json!({"step": step, "skipped": true, "loss": loss.to_string(),
                "grad_norm": grad_norm.to_string(), "consecutive": bad_streak,
                "skipped_total": trainer.state.skipped_steps}),
            )?;
            on_event(&TrainEvent::Skipped {
                step,
                loss,
                grad_norm,
                consecutive: bad_streak,
            });
            if bad_streak >= trainer.cfg.train.max_bad_steps {
                return Err(too_many_bad_steps(
                    trainer, step, bad_streak, loss, grad_norm,
                ));
            }
        } else {
            bad_streak = 0;
            on_event(&TrainEvent::Step {
                step,
                loss,
                lr,
                grad_norm,
                tokens_per_s,
            });
            if step.is_multiple_of(trainer.cfg.train.log_every) || step == total {
                trainer.log(
                    json!({"step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm,
                    "tokens_per_s": tokens_per_s, "elapsed_s": trainer.state.elapsed_s}),
                )?;
            }
        }
        let tc = &trainer.cfg.train;
        let timed_out = tc.time_limit_s > 0 && started.elapsed().as_secs() >= tc.time_limit_s;
        interrupted = stop.load(Ordering::SeqCst);
        let last = step == total || interrupted || timed_out;
        // While steps are being skipped the weights may be what went wrong: neither evaluate nor
        // overwrite the last good checkpoint with them.
        let healthy = bad_streak == 0;
        if healthy
            && ((tc.eval_every > 0 && step.is_multiple_of(tc.eval_every)) || (last && !interrupted))
        {
            let report = trainer.validate(data, tc.eval_sequences)?;
            trainer.log(json!({"step": step, "val": &report}))?;
            on_event(&TrainEvent::Eval {
                step,
                report: report.clone(),
            });
            last_eval = Some(report);
        }
        if healthy && !trainer.probes.is_empty() && !interrupted {
            for (name, value) in trainer.run_probes(step, last)? {
                on_event(&TrainEvent::Probe { step, name, value });
            }
        }
        let checkpoint_due = step.is_multiple_of(trainer.cfg.train.checkpoint_every);
        if healthy && (pending_save || checkpoint_due || last) {
            match save_with_policy(trainer, last) {
                Ok(()) => {
                    pending_save = false;
                    on_event(&TrainEvent::Checkpoint { step });
                }
                Err(e) if trainer.cfg.train.on_write_error == OnWriteError::Retry && !last => {
                    // The previous checkpoint is intact; try again after the next step.
                    pending_save = true;
                    let error = e.to_string();
                    let _ = trainer.log(json!({"step": step, "write_error": &error}));
                    on_event(&TrainEvent::WriteFailed { step, error });
                }
                Err(e) => return Err(e),
            }
        }
        if interrupted || timed_out {
            break;
        }
    }
    Ok(TrainOutcome {
        step: trainer.state.step,
        interrupted,
        last_eval,
    })
}

/// Saves; the final save of a run in `retry` mode gets three more tries a second apart.
fn save_with_policy(trainer: &Trainer, last: bool) -> Result<()> {
    let tries = if last && trainer.cfg.train.on_write_error == OnWriteError::Retry {
        4
    } else {
        1
    };
    let mut result = trainer.save();
    for _ in 1..tries {
        if result.is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
        result = trainer.save();
    }
    result
}

/// The error that stops a run after `n` consecutive non-finite steps: which step, what the last
/// good checkpoint is, and what usually causes it.
fn too_many_bad_steps(trainer: &Trainer, step: u64, n: u64, loss: f64, norm: f64) -> Error {
    let last_good = match trainer.run.read_state() {
        Ok(s) if trainer.run.has_checkpoint() => format!(
            "the last good checkpoint is step {} in {} (continue with --resume)",
            s.step,
            trainer.run.root.display()
        ),
        _ => "no checkpoint was written yet".to_string(),
    };
    Error::checkpoint(
        &trainer.run.root,
        format!(
            "training stopped at step {step}: {n} consecutive steps had a non-finite loss or \
             gradient (last: loss {loss}, gradient norm {norm}; train.max_bad_steps = {}); \
             {last_good}. Likely causes: a learning rate too high for this model and batch \
             (lower train.lr, raise train.warmup_steps, keep train.grad_clip on), extreme or \
             corrupt input data, or weights that already overflowed",
            trainer.cfg.train.max_bad_steps
        ),
    )
}

/// Drops metrics lines logged after `step` (they belong to steps a resume will redo).
fn trim_metrics(run: &RunDir, step: u64) -> Result<()> {
    let path = run.metrics();
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                .is_some_and(|s| s <= step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    checkpoint::write_atomic(&path, kept.as_bytes())
}

/// Draws `loss.png` from `metrics.jsonl`: training loss and validation score against step,
/// named by `(loss, validation)` ([`RunConfig::metric_names`]).
pub fn plot_metrics(run: &RunDir, (loss, validation): &(String, &str)) -> Result<()> {
    use mdm_prime_core::plot::{PALETTE, PlotSpec, Series, write_png};
    let Ok(text) = std::fs::read_to_string(run.metrics()) else {
        return Ok(());
    };
    let (mut train, mut val, mut fid) = (Vec::new(), Vec::new(), Vec::new());
    for v in text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
    {
        let Some(step) = v.get("step").and_then(|s| s.as_f64()) else {
            continue;
        };
        if let Some(loss) = v.get("loss").and_then(|x| x.as_f64()) {
            train.push((step, loss));
        }
        if let Some(f) = v.get("fid").and_then(|x| x.as_f64()) {
            fid.push((step, f));
        }
        if let Some(e) = v
            .pointer("/val/elbo_nats_per_token")
            .and_then(|x| x.as_f64())
        {
            val.push((step, e));
        }
    }
    if train.is_empty() {
        return Ok(());
    }
    let mut series = vec![Series {
        name: format!("train loss ({loss})"),
        points: train,
        color: PALETTE[0],
    }];
    if !val.is_empty() {
        series.push(Series {
            name: format!("val {validation} (nats/token)"),
            points: val,
            color: PALETTE[1],
        });
    }
    let spec = PlotSpec {
        title: "mdm-prime training".into(),
        x_label: "step".into(),
        y_label: "nats per token".into(),
        ..PlotSpec::default()
    };
    write_png(&run.loss_plot(), &spec, &series).map_err(Error::from)?;
    if fid.is_empty() {
        return Ok(());
    }
    let spec = PlotSpec {
        title: "training-time FID (EMA samples vs validation images)".into(),
        x_label: "step".into(),
        y_label: "FID".into(),
        ..PlotSpec::default()
    };
    let series = [Series {
        name: "FID".into(),
        points: fid,
        color: PALETTE[0],
    }];
    write_png(&run.root.join("fid.png"), &spec, &series).map_err(Error::from)
}
