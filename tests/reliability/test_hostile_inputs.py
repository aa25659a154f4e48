"""Hostile inputs never crash the process: every one is a documented VprEdgeError.

Property tests (hypothesis) throw arrays of every dtype/shape, and random damage to image
bytes, model files and maps, at the public API; hand-written cases pin the messages.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from vpr_edge.errors import (
    ImageDecodeError,
    InvalidInputError,
    MapCorruptError,
    ModelFormatError,
    VprEdgeError,
)
from vpr_edge.images import decode_image
from vpr_edge.localizer import Localizer

FAST = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def _localizer(tmp_path: Path, tiny) -> Localizer:
    model = tiny.build(tmp_path / "tiny.onnx", tiny.metadata())
    return Localizer(model, backend="onnxruntime-cpu")


dtypes = st.sampled_from([np.uint8, np.int8, np.uint16, np.int32, np.float16, np.float32,
                          np.float64, np.bool_, np.complex64])
shapes = hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=12)


@FAST
@given(array=hnp.arrays(dtype=dtypes, shape=shapes))
def test_any_array_is_described_or_refused_cleanly(tmp_path_factory, tiny, array) -> None:
    loc = _cached(tmp_path_factory, tiny)
    try:
        out = loc.describe(array)
    except InvalidInputError:
        return
    # what was accepted must be a real frame or batch of frames, and give finite descriptors
    assert array.dtype == np.uint8 and array.ndim in (2, 3, 4)
    assert np.isfinite(out).all()


_CACHE: dict = {}


def _cached(tmp_path_factory, tiny) -> Localizer:
    if "loc" not in _CACHE:
        _CACHE["loc"] = _localizer(tmp_path_factory.mktemp("hostile"), tiny)
    return _CACHE["loc"]


@pytest.mark.parametrize("frame, words", [
    (np.full((8, 8, 3), np.nan, np.float32), "uint8"),
    (np.zeros((0, 0, 3), np.uint8), "empty"),
    (np.zeros((20000, 2, 3), np.uint8), "limit"),
    (np.zeros((8, 8, 2), np.uint8), "HxWx3"),
    (np.zeros((8, 8, 3), np.uint8)[:, ::-1], None),  # non-contiguous views are fine
])
def test_hand_written_frames(tmp_path_factory, tiny, frame, words) -> None:
    loc = _cached(tmp_path_factory, tiny)
    if words is None:
        assert loc.describe(frame).shape == (tiny.DIM,)
    else:
        with pytest.raises(InvalidInputError, match=words):
            loc.describe(frame)


@FAST
@given(cut=st.integers(min_value=0, max_value=4000), flips=st.lists(
    st.tuples(st.integers(0, 4000), st.integers(1, 255)), max_size=8))
def test_damaged_image_bytes_decode_or_raise_decode_error(corridor_dir: Path, cut, flips) -> None:
    data = bytearray((corridor_dir / "ref" / "0000005.jpg").read_bytes())
    for pos, mask in flips:
        data[pos % len(data)] ^= mask
    data = bytes(data[: max(0, len(data) - cut)])
    try:
        image = decode_image(data)
    except ImageDecodeError:
        return
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_damaged_onnx_files_are_refused(tmp_path: Path, tiny, damage: str) -> None:
    good = tiny.build(tmp_path / "good.onnx", tiny.metadata()).read_bytes()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes({"truncate": good[: len(good) // 2], "garbage": b"\x08\x07" * 500,
                     "empty": b""}[damage])
    with pytest.raises(ModelFormatError):
        Localizer(bad, backend="onnxruntime-cpu")


@FAST
@given(position=st.floats(0.0, 1.0), mask=st.integers(1, 255))
def test_any_bit_flip_in_a_map_is_refused_or_harmless(tmp_path_factory, position, mask) -> None:
    """A flipped byte anywhere in a map either leaves an identical map (a byte nobody reads)
    or is refused before hnswlib sees it; never a crash or a silently different answer."""
    from vpr_edge.index import PlaceIndex

    base = _CACHE.get("map")
    if base is None:
        base = tmp_path_factory.mktemp("map") / "m"
        rng = np.random.default_rng(0)
        x = rng.standard_normal((300, 16)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        index = PlaceIndex(16, fingerprint="fp")
        index.add(x, stamps=np.arange(300.0), meta=[{"i": i} for i in range(300)])
        index.save(base)
        _CACHE["map"] = base
        _CACHE["answer"] = [m.place_id for m in index.query(x[7], k=5)]
        _CACHE["x7"] = x[7]
    import shutil

    copy = tmp_path_factory.mktemp("flip") / "m"
    shutil.copytree(base, copy)
    files = sorted(p for p in copy.iterdir() if p.is_file())
    sizes = np.cumsum([f.stat().st_size for f in files])
    offset = int(position * (sizes[-1] - 1))
    which = int(np.searchsorted(sizes, offset, side="right"))
    target = files[which]
    data = bytearray(target.read_bytes())
    data[offset - (sizes[which - 1] if which else 0)] ^= mask
    target.write_bytes(bytes(data))
    try:
        index = PlaceIndex.open(copy, fingerprint="fp")
    except MapCorruptError:
        return
    except VprEdgeError as exc:  # pragma: no cover - any other refusal must be documented
        pytest.fail(f"unexpected error type {type(exc).__name__}: {exc}")
    assert [m.place_id for m in index.query(_CACHE["x7"], k=5)] == _CACHE["answer"]


@FAST
@given(encoding=st.sampled_from(["rgb8", "bgr8", "mono8", "rgba8", "mono16", "rgb16",
                                 "yuv422", "", "32FC1"]),
       height=st.integers(-2, 9), width=st.integers(-2, 9), step=st.integers(-4, 60),
       size=st.integers(0, 400), big=st.integers(0, 1))
def test_any_image_message_header_is_converted_or_refused(encoding, height, width, step, size,
                                                          big) -> None:
    """Malformed sensor_msgs/Image headers (step/size mismatch, unknown encoding)."""
    from types import SimpleNamespace

    from vpr_edge.ros_image import image_to_rgb

    msg = SimpleNamespace(encoding=encoding, height=height, width=width, step=step,
                          is_bigendian=big, data=bytes(range(256)) * 2)
    msg.data = msg.data[:size]
    try:
        rgb = image_to_rgb(msg)
    except InvalidInputError:
        return
    assert rgb.shape == (height, width, 3) and rgb.dtype == np.uint8


@FAST
@given(cut=st.integers(0, 4000), flip=st.integers(0, 3999))
def test_damaged_bags_are_refused_cleanly(tmp_path_factory, rosbag_path, cut, flip) -> None:
    """A truncated or bit-flipped ROS bag reads or raises InvalidInputError, nothing else."""
    pytest.importorskip("rosbags")
    from vpr_edge import bags

    blob = bytearray(rosbag_path.read_bytes()[: 4000 + cut * 200])
    blob[flip] ^= 0xFF
    path = tmp_path_factory.mktemp("bag") / "damaged.bag"
    path.write_bytes(bytes(blob))
    try:
        for frame in bags.read_image_frames(path, "/spot/camera/hand_color/image"):
            assert frame.image.dtype == np.uint8 and frame.image.ndim == 3
    except InvalidInputError:
        pass
