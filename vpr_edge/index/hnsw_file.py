"""Read and check the header of an hnswlib index file before hnswlib loads it.

hnswlib (0.8) loads whatever it is given: its files hold neither the space nor the dimension,
and a damaged header can make it allocate absurd amounts of memory or read out of bounds. This
module parses the fixed header and walks the per-element link-list sizes exactly as hnswlib's
own loader does, so a file whose layout disagrees with the map's manifest (dimension, M,
ef_construction, element count) or whose length is inconsistent is refused with a clear error
first. Layout (little-endian, hnswlib ``HierarchicalNSW::saveIndex``)::

    u64 offsetLevel0, u64 max_elements, u64 cur_element_count, u64 size_data_per_element,
    u64 label_offset, u64 offsetData, i32 maxlevel, u32 enterpoint_node, u64 maxM, u64 maxM0,
    u64 M, f64 mult, u64 ef_construction,
    level-0 block: cur_element_count * size_data_per_element bytes,
    then per element: u32 linkListSize + linkListSize bytes.

Each element's level-0 entry starts with its link count (u16) and a flags byte whose bit 0 is
hnswlib's deleted mark (``markDeletedInternal``); its label (u64) sits at ``label_offset``.
An upper level's list is a u32 whose low 16 bits are its link count, then ``maxM`` u32 links.

With ``links=True`` the graph itself is checked too: hnswlib follows its links without
bounds checks, so a link to an element that does not exist, a link count above the maximum,
or a top level that is not the entry point's, in a file that passes its checksum (written
by something else than vpr-edge), would crash the process (SIGSEGV) at the first query or
add instead of being refused. The same pass over level 0 collects the labels of the elements
marked deleted (:attr:`HnswHeader.deleted_labels`), for the map's check against
``removed.npy``: level 0 is read once.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

_HEADER = struct.Struct("<QQQQQQiIQQQdQ")
HEADER_BYTES = _HEADER.size  # 96
#: the byte of an element's level-0 entry that holds hnswlib's flags, and its deleted bit
DELETED_FLAG_BYTE = 2
DELETE_MARK = 0x01


@dataclass(frozen=True)
class HnswHeader:
    """The fields of an hnswlib file header that the map checks."""

    elements: int
    max_elements: int
    dim: int
    M: int
    ef_construction: int
    file_bytes: int
    size_per_element: int  # bytes of one element's level-0 entry
    label_offset: int  # where its label is in that entry
    #: the labels (uint64) hnswlib marked deleted, read with ``links`` (None without)
    deleted_labels: np.ndarray | None = field(default=None, compare=False, repr=False)


class HnswFileError(ValueError):
    """The file is not a consistent hnswlib index (the message says why)."""


def read_header(path: Path, *, links: bool = False) -> HnswHeader:
    """Parse and check an hnswlib file (float32 vectors), with ``links`` its graph's links
    and levels too, and then collect its deleted labels; raise :class:`HnswFileError`."""
    with open(path, "rb") as fh:
        head = fh.read(HEADER_BYTES)
        if len(head) < HEADER_BYTES:
            raise HnswFileError(f"{len(head)} bytes, shorter than the {HEADER_BYTES}-byte header")
        (offset_level0, max_elements, count, size_per_element, label_offset, offset_data,
         max_level, enter_point, max_m, max_m0, m, mult, ef_construction) = _HEADER.unpack(head)
        fh.seek(0, 2)
        total = fh.tell()
        links0 = max_m0 * 4 + 4
        data_size = label_offset - offset_data
        if (offset_level0 != 0 or offset_data != links0 or data_size <= 0 or data_size % 4
                or size_per_element != links0 + data_size + 8 or max_m0 != 2 * m
                or max_m != m or not 1 < m < 1 << 16 or max_level < -1
                or not abs(mult - 1.0 / math.log(m)) < 1e-9
                or count > max_elements or (count and enter_point >= count)):
            raise HnswFileError("inconsistent header fields")
        level0_end = HEADER_BYTES + count * size_per_element
        if level0_end > total:
            raise HnswFileError(f"truncated: {total} bytes, the level-0 block alone needs "
                                f"{level0_end}")
        fh.seek(level0_end)
        tail = fh.read()
    pos = 0
    links_per_level = max_m * 4 + 4
    upper: list[tuple[int, int]] = []  # (where an element's upper lists start, bytes)
    top = 0  # the highest level of any element
    entry_level = 0
    for element in range(count):
        if pos + 4 > len(tail):
            raise HnswFileError("truncated in the upper-level link lists")
        (size,) = struct.unpack_from("<I", tail, pos)
        if size % links_per_level:
            raise HnswFileError("bad upper-level link-list size")
        if size:
            upper.append((pos + 4, size))
            top = max(top, size // links_per_level)
            if element == enter_point:
                entry_level = size // links_per_level
        pos += 4 + size
    if pos != len(tail):
        raise HnswFileError(f"{len(tail) - pos:+d} bytes after the last link list "
                            "(truncated or trailing data)")
    header = HnswHeader(elements=int(count), max_elements=int(max_elements),
                        dim=data_size // 4, M=int(m), ef_construction=int(ef_construction),
                        file_bytes=int(total), size_per_element=int(size_per_element),
                        label_offset=int(label_offset))
    if not links:
        return header
    if count and (max_level != entry_level or top != max_level):
        raise HnswFileError(f"top level {max_level}, but the entry point's is "
                            f"{entry_level} and the highest element's {top}")
    deleted = _check_level0(path, header, int(max_m0))
    if upper:  # one check of every upper-level list together
        lists = np.concatenate([np.frombuffer(tail, "<u4", count=size // 4, offset=start)
                                for start, size in upper])
        _check_links(lists.reshape(-1, max_m + 1), int(max_m), int(count), "the upper levels")
    return replace(header, deleted_labels=deleted)


#: bytes of level-0 elements read at once by the checks (the memory they take)
LEVEL0_CHUNK_BYTES = 1 << 20


def _level0_chunks(path: Path, header: HnswHeader) -> Iterator[tuple[int, np.ndarray]]:
    """``(first element, its rows)`` of the level-0 block, a chunk at a time, read into one
    buffer. (A memory map of the file touched every page of it, vectors too: a 100k map's
    open peaked 197 MiB above the open map, all of index.hnsw.)"""
    width = header.size_per_element
    step = max(1, LEVEL0_CHUNK_BYTES // width)
    buffer = np.empty((min(step, header.elements), width), dtype=np.uint8)
    with open(path, "rb") as fh:
        fh.seek(HEADER_BYTES)
        for start in range(0, header.elements, step):
            rows = buffer[:min(step, header.elements - start)]
            if fh.readinto(memoryview(rows).cast("B")) != rows.nbytes:
                raise HnswFileError(f"truncated in the level-0 block, at element {start}")
            yield start, rows


def _check_level0(path: Path, header: HnswHeader, max_m0: int) -> np.ndarray:
    """Check every element's level-0 links and return the labels (uint64) marked deleted:
    one pass over the level-0 block, which keeps only those labels."""
    where = header.label_offset
    deleted = [np.zeros(0, np.uint64)]
    for start, rows in _level0_chunks(path, header):
        lists = np.ascontiguousarray(rows[:, :4 + 4 * max_m0]).view("<u4")
        _check_links(lists.reshape(rows.shape[0], max_m0 + 1), max_m0, header.elements,
                     f"level 0 of elements from {start}")
        marked = rows[:, DELETED_FLAG_BYTE] & DELETE_MARK != 0
        deleted.append(np.ascontiguousarray(rows[marked, where:where + 8]).view("<u8")
                       .reshape(-1))
    return np.concatenate(deleted)


def _check_links(lists: np.ndarray, most: int, elements: int, where: str) -> None:
    """``lists``: rows of [u32 whose low 16 bits are the link count, ``most`` links]."""
    counts = lists[:, 0] & 0xFFFF
    if counts.size and int(counts.max()) > most:
        raise HnswFileError(f"{where}: a link count of {int(counts.max())}, at most {most}")
    used = np.arange(most) < counts[:, None]
    targets = lists[:, 1:][used]
    if targets.size and int(targets.max()) >= elements:
        raise HnswFileError(f"{where}: a link to element {int(targets.max())} of {elements}")
