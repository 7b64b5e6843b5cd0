#!/usr/bin/env python
"""Drop every bundle into a real MONAI Label server (``monaibundle`` sample app) on 127.0.0.1 and segment with it.

    bash tools/setup_monailabel_env.sh                 # once: MONAI Label's own venv (.venv-monailabel, ~8.5 GB)
    .venv/bin/python tools/monailabel_check.py         # -> monailabel_check/report.json, exit 0 when all pass

Steps (each timed, written to ``<work>/report.json`` and printed as a table):

1. demo data: the synthetic MoNuSeg / MSD / BUSI sets of ``tools/demo.py`` in their official layouts;
2. weights: ``<weights-from>/<bundle>/models/model.pt`` (default ``demo_output``, what ``tools/run_demo.sh``
   leaves), else a brief demo training of the bundle (``train.json`` + ``demo.json``, as the demo does);
3. app: the ``monaibundle`` app copied from the MONAI Label venv; each bundle packaged by
   ``tools/package_bundle.py`` (it carries its ``common`` code; the MONAI Label venv does not have this repository)
   into ``<app>/model/<bundle>/``, with ``configs/demo.json`` folded into its other configs (MONAI Label reads
   ``configs/inference.json`` alone, and the weights are demo-size) and the weights as ``models/model.pt``;
4. studies: the first test image of each demo dataset (2D PNG for MoNuSeg/BUSI, 3D NIfTI for MSD);
5. ``monailabel start_server --app <app> --studies <studies> --conf models <bundles> --conf zoo_source github
   --conf sam2 false`` on 127.0.0.1 (``zoo_source github``: offline, an existing local bundle is used as is, see
   https://github.com/Project-MONAI/MONAILabel/blob/main/monailabel/utils/others/generic.py
   ``get_bundle_models``), offline (``HF_HUB_OFFLINE=1``);
6. ``GET /info/``: every bundle is listed as an inference model with its labels, and as a trainer (MONAI Label
   accepted its ``train.json``); the text-guided bundles expose the ``text`` option (``displayable_configs``);
7. ``POST /infer/<bundle>?image=<id>&output=image`` per bundle (the text-guided ones with a typed ``text``;
   TextDiffSeg also without text and with a prompt that selects one structure): the returned label file must have
   the image's spatial shape (and, for NIfTI, its affine), label values among the bundle's classes, be non-empty
   and overlap the case's ground truth (foreground Dice >= 0.5: a transposed or shifted label fails);
8. the server is stopped (SIGTERM to its process group, SIGKILL after 20 s);
9. ``/train`` (unless ``--skip-train``): MONAI Label has one datastore per server, so each bundle gets its own server
   whose datastore holds 8 training cases of its dataset (images + ``labels/final``); ``POST
   /train/<bundle>?run_sync=true`` for one epoch with MONAI Label's defaults (val_split 0.2, fine-tuning the served
   ``models/model.pt``, which must be rewritten), then ``/infer`` on a datastore image must still return a valid
   label (Dice reported, not required: one epoch on 6 images may move it).

``--load N`` adds, after step 7, a load phase on the same server: per bundle, N ``/infer`` requests of its first
request sent at once (N threads released together; each with a time limit, so the phase ends by itself), every one
must succeed with a label equal, voxel for voxel, to the sequential one; p50 / p95 / max latency are reported, and
the server's peak resident memory (its whole process tree, sampled every 0.1 s over the phase).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from common.data.converters.base import file_suffix  # noqa: E402

from tools.demo import prepare_demo_data, run_step  # noqa: E402
from tools.package_bundle import file_sha256, package_bundle  # noqa: E402

#: bundle -> (demo dataset, requests: list of (name, params)); the text of "case" is the test case's own text
REQUESTS: dict[str, list[tuple[str, dict]]] = {
    "textdiff": [("typed text", {"text": "<case text>"})],
    "cdal": [("image only", {})],
    "textdiffseg": [
        ("class prompts (no text)", {}),
        ("typed prompt selects the kidney", {"text": "A computerized tomography of a kidney."}),
    ],
    "diffboost": [("image only", {})],
}
#: labels a request may return: (allowed values, values that must be absent)
EXPECTED_VALUES = {"typed prompt selects the kidney": ({0, 1}, {2})}


@dataclass
class Check:
    bundle: str
    request: str
    ok: bool = False
    seconds: float | None = None
    detail: str = ""
    label_file: str | None = None


@dataclass
class Report:
    venv: str
    bundles: list[str]
    timings_s: dict[str, float] = field(default_factory=dict)
    info_ok: bool = False
    info_detail: str = ""
    checks: list[Check] = field(default_factory=list)
    server_log: str = ""
    load: list[dict] = field(default_factory=list)
    load_peak_rss_mb: float | None = None

    @property
    def ok(self) -> bool:
        return self.info_ok and bool(self.checks) and all(c.ok for c in self.checks)


#: train.json settings for fine-tuning inside MONAI Label on top of demo.json (whose settings train from scratch):
#: - DiffBoost fine-tunes its segmentation network (stage (d)) on the datastore's images alone -- the demo's chained
#:   ControlNet + synthesis stages need the datalist of the CLI run, and synthetic images exist only after stage
#:   (c) -- writing models/model.pt, the file MONAI Label serves;
#: - TextDiff at the paper's learning rate 1e-4: the datastore has no text, so every image gets default_text, and
#:   with the demo's from-scratch 1e-3 three Adam steps on one constant text collapse the head (validation Dice
#:   0.92 -> 0.05, measured; 0.88 at 1e-4, 0.87 at 1e-3 with per-case texts).
MONAILABEL_TRAIN = {
    "diffboost": {"use_synthetic": False, "model_name": "model.pt"},
    "textdiff": {"learning_rate": 0.0001},
}


def fold_demo_overrides(bundle_dir: Path, train_extra: dict | None = None) -> None:
    """Merge ``configs/demo.json`` (top-level keys only, bundles/README.md) into the bundle's other JSON configs,
    so that a reader of ``inference.json`` alone (MONAI Label) gets the demo-size settings; ``train_extra`` goes on
    top of ``train.json``."""
    demo_path = bundle_dir / "configs" / "demo.json"
    demo = json.loads(demo_path.read_text())
    for name in ("inference.json", "train.json", "evaluate.json"):
        path = bundle_dir / "configs" / name
        if path.is_file():
            config = json.loads(path.read_text())
            config.update({k: v for k, v in demo.items() if k != "demo_dataset"})
            if name == "train.json":
                config.update(train_extra or {})
            path.write_text(json.dumps(config, indent=2) + "\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(
    url: str, data: bytes | None = None, headers: dict | None = None, timeout: float = 600
) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def multipart(fields: dict[str, str]) -> tuple[bytes, str]:
    """``multipart/form-data`` body of text fields (MONAI Label's ``params`` form field)."""
    boundary = uuid.uuid4().hex
    parts = []
    for k, v in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode())
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def load_spatial(path: Path):
    """(array with the channel first, affine) as MONAI reads ``path``."""
    from monai.transforms import LoadImage

    img = LoadImage(image_only=True, ensure_channel_first=True)(str(path))
    return img.numpy(), img.affine.numpy()


#: least foreground Dice against the case's ground truth: the demo-trained models score 0.7-0.9 (README), a label
#: that is transposed, flipped or shifted against the image scores far lower
MIN_DICE = 0.5


def check_label(
    label_path: Path,
    image_path: Path,
    truth_path: Path | None,
    n_classes: int,
    expect: tuple[set, set] | None,
    min_dice: float | None = MIN_DICE,
) -> tuple[bool, str]:
    import numpy as np

    label, label_affine = load_spatial(label_path)
    image, image_affine = load_spatial(image_path)
    problems = []
    if label.shape[0] != 1:
        problems.append(f"{label.shape[0]} channels, expected one label map")
    if tuple(label.shape[1:]) != tuple(image.shape[1:]):
        problems.append(f"spatial shape {tuple(label.shape[1:])} != image {tuple(image.shape[1:])}")
    if label_path.name.endswith((".nii", ".nii.gz")) and image_path.name.endswith((".nii", ".nii.gz")):
        if not np.allclose(label_affine, image_affine, atol=1e-3):
            problems.append(f"affine differs from the image's:\n{label_affine}\nvs\n{image_affine}")
    values = {int(v) for v in np.unique(np.rint(label))}
    allowed, absent = expect if expect else (set(range(n_classes)), set())
    if not values <= allowed:
        problems.append(f"label values {sorted(values)} outside {sorted(allowed)}")
    if values & absent:
        problems.append(f"label values {sorted(values & absent)} should be absent")
    fg = int((np.rint(label) > 0).sum())
    if fg == 0:
        problems.append("empty label (no foreground voxel)")
    detail = f"shape {tuple(label.shape[1:])}, values {sorted(values)}, foreground {fg} of {label[0].size}"
    if truth_path is not None and not problems:
        truth, _ = load_spatial(truth_path)
        a, b = np.rint(label[0]) > 0, np.rint(truth[0]) > 0
        dice = 2.0 * (a & b).sum() / max(a.sum() + b.sum(), 1)
        detail += f", foreground Dice vs ground truth {dice:.3f}"
        if min_dice is not None and dice < min_dice:
            problems.append(f"foreground Dice {dice:.3f} < {min_dice} (misaligned or wrong label?)")
    return not problems, detail + ("; " + "; ".join(problems) if problems else "")


def infer_and_check(
    base: str,
    bundle: str,
    name: str,
    params: dict,
    image_id: str,
    image_path: Path,
    case: dict,
    n_classes: int,
    labels_dir: Path,
    min_dice: float | None = MIN_DICE,
) -> Check:
    """``POST /infer/<bundle>?image=<id>&output=image`` and :func:`check_label` on the returned file."""
    check = Check(bundle, name)
    body, ctype = multipart({"params": json.dumps({**params, "device": "cpu"})})
    query = urllib.parse.urlencode({"image": image_id, "output": "image"})
    t = time.perf_counter()
    status, headers, content = http(f"{base}/infer/{bundle}?{query}", body, {"Content-Type": ctype})
    check.seconds = time.perf_counter() - t
    if status != 200:
        check.detail = f"HTTP {status}: {content[:2000].decode(errors='replace')}"
        return check
    disposition = headers.get("content-disposition") or headers.get("Content-Disposition") or ""
    fname = disposition.split("filename=")[-1].strip('"; ') if "filename=" in disposition else "label.nii.gz"
    ext = file_suffix(fname)
    label_path = labels_dir / f"{bundle}_{name.replace(' ', '_').replace('(', '').replace(')', '')}{ext}"
    label_path.write_bytes(content)
    check.label_file = str(label_path)
    try:
        truth = Path(case["label"]) if case.get("label") else None
        check.ok, check.detail = check_label(
            label_path, image_path, truth, n_classes, EXPECTED_VALUES.get(name), min_dice
        )
    except Exception as e:  # noqa: BLE001 - reported, not raised
        check.detail = f"unreadable label file {label_path}: {type(e).__name__}: {e}"
    return check


def _tree_rss_bytes(root: int) -> int:
    """Resident memory of process ``root`` and all its descendants (Linux ``/proc``)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


class PeakRSS:
    """Sample the resident memory of a process tree every ``interval`` s in a thread; ``peak`` in bytes."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        import threading

        self.pid, self.interval, self.peak = pid, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _tree_rss_bytes(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1)))))
    return ordered[k]


def load_and_check(
    base: str, bundle: str, name: str, params: dict, image_id: str, reference: Path, n: int, timeout: float
) -> tuple[Check, dict]:
    """``n`` concurrent ``POST /infer/<bundle>`` of one request; all must return HTTP 200 and a label equal to the
    sequential ``reference``. Returns the check and ``{"bundle", "request", "n", "ok", "equal", "p50_s", "p95_s",
    "max_s", "wall_s"}``."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    body, ctype = multipart({"params": json.dumps({**params, "device": "cpu"})})
    query = urllib.parse.urlencode({"image": image_id, "output": "image"})
    expected = load_spatial(reference)[0]
    start = threading.Barrier(n)
    folder = reference.parent / f"load_{bundle}"
    folder.mkdir(exist_ok=True)

    def one(i: int) -> tuple[float, int, bool, str]:
        start.wait(timeout=60)
        t = time.perf_counter()
        try:
            status, _, content = http(f"{base}/infer/{bundle}?{query}", body, {"Content-Type": ctype}, timeout)
        except (urllib.error.URLError, ConnectionError, socket.timeout, TimeoutError) as e:
            return time.perf_counter() - t, 0, False, f"{type(e).__name__}: {e}"
        seconds = time.perf_counter() - t
        if status != 200:
            return seconds, status, False, content[:300].decode(errors="replace")
        out = folder / f"{i}{file_suffix(reference)}"
        out.write_bytes(content)
        try:
            same = bool(np.array_equal(load_spatial(out)[0], expected))
        except Exception as e:  # noqa: BLE001 - reported
            return seconds, status, False, f"unreadable label: {e}"
        return seconds, status, same, "" if same else "label differs from the sequential one"

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(one, range(n)))
    wall = time.perf_counter() - t0
    latencies = [r[0] for r in results]
    ok200 = sum(r[1] == 200 for r in results)
    equal = sum(r[2] for r in results)
    row = {
        "bundle": bundle,
        "request": name,
        "n": n,
        "ok": ok200,
        "equal": equal,
        "p50_s": round(_percentile(latencies, 50), 2),
        "p95_s": round(_percentile(latencies, 95), 2),
        "max_s": round(max(latencies), 2),
        "wall_s": round(wall, 2),
    }
    problems = sorted({r[3] for r in results if r[3]})
    check = Check(bundle, f"load: {n} concurrent [{name}]", ok200 == n and equal == n, wall)
    check.detail = (
        f"{ok200}/{n} HTTP 200, {equal}/{n} equal to the sequential label; latency p50 {row['p50_s']} s, p95 "
        f"{row['p95_s']} s, max {row['max_s']} s" + (f"; {'; '.join(problems)[:500]}" if problems else "")
    )
    return check, row


def train_and_check(
    venv: Path, app: Path, work: Path, bundle: str, cases: list[dict], port: int, timeout: float
) -> list[Check]:
    """A server whose datastore holds ``cases`` (images + ``labels/final``) of the bundle's dataset; ``POST
    /train/<bundle>?run_sync=true`` with MONAI Label's defaults (``val_split`` 0.2, pretrained ``models/model.pt``)
    for one epoch; the served ``models/model.pt`` must change, and ``/infer`` must still return a valid label."""
    studies = work / "train_studies" / bundle
    (studies / "labels" / "final").mkdir(parents=True)
    ids = []
    for case in cases:
        image, label = Path(case["image"]), Path(case["label"])
        suffix, lsuffix = file_suffix(image), file_suffix(label)
        shutil.copy2(image, studies / f"{case['case_id']}{suffix}")
        shutil.copy2(label, studies / "labels" / "final" / f"{case['case_id']}{lsuffix}")
        ids.append((case["case_id"], studies / f"{case['case_id']}{suffix}", case))
    model = app / "model" / bundle / "models" / "model.pt"
    before = file_sha256(model)
    base = f"http://127.0.0.1:{port}"
    log = work / f"server_train_{bundle}.log"
    proc = start_server(venv, app, studies, [bundle], port, log)
    checks = []
    try:
        wait_for_info(base, proc, timeout, log)
        check = Check(bundle, "train 1 epoch (val_split 0.2)")
        t = time.perf_counter()
        body = json.dumps({"max_epochs": 1, "device": "cpu", "multi_gpu": False}).encode()
        status, _, content = http(f"{base}/train/{bundle}?run_sync=true", body, {"Content-Type": "application/json"})
        check.seconds = time.perf_counter() - t
        changed = model.is_file() and file_sha256(model) != before
        check.ok = status == 200 and changed
        check.detail = f"HTTP {status}, models/model.pt {'rewritten' if changed else 'NOT changed'}" + (
            "" if status == 200 else f": {content[:1500].decode(errors='replace')}; log {log}"
        )
        checks.append(check)
        image_id, image_path, case = ids[0]
        n_classes = 3 if bundle == "textdiffseg" else 2
        params = {"text": case["text"]} if bundle == "textdiff" else {}
        labels_dir = work / "labels_after_training"
        labels_dir.mkdir(exist_ok=True)
        checks.append(
            infer_and_check(
                base,
                bundle,
                "infer after training",
                params,
                image_id,
                image_path,
                case,
                n_classes,
                labels_dir,
                min_dice=None,
            )
        )
    except RuntimeError as e:
        checks.append(Check(bundle, "train 1 epoch (val_split 0.2)", False, None, str(e)))
    finally:
        stop_server(proc)
    return checks


def start_server(venv: Path, app: Path, studies: Path, bundles: list[str], port: int, log: Path) -> subprocess.Popen:
    cmd = [
        str(venv / "bin" / "monailabel"),
        "start_server",
        "--app",
        str(app),
        "--studies",
        str(studies),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--conf",
        "models",
        ",".join(bundles),
        "--conf",
        "zoo_source",
        "github",
        "--conf",
        "sam2",
        "false",
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PYTHONUNBUFFERED="1",
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        BUNDLE_DOWNLOAD_SRC="github",
    )
    fh = open(log, "w")
    fh.write("$ " + " ".join(cmd) + "\n")
    fh.flush()
    return subprocess.Popen(cmd, cwd=app.parent, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=20)
    except ProcessLookupError:
        pass


def wait_for_info(base: str, proc: subprocess.Popen, timeout: float, log: Path) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}; log tail:\n{_tail(log)}")
        try:
            status, _, body = http(base + "/info/", timeout=10)
            if status == 200:
                return json.loads(body)
        except (urllib.error.URLError, ConnectionError, socket.timeout, TimeoutError):
            pass
        time.sleep(2)
    raise RuntimeError(f"no answer from {base}/info/ within {timeout:.0f} s; log tail:\n{_tail(log)}")


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def check_info(info: dict, bundles: list[str]) -> tuple[bool, str]:
    models, trainers = info.get("models", {}), info.get("trainers", {})
    problems, seen = [], []
    for b in bundles:
        m = models.get(b)
        if m is None:
            problems.append(f"{b}: not among the models {sorted(models)}")
            continue
        labels = m.get("labels")
        if not labels:
            problems.append(f"{b}: no labels")
        if b in ("textdiff", "textdiffseg") and "text" not in (m.get("config") or {}):
            problems.append(f"{b}: the 'text' option is not exposed (config {m.get('config')})")
        if b not in trainers:
            problems.append(f"{b}: no trainer (train.json not accepted)")
        seen.append(f"{b}: {m.get('type')} {m.get('dimension')}D labels {labels}")
    return not problems, "; ".join(problems) if problems else " | ".join(seen)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--venv", default=str(REPO_ROOT / ".venv-monailabel"), help="MONAI Label's virtual environment")
    ap.add_argument("--work", default=str(REPO_ROOT / "monailabel_check"), help="output folder (recreated)")
    ap.add_argument(
        "--weights-from",
        default=str(REPO_ROOT / "demo_output"),
        help="folder with <bundle>/models/model.pt from tools/demo.py; missing ones are trained briefly",
    )
    ap.add_argument("--bundles", nargs="*", default=list(REQUESTS), help="bundles to serve (default: all four)")
    ap.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: a free one)")
    ap.add_argument("--startup-timeout", type=float, default=600.0)
    ap.add_argument("--skip-train", action="store_true", help="skip the /train phase (one extra server per bundle)")
    ap.add_argument("--load", type=int, default=0, metavar="N", help="N concurrent /infer requests per bundle (0: off)")
    ap.add_argument("--load-timeout", type=float, default=1800.0, help="time limit of each load request (s)")
    args = ap.parse_args(argv)
    if not 0 <= args.load <= 64:
        print("error: --load must be between 0 and 64 (the check is bounded)", file=sys.stderr)
        return 2

    venv, work = Path(args.venv).resolve(), Path(args.work).resolve()
    if not (venv / "bin" / "monailabel").is_file():
        print(
            f"error: {venv}/bin/monailabel not found: run `bash tools/setup_monailabel_env.sh` first (or pass --venv)",
            file=sys.stderr,
        )
        return 2
    unknown = [b for b in args.bundles if b not in REQUESTS]
    if unknown:
        print(f"error: unknown bundles {unknown}; known: {sorted(REQUESTS)}", file=sys.stderr)
        return 2
    if work.exists():
        if any(work.iterdir()) and not (work / "report.json").is_file() and not (work / "app").is_dir():
            print(
                f"error: {work} is not empty and is not an earlier check's output folder; pass another --work",
                file=sys.stderr,
            )
            return 2
        shutil.rmtree(work)
    work.mkdir(parents=True)
    report = Report(str(venv), list(args.bundles))
    t_all = time.perf_counter()

    t = time.perf_counter()
    print("[monailabel] 1/9 demo data", flush=True)
    datalists = prepare_demo_data(work / "data")
    report.timings_s["data"] = time.perf_counter() - t

    t = time.perf_counter()
    print("[monailabel] 2/9 weights", flush=True)
    from common.data import load_datalist
    from common.utils.bundles import bundle_run_paths

    weights: dict[str, Path] = {}
    for b in args.bundles:
        found = Path(args.weights_from) / b / "models" / "model.pt"
        if found.is_file():
            weights[b] = found
            print(f"[monailabel]   {b}: {found}", flush=True)
            continue
        bundle = REPO_ROOT / "bundles" / b
        dataset = json.loads((bundle / "configs" / "demo.json").read_text())["demo_dataset"]
        out = work / "train" / b
        overrides = bundle_run_paths(datalists[dataset], out)
        if b == "diffboost":  # its demo chains four stages (tools/demo.py); the served segmenter alone: the baseline
            overrides.update({k: str(v) for k, v in MONAILABEL_TRAIN["diffboost"].items()})
        print(f"[monailabel]   {b}: no {found}, training briefly on the demo data ...", flush=True)
        r = run_step(bundle, ["configs/train.json", "configs/demo.json"], overrides, out / "train.log")
        if r.returncode != 0:
            print(f"error: training {b} failed, see {r.log}\n{_tail(Path(r.log))}", file=sys.stderr)
            return 1
        weights[b] = out / "models" / "model.pt"
    report.timings_s["weights"] = time.perf_counter() - t

    t = time.perf_counter()
    print("[monailabel] 3/9 app with the packaged bundles", flush=True)
    app = work / "app"
    shutil.copytree(venv / "monailabel" / "sample-apps" / "monaibundle", app)
    (app / "model").mkdir(exist_ok=True)
    for b in args.bundles:
        dest, _ = package_bundle(REPO_ROOT / "bundles" / b, work / "packages")
        target = app / "model" / b
        shutil.copytree(dest, target)
        fold_demo_overrides(target, MONAILABEL_TRAIN.get(b))
        (target / "models").mkdir(exist_ok=True)
        shutil.copy2(weights[b], target / "models" / "model.pt")
    report.timings_s["app"] = time.perf_counter() - t

    print("[monailabel] 4/9 studies", flush=True)
    studies = work / "studies"
    studies.mkdir()
    images: dict[str, tuple[str, Path, dict]] = {}
    for b in args.bundles:
        dataset = json.loads((REPO_ROOT / "bundles" / b / "configs" / "demo.json").read_text())["demo_dataset"]
        case = load_datalist(datalists[dataset], "test")[0]
        src = Path(case["image"])
        suffix = file_suffix(src)
        image_id = f"{dataset}_{case['case_id']}"
        dst = studies / f"{image_id}{suffix}"
        if not dst.exists():
            shutil.copy2(src, dst)
        images[b] = (image_id, dst, case)

    port = args.port or free_port()
    base = f"http://127.0.0.1:{port}"
    log = work / "server.log"
    report.server_log = str(log)
    print(f"[monailabel] 5/9 monailabel start_server on {base} (log {log})", flush=True)
    t = time.perf_counter()
    proc = start_server(venv, app, studies, args.bundles, port, log)
    try:
        info = wait_for_info(base, proc, args.startup_timeout, log)
        report.timings_s["server_start"] = time.perf_counter() - t
        print(f"[monailabel]   server up in {report.timings_s['server_start']:.1f} s", flush=True)
        print("[monailabel] 6/9 /info", flush=True)
        report.info_ok, report.info_detail = check_info(info, args.bundles)
        print(f"[monailabel]   {'ok' if report.info_ok else 'FAILED'}: {report.info_detail}", flush=True)
        (work / "info.json").write_text(json.dumps(info, indent=2))

        print("[monailabel] 7/9 /infer", flush=True)
        labels_dir = work / "labels"
        labels_dir.mkdir()
        for b in args.bundles:
            image_id, image_path, case = images[b]
            n_classes = len(info.get("models", {}).get(b, {}).get("labels") or {}) + 1
            for name, params in REQUESTS[b]:
                params = {k: (case.get("text") if v == "<case text>" else v) for k, v in params.items()}
                check = infer_and_check(base, b, name, params, image_id, image_path, case, n_classes, labels_dir)
                report.checks.append(check)
                print(
                    f"[monailabel]   {b} [{name}] {'ok' if check.ok else 'FAILED'} in {check.seconds:.1f} s: "
                    f"{check.detail}",
                    flush=True,
                )
        if args.load:
            print(f"[monailabel] 7b/9 load: {args.load} concurrent /infer per bundle", flush=True)
            t = time.perf_counter()
            with PeakRSS(proc.pid) as rss:
                for b in args.bundles:
                    first = next((c for c in report.checks if c.bundle == b and c.label_file), None)
                    if first is None or not first.ok:
                        report.checks.append(Check(b, "load", False, None, "no valid sequential label to compare"))
                        continue
                    name, params = REQUESTS[b][0]
                    image_id, _, case = images[b]
                    params = {k: (case.get("text") if v == "<case text>" else v) for k, v in params.items()}
                    check, row = load_and_check(
                        base, b, name, params, image_id, Path(first.label_file), args.load, args.load_timeout
                    )
                    report.checks.append(check)
                    report.load.append(row)
                    print(f"[monailabel]   {b} {'ok' if check.ok else 'FAILED'}: {check.detail}", flush=True)
            report.load_peak_rss_mb = round(rss.peak / 2**20, 1)
            report.timings_s["load"] = time.perf_counter() - t
            print(f"[monailabel]   server peak RSS over the load phase: {report.load_peak_rss_mb} MiB", flush=True)
    except RuntimeError as e:
        report.info_detail = report.info_detail or str(e)
        print(f"error: {e}", file=sys.stderr)
    finally:
        print("[monailabel] 8/9 stopping the server", flush=True)
        stop_server(proc)
    if not args.skip_train and report.info_ok:
        print(
            "[monailabel] 9/9 /train: one server per bundle, its dataset's training cases in the datastore", flush=True
        )
        t = time.perf_counter()
        for b in args.bundles:
            dataset = json.loads((REPO_ROOT / "bundles" / b / "configs" / "demo.json").read_text())["demo_dataset"]
            cases = load_datalist(datalists[dataset], "training")[:8]
            for check in train_and_check(venv, app, work, b, cases, free_port(), args.startup_timeout):
                report.checks.append(check)
                print(
                    f"[monailabel]   {b} [{check.request}] {'ok' if check.ok else 'FAILED'} in "
                    f"{check.seconds or 0:.1f} s: {check.detail}",
                    flush=True,
                )
        report.timings_s["train_phase"] = time.perf_counter() - t
    report.timings_s["total"] = time.perf_counter() - t_all
    (work / "report.json").write_text(json.dumps({**asdict(report), "ok": report.ok}, indent=2))
    print("\n| bundle | request | result | seconds | detail |\n|---|---|---|---|---|")
    for c in report.checks:
        print(f"| {c.bundle} | {c.request} | {'ok' if c.ok else 'FAILED'} | {c.seconds or 0:.1f} | {c.detail} |")
    if report.load:
        print(
            "\n| bundle | request | concurrent | HTTP 200 | equal | p50 s | p95 s | max s |\n"
            "|---|---|---|---|---|---|---|---|"
        )
        for row in report.load:
            print(
                f"| {row['bundle']} | {row['request']} | {row['n']} | {row['ok']} | {row['equal']} | {row['p50_s']} | "
                f"{row['p95_s']} | {row['max_s']} |"
            )
        print(f"server peak RSS (process tree, sampled every 0.1 s): {report.load_peak_rss_mb} MiB")
    print(
        f"\n/info: {'ok' if report.info_ok else 'FAILED'}; timings (s): "
        + ", ".join(f"{k} {v:.1f}" for k, v in report.timings_s.items())
    )
    print(f"{'PASSED' if report.ok else 'FAILED'}: report {work / 'report.json'}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
