#!/usr/bin/env bash
# Keeps the GPU builds from rotting: type-checks the workspace with the `cuda` and `wgpu`
# features (no GPU needed). Not in CI: it checks ≈ 490 crates (23 minutes on 2 shared cores the
# first time, seconds after). Run it after touching device code.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-cuda-build.sh                        # the NVPTX LLVM the cuda build needs, offline
export CUDARC_CUDA_VERSION="${CUDARC_CUDA_VERSION:-13000}"   # no nvcc here: name the CUDA version
cargo check --release --workspace --all-targets --features mdm-prime-cli/cuda,mdm-prime-cli/wgpu "$@"
