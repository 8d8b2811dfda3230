#!/bin/bash
# The quick-start candidates (docs/results.md, "Choosing the quick start"): the presets a newcomer
# could be given for `mdm-prime train` on the embedded Moby-Dick corpus, each trained once with the
# same seed and scored the same way, so the choice of configs/cpu.toml rests on measured runs.
#
#   scripts/quickstart-candidates.sh [OUT_DIR]          default OUT_DIR: runs/quickstart
#
# Every candidate is configs/cpu.toml as it stood before the choice (bytes, D = 256 × 4 layers,
# batch 16 × 128 tokens, dropout 0.1, warm-up 50, peak lr 1e-3) plus the overrides listed below.
# Per candidate: the training wall time, `eval` over the whole validation split (valid-bound
# perplexity ± s.e., the paper objective), and the two samples `train` prints at the end. Then one
# Markdown table on stdout (and OUT_DIR/table.md; per token: a byte, or a GPT-2 token for the one
# GPT-2 candidate, whose 450 steps take about as long as the byte runs' 1500). Steps are skipped when their output exists, so
# an interrupted run continues. Environment: MDM_PRIME (binary; default target/release/mdm-prime).
# Needs `jq` for the table.
set -euo pipefail
out=${1:-runs/quickstart}
bin=${MDM_PRIME:-target/release/mdm-prime}
command -v jq > /dev/null || { echo "quickstart-candidates.sh needs jq (apt-get install jq)" >&2; exit 1; }
mkdir -p "$out"
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

# name | overrides (the old preset: ell 2, cosine to 1e-4, 480 steps, dropout 0.1)
candidates=(
  "ell2-cosine-480|"
  "ell2-constant-480|--set train.lr_schedule=constant"
  "ell1-constant-480|--set prime.ell=1 --set train.lr_schedule=constant"
  "ell1-constant-1500|--set prime.ell=1 --set train.lr_schedule=constant --steps 1500"
  "ell2-constant-1500|--set train.lr_schedule=constant --steps 1500"
  "ell2-cosine-1500|--steps 1500"
  "ell2-constant-1500-nodrop|--set train.lr_schedule=constant --steps 1500 --set model.dropout=0"
  "gpt2-ell1-constant-450|--set data.tokenizer=gpt2 --set prime.ell=1 --set train.lr_schedule=constant --steps 450"
)

for c in "${candidates[@]}"; do
  name=${c%%|*}
  read -r -a overrides <<< "${c#*|}"
  dir="$out/$name"
  if [ ! -f "$dir/train.json" ]; then
    log "train $name"
    rm -rf "$dir"
    t0=$(date +%s.%N)
    # The preset as it stood before the choice, written out so later edits to cpu.toml do not
    # change what this script measures.
    # /usr/bin/time -v (when installed) adds peak RSS and CPU time to the log's end.
    timer=(); [ -x /usr/bin/time ] && timer=(/usr/bin/time -v)
    "${timer[@]}" "$bin" train --config scripts/quickstart-base.toml --run-dir "$dir" --quiet --seed 1 \
      "${overrides[@]}" > "$dir.train.log" 2>&1 || { tail -20 "$dir.train.log" >&2; exit 1; }
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "{\"train_wall_s\": %.1f}\n", b - a }' > "$dir/train.json"
  fi
  if [ ! -f "$dir/eval.json" ]; then
    log "eval $name"
    "$bin" eval --run "$dir" --json > "$dir/eval.json.tmp"
    mv "$dir/eval.json.tmp" "$dir/eval.json"
  fi
done

{
  echo "| candidate | steps | train wall | valid bound (nats/token) | perplexity ≤ | paper objective |"
  echo "|---|---:|---:|---:|---:|---:|"
  for c in "${candidates[@]}"; do
    name=${c%%|*}
    dir="$out/$name"
    steps=$(jq -r .step "$dir/state.json")
    wall=$(jq -r '.train_wall_s | floor | "\(. / 60 | floor) min \(. % 60) s"' "$dir/train.json")
    jq -r --arg n "$name" --arg s "$steps" --arg w "$wall" \
      '"| \($n) | \($s) | \($w) | \(.elbo_nats_per_token * 1000 | round / 1000) ± \(.elbo_stderr * 1000 | round / 1000) | \(.elbo_ppl * 100 | round / 100) | \(.paper_objective_nats_per_token * 1000 | round / 1000) |"' \
      "$dir/eval.json"
  done
} | tee "$out/table.md"
