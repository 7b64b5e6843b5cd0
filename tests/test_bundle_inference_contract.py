"""The bundles' shared inference interface (bundles/README.md): a top-level ``seed`` that the bundle-specific seed
name follows (so ``--seed`` works at inference, the old name still overrides), ``finalize``, and the uncertainty
writer (float32, unscaled; TIFF beside 2D PNG outputs, NIfTI for 3D)."""

from __future__ import annotations

from pathlib import Path

import pytest
from monai.bundle import ConfigParser

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"

# bundle -> (its old inference seed name or None, the seed it used before the top-level key existed)
SEED_ALIASES = {"cdal": ("infer_seed", 0), "textdiffseg": ("sampling_seed", 0), "textdiff": ("noise_seed", 40),
                "diffboost": (None, 3)}


def _parser(bundle: str, *configs: str) -> ConfigParser:
    p = ConfigParser()
    p.read_config([str(BUNDLES / bundle / "configs" / c) for c in configs])
    return p


@pytest.mark.parametrize("bundle", sorted(SEED_ALIASES))
def test_inference_seed_is_top_level_and_the_old_name_is_an_alias(bundle):
    alias, default = SEED_ALIASES[bundle]
    for configs in (("inference.json",), ("inference.json", "evaluate.json")):
        p = _parser(bundle, *configs)
        assert p["seed"] == default and p["finalize"] == [] and p.get_parsed_content("finalize") == []
        if alias is None:
            assert "$torch.manual_seed(@seed)" in p["initialize"]
            continue
        assert p[alias] == "@seed" and p.get_parsed_content(alias) == default
        p["seed"] = 5  # --seed 5
        assert p.get_parsed_content(alias) == 5
        p = _parser(bundle, *configs)
        p[alias] = 9  # --infer_seed 9 (old name) still wins
        assert p.get_parsed_content(alias) == 9


@pytest.mark.parametrize("bundle, ext", [("textdiff", ".tif"), ("cdal", "@uncertainty_ext"), ("textdiffseg", ".nii.gz")])
def test_uncertainty_writer_is_unscaled_float32(bundle, ext):
    p = _parser(bundle, "inference.json")
    savers = [t for t in p["postprocessing"]["transforms"] if t.get("output_postfix") == "uncertainty"]
    assert len(savers) == 1
    saver = savers[0]
    assert saver["output_ext"] == ext and saver.get("scale") is None
    assert "float32" in saver["output_dtype"]
    if ext.startswith("@"):
        assert p.get_parsed_content(ext[1:]) == ".tif"
