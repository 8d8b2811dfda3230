#!/bin/bash
# The quick-start candidates (docs/results.md, "Choosing the quick start"): the presets a newcomer
# could be given for `mdm-prime train` on the embedded Moby-Dick corpus, each trained once with the
# same seed and scored the same way, so the choice of configs/cpu.toml rests on measured runs.
#
#   scripts/quickstart-candidates.sh [OUT_DIR]          default OUT_DIR: runs/quickstart
#
# Every candidate is configs/cpu.toml (Moby-Dick, D = 256 × 4 layers, batch 16 × 128 tokens,
# warm-up 50, peak lr 1e-3) with the five keys the candidates vary set explicitly below, so an
# edit of those keys in the preset does not change what this script measures. The first row is
# the preset as it stood before the choice (ℓ = 2, cosine decay to 1e-4, 480 steps, dropout 0.1).
# Per candidate: the training wall time, `eval` over the whole validation split (valid-bound
# perplexity ± s.e., the paper objective), and the two samples `train` prints at the end. Then one
# Markdown table on stdout (and OUT_DIR/table.md; per token: a byte, or a GPT-2 token for the two
# GPT-2 candidates, whose 450 steps take about as long as the byte runs' 1500). Steps are skipped when their output exists, so
# an interrupted run continues. Environment: MDM_PRIME (binary; default target/release/mdm-prime).
# Needs `jq` for the table.
set -euo pipefail
out=${1:-runs/quickstart}
bin=${MDM_PRIME:-target/release/mdm-prime}
command -v jq > /dev/null || { echo "quickstart-candidates.sh needs jq (apt-get install jq)" >&2; exit 1; }
mkdir -p "$out"
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

# name | tokenizer | ell | learning-rate schedule | steps | dropout
candidates=(
  "ell2-cosine-480|bytes|2|cosine|480|0.1"
  "ell2-constant-480|bytes|2|constant|480|0.1"
  "ell1-constant-480|bytes|1|constant|480|0.1"
  "ell1-constant-1500|bytes|1|constant|1500|0.1"
  "ell2-constant-1500|bytes|2|constant|1500|0.1"
  "ell2-cosine-1500|bytes|2|cosine|1500|0.1"
  "ell2-constant-1500-nodrop|bytes|2|constant|1500|0.0"
  "gpt2-ell1-constant-450|gpt2|1|constant|450|0.1"
  "gpt2-ell4-constant-450|gpt2|4|constant|450|0.1"
)

for c in "${candidates[@]}"; do
  IFS='|' read -r name tok ell schedule steps dropout <<< "$c"
  dir="$out/$name"
  if [ ! -f "$dir/train.json" ]; then
    log "train $name"
    rm -rf "$dir"
    t0=$(date +%s.%N)
    # /usr/bin/time -v (when installed) adds peak RSS and CPU time to the log's end.
    timer=(); [ -x /usr/bin/time ] && timer=(/usr/bin/time -v)
    "${timer[@]}" "$bin" train --config configs/cpu.toml --run-dir "$dir" --quiet --seed 1 \
      --set "data.tokenizer=$tok" --set "prime.ell=$ell" --set "train.lr_schedule=$schedule" \
      --steps "$steps" --set "model.dropout=$dropout" \
      > "$dir.train.log" 2>&1 || { tail -20 "$dir.train.log" >&2; exit 1; }
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
    jq -r --arg n "$name" --slurpfile s "$dir/state.json" --slurpfile t "$dir/train.json" \
      '[$n, $s[0].step, $t[0].train_wall_s, .elbo_nats_per_token, .elbo_stderr, .elbo_ppl,
        .paper_objective_nats_per_token] | @tsv' "$dir/eval.json"
  done | awk -F'\t' '{ printf "| %s | %d | %d min %d s | %.3f ± %.3f | %.2f | %.3f |\n",
                          $1, $2, int($3 / 60), int($3) % 60, $4, $5, $6, $7 }'
} | tee "$out/table.md"
