"""Tests of common.training: exact resume after SIGKILL, atomic checkpoints, fallback, weights_only, RNG states.

The bundle test runs the tiny bundle in tests/helpers/resume_bundle with ``python -m monai.bundle run`` three
times (uninterrupted; killed with SIGKILL in the middle of epoch 3; resumed) on CPU with one thread per process.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from common.errors import BadInputError
from common.training import (
    EpochAverageLoss,
    LossOutput,
    ResumableCheckpointer,
    RNGState,
    checkpoint_filename,
    find_latest_checkpoint,
    find_random_states,
    list_checkpoints,
    prune_checkpoints,
    save_training_checkpoint,
    seed_everything,
    standard_train_handlers,
)
from common.utils.bundles import REPO_ROOT
from ignite.engine import Engine, Events
from ignite.handlers import EMAHandler
from monai.data import DataLoader, Dataset
from monai.transforms import Compose, RandFlipd, RandGaussianNoised, RandRotate90d, RandSpatialCropd

HELPERS = REPO_ROOT / "tests" / "helpers"
BUNDLE = HELPERS / "resume_bundle"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


# ------------------------------------------------------------------------------------------------ helpers
def _bundle_cmd(out_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        str(BUNDLE / "configs" / "train.json"),
        "--bundle_root",
        str(BUNDLE),
        "--output_dir",
        str(out_dir),
        *extra,
    ]


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    t0 = time.time()
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(
                f"process ended (rc={proc.returncode}) before {path.name} appeared:\n"
                f"{proc.stdout.read() if proc.stdout else ''}"
            )
        if time.time() - t0 > timeout:
            proc.kill()
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.1)


def _assert_same_state(a, b, where: str = "") -> None:
    """Recursive exact equality of two checkpoint entries (tensors with torch.equal)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), f"differs at {where}"
    elif isinstance(a, dict):
        assert set(a) == set(b), f"keys differ at {where}: {set(a) ^ set(b)}"
        for k in a:
            _assert_same_state(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"length differs at {where}"
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"differs at {where}: {a!r} vs {b!r}"


# -------------------------------------------------------------------------- bundle: SIGKILL and resume
def test_bundle_killed_mid_epoch_resumes_to_identical_weights(tmp_path):
    """Uninterrupted run A vs run B killed (SIGKILL) during epoch 3 after checkpoint_epoch=2, then resumed."""
    a_dir, b_dir = tmp_path / "A", tmp_path / "B"
    run_a = subprocess.Popen(
        _bundle_cmd(a_dir), cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    run_b = subprocess.Popen(
        _bundle_cmd(b_dir, "--pause_epoch", "3"),
        cwd=tmp_path,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_for(b_dir / "paused", run_b)  # B is in the middle of epoch 3 (2 of 4 iterations done)
        assert [e for e, _ in list_checkpoints(b_dir / "checkpoints")] == [1, 2]
        os.kill(run_b.pid, signal.SIGKILL)
        run_b.wait(timeout=30)
        assert run_b.returncode == -signal.SIGKILL
        out_a, _ = run_a.communicate(timeout=120)
        assert run_a.returncode == 0, out_a
    finally:
        for p in (run_a, run_b):
            if p.poll() is None:
                p.kill()
                p.wait()

    resumed = subprocess.run(_bundle_cmd(b_dir), cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    log = resumed.stdout + resumed.stderr
    assert "Resumed from" in log and "checkpoint_epoch=2.pt" in log and "epoch 2/4 done" in log
    assert "8 random transform(s)" in log  # nested Compose chain fully captured

    ck_a = torch.load(a_dir / "checkpoints" / checkpoint_filename(4), weights_only=True)
    ck_b = torch.load(b_dir / "checkpoints" / checkpoint_filename(4), weights_only=True)
    for key in ("model", "ema", "optimizer", "lr_scheduler", "engine", "rng"):
        _assert_same_state(ck_a[key], ck_b[key], key)
    assert ck_a["optimizer"]["state"]  # Adam moments exist and were compared
    _assert_same_state(
        torch.load(a_dir / "model.pt", weights_only=True),
        torch.load(b_dir / "model.pt", weights_only=True),
        "final model.pt",
    )
    assert [e for e, _ in list_checkpoints(b_dir / "checkpoints")] == [3, 4]  # n_saved=2 across the restart


# ---------------------------------------------------------------------- custom ignite engine, in-process
_DATA = [
    {
        "image": np.random.RandomState(i).rand(1, 16, 16).astype(np.float32),
        "label": (np.random.RandomState(i).rand(1, 16, 16) > 0.5).astype(np.float32),
    }
    for i in range(6)
]


class _Crash(RuntimeError):
    pass


def _train_custom(
    ckpt_dir: Path, crash_in_epoch: int | None = None, capture_rng: bool = True, max_epochs: int = 4, num_workers=0
):
    """A diffusion-style custom ignite loop (noise + random timesteps from torch's generator, dropout),
    random MONAI transforms + shuffle, Adam, cosine LR stepped by a handler attached AFTER the checkpointer,
    an EMA, and an end-of-epoch handler drawing random numbers (as a validation loader would)."""
    seed_everything(7)
    transforms = Compose(
        [
            RandFlipd(["image", "label"], prob=0.5, spatial_axis=1),
            Compose([RandRotate90d(["image", "label"], prob=0.5), RandGaussianNoised("image", prob=0.5, std=0.2)]),
            RandSpatialCropd(["image", "label"], roi_size=(12, 12), random_size=False),
        ]
    )
    loader = DataLoader(Dataset(_DATA, transforms), batch_size=2, shuffle=True, num_workers=num_workers)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Conv2d(4, 1, 3, padding=1)
    )
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max_epochs)

    def step(engine, batch):
        model.train()
        opt.zero_grad()
        x = batch["image"]
        t = torch.randint(1, 10, (x.shape[0], 1, 1, 1)).float() / 10
        loss = torch.nn.functional.mse_loss(model(x + t * torch.randn_like(x)), batch["label"])
        loss.backward()
        opt.step()
        return {"loss": loss.detach()}

    engine = Engine(step)
    ema = EMAHandler(model, momentum=0.3)
    ema.attach(engine)
    ckpt = ResumableCheckpointer(
        ckpt_dir, {"model": model, "optimizer": opt, "lr_scheduler": sched, "ema": ema}, capture_rng=capture_rng
    )
    ckpt.attach(engine)
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: sched.step())  # after the checkpointer on purpose
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: torch.rand(3))  # "validation" drawing randoms
    if crash_in_epoch is not None:

        @engine.on(Events.ITERATION_COMPLETED)
        def crash(e):
            if e.state.epoch == crash_in_epoch and e.state.iteration % e.state.epoch_length == 2:
                raise _Crash("simulated crash")

    engine.run(loader, max_epochs=max_epochs)
    return model, ema.ema_model, opt, ckpt


@pytest.mark.parametrize("num_workers", [0, 1])
def test_custom_engine_crash_and_resume_is_exact(tmp_path, num_workers):
    """num_workers=1: transforms run in a worker seeded from the restored torch generator (MONAI worker_init_fn)."""
    ref_model, ref_ema, ref_opt, _ = _train_custom(tmp_path / "ref", num_workers=num_workers)
    with pytest.raises(_Crash):
        _train_custom(tmp_path / "run", crash_in_epoch=3, num_workers=num_workers)
    assert [e for e, _ in list_checkpoints(tmp_path / "run")] == [1, 2]
    model, ema, opt, ckpt = _train_custom(tmp_path / "run", num_workers=num_workers)
    assert ckpt.resumed_from == tmp_path / "run" / checkpoint_filename(2)
    _assert_same_state(ref_model.state_dict(), model.state_dict(), "model")
    _assert_same_state(ref_ema.state_dict(), ema.state_dict(), "ema")
    _assert_same_state(ref_opt.state_dict(), opt.state_dict(), "optimizer")


def test_without_rng_capture_resume_differs(tmp_path):
    """Control: the exactness above is due to the saved random states (the test can fail)."""
    ref_model, *_ = _train_custom(tmp_path / "ref", capture_rng=False)
    with pytest.raises(_Crash):
        _train_custom(tmp_path / "run", crash_in_epoch=3, capture_rng=False)
    model, *_ = _train_custom(tmp_path / "run", capture_rng=False)
    assert not all(torch.equal(a, b) for a, b in zip(ref_model.state_dict().values(), model.state_dict().values()))


# ----------------------------------------------------------------------------------- atomic checkpoints
def test_sigkill_during_checkpoint_save_keeps_previous(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, str(HELPERS / "kill_during_save.py"), str(tmp_path)],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_for(tmp_path / "saving", proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".checkpoint_epoch=2.")]
    assert leftovers, "the killed save should have left its temp file (proving it was mid-save)"
    assert not (tmp_path / checkpoint_filename(2)).exists()
    assert find_latest_checkpoint(tmp_path) == tmp_path / checkpoint_filename(1)
    ck = torch.load(tmp_path / checkpoint_filename(1), weights_only=True)
    assert ck["epoch"] == 1 and torch.equal(ck["model"]["w"], torch.zeros(256))

    # a resuming checkpointer loads epoch 1 and removes the stale temp file
    holder = _Holder()
    engine = Engine(lambda e, b: None)
    handler = ResumableCheckpointer(tmp_path, {"model": holder}, capture_rng=False)
    handler.attach(engine)
    engine.run([0, 1], max_epochs=2)
    assert handler.resumed_from == tmp_path / checkpoint_filename(1)
    assert engine.state.epoch == 2 and torch.equal(holder.state["w"], torch.zeros(256))
    assert not any(p.name.startswith(".checkpoint_epoch=") for p in tmp_path.iterdir())
    assert [e for e, _ in list_checkpoints(tmp_path)] == [1, 2]


class _Holder:
    """Minimal stateful object holding a state dict (stands in for a model in the checkpoint tests)."""

    def __init__(self):
        self.state = {"w": torch.full((256,), -1.0)}

    def state_dict(self):
        return self.state

    def load_state_dict(self, sd):
        self.state = dict(sd)


def _tiny_engine():
    return Engine(lambda e, b: {"loss": torch.tensor(float(b))}), torch.nn.Linear(2, 1)


def test_exception_during_save_keeps_previous(tmp_path, monkeypatch):
    save_training_checkpoint(tmp_path / checkpoint_filename(1), {"model": {"w": torch.zeros(3)}, "epoch": 1})

    def failing_save(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"PK\x03\x04 half a zip")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="No space left"):
        save_training_checkpoint(tmp_path / checkpoint_filename(2), {"model": {"w": torch.ones(3)}, "epoch": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == [checkpoint_filename(1)]


# ------------------------------------------------------------------------------- fallback / bad checkpoints
def _run_resume(ckpt_dir: Path, net: torch.nn.Module, max_epochs: int = 5):
    engine = Engine(lambda e, b: {"loss": torch.tensor(0.0)})
    handler = ResumableCheckpointer(ckpt_dir, {"model": net}, capture_rng=False, n_saved=5)
    handler.attach(engine)
    engine.run([0, 1], max_epochs=max_epochs)
    return engine, handler


def _write_epoch(ckpt_dir: Path, epoch: int, value: float):
    net = torch.nn.Linear(2, 1)
    torch.nn.init.constant_(net.weight, value)
    save_training_checkpoint(
        ckpt_dir / checkpoint_filename(epoch),
        {
            "model": net.state_dict(),
            "epoch": epoch,
            "engine": {"epoch_length": 2, "iteration": 2 * epoch, "max_epochs": 5},
        },
    )


def test_corrupt_latest_falls_back_to_previous_with_warning(tmp_path, caplog):
    _write_epoch(tmp_path, 1, 1.0)
    _write_epoch(tmp_path, 2, 2.0)
    latest = tmp_path / checkpoint_filename(2)
    latest.write_bytes(latest.read_bytes()[:100])  # truncated
    net = torch.nn.Linear(2, 1)
    with pytest.warns(RuntimeWarning, match=r"checkpoint_epoch=2\.pt.*truncated or corrupt"):
        engine, handler = _run_resume(tmp_path, net, max_epochs=1)
    assert handler.resumed_from == tmp_path / checkpoint_filename(1)
    assert torch.equal(net.weight, torch.ones(1, 2)) and engine.state.epoch == 1


def test_no_loadable_checkpoint_raises(tmp_path):
    (tmp_path / checkpoint_filename(1)).write_text("garbage")
    (tmp_path / checkpoint_filename(2)).write_bytes(b"")
    with pytest.raises(BadInputError) as info, pytest.warns(RuntimeWarning, match="trying the previous one"):
        _run_resume(tmp_path, torch.nn.Linear(2, 1))
    msg = str(info.value)
    assert str(tmp_path) in msg and "none of the 2 checkpoint(s) can be loaded" in msg
    assert "checkpoint_epoch=1.pt (not a PyTorch checkpoint file" in msg
    assert "checkpoint_epoch=2.pt (checkpoint file is empty" in msg


def test_checkpoint_of_another_network_is_rejected(tmp_path):
    _write_epoch(tmp_path, 1, 1.0)
    with pytest.raises(BadInputError) as info:
        _run_resume(tmp_path, torch.nn.Linear(3, 1))
    assert "checkpoint_epoch=1.pt" in str(info.value) and "'weight': checkpoint (1, 2) vs network (1, 3)" in str(
        info.value
    )


def test_checkpoint_beyond_max_epochs_is_rejected(tmp_path):
    _write_epoch(tmp_path, 3, 1.0)
    with pytest.raises(BadInputError, match=r"checkpoint_epoch=3\.pt: checkpoint is at epoch 3 but max_epochs is 2"):
        _run_resume(tmp_path, torch.nn.Linear(2, 1), max_epochs=2)


def test_resume_keeps_configured_max_epochs_and_continues(tmp_path):
    _write_epoch(tmp_path, 2, 3.0)
    net = torch.nn.Linear(2, 1)
    engine, handler = _run_resume(tmp_path, net, max_epochs=5)
    assert engine.state.epoch == 5 and engine.state.max_epochs == 5 and engine.state.iteration == 10
    assert [e for e, _ in list_checkpoints(tmp_path)] == [2, 3, 4, 5]


def test_checkpoint_loads_with_weights_only(tmp_path):
    engine, net = _tiny_engine()
    opt = torch.optim.Adam(net.parameters())
    ds = Dataset([{"x": np.zeros(3, np.float32)}] * 2, Compose([RandGaussianNoised("x", prob=1.0)]))
    ResumableCheckpointer(tmp_path, {"model": net, "optimizer": opt}, rng_sources=[ds]).attach(engine)
    engine.run([0, 1], max_epochs=1)
    ck = torch.load(tmp_path / checkpoint_filename(1), weights_only=True)  # numpy RNG arrays were converted
    assert set(ck) >= {"format", "epoch", "iteration", "engine", "rng", "model", "optimizer"}
    keys = ck["rng"]["global"]["numpy"][1]
    assert isinstance(keys, torch.Tensor) and keys.shape == (624,)
    assert len(ck["rng"]["transforms"]) == 3  # Compose, RandGaussianNoised and its array transform
    # MONAI's own loader reads the {"model": ...} entry of a training checkpoint
    from monai.handlers import CheckpointLoader

    net2 = torch.nn.Linear(2, 1)
    CheckpointLoader(str(tmp_path / checkpoint_filename(1)), {"model": net2})(Engine(lambda e, b: None))
    assert torch.equal(net2.weight, net.weight)


def test_keep_last_n_and_latest_by_epoch_number(tmp_path):
    for e in (1, 2, 9, 10):
        save_training_checkpoint(tmp_path / checkpoint_filename(e), {"epoch": e})
    (tmp_path / "checkpoint_epoch=11.pt.bak").write_text("not a checkpoint name")
    assert find_latest_checkpoint(tmp_path) == tmp_path / checkpoint_filename(10)  # 10 > 9 (not string order)
    removed = prune_checkpoints(tmp_path, keep=2)
    assert sorted(p.name for p in removed) == [checkpoint_filename(1), checkpoint_filename(2)]
    assert [e for e, _ in list_checkpoints(tmp_path)] == [9, 10]
    assert find_latest_checkpoint(tmp_path / "missing") is None


# -------------------------------------------------------------------------------------------- RNG states
def test_rng_state_restores_transforms_and_globals():
    seed_everything(3)
    gen = torch.Generator().manual_seed(5)
    t = Compose([RandFlipd("x", prob=0.5), Compose([RandGaussianNoised("x", prob=1.0)])])
    t.set_random_state(11)
    found = find_random_states({"train": t, "gen": gen})
    assert "gen" in found and "train.transforms[1].transforms[0]" in found
    rng = RNGState({"train": t, "gen": gen})
    state = rng.state_dict()
    x = {"x": np.zeros((1, 4, 4), np.float32)}

    def draw():
        return (t(dict(x))["x"].clone(), torch.rand(2), np.random.rand(), torch.randint(0, 100, (3,), generator=gen))

    first = draw()
    rng.load_state_dict(state)
    again = draw()
    assert all(torch.equal(torch.as_tensor(a), torch.as_tensor(b)) for a, b in zip(first, again))
    rng.load_state_dict(state)
    draw()
    assert not torch.equal(torch.as_tensor(draw()[0]), torch.as_tensor(first[0]))  # states do advance


def test_seed_everything_is_reproducible():
    seed_everything(123)
    a = (torch.rand(3), np.random.rand(3))
    seed_everything(123)
    b = (torch.rand(3), np.random.rand(3))
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert torch.are_deterministic_algorithms_enabled()
    seed_everything(123, deterministic=False)
    assert not torch.are_deterministic_algorithms_enabled()


# ----------------------------------------------------------------------------------------------- handlers
def test_standard_handlers_log_iteration_and_epoch_loss(tmp_path, caplog):
    losses = iter([1.0, 3.0, 5.0, 7.0])
    net = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)

    def step(engine, batch):
        opt.step()
        return [{"loss": torch.tensor(next(losses))}]  # MONAI-style decollated output

    engine = Engine(step)
    for h in standard_train_handlers(log_dir=str(tmp_path / "tb"), lr_scheduler=sched, progress_bar=True):
        h.attach(engine)
    with caplog.at_level(logging.INFO):
        engine.run([0, 1], max_epochs=2)
    assert engine.state.metrics["train_loss_epoch"] == pytest.approx(6.0)  # mean of epoch 2: (5 + 7) / 2
    assert sched.get_last_lr() == [0.25]
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert LossOutput("loss_g")({"loss_g": torch.tensor([2.0, 4.0])}) == 3.0 and LossOutput()(1.5) == 1.5
    e2 = Engine(lambda e, b: {"loss": torch.tensor(2.0)})
    EpochAverageLoss("l").attach(e2)
    e2.run([0], max_epochs=1)
    assert e2.state.metrics["l"] == 2.0


def test_reporting_handlers_only_on_rank_zero(tmp_path):
    """Under torchrun the non-zero ranks drop StatsHandler / TensorBoardStatsHandler / the progress bar (one log and
    one TensorBoard event file per run); every other handler, e.g. a CheckpointLoader MONAI Label puts first, stays."""
    from common.training import EpochAverageLoss, ProgressBarHandler, handlers_for_this_rank
    from monai.handlers import CheckpointLoader, LrScheduleHandler, StatsHandler, TensorBoardStatsHandler

    net = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    loader = CheckpointLoader(load_path="x.pt", load_dict={"model": net})
    lr = LrScheduleHandler(torch.optim.lr_scheduler.StepLR(opt, 1))
    stats, tb = StatsHandler(), TensorBoardStatsHandler(log_dir=str(tmp_path))
    avg, bar = EpochAverageLoss("loss_epoch"), ProgressBarHandler()
    handlers = [loader, avg, lr, stats, tb, bar]
    assert handlers_for_this_rank(handlers, rank=0) == handlers
    assert handlers_for_this_rank(handlers, rank=1) == [loader, avg, lr]
    assert handlers_for_this_rank(handlers) == handlers  # no process group: rank 0
    assert handlers_for_this_rank(None, rank=3) == []


def test_tensorboard_event_file_only_on_rank_zero(tmp_path, monkeypatch):
    """MONAI's TensorBoardStatsHandler creates its event file when constructed; on a rank > 0 ours writes none."""
    import common.training.handlers as handlers_module
    from common.training import RankZeroTensorBoardStatsHandler

    RankZeroTensorBoardStatsHandler(log_dir=str(tmp_path / "rank0")).close()
    assert list((tmp_path / "rank0").glob("events.out.tfevents.*"))
    monkeypatch.setattr(handlers_module, "process_rank", lambda: 1)
    h = RankZeroTensorBoardStatsHandler(log_dir=str(tmp_path / "rank1"), tag_name="loss", output_transform=lambda x: x)
    engine = Engine(lambda e, b: 0.5)
    h.attach(engine)
    engine.run([0, 1], max_epochs=1)  # the null writer takes the scalars
    h.close()
    assert not (tmp_path / "rank1").exists() or not list((tmp_path / "rank1").glob("*"))


def test_new_training_data_start_a_new_run_and_archive_the_old_checkpoints(tmp_path, caplog):
    """The same command on the same data resumes; on other data (MONAI Label training again after new labels) a new
    run starts from the weights the network was given, and the old run's checkpoints move to previous_run_1/."""
    from common.training.resume import training_data_fingerprint
    from monai.data import DataLoader, Dataset

    def run(cases, max_epochs, net, folder=tmp_path, **kw):
        torch.manual_seed(0)
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        data = [{"case_id": c, "x": [float(i), 1.0]} for i, c in enumerate(cases)]
        loader = DataLoader(Dataset(data), batch_size=1)

        def step(engine, batch):
            opt.zero_grad()
            loss = net(torch.stack(batch["x"], 1).float()).pow(2).mean()
            loss.backward()
            opt.step()
            return loss.item()

        engine = Engine(step)
        handler = ResumableCheckpointer(folder, {"model": net, "optimizer": opt}, **kw)
        handler.attach(engine)
        engine.run(loader, max_epochs=max_epochs)
        return engine, handler

    net = torch.nn.Linear(2, 1)
    engine, _ = run(["a", "b"], 2, net)
    fp = training_data_fingerprint(engine)
    assert fp["cases"] == 2 and torch.load(tmp_path / checkpoint_filename(2), weights_only=True)["data"] == fp
    engine, h = run(["a", "b"], 3, torch.nn.Linear(2, 1))  # same data: resumes at epoch 2
    assert h.resumed_from == tmp_path / checkpoint_filename(2) and engine.state.iteration == 6
    given = torch.nn.Linear(2, 1)
    start = {k: v.clone() for k, v in given.state_dict().items()}
    with caplog.at_level(logging.WARNING):
        engine, h = run(["a", "b", "c"], 2, given)  # other data, max_epochs below the old run's 3: no error
    assert h.resumed_from is None and engine.state.epoch == 2 and engine.state.iteration == 6
    assert "trained on other data (2 case(s), now 3)" in caplog.text
    assert sorted(p.name for p in (tmp_path / "previous_run_1").iterdir()) == [checkpoint_filename(e) for e in (2, 3)]
    assert [e for e, _ in list_checkpoints(tmp_path)] == [1, 2]
    fresh = torch.nn.Linear(2, 1)
    fresh.load_state_dict(start)
    run(["a", "b", "c"], 2, fresh, folder=tmp_path / "elsewhere")  # the same run without any old checkpoint
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in given.state_dict().items())  # it trained from `given`
    engine, h = run(["a"], 3, torch.nn.Linear(2, 1), restart_on_new_data=False)  # opt out: resumes regardless
    assert h.resumed_from == tmp_path / checkpoint_filename(2)


def test_data_fingerprint_is_stable_and_content_based(tmp_path):
    """Same items -> same fingerprint in any process and mount point (absolute paths count by file name); arrays count
    by content (a one-pixel change is new data); an item with an object of no stable form gives no fingerprint."""
    import numpy as np
    from common.training.resume import training_data_fingerprint
    from monai.data import DataLoader, Dataset

    def fp(data):
        engine = Engine(lambda e, b: None)
        engine.data_loader = DataLoader(Dataset(data), batch_size=1)
        return training_data_fingerprint(engine)

    a = [{"case_id": "c1", "image": "/mnt/a/img/c1.png", "text": "x"}]
    moved = [{"case_id": "c1", "image": "/scratch/b/img/c1.png", "text": "x"}]
    assert fp(a) == fp(moved) and fp(a)["cases"] == 1
    assert fp(a) != fp([{**a[0], "text": "y"}])
    img = np.zeros((40, 40), np.float32)
    other = img.copy()
    other[7, 9] = 1.0
    assert fp([{"image": img}]) == fp([{"image": img.copy()}]) != fp([{"image": other}])
    assert fp([{"image": object()}]) is None
