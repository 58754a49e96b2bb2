#!/usr/bin/env bash
# Every performance figure of benchmarks/RESULTS.md, one command: bash benchmarks/perf.sh [--quick]
# --quick extrapolates the slow reference methods and projects the sweep from seed 1 (see RESULTS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export HF_HUB_OFFLINE=1 CLIP_ADAPTER_NO_PROGRESS=1
if [[ "${1:-}" == "--quick" ]]; then
  $PY benchmarks/scale.py --skip-slow
  $PY benchmarks/prompt_scale.py
  $PY benchmarks/extraction.py --images 48 --memory 300,3000
  $PY benchmarks/sweep.py --extrapolate
  $PY benchmarks/reference_structure.py
  $PY benchmarks/inference.py --images 64
else
  $PY benchmarks/scale.py
  $PY benchmarks/prompt_scale.py
  $PY benchmarks/extraction.py
  $PY benchmarks/sweep.py
  $PY benchmarks/reference_structure.py --measure-images 64 --reference-steps 5
  $PY benchmarks/inference.py
fi
