"""A checksum that an exported ONNX file carries in itself, so that bits changed on a disk or in
a copy are caught when the model opens.

ONNX Runtime loads a model whose weights changed without a word: one flipped bit in a weight
gave descriptors at cosine 0.74 from the intact model's, and the map's fingerprint check
passed (the fingerprint in the metadata is not recomputed from the weights). So
``vpr-export`` writes a second metadata entry, key :data:`CHECKSUM_KEY`, whose value is the
sha256 of the whole file as written with that value set to 64 zeros (:data:`PLACEHOLDER`).
The runtime checks it before loading (1.4 ms for the default 2.7 MiB model, on this VM).

The entry is found without an ONNX parser: protobuf writes a ``metadata_props`` entry as its
key field (``0x0a``, length, key) then its value field (``0x12``, ``0x40`` = 64, the value),
and writes ``metadata_props`` after the graph, so the last match in the file is the entry.
A file exported before this existed has no entry and loads unchecked; a file whose entry
no longer reads as one (a byte of its key or framing changed) is refused, not taken for such
a file. The check covers the ``.onnx`` file only (the exported models hold their weights
inside it).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from .errors import ModelFormatError

CHECKSUM_KEY = "vpr_edge.file_sha256"
PLACEHOLDER = b"0" * 64
_FRAME = b"\x0a" + bytes([len(CHECKSUM_KEY)]) + CHECKSUM_KEY.encode() + b"\x12\x40"
#: an entry of the checksum's shape (its key's length, 64 hex digits), whatever its key says
_SHAPE = re.compile(rb"\x0a" + bytes([len(CHECKSUM_KEY)]) + rb"(.{%d})\x12\x40[0-9a-f]{64}"
                    % len(CHECKSUM_KEY), re.DOTALL)
#: what made a file's bytes change, and the fix
_DAMAGE = ("a damaged disk or SD card, or an interrupted copy. Copy the model again from where "
           "it was exported, or export it again with vpr-export")


def _value_offset(data: bytes) -> int | None:
    """Where the checksum's 64 bytes start in ``data``, or None without the entry."""
    at = data.rfind(_FRAME)
    if at < 0 or at + len(_FRAME) + len(PLACEHOLDER) > len(data):
        return None
    return at + len(_FRAME)


def _damaged_entry(data: bytes) -> bool:
    """Whether ``data``, in which :func:`_value_offset` finds no entry, holds a damaged one:
    the key intact with its framing changed, or an entry of its shape whose key differs from
    :data:`CHECKSUM_KEY` in one or two bytes."""
    key = CHECKSUM_KEY.encode()
    return key in data or any(sum(a != b for a, b in zip(found[1], key)) <= 2
                              for found in _SHAPE.finditer(data))


def _digest(data: bytes, offset: int) -> str:
    """sha256 of ``data`` with the 64 bytes at ``offset`` read as :data:`PLACEHOLDER`."""
    view = memoryview(data)
    h = hashlib.sha256(view[:offset])
    h.update(PLACEHOLDER)
    h.update(view[offset + len(PLACEHOLDER):])
    return h.hexdigest()


def seal_onnx_file(path: str | os.PathLike[str]) -> str:
    """Write the checksum into a file saved with the :data:`PLACEHOLDER` entry (in place, the
    same length, fsynced); return it. ``vpr-export`` calls this on each ONNX file it writes."""
    data = Path(path).read_bytes()
    offset = _value_offset(data)
    if offset is None or data[offset:offset + len(PLACEHOLDER)] != PLACEHOLDER:
        raise ValueError(f"{path}: no '{CHECKSUM_KEY}' placeholder entry to fill")
    digest = _digest(data, offset)
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(digest.encode("ascii"))
        f.flush()
        os.fsync(f.fileno())
    return digest


def check_onnx_file(path: str | os.PathLike[str]) -> bool:
    """True if the file's checksum matches its bytes, False if it carries none (exported
    before checksums, or not by vpr-export). Raises :class:`ModelFormatError` if it does
    not match."""
    data = Path(path).read_bytes()
    offset = _value_offset(data)
    if offset is None:
        if _damaged_entry(data):
            raise ModelFormatError(
                f"{path}: the checksum entry vpr-export wrote into the file is damaged (it no "
                f"longer reads as '{CHECKSUM_KEY}' and 64 hex digits): {_DAMAGE}")
        return False
    stated = data[offset:offset + len(PLACEHOLDER)].decode("ascii", "replace")
    actual = _digest(data, offset)
    if stated != actual:
        raise ModelFormatError(
            f"{path}: the file's bytes changed after vpr-export wrote it (its sha256 is "
            f"{actual}, the checksum written into it says {stated}): {_DAMAGE}")
    return True
