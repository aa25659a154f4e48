"""Shared fixtures: the real evaluation data in ../shared/data and the GPU marker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path:
    """``$VPR_EDGE_DATA`` or ``<repo>/../shared/data`` (read-only, never copied here)."""
    return Path(os.environ.get("VPR_EDGE_DATA", REPO_ROOT.parent / "shared" / "data"))


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not present at {path} (set VPR_EDGE_DATA)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _require(shared_data_root())


@pytest.fixture(scope="session")
def corridor_dir(shared_data: Path) -> Path:
    return _require(shared_data / "corridor")


@pytest.fixture(scope="session")
def gardens_point_dir(shared_data: Path) -> Path:
    return _require(shared_data / "gardens_point")


@pytest.fixture(scope="session")
def rosbag_path(shared_data: Path) -> Path:
    return _require(shared_data / "rosbag" / "spot_hand_color_image.bag")


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if any(item.get_closest_marker("gpu") for item in items) and not _has_cuda():
        skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (run on the device machine)")
        for item in items:
            if item.get_closest_marker("gpu"):
                item.add_marker(skip_gpu)
