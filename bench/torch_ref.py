#!/usr/bin/env python3
"""PyTorch reference for the mdm-prime benchmark (not part of the Rust build or CI).

A single-file PyTorch port of what the Rust crate `mdm-prime` runs, written to follow the
public MDLM / MDM-Prime code (docs/design.md §2, §3.2, §4.2, §5.1, §6.2, §7.1, §8.1):

- sub-token codec: base b = smallest integer with b^ell >= V, digits most-significant-first,
  digit table [V, ell], mask id b;
- the DiT denoiser (shared (b+1) x D/ell sub-token embedding concatenated to D, constant
  time conditioning, adaLN DiT blocks with rotary bidirectional attention, zero-init head);
- carry-over filter + log-softmax over V;
- objective "paper": mean over all B*L tokens of -log p(x0 | y_t) / t, log-linear schedule;
- one training step: forward, backward, global-norm clip 1.0, AdamW, EMA;
- the ddpm_cache ancestral sampler of design §7.1 (whole-batch idle-step caching).

Config `cpu-fmnist` runs the image workload instead (configs/fmnist-cpu.toml on 28 x 28 x 1
synthetic images, design §6.3, §3.3, §4.4, §7.3):

- the ADM U-Net with MDM-Prime's sub-token encoder (crates/mdm-prime/src/model/unet.rs,
  unet/blocks.rs): (b+1) x embed_dim/ell embedding concatenated per pixel channel, res-blocks
  with the learned constant scale-shift, attention at the configured resolutions and in the
  middle, average-pool / nearest resampling, zero-init 3 x 3 output conv to C*V;
- polynomial schedule alpha_t = (1 - t)^3, t ~ U(eps, 1) i.i.d., objective cross_entropy (mean
  over all B*L pixel tokens of -log softmax(logits)[x0], no filter), AdamW betas (0.9, 0.95),
  lr 2e-3, EMA 0.99;
- the image sampler: T = 256 steps on t_i = 1 - g(i/T), g(tau) = 1 - (1 - tau)^1.7, logits
  divided by 1 - 0.2 tau^2 (tau = 1 - t), reveal probability
  (alpha_s - alpha_t)/(1 - alpha_t), each revealed digit drawn from its digit marginal,
  float64 exponential races, no caching (the network runs at every step: NFE = T).

Usage:
    python bench/torch_ref.py --config cpu-gpt2 --workload train-step \
        --warmup 2 --repeats 5 --threads 2 --json
    python bench/torch_ref.py --config cpu-bytes --check      # quick correctness checks
    python bench/torch_ref.py --config cpu-fmnist --workload sample --warmup 0 --repeats 1
    python bench/torch_ref.py --config cpu-fmnist --check
    python bench/torch_ref.py --config owt-small --workload train-step \
        --device cuda --autocast bf16 --sdpa --json            # on a GPU (scripts/gpu-check.sh)

Devices: --device cuda puts the model and every batch on the GPU. The training batches (tokens,
times, masks) are drawn on the host from the same seeded CPU generator as on the CPU and copied
over; the sampler draws its noise from a generator on the device (a [B, L, V] float64 race per
step cannot cross PCIe in reasonable time), so sampled ids differ from the CPU's. --autocast bf16
runs the forward and loss (training) and the whole sampler under torch.autocast(bfloat16) on the
device type; parameters, optimiser state, EMA and races stay float32 / float64.

Dependencies: torch (and the standard library) only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# Peak RSS right after `import torch` (the libraries alone; the PyPI wheel bundles CUDA).
IMPORT_RSS_MIB = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

# ----------------------------------------------------------------------------------------------
# Configurations and workloads (names match the Rust side's `mdm-prime bench`).
# ----------------------------------------------------------------------------------------------

CONFIGS = {
    "cpu-gpt2": dict(vocab_size=50257, ell=4, d_model=256, n_layers=4, n_heads=4, cond_dim=128,
                     mlp_ratio=4, dropout=0.1, seq_len=128, batch_size=16),
    "cpu-bytes": dict(vocab_size=256, ell=4, d_model=256, n_layers=4, n_heads=4, cond_dim=128,
                      mlp_ratio=4, dropout=0.1, seq_len=128, batch_size=16),
    # The L sweep (issue #10 point 6): cpu-bytes with no dropout and batch 2048 / L, so every
    # step has 2048 tokens; names match `mdm-prime bench --config cpu-bytes-L<L>`.
    **{f"cpu-bytes-L{l}": dict(vocab_size=256, ell=4, d_model=256, n_layers=4, n_heads=4,
                               cond_dim=128, mlp_ratio=4, dropout=0.0, seq_len=l,
                               batch_size=2048 // l)
       for l in (128, 512, 1024, 2048)},
    # The model of configs/owt-small.toml (names match `mdm-prime bench --config owt-small`): GPT-2
    # vocabulary, ell = 4, D 768, 12 layers, 12 heads, cond 128, L = 1024, dropout 0.1; one
    # micro-batch of 16 sequences a step (the preset accumulates 32 per optimiser step). For a GPU.
    "owt-small": dict(vocab_size=50257, ell=4, d_model=768, n_layers=12, n_heads=12, cond_dim=128,
                      mlp_ratio=4, dropout=0.1, seq_len=1024, batch_size=16),
    # Its code path at a size a CPU runs in about a minute (a dry run, not a measurement).
    "owt-tiny": dict(vocab_size=50257, ell=4, d_model=128, n_layers=2, n_heads=2, cond_dim=128,
                     mlp_ratio=4, dropout=0.1, seq_len=1024, batch_size=2, sample_steps=4),
    # configs/fmnist-cpu.toml as `mdm-prime bench --config cpu-fmnist` runs it: 28 x 28 x 1
    # synthetic uniform images (L = 784 pixel tokens, V = 256, ell = 2, b = 16), batch 16.
    "cpu-fmnist": dict(kind="unet", vocab_size=256, ell=2, height=28, width=28, image_channels=1,
                       embed_dim=32, channels=32, channel_mult=(1, 2, 2), num_res_blocks=1,
                       attention_ds=(4,), head_channels=32, groups=8, dropout=0.0,
                       scale_shift=True, seq_len=784, batch_size=16, flip=True,
                       schedule_n=3.0, sample_steps=256,
                       lr=2e-3, betas=(0.9, 0.95), ema_decay=0.99),
}
# Not a benchmark config: the paper's CIFAR-10 network at ell = 2 (UnetConfig::default(),
# image/models/model_configs.py "model_discrete"), built on the meta device by --check to compare
# the parameter count with the Rust model's (113,965,680).
PAPER_CIFAR10 = dict(kind="unet", vocab_size=256, ell=2, height=32, width=32, image_channels=3,
                     embed_dim=96, channels=96, channel_mult=(3, 4, 4), num_res_blocks=5,
                     attention_ds=(2,), head_channels=64, groups=32, dropout=0.4,
                     scale_shift=True, seq_len=32 * 32 * 3, batch_size=128)
PAPER_CIFAR10_PARAMS = 113_965_680
# The Rust model's count for cpu-fmnist, by hand (unet_param_count below walks Unet::new; a
# res-block c_in -> c_out has 2 GroupNorms, the [2 c_out] scale-shift, two 3 x 3 convs and a
# 1 x 1 skip when c_in != c_out; an attention block of c channels 4c^2 + 6c):
#   embedding 17 x 16                                                     272
#   encoder  res 32->32 18,688; res 32->64 57,856; res 64->64 74,240 + attn 16,768
#   middle   2 x res 64->64 148,480 + attn 16,768
#   decoder  level 2: 2 x (res 128->64 119,488 + attn 16,768); level 1: res 128->64 119,488,
#            res 96->64 98,944; level 0: res 96->32 40,352, res 64->32 30,048
#   output   GroupNorm 64 + conv 32 -> 256 (3 x 3) 73,984               74,048
CPU_FMNIST_PARAMS = 968_464
WORKLOADS = ("train-step", "sample")

SCHEDULE_EPS = 1e-3      # log-linear noise: move chance = (1 - eps) t
SAMPLING_EPS = 1e-3      # training times t in [1e-3, 1]
SAMPLE_T_MIN = 1e-5      # sampler grid linspace(1, 1e-5, T + 1)
LR, BETAS, ADAM_EPS, WEIGHT_DECAY = 3e-4, (0.9, 0.999), 1e-8, 0.0
GRAD_CLIP = 1.0
EMA_DECAY = 0.9999
SEED = 1


# ----------------------------------------------------------------------------------------------
# Sub-token codec (design §2).
# ----------------------------------------------------------------------------------------------

def smallest_base(vocab_size: int, ell: int) -> int:
    """Smallest integer b with b**ell >= V (integer arithmetic, design §2.1)."""
    b = max(2, int(round(vocab_size ** (1.0 / ell))) - 1)
    while b ** ell < vocab_size:
        b += 1
    while b > 2 and (b - 1) ** ell >= vocab_size:
        b -= 1
    return b if ell > 1 else vocab_size


class Codec:
    """x <-> f(x): ell digits in base b, most significant first; mask id b (V when ell = 1)."""

    def __init__(self, vocab_size: int, ell: int):
        self.vocab_size, self.ell = vocab_size, ell
        self.base = smallest_base(vocab_size, ell)
        self.mask_id = self.base
        x = torch.arange(vocab_size, dtype=torch.long)
        powers = torch.tensor([self.base ** (ell - 1 - j) for j in range(ell)], dtype=torch.long)
        self.powers = powers
        self.digit_table = (x[:, None] // powers[None, :]) % self.base        # [V, ell]
        self._tables = {self.digit_table.device: (self.digit_table, self.powers)}

    def tables(self, device: torch.device):
        """(digit_table, powers) on `device`, copied there on first use."""
        if device not in self._tables:
            self._tables[device] = (self.digit_table.to(device), self.powers.to(device))
        return self._tables[device]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[..., L] token ids -> [..., L, ell] digits."""
        return self.tables(x.device)[0][x]

    def decode(self, y: torch.Tensor) -> torch.Tensor:
        """[..., L, ell] digits (no masks) -> [..., L] codes (may be >= V without carry-over)."""
        return (y * self.tables(y.device)[1]).sum(-1)

    def consistent(self, yt: torch.Tensor) -> torch.Tensor:
        """allowed[b, i, x]: token x agrees with every revealed digit of yt[b, i, :] (§5.1).
        yt: [B, L, ell] -> [B, L, V] bool."""
        allowed, table = None, self.tables(yt.device)[0]
        for j in range(self.ell):
            yj = yt[..., j:j + 1]                                              # [B, L, 1]
            ok = (table[:, j] == yj) | (yj == self.mask_id)                    # [B, L, V]
            allowed = ok if allowed is None else allowed.logical_and_(ok)
        return allowed

    def log_probs(self, logits: torch.Tensor, yt: torch.Tensor, carry_over: bool = True):
        """Carry-over filter (inconsistent tokens -> -inf), then log-softmax over V."""
        if carry_over:
            logits = logits.masked_fill(~self.consistent(yt), float("-inf"))
        return torch.log_softmax(logits, dim=-1)


# ----------------------------------------------------------------------------------------------
# The DiT denoiser (design §6.2; MDLM `DIT`/`DDiTBlock`, MDM-Prime `PerceiverDIT`).
# ----------------------------------------------------------------------------------------------

class LayerNormNoBias(nn.Module):
    """LayerNorm with a learned weight only, eps 1e-5, computed in fp32."""

    def __init__(self, d: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.d = d

    def forward(self, x):
        return F.layer_norm(x.float(), [self.d], weight=self.weight, bias=None, eps=1e-5)


def modulate(x, shift, scale):
    return x * (1 + scale) + shift


def zero_linear(d_in: int, d_out: int, bias: bool = True) -> nn.Linear:
    lin = nn.Linear(d_in, d_out, bias=bias)
    nn.init.zeros_(lin.weight)
    if bias:
        nn.init.zeros_(lin.bias)
    return lin


class TimestepEmbedder(nn.Module):
    """sinusoidal(sigma) (256: cos half then sin half, max period 10000) -> Linear -> SiLU -> Linear."""

    FREQ_DIM = 256

    def __init__(self, cond_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(self.FREQ_DIM, cond_dim), nn.SiLU(),
                                 nn.Linear(cond_dim, cond_dim))

    def forward(self, sigma):
        half = self.FREQ_DIM // 2
        freqs = torch.exp(-math.log(10000.0)
                          * torch.arange(half, dtype=torch.float32, device=sigma.device) / half)
        args = sigma[:, None].float() * freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        return self.mlp(emb)


def rotary_tables(seq_len: int, head_dim: int):
    """cos, sin: [L, hd], GPT-NeoX rotate-half layout (freqs repeated twice), base 10000."""
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    t = torch.arange(seq_len, dtype=torch.float64)
    freqs = torch.outer(t, inv_freq)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().float(), emb.sin().float()


def apply_rotary(x, cos, sin):
    """x: [B, H, L, hd]; x*cos + rotate_half(x)*sin with rotate_half([x1, x2]) = [-x2, x1]."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class DiTBlock(nn.Module):
    def __init__(self, d, n_heads, mlp_ratio, cond_dim, dropout, use_sdpa=False):
        super().__init__()
        self.n_heads, self.dropout, self.use_sdpa = n_heads, dropout, use_sdpa
        self.norm1 = LayerNormNoBias(d)
        self.attn_qkv = nn.Linear(d, 3 * d, bias=False)
        self.attn_out = nn.Linear(d, d, bias=False)
        self.norm2 = LayerNormNoBias(d)
        self.mlp = nn.Sequential(nn.Linear(d, mlp_ratio * d, bias=True), nn.GELU(approximate="tanh"),
                                 nn.Linear(mlp_ratio * d, d, bias=True))
        self.adaLN_modulation = zero_linear(cond_dim, 6 * d)

    def forward(self, x, c, cos, sin):
        b, l, d = x.shape
        h, hd = self.n_heads, d // self.n_heads
        (shift_msa, scale_msa, gate_msa,
         shift_mlp, scale_mlp, gate_mlp) = self.adaLN_modulation(c)[:, None].chunk(6, dim=2)

        # Attention branch: qkv laid out [3, H, hd] per position.
        xn = modulate(self.norm1(x), shift_msa, scale_msa)
        qkv = self.attn_qkv(xn).view(b, l, 3, h, hd)
        q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))           # [B, H, L, hd]
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if self.use_sdpa:
            a = F.scaled_dot_product_attention(q, k, v, is_causal=False)
        else:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(hd)
            a = torch.softmax(scores, dim=-1) @ v                             # [B, H, L, hd]
        a = self.attn_out(a.transpose(1, 2).reshape(b, l, d))
        x = x + gate_msa * F.dropout(a, p=self.dropout, training=self.training)

        # MLP branch.
        xn = modulate(self.norm2(x), shift_mlp, scale_mlp)
        y = self.mlp(xn)
        return x + gate_mlp * F.dropout(y, p=self.dropout, training=self.training)


class PrimeDiT(nn.Module):
    """Shared (b+1) x D/ell sub-token embedding, concatenated per token to D; DiT backbone over L
    tokens; final bias-free LN + adaLN(shift, scale) + zero-init Linear(D -> V) head."""

    def __init__(self, codec: Codec, d_model, n_layers, n_heads, cond_dim, mlp_ratio, dropout,
                 time_conditioning=False, use_sdpa=False):
        super().__init__()
        assert d_model % codec.ell == 0 and d_model % n_heads == 0
        self.codec, self.d_model, self.n_heads = codec, d_model, n_heads
        self.time_conditioning = time_conditioning
        sub = d_model // codec.ell
        self.vocab_embed = nn.Parameter(torch.empty(codec.mask_id + 1, sub))
        nn.init.kaiming_uniform_(self.vocab_embed, a=math.sqrt(5))         # bound 1/sqrt(sub)
        self.sigma_map = TimestepEmbedder(cond_dim)
        self.blocks = nn.ModuleList(
            [DiTBlock(d_model, n_heads, mlp_ratio, cond_dim, dropout, use_sdpa)
             for _ in range(n_layers)])
        self.norm_final = LayerNormNoBias(d_model)
        self.adaLN_final = zero_linear(cond_dim, 2 * d_model)
        self.head = zero_linear(d_model, codec.vocab_size)
        self._rotary = {}

    def rotary(self, seq_len, device):
        if (seq_len, device) not in self._rotary:
            tables = rotary_tables(seq_len, self.d_model // self.n_heads)
            self._rotary[seq_len, device] = tuple(t.to(device) for t in tables)
        return self._rotary[seq_len, device]

    def logits(self, yt_flat: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """yt_flat: [B, L*ell] sub-tokens (mask id b) -> logits [B, L, V]."""
        b, n = yt_flat.shape
        l = n // self.codec.ell
        x = F.embedding(yt_flat, self.vocab_embed).reshape(b, l, self.d_model)
        if not self.time_conditioning:
            sigma = torch.zeros_like(sigma)
        c = F.silu(self.sigma_map(sigma))
        cos, sin = self.rotary(l, x.device)
        for block in self.blocks:
            x = block(x, c, cos, sin)
        shift, scale = self.adaLN_final(c)[:, None].chunk(2, dim=2)
        return self.head(modulate(self.norm_final(x), shift, scale))

    def log_probs(self, yt_flat, sigma, carry_over=True):
        """log p_theta(x | y_t) over V, carry-over filtered: [B, L, V]."""
        b, n = yt_flat.shape
        lg = self.logits(yt_flat, sigma)
        return self.codec.log_probs(lg, yt_flat.view(b, n // self.codec.ell, self.codec.ell),
                                    carry_over)


def build_model(cfg, use_sdpa=False):
    codec = Codec(cfg["vocab_size"], cfg["ell"])
    if cfg.get("kind", "dit") == "unet":
        return codec, PrimeUNet(codec, cfg, use_sdpa=use_sdpa)
    model = PrimeDiT(codec, cfg["d_model"], cfg["n_layers"], cfg["n_heads"], cfg["cond_dim"],
                     cfg["mlp_ratio"], cfg["dropout"], time_conditioning=False,
                     use_sdpa=use_sdpa)
    return codec, model


# ----------------------------------------------------------------------------------------------
# The image denoiser (design §6.3; crates/mdm-prime/src/model/unet.rs, unet/blocks.rs; the
# reference's DiscretePrimeUNetModel over guided-diffusion's UNetModel with ignore_time=True).
# ----------------------------------------------------------------------------------------------

GN_EPS = 1e-5


def zero_module(m: nn.Module) -> nn.Module:
    """ADM's zero_module: weight and bias zero (the layer starts as the zero map)."""
    for p in m.parameters():
        nn.init.zeros_(p)
    return m


def conv2d(c_in: int, c_out: int, k: int) -> nn.Conv2d:
    """k x k, stride 1, 'same' padding, PyTorch's default init (as burn's, blocks.rs `conv`)."""
    return nn.Conv2d(c_in, c_out, k, padding=k // 2)


class ResBlock(nn.Module):
    """ADM ResBlock without a time input: h = conv2(drop(SiLU(ss(GN2(conv1(SiLU(GN1(x)))))))),
    out = skip(x) + h; conv2 zero-init; skip a 1 x 1 conv when the width changes. ss is the learned
    constant scale-shift [2*C_out] (ADM's ConstantEmbedding, init U(+-sqrt(4*model_channels))),
    applied as GN2(h)*(1 + scale) + shift."""

    def __init__(self, c_in, c_out, groups, dropout, ss_bound):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in, eps=GN_EPS)
        self.conv1 = conv2d(c_in, c_out, 3)
        self.norm2 = nn.GroupNorm(groups, c_out, eps=GN_EPS)
        if ss_bound is not None:
            self.scale_shift = nn.Parameter(torch.empty(2 * c_out).uniform_(-ss_bound, ss_bound))
        else:
            self.scale_shift = None
        self.dropout = dropout
        self.conv2 = zero_module(conv2d(c_out, c_out, 3))
        self.skip = conv2d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.norm2(h)
        if self.scale_shift is not None:
            scale, shift = self.scale_shift.chunk(2)
            h = h * (1.0 + scale)[None, :, None, None] + shift[None, :, None, None]
        h = F.dropout(F.silu(h), p=self.dropout, training=self.training)
        h = self.conv2(h)
        return (x if self.skip is None else self.skip(x)) + h


class AttentionBlock(nn.Module):
    """x + proj(attn(qkv(GN(x)))) over the H*W positions; qkv channel (k*heads + head)*ch + i
    (ADM's QKVAttention, 'new order'); q and k each scaled by ch^(-1/4); proj zero-init."""

    def __init__(self, channels, heads, groups, use_sdpa=False):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=GN_EPS)
        self.qkv = conv2d(channels, 3 * channels, 1)
        self.proj = zero_module(conv2d(channels, channels, 1))
        self.heads, self.use_sdpa = heads, use_sdpa

    def forward(self, x):
        b, c, h, w = x.shape
        nh, t = self.heads, h * w
        ch = c // nh
        qkv = self.qkv(self.norm(x)).reshape(b, 3, nh, ch, t)
        if self.use_sdpa:                       # [B, nh, T, ch]; SDPA scales by 1/sqrt(ch)
            q, k, v = (qkv[:, i].transpose(-2, -1) for i in range(3))
            a = F.scaled_dot_product_attention(q, k, v).transpose(-2, -1)
        else:
            scale = ch ** -0.25
            q, k, v = qkv[:, 0] * scale, qkv[:, 1] * scale, qkv[:, 2]        # [B, nh, ch, T]
            weight = torch.softmax(q.transpose(-2, -1) @ k, dim=-1)          # [B, nh, T, T]
            a = v @ weight.transpose(-2, -1)                                  # [B, nh, ch, T]
        return x + self.proj(a.reshape(b, c, h, w))


class Stage(nn.Module):
    """One encoder or decoder step: a res-block, then attention at the configured resolutions."""

    def __init__(self, res, attn):
        super().__init__()
        self.res, self.attn = res, attn

    def forward(self, x):
        x = self.res(x)
        return x if self.attn is None else self.attn(x)


def avg_pool2(x):
    return F.avg_pool2d(x, 2)                   # ADM Downsample, conv_resample=False


def upsample2(x):
    return F.interpolate(x, scale_factor=2, mode="nearest")   # ADM Upsample, conv_resample=False


def unet_widths(cfg):
    return [m * cfg["channels"] for m in cfg["channel_mult"]]


def unet_heads(cfg, width):
    return max(1, width // cfg["head_channels"])


class PrimeUNet(nn.Module):
    """Sub-token embedding -> ADM U-Net -> V-way logits per pixel channel (unet.rs `Unet`).
    Tokens are pixel channel values in (H, W, C) order: token (h*W + w)*C + c."""

    time_conditioning = False

    def __init__(self, codec: Codec, cfg, use_sdpa=False):
        super().__init__()
        self.codec, self.ell = codec, codec.ell
        self.height, self.width = cfg["height"], cfg["width"]
        self.image_channels, self.embed_dim = cfg["image_channels"], cfg["embed_dim"]
        self.vocab, self.num_res_blocks = codec.vocab_size, cfg["num_res_blocks"]
        assert self.embed_dim % self.ell == 0
        groups, p = cfg["groups"], cfg["dropout"]
        ss = math.sqrt(4 * cfg["channels"]) if cfg["scale_shift"] else None

        def res(c_in, c_out):
            return ResBlock(c_in, c_out, groups, p, ss)

        def attn(ds, c):
            return (AttentionBlock(c, unet_heads(cfg, c), groups, use_sdpa)
                    if ds in cfg["attention_ds"] else None)

        widths = unet_widths(cfg)
        self.levels = len(widths)
        c_embed, c0 = self.image_channels * self.embed_dim, widths[0]
        # PyTorch's nn.Embedding init N(0, 1), as the reference's PixelEmbedding and the Rust side.
        self.embed = nn.Embedding(codec.mask_id + 1, self.embed_dim // self.ell)
        self.input_proj = conv2d(c_embed, c0, 3) if c_embed != c0 else None
        skips, ch, down = [c0], c0, []
        for level, w in enumerate(widths):
            for _ in range(self.num_res_blocks):
                down.append(Stage(res(ch, w), attn(1 << level, w)))
                ch = w
                skips.append(ch)
            if level + 1 < self.levels:
                skips.append(ch)
        self.down = nn.ModuleList(down)
        wd = widths[-1]
        self.mid_res1 = res(wd, wd)
        self.mid_attn = AttentionBlock(wd, unet_heads(cfg, wd), groups, use_sdpa)
        self.mid_res2 = res(wd, wd)
        up = []
        for level in reversed(range(self.levels)):
            w = widths[level]
            for _ in range(self.num_res_blocks + 1):
                up.append(Stage(res(ch + skips.pop(), w), attn(1 << level, w)))
                ch = w
        assert not skips
        self.up = nn.ModuleList(up)
        self.out_norm = nn.GroupNorm(groups, c0, eps=GN_EPS)
        self.out_conv = zero_module(conv2d(c0, self.image_channels * self.vocab, 3))

    def embed_input(self, yt):
        """[B, H*W*C, ell] digits -> [B, C*embed_dim, H, W], channel (c*ell + j)*(E/ell) + e."""
        b = yt.shape[0]
        e = self.embed(yt.reshape(b, -1))                                     # [B, L*ell, E/ell]
        return e.reshape(b, self.height, self.width,
                         self.image_channels * self.embed_dim).permute(0, 3, 1, 2)

    def output_to_tokens(self, out):
        """[B, C*V, H, W] (channel c*V + v) -> [B, H*W*C, V] (token (h*W + w)*C + c)."""
        b, _, h, w = out.shape
        c, v = self.image_channels, self.vocab
        return out.reshape(b, c, v, h, w).permute(0, 3, 4, 1, 2).reshape(b, h * w * c, v)

    def logits(self, yt_flat, sigma=None):
        """yt_flat: [B, L*ell] (or [B, L, ell]) sub-tokens -> logits [B, L, V]."""
        b = yt_flat.shape[0]
        h = self.embed_input(yt_flat.reshape(b, -1, self.ell))
        if self.input_proj is not None:
            h = self.input_proj(h)
        skips, stages = [h], iter(self.down)
        for level in range(self.levels):
            for _ in range(self.num_res_blocks):
                h = next(stages)(h)
                skips.append(h)
            if level + 1 < self.levels:
                h = avg_pool2(h)
                skips.append(h)
        h = self.mid_res2(self.mid_attn(self.mid_res1(h)))
        stages = iter(self.up)
        for level in reversed(range(self.levels)):
            for _ in range(self.num_res_blocks + 1):
                h = next(stages)(torch.cat([h, skips.pop()], dim=1))
            if level > 0:
                h = upsample2(h)
        h = F.silu(self.out_norm(h))
        return self.output_to_tokens(self.out_conv(h))

    def log_probs(self, yt_flat, sigma=None, carry_over=False):
        """Plain log-softmax over V (the image recipe has no consistency filter, design §5.2)."""
        b = yt_flat.shape[0]
        lg = self.logits(yt_flat)
        return self.codec.log_probs(lg, yt_flat.reshape(b, -1, self.ell), carry_over)


def unet_param_count(cfg) -> int:
    """The Rust model's parameter count, walking Unet::new (independent of the modules above)."""
    codec = Codec(cfg["vocab_size"], cfg["ell"])
    widths = unet_widths(cfg)
    levels = len(widths)

    def res(ci, co):
        n = 2 * ci + (9 * ci * co + co) + 2 * co + (9 * co * co + co)
        n += 2 * co if cfg["scale_shift"] else 0
        return n + (ci * co + co if ci != co else 0)

    def attn(c):
        return 2 * c + (3 * c * c + 3 * c) + (c * c + c)

    c_embed, c0 = cfg["image_channels"] * cfg["embed_dim"], widths[0]
    n = (codec.mask_id + 1) * (cfg["embed_dim"] // cfg["ell"])
    n += 9 * c_embed * c0 + c0 if c_embed != c0 else 0
    skips, ch = [c0], c0
    for level, w in enumerate(widths):
        for _ in range(cfg["num_res_blocks"]):
            n += res(ch, w) + (attn(w) if (1 << level) in cfg["attention_ds"] else 0)
            ch = w
            skips.append(ch)
        if level + 1 < levels:
            skips.append(ch)
    n += 2 * res(ch, ch) + attn(ch)
    for level in reversed(range(levels)):
        w = widths[level]
        for _ in range(cfg["num_res_blocks"] + 1):
            n += res(ch + skips.pop(), w) + (attn(w) if (1 << level) in cfg["attention_ds"] else 0)
            ch = w
    cv = cfg["image_channels"] * codec.vocab_size
    return n + 2 * c0 + 9 * c0 * cv + cv


# ----------------------------------------------------------------------------------------------
# Analytic forward FLOPs (crates/mdm-prime-core/src/flops.rs: matmuls and convolutions only,
# 2 per multiply-add).
# ----------------------------------------------------------------------------------------------

def forward_flops(cfg):
    """(body, head): body for one sequence of L tokens, head for one position (0 for a U-Net)."""
    if cfg.get("kind", "dit") == "dit":
        d, l, n, r = cfg["d_model"], cfg["seq_len"], cfg["n_layers"], cfg["mlp_ratio"]
        return float(l * n * ((8 + 4 * r) * d * d + 4 * l * d)), float(2 * d * cfg["vocab_size"])
    widths = unet_widths(cfg)
    levels = len(widths)

    def hw(level):
        return (cfg["height"] >> level) * (cfg["width"] >> level)

    def conv(px, ci, co, k):
        return 2.0 * px * ci * co * k * k

    def res(px, ci, co):
        return conv(px, ci, co, 3) + conv(px, co, co, 3) + (conv(px, ci, co, 1) if ci != co else 0.0)

    def attn(px, c):
        return conv(px, c, 3 * c, 1) + 4.0 * px * px * c + conv(px, c, c, 1)

    def has_attn(level):
        return (1 << level) in cfg["attention_ds"]

    c_embed = cfg["image_channels"] * cfg["embed_dim"]
    total = conv(hw(0), c_embed, widths[0], 3) if c_embed != widths[0] else 0.0
    skips, ch = [widths[0]], widths[0]
    for level, w in enumerate(widths):
        for _ in range(cfg["num_res_blocks"]):
            total += res(hw(level), ch, w) + (attn(hw(level), w) if has_attn(level) else 0.0)
            ch = w
            skips.append(ch)
        if level + 1 < levels:
            skips.append(ch)
    deep = hw(levels - 1)
    total += 2 * res(deep, ch, ch) + attn(deep, ch)
    for level in reversed(range(levels)):
        w = widths[level]
        for _ in range(cfg["num_res_blocks"] + 1):
            total += res(hw(level), ch + skips.pop(), w) + (attn(hw(level), w) if has_attn(level) else 0.0)
            ch = w
    total += conv(hw(0), widths[0], cfg["image_channels"] * cfg["vocab_size"], 3)
    return total, 0.0


# ----------------------------------------------------------------------------------------------
# Noising (design §3.2) and the "paper" objective (design §4.2).
# ----------------------------------------------------------------------------------------------

def antithetic_times(n: int, gen: torch.Generator) -> torch.Tensor:
    u = torch.rand(n, dtype=torch.float64, generator=gen)
    u = (u / n + torch.arange(n, dtype=torch.float64) / n) % 1.0
    return (1.0 - SAMPLING_EPS) * u + SAMPLING_EPS


def noised_batch(codec: Codec, x0: torch.Tensor, gen: torch.Generator):
    """x0 [B, L] -> (yt_flat [B, L*ell], t [B] float64)."""
    b, l = x0.shape
    t = antithetic_times(b, gen)
    move_chance = (1.0 - SCHEDULE_EPS) * t                                  # 1 - alpha_t
    y0 = codec.encode(x0).reshape(b, l * codec.ell)
    masked = torch.rand(b, l * codec.ell, dtype=torch.float64, generator=gen) < move_chance[:, None]
    yt = torch.where(masked, torch.full_like(y0, codec.mask_id), y0)
    return yt, t


def paper_loss(model: PrimeDiT, x0, yt_flat, t):
    """mean over all B*L tokens of -log p(x0 | y_t) * w(t), w = 1/t for log-linear."""
    sigma = torch.zeros(x0.shape[0], device=x0.device)      # time conditioning off
    lp = model.log_probs(yt_flat, sigma, carry_over=True)
    nll = -lp.gather(-1, x0[..., None]).squeeze(-1)                          # [B, L]
    weight = (1.0 / t).float()                                               # [B]
    return (nll * weight[:, None]).mean()


def polynomial_alpha(t, n):
    """alpha_t = (1 - t)^n: the image schedule in this project's convention (t = 1 masked)."""
    return (1.0 - t) ** n


def random_images(cfg, b: int, gen: torch.Generator) -> torch.Tensor:
    """[B, L] uniform pixel values in (H, W, C) token order (the Rust bench's synthetic data)."""
    return torch.randint(0, cfg["vocab_size"], (b, cfg["seq_len"]), generator=gen)


def image_noised_batch(codec: Codec, cfg, x0: torch.Tensor, gen: torch.Generator):
    """Random horizontal flips (data.flip), t ~ U(eps, 1) i.i.d. (antithetic off), each sub-token
    masked with probability 1 - alpha_t. x0 [B, L] -> (x0 flipped, yt_flat [B, L*ell], t)."""
    b, l = x0.shape
    if cfg.get("flip"):
        img = x0.view(b, cfg["height"], cfg["width"], cfg["image_channels"])
        flip = torch.rand(b, generator=gen) < 0.5
        x0 = torch.where(flip[:, None, None, None], img.flip(2), img).reshape(b, l)
    t = (1.0 - SAMPLING_EPS) * torch.rand(b, dtype=torch.float64, generator=gen) + SAMPLING_EPS
    mask_prob = 1.0 - polynomial_alpha(t, cfg["schedule_n"])
    y0 = codec.encode(x0).reshape(b, l * codec.ell)
    masked = torch.rand(b, l * codec.ell, dtype=torch.float64, generator=gen) < mask_prob[:, None]
    yt = torch.where(masked, torch.full_like(y0, codec.mask_id), y0)
    return x0, yt, t


def cross_entropy_loss(model: PrimeUNet, x0, yt_flat):
    """objective = "cross_entropy", carry_over = false: mean over all B*L tokens of
    -log softmax(logits)[x0] (design §4.4)."""
    lp = model.log_probs(yt_flat, carry_over=False)
    return -lp.gather(-1, x0[..., None]).mean()


# ----------------------------------------------------------------------------------------------
# Training step (design §8.1): clip 1.0, AdamW, EMA.
# ----------------------------------------------------------------------------------------------

def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def autocast(device: torch.device, dtype: str | None):
    """torch.autocast(dtype) on the device's type, or nothing (dtype None)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype={"bf16": torch.bfloat16}[dtype])


class Trainer:
    """lr, betas and the EMA decay come from the config (the image config sets its own); the
    text configs use LR, BETAS, EMA_DECAY. The batch is drawn on the host and copied to the
    model's device; `amp` ("bf16" or None) is the autocast around forward and loss."""

    def __init__(self, codec, model, seed=SEED, cfg=None, amp=None):
        cfg = cfg or {}
        self.codec, self.model, self.cfg = codec, model, cfg
        self.device, self.amp = model_device(model), amp
        self.image = cfg.get("kind", "dit") == "unet"
        self.ema_decay = cfg.get("ema_decay", EMA_DECAY)
        self.opt = torch.optim.AdamW(model.parameters(), lr=cfg.get("lr", LR),
                                     betas=cfg.get("betas", BETAS), eps=ADAM_EPS,
                                     weight_decay=WEIGHT_DECAY)
        self.ema = [p.detach().clone() for p in model.parameters()]
        self.step_n = 0
        self.gen = torch.Generator().manual_seed(seed)

    def random_tokens(self, b, l):
        return torch.randint(0, self.codec.vocab_size, (b, l), generator=self.gen)

    def step(self, x0: torch.Tensor) -> float:
        self.model.train()
        if self.image:
            x0, yt, _ = image_noised_batch(self.codec, self.cfg, x0, self.gen)
            x0, yt = x0.to(self.device), yt.to(self.device)
            with autocast(self.device, self.amp):
                loss = cross_entropy_loss(self.model, x0, yt)
        else:
            yt, t = noised_batch(self.codec, x0, self.gen)
            x0, yt, t = x0.to(self.device), yt.to(self.device), t.to(self.device)
            with autocast(self.device, self.amp):
                loss = paper_loss(self.model, x0, yt, t)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), GRAD_CLIP)
        self.opt.step()
        # EMA as MDLM's ExponentialMovingAverage.update: s -= (1 - d)(s - p), with the
        # warm-up decay min(decay, (1 + n)/(10 + n)), n = updates so far (as the Rust side).
        decay = min(self.ema_decay, (1 + self.step_n) / (10 + self.step_n))
        with torch.no_grad():
            for s, p in zip(self.ema, self.model.parameters()):
                s.sub_((1.0 - decay) * (s - p))
        self.step_n += 1
        return loss.item()


# ----------------------------------------------------------------------------------------------
# Sampler (design §7.1, ddpm_cache; whole-batch idle-step caching as the reference code).
# ----------------------------------------------------------------------------------------------

def sample_categorical_race(probs: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Exponential race in float64: argmax(p / E), E = -log(U + tiny). probs [..., V] -> [...]."""
    p64 = probs.to(torch.float64)
    e = torch.rand(p64.shape, dtype=torch.float64, generator=gen, device=p64.device)
    e.add_(torch.finfo(torch.float64).tiny).log_().neg_()
    torch.div(p64, e, out=e)
    del p64
    return e.argmax(dim=-1)


@torch.inference_mode()
def sample(model: PrimeDiT, codec: Codec, batch: int, seq_len: int, steps: int,
           gen: torch.Generator, carry_over=True):
    """Returns (tokens [B, L], nfe). `gen` lives on the model's device."""
    model.eval()
    ell, mask, device = codec.ell, codec.mask_id, model_device(model)
    y = torch.full((batch, seq_len * ell), mask, dtype=torch.long, device=device)
    timesteps = torch.linspace(1.0, SAMPLE_T_MIN, steps + 1, dtype=torch.float64)
    dt = (1.0 - SAMPLE_T_MIN) / steps
    sigma = torch.zeros(batch, device=device)
    probs, nfe = None, 0
    for k in range(steps):
        t = timesteps[k].item()
        mc_t = (1.0 - SCHEDULE_EPS) * t
        mc_s = (1.0 - SCHEDULE_EPS) * (t - dt)
        if probs is None:
            probs = model.log_probs(y, sigma, carry_over).exp()              # [B, L, V]
            nfe += 1
        x_hat = sample_categorical_race(probs, gen)                          # [B, L]
        y_hat = codec.encode(x_hat).reshape(batch, seq_len * ell)
        reveal = (torch.rand(y.shape, dtype=torch.float64, generator=gen, device=device)
                  < (mc_t - mc_s) / mc_t)
        y_new = torch.where((y == mask) & reveal, y_hat, y)
        if not torch.equal(y_new, y) or model.time_conditioning:
            probs = None
        y = y_new
    # Noise removal: one more forward, fill every still-masked sub-token from a categorical draw.
    probs = model.log_probs(y, sigma, carry_over).exp()
    nfe += 1
    x_hat = sample_categorical_race(probs, gen)
    y_hat = codec.encode(x_hat).reshape(batch, seq_len * ell)
    y = torch.where(y == mask, y_hat, y)
    return codec.decode(y.view(batch, seq_len, ell)), nfe


def digit_marginals(codec: Codec, probs: torch.Tensor) -> torch.Tensor:
    """p_j(v) = sum_{x : f(x)_j = v} p(x) for every digit slot: [..., V] -> [..., ell, b] (float64)."""
    p64 = probs.to(torch.float64)
    out = p64.new_zeros(p64.shape[:-1] + (codec.ell, codec.base))
    table = codec.tables(p64.device)[0]
    for j in range(codec.ell):
        out[..., j, :].index_add_(-1, table[:, j], p64)
    return out


@torch.inference_mode()
def sample_image(model: PrimeUNet, codec: Codec, cfg, batch: int, steps: int,
                 gen: torch.Generator):
    """The image sampler of [sample] in configs/fmnist-cpu.toml (design §7.3): grid
    t_i = 1 - g(i/T) with the time warp g(tau) = 1 - (1 - tau)^1.7, logits divided by the
    temperature 1 - 0.2 tau^2 at flow time tau = 1 - t, each still-masked sub-token revealed with
    probability (alpha_s - alpha_t)/(1 - alpha_t); a revealed digit takes a float64
    exponential-race draw from its digit marginal of softmax(logits) (draw = "marginals", no
    filter). No caching: the network runs at every step (the public image code; NFE = T).
    Returns (tokens [B, L] with codes >= V replaced by 0, nfe, invalid codes). `gen` lives on
    the model's device."""
    model.eval()
    ell, mask, l = codec.ell, codec.mask_id, cfg["seq_len"]
    n, device = cfg["schedule_n"], model_device(model)
    y = torch.full((batch, l * ell), mask, dtype=torch.long, device=device)
    grid = [(1.0 - i / steps) ** 1.7 for i in range(steps + 1)]
    nfe = 0

    def draw(y, t):
        temperature = 1.0 - 0.2 * (1.0 - t) ** 2
        probs = torch.softmax(model.logits(y) / temperature, dim=-1)          # [B, L, V]
        d = sample_categorical_race(digit_marginals(codec, probs), gen)      # [B, L, ell]
        return d.reshape(batch, l * ell)

    for k in range(steps):
        t, s = grid[k], grid[k + 1]
        a_t, a_s = polynomial_alpha(t, n), polynomial_alpha(s, n)
        p = min(max((a_s - a_t) / (1.0 - a_t), 0.0), 1.0)
        d = draw(y, t)
        nfe += 1
        reveal = (y == mask) & (torch.rand(y.shape, dtype=torch.float64, generator=gen,
                                           device=device) < p)
        y = torch.where(reveal, d, y)
    if bool((y == mask).any()):          # noise removal (never reached on this grid: p = 1 last)
        y = torch.where(y == mask, draw(y, grid[-1]), y)
        nfe += 1
    codes = codec.decode(y.view(batch, l, ell))
    invalid = codes >= codec.vocab_size
    return codes.masked_fill(invalid, 0), nfe, int(invalid.sum())


# ----------------------------------------------------------------------------------------------
# Benchmark driver.
# ----------------------------------------------------------------------------------------------

def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0   # Linux: KiB


def run_bench(args) -> dict:
    cfg = dict(CONFIGS[args.config])
    if args.batch:
        cfg["batch_size"] = args.batch
    torch.manual_seed(SEED)
    codec, model = build_model(cfg, use_sdpa=args.sdpa)
    device = torch.device(args.device)
    model.to(device)                  # the same initial weights as on the CPU (built there)
    image = cfg.get("kind", "dit") == "unet"
    b, l = cfg["batch_size"], cfg["seq_len"]
    times, nfes, losses = [], [], []
    body, head = forward_flops(cfg)

    if args.workload == "train-step":
        trainer = Trainer(codec, model, cfg=cfg, amp=args.autocast)
        # Forward + backward ~ 3 x forward (flops.rs); this port runs the head on every position.
        flops_per_run = 3.0 * b * (body + l * head)

        def once():
            x0 = trainer.random_tokens(b, l)          # fresh synthetic batch, times, masks
            losses.append(trainer.step(x0))
    else:
        steps = args.steps or cfg.get("sample_steps", l)
        gen = torch.Generator(device=device).manual_seed(SEED + 7)
        model.eval()

        def once():
            with autocast(device, args.autocast):
                if image:
                    tokens, nfe, _ = sample_image(model, codec, cfg, b, steps, gen)
                else:
                    tokens, nfe = sample(model, codec, b, l, steps, gen)
            assert tokens.shape == (b, l)
            nfes.append(nfe)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(args.warmup):
        once()
    nfes.clear()
    for _ in range(args.repeats):
        sync()
        t0 = time.perf_counter()
        once()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)

    med = statistics.median(times)
    if args.workload == "sample":
        flops_per_run = (body + l * head) * statistics.mean(nfes) * b
    out = {
        "impl": "pytorch",
        "torch_version": torch.__version__,
        "config": args.config,
        "workload": args.workload,
        "device": args.device,
        "autocast": args.autocast or "off",
        "threads": torch.get_num_threads(),
        "warmup": args.warmup,
        "repeats": args.repeats,
        "median_ms": med,
        "min_ms": min(times),
        "max_ms": max(times),
        "tokens_per_s": b * l / (med / 1e3),
        "peak_rss_mib": peak_rss_mib(),
        "import_rss_mib": IMPORT_RSS_MIB,
        "batch": b,
        "seq_len": l,
        "attention": "sdpa" if args.sdpa else "matmul-softmax",
        "params": sum(p.numel() for p in model.parameters()),
        # Analytic FLOPs of the work this port does (flops.rs count; the head on every
        # position), per run and per second of the median. No GEMM peak here, so no mfu.
        "model_gflop": flops_per_run / 1e9,
        "gflops": flops_per_run / (med / 1e3) / 1e9,
    }
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
        out["peak_gpu_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    if args.workload == "sample":
        out["nfe_mean"] = statistics.mean(nfes)
        out["steps"] = steps
        out["cache"] = "off" if image else "batch"
        if image:
            out["draw"] = "marginals"
    else:
        out["last_loss"] = losses[-1]
    return out


# ----------------------------------------------------------------------------------------------
# --check: quick correctness checks (codec vectors, filter, 30 training steps, a short sample).
# ----------------------------------------------------------------------------------------------

def train_on_pool(trainer, pool, steps: int):
    """`steps` training steps on one fixed batch, printing each loss: (losses, seconds, k, mean of
    the first k losses, mean of the last k), k = a fifth of the steps (at least 1)."""
    losses = []
    t0 = time.perf_counter()
    for i in range(steps):
        losses.append(trainer.step(pool))
        print(f"step {i + 1:3d}  loss {losses[-1]:.4f}", flush=True)
    dt = time.perf_counter() - t0
    k = max(1, len(losses) // 5)
    return losses, dt, k, statistics.mean(losses[:k]), statistics.mean(losses[-k:])


def run_check(args) -> int:
    ok = True

    def expect(cond, what):
        nonlocal ok
        print(("ok   " if cond else "FAIL ") + what)
        ok &= bool(cond)

    # Codec test vectors (design §2.1, §2.2).
    for v, ell, base in [(50257, 2, 225), (50257, 3, 37), (50257, 4, 15), (50257, 6, 7),
                         (50257, 8, 4), (256, 2, 16), (256, 3, 7), (256, 4, 4), (256, 8, 2),
                         (512, 2, 23)]:
        expect(Codec(v, ell).base == base, f"base(V={v}, ell={ell}) = {base}")
    c = Codec(50257, 4)
    expect(c.encode(torch.tensor([50256])).tolist() == [[14, 13, 5, 6]], "f(50256), ell=4")
    expect(c.encode(torch.tensor([198])).tolist() == [[0, 0, 13, 3]], "f(198), ell=4")
    expect(Codec(256, 3).encode(torch.tensor([255])).tolist() == [[5, 1, 3]], "f(255), ell=3")
    x = torch.randint(0, 50257, (1000,))
    expect(torch.equal(c.decode(c.encode(x)), x), "decode(encode(x)) = x")

    # Carry-over filter: fully revealed -> log p = 0 on its class; fully masked -> all V allowed.
    c = Codec(50, 3)                                            # b = 4, 14 invalid codes
    m = c.mask_id
    yt = torch.tensor([[[m, m, m], [1, 2, 3], [2, m, m], [3, 0, m]]])
    allowed = c.consistent(yt)
    expect(allowed[0, 0].all().item(), "fully masked token allows all V")
    expect(allowed[0, 1].sum().item() == 1 and allowed[0, 1, 27].item(), "fully revealed: one class")
    expect(allowed[0, 2].sum().item() == 16, "[2, m, m]: 16 classes")
    expect(allowed[0, 3].sum().item() == 2, "[3, 0, m]: codes 48, 49 only (< V = 50)")
    lp = c.log_probs(torch.randn(1, 4, 50), yt)
    expect(abs(lp[0, 1, 27].item()) < 1e-6, "fully revealed token: log p = 0")

    if CONFIGS[args.config].get("kind", "dit") == "unet":
        check_unet(args, expect)
        print("peak_rss_mib", round(peak_rss_mib(), 1))
        print("ALL OK" if ok else "SOME CHECKS FAILED")
        return 0 if ok else 1

    # Training: 30 steps on a fixed pool of random sequences (learnable: memorisation), loss
    # finite and falling; EMA moved.
    cfg = dict(CONFIGS[args.config])
    torch.manual_seed(SEED)
    codec, model = build_model(cfg, use_sdpa=args.sdpa)
    trainer = Trainer(codec, model)
    b, l = cfg["batch_size"], cfg["seq_len"]
    pool = trainer.random_tokens(b, l)
    losses, dt, k, first, last = train_on_pool(trainer, pool, args.check_steps)
    expect(all(math.isfinite(x) for x in losses), "losses finite")
    expect(last < first, f"loss falls: mean of first {k} {first:.4f} -> last {k} {last:.4f}")
    print(f"     {dt / len(losses) * 1e3:.0f} ms/step over {len(losses)} steps")
    expect(any(not torch.equal(s, p.detach()) for s, p in zip(trainer.ema, model.parameters())),
           "EMA differs from the live weights")

    # SDPA and matmul+softmax attention agree.
    model.eval()
    yt_flat, _ = noised_batch(codec, pool[:2], torch.Generator().manual_seed(3))
    with torch.no_grad():
        sig = torch.zeros(2)
        a = model.log_probs(yt_flat, sig)
        for blk in model.blocks:
            blk.use_sdpa = not blk.use_sdpa
        bb = model.log_probs(yt_flat, sig)
        for blk in model.blocks:
            blk.use_sdpa = not blk.use_sdpa
    fin = torch.isfinite(a)
    expect(torch.equal(fin, torch.isfinite(bb)) and torch.allclose(a[fin], bb[fin], atol=1e-4),
           "SDPA == matmul+softmax attention")

    # Sampler: short run on the trained model, NFE <= T + 1, valid tokens.
    steps = args.steps or 32
    gen = torch.Generator().manual_seed(SEED + 7)
    t0 = time.perf_counter()
    tokens, nfe = sample(model, codec, 4, l, steps, gen)
    print(f"     sample: B=4 L={l} T={steps} NFE={nfe} in {time.perf_counter() - t0:.1f}s")
    expect(1 <= nfe <= steps + 1, f"NFE {nfe} <= T + 1 = {steps + 1}")
    expect(bool(((tokens >= 0) & (tokens < codec.vocab_size)).all()), "sampled tokens < V")
    print("peak_rss_mib", round(peak_rss_mib(), 1))
    print("ALL OK" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


def check_unet(args, expect):
    """--check for the image config: parameter and FLOP counts against the Rust model, the
    encoder/decoder layouts, zero-init uniform output, attention, training and the sampler."""
    cfg = dict(CONFIGS[args.config])
    if args.batch:
        cfg["batch_size"] = args.batch

    # Parameter counts: modules == the hand count of Unet::new == the Rust model's numbers.
    with torch.device("meta"):
        _, paper = build_model(PAPER_CIFAR10)
    n_paper = sum(p.numel() for p in paper.parameters())
    expect(n_paper == unet_param_count(PAPER_CIFAR10) == PAPER_CIFAR10_PARAMS,
           f"paper CIFAR-10 U-Net (ell = 2) has {n_paper:,} parameters "
           f"(Rust: {PAPER_CIFAR10_PARAMS:,})")
    torch.manual_seed(SEED)
    codec, model = build_model(cfg, use_sdpa=args.sdpa)
    n_params = sum(p.numel() for p in model.parameters())
    expect(n_params == unet_param_count(cfg) == CPU_FMNIST_PARAMS,
           f"{args.config} U-Net has {n_params:,} parameters (hand count {CPU_FMNIST_PARAMS:,})")
    expect(model.input_proj is None, "no input projection (C * embed_dim = channels * mult[0])")

    # FLOPs: flops.rs's hand-counted tests.
    tiny = dict(kind="unet", vocab_size=256, ell=1, height=2, width=2, image_channels=1,
                embed_dim=4, channels=4, channel_mult=(1,), num_res_blocks=1, attention_ds=(),
                head_channels=4, groups=1)
    expect(forward_flops(tiny) == (88832.0, 0.0), "smallest U-Net FLOPs = 88,832 (flops.rs test)")
    dit = dict(d_model=256, n_layers=4, mlp_ratio=4, seq_len=128, vocab_size=256)
    expect(forward_flops(dit) == (872415232.0, 131072.0), "DiT FLOPs = 872,415,232 (flops.rs test)")
    body, _ = forward_flops(cfg)
    print(f"     forward {body / 1e9:.3f} GFLOP per image; train step 3 x B x that = "
          f"{3 * cfg['batch_size'] * body / 1e9:.1f} GFLOP")

    # Encoder layout on a 4 x 4 x 3 image: channel (c*ell + j)*(E/ell) + e at (h, w) is
    # table[digit j of token (h*W + w)*C + c][e].
    small = dict(cfg, height=4, width=4, image_channels=3, embed_dim=8, channels=24,
                 channel_mult=(1, 2), attention_ds=(2,), head_channels=24, groups=4,
                 seq_len=48)
    _, sm = build_model(small)
    e_sub = small["embed_dim"] // codec.ell
    yt = torch.randint(0, codec.mask_id + 1, (2, 48, codec.ell))
    with torch.no_grad():
        got = sm.embed_input(yt)
    table = sm.embed.weight.detach()
    want = torch.empty_like(got)
    for h in range(4):
        for w in range(4):
            for c in range(3):
                for j in range(codec.ell):
                    ch0 = (c * codec.ell + j) * e_sub
                    want[:, ch0:ch0 + e_sub, h, w] = table[yt[:, (h * 4 + w) * 3 + c, j]]
    expect(got.shape == (2, 24, 4, 4) and torch.equal(got, want),
           "embedding channel order (c*ell + j)*(E/ell) + e, tokens (h*W + w)*C + c")
    out = torch.randn(2, 3 * 256, 4, 4)
    tok = sm.output_to_tokens(out)
    expect(tok.shape == (2, 48, 256) and torch.equal(tok[1, (2 * 4 + 3) * 3 + 1], out[1, 256:512, 2, 3]),
           "decoder: channel c*V + v at (h, w) -> logit v of token (h*W + w)*C + c")

    # Shapes and the zero-initialised output: every logit 0, log p = -log V.
    b, l = 2, cfg["seq_len"]
    gen = torch.Generator().manual_seed(5)
    x0 = random_images(cfg, b, gen)
    _, yt_flat, _ = image_noised_batch(codec, cfg, x0, gen)
    model.eval()
    with torch.no_grad():
        lg = model.logits(yt_flat)
        lp = model.log_probs(yt_flat)
    expect(yt_flat.shape == (b, l * codec.ell) and lg.shape == (b, l, codec.vocab_size),
           f"shapes: y_t {tuple(yt_flat.shape)}, logits {tuple(lg.shape)}")
    expect(bool((lg == 0).all()) and torch.allclose(lp, torch.full_like(lp, -math.log(256.0))),
           "zero-init output conv: logits 0, uniform log p = -log 256")

    # Attention: matmul+softmax == SDPA, and == a per-head loop on a random block.
    blk = AttentionBlock(64, 2, 8)
    nn.init.normal_(blk.proj.weight)
    xa = torch.randn(2, 64, 7, 7)
    with torch.no_grad():
        a1 = blk(xa)
        blk.use_sdpa = True
        a2 = blk(xa)
        qkv = blk.qkv(blk.norm(xa)).reshape(2, 3 * 64, 49)
        heads = []
        for hh in range(2):
            q = qkv[:, hh * 32:(hh + 1) * 32]
            k = qkv[:, 64 + hh * 32:64 + (hh + 1) * 32]
            v = qkv[:, 128 + hh * 32:128 + (hh + 1) * 32]
            wgt = torch.softmax(torch.einsum("bct,bcs->bts", q, k) / math.sqrt(32), dim=-1)
            heads.append(torch.einsum("bts,bcs->bct", wgt, v))
        a3 = xa + blk.proj(torch.cat(heads, 1).reshape(2, 64, 7, 7))
    expect(torch.allclose(a1, a2, atol=1e-4) and torch.allclose(a1, a3, atol=1e-4),
           "attention: matmul+softmax == SDPA == per-head loop (qkv split q|k|v, then heads)")

    # Training on a fixed pool: finite, falling loss (the revealed digits are learnable); EMA.
    trainer = Trainer(codec, model, cfg=cfg)
    pool = random_images(cfg, min(cfg["batch_size"], 8), trainer.gen)
    losses, dt, k, first, last = train_on_pool(trainer, pool, args.check_steps)
    expect(abs(losses[0] - math.log(256.0)) < 1e-4, f"first loss = log 256 = {math.log(256.0):.4f}")
    expect(all(math.isfinite(x) for x in losses), "losses finite")
    expect(last < first, f"loss falls: mean of first {k} {first:.4f} -> last {k} {last:.4f}")
    print(f"     {dt / len(losses) * 1e3:.0f} ms/step over {len(losses)} steps, "
          f"batch {pool.shape[0]}")
    expect(any(not torch.equal(s, p.detach()) for s, p in zip(trainer.ema, model.parameters())),
           "EMA differs from the live weights")

    # Digit marginals by enumeration (solver.rs test): p uniform on {0x12, 0x13, 0x25}.
    pr = torch.zeros(256, dtype=torch.float64)
    pr[[0x12, 0x13, 0x25]] = 1.0 / 3.0
    m = digit_marginals(codec, pr)
    expect(abs(m[0, 1].item() - 2 / 3) < 1e-12 and abs(m[0, 2].item() - 1 / 3) < 1e-12
           and abs(m[1, 2].item() - 1 / 3) < 1e-12 and abs(m[1, 5].item() - 1 / 3) < 1e-12,
           "digit marginals (solver.rs test vector)")

    # Sampler: short run, NFE = T (no caching), everything revealed, valid tokens.
    steps = args.steps or 8
    t0 = time.perf_counter()
    tokens, nfe, invalid = sample_image(model, codec, cfg, 2, steps, torch.Generator().manual_seed(8))
    print(f"     sample: B=2 L={l} T={steps} NFE={nfe} in {time.perf_counter() - t0:.1f}s")
    expect(nfe == steps, f"NFE {nfe} = T = {steps} (no caching; last step reveals everything)")
    expect(tokens.shape == (2, l) and invalid == 0
           and bool(((tokens >= 0) & (tokens < 256)).all()), "sampled pixels in [0, 256)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", choices=sorted(CONFIGS), default="cpu-bytes")
    ap.add_argument("--workload", choices=WORKLOADS, default="train-step")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch default)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--sdpa", action="store_true",
                    help="use F.scaled_dot_product_attention instead of matmul+softmax")
    ap.add_argument("--steps", type=int, default=0,
                    help="sampler steps T (default: L = 128, owt-small 1024; owt-tiny 4, "
                         "cpu-fmnist 256; quick checks only)")
    ap.add_argument("--batch", type=int, default=0,
                    help="override the batch size (default 16, owt-tiny 2, cpu-fmnist 32; quick "
                         "checks only)")
    ap.add_argument("--device", default="cpu",
                    help="cpu (default) or cuda[:N]: where the model and batches live (benchmarks; "
                         "--check runs on the CPU)")
    ap.add_argument("--autocast", choices=("bf16",), default=None,
                    help="run forward and loss (and the sampler) under torch.autocast(bfloat16)")
    ap.add_argument("--check", action="store_true", help="run the correctness checks and exit")
    ap.add_argument("--check-steps", type=int, default=30)
    args = ap.parse_args(argv)
    if args.device.split(":")[0] not in ("cpu", "cuda"):
        ap.error(f"--device {args.device}: use cpu or cuda[:N]")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.check:
        return run_check(args)
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    out = run_bench(args)
    if args.json:
        print(json.dumps(out))
    else:
        for key, val in out.items():
            print(f"{key:>14}: {val:.3f}" if isinstance(val, float) else f"{key:>14}: {val}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
