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

PathLike = Union[str, "os.PathLike[str]"]


def user_path(path: PathLike) -> Path:
    """``path`` with a leading ``~`` or ``~user`` expanded, as an absolute path (relative to
    the current directory now, so a process that changes directory later keeps it)."""
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path))))


def expanded_path(text: str) -> Path:
    """``text`` with a leading ``~`` expanded, otherwise as given (argparse's ``type`` for
    paths: a quoted ``'~/maps/lab'``, or one from a systemd unit or a Docker ``CMD``, which
    no shell expands, means the home folder)."""
    return Path(os.path.expanduser(text))
