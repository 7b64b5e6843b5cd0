#!/usr/bin/env bash
# The README's main job: set up the environment (if needed), generate synthetic data, and for every bundle
# present train briefly, infer and evaluate on CPU; summary table + overlays under demo_output/.
#   bash tools/run_demo.sh [--out DIR] [--bundles NAME ...]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VENV:-$repo/.venv}"
bash "$repo/tools/setup_env.sh"
cd "$repo"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec "$venv/bin/python" tools/demo.py "$@"
