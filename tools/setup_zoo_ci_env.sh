#!/usr/bin/env bash
# The Python environment the MONAI model zoo's CI runs in, for tools/zoo_ci_check.py:
#
#   bash tools/setup_zoo_ci_env.sh ZOO        # ZOO = a model-zoo checkout or git dir -> ./.zoo-ci-venv
#   ZOO_CI_VENV=/path bash tools/setup_zoo_ci_env.sh ZOO
#
# As the zoo's workflows (premerge-cpu.yml, code-format-check.yml): Python 3.10, then `pip install -r
# requirements.txt` and `-r requirements-dev.txt` of the zoo itself (read from ZOO, not copied here), plus torch
# pinned as every bundle's metadata pins it (installed first: PyPI's Linux wheel of torch for 3.10 is its CUDA build,
# about 4.6 GB with its libraries; it runs on the CPU) and pre-commit-hooks at the zoo's rev, for the hooks.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
zoo="${1:?usage: setup_zoo_ci_env.sh ZOO (a model-zoo checkout or git dir)}"
venv="${ZOO_CI_VENV:-$repo/.zoo-ci-venv}"
# the first candidate that runs and is 3.10 (a pyenv shim for a version that is not selected fails to run)
py="${ZOO_CI_PYTHON:-}"
if [ -z "$py" ]; then
  for cand in "$(command -v python3.10 || true)" "$HOME"/.pyenv/versions/3.10*/bin/python /usr/bin/python3.10; do
    if [ -n "$cand" ] && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' 2>/dev/null; then
      py="$cand"; break
    fi
  done
fi
[ -n "$py" ] && [ -x "$py" ] || { echo "[zoo-ci] Python 3.10 not found: set ZOO_CI_PYTHON" >&2; exit 1; }
git_dir="$zoo"; [ -d "$zoo/.git" ] && git_dir="$zoo/.git"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
git --git-dir "$git_dir" show HEAD:requirements.txt > "$tmp/requirements.txt"
git --git-dir "$git_dir" show HEAD:requirements-dev.txt > "$tmp/requirements-dev.txt"
rev="$(git --git-dir "$git_dir" show HEAD:.pre-commit-config.yaml | sed -n 's/^ *rev: *v\{0,1\}\([0-9.]*\).*/\1/p' | head -1)"
torch_pin="$(grep '^torch==' "$repo/bundles/pinned_requirements.txt")"
"$py" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip wheel
"$venv/bin/python" -m pip install -q "$torch_pin"
"$venv/bin/python" -m pip install -q -r "$tmp/requirements.txt" -r "$tmp/requirements-dev.txt" "pre-commit-hooks==$rev"
echo "[zoo-ci] $venv: $("$venv/bin/python" -c 'import sys, torch, monai; print(sys.version.split()[0], "torch", torch.__version__, "monai", monai.__version__)')"
