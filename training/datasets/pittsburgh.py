"""The Pittsburgh / Tokyo ``.mat`` dataset specification (``dbStruct``) of the NetVLAD paper.

``pitts30k_train.mat`` and friends hold one MATLAB struct ``dbStruct`` with the fields, in
order: ``whichSet``, ``dbImage`` (cell of relative paths), ``utmDb`` (2 x N), ``qImage``,
``utmQ`` (2 x M), ``numImages``, ``numQueries``, ``posDistThr`` (metres),
``posDistSqThr``, ``nonTrivPosDistSqThr``. Images are found under ``image_root`` (database
images usually in ``images/``, queries in ``queries/``: pass both roots if they differ).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vpr_edge.errors import InvalidInputError

from .places import PlaceSet, Radii, RetrievalDataset

FIELDS = ("whichSet", "dbImage", "utmDb", "qImage", "utmQ", "numImages", "numQueries",
          "posDistThr", "posDistSqThr", "nonTrivPosDistSqThr")


def read_pittsburgh(mat_path: str | os.PathLike, image_root: str | os.PathLike, *,
                    query_root: str | os.PathLike | None = None,
                    radii: Radii | None = None) -> RetrievalDataset:
    """Read a ``dbStruct`` ``.mat`` file. ``eval_radius`` defaults to its ``posDistThr``."""
    from scipy.io import loadmat

    mat_path = Path(mat_path)
    from scipy.io.matlab import MatReadError

    try:
        mat = loadmat(str(mat_path))
    except (OSError, ValueError, TypeError, MatReadError) as exc:
        raise InvalidInputError(f"{mat_path}: not a readable .mat file ({exc}); give the "
                                "dataset's pitts30k_*.mat (copy it again if it is "
                                "truncated)") from exc
    if "dbStruct" not in mat:
        raise InvalidInputError(f"{mat_path}: no dbStruct variable (found {sorted(mat)})")
    struct = mat["dbStruct"].item()
    if len(struct) < len(FIELDS):
        raise InvalidInputError(f"{mat_path}: dbStruct has {len(struct)} fields, expected "
                                f"{len(FIELDS)} ({', '.join(FIELDS)})")
    which, db_images, utm_db, q_images, utm_q = struct[:5]
    pos_dist = float(np.asarray(struct[7]).squeeze())
    db_paths = [Path(image_root) / _cell_string(f) for f in np.asarray(db_images).ravel()]
    q_root = Path(query_root) if query_root is not None else Path(image_root)
    q_paths = [q_root / _cell_string(f) for f in np.asarray(q_images).ravel()]
    db_xy = np.asarray(utm_db, float).reshape(2, -1).T
    q_xy = np.asarray(utm_q, float).reshape(2, -1).T
    if len(db_paths) != len(db_xy) or len(q_paths) != len(q_xy):
        raise InvalidInputError(f"{mat_path}: image lists and utm positions differ in length")
    radii = radii if radii is not None else Radii(pos_radius=min(10.0, pos_dist),
                                                  neg_radius=max(25.0, pos_dist),
                                                  eval_radius=pos_dist)
    return RetrievalDataset(
        name=f"{mat_path.stem} ({_cell_string(which)})",
        database=PlaceSet(tuple(db_paths), db_xy), queries=PlaceSet(tuple(q_paths), q_xy),
        unit="m", radii=radii,
    )


def _cell_string(value) -> str:
    """A MATLAB string as loadmat returns it (possibly nested in 1x1 arrays)."""
    while isinstance(value, np.ndarray):
        if value.size != 1 and value.dtype.kind not in "US":
            raise InvalidInputError(f"expected a string in the .mat cell, got {value!r}")
        value = value.item() if value.size == 1 else "".join(value.ravel())
    return str(value).strip()
