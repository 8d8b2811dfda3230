#!/usr/bin/env python3
"""`mdm-prime genppl` with a GPT-2 judge, recomputed with `transformers` (docs/genppl.md).

The same rules, written independently: each sample's `text` in GPT-2 tokens (taken from
`mdm-prime subtokens --tokenizer gpt2 --ell 1 --text …`, since the GPT-2 vocabulary files are not
on this machine; texts with `<|endoftext|>` in them are refused), the judge sequence
`[bos_token_id] + tokens`, windows of `n_positions` tokens sharing one token, every token but
50256 scored with `log_softmax` of the window's logits, perplexity `exp(Σ NLL / Σ tokens)`, and
the unigram entropy of each sample's scored tokens.

    bench/.venv/bin/python bench/genppl_ref.py --make-random /tmp/gpt2-random   # 124 M, random
    mdm-prime genppl --judge /tmp/gpt2-random --samples S.jsonl --json > /tmp/rust.json
    bench/.venv/bin/python bench/genppl_ref.py --judge /tmp/gpt2-random --samples S.jsonl \
        --compare /tmp/rust.json

`--make-random DIR` writes a GPT-2 of the released `gpt2` sizes (12 layers, n_embd 768, 1024
positions, V = 50257) with `transformers`' random initialisation (seed 0), in the layout of a
Hugging Face download: the check at full size without the released weights. With them (a
`gpt2-large` folder fetched elsewhere), pass that folder as `--judge`.
"""

import argparse
import collections
import json
import math
import subprocess

import torch
import transformers

EOS = 50256


def gpt2_ids(binary, text):
    out = subprocess.run(
        [binary, "subtokens", "--tokenizer", "gpt2", "--ell", "1", "--text", text],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [int(line.split()[0]) for line in out.splitlines() if line and not line.startswith("#")]


def entropy(tokens):
    n = len(tokens)
    return -sum(c / n * math.log(c / n) for c in collections.Counter(tokens).values())


def score(model, seq, n):
    """Σ −log p over the scored positions of `seq`, and their count."""
    nll, count, start = 0.0, 0, 0
    while start + 1 < len(seq):
        window = seq[start : start + n]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([window])).logits[0].double(), -1)
        for j in range(1, len(window)):
            if window[j] != EOS:
                nll -= float(logp[j - 1, window[j]])
                count += 1
        start += n - 1
    return nll, count


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--make-random", metavar="DIR")
    p.add_argument("--judge", metavar="DIR")
    p.add_argument("--samples")
    p.add_argument("--mdm-prime", default="target/release/mdm-prime")
    p.add_argument("--compare", metavar="JSON", help="`mdm-prime genppl --json` output")
    args = p.parse_args()
    if args.make_random:
        torch.manual_seed(0)
        transformers.GPT2LMHeadModel(transformers.GPT2Config()).save_pretrained(args.make_random)
        print(f"wrote {args.make_random}")
        return
    model = transformers.GPT2LMHeadModel.from_pretrained(args.judge).eval().float()
    n, bos = model.config.n_positions, model.config.bos_token_id
    per = []
    for line in open(args.samples):
        if not line.strip():
            continue
        text = json.loads(line)["text"]
        assert "<|endoftext|>" not in text, "texts with <|endoftext|> are not handled here"
        seq = [bos] + gpt2_ids(args.mdm_prime, text)
        nll, count = score(model, seq, n)
        scored = [t for t in seq[1:] if t != EOS]
        per.append({"tokens": count, "nll": nll, "entropy": entropy(scored)})
    total = sum(s["nll"] for s in per) / sum(s["tokens"] for s in per)
    report = {
        "gen_ppl": math.exp(total),
        "nll_per_token": total,
        "scored_tokens": sum(s["tokens"] for s in per),
        "entropy": sum(s["entropy"] for s in per) / len(per),
        "per_sample": per,
    }
    if not args.compare:
        print(json.dumps(report))
        return
    rust = json.load(open(args.compare))
    assert [s["tokens"] for s in rust["per_sample"]] == [s["tokens"] for s in per], "token counts"
    rel = max(abs(r["nll"] - s["nll"]) / s["nll"] for r, s in zip(rust["per_sample"], per))
    print(
        json.dumps(
            {
                "samples": len(per),
                "scored_tokens": report["scored_tokens"],
                "gen_ppl_torch": report["gen_ppl"],
                "gen_ppl_rust": rust["gen_ppl"],
                "max_rel_diff_sample_nll": rel,
                "entropy_diff": abs(rust["entropy"] - report["entropy"]),
            }
        )
    )


if __name__ == "__main__":
    main()
