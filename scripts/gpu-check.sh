#!/usr/bin/env bash
# On a machine with a CUDA GPU: every kind of model taxonlens runs, on the GPU at its precision
# (bf16 where supported), with throughput and peak GPU memory (`taxonlens bench device`):
# predict with ViT-B/16 (random weights) and tiny-clip, LMM option scoring, and one step each of
# SFT, GRPO, GRPO+TARA and Finedefics Stage I on tiny-qwen2.5-vl and on Qwen2.5-VL-3B's
# architecture with random weights. Offline; about 8 minutes at most (the timeout).
# Usage: scripts/gpu-check.sh [OUT.json]   (PYTHON=... to use another interpreter than .venv's)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
export HF_HUB_OFFLINE=1
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
fi
"$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU visible to torch ' + torch.__version__)"
timeout 480 "$PYTHON" -m taxonlens bench device --device cuda --precision auto ${1:+--out "$1"}
