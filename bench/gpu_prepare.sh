#!/usr/bin/env bash
# Run here (CPU machine, package index reachable) before a GPU session: fills .gpu/ (git-ignored),
# which the device run carries (`carry: [".gpu"]`, under 64 MiB) and
# bench/gpu_check.sh reads. The GPU machine reaches no index, and its image lacks lm-eval.
#   .gpu/data/stdlib-docs   a prepared dataset for the `train` section
#   .gpu/home/assets/       the tokenizer and the offline benchmark store (SUTRA_HOME there)
#   .gpu/wheels/            lm-eval 0.4.11 and the dependencies the GPU image lacks, installed
#                           there with --no-index --no-deps by the `eval` section
# With FA4=1 it also packs the FlashAttention-4 stack for bench/train_experiments.py's `flash`
# experiment (flash-attn-4 and its CuTe DSL compiler, 67 MB compressed, over one call's 64 MiB)
# in two parts, each carried by its own call; gpu_check.sh unpacks each into .fa4-site/, which
# the machine keeps between calls while it stays warm (30 s), so the second call must follow at once:
#   .gpu-fa4/1/             the CuTe DSL's MLIR library (48 MB)
#   .gpu-fa4/2/             the rest (19 MB)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
rm -rf .gpu/wheels  # a wheel left from an older venv beside its new version stops the --no-index install
mkdir -p .gpu/home/assets .gpu/wheels
[ -d .gpu/data/stdlib-docs ] || $PY -m sutra data prepare stdlib-docs --out .gpu/data/stdlib-docs --min-val-docs 24
for asset in smollm2-tokenizer benchmarks; do
  $PY -m sutra assets fetch "$asset" >/dev/null
  rm -rf ".gpu/home/assets/$asset" && cp -r "${SUTRA_HOME:-$HOME/.cache/sutra}/assets/$asset" .gpu/home/assets/
done
# same versions as this venv; the GPU image's python is 3.12 on x86_64
$PY -m pip download --quiet --no-deps --dest .gpu/wheels --python-version 3.12 --platform manylinux_2_28_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --only-binary=:all: \
  $($PY - <<'PY'
import importlib.metadata as m
names = ["lm-eval", "datasets", "evaluate", "dill", "multiprocess", "jsonlines", "pytablewriter", "DataProperty",
         "mbstrdecoder", "pathvalidate", "tabledata", "tcolorpy", "typepy", "chardet", "nltk", "zstandard",
         "more-itertools", "portalocker"]
print(" ".join(f"{n}=={m.version(n)}" for n in names))
PY
)
# three dependencies exist only as source: build them into wheels here (pure python)
$PY -m pip wheel --quiet --no-deps --wheel-dir .gpu/wheels rouge-score==0.1.2 sqlitedict==2.1.0 word2number==1.1
if [ "${FA4:-0}" = 1 ] && [ ! -f .gpu-fa4/2/site.tar.xz ]; then
  echo "packing the FlashAttention-4 stack (xz -9e: a few minutes)"
  rm -rf .gpu-fa4 && mkdir -p .gpu-fa4/wheels .gpu-fa4/1 .gpu-fa4/2 .gpu-fa4/site
  $PY -m pip download --quiet --no-deps --dest .gpu-fa4/wheels --python-version 3.12 --platform manylinux_2_28_x86_64 \
    --only-binary=:all: --pre flash-attn-4==4.0.0b36 quack-kernels==0.6.5 nvidia-cutlass-dsl==4.8.1 \
    nvidia-cutlass-dsl-libs-base==4.8.1 nvidia-cutlass-dsl-libs-core==4.8.1 nvidia-cutlass-dsl-libs-cu13==4.8.1 \
    apache-tvm-ffi==0.1.15.post2 torch-c-dlpack-ext==0.1.5
  # these wheels hold no scripts or data: unpacking them is installing them
  for wheel in .gpu-fa4/wheels/*.whl; do unzip -q -o "$wheel" -d .gpu-fa4/site; done
  big=$(cd .gpu-fa4/site && find . -name '_cutlass_ir.cu13.*.so')
  (cd .gpu-fa4/site && tar cf - "$big" | xz -9e -T2 --lzma2=preset=9e,dict=192MiB > ../1/site.tar.xz)
  (cd .gpu-fa4/site && tar cf - --exclude="$big" . | xz -9e -T2 > ../2/site.tar.xz)
  rm -rf .gpu-fa4/site .gpu-fa4/wheels
  du -sh .gpu-fa4/1 .gpu-fa4/2
fi
du -sh .gpu
