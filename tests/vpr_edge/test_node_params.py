"""The ROS nodes' parameters, read and checked without ROS (``vpr_edge.node_params``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vpr_edge.errors import InvalidInputError
from vpr_edge.node_params import DEFAULTS, node_config_from_params


def read(**values):
    params = {**DEFAULTS, "model": "model.onnx", **values}
    return node_config_from_params(lambda name, _default: params[name])


def test_paths_that_cannot_be_written_are_refused_at_start(tmp_path: Path) -> None:
    """A map_dir or stats_file under a file was accepted, and the whole run's map (or its
    statistics) was lost at shutdown."""
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    for name in ("map_dir", "stats_file"):
        with pytest.raises(InvalidInputError, match=f"parameter {name} .*could not be saved"):
            read(**{name: str(a_file / "inside")})
    # folders that do not exist yet are made when needed
    config = read(map_dir=str(tmp_path / "new" / "maps" / "lab"),
                  stats_file=str(tmp_path / "logs" / "stats.json"))
    assert config.map_dir == str(tmp_path / "new" / "maps" / "lab")
    assert read(map_dir="", stats_file="").map_dir is None
