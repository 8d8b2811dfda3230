//! Lower bounds on the memory a model and a training step need, checked before anything is
//! allocated: a config whose sizes cannot fit is an error naming its keys and the memory they
//! ask for, never an allocation abort. Bounds, not estimates: they count only what must exist
//! (the weights, their gradients, AdamW's two moments and the EMA copy; the logits and the
//! residual stream of every layer), so a config they refuse cannot run here at all.

use super::{ModelConfig, RunConfig};
use crate::error::Result;
use crate::limits::{check_bytes, human};

/// Bytes of one f32.
const F32: u128 = 4;

impl RunConfig {
    /// A lower bound on the model's parameter count: the DiT's sub-token embedding, attention and
    /// MLP matrices, adaLN projections and head; the U-Net's 3 × 3 convolutions.
    pub fn parameter_lower_bound(&self) -> u128 {
        let v = u128::from(self.data.vocab_size());
        match &self.model {
            ModelConfig::Dit(c) | ModelConfig::Ar(c) => {
                let (d, n, r, cond) = (
                    c.d_model as u128,
                    c.n_layers as u128,
                    c.mlp_ratio as u128,
                    c.cond_dim as u128,
                );
                // Only the base is needed: not the codec's V × ℓ digit table.
                let base =
                    crate::subtoken::base_for(u64::from(self.data.vocab_size()), self.prime.ell)
                        .map_or(2, u128::from);
                let per_layer = (4 + 2 * r)
                    .saturating_mul(d.saturating_mul(d))
                    .saturating_add((6 * cond).saturating_mul(d));
                (base + 1)
                    .saturating_mul(d)
                    .saturating_add(n.saturating_mul(per_layer))
                    .saturating_add(d.saturating_mul(v))
            }
            ModelConfig::Unet(c) => c
                .channel_mult
                .iter()
                .map(|&m| (m as u128).saturating_mul(c.channels as u128))
                .map(|w| 18u128.saturating_mul(w.saturating_mul(w)))
                .fold(0u128, u128::saturating_add)
                .saturating_mul(c.num_res_blocks as u128),
        }
    }

    /// The model's sizes as `key = value`, for error messages.
    fn size_keys(&self) -> String {
        match &self.model {
            ModelConfig::Dit(c) | ModelConfig::Ar(c) => format!(
                "model.d_model = {}, model.n_layers = {}, model.mlp_ratio = {}, model.cond_dim = {}",
                c.d_model, c.n_layers, c.mlp_ratio, c.cond_dim
            ),
            ModelConfig::Unet(c) => format!(
                "model.channels = {}, model.channel_mult = {:?}, model.num_res_blocks = {}",
                c.channels, c.channel_mult, c.num_res_blocks
            ),
        }
    }

    /// Checks that the model and its EMA copy (what `sample`, `eval` and `impute` load) fit in
    /// memory.
    pub fn check_model_memory(&self) -> Result<()> {
        let p = self.parameter_lower_bound();
        check_bytes(
            &format!(
                "the model ({}; at least {p} parameters, f32, with its EMA copy)",
                self.size_keys()
            ),
            p.saturating_mul(2 * F32),
            "lower the model's sizes",
        )
    }

    /// Checks that one training step fits in memory: the weights with their gradients, AdamW
    /// moments and EMA (5 copies), plus the logits (`V` per token) and one `D`-wide residual
    /// stream per layer and MLP (`(4 + 2·mlp_ratio)·D` per token per layer) of a micro-batch of
    /// `train.batch_size / train.grad_accum` sequences of `data.seq_len` tokens.
    pub fn check_training_memory(&self) -> Result<()> {
        let t = &self.train;
        let micro = (t.batch_size / t.grad_accum.max(1)).max(1) as u128;
        let tokens = micro.saturating_mul(self.data.seq_len as u128);
        let per_token = match &self.model {
            ModelConfig::Dit(c) | ModelConfig::Ar(c) => (4 + 2 * c.mlp_ratio as u128)
                .saturating_mul(c.d_model as u128)
                .saturating_mul(c.n_layers as u128),
            ModelConfig::Unet(c) => c.embed_dim as u128,
        }
        .saturating_add(u128::from(self.data.vocab_size()));
        let p = self.parameter_lower_bound();
        let weights = p.saturating_mul(5 * F32);
        let activations = tokens.saturating_mul(per_token).saturating_mul(F32);
        check_bytes(
            &format!(
                "a training step (weights, gradients, AdamW moments and EMA of at least {p} \
                 parameters: {}; activations of {micro} sequences (train.batch_size = {} / \
                 train.grad_accum = {}) × data.seq_len = {} tokens: {}; {})",
                human(weights),
                t.batch_size,
                t.grad_accum,
                self.data.seq_len,
                human(activations),
                self.size_keys()
            ),
            weights.saturating_add(activations),
            "lower train.batch_size (or raise train.grad_accum), data.seq_len or the model's sizes",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_fit_and_huge_sizes_are_errors_naming_the_key() {
        let cfg = RunConfig::default();
        cfg.check_training_memory().unwrap();
        cfg.check_model_memory().unwrap();
        // The default DiT (D 256, 4 layers, ratio 4, cond 128, V 256, base 16): embedding
        // 17·256, layers 4·(12·65536 + 768·256), head 256·256.
        assert_eq!(
            cfg.parameter_lower_bound(),
            17 * 256 + 4 * (12 * 65_536 + 768 * 256) + 65_536
        );
        // One key per term of the bound; the CLI test tries every size key as a user would.
        for (set, needle) in [
            (
                "train.batch_size=100000000000",
                "train.batch_size = 100000000000",
            ),
            ("model.d_model=1000000000", "model.d_model = 1000000000"),
            ("data.seq_len=100000000000", "data.seq_len = 100000000000"),
        ] {
            // A huge seq_len is refused as soon as the config is read (its sampling grid).
            let e = RunConfig::from_toml_str("", "test", &[set.to_string()])
                .and_then(|cfg| cfg.check_training_memory())
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(needle) && e.contains("would not fit"),
                "{set}: {e}"
            );
        }
    }
}
