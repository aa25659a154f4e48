"""Child process for the crash-during-save tests (run as a script, never imported by pytest).

    python _map_crash_child.py MAP loop               add STEP places and save, forever
    python _map_crash_child.py MAP failpoint:NAME     add STEP places, save, SIGKILL at NAME

It prints ``ready`` once the map is open, then after every completed save the number of
places in the saved map. Place ``i`` has
the descriptor :func:`vector` ``(i)``, stamp ``float(i)`` and metadata ``{"i": i}``, so the
parent can check any map it finds.
"""

from __future__ import annotations

import os
import signal
import sys

import numpy as np

DIM = 24
STEP = 50
FINGERPRINT = "crash-test-model"


def vector(i: int) -> np.ndarray:
    v = np.random.default_rng(i).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def main(target: str, mode: str) -> None:
    from vpr_edge.index import IndexSettings, PlaceIndex, atomic_dir

    if os.path.exists(target) or os.path.exists(target + atomic_dir.OLD_SUFFIX):
        index = PlaceIndex.open(target, fingerprint=FINGERPRINT,
                                settings=IndexSettings(mode="hnsw"))
    else:
        index = PlaceIndex(DIM, fingerprint=FINGERPRINT, settings=IndexSettings(mode="hnsw"))
    if mode.startswith("failpoint:"):
        name = mode.split(":", 1)[1]

        def die(step: str) -> None:
            if step == name:
                os.kill(os.getpid(), signal.SIGKILL)

        atomic_dir.FAILPOINT = die
    print("ready", flush=True)
    while True:
        n = len(index)
        new = range(n, n + STEP)
        index.add(np.stack([vector(i) for i in new]), ids=new, stamps=[float(i) for i in new],
                  meta=[{"i": i} for i in new])
        index.save(target)
        print(len(index), flush=True)
        if mode != "loop":
            return


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
