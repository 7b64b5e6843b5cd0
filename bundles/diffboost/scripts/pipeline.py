"""Chaining the DiffBoost stages in one ``monai.bundle run`` (used by the demo: ``demo_full_pipeline: true``).

``tools/demo.py`` runs train -> infer -> evaluate with ``configs/train.json``; DiffBoost's training needs the
ControlNet fine-tune and the synthesis first (and the baseline for the side-by-side evaluation). With
``demo_full_pipeline`` set, ``train.json``'s ``run`` first calls :func:`run_stages`, which runs each stage config
in this process with ``monai.bundle.run`` (same overlays and overrides), then trains the boosted AttentionUNet. The
defaults keep the stages separate (``demo_full_pipeline: false``), as at full scale each is a long GPU job.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["STAGE_CONFIGS", "StageRunner", "run_stages"]

logger = logging.getLogger("diffboost.pipeline")

#: stage name -> (config file, extra overrides)
STAGE_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "train_controlnet": ("configs/train_controlnet.json", {}),
    "synthesize": ("configs/synthesize.json", {}),
    "train_baseline": ("configs/train.json", {"use_synthetic": False, "demo_full_pipeline": False}),
}


def run_stages(
    stages: Sequence[str],
    bundle_root: str,
    overlays: Sequence[str] = (),
    overrides: Mapping[str, Any] | None = None,
    reseed: int | None = None,
) -> list[str]:
    """Run the named stages (keys of :data:`STAGE_CONFIGS`) in order; returns the stages run.

    Args:
        stages: e.g. ``["train_controlnet", "synthesize", "train_baseline"]``.
        bundle_root: the bundle folder (config paths are relative to it).
        overlays: config files merged on top of each stage config (e.g. ``["configs/demo.json"]``).
        overrides: top-level keys passed to every stage (``dataset_dir``, ``datalist``, ``ckpt_dir``, ...).
        reseed: seed everything again afterwards, so the caller's training starts as in a separate run.
    """
    from monai.bundle import run

    root = Path(bundle_root)
    unknown = [s for s in stages if s not in STAGE_CONFIGS]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; known: {list(STAGE_CONFIGS)}")
    done = []
    for stage in stages:
        config, extra = STAGE_CONFIGS[stage]
        files = [str(root / config)] + [str(root / o) for o in overlays]
        logger.info("=== stage %s: %s", stage, files)
        kwargs = {**dict(overrides or {}), **extra, "bundle_root": str(root)}
        run(
            config_file=files,
            meta_file=str(root / "configs" / "metadata.json"),
            logging_file=str(root / "configs" / "logging.conf"),
            **kwargs,
        )
        done.append(stage)
    if reseed is not None:
        from common.training import seed_everything

        seed_everything(int(reseed))
    return done


class StageRunner:
    """Config component: ``"$@stage_runner.run()"`` runs :func:`run_stages` when ``enabled`` (else nothing).

    ``overrides`` (train.json forwards its shared keys: paths, seed, image_size, network and mixing settings) and
    ``extra_overrides`` (top-level ``stage_extra_overrides``, for keys of the other stage configs such as
    ``controlnet_epochs`` or ``num_synthetic``) are passed to every stage, on top of the overlays.
    """

    def __init__(
        self,
        enabled: bool,
        stages: Sequence[str],
        bundle_root: str,
        overlays: Sequence[str] = (),
        overrides: Mapping[str, Any] | None = None,
        reseed: int | None = None,
        extra_overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self.enabled = bool(enabled)
        self.kwargs = {
            "stages": list(stages),
            "bundle_root": bundle_root,
            "overlays": list(overlays),
            "overrides": {**dict(overrides or {}), **dict(extra_overrides or {})},
            "reseed": reseed,
        }

    def run(self) -> list[str]:
        if not self.enabled:
            return []
        return run_stages(**self.kwargs)
