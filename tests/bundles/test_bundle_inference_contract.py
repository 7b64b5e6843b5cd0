"""The bundles' shared inference interface (bundles/README.md): a top-level ``seed`` that the bundle-specific seed
name follows (so ``--seed`` works at inference, the old name still overrides), ``finalize``, and the uncertainty
writer (float32, unscaled; TIFF beside 2D PNG outputs, NIfTI for 3D)."""

from __future__ import annotations

import pytest
from common.utils.bundles import REPO_ROOT
from monai.bundle import ConfigParser

BUNDLES = REPO_ROOT / "bundles"

# bundle -> (its old inference seed name or None, the seed it used before the top-level key existed)
SEED_ALIASES = {
    "cdal": ("infer_seed", 0),
    "textdiffseg": ("sampling_seed", 0),
    "textdiff": ("noise_seed", 40),
    "diffboost": (None, 3),
}


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


@pytest.mark.parametrize(
    "bundle, ext", [("textdiff", ".tif"), ("cdal", "@uncertainty_ext"), ("textdiffseg", ".nii.gz")]
)
def test_uncertainty_writer_is_unscaled_float32(bundle, ext):
    p = _parser(bundle, "inference.json")
    savers = [t for t in p["postprocessing"]["transforms"] if t.get("output_postfix") == "uncertainty"]
    assert len(savers) == 1
    saver = savers[0]
    assert saver["output_ext"] == ext and saver.get("scale") is None
    assert "float32" in saver["output_dtype"]
    if ext.startswith("@"):
        assert p.get_parsed_content(ext[1:]) == ".tif"


@pytest.mark.parametrize("bundle, attr", [("textdiff", "default_text"), ("textdiffseg", "prompt")])
def test_monailabel_text_option_reaches_the_inferer(bundle, attr):
    """MONAI Label's ``BundleInferTask`` shows ``displayable_configs`` as options and, per request, updates that
    dict with the user's values and re-parses (monailabel tasks/infer/bundle.py ``pre_transforms``) before it
    instantiates ``inferer``, which it calls as ``inferer(image, network)`` without text. The typed ``text`` must
    therefore become the inferer's own text; by default it is the config's value."""
    import sys

    from common.utils.bundles import bundle_scripts

    scope = bundle_scripts(bundle) if (BUNDLES / bundle / "scripts").is_dir() else None
    if scope is not None:
        scope.__enter__()
    try:
        p = _parser(bundle, "inference.json", "demo.json")
        p["bundle_root"] = str(BUNDLES / bundle)
        shown = p.get_parsed_content("displayable_configs")
        assert set(shown) == {"text"}
        default = p.get_parsed_content("default_text" if bundle == "textdiff" else "prompt")
        assert shown["text"] == default
        assert getattr(p.get_parsed_content("inferer"), attr) == (default or None)
        typed = "The nuclei are dense." if bundle == "textdiff" else p.get_parsed_content("class_prompts")[1]["text"]
        p["displayable_configs"].update({"text": typed})
        p.parse()
        assert getattr(p.get_parsed_content("inferer"), attr) == typed
    finally:
        if scope is not None:
            scope.__exit__(*sys.exc_info())


@pytest.mark.parametrize("bundle", sorted(SEED_ALIASES))
def test_train_handlers_are_a_list_of_dicts_for_monai_label(bundle):
    """MONAI Label's BundleTrainTask calls ``.get("_target_")`` on every ``train#handlers`` entry (to find or insert
    its CheckpointLoader) and overrides ``validate#dataset#data`` with its validation split: a bare ``"@ref"`` entry
    or a missing ``validate`` section made its /train request fail (found with tools/monailabel_check.py)."""
    for cfg in sorted((BUNDLES / bundle / "configs").glob("train*.json")):
        p = _parser(bundle, cfg.name)
        handlers = p["train"]["handlers"]
        assert isinstance(handlers, list) and all(isinstance(h, dict) and "_target_" in h for h in handlers), cfg
    p = _parser(bundle, "train.json")
    p["validate#dataset#data"] = [{"image": "a.png", "label": "a_seg.png"}]  # what MONAI Label writes: accepted
    assert p["validate"]["dataset"]["data"][0]["image"] == "a.png"
