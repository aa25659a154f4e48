"""Printing results as short tables and writing them as JSON."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..atomic_file import unwritable_folder
from ..errors import InvalidInputError


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None:
        return "-"
    return str(value)


def print_table(rows: Sequence[dict[str, Any]], title: str | None = None) -> None:
    """Rows of equal keys as an aligned text table."""
    if title:
        print(title)
    if not rows:
        print("  (nothing)")
        return
    columns = list(rows[0])
    cells = [[format_value(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print(("  " + "  ".join(c.ljust(w) for c, w in zip(columns, widths))).rstrip())
    for r in cells:
        print(("  " + "  ".join(v.ljust(w) for v, w in zip(r, widths))).rstrip())


def print_facts(facts: dict[str, Any], title: str | None = None) -> None:
    """Key/value pairs, one per line; a nested dict's pairs as ``key.inner`` lines."""
    if title:
        print(title)
    flat = _flattened(facts)
    width = max((len(k) for k in flat), default=0)
    for key, value in flat.items():
        print(f"  {key:<{width}}  {format_value(value)}")


def _flattened(facts: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in facts.items():
        if isinstance(value, dict) and value:
            out.update(_flattened(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def check_output_file(path: str | os.PathLike | None, option: str) -> None:
    """Refuse, before any work, an output file that cannot be written: a directory, or a
    path through a file (the work would be done and then lost to a traceback)."""
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise InvalidInputError(f"{option} {target}: is a directory; give a file name")
    problem = unwritable_folder(target)
    if problem is not None:
        raise InvalidInputError(f"{option} {target}: {problem}")


def write_json(path: str | os.PathLike | None, data: Any) -> None:
    """Write ``data`` as indented JSON when a path was given."""
    if path is None:
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(data, indent=2, default=str) + "\n")
