#!/usr/bin/env bash
# Create .venv (once) and install clip-adapter with its test dependencies.
#
# torch: TORCH_SPEC pins torch/torchvision (default: the pair this project's machines install from
# local disk). TORCH_INDEX says where they come from:
#   auto (default)  no NVIDIA GPU seen (no nvidia-smi, no /dev/nvidia0): PyTorch's CPU wheels
#                   (about 1 GB in .venv) when their index answers within a few seconds; otherwise,
#                   or with a GPU, the package index's default build (a CUDA build: about 6 GB in .venv)
#   cpu             the CPU wheels, or fail
#   default         the package index's default build
#   <URL>           that index
# Elsewhere, e.g.: TORCH_SPEC="torch torchvision".
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_SPEC="${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}"
TORCH_INDEX="${TORCH_INDEX:-auto}"
CPU_INDEX="https://download.pytorch.org/whl/cpu"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
PIP=(pip install --quiet --disable-pip-version-check)

has_gpu() { command -v nvidia-smi >/dev/null 2>&1 || [ -e /dev/nvidia0 ]; }

cpu_index_answers() {
  # One HEAD request, 5 s at most: an offline machine must not wait out pip's retries.
  python - "$CPU_INDEX" <<'EOF' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(urllib.request.Request(sys.argv[1] + "/torch/", method="HEAD"), timeout=5)
EOF
}

install_torch() {
  local index="$TORCH_INDEX"
  if [ "$index" = auto ]; then
    if ! has_gpu && cpu_index_answers; then index=cpu; else index=default; fi
  fi
  case "$index" in
    default) echo "setup: installing $TORCH_SPEC from the package index (with a GPU or offline: its default build)"
             "${PIP[@]}" $TORCH_SPEC ;;
    cpu) echo "setup: no NVIDIA GPU seen: installing the CPU build of $TORCH_SPEC (TORCH_INDEX=default for the other)"
         # An extra index: its "+cpu" builds sort above the same release's default build.
         "${PIP[@]}" --extra-index-url "$CPU_INDEX" $TORCH_SPEC ;;
    *) "${PIP[@]}" --index-url "$index" $TORCH_SPEC ;;
  esac
}

if ! python -c "import torch, torchvision" 2>/dev/null; then
  install_torch
fi
"${PIP[@]}" -e ".[test]"

# Headless Chromium for the report's browser tests (Debian's package; never installed from inside a test).
# SKIP_CHROMIUM=1 skips it; without root or apt-get those tests skip with the reason.
if [ "${SKIP_CHROMIUM:-0}" != 1 ] && ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "setup: installing Debian's chromium for the browser tests"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium) >/dev/null 2>&1 \
    || echo "setup: chromium could not be installed; the browser tests will skip"
fi
