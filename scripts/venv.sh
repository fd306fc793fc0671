# Create or reuse the virtualenv at .venv and install Sutra into it (sourced by demo.sh and test.sh).
# CPU machines get the CPU torch wheel; a CUDA torch that is already installed is kept.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv"
PY="$VENV/bin/python"

if [ ! -x "$PY" ]; then
  echo "sutra setup: creating $VENV"
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { echo "sutra setup: Python >= 3.10 is required" >&2; exit 1; }
  python3 -m venv "$VENV"
fi

STAMP="$VENV/.sutra-installed"
WANT="$(cat "$REPO/pyproject.toml" "$REPO/scripts/venv.sh" | sha256sum | cut -c1-16)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  export PIP_DISABLE_PIP_VERSION_CHECK=1
  if ! "$PY" -c 'import torch' 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
      echo "sutra setup: GPU found, installing torch with CUDA"
      "$PY" -m pip install -q "torch>=2.5"
    else
      # Only the CPU build: never pull a multi-GB CUDA torch onto a machine without a GPU.
      echo "sutra setup: no GPU, installing the CPU torch wheel"
      # PyPI holds no '+cpu' build (its Linux torch is the CUDA one): a wheel pip already finds
      # (a find-links directory, a mirror) is used, else PyTorch's own CPU index
      "$PY" -m pip install -q "torch==2.13.0+cpu" 2>/dev/null \
        || "$PY" -m pip install -q "torch==2.13.0+cpu" --extra-index-url "${SUTRA_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}" || {
        echo "sutra setup: no CPU torch wheel found; set SUTRA_TORCH_INDEX to a CPU wheel index, or install torch into $VENV first" >&2
        exit 1
      }
    fi
  fi
  echo "sutra setup: installing sutra and its dependencies (the first run builds llama.cpp for the local teacher server: about 5 minutes on 2 cores)"
  # the teacher is text only: llama.cpp's multimodal library (a quarter of the build) is not built
  CMAKE_ARGS="${CMAKE_ARGS:+$CMAKE_ARGS }-DLLAVA_BUILD=OFF" "$PY" -m pip install -q -e "$REPO[test,synth]"
  echo "$WANT" > "$STAMP"
fi
