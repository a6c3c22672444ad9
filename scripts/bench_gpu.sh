#!/usr/bin/env bash
# GPU benchmark in one command (< 5 minutes on one H100): extraction vs the bare forward loop (fp32, TF32, bf16;
# batch 256 and 512; DenseNet-BC-100 32 px, ResNet-50 224 px) and the whole post-hoc table vs one forward pass.
# Run from the repository root on a machine with a GPU and ../shared beside the checkout; the report and its CSV go
# to $OUT (the device tool's output folder) or results/. Tested on the CPU: tests/test_bench_gpu_script.py.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-results}"
export OODBENCH_CACHE="${OODBENCH_CACHE:-$(mktemp -d)}"
python scripts/bench_gpu.py --device "${DEVICE:-cuda}" --out "$out/bench_gpu.md" "$@"
