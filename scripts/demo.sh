#!/usr/bin/env bash
# The main job on its embedded default: synthesize, prepare, train, evaluate and report (~7 min on 2 CPU cores).
# Extra arguments go to `sutra demo`, e.g. scripts/demo.sh --out my-demo --scale quick
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
cd "$REPO"
"$VENV/bin/sutra" demo "$@"
