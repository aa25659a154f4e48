"""Import optional dependencies with an error that says which extra to install."""

from __future__ import annotations

import importlib
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
            f"({exc}). Install vpr-edge's '{extra}' extra: pip install 'vpr-edge[{extra}]' "
            f"(in a vpr-edge checkout: pip install '.[{extra}]')"
        ) from exc
