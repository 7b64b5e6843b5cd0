# Shared steps of tools/setup_env.sh and tools/setup_monailabel_env.sh (sourced, not run).
#
#   venv_is_current VENV STAMP WANT "python import statement"   -> exit status 0 when nothing needs installing
#   venv_with_torch VENV PYTHON TAG                               -> creates VENV if needed, installs torch==2.13.0
#   venv_pip VENV pip-args...                                      -> quiet pip in VENV, local-folder warnings dropped
#
# torch is installed FIRST and pinned (2.13.0, the CPU wheel on this platform's local disk): a bare `torch`
# requirement resolved by pip alone would pull a multi-GB CUDA build.

venv_is_current() {
  local venv="$1" stamp="$2" want="$3" imports="$4"
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$venv/bin/python" -c "$imports" 2>/dev/null
}

venv_pip() {
  local venv="$1"
  shift
  "$venv/bin/python" -m pip --disable-pip-version-check -q "$@" 2>&1 | grep -v "^WARNING: Location" || true
}

venv_with_torch() {
  local venv="$1" py="$2" tag="$3"
  [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
  echo "[$tag] installing torch==2.13.0 first into $venv"
  venv_pip "$venv" install torch==2.13.0
  "$venv/bin/python" -W ignore -c "import torch" || { echo "[$tag] torch failed to install" >&2; return 1; }
}
