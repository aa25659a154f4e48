"""What the place index hands back: a stored place, and a query match.

Plain slotted dataclasses (every call returns fresh objects, so nothing is shared with the
index; a frozen dataclass would cost ~3 us more per match to build).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class PlaceRecord:
    """A stored place.

    Attributes:
        place_id: the place's id (non-negative int, unique among live places).
        stamp: time the place was seen, float seconds (any epoch), or None.
        pose: the pose given when the place was added (e.g. x, y, z, qx, qy, qz, qw), or None.
        meta: user metadata (a JSON object; a fresh copy on every call).
    """

    place_id: int
    stamp: float | None
    pose: tuple[float, ...] | None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class PlaceMatch:
    """One answer to a query, best first.

    Attributes:
        place_id: the matched place.
        score: cosine similarity of the query and the place descriptor (inner product of
            L2-normalised vectors), in [-1, 1]; higher is more similar.
        stamp, pose, meta: the matched place's record (see :class:`PlaceRecord`).
    """

    place_id: int
    score: float
    stamp: float | None
    pose: tuple[float, ...] | None
    meta: dict[str, Any] = field(default_factory=dict)
