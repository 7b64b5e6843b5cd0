"""One training per checkpoint folder, and no silent resume with other settings (issue 13 defect 5)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from common.errors import BadInputError
from common.training import ResumableCheckpointer, checkpoint_filename, list_checkpoints
from common.training.run_lock import LOCK_FILENAME, RunLock
from common.utils.bundles import REPO_ROOT
from ignite.engine import Engine

HOLD = (
    "import sys, time\n"
    "from common.training.run_lock import RunLock\n"
    "lock = RunLock(sys.argv[1]).acquire()\n"
    "print('held', flush=True)\n"
    "time.sleep(60)\n"
)


def _holder(folder) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_lock_names_the_other_process_and_dies_with_it(tmp_path):
    proc = _holder(tmp_path)
    try:
        with pytest.raises(BadInputError) as info:
            RunLock(tmp_path).acquire()
        message = str(info.value)
        assert message.startswith(f"{tmp_path}: another training is using this folder: process {proc.pid} on ")
        assert "another output folder" in message
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with RunLock(tmp_path) as lock:  # kill -9 leaves no stale lock: the kernel released it
        assert lock.held and (tmp_path / LOCK_FILENAME).is_file()
        with RunLock(tmp_path):  # in one process a new lock takes over (the earlier training has ended)
            assert not lock.held
    RunLock(tmp_path).acquire().release()


def _train(folder, lr: float, max_epochs: int, **kw):
    torch.manual_seed(0)
    net = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(net.parameters(), lr=lr)

    def step(engine, batch):
        opt.zero_grad()
        loss = net(torch.tensor([[float(batch), 1.0]])).pow(2).mean()
        loss.backward()
        opt.step()
        return loss.item()

    engine = Engine(step)
    handler = ResumableCheckpointer(
        folder, {"model": net, "optimizer": opt}, settings={"learning_rate": lr, "roi": (4, 4)}, **kw
    )
    handler.attach(engine)
    engine.run([0, 1, 2], max_epochs=max_epochs)
    return engine, handler, net


def test_resume_with_other_settings_is_refused_naming_them(tmp_path):
    _train(tmp_path, 0.1, 2)
    assert torch.load(tmp_path / checkpoint_filename(2), weights_only=True)["settings"] == {
        "learning_rate": 0.1,
        "roi": [4, 4],
    }
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(BadInputError) as info:
        _train(tmp_path, 0.01, 3)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / checkpoint_filename(2)}: this run's settings differ")
    assert "learning_rate: 0.1 in the checkpoint, 0.01 now" in message and "roi" not in message
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, nothing pruned
    engine, handler, _ = _train(tmp_path, 0.1, 3)  # same settings: resumes
    assert handler.resumed_from == tmp_path / checkpoint_filename(2) and engine.state.iteration == 9
    engine, handler, net = _train(tmp_path, 0.01, 2, resume=False)  # a new run, the old one archived
    assert handler.resumed_from is None and engine.state.iteration == 6
    assert sorted(p.name for p in (tmp_path / "previous_run_1").iterdir()) == [checkpoint_filename(e) for e in (2, 3)]
    assert [e for e, _ in list_checkpoints(tmp_path)] == [1, 2]
    _, _, scratch = _train(tmp_path / "scratch", 0.01, 2)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), scratch.state_dict().values()))


def test_a_second_training_on_the_same_folder_stops_before_touching_it(tmp_path):
    _train(tmp_path, 0.1, 1)
    proc = _holder(tmp_path)
    try:
        before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir() if p.name != LOCK_FILENAME}
        t0 = time.time()
        with pytest.raises(BadInputError, match=f"another training is using this folder: process {proc.pid}"):
            _train(tmp_path, 0.1, 2)
        assert time.time() - t0 < 30
        assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir() if p.name != LOCK_FILENAME} == before
    finally:
        proc.kill()
        proc.wait()
    engine, handler, _ = _train(tmp_path, 0.1, 2)  # the holder is gone: resumes as usual
    assert handler.resumed_from == tmp_path / checkpoint_filename(1)
