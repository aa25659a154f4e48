"""Check what callers hand to the place index, before any state is touched.

Each function turns one argument into the exact form the index stores, or raises
:class:`~vpr_edge.errors.InvalidInputError` naming the argument, the offending item and the fix.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from ..poses import Pose
from .map_format import MAX_ID, MAX_POSE_DIM


def _which(position: int, count: int) -> str:
    """``": descriptor 3 of 8 (0-based)"`` (as in the caller's array), ``": the descriptor"``
    for one."""
    return ": the descriptor" if count == 1 else f": descriptor {position} of {count} (0-based)"


def descriptors(value: Any, dim: int, tolerance: float, what: str = "descriptors"
                ) -> tuple[np.ndarray, bool]:
    """Return ``(float32 C-contiguous [n, dim] unit rows (a copy), input_was_1d)``.

    Refused: non-float dtypes, other shapes or dims, no rows, NaN/inf, norms outside
    ``1 +- tolerance`` (including zero vectors). Rows within tolerance are re-normalised.
    """
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{what}: cannot make an array of {type(value).__name__} ({exc})")
    if arr.dtype.kind != "f":
        raise InvalidInputError(
            f"{what}: dtype {arr.dtype} is not a float type; pass float32 (or float16/float64) "
            "L2-normalised descriptors, as the model outputs them"
        )
    if arr.ndim not in (1, 2):
        raise InvalidInputError(
            f"{what}: shape {arr.shape} is neither (dim,) nor (n, dim) with dim={dim}"
        )
    was_1d = arr.ndim == 1
    rows = arr.reshape(1, -1) if was_1d else arr
    if rows.shape[0] == 0 or rows.shape[1] == 0:
        raise InvalidInputError(f"{what}: empty array of shape {arr.shape}; pass at least one")
    if rows.shape[1] != dim:
        raise InvalidInputError(
            f"{what}: dimension {rows.shape[1]} but this index holds dim={dim} descriptors "
            "(a different model or whitening?)"
        )
    with np.errstate(over="ignore"):  # values beyond float32 become inf, refused below
        out = np.array(rows, dtype=np.float32, order="C", copy=True)
        # The common single-frame case in as few numpy calls as possible: right after an
        # inference each distinct call costs tens of microseconds (cold caches). A finite
        # float32 sum of squares near 1 means every value is finite and the norm is right;
        # anything else (NaN, inf, a square beyond float32) takes the general check below.
        sq = float(np.dot(out[0], out[0])) if out.shape[0] == 1 else math.nan
    if math.isfinite(sq) and abs(math.sqrt(sq) - 1.0) <= tolerance:
        out *= np.float32(1.0 / math.sqrt(sq))
        return out, was_1d
    # A sum of squares is finite exactly when every value is (NaN and inf propagate; float32
    # squares cannot overflow float64), so the norms double as the NaN/inf check.
    norms = np.sqrt(np.einsum("ij,ij->i", out, out, dtype=np.float64))
    finite = np.isfinite(norms)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise InvalidInputError(
            f"{what}{_which(bad, out.shape[0])} contains NaN or inf (or values beyond "
            "float32 range); not a descriptor a model makes (if a model's output: check the "
            "model file and its input frame)"
        )
    off = np.abs(norms - 1.0) > tolerance
    if off.any():
        bad = int(np.flatnonzero(off)[0])
        raise InvalidInputError(
            f"{what}{_which(bad, out.shape[0])} has L2 norm {norms[bad]:.6g}, not 1 (tolerance "
            f"{tolerance:g}); descriptors must be L2-normalised: x / np.linalg.norm(x, axis=-1, "
            "keepdims=True)"
        )
    out /= norms.astype(np.float32)[:, None]
    return out, was_1d


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def place_id(value: Any, what: str = "id") -> int:
    """One place id: an int in [0, 2**63 - 1] (:data:`MAX_ID`)."""
    if not _is_int(value):
        raise InvalidInputError(f"{what}: place ids are non-negative ints, got {value!r}")
    out = int(value)
    if not 0 <= out <= MAX_ID:
        raise InvalidInputError(f"{what}: place id {out} is outside [0, 2**63 - 1] (ids are "
                                "non-negative ints)")
    return out


def id_set(value: Any, what: str = "ids") -> set[int]:
    """The distinct place ids of an iterable (a set, a list, a 1-D array...), each checked as
    :func:`place_id` does. Plain ints are checked in bulk (their types, min and max): 10k ids
    take 0.4 ms, where one :func:`place_id` call each took 6 ms."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise InvalidInputError(f"{what} must be an iterable of place ids")
    if (isinstance(value, np.ndarray) and value.ndim == 1 and value.dtype.kind in "iu"
            and not np.ma.isMaskedArray(value)):
        # Python ints; not of other dtypes: tolist() makes ints of datetime64[ns] too (no
        # place ids), and None of a masked array's masked items
        value = value.tolist()
    items = value if isinstance(value, (set, frozenset, list, tuple)) else list(value)
    if not items:
        return set()
    if set(map(type, items)) <= {int} and min(items) >= 0 and max(items) <= MAX_ID:
        return set(items)
    return {place_id(v, what) for v in items}


def id_list(value: Any, n: int | None, what: str = "ids") -> list[int]:
    """A list of distinct place ids (length ``n`` when given); an int means ``[int]``."""
    if _is_int(value):
        items: list[Any] = [value]
    elif isinstance(value, (str, bytes)) or not isinstance(value, (Iterable, np.ndarray)):
        raise InvalidInputError(f"{what}: expected an int or a sequence of ints, got {value!r}")
    else:
        items = list(np.asarray(value).ravel()) if isinstance(value, np.ndarray) else list(value)
    out = [place_id(v, f"{what}[{i}]") for i, v in enumerate(items)]
    if n is not None and len(out) != n:
        raise InvalidInputError(f"{what}: {len(out)} ids given for {n} descriptors")
    if len(set(out)) != len(out):
        seen: set[int] = set()
        dup = next(v for v in out if v in seen or seen.add(v))  # type: ignore[func-returns-value]
        raise InvalidInputError(f"{what}: id {dup} appears twice in one call")
    return out


def _per_row(value: Any, n: int, single: bool, what: str) -> list[Any]:
    """Broadcast a per-place argument: one item for 1-D input, a sequence of ``n`` otherwise."""
    if value is None:
        return [None] * n
    if single:
        return [value]
    if isinstance(value, (str, bytes, dict)) or not isinstance(value, (Sequence, np.ndarray)):
        raise InvalidInputError(
            f"{what}: with a batch of {n} descriptors pass a sequence of {n} items (or None)"
        )
    items = list(value)
    if len(items) != n:
        raise InvalidInputError(f"{what}: {len(items)} items given for {n} descriptors")
    return items


def finite_float(value: Any, what: str, fix: str = "") -> float:
    """``value`` (a real number) as a finite float, else :class:`InvalidInputError` naming
    ``what`` (and ending with ``fix``, if given)."""
    try:
        f = float(value)
    except OverflowError:  # a Python int beyond float64
        f = math.inf
    if not math.isfinite(f):
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise InvalidInputError(f"{what}: {shown} is not finite" + (f"; {fix}" if fix else ""))
    return f


def stamps(value: Any, n: int, single: bool) -> np.ndarray:
    """Per-place timestamps as float64 with NaN for "no stamp"."""
    out = np.full(n, np.nan, dtype=np.float64)
    for i, item in enumerate(_per_row(value, n, single, "stamps")):
        if item is None:
            continue
        if isinstance(item, (bool, np.bool_)) or not isinstance(item, numbers.Real):
            raise InvalidInputError(f"stamps[{i}]: expected float seconds or None, got {item!r}")
        f = finite_float(item, f"stamps[{i}]", "use None for 'unknown'")
        out[i] = f
    return out


def poses(value: Any, n: int, single: bool) -> list[tuple[float, ...] | None]:
    """Per-place poses: tuples of finite floats, or None."""
    out: list[tuple[float, ...] | None] = []
    for i, item in enumerate(_per_row(value, n, single, "poses")):
        if item is None:
            out.append(None)
            continue
        if isinstance(item, Pose):
            item = item.as_tuple()
        try:
            arr = np.asarray(item, dtype=np.float64)
        except OverflowError as exc:  # a Python int beyond float64
            raise InvalidInputError(f"poses[{i}]: a value beyond float range ({exc})") from exc
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"poses[{i}]: not a sequence of floats ({exc})") from exc
        if arr.ndim != 1 or arr.size == 0:
            raise InvalidInputError(
                f"poses[{i}]: expected a flat sequence of floats such as (x, y, z, qx, qy, qz, "
                f"qw), got shape {arr.shape}"
            )
        if arr.size > MAX_POSE_DIM:  # a map holding it could be saved but never opened
            raise InvalidInputError(
                f"poses[{i}]: {arr.size} values, but a map stores poses of at most "
                f"{MAX_POSE_DIM} (x, y, z, qx, qy, qz, qw: 7); keep covariances and other "
                "per-place values in meta"
            )
        if not np.isfinite(arr).all():
            raise InvalidInputError(f"poses[{i}]: contains NaN or inf")
        out.append(tuple(float(v) for v in arr))
    return out


def _check_keys(obj: Any, where: str) -> None:
    if isinstance(obj, dict):
        for key, val in obj.items():
            if not isinstance(key, str):
                raise InvalidInputError(
                    f"{where}: key {key!r} is not a string; JSON objects have string keys"
                )
            _check_keys(val, f"{where}[{key!r}]")
    elif isinstance(obj, (list, tuple)):
        for j, val in enumerate(obj):
            _check_keys(val, f"{where}[{j}]")


def nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether lists, tuples and dicts nest in ``value`` more than ``limit`` levels deep (a
    circular one does); counted without recursion."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list, tuple)):
            if depth >= limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False


def meta_json(value: Any, what: str = "meta") -> str | None:
    """User metadata as compact JSON text (None for no/empty metadata).

    The stored form is what JSON gives back: tuples become lists.
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidInputError(f"{what}: metadata must be a dict (JSON object), got "
                                f"{type(value).__name__}")
    if not value:
        return None
    try:
        _check_keys(value, what)
        text = json.dumps(value, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
        text.encode("utf-8")  # maps are saved as UTF-8: refuse now what save() could not write
        return text
    except UnicodeEncodeError as exc:
        raise InvalidInputError(
            f"{what}: a string holds a character UTF-8 cannot store ({exc.reason}: "
            f"{exc.object[max(0, exc.start - 20):exc.end + 20]!r}), such as a file name "
            "decoded with os.fsdecode; pass it as os.fsencode(name).decode('utf-8', "
            "'replace') or its repr"
        ) from exc
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"{what}: not JSON-serialisable ({exc}); use str/int/float/bool/None, lists and "
            "dicts with string keys (no NaN/inf)"
        ) from exc
    except RecursionError as exc:
        raise InvalidInputError(f"{what}: nested too deeply (or circular)") from exc


def metas(value: Any, n: int, single: bool) -> list[str | None]:
    """Per-place metadata as JSON text."""
    return [meta_json(item, f"meta[{i}]")
            for i, item in enumerate(_per_row(value, n, single, "meta"))]


#: The names ``PlaceIndex`` errors give (a batch's row 0, its own arguments), and those of the
#: one-place methods that call it (``Localizer.add``, ``LoopClosureDetector.process_*``).
_SINGLE_PLACE_NAMES = {"stamps[0]": "stamp", "poses[0]": "pose", "meta[0]": "meta",
                       "ids[0]": "place_id", "ids": "place_id",
                       "exclude_newest": "exclude_recent"}
_LEADING_NAME = re.compile(r"[\w\[\]]+")


@contextmanager
def single_place_names() -> Iterator[None]:
    """Re-raise an index error that starts with an index argument's name with the name a
    one-place method gives it (``stamps[0]: ...`` -> ``stamp: ...``), keeping its class."""
    try:
        yield
    except InvalidInputError as exc:
        message = str(exc)
        name = _LEADING_NAME.match(message)
        if name is None or name.group() not in _SINGLE_PLACE_NAMES:
            raise
        raise type(exc)(_SINGLE_PLACE_NAMES[name.group()] + message[name.end():]) from exc
