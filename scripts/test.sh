#!/usr/bin/env bash
# The full test suite (CPU). Extra arguments go to pytest, e.g. scripts/test.sh -k tokenizer
# Tests run in one pytest-xdist worker per core (at most 4; SUTRA_TEST_WORKERS=0 runs them in this
# process): much of the suite waits on subprocesses and files, so 2 workers on 2 cores take ~60 % of
# the serial time. tests/conftest.py gives each worker its share of the cores' threads.
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
cd "$REPO"
exec "$PY" -m pytest -q -ra -n "${SUTRA_TEST_WORKERS:-auto}" --maxprocesses=4 --dist worksteal "$@"
