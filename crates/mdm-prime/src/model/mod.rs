//! The denoisers, behind one seam.
//!
//! [`Denoiser`] is what the trainer, the evaluator, the sampler, the benchmarks and the
//! checkpoints see: sub-tokens `y_t` in, per-position features out, and a per-position head that
//! turns features into logits over V. Everything downstream of the logits — the carry-over filter,
//! the log-softmax, both objectives, the draws — is shared ([`Denoiser::log_probs`]), so a network
//! only says how it reads a sequence of sub-tokens.
//!
//! - [`Dit`] (`[model] kind = "dit"`): MDLM's DiT with the sub-token encoder (design §6.2); its
//!   features are the final normalised hidden states `[B, L, D]` and the head is the V-way linear
//!   layer, so the sampler caches `[L, D]` per sequence and runs the head only where it reveals.
//! - [`Unet`] (`[model] kind = "unet"`): the ADM-style U-Net of the image experiments (design §6.3);
//!   its output layer is a 3 × 3 convolution, not a per-position map, so its features are the
//!   logits themselves and its head is the identity.
//!
//! - [`Ar`] (`[model] kind = "ar"`): the autoregressive baseline, the DiT trunk with causal
//!   attention reading the tokens shifted right by one; it overrides how a batch is scored
//!   ([`Denoiser::batch_loss`], [`Denoiser::eval_terms`]: next-token cross-entropy, the exact
//!   NLL) and how sequences are generated ([`Denoiser::generate`]: left to right), so the
//!   trainer, the evaluator and the sampler's callers never name it.
//!
//! [`Network`] is the runtime choice: the one `match` on `[model] kind`, itself a [`Denoiser`].

mod ar;
mod block;
mod dit;
pub mod unet;

pub use ar::Ar;
pub use dit::{Dit, TimeEmbedder};
pub use unet::Unet;

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor};
use mdm_prime_core::config::{ModelConfig, RunConfig};
use mdm_prime_core::solver::Solver;
use mdm_prime_core::{Codec, Objective, Schedule};

use crate::batch::NoisedBatch;
use crate::sampler::{Sample, SampleSettings, SamplerTiming, Template};
use crate::subtoken::PrimeTables;

/// Which sequences [`Denoiser::generate`] makes: `n` of them, the `b`-th completing the
/// template `template(b)`.
pub type Templates<'a, 't> = (usize, &'a dyn Fn(usize) -> &'t Template);

/// A network that reads noised sub-tokens and scores every token's V classes.
pub trait Denoiser: Module + Sized + 'static {
    /// Builds the network a run config describes (its `[model]` section, the codec's V, ℓ and
    /// b, the data's shape) on `device`. A config of another `[model] kind` is an error.
    fn init(cfg: &RunConfig, codec: &Codec, device: &Device) -> crate::Result<Self>;

    /// Whether the network reads the time (then the sampler never reuses an output).
    fn time_conditioned(&self) -> bool;

    /// Everything before the per-position head.
    ///
    /// # Shapes
    /// `yt: [B, L, ℓ]` (digits < b, or the mask id b), `sigma: [B]` → `[B, L, F]`.
    fn features(&self, yt: Tensor<3, Int>, sigma: &[f32]) -> Tensor<3>;

    /// The per-position head on any selection of feature rows.
    ///
    /// # Shapes
    /// `h: [N, M, F]` → logits `[N, M, V]`.
    fn head_logits(&self, h: Tensor<3>) -> Tensor<3>;

    /// The network's time input for times `t`: σ(t) = −log α_t when time-conditioned, else 0
    /// (the paper's setting).
    fn sigma(&self, schedule: &Schedule, t: &[f64]) -> Vec<f32> {
        let on = self.time_conditioned();
        t.iter()
            .map(|&t| {
                if on {
                    -(schedule.alpha(t).ln()) as f32
                } else {
                    0.0
                }
            })
            .collect()
    }

    /// Raw logits over V.
    ///
    /// # Shapes
    /// `yt: [B, L, ℓ]`, `sigma: [B]` → `[B, L, V]`.
    fn logits(&self, yt: Tensor<3, Int>, sigma: &[f32]) -> Tensor<3> {
        self.head_logits(self.features(yt, sigma))
    }

    /// `log p_θ(x | y_t)` over V, filtered by carry-over when on: the one forward that the
    /// objectives and the sampler share (design §15.2).
    ///
    /// # Shapes
    /// `yt: [B, L, ℓ]`, `sigma: [B]` → `[B, L, V]`.
    fn log_probs(
        &self,
        tables: &PrimeTables,
        yt: Tensor<3, Int>,
        sigma: &[f32],
        carry_over: bool,
    ) -> Tensor<3> {
        let logits = self.logits(yt.clone(), sigma);
        tables.log_probs(logits, yt, carry_over)
    }

    /// The mean training loss per token of a noised batch (what training minimises). A masked
    /// denoiser scores `objective` on `y_t` ([`crate::objective::masked_batch_loss`]); the
    /// autoregressive baseline overrides this with next-token cross-entropy on `x₀`.
    fn batch_loss(
        &self,
        tables: &PrimeTables,
        objective: Objective,
        batch: &NoisedBatch,
        sigma: &[f32],
        carry_over: bool,
        only_masked: bool,
    ) -> Tensor<1> {
        crate::objective::masked_batch_loss(
            self,
            tables,
            objective,
            batch,
            sigma,
            carry_over,
            only_masked,
        )
    }

    /// Per-token scores of a noised batch for evaluation, in nats: `[valid bound, paper
    /// objective]`, each `[B, L]` (design §4.5). A masked denoiser gives the sub-token ELBO's and
    /// the paper objective's terms at the batch's t and masks; the autoregressive baseline gives
    /// its exact NLL `−log p_θ(x_i | x_{<i})` for both.
    fn eval_terms(
        &self,
        tables: &PrimeTables,
        batch: &NoisedBatch,
        sigma: &[f32],
        carry_over: bool,
    ) -> [Tensor<2>; 2] {
        let logits = self.logits(batch.yt.clone(), sigma);
        if let Some(terms) = crate::objective::eval_terms_fused(tables, &logits, batch, carry_over)
        {
            return terms;
        }
        let lp = tables.log_probs(logits, batch.yt.clone(), carry_over);
        [Objective::Elbo, Objective::Paper].map(|obj| {
            crate::objective::token_terms(
                obj,
                tables,
                lp.clone(),
                batch.yt.clone(),
                batch.x0.clone(),
                batch.weight.clone(),
            )
        })
    }

    /// Whether [`Denoiser::eval_terms`] is exact: independent of the time and the masks, so
    /// one draw per sequence measures it (the autoregressive baseline).
    fn exact_likelihood(&self) -> bool {
        false
    }

    /// Generates `templates.0` sequences: the idle-step-aware ancestral sampler of
    /// [`crate::sampler`] for a masked denoiser; left to right for the autoregressive baseline.
    #[allow(clippy::too_many_arguments)]
    fn generate(
        &self,
        tables: &PrimeTables,
        solver: Solver,
        settings: &SampleSettings,
        templates: Templates<'_, '_>,
        replacement: u32,
        device: &Device,
        progress: &mut dyn FnMut(usize, usize),
    ) -> crate::Result<(Vec<Sample>, SamplerTiming)> {
        crate::sampler::run(
            self,
            tables,
            solver,
            settings,
            templates,
            replacement,
            device,
            progress,
        )
    }
}

/// `$body` with `$m` bound to the network inside whichever variant `$net` holds: the one place
/// that lists [`Network`]'s variants for the methods that only forward.
macro_rules! each_network {
    ($net:expr, $m:ident => $body:expr) => {
        match $net {
            Network::Dit($m) => $body,
            Network::Unet($m) => $body,
            Network::Ar($m) => $body,
        }
    };
}

/// The network a run config chose, as one type: what the trainer holds and the CLI loads. Each
/// variant is a [`Denoiser`]; checkpoint tensor names are the variant's own (the enum level is
/// not part of a parameter's path, see `params.rs`), so a run directory's weights read the same
/// whichever way the network is held.
#[derive(Module, Debug)]
// One value per copy of the weights (model, EMA): the size of the smaller variant is not worth a
// box, which burn's Module derive would not see through.
#[allow(clippy::large_enum_variant)]
pub enum Network {
    Dit(Dit),
    Unet(Unet),
    Ar(Ar),
}

impl Network {
    /// The DiT with bfloat16 matmuls ([`Dit::with_bf16_matmuls`]); the U-Net always computes in
    /// f32 (the config refuses bf16 for it).
    pub fn with_bf16_matmuls(self, on: bool) -> Self {
        match self {
            Network::Dit(d) => Network::Dit(d.with_bf16_matmuls(on)),
            Network::Ar(a) => Network::Ar(a.with_bf16_matmuls(on)),
            other => other,
        }
    }

    /// `dit`, `unet` or `ar`.
    pub fn kind(&self) -> &'static str {
        match self {
            Network::Dit(_) => "dit",
            Network::Unet(_) => "unet",
            Network::Ar(_) => "ar",
        }
    }

    /// [`Denoiser::log_probs`], callable without the trait in scope.
    pub fn log_probs(
        &self,
        tables: &PrimeTables,
        yt: Tensor<3, Int>,
        sigma: &[f32],
        carry_over: bool,
    ) -> Tensor<3> {
        Denoiser::log_probs(self, tables, yt, sigma, carry_over)
    }
}

impl Denoiser for Network {
    fn init(cfg: &RunConfig, codec: &Codec, device: &Device) -> crate::Result<Self> {
        Ok(match &cfg.model {
            ModelConfig::Dit(_) => Network::Dit(Dit::init(cfg, codec, device)?),
            ModelConfig::Unet(_) => Network::Unet(Unet::init(cfg, codec, device)?),
            ModelConfig::Ar(_) => Network::Ar(Ar::init(cfg, codec, device)?),
        })
    }

    fn time_conditioned(&self) -> bool {
        each_network!(self, m => Denoiser::time_conditioned(m))
    }

    fn features(&self, yt: Tensor<3, Int>, sigma: &[f32]) -> Tensor<3> {
        each_network!(self, m => Denoiser::features(m, yt, sigma))
    }

    fn head_logits(&self, h: Tensor<3>) -> Tensor<3> {
        each_network!(self, m => Denoiser::head_logits(m, h))
    }

    fn batch_loss(
        &self,
        tables: &PrimeTables,
        objective: Objective,
        batch: &NoisedBatch,
        sigma: &[f32],
        carry_over: bool,
        only_masked: bool,
    ) -> Tensor<1> {
        each_network!(self, m => Denoiser::batch_loss(
            m, tables, objective, batch, sigma, carry_over, only_masked
        ))
    }

    fn eval_terms(
        &self,
        tables: &PrimeTables,
        batch: &NoisedBatch,
        sigma: &[f32],
        carry_over: bool,
    ) -> [Tensor<2>; 2] {
        each_network!(self, m => Denoiser::eval_terms(m, tables, batch, sigma, carry_over))
    }

    fn exact_likelihood(&self) -> bool {
        each_network!(self, m => Denoiser::exact_likelihood(m))
    }

    fn generate(
        &self,
        tables: &PrimeTables,
        solver: Solver,
        settings: &SampleSettings,
        templates: Templates<'_, '_>,
        replacement: u32,
        device: &Device,
        progress: &mut dyn FnMut(usize, usize),
    ) -> crate::Result<(Vec<Sample>, SamplerTiming)> {
        each_network!(self, m => Denoiser::generate(
            m, tables, solver, settings, templates, replacement, device, progress
        ))
    }
}
