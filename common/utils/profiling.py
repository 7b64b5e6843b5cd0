"""Measuring what a run costs: FLOPs, the machine's measured peak FLOP/s, peak memory, and GPU projections.

Used by ``tools/paper_scale_check.py`` and ``bench/``. Every figure is measured in the process that reports it:

- :func:`measure_peak_flops` -- the achievable dense FLOP/s of this device, as the best of a few large square matmuls
  (the ceiling a convolutional network can approach; ``peak_fraction`` divides achieved FLOP/s by it);
- :class:`FlopCount` -- ``torch.utils.flop_counter.FlopCounterMode`` as a context manager that can be entered and left
  from engine events (FLOPs of convolutions, matmuls and attention, forward and backward: what the FLOP counter
  knows; element-wise work is not counted, so memory-bound layers show up as a low peak fraction);
- :func:`peak_rss_mb` -- the process's peak resident memory (``getrusage``), :func:`current_rss_mb` its current one,
  :func:`current_pss_mb` its proportional set size (shared pages divided among the processes sharing them: the sum
  over a process and its forked DataLoader workers is their real footprint, the sum of RSS counts shared pages
  once per worker), :func:`memory_total_gb` the machine's memory;
- :func:`projected_gpu_seconds` -- a PROJECTION of the same FLOPs on an NVIDIA A100 at an assumed utilisation (fp16
  tensor-core peak 312 TFLOP/s dense, NVIDIA A100 datasheet); a projection, never a measurement.
"""

from __future__ import annotations

import os
import resource
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    "A100_FP16_PEAK_FLOPS",
    "ASSUMED_GPU_UTILISATION",
    "FlopCount",
    "current_pss_mb",
    "current_rss_mb",
    "measure_peak_flops",
    "memory_total_gb",
    "process_tree_pss_mb",
    "peak_rss_mb",
    "projected_gpu_seconds",
]

#: NVIDIA A100 (SXM) dense fp16/bf16 tensor-core peak, FLOP/s (NVIDIA A100 datasheet: 312 TFLOPS)
A100_FP16_PEAK_FLOPS = 312e12
#: utilisation assumed for the projection: mixed-precision convolutional networks typically reach 30-50 % of the
#: tensor-core peak; 0.35 is stated with every projection
ASSUMED_GPU_UTILISATION = 0.35


def measure_peak_flops(
    size: int = 2048, dtype: torch.dtype = torch.float32, seconds: float = 2.0, device: str | torch.device = "cpu"
) -> float:
    """Best FLOP/s of repeated ``size x size`` matmuls (``2 * size**3`` FLOPs each) within about ``seconds``.

    One warm-up product first (thread pool, caches); then products until ``seconds`` have passed (at least 3),
    returning the fastest. On CPU this uses all the threads torch is allowed (``torch.get_num_threads()``).
    """
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    flops = 2.0 * size**3

    def _sync() -> None:
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()

    torch.mm(a, b)
    _sync()
    best = float("inf")
    start = time.perf_counter()
    n = 0
    while n < 3 or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        torch.mm(a, b)
        _sync()
        best = min(best, time.perf_counter() - t0)
        n += 1
    return flops / best


class _GlobalOnlyTracker:
    """Stands in for ``FlopCounterMode``'s module tracker: every FLOP goes to ``"Global"``. The real tracker hooks the
    backward of every module, which breaks ``torch.autograd.grad`` (cDAL's R1 penalty) in torch 2.13."""

    parents = frozenset({"Global"})

    def __enter__(self) -> _GlobalOnlyTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class _GlobalFlopCounterMode(FlopCounterMode):
    def __init__(self) -> None:
        super().__init__(display=False)
        self.mod_tracker = _GlobalOnlyTracker()


class FlopCount:
    """FLOPs of everything torch runs between :meth:`start` and :meth:`stop` (or inside ``with``), per-module
    attribution switched off (it breaks double backward).

    ``total`` is the FLOP count (0 before the first stop). Can be started and stopped from different callbacks,
    e.g. ignite's ``ITERATION_STARTED`` / ``ITERATION_COMPLETED``; starting twice is an error.
    """

    def __init__(self) -> None:
        self._mode: FlopCounterMode | None = None
        self.total: int = 0

    def start(self) -> None:
        if self._mode is not None:
            raise RuntimeError("FlopCount already started")
        self._mode = _GlobalFlopCounterMode()
        self._mode.__enter__()

    def stop(self) -> int:
        if self._mode is None:
            raise RuntimeError("FlopCount was not started")
        mode, self._mode = self._mode, None
        mode.__exit__(None, None, None)
        self.total += int(mode.get_total_flops())
        return self.total

    @property
    def running(self) -> bool:
        return self._mode is not None

    def __enter__(self) -> FlopCount:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0


def current_rss_mb(pid: int | str = "self") -> float:
    """Current resident set size of process ``pid`` (Linux ``/proc/<pid>/status`` VmRSS), in MiB; 0 if unknown."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError):
        pass
    return 0.0


def current_pss_mb(pid: int | str = "self") -> float:
    """Proportional set size of process ``pid`` (Linux ``/proc/<pid>/smaps_rollup`` Pss), in MiB; falls back to
    :func:`current_rss_mb` where that file is missing; 0 if the process is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024.0
    except FileNotFoundError:
        return current_rss_mb(pid)
    except (OSError, ValueError):
        pass
    return 0.0


def process_tree_pss_mb(pid: int) -> float:
    """PSS of ``pid`` and all its descendants (``/proc/<pid>/task/*/children``), in MiB: the memory the tree uses."""
    total, todo, seen = 0.0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        total += current_pss_mb(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children", encoding="ascii") as f:
                    todo += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            pass
    return total


def memory_total_gb() -> float:
    """This machine's memory (``/proc/meminfo`` MemTotal), in GiB."""
    with open("/proc/meminfo", encoding="ascii") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    raise RuntimeError("/proc/meminfo has no MemTotal line")


def projected_gpu_seconds(
    flops: float, peak_flops: float = A100_FP16_PEAK_FLOPS, utilisation: float = ASSUMED_GPU_UTILISATION
) -> float:
    """PROJECTED seconds for ``flops`` on one A100 at ``utilisation`` of its fp16 tensor-core peak."""
    if not 0.0 < utilisation <= 1.0:
        raise ValueError(f"utilisation must be in (0, 1], got {utilisation}")
    return float(flops) / (peak_flops * utilisation)
