"""Paths as users write them: ``~`` expanded, made absolute.

Python's ``open()`` and ``pathlib`` leave ``~`` as it is, so ``Localizer(model,
"~/maps/lab")`` or a ROS parameter ``map_dir: ~/maps/lab`` (which no shell expands) would make
a folder literally named ``~`` in the current directory (``~/.ros`` under roslaunch), and the
next run, started elsewhere, would find no map.

Looking at a path (:func:`look`, :func:`is_dir`, :func:`folder_entries`) that this user may not
reach raises an error naming the folder that is closed and the fix, where pathlib raises a
bare ``PermissionError`` (Python 3.11's ``Path.is_dir()`` and ``Path.exists()`` among them).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Union

from .errors import InvalidInputError, VprEdgeError

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


def look(path: PathLike, error: type[VprEdgeError] = InvalidInputError
         ) -> os.stat_result | None:
    """``os.stat(path)``, or None where nothing is (or can be: a name too long for the file
    system, a loop of links); an ``error`` naming the folder and the fix for other failures
    (no permission to enter a folder above ``path``, an I/O error), which pathlib's
    ``is_dir()``/``exists()`` raise as a bare OSError on Python 3.11."""
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno in (errno.ENAMETOOLONG, errno.ELOOP):
            return None
        raise error(lookup_failure(Path(path), exc)) from exc


def lookup_failure(path: Path, exc: OSError) -> str:
    """Why ``path`` could not be looked at: the folder above it this user may not enter, or
    the error (with where to look for an I/O error's cause)."""
    if isinstance(exc, PermissionError):
        for folder in reversed(path.parents):  # from the root down: the first one closed
            if not os.access(folder, os.X_OK):
                return (f"cannot look into {folder}{_owner(folder)}, where {path.name} is: "
                        f"this user may not enter it; run as a user who may, or let this one "
                        f"in (chmod o+x {folder}, or add the user to its group)")
        return f"cannot look at {path}: permission denied ({exc})"
    return (f"cannot look at {path} ({exc.strerror or exc}): the disk or file system failed "
            "(see `dmesg`); check or remount it")


def _owner(path: Path) -> str:
    """`` (owned by uid U, mode M)`` for ``path``, or nothing where it cannot be looked at."""
    try:
        facts = os.stat(path)
    except OSError:
        return ""
    return f" (owned by uid {facts.st_uid}, mode {stat.S_IMODE(facts.st_mode):o})"


def is_dir(path: PathLike, error: type[VprEdgeError] = InvalidInputError) -> bool:
    """``path.is_dir()``, with :func:`look`'s errors."""
    facts = look(path, error)
    return facts is not None and stat.S_ISDIR(facts.st_mode)


def is_file(path: PathLike, error: type[VprEdgeError] = InvalidInputError) -> bool:
    """``path.is_file()``, with :func:`look`'s errors."""
    facts = look(path, error)
    return facts is not None and stat.S_ISREG(facts.st_mode)


def folder_entries(folder: Path) -> list[Path]:
    """``list(folder.iterdir())``; an :class:`InvalidInputError` naming the folder and the
    fix where this user may not list it."""
    try:
        return list(folder.iterdir())
    except PermissionError as exc:
        raise InvalidInputError(
            f"{folder}: no permission to list the folder{_owner(folder)}; run as a user who "
            f"may, or give others read access (chmod a+rx {folder})") from exc
