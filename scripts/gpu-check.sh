#!/usr/bin/env bash
# The GPU check, prepared to run in one go on a machine with an NVIDIA GPU and no network
# (docs/performance.md, "GPUs"). Build the binary elsewhere, copy it over, run this script there:
#
#   here:   scripts/setup-cuda-build.sh && cargo build --release --features cuda
#           strip + xz -T0 -6 target/release/mdm-prime       # 172 MB → 37.5 MB at d174b52
#   there:  scripts/gpu-check.sh --bin ./mdm-prime.xz --device cuda:0 --out gpu-check/
#
# It prints one JSON object per line and writes them to <out>/results.jsonl:
#   1. `mdm-prime check-device`: the first training steps' losses against the CPU (same host-drawn
#      examples, times and masks; f32, 1e-3 relative), two data-parallel replicas on the device
#      against one, and the ids sampled with one seed from the same weights;
#   2. `mdm-prime bench` on the device: the `owt-small` model (configs/owt-small.toml, one
#      micro-batch of 16 sequences a step) at bf16 (training step and sampling; MFU against the
#      device's measured bf16 GEMM peak) and at f32 (training step; sampling runs the f32 EMA
#      whatever the precision, so once is enough), then each config of --configs at f32;
#   3. when PyTorch is importable (bench/.venv/bin/python first, else python3): bench/torch_ref.py
#      on the same device with the fused attention (--sdpa): owt-small under bf16 autocast
#      (training step and sampling) and at f32 (training step), then --configs at f32.
# Without a GPU, `--dry-run` runs every step on the CPU (what CI's reviewers and a laptop can run)
# with the small `owt-tiny` in place of owt-small (hours on a CPU), no --configs, one warm-up and
# one timed repetition: a smoke test of the whole script (minutes on 2 cores), no measurement.
#
# Options: --bin FILE (mdm-prime or mdm-prime.xz; default target/release/mdm-prime)
#          --device D (default cuda:0)   --out DIR (default gpu-check-<date>)
#          --configs "A B" (more bench configs at f32; default "cpu-bytes cpu-gpt2")
#          --repeats N (default 5)   --warmup N (default 2)
#          --dry-run (--device cpu, owt-tiny, --configs "", --repeats 1, --warmup 1; explicit
#          options still win)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/target/release/mdm-prime"
OUT="gpu-check-$(date +%Y%m%d-%H%M%S)"
DRY=0
DEVICE="" CONFIGS="-" REPEATS="" WARMUP=""
while (($#)); do
  case "$1" in
    --bin) BIN="$2"; shift 2 ;;
    --device) DEVICE="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --configs) CONFIGS="$2"; shift 2 ;;
    --repeats) REPEATS="$2"; shift 2 ;;
    --warmup) WARMUP="$2"; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
if ((DRY)); then
  OWT=owt-tiny
  : "${DEVICE:=cpu}" "${REPEATS:=1}" "${WARMUP:=1}"
  [ "$CONFIGS" = "-" ] && CONFIGS=""
else
  OWT=owt-small
  : "${DEVICE:=cuda:0}" "${REPEATS:=5}" "${WARMUP:=2}"
  [ "$CONFIGS" = "-" ] && CONFIGS="cpu-bytes cpu-gpt2"
fi
PY=python3
[ -x "$ROOT/bench/.venv/bin/python" ] && PY="$ROOT/bench/.venv/bin/python"
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: > "$RESULTS"

if [[ "$BIN" == *.xz ]]; then
  xz -dc "$BIN" > "$OUT/mdm-prime"
  chmod +x "$OUT/mdm-prime"
  BIN="$OUT/mdm-prime"
fi
[ -x "$BIN" ] || { echo "no binary at $BIN (build it with: cargo build --release --features cuda)" >&2; exit 1; }

# CUDA libraries: the driver's libcuda, and NVRTC / cuBLAS / NCCL from a CUDA toolkit or the
# pip wheels beside PyTorch. cudarc opens libnccl.so, pip ships libnccl.so.2: link it.
if [[ "$DEVICE" == cuda* ]]; then
  export CUDARC_CUDA_VERSION="${CUDARC_CUDA_VERSION:-13000}"
  libdirs=()
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do [ -d "$d" ] && libdirs+=("$d"); done
  if command -v "$PY" >/dev/null && "$PY" -c 'import nvidia' 2>/dev/null; then
    while IFS= read -r d; do libdirs+=("$d"); done < <("$PY" - <<'PY'
import glob, os, nvidia
for base in nvidia.__path__:
    for d in sorted(glob.glob(os.path.join(base, "*", "lib"))):
        print(d)
PY
)
  fi
  mkdir -p "$OUT/lib"
  for d in "${libdirs[@]}"; do
    [ -e "$d/libnccl.so.2" ] && [ ! -e "$d/libnccl.so" ] && ln -sf "$d/libnccl.so.2" "$OUT/lib/libnccl.so"
  done
  LD_LIBRARY_PATH="$OUT/lib:$(IFS=:; echo "${libdirs[*]}")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export LD_LIBRARY_PATH
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" || true
fi
{
  echo "date: $(date -u +%FT%TZ)"
  echo "binary: $("$BIN" --version)"
  echo "device: $DEVICE"
  echo "host: $(uname -srm), $(nproc) cores"
  echo "command: $0 --device $DEVICE --configs \"$CONFIGS\" --repeats $REPEATS --warmup $WARMUP$( ((DRY)) && echo " --dry-run")"
  echo "python: $PY"
} > "$OUT/machine.txt"

status=0
echo "== 1. check-device ($DEVICE against the CPU)" >&2
if "$BIN" check-device --device "$DEVICE" | tee -a "$RESULTS"; then :; else status=1; fi

echo "== 2. bench on $DEVICE" >&2
bench() { "$BIN" bench --device "$DEVICE" --warmup "$WARMUP" --repeats "$REPEATS" --json "$@"; }
bench --config "$OWT" --precision bf16 --workload train-step,sample | tee -a "$RESULTS" || status=1
bench --config "$OWT" --precision f32 --workload train-step | tee -a "$RESULTS" || status=1
for c in $CONFIGS; do
  bench --config "$c" --precision f32 | tee -a "$RESULTS" || status=1
done

echo "== 3. PyTorch reference" >&2
if command -v "$PY" >/dev/null && "$PY" -c 'import torch' 2>/dev/null; then
  torch_device=cpu
  [[ "$DEVICE" == cuda* ]] && torch_device="$DEVICE"
  torch_ref() {
    "$PY" "$ROOT/bench/torch_ref.py" --device "$torch_device" --warmup "$WARMUP" \
      --repeats "$REPEATS" --json "$@"
  }
  for w in train-step sample; do
    torch_ref --config "$OWT" --workload "$w" --autocast bf16 --sdpa | tee -a "$RESULTS" || status=1
  done
  torch_ref --config "$OWT" --workload train-step --sdpa | tee -a "$RESULTS" || status=1
  for c in $CONFIGS; do
    for w in train-step sample; do
      torch_ref --config "$c" --workload "$w" | tee -a "$RESULTS" || status=1
    done
  done
else
  echo "no PyTorch here ($PY): reference not run" | tee "$OUT/torch-skipped.txt" >&2
fi
echo "results: $RESULTS" >&2
exit "$status"
