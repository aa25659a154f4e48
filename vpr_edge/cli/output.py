"""Printing results as short tables and writing them as JSON (or CSV) files.

An output file may be this process's standard output (``--json -``, ``/dev/stdout``, or the
file the shell redirected stdout to): the results then go to stdout alone, written through
it, and the tables to stderr (:func:`tables_off_stdout`), so ``| jq``, ``> out.json`` and
``>> run.log`` get clean JSON and nothing is truncated."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, redirect_stdout
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ..atomic_file import atomic_write, unwritable_folder
from ..errors import InvalidInputError
from ..index import map_store
from ..sources import is_image_file

#: Name endings of the files vpr-edge reads (models, checkpoints, map files): an output
#: named so is a slip of the keyboard that would destroy one.
NOT_AN_OUTPUT = (".onnx", ".engine", ".pt", ".npy", ".hnsw", ".jsonl")

#: The output path that means standard output (``--json -``), and the end of the help of
#: every option that names an output file.
STDOUT_PATH = "-"
TO_STDOUT = " (- for stdout: the table then goes to stderr)"
STDOUT_FD, STDERR_FD = 1, 2

#: Where results bound for stdout go while the tables print to stderr (the stdout that
#: :func:`tables_off_stdout` put aside); None: ``sys.stdout`` itself.
_results_stdout: ContextVar[TextIO | None] = ContextVar("results_stdout", default=None)


def format_value(value: Any, column: str = "") -> str:
    """A table cell: a float short (4 significant digits), but a stamp (a ``column`` named
    ``stamp`` or ``*_stamp``: epoch seconds) to the millisecond, whole."""
    if isinstance(value, float):
        return f"{value:.3f}" if is_stamp(column) else f"{value:.4g}"
    if value is None:
        return "-"
    return str(value)


def is_stamp(column: str) -> bool:
    """Whether a table column or fact (``a.b.query_stamp``: its last part) holds stamps."""
    name = column.rsplit(".", 1)[-1]
    return name == "stamp" or name.endswith("_stamp")


def print_table(rows: Sequence[dict[str, Any]], title: str | None = None) -> None:
    """Rows of equal keys as an aligned text table."""
    if title:
        print(title)
    if not rows:
        print("  (nothing)")
        return
    columns = list(rows[0])
    cells = [[format_value(row.get(c), c) for c in columns] for row in rows]
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
        print(f"  {key:<{width}}  {format_value(value, key)}")


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
    one named like a model or a map file. Standard output (:func:`is_stdout`) is fine for
    text; a model (``a_model``) is refused there and in any other special file
    (:func:`check_model_file`)."""
    if path is None:
        return
    if a_model:
        check_model_file(path, option)
    elif is_stdout(path):
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


def check_model_file(path: str | os.PathLike, option: str) -> None:
    """Refuse standard output (``-``, ``/dev/stdout``, the file stdout was redirected to) and
    any other file that is not a regular one (``/dev/null``, a pipe) as the path of a model
    or checkpoint: it is binary, and written whole to a temporary file renamed over the path,
    so ``-`` would leave a file named ``-`` and a device would be replaced by a file."""
    target = Path(path)
    if is_stdout(target):
        raise InvalidInputError(f"{option} {target}: a model (checkpoint, engine) is a binary "
                                "file, written whole, not to standard output; give a file name")
    if target.exists() and not target.is_file() and not target.is_dir():
        raise InvalidInputError(f"{option} {target}: not a regular file (a device, a pipe); a "
                                "model (checkpoint, engine) is written whole to a file, which "
                                "would replace it: give a file name")


def given_paths(args: argparse.Namespace, outputs: Iterable[str] = ("json", "csv")
                ) -> list[Path]:
    """The paths a command was given (the ``Path`` values of ``args``, lists included), but
    those of its output options (``outputs``: their ``dest`` names), which must not be one
    of them (:func:`check_output_file`'s ``inputs``)."""
    found: list[Path] = []
    for name, value in vars(args).items():
        if name not in outputs:
            found += [v for v in (value if isinstance(value, list) else [value])
                      if isinstance(v, Path)]
    return found


def check_distinct_outputs(outputs: Mapping[str, str | os.PathLike | None]) -> None:
    """Refuse, before any work, two options (``{"--csv": path, "--json": path}``) that name
    one output: one file (after links, ``..``, another spelling), or both standard output.
    The second written would silently replace the first (or both would mix on stdout)."""
    given = [(option, path) for option, path in outputs.items() if path is not None]
    for i, (option, path) in enumerate(given):
        for first, first_path in given[:i]:
            if _same_output(first_path, path):
                same = "both standard output" if is_stdout(path) else "the same path"
                raise InvalidInputError(f"{first} {first_path} and {option} {path} are {same}: "
                                        "one would replace the other; give each its own path")


def _same_output(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    if is_stdout(a) or is_stdout(b):
        return is_stdout(a) and is_stdout(b)
    real_a, real_b = os.path.realpath(a), os.path.realpath(b)
    if real_a == real_b:
        return real_a != os.devnull  # (both thrown away: nothing lost)
    try:
        return os.path.samefile(a, b)  # (hard links)
    except OSError:  # (one not made yet)
        return False


def is_stdout(path: str | os.PathLike) -> bool:
    """Whether writing ``path`` writes this process's standard output: ``-``,
    ``/dev/stdout``, ``/proc/self/fd/1``, or the file, pipe or terminal that stdout is (the
    shell's ``> out.json``). Not ``/dev/null`` (nothing written there can mix)."""
    if os.fspath(path) == STDOUT_PATH:
        return True
    return os.path.realpath(path) != os.devnull and _open_as(path, STDOUT_FD)


def _open_as(path: str | os.PathLike, fd: int) -> bool:
    """Whether ``path`` is the file this process has open as ``fd`` (1: stdout, 2: stderr;
    not ``sys.stdout``, which a caller may have replaced)."""
    try:
        return os.path.samestat(os.stat(path), os.fstat(fd))
    except OSError:  # (no such file; the descriptor closed)
        return False


@contextmanager
def tables_off_stdout(outputs: Iterable[str | os.PathLike | None]) -> Iterator[None]:
    """While one of ``outputs`` is standard output, print (the tables, any ``print``) to
    stderr, so that stdout holds that output alone; otherwise change nothing."""
    if not any(path is not None and is_stdout(path) for path in outputs):
        yield
        return
    stdout = sys.stdout
    stdout.flush()
    token = _results_stdout.set(stdout)
    try:
        with redirect_stdout(sys.stderr):
            yield
    finally:
        _results_stdout.reset(token)


def _overwrites(target: Path, given: Path) -> bool:
    """Whether writing ``target`` replaces the input ``given``, or an image in that folder."""
    if not target.exists():
        return False
    real, source = os.path.realpath(target), os.path.realpath(given)
    return real == source or (os.path.isdir(source) and real.startswith(source + os.sep)
                              and is_image_file(Path(real)))


def write_json(path: str | os.PathLike | None, data: Any, option: str = "--json") -> None:
    """Write ``data`` as indented JSON when a path was given (a regular file: whole or not
    at all; standard output and other special files directly: :func:`write_text`). Strict
    JSON: a NaN or infinite number (an unknown stamp, a pose without orientation) is written
    as null, which jq and other strict parsers read (they refuse ``NaN``)."""
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
    """``text`` into ``target``: this process's stdout or stderr through ``sys.stdout`` or
    ``sys.stderr``, after what was printed there (never truncated nor overwritten: the
    shell's ``>> run.log`` keeps its lines); another special file (a pipe, a terminal)
    directly, never truncated; a link to a file through the link (a rename would replace the
    link); a new or regular file atomically (its folders made)."""
    stream = _standard_stream(target)
    if stream is not None:
        stream.write(text)
        stream.flush()
        return
    if target.exists() and not target.is_file():
        with open(os.open(target, os.O_WRONLY), "w") as fh:  # (not open(target, "w"): no
            fh.write(text)                                  # O_TRUNC on what is there)
        return
    if target.is_symlink():
        with open(target, "w") as fh:
            fh.write(text)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, lambda fh: fh.write(text.encode()))


def _standard_stream(target: Path) -> TextIO | None:
    """The stream to write ``target`` through when it is this process's stdout (the one
    :func:`tables_off_stdout` put aside) or stderr; None for any other file."""
    if is_stdout(target):
        return _results_stdout.get() or sys.stdout
    return sys.stderr if _open_as(target, STDERR_FD) else None


@contextmanager
def output_errors(path: str | os.PathLike, option: str) -> Iterator[None]:
    """Turn a failure to write an output file (a full disk, a read-only file system) into
    an error naming the option and the file, instead of a traceback after the work. A
    reader that left the pipe (``| head``) is no failure: its BrokenPipeError goes on."""
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise InvalidInputError(f"{option} {path}: cannot write it ({exc.strerror or exc}); "
                                "the results printed above were not saved to it: free "
                                "space there or choose another path") from exc
