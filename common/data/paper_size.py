"""Synthetic datasets of the papers' real sizes, in the official release layouts, through the real converters.

``tools/paper_scale_check.py`` and ``bench/`` run the shipped paper-scale configs on these: the content is
synthetic (the generators of :mod:`common.data`), the sizes, file formats, folder layouts, voxel spacings and channel
counts are those of the releases the papers used, so reading, resampling, resizing and sliding windows cost what
they cost on the real data. Each dataset is written in its release layout under ``dst/raw``, converted with the
real converter (:mod:`common.data.converters`) into ``dst/converted``, and a datalist with exactly the requested
numbers of training / validation / test cases (all labelled) is written as ``dst/datalist.json``.

| name | release stand-in | converter |
|---|---|---|
| ``monuseg`` | 1000 x 1000 RGB H&E ``.tif`` + Aperio XML (MoNuSeg 2018) | ``monuseg`` |
| ``qata`` | 224 x 224 grey CXR PNGs + LViT text tables (QaTa-COV19, LViT release) | ``qata`` |
| ``cxr`` | Shenzhen 2949 x 3000 (train) / Montgomery 4892 x 4020 (test) grey PNGs (Kaggle) | ``cxr_lungs`` |
| ``hippocampus`` | 35 x 51 x 35 MR NIfTI, 1 mm (MSD Task04) | ``msd`` |
| ``lits_1.5mm`` | LiTS layout at 1.5 x 1.5 x 2 mm, 256 x 256 x 200 (benches: voxels in = network input) | ``lits`` |
| ``kits21`` | 120 x 512 x 512 CT at 3.0 x 0.78 x 0.78 mm (KiTS21 axis order: slices first) | ``kits21`` |
| ``lits`` | 512 x 512 x 120 CT at 0.78 x 0.78 x 2.5 mm (LiTS) | ``lits`` |
| ``msd_pancreas`` | 512 x 512 x 96 CT at 0.78 x 0.78 x 2.5 mm (MSD Task07) | ``msd`` |
| ``msd_colon`` | 512 x 512 x 100 CT at 0.78 x 0.78 x 5.0 mm (MSD Task10) | ``msd`` |
| ``busi`` | 500 x 600 RGB-stored grey ultrasound PNGs (BUSI, malignant) | ``busi`` |
| ``spleen_slices`` | 512 x 512 x 40 CT at 0.79 x 0.79 x 5 mm (MSD Task09) -> positive 384^2 slices | ``msd_slices`` |
| ``prostate_slices`` | 320 x 320 x 20 x 2 (T2, ADC) MR, 0.6 x 0.6 x 3.6 mm (MSD Task05) -> T2 slices | ``msd_slices`` |

Sizes from the releases' documentation (MoNuSeg 2018 challenge page; QaTa-COV19 on Kaggle; NLM Montgomery/Shenzhen
description; MSD (Antonelli et al. 2022, Table 1); KiTS21 and LiTS challenge pages; BUSI, Al-Dhabyani et al. 2020).
A finished dataset is reused when its stamp (name, counts, seed) matches.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.errors import BadInputError
from common.io.atomic import atomic_write_json

__all__ = ["PAPER_SIZE_DATASETS", "PaperSizeDataset", "write_paper_size_dataset"]

STAMP_NAME = "paper_size_stamp.json"


@dataclass(frozen=True)
class PaperSizeDataset:
    """How one paper dataset is stood in for: the raw writer, the converter and its options."""

    name: str
    description: str
    converter: str
    write_raw: Callable[[Path, int, int, Any], None]  # (raw folder, number of labelled cases, seed, size or None)
    options: dict[str, Any] = field(default_factory=dict)


def _monuseg(raw: Path, n: int, seed: int, size: int | None = None) -> None:
    from common.data.synthetic import make_monuseg_like

    make_monuseg_like(raw, n_train=n, n_test=0, size=size or 1000, seed=seed)


def _qata(raw: Path, n: int, seed: int, size: int | None = None) -> None:
    from common.data.synthetic_qata import make_qata_like

    make_qata_like(raw, n_train=n, n_val=0, n_test=0, size=size or 224, seed=seed)


def _cxr(raw: Path, n: int, seed: int, size: Any = None) -> None:  # the release's sizes only
    from common.data.synthetic_cxr import MONTGOMERY_SIZE, SHENZHEN_SIZE, make_cxr_lungs_like

    n_test = max(1, n // 4)
    make_cxr_lungs_like(
        raw,
        n_montgomery=n_test,
        n_shenzhen=n - n_test,
        montgomery_size=MONTGOMERY_SIZE,
        shenzhen_size=SHENZHEN_SIZE,
        seed=seed,
    )


def _msd(
    task: str,
    n_classes: int,
    labels: tuple[str, ...],
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    n_channels: int = 1,
) -> Callable[[Path, int, int, Any], None]:
    def write(raw: Path, n: int, seed: int, size: tuple[int, int, int] | None = None) -> None:
        from common.data.synthetic import make_msd_like

        make_msd_like(
            raw,
            n_train=n,
            n_test=0,
            n_classes=n_classes,
            n_channels=n_channels,
            shape=size or shape,
            spacing=spacing,
            seed=seed,
            task_name=task,
            label_names=labels,
        )

    return write


def _kits21(raw: Path, n: int, seed: int, size: tuple[int, int, int] | None = None) -> None:
    from common.data.synthetic_ct import make_kits21_like

    make_kits21_like(raw, n_labelled=n, n_test=0, shape=size or (120, 512, 512), spacing=(3.0, 0.78, 0.78), seed=seed)


def _lits(raw: Path, n: int, seed: int, size: tuple[int, int, int] | None = None) -> None:
    from common.data.synthetic_ct import make_lits_like

    make_lits_like(raw, n_labelled=n, n_test=0, shape=size or (512, 512, 120), spacing=(0.78, 0.78, 2.5), seed=seed)


def _lits_resampled(raw: Path, n: int, seed: int, size: tuple[int, int, int] | None = None) -> None:
    """LiTS layout at TextDiffSeg's training spacing (1.5 x 1.5 x 2 mm): voxels in = voxels the network sees."""
    from common.data.synthetic_ct import make_lits_like

    make_lits_like(raw, n_labelled=n, n_test=0, shape=size or (256, 256, 200), spacing=(1.5, 1.5, 2.0), seed=seed)


def _busi(raw: Path, n: int, seed: int, size: tuple[int, int] | None = None) -> None:
    from common.data.synthetic_busi import make_busi_like

    make_busi_like(raw, n_benign=0, n_malignant=n, n_normal=0, size=size or (500, 600), seed=seed)


_hippocampus = _msd("Task04_Hippocampus", 3, ("background", "Anterior", "Posterior"), (35, 51, 35), (1.0, 1.0, 1.0))
_pancreas = _msd("Task07_Pancreas", 3, ("background", "pancreas", "cancer"), (512, 512, 96), (0.78, 0.78, 2.5))
_colon = _msd("Task10_Colon", 2, ("background", "colon cancer primaries"), (512, 512, 100), (0.78, 0.78, 5.0))
_spleen = _msd("Task09_Spleen", 2, ("background", "spleen"), (512, 512, 40), (0.79, 0.79, 5.0))
_prostate = _msd("Task05_Prostate", 3, ("background", "PZ", "TZ"), (320, 320, 20), (0.6, 0.6, 3.6), n_channels=2)
_CXR = "Shenzhen 2949 x 3000 / Montgomery 4892 x 4020 grey PNGs (Kaggle lung masks)"
_SPLEEN = "512 x 512 x 40 CT at 0.79 x 0.79 x 5 mm (MSD Task09) -> 384^2 slices"
_PROSTATE = "320 x 320 x 20 x 2 MR at 0.6 x 0.6 x 3.6 mm (MSD Task05) -> T2 slices"
_LITS_RESAMPLED = "LiTS layout at 1.5 x 1.5 x 2 mm (bench: voxels = network input)"
_PROSTATE_OPTIONS = {"n_folds": 0, "channels": [0], "binary": True, "label_names": {"1": "prostate"}}

PAPER_SIZE_DATASETS: dict[str, PaperSizeDataset] = {
    d.name: d
    for d in (
        PaperSizeDataset("monuseg", "1000 x 1000 RGB H&E tiles + Aperio XML (MoNuSeg 2018)", "monuseg", _monuseg),
        PaperSizeDataset("qata", "224 x 224 grey chest X-rays + LViT text tables (QaTa-COV19)", "qata", _qata),
        PaperSizeDataset("cxr", _CXR, "cxr_lungs", _cxr),
        PaperSizeDataset("hippocampus", "35 x 51 x 35 MR at 1 mm (MSD Task04)", "msd", _hippocampus),
        PaperSizeDataset("kits21", "120 x 512 x 512 CT at 3.0 x 0.78 x 0.78 mm (KiTS21)", "kits21", _kits21),
        PaperSizeDataset("lits", "512 x 512 x 120 CT at 0.78 x 0.78 x 2.5 mm (LiTS)", "lits", _lits),
        PaperSizeDataset("lits_1.5mm", _LITS_RESAMPLED, "lits", _lits_resampled),
        PaperSizeDataset("msd_pancreas", "512 x 512 x 96 CT at 0.78 x 0.78 x 2.5 mm (MSD Task07)", "msd", _pancreas),
        PaperSizeDataset("msd_colon", "512 x 512 x 100 CT at 0.78 x 0.78 x 5.0 mm (MSD Task10)", "msd", _colon),
        PaperSizeDataset("busi", "500 x 600 grey ultrasound PNGs (BUSI, malignant)", "busi", _busi, {"n_folds": 0}),
        PaperSizeDataset("spleen_slices", _SPLEEN, "msd_slices", _spleen, {"n_folds": 0}),
        PaperSizeDataset("prostate_slices", _PROSTATE, "msd_slices", _prostate, _PROSTATE_OPTIONS),
    )
}


def _labelled_cases(doc: dict) -> list[dict]:
    return [c for split in ("training", "validation", "test") for c in doc.get(split, []) if c.get("label")]


def write_paper_size_dataset(
    name: str,
    dst: str | Path,
    n_train: int,
    n_val: int = 0,
    n_test: int = 1,
    seed: int = 0,
    volumes: int | None = None,
    size: Any = None,
) -> Path:
    """Write paper-size dataset ``name`` under ``dst``; return ``dst/datalist.json``.

    The datalist holds exactly ``n_train`` / ``n_val`` / ``n_test`` labelled cases (absolute paths into
    ``dst/converted``). ``volumes`` is the number of labelled cases the raw release gets (default the sum; slice
    datasets need fewer volumes than slices). ``size`` replaces the release's image size (an int side for
    ``monuseg`` / ``qata``, ``(H, W)`` for ``busi``, a volume shape for the 3D sets; not ``cxr``): cost curves.

    Raises:
        BadInputError: unknown ``name``, or the conversion gave fewer labelled cases than asked for.
    """
    if name not in PAPER_SIZE_DATASETS:
        raise BadInputError(name, f"unknown paper-size dataset; available: {sorted(PAPER_SIZE_DATASETS)}")
    spec = PAPER_SIZE_DATASETS[name]
    dst = Path(dst)
    want = {
        "name": name,
        "n_train": n_train,
        "n_val": n_val,
        "n_test": n_test,
        "seed": seed,
        "volumes": volumes,
        "size": list(size) if isinstance(size, (list, tuple)) else size,
        "spec": [
            spec.description,
            spec.converter,
            getattr(spec.write_raw, "__qualname__", ""),
            json.dumps(spec.options, sort_keys=True),
        ],
    }
    stamp = dst / STAMP_NAME
    datalist = dst / "datalist.json"
    if stamp.is_file() and datalist.is_file() and json.loads(stamp.read_text()) == want:
        return datalist
    stamp.unlink(missing_ok=True)  # written again last: a half-written dataset is never taken for a finished one
    for sub in ("raw", "converted"):
        shutil.rmtree(dst / sub, ignore_errors=True)
    n_needed = n_train + n_val + n_test
    spec.write_raw(dst / "raw", volumes or n_needed, seed, tuple(size) if isinstance(size, list) else size)
    from common.data.converters import get_converter
    from common.data.datalist import read_datalist

    converted = get_converter(spec.converter).convert(dst / "raw", dst / "converted", seed=seed, **spec.options)
    doc = read_datalist(converted)
    cases = _labelled_cases(doc)
    if len(cases) < n_needed:
        raise BadInputError(converted, f"{len(cases)} labelled cases after conversion, {n_needed} needed")
    base = Path(converted).parent

    def absolute(case: dict) -> dict:
        out = dict(case)
        for key in ("image", "label"):
            if out.get(key):
                out[key] = str((base / out[key]).resolve())
        return out

    cases = [absolute(c) for c in cases]
    out = {k: v for k, v in doc.items() if k not in ("training", "validation", "test")}
    out["description"] = f"{doc.get('description', '')} [paper-size synthetic stand-in: {spec.description}]"
    out["training"] = cases[:n_train]
    out["validation"] = cases[n_train : n_train + n_val]
    out["test"] = cases[n_train + n_val : n_needed]
    atomic_write_json(datalist, out)
    atomic_write_json(stamp, want)
    return datalist
