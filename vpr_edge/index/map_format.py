"""The manifest of a map directory: what is in it, and the checksums that prove it.

``manifest.json`` is the map's table of contents. It names the format and its version, the
descriptor space, dimension and HNSW parameters, the counts, the model fingerprint, and for
every other file in the map its size and sha256. It carries its own checksum,
``manifest_sha256``: the sha256 of the manifest's canonical JSON without that key (keys
sorted, ``separators=(",", ":")``, ASCII). That rule is fixed for all format versions, so a
manifest is checked before its version is trusted: a bit flip anywhere is reported as damage,
and only an intact manifest from a newer format asks for an upgrade.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import INSTALL_NEWER, MapCorruptError, MapVersionError
from .settings import MAX_EF, MAX_INDEX_CAPACITY, MAX_M, SPACE

FORMAT_NAME = "vpr-edge-map"
#: 2: optional "search_dim" (a projected graph); maps without it stay 1. 3: optional
#: "index.rows", an index.hnsw kept from an earlier save that lacks the places of later rows
#: (opening adds them); maps whose graph holds every row stay 1 or 2
FORMAT_VERSION = 3
MANIFEST_NAME = "manifest.json"
INDEX_NAME = "index.hnsw"
REMOVED_NAME = "removed.npy"
#: A manifest larger than this is not ours (it lists a few files per segment).
MAX_MANIFEST_BYTES = 64 << 20
#: The most JSON text one provenance entry holds (every save writes it in the manifest).
MAX_PROVENANCE_CHARS = 1 << 20
#: The deepest nesting of lists and dicts in one provenance entry (JSON coding recurses).
MAX_PROVENANCE_DEPTH = 100
#: longer than any pose a place stores (x, y, z, qx, qy, qz, qw: 7; a flattened
#: nav_msgs/Odometry with its covariances: 85, which maps saved before 2026-11-27 hold)
MAX_POSE_DIM = 1024
#: the largest place id (ids are int64 records and hnswlib labels); a map holding it stores
#: ``next_id`` 2**63 (JSON ints are unbounded)
MAX_ID = 2**63 - 1
#: far beyond any descriptor (NetVLAD's 7168-d, or 32768-d with K=256 on VGG16)
MAX_DIM = 1 << 20

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SHA = re.compile(r"^[0-9a-f]{64}$")


def record_dtype(pose_dim: int) -> np.dtype:
    """The structured dtype of a segment's ``records.npy``: id, stamp (NaN = none), pose."""
    return np.dtype([("id", "<i8"), ("stamp", "<f8"), ("pose", "<f8", (pose_dim,))])


def no_json_constant(name: str) -> float:
    """``json.loads``' ``parse_constant``: NaN and Infinity are not JSON (a map's writer never
    writes them, and ``add()`` refuses them in metadata)."""
    raise ValueError(f"{name} is not a JSON value")


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


@dataclass(frozen=True)
class FileInfo:
    """Size and sha256 of one file of a map."""

    bytes: int
    sha256: str


@dataclass(frozen=True)
class SegmentInfo:
    """Rows ``[start, stop)`` of the place records, in three files."""

    start: int
    stop: int

    @property
    def stem(self) -> str:
        return f"seg-{self.start:012d}-{self.stop:012d}"

    @property
    def records(self) -> str:
        return f"{self.stem}.records.npy"

    @property
    def descriptors(self) -> str:
        return f"{self.stem}.descriptors.npy"

    @property
    def meta(self) -> str:
        return f"{self.stem}.meta.jsonl"

    @property
    def files(self) -> tuple[str, str, str]:
        return (self.records, self.descriptors, self.meta)

    @property
    def rows(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class Manifest:
    """The parsed, checked content of ``manifest.json``."""

    fingerprint: str | None
    dim: int
    M: int
    ef_construction: int
    ef: int
    count: int
    rows: int
    next_id: int
    pose_dim: int
    index_elements: int
    index_capacity: int
    segments: tuple[SegmentInfo, ...]
    files: dict[str, FileInfo]
    created_at: str
    updated_at: str
    vpr_edge_version: str
    search_dim: int | None = None
    space: str = SPACE
    format_version: int = FORMAT_VERSION
    #: what made the descriptors, beyond the model (``PlaceIndex.provenance``)
    provenance: dict[str, Any] = field(default_factory=dict)
    #: the record rows ``index.hnsw`` was written for, when it was kept from an earlier save
    #: (its places of later rows, and its removals since, are replayed on opening); None:
    #: the graph is that of this save
    index_rows: int | None = None

    @property
    def graph_dim(self) -> int:
        """Dimension of the vectors in ``index.hnsw`` (``search_dim`` when projected)."""
        return self.dim if self.search_dim is None else self.search_dim

    def to_bytes(self) -> bytes:
        body: dict[str, Any] = {
            "format": FORMAT_NAME,
            "format_version": self.format_version,
            "vpr_edge_version": self.vpr_edge_version,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "fingerprint": self.fingerprint,
            "space": self.space,
            "dim": self.dim,
            "M": self.M,
            "ef_construction": self.ef_construction,
            "ef": self.ef,
            "count": self.count,
            "rows": self.rows,
            "next_id": self.next_id,
            "pose_dim": self.pose_dim,
            "index": {"file": INDEX_NAME, "elements": self.index_elements,
                      "capacity": self.index_capacity,
                      **({} if self.index_rows is None else {"rows": self.index_rows})},
            "removed": REMOVED_NAME,
            "segments": [{"start": s.start, "stop": s.stop, "records": s.records,
                          "descriptors": s.descriptors, "meta": s.meta}
                         for s in self.segments],
            "files": {name: {"bytes": info.bytes, "sha256": info.sha256}
                      for name, info in sorted(self.files.items())},
        }
        if self.search_dim is not None:
            body["search_dim"] = self.search_dim
        if self.provenance:  # (older readers ignore it)
            body["provenance"] = self.provenance
        body["manifest_sha256"] = hashlib.sha256(canonical_json(body)).hexdigest()
        return (json.dumps(body, indent=1, sort_keys=True) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes, where: Path) -> Manifest:
        """Parse and check a manifest; ``where`` (its path) is named in every error."""

        def bad(why: str) -> MapCorruptError:
            return MapCorruptError(f"{where}: {why}; the map is damaged or not a vpr-edge map "
                                   "(restore it from a backup, or build it again into a new "
                                   "folder)")

        if len(data) > MAX_MANIFEST_BYTES:
            raise bad(f"{len(data)} bytes is far too large for a manifest")
        try:
            body = json.loads(data.decode("utf-8"), parse_constant=no_json_constant)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # nested too deep
            raise bad(f"not valid JSON ({exc})") from exc
        if not isinstance(body, dict) or body.get("format") != FORMAT_NAME:
            raise bad(f"not a '{FORMAT_NAME}' manifest")
        claimed = body.pop("manifest_sha256", None)
        if claimed != hashlib.sha256(canonical_json(body)).hexdigest():
            raise bad("the manifest fails its own checksum (manifest_sha256)")
        version = body.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise bad(f"bad format_version {version!r}")
        if version > FORMAT_VERSION:
            raise MapVersionError(
                f"{where}: map format version {version} was written by vpr-edge "
                f"{body.get('vpr_edge_version', '?')}; this vpr-edge reads up to version "
                f"{FORMAT_VERSION}: {INSTALL_NEWER}"
            )

        def num(key: str, src: dict = body, low: int = 0, high: int = 2**63 - 1) -> int:
            value = src.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise bad(f"field '{key}' is {value!r}, expected an int in [{low}, {high}]")
            return value

        def text(key: str, optional: bool = False) -> str | None:
            value = body.get(key)
            if value is None and optional:
                return None
            if not isinstance(value, str):
                raise bad(f"field '{key}' is {value!r}, expected a string")
            return value

        if body.get("space") != SPACE:
            raise bad(f"space {body.get('space')!r}: this vpr-edge only reads inner-product "
                      f"('{SPACE}') maps of L2-normalised descriptors")
        index = body.get("index")
        if not isinstance(index, dict) or index.get("file") != INDEX_NAME:
            raise bad("field 'index' is missing or names another file")
        if body.get("removed") != REMOVED_NAME:
            raise bad("field 'removed' is missing or names another file")
        files_raw = body.get("files")
        if not isinstance(files_raw, dict):
            raise bad("field 'files' is missing")
        files: dict[str, FileInfo] = {}
        for name, info in files_raw.items():
            if not _NAME.match(name) or ".." in name:
                raise bad(f"file name {name!r} is not a plain file name")
            if (not isinstance(info, dict) or not isinstance(info.get("sha256"), str)
                    or not _SHA.match(info["sha256"])):
                raise bad(f"file entry {name!r} has no valid sha256")
            files[name] = FileInfo(bytes=num("bytes", info), sha256=info["sha256"])
        rows = num("rows")
        segments: list[SegmentInfo] = []
        expected_start = 0
        raw_segments = body.get("segments", None) or []
        if not isinstance(raw_segments, list):
            raise bad("field 'segments' is not a list")
        for raw in raw_segments:
            if not isinstance(raw, dict):
                raise bad("a segment entry is not an object")
            seg = SegmentInfo(num("start", raw), num("stop", raw))
            if seg.start != expected_start or seg.stop <= seg.start:
                raise bad(f"segment rows [{seg.start}, {seg.stop}) do not follow row "
                          f"{expected_start}")
            if (raw.get("records"), raw.get("descriptors"), raw.get("meta")) != seg.files:
                raise bad(f"segment [{seg.start}, {seg.stop}) names unexpected files")
            segments.append(seg)
            expected_start = seg.stop
        if expected_start != rows:
            raise bad(f"segments cover {expected_start} rows, the manifest says {rows}")
        needed = {INDEX_NAME, REMOVED_NAME, *(n for s in segments for n in s.files)}
        missing = sorted(needed - files.keys())
        if missing:
            raise bad(f"no checksum for {', '.join(missing)}")
        dim = num("dim", low=1)
        if dim > MAX_DIM:  # (an empty map has no file to hold it against)
            raise bad(f"dim {dim} is not a descriptor's length (at most {MAX_DIM})")
        search_dim = None
        if "search_dim" in body:
            search_dim = num("search_dim", low=1)
            if search_dim >= dim:
                raise bad(f"search_dim {search_dim} is not below dim {dim}")
        provenance = body.get("provenance", {})
        if not isinstance(provenance, dict):
            raise bad("field 'provenance' is not an object")
        count = num("count")
        elements = num("elements", index)
        index_rows = num("rows", index, high=rows) if "rows" in index else None
        if index_rows is not None and version < 3:
            raise bad(f"field 'index' gives rows, which format version {version} has not")
        graph_rows = rows if index_rows is None else index_rows
        # the places of the rows after the graph file's are inserted on opening
        if count > rows or elements > graph_rows or count > elements + rows - graph_rows:
            raise bad(f"counts disagree (count {count}, rows {rows}, index elements {elements}"
                      f"{'' if index_rows is None else f' of rows {index_rows}'})")
        capacity = num("capacity", index)
        if capacity > MAX_INDEX_CAPACITY:
            raise bad(f"index capacity {capacity} is beyond what hnswlib can hold "
                      f"({MAX_INDEX_CAPACITY})")
        pose_dim = num("pose_dim")
        if pose_dim > MAX_POSE_DIM:
            raise bad(f"pose_dim {pose_dim} is not a pose's length (at most {MAX_POSE_DIM})")
        for seg in segments:  # before arrays are made to these sizes: files hold them
            for name, needed in ((seg.descriptors, seg.rows * dim * 2),
                                 (seg.records, seg.rows * 16)):  # id, stamp (older: no pose)
                if files[name].bytes < needed:
                    raise bad(f"{name} is {files[name].bytes} bytes, too small for the "
                              f"{seg.rows} rows of dim {dim} the manifest gives it")
        return cls(
            fingerprint=text("fingerprint", optional=True),
            dim=dim,
            search_dim=search_dim,
            M=num("M", low=2, high=MAX_M),
            ef_construction=num("ef_construction", low=1, high=MAX_EF),
            ef=num("ef", low=1, high=MAX_EF),
            count=count,
            rows=rows,
            next_id=num("next_id", high=MAX_ID + 1),
            pose_dim=pose_dim,
            index_elements=elements,
            index_capacity=max(capacity, elements),
            index_rows=index_rows,
            segments=tuple(segments),
            files=files,
            created_at=text("created_at") or "",
            provenance=provenance,
            updated_at=text("updated_at") or "",
            vpr_edge_version=text("vpr_edge_version") or "",
            format_version=version,
        )
