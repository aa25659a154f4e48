"""Paths as users write them: ``~`` expanded, made absolute.

Python's ``open()`` and ``pathlib`` leave ``~`` as it is, so ``Localizer(model,
"~/maps/lab")`` or a ROS parameter ``map_dir: ~/maps/lab`` (which no shell expands) would make
a folder literally named ``~`` in the current directory (``~/.ros`` under roslaunch), and the
next run, started elsewhere, would find no map.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

from .errors import InvalidInputError

PathLike = Union[str, "os.PathLike[str]"]


def user_path(path: PathLike) -> Path:
    """``path`` with a leading ``~`` or ``~user`` expanded, as an absolute path (relative to
    the current directory now, so a process that changes directory later keeps it)."""
    try:
        text = os.fspath(path)
    except TypeError:
        raise InvalidInputError(f"a path must be a str or a pathlib.Path, got "
                                f"{type(path).__name__} {path!r}") from None
    if isinstance(text, bytes):
        raise InvalidInputError(f"a path must be a str or a pathlib.Path, got bytes {text!r} "
                                "(decode it first)")
    return Path(os.path.abspath(os.path.expanduser(text)))


def expanded_path(text: str) -> Path:
    """``text`` with a leading ``~`` expanded, otherwise as given (argparse's ``type`` for
    paths: a quoted ``'~/maps/lab'``, or one from a systemd unit or a Docker ``CMD``, which
    no shell expands, means the home folder)."""
    return Path(os.path.expanduser(text))
