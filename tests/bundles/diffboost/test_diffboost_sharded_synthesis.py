"""DiffBoost's synthesis stage shards over torchrun ranks (``configs/multi_gpu_synthesize.json``, 2 gloo ranks on
CPU) and writes the same images and the same single ``manifest.json`` as one process; a rerun resumes per shard
(nothing is regenerated) and a missing image is written again, identical.

Demo scale: the ControlNet stage trains once (1 epoch, tiny random Stable Diffusion built by ``demo.json``), then
``train.json + synthesize.json + demo.json`` runs once alone and once under torchrun.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from common.utils.bundles import BUNDLES_DIR, bundle_run_command, bundle_run_env, bundle_run_paths

pytestmark = pytest.mark.slow

BUNDLE = BUNDLES_DIR / "diffboost"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2"]


def _run(cmd: list[str]) -> str:
    r = subprocess.run(
        cmd, cwd=BUNDLE, env=bundle_run_env(OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=900
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    return r.stdout + r.stderr


def _digests(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*.nii"))
    }


def test_two_ranks_write_the_one_process_images_and_manifest(demo_datalists, tmp_path):
    paths = bundle_run_paths(demo_datalists["busi"], tmp_path)
    _run(
        bundle_run_command(
            ["configs/train.json", "configs/train_controlnet.json", "configs/demo.json"],
            {**paths, "controlnet_epochs": 1},
        )
    )
    synth = ["configs/train.json", "configs/synthesize.json"]
    one, two = tmp_path / "one", tmp_path / "two"
    _run(bundle_run_command([*synth, "configs/demo.json"], {**paths, "synthetic_dir": one}))
    sharded = bundle_run_command(
        [*synth, "configs/multi_gpu_synthesize.json", "configs/demo.json"], {**paths, "synthetic_dir": two}
    )
    log = _run([*TORCHRUN, *sharded[1:]])
    assert "rank 0 of 2" in log and "rank 1 of 2" in log

    images = _digests(one)
    assert len(images) > 2 and _digests(two) == images  # the same files, bit for bit (edge maps included)
    m1, m2 = (json.loads((d / "manifest.json").read_text()) for d in (one, two))
    assert m1["header"] == m2["header"] and m1["images"] == m2["images"]
    assert not list(two.glob("manifest.rank*")), "rank 0 removes the shard manifests after merging"

    # resume per shard: a missing image (of either rank) is written again, the others are kept untouched; made
    # alone instead of in a batch it equals the original up to float rounding
    victim = sorted(p for p in two.rglob("*_syn*.nii"))[-1]
    victim.unlink()
    log = _run([*TORCHRUN, *sharded[1:]])
    assert "wrote 1, kept" in log and log.count("all ") >= 1  # the other slices: "all n images exist, skipped"
    name = victim.relative_to(two).as_posix()
    again = _digests(two)
    assert {k: v for k, v in again.items() if k != name} == {k: v for k, v in images.items() if k != name}
    a, b = (np.asarray(nib.load(d / name).dataobj) for d in (one, two))
    np.testing.assert_allclose(b, a, atol=1e-5)
    assert json.loads((two / "manifest.json").read_text())["images"] == m1["images"]
