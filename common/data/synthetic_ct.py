"""Small synthetic CT volumes written in the KiTS21 and LiTS release layouts (for converter tests and demos).

- :func:`make_kits21_like`: ``data/case_XXXXX/imaging.nii.gz`` + ``aggregated_MAJ_seg.nii.gz`` (0 bg, 1 kidney,
  2 tumor, 3 cyst; the volumes of :func:`common.data.synthetic.make_msd_like` with 4 classes), ``kits.json``; the
  last ``n_test`` cases have only ``imaging.nii.gz`` like the challenge's withheld test cases.
- :func:`make_lits_like`: ``Training Batch 1|2/volume-N.nii`` + ``segmentation-N.nii`` (0 bg, 1 liver, 2 tumor; a
  large ellipsoid on the patient's right with a lesion inside) and ``Test Batch/test-volume-N.nii``.

Everything is a function of ``seed``; files are written atomically.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
from common.data.synthetic import _ellipsoid, _synthetic_volume
from common.io.atomic import atomic_path

__all__ = ["make_kits21_like", "make_lits_like"]


def _save(path: Path, arr: np.ndarray, affine: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        nib.save(nib.Nifti1Image(arr, affine), tmp)


def _affine(
    shape: tuple[int, ...], spacing: tuple[float, float, float], x_sign: int, rng: np.random.Generator
) -> np.ndarray:
    affine = np.diag([x_sign * spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:3, 3] = -affine[:3, :3] @ ((np.asarray(shape) - 1) / 2.0) + rng.uniform(-20.0, 20.0, 3)
    return affine


def _write_kits21_case(root: Path, i: int, n_labelled: int, rng, case_shape, x_sign: int, spacing) -> None:
    image, label, *_ = _synthetic_volume(case_shape, x_sign, 4, 1, True, rng)
    affine = _affine(case_shape, spacing, x_sign, rng)
    case = root / "data" / f"case_{i:05d}"
    _save(case / "imaging.nii.gz", image, affine)
    if i < n_labelled:
        _save(case / "aggregated_MAJ_seg.nii.gz", label, affine)


def _write_kits21_index(root: Path, n_cases: int) -> None:
    (root / "data" / "kits.json").write_text(json.dumps([{"case_id": f"case_{i:05d}"} for i in range(n_cases)]))


def _lits_volume(rng: np.random.Generator, case_shape: tuple[int, ...], x_sign: int) -> tuple[np.ndarray, np.ndarray]:
    """(int16 HU image, uint8 label: 1 liver on the patient's right, 2 a lesion inside it in 80 % of the cases)."""
    grid = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in case_shape], indexing="ij")
    n = np.asarray(case_shape, dtype=np.float32)
    c = (n - 1) / 2
    body = _ellipsoid(grid, c, (0.46 * n[0], 0.42 * n[1], 10.0 * n[2]))
    # patient right = larger world x; voxel side depends on the sign of the affine's x axis
    u = -0.15 if x_sign > 0 else 0.15
    liver_c = (c[0] + u * n[0], c[1] + rng.uniform(-0.05, 0.05) * n[1], c[2])
    liver = _ellipsoid(grid, liver_c, (0.22 * n[0], 0.25 * n[1], 0.35 * n[2]))
    label = np.zeros(case_shape, dtype=np.uint8)
    label[liver] = 1
    if rng.uniform() < 0.8:
        r = max(1.6, 0.06 * float(n.min()))
        tum_c = (liver_c[0], liver_c[1] + rng.uniform(-0.08, 0.08) * n[1], liver_c[2] + rng.uniform(-0.1, 0.1) * n[2])
        label[_ellipsoid(grid, tum_c, (r, r, r)) & liver] = 2
    vol = np.where(body, 40.0, -1000.0).astype(np.float32)
    vol[label == 1], vol[label == 2] = 110.0, 60.0
    vol += rng.normal(0.0, 15.0, case_shape).astype(np.float32)
    return np.clip(np.rint(vol), -1024, 3071).astype(np.int16), label


def _write_lits_case(root: Path, i: int, n_labelled: int, rng, case_shape, x_sign: int, spacing) -> None:
    image, label = _lits_volume(rng, case_shape, x_sign)
    affine = _affine(case_shape, spacing, x_sign, rng)
    if i < n_labelled:
        batch = root / ("Training Batch 1" if i < (n_labelled + 1) // 2 else "Training Batch 2")
        _save(batch / f"volume-{i}.nii", image, affine)
        _save(batch / f"segmentation-{i}.nii", label, affine)
    else:
        _save(root / "Test Batch" / f"test-volume-{i - n_labelled}.nii", image, affine)


def _make_ct_like(
    write_case: Callable[..., None],
    stream: int,
    finish: Callable[[Path, int], None] | None,
    dst: str | Path,
    n_labelled: int = 6,
    n_test: int = 1,
    shape_range: tuple[int, int] = (32, 40),
    spacing: tuple[float, float, float] = (1.5, 1.5, 2.0),
    seed: int = 0,
    shape: tuple[int, int, int] | None = None,
) -> Path:
    """Write ``n_labelled`` labelled then ``n_test`` image-only cases with ``write_case`` under ``dst`` (then
    ``finish(dst, number of cases)``); returns ``dst``. Case ``i`` draws from ``default_rng([seed, stream, i])``: its
    shape (each axis in ``shape_range``, unless ``shape`` is given), then its content; even cases have ``+x``."""
    root = Path(dst)
    for i in range(n_labelled + n_test):
        rng = np.random.default_rng([seed, stream, i])
        drawn = tuple(int(s) for s in rng.integers(shape_range[0], shape_range[1] + 1, 3))
        case_shape = tuple(int(s) for s in shape) if shape is not None else drawn
        write_case(root, i, n_labelled, rng, case_shape, 1 if i % 2 == 0 else -1, spacing)
    if finish is not None:
        finish(root, n_labelled + n_test)
    return root


make_kits21_like = functools.partial(
    _make_ct_like, _write_kits21_case, 21, _write_kits21_index, n_test=1, spacing=(1.5, 1.5, 2.0)
)
make_kits21_like.__doc__ = """``make_kits21_like(dst, n_labelled=6, n_test=1, shape_range=(32, 40), spacing=(1.5, 1.5,
2.0), seed=0, shape=None)``: write ``dst/data/case_XXXXX/...`` and ``dst/data/kits.json`` (see the module docstring);
returns ``dst`` (the repository root)."""
make_lits_like = functools.partial(_make_ct_like, _write_lits_case, 17, None, n_test=2, spacing=(0.8, 0.8, 2.5))
make_lits_like.__doc__ = """``make_lits_like(dst, n_labelled=6, n_test=2, shape_range=(32, 40), spacing=(0.8, 0.8,
2.5), seed=0, shape=None)``: write the LiTS batch folders under ``dst`` (see the module docstring); returns ``dst``."""
