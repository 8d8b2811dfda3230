#!/usr/bin/env bash
# bench/run.sh — Rust (`mdm-prime bench`) vs the PyTorch reference (bench/torch_ref.py).
#
# For each config × workload, runs Rust and PyTorch alternately (rust, torch, rust, torch, …),
# each run in its own process so that peak RSS is per workload, appends every JSON line to
# bench/results-<date>.jsonl and prints a table of medians and rust/torch ratios.
#
# Not part of the Rust build or CI. See bench/README.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

CONFIGS="cpu-gpt2 cpu-bytes"
WORKLOADS="train-step sample"
ROUNDS=2
WARMUP=2
REPEATS=5
THREADS="$(nproc)"
ARENA_MAX=""
MMAP_THRESHOLD=""
TIMEOUT=0
BUILD=1
RUN_RUST=1
RUN_TORCH=1
OUT=""
EXTRA_ENV=()
RUST_CACHE=""
VENV="$ROOT/bench/.venv"
RUST_BIN="${MDM_PRIME_BIN:-$ROOT/target/release/mdm-prime}"   # override for testing

usage() {
    cat <<EOF
usage: bench/run.sh [options]

  --configs "A B"        configs to run             (default: "$CONFIGS")
  --workloads "A B"      workloads to run           (default: "$WORKLOADS")
  --rounds N             rust/torch alternations    (default: $ROUNDS)
  --warmup N             untimed runs per process   (default: $WARMUP)
  --repeats N            timed runs per process     (default: $REPEATS)
  --threads N            torch.set_num_threads and RAYON_NUM_THREADS (default: nproc = $THREADS)
  --arena-max N          export MALLOC_ARENA_MAX=N to both sides          (default: unset)
  --mmap-threshold B     export MALLOC_MMAP_THRESHOLD_=B (bytes) to both  (default: unset)
  --env KEY=VALUE        extra environment for both sides, repeatable (e.g. OMP_WAIT_POLICY=PASSIVE)
  --rust-cache MODE      pass '--cache MODE' to the Rust sample workload: sequence | batch | off
                         (default: the binary's own default; 'batch' is the PyTorch/reference rule)
  --timeout S            kill a single run after S seconds (0 = never; default 0)
  --skip-build           do not run 'cargo build --release'
  --no-rust | --no-torch run one side only
  --out FILE             results file (default: bench/results-<date>.jsonl)
EOF
}

while [ $# -gt 0 ]; do
    case "$1" in
        --configs) CONFIGS="$2"; shift 2 ;;
        --workloads) WORKLOADS="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        --warmup) WARMUP="$2"; shift 2 ;;
        --repeats) REPEATS="$2"; shift 2 ;;
        --threads) THREADS="$2"; shift 2 ;;
        --arena-max) ARENA_MAX="$2"; shift 2 ;;
        --mmap-threshold) MMAP_THRESHOLD="$2"; shift 2 ;;
        --env) EXTRA_ENV+=("$2"); shift 2 ;;
        --rust-cache) RUST_CACHE="$2"; shift 2 ;;
        --timeout) TIMEOUT="$2"; shift 2 ;;
        --skip-build) BUILD=0; shift ;;
        --no-rust) RUN_RUST=0; shift ;;
        --no-torch) RUN_TORCH=0; shift ;;
        --out) OUT="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
done

STAMP="$(date +%Y%m%d-%H%M%S)"
OUT="${OUT:-$ROOT/bench/results-$STAMP.jsonl}"
LOGDIR="$ROOT/bench/logs/$STAMP"
mkdir -p "$LOGDIR"
touch "$OUT"

# Allocator policy shared by both sides (glibc malloc tunables; both the Rust binary and
# libtorch's CPU allocator go through glibc malloc). Unset by default.
ALLOC_ENV=()
if [ -n "$ARENA_MAX" ]; then ALLOC_ENV+=("MALLOC_ARENA_MAX=$ARENA_MAX"); fi
if [ -n "$MMAP_THRESHOLD" ]; then ALLOC_ENV+=("MALLOC_MMAP_THRESHOLD_=$MMAP_THRESHOLD"); fi

# --- PyTorch environment -------------------------------------------------------------------
if [ "$RUN_TORCH" = 1 ]; then
    if [ ! -x "$VENV/bin/python" ]; then
        echo ">> creating $VENV (PyPI torch wheel is large)" >&2
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install torch tiktoken numpy
    fi
    TORCH_VERSION="$("$VENV/bin/python" -c 'import torch; print(torch.__version__)' 2>/dev/null)"
    echo ">> torch $TORCH_VERSION" >&2
fi

# --- Rust binary ---------------------------------------------------------------------------
if [ "$RUN_RUST" = 1 ]; then
    if [ "$BUILD" = 1 ]; then
        echo ">> cargo build --release" >&2
        cargo build --release
    fi
    if [ ! -x "$RUST_BIN" ] || ! "$RUST_BIN" bench --help >/dev/null 2>&1; then
        echo ">> $RUST_BIN has no 'bench' subcommand (yet): skipping the Rust side" >&2
        RUN_RUST=0
    fi
fi

# Runs one benchmark process; appends its JSON (annotated) to $OUT.
#   run_one <impl> <config> <workload> <round>
run_one() {
    local impl="$1" cfg="$2" wl="$3" round="$4"
    local log="$LOGDIR/$impl-$cfg-$wl-$round"
    local cmd
    if [ "$impl" = rust ]; then
        cmd=("$RUST_BIN" bench --config "$cfg" --workload "$wl"
             --warmup "$WARMUP" --repeats "$REPEATS" --json)
        if [ -n "$RUST_CACHE" ] && [ "$wl" = sample ]; then cmd+=(--cache "$RUST_CACHE"); fi
    else
        cmd=("$VENV/bin/python" "$ROOT/bench/torch_ref.py" --config "$cfg" --workload "$wl"
             --warmup "$WARMUP" --repeats "$REPEATS" --threads "$THREADS" --json)
    fi
    if [ "$TIMEOUT" != 0 ]; then cmd=(timeout "$TIMEOUT" "${cmd[@]}"); fi
    echo ">> [$round] $impl $cfg $wl" >&2
    local rc=0
    env ${ALLOC_ENV[@]+"${ALLOC_ENV[@]}"} ${EXTRA_ENV[@]+"${EXTRA_ENV[@]}"} RAYON_NUM_THREADS="$THREADS" \
        "${cmd[@]}" >"$log.out" 2>"$log.err" || rc=$?
    if [ "$rc" != 0 ]; then
        echo "   failed (exit $rc); last lines of $log.err:" >&2
        tail -n 5 "$log.err" | sed 's/^/   | /' >&2
        return 0
    fi
    if python3 - "$log.out" "$OUT" "$impl" "$cfg" "$wl" "$round" "$THREADS" \
        "$ARENA_MAX" "$MMAP_THRESHOLD" <<'PY'
import json, sys
src, out, impl, cfg, wl, rnd, threads, arena, mmap = sys.argv[1:]
obj = None
for line in open(src):
    line = line.strip()
    if line.startswith("{"):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            pass
if obj is None:
    sys.exit(f"   no JSON object in {src}")
obj.setdefault("impl", impl)
obj["side"] = impl            # "rust" | "pytorch" (the Rust side names its impl in detail)
obj.setdefault("config", cfg)
obj.setdefault("workload", wl)
obj["round"] = int(rnd)
obj["threads_requested"] = int(threads)
obj["malloc_arena_max"] = arena or None
obj["malloc_mmap_threshold"] = mmap or None
with open(out, "a") as f:
    f.write(json.dumps(obj) + "\n")
print(f"   median {obj['median_ms']:.1f} ms, peak RSS {obj['peak_rss_mib']:.0f} MiB", file=sys.stderr)
PY
    then :; else echo "   (result not recorded)" >&2; fi
}

for cfg in $CONFIGS; do
    for wl in $WORKLOADS; do
        for round in $(seq 1 "$ROUNDS"); do
            if [ "$RUN_RUST" = 1 ]; then run_one rust "$cfg" "$wl" "$round"; fi
            if [ "$RUN_TORCH" = 1 ]; then run_one pytorch "$cfg" "$wl" "$round"; fi
        done
    done
done

echo ">> results: $OUT" >&2
python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
groups = {}
for r in rows:
    side = r.get("side") or ("pytorch" if r.get("impl") == "pytorch" else "rust")
    groups.setdefault((r["config"], r["workload"]), {}).setdefault(side, []).append(r)

def med(rs, key):
    vals = [r[key] for r in rs if r.get(key) is not None]
    return statistics.median(vals) if vals else None

def fmt(x, nd=1):
    return "-" if x is None else f"{x:.{nd}f}"

hdr = (f"{'config':<10} {'workload':<11} {'rust ms':>10} {'torch ms':>10} {'ms r/t':>7} "
       f"{'rust MiB':>9} {'torch MiB':>9} {'RSS r/t':>7} {'rust NFE':>8} {'torch NFE':>9}")
print(hdr)
print("-" * len(hdr))
for (cfg, wl), by in groups.items():
    ru, to = by.get("rust", []), by.get("pytorch", [])
    rm, tm = med(ru, "median_ms"), med(to, "median_ms")
    rr, tr = med(ru, "peak_rss_mib"), med(to, "peak_rss_mib")
    ratio = lambda a, b: None if a is None or b is None or b == 0 else a / b
    print(f"{cfg:<10} {wl:<11} {fmt(rm):>10} {fmt(tm):>10} {fmt(ratio(rm, tm), 2):>7} "
          f"{fmt(rr, 0):>9} {fmt(tr, 0):>9} {fmt(ratio(rr, tr), 2):>7} "
          f"{fmt(med(ru, 'nfe_mean')):>8} {fmt(med(to, 'nfe_mean')):>9}")
print("(medians over rounds of each process's median; ratio < 1 means Rust is faster / smaller)")
PY
