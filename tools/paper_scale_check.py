#!/usr/bin/env python
"""Run every bundle's SHIPPED paper-scale configs at the papers' sizes, here, and measure what each run costs.

    python tools/paper_scale_check.py --standins DIR --out DIR [--bundles NAME ...] [--datasets NAME ...]
        [--make-standins] [--memory-budget-gb 21] [--timeout-min 60] [--list]

For every bundle and every dataset its paper used (TextDiff MoNuSeg + QaTa; cDAL MoNuSeg + CXR + Hippocampus;
TextDiffSeg KiTS21 + LiTS + MSD Pancreas + MSD Colon; DiffBoost BUSI + MSD Spleen + MSD Prostate):

1. writes synthetic data of the real sizes in the real release layouts and converts it with the real converters
   (:mod:`common.data.paper_size`);
2. runs the shipped configs (``train.json`` / ``inference.json`` / DiffBoost's stage configs, plus the dataset overlay)
   with ONLY these overridden: paths (``dataset_dir``, ``datalist``, ``output_dir``, ``ckpt_dir``, the pretrained
   parts -> the stand-ins of ``tools/make_standins.py``), ``device`` (cpu), and an iteration cap
   (``train#trainer#max_epochs`` 1, ``train#trainer#epoch_length`` 3: a warm-up iteration, one whose FLOPs are
   counted, one that is timed without the counter); DiffBoost's synthesis is capped to
   :data:`SYNTHESIS_CAPS` (20 DDIM steps with guidance at 384^2 x 50 images per slice would take hours here) and
   reports per-step figures;
3. keeps the paper's batch size unless the run exceeds the memory budget (``--memory-budget-gb``, default 90 % of
   this machine's memory): the run is stopped and repeated with half the batch, and the record says so;
4. records per run (``OUT/paper_scale.json``, a list; ``OUT/paper_scale.md``, a table): ``bundle``, ``dataset``,
   ``config``, ``stage``, ``ok``, ``error``, ``seconds_per_iteration`` (training: the 3rd iteration) or
   ``seconds_per_case``, ``seconds_data_per_iteration``, ``peak_rss_mb`` (the largest of the main process's peak RSS
   and the sampled proportional set size of its process tree, DataLoader workers included),
   ``flops`` (per iteration / per case; ``torch.utils.flop_counter``), ``params_trainable``, ``params_frozen``,
   ``batch_size``, ``paper_batch_size``, ``input_shape``, ``peak_flops`` (this CPU, a large matmul measured in the
   same process), ``peak_fraction``, ``projected_gpu_s`` (a PROJECTION: FLOPs over one A100's fp16 peak at the
   stated utilisation, :mod:`common.utils.profiling`), ``caps``, ``log``.

Exit code 1 when any run fails. Each run is its own process (``--child``); its log is ``OUT/logs/<run>.log``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

#: the iteration cap of every training run: iteration 1 warms up, 2 is FLOP-counted, 3 is timed
TRAIN_CAP = {"train#trainer#max_epochs": 1, "train#trainer#epoch_length": 3}
#: DiffBoost synthesis caps (paper: 50 images per slice, 20 DDIM steps); figures are reported per step and image
SYNTHESIS_CAPS = {"num_synthetic": 1, "synthesis_steps": 2}


@dataclass
class Stage:
    """One run: a stage of a bundle x dataset chain (the stages of a chain share ``ckpt_dir`` and ``output_dir``)."""

    stage: str  # train | inference | synthesis | convert (cDAL authors' checkpoint) | init_weights (benches)
    configs: list[str]
    overrides: dict[str, Any] = field(default_factory=dict)
    batch_key: str | None = None
    paper_batch_size: int | None = None
    caps: dict[str, Any] = field(default_factory=dict)
    name: str = ""  # label of the stage within its chain (e.g. "controlnet"); default the stage
    train_cases: int | None = None  # run on the first N training cases only (a datalist path override)


@dataclass
class Chain:
    """The stages of one bundle on one paper dataset, run in order on the same paper-size data."""

    bundle: str
    dataset: str
    data: dict[str, Any]  # write_paper_size_dataset arguments
    standins: list[str]
    stages: list[Stage]

    @property
    def key(self) -> str:
        return f"{self.bundle}-{self.dataset}"


def _textdiff(dataset: str, overlay: list[str], n_train: int) -> Chain:
    return Chain(
        "textdiff",
        dataset,
        {"name": dataset, "n_train": n_train, "n_val": 1, "n_test": 1},
        ["adm", "bert"],
        [
            Stage("train", ["configs/train.json", *overlay], batch_key="batch_size", paper_batch_size=1),
            Stage("inference", ["configs/inference.json", *overlay]),
        ],
    )


def _cdal(dataset: str, overlay: list[str], batch: int, convert: bool = False) -> Chain:
    stages = [Stage("train", ["configs/train.json", *overlay], batch_key="batch_size", paper_batch_size=batch)]
    if convert:
        stages.append(Stage("convert", ["configs/inference.json", *overlay]))
    stages.append(Stage("inference", ["configs/inference.json", *overlay]))
    return Chain(
        "cdal", dataset, {"name": dataset, "n_train": 2 * batch, "n_test": 1}, ["cdal"] if convert else [], stages
    )


def _textdiffseg(dataset: str, overlay: str) -> Chain:
    files = [f"configs/{overlay}"]
    return Chain(
        "textdiffseg",
        dataset,
        {"name": dataset, "n_train": 2, "n_test": 1},
        ["bert"],
        [
            Stage("train", ["configs/train.json", *files], batch_key="batch_size", paper_batch_size=1),
            Stage("inference", ["configs/inference.json", *files]),
        ],
    )


def _diffboost(dataset: str, overlay: list[str], volumes: int | None) -> Chain:
    n_train = 64  # two batches of the paper's ControlNet batch of 32
    return Chain(
        "diffboost",
        dataset,
        {"name": dataset, "n_train": n_train, "n_test": 1, "volumes": volumes},
        ["sd", "hed"],
        [
            Stage(
                "train",
                ["configs/train.json", "configs/train_controlnet.json", *overlay],
                batch_key="controlnet_batch_size",
                paper_batch_size=32,
                name="controlnet",
            ),
            Stage(
                "synthesis",
                ["configs/train.json", "configs/synthesize.json", *overlay],
                caps=dict(SYNTHESIS_CAPS),
                train_cases=16,
            ),
            Stage(
                "train",
                ["configs/train.json", *overlay],
                batch_key="batch_size",
                paper_batch_size=8,
                train_cases=16,
                name="segmentation",
            ),
            Stage("inference", ["configs/inference.json", *overlay]),
        ],
    )


def all_chains() -> list[Chain]:
    """Every bundle x paper dataset of the collection, in the order they run."""
    return [
        _textdiff("monuseg", [], n_train=5),
        _textdiff("qata", ["configs/qata.json"], n_train=150),
        _cdal("monuseg", [], batch=4, convert=True),
        _cdal("cxr", ["configs/cxr.json"], batch=3),
        _cdal("hippocampus", ["configs/hippocampus.json"], batch=1),
        _textdiffseg("kits21", "kits21.json"),
        _textdiffseg("lits", "lits.json"),
        _textdiffseg("msd_pancreas", "pancreas.json"),
        _textdiffseg("msd_colon", "colon.json"),
        _diffboost("busi", [], volumes=None),
        _diffboost("spleen_slices", ["configs/spleen.json"], volumes=5),  # ~22 positive slices per volume
        _diffboost("prostate_slices", ["configs/prostate.json"], volumes=8),  # ~11 per volume
    ]


# ------------------------------------------------------------------------------------------------------- records
@dataclass
class Record:
    """The measurements of one run (one stage of a chain); ``None`` where a figure does not apply or the run failed."""

    bundle: str
    dataset: str
    config: str
    stage: str  # train | inference | synthesis | convert | init_weights
    step: str = ""  # the stage's name in its chain (DiffBoost: controlnet / synthesis / segmentation / inference)
    ok: bool = False
    error: str | None = None
    seconds_per_iteration: float | None = None
    seconds_per_case: float | None = None
    seconds_data_per_iteration: float | None = None
    seconds_per_step: float | None = None
    peak_rss_mb: float | None = None
    flops: float | None = None
    params_trainable: int | None = None
    params_frozen: int | None = None
    batch_size: int | None = None
    paper_batch_size: int | None = None
    input_shape: list[int] | None = None
    peak_flops: float | None = None
    peak_fraction: float | None = None
    projected_gpu_s: float | None = None
    projection: str | None = None
    caps: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    wall_s: float | None = None
    log: str | None = None
    cpu_cores: int | None = None
    memory_gb: float | None = None
    memory_budget_gb: float | None = None


def _fmt(v: Any, spec: str) -> str:
    if v is None:
        return "-"
    return format(v, spec)


def _cell(text: Any) -> str:
    """One Markdown table cell: whitespace (newlines included) collapsed, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "/")


def markdown_table(records: list[Record], bundle_column: bool = True) -> str:
    """The records as one Markdown table: ``OUT/paper_scale.md`` (all bundles) or a model card (``bundle_column``
    False)."""
    head = [
        "dataset",
        "config",
        "stage",
        "ok",
        "s/iteration or s/case",
        "peak memory GB",
        "GFLOP",
        "peak fraction",
        "projected A100 s",
        "batch (paper)",
        "input",
        "params trainable / frozen",
        "notes",
    ]
    if bundle_column:
        head.insert(0, "bundle")
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        sec = r.seconds_per_iteration if r.seconds_per_iteration is not None else r.seconds_per_case
        unit = "" if sec is None else (" /iter" if r.seconds_per_iteration is not None else " /case")
        stage = r.stage if r.step in ("", r.stage) else f"{r.stage} ({r.step})"
        batch = "-" if r.batch_size is None else f"{r.batch_size} ({r.paper_batch_size})"
        params = "-" if r.params_trainable is None else f"{r.params_trainable:,} / {r.params_frozen or 0:,}"
        notes = [f"{k}={v}" for k, v in r.caps.items()] + list(r.notes)
        if r.seconds_per_step is not None:
            notes.append(f"{r.seconds_per_step:.1f} s per DDIM step")
        if not r.ok:
            notes.append(f"FAILED: {r.error}")
        cells = [
            r.dataset,
            r.config,
            stage,
            "yes" if r.ok else "NO",
            f"{_fmt(sec, '.1f')}{unit}",
            _fmt(None if r.peak_rss_mb is None else r.peak_rss_mb / 1024, ".1f"),
            _fmt(None if r.flops is None else r.flops / 1e9, ".0f"),
            _fmt(r.peak_fraction, ".2f"),
            _fmt(r.projected_gpu_s, ".2f"),
            batch,
            r.input_shape or "-",
            params,
            "; ".join(notes),
        ]
        if bundle_column:
            cells.insert(0, r.bundle)
        rows.append("| " + " | ".join(_cell(c)[:400] for c in cells) + " |")
    return "\n".join(rows)


# -------------------------------------------------------------------------------------------------------- child
def _unique_params(modules: list[Any]) -> dict[int, int]:
    out: dict[int, int] = {}
    for m in modules:
        for p in m.parameters():
            out[id(p)] = p.numel()
    return out


def _count_params(parser: Any, stage: str) -> tuple[int, int]:
    """Trainable = parameters in the optimisers (training) or of ``network`` (inference); frozen = the other
    parameters of every instantiated module (EMA copies excluded)."""
    import torch

    resolved = parser.ref_resolver.resolved_content
    modules = [v for k, v in resolved.items() if isinstance(v, torch.nn.Module) and "ema" not in k.lower()]
    for k, v in resolved.items():  # modules inside helper objects (e.g. DiffBoost's StableDiffusionParts)
        if "ema" in k.lower():
            continue
        for attr in getattr(v, "__dict__", {}).values():
            if isinstance(attr, torch.nn.Module) and not isinstance(v, torch.nn.Module):
                modules.append(attr)
    everything = _unique_params(modules)
    if stage == "train":
        trainable = {
            id(p): p.numel()
            for v in resolved.values()
            if isinstance(v, torch.optim.Optimizer)
            for g in v.param_groups
            for p in g["params"]
        }
    else:
        net = resolved.get("network")
        trainable = _unique_params([net]) if isinstance(net, torch.nn.Module) else {}
    frozen = {k: n for k, n in everything.items() if k not in trainable}
    return sum(trainable.values()), sum(frozen.values())


def _shape_of(batch: Any) -> list[int] | None:
    import torch

    if isinstance(batch, list) and batch:
        batch = batch[0] if isinstance(batch[0], dict) else batch
    if isinstance(batch, dict):
        img = batch.get("image")
        if isinstance(img, torch.Tensor):
            return list(img.shape)
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return list(batch[0].shape)
    return None


class _EngineProbe:
    """Times every iteration and its data loading, counts the FLOPs of iteration ``count_iteration`` (1-based; the
    training runs count the 2nd, after a warm-up, and time the 3rd; inference counts and times its one case)."""

    def __init__(self, engine: Any, count_iteration: int = 1) -> None:
        from common.utils.profiling import FlopCount
        from ignite.engine import Events

        self.flops = FlopCount()
        self.count_iteration = count_iteration
        self.iter_s: list[float] = []
        self.data_s: list[float] = []
        self.input_shape: list[int] | None = None
        self._t = 0.0
        engine.add_event_handler(Events.GET_BATCH_STARTED, self._batch_started)
        engine.add_event_handler(Events.GET_BATCH_COMPLETED, self._batch_completed)
        engine.add_event_handler(Events.ITERATION_STARTED, self._iter_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iter_completed)

    def _batch_started(self, engine: Any) -> None:
        self._t = time.perf_counter()

    def _batch_completed(self, engine: Any) -> None:
        self.data_s.append(time.perf_counter() - self._t)
        if self.input_shape is None:
            self.input_shape = _shape_of(engine.state.batch)

    def _iter_started(self, engine: Any) -> None:
        if len(self.iter_s) + 1 == self.count_iteration and not self.flops.running:
            self.flops.start()
        self._t = time.perf_counter()

    def _iter_completed(self, engine: Any) -> None:
        self.iter_s.append(time.perf_counter() - self._t)
        if self.flops.running:
            self.flops.stop()


def _convert_cdal(spec: dict, parser: Any) -> None:
    """Convert the authors'-format stand-in generator into ``ckpt_dir/model.pt`` with the real converter
    (``tools/convert_checkpoint.py cdal``, the stage's dataset overlays as ``--override``)."""
    from scripts.convert import convert_cdal  # the bundle's scripts package

    overlays = [str(Path(c).resolve()) for c in spec["configs"] if Path(c).name != "inference.json"]
    convert_cdal(
        argparse.Namespace(
            src=spec["standins"]["cdal"],
            dst=str(Path(spec["ckpt_dir"]) / "model.pt"),
            network=str(Path("configs/inference.json").resolve()) + "#network_def",
            override=overlays,
            key=None,
        )
    )


def _init_weights(spec: dict, parser: Any) -> None:
    """Write the freshly initialised ``network_def`` as ``ckpt_dir/model.pt`` (a raw state dict): inference benches
    that need weights of the right shapes, not trained ones."""
    from common.io.atomic import atomic_torch_save

    atomic_torch_save(parser.get_parsed_content("network_def").state_dict(), Path(spec["ckpt_dir"]) / "model.pt")


def run_child(spec_path: Path, result_path: Path) -> int:
    """Run one stage in this process (cwd = the bundle) and write its measurements to ``result_path``."""
    from common.io.atomic import atomic_write_json
    from common.utils.profiling import ASSUMED_GPU_UTILISATION, measure_peak_flops, peak_rss_mb, projected_gpu_seconds

    spec = json.loads(spec_path.read_text())
    out: dict[str, Any] = {"ok": False, "notes": []}
    t_start = time.perf_counter()
    try:
        bundle = Path(spec["bundle_dir"])
        os.chdir(bundle)
        sys.path.insert(0, str(bundle))
        out["peak_flops"] = measure_peak_flops()
        from monai.bundle import ConfigWorkflow

        stage = spec["stage"]
        workflow = ConfigWorkflow(
            config_file=spec["configs"],
            meta_file="configs/metadata.json",
            logging_file="configs/logging.conf",
            workflow_type=None,
            **spec["overrides"],
        )
        if stage == "init_weights":  # the inference config's initialize loads model.pt, which is being written
            workflow.parser.parse()
        else:
            workflow.initialize()
        parser = workflow.parser
        probe = None
        if stage == "train":
            probe = _EngineProbe(parser.get_parsed_content("train#trainer"), count_iteration=2)
        elif stage == "inference":
            probe = _EngineProbe(parser.get_parsed_content("evaluator"), count_iteration=1)
        if stage == "synthesis":  # the frozen SD parts, ControlNet and HED load outside the measured window
            synthesizer = parser.get_parsed_content("synthesizer")
        t0 = time.perf_counter()
        if stage == "convert":
            _convert_cdal(spec, parser)
        elif stage == "init_weights":
            _init_weights(spec, parser)
        elif stage == "synthesis":
            from common.utils.profiling import FlopCount

            with FlopCount() as fc:
                workflow.run()
            seconds = time.perf_counter() - t0
            n_images = len(synthesizer.generated)
            if n_images == 0:
                raise RuntimeError("the synthesis wrote no image")
            steps = int(parser.get_parsed_content("synthesis_steps"))
            out.update(
                seconds_per_case=seconds / n_images,
                seconds_per_step=seconds / (n_images * steps),
                flops=fc.total / n_images,
            )
            out["notes"].append(f"{n_images} synthetic images x {steps} DDIM steps (edge maps included); per image")
        else:
            workflow.run()
        if probe is not None:
            if not probe.iter_s:
                raise RuntimeError(f"the {stage} engine ran no iteration")
            out["flops"] = float(probe.flops.total)
            out["input_shape"] = probe.input_shape
            if stage == "train":
                if len(probe.iter_s) < 3:
                    raise RuntimeError(f"the trainer ran {len(probe.iter_s)} iteration(s), 3 are measured")
                timed, data = probe.iter_s[2:], probe.data_s[2:]
                out["seconds_per_iteration"] = sum(timed) / len(timed)
                out["seconds_data_per_iteration"] = sum(data) / len(data)
            else:
                out["seconds_per_case"] = sum(probe.iter_s) / len(probe.iter_s)
                out["notes"].append("inference time measured with the FLOP counter active")
        if stage != "init_weights":
            workflow.finalize()
        # the peak again after the run (the best of both): one measurement can be depressed by a busy moment
        out["peak_flops"] = max(out["peak_flops"], measure_peak_flops())
        if stage not in ("convert", "init_weights"):
            trainable, frozen = _count_params(parser, stage)
            out["params_trainable"], out["params_frozen"] = trainable, frozen
            seconds = out.get("seconds_per_iteration") or out.get("seconds_per_case")
            if out.get("flops") and seconds:
                out["peak_fraction"] = out["flops"] / seconds / out["peak_flops"]
                out["projected_gpu_s"] = projected_gpu_seconds(out["flops"])
                out["projection"] = f"A100 fp16 312 TFLOP/s at {ASSUMED_GPU_UTILISATION:.0%} utilisation (projection)"
        if spec.get("batch_key"):
            out["batch_size"] = int(parser.get_parsed_content(spec["batch_key"]))
        out["ok"] = True
    except BaseException as e:  # noqa: BLE001 -- every failure is recorded with its message
        traceback.print_exc()
        out["error"] = _root_cause(e)[:2000]
    out["peak_rss_mb"] = peak_rss_mb()
    out["wall_s"] = time.perf_counter() - t_start
    atomic_write_json(result_path, out, default=str)
    return 0 if out["ok"] else 1


def _root_cause(error: BaseException) -> str:
    """``Type: message`` of the innermost exception of ``error``'s cause/context chain (MONAI wraps the user's error
    in "Failed to evaluate ConfigExpression ..."); the outer message follows when it differs."""
    inner, seen = error, set()
    while (inner.__cause__ or inner.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        inner = inner.__cause__ or inner.__context__
    text = f"{type(inner).__name__}: {inner}"
    return text if inner is error else f"{text} (raised in: {type(error).__name__}: {str(error)[:200]})"


# ------------------------------------------------------------------------------------------------------- parent
def run_stage(spec: dict, log: Path, budget_mb: float, timeout_s: float) -> tuple[dict, str | None]:
    """One child process; returns its result and ``"memory"`` / ``"timeout"`` when it was stopped.

    The process tree's proportional set size (forked DataLoader workers share the parent's pages) is sampled every
    0.25 s; past ``budget_mb`` the tree is killed. A child killed by SIGKILL without a result (the kernel's OOM
    killer) counts as ``"memory"`` too."""
    from common.utils.profiling import process_tree_pss_mb

    spec_path = log.with_suffix(".spec.json")
    result_path = log.with_suffix(".result.json")
    spec_path.write_text(json.dumps(spec, indent=2))
    result_path.unlink(missing_ok=True)
    from common.utils.bundles import bundle_run_env

    env = bundle_run_env()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(spec_path), "--result", str(result_path)]
    stopped = None
    peak_tree = 0.0
    with open(log, "a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        t0 = time.time()
        while proc.poll() is None:
            pss = process_tree_pss_mb(proc.pid)
            peak_tree = max(peak_tree, pss)
            if pss > budget_mb:
                stopped = "memory"
            elif time.time() - t0 > timeout_s:
                stopped = "timeout"
            if stopped:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                break
            time.sleep(0.25)
    try:
        result = json.loads(result_path.read_text()) if result_path.is_file() else {"ok": False}
    except json.JSONDecodeError:
        result = {"ok": False}
    result["tree_peak_pss_mb"] = peak_tree
    if stopped == "memory":
        result["error"] = f"stopped: the process tree's memory passed the budget of {budget_mb / 1024:.1f} GB"
    elif stopped == "timeout":
        result["error"] = f"stopped after the time limit of {timeout_s / 60:.0f} min"
    elif not result_path.is_file() and proc.returncode == -signal.SIGKILL:
        stopped = "memory"
        result["error"] = "killed (SIGKILL, most likely the kernel's out-of-memory killer)"
    elif not result_path.is_file():
        result["error"] = f"the run died without a result (exit code {proc.returncode}); see {log}"
    elif not result.get("ok") and "can't allocate memory" in str(result.get("error", "")):
        stopped = "memory"
    return result, stopped


def _config_label(configs: list[str]) -> str:
    return " + ".join(Path(c).name for c in configs)


# : (bundle, the stage's batch-size key) -> (the largest batch that fitted in this process's earlier runs, why): the
# datasets of a
#: bundle share the network and the image size, so DiffBoost's ControlNet search runs once, not per dataset
_FITTING_BATCH: dict[tuple[str, str], tuple[int, list[str]]] = {}


def _first_training_cases(datalist: Path, n: int, work: Path) -> Path:
    """A copy of ``datalist`` whose training split is its first ``n`` cases (paths are absolute)."""
    from common.io.atomic import atomic_write_json

    doc = json.loads(datalist.read_text())
    doc["training"] = doc["training"][:n]
    return atomic_write_json(work / f"datalist_train{n}.json", doc)


def run_chain(chain: Chain, args: argparse.Namespace, standins: dict[str, str], budget_mb: float) -> list[Record]:
    from common.data.paper_size import write_paper_size_dataset
    from common.standins import standin_overrides
    from common.utils.bundles import bundle_run_paths
    from common.utils.profiling import memory_total_gb

    out: Path = args.out
    work = out / "runs" / chain.key
    records: list[Record] = []
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    print(f"[paper-scale] {chain.key}: writing paper-size data", flush=True)
    try:
        datalist = write_paper_size_dataset(dst=out / "data" / chain.dataset, **chain.data)
    except Exception as e:  # noqa: BLE001
        rec = Record(chain.bundle, chain.dataset, "-", "data", error=f"{type(e).__name__}: {e}")
        return [rec]
    print(f"[paper-scale] {chain.key}: data ready in {time.perf_counter() - t0:.0f} s ({datalist})", flush=True)
    shutil.rmtree(work, ignore_errors=True)  # a fresh run: nothing resumed from an earlier check
    base = {**bundle_run_paths(datalist, work), "device": "$torch.device('cpu')"}
    base.update(standin_overrides(args.standins, chain.standins))
    failed_before = False
    for st in chain.stages:
        label = st.name or st.stage
        rec = Record(
            chain.bundle,
            chain.dataset,
            _config_label(st.configs),
            st.stage,
            step=label,
            paper_batch_size=st.paper_batch_size,
            caps=dict(st.caps),
        )
        log = logs / f"{chain.key}-{label}.log"
        log.unlink(missing_ok=True)
        rec.log = str(log)
        if failed_before:
            rec.error = "not run: an earlier stage of this chain failed"
            records.append(rec)
            continue
        overrides = {**base, **st.overrides, **st.caps}
        if st.train_cases:
            overrides["datalist"] = str(_first_training_cases(datalist, st.train_cases, work))
            rec.notes.append(f"first {st.train_cases} training cases")
        if st.stage == "train":
            overrides.update(TRAIN_CAP)
        batch = st.paper_batch_size
        known = _FITTING_BATCH.get((chain.bundle, st.batch_key))
        if batch and known and known[0] < batch:  # same network and image size: skip the tries known to fail
            batch = known[0]
            rec.notes += known[1] + [f"started at batch {batch}, the largest that fitted earlier in this check"]
        while True:
            if st.batch_key and batch is not None:
                overrides[st.batch_key] = batch
            spec = {
                "bundle_dir": str(REPO_ROOT / "bundles" / chain.bundle),
                "configs": st.configs,
                "overrides": overrides,
                "stage": st.stage,
                "batch_key": st.batch_key,
                "ckpt_dir": base["ckpt_dir"],
                "standins": standins,
            }
            print(
                f"[paper-scale] {chain.key}: {label} ({rec.config}{'' if batch is None else f', batch {batch}'}) ...",
                flush=True,
            )
            result, stopped = run_stage(spec, log, budget_mb, args.timeout_min * 60)
            if stopped == "memory" and st.batch_key and batch and batch > 1:
                rec.notes.append(f"batch {batch} exceeded the {budget_mb / 1024:.0f} GB budget")
                batch //= 2
                continue
            break
        for k, v in result.items():
            if k == "notes":
                rec.notes += v
            elif hasattr(rec, k) and v is not None:
                setattr(rec, k, v)
        if result.get("tree_peak_pss_mb"):
            rec.peak_rss_mb = max(rec.peak_rss_mb or 0.0, result["tree_peak_pss_mb"])
        rec.cpu_cores, rec.memory_gb, rec.memory_budget_gb = os.cpu_count(), memory_total_gb(), budget_mb / 1024
        rec.ok = bool(result.get("ok"))
        rec.error = None if rec.ok else result.get("error", "failed")
        if rec.ok and rec.batch_size is not None and rec.paper_batch_size and rec.batch_size < rec.paper_batch_size:
            rec.notes.append(f"batch {rec.batch_size} = the largest that fits ({rec.paper_batch_size} in the paper)")
            if (chain.bundle, st.batch_key) not in _FITTING_BATCH:
                _FITTING_BATCH[(chain.bundle, st.batch_key)] = (
                    rec.batch_size,
                    [n for n in rec.notes if "exceeded" in n],
                )
        secs = rec.seconds_per_iteration or rec.seconds_per_case
        print(
            f"[paper-scale] {chain.key}: {label} {'ok' if rec.ok else 'FAILED'}"
            f"{'' if secs is None else f', {secs:.2f} s'}"
            f"{'' if rec.peak_rss_mb is None else f', peak {rec.peak_rss_mb:.0f} MB'}"
            f"{'' if rec.ok else ': ' + str(rec.error)}",
            flush=True,
        )
        failed_before = not rec.ok
        records.append(rec)
    return records


def resolve_standins(folder: Path, needed: set[str], make: bool) -> dict[str, str]:
    """``{part: path}`` of the stand-ins ``needed`` (written first with ``make``); exits naming what is missing."""
    from common.standins import PART_FOLDERS, PARTS, make_standins, standin_complete, standin_path

    missing = [k for k in PARTS if k in needed and not standin_complete(folder / PART_FOLDERS[k])]
    if missing and make:
        make_standins(folder, parts=missing)
        missing = []
    if missing:
        raise SystemExit(
            f"error: {folder}: stand-in part(s) {missing} missing or incomplete "
            f"({[str(standin_path(folder, k)) for k in missing]}); write them with "
            f"`python tools/make_standins.py {folder}` or pass --make-standins"
        )
    return {k: str(standin_path(folder, k)) for k in PARTS}


def select_chains(bundles: list[str] | None, datasets: list[str] | None) -> list[Chain]:
    chains = all_chains()
    if bundles:
        unknown = sorted(set(bundles) - {c.bundle for c in chains})
        if unknown:
            raise SystemExit(f"error: unknown bundle(s) {unknown}")
        chains = [c for c in chains if c.bundle in bundles]
    if datasets:
        unknown = sorted(set(datasets) - {c.dataset for c in chains})
        if unknown:
            raise SystemExit(f"error: unknown dataset(s) {unknown} for the selected bundles")
        chains = [c for c in chains if c.dataset in datasets]
    return chains


def replace_marked_section(path: Path, marker: str, text: str) -> bool:
    """Replace what stands between ``<!-- marker:start -->`` and ``<!-- marker:end -->`` in ``path`` by ``text``;
    False (nothing written) unless each marker stands once, start before end."""
    from common.io.atomic import atomic_write_text

    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    doc = path.read_text(encoding="utf-8")
    if doc.count(start) != 1 or doc.count(end) != 1 or doc.index(start) > doc.index(end):
        return False
    head, rest = doc.split(start, 1)
    _, tail = rest.split(end, 1)
    atomic_write_text(path, f"{head}{start}\n{text.strip()}\n{end}{tail}")
    return True


def _method_text(records: list[Record], started: str) -> str:
    """How the figures of ``records`` were measured (the machine as recorded by the runs themselves)."""
    peak = max((r.peak_flops for r in records if r.peak_flops), default=None)
    first = next((r for r in records if r.cpu_cores), None)
    machine = (
        "-"
        if first is None
        else (f"{first.cpu_cores} CPU cores, {first.memory_gb:.0f} GB, memory budget {first.memory_budget_gb:.1f} GB")
    )
    return (
        f"Measured by the source repository's `tools/paper_scale_check.py` ({started}; {machine}; measured peak "
        f"{'-' if peak is None else f'{peak / 1e9:.0f}'} GFLOP/s, fp32 matmul): the shipped configs with stand-in "
        "weights (`tools/make_standins.py`) on synthetic data of the papers' sizes (`common.data.paper_size`). "
        "Training: 3 iterations at the paper's batch size (or the largest within the memory budget, noted): the "
        "1st warms up, the FLOPs are those of the 2nd (forward + backward), the time that of the 3rd. Inference: "
        "one full-size case (FLOPs counted during the timed run). FLOPs from `torch.utils.flop_counter` "
        "(convolutions, matmuls, attention; element-wise work is not counted); peak fraction = achieved FLOP/s "
        "over the measured peak; peak memory = the larger of the main process's peak RSS and the sampled "
        "proportional set size of its process tree (DataLoader workers); projected A100 s = FLOPs / (312 TFLOP/s "
        "x 0.35), a projection, not a measurement.\n\n"
    )


def summary_table(records: list[Record]) -> str:
    """One row per bundle x dataset: every stage ok?, training s/iteration and inference s/case, peak memory."""
    rows = [
        "| bundle | dataset | runs ok | training s/iteration (batch) | inference s/case | peak memory GB |",
        "|---|---|---|---|---|---|",
    ]
    chains: dict[tuple[str, str], list[Record]] = {}
    for r in records:
        chains.setdefault((r.bundle, r.dataset), []).append(r)
    for (bundle, dataset), recs in chains.items():
        train = "; ".join(
            f"{r.step}: {_fmt(r.seconds_per_iteration, '.1f')} ({r.batch_size})" for r in recs if r.stage == "train"
        )
        infer = "; ".join(
            f"{r.step}: {_fmt(r.seconds_per_case, '.1f')}" for r in recs if r.stage in ("inference", "synthesis")
        )
        peak = max((r.peak_rss_mb for r in recs if r.peak_rss_mb), default=None)
        rows.append(
            f"| {bundle} | {dataset} | {sum(r.ok for r in recs)}/{len(recs)} | {train or '-'} | "
            f"{infer or '-'} | {_fmt(None if peak is None else peak / 1024, '.1f')} |"
        )
    return "\n".join(rows)


def update_model_cards(records: list[Record], started: str) -> list[Path]:
    """Write each bundle's records into its model card (between the ``paper-scale`` markers) and the summary into
    the repository README (``paper-scale-summary``)."""
    done = []
    readme = REPO_ROOT / "README.md"
    cores = next((r.cpu_cores for r in records if r.cpu_cores), None)
    text = (
        f"Measured {started} on a {cores}-core CPU machine (stand-in weights, synthetic data of the papers' "
        "sizes; per-stage details and FLOPs in each model card):\n\n" + summary_table(records)
    )
    if replace_marked_section(readme, "paper-scale-summary", text):
        done.append(readme)
    for bundle in sorted({r.bundle for r in records}):
        card = REPO_ROOT / "bundles" / bundle / "docs" / "README.md"
        rows = [r for r in records if r.bundle == bundle]
        text = _method_text(rows, started) + markdown_table(rows, bundle_column=False)
        if card.is_file() and replace_marked_section(card, "paper-scale", text):
            done.append(card)
    return done


def write_report(out: Path, records: list[Record], started: str) -> None:
    """``OUT/paper_scale.json`` (the records) and ``OUT/paper_scale.md`` (how they were measured + the table)."""
    from common.io.atomic import atomic_write_json, atomic_write_text

    atomic_write_json(out / "paper_scale.json", [asdict(r) for r in records])
    head = "# Paper scale on CPU\n\n" + _method_text(records, started)
    atomic_write_text(out / "paper_scale.md", head + markdown_table(records) + "\n")


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring); exit code 1 when a run failed."""
    from common.utils.profiling import memory_total_gb

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--standins", type=Path, help="folder written by tools/make_standins.py")
    ap.add_argument("--out", type=Path, help="output folder (data, runs, logs, paper_scale.json/.md)")
    ap.add_argument("--bundles", nargs="*", default=None)
    ap.add_argument("--datasets", nargs="*", default=None)
    ap.add_argument("--make-standins", action="store_true", help="write missing stand-ins first")
    ap.add_argument(
        "--memory-budget-gb",
        type=float,
        default=None,
        help="stop a run whose process tree passes this (default 90%% of the machine's memory)",
    )
    ap.add_argument("--timeout-min", type=float, default=60.0, help="time limit of one run")
    ap.add_argument("--list", action="store_true", help="list the runs and exit")
    ap.add_argument(
        "--update-cards",
        action="store_true",
        help="write the records of OUT/paper_scale.json into the model cards and exit",
    )
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return run_child(args.child, args.result)
    chains = select_chains(args.bundles, args.datasets)
    if args.list:
        for c in chains:
            for st in c.stages:
                print(f"{c.bundle:12s} {c.dataset:16s} {st.name or st.stage:13s} {_config_label(st.configs)}")
        return 0
    if args.update_cards:
        if args.out is None:
            ap.error("--update-cards needs --out")
        known = {f.name for f in dataclasses.fields(Record)}
        recs = [
            Record(**{k: v for k, v in r.items() if k in known})
            for r in json.loads((args.out / "paper_scale.json").read_text())
        ]
        stamp = time.strftime("%Y-%m-%d", time.localtime((args.out / "paper_scale.json").stat().st_mtime))
        for card in update_model_cards(recs, stamp):
            print(f"[paper-scale] updated {card}")
        return 0
    if args.standins is None or args.out is None:
        ap.error("--standins and --out are required")
    args.out = args.out.resolve()
    args.standins = args.standins.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    standins = resolve_standins(args.standins, {p for c in chains for p in c.standins}, args.make_standins)
    budget_mb = 1024 * (args.memory_budget_gb or 0.9 * memory_total_gb())
    started = time.strftime("%Y-%m-%d %H:%M")
    # a partial rerun keeps the other chains' records; a chain's old records are replaced when it has run again
    previous = args.out / "paper_scale.json"
    by_chain: dict[tuple[str, str], list[Record]] = {}
    if previous.is_file() and (args.bundles or args.datasets):
        known = {f.name for f in dataclasses.fields(Record)}
        for r in json.loads(previous.read_text()):
            by_chain.setdefault((r["bundle"], r["dataset"]), []).append(
                Record(**{k: v for k, v in r.items() if k in known})
            )
    order = [(c.bundle, c.dataset) for c in all_chains()]
    records: list[Record] = []
    for chain in chains:
        by_chain[(chain.bundle, chain.dataset)] = new = run_chain(chain, args, standins, budget_mb)
        records += new
        ranked = sorted(by_chain, key=lambda k: order.index(k) if k in order else len(order))
        write_report(args.out, [r for k in ranked for r in by_chain[k]], started)
    print("\n" + markdown_table(records))
    failed = [r for r in records if not r.ok]
    print(f"\n[paper-scale] {len(records) - len(failed)}/{len(records)} runs ok; report {args.out / 'paper_scale.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
