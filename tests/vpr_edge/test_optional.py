"""_optional: a missing optional package is an error that names the extra and a pip command
that works for vpr-edge, which is installed from a checkout or a wheel, not from PyPI."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

from vpr_edge import _optional
from vpr_edge.errors import MissingDependencyError

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_a_missing_module_names_the_extra_and_its_packages() -> None:
    """The error said `pip install 'vpr-edge[ros]'`, which fails (vpr-edge is not on PyPI)
    or would fetch somebody else's package; it now names the packages the extra brings."""
    with pytest.raises(MissingDependencyError) as caught:
        _optional.require("no_such_module_here", "ros", "reading bags")
    text = str(caught.value)
    assert "reading bags needs the Python module 'no_such_module_here'" in text
    assert "Install the vpr-edge[ros] extra: pip install 'rosbags>=0.11' (or pip install " \
           "'.[ros]' in a vpr-edge checkout)" in text
    assert "pip install 'vpr-edge[" not in text


@pytest.mark.parametrize("extra", ["cpu", "tensorrt", "verify", "ros", "export", "train"])
def test_the_packages_of_an_extra_are_those_of_pyproject(extra: str) -> None:
    tomllib = pytest.importorskip("tomllib", reason="Python >= 3.11 reads TOML")
    with open(PYPROJECT, "rb") as fh:
        declared = tomllib.load(fh)["project"]["optional-dependencies"][extra]
    assert list(_optional.extra_packages(extra)) == [d.replace(" ", "") for d in declared]


def test_without_vpr_edges_metadata_the_checkout_command_is_given(monkeypatch) -> None:
    def not_installed(name: str):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "requires", not_installed)
    _optional.extra_packages.cache_clear()
    try:
        assert _optional.install_command("ros") == "pip install '.[ros]' in a vpr-edge checkout"
    finally:
        _optional.extra_packages.cache_clear()
