"""Child process for the crash-during-save tests, and the helpers the tests use with it.

    python map_crash_child.py MAP loop               add STEP places and save, forever
    python map_crash_child.py MAP failpoint:NAME     add STEP places, save, SIGKILL at NAME

It prints ``ready`` once the map is open, then after every completed save the number of
places in the saved map. Place ``i`` has
the descriptor :func:`vector` ``(i)``, stamp ``float(i)`` and metadata ``{"i": i}``, so the
parent can check any map it finds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

DIM = 24
STEP = 50
FINGERPRINT = "crash-test-model"


def vector(i: int) -> np.ndarray:
    v = np.random.default_rng(i).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def child_env() -> dict[str, str]:
    """The environment for a child: this checkout first on the import path."""
    repo = str(Path(__file__).resolve().parents[2])
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (repo, os.environ.get("PYTHONPATH", "")) if p))


def start(target: Path, mode: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, str(target), mode],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env())


def run(target: Path, mode: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, __file__, str(target), mode], capture_output=True,
                          text=True, timeout=timeout, env=child_env(), check=False)


def check_map(target: Path) -> int:
    """Open the map a child left and check places in it; return the place count."""
    from vpr_edge.index import PlaceIndex

    index = PlaceIndex.open(target, fingerprint=FINGERPRINT)
    n = len(index)
    assert n % STEP == 0 and index.ids() == list(range(n))
    for i in sorted({0, n // 2, n - 1}) if n else []:
        match = index.query(vector(i), k=1)[0]
        assert (match.place_id, match.stamp, match.meta) == (i, float(i), {"i": i})
        assert match.score > 0.999
    return n


def main(target: str, mode: str) -> None:
    from vpr_edge.index import IndexSettings, PlaceIndex, atomic_dir

    # no refinement of the previous add: it would take most of each round (29 of 44 ms),
    # and the parent's kills should land in saves
    settings = IndexSettings(mode="hnsw", refine_adds=False)
    if os.path.exists(target) or os.path.exists(target + atomic_dir.OLD_SUFFIX):
        index = PlaceIndex.open(target, fingerprint=FINGERPRINT, settings=settings)
    else:
        index = PlaceIndex(DIM, fingerprint=FINGERPRINT, settings=settings)
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
