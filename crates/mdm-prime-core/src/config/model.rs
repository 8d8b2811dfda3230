//! `[model]`: which denoiser, and its sizes. The choice is an enum tagged by `kind`; each variant
//! has its own keys, and a key of another variant is an unknown-key error naming it. (A
//! `--set model.kind=…` override drops the old kind's keys, except between `dit` and `ar`, which
//! share theirs; see `config::apply_override`.)
//!
//! ```toml
//! [model]
//! kind = "dit"        # dit (text backbone, design §6.2; the default) | unet (image backbone, §6.3)
//!                     # | ar (the autoregressive baseline: the DiT trunk, causal; needs ell = 1)
//! d_model = 256
//! ```

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The denoiser and its configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ModelConfig {
    /// MDLM's DiT with the sub-token encoder (design §6.2).
    Dit(DitConfig),
    /// The ADM-style U-Net of the image experiments (design §6.3).
    Unet(UnetConfig),
    /// The autoregressive baseline (the paper's ARM row): the same DiT trunk with causal
    /// attention and no time input, trained by next-token cross-entropy on whole tokens. Its
    /// keys are the DiT's; `time_conditioning` must stay false and `prime.ell` must be 1.
    Ar(DitConfig),
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig::Dit(DitConfig::default())
    }
}

impl ModelConfig {
    /// `dit`, `unet` or `ar`.
    pub fn kind(&self) -> &'static str {
        match self {
            ModelConfig::Dit(_) => "dit",
            ModelConfig::Unet(_) => "unet",
            ModelConfig::Ar(_) => "ar",
        }
    }

    /// One line for logs: the kind and its main sizes.
    pub fn describe(&self) -> String {
        match self {
            ModelConfig::Dit(c) => format!(
                "DiT, D = {}, {} layers, {} heads",
                c.d_model, c.n_layers, c.n_heads
            ),
            ModelConfig::Unet(c) => format!(
                "U-Net, widths {:?} × {}, {} res-blocks per level, attention at downsampling {:?}",
                c.channel_mult, c.channels, c.num_res_blocks, c.attention_ds
            ),
            ModelConfig::Ar(c) => format!(
                "autoregressive DiT trunk (causal), D = {}, {} layers, {} heads",
                c.d_model, c.n_layers, c.n_heads
            ),
        }
    }

    /// The DiT section, if this is a DiT denoiser.
    pub fn dit(&self) -> Option<&DitConfig> {
        match self {
            ModelConfig::Dit(c) => Some(c),
            ModelConfig::Unet(_) | ModelConfig::Ar(_) => None,
        }
    }

    /// The U-Net section, if this is a U-Net.
    pub fn unet(&self) -> Option<&UnetConfig> {
        match self {
            ModelConfig::Unet(c) => Some(c),
            ModelConfig::Dit(_) | ModelConfig::Ar(_) => None,
        }
    }

    /// The autoregressive baseline's trunk, if this is `kind = "ar"`.
    pub fn ar(&self) -> Option<&DitConfig> {
        match self {
            ModelConfig::Ar(c) => Some(c),
            ModelConfig::Dit(_) | ModelConfig::Unet(_) => None,
        }
    }

    /// The DiT sizes of a DiT denoiser or of the autoregressive trunk (for FLOPs and memory
    /// bounds, which are the same for both).
    pub fn dit_trunk(&self) -> Option<&DitConfig> {
        match self {
            ModelConfig::Dit(c) | ModelConfig::Ar(c) => Some(c),
            ModelConfig::Unet(_) => None,
        }
    }

    /// Checks the sizes against ℓ and, for images, the shape `(H, W, C)` (`None`: not known yet,
    /// or text).
    pub fn validate(&self, ell: usize, image: Option<(usize, usize, usize)>) -> Result<()> {
        match self {
            ModelConfig::Dit(c) => c.validate(ell),
            ModelConfig::Ar(c) => {
                if ell != 1 {
                    return Err(Error::config(
                        "prime.ell",
                        format!(
                            "{ell} with [model] kind = \"ar\": the autoregressive baseline \
                             predicts whole tokens left to right, so sub-tokens have no meaning \
                             for it; set prime.ell = 1 (the diffusion runs of the comparison keep \
                             their own ell)"
                        ),
                    ));
                }
                if c.time_conditioning {
                    return Err(Error::config(
                        "model.time_conditioning",
                        "an autoregressive model has no diffusion time; remove \
                         model.time_conditioning (or set it to false) for kind = \"ar\"",
                    ));
                }
                c.validate(ell)
            }
            ModelConfig::Unet(c) => {
                // Before the data is read the image size is unknown: check the rest on a size
                // every level can halve.
                let side = 1usize << c.channel_mult.len().saturating_sub(1).min(16);
                let (h, w, ch) = image.unwrap_or((side, side, 1));
                c.validate(ell, ch, h, w)
            }
        }
    }

    /// `key = value` lines of every field, for comparing two runs' architectures.
    pub fn fingerprint(&self) -> Vec<(String, String)> {
        let mut out = vec![("model.kind".to_string(), self.kind().to_string())];
        if let Ok(toml::Value::Table(t)) = toml::Value::try_from(self) {
            for (k, v) in t {
                if k != "kind" && k != "dropout" {
                    out.push((format!("model.{k}"), v.to_string()));
                }
            }
        }
        out
    }
}

/// `[model] kind = "dit"`: the DiT denoiser (design §6.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DitConfig {
    /// Hidden width D; must be divisible by ℓ (each sub-token gets D/ℓ) and by n_heads.
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    /// Width of the conditioning vector c.
    pub cond_dim: usize,
    /// MLP width = mlp_ratio · D.
    pub mlp_ratio: usize,
    pub dropout: f64,
    /// Feed σ(t) to the network (off in the paper: c is a learned constant).
    pub time_conditioning: bool,
}

impl Default for DitConfig {
    /// The paper's "small" sizes are D 768, 12 layers, 12 heads (configs/owt-small.toml);
    /// the default is a CPU-sized model.
    fn default() -> Self {
        DitConfig {
            d_model: 256,
            n_layers: 4,
            n_heads: 4,
            cond_dim: 128,
            mlp_ratio: 4,
            dropout: 0.1,
            time_conditioning: false,
        }
    }
}

impl DitConfig {
    fn validate(&self, ell: usize) -> Result<()> {
        let err = |k: &str, r: String| Err(Error::config(k, r));
        if self.d_model == 0
            || self.n_layers == 0
            || self.n_heads == 0
            || self.cond_dim == 0
            || self.mlp_ratio == 0
        {
            return err(
                "model",
                "d_model, n_layers, n_heads, cond_dim and mlp_ratio must be ≥ 1".into(),
            );
        }
        if !self.d_model.is_multiple_of(ell) {
            return err(
                "model.d_model",
                format!(
                    "{} is not divisible by prime.ell = {ell}: each sub-token embedding gets D/ell \
                     dims (design §6.1); pick d_model as a multiple of ell",
                    self.d_model
                ),
            );
        }
        if !self.d_model.is_multiple_of(self.n_heads)
            || !(self.d_model / self.n_heads).is_multiple_of(2)
        {
            return err(
                "model.n_heads",
                format!(
                    "d_model = {} must split into n_heads = {} heads of an even width (rotary)",
                    self.d_model, self.n_heads
                ),
            );
        }
        check_dropout(self.dropout)
    }
}

/// The U-Net's sizes (`[model] kind = "unet"`). The default is the paper's CIFAR-10 network
/// (`image/models/model_configs.py` "model_discrete").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UnetConfig {
    /// Embedding width per pixel channel, C₀ (paper 96); each of the ℓ sub-tokens gets C₀/ℓ
    /// (must divide).
    pub embed_dim: usize,
    /// Base width (paper `model_channels` 96).
    pub channels: usize,
    /// Width multipliers per resolution level (paper [3, 4, 4]: 288, 384, 384; 32 → 16 → 8).
    pub channel_mult: Vec<usize>,
    /// Res-blocks per level (paper 5).
    pub num_res_blocks: usize,
    /// Downsample factors with self-attention (paper [2]: at 16×16 for 32×32 input). The
    /// middle block always has attention.
    pub attention_ds: Vec<usize>,
    /// Channels per attention head (paper 64); a narrower layer gets one head.
    pub head_channels: usize,
    /// GroupNorm groups (ADM: 32); must divide every width.
    pub groups: usize,
    /// Dropout inside the res-blocks (paper 0.4).
    pub dropout: f64,
    /// The reference's learned constant scale-shift after each res-block's second GroupNorm
    /// (`use_scale_shift_norm=True` with `ignore_time`: ADM's `ConstantEmbedding`). Paper: on.
    pub scale_shift: bool,
}

impl Default for UnetConfig {
    fn default() -> Self {
        UnetConfig {
            embed_dim: 96,
            channels: 96,
            channel_mult: vec![3, 4, 4],
            num_res_blocks: 5,
            attention_ds: vec![2],
            head_channels: 64,
            groups: 32,
            dropout: 0.4,
            scale_shift: true,
        }
    }
}

impl UnetConfig {
    /// Checks the sizes against ℓ and the image (`channels_in` × `height` × `width`); the error
    /// names the offending key.
    pub fn validate(
        &self,
        ell: usize,
        channels_in: usize,
        height: usize,
        width: usize,
    ) -> Result<()> {
        let levels = self.channel_mult.len();
        if levels == 0 || self.channel_mult.contains(&0) {
            return Err(Error::config(
                "model.channel_mult",
                format!(
                    "model.channel_mult = {:?}: needs at least one level, all > 0",
                    self.channel_mult
                ),
            ));
        }
        if self.channels == 0 {
            return Err(Error::config(
                "model.channels",
                "model.channels must be > 0",
            ));
        }
        // Each level halves the image: 2^16 is beyond any image (and keeps 2^levels a usize).
        if levels > 16 {
            return Err(Error::config(
                "model.channel_mult",
                format!(
                    "{levels} levels halve the image {} times; use at most 16",
                    levels - 1
                ),
            ));
        }
        if let Some(&m) = self
            .channel_mult
            .iter()
            .find(|&&m| m.checked_mul(self.channels).is_none())
        {
            return Err(Error::config(
                "model.channel_mult",
                format!(
                    "a width of {m} × model.channels = {} overflows; use realistic widths",
                    self.channels
                ),
            ));
        }
        if ell == 0 || self.embed_dim == 0 || !self.embed_dim.is_multiple_of(ell) {
            return Err(Error::config(
                "model.embed_dim",
                format!(
                    "model.embed_dim = {} is not a positive multiple of ell = {ell}",
                    self.embed_dim
                ),
            ));
        }
        if self.num_res_blocks == 0 {
            return Err(Error::config(
                "model.num_res_blocks",
                "model.num_res_blocks must be ≥ 1",
            ));
        }
        check_dropout(self.dropout)?;
        let widths = self.widths();
        for &w in &widths {
            if self.groups == 0 || !w.is_multiple_of(self.groups) {
                return Err(Error::config(
                    "model.groups",
                    format!(
                        "model.groups = {} does not divide the width {w} (widths {widths:?})",
                        self.groups
                    ),
                ));
            }
        }
        let factor = 1usize << (levels - 1);
        if height == 0
            || width == 0
            || !height.is_multiple_of(factor)
            || !width.is_multiple_of(factor)
        {
            return Err(Error::config(
                "model.channel_mult",
                format!(
                    "model.channel_mult has {levels} levels, which halve the image {} times: \
                 {height}×{width} is not divisible by {factor}",
                    levels - 1
                ),
            ));
        }
        for &ds in &self.attention_ds {
            if !ds.is_power_of_two() || ds > factor {
                return Err(Error::config(
                    "model.attention_ds",
                    format!(
                        "model.attention_ds = {:?}: {ds} is not a downsample factor of this \
                     network (1, 2, …, {factor})",
                        self.attention_ds
                    ),
                ));
            }
        }
        if self.head_channels == 0 {
            return Err(Error::config(
                "model.head_channels",
                "model.head_channels must be > 0",
            ));
        }
        let mut attn_widths: Vec<usize> = (0..levels)
            .filter(|&l| self.attention_ds.contains(&(1 << l)))
            .map(|l| widths[l])
            .collect();
        attn_widths.push(widths[levels - 1]);
        for w in attn_widths {
            if w > self.head_channels && !w.is_multiple_of(self.head_channels) {
                return Err(Error::config(
                    "model.head_channels",
                    format!(
                        "model.head_channels = {} does not divide the attention width {w}",
                        self.head_channels
                    ),
                ));
            }
        }
        if channels_in == 0 {
            return Err(Error::config("data.image", "image channels must be > 0"));
        }
        Ok(())
    }

    /// The width of each level, `channels · channel_mult[l]`.
    pub fn widths(&self) -> Vec<usize> {
        self.channel_mult
            .iter()
            .map(|m| m * self.channels)
            .collect()
    }

    /// Attention heads of a layer of `width` channels: `width / head_channels`, at least 1.
    pub fn heads(&self, width: usize) -> usize {
        (width / self.head_channels).max(1)
    }
}

fn check_dropout(p: f64) -> Result<()> {
    if (0.0..1.0).contains(&p) {
        Ok(())
    } else {
        Err(Error::config(
            "model.dropout",
            format!("{p} is outside [0, 1)"),
        ))
    }
}
