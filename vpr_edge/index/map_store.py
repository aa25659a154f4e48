"""Write and read the files of a map directory (the format; the swap is in ``atomic_dir``).

Layout of a map directory::

    manifest.json                           table of contents + checksums (map_format.py)
    index.hnsw                              the hnswlib graph and float32 vectors
    removed.npy                             bool per record row: place removed
    seg-<start>-<stop>.records.npy          structured: id int64, stamp float64, pose float64[P]
    seg-<start>-<stop>.descriptors.npy      float16 [rows, dim]
    seg-<start>-<stop>.meta.jsonl           one JSON object per row

Record rows are append-only, so the segment files of rows already saved never change. A save
hard-links them from the current map into the new one (falling back to writing them from
memory when linking is impossible or the file on disk is not the one this process saw), and
writes only a segment for the new rows (all of them are written again when the map's first
pose widens every record). The last segment is merged into the one before it
while that one is less than four times its size (``MERGE_RATIO``), so there are O(log n)
segments and each row is rewritten O(log n) times over the life of a map. ``removed.npy``
is rewritten on every save. ``index.hnsw`` (the graph: about 2.2 kB a place with a 512-d
sketch, 220 MB at 100k places) is hard-linked from the current map too while the rows added
since it was written are at most ``MapContents.graph_slack`` (``IndexSettings.graph_resave``)
and the graph in memory grew from it (no rebuild since); the manifest then gives the rows it
was written for (``index.rows``, format version 3), and opening the map inserts the places of
the later rows and marks the places removed since (``graph_replay``).

Reading checks the manifest, then the size and sha256 of every file, before parsing any of
them, and checks the hnswlib header against the manifest before hnswlib sees the file.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .._version import __version__
from ..errors import MapCorruptError, MapError, ModelMismatchError, out_of_memory
from ..paths import user_path
from . import atomic_dir, hnsw_file
from .map_format import (
    INDEX_NAME,
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    REMOVED_NAME,
    FileInfo,
    Manifest,
    SegmentInfo,
    no_json_constant,
    record_dtype,
)
from .records import PlaceRecords, open_capacity

log = logging.getLogger("vpr_edge")

#: reads of a map made without its lock (see :func:`read_map`) before giving up
UNLOCKED_READ_TRIES = 5
#: Merge a trailing segment into the one before while that one is < MERGE_RATIO x larger.
MERGE_RATIO = 4
#: an opened map's graph holds at most this many times its places (or the floor): the
#: capacity a manifest records is a hint, and a huge one must not be allocated on trust
OPEN_CAPACITY_FACTOR = 16
OPEN_CAPACITY_FLOOR = 1024
_CHUNK = 1 << 20


@dataclass(frozen=True)
class DiskState:
    """What this process knows is on disk for a map, so the next save can reuse files."""

    path: Path
    segments: tuple[SegmentInfo, ...]
    files: dict[str, FileInfo]
    stats: dict[str, tuple[int, int, int]]  # name -> (inode, size, mtime_ns) when written
    created_at: str
    pose_dim: int = 0  # the pose width of those segments' records
    #: the index.hnsw on disk: the record rows it was written for, its elements, and the
    #: ``MapContents.graph_epoch`` of the graph in memory it was written from (None: unknown,
    #: the next save writes the graph)
    graph_rows: int = 0
    graph_elements: int = 0
    graph_epoch: int | None = None


@dataclass(frozen=True)
class MapContents:
    """A consistent view of an index, taken under its read lock, for :func:`write_files`."""

    records: PlaceRecords
    hnsw: Any  # hnswlib.Index
    dim: int
    M: int
    ef_construction: int
    ef: int
    fingerprint: str | None
    count: int
    next_id: int
    created_at: str
    search_dim: int | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    #: bumped by the index whenever its graph is replaced (a rebuild): a graph file written
    #: from an earlier epoch is not the base of the graph in memory, so it is written anew
    graph_epoch: int = 0
    #: rows added since the graph file on disk was written that a save may leave to the
    #: next open to insert (0: write the graph on every save)
    graph_slack: int = 0


@dataclass
class PendingMap:
    """Files written to a temp directory, waiting for :func:`finish`."""

    tmp: Path
    contents_manifest: dict[str, Any]
    segments: tuple[SegmentInfo, ...]
    files: dict[str, FileInfo | None]  # None: hash still to compute (index.hnsw)
    new_files: list[str]
    index_rows: int | None = None  # index.hnsw was linked: the rows it was written for
    graph_epoch: int = 0


@dataclass
class LoadedMap:
    """What :func:`read_map` found."""

    manifest: Manifest
    records: PlaceRecords
    hnsw: Any  # hnswlib.Index, or None when it must be rebuilt (see ``index_problem``)
    index_problem: str | None
    disk: DiskState
    source: Path  # the directory actually read (the map, or its ``.vpr-edge-old`` after a crash)
    manifest_digest: str | None = None  # :func:`manifest_digest` of what was read
    #: with ``manifest.index_rows``: the labels index.hnsw marks deleted, for the replay of
    #: the later rows (``graph_replay``), which also checks them
    graph_marks: np.ndarray | None = None


# -- helpers ------------------------------------------------------------------------------

class _HashingWriter(io.RawIOBase):
    """A write-only file wrapper that hashes and counts what goes through it."""

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:  # type: ignore[override]
        view = memoryview(data).cast("B")
        self.sha.update(view)
        self._fh.write(view)
        self.size += view.nbytes
        return view.nbytes


def _write_file(path: Path, fill, sync: bool = True) -> FileInfo:
    """Create ``path``, let ``fill(writer)`` write it (and fsync it when ``sync``); return its
    size and hash."""
    with open(path, "xb") as fh:
        writer = _HashingWriter(fh)
        fill(writer)
        fh.flush()
        if sync:
            os.fsync(fh.fileno())
    return FileInfo(bytes=writer.size, sha256=writer.sha.hexdigest())


def _hash_fd(fh: BinaryIO) -> tuple[int, str]:
    sha = hashlib.sha256()
    size = 0
    while True:
        block = fh.read(_CHUNK)
        if not block:
            return size, sha.hexdigest()
        sha.update(block)
        size += len(block)


def _stat(path: Path) -> tuple[int, int, int]:
    st = os.stat(path)
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _plan_segments(previous: tuple[SegmentInfo, ...], rows: int) -> tuple[SegmentInfo, ...]:
    plan = list(previous)
    covered = plan[-1].stop if plan else 0
    if rows > covered:
        plan.append(SegmentInfo(covered, rows))
    while len(plan) >= 2 and plan[-2].rows < MERGE_RATIO * plan[-1].rows:
        last = plan.pop()
        plan[-1] = SegmentInfo(plan[-1].start, last.stop)
    return tuple(plan)


# -- writing ------------------------------------------------------------------------------

def _write_segment(tmp: Path, seg: SegmentInfo, records: PlaceRecords) -> dict[str, FileInfo]:
    a, b = seg.start, seg.stop
    rec = np.empty(seg.rows, dtype=record_dtype(records.pose_dim))
    rec["id"] = records.ids[a:b]
    rec["stamp"] = records.stamps[a:b]
    if records.poses is not None:
        rec["pose"] = records.poses[a:b]
    desc = records.desc16[a:b]
    meta_lines = [(m if m is not None else "{}") for m in records.meta[a:b]]

    def write_meta(w: _HashingWriter) -> None:
        for start in range(0, len(meta_lines), 4096):
            w.write(("\n".join(meta_lines[start:start + 4096]) + "\n").encode("utf-8"))

    return {  # fsynced later by finish(), outside the index's lock
        seg.records: _write_file(tmp / seg.records, lambda w: np.save(w, rec, allow_pickle=False),
                                 sync=False),
        seg.descriptors: _write_file(tmp / seg.descriptors,
                                     lambda w: np.save(w, desc, allow_pickle=False), sync=False),
        seg.meta: _write_file(tmp / seg.meta, write_meta, sync=False),
    }


def _try_link(previous: DiskState, target: Path, tmp: Path, names: tuple[str, ...]
              ) -> dict[str, FileInfo] | None:
    """Hard-link unchanged files (a segment's, the graph) from the current map, if they are
    intact."""
    out: dict[str, FileInfo] = {}
    for name in names:
        src = target / name
        try:
            if _stat(src) != previous.stats.get(name) or name not in previous.files:
                return None
            os.link(src, tmp / name)
        except OSError:
            return None
        out[name] = previous.files[name]
    return out


def write_files(tmp: Path, contents: MapContents, target: Path,
                previous: DiskState | None) -> PendingMap:
    """Write the map's data files into ``tmp`` (call while holding the index's read lock).

    Nothing is fsynced here, so the lock is held only while bytes go to the page cache."""
    records = contents.records
    # segments are reused only as they were written: the first pose added to a map without
    # poses widens every row's record, so all of them are written again
    reuse = previous is not None and previous.path == target and (
        not previous.segments or previous.segments[-1].stop <= records.rows) and (
        previous.pose_dim == records.pose_dim)
    prev_segments = previous.segments if reuse and previous is not None else ()
    plan = _plan_segments(prev_segments, records.rows)
    files: dict[str, FileInfo | None] = {}
    new_files: list[str] = []
    for seg in plan:
        linked = None
        if seg in prev_segments and previous is not None:
            linked = _try_link(previous, target, tmp, seg.files)
        if linked is None:
            for name in seg.files:
                (tmp / name).unlink(missing_ok=True)
            linked = _write_segment(tmp, seg, records)
            new_files.extend(linked)
        files.update(linked)
    removed = records.removed[: records.rows].copy()
    files[REMOVED_NAME] = _write_file(tmp / REMOVED_NAME,
                                      lambda w: np.save(w, removed, allow_pickle=False),
                                      sync=False)
    new_files.append(REMOVED_NAME)
    kept = _kept_graph(previous if reuse else None, contents, target, tmp)
    if kept is None:
        contents.hnsw.save_index(str(tmp / INDEX_NAME))
        files[INDEX_NAME] = None
        new_files.append(INDEX_NAME)
    else:
        files.update(kept)
    manifest = {
        "fingerprint": contents.fingerprint,
        "dim": contents.dim,
        "search_dim": contents.search_dim,
        "M": contents.M,
        "ef_construction": contents.ef_construction,
        "ef": contents.ef,
        "count": contents.count,
        "rows": records.rows,
        "next_id": contents.next_id,
        "pose_dim": records.pose_dim,
        "index_elements": (int(contents.hnsw.element_count) if kept is None
                           else previous.graph_elements),
        "index_capacity": int(contents.hnsw.max_elements),
        "created_at": contents.created_at,
        "provenance": contents.provenance,
    }
    return PendingMap(tmp, manifest, plan, files, new_files,
                      index_rows=None if kept is None else previous.graph_rows,
                      graph_epoch=contents.graph_epoch)


def _kept_graph(previous: DiskState | None, contents: MapContents, target: Path, tmp: Path
                ) -> dict[str, FileInfo] | None:
    """Hard-link the map's index.hnsw into ``tmp`` instead of writing the graph, when the
    graph in memory grew from it by at most ``contents.graph_slack`` rows (see the module
    docstring); None: write it."""
    if (previous is None or previous.graph_epoch != contents.graph_epoch
            or contents.records.rows - previous.graph_rows > contents.graph_slack
            or contents.records.rows < previous.graph_rows):
        return None
    return _try_link(previous, target, tmp, (INDEX_NAME,))


def finish(pending: PendingMap, target: Path, now: str) -> DiskState:
    """Hash and fsync what :func:`write_files` wrote, then write the manifest last.

    Needs no lock: only the temp directory is touched. Returns the disk state the map will
    have once :func:`atomic_dir.commit` has swapped it in.
    """
    tmp = pending.tmp
    m = pending.contents_manifest
    files = dict(pending.files)
    if files[INDEX_NAME] is None:
        files[INDEX_NAME] = _check_written_graph(tmp / INDEX_NAME, m)
    for name in pending.new_files:  # linked files were made durable by an earlier save
        atomic_dir.fsync_file(tmp / name)
    if pending.index_rows is not None:
        version = 3
    else:
        version = 1 if m["search_dim"] is None else 2
    manifest = Manifest(
        fingerprint=m["fingerprint"], dim=m["dim"], search_dim=m["search_dim"],
        format_version=version, index_rows=pending.index_rows, M=m["M"],
        ef_construction=m["ef_construction"], ef=m["ef"], count=m["count"], rows=m["rows"],
        next_id=m["next_id"], pose_dim=m["pose_dim"], index_elements=m["index_elements"],
        index_capacity=m["index_capacity"], segments=pending.segments,
        files={k: v for k, v in files.items() if v is not None},
        created_at=m["created_at"], updated_at=now, vpr_edge_version=__version__,
        provenance=m["provenance"],
    )
    data = manifest.to_bytes()
    if len(data) > MAX_MANIFEST_BYTES:  # it could be written, but never read again
        raise MapError(f"{target}: not saved: its manifest would be {len(data)} bytes, more "
                       f"than a map may have ({MAX_MANIFEST_BYTES}); its provenance holds too "
                       "much (PlaceIndex.provenance): keep bulk data in a file next to the map. "
                       "The map saved before is unchanged")
    _write_file(tmp / MANIFEST_NAME, lambda w: w.write(data))
    stats = {name: _stat(tmp / name) for name in manifest.files}
    return DiskState(path=target, segments=pending.segments, files=dict(manifest.files),
                     stats=stats, created_at=m["created_at"], pose_dim=m["pose_dim"],
                     graph_rows=m["rows"] if pending.index_rows is None else pending.index_rows,
                     graph_elements=m["index_elements"], graph_epoch=pending.graph_epoch)


def _check_written_graph(index_path: Path, m: dict[str, Any]) -> FileInfo:
    """Size and sha256 of the index.hnsw hnswlib just wrote, once its header shows it
    whole."""
    try:  # hnswlib ignores write errors (a full disk leaves a short file): check it
        header = hnsw_file.read_header(index_path)
    except (OSError, hnsw_file.HnswFileError) as exc:
        raise MapError(f"{index_path}: hnswlib wrote an incomplete index file ({exc}); is "
                       "the disk full? The previous map is untouched") from exc
    graph_dim = m["search_dim"] or m["dim"]
    if header.elements != m["index_elements"] or header.dim != graph_dim:
        raise MapError(f"{index_path}: hnswlib wrote {header.elements} elements of dim "
                       f"{header.dim}, expected {m['index_elements']} of dim {graph_dim}")
    with open(index_path, "rb") as fh:
        size, sha = _hash_fd(fh)
    return FileInfo(bytes=size, sha256=sha)


def check_replaceable(target: Path, fingerprint: str | None = None) -> None:
    """Refuse to save over something that is not a vpr-edge map (or an empty directory), or
    over the map of another model than ``fingerprint``'s: that map could never be opened
    with this model, so replacing it is a mistake, not an update."""
    if not target.exists():
        return
    if not target.is_dir():
        raise MapError(f"{target} exists and is not a directory; refusing to replace it "
                       "with a map (choose another path)")
    manifest = target / MANIFEST_NAME
    try:  # all of it: the format name may come after a long list of files
        with open(manifest, "rb") as fh:
            text = read_manifest_bytes(fh)
    except FileNotFoundError:
        if any(target.iterdir()):
            raise MapError(f"{target} exists, is not empty and holds no {MANIFEST_NAME}: it is "
                           "not a vpr-edge map; refusing to replace it (choose another path)")
        return
    except OSError as exc:
        raise MapError(f"{manifest}: cannot read ({exc})") from exc
    if b'"vpr-edge-map"' not in text:
        raise MapError(f"{target} is not a vpr-edge map ({MANIFEST_NAME} belongs to something "
                       "else); refusing to replace it")
    try:
        body = json.loads(text)
        theirs = body.get("fingerprint")
    except (ValueError, AttributeError, RecursionError):  # damaged: it cannot open anyway
        return
    strangers = foreign_entries(target, body)
    if strangers:
        raise MapError(f"{target}: {deleted_by_a_save(strangers)}")
    if fingerprint is not None and isinstance(theirs, str) and theirs != fingerprint:
        raise ModelMismatchError(
            f"{target} holds a map of another model (fingerprint {theirs[:12]}..., this map's "
            f"is {fingerprint[:12]}...); refusing to replace it: save to another path, or "
            "delete that map first if it is no longer wanted")


def read_manifest_bytes(fh: BinaryIO) -> bytes:
    """A manifest's bytes, at most MAX_MANIFEST_BYTES + 1 (more means too large): read for
    the file's size, since ``read(MAX_MANIFEST_BYTES + 1)`` made a 64 MiB buffer for a 2 KB
    manifest, which failed saves and opens under a memory limit (``ulimit -v``)."""
    size = os.fstat(fh.fileno()).st_size
    return fh.read(min(size, MAX_MANIFEST_BYTES) + 1)


def holds_a_map(folder: Path) -> bool:
    """Whether ``folder`` holds a map (a manifest naming the vpr-edge map format)."""
    try:
        with open(folder / MANIFEST_NAME, "rb") as fh:
            return b'"vpr-edge-map"' in read_manifest_bytes(fh)
    except OSError:
        return False


def enclosing_map(target: Path) -> Path | None:
    """The map folder that ``target`` (a real path) lies in, at any depth, or None."""
    return next((folder for folder in target.parents if holds_a_map(folder)), None)


def inside_a_map(outer: Path) -> str:
    """The refusal of a save inside the map folder ``outer``."""
    return (f"inside the map folder {outer}, which a save of that map replaces whole (and "
            "refuses to, once other things are in it); save the copy beside it")


def foreign_entries(target: Path, body: Any) -> list[str]:
    """Names in the map folder ``target`` that its manifest ``body`` (parsed JSON) does not
    list (a user's notes, images copied in): a save replaces the whole folder, so they would
    be deleted. Folders end in ``/``. Empty for a manifest without a file list."""
    files = body.get("files") if isinstance(body, dict) else None
    if not isinstance(files, dict):
        return []
    known = {MANIFEST_NAME, *files}
    try:
        entries = list(os.scandir(target))
    except OSError:  # unreadable: reading or replacing the map will say what is wrong
        return []
    return sorted(e.name + ("/" if e.is_dir(follow_symlinks=False) else "")
                  for e in entries if e.name not in known)


def deleted_by_a_save(strangers: list[str]) -> str:
    """The refusal for :func:`foreign_entries`: what they are, and the fix."""
    more = f" and {len(strangers) - 5} more" if len(strangers) > 5 else ""
    return (f"holds files that are not part of the map ({', '.join(strangers[:5])}{more}); a "
            "save replaces the whole map folder and would delete them: move them out of it "
            "(nothing was changed)")


def save_problem(path: str | os.PathLike) -> str | None:
    """Why a map could not be saved at ``path`` (as given by a user), or None: checked when a
    run starts (a node, a map build), so that no work is lost at its first save. Adds to
    :func:`atomic_dir.save_problem` what :func:`check_replaceable` refuses (a folder of other
    things, files in the map folder that a save would delete)."""
    problem = atomic_dir.save_problem(path)
    real = atomic_dir.real_target(user_path(path))
    outer = enclosing_map(real)
    if problem or outer is not None:
        return problem or f"{real}: {inside_a_map(outer)}"
    where = atomic_dir.resolve_for_read(real)
    if where is None:
        return None
    try:
        check_replaceable(where)
    except MapError as exc:
        return str(exc)
    return None


def manifest_digest(where: Path) -> str | None:
    """sha256 of ``where``'s manifest file, or None without one: which save of a map is on
    disk (every save writes a new manifest, with its own time)."""
    try:
        return hashlib.sha256((where / MANIFEST_NAME).read_bytes()).hexdigest()
    except OSError:
        return None


# -- reading ------------------------------------------------------------------------------

def damaged(path: Path, why: str) -> MapCorruptError:
    """The error for damage ``why`` in the map file ``path``, with what to do about it."""
    if path.name == INDEX_NAME:  # the one file that can be rebuilt from the others
        fix = ("`vpr-edge map repair MAP`, or opening it with rebuild_if_corrupt=True "
               "(Localizer or PlaceIndex.open), rebuilds it from the stored descriptors")
    else:
        fix = ("restore the map from a backup, or build it again into a new folder (or "
               "delete this one first); its descriptors are needed to rebuild anything")
    error = MapCorruptError(f"{path}: {why}; the map is damaged ({fix})")
    error.cause = f"{path.name}: {why}"  # what is wrong, without the advice (for logs)
    return error


def _unreadable(path: Path, exc: OSError) -> MapError:
    """A map file this process may not read: not damage (nothing to rebuild or discard)."""
    if isinstance(exc, PermissionError):
        return MapError(f"{path}: no permission to read this map file; open the map as the "
                        f"user who saved it, or give others read access (chmod -R a+rX "
                        f"{path.parent})")
    if out_of_memory(exc):
        raise exc
    return damaged(path, f"cannot read ({exc})")


def _not_a_regular_file(path: Path) -> bool:
    """A folder, pipe or device where a map file belongs (opening a pipe would wait for ever);
    a missing file is not one (opening it says so)."""
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _verify(where: Path, name: str, info: FileInfo) -> bytes | None:
    """Check size and sha256 of one file; return its bytes if small, else None."""
    path = where / name
    if _not_a_regular_file(path):
        raise damaged(path, "not a regular file (a folder, pipe or device)")
    try:
        with open(path, "rb") as fh:
            actual = os.fstat(fh.fileno()).st_size
            if actual != info.bytes:
                raise damaged(path, f"{actual} bytes, the manifest says {info.bytes} "
                               "(truncated or replaced)")
            if info.bytes <= _CHUNK:
                data = fh.read()
                size, sha = len(data), hashlib.sha256(data).hexdigest()
            else:
                data = None
                size, sha = _hash_fd(fh)
    except FileNotFoundError as exc:
        raise damaged(path, "file missing") from exc
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    if size != info.bytes or sha != info.sha256:
        raise damaged(path, "sha256 differs from the manifest (bit flip, or a file from "
                       "another map)")
    return data


def _load_npy(where: Path, name: str, data: bytes | None) -> np.ndarray:
    """The array in file ``name`` (or in its verified bytes ``data``), once its header's
    shape is held against the bytes there: a header claiming terabytes is refused, not
    allocated."""
    path = where / name
    try:
        with (io.BytesIO(data) if data is not None else open(path, "rb")) as fh:
            shape, _, dtype = _npy_header(fh)
            start = fh.tell()
            held = fh.seek(0, io.SEEK_END) - start
            needed = math.prod(shape) * dtype.itemsize
            if needed > held:
                raise damaged(path, f"truncated: its header says {dtype} {tuple(shape)}, "
                               f"{needed} bytes, and {held} follow")
            fh.seek(0)
            return np.load(fh, allow_pickle=False)
    except MapCorruptError:
        raise
    except (ValueError, OSError, EOFError) as exc:
        if out_of_memory(exc):
            raise
        raise damaged(path, f"not a readable .npy array ({exc})") from exc


def _npy_header(fh: BinaryIO) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran order, dtype) of the .npy file at ``fh``'s start, left after it."""
    version = np.lib.format.read_magic(fh)
    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                   else np.lib.format.read_array_header_2_0)
    return read_header(fh)


def _read_npy_into(where: Path, name: str, data: bytes | None, out: np.ndarray) -> None:
    """Read the array in file ``name`` (or in its verified bytes ``data``) straight into
    ``out``, refusing another dtype or shape: a large map's descriptors are held once while
    the map opens, never as a loaded copy as well."""
    path = where / name
    if data is not None:
        array = _load_npy(where, name, data)
        if array.dtype != out.dtype or array.shape != out.shape:
            raise damaged(path, f"dtype {array.dtype} shape {array.shape}, expected "
                           f"{out.dtype} {out.shape}")
        out[...] = array
        return
    try:
        with open(path, "rb") as fh:
            shape, fortran, dtype = _npy_header(fh)
            if dtype != out.dtype or tuple(shape) != out.shape or (fortran and out.ndim > 1):
                raise damaged(path, f"dtype {dtype} shape {tuple(shape)}, expected "
                               f"{out.dtype} {out.shape}")
            got = fh.readinto(memoryview(out).cast("B"))
    except MapCorruptError:  # (a ValueError: the shape check above, already worded)
        raise
    except (ValueError, OSError, EOFError) as exc:
        raise damaged(path, f"not a readable .npy array ({exc})") from exc
    if got != out.nbytes:
        raise damaged(path, f"truncated: {got} of {out.nbytes} data bytes")


def _load_meta(where: Path, name: str, data: bytes | None, rows: int) -> list[str | None]:
    path = where / name
    raw = data if data is not None else path.read_bytes()
    try:
        lines = raw.decode("utf-8").split("\n")
    except UnicodeDecodeError as exc:
        raise damaged(path, f"not UTF-8 ({exc})") from exc
    if not lines or lines[-1] != "" or len(lines) - 1 != rows:
        raise damaged(path, f"{len(lines) - 1} lines, expected {rows}")
    out: list[str | None] = []
    for i, line in enumerate(lines[:-1]):
        try:
            obj = json.loads(line, parse_constant=no_json_constant)
            if "\\u" in line:  # a lone surrogate (\ud800) cannot be written as UTF-8
                json.dumps(obj, ensure_ascii=False).encode("utf-8")
        except (ValueError, RecursionError) as exc:  # (nested too deep to parse)
            raise damaged(path, f"line {i + 1} is not JSON ({exc})") from exc
        if not isinstance(obj, dict):
            raise damaged(path, f"line {i + 1} is not a JSON object")
        out.append(line if obj else None)
    return out


def read_manifest(where: Path) -> Manifest:
    path = where / MANIFEST_NAME
    if _not_a_regular_file(path):
        raise MapCorruptError(f"{path}: not a regular file (a folder, pipe or device); the map "
                              "is damaged (restore it from a backup, or build it again into a "
                              "new folder)")
    try:
        with open(path, "rb") as fh:
            data = read_manifest_bytes(fh)
    except FileNotFoundError as exc:
        if not (where / INDEX_NAME).exists():  # nothing of a map: someone else's directory
            raise MapError(f"{where} is not a vpr-edge map (it has no {MANIFEST_NAME}); give "
                           "the map's directory, or a new or empty one to make a map "
                           "in") from exc
        raise MapCorruptError(f"{path}: file missing; {where} holds a map index but no "
                              "manifest: the map is damaged (restore it from a backup, or "
                              "build it again into a new folder)") from exc
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    return Manifest.from_bytes(data, path)


def read_map(target: Path, *, fingerprint: str | None, hnsw_factory,
             rebuild_if_corrupt: bool = False) -> LoadedMap:
    """Read and check a whole map; never writes anything.

    ``hnsw_factory(dim)`` makes an empty ``hnswlib.Index`` to load into. A damaged
    ``index.hnsw`` raises :class:`MapCorruptError`, or with ``rebuild_if_corrupt`` comes back
    as ``hnsw=None`` with the reason in ``index_problem``; any other damage always raises.

    Read under the map's shared lock, so no save swaps the folders meanwhile. A user who may
    not open the lock file reads without it: a failed read is then repeated (up to
    :data:`UNLOCKED_READ_TRIES` reads) if the map was saved again while it was read, since
    its files came from two saves, not from damage (a healthy map was called damaged in 893
    of 1568 such opens while its owner saved it in a loop).
    """
    for attempt in range(1, UNLOCKED_READ_TRIES + 1):
        with atomic_dir.shared_lock(target) as locked:
            before = None if locked else _which_save(target)
            try:
                loaded = _read_map_locked(target, fingerprint, hnsw_factory,
                                          rebuild_if_corrupt)
                error = None
            except (MapError, OSError) as exc:
                loaded, error = None, exc
            # unlocked, a read that worked can be mixed too (rebuild_if_corrupt takes a graph
            # of one save beside the records of another for damage): either way, read again
            if locked or _which_save(target) == before:
                if error is not None:
                    raise error
                return loaded
        if attempt == UNLOCKED_READ_TRIES:
            lock = atomic_dir.sibling(atomic_dir.real_target(target), atomic_dir.LOCK_SUFFIX)
            raise MapError(
                f"{target}: the map was saved again during each of {attempt} reads, and this "
                f"user may not open its lock file {lock}, which makes a save wait for readers"
                f"{'' if error is None else f' ({error})'}: let this user read the lock file "
                "(chmod a+r), or open the map while no process saves it") from error
        log.info("%s was saved while it was read without its lock: reading it again", target)
    raise AssertionError("unreachable")  # pragma: no cover


def _which_save(target: Path) -> tuple[str, str | None] | None:
    """Which save of the map at ``target`` is on disk now: its folder and manifest digest."""
    try:
        where = atomic_dir.resolve_for_read(target)
    except MapError:
        return None
    return None if where is None else (str(where), manifest_digest(where))


def _read_map_locked(target: Path, fingerprint: str | None, hnsw_factory,
                     rebuild_if_corrupt: bool) -> LoadedMap:
    """:func:`read_map`'s one read, under the map's shared lock where it could be taken."""
    where = atomic_dir.resolve_for_read(target)
    if where is None:
        raise MapError(f"no map at {target} (nor a {target.name}{atomic_dir.OLD_SUFFIX} "
                       f"left by an interrupted save){atomic_dir.legacy_map_hint(target)}")
    manifest = read_manifest(where)
    if fingerprint is not None and manifest.fingerprint is None:
        raise ModelMismatchError(
            f"{where}: this map records no model fingerprint (it was made by PlaceIndex "
            "without one), so nothing shows its descriptors come from the model in use; "
            "build a new map with this model, in a new folder (vpr-edge map build MODEL "
            "NEW_MAP ...), or, in "
            "Python, open it with PlaceIndex.open(path) and no fingerprint if you know "
            "they do")
    if fingerprint is not None and manifest.fingerprint != fingerprint:
        raise ModelMismatchError(
            f"{where}: this map was made with model fingerprint {manifest.fingerprint!r}, "
            f"but the model in use has {fingerprint!r}; descriptors of two models are not "
            "comparable: build a new map with this model, in a new folder (vpr-edge map "
            "build MODEL NEW_MAP ...; a ROS node: a new map_dir, where it maps afresh), or "
            "load the matching model (vpr-edge info MAP and vpr-edge info MODEL show the "
            "fingerprints)"
        )
    small: dict[str, bytes | None] = {}
    index_problem: str | None = None
    for name, info in manifest.files.items():
        if name == INDEX_NAME and rebuild_if_corrupt:
            try:
                _verify(where, name, info)
            except MapCorruptError as exc:
                index_problem = getattr(exc, "cause", str(exc))
            continue
        small[name] = _verify(where, name, info)

    records = _read_records(where, manifest, small)
    hnsw = None
    graph_marks = None
    graph_rows = manifest.rows if manifest.index_rows is None else manifest.index_rows
    if index_problem is None:
        try:
            hnsw, header = _read_index(where, manifest, hnsw_factory)
            labels = set(hnsw.get_ids_list())
            ids = set(records.ids[:graph_rows].tolist())
            if labels != ids:
                rows = "" if graph_rows == manifest.rows else f"' first {graph_rows} rows"
                raise damaged(where / INDEX_NAME, f"holds {len(labels)} place ids that "
                               f"differ from the {len(ids)} in the records{rows}")
            if manifest.index_rows is None:
                _check_deleted_marks(where / INDEX_NAME, header.deleted_labels, labels,
                                    records)
            else:  # checked once the later rows are replayed (graph_replay)
                graph_marks = header.deleted_labels
        except MapCorruptError as exc:
            if not rebuild_if_corrupt:
                raise
            hnsw, index_problem = None, getattr(exc, "cause", str(exc))
    stats = {name: _stat(where / name) for name in manifest.files
             if name != INDEX_NAME or hnsw is not None}
    disk = DiskState(path=target, segments=manifest.segments, files=dict(manifest.files),
                     stats=stats, created_at=manifest.created_at,
                     pose_dim=manifest.pose_dim, graph_rows=graph_rows,
                     graph_elements=manifest.index_elements)
    return LoadedMap(manifest, records, hnsw, index_problem, disk, where,
                     manifest_digest(where), graph_marks)


def _read_records(where: Path, manifest: Manifest, small: dict[str, bytes | None]
                  ) -> PlaceRecords:
    dtype = record_dtype(manifest.pose_dim)
    ids, stamps, poses, metas = [], [], [], []
    # the descriptors are read straight into the records' own array, segment by segment:
    # opening a map holds them once (loading and concatenating them tripled the peak)
    descs = np.zeros((open_capacity(manifest.rows), manifest.dim), np.float16)
    row = 0
    for seg in manifest.segments:
        rec = _load_npy(where, seg.records, small.get(seg.records))
        if rec.dtype == record_dtype(0) and rec.shape == (seg.rows,) and manifest.pose_dim:
            # earlier versions kept a segment saved before the map's first pose as it was,
            # without a pose column (and wrote pose_dim > 0): its places have no pose
            rec = _widened(rec, manifest.pose_dim)
        if rec.dtype != dtype or rec.shape != (seg.rows,):
            raise damaged(where / seg.records, f"dtype {rec.dtype} shape {rec.shape}, expected "
                           f"{dtype} ({seg.rows},)")
        if row + seg.rows > manifest.rows:
            raise damaged(where / MANIFEST_NAME, f"segments hold more than the {manifest.rows} "
                           "rows the manifest says")
        _read_npy_into(where, seg.descriptors, small.get(seg.descriptors),
                       descs[row:row + seg.rows])
        row += seg.rows
        ids.append(rec["id"])
        stamps.append(rec["stamp"])
        poses.append(rec["pose"].reshape(seg.rows, manifest.pose_dim))
        metas.extend(_load_meta(where, seg.meta, small.get(seg.meta), seg.rows))
    removed = _load_npy(where, REMOVED_NAME, small.get(REMOVED_NAME))
    if removed.dtype != np.bool_ or removed.shape != (manifest.rows,):
        raise damaged(where / REMOVED_NAME, f"dtype {removed.dtype} shape {removed.shape}, "
                       f"expected bool ({manifest.rows},)")
    dim = manifest.dim

    def cat(parts: list[np.ndarray], empty: np.ndarray) -> np.ndarray:
        return np.concatenate(parts) if parts else empty

    id_col = cat(ids, np.zeros(0, np.int64))
    live = id_col[~removed]
    if int(live.size) != manifest.count or np.unique(live).size != live.size:
        raise damaged(where / MANIFEST_NAME, f"{live.size} live places ({np.unique(live).size} "
                       f"distinct ids), the manifest says {manifest.count}")
    stamp_col = cat(stamps, np.zeros(0))
    if np.isinf(stamp_col).any():  # NaN is "no stamp"; add() refuses inf
        raise damaged(where / "*.records.npy", "a place's stamp is infinite")
    pose_col = cat(poses, np.zeros((0, manifest.pose_dim))) if manifest.pose_dim else None
    if pose_col is not None and pose_col.size:
        missing = np.isnan(pose_col)
        if (missing.any(axis=1) != missing.all(axis=1)).any() or np.isinf(pose_col).any():
            raise damaged(where / "*.records.npy", "a place's pose has NaN or infinite values "
                          "among its numbers (a pose is all numbers, or all NaN: none)")
    if id_col.size and int(id_col.min()) < 0:
        raise damaged(where / MANIFEST_NAME, f"a place id is negative ({int(id_col.min())}); "
                       "ids are non-negative")
    if id_col.size and int(id_col.max()) >= manifest.next_id:
        raise damaged(where / MANIFEST_NAME, "next_id is not above every place id")
    return PlaceRecords.from_columns(dim, id_col, stamp_col, removed, descs, pose_col, metas,
                                     capacity=len(descs))


def _widened(rec: np.ndarray, pose_dim: int) -> np.ndarray:
    """Records without a pose column as records of ``pose_dim`` poses, all NaN (no pose)."""
    out = np.empty(rec.shape, dtype=record_dtype(pose_dim))
    out["id"] = rec["id"]
    out["stamp"] = rec["stamp"]
    out["pose"] = np.nan
    return out


def _read_index(where: Path, manifest: Manifest, hnsw_factory):
    path = where / INDEX_NAME
    try:
        header = hnsw_file.read_header(path, links=True)
    except hnsw_file.HnswFileError as exc:
        raise damaged(path, f"not a consistent hnswlib index ({exc})") from exc
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    expected = (manifest.graph_dim, manifest.M, manifest.ef_construction,
                manifest.index_elements)
    found = (header.dim, header.M, header.ef_construction, header.elements)
    if found != expected:
        raise damaged(path, "the index file disagrees with the manifest: (dim, M, "
                       f"ef_construction, elements) = {found} in the file, {expected} in "
                       "the manifest")
    index = hnsw_factory(manifest.graph_dim)
    # the capacity saved, but never more than the graph's places need with room to grow: a
    # manifest claiming 100M places for 20 made the open allocate 4 GB (more is added later,
    # as places are)
    capacity = min(manifest.index_capacity,
                   max(OPEN_CAPACITY_FLOOR, OPEN_CAPACITY_FACTOR * header.elements))
    try:
        index.load_index(str(path), max_elements=max(capacity, header.elements, 1))
    except (RuntimeError, ValueError, TypeError) as exc:
        if out_of_memory(exc):
            raise
        raise damaged(path, f"hnswlib cannot load it ({exc})") from exc
    if index.element_count != manifest.index_elements:
        raise damaged(path, f"{index.element_count} elements, manifest says "
                       f"{manifest.index_elements}")
    return index, header


def _check_deleted_marks(path: Path, marked_labels: np.ndarray, labels: set[int],
                         records: PlaceRecords) -> None:
    """hnswlib's deleted marks (``marked_labels``, collected by the link check of
    :func:`hnsw_file.read_header`) must be the places with no live row in ``removed.npy``: a
    place marked deleted but live in the records would never be found, and one removed but
    not marked would come back in searches. Both files pass their checksums, so only a
    writer's bug could split them; the fix is the same as for a damaged graph."""
    live = set(records.ids[records.live_rows()].tolist())
    marked = set(marked_labels.tolist())
    expected = labels - live
    if marked != expected:
        raise damaged(path, f"its deleted marks disagree with removed.npy: "
                       f"{len(marked - expected)} live places marked deleted, "
                       f"{len(expected - marked)} removed ones not marked")
