"""Base class and shared helpers of the dataset converters (official release layout -> datalist JSON).

A converter is two steps, so a wrong source folder fails fast and clearly before anything is written:

1. :meth:`DatasetConverter.check_layout` inspects ``src`` and returns a small layout object, or raises
   :class:`BadInputError` naming the missing folder/file and showing :attr:`DatasetConverter.expected_layout`;
2. :meth:`DatasetConverter.build` writes whatever the datalist needs under ``dst`` (or nothing: MSD references
   the original files) and returns the datalist document, which :meth:`DatasetConverter.convert` validates and
   writes atomically to ``dst/datalist.json``.
"""

from __future__ import annotations

import abc
import csv
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from common.data.datalist import DATALIST_FILENAME, write_datalist
from common.errors import BadInputError, format_problems

__all__ = [
    "COMMON_OPTIONS",
    "DatasetConverter",
    "case_key",
    "check_listed_files",
    "file_suffix",
    "lookup_text",
    "load_text_file",
    "relative_path",
    "visible_files",
]

#: options every converter accepts: name -> (default, help)
COMMON_OPTIONS: dict[str, tuple[Any, str]] = {
    "seed": (0, "seed of the train/validation/test split"),
    "val_fraction": (0.2, "fraction of the non-test labelled cases held out for validation"),
    "test_fraction": (0.0, "fraction of the labelled cases held out for test (see each converter)"),
    "text_file": (None, "JSON or CSV file mapping image/case name -> sentence (text_source 'dataset')"),
    "datalist_name": (DATALIST_FILENAME, "file name of the datalist written into DST"),
}

_KNOWN_SUFFIXES = (".nii.gz", ".nii", ".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp", ".xml", ".npz")


def check_listed_files(datalist: Mapping[str, Any], dst: Path, num_workers: int | None = None) -> None:
    """Read every image and label file the datalist lists, completely (:func:`common.io.verify.check_file_decodes`),
    in a thread pool: a truncated or corrupt file of the release fails the conversion, not a training hours later.

    Raises:
        BadInputError: naming every file that does not decode (the first 20) and what is wrong with it.
    """
    from concurrent.futures import ThreadPoolExecutor

    from common.io.verify import check_file_decodes

    files: list[Path] = []
    for split in datalist.values():
        if not isinstance(split, list):
            continue
        for entry in split:
            if not isinstance(entry, Mapping):
                continue
            for key in ("image", "label"):
                values = entry.get(key)
                for v in values if isinstance(values, list) else [values] if values else []:
                    p = Path(v)
                    files.append(p if p.is_absolute() else (dst / p).resolve())
    files = list(dict.fromkeys(files))

    def problem(path: Path) -> str | None:
        try:
            check_file_decodes(path)
        except FileNotFoundError:
            return f"{path}: not found"
        except Exception as err:  # each reader raises its own types for truncated data
            return f"{path}: {err}"
        return None

    with ThreadPoolExecutor(max_workers=num_workers or min(8, os.cpu_count() or 1)) as pool:
        bad = [p for p in pool.map(problem, files) if p]
    if bad:
        raise BadInputError(
            bad[0].split(": ", 1)[0], f"{len(bad)} of {len(files)} listed files do not read: {format_problems(bad)}"
        )


def case_key(name: str | os.PathLike) -> str:
    """File name without folder and known suffix: ``"a/TCGA-1.png"`` -> ``"TCGA-1"``, ``"x.nii.gz"`` -> ``"x"``."""
    base = Path(name).name
    low = base.lower()
    for suffix in _KNOWN_SUFFIXES:
        if low.endswith(suffix):
            return base[: -len(suffix)]
    return base


def file_suffix(name: str | os.PathLike) -> str:
    """The extension :func:`case_key` strips, as written: ``"x.nii.gz"`` -> ``".nii.gz"``, ``"a/B.PNG"`` -> ``".PNG"``
    (``Path.suffix`` for a name with no known extension)."""
    base = Path(name).name
    return base[len(case_key(base)) :] or Path(base).suffix


def visible_files(folder: Path, suffixes: Iterable[str]) -> list[Path]:
    """Sorted files in ``folder`` ending with one of ``suffixes`` (any case); hidden and macOS ``._*`` files skipped."""
    suffixes = tuple(s.lower() for s in suffixes)
    return sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(suffixes)
    )


def relative_path(file: Path, start: Path) -> str:
    """``file`` relative to ``start`` (POSIX separators), or absolute where no relative path exists."""
    try:
        return Path(os.path.relpath(Path(file).resolve(), Path(start).resolve())).as_posix()
    except ValueError:  # different drives on Windows
        return Path(file).resolve().as_posix()


def load_text_file(path: str | os.PathLike) -> dict[str, str]:
    """Read a text table: ``{case_key(name): sentence}``.

    Accepted formats:
        * JSON object ``{"<image or mask file name or case id>": "<sentence>", ...}``;
        * JSON list ``[{"image"|"case_id"|"name": ..., "text"|"description": ...}, ...]``;
        * CSV with a header row; name column ``image``/``Image``/``case_id``/``name``, text column
          ``text``/``Description``/``description`` (LViT's xlsx header is ``Image | Description``).
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(path, "text file not found")
    rows: list[tuple[Any, Any]]
    if path.suffix.lower() == ".json":
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise BadInputError(path, f"not a valid JSON file ({err})") from None
        if isinstance(doc, Mapping):
            rows = list(doc.items())
        elif isinstance(doc, list) and all(isinstance(d, Mapping) for d in doc):
            rows = [
                (_pick(d, ("image", "case_id", "name"), path), _pick(d, ("text", "description"), path)) for d in doc
            ]
        else:
            raise BadInputError(path, "expected a JSON object {name: sentence} or a list of {image, text} objects")
    elif path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = [
                (_pick(r, ("image", "case_id", "name"), path), _pick(r, ("text", "description"), path)) for r in reader
            ]
    else:
        raise BadInputError(path, "unsupported text file type; use .json or .csv")
    table: dict[str, str] = {}
    for name, text in rows:
        if not isinstance(text, str) or not text.strip():
            raise BadInputError(path, f"empty or non-string text for {name!r}")
        key = case_key(str(name))
        if key in table and table[key] != text.strip():
            raise BadInputError(path, f"two different texts for {key!r}")
        table[key] = text.strip()
    if not table:
        raise BadInputError(path, "the text file holds no entries")
    return table


def _pick(row: Mapping[str, Any], names: tuple[str, ...], source: Path) -> Any:
    lowered = {str(k).strip().lower(): v for k, v in row.items()}
    for n in names:
        if n in lowered:
            return lowered[n]
    raise BadInputError(source, f"no column/key among {list(names)} (found {list(row)})")


def lookup_text(table: Mapping[str, str], case_id: str, text_file: str | os.PathLike) -> str:
    """Sentence of ``case_id`` in a :func:`load_text_file` table; :class:`BadInputError` naming both if absent."""
    if case_id not in table:
        raise BadInputError(text_file, f"no text for case {case_id!r}; add a row for it (or leave text_file unset)")
    return table[case_id]


class DatasetConverter(abc.ABC):
    """Converts one official dataset release layout into a datalist (see module docstring).

    Subclasses set :attr:`description`, :attr:`expected_layout`, optionally :attr:`options` (their own options:
    name -> (default, help)), and implement :meth:`check_layout` and :meth:`build`. They are registered with
    :func:`common.data.converters.register_converter`, which sets :attr:`name`.
    """

    name: ClassVar[str] = ""
    #: one line shown by ``tools/convert_dataset.py --list``
    description: ClassVar[str] = ""
    #: the folder layout(s) accepted, shown in layout errors
    expected_layout: ClassVar[str] = ""
    #: converter-specific options: name -> (default, help)
    options: ClassVar[dict[str, tuple[Any, str]]] = {}

    def option_defaults(self) -> dict[str, Any]:
        """All accepted options with their defaults (common ones first)."""
        return {k: v[0] for k, v in {**COMMON_OPTIONS, **self.options}.items()}

    def convert(self, src: str | os.PathLike, dst: str | os.PathLike, **options: Any) -> Path:
        """Validate the layout of ``src``, convert into ``dst`` and write the datalist; return its path.

        Args:
            src: the dataset as released (see :attr:`expected_layout`).
            dst: output folder (created); the datalist is ``dst/datalist.json``.
            options: :data:`COMMON_OPTIONS` and the converter's :attr:`options`.

        Raises:
            BadInputError: unknown option, missing source folder/file (with the expected layout), or bad data
            (naming the file).
        """
        merged = self.option_defaults()
        unknown = sorted(set(options) - set(merged))
        if unknown:
            raise BadInputError(f"converter {self.name!r}", f"unknown option(s) {unknown}; accepted: {sorted(merged)}")
        merged.update(options)
        src, dst = Path(src), Path(dst)
        if not src.is_dir():
            raise BadInputError(src, f"source folder not found; expected layout:\n{self.expected_layout}")
        layout = self.check_layout(src, merged)
        dst.mkdir(parents=True, exist_ok=True)
        datalist = self.build(layout, dst, **merged)
        check_listed_files(datalist, dst)
        return write_datalist(dst / merged["datalist_name"], datalist, check_files=True)

    def layout_error(self, missing: str | os.PathLike, what: str = "missing") -> BadInputError:
        """The error for a layout problem at ``missing``, with the expected layout appended."""
        return BadInputError(missing, f"{what}; expected layout:\n{self.expected_layout}")

    @abc.abstractmethod
    def check_layout(self, src: Path, options: Mapping[str, Any]) -> Any:
        """Inspect ``src`` (headers at most, nothing big); return what :meth:`build` needs or raise
        :meth:`layout_error`. ``options`` are the merged options of :meth:`convert`."""

    @abc.abstractmethod
    def build(self, layout: Any, dst: Path, **options: Any) -> dict[str, Any]:
        """Write the converted files under ``dst`` and return the datalist document (paths relative to ``dst``)."""
