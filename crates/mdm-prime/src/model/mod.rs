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
//! [`Network`] is the runtime choice: the one `match` on `[model] kind`, itself a [`Denoiser`].

mod block;
mod dit;
pub mod unet;

pub use dit::{Dit, TimeEmbedder};
pub use unet::Unet;

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor};
use mdm_prime_core::config::{ModelConfig, RunConfig};
use mdm_prime_core::{Codec, Schedule};

use crate::subtoken::PrimeTables;

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
}

impl Network {
    /// The DiT with bfloat16 matmuls ([`Dit::with_bf16_matmuls`]); the U-Net always computes in
    /// f32 (the config refuses bf16 for it).
    pub fn with_bf16_matmuls(self, on: bool) -> Self {
        match self {
            Network::Dit(d) => Network::Dit(d.with_bf16_matmuls(on)),
            other => other,
        }
    }

    /// `dit` or `unet`.
    pub fn kind(&self) -> &'static str {
        match self {
            Network::Dit(_) => "dit",
            Network::Unet(_) => "unet",
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
        })
    }

    fn time_conditioned(&self) -> bool {
        match self {
            Network::Dit(m) => Denoiser::time_conditioned(m),
            Network::Unet(m) => Denoiser::time_conditioned(m),
        }
    }

    fn features(&self, yt: Tensor<3, Int>, sigma: &[f32]) -> Tensor<3> {
        match self {
            Network::Dit(m) => Denoiser::features(m, yt, sigma),
            Network::Unet(m) => Denoiser::features(m, yt, sigma),
        }
    }

    fn head_logits(&self, h: Tensor<3>) -> Tensor<3> {
        match self {
            Network::Dit(m) => Denoiser::head_logits(m, h),
            Network::Unet(m) => Denoiser::head_logits(m, h),
        }
    }
}
