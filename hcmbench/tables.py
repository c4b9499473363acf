"""Tables as people read them and as programs read them: cells, Markdown pages, CSV text."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any


def plus_minus(mean: float, std: float, digits: int = 3, sep: str = " ± ") -> str:
    """"0.431 ± 0.070", or "—" for a figure that was not computed (NaN)."""
    return "—" if math.isnan(mean) else f"{mean:.{digits}f}{sep}{std:.{digits}f}"


def number(value: float, digits: int = 3, scale: float = 1.0, suffix: str = "") -> str:
    """A figure with `digits` decimals (times `scale`, then `suffix`), or "—" for NaN."""
    return "—" if math.isnan(value) else f"{value * scale:.{digits}f}{suffix}"


def csv_text(rows: list[Any], cell: Callable[[str, Any], Any] | None = None) -> str:
    """Dataclass rows as CSV text, a column per field, at full precision; NaN and None as empty cells.
    `cell(field, value)` may rewrite a value first."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    names = [f.name for f in fields(rows[0])] if rows else []
    writer.writerow(names)
    for row in rows:
        values = [getattr(row, n) if cell is None else cell(n, getattr(row, n)) for n in names]
        writer.writerow(["" if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in values])
    return out.getvalue()


def markdown_document(title: str, notes: list[str], header: list[str], body: list[list[str]]) -> str:
    """A titled Markdown page: the reading notes as a list, then the table."""
    lines = [f"# {title}", ""]
    lines += [f"- {note}" for note in notes]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines) + "\n"


def write_texts(folder: str | Path, texts: dict[str, str]) -> list[Path]:
    """Write each `name: text` into `folder` (created), each file atomically; returns the paths in order."""
    from hcmbench.atomic import atomic_path, output_folder

    folder = output_folder(folder)
    paths = []
    for name, text in texts.items():
        with atomic_path(folder / name) as tmp:
            tmp.write_text(text)
        paths.append(folder / name)
    return paths
