from __future__ import annotations

from pathlib import Path

import pytest

from vpr_edge.engine_file import (
    MAGIC,
    check_engine_compatible,
    engine_header_for,
    is_version_compatible,
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


def test_a_multi_architecture_engine_runs_on_its_targets_alone(tiny) -> None:
    """TensorRT-RTX's default engine (8.0, 8.6, 8.9, 12.0) has no single compute capability:
    the check used to be skipped, and a Turing GPU (7.5) reached deserialisation. Then it let
    any later GPU through, and on an H200 (9.0) TensorRT-RTX's runtime refused the engine
    ("does not support this compute capability") after a message calling it damaged."""
    header = engine_header_for(tiny.metadata(), BLOB, tensorrt_module="tensorrt_rtx",
                               tensorrt_version="1.7", compute_capability=None,
                               builder={"compute_capabilities": ["8.0", "8.6", "8.9", "12.0"]})
    for gpu in ((8, 0), (8, 9), (12, 0)):
        check_engine_compatible(header, tensorrt_module="tensorrt_rtx", tensorrt_version="1.7",
                                compute_capability=gpu)
    for gpu in ((12, 1),):  # TensorRT-RTX targets it: a rebuild for it runs
        text = ".".join(map(str, gpu))
        with pytest.raises(EngineMismatchError, match=rf"8\.0, 8\.6, 8\.9, 12\.0, this GPU is "
                           rf"{text}.*engine build MODEL\.fp16\.onnx --compute-capability {text}"):
            check_engine_compatible(header, tensorrt_module="tensorrt_rtx",
                                    tensorrt_version="1.7", compute_capability=gpu)
    # H100/H200, B200, Orin: TensorRT-RTX cannot; Turing (7.5): TensorRT-RTX runs there, but
    # without FP32 GEMMs, and `engine build --compute-capability 7.5` (the fix this suggested)
    # refuses to build for it
    for gpu in ((9, 0), (10, 0), (8, 7), (7, 5)):
        text = ".".join(map(str, gpu))
        with pytest.raises(EngineMismatchError, match=rf"TensorRT-RTX engines of this model do "
                           rf"not run on GPUs of compute capability {text}.*onnxruntime-cuda"
                           rf".*full TensorRT"):
            check_engine_compatible(header, tensorrt_module="tensorrt_rtx",
                                    tensorrt_version="1.7", compute_capability=gpu)


def test_a_deeply_nested_header_is_a_format_error(engine: Path, tmp_path: Path) -> None:
    import struct

    blob = b"[" * 100000 + b"]" * 100000
    deep = tmp_path / "deep.engine"
    deep.write_bytes(MAGIC + struct.pack("<I", len(blob)) + blob)
    with pytest.raises(ModelFormatError, match="not JSON"):
        read_engine_header(deep)


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
                                          ("model", [1, 2]), ("engine_size", float("inf")),
                                          ("engine_size", -5), ("engine_size", 2.5),
                                          ("compute_capability", {"x": 1}),
                                          ("compute_capability", "8.7.1"),
                                          ("format_version", 0), ("format_version", True)])
def test_malformed_header_fields_are_format_errors(engine: Path, field: str, value) -> None:
    """A damaged or hand-edited header is a ModelFormatError naming the file, not a raw
    ValueError or TypeError that `except VprEdgeError` would miss."""
    from vpr_edge.engine_file import EngineHeader

    data = read_engine_header(engine).to_dict()
    data[field] = value
    with pytest.raises(ModelFormatError, match="m.engine"):
        EngineHeader.from_dict(data, where=str(engine))


@pytest.mark.parametrize("edit", [{"fingerprint": "sha256:" + "0" * 64}, {"dim": 4096},
                                  {"schema_version": 99}])
def test_edited_model_metadata_in_a_header_names_the_file(engine: Path, edit: dict) -> None:
    """The model metadata's own errors named no file (every other header error does)."""
    from vpr_edge.engine_file import EngineHeader

    data = read_engine_header(engine).to_dict()
    data["model"] = {**data["model"], **edit}
    with pytest.raises(ModelFormatError) as raised:
        EngineHeader.from_dict(data, where=str(engine))
    assert str(raised.value).startswith(f"{engine}: engine header: ")


def test_a_compute_capability_that_is_no_version_is_a_format_error(engine: Path) -> None:
    header = read_engine_header(engine)
    with pytest.raises(ModelFormatError, match="major, minor"):
        check_engine_compatible(header, tensorrt_module="tensorrt", tensorrt_version="10.3.0",
                                compute_capability=8.7)


def _header(tiny, *, version_compatible: bool, version: str = "10.3.0"):
    builder = {"version_compatible": True} if version_compatible else {}
    return engine_header_for(tiny.metadata(), BLOB, tensorrt_module="tensorrt",
                             tensorrt_version=version, compute_capability="8.7",
                             builder=builder)


@pytest.mark.parametrize("module, version", [
    ("tensorrt", "10.3.0"), ("tensorrt", "10.3.1"), ("tensorrt", "10.16.1.11"),
    ("tensorrt", "11.0.0"), ("tensorrt_lean", "10.3.0"),
])
def test_version_compatible_engines_run_on_later_and_lean_runtimes(tiny, module,
                                                                   version) -> None:
    check_engine_compatible(_header(tiny, version_compatible=True), tensorrt_module=module,
                            tensorrt_version=version, compute_capability="8.7")


@pytest.mark.parametrize("version", ["10.7.0", "10.2.1", "10.3.0.1"])
def test_the_lean_runtime_runs_only_its_own_version(tiny, version: str) -> None:
    """NVIDIA: a lean runtime runs the version-compatible plans of its own version; a later
    TensorRT runs them through the full (or dispatch) runtime."""
    with pytest.raises(EngineMismatchError) as info:
        check_engine_compatible(_header(tiny, version_compatible=True),
                                tensorrt_module="tensorrt_lean", tensorrt_version=version,
                                compute_capability="8.7")
    text = str(info.value)
    assert text.startswith("tensorrt_version: ") and "its own version" in text
    assert f"tensorrt 10.3.0, this machine has tensorrt_lean {version}" in text
    assert "install tensorrt_lean 10.3.0" in text and "vpr-edge[tensorrt]" in text


def test_version_compatible_engines_need_their_version_or_later(tiny) -> None:
    with pytest.raises(EngineMismatchError, match=r"tensorrt_version: .*version-compatible.*"
                       r"10\.3\.0.*or a later one.*10\.2\.1"):
        check_engine_compatible(_header(tiny, version_compatible=True),
                                tensorrt_module="tensorrt", tensorrt_version="10.2.1",
                                compute_capability="8.7")
    for module in ("tensorrt", "tensorrt_lean"):
        with pytest.raises(EngineMismatchError, match="compute_capability"):
            check_engine_compatible(_header(tiny, version_compatible=True),
                                    tensorrt_module=module, tensorrt_version="10.3.0",
                                    compute_capability="9.0")


@pytest.mark.parametrize("built, runtime", [("10.3.0", "12.0.0"), ("8.6.1", "11.4.0"),
                                            ("11.0.0", "12.1.0")])
def test_version_compatible_engines_cross_only_the_major_versions_nvidia_supports(
        tiny, built, runtime) -> None:
    """NVIDIA runs version-compatible engines across major versions only from 8 on 9/10 and
    from 10 on 11 ("no other combination"); any later version used to pass."""
    with pytest.raises(EngineMismatchError, match="only from 8 on 9 or 10, 9 on 10 and 10 on 11"):
        check_engine_compatible(_header(tiny, version_compatible=True, version=built),
                                tensorrt_module="tensorrt", tensorrt_version=runtime,
                                compute_capability="8.7")
    for later in ("8.6.1", "9.3.0", "10.16.1") if built.startswith("8.") else ():
        check_engine_compatible(_header(tiny, version_compatible=True, version=built),
                                tensorrt_module="tensorrt", tensorrt_version=later,
                                compute_capability="8.7")
    check_engine_compatible(_header(tiny, version_compatible=True, version="9.3.0"),
                            tensorrt_module="tensorrt", tensorrt_version="10.3.0",
                            compute_capability="8.7")


def test_the_lean_runtime_refuses_an_ordinary_engine_naming_both_fixes(tiny) -> None:
    with pytest.raises(EngineMismatchError) as info:
        check_engine_compatible(_header(tiny, version_compatible=False),
                                tensorrt_module="tensorrt_lean", tensorrt_version="10.3.0",
                                compute_capability="8.7")
    text = str(info.value)
    assert "lean runtime" in text and "--version-compatible" in text
    assert "vpr-edge[tensorrt]" in text


def test_an_ordinary_engine_on_a_later_tensorrt_suggests_version_compatible(tiny) -> None:
    with pytest.raises(EngineMismatchError, match=r"10\.3\.0, this machine has 10\.3\.1.*"
                       r"--version-compatible"):
        check_engine_compatible(_header(tiny, version_compatible=False),
                                tensorrt_module="tensorrt", tensorrt_version="10.3.1",
                                compute_capability="8.7")


def test_only_a_literal_true_marks_an_engine_version_compatible(tiny) -> None:
    assert is_version_compatible(_header(tiny, version_compatible=True))
    for value in ("true", 1, None):
        header = engine_header_for(tiny.metadata(), BLOB, tensorrt_module="tensorrt",
                                   tensorrt_version="10.3.0", compute_capability="8.7",
                                   builder={"version_compatible": value})
        assert not is_version_compatible(header)


def _header_end(data: bytes) -> int:
    import struct

    return len(MAGIC) + 4 + struct.unpack("<I", data[len(MAGIC):len(MAGIC) + 4])[0]


def test_any_changed_byte_of_the_header_is_refused(engine: Path, tmp_path: Path) -> None:
    """The header had no checksum: one changed byte in a key ("comptte_capabilities") made
    an engine for four GPUs read as one for any GPU, and a changed digit of the input's mean
    would have gone unnoticed."""
    data = engine.read_bytes()
    damaged = tmp_path / "damaged.engine"
    for at in range(_header_end(data)):
        for bit in (0x01, 0x04, 0x40):
            changed = bytearray(data)
            changed[at] ^= bit
            damaged.write_bytes(bytes(changed))
            with pytest.raises(ModelFormatError):
                read_engine_header(damaged)
    at = data.index(b'"Orin"') + 2
    damaged.write_bytes(data[:at] + b"p" + data[at + 1:])  # "Orin" -> "Opin": valid JSON
    with pytest.raises(ModelFormatError, match="header fails its checksum.*engine build"):
        read_engine_file(damaged)


def test_engines_written_before_the_header_checksum_are_read(engine: Path, tmp_path: Path,
                                                             tiny) -> None:
    import json
    import struct

    data = engine.read_bytes()
    fields = json.loads(data[len(MAGIC) + 4:_header_end(data)])
    del fields["header_sha256"]
    old = tmp_path / "old.engine"
    for extra, readable in (({}, True), ({"heade_sha256": "0" * 64}, False)):
        blob = json.dumps({**fields, **extra}, sort_keys=True).encode()
        old.write_bytes(MAGIC + struct.pack("<I", len(blob)) + blob + data[_header_end(data):])
        if readable:
            assert read_engine_file(old) == read_engine_file(engine)
        else:  # a field no such header had: header_sha256 with a changed byte, say
            with pytest.raises(ModelFormatError, match="header fails its checksum"):
                read_engine_header(old)
