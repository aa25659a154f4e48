"""Choosing the frame source (``vpr_edge.sources.open_source``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vpr_edge.errors import InvalidInputError
from vpr_edge.sources import open_source


def test_an_empty_frame_list_argument_is_no_source(tmp_path: Path) -> None:
    """``frame_list=""`` passed the one-source check as "not given", then was read as a CSV
    (the current directory): the bag the caller gave was never looked at."""
    with pytest.raises(InvalidInputError) as raised:
        open_source(frame_list="", bag=tmp_path / "missing.bag", topic="/camera/image_raw")
    assert "missing.bag" in str(raised.value) and "frame list" not in str(raised.value)
    with pytest.raises(InvalidInputError, match="exactly one frame source"):
        open_source(frame_list="")
