//! The image denoiser: the ADM U-Net of the paper's CIFAR-10 / ImageNet-32 runs with MDM-Prime's
//! sub-token encoder (spec §6.3; `image/models/discrete_unet.py::DiscretePrimeUNetModel` over
//! `image/models/unet.py::UNetModel`, from guided-diffusion via Discrete Flow Matching).
//!
//! - **Encoder** (§6.1, §6.3): one shared `(b+1) × C₀/ℓ` table embeds every sub-token (mask id b
//!   included); per pixel the `C·ℓ` embeddings are concatenated in the order
//!   `[ch0 d0, ch0 d1, …, ch0 d(ℓ−1), ch1 d0, …]` (§2.2) into `C·C₀` feature channels.
//! - **Backbone**: guided-diffusion's `UNetModel` with `ignore_time=True` (no time input),
//!   average-pool / nearest resampling without convs, attention at the configured downsample
//!   factors and in the middle.
//! - **Decoder** (§5.2): GroupNorm → SiLU → a zero-initialised 3 × 3 conv to `C·V` channels,
//!   channel `c·V + v` being the logit of value v for image channel c; at init every logit is 0
//!   (uniform output). The logits are plain V-way logits, no consistency filter (§5.2).
//!
//! Tokens are the pixels' channel values in (H, W, C) order: token `(h·W + w)·C + c`.

mod blocks;

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{Embedding, EmbeddingConfig, GroupNorm, Initializer};
use burn::tensor::activation::silu;
use burn::tensor::{Device, Int, Tensor};
use mdm_prime_core::Codec;
use serde::{Deserialize, Serialize};

pub use blocks::{AttentionBlock, ResBlock, avg_pool2, upsample2};
use blocks::{conv, group_norm, group_norm_affine, zero_conv};

/// The U-Net's sizes (`[model.unet]`). The default is the paper's CIFAR-10 network
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
    ) -> Result<(), String> {
        let levels = self.channel_mult.len();
        if levels == 0 || self.channel_mult.contains(&0) {
            return Err(format!(
                "model.unet.channel_mult = {:?}: needs at least one level, all > 0",
                self.channel_mult
            ));
        }
        if self.channels == 0 {
            return Err("model.unet.channels must be > 0".into());
        }
        if ell == 0 || self.embed_dim == 0 || !self.embed_dim.is_multiple_of(ell) {
            return Err(format!(
                "model.unet.embed_dim = {} is not a positive multiple of ell = {ell}",
                self.embed_dim
            ));
        }
        if self.num_res_blocks == 0 {
            return Err("model.unet.num_res_blocks must be ≥ 1".into());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!(
                "model.unet.dropout = {} is not in [0, 1)",
                self.dropout
            ));
        }
        let widths = self.widths();
        for &w in &widths {
            if self.groups == 0 || !w.is_multiple_of(self.groups) {
                return Err(format!(
                    "model.unet.groups = {} does not divide the width {w} (widths {widths:?})",
                    self.groups
                ));
            }
        }
        let factor = 1usize << (levels - 1);
        if height == 0
            || width == 0
            || !height.is_multiple_of(factor)
            || !width.is_multiple_of(factor)
        {
            return Err(format!(
                "model.unet.channel_mult has {levels} levels, which halve the image {} times: \
                 {height}×{width} is not divisible by {factor}",
                levels - 1
            ));
        }
        for &ds in &self.attention_ds {
            if !ds.is_power_of_two() || ds > factor {
                return Err(format!(
                    "model.unet.attention_ds = {:?}: {ds} is not a downsample factor of this \
                     network (1, 2, …, {factor})",
                    self.attention_ds
                ));
            }
        }
        if self.head_channels == 0 {
            return Err("model.unet.head_channels must be > 0".into());
        }
        let mut attn_widths: Vec<usize> = (0..levels)
            .filter(|&l| self.attention_ds.contains(&(1 << l)))
            .map(|l| widths[l])
            .collect();
        attn_widths.push(widths[levels - 1]);
        for w in attn_widths {
            if w > self.head_channels && !w.is_multiple_of(self.head_channels) {
                return Err(format!(
                    "model.unet.head_channels = {} does not divide the attention width {w}",
                    self.head_channels
                ));
            }
        }
        if channels_in == 0 {
            return Err("image channels must be > 0".into());
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

    fn heads(&self, width: usize) -> usize {
        (width / self.head_channels).max(1)
    }
}

/// One encoder or decoder step: a res-block, then attention at the configured resolutions.
#[derive(Module, Debug)]
pub struct Stage {
    res: ResBlock,
    attn: Option<AttentionBlock>,
}

impl Stage {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = self.res.forward(x);
        match &self.attn {
            Some(a) => a.forward(x),
            None => x,
        }
    }
}

/// The MDM-Prime image denoiser (spec §6.3): sub-token embedding → ADM U-Net → V-way logits per
/// pixel channel.
#[derive(Module, Debug)]
pub struct Unet {
    /// `(b+1) × C₀/ℓ`, shared by all channels and digit slots.
    embed: Embedding,
    /// 3 × 3 conv `C·C₀ → channels·channel_mult[0]`, only when the widths differ (the paper's
    /// 3·96 = 288 = 96·3, so its `input_projection=False`).
    input_proj: Option<Conv2d>,
    /// `levels · num_res_blocks` stages; a 2 × 2 average pool follows each level but the last.
    down: Vec<Stage>,
    mid_res1: ResBlock,
    mid_attn: AttentionBlock,
    mid_res2: ResBlock,
    /// `levels · (num_res_blocks + 1)` stages, deepest level first, each on `[h, skip]`; a
    /// nearest 2× upsample follows each level but the first.
    up: Vec<Stage>,
    out_norm: GroupNorm,
    /// 3 × 3 conv to `C·V`, zero-initialised: at init the output is uniform.
    out_conv: Conv2d,
    levels: usize,
    num_res_blocks: usize,
    ell: usize,
    embed_dim: usize,
    height: usize,
    width: usize,
    image_channels: usize,
    vocab: usize,
}

impl Unet {
    /// Builds the network for `codec` (V, ℓ, b) and `image_channels × height × width` images.
    ///
    /// # Panics
    /// If `cfg.validate(..)` fails.
    pub fn new(
        cfg: &UnetConfig,
        codec: &Codec,
        height: usize,
        width: usize,
        image_channels: usize,
        device: &Device,
    ) -> Self {
        let ell = codec.ell();
        if let Err(e) = cfg.validate(ell, image_channels, height, width) {
            panic!("invalid U-Net config: {e}");
        }
        let (groups, p) = (cfg.groups, cfg.dropout);
        // ADM's ConstantEmbedding init: U(±√emb_channels), emb_channels = 4·model_channels.
        let ss = cfg.scale_shift.then(|| ((4 * cfg.channels) as f64).sqrt());
        let res = |c_in, c_out| ResBlock::new(c_in, c_out, groups, p, ss, device);
        let attn = |ds: usize, c: usize| {
            cfg.attention_ds
                .contains(&ds)
                .then(|| AttentionBlock::new(c, cfg.heads(c), groups, device))
        };
        let widths = cfg.widths();
        let levels = widths.len();
        let c_embed = image_channels * cfg.embed_dim;
        let c0 = widths[0];

        // The encoder, tracking ADM's `input_block_chans` (the skip widths).
        let mut skips = vec![c0];
        let mut ch = c0;
        let mut down = Vec::new();
        for (level, &w) in widths.iter().enumerate() {
            for _ in 0..cfg.num_res_blocks {
                down.push(Stage {
                    res: res(ch, w),
                    attn: attn(1 << level, w),
                });
                ch = w;
                skips.push(ch);
            }
            if level + 1 < levels {
                skips.push(ch);
            }
        }
        let mut up = Vec::new();
        for (level, &w) in widths.iter().enumerate().rev() {
            for _ in 0..=cfg.num_res_blocks {
                let skip = skips.pop().expect("one skip per decoder stage");
                up.push(Stage {
                    res: res(ch + skip, w),
                    attn: attn(1 << level, w),
                });
                ch = w;
            }
        }
        debug_assert!(skips.is_empty());

        Unet {
            // PyTorch's nn.Embedding default init, N(0, 1), as the reference's PixelEmbedding.
            embed: EmbeddingConfig::new(codec.mask_id() as usize + 1, cfg.embed_dim / ell)
                .with_initializer(Initializer::Normal {
                    mean: 0.0,
                    std: 1.0,
                })
                .init(device),
            input_proj: (c_embed != c0).then(|| conv(c_embed, c0, 3, device)),
            down,
            mid_res1: res(widths[levels - 1], widths[levels - 1]),
            mid_attn: AttentionBlock::new(
                widths[levels - 1],
                cfg.heads(widths[levels - 1]),
                groups,
                device,
            ),
            mid_res2: res(widths[levels - 1], widths[levels - 1]),
            up,
            out_norm: group_norm(groups, c0, device),
            out_conv: zero_conv(c0, image_channels * codec.vocab_size() as usize, 3, device),
            levels,
            num_res_blocks: cfg.num_res_blocks,
            ell,
            embed_dim: cfg.embed_dim,
            height,
            width,
            image_channels,
            vocab: codec.vocab_size() as usize,
        }
    }

    /// Raw logits over V for every pixel channel.
    ///
    /// # Shapes
    /// `yt: [B, L, ℓ]` with L = H·W·C tokens in (H, W, C) order (digits < b, or the mask id b)
    /// → `[B, L, V]` in the same order.
    pub fn logits(&self, yt: Tensor<3, Int>) -> Tensor<3> {
        let span = crate::profile::span("embedding");
        let x = self.embed_input(yt);
        let mut h = match &self.input_proj {
            Some(p) => p.forward(x),
            None => x,
        };
        drop(span);
        let mut skips = vec![h.clone()];
        let mut stages = self.down.iter();
        for level in 0..self.levels {
            for stage in stages.by_ref().take(self.num_res_blocks) {
                h = stage.forward(h);
                skips.push(h.clone());
            }
            if level + 1 < self.levels {
                h = avg_pool2(h);
                skips.push(h.clone());
            }
        }
        h = self
            .mid_res2
            .forward(self.mid_attn.forward(self.mid_res1.forward(h)));
        let mut stages = self.up.iter();
        for level in (0..self.levels).rev() {
            for stage in stages.by_ref().take(self.num_res_blocks + 1) {
                let skip = skips.pop().expect("one skip per decoder stage");
                let span = crate::profile::span("concat");
                let hs = Tensor::cat(vec![h, skip], 1);
                drop(span);
                h = stage.forward(hs);
            }
            if level > 0 {
                h = upsample2(h);
            }
        }
        let _span = crate::profile::span("head");
        let g = self.out_norm.gamma.as_ref().expect("affine").val();
        let b = self.out_norm.beta.as_ref().expect("affine").val();
        let h = silu(group_norm_affine(h, self.out_norm.num_groups, g, b));
        self.output_to_tokens(self.out_conv.forward(h))
    }

    /// The encoder: sub-token embeddings concatenated per pixel, channel index
    /// `(c·ℓ + j)·(C₀/ℓ) + e` for image channel c, digit j, embedding coordinate e (as the
    /// reference's `PixelEmbedding`).
    ///
    /// # Shapes
    /// `yt: [B, H·W·C, ℓ]` → `[B, C·C₀, H, W]`.
    pub fn embed_input(&self, yt: Tensor<3, Int>) -> Tensor<4> {
        let [b, l, ell] = yt.dims();
        let (h, w, c) = (self.height, self.width, self.image_channels);
        assert_eq!(
            ell, self.ell,
            "yt has {ell} digits per token, the model ell = {}",
            self.ell
        );
        assert_eq!(l, h * w * c, "yt has {l} tokens, the image {h}×{w}×{c}");
        self.embed
            .forward(yt.reshape([b, l * ell]))
            .reshape([b, h, w, c * self.embed_dim])
            .permute([0, 3, 1, 2])
    }

    /// The decoder's reshape: output channel `c·V + v` at (h, w) becomes logit v of token
    /// `(h·W + w)·C + c`.
    ///
    /// # Shapes
    /// `[B, C·V, H, W]` → `[B, H·W·C, V]`.
    pub fn output_to_tokens(&self, out: Tensor<4>) -> Tensor<3> {
        let [b, _, h, w] = out.dims();
        let (c, v) = (self.image_channels, self.vocab);
        out.reshape([b, c, v, h, w])
            .permute([0, 3, 4, 1, 2])
            .reshape([b, h * w * c, v])
    }
}
