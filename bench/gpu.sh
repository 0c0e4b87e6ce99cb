#!/usr/bin/env bash
# One-GPU training benchmark (bench/gpu.py): tokens/s, MFU and peak memory for MiniLM-L6 and BERT-base sizes and a
# 0.5B-class decoder with LoRA (Qwen2-0.5B shape, random init),
# bf16, fused AdamW, eager and torch.compile. Usage: bash bench/gpu.sh RESULTS_DIR [extra bench/gpu.py args]
set -euo pipefail
out="${1:?usage: bash bench/gpu.sh RESULTS_DIR}"
shift
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec timeout 570 python -m bench.gpu --out "$out" "$@"
