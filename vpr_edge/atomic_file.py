"""Write a file so that a crash leaves either the old file or the new one, never half of one.

The bytes go to a temporary file beside the target, are fsynced, and the temporary file is
renamed over the target. The file gets ordinary permissions (0666 minus the umask, like
``open()``), not the 0600 of ``tempfile.mkstemp``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def _mode_from_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def temp_path_beside(final: str | os.PathLike) -> Path:
    """A new, empty temporary file in ``final``'s directory (for writers that need a path)."""
    final = Path(final)
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    os.chmod(name, _mode_from_umask())
    return Path(name)


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
    return path
