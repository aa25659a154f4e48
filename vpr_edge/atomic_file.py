"""Write a file so that a crash leaves either the old file or the new one, never half of one.

The bytes go to a temporary file beside the target, are fsynced, the temporary file is
renamed over the target, and the directory is fsynced so that the rename survives a power
cut. The file gets ordinary permissions (0666 minus the umask, like ``open()``), not the 0600
of ``tempfile.mkstemp``.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)
#: What fsync of a directory raises on file systems that do not do it (nothing to be done).
DIR_FSYNC_UNSUPPORTED = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF})

def fsync_dir(path: str | os.PathLike) -> None:
    """Make the entries of a directory (creations, renames, deletions) durable."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # platforms that cannot open directories (Windows)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in DIR_FSYNC_UNSUPPORTED:  # EIO: the disk failed to write it
            log.warning("%s: the folder could not be synced to disk (%s): its last change (a "
                        "save, a rename) may not survive a power cut; check the disk (dmesg)",
                        path, exc.strerror or exc)
    finally:
        os.close(fd)


def unwritable_folder(path: str | os.PathLike) -> str | None:
    """Why a file or directory at ``path`` could not be created (its nearest existing parent
    is a file, or not writable), or None when it could (missing folders can be made)."""
    parent = Path(os.path.abspath(path)).parent
    for folder in (parent, *parent.parents):
        if folder.exists():
            if not folder.is_dir():
                return f"{folder} is a file, not a folder"
            if not os.access(folder, os.W_OK | os.X_OK):
                return f"cannot write in {folder}"
            return None
    return None


def temp_path_beside(final: str | os.PathLike) -> Path:
    """A new, empty temporary file in ``final``'s directory (for writers that need a path),
    created with mode 0666 so that the kernel applies the umask (no process-wide umask
    change, which would race with other threads)."""
    final = Path(final)
    while True:
        name = final.with_name(f".{final.name}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return name


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(fh)`` on a temporary file, fsync it, and rename it to ``path``."""
    path = Path(path)
    tmp = temp_path_beside(path)
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path
