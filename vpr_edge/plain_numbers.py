"""Numbers in the runtime's config dataclasses, kept as plain Python ``int`` and ``float``.

Settings often come from NumPy: a parameter sweep over ``np.arange``, a value read from an
array or a ``.npz``. The configs (``IndexSettings``, ``LoopClosureConfig``, ``VerifyConfig``,
``KeyframeConfig``, ``NodeConfig``, ``OnnxRuntimeOptions``, ``Pose``) take NumPy integers and
floats where they take Python ones, and store them as ``int`` / ``float``: their checks then
see one type, and a config still serialises to JSON (``np.int64`` and ``np.float32`` do not).
A float is never taken for an int field (``np.float64(3.0)`` is refused, not truncated), and
NumPy's ``bool_`` is not a number here.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
from typing import Any

#: field annotations (as strings: modules use ``from __future__ import annotations``) whose
#: values are made plain, and the Python type each takes
_PLAIN = {"int": int, "int | None": int, "float": float, "float | None": float}


def plain_numbers(config: Any) -> None:
    """Replace, in place (frozen dataclasses too), the values of ``config``'s ``int`` and
    ``float`` fields that are integers or reals of another type (NumPy scalars) by ``int`` or
    ``float``. Anything else is left as it is, for the config's own checks to judge."""
    for name, kind in _number_fields(type(config)):
        value = getattr(config, name)
        if type(value) in (int, float, bool):
            continue
        if isinstance(value, numbers.Integral):
            plain: int | float = kind(value)
        elif kind is float and isinstance(value, numbers.Real):
            plain = float(value)
        else:
            continue
        object.__setattr__(config, name, plain)


@functools.cache
def _number_fields(cls: type) -> tuple[tuple[str, type], ...]:
    """``(name, int or float)`` of each field of the dataclass ``cls`` made plain."""
    return tuple((f.name, _PLAIN[str(f.type)]) for f in dataclasses.fields(cls)
                 if str(f.type) in _PLAIN)
