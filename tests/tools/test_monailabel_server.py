"""Every bundle drops into a real MONAI Label server (issue 8, "MONAI Label drop-in"). Opt-in: it needs MONAI Label's
own virtual environment (``bash tools/setup_monailabel_env.sh``, ~8.5 GB, ~9 min once) and takes a few minutes::

    .venv/bin/python -m pytest tests/tools/test_monailabel_server.py --run-monailabel      # or RUN_MONAILABEL=1

``MONAILABEL_VENV`` points at another venv (default ``.venv-monailabel``); ``MONAILABEL_WEIGHTS`` at a folder with
``<bundle>/models/model.pt`` (default ``demo_output`` of ``tools/run_demo.sh``; missing weights are trained briefly).
The work is ``tools/monailabel_check.py``: the packaged bundles in the ``monaibundle`` app, ``monailabel
start_server`` on 127.0.0.1, ``/info`` and ``/infer/<bundle>`` per bundle (typed text for the text-guided ones), the
returned label files checked (shape, affine, label values, non-empty, Dice against the case's ground truth); then
per bundle a server whose datastore holds training cases, ``/train`` for one epoch with MONAI Label's defaults and
``/infer`` with the fine-tuned weights.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from common.utils.bundles import REPO_ROOT, tool_command

REPO = REPO_ROOT

pytestmark = [pytest.mark.monailabel, pytest.mark.slow]


def test_real_monailabel_server_serves_every_bundle(tmp_path: Path) -> None:
    venv = Path(os.environ.get("MONAILABEL_VENV", REPO / ".venv-monailabel"))
    if not (venv / "bin" / "monailabel").is_file():
        pytest.fail(
            f"{venv}/bin/monailabel not found: run `bash tools/setup_monailabel_env.sh` (or set MONAILABEL_VENV)"
        )
    weights = os.environ.get("MONAILABEL_WEIGHTS", str(REPO / "demo_output"))
    work = tmp_path / "check"
    r = subprocess.run(
        tool_command("monailabel_check.py", "--venv", venv, "--work", work, "--weights-from", weights),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert r.returncode == 0, f"{r.stdout[-6000:]}\n{r.stderr[-3000:]}"
    report = json.loads((work / "report.json").read_text())
    assert report["ok"] and report["info_ok"]
    done = {(c["bundle"], c["request"]) for c in report["checks"] if c["ok"]}
    assert {b for b, _ in done} == {"textdiff", "cdal", "textdiffseg", "diffboost"}
    assert ("textdiffseg", "typed prompt selects the kidney") in done
    for b in ("textdiff", "cdal", "textdiffseg", "diffboost"):  # MONAI Label's /train, then /infer with the result
        assert (b, "train 1 epoch (val_split 0.2)") in done and (b, "infer after training") in done
