"""`vpr-edge bench`: the synthetic map it fills, and the maps it refuses to make."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vpr_edge.cli import bench, main
from vpr_edge.errors import InvalidInputError


def test_a_map_that_would_not_fit_in_memory_is_refused_up_front(
        tiny_onnx: Path, tiny, cpu_only: None, monkeypatch, capsys) -> None:
    """`--places 100000000` died in numpy ("Unable to allocate 5.22 TiB"), after making the
    whole map's random descriptors in float64 first."""
    monkeypatch.setattr(bench, "available_memory", lambda: 8 << 30)
    assert main(["bench", str(tiny_onnx), "--places", str(10**12), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--places 1000000000000: the synthetic map" in err and "8.0 GiB available" in err
    fits = int(err.split("give --places ")[1].split()[0])
    assert 0 < fits < 10**12
    timed_adds = 50 + 1  # --repeat's default, and the warm-up
    bench.map_settings(tiny.DIM, fits, fits + timed_adds)  # what it says to give is taken
    with pytest.raises(InvalidInputError):
        bench.map_settings(tiny.DIM, fits + 1, fits + 1 + timed_adds)


def test_the_map_is_made_in_float32_chunks(tiny_onnx: Path, tiny, cpu_only: None,
                                           monkeypatch) -> None:
    """The whole map's descriptors were drawn at once, in float64 (twice the float32 the
    index takes), before the first was added."""
    shapes, real = [], np.random.default_rng

    class Recording:  # (the index draws its own numbers too: they pass through)
        def __init__(self, *args) -> None:
            self.rng = real(*args)

        def __getattr__(self, name: str):
            return getattr(self.rng, name)

        def standard_normal(self, shape, dtype=np.float64):
            shapes.append((shape, np.dtype(dtype)))
            return self.rng.standard_normal(shape, dtype)

    monkeypatch.setattr(bench.np.random, "default_rng", Recording)
    frame = np.zeros((48, 64, 3), np.uint8)
    result = bench.benchmark(tiny_onnx, places=25000, repeat=2, frame=frame,
                             backend="onnxruntime-cpu", progress=False)
    assert result["places"] == 25000
    assert shapes == [((10000, tiny.DIM), np.float32), ((10000, tiny.DIM), np.float32),
                      ((5000, tiny.DIM), np.float32)]


def test_a_containers_memory_limit_counts(tmp_path: Path) -> None:
    """Docker's --memory limit was not seen: the bench sized a map by the host's memory."""
    (tmp_path / "memory.max").write_text("1073741824\n")
    (tmp_path / "memory.current").write_text("536870912\n")
    assert bench.available_memory(tmp_path) == 512 << 20
    (tmp_path / "memory.max").write_text("max\n")
    assert bench.available_memory(tmp_path) > 512 << 20  # the host's MemAvailable
