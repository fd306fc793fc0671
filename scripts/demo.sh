#!/usr/bin/env bash
# The main job on its embedded default: fetch the offline assets and complete a prompt with the teacher.
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
cd "$REPO"
"$VENV/bin/sutra" assets fetch smollm2-tokenizer smollm2-135m-instruct
"$VENV/bin/sutra" model info smollm2-70m
"$VENV/bin/sutra" generate smollm2-135m-instruct --prompt "The capital of France is" --max-new-tokens 24
