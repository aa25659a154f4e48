"""argparse value types that refuse impossible numbers while the command line is read.

An option of one of these types refuses a bad value at once, with argparse's usual message
naming the option (``argument --batch: must be an integer >= 1, got '0'``) and exit code 2,
before any model is loaded or any image described.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from ..geometric import LEAST_MIN_INLIERS, LEAST_MIN_INLIERS_WHY


def _number(text: str, kind: type) -> float | int:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be {'an integer' if kind is int else 'a number'}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _checked(name: str, kind: type, ok: Callable[[float], bool], what: str
             ) -> Callable[[str], float | int]:
    def parse(text: str) -> float | int:
        value = _number(text, kind)
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    parse.__name__ = parse.__qualname__ = name
    return parse


#: a count, a size, a batch
positive_int = _checked("positive_int", int, lambda v: v >= 1, "an integer >= 1")
#: a window that may be off
non_negative_int = _checked("non_negative_int", int, lambda v: v >= 0, "an integer >= 0")
#: a rate, a margin, a distance
positive_float = _checked("positive_float", float, lambda v: v > 0, "a number > 0")
#: a penalty that may be off
non_negative_float = _checked("non_negative_float", float, lambda v: v >= 0, "a number >= 0")
#: a score threshold
finite_float = _checked("finite_float", float, lambda v: True, "a finite number")
#: the inliers that verify a loop
inlier_count = _checked("inlier_count", int, lambda v: v >= LEAST_MIN_INLIERS,
                        f"an integer >= {LEAST_MIN_INLIERS}{LEAST_MIN_INLIERS_WHY}")
#: a decay factor
fraction_up_to_one = _checked("fraction_up_to_one", float, lambda v: 0 < v <= 1,
                              "a number in (0, 1]")
