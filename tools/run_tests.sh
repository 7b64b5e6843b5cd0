#!/usr/bin/env bash
# The README's test command: set up the environment (if needed), check format and lint (ruff), run the whole
# test suite on CPU.
#   bash tools/run_tests.sh [extra pytest args]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VENV:-$repo/.venv}"
bash "$repo/tools/setup_env.sh"
cd "$repo"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONDONTWRITEBYTECODE=1
# format and lint first (pyproject.toml [tool.ruff]): `ruff format .` and `ruff check --fix .` repair most findings
"$venv/bin/ruff" format --check --quiet . || { echo "[tests] ruff format --check failed: run $venv/bin/ruff format ." >&2; exit 1; }
"$venv/bin/ruff" check --quiet . || { echo "[tests] ruff check failed (see above)" >&2; exit 1; }
exec "$venv/bin/python" -m pytest tests "$@"
