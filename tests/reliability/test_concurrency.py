"""Several threads adding and querying one Localizer at once: nothing lost, nothing wrong.

4 writers add places (descriptors with known ids), 4 readers query places already added and
describe frames, 20k operations in all (40k with ``--long``). Every answer is checked against
an exact model of what had been added when the query started. Bounded in time, so a
deadlock fails the test instead of hanging CI.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from vpr_edge.index import IndexSettings
from vpr_edge.localizer import Localizer


def test_writers_and_readers_agree_with_an_exact_model(tmp_path: Path, tiny,
                                                       long_mode: bool) -> None:
    total_ops = 40_000 if long_mode else 20_000
    writers, readers = 4, 4
    per_writer = total_ops // 2 // writers
    per_reader = total_ops // 2 // readers
    model = tiny.build(tmp_path / "tiny.onnx", tiny.metadata())
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((writers * per_writer, tiny.DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    frames = tiny.frames(8, seed=3)
    expected_frames = tiny.reference(frames, tiny.metadata())
    added = [False] * len(vectors)  # the exact model: which ids are in
    errors: list[str] = []
    loc = Localizer(model, backend="onnxruntime-cpu",
                    index_settings=IndexSettings(mode="hnsw", ef=128))

    def writer(w: int) -> None:
        try:
            for j in range(per_writer):
                pid = w * per_writer + j
                loc.add_descriptor(vectors[pid], place_id=pid, stamp=float(pid),
                                   meta={"w": w})
                added[pid] = True
        except Exception as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(f"writer {w}: {exc!r}")

    def reader(r: int) -> None:
        local = np.random.default_rng(100 + r)
        try:
            for j in range(per_reader):
                if j % 50 == 0:  # the backend is shared too
                    i = int(local.integers(len(frames)))
                    out = loc.describe(frames[i])
                    if not np.allclose(out, expected_frames[i], atol=1e-4):
                        errors.append(f"reader {r}: wrong descriptor for frame {i}")
                    continue
                known = [i for i in local.integers(len(vectors), size=8) if added[i]]
                if not known:
                    continue
                pid = int(known[0])
                best = loc.query_descriptor(vectors[pid], k=1)
                if not best or best[0].place_id != pid or best[0].meta != {"w": pid // per_writer}:
                    errors.append(f"reader {r}: query for {pid} gave {best[:1]}")
        except Exception as exc:  # noqa: BLE001
            errors.append(f"reader {r}: {exc!r}")

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    threads += [threading.Thread(target=reader, args=(r,)) for r in range(readers)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    assert not any(t.is_alive() for t in threads), "deadlock: threads still running"
    assert errors == [], errors[:5]
    assert len(loc) == len(vectors) and all(added)
    assert sorted(loc.index.ids()) == list(range(len(vectors)))
    lost = [pid for pid in range(0, len(vectors), 97)
            if loc.query_descriptor(vectors[pid], k=1)[0].place_id != pid]
    assert lost == []
    print(f"{total_ops} operations in {time.monotonic() - start:.1f} s")
