#!/usr/bin/env bash
# For sessions that get a GPU: the CUDA-only tests and the training-throughput benchmark, inside
# about 8 minutes, using the machine's own python (its PyTorch/transformers), run from the repo root.
#   bash bench/gpu_check.sh            # results also written to $OUT (or ./gpu-check-out) if set
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-check-out}"; mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
"$PY" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)' | tee -a "$OUT/gpu.txt"
status=0
echo "== training throughput (transformers vs sutra causal vs sutra document), smollm2-70m 4 x 8192"
timeout 330 "$PY" bench/train_throughput.py 2>&1 | tee "$OUT/train_throughput.log" || status=1
echo "== CUDA tests"
timeout 200 "$PY" -m pytest -q -p no:cacheprovider -m cuda tests/model/test_cuda.py 2>&1 | tee "$OUT/cuda_tests.log" || status=1
exit $status
