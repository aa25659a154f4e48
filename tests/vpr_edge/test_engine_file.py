from __future__ import annotations

from pathlib import Path

import pytest

from vpr_edge.engine_file import (
    MAGIC,
    check_engine_compatible,
    engine_header_for,
    read_engine_file,
    read_engine_header,
    write_engine_file,
)
from vpr_edge.errors import EngineMismatchError, ModelFormatError

BLOB = bytes(range(256)) * 40


@pytest.fixture
def engine(tmp_path: Path, tiny) -> Path:
    header = engine_header_for(tiny.metadata(precision="fp16"), BLOB, tensorrt_module="tensorrt",
                               tensorrt_version="10.3.0", compute_capability="8.7",
                               device_name="Orin", builder={"strongly_typed": True})
    return write_engine_file(tmp_path / "m.engine", header, BLOB)


def test_round_trip(engine: Path, tiny) -> None:
    header, blob = read_engine_file(engine)
    assert blob == BLOB and header.engine_size == len(BLOB)
    assert header.model == tiny.metadata(precision="fp16")
    assert read_engine_header(engine) == header
    assert engine.read_bytes().startswith(MAGIC)
    assert not list(engine.parent.glob(".*.tmp"))


def test_same_machine_is_accepted(engine: Path) -> None:
    header = read_engine_header(engine)
    for capability in ("8.7", 87, (8, 7), [8, 7]):
        check_engine_compatible(header, tensorrt_module="tensorrt", tensorrt_version="10.3.0",
                                compute_capability=capability)


@pytest.mark.parametrize("machine, field", [
    ({"tensorrt_module": "tensorrt_rtx"}, "tensorrt_module"),
    ({"tensorrt_version": "10.7.0"}, "tensorrt_version"),
    ({"compute_capability": "9.0"}, "compute_capability"),
])
def test_another_machine_is_refused_naming_the_field(engine: Path, machine, field) -> None:
    here = {"tensorrt_module": "tensorrt", "tensorrt_version": "10.3.0",
            "compute_capability": "8.7", **machine}
    with pytest.raises(EngineMismatchError, match=field) as info:
        check_engine_compatible(read_engine_header(engine), **here)
    assert "rebuild" in str(info.value)


def test_portable_engines_accept_any_gpu(tmp_path: Path, tiny) -> None:
    header = engine_header_for(tiny.metadata(), BLOB, tensorrt_module="tensorrt_rtx",
                               tensorrt_version="1.7", compute_capability=None)
    check_engine_compatible(header, tensorrt_module="tensorrt_rtx", tensorrt_version="1.7",
                            compute_capability=(12, 0))


def test_damaged_files_are_refused(engine: Path, tmp_path: Path) -> None:
    data = engine.read_bytes()
    cut = tmp_path / "cut.engine"
    cut.write_bytes(data[:-10])
    with pytest.raises(ModelFormatError, match="truncated"):
        read_engine_file(cut)
    flipped = bytearray(data)
    flipped[-5] ^= 1
    bad = tmp_path / "flip.engine"
    bad.write_bytes(bytes(flipped))
    with pytest.raises(ModelFormatError, match="checksum"):
        read_engine_file(bad)
    raw = tmp_path / "raw.plan"
    raw.write_bytes(BLOB)
    with pytest.raises(ModelFormatError, match="trtexec"):
        read_engine_header(raw)
    short = tmp_path / "short.engine"
    short.write_bytes(data[:20])
    with pytest.raises(ModelFormatError, match="truncated engine header"):
        read_engine_header(short)


@pytest.mark.parametrize("field, value", [("engine_size", "big"), ("builder", 3.5),
                                          ("model", [1, 2])])
def test_malformed_header_fields_are_format_errors(engine: Path, field: str, value) -> None:
    """A damaged or hand-edited header is a ModelFormatError naming the file, not a raw
    ValueError or TypeError that `except VprEdgeError` would miss."""
    from vpr_edge.engine_file import EngineHeader

    data = read_engine_header(engine).to_dict()
    data[field] = value
    with pytest.raises(ModelFormatError, match="m.engine|model metadata"):
        EngineHeader.from_dict(data, where=str(engine))


def test_a_compute_capability_that_is_no_version_is_a_format_error(engine: Path) -> None:
    header = read_engine_header(engine)
    with pytest.raises(ModelFormatError, match="major, minor"):
        check_engine_compatible(header, tensorrt_module="tensorrt", tensorrt_version="10.3.0",
                                compute_capability=8.7)
