#!/usr/bin/env bash
# The README's test command: set up the environment (if needed) and run the whole test suite on CPU.
#   bash tools/run_tests.sh [extra pytest args]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VENV:-$repo/.venv}"
bash "$repo/tools/setup_env.sh"
cd "$repo"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONDONTWRITEBYTECODE=1
exec "$venv/bin/python" -m pytest tests "$@"
