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

Usage:
    python bench/torch_ref.py --config cpu-gpt2 --workload train-step \
        --warmup 2 --repeats 5 --threads 2 --json
    python bench/torch_ref.py --config cpu-bytes --check      # quick correctness checks

Dependencies: torch (and the standard library) only.
"""

from __future__ import annotations

import argparse
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
}
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

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[..., L] token ids -> [..., L, ell] digits."""
        return self.digit_table[x]

    def decode(self, y: torch.Tensor) -> torch.Tensor:
        """[..., L, ell] digits (no masks) -> [..., L] codes (may be >= V without carry-over)."""
        return (y * self.powers).sum(-1)

    def consistent(self, yt: torch.Tensor) -> torch.Tensor:
        """allowed[b, i, x]: token x agrees with every revealed digit of yt[b, i, :] (§5.1).
        yt: [B, L, ell] -> [B, L, V] bool."""
        allowed = None
        for j in range(self.ell):
            yj = yt[..., j:j + 1]                                              # [B, L, 1]
            ok = (self.digit_table[:, j] == yj) | (yj == self.mask_id)         # [B, L, V]
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
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
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

    def rotary(self, seq_len):
        if seq_len not in self._rotary:
            self._rotary[seq_len] = rotary_tables(seq_len, self.d_model // self.n_heads)
        return self._rotary[seq_len]

    def logits(self, yt_flat: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """yt_flat: [B, L*ell] sub-tokens (mask id b) -> logits [B, L, V]."""
        b, n = yt_flat.shape
        l = n // self.codec.ell
        x = F.embedding(yt_flat, self.vocab_embed).reshape(b, l, self.d_model)
        if not self.time_conditioning:
            sigma = torch.zeros_like(sigma)
        c = F.silu(self.sigma_map(sigma))
        cos, sin = self.rotary(l)
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
    model = PrimeDiT(codec, cfg["d_model"], cfg["n_layers"], cfg["n_heads"], cfg["cond_dim"],
                     cfg["mlp_ratio"], cfg["dropout"], time_conditioning=False,
                     use_sdpa=use_sdpa)
    return codec, model


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
    sigma = torch.zeros(x0.shape[0])                 # time conditioning off
    lp = model.log_probs(yt_flat, sigma, carry_over=True)
    nll = -lp.gather(-1, x0[..., None]).squeeze(-1)                          # [B, L]
    weight = (1.0 / t).float()                                               # [B]
    return (nll * weight[:, None]).mean()


# ----------------------------------------------------------------------------------------------
# Training step (design §8.1): clip 1.0, AdamW, EMA.
# ----------------------------------------------------------------------------------------------

class Trainer:
    def __init__(self, codec, model, seed=SEED):
        self.codec, self.model = codec, model
        self.opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=BETAS, eps=ADAM_EPS,
                                     weight_decay=WEIGHT_DECAY)
        self.ema = [p.detach().clone() for p in model.parameters()]
        self.step_n = 0
        self.gen = torch.Generator().manual_seed(seed)

    def random_tokens(self, b, l):
        return torch.randint(0, self.codec.vocab_size, (b, l), generator=self.gen)

    def step(self, x0: torch.Tensor) -> float:
        self.model.train()
        yt, t = noised_batch(self.codec, x0, self.gen)
        loss = paper_loss(self.model, x0, yt, t)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), GRAD_CLIP)
        self.opt.step()
        # EMA as MDLM's ExponentialMovingAverage.update: s -= (1 - d)(s - p), with the
        # warm-up decay min(decay, (1 + n)/(10 + n)), n = updates so far (as the Rust side).
        decay = min(EMA_DECAY, (1 + self.step_n) / (10 + self.step_n))
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
    e = torch.rand(p64.shape, dtype=torch.float64, generator=gen)
    e.add_(torch.finfo(torch.float64).tiny).log_().neg_()
    torch.div(p64, e, out=e)
    del p64
    return e.argmax(dim=-1)


@torch.inference_mode()
def sample(model: PrimeDiT, codec: Codec, batch: int, seq_len: int, steps: int,
           gen: torch.Generator, carry_over=True):
    """Returns (tokens [B, L], nfe)."""
    model.eval()
    ell, mask = codec.ell, codec.mask_id
    y = torch.full((batch, seq_len * ell), mask, dtype=torch.long)
    timesteps = torch.linspace(1.0, SAMPLE_T_MIN, steps + 1, dtype=torch.float64)
    dt = (1.0 - SAMPLE_T_MIN) / steps
    sigma = torch.zeros(batch)
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
        reveal = torch.rand(y.shape, dtype=torch.float64, generator=gen) < (mc_t - mc_s) / mc_t
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
    b, l = cfg["batch_size"], cfg["seq_len"]
    times, nfes, losses = [], [], []

    if args.workload == "train-step":
        trainer = Trainer(codec, model)

        def once():
            x0 = trainer.random_tokens(b, l)          # fresh synthetic batch, times, masks
            losses.append(trainer.step(x0))
    else:
        steps = args.steps or l
        gen = torch.Generator().manual_seed(SEED + 7)
        model.eval()

        def once():
            tokens, nfe = sample(model, codec, b, l, steps, gen)
            assert tokens.shape == (b, l)
            nfes.append(nfe)

    for _ in range(args.warmup):
        once()
    nfes.clear()
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        once()
        times.append((time.perf_counter() - t0) * 1e3)

    med = statistics.median(times)
    out = {
        "impl": "pytorch",
        "torch_version": torch.__version__,
        "config": args.config,
        "workload": args.workload,
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
    }
    if args.workload == "sample":
        out["nfe_mean"] = statistics.mean(nfes)
        out["steps"] = args.steps or l
    else:
        out["last_loss"] = losses[-1]
    return out


# ----------------------------------------------------------------------------------------------
# --check: quick correctness checks (codec vectors, filter, 30 training steps, a short sample).
# ----------------------------------------------------------------------------------------------

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

    # Training: 30 steps on a fixed pool of random sequences (learnable: memorisation), loss
    # finite and falling; EMA moved.
    cfg = dict(CONFIGS[args.config])
    torch.manual_seed(SEED)
    codec, model = build_model(cfg, use_sdpa=args.sdpa)
    trainer = Trainer(codec, model)
    b, l = cfg["batch_size"], cfg["seq_len"]
    pool = trainer.random_tokens(b, l)
    losses = []
    t0 = time.perf_counter()
    for i in range(args.check_steps):
        losses.append(trainer.step(pool))
        print(f"step {i + 1:3d}  loss {losses[-1]:.4f}", flush=True)
    dt = time.perf_counter() - t0
    k = max(1, len(losses) // 5)
    first, last = statistics.mean(losses[:k]), statistics.mean(losses[-k:])
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
                    help="sampler steps T (default: L = 128; override only for quick checks)")
    ap.add_argument("--batch", type=int, default=0,
                    help="override the batch size (default 16; quick checks only)")
    ap.add_argument("--check", action="store_true", help="run the correctness checks and exit")
    ap.add_argument("--check-steps", type=int, default=30)
    args = ap.parse_args(argv)
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
