#!/usr/bin/env bash
# bench/run.sh — Rust (`mdm-prime bench`) vs the PyTorch reference (bench/torch_ref.py).
#
# For each config × workload, runs Rust and PyTorch alternately (rust, torch, rust, torch, …),
# each run in its own process so that peak RSS is per workload, appends every JSON line to
# bench/results/<date>-<commit>-<name>/results.jsonl (with machine.txt: commit, CPU, cores,
# memory, the command) and prints a table of medians and rust/torch ratios (also summary.txt).
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
NAME=""
EXTRA_ENV=()
RUST_CACHE=""
VENV="$ROOT/bench/.venv"
RUST_BIN="${MDM_PRIME_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/mdm-prime}"   # override for testing

ARGS=("$@")   # recorded in machine.txt

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
  --name NAME            last part of the results folder name (default: the workloads, e.g. train-step)
  --out FILE             results file (default: bench/results/<date>-<commit>-<name>/results.jsonl;
                         machine.txt and summary.txt go next to it)
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
        --name) NAME="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
done

STAMP="$(date +%Y%m%d-%H%M%S)"
DAY="$(date +%Y-%m-%d)"
COMMIT="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
DIRTY="no"
if [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ]; then DIRTY="yes"; fi
if [ -z "$NAME" ]; then NAME="$(echo $WORKLOADS | tr ' ' '-')"; fi
NAME="$(printf '%s' "$NAME" | tr -c 'A-Za-z0-9._-' '-')"
if [ -z "$OUT" ]; then
    # One folder per measurement: bench/results/<date>-<commit>-<name>[-2, -3, ...].
    RESULTS_DIR="$ROOT/bench/results/$DAY-$COMMIT-$NAME"
    if [ -e "$RESULTS_DIR" ]; then
        n=2
        while [ -e "$RESULTS_DIR-$n" ]; do n=$((n + 1)); done
        RESULTS_DIR="$RESULTS_DIR-$n"
    fi
    OUT="$RESULTS_DIR/results.jsonl"
else
    RESULTS_DIR="$(dirname "$OUT")"
fi
LOGDIR="$ROOT/bench/logs/$STAMP"
mkdir -p "$LOGDIR" "$RESULTS_DIR"
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

# --- machine.txt: what was measured, on what -----------------------------------------------
MACHINE_TXT="$RESULTS_DIR/machine.txt"
if [ "$OUT" != "$RESULTS_DIR/results.jsonl" ]; then MACHINE_TXT="${OUT%.jsonl}.machine.txt"; fi
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $COMMIT (git rev-parse --short HEAD; uncommitted changes to tracked files: $DIRTY)"
    if [ "$RUN_RUST" = 1 ]; then
        echo "rust binary: $RUST_BIN (modified $(date -u -r "$RUST_BIN" +%Y-%m-%dT%H:%M:%SZ 2>/dev/null || echo '?'); built by this script: $([ "$BUILD" = 1 ] && echo yes || echo 'no, --skip-build: it may predate the commit above'))"
    fi
    if [ "$RUN_TORCH" = 1 ]; then echo "torch: ${TORCH_VERSION:-?}"; fi
    echo "uname -m: $(uname -m)"
    echo "uname -sr: $(uname -sr)"
    echo "nproc: $(nproc)"
    if [ -r /proc/cpuinfo ]; then
        echo "cpu: $(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
        echo "cpu family/model: $(grep -m1 '^cpu family' /proc/cpuinfo | cut -d: -f2 | tr -d ' ')/$(grep -m1 '^model[[:space:]]*:' /proc/cpuinfo | cut -d: -f2 | tr -d ' '), $(grep -m1 '^cpu MHz' /proc/cpuinfo | cut -d: -f2 | tr -d ' ') MHz"
        echo "cpu flags (selected): $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -xE 'avx2|fma|avx512f|avx512_bf16|avx512_vnni|amx_tile' | tr '\n' ' ')"
    fi
    if [ -r /proc/meminfo ]; then echo "memory: $(grep -m1 '^MemTotal' /proc/meminfo | awk '{printf "%.1f GiB", $2 / 1048576}')"; fi
    echo "threads: $THREADS"
    echo "allocator env: arena_max=${ARENA_MAX:-unset} mmap_threshold=${MMAP_THRESHOLD:-unset}"
    echo "extra env: ${EXTRA_ENV[*]+"${EXTRA_ENV[*]}"}"
    printf 'command: bench/run.sh'
    for a in ${ARGS[@]+"${ARGS[@]}"}; do printf ' %q' "$a"; done
    echo
} >"$MACHINE_TXT"

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
SUMMARY="$RESULTS_DIR/summary.txt"
if [ "$OUT" != "$RESULTS_DIR/results.jsonl" ]; then SUMMARY="${OUT%.jsonl}.summary.txt"; fi
python3 - "$OUT" <<'PY' | tee "$SUMMARY"
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
