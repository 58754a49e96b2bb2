#!/usr/bin/env bash
# Set up (if needed) and run the built-in demo: no arguments, no network.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1
clip-adapter demo "$@"
