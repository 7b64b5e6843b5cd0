#!/usr/bin/env bash
# Create (or reuse) the project virtual environment and install the `common` package with its extras.
#
#   bash tools/setup_env.sh            # -> ./.venv
#   VENV=/path/to/venv bash tools/setup_env.sh
#
# torch is installed FIRST and pinned (2.13.0, the CPU wheel on this platform's local disk; tools/venv_lib.sh): a bare
# `torch` requirement resolved by pip alone would pull a multi-GB CUDA build. Re-running is cheap: the install is
# skipped when setup.cfg has not changed since the last successful run (stamp file in the venv).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VENV:-$repo/.venv}"
py="${PYTHON:-python3}"
stamp="$venv/.diffseg-setup-stamp"
want="$(sha256sum "$repo/setup.cfg" "$repo/pyproject.toml" | sha256sum | cut -c1-16)"

# shellcheck source=tools/venv_lib.sh
source "$repo/tools/venv_lib.sh"
if venv_is_current "$venv" "$stamp" "$want" "import common, monai, torch"; then
  echo "[setup] environment $venv is up to date"
  exit 0
fi
start=$(date +%s)
venv_with_torch "$venv" "$py" setup
echo "[setup] installing the common package with extras [test,demo]"
venv_pip "$venv" install -e "$repo[test,demo]"
"$venv/bin/python" -c "import common, monai, transformers, diffusers, ignite, einops, fire, jsonschema" \
  || { echo "[setup] dependency install failed" >&2; exit 1; }
echo "$want" > "$stamp"
echo "[setup] done in $(( $(date +%s) - start )) s: $("$venv/bin/python" -c 'import torch, monai; print("torch", torch.__version__, "monai", monai.__version__)')"
