#!/usr/bin/env bash
# The long form of the fuzzing (docs/reliability.md, "Fuzzing"): each target coverage-guided
# under cargo-fuzz (libFuzzer, AddressSanitizer, debug assertions) for RUNS inputs (default
# 10^6), starting from the committed corpus fuzz/corpus/<target>/. A crash stops that target and
# leaves its input in fuzz/artifacts/<target>/; add it to fuzz/corpus/<target>/ once fixed.
#
#   fuzz/run.sh                 every target, 10^6 inputs each
#   RUNS=10000 fuzz/run.sh png  one target, briefly
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). The working corpus
# grows under $WORK (default target/corpus), outside git.
set -euo pipefail
cd "$(dirname "$0")"
RUNS=${RUNS:-1000000}
WORK=${WORK:-target/corpus}
all="config corpus idx cifar png token_cache safetensors state_json infill fix observe npz device journal pickle torch_archive ptb"
max_len() {
  case $1 in
    cifar | png) echo 16384 ;;
    config | corpus | idx) echo 8192 ;;
    token_cache | safetensors | npz | pickle) echo 4096 ;;
    torch_archive | ptb) echo 16384 ;;
    *) echo 1024 ;;
  esac
}
for t in ${*:-$all}; do
  mkdir -p "$WORK/$t" "artifacts/$t"
  start=$(date +%s)
  status=ok
  cargo +nightly fuzz run -O -a "$t" "$WORK/$t" "corpus/$t" -- \
    -runs="$RUNS" -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 \
    -max_len="$(max_len "$t")" -artifact_prefix="artifacts/$t/" >"$WORK/$t.log" 2>&1 ||
    status=CRASH
  done_line=$(grep -E '^Done [0-9]+ runs' "$WORK/$t.log" | tail -1 || true)
  echo "$t: $status; ${done_line:-no Done line}; wall $(($(date +%s) - start)) s; log $WORK/$t.log"
done
