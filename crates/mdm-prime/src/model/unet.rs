//! The image denoiser: the ADM U-Net of the paper's CIFAR-10 / ImageNet-32 runs with MDM-Prime's
//! sub-token encoder (design §6.3; `image/models/discrete_unet.py::DiscretePrimeUNetModel` over
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
use burn::tensor::{Device, Int, Tensor};
use mdm_prime_core::Codec;
pub use mdm_prime_core::config::UnetConfig;

use crate::ops::{conv2d_module, conv2d_module_nhwc, group_norm_silu};
pub use blocks::{AttentionBlock, ResBlock};
use blocks::{affine, avg_pool2, conv, group_norm, upsample2, zero_conv};

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

/// The MDM-Prime image denoiser (design §6.3): sub-token embedding → ADM U-Net → V-way logits per
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
            Some(p) => conv2d_module(p, x),
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
        let (g, b) = affine(&self.out_norm);
        let h = group_norm_silu(h, self.out_norm.num_groups, g, b, true);
        // The head's conv writes channels last, `[B, H, W, C·V]`: channel `c·V + v` at (h, w)
        // is then already logit v of token `(h·W + w)·C + c` (what `output_to_tokens` does to
        // the channels-first layout, without its permutation).
        let [bsz, _, hh, ww] = h.dims();
        conv2d_module_nhwc(&self.out_conv, h).reshape([
            bsz,
            hh * ww * self.image_channels,
            self.vocab,
        ])
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
    /// `(h·W + w)·C + c` (`logits` gets the same from a channels-last head conv).
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

impl super::Denoiser for Unet {
    /// Needs the image shape in `[data] image` (set from the data when training starts).
    fn init(
        cfg: &mdm_prime_core::config::RunConfig,
        codec: &Codec,
        device: &Device,
    ) -> crate::Result<Self> {
        let Some(unet) = cfg.model.unet() else {
            return Err(crate::Error::config_kind("unet", cfg.model.kind()));
        };
        let Some(shape) = cfg.data.image else {
            return Err(mdm_prime_core::Error::config(
                "data.image",
                "the U-Net needs the image shape: set [data] kind = \"image\" and train from \
                 image data (the shape is read from it and recorded in the run's config)",
            )
            .into());
        };
        Ok(Unet::new(
            unet,
            codec,
            shape.height,
            shape.width,
            shape.channels,
            device,
        ))
    }

    fn time_conditioned(&self) -> bool {
        false
    }

    /// The logits themselves: the output layer is a 3 × 3 convolution, so there is no
    /// per-position head to split off (the sampler then caches `[L, V]` per sequence).
    fn features(&self, yt: Tensor<3, Int>, _sigma: &[f32]) -> Tensor<3> {
        self.logits(yt)
    }

    fn head_logits(&self, h: Tensor<3>) -> Tensor<3> {
        h
    }
}
