//! The autoregressive baseline (`[model] kind = "ar"`, the paper's ARM row; design §9.1): the
//! DiT trunk of [`Dit`] with causal attention and no time input, predicting each token from the
//! tokens before it.
//!
//! - **Input.** Position i reads the token before it: `[BOS, x₀, …, x_{L−2}]`, where BOS is the
//!   ℓ = 1 codec's mask id V (the (V+1)-th embedding row, which no data token uses: a learned
//!   start-of-window token). The config requires ℓ = 1, so a "sub-token" is a whole token.
//! - **Output.** The logits at position i score `p_θ(x_i | x_{<i})`; causal attention makes
//!   them independent of positions > i (tested).
//! - **Likelihood.** `−log p_θ(x₀…x_{L−1}) = Σ_i −log p_θ(x_i | x_{<i})` is exact, so training
//!   minimises it ([`Denoiser::batch_loss`], whatever `train.objective` says) and evaluation
//!   reports it as both the valid bound and the paper objective ([`Denoiser::eval_terms`]),
//!   with one draw per sequence ([`Denoiser::exact_likelihood`]).
//! - **Sampling** is left to right ([`crate::sampler::ar`]).

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor};
use mdm_prime_core::config::RunConfig;
use mdm_prime_core::solver::Solver;
use mdm_prime_core::{Codec, Objective};

use super::{Denoiser, Dit, Templates};
use crate::batch::NoisedBatch;
use crate::objective::next_token_nll;
use crate::sampler::{Sample, SampleSettings, SamplerTiming};
use crate::subtoken::PrimeTables;

/// The autoregressive baseline: a causal DiT trunk and its V-way head.
#[derive(Module, Debug)]
pub struct Ar {
    trunk: Dit,
    /// The start-of-window input token, V (the ℓ = 1 codec's mask id).
    bos: usize,
}

impl Ar {
    /// The same network with bfloat16 matmuls ([`Dit::with_bf16_matmuls`]).
    pub fn with_bf16_matmuls(self, on: bool) -> Self {
        Ar {
            trunk: self.trunk.with_bf16_matmuls(on),
            bos: self.bos,
        }
    }

    /// The start-of-window token that position 0 reads.
    pub fn bos(&self) -> u32 {
        self.bos as u32
    }

    /// The network's input for clean tokens: shifted right by one behind BOS.
    ///
    /// # Shapes
    /// `x0: [B, L]` → `[B, L, 1]` (`[BOS, x₀, …, x_{L−2}]` per row).
    pub fn inputs(&self, x0: Tensor<2, Int>) -> Tensor<3, Int> {
        let [b, l] = x0.dims();
        let bos = Tensor::<2, Int>::full([b, 1], self.bos as i64, &x0.device());
        Tensor::cat(vec![bos, x0.narrow(1, 0, l - 1)], 1).reshape([b, l, 1])
    }

    /// Next-token logits: row i scores `x_i` given `x_{<i}`.
    ///
    /// # Shapes
    /// `x0: [B, L]` → `[B, L, V]`.
    pub fn next_token_logits(&self, x0: Tensor<2, Int>) -> Tensor<3> {
        let b = x0.dims()[0];
        self.logits(self.inputs(x0), &vec![0.0; b])
    }

    /// `−log p_θ(x_i | x_{<i})` per token; `x0_host` is `x0` on the host (`B·L` tokens).
    ///
    /// # Shapes
    /// `x0: [B, L]` → `[B, L]`.
    pub fn token_nll(&self, x0: Tensor<2, Int>, x0_host: &[u32]) -> Tensor<2> {
        next_token_nll(self.next_token_logits(x0), x0_host)
    }
}

impl Denoiser for Ar {
    fn init(cfg: &RunConfig, codec: &Codec, device: &Device) -> crate::Result<Self> {
        let Some(sizes) = cfg.model.ar() else {
            return Err(crate::Error::config_kind("ar", cfg.model.kind()));
        };
        // RunConfig::validate refuses ℓ > 1 for kind = "ar"; a codec built some other way is
        // refused here too.
        if codec.ell() != 1 {
            return Err(crate::Error::Core(mdm_prime_core::Error::config(
                "prime.ell",
                format!(
                    "{} with [model] kind = \"ar\": the autoregressive baseline needs ell = 1",
                    codec.ell()
                ),
            )));
        }
        Ok(Ar {
            trunk: Dit::from_sizes(sizes, codec, device).causal(),
            bos: codec.mask_id() as usize,
        })
    }

    fn time_conditioned(&self) -> bool {
        false
    }

    /// The causal trunk on its input tokens (`yt` = [`Ar::inputs`] of the clean tokens, or a
    /// prefix of them while sampling): `[B, L, 1]` → `[B, L, D]`.
    fn features(&self, yt: Tensor<3, Int>, sigma: &[f32]) -> Tensor<3> {
        self.trunk.features(yt, sigma)
    }

    fn head_logits(&self, h: Tensor<3>) -> Tensor<3> {
        self.trunk.head_logits(h)
    }

    /// Mean next-token cross-entropy over the batch's clean tokens (the noise, the objective and
    /// carry-over do not apply).
    fn batch_loss(
        &self,
        _: &PrimeTables,
        _: Objective,
        batch: &NoisedBatch,
        _: &[f32],
        _: bool,
        _: bool,
    ) -> Tensor<1> {
        self.token_nll(batch.x0.clone(), &batch.x0_host).mean()
    }

    /// The exact NLL per token, as both the valid bound and the paper objective.
    fn eval_terms(
        &self,
        _: &PrimeTables,
        batch: &NoisedBatch,
        _: &[f32],
        _: bool,
    ) -> [Tensor<2>; 2] {
        let nll = self.token_nll(batch.x0.clone(), &batch.x0_host);
        [nll.clone(), nll]
    }

    fn exact_likelihood(&self) -> bool {
        true
    }

    fn generate(
        &self,
        _: &PrimeTables,
        _: Solver,
        settings: &SampleSettings,
        templates: Templates<'_, '_>,
        _: u32,
        device: &Device,
        progress: &mut dyn FnMut(usize, usize),
    ) -> crate::Result<(Vec<Sample>, SamplerTiming)> {
        crate::sampler::ar::run(self, settings, templates, device, progress)
    }
}
