#!/usr/bin/env bash
# Run here (CPU machine, package index reachable) before a GPU session: fills .gpu/ (git-ignored),
# which the device run carries (`carry: [".gpu"]`, under 64 MiB) and
# bench/gpu_check.sh reads. The GPU machine reaches no index, and its image lacks lm-eval.
#   .gpu/data/stdlib-docs   a prepared dataset for the `train` section
#   .gpu/home/assets/       the tokenizer and the offline benchmark store (SUTRA_HOME there)
#   .gpu/wheels/            lm-eval 0.4.11 and the dependencies the GPU image lacks, installed
#                           there with --no-index --no-deps by the `eval` section
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
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
du -sh .gpu
