"""Replace a directory so that a crash at any moment leaves a complete one behind.

The protocol (``T`` = target directory, all names in T's parent, so renames stay on one file
system)::

    lock      T.lock                 exclusive flock: one saver at a time, across processes
    recover   T missing, T.vpr-edge-old  -> rename it back to T (a crash hit between 3 and 4)
              T and T.vpr-edge-old       -> delete T.vpr-edge-old (a crash between 4 and 5)
              T.vpr-edge-tmp-<pid>-<rand> -> delete (a crash hit while writing)
    1 write   T.vpr-edge-tmp-<pid>-<rand>/  every file written, fsynced, then the directory
    2         (the caller's last file, the manifest, is written and fsynced last)
    3 aside   rename T -> T.vpr-edge-old      fsync parent
    4 in      rename T.vpr-edge-tmp-.. -> T   fsync parent
    5 cleanup delete T.vpr-edge-old           fsync parent

At every instant either ``T`` is a complete directory, or ``T`` is missing and
``T.vpr-edge-old`` is the previous complete one. Readers use :func:`resolve_for_read`, which
picks ``T`` or else ``T.vpr-edge-old`` and changes nothing on disk but creating ``T.lock``;
savers repair the leftovers while holding the lock. The names are ours alone, so a user's
``T.old`` backup or ``T.tmp-notes`` folder is never touched. ``T`` is the real path:
:func:`real_target` resolves a symbolic link to the map (``maps/current ->
maps/2024-06-01``), so a save replaces the directory it points to and keeps the link.
Renames and fsyncs are POSIX (Linux, macOS); the lock needs ``fcntl`` and is skipped where it
does not exist.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import secrets
import shutil
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .. import paths
from ..atomic_file import fsync_dir, unwritable_folder
from ..errors import MapError
from ..paths import user_path
from .map_format import MANIFEST_NAME

log = logging.getLogger("vpr_edge")

OLD_SUFFIX = ".vpr-edge-old"
#: how the lock file is opened: a named pipe there would make open() wait for ever, and a
#: link there (dangling too) would make the lock, or create a file, somewhere else
_NO_WAIT_NO_LINK = os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
TMP_INFIX = ".vpr-edge-tmp-"
LOCK_SUFFIX = ".lock"
#: what older vpr-edge named the previous map during a save (now only named in errors)
LEGACY_OLD_SUFFIX = ".old"
#: seconds waited for the map's lock before a warning says so, and before giving up
LOCK_NOTICE_S = 5.0
LOCK_LIMIT_S = 600.0
LOCK_POLL_S = 0.02
#: pairs of looks at ``T`` and ``T.vpr-edge-old`` before :func:`resolve_for_read` says none
RESOLVE_TRIES = 4
#: bytes a save adds to the map folder's name for its temp folder (``-<pid>-<8 hex>``: Linux
#: pids have at most 7 digits), which must fit the file system's limit on a name
SAVE_NAME_EXTRA = len(TMP_INFIX) + 1 + 7 + 1 + 8
#: the usual limit on a name's bytes (ext4, xfs, btrfs, tmpfs), where pathconf cannot tell
DEFAULT_NAME_MAX = 255

#: what to do after a save failed with these errors (else: fix the cause and save again)
SAVE_FIXES = {
    errno.ENOSPC: "free some space on that disk and save again",
    errno.EDQUOT: "this user's disk quota is used up: free some of it, or ask for more, and "
                  "save again",
    errno.EFBIG: "a map file outgrew this process's file size limit (`ulimit -f`) or the "
                 "file system's largest file (FAT32: 4 GiB): raise the limit, or save on "
                 "another file system",
    errno.EROFS: "the file system is read-only: remount it read-write, or save elsewhere",
    errno.EIO: "the disk failed (see `dmesg`): check it, and save elsewhere meanwhile",
}


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


def real_target(path: Path) -> Path:
    """The map directory ``path`` names, with symbolic links resolved (what is replaced)."""
    return Path(os.path.realpath(path))


def look(path: Path) -> os.stat_result | None:
    """``os.stat(path)``, or None where nothing is; a :class:`MapError` naming the folder and
    the fix for other failures (:func:`vpr_edge.paths.look`)."""
    return paths.look(path, MapError)


def is_dir(path: Path) -> bool:
    """``path.is_dir()``, with :func:`look`'s errors."""
    return paths.is_dir(path, MapError)


def is_file(path: Path) -> bool:
    """``path.is_file()``, with :func:`look`'s errors."""
    return paths.is_file(path, MapError)


@contextmanager
def _flock(target: Path, exclusive: bool) -> Iterator[bool]:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield False
        return
    lock_path = sibling(target, LOCK_SUFFIX)
    try:
        link = lock_path.is_symlink()
    except OSError:  # (a name too long for a lock beside it: no saver can lock it either)
        link = False
    if link:
        raise MapError(f"{lock_path}: a symbolic link, where the map's lock file belongs; "
                       "remove it (vpr-edge makes the lock file)")
    if exclusive:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | _NO_WAIT_NO_LINK, 0o666)
    else:
        try:
            fd = os.open(lock_path, os.O_RDONLY | _NO_WAIT_NO_LINK)
        except FileNotFoundError:
            # a map copied here (rsync, scp) has no lock file yet: make it, so that a saver
            # starting now waits for this reader, unless there is no map to read at all (no
            # lock file beside a folder of other things)
            where = resolve_for_read(target)
            if where is None or not (where / MANIFEST_NAME).exists():
                yield False
                return
            try:
                fd = os.open(lock_path, os.O_RDONLY | os.O_CREAT | _NO_WAIT_NO_LINK, 0o666)
            except OSError:  # a read-only place: no saver can run here either
                yield False
                return
        except OSError:  # a lock file this user may not open: read unlocked (read_map
            yield False  # repeats a read during which the map changed)
            return
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise MapError(f"{lock_path}: not a file but {_kind(lock_path)}, where the map's "
                           "lock file belongs; move it away (vpr-edge makes the lock file)")
        _wait_for_lock(fd, fcntl, exclusive, lock_path)
        yield True
    finally:
        os.close(fd)  # closing releases the lock


def _kind(path: Path) -> str:
    mode = os.stat(path).st_mode
    return ("a folder" if stat.S_ISDIR(mode) else "a named pipe" if stat.S_ISFIFO(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "a device")


def _wait_for_lock(fd: int, fcntl, exclusive: bool, lock_path: Path) -> None:
    """flock ``fd``, polling: a warning once the wait passes :data:`LOCK_NOTICE_S`, and a
    :class:`MapError` after :data:`LOCK_LIMIT_S` (a process stopped or hung while it holds
    the lock would otherwise make this one wait for ever, saying nothing)."""
    mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
    start = time.monotonic()
    warned = False
    while True:
        try:
            fcntl.flock(fd, mode)
            return
        except BlockingIOError:
            pass
        waited = time.monotonic() - start
        if waited >= LOCK_LIMIT_S:
            raise MapError(
                f"waited {waited:.0f} s for {lock_path}: another process holds it (saving "
                "or reading the map) and has not let go: one stopped with Ctrl-Z, or hung? "
                f"Find it with `fuser -v {lock_path}`, let it finish or end it, and try "
                "again")
        if not warned and waited >= LOCK_NOTICE_S:
            warned = True
            log.warning("waiting for %s: another process is %s the map", lock_path,
                        "reading or saving" if exclusive else "saving")
        time.sleep(LOCK_POLL_S)


def exclusive_lock(target: Path):
    """Hold while saving ``target`` (creates ``target.lock`` next to it)."""
    return _flock(target, True)


def shared_lock(target: Path):
    """Hold while reading ``target``: waits for a saver; creates nothing but the lock file
    (for an existing map, where it can). Gives True, or False when reading unlocked (no
    ``fcntl``, no map, or a lock file this user may not open or make)."""
    return _flock(target, False)


def resolve_for_read(target: Path) -> Path | None:
    """The complete directory to read: ``target``, else ``target.vpr-edge-old``, else None
    (symbolic links resolved first, as a save resolves them: an interrupted save through
    ``maps/current`` leaves ``maps/<its target>.vpr-edge-old``). An empty ``target``
    directory holds no map (one made for the map to be saved into).

    The two names are looked at one after the other, so a save in another process can put
    its new ``target`` in place and delete ``target.vpr-edge-old`` between the two looks:
    neither is found then, though a map was there all along (a Localizer opened then
    started an empty map). So "none" is believed only when :data:`RESOLVE_TRIES` pairs of
    looks agree: a pair takes microseconds, and the next save's swap comes only after that
    save has written its files."""
    target = real_target(target)
    old = sibling(target, OLD_SUFFIX)
    for _ in range(RESOLVE_TRIES):
        if is_dir(target) and not _empty_dir(target):
            return target
        if _absent_or_empty(target) and is_dir(old) and not _empty_dir(old):
            return old
    return None


def legacy_map_hint(target: Path, manifest_name: str = MANIFEST_NAME) -> str:
    """Where ``target`` holds no map but ``target.old`` does (what an older vpr-edge left when
    a save was interrupted between its renames, and opened by itself): ``"; <name>.old holds
    a map ...: rename it ..."``, to end a "no map" message with. Else ``""``."""
    legacy = sibling(target, LEGACY_OLD_SUFFIX)
    manifest = look(legacy / manifest_name) if is_dir(legacy) else None
    if resolve_for_read(target) is not None or manifest is None \
            or not stat.S_ISREG(manifest.st_mode):
        return ""
    return (f"; {legacy.name} holds a map (an interrupted save by an older vpr-edge leaves "
            f"one, or it is a copy): rename it to {target.name} to open it")


def _empty_dir(path: Path) -> bool:
    try:
        return path.is_dir() and not any(path.iterdir())
    except OSError:  # unreadable: not known to be empty; reading it will say what is wrong
        return False


def _absent_or_empty(path: Path) -> bool:
    return look(path) is None or _empty_dir(path)


def recover(target: Path) -> None:
    """Repair what an interrupted save left (hold :func:`exclusive_lock`)."""
    old = sibling(target, OLD_SUFFIX)
    parent = target.parent
    changed = False
    if _absent_or_empty(target) and _empty_dir(old):
        old.rmdir()  # an empty folder made for the map, set aside by an older vpr-edge
        changed = True
    elif _absent_or_empty(target) and old.is_dir():
        if target.exists():
            target.rmdir()
        os.rename(old, target)
        changed = True
    elif target.is_dir() and old.exists():
        shutil.rmtree(old)
        changed = True
    ours = re.compile(re.escape(target.name + TMP_INFIX) + r"\d+-[0-9a-f]{8}")
    # (not parent.glob(name + "*"): a map named "maps[v2]" would be a pattern, matching none)
    try:
        entries = list(parent.iterdir())
    except PermissionError:  # a folder this user may write in but not list (a drop box)
        entries = []
    for stale in entries:
        if ours.fullmatch(stale.name) and stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
            changed = True
    if changed:
        fsync_dir(parent)


def make_temp(target: Path) -> Path:
    """A fresh empty directory next to ``target`` to write the new version into."""
    tmp = target.with_name(f"{target.name}{TMP_INFIX}{os.getpid()}-{secrets.token_hex(4)}")
    tmp.mkdir()
    try:  # the saved map keeps the folder's permissions (private 0700, group-shared 2775)
        before = target.stat()
    except OSError:
        return tmp
    if stat.S_ISDIR(before.st_mode):
        try:  # best effort: vfat/exFAT cards refuse both, and have no permissions to keep
            if before.st_gid != tmp.stat().st_gid:
                os.chown(tmp, -1, before.st_gid)  # (a group this user is in, or refused)
        except OSError:
            pass
        try:
            os.chmod(tmp, stat.S_IMODE(before.st_mode) | stat.S_IRWXU)
        except OSError:
            pass
    return tmp


def _files_like_folder(tmp: Path) -> None:
    """Give the new map's files the read and write bits of its folder (which
    :func:`make_temp` copied from the map saved before): 0644 in a 0755 folder, 0640 in a
    2750 one, 0600 in a 0700 one. Without it, files follow the saving process's umask, and
    access given to a map (``chmod -R g+rX``) was taken away again by its next save."""
    mode = (stat.S_IMODE(tmp.stat().st_mode) & 0o666) | stat.S_IRUSR | stat.S_IWUSR
    for entry in os.scandir(tmp):
        try:
            if entry.is_file(follow_symlinks=False) and \
                    stat.S_IMODE(entry.stat(follow_symlinks=False).st_mode) != mode:
                os.chmod(entry.path, mode)
        except OSError:  # best effort, as in make_temp (vfat/exFAT have no permissions)
            pass


def save_problem(path: str | os.PathLike) -> str | None:
    """Why a map could not be saved at ``path`` (as given by a user), or None: checked when a
    run starts, so that a node or a map build does not find out at its first save."""
    target = user_path(path)
    return unwritable_folder(target) or replace_problem(real_target(target))


def replace_problem(target: Path) -> str | None:
    """Why a save could not replace the map folder ``target`` (a real path), or None: a
    mount point (the folder itself cannot be renamed), a name too long for the temp folder
    beside it, a parent folder this process cannot write in, a map folder whose files it
    cannot delete (made by another user), or one it may not rename (a sticky parent)."""
    if os.path.ismount(target):
        return (f"{target} is a mount point, and a save replaces the map folder (a new one "
                "is renamed into place): mount the folder above it instead (docker: -v "
                "/host/maps:/maps, with the map at /maps/<name>)")
    name_max = _name_max(target.parent)
    length = len(os.fsencode(target.name))
    if length + SAVE_NAME_EXTRA > name_max:
        return (f"the map folder's name is {length} bytes long, and a save writes the new map "
                f"beside it as <name>{TMP_INFIX}<pid>-<hex>, {SAVE_NAME_EXTRA} bytes longer, "
                f"where this file system allows {name_max}: use a name of at most "
                f"{name_max - SAVE_NAME_EXTRA} bytes")
    if is_dir(target.parent) and not os.access(target.parent, os.W_OK | os.X_OK):
        if os.statvfs(target.parent).f_flag & os.ST_RDONLY:
            return (f"{target.parent} is on a file system mounted read-only: remount it "
                    "read-write (docker: drop :ro from the volume), or save elsewhere")
        facts = target.parent.stat()
        return (f"cannot write in {target.parent} (owned by uid {facts.st_uid}, mode "
                f"{stat.S_IMODE(facts.st_mode):o}): choose a folder this user may write in")
    current = resolve_for_read(target)
    if current is not None and not os.access(current, os.W_OK | os.X_OK):
        try:
            facts = current.stat()
        except FileNotFoundError:  # another save swapped it just now: not a lasting problem
            return None
        return (f"cannot delete the files of {current} (owned by uid {facts.st_uid}, mode "
                f"{stat.S_IMODE(facts.st_mode):o}), as a save must: save as its "
                "owner, or give this user write permission on it (chown/chmod)")
    return None if current is None else _sticky_problem(current)


def _sticky_problem(current: Path) -> str | None:
    """In a folder with the sticky bit (``/tmp``, a shared 1777 one) only the owner of the
    map folder (or of that folder, or root) may rename it, as a save must."""
    parent, me = look(current.parent), getattr(os, "geteuid", lambda: 0)()
    mine = look(current)
    if parent is None or mine is None or not parent.st_mode & stat.S_ISVTX:
        return None
    if me in (0, parent.st_uid, mine.st_uid):
        return None
    return (f"{current.parent} has the sticky bit (mode {stat.S_IMODE(parent.st_mode):o}, as "
            f"/tmp): only the owner of {current.name} (uid {mine.st_uid}) may rename it, as a "
            f"save must, and this process runs as uid {me}: save as that user, or keep the "
            f"map in a folder without the sticky bit")


def _name_max(folder: Path) -> int:
    """The longest name (bytes) the file system holding ``folder`` (or its nearest existing
    parent) allows."""
    for where in (folder, *folder.parents):
        try:
            return int(os.pathconf(where, "PC_NAME_MAX"))
        except (OSError, ValueError):
            continue
    return DEFAULT_NAME_MAX


def commit(tmp: Path, target: Path) -> None:
    """Swap the fully written and fsynced ``tmp`` in as ``target`` (steps 3-4, up to the
    rename that puts it in place; :func:`settle` does the rest). Raising, it leaves the
    previous map as ``target`` or ``target.vpr-edge-old``, and ``tmp`` for :func:`discard`."""
    parent = target.parent
    old = sibling(target, OLD_SUFFIX)
    _files_like_folder(tmp)
    fsync_dir(tmp)
    fsync_dir(parent)
    _failpoint("written")
    if _empty_dir(target):  # a folder made for the map: nothing to keep (a crash now leaves
        target.rmdir()      # no map, as before this first save, not an empty "old" one)
        fsync_dir(parent)
        _failpoint("aside")
    elif target.exists():
        os.rename(target, old)
        fsync_dir(parent)
        _failpoint("aside")
    os.rename(tmp, target)


def settle(target: Path) -> None:
    """After :func:`commit`: make the rename durable (step 4's fsync), then delete the previous
    map (step 5). The new map is in place whatever this raises; a ``target.vpr-edge-old``
    left behind is deleted by the next save's :func:`recover`."""
    parent = target.parent
    fsync_dir(parent)
    _failpoint("renamed")
    old = sibling(target, OLD_SUFFIX)
    if old.exists():
        shutil.rmtree(old)
        fsync_dir(parent)
    _failpoint("cleaned")


def discard(tmp: Path) -> None:
    """Remove a temp directory after a failed save (the target was never touched)."""
    shutil.rmtree(tmp, ignore_errors=True)
