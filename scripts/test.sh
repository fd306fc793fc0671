#!/usr/bin/env bash
# The full test suite (CPU). Extra arguments go to pytest, e.g. scripts/test.sh -k tokenizer
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
cd "$REPO"
exec "$PY" -m pytest -q -ra "$@"
