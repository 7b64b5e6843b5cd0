#!/usr/bin/env python
"""Run the MONAI model zoo's own CI on the packaged bundles, offline, and print the check x bundle table.

    bash tools/setup_zoo_ci_env.sh ZOO               # once: a Python 3.10 venv as the zoo's runner has (.zoo-ci-venv)
    python tools/zoo_ci_check.py --zoo ZOO --work /tmp/zoo-ci [--bundles textdiff cdal ...] [--pytype]

``ZOO`` is a checkout (or bare git directory) of https://github.com/Project-MONAI/model-zoo; ``--hooks`` one of
https://github.com/pre-commit/pre-commit-hooks (the repository the zoo's ``.pre-commit-config.yaml`` names). Nothing
of the zoo is copied into this repository: its tree is exported into ``WORK/model-zoo`` and its scripts are run there,
unchanged, with the zoo's configuration files, in the order of its workflows:

1. ``tools/package_bundle.py --zoo-submission``: each bundle packaged with weights of its ``network_def`` (seeded
   initialisation, as the zoo's own ``ci/verify_bundle.py`` ``_produce_fake_weights`` makes them: no trained weights
   are published); the pull-request folder goes to ``models/<name>/`` and the ``ci/bundle_custom_data.py``
   additions it lists are applied (what the pull request would change); files over 25 MB are served from
   ``WORK/submission/large_files`` on a local HTTP server at the ``url`` written in ``large_files.yml``.
2. ``premerge-cpu`` (``ci/run_premerge_cpu.sh``): ``ci/get_changed_bundle.py``, ``ci/prepare_schema.py`` (the
   schema file is put where its download would write it, from ``common/schemas/``: no network here),
   ``ci/get_bundle_requirements.py`` + ``pip install --pre -r`` (``ALLOW_MONAI_RC=true``), ``ci/verify_bundle.py -m
   min``.
3. ``premerge-gpu``'s ``ci/verify_bundle.py -m full`` (properties, ``verify_net_in_out``, ``ckpt_export``); it runs
   on the CPU here.
4. ``code-format-check`` (``runtests.sh --codeformat``): isort, ``black --skip-magic-trailing-comma``, flake8 with the
   zoo's ``setup.cfg`` / ``pyproject.toml``, on ``models/<name>`` (``--pytype`` adds pytype, slow).
5. ``pre-commit run --files`` with the zoo's ``.pre-commit-config.yaml``; its hook repository URL is replaced by the
   local ``--hooks`` clone (same ``rev``), since GitHub cannot be reached, and its ``default_language_version``
   (python3.8, which today's virtualenv can no longer seed) by the runner's Python.

Offline, two things cannot be what the zoo runner does: files of ``large_files.yml`` that come from third parties
(TextDiff's OpenAI ADM checkpoint, 2.2 GB) cannot be downloaded, so an empty stand-in file is put at their path (the
zoo's ``download_large_files`` skips a file that exists when no hash is given, as on a machine that has it); and
``pip install`` resolves from the package registry only. Both are listed in the report.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tools.package_bundle import package_bundle  # noqa: E402

BUNDLES = ("textdiff", "cdal", "textdiffseg", "diffboost")
SCHEMA_DIR = REPO_ROOT / "common" / "schemas"
#: the steps of the table, in order
STEPS = (
    "package",
    "get_changed_bundle",
    "prepare_schema",
    "requirements_py310",
    "verify_min",
    "verify_full",
    "isort",
    "black",
    "flake8",
    "pytype",
    "pre-commit",
)


def _run(cmd: list[str] | str, cwd: Path, env: dict[str, str], log: Path, timeout: int = 3600) -> tuple[bool, str]:
    """Run ``cmd``; append its output to ``log``; return (ok, last output line)."""
    t0 = time.perf_counter()
    r = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, shell=isinstance(cmd, str)
    )
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(f"\n$ {cmd if isinstance(cmd, str) else ' '.join(cmd)}   (cwd {cwd}, rc {r.returncode})\n")
        fh.write(r.stdout + r.stderr)
    lines = [ln for ln in (r.stdout + r.stderr).strip().splitlines() if ln.strip()]
    tail = lines[-1].strip() if lines else ""
    return r.returncode == 0, f"{tail[:200]} ({time.perf_counter() - t0:.0f} s)"


def export_zoo(zoo: Path, dest: Path) -> Path:
    """Export the zoo's HEAD tree into ``dest`` and commit it there (a fresh git repository, so that
    ``git diff`` finds the bundles a pull request adds and pre-commit sees them as added files)."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    git_dir = zoo / ".git" if (zoo / ".git").exists() else zoo
    archive = subprocess.run(["git", "--git-dir", str(git_dir), "archive", "HEAD"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    env = dict(os.environ, GIT_AUTHOR_NAME="ci", GIT_AUTHOR_EMAIL="ci@localhost")
    env.update(GIT_COMMITTER_NAME="ci", GIT_COMMITTER_EMAIL="ci@localhost")
    for cmd in (["git", "init", "-q", "-b", "dev"], ["git", "add", "-A"], ["git", "commit", "-q", "-m", "zoo HEAD"]):
        subprocess.run(cmd, cwd=dest, check=True, env=env, capture_output=True)
    return dest


def add_to_custom_data(zoo_tree: Path, bundle: str, exclusions: dict[str, str]) -> None:
    """Add ``bundle`` to the lists of the zoo's ``ci/bundle_custom_data.py`` named in ``exclusions`` (the lines
    ``--zoo-submission`` asks the pull request to add)."""
    path = zoo_tree / "ci" / "bundle_custom_data.py"
    text = path.read_text(encoding="utf-8")
    for list_name in exclusions:
        new, n = re.subn(rf"^({re.escape(list_name)}\s*=\s*\[)", rf'\1"{bundle}", ', text, count=1, flags=re.M)
        if n != 1:
            raise ValueError(f"{path}: no list {list_name!r} to add {bundle} to")
        text = new
    path.write_text(text, encoding="utf-8")


def serve(folder: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Serve ``folder`` on a free localhost port; return the server and its base URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a, **k: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def place_third_party_files(bundle_dir: Path, our_url: str) -> list[str]:
    """Empty stand-ins for the ``large_files.yml`` entries that are not ours and have no hash (offline)."""
    import yaml

    yml = bundle_dir / "large_files.yml"
    if not yml.is_file():
        return []
    placed = []
    for entry in (yaml.safe_load(yml.read_text(encoding="utf-8")) or {}).get("large_files") or []:
        if str(entry.get("url", "")).startswith(our_url) or entry.get("hash_val"):
            continue
        target = bundle_dir / entry["path"]
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(b"")
            placed.append(f"{entry['path']} (from {entry.get('url') or 'no url'})")
    return placed


def pre_commit_config(zoo_tree: Path, hooks: Path, python_version: str) -> Path:
    """The zoo's ``.pre-commit-config.yaml`` with its hook repository URL pointing to the local clone and its
    ``default_language_version`` set to the runner's Python (``python_version``, e.g. ``"3.10"``)."""
    import yaml

    config = yaml.safe_load((zoo_tree / ".pre-commit-config.yaml").read_text(encoding="utf-8"))
    git_dir = hooks / ".git" if (hooks / ".git").exists() else hooks
    for repo in config.get("repos", []):
        if repo.get("repo", "").rstrip("/").endswith("pre-commit/pre-commit-hooks"):
            repo["repo"] = git_dir.resolve().as_uri()
    # the zoo's python3.8 cannot be seeded by today's virtualenv: the hooks run on the runner's Python instead
    config["default_language_version"] = {"python": f"python{python_version}"}
    out = zoo_tree.parent / "pre-commit-config.offline.yaml"
    out.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return out


def ci_weights(bundle: str, out: Path) -> Path:
    """Weights of the bundle's ``network_def`` (seeded init; what the zoo's ``_produce_fake_weights`` writes)."""
    from common.io.atomic import atomic_torch_save
    from common.utils.bundles import seeded_network_state

    out.parent.mkdir(parents=True, exist_ok=True)
    return atomic_torch_save(seeded_network_state(bundle), out)


def check(args: argparse.Namespace) -> dict[str, dict[str, tuple[bool | None, str]]]:
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    log = work / "zoo_ci.log"
    log.write_text("", encoding="utf-8")
    zoo_tree = export_zoo(Path(args.zoo).resolve(), work / "model-zoo")
    python = str(Path(args.python).absolute())
    env = dict(os.environ, ALLOW_MONAI_RC="true", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env["PATH"] = os.pathsep.join([str(Path(python).parent), *args.extra_path, env.get("PATH", "")])
    env.pop("PYTHONPATH", None)
    submission = work / "submission"
    if submission.exists():
        shutil.rmtree(submission)
    (submission / "large_files").mkdir(parents=True)
    server, url = serve(submission / "large_files")
    results: dict[str, dict[str, tuple[bool | None, str]]] = {b: {} for b in args.bundles}
    notes: list[str] = []
    try:
        for b in args.bundles:
            t0 = time.perf_counter()
            weights = ci_weights(b, work / "weights" / f"{b}.pt")
            package_bundle(
                REPO_ROOT / "bundles" / b,
                work / "packages",
                large_files_url=url,
                weights=weights,
                zoo_submission=submission,
            )
            exclusions = json.loads((submission / f"{b}_bundle_custom_data.json").read_text(encoding="utf-8"))
            shutil.copytree(submission / "models" / b, zoo_tree / "models" / b)
            add_to_custom_data(zoo_tree, b, exclusions)
            listed = ", ".join(exclusions) or "none"
            results[b]["package"] = (True, f"zoo lists: {listed} ({time.perf_counter() - t0:.0f} s)")
            notes += [f"{b}: offline stand-in for {p}" for p in place_third_party_files(zoo_tree / "models" / b, url)]
        subprocess.run(["git", "add", "-A", "models", "ci"], cwd=zoo_tree, check=True)
        changed = subprocess.run(
            ["git", "diff", "--name-only", "--cached", "--", "models"],
            cwd=zoo_tree,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        r = subprocess.run(
            [python, "ci/get_changed_bundle.py", "--f", "\n".join(changed)],  # one per line, as the shell's $changes
            cwd=zoo_tree,
            env=env,
            capture_output=True,
            text=True,
        )
        found = set(r.stdout.split())
        for b in args.bundles:
            results[b]["get_changed_bundle"] = (b in found, f"found {sorted(found)}")
        shutil.copy2(SCHEMA_DIR / "meta_schema_20240725.json", zoo_tree / "models" / "meta_schema_20240725.json")
        ok, tail = _run([python, "ci/prepare_schema.py", "--l", " ".join(args.bundles)], zoo_tree, env, log)
        for b in args.bundles:
            results[b]["prepare_schema"] = (ok and (zoo_tree / "models" / b / "eval" / "schema.json").is_file(), tail)
        py_version = subprocess.run(
            [python, "-c", "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        hooks_config = pre_commit_config(zoo_tree, Path(args.hooks).resolve(), py_version) if args.hooks else None
        for b in args.bundles:
            res = results[b]
            r = subprocess.run(
                [python, "ci/get_bundle_requirements.py", "--b", b],
                cwd=zoo_tree,
                env=env,
                capture_output=True,
                text=True,
            )
            req = r.stdout.strip().splitlines()[-1] if r.returncode == 0 and r.stdout.strip() else ""
            if req:
                ok, tail = _run([python, "-m", "pip", "install", "--pre", "-r", req], zoo_tree, env, log)
                res["requirements_py310"] = (ok, f"{(zoo_tree / req).read_text().split()} -> {tail}")
            else:
                res["requirements_py310"] = (False, r.stderr.strip()[-200:] or "no requirements file")
            for mode in ("min", "full"):
                ok, tail = _run([python, "ci/verify_bundle.py", "-b", b, "-m", mode], zoo_tree, env, log)
                res[f"verify_{mode}"] = (ok, tail)
            target = f"models/{b}"
            res["isort"] = _run([python, "-m", "isort", "--check", target], zoo_tree, env, log)
            black = [python, "-m", "black", "--skip-magic-trailing-comma", "--check", target]
            res["black"] = _run(black, zoo_tree, env, log)
            res["flake8"] = _run([python, "-m", "flake8", target, "--count", "--statistics"], zoo_tree, env, log)
            if args.pytype:
                pytype = [python, "-m", "pytype", "-j", "2", f"--python-version={py_version}", target]
                res["pytype"] = _run(pytype, zoo_tree, env, log, timeout=7200)
            else:
                res["pytype"] = (None, "not run (pass --pytype)")
            if hooks_config is None:
                res["pre-commit"] = (None, "not run (pass --hooks)")
            else:
                files = sorted(
                    p.relative_to(zoo_tree).as_posix() for p in (zoo_tree / target).rglob("*") if p.is_file()
                )
                tracked = subprocess.run(
                    ["git", "ls-files", "--", target], cwd=zoo_tree, capture_output=True, text=True
                ).stdout.split()
                files = [f for f in files if f in set(tracked)]
                cmd = [python, "-m", "pre_commit", "run", "--config", str(hooks_config), "--files", *files]
                res["pre-commit"] = _run(cmd, zoo_tree, env, log)
    finally:
        server.shutdown()
    report = {"zoo_commit": _zoo_commit(Path(args.zoo)), "python": python, "notes": notes, "results": results}
    (work / "zoo_ci_report.json").write_text(json.dumps(report, indent=4) + "\n", encoding="utf-8")
    (work / "zoo_ci_report.md").write_text(render(results, notes, report["zoo_commit"]), encoding="utf-8")
    return results


def _zoo_commit(zoo: Path) -> str:
    git_dir = zoo / ".git" if (zoo / ".git").exists() else zoo
    r = subprocess.run(["git", "--git-dir", str(git_dir), "rev-parse", "HEAD"], capture_output=True, text=True)
    return r.stdout.strip() or "unknown"


def render(results: dict[str, dict[str, tuple[bool | None, str]]], notes: list[str], commit: str) -> str:
    bundles = list(results)
    mark = {True: "pass", False: "FAIL", None: "not run"}
    lines = [
        f"# Model zoo CI (Project-MONAI/model-zoo {commit[:8]}) on the packaged bundles",
        "",
        "| check | " + " | ".join(bundles) + " |",
        "|---|" + "---|" * len(bundles),
    ]
    for step in STEPS:
        lines.append(f"| {step} | " + " | ".join(mark[results[b].get(step, (None, ""))[0]] for b in bundles) + " |")
    lines += ["", "## Details", ""]
    for b in bundles:
        for step in STEPS:
            if step in results[b]:
                ok, tail = results[b][step]
                lines.append(f"- {b} / {step}: {mark[ok]} -- {tail}")
    if notes:
        lines += ["", "## Offline substitutions", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", required=True, help="model-zoo checkout or bare git directory")
    ap.add_argument("--hooks", default=None, help="pre-commit-hooks checkout or bare git directory (for pre-commit)")
    ap.add_argument("--work", required=True, help="working folder (the zoo tree, packages, logs, report)")
    ap.add_argument("--python", default=str(REPO_ROOT / ".zoo-ci-venv" / "bin" / "python"), help="zoo runner Python")
    ap.add_argument("--bundles", nargs="+", default=list(BUNDLES), choices=BUNDLES)
    ap.add_argument("--pytype", action="store_true", help="also run pytype (runtests.sh --codeformat runs it)")
    ap.add_argument(
        "--extra-path", nargs="*", default=[], help="folders put on PATH (e.g. where the hooks' python3.8 lives)"
    )
    args = ap.parse_args(argv)
    results = check(args)
    print((Path(args.work) / "zoo_ci_report.md").read_text(encoding="utf-8"))
    failed = [f"{b}/{s}" for b, r in results.items() for s, (ok, _) in r.items() if ok is False]
    if failed:
        print(f"zoo CI: {len(failed)} check(s) failed: {', '.join(failed)} (log: {Path(args.work) / 'zoo_ci.log'})")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
