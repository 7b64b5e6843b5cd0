"""Old monai-generative checkpoints load into MONAI core networks (tools/convert_checkpoint.py generative)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import torch
from common.errors import BadInputError
from common.io.checkpoints import convert_generative_state_dict, load_state_dict_file
from common.utils.bundles import tool_command
from monai.networks.nets import DiffusionModelUNet


def _unet_args(conditioned: bool) -> dict:
    args = dict(
        spatial_dims=2,
        in_channels=1,
        out_channels=1,
        channels=(8, 16),
        attention_levels=(False, True),
        num_res_blocks=1,
        norm_num_groups=8,
        num_head_channels=8,
        include_fc=False,
        use_combined_linear=False,
    )
    if conditioned:
        args.update(with_conditioning=True, cross_attention_dim=4)
    return args


def to_old_names(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The key names monai-generative 0.2 used for the same weights (inverse of ``load_old_state_dict``)."""
    old = {}
    for k, v in sd.items():
        k2 = k.replace("postconv", "conv")
        if "transformer_blocks" in k2:
            k2 = k2.replace(".out_proj.", ".to_out.0.")
        else:
            k2 = re.sub(r"\.attn\.(to_[qkv])\.", r".\1.", k2).replace(".attn.out_proj.", ".proj_attn.")
        old[k2] = v.clone()
    return old


@pytest.mark.parametrize("conditioned", [False, True])
def test_old_keys_convert_to_identical_outputs(conditioned):
    torch.manual_seed(0)
    reference = DiffusionModelUNet(**_unet_args(conditioned)).eval()
    old = to_old_names(reference.state_dict())
    assert set(old) != set(reference.state_dict()), "the fixture must actually use the old names"
    torch.manual_seed(1)
    fresh = DiffusionModelUNet(**_unet_args(conditioned)).eval()
    convert_generative_state_dict(fresh, old)
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([3, 7])
    ctx = torch.randn(2, 5, 4) if conditioned else None
    with torch.no_grad():
        assert torch.equal(reference(x, t, context=ctx), fresh(x, t, context=ctx))


def test_checkpoint_of_another_network_is_rejected_with_key_names():
    torch.manual_seed(0)
    old = to_old_names(DiffusionModelUNet(**_unet_args(False)).state_dict())
    old.pop(next(k for k in old if k.endswith("attentions.0.to_k.weight")))
    with pytest.raises(BadInputError, match="another network"):
        convert_generative_state_dict(DiffusionModelUNet(**_unet_args(False)), old, source="old.pt")
    # extra, unknown keys are not silently dropped either
    old = to_old_names(DiffusionModelUNet(**_unet_args(False)).state_dict())
    old["extra_head.weight"] = torch.zeros(3)
    with pytest.raises(BadInputError, match=r"old.pt: .*1 old key\(s\) unused.*extra_head.weight"):
        convert_generative_state_dict(DiffusionModelUNet(**_unet_args(False)), old, source="old.pt")


def test_corrupt_checkpoint_file_is_named(tmp_path):
    bad = tmp_path / "old.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(BadInputError, match="old.pt: cannot read the checkpoint"):
        load_state_dict_file(bad)


def _convert_cli(tmp_path: Path, dst: Path) -> subprocess.CompletedProcess:
    """``convert_checkpoint.py generative`` of ``tmp_path/old.pt`` with the network of ``tmp_path/net.json``."""
    args = ("generative", "--network", f"{tmp_path / 'net.json'}#network_def", "--src", tmp_path / "old.pt")
    return subprocess.run(
        tool_command("convert_checkpoint.py", *args, "--dst", dst), capture_output=True, text=True, timeout=120
    )


def test_cli_converts_nested_checkpoint(tmp_path):
    torch.manual_seed(0)
    reference = DiffusionModelUNet(**_unet_args(True))
    torch.save({"state_dict": to_old_names(reference.state_dict()), "epoch": 3}, tmp_path / "old.pt")
    cfg = {"network_def": {"_target_": "DiffusionModelUNet", **_unet_args(True)}}
    (tmp_path / "net.json").write_text(json.dumps(cfg))
    out = tmp_path / "model.pt"
    r = _convert_cli(tmp_path, out)
    assert r.returncode == 0, r.stderr
    sd = torch.load(out, weights_only=True)  # a flat state dict, the model zoo's models/model.pt
    assert sd.keys() == reference.state_dict().keys()
    assert all(torch.equal(sd[k], v) for k, v in reference.state_dict().items())
    # a wrong architecture exits non-zero with a clear message, and writes nothing
    cfg["network_def"]["channels"] = [8, 32]
    (tmp_path / "net.json").write_text(json.dumps(cfg))
    r = _convert_cli(tmp_path, tmp_path / "other.pt")
    assert r.returncode == 1 and "another network" in r.stderr and not (tmp_path / "other.pt").exists()


def test_converter_registry_rejects_a_second_converter_under_the_same_name():
    from common.io.checkpoints import _CONVERTERS, register_checkpoint_converter

    def first(args):
        return Path(".")

    def second(args):
        return Path(".")

    try:
        register_checkpoint_converter("_test_name")(first)
        register_checkpoint_converter("_test_name")(first)  # the same function again (module imported twice): fine
        with pytest.raises(ValueError, match="already registered"):
            register_checkpoint_converter("_test_name")(second)
    finally:
        _CONVERTERS.pop("_test_name", None)
