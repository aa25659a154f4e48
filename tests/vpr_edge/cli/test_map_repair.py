"""`vpr-edge map repair`: a damaged search graph is rebuilt from the stored descriptors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from vpr_edge.cli import main
from vpr_edge.index import PlaceIndex


def _map(tmp_path: Path) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(0)
    descriptors = rng.normal(size=(300, 64)).astype(np.float32)
    descriptors /= np.linalg.norm(descriptors, axis=1, keepdims=True)
    index = PlaceIndex(64)
    index.add(descriptors, stamps=np.arange(300.0))
    return index.save(tmp_path / "map"), descriptors


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def test_a_damaged_graph_is_rebuilt_and_a_sound_map_left_alone(tmp_path: Path, capsys) -> None:
    """The damage message named only open(..., rebuild_if_corrupt=True): a command-line user
    had no way to mend the map."""
    map_dir, descriptors = _map(tmp_path)
    graph = map_dir / "index.hnsw"
    graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 2])
    capsys.readouterr()
    assert main(["info", str(map_dir)]) == 2
    assert "vpr-edge map repair" in capsys.readouterr().err
    out = tmp_path / "repair.json"
    assert main(["map", "repair", str(map_dir), "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["repaired"] is True and "index.hnsw" in summary["problem"]
    assert "map repair" not in summary["problem"]  # what was wrong, not the advice to repair
    assert summary["places"] == 300
    repaired = PlaceIndex.open(map_dir)
    best = repaired.query(descriptors[:20], 1)
    assert [m[0].place_id for m in best] == list(range(20))
    assert repaired.get(7).stamp == 7.0
    before = _digests(map_dir)
    assert main(["map", "repair", str(map_dir), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["repaired"] is False
    assert "the map is sound" in capsys.readouterr().out
    assert _digests(map_dir) == before  # nothing written


def test_damage_beyond_the_graph_is_refused_and_left_as_it_is(tmp_path: Path, capsys) -> None:
    map_dir, _ = _map(tmp_path)
    records = next(p for p in map_dir.iterdir() if p.name.endswith(".descriptors.npy"))
    records.write_bytes(records.read_bytes()[:100])
    before = _digests(map_dir)
    assert main(["map", "repair", str(map_dir)]) == 2
    err = capsys.readouterr().err
    assert records.name in err and "rebuilds only index.hnsw" in err
    assert _digests(map_dir) == before
    assert main(["map", "repair", str(tmp_path / "nothing")]) == 2
    assert "no such map" in capsys.readouterr().err
