#!/usr/bin/env bash
# Every performance figure of benchmarks/RESULTS.md, one command: bash benchmarks/perf.sh [--quick]
# --quick extrapolates the slow reference methods and runs a reduced sweep (see RESULTS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export HF_HUB_OFFLINE=1 CLIP_ADAPTER_NO_PROGRESS=1
if [[ "${1:-}" == "--quick" ]]; then
  $PY benchmarks/scale.py --skip-slow
  $PY benchmarks/extraction.py --images 48 --memory 300,3000
  $PY benchmarks/sweep.py --datasets eurosat,dtd,oxford_pets --shots 1,4,16 --seeds 1 --methods clip-adapter,gda,tip-adapter-f
  $PY benchmarks/inference.py
else
  $PY benchmarks/scale.py
  $PY benchmarks/extraction.py
  $PY benchmarks/sweep.py
  $PY benchmarks/inference.py
fi
