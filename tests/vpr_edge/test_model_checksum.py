"""The checksum an exported ONNX file carries (``vpr_edge.model_checksum``): a model whose
bytes changed after the export is refused when it opens."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vpr_edge import Localizer
from vpr_edge.cli.info import describe_path
from vpr_edge.errors import ModelFormatError
from vpr_edge.metadata import read_onnx_metadata
from vpr_edge.model_checksum import CHECKSUM_KEY, PLACEHOLDER, check_onnx_file, seal_onnx_file

onnx = pytest.importorskip("onnx")


def sealed(path: Path, tiny) -> Path:
    """The tiny model saved as vpr-export saves its files: the checksum's placeholder entry
    last in ``metadata_props``, then filled in (tests/export checks vpr-export's files)."""
    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key, entry.value = CHECKSUM_KEY, PLACEHOLDER.decode()
    onnx.save(model, str(path))
    seal_onnx_file(path)
    return path


def flip_a_weight_bit(path: Path) -> None:
    """One exponent bit of a float32 weight in the middle of the projection, as a failing
    card would."""
    model = onnx.load(str(path))
    raw = next(init.raw_data for init in model.graph.initializer if init.name == "proj")
    data = bytearray(path.read_bytes())
    at = data.find(raw) + 4 * (len(raw) // 8) + 3  # the weight's high byte (little-endian)
    data[at] ^= 0x20
    path.write_bytes(bytes(data))


def test_a_sealed_model_opens_and_says_it_was_checked(tiny_onnx, tiny, cpu_only) -> None:
    path = sealed(tiny_onnx, tiny)
    assert check_onnx_file(path) is True
    loc = Localizer(path, backend="onnxruntime-cpu")
    assert loc._backend.checksum_verified is True
    assert loc.info()["model"]["checksum_verified"] is True
    assert loc.describe(tiny.frames(1)[0]).shape == (tiny.DIM,)
    assert read_onnx_metadata(str(path)).fingerprint == tiny.metadata().fingerprint
    assert describe_path(path)["checksum"] == "ok"  # vpr-edge info


def test_a_flipped_weight_bit_is_refused_with_the_fix(tiny_onnx, tiny, cpu_only) -> None:
    """It loaded, and its descriptors silently went into (and were matched against) maps."""
    path = sealed(tiny_onnx, tiny)
    intact = Localizer(path, backend="onnxruntime-cpu").describe(tiny.frames(1)[0])
    flip_a_weight_bit(path)
    with pytest.raises(ModelFormatError, match="changed after vpr-export") as err:
        Localizer(path, backend="onnxruntime-cpu")
    assert "export it again" in str(err.value) and str(path) in str(err.value)
    with pytest.raises(ModelFormatError, match="changed after vpr-export"):
        read_onnx_metadata(str(path))  # vpr-edge info, vpr-edge engine build
    cli = subprocess.run([sys.executable, "-m", "vpr_edge.cli", "info", str(path)],
                         capture_output=True, text=True)
    assert cli.returncode == 2 and "changed after vpr-export" in cli.stderr
    assert "Traceback" not in cli.stderr
    # (the flip is a real change: ONNX Runtime runs the damaged file to other descriptors)
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    damaged = session.run(None, {"image": tiny.frames(1)})[0][0]
    assert not np.allclose(damaged, intact, atol=1e-4)


def test_a_changed_checksum_is_refused_and_an_unsealed_model_loads(tiny_onnx, make_model,
                                                                   tiny, cpu_only) -> None:
    path = sealed(tiny_onnx, tiny)
    data = bytearray(path.read_bytes())
    at = data.rfind(CHECKSUM_KEY.encode()) + len(CHECKSUM_KEY) + 2  # the first hex digit
    data[at] = ord("0") if data[at] != ord("0") else ord("1")
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFormatError, match="changed after vpr-export"):
        check_onnx_file(path)
    # a model exported before checksums (or by hand) has none: it loads, unchecked
    old = make_model("old.onnx")
    assert check_onnx_file(old) is False
    assert Localizer(old, backend="onnxruntime-cpu").info()["model"]["checksum_verified"] is False
    assert describe_path(old)["checksum"].startswith("none")


def test_sealing_needs_the_placeholder(make_model) -> None:
    with pytest.raises(ValueError, match="placeholder"):
        seal_onnx_file(make_model("plain.onnx"))


def test_a_changed_last_digit_shows_both_checksums_whole(tiny_onnx, tiny) -> None:
    """They were cut to 12 digits: a change in the last one showed two identical hashes."""
    path = sealed(tiny_onnx, tiny)
    data = bytearray(path.read_bytes())
    stated = data[-64:].decode()
    data[-1] = ord("0") if data[-1] != ord("0") else ord("1")
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFormatError) as err:
        check_onnx_file(path)
    assert f"its sha256 is {stated}," in str(err.value)
    assert f"says {data[-64:].decode()})" in str(err.value)


def test_any_changed_byte_of_the_checksum_entry_is_refused(tiny_onnx, tiny) -> None:
    """A changed byte in the entry's key made the file read as one exported before
    checksums (unchecked), so a changed file was no longer refused."""
    path = sealed(tiny_onnx, tiny)
    data = path.read_bytes()
    start = data.rfind(CHECKSUM_KEY.encode()) - 2  # the key field's tag and length
    for at in range(start, len(data)):
        for bit in (0x01, 0x20, 0x80):
            damaged = bytearray(data)
            damaged[at] ^= bit
            path.write_bytes(bytes(damaged))
            with pytest.raises(ModelFormatError, match="changed after vpr-export|is damaged"):
                check_onnx_file(path)
    path.write_bytes(data[:-40])  # cut short in the entry
    with pytest.raises(ModelFormatError, match="checksum entry .* is damaged"):
        check_onnx_file(path)


def test_other_entries_of_the_same_shape_are_not_taken_for_a_damaged_one(make_model) -> None:
    model = onnx.load(str(make_model("old.onnx")))
    for key in ("vpr_edge.data_sha256", "weights.file_sha256"):  # 20 bytes, 64 hex digits
        entry = model.metadata_props.add()
        entry.key, entry.value = key, "ab" * 32
    path = make_model("other.onnx")
    onnx.save(model, str(path))
    assert check_onnx_file(path) is False
