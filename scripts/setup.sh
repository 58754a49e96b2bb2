#!/usr/bin/env bash
# Create .venv (once) and install clip-adapter with its test dependencies.
# TORCH_SPEC pins torch/torchvision; the default is the pair this project's
# machines install from local disk. Elsewhere, e.g.: TORCH_SPEC="torch torchvision".
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_SPEC="${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
if ! python -c "import torch, torchvision" 2>/dev/null; then
  pip install --quiet --disable-pip-version-check $TORCH_SPEC
fi
pip install --quiet --disable-pip-version-check -e ".[test]"
