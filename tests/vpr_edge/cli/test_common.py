"""Checks shared by the commands (vpr_edge/cli/common.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vpr_edge.cli.common import require_map
from vpr_edge.errors import MapError
from vpr_edge.index import atomic_dir


def test_a_folder_of_other_things_is_no_map_and_gets_no_lock_file(tmp_path: Path) -> None:
    """`vpr-edge query MODEL photos/ x.jpg` advised "or a new or empty one to make a map in"
    (which query refuses) and left photos.lock beside the user's folder."""
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(b"jpg")
    with pytest.raises(MapError, match="a folder of other things, not a map"):
        require_map(photos)
    with atomic_dir.shared_lock(photos):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]
    with pytest.raises(MapError, match="no such map"):
        require_map(tmp_path / "missing")
