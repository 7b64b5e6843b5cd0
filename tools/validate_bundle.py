#!/usr/bin/env python
"""Validate a bundle of this collection against the bundle contract (``bundles/README.md``).

    python tools/validate_bundle.py bundles/<name> [--override configs/demo.json] [--standins DIR] [--no-network-check]

Checks, in order (each prints PASS/FAIL with the reason; exit code 1 if any fails):

1. layout      -- the model-zoo files exist (``configs/{metadata,train,inference,evaluate,multi_gpu_train,demo}.json``,
                  ``configs/logging.conf``, ``docs/README.md``, ``large_files.yml``, ``LICENSE``).
2. metadata    -- ``configs/metadata.json`` is valid JSON, validates against the metadata schema kept in this
                  repository (``common/schemas/bundle_metadata_schema.json``, no network), ``version`` is a key of
                  ``changelog``, and ``network_data_format`` has an ``image`` input and a ``pred`` output.
3. configs     -- every config parses alone or merged on its base (``multi_gpu_train`` on ``train``,
                  ``evaluate`` on ``inference``; ``demo`` on each of them), holds the contract's top-level keys, and
                  every ``@reference`` reachable from ``initialize``/``run``/``finalize``/``network_def``/``inferer``
                  names an id that exists.
4. network     -- ``network_def`` of ``inference.json`` (optionally with ``--override`` merged on top) instantiates
                  on CPU and maps a ``(1, num_channels, *spatial_shape)`` input of the metadata's dtype to an output
                  with ``pred.num_channels`` channels and the same spatial shape. Networks whose forward needs more
                  than the image (diffusion UNets need timesteps and context) are checked through the config's
                  ``inferer`` called as MONAI Label calls it: ``inferer(image, network)``. Without ``--override``
                  this is the PAPER-SCALE network; its pretrained parts (TextDiff's ADM UNet and text encoder,
                  TextDiffSeg's text encoder) come from their configured locations, or from the random-weight
                  stand-ins of ``tools/make_standins.py`` with ``--standins DIR``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = REPO_ROOT / "common" / "schemas" / "bundle_metadata_schema.json"

REQUIRED_FILES = (
    "configs/metadata.json",
    "configs/train.json",
    "configs/inference.json",
    "configs/evaluate.json",
    "configs/multi_gpu_train.json",
    "configs/demo.json",
    "configs/logging.conf",
    "docs/README.md",
    "large_files.yml",
    "LICENSE",
)
# config file -> the config files it is merged on (in order); demo.json is additionally merged on each.
CONFIG_BASES: dict[str, tuple[str, ...]] = {
    "train.json": (),
    "multi_gpu_train.json": ("train.json",),
    "inference.json": (),
    "evaluate.json": ("inference.json",),
}
CONTRACT_KEYS: dict[str, tuple[str, ...]] = {
    "train.json": ("bundle_root", "dataset_dir", "datalist", "output_dir", "device", "network_def", "run"),
    "inference.json": (
        "bundle_root",
        "dataset_dir",
        "datalist",
        "output_dir",
        "device",
        "network_def",
        "inferer",
        "run",
    ),
    "evaluate.json": ("run",),
    "multi_gpu_train.json": ("device", "run"),
}
ENTRY_IDS = ("initialize", "run", "finalize", "network_def", "inferer")
#: the prompt of the network check for text-guided bundles whose config has no default text (MONAI Label's typed
#: ``text`` option, ``displayable_configs#text``)
EXAMPLE_TEXT = "Example report text for the network check."
REF_PATTERN = re.compile(r"@((?:\w+(?:#|::))*\w+)")


@dataclass
class Report:
    """Accumulates PASS/FAIL lines of one validation run."""

    lines: list[str] = field(default_factory=list)
    failed: bool = False

    def ok(self, check: str, detail: str = "") -> None:
        self.lines.append(f"[PASS] {check}" + (f": {detail}" if detail else ""))

    def fail(self, check: str, detail: str) -> None:
        self.failed = True
        self.lines.append(f"[FAIL] {check}: {detail}")

    def __str__(self) -> str:
        return "\n".join(self.lines)


def _load_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def check_layout(bundle: Path, report: Report) -> None:
    missing = [p for p in REQUIRED_FILES if not (bundle / p).is_file()]
    if missing:
        report.fail("layout", f"{bundle}: missing {', '.join(missing)} (see bundles/README.md)")
    else:
        report.ok("layout", f"{len(REQUIRED_FILES)} required files present")


def check_metadata(bundle: Path, report: Report) -> dict | None:
    path = bundle / "configs" / "metadata.json"
    if not path.is_file():
        report.fail("metadata", f"{path}: file not found")
        return None
    try:
        meta = _load_json(path)
    except json.JSONDecodeError as e:
        report.fail("metadata", f"{path}: not valid JSON ({e})")
        return None
    import jsonschema

    validator = jsonschema.Draft7Validator(_load_json(SCHEMA_PATH))
    errors = sorted(validator.iter_errors(meta), key=lambda e: list(e.absolute_path))
    if errors:
        msgs = "; ".join(f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors[:6])
        report.fail("metadata", f"{path}: {len(errors)} schema error(s): {msgs}")
        return None
    if meta["version"] not in meta["changelog"]:
        report.fail("metadata", f"{path}: version {meta['version']!r} is not a key of changelog")
        return None
    report.ok("metadata", f"version {meta['version']}, schema valid")
    return meta


def _merged(bundle: Path, name: str, override: str | None) -> tuple[list[Path], dict]:
    from monai.bundle import ConfigParser

    files = [bundle / "configs" / b for b in CONFIG_BASES.get(name, ())] + [bundle / "configs" / name]
    if override:
        files.append(bundle / override if not Path(override).is_absolute() else Path(override))
    return files, ConfigParser.load_config_files([str(f) for f in files])


def _refs_in(value: Any) -> set[str]:
    refs: set[str] = set()
    if isinstance(value, str):
        refs.update(m.replace("::", "#") for m in REF_PATTERN.findall(value))
    elif isinstance(value, dict):
        for v in value.values():
            refs |= _refs_in(v)
    elif isinstance(value, list):
        for v in value:
            refs |= _refs_in(v)
    return refs


def dangling_references(config: dict) -> list[tuple[str, str]]:
    """Return ``(referring id, missing id)`` pairs for references reachable from the entry ids."""
    from monai.bundle import ConfigParser

    parser = ConfigParser(config)
    todo = [i for i in ENTRY_IDS if i in parser]
    seen: set[str] = set()
    missing: list[tuple[str, str]] = []
    while todo:
        cid = todo.pop()
        if cid in seen:
            continue
        seen.add(cid)
        for ref in _refs_in(parser[cid]):
            if ref == "_meta_" or ref.startswith("_meta_#"):
                continue
            if ref in parser:
                todo.append(ref)
            else:
                missing.append((cid, ref))
    return missing


def check_configs(bundle: Path, report: Report, override: str | None) -> None:
    demo = "configs/demo.json"
    for name in CONFIG_BASES:
        for ov in (None, demo):
            label = name + (" + demo.json" if ov else "")
            try:
                files, config = _merged(bundle, name, ov)
            except Exception as e:  # noqa: BLE001 -- report any parse failure with its file
                report.fail("configs", f"{bundle / 'configs' / name}{' merged with ' + ov if ov else ''}: {e}")
                continue
            absent = [k for k in CONTRACT_KEYS.get(name, ()) if k not in config]
            if absent:
                report.fail("configs", f"{files[-1]}: missing contract key(s) {absent} ({label})")
                continue
            dangling = dangling_references(config)
            if dangling:
                shown = ", ".join(f"'{a}' -> '@{b}'" for a, b in dangling[:5])
                report.fail("configs", f"{files[-1]}: reference(s) to missing id(s) {shown} ({label})")
                continue
            report.ok("configs", label)
    if override and override != demo:
        try:
            _merged(bundle, "inference.json", override)
        except Exception as e:  # noqa: BLE001
            report.fail("configs", f"{override}: does not merge on inference.json: {e}")


def _resolve_shape(shape: list, default: int) -> list[int]:
    """Concrete sizes for a metadata ``spatial_shape``: ints as given; ``"*"`` -> ``default``;
    expressions such as ``"16*n"`` or ``"2**n"`` evaluated with ``n = p = 4`` (as ``verify_net_in_out`` does)."""
    out = []
    for s in shape:
        if isinstance(s, int):
            out.append(s)
        elif s == "*":
            out.append(default)
        else:
            out.append(int(eval(str(s), {"__builtins__": {}}, {"n": 4, "p": 4, "any": default})))  # noqa: S307
    return out


def _scripts_modules() -> dict[str, Any]:
    return {k: sys.modules.pop(k) for k in list(sys.modules) if k == "scripts" or k.startswith("scripts.")}


def check_network(
    bundle: Path, meta: dict, report: Report, override: str | None, standins: str | Path | None = None
) -> None:
    """Run :func:`_check_network` with the bundle's ``scripts`` package importable (as ``monai.bundle run`` puts the
    bundle root on ``sys.path``); another bundle's cached ``scripts`` modules and ``sys.path`` are restored after."""
    saved = _scripts_modules()
    sys.path.insert(0, str(bundle))
    try:
        _check_network(bundle, meta, report, override, standins)
    finally:
        sys.path.remove(str(bundle))
        _scripts_modules()
        sys.modules.update(saved)


def _check_network(
    bundle: Path, meta: dict, report: Report, override: str | None, standins: str | Path | None = None
) -> None:
    import torch
    from monai.bundle import ConfigParser

    try:
        _, config = _merged(bundle, "inference.json", override)
        parser = ConfigParser(config)
        parser["device"] = "$torch.device('cpu')"
        parser["bundle_root"] = str(bundle)
        if standins is not None:
            from common.standins import standin_overrides

            for key, path in standin_overrides(standins).items():
                if key in parser:
                    parser[key] = path
        net = parser.get_parsed_content("network_def")
    except Exception as e:  # noqa: BLE001
        report.fail("network", f"{bundle / 'configs/inference.json'}: network_def does not instantiate: {e}")
        return
    if not isinstance(net, torch.nn.Module):
        report.fail("network", f"network_def is a {type(net).__name__}, not a torch.nn.Module")
        return
    fmt = meta["network_data_format"]
    spec_in, spec_out = fmt["inputs"]["image"], fmt["outputs"]["pred"]
    shape = _resolve_shape(spec_in["spatial_shape"], default=64)
    dtype = getattr(torch, spec_in["dtype"])
    x = torch.rand(1, spec_in["num_channels"], *shape).to(dtype)
    net.eval()
    how = "network_def(image)"
    try:
        with torch.no_grad():
            try:
                y = net(x)
            except TypeError:
                how = "inferer(image, network_def)"
                if (
                    "displayable_configs#text" in parser
                    and parser.get_parsed_content("displayable_configs#text") is None
                ):
                    # text-guided bundle without a default prompt (a case without text is an error by design)
                    parser["displayable_configs#text"] = EXAMPLE_TEXT
                    how += f" with the text {EXAMPLE_TEXT!r}"
                inferer = parser.get_parsed_content("inferer")
                y = inferer(x, net)
    except Exception as e:  # noqa: BLE001
        report.fail("network", f"{how} failed on input {tuple(x.shape)}: {type(e).__name__}: {e}")
        return
    if isinstance(y, (tuple, list)):
        y = y[0]
    if isinstance(y, dict):
        y = y.get("pred", next(iter(y.values())))
    expected = (1, spec_out["num_channels"], *shape)
    if tuple(y.shape) != expected:
        report.fail("network", f"{how}: input {tuple(x.shape)} gave output {tuple(y.shape)}, metadata says {expected}")
        return
    n_params = sum(p.numel() for p in net.parameters())
    report.ok("network", f"{how}: {tuple(x.shape)} -> {tuple(y.shape)}, {n_params:,} parameters")


def validate_bundle(
    bundle: str | Path, override: str | None = None, network: bool = True, standins: str | Path | None = None
) -> Report:
    """Run all checks on ``bundle`` and return the report (``report.failed`` tells the outcome); ``standins``: the
    folder of ``tools/make_standins.py`` for the pretrained parts of the network check."""
    bundle = Path(bundle).resolve()
    report = Report()
    if not bundle.is_dir():
        report.fail("layout", f"{bundle}: not a folder")
        return report
    check_layout(bundle, report)
    meta = check_metadata(bundle, report)
    if (bundle / "configs").is_dir():
        check_configs(bundle, report, override)
    if network and meta is not None and (bundle / "configs" / "inference.json").is_file():
        check_network(bundle, meta, report, override, standins)
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", help="bundle folder, e.g. bundles/textdiff")
    ap.add_argument(
        "--override",
        default=None,
        help="config merged on inference.json for the network check, "
        "e.g. configs/demo.json (the paper-scale network can be large)",
    )
    ap.add_argument(
        "--standins",
        default=None,
        help="folder written by tools/make_standins.py: the network check "
        "loads the pretrained parts from there (random weights in the official formats)",
    )
    ap.add_argument("--no-network-check", action="store_true", help="skip instantiating network_def")
    args = ap.parse_args(argv)
    report = validate_bundle(args.bundle, args.override, network=not args.no_network_check, standins=args.standins)
    print(report)
    print(f"{'INVALID' if report.failed else 'VALID'}: {Path(args.bundle)}")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
