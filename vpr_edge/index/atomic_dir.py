"""Replace a directory so that a crash at any moment leaves a complete one behind.

The protocol (``T`` = target directory, all names in T's parent, so renames stay on one file
system)::

    lock      T.lock               exclusive flock: one saver at a time, across processes
    recover   T missing, T.old ok  -> rename T.old back to T (a crash hit between 3 and 4)
              T and T.old present  -> delete T.old (a crash hit between 4 and 5)
              T.tmp-*              -> delete (a crash hit while writing)
    1 write   T.tmp-<pid>-<rand>/  every file written, fsynced, then the directory fsynced
    2         (the caller's last file, the manifest, is written and fsynced last)
    3 aside   rename T -> T.old    fsync parent
    4 in      rename T.tmp-.. -> T fsync parent
    5 cleanup delete T.old         fsync parent

At every instant either ``T`` is a complete directory, or ``T`` is missing and ``T.old`` is the
previous complete one. Readers use :func:`resolve_for_read`, which picks ``T`` or else
``T.old`` and never changes anything on disk; savers repair the leftovers while holding the
lock. Renames and fsyncs are POSIX (Linux, macOS); the lock needs ``fcntl`` and is skipped where
it does not exist.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

OLD_SUFFIX = ".old"
TMP_INFIX = ".tmp-"
LOCK_SUFFIX = ".lock"

#: Test hook: called with the name of each protocol step as it is reached (crash tests kill
#: the process there). None in normal use.
FAILPOINT: Callable[[str], None] | None = None


def _failpoint(name: str) -> None:
    if FAILPOINT is not None:
        FAILPOINT(name)


def sibling(target: Path, suffix: str) -> Path:
    return target.with_name(target.name + suffix)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make the entries of a directory (creations, renames, deletions) durable."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # platforms that cannot open directories (Windows)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on directories; nothing more can be done
    finally:
        os.close(fd)


@contextmanager
def _flock(target: Path, exclusive: bool) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    lock_path = sibling(target, LOCK_SUFFIX)
    if exclusive:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    else:
        try:
            fd = os.open(lock_path, os.O_RDONLY)
        except OSError:  # no saver ever ran here (or unreadable): nothing to wait for
            yield
            return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def exclusive_lock(target: Path):
    """Hold while saving ``target`` (creates ``target.lock`` next to it)."""
    return _flock(target, True)


def shared_lock(target: Path):
    """Hold while reading ``target``: waits for a saver, never creates anything."""
    return _flock(target, False)


def resolve_for_read(target: Path) -> Path | None:
    """The complete directory to read: ``target``, else ``target.old``, else None."""
    if target.is_dir():
        return target
    old = sibling(target, OLD_SUFFIX)
    if not target.exists() and old.is_dir():
        return old
    return None


def recover(target: Path) -> None:
    """Repair what an interrupted save left (hold :func:`exclusive_lock`)."""
    old = sibling(target, OLD_SUFFIX)
    parent = target.parent
    changed = False
    if not target.exists() and old.is_dir():
        os.rename(old, target)
        changed = True
    elif target.is_dir() and old.exists():
        shutil.rmtree(old)
        changed = True
    for stale in parent.glob(f"{target.name}{TMP_INFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)
        changed = True
    if changed:
        fsync_dir(parent)


def make_temp(target: Path) -> Path:
    """A fresh empty directory next to ``target`` to write the new version into."""
    tmp = target.with_name(f"{target.name}{TMP_INFIX}{os.getpid()}-{secrets.token_hex(4)}")
    tmp.mkdir()
    return tmp


def commit(tmp: Path, target: Path) -> None:
    """Swap the fully written and fsynced ``tmp`` in as ``target`` (steps 3-5)."""
    parent = target.parent
    old = sibling(target, OLD_SUFFIX)
    fsync_dir(tmp)
    fsync_dir(parent)
    _failpoint("written")
    if target.exists():
        os.rename(target, old)
        fsync_dir(parent)
        _failpoint("aside")
    os.rename(tmp, target)
    fsync_dir(parent)
    _failpoint("renamed")
    if old.exists():
        shutil.rmtree(old)
        fsync_dir(parent)
    _failpoint("cleaned")


def discard(tmp: Path) -> None:
    """Remove a temp directory after a failed save (the target was never touched)."""
    shutil.rmtree(tmp, ignore_errors=True)
