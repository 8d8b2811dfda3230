#!/usr/bin/env python3
"""A tiny random GPT-2 in the Hugging Face layout, and the logits `transformers` computes from it.

`mdm-prime genppl --judge DIR` loads a GPT-2 from `DIR/model.safetensors` + `DIR/config.json`
into its own burn implementation (`crates/mdm-prime/src/gpt2.rs`). This script builds
`transformers.GPT2LMHeadModel` from a tiny config with a fixed seed, makes every parameter
random (the layer norms and biases too, which GPT-2's initialisation sets to 1 and 0, so that
each one matters), and writes `crates/mdm-prime/assets/gpt2/`:

- `config.json`: the model's config as `save_pretrained` writes it (vocab 97, 16 positions,
  n_embd 16, 2 layers, 2 heads, `gelu_new`);
- `model.safetensors`: float32, saved by `GPT2LMHeadModel.save_pretrained`: names with the
  `transformer.` prefix, no `lm_head.weight` (tied to `wte`);
- `model-f16.safetensors`: float16, saved from the bare `GPT2Model` (`model.transformer`): names
  without the prefix, the layout of the official `gpt2`…`gpt2-xl` files;
- `expect.json`: fixed input ids `[2, 8]`, the logits `[2, 8, 97]` of the float32 model, and the
  logits of the float16 weights computed in float32 (`logits_f16`), each value the shortest
  decimal that reads back as the same float32.

The Rust test `gpt2_logits_match_transformers` (crates/mdm-prime/tests/it/gpt2.rs) loads both
files and reproduces the logits (docs/genppl.md gives the measured difference). Run from the
repository root with a Python that has torch, transformers and safetensors:

    bench/.venv/bin/pip install transformers safetensors
    bench/.venv/bin/python bench/gpt2_fixture.py
"""

import argparse
import json
import os
import shutil
import tempfile

import numpy as np
import torch
import transformers

SEED = 20261201
CONFIG = dict(
    vocab_size=97,
    n_positions=16,
    n_embd=16,
    n_layer=2,
    n_head=2,
    layer_norm_epsilon=1e-5,
    activation_function="gelu_new",
    bos_token_id=96,
    eos_token_id=96,
)


def shortest(x):
    """The shortest decimal that reads back as the same float32."""
    return float(np.format_float_positional(np.float32(x), unique=True, trim="-"))


def build():
    torch.manual_seed(SEED)
    config = transformers.GPT2Config(**CONFIG)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name.endswith(
                "ln_f.weight"
            ):
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.2 * torch.randn_like(p))
            else:
                p.copy_(0.35 * torch.randn_like(p))
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="crates/mdm-prime/assets/gpt2")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)

    model = build()
    gen = torch.Generator().manual_seed(SEED + 1)
    ids = torch.randint(0, CONFIG["vocab_size"], (2, 8), generator=gen)
    with torch.no_grad():
        logits = model(ids).logits.float()

    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        shutil.copy(os.path.join(tmp, "model.safetensors"), os.path.join(args.out, "model.safetensors"))
        shutil.copy(os.path.join(tmp, "config.json"), os.path.join(args.out, "config.json"))

    # The float16 file, and what its rounded weights compute in float32.
    half = build()
    with torch.no_grad():
        for p in half.parameters():
            p.copy_(p.half().float())
        logits_f16 = half(ids).logits.float()
    with tempfile.TemporaryDirectory() as tmp:
        half.transformer.half().save_pretrained(tmp, safe_serialization=True)
        shutil.copy(
            os.path.join(tmp, "model.safetensors"), os.path.join(args.out, "model-f16.safetensors")
        )

    expect = {
        "generator": "bench/gpt2_fixture.py",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "seed": SEED,
        "input_ids": ids.tolist(),
        "logits": [[[shortest(v) for v in row] for row in seq] for seq in logits.tolist()],
        "logits_f16": [[[shortest(v) for v in row] for row in seq] for seq in logits_f16.tolist()],
    }
    with open(os.path.join(args.out, "expect.json"), "w") as f:
        json.dump(expect, f, separators=(",", ":"))
        f.write("\n")
    for name in sorted(os.listdir(args.out)):
        print(f"{name}: {os.path.getsize(os.path.join(args.out, name))} bytes")
    print("logits range", float(logits.min()), float(logits.max()))


if __name__ == "__main__":
    main()
