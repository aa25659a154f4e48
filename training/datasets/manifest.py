"""CSV manifests: one row per image with its position and role.

Columns (header row required):

| column | required | meaning |
|---|---|---|
| ``image`` | yes | path, relative to the CSV file's folder or absolute |
| ``x``, ``y`` | one of these pairs | metric position (metres) |
| ``lat``, ``lon`` | | WGS84 degrees, converted to UTM metres |
| ``role`` | yes | ``database`` or ``query`` |
| ``sequence`` | no | traversal name (kept, not used for ground truth) |
| ``timestamp`` | no | seconds |

All lat/lon rows are projected into the UTM zone of the first row, so distances stay
consistent for routes that cross a zone border (a warning says so).
"""

from __future__ import annotations

import csv
import logging
import math
import os
from pathlib import Path

import numpy as np

from vpr_edge.errors import InvalidInputError

from .places import PlaceSet, Radii, RetrievalDataset

log = logging.getLogger("vpr_edge.training")
ROLES = ("database", "query")


def read_manifest(path: str | os.PathLike, *, radii: Radii = Radii(),
                  check_files: bool = True) -> RetrievalDataset:
    """Read a CSV manifest into a :class:`RetrievalDataset` (metres)."""
    path = Path(path)
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip() for c in reader.fieldnames or []]
            rows = list(reader)
    except OSError as exc:
        raise InvalidInputError(f"{path}: cannot read manifest ({exc})") from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InvalidInputError(f"{path}: not a CSV text file ({exc})") from exc
    metric = {"x", "y"} <= set(columns)
    geographic = {"lat", "lon"} <= set(columns)
    missing = [c for c in ("image", "role") if c not in columns]
    if missing or metric == geographic:
        raise InvalidInputError(
            f"{path}: columns must be image, role and either x,y (metres) or lat,lon "
            f"(degrees), not both; found {columns}"
            + (f" (missing {', '.join(missing)})" if missing else "")
        )
    if not rows:
        raise InvalidInputError(f"{path}: the manifest has a header but no rows")
    images, positions, roles, sequences, stamps = [], [], [], [], []
    for line, raw in enumerate(rows, start=2):
        row = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        role = row["role"].lower()
        if role not in ROLES:
            raise InvalidInputError(f"{path}:{line}: role {row['role']!r} is not one of {ROLES}")
        a, b = ("x", "y") if metric else ("lat", "lon")
        pos = (_number(row[a], path, line, a), _number(row[b], path, line, b))
        if geographic and not (-90 <= pos[0] <= 90 and -180 <= pos[1] <= 180):
            raise InvalidInputError(f"{path}:{line}: lat/lon {pos} out of range")
        if not row["image"]:
            raise InvalidInputError(f"{path}:{line}: empty image path")
        image = Path(row["image"])
        images.append(image if image.is_absolute() else path.parent / image)
        positions.append(pos)
        roles.append(role)
        sequences.append(row.get("sequence") or "")
        stamp = row.get("timestamp")
        stamps.append(_number(stamp, path, line, "timestamp") if stamp else np.nan)
    if check_files:
        absent = [str(p) for p in images if not p.is_file()]
        if absent:
            raise InvalidInputError(
                f"{path}: {len(absent)} image files are missing, e.g. {absent[:3]}; fix the "
                "paths (relative paths are relative to the manifest's folder)"
            )
    xy = np.array(positions, dtype=np.float64)
    if geographic:
        xy = latlon_to_utm(xy[:, 0], xy[:, 1])
    role_arr = np.array(roles)
    has_seq = "sequence" in columns
    stamp_arr = np.array(stamps) if "timestamp" in columns else None

    def part(which: str) -> PlaceSet:
        idx = np.flatnonzero(role_arr == which)
        return PlaceSet(tuple(images[i] for i in idx), xy[idx],
                        tuple(sequences[i] for i in idx) if has_seq else None,
                        None if stamp_arr is None else stamp_arr[idx])

    return RetrievalDataset(name=path.stem, database=part("database"),
                            queries=part("query"), unit="m", radii=radii)


def latlon_to_utm(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """``[n, 2]`` UTM easting/northing (metres), all in the zone of the first point."""
    import utm

    _, _, zone, letter = utm.from_latlon(float(lat[0]), float(lon[0]))
    step = max(1, len(lat) // 100)
    zones = {utm.from_latlon(float(a), float(b))[2] for a, b in zip(lat[::step], lon[::step])}
    if len(zones) > 1:
        log.warning("positions span UTM zones %s; all are projected into zone %d",
                    sorted(zones), zone)
    east, north, _, _ = utm.from_latlon(np.asarray(lat), np.asarray(lon),
                                        force_zone_number=zone, force_zone_letter=letter)
    return np.stack([east, north], axis=1)


def _number(text: str, path: Path, line: int, column: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise InvalidInputError(f"{path}:{line}: {column} {text!r} is not a number") from exc
    if not math.isfinite(value):
        raise InvalidInputError(f"{path}:{line}: {column} is {value}")
    return value
