"""Minimal reader/writer of simple .xlsx tables (first sheet, text/number cells) with the standard library only.

LViT ships its per-image text annotations as ``{Train,Val,Test}_text.xlsx`` (one sheet, header ``Image |
Description``; bundles/textdiff/docs/sources.md §1.1), which the official code reads with ``pandas.read_excel`` (+
openpyxl). Neither is a dependency of this project, and an .xlsx file is a zip archive of XML parts (ECMA-376), so this
module reads the first worksheet with :mod:`zipfile` + :mod:`xml.etree.ElementTree`: shared strings, inline strings,
numbers and booleans; formulas give their cached value. Not supported (raise or ignored): dates as dates (read as
numbers), rich formatting, merged cells. :func:`write_xlsx_table` writes such a table (used for synthetic LViT-layout
data).
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from xml.etree import ElementTree

from common.errors import BadInputError
from common.io.atomic import atomic_path

__all__ = ["read_xlsx_rows", "read_xlsx_table", "write_xlsx_table"]

_NS = {
    "m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main",
    "r": "http://schemas.openxmlformats.org/officeDocument/2006/relationships",
    "rel": "http://schemas.openxmlformats.org/package/2006/relationships",
}
_CELL_REF = re.compile(r"([A-Z]+)(\d+)")


def _column_index(ref: str) -> int:
    letters = _CELL_REF.match(ref).group(1)
    n = 0
    for ch in letters:
        n = n * 26 + ord(ch) - 64
    return n - 1


def _text_of(node: ElementTree.Element | None) -> str:
    return "" if node is None else "".join(t.text or "" for t in node.iter(f"{{{_NS['m']}}}t"))


def _first_sheet_path(z: zipfile.ZipFile) -> str:
    """Path of the first worksheet named in workbook.xml (falls back to xl/worksheets/sheet1.xml)."""
    try:
        wb = ElementTree.fromstring(z.read("xl/workbook.xml"))
        rels = ElementTree.fromstring(z.read("xl/_rels/workbook.xml.rels"))
        sheet = wb.find("m:sheets/m:sheet", _NS)
        rid = sheet.get(f"{{{_NS['r']}}}id")
        for rel in rels.findall("rel:Relationship", _NS):
            if rel.get("Id") == rid:
                target = rel.get("Target").lstrip("/")
                return target if target.startswith("xl/") else "xl/" + target
    except (KeyError, AttributeError):
        pass
    return "xl/worksheets/sheet1.xml"


def read_xlsx_rows(path: str | PathLike) -> list[list[str]]:
    """All rows of the first worksheet as lists of strings (empty cells ""; numbers as written, e.g. "3" or "2.5").

    Raises:
        BadInputError: missing file, not a zip/xlsx, or no readable worksheet (names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(path, "text table not found")
    try:
        with zipfile.ZipFile(path) as z:
            shared: list[str] = []
            if "xl/sharedStrings.xml" in z.namelist():
                sst = ElementTree.fromstring(z.read("xl/sharedStrings.xml"))
                shared = [_text_of(si) for si in sst.findall("m:si", _NS)]
            sheet = ElementTree.fromstring(z.read(_first_sheet_path(z)))
    except zipfile.BadZipFile:
        raise BadInputError(path, "not an .xlsx file (not a zip archive); save it as .xlsx, .csv or .json") from None
    except KeyError as e:
        raise BadInputError(path, f"no worksheet found in the .xlsx file ({e})") from None
    except ElementTree.ParseError as e:
        raise BadInputError(path, f"corrupt .xlsx file (bad XML: {e})") from None
    rows: list[list[str]] = []
    for row in sheet.iter(f"{{{_NS['m']}}}row"):
        values: dict[int, str] = {}
        for k, c in enumerate(row.findall("m:c", _NS)):
            col = _column_index(c.get("r")) if c.get("r") else k
            kind = c.get("t")
            v = c.find("m:v", _NS)
            if kind == "s":
                try:
                    values[col] = shared[int(v.text)]
                except (TypeError, ValueError, IndexError):
                    raise BadInputError(path, f"cell {c.get('r')}: bad shared-string index") from None
            elif kind == "inlineStr":
                values[col] = _text_of(c.find("m:is", _NS))
            elif kind == "b":
                values[col] = "TRUE" if v is not None and v.text == "1" else "FALSE"
            else:
                text = "" if v is None or v.text is None else v.text
                if text and kind != "str":
                    try:
                        f = float(text)
                        text = str(int(f)) if f.is_integer() else text
                    except ValueError:
                        pass
                values[col] = text
        if values:
            rows.append([values.get(i, "") for i in range(max(values) + 1)])
    return rows


def read_xlsx_table(path: str | PathLike) -> list[dict[str, str]]:
    """Rows of the first worksheet as dicts keyed by the header row (first non-empty row); empty rows skipped."""
    rows = read_xlsx_rows(path)
    if not rows:
        raise BadInputError(path, "the worksheet is empty (expected a header row such as 'Image | Description')")
    header = [h.strip() for h in rows[0]]
    return [
        {header[i]: (r[i] if i < len(r) else "") for i in range(len(header)) if header[i]}
        for r in rows[1:]
        if any(cell.strip() for cell in r)
    ]


def _col_letters(i: int) -> str:
    s = ""
    i += 1
    while i:
        i, rem = divmod(i - 1, 26)
        s = chr(65 + rem) + s
    return s


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def write_xlsx_table(path: str | PathLike, header: Sequence[str], rows: Sequence[Sequence[str]]) -> Path:
    """Write a one-sheet .xlsx (strings in the shared-string table, as Excel does), atomically."""
    strings: list[str] = []
    index: dict[str, int] = {}

    def sid(s: str) -> int:
        if s not in index:
            index[s] = len(strings)
            strings.append(s)
        return index[s]

    sheet_rows = []
    for r, values in enumerate([list(header)] + [list(map(str, row)) for row in rows], start=1):
        cells = "".join(f'<c r="{_col_letters(c)}{r}" t="s"><v>{sid(v)}</v></c>' for c, v in enumerate(values))
        sheet_rows.append(f'<row r="{r}">{cells}</row>')
    m = _NS["m"]
    parts = {
        "[Content_Types].xml": (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/xl/workbook.xml" '
            'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
            '<Override PartName="/xl/worksheets/sheet1.xml" '
            'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
            '<Override PartName="/xl/sharedStrings.xml" '
            'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/>'
            "</Types>"
        ),
        "_rels/.rels": (
            f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Relationships xmlns="{_NS["rel"]}">'
            '<Relationship Id="rId1" '
            'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" '
            'Target="xl/workbook.xml"/>'
            "</Relationships>"
        ),
        "xl/workbook.xml": (
            f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><workbook xmlns="{m}" xmlns:r="{_NS["r"]}">'
            '<sheets><sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>'
        ),
        "xl/_rels/workbook.xml.rels": (
            f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Relationships xmlns="{_NS["rel"]}">'
            '<Relationship Id="rId1" '
            'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" '
            'Target="worksheets/sheet1.xml"/>'
            '<Relationship Id="rId2" '
            'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings" '
            'Target="sharedStrings.xml"/>'
            "</Relationships>"
        ),
        "xl/worksheets/sheet1.xml": (
            f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><worksheet xmlns="{m}"><sheetData>'
            + "".join(sheet_rows)
            + "</sheetData></worksheet>"
        ),
        "xl/sharedStrings.xml": (
            f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><sst xmlns="{m}" count="{len(strings)}" '
            f'uniqueCount="{len(strings)}">' + "".join(f"<si><t>{_esc(s)}</t></si>" for s in strings) + "</sst>"
        ),
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            for name, text in parts.items():
                z.writestr(name, text)
    return path
