"""Import optional dependencies with an error that says which extra to install."""

from __future__ import annotations

import functools
import importlib
import re
from types import ModuleType

from .errors import MissingDependencyError


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming the pip extra.

    >>> np = require("numpy", extra="cpu", purpose="arrays")
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{purpose} needs the Python module '{module}', which is not installed "
            f"({exc}). Install the vpr-edge[{extra}] extra: {install_command(extra)}"
        ) from exc


def install_command(extra: str) -> str:
    """A pip command that installs what vpr-edge's ``extra`` brings, e.g. ``pip install
    'rosbags>=0.11' (or pip install '.[ros]' in a vpr-edge checkout)``.

    vpr-edge is installed from a checkout or a wheel, not from PyPI, so ``pip install
    'vpr-edge[ros]'`` would fail (or fetch somebody else's package): the extra's packages
    are named from the installed distribution's metadata."""
    packages = extra_packages(extra)
    checkout = f"pip install '.[{extra}]' in a vpr-edge checkout"
    if not packages:
        return checkout
    return f"pip install {' '.join(repr(p) for p in packages)} (or {checkout})"


@functools.lru_cache(maxsize=None)
def extra_packages(extra: str) -> tuple[str, ...]:
    """The requirements (``'rosbags>=0.11'``) that vpr-edge's ``extra`` adds; empty when
    vpr-edge's metadata cannot be read (run from a source tree that was never installed)."""
    from importlib import metadata

    try:
        requires = metadata.requires("vpr-edge") or []
    except metadata.PackageNotFoundError:
        return ()
    out = []
    for line in requires:
        requirement, _, marker = line.partition(";")
        if re.fullmatch(rf"""\s*extra\s*==\s*["']{re.escape(extra)}["']\s*""", marker):
            out.append(requirement.strip().replace(" ", ""))
    return tuple(out)
