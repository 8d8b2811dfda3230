#!/usr/bin/env bash
# Installs what `cargo build --release --features cuda` needs and cannot fetch offline.
#
# burn's CUDA backend compiles its kernels with LLVM (NVPTX). The crate that provides it
# (tracel-llvm-bundler 23.1.0-4, through cubecl-llvm) downloads an LLVM from a GitHub release in
# its build script, which fails on machines that reach only the package registries. This script
# puts the same LLVM, from PyPI's `mlc-llvm-static` wheels (LLVM 23.1.1 built with NVPTX), where
# that build script looks for it, and marks it installed, so the build script downloads nothing.
# CUDA itself is not needed to build: the binary loads libcuda, NVRTC, cuBLAS and NCCL at run
# time. Nothing here needs a GPU.
#
# Online, this script is not needed: the build script downloads its own LLVM.
#
# Usage: scripts/setup-cuda-build.sh [--wheels DIR]
#   --wheels DIR   use the two wheels already in DIR instead of `pip download` (fully offline)
set -euo pipefail

VERSION=23.1.1.post0
# tracel-llvm-bundler's cache directory for its LLVM 23.1.0, release 4 (dirs::data_local_dir()).
DEST="${XDG_DATA_HOME:-$HOME/.local/share}/tracel/tracel-llvm-23.1.0-4"
SENTINEL="$DEST/.tracel-llvm-installed"

wheels=""
while (($#)); do
  case "$1" in
    --wheels) wheels="$2"; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

if [ -f "$SENTINEL" ]; then
  echo "LLVM for the cuda build already installed in $DEST"
  exit 0
fi
case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) ;;
  *) echo "the mlc-llvm-static wheels used here are for Linux x86_64; on $(uname -s)-$(uname -m) let the build download its LLVM (online) or install an LLVM 23 with NVPTX into $DEST by hand" >&2; exit 1 ;;
esac

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if [ -z "$wheels" ]; then
  wheels="$work/wheels"
  echo "downloading mlc-llvm-static $VERSION (≈ 92 MB) from PyPI"
  python3 -m pip download --quiet --no-deps --only-binary=:all: \
    --platform manylinux_2_28_x86_64 --python-version 3.11 -d "$wheels" \
    "mlc-llvm-static==$VERSION" "mlc-llvm-static-extra-targets==$VERSION"
fi
n=0
for w in "$wheels"/mlc_llvm_static-"$VERSION"-*.whl "$wheels"/mlc_llvm_static_extra_targets-"$VERSION"-*.whl; do
  [ -f "$w" ] || { echo "missing wheel: $w" >&2; exit 1; }
  python3 -m zipfile -e "$w" "$work/unpacked"
  n=$((n + 1))
done

mkdir -p "$DEST"
cp -a "$work/unpacked/mlc_llvm_static/static/." "$DEST/"
chmod +x "$DEST/bin/llvm-config"
targets="$("$DEST/bin/llvm-config" --targets-built)"
case " $targets " in
  *" NVPTX "*) ;;
  *) echo "the unpacked LLVM lacks the NVPTX target (targets: $targets)" >&2; rm -rf "$DEST"; exit 1 ;;
esac
touch "$SENTINEL"
echo "installed LLVM $("$DEST/bin/llvm-config" --version) (targets: $targets) in $DEST"
echo "now: cargo build --release --features cuda   (or: cargo check --features cuda,wgpu)"
