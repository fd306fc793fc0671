#!/usr/bin/env bash
# For sessions that get a GPU: CUDA checks in one go, using the machine's own python (its
# PyTorch/transformers), run from the repo root. Sections (default: bench tests):
#   bench    bench/train_throughput.py: transformers vs Sutra causal vs Sutra document (flex and
#            varlen kernels), 4 x 8192
#   tests    the CUDA-only tests (pytest -m cuda)
#   train    a real `sutra train` of smollm2-70m (document attention, compile) on a prepared
#            dataset, then `sutra generate` from its e1-final checkpoint; needs GPU_DATA (a
#            prepared dataset) and SUTRA_HOME holding the smollm2-tokenizer asset, since the GPU
#            machine reaches no package index. Make them here with:
#              sutra data prepare stdlib-docs --out .gpu/data/stdlib-docs --min-val-docs 24
#              mkdir -p .gpu/home/assets && cp -r ~/.cache/sutra/assets/smollm2-tokenizer .gpu/home/assets/
#   profile  bench/profile_step.py: the top CUDA kernels of a document-masked step, per kernel,
#            and the Triton source inductor wrote for them ($OUT/output_code_*.log.gz)
#   autotune the document-masked step compiled as usual, then with mode max-autotune-no-cudagraphs
#            (inductor tunes FlexAttention's and the matmuls' kernels), on the same warm GPU
#   experiments  bench/train_experiments.py: candidate speed-ups of the document-masked step
#            (FlashAttention-4's FlexAttention backend, RoPE with a hand-written backward, a bf16
#            residual stream, all three) against it; `flash` needs the FA4 stack, which
#            `FA4=1 bash bench/gpu_prepare.sh` packs in two parts, too big for one call together.
#            A session of its own (the default call and this do not fit one session's 15 minutes):
#            call 1 carries .gpu-fa4/1 with SECTIONS=none (it only unpacks, ~10 s), call 2, sent at
#            once (the machine keeps the unpacked .fa4-site/ while warm, 30 s), carries .gpu-fa4/2
#            with SECTIONS=experiments
#   eval     installs lm-eval from .gpu/wheels, runs the CUDA eval tests, then bench/eval_throughput.py
#            (Sutra adapter vs lm-eval's hf model) on smollm2-135m-shaped random weights: fp32 on the
#            five parity tasks (identical scores expected), bf16 likewise, and gsm8k generation
# Fill .gpu/ first with `bash bench/gpu_prepare.sh` (47 MiB) and carry it: [".gpu"]. A session's
# device time (15 minutes, the machine's start included) holds one call: the default sections,
# bench then tests, end within 9 minutes (their timeouts: 310 + 220 s; the bench prints each
# figure as it is measured); train, profile, autotune and eval are for a session with time left,
# e.g. SECTIONS="train profile" (240 + 2 x 150 s). Every section fits the tool's 600 s per call.
#   SECTIONS="tests train" bash bench/gpu_check.sh      # results also go to $OUT (or ./gpu-check-out)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-check-out}"; mkdir -p "$OUT"
PY="${PYTHON:-python3}"
SECTIONS="${SECTIONS:-bench tests}"
GPU_DATA="${GPU_DATA:-.gpu/data/stdlib-docs}"
export SUTRA_HOME="${SUTRA_HOME:-$PWD/.gpu/home}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1  # the GPU machine reaches no hub: fail at once, never wait on one
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
"$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "no CUDA device visible to torch: these checks need a GPU")' || exit 1
"$PY" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)' | tee -a "$OUT/gpu.txt"
# the FlashAttention-4 stack, from whichever of its two parts this call carried
for part in .gpu-fa4/*/site.tar.xz; do
  [ -f "$part" ] && mkdir -p .fa4-site && tar xJf "$part" -C .fa4-site && echo "unpacked $part into .fa4-site/"
done
if [ -d .fa4-site/flash_attn ] && [ -n "$(find .fa4-site -name '_cutlass_ir.cu13.*.so' -print -quit)" ]; then
  # the PYTHONPATH form of the .pth file that the cutlass DSL's wheel installs
  export PYTHONPATH="$PWD/.fa4-site/nvidia_cutlass_dsl/dsl_packages:$PWD/.fa4-site:$PYTHONPATH"
  echo "FlashAttention-4 stack on PYTHONPATH"
fi
status=0
section() { [[ " $SECTIONS " == *" $1 "* ]]; }
if section bench; then
  echo "== training throughput (transformers vs sutra causal vs sutra document), smollm2-70m 4 x 8192"
  timeout 310 "$PY" bench/train_throughput.py --steps 5 --warmup 2 2>&1 | tee "$OUT/train_throughput.log" || status=1
fi
if section tests; then
  echo "== CUDA tests"
  # in 4 processes when pytest-xdist is there (the GPU image has it): the tests' time is mostly
  # compilation on the CPU, and the machine has cores to spare while the GPU waits
  PARALLEL=$("$PY" -c 'import xdist' 2>/dev/null && echo "-n 4 --dist worksteal")
  timeout 220 "$PY" -m pytest -q -p no:cacheprovider -rs --durations=0 $PARALLEL -m cuda tests/model tests/train 2>&1 | tee "$OUT/cuda_tests.log" || status=1
  grep -Eq "[0-9]+ passed" "$OUT/cuda_tests.log" || { echo "no CUDA test ran"; status=1; }
fi
if section train; then
  echo "== sutra train: smollm2-70m, 4 x 8192, document attention, compiled, on $GPU_DATA"
  RUN=/tmp/sutra-gpu-run; TRAIN_EXTRA="${TRAIN_EXTRA:-}"  # not under $OUT: a cut-short run leaves GBs of checkpoints
  timeout 240 "$PY" -m sutra train recipes/smollm2-70m-sutra.yaml --set data.path="$GPU_DATA" --set run_dir="$RUN" \
    --set train.grad_accum=1 --set train.attention=document --set schedule.warmup_steps=4 \
    --set eval.every_steps=7 --set eval.max_windows=4 --set logging.every_steps=7 $TRAIN_EXTRA \
    2>&1 | tee "$OUT/train.log" || status=1
  timeout 60 "$PY" -m sutra generate "$RUN/e1-final" --prompt "The Python list" --max-new-tokens 16 2>&1 | tee -a "$OUT/train.log" || status=1
  cp "$RUN/metrics.jsonl" "$OUT/metrics.jsonl" 2>/dev/null; rm -rf "$RUN"
fi
if section profile; then
  for kernel in flex varlen; do
    echo "== profile of a document-masked step ($kernel)"
    # with the Triton source inductor generated, so the slow kernels can be read after the session
    # (torch logs the code to stderr: into its own file, not into profile.log and the call's output)
    TORCH_LOGS=output_code timeout 150 "$PY" bench/profile_step.py --attention document --document-kernel $kernel \
      2>"$OUT/output_code_$kernel.log" | tee -a "$OUT/profile.log" || status=1
    [ -f "$OUT/output_code_$kernel.log" ] && gzip -f "$OUT/output_code_$kernel.log"
  done
fi
if section autotune; then
  echo "== document-masked step: default compile vs max-autotune-no-cudagraphs"
  for mode in "" "--compile-mode max-autotune-no-cudagraphs"; do
    timeout 280 "$PY" bench/train_throughput.py --only sutra-document $mode 2>&1 | tail -2 | tee -a "$OUT/autotune.log" || status=1
  done
fi
if section experiments; then
  echo "== candidate speed-ups of the document-masked step vs the step as Sutra trains it"
  timeout 420 "$PY" bench/train_experiments.py --steps 5 --warmup 2 2>&1 | tee "$OUT/train_experiments.log" || status=1
fi
if section eval; then
  echo "== eval: CUDA eval tests, then the adapter against lm-eval's hf model"
  "$PY" -m pip install --quiet --no-index --no-deps .gpu/wheels/*.whl 2>&1 | tail -3
  timeout 90 "$PY" -m pytest -q -p no:cacheprovider -m cuda tests/eval 2>&1 | tee "$OUT/eval_tests.log" || status=1
  RANDOM_MODEL=.gpu/smollm2-135m-random  # random weights: the scores mean nothing, but both models must agree
  "$PY" -c "import sys, torch; from sutra.model.llama import Llama; from sutra.model.config import get_preset; from sutra.model.checkpoint import save_checkpoint; from sutra.tokenizer import load_tokenizer
torch.manual_seed(0); save_checkpoint(sys.argv[1], Llama(get_preset('smollm2-135m')), load_tokenizer())" "$RANDOM_MODEL" || status=1
  for args in "--dtype float32" "--dtype bfloat16" "--dtype bfloat16 --tasks gsm8k --limit 32"; do
    timeout 150 "$PY" bench/eval_throughput.py --spec "$RANDOM_MODEL" --limit 200 --batch-size 32 $args 2>&1 | grep -v "^\[Task\|it/s\]" | tail -4 | tee -a "$OUT/eval_throughput.log" || status=1
  done
fi
exit $status
