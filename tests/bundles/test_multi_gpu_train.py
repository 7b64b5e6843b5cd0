"""Every bundle's ``configs/multi_gpu_train.json`` trains under ``torchrun --nproc_per_node=2`` (gloo, CPU).

Issue 8 ("Several GPUs"): the overlay on ``train.json`` wraps the network(s) in DDP, shards the data with
``DistributedSampler``, lets rank 0 alone write checkpoints, and picks the backend by device (nccl on GPU, gloo on
CPU). This file runs the real launch command of the model zoo (the model zoo's multi-GPU command, https://github.com/Project-MONAI/model-zoo/blob/dev/CONTRIBUTING.md)::

    python -m torch.distributed.run --standalone --nnodes=1 --nproc_per_node=2 -m monai.bundle run \
        --config_file "['configs/train.json','configs/multi_gpu_train.json','configs/demo.json']" \
        --meta_file configs/metadata.json ...

on tiny synthetic datasets in the official layouts (written once per session with ``common.data.synthetic`` and the
registered converters, as ``tools/demo.py prepare_demo_data`` does, at the smallest sizes), and checks: exit code 0,
both ranks ran, one set of checkpoints and one final model written by rank 0 only, the final model loads into the
bundle's ``network_def``. For the fastest bundle (TextDiffSeg) it also SIGKILLs the torchrun process group after the
first epoch checkpoint exists and checks that the same command resumes from it and finishes.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from common.training.run_lock import LOCK_FILENAME
from common.utils.bundles import BUNDLES_DIR, bundle_run_command, bundle_run_env, bundle_run_paths, bundle_scripts

pytestmark = pytest.mark.slow

RUN_TIMEOUT_S = 240


@dataclass(frozen=True)
class BundleCase:
    """How one bundle is run here and what its training run must leave in ``ckpt_dir``."""

    name: str
    dataset: str
    overrides: dict[str, str]
    checkpoint_subdir: str
    final_model: str
    extra_models: tuple[str, ...] = field(default=())
    train_config: str = "train.json"  # the stage's config; multi_gpu_train.json and demo.json go on top
    label: str = ""  # test id (default: the bundle name)
    ignored_outputs: tuple[str, ...] = ("feature_cache",)  # top-level ckpt_dir entries not checked
    model_key: str = "model"  # the network's entry in the resume checkpoints (the final model file uses "model")

    @property
    def id(self) -> str:
        return self.label or self.name

    @property
    def stage_configs(self) -> list[str]:
        """The training stage's configs: ``train.json``, with the stage stacked on it (DiffBoost's ControlNet)."""
        stage = [] if self.train_config == "train.json" else [f"configs/{self.train_config}"]
        return ["configs/train.json", *stage]

    @property
    def configs(self) -> list[str]:
        return [*self.stage_configs, "configs/multi_gpu_train.json", "configs/demo.json"]


CASES = [
    # TextDiff: also the validation CheckpointSaver's best model (rank 0 only: val_handlers None on rank 1).
    BundleCase("textdiff", "monuseg", {"max_epochs": "1"}, "checkpoints", "model_last.pt", ("model.pt",)),
    # cDAL: drop_last=True, batch 4 > the 2 cases a rank gets from the 3-case demo split -> batch 2.
    BundleCase("cdal", "monuseg", {"max_epochs": "1", "batch_size": "2"}, "checkpoints", "model.pt"),
    BundleCase("textdiffseg", "msd", {"max_epochs": "1", "save_interval": "1"}, "checkpoints", "model.pt"),
    # DiffBoost stage (d) needs the synthesis stage's output; the multi-GPU overlay trains stage (d) only, so the
    # baseline (use_synthetic False) is the variant that runs on its own.
    BundleCase(
        "diffboost", "busi", {"max_epochs": "1", "use_synthetic": "False"}, "checkpoints_baseline", "model_baseline.pt"
    ),
    # DiffBoost stage (b), the ControlNet fine-tune, with the same overlay (demo: a tiny random SD built in ckpt_dir)
    BundleCase(
        "diffboost",
        "busi",
        {"controlnet_epochs": "1"},
        "checkpoints_controlnet",
        "controlnet.pt",
        train_config="train_controlnet.json",
        label="diffboost-controlnet",
        ignored_outputs=("feature_cache", "tiny_sd"),
        model_key="controlnet",
    ),
]


def torchrun_command(case: BundleCase, datalist: Path, out: Path, **extra: str) -> list[str]:
    """The zoo's 2-process launch of ``train.json + multi_gpu_train.json + demo.json`` with test overrides.

    ``--tee 3`` makes torchrun prefix every line of rank r's output with ``[default<r>]:``.
    """
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2"]
    overrides = {**bundle_run_paths(datalist, out), **case.overrides, **extra}
    cmd = [*torchrun, "--tee", "3", *bundle_run_command(case.configs, overrides)[1:]]
    return cmd


def child_env() -> dict[str, str]:
    """Offline, single-threaded children that import this repository's ``common``."""
    env = bundle_run_env(OMP_NUM_THREADS="1")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def start(cmd: list[str], bundle: Path, log: Path) -> subprocess.Popen:
    """Start ``cmd`` in ``bundle`` in its own process group (so a kill reaches torchrun and both workers)."""
    with open(log, "w") as fh:
        return subprocess.Popen(
            cmd, cwd=bundle, stdout=fh, stderr=subprocess.STDOUT, env=child_env(), start_new_session=True
        )


def descendants(pid: int) -> list[int]:
    """All descendant process ids of ``pid`` (Linux ``/proc/<pid>/task/<tid>/children``)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError):
                kids = [int(x) for x in (task / "children").read_text().split()]
                found += kids
                todo += kids
    return found


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL torchrun's process group and the workers' groups (torch elastic starts each worker in its own
    session, so killing torchrun's group alone would leave the workers training as orphans)."""
    pids = descendants(proc.pid)
    groups = {proc.pid}
    for pid in pids:
        with contextlib.suppress(OSError):
            groups.add(os.getpgid(pid))
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while (alive := [p for p in pids if is_running(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive, f"processes of the killed run are still alive: {alive}"


def is_running(pid: int) -> bool:
    """``pid`` exists and is not a zombie."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def run_to_end(cmd: list[str], bundle: Path, log: Path) -> tuple[int, str]:
    proc = start(cmd, bundle, log)
    try:
        rc = proc.wait(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        pytest.fail(f"torchrun did not finish in {RUN_TIMEOUT_S} s; log tail:\n{log.read_text()[-3000:]}")
    return rc, log.read_text(errors="replace")


def rank_lines(text: str, rank: int, pattern: str) -> list[str]:
    """Lines of ``rank``'s output (torchrun ``--tee`` prefix) that match ``pattern``."""
    return [ln for ln in text.splitlines() if ln.startswith(f"[default{rank}]:") and re.search(pattern, ln)]


def all_files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def load_final_model(case: BundleCase, path: Path, ckpt_dir: Path | None = None) -> int:
    """Build the stage's ``network_def`` (its train config + demo.json, ``ckpt_dir`` of the run) and load ``path``
    strictly; return #params."""
    from common.io.checkpoints import load_network_weights
    from monai.bundle import ConfigParser

    bundle = BUNDLES_DIR / case.name
    scope = bundle_scripts(case.name) if (bundle / "scripts").is_dir() else contextlib.nullcontext(bundle)
    with scope:
        parser = ConfigParser()
        parser.read_config([str(bundle / c) for c in [*case.stage_configs, "configs/demo.json"]])
        parser["bundle_root"] = str(bundle)
        if ckpt_dir is not None:
            parser["ckpt_dir"] = str(ckpt_dir)
        net = parser.get_parsed_content("network_def", instantiate=True)
        before = {k: v.clone() for k, v in net.state_dict().items()}
        load_network_weights(net, path, strict=True)
        saved = torch.load(path, map_location="cpu", weights_only=True)
        saved = saved["model"] if isinstance(saved.get("model"), dict) else saved  # ignite saves a lone object bare
        for k, v in net.state_dict().items():
            assert torch.equal(v, saved[k]), f"{path}: {k} not loaded"
        assert any(not torch.equal(before[k], v) for k, v in saved.items()), f"{path}: weights equal a fresh init"
        return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_overlay_picks_gloo_without_cuda(case: BundleCase) -> None:
    """``dist_backend`` of the merged configs is gloo on a CPU-only machine (nccl where CUDA is available)."""
    from monai.bundle import ConfigParser

    bundle = BUNDLES_DIR / case.name
    parser = ConfigParser()
    parser.read_config([str(bundle / c) for c in case.configs])
    expected = "nccl" if torch.cuda.is_available() else "gloo"
    assert parser.get_parsed_content("dist_backend") == expected
    assert "dist.init_process_group(backend=@dist_backend)" in " ".join(parser["initialize"])


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_torchrun_two_ranks_train(case: BundleCase, demo_datalists: dict[str, Path], tmp_path: Path) -> None:
    """2-process gloo training: exit 0, both ranks train, rank 0 alone writes one checkpoint set + final model."""
    out = tmp_path / "run"
    cmd = torchrun_command(case, demo_datalists[case.dataset], out)
    rc, text = run_to_end(cmd, BUNDLES_DIR / case.name, tmp_path / "torchrun.log")
    assert rc == 0, f"exit {rc}; log tail:\n{text[-4000:]}"
    for rank in (0, 1):  # both workers built the workflow and ran the trainer to the end
        assert rank_lines(text, rank, r"Epoch\[1\] Complete"), f"rank {rank} did not finish epoch 1:\n{text[-3000:]}"
        assert rank_lines(text, rank, r"Engine run finished"), f"rank {rank} did not finish:\n{text[-3000:]}"
    assert len(rank_lines(text, 0, r"Saved checkpoint .*checkpoint_epoch=1\.pt")) == 1
    assert not rank_lines(text, 1, r"Saved checkpoint|Saved the final"), "rank 1 wrote a checkpoint"
    models = out / "models"
    expected = {f"{case.checkpoint_subdir}/{n}" for n in ("checkpoint_epoch=1.pt", LOCK_FILENAME)}  # rank 0's lock
    expected |= {case.final_model, *case.extra_models}
    assert {f for f in all_files(models) if not f.startswith(case.ignored_outputs)} == expected
    ckpt = torch.load(models / case.checkpoint_subdir / "checkpoint_epoch=1.pt", map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == 1
    assert not any(k.startswith("module.") for k in ckpt[case.model_key]), (
        "DDP wrapper prefix leaked into the checkpoint"
    )
    for name in (case.final_model, *case.extra_models):
        assert load_final_model(case, models / name, models) > 0
    # rank 0 alone reports: one process wrote TensorBoard event files (events.out.tfevents.<time>.<host>.<pid>.<n>)
    writers = {p.name.split(".")[-2] for p in (out / "eval").rglob("events.out.tfevents.*")}
    assert len(writers) == 1, f"TensorBoard event files from {len(writers)} processes: {sorted(writers)}"
    assert not rank_lines(text, 1, r" - INFO - Epoch: 1/1, Iter: "), "rank 1 printed StatsHandler lines"


def test_torchrun_resumes_after_kill(demo_datalists: dict[str, Path], tmp_path: Path) -> None:
    """SIGKILL of the torchrun process group after epoch 1's checkpoint; the same command resumes and finishes."""
    case = next(c for c in CASES if c.name == "textdiffseg")  # the fastest bundle here
    max_epochs = 8
    out = tmp_path / "run"
    cmd = torchrun_command(case, demo_datalists[case.dataset], out, max_epochs=str(max_epochs))
    bundle = BUNDLES_DIR / case.name
    ckpt_dir = out / "models" / case.checkpoint_subdir
    first_log = tmp_path / "first.log"
    proc = start(cmd, bundle, first_log)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    try:
        while not (ckpt_dir / "checkpoint_epoch=1.pt").is_file():
            assert proc.poll() is None, f"exit {proc.returncode} before epoch 1:\n{first_log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "no epoch-1 checkpoint in time"
            time.sleep(0.05)
    finally:
        kill_group(proc)
    assert proc.returncode == -signal.SIGKILL, f"torchrun was not killed (exit {proc.returncode})"
    assert not (out / "models" / case.final_model).exists(), "the run finished before the kill: nothing to resume"
    done = sorted(
        int(m.group(1)) for p in ckpt_dir.glob("checkpoint_epoch=*.pt") if (m := re.search(r"epoch=(\d+)\.pt$", p.name))
    )
    assert done and done[-1] < max_epochs
    last = done[-1]

    rc, text = run_to_end(cmd, bundle, tmp_path / "second.log")
    assert rc == 0, f"exit {rc}; log tail:\n{text[-4000:]}"
    for rank in (0, 1):
        resumed = rank_lines(text, rank, rf"Resumed from .*checkpoint_epoch={last}\.pt: epoch {last}/{max_epochs} done")
        assert resumed, f"rank {rank} did not resume from epoch {last}:\n{text[-3000:]}"
        assert not rank_lines(text, rank, r"SupervisedTrainer - INFO - Epoch\[1\] Complete"), "epoch 1 re-run"
        assert rank_lines(text, rank, rf"SupervisedTrainer - INFO - Epoch\[{last + 1}\] Complete")
        assert rank_lines(text, rank, rf"SupervisedTrainer - INFO - Epoch\[{max_epochs}\] Complete")
    ckpt = torch.load(ckpt_dir / f"checkpoint_epoch={max_epochs}.pt", map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == max_epochs
    assert load_final_model(case, out / "models" / case.final_model) > 0


def test_torchrun_on_other_data_starts_a_new_run(demo_datalists: dict[str, Path], tmp_path: Path) -> None:
    """The same command on a datalist with one case less: both ranks agree (rank 0's decision is broadcast) to start
    a new run instead of resuming, rank 0 archives the old checkpoints to previous_run_1/, and training finishes."""
    import json

    case = next(c for c in CASES if c.name == "textdiffseg")
    out = tmp_path / "run"
    bundle = BUNDLES_DIR / case.name
    rc, text = run_to_end(torchrun_command(case, demo_datalists["msd"], out), bundle, tmp_path / "first.log")
    assert rc == 0, text[-3000:]
    doc = json.loads(demo_datalists["msd"].read_text())
    doc["training"] = doc["training"][:-1]
    fewer = demo_datalists["msd"].parent / "datalist_fewer.json"
    fewer.write_text(json.dumps(doc))
    rc, text = run_to_end(torchrun_command(case, fewer, out), bundle, tmp_path / "second.log")
    assert rc == 0, f"exit {rc}; log tail:\n{text[-4000:]}"
    for rank in (0, 1):
        assert rank_lines(text, rank, r"trained on other data"), f"rank {rank} did not start a new run:\n{text[-3000:]}"
        assert not rank_lines(text, rank, r"Resumed from"), f"rank {rank} resumed the old run"
        assert rank_lines(text, rank, r"SupervisedTrainer - INFO - Epoch\[1\] Complete")
    ckpt_dir = out / "models" / case.checkpoint_subdir
    assert sorted(p.name for p in (ckpt_dir / "previous_run_1").iterdir()) == ["checkpoint_epoch=1.pt"]
    assert (ckpt_dir / "checkpoint_epoch=1.pt").is_file()
