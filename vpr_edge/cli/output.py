"""Printing results as short tables and writing them as JSON."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic_file import atomic_write, unwritable_folder
from ..errors import InvalidInputError
from ..index import map_store
from ..sources import is_image_file

#: Name endings of the files vpr-edge reads (models, checkpoints, map files): an output
#: named so is a slip of the keyboard that would destroy one.
NOT_AN_OUTPUT = (".onnx", ".engine", ".pt", ".npy", ".hnsw", ".jsonl")


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


def check_output_file(path: str | os.PathLike | None, option: str,
                      inputs: Sequence[Path] = (), map_dir: Path | None = None, *,
                      a_model: bool = False) -> None:
    """Refuse, before any work, an output file that cannot be written (a directory, a path
    through a file: the work would be done and then lost to a traceback), one of the
    command's ``inputs`` (it would be destroyed), a file inside a map folder (``map_dir``,
    or any folder holding a map: a save replaces that folder whole, and the file could be
    the map's own manifest), or, unless ``a_model`` (the output is a checkpoint or model),
    one named like a model or a map file."""
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise InvalidInputError(f"{option} {target}: is a directory; give a file name")
    problem = unwritable_folder(target)
    if problem is not None:
        raise InvalidInputError(f"{option} {target}: {problem}")
    if not a_model and target.suffix.lower() in NOT_AN_OUTPUT:
        raise InvalidInputError(f"{option} {target}: a {target.suffix} name is a model's or "
                                "a map's; give the output a name of its own (results.json)")
    real = Path(os.path.realpath(target))
    folder = None if map_dir is None else Path(os.path.realpath(map_dir))
    if folder is None or folder not in real.parents:  # (at any depth: map/notes/out.json)
        folder = map_store.enclosing_map(real)
    if folder is not None:
        raise InvalidInputError(f"{option} {target}: inside the map folder {folder}, which a "
                                "save replaces whole (and whose files are the map's own): "
                                "write it outside the map folder")
    for given in inputs:
        if _overwrites(target, given):
            raise InvalidInputError(f"{option} {target}: is an input of this command ({given}) "
                                    "and would be overwritten; choose another file name")


def _overwrites(target: Path, given: Path) -> bool:
    """Whether writing ``target`` replaces the input ``given``, or an image in that folder."""
    if not target.exists():
        return False
    real, source = os.path.realpath(target), os.path.realpath(given)
    return real == source or (os.path.isdir(source) and real.startswith(source + os.sep)
                              and is_image_file(Path(real)))


def write_json(path: str | os.PathLike | None, data: Any, option: str = "--json") -> None:
    """Write ``data`` as indented JSON when a path was given (a regular file: whole or not
    at all; ``/dev/stdout`` and other special files directly). Strict JSON: a NaN or infinite
    number (an unknown stamp, a pose without orientation) is written as null, which jq and
    other strict parsers read (they refuse ``NaN``)."""
    if path is None:
        return
    text = json.dumps(_finite_or_null(data), indent=2, default=str, allow_nan=False) + "\n"
    with output_errors(path, option):
        write_text(Path(path), text)


def _finite_or_null(data: Any) -> Any:
    """``data`` with every NaN or infinite float replaced by None (dicts, lists, tuples)."""
    if isinstance(data, (float, np.floating)):  # (numpy's float32 too)
        return float(data) if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: _finite_or_null(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite_or_null(value) for value in data]
    return data


def write_text(target: Path, text: str) -> None:
    """``text`` into ``target``: a new or regular file atomically (its folders made), anything
    else directly: a special file (a pipe), or a link (``/dev/stdout``, which a rename would
    replace instead of writing through)."""
    if target.is_symlink() or (target.exists() and not target.is_file()):
        with open(target, "w") as fh:
            fh.write(text)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, lambda fh: fh.write(text.encode()))


@contextmanager
def output_errors(path: str | os.PathLike, option: str) -> Iterator[None]:
    """Turn a failure to write an output file (a full disk, a read-only file system) into
    an error naming the option and the file, instead of a traceback after the work."""
    try:
        yield
    except OSError as exc:
        raise InvalidInputError(f"{option} {path}: cannot write it ({exc.strerror or exc}); "
                                "the results printed above were not saved to it: free "
                                "space there or choose another path") from exc
