#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite and every docstring example, offline.
#   bash scripts/test.sh          everything (what CI runs), with the 15 slowest tests listed
#   bash scripts/test.sh --fast   the edit loop: skips tests marked slow (end-to-end CLI runs, benchmarks)
# Other arguments go to pytest, e.g. bash scripts/test.sh tests/test_methods.py -k clip
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1
args=()
for arg in "$@"; do
  if [ "$arg" = --fast ]; then args+=(-m "not slow"); else args+=("$arg"); fi
done
python -m pytest --durations=15 "${args[@]}"
