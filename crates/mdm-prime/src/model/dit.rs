//! The denoiser: MDLM's DiT with MDM-Prime's sub-token encoder (design §6).
//!
//! - **Encoder** (§6.1): one shared `(b+1) × D/ℓ` table embeds each sub-token (mask id b
//!   included); the ℓ embeddings of a token are concatenated in digit order into D dims.
//! - **Backbone** (§6.2): `n_layers` DiT blocks over L tokens ([`block::DitBlock`]).
//! - **Decoder**: final bias-free LayerNorm, adaLN (shift, scale), a zero-initialised V-way head,
//!   then the shared [`PrimeTables::log_probs`] (carry-over filter + log-softmax).
//!
//! With ℓ = 1 this is exactly MDLM: a `(V+1) × D` table with mask id V, and SUBS (the filter
//! zeroes revealed tokens' loss and forbids nothing on masked ones; the head never has a mask
//! class, which is SUBS's −∞ on the mask logit).

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Initializer, LayerNorm, Linear, LinearConfig};
use burn::tensor::activation::silu;
use burn::tensor::{Device, Int, Tensor, TensorData};
use mdm_prime_core::config::{DitConfig, ModelConfig, RunConfig};
use mdm_prime_core::{Codec, Schedule};

use super::Denoiser;
use super::block::{self, DitBlock, layer_norm, zero_linear};
use crate::ops::{Rope, layer_norm_modulate};
use crate::subtoken::PrimeTables;

/// Width of the sinusoidal time features (MDLM `TimestepEmbedder`).
const FREQ_DIM: usize = 256;

/// `TimestepEmbedder`: sinusoidal(σ) → Linear(256 → cond) → SiLU → Linear(cond → cond).
#[derive(Module, Debug)]
pub struct TimeEmbedder {
    lin1: Linear,
    lin2: Linear,
}

impl TimeEmbedder {
    fn new(cond_dim: usize, device: &Device) -> Self {
        TimeEmbedder {
            lin1: LinearConfig::new(FREQ_DIM, cond_dim).init(device),
            lin2: LinearConfig::new(cond_dim, cond_dim).init(device),
        }
    }

    /// `[cos(σ·f_k), sin(σ·f_k)]`, `f_k = 10000^(−k/128)`, then the MLP. `sigma: [B]` → `[B, cond]`.
    fn forward(&self, sigma: &[f32], device: &Device) -> Tensor<2> {
        let half = FREQ_DIM / 2;
        let mut feats = Vec::with_capacity(sigma.len() * FREQ_DIM);
        for &s in sigma {
            let args: Vec<f64> = (0..half)
                .map(|k| s as f64 * (-(10000f64.ln()) * k as f64 / half as f64).exp())
                .collect();
            feats.extend(args.iter().map(|a| a.cos() as f32));
            feats.extend(args.iter().map(|a| a.sin() as f32));
        }
        let x = Tensor::<2>::from_data(TensorData::new(feats, [sigma.len(), FREQ_DIM]), device);
        self.lin2.forward(silu(self.lin1.forward(x)))
    }
}

/// The MDM-Prime DiT denoiser.
#[derive(Module, Debug)]
pub struct Dit {
    /// `(b+1) × D/ℓ`, shared by all digit slots.
    vocab_embed: Embedding,
    sigma_map: TimeEmbedder,
    blocks: Vec<DitBlock>,
    norm_final: LayerNorm,
    /// `Linear(cond → 2D)`, zero-initialised: shift and scale of the final layer.
    ada_ln_final: Linear,
    /// `Linear(D → V)`, zero-initialised: at init the output is uniform.
    head: Linear,
    ell: usize,
    d_model: usize,
    n_heads: usize,
    time_conditioning: bool,
    /// The body's and the head's matmuls in bfloat16 (see [`block::linear_bf16`]).
    bf16: bool,
}

impl Dit {
    /// Builds the network for `codec` (V, ℓ, b) on `device`. `cfg` must be a validated DiT
    /// config (`RunConfig::validate`: ℓ divides D, heads divide D).
    pub fn new(cfg: &ModelConfig, codec: &Codec, device: &Device) -> Self {
        let cfg = cfg
            .dit()
            .expect("Dit::new needs [model] kind = \"dit\"; Denoiser::init checks it first");
        Dit::from_sizes(cfg, codec, device)
    }

    /// [`Dit::new`] from the DiT's own section (also the autoregressive baseline's trunk).
    pub fn from_sizes(cfg: &DitConfig, codec: &Codec, device: &Device) -> Self {
        let ell = codec.ell();
        assert!(
            cfg.d_model.is_multiple_of(ell),
            "d_model {} not divisible by ell {ell}",
            cfg.d_model
        );
        let sub = cfg.d_model / ell;
        // MDLM's EmbeddingLayer: kaiming_uniform(a = √5) on a (rows × sub) table:
        // bound = √(1/3)·√(3/sub) = 1/√sub.
        let bound = 1.0 / (sub as f64).sqrt();
        let vocab_embed = EmbeddingConfig::new(codec.mask_id() as usize + 1, sub)
            .with_initializer(Initializer::Uniform {
                min: -bound,
                max: bound,
            })
            .init(device);
        let blocks = (0..cfg.n_layers)
            .map(|_| {
                DitBlock::new(
                    cfg.d_model,
                    cfg.n_heads,
                    cfg.mlp_ratio,
                    cfg.cond_dim,
                    cfg.dropout,
                    device,
                )
            })
            .collect();
        Dit {
            vocab_embed,
            sigma_map: TimeEmbedder::new(cfg.cond_dim, device),
            blocks,
            norm_final: layer_norm(cfg.d_model, device),
            ada_ln_final: zero_linear(cfg.cond_dim, 2 * cfg.d_model, device),
            head: zero_linear(cfg.d_model, codec.vocab_size() as usize, device),
            ell,
            d_model: cfg.d_model,
            n_heads: cfg.n_heads,
            time_conditioning: cfg.time_conditioning,
            bf16: false,
        }
    }

    /// The same network with its large matmuls (attention and MLP projections, the head) in
    /// bfloat16 or back in f32; the weights stay f32. Small ones (time embedding, adaLN) stay f32.
    pub fn with_bf16_matmuls(mut self, on: bool) -> Self {
        self.bf16 = on;
        for block in &mut self.blocks {
            block.bf16 = on;
        }
        self
    }

    /// The same network with causal attention in every block: position i's features then
    /// depend on the tokens at positions ≤ i only (the autoregressive baseline's trunk).
    pub(crate) fn causal(mut self) -> Self {
        for block in &mut self.blocks {
            block.causal = true;
        }
        self
    }

    /// Everything before the V-way head: the final normalised, modulated features.
    ///
    /// # Shapes
    /// `yt: [B, L, ℓ]`, `sigma: [B]` → `[B, L, D]`.
    pub fn features(&self, yt: Tensor<3, Int>, sigma: &[f32]) -> Tensor<3> {
        let [b, l, ell] = yt.dims();
        assert_eq!(
            ell, self.ell,
            "yt has {ell} digits per token, the model ell = {}",
            self.ell
        );
        let device = yt.device();
        let span = crate::profile::span("embedding");
        let x = self
            .vocab_embed
            .forward(yt.reshape([b, l * ell]))
            .reshape([b, l, self.d_model]);
        let c = silu(self.sigma_map.forward(sigma, &device));
        let rope = Rope::new(l, self.d_model / self.n_heads, &device);
        drop(span);
        let mut x = x;
        for block in &self.blocks {
            x = block.forward(x, c.clone(), &rope);
        }
        let _span = crate::profile::span("head");
        let m = self
            .ada_ln_final
            .forward(c)
            .reshape([b, 1, 2 * self.d_model])
            .chunk(2, 2);
        let [shift, scale]: [Tensor<3>; 2] = m.try_into().expect("chunk(2) gives 2 parts");
        layer_norm_modulate(x, self.norm_final.gamma.val(), shift, scale)
    }

    /// The V-way head on features `[N, M, D]` → logits `[N, M, V]` (any selection of positions).
    pub fn head_logits(&self, h: Tensor<3>) -> Tensor<3> {
        let _span = crate::profile::span("head");
        block::rows(&self.head, h, self.bf16)
    }

    /// [`Denoiser::sigma`], callable without the trait in scope.
    pub fn sigma(&self, schedule: &Schedule, t: &[f64]) -> Vec<f32> {
        Denoiser::sigma(self, schedule, t)
    }

    /// [`Denoiser::log_probs`]: filtered log-probabilities `[B, L, V]`.
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

impl Denoiser for Dit {
    fn init(cfg: &RunConfig, codec: &Codec, device: &Device) -> crate::Result<Self> {
        match cfg.model.dit() {
            Some(_) => Ok(Dit::new(&cfg.model, codec, device)),
            None => Err(crate::Error::config_kind("dit", cfg.model.kind())),
        }
    }

    fn time_conditioned(&self) -> bool {
        self.time_conditioning
    }

    fn features(&self, yt: Tensor<3, Int>, sigma: &[f32]) -> Tensor<3> {
        Dit::features(self, yt, sigma)
    }

    fn head_logits(&self, h: Tensor<3>) -> Tensor<3> {
        Dit::head_logits(self, h)
    }
}
