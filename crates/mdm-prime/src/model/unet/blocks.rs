//! The U-Net's layers (design §6.3; `image/models/unet.py`, from guided-diffusion): the residual
//! block, the spatial self-attention block, and the parameter-free resampling.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Dropout, DropoutConfig, GroupNorm, GroupNormConfig, Initializer, PaddingConfig2d};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor};

use crate::ops::{GN_EPS, conv2d_module, dropout, group_norm_silu};

/// A `k × k` convolution, stride 1, "same" padding, PyTorch's default initialisation
/// (kaiming-uniform a = √5: weight and bias ~ U(±1/√fan_in), which is burn's default too). Its
/// forward goes through [`conv2d_module`] (one im2col + GEMM op each way: burn-flex's conv2d
/// weight gradient is several times slower than the GEMM it amounts to); the module keeps the
/// parameters and their checkpoint names.
pub fn conv(c_in: usize, c_out: usize, k: usize, device: &Device) -> Conv2d {
    conv_config(c_in, c_out, k).init(device)
}

/// [`conv`] with weight and bias zero (ADM's `zero_module`): the layer starts as the zero map.
pub fn zero_conv(c_in: usize, c_out: usize, k: usize, device: &Device) -> Conv2d {
    conv_config(c_in, c_out, k)
        .with_initializer(Initializer::Zeros)
        .init(device)
}

fn conv_config(c_in: usize, c_out: usize, k: usize) -> Conv2dConfig {
    let p = k / 2;
    Conv2dConfig::new([c_in, c_out], [k, k]).with_padding(PaddingConfig2d::Explicit(p, p, p, p))
}

/// ADM's `normalization(ch)`: GroupNorm with learned per-channel weight and bias.
pub fn group_norm(groups: usize, channels: usize, device: &Device) -> GroupNorm {
    GroupNormConfig::new(groups, channels)
        .with_epsilon(GN_EPS)
        .init(device)
}

/// The module's GroupNorm (its learned weight and bias), then SiLU.
fn norm_silu(norm: &GroupNorm, x: Tensor<4>) -> Tensor<4> {
    let _span = crate::profile::span("norm");
    let (g, b) = affine(norm);
    group_norm_silu(x, norm.num_groups, g, b, true)
}

/// The module's learned per-channel weight and bias.
pub(super) fn affine(norm: &GroupNorm) -> (Tensor<1>, Tensor<1>) {
    let g = norm.gamma.as_ref().expect("affine GroupNorm").val();
    let b = norm.beta.as_ref().expect("affine GroupNorm").val();
    (g, b)
}

/// 2 × 2 average pooling, stride 2 (ADM's `Downsample` with `conv_resample=False`).
///
/// # Shapes
/// `[B, C, H, W]` → `[B, C, H/2, W/2]` (H, W even).
pub fn avg_pool2(x: Tensor<4>) -> Tensor<4> {
    let _span = crate::profile::span("resample");
    let [b, c, h, w] = x.dims();
    x.reshape([b, c, h / 2, 2, w / 2, 2])
        .mean_dim(5)
        .mean_dim(3)
        .reshape([b, c, h / 2, w / 2])
}

/// Nearest-neighbour 2× upsampling (ADM's `Upsample` with `conv_resample=False`).
///
/// # Shapes
/// `[B, C, H, W]` → `[B, C, 2H, 2W]`.
pub fn upsample2(x: Tensor<4>) -> Tensor<4> {
    let _span = crate::profile::span("resample");
    let [b, c, h, w] = x.dims();
    x.reshape([b, c, h, 1, w, 1])
        .expand([b, c, h, 2, w, 2])
        .reshape([b, c, 2 * h, 2 * w])
}

/// ADM's `ResBlock` without a time input:
/// `h = conv₂(drop(SiLU(ss(GN₂(conv₁(SiLU(GN₁(x))))))))`, out = `skip(x) + h`, with conv₂
/// zero-initialised (the block starts as `skip`) and `skip` a 1 × 1 conv when the width changes.
///
/// `ss` is the reference's scale-shift: with `use_scale_shift_norm=True` and `ignore_time`,
/// ADM's `emb_layers` become a `ConstantEmbedding`, a learned `[2·C_out]` vector
/// `(scale, shift)` initialised U(±√(4·model_channels)), applied as `GN₂(h)·(1 + scale) + shift`.
/// It is folded into GN₂'s affine here (same function, one pass).
#[derive(Module, Debug)]
pub struct ResBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    norm2: GroupNorm,
    /// `[scale; shift]`, `[2·C_out]`; `None` when the scale-shift is off.
    scale_shift: Option<Param<Tensor<1>>>,
    dropout: Dropout,
    /// Zero-initialised.
    conv2: Conv2d,
    /// 1 × 1 conv when `C_in ≠ C_out`, else identity.
    skip: Option<Conv2d>,
}

impl ResBlock {
    /// A block `c_in → c_out`; `scale_shift_bound` is the init bound of the constant
    /// scale-shift (`None`: no scale-shift).
    pub fn new(
        c_in: usize,
        c_out: usize,
        groups: usize,
        dropout: f64,
        scale_shift_bound: Option<f64>,
        device: &Device,
    ) -> Self {
        ResBlock {
            norm1: group_norm(groups, c_in, device),
            conv1: conv(c_in, c_out, 3, device),
            norm2: group_norm(groups, c_out, device),
            scale_shift: scale_shift_bound.map(|bound| {
                Initializer::Uniform {
                    min: -bound,
                    max: bound,
                }
                .init([2 * c_out], device)
            }),
            dropout: DropoutConfig::new(dropout).init(),
            conv2: zero_conv(c_out, c_out, 3, device),
            skip: (c_in != c_out).then(|| conv(c_in, c_out, 1, device)),
        }
    }

    /// # Shapes
    /// `x: [B, C_in, H, W]` → `[B, C_out, H, W]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let h = norm_silu(&self.norm1, x.clone());
        let span = crate::profile::span("conv");
        let h = conv2d_module(&self.conv1, h);
        drop(span);
        let span = crate::profile::span("norm");
        let (mut g, mut b) = affine(&self.norm2);
        if let Some(ss) = &self.scale_shift {
            let c = g.dims()[0];
            let ss = ss.val();
            let scale = ss.clone().slice(0..c).add_scalar(1.0);
            let shift = ss.slice(c..2 * c);
            g = g * scale.clone();
            b = b * scale + shift;
        }
        let h = group_norm_silu(h, self.norm2.num_groups, g, b, true);
        let h = dropout(h, &self.dropout);
        drop(span);
        let _span = crate::profile::span("conv");
        let h = conv2d_module(&self.conv2, h);
        let x = match &self.skip {
            Some(skip) => conv2d_module(skip, x),
            None => x,
        };
        x + h
    }
}

/// ADM's `AttentionBlock` with `QKVAttention` ("new order": q, k, v split before the heads):
/// `x + proj(attn(qkv(GN(x))))` over the H·W positions, `heads` heads of `C/heads` channels,
/// q and k each scaled by `(C/heads)^(−1/4)`. `qkv` and `proj` are 1 × 1 convs (ADM's
/// `conv_nd(1, ·, ·, 1)`), `proj` zero-initialised (the block starts as the identity).
#[derive(Module, Debug)]
pub struct AttentionBlock {
    norm: GroupNorm,
    qkv: Conv2d,
    /// Zero-initialised.
    proj: Conv2d,
    heads: usize,
}

impl AttentionBlock {
    pub fn new(channels: usize, heads: usize, groups: usize, device: &Device) -> Self {
        AttentionBlock {
            norm: group_norm(groups, channels, device),
            qkv: conv(channels, 3 * channels, 1, device),
            proj: zero_conv(channels, channels, 1, device),
            heads,
        }
    }

    /// # Shapes
    /// `x: [B, C, H, W]` → `[B, C, H, W]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let _span = crate::profile::span("attention");
        let [b, c, h, w] = x.dims();
        let (nh, t) = (self.heads, h * w);
        let ch = c / nh;
        let (g, beta) = affine(&self.norm);
        let xn = group_norm_silu(x.clone(), self.norm.num_groups, g, beta, false);
        // [B, 3C, H, W] → [B, 3, heads, ch, T]: channel index (k·heads + head)·ch + i.
        let qkv = conv2d_module(&self.qkv, xn).reshape([b, 3, nh, ch, t]);
        let part = |k: usize| qkv.clone().slice_dim(1, k..k + 1).reshape([b, nh, ch, t]);
        let scale = (ch as f64).powf(-0.25);
        let (q, k, v) = (
            part(0).mul_scalar(scale),
            part(1).mul_scalar(scale),
            part(2),
        );
        // weight[t, s] = Σ_c q[c, t]·k[c, s], softmax over s; out[c, t] = Σ_s weight[t, s]·v[c, s].
        let weight = softmax(q.swap_dims(2, 3).matmul(k), 3);
        let a = v.matmul(weight.swap_dims(2, 3)).reshape([b, c, h, w]);
        x + conv2d_module(&self.proj, a)
    }
}
