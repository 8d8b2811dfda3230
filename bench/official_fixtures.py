"""Small checkpoints in the layout of the official MDM-Prime code, and the outputs they compute.

The official code (github.com/chen-hao-chao/mdm-prime, commit 17b9489) saves
- text: a PyTorch Lightning `.ckpt` of `text/diffusion.py::Diffusion`: `state_dict` with
  `backbone.*` (`text/models/dit.py`: `DIT` for ℓ = 1, `PerceiverDIT` for ℓ > 1), `ema` =
  `text/models/ema.py::ExponentialMovingAverage.state_dict()`, and `hyper_parameters` =
  {config: the Hydra `DictConfig`, tokenizer: the GPT-2 tokenizer object} (`save_hyperparameters()`);
- images: `image/utils/load_and_save.py::save_model`: {model: the `EMA` wrapper's state dict
  (`model.*`, `num_updates`, `shadow_params.*`), optimizer, lr_schedule, epoch, scaler,
  args: the `argparse.Namespace`}; the network is `image/models/discrete_unet.py` over
  `image/models/unet.py`, its sizes hard-coded in `image/models/model_configs.py`.

This script is a port written for this project of those modules' parameter names, shapes and
forward passes (flash-attn's rotary and varlen attention written out in plain PyTorch), at tiny
sizes. It writes `crates/mdm-prime/assets/official/`:

- `mdlm_l1.ckpt`: ℓ = 1 (MDLM: `DIT`, V + 1 = 257 rows with the mask), time-conditioned;
- `prime_l4_co.ckpt`: ℓ = 4, carry-over, not time-conditioned (the paper's setting);
- `unet_l2.pth`: the image U-Net at ℓ = 2 (groups 2 and head channels 6 instead of the
  official 32 and 64, which the checkpoints do not record: `import --unet-groups 2
  --unet-head-channels 6`);
- `<name>.expect.pt`: the fixed input and what PyTorch computes from it, with the training
  weights and with the EMA weights (raw logits and, for text, the official parameterisation's
  log-probabilities).

The weights are stored as float16 (the official files hold float32; the reader converts either)
to keep the fixtures small; the expected outputs are computed in float32 from exactly those
rounded values. Every parameter is random, including the ones the official code zero-initialises,
so that each one matters.

Run from the repository root with a Python that has PyTorch, omegaconf and transformers:

    pip install --target /tmp/pyextra omegaconf==2.3.0 transformers tokenizers
    PYTHONPATH=/tmp/pyextra bench/.venv/bin/python bench/official_fixtures.py
"""

import argparse
import collections
import functools
import json
import math
import os
import sys
import tempfile

import torch
import torch.nn as nn
import torch.nn.functional as F

import omegaconf
import tokenizers
import transformers

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "mdm-prime",
                   "assets", "official")

# --------------------------------------------------------------------------------------------
# Text: text/models/dit.py
# --------------------------------------------------------------------------------------------


class LayerNorm(nn.Module):
    """Bias-free LayerNorm: F.layer_norm without affine, then · weight."""

    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones([dim]))
        self.dim = dim

    def forward(self, x):
        return F.layer_norm(x.float(), [self.dim]) * self.weight[None, None, :]


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden_size, frequency_embedding_size=256):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(frequency_embedding_size, hidden_size), nn.SiLU(),
                                 nn.Linear(hidden_size, hidden_size))
        self.frequency_embedding_size = frequency_embedding_size

    def forward(self, t):
        half = self.frequency_embedding_size // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
        args = t[:, None].float() * freqs[None]
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))


class Rotary(nn.Module):
    def __init__(self, dim, base=10_000):
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim)))

    def forward(self, seq_len):
        t = torch.arange(seq_len).type_as(self.inv_freq)
        freqs = torch.einsum("i,j->ij", t, self.inv_freq)
        return freqs.cos(), freqs.sin()  # [L, hd/2] each: what flash-attn's rotary receives


def apply_rotary(x, cos, sin):
    """flash_attn.layers.rotary, interleaved=False: rotate-half (GPT-NeoX) on [B, L, H, hd]."""
    x1, x2 = x.chunk(2, dim=-1)
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)


def modulate(x, shift, scale):
    return x * (1 + scale) + shift


class DDiTBlock(nn.Module):
    def __init__(self, dim, n_heads, cond_dim, mlp_ratio=4):
        super().__init__()
        self.n_heads = n_heads
        self.norm1 = LayerNorm(dim)
        self.attn_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.attn_out = nn.Linear(dim, dim, bias=False)
        self.norm2 = LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(approximate="tanh"),
                                 nn.Linear(mlp_ratio * dim, dim))
        self.adaLN_modulation = nn.Linear(cond_dim, 6 * dim)

    def forward(self, x, cos_sin, c):
        b, l, d = x.shape
        (shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp,
         gate_mlp) = self.adaLN_modulation(c)[:, None].chunk(6, dim=2)
        x_skip = x
        x = modulate(self.norm1(x), shift_msa, scale_msa)
        # 'b s (three h d) -> b s three h d'
        qkv = self.attn_qkv(x).view(b, l, 3, self.n_heads, d // self.n_heads)
        q, k, v = qkv.unbind(2)
        cos, sin = cos_sin
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        # flash_attn_varlen_qkvpacked_func(..., causal=False): softmax scale 1/√hd
        att = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d // self.n_heads)
        x = torch.einsum("bhqk,bkhd->bqhd", att.softmax(-1), v).reshape(b, l, d)
        x = x_skip + gate_msa * self.attn_out(x)
        return x + gate_mlp * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class EmbeddingLayer(nn.Module):
    def __init__(self, dim, vocab_dim):
        super().__init__()
        self.embedding = nn.Parameter(torch.empty((vocab_dim, dim)))

    def forward(self, x):
        return self.embedding[x]


class DDitFinalLayer(nn.Module):
    def __init__(self, hidden_size, out_channels, cond_dim):
        super().__init__()
        self.norm_final = LayerNorm(hidden_size)
        self.linear = nn.Linear(hidden_size, out_channels)
        self.adaLN_modulation = nn.Linear(cond_dim, 2 * hidden_size)

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c)[:, None].chunk(2, dim=2)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class DIT(nn.Module):
    """`DIT` (ℓ = 1, vocab_size = V + 1) and `PerceiverDIT` (ℓ > 1, a (b+1) × D/ℓ table whose ℓ
    rows per token are concatenated by a reshape); the attribute order is the official one."""

    def __init__(self, m, vocab_size, ell, base_plus_one):
        super().__init__()
        self.ell = ell
        rows = vocab_size if ell == 1 else base_plus_one
        self.vocab_embed = EmbeddingLayer(m["hidden_size"] // ell, rows)
        self.sigma_map = TimestepEmbedder(m["cond_dim"])
        self.rotary_emb = Rotary(m["hidden_size"] // m["n_heads"])
        self.blocks = nn.ModuleList(
            [DDiTBlock(m["hidden_size"], m["n_heads"], m["cond_dim"]) for _ in range(m["n_blocks"])])
        self.output_layer = DDitFinalLayer(m["hidden_size"], vocab_size, m["cond_dim"])

    def forward(self, indices, sigma):
        x = self.vocab_embed(indices)
        b, n, e = x.shape
        x = x.reshape(b, n // self.ell, e * self.ell)
        c = F.silu(self.sigma_map(sigma))
        cos_sin = self.rotary_emb(x.shape[1])
        for block in self.blocks:
            x = block(x, cos_sin, c)
        return self.output_layer(x, c)


class Diffusion(nn.Module):
    """Only what puts `backbone.*` (and the parameter-free `noise`) into the state dict."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.noise = nn.Module()  # LogLinearNoise: no parameters, no buffers


def subs_log_probs(logits, xt, mask_index):
    """`Diffusion._subs_parameterization` (ℓ = 1)."""
    logits = logits.clone()
    logits[:, :, mask_index] += -1000000.0
    logits = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    unmasked = xt != mask_index
    logits[unmasked] = -1000000.0
    logits[unmasked, xt[unmasked]] = 0
    return logits


def carry_over_log_probs(logits, yt, V, ell, b):
    """`utils.convert_to_marginal_filter_logit` with `create_extended_p_filter` (ℓ > 1): a class
    is kept when every digit is masked or equals the class's digit."""
    digits = torch.stack([(torch.arange(V) // b ** (ell - 1 - j)) % b for j in range(ell)])
    B, L, _ = logits.shape
    yt = yt.view(B, L, ell)
    ok = torch.ones(B, L, V, dtype=torch.bool)
    for j in range(ell):
        d = yt[:, :, j:j + 1]
        ok &= (d == b) | (digits[j][None, None, :] == d)
    return torch.log_softmax(logits.masked_fill(~ok, float("-inf")), dim=-1)


def tiny_tokenizer():
    """A GPT2TokenizerFast as `dataloader.get_tokenizer` prepares it (BERT-style post-processor,
    `[PAD]` added), over a five-entry vocabulary: its pickle has the classes and layout of the
    real one (`hyper_parameters.tokenizer`), at a few KB."""
    d = tempfile.mkdtemp()
    vocab = {t: i for i, t in enumerate(["<|endoftext|>", "a", "b", "ab", "\u0120"])}
    with open(os.path.join(d, "vocab.json"), "w") as f:
        json.dump(vocab, f)
    with open(os.path.join(d, "merges.txt"), "w") as f:
        f.write("#version: 0.2\na b\n")
    tok = transformers.GPT2TokenizerFast(vocab_file=os.path.join(d, "vocab.json"),
                                         merges_file=os.path.join(d, "merges.txt"))
    tok._tokenizer.post_processor = tokenizers.processors.BertProcessing(
        (tok.bos_token, tok.bos_token_id), (tok.eos_token, tok.eos_token_id))
    tok.add_special_tokens({"pad_token": "[PAD]"})
    return tok


def text_config(ell, base, carry_over, time_conditioning, model, length):
    """The Hydra config as `text/configs/config.yaml` composes it (interpolations kept as the
    unresolved strings they are in a saved `DictConfig`), with this fixture's sizes."""
    return omegaconf.OmegaConf.create({
        "mode": "train", "diffusion": "absorbing_state", "backbone": "dit",
        "parameterization": "subs", "time_conditioning": time_conditioning, "T": 0,
        "subs_masking": False, "seed": 1,
        "data": {"train": "openwebtext-train", "valid": "openwebtext-valid",
                 "tokenizer_name_or_path": "bytes", "cache_dir": "/app/huggingface_cache",
                 "wrap": True, "streaming": False},
        "model": dict(model, name="fixture", type="ddit", length=length, scale_by_sigma=True,
                      dropout=0.1, tie_word_embeddings=False),
        "loader": {"global_batch_size": 512, "eval_global_batch_size": "${.global_batch_size}",
                   "batch_size": "${div_up:${.global_batch_size}, ${eval:${trainer.devices} * ${trainer.num_nodes}}}",
                   "pin_memory": True},
        "training": {"ema": 0.9999, "antithetic_sampling": True, "importance_sampling": False,
                     "sampling_eps": 1e-3, "change_of_variables": False},
        "eval": {"checkpoint_path": "", "disable_ema": False, "perplexity_batch_size": 2},
        "optim": {"weight_decay": 0, "lr": 3e-4, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
        "trainer": {"_target_": "lightning.Trainer", "accelerator": "cuda", "num_nodes": 1,
                    "devices": "${device_count:}", "gradient_clip_val": 1.0, "precision": "bf16",
                    "max_steps": 1_000_000, "val_check_interval": 10000},
        "noise": {"type": "loglinear", "sigma_min": 1e-4, "sigma_max": 20},
        "lr_scheduler": {"_target_": "transformers.get_constant_schedule_with_warmup",
                         "num_warmup_steps": 2500},
        "sampling": {"predictor": "ddpm_cache", "steps": 256, "noise_removal": True,
                     "nucleus_p": 1.0, "sampling_dtype": "fp32"},
        "wandb": {"project": "text-diffusion", "tags": ["${noise.type}", "${data.train}"]},
        "checkpointing": {"save_dir": "${cwd:}", "resume_from_ckpt": False,
                          "from_huggingface": False},
        "prime": {"target_length": ell, "base": base, "vocab_size": 256, "seq_length": length,
                  "carry_over": carry_over},
    })


def randomize(module, gen, scale):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * scale)


def to_half_and_back(module):
    """Rounds every parameter to float16 and back: what is saved is what is computed with."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p.half().float())


def half_state(sd):
    """The state dict in float16 (buffers such as `inv_freq` stay float32); tensors that shared a
    storage still share one."""
    halves = {}
    out = collections.OrderedDict()
    for k, v in sd.items():
        if v.is_floating_point() and not k.endswith("inv_freq"):
            key = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape))
            if key not in halves:
                halves[key] = v.half()
            v = halves[key]
        out[k] = v
    return out


def lightning_ckpt(diffusion, ema_params, config, step):
    params = list(diffusion.parameters())
    opt = torch.optim.AdamW(params, lr=3e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, functools.partial(lambda s, num_warmup_steps: min(1.0, s / num_warmup_steps),
                               num_warmup_steps=2500))
    return {
        "epoch": 0,
        "global_step": step,
        "pytorch-lightning_version": "2.2.1",
        "state_dict": half_state(diffusion.state_dict()),
        "loops": {"fit_loop": {"state_dict": {}, "epoch_loop.state_dict": {
            "_batches_that_stepped": step}, "epoch_progress": {"current": {"completed": 0}}}},
        "callbacks": {"ModelCheckpoint{'monitor': 'val/nll', 'mode': 'min'}": {
            "monitor": "val/nll", "best_model_score": torch.tensor(3.25),
            "best_model_path": "/app/checkpoints/best.ckpt", "best_k_models": {}}},
        "optimizer_states": [opt.state_dict()],
        "lr_schedulers": [sched.state_dict()],
        "hparams_name": "kwargs",
        "hyper_parameters": {"config": config, "tokenizer": tiny_tokenizer()},
        "ema": {"decay": 0.9999, "num_updates": step,
                "shadow_params": [p.detach().half() for p in ema_params]},
        "sampler": {"random_state": None},
    }


def text_fixture(name, ell, carry_over, time_conditioning, seed):
    V, L, B = 256, 6, 2
    base = 256 if ell == 1 else math.ceil(V ** (1 / ell))
    model_cfg = {"hidden_size": 8, "cond_dim": 4, "n_blocks": 2, "n_heads": 2}
    gen = torch.Generator().manual_seed(seed)
    backbone = DIT(model_cfg, V + 1 if ell == 1 else V, ell, base + 1)
    randomize(backbone, gen, 0.5)
    to_half_and_back(backbone)
    ema = DIT(model_cfg, V + 1 if ell == 1 else V, ell, base + 1)
    ema.load_state_dict(backbone.state_dict())
    with torch.no_grad():
        for p in ema.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    to_half_and_back(ema)
    diffusion = Diffusion(backbone)
    cfg = text_config(ell, base, carry_over, time_conditioning, model_cfg, L)
    ckpt = lightning_ckpt(diffusion, list(ema.parameters()), cfg, step=1234)
    torch.save(ckpt, os.path.join(OUT, f"{name}.ckpt"))

    # The fixed input: sub-tokens (token-major, mask id b), about half of them masked.
    x0 = torch.randint(0, V, (B, L), generator=gen)
    if ell == 1:
        yt = torch.where(torch.rand(B, L, generator=gen) < 0.5, torch.full_like(x0, V), x0)
    else:
        digits = torch.stack([(x0 // base ** (ell - 1 - j)) % base for j in range(ell)], -1)
        yt = torch.where(torch.rand(B, L, ell, generator=gen) < 0.5,
                         torch.full_like(digits, base), digits).reshape(B, L * ell)
    t = torch.tensor([0.3, 0.7])
    sigma = -torch.log1p(-(1 - 1e-3) * t) if time_conditioning else torch.zeros(B)
    # yt as float32 (exact for these small ids): the Rust reader reads float tensors.
    out = {"yt": yt.float(), "t": t, "sigma": sigma}
    with torch.no_grad():
        for tag, net in (("model", backbone), ("ema", ema)):
            logits = net(yt, sigma)
            out[f"logits_{tag}"] = logits
            if tag == "model":
                continue
            if ell == 1:
                out[f"log_probs_{tag}"] = subs_log_probs(logits, yt, V)
            elif carry_over:
                out[f"log_probs_{tag}"] = carry_over_log_probs(logits, yt, V, ell, base)
            else:
                out[f"log_probs_{tag}"] = torch.log_softmax(logits, -1)
    torch.save(out, os.path.join(OUT, f"{name}.expect.pt"))


# --------------------------------------------------------------------------------------------
# Images: image/models/unet.py, discrete_unet.py, ema.py
# --------------------------------------------------------------------------------------------


class GroupNorm32(nn.GroupNorm):
    def forward(self, x):
        return super().forward(x.float()).type(x.dtype)


class ConstantEmbedding(nn.Module):
    def __init__(self, out_channels):
        super().__init__()
        self.embedding_table = nn.Parameter(torch.empty((1, out_channels)))

    def forward(self, batch):
        return self.embedding_table.repeat(batch, 1)


class TimestepEmbedSequential(nn.Sequential):
    pass


class ResBlock(nn.Module):
    """`ResBlock` with `emb_off` (ignore_time, no classes) and use_scale_shift_norm."""

    def __init__(self, channels, out_channels, groups):
        super().__init__()
        self.in_layers = nn.Sequential(GroupNorm32(groups, channels), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = ConstantEmbedding(2 * out_channels)
        self.out_layers = nn.Sequential(GroupNorm32(groups, out_channels), nn.SiLU(),
                                        nn.Dropout(p=0.4),
                                        nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip_connection = (nn.Identity() if out_channels == channels
                                else nn.Conv2d(channels, out_channels, 1))

    def forward(self, x):
        h = self.in_layers(x)
        # ignore_time: emb = time_embed(...) * 0.0 is unused by ConstantEmbedding
        scale, shift = torch.chunk(self.emb_layers(x.shape[0])[..., None, None], 2, dim=1)
        h = self.out_layers[0](h) * (1 + scale) + shift
        h = self.out_layers[1:](h)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """`AttentionBlock` with `QKVAttention` (use_new_attention_order=True)."""

    def __init__(self, channels, head_channels, groups):
        super().__init__()
        self.num_heads = channels // head_channels
        self.norm = GroupNorm32(groups, channels)
        self.qkv = nn.Conv1d(channels, channels * 3, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x):
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x))
        bs, width, length = qkv.shape
        ch = width // (3 * self.num_heads)
        q, k, v = qkv.chunk(3, dim=1)
        scale = 1 / math.sqrt(math.sqrt(ch))
        w = torch.einsum("bct,bcs->bts", (q * scale).view(bs * self.num_heads, ch, length),
                         (k * scale).view(bs * self.num_heads, ch, length))
        w = torch.softmax(w.float(), dim=-1)
        a = torch.einsum("bts,bcs->bct", w, v.reshape(bs * self.num_heads, ch, length))
        h = self.proj_out(a.reshape(bs, -1, length))
        return (x + h).reshape(b, c, *spatial)


class Downsample(nn.Module):
    def __init__(self):
        super().__init__()
        self.op = nn.AvgPool2d(kernel_size=2, stride=2)

    def forward(self, x):
        return self.op(x)


class Upsample(nn.Module):
    def forward(self, x):
        return F.interpolate(x, scale_factor=2, mode="nearest")


def run_seq(seq, h):
    for layer in seq:
        h = layer(h)
    return h


class UNetModel(nn.Module):
    """`UNetModel` with ignore_time=True, input_projection=False, conv_resample=False,
    resblock_updown=False, num_classes=None; the attribute and index layout of the official one
    (`input_blocks.0` the identity, parameter-free `Downsample` / `Upsample` entries)."""

    def __init__(self, model_channels, channel_mult, num_res_blocks, attention_resolutions,
                 head_channels, groups, out_channels):
        super().__init__()
        ch = input_ch = channel_mult[0] * model_channels
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Identity())])
        chans, ds = [ch], 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [ResBlock(ch, mult * model_channels, groups)]
                ch = mult * model_channels
                if ds in attention_resolutions:
                    layers.append(AttentionBlock(ch, head_channels, groups))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                chans.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(TimestepEmbedSequential(Downsample()))
                chans.append(ch)
                ds *= 2
        self.middle_block = TimestepEmbedSequential(
            ResBlock(ch, ch, groups), AttentionBlock(ch, head_channels, groups),
            ResBlock(ch, ch, groups))
        self.output_blocks = nn.ModuleList([])
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                layers = [ResBlock(ch + chans.pop(), model_channels * mult, groups)]
                ch = model_channels * mult
                if ds in attention_resolutions:
                    layers.append(AttentionBlock(ch, head_channels, groups))
                if level and i == num_res_blocks:
                    layers.append(Upsample())
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))
        self.out = nn.Sequential(GroupNorm32(groups, ch), nn.SiLU(),
                                 nn.Conv2d(input_ch, out_channels, 3, padding=1))

    def forward(self, x):
        hs, h = [], x
        for module in self.input_blocks:
            h = run_seq(module, h)
            hs.append(h)
        h = run_seq(self.middle_block, h)
        for module in self.output_blocks:
            h = run_seq(module, torch.cat([h, hs.pop()], dim=1))
        return self.out(h)


class PixelEmbedding(nn.Module):
    def __init__(self, n_tokens, hidden_size):
        super().__init__()
        self.embedding_table = nn.Embedding(n_tokens, hidden_size)

    def forward(self, x):
        B, _, H, W = x.shape
        return self.embedding_table(x).permute(0, 1, 4, 2, 3).reshape(B, -1, H, W)


class DiscretePrimeUNetModel(nn.Module):
    def __init__(self, vocab_size, target_length, base_plus_one, unet_kwargs, in_channels=3):
        super().__init__()
        self.vocab_size, self.target_length = vocab_size, target_length
        embedding_dim = unet_kwargs["model_channels"] * unet_kwargs["channel_mult"][0] // in_channels
        self.pixel_embedding = PixelEmbedding(base_plus_one, embedding_dim // target_length)
        self.unet = UNetModel(out_channels=in_channels * vocab_size, **unet_kwargs)

    def forward(self, x_t):
        B, c, H, W = x_t.shape
        logits = self.unet(self.pixel_embedding(x_t))
        return logits.reshape(B, c // self.target_length, self.vocab_size, H, W).permute(0, 1, 3, 4, 2)


class EMA(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model
        self.register_buffer("num_updates", torch.tensor(0))
        self.shadow_params = nn.ParameterList(
            [nn.Parameter(p.clone().detach(), requires_grad=False) for p in model.parameters()])


def image_fixture(name, seed):
    ell, V, H, W, C = 2, 256, 4, 4, 3
    base = math.ceil(V ** (1 / ell))
    unet_kwargs = {"model_channels": 6, "channel_mult": [1, 2], "num_res_blocks": 1,
                   "attention_resolutions": [2], "head_channels": 6, "groups": 2}
    gen = torch.Generator().manual_seed(seed)
    net = DiscretePrimeUNetModel(V, ell, base + 1, unet_kwargs)
    randomize(net, gen, 0.3)
    to_half_and_back(net)
    ema = EMA(net)
    with torch.no_grad():
        ema.num_updates.fill_(4250)
        for s in ema.shadow_params:
            s.add_(torch.randn(s.shape, generator=gen) * 0.05)
            s.copy_(s.half().float())
        # Size: the output conv (6 → 3·256 channels, two thirds of the parameters) is shared
        # between the weights and the EMA (torch.save stores a shared storage once); every other
        # EMA tensor differs from its weight.
        ema.shadow_params[-2] = nn.Parameter(net.unet.out[2].weight.data, requires_grad=False)
        ema.shadow_params[-1] = nn.Parameter(net.unet.out[2].bias.data, requires_grad=False)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, betas=(0.9, 0.95))
    args = argparse.Namespace(
        device="cuda", seed=0, epochs=8001, resume="", num_gpus=8, start_epoch=0, batch_size=64,
        accum_iter=1, eval_frequency=250, output_dir="/app/output_dir", fid_samples=2000,
        lr=0.0001, optimizer_betas=[0.9, 0.95], use_ema=True, dataset="cifar10",
        data_path="./data/image_generation", num_workers=10, pin_mem=True, world_size=8,
        local_rank=-1, dist_on_itp=False, dist_url="env://", mode="train", schedule_n=3.0,
        nfe=512, print_freq=50, epsilon=0.001, temperature_parameters=[1.0, 0.0, 0.0],
        use_corrector_step=False, corrector_parameters=[], use_timestep_scheduler=False,
        timestep_parameters=[], target_length=ell, base=base, seq_length=H * W * C,
        vocab_size=V, carry_over=True, super_token=False, use_uniform_mixture=False,
        mixture_classes=4, from_huggingface=False, distributed=True, gpu=0, rank=0)
    ckpt = {
        "model": half_state(ema.state_dict()),
        "optimizer": opt.state_dict(),
        "lr_schedule": torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0).state_dict(),
        "epoch": 4250,
        "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                   "growth_interval": 2000, "_growth_tracker": 0},
        "args": args,
    }
    torch.save(ckpt, os.path.join(OUT, f"{name}.pth"))

    # The fixed input: (B, C·ℓ, H, W) sub-token channels [ch0 d0, ch0 d1, ch1 d0, ...].
    x0 = torch.randint(0, V, (1, H, W, C), generator=gen)
    digits = torch.stack([(x0 // base ** (ell - 1 - j)) % base for j in range(ell)], -1)
    digits = torch.where(torch.rand(digits.shape, generator=gen) < 0.5,
                         torch.full_like(digits, base), digits)
    yt = digits.reshape(1, H, W, C * ell).permute(0, 3, 1, 2).contiguous()
    out = {"yt": yt.float()}
    net.eval()  # no dropout
    with torch.no_grad():
        out["logits_model_first_pixel"] = net(yt)[:, :, 0, 0, :].clone()
        shadow = DiscretePrimeUNetModel(V, ell, base + 1, unet_kwargs)
        for p, s in zip(shadow.parameters(), ema.shadow_params):
            p.copy_(s)
        shadow.eval()
        out["logits_ema"] = shadow(yt)
    torch.save(out, os.path.join(OUT, f"{name}.expect.pt"))


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    text_fixture("mdlm_l1", ell=1, carry_over=True, time_conditioning=True, seed=11)
    text_fixture("prime_l4_co", ell=4, carry_over=True, time_conditioning=False, seed=12)
    image_fixture("unet_l2", seed=13)
    total = 0
    for name in sorted(os.listdir(OUT)):
        size = os.path.getsize(os.path.join(OUT, name))
        total += size
        print(f"{name}: {size} bytes")
    print(f"total {total} bytes; torch {torch.__version__}, omegaconf {omegaconf.__version__}, "
          f"transformers {transformers.__version__}, python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
