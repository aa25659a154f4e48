"""sensor_msgs/Image conversion: every encoding, padding, endianness, and broken headers."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from vpr_edge.ros_image import (
    ImageMessageError,
    compressed_to_rgb,
    image_to_rgb,
    message_to_frame,
    message_to_rgb,
)

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)


def msg(pixels: np.ndarray, encoding: str, pad: int = 0, big: int = 0) -> SimpleNamespace:
    h, w = pixels.shape[:2]
    row = pixels.reshape(h, -1).view(np.uint8)
    data = np.zeros((h, row.shape[1] + pad), np.uint8)
    data[:, : row.shape[1]] = row
    return SimpleNamespace(encoding=encoding, height=h, width=w, step=data.shape[1],
                           is_bigendian=big, data=data.tobytes())


@pytest.mark.parametrize("pad", [0, 3])
@pytest.mark.parametrize("encoding,pixels", [
    ("rgb8", RGB), ("bgr8", RGB[..., ::-1]), ("8UC3", RGB[..., ::-1]),
    ("rgba8", np.dstack([RGB, np.full(RGB.shape[:2], 9, np.uint8)])),
    ("bgra8", np.dstack([RGB[..., ::-1], np.full(RGB.shape[:2], 9, np.uint8)])),
])
def test_colour_encodings_give_the_same_rgb(encoding: str, pixels: np.ndarray, pad: int) -> None:
    out = image_to_rgb(msg(np.ascontiguousarray(pixels), encoding, pad))
    assert out.dtype == np.uint8 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, RGB)


def test_mono_is_replicated_to_three_channels() -> None:
    grey = RGB[..., 0]
    out = image_to_rgb(msg(np.ascontiguousarray(grey), "mono8", pad=1))
    np.testing.assert_array_equal(out, np.dstack([grey] * 3))


@pytest.mark.parametrize("big", [0, 1])
def test_sixteen_bit_scaled_with_endianness(big: int) -> None:
    wide = RGB.astype(np.uint16) * 257  # 0..65535 with the 8-bit value in the high byte
    data = wide.astype(">u2" if big else "<u2")
    out = image_to_rgb(msg(data, "rgb16", big=big))
    np.testing.assert_array_equal(out, RGB)


def test_bayer_needs_opencv_and_recovers_a_flat_colour() -> None:
    pytest.importorskip("cv2")
    raw = np.zeros((8, 8), np.uint8)
    raw[0::2, 0::2] = 200  # red sites of an RGGB tile
    out = image_to_rgb(msg(raw, "bayer_rggb8"))
    assert out.shape == (8, 8, 3) and tuple(out[4, 4]) == (200, 0, 0)


def test_real_bag_image_matches_its_bytes(rosbag_path) -> None:
    pytest.importorskip("rosbags")
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    with AnyReader([rosbag_path], default_typestore=get_typestore(Stores.ROS1_NOETIC)) as r:
        conn, _, raw = next(iter(r.messages()))
        m = r.deserialize(raw, conn.msgtype)
    out = image_to_rgb(m)
    assert out.shape == (480, 640, 3)
    np.testing.assert_array_equal(out, np.asarray(m.data).reshape(480, 640, 3))


@pytest.mark.parametrize("change,match,kind", [
    ({"encoding": "yuv422"}, "not supported", "unsupported encoding"),
    ({"step": 10}, "step 10 is smaller", "step too small"),
    ({"data": b"\0" * 20}, "truncated", "truncated data"),
    ({"height": 0}, "empty image", "empty image"),
    # a 20000-pixel-wide frame was refused only later, by the Localizer, in an error that
    # named no message: a bag's map build could not skip it
    ({"width": 20000, "height": 2, "step": 60000, "data": b"\0" * 120000}, "16384-pixel",
     "image too large"),
    # hand-built messages with list or str data raised a raw TypeError from memoryview,
    # which the nodes' callbacks (catching VprEdgeError) let through
    ({"data": [0] * 105}, "data is a list, not bytes", "bad data"),
    ({"data": None}, "data is a NoneType", "bad data"),
    # depth and float images were told to republish as rgb8
    ({"encoding": "32FC1"}, "depth or other measurements.*colour or grey image topic",
     "unsupported encoding"),
])
def test_broken_headers_are_named(change: dict, match: str, kind: str) -> None:
    bad = msg(RGB, "rgb8")
    for key, value in change.items():
        setattr(bad, key, value)
    for convert in (message_to_rgb, message_to_frame):  # the bag reader's, the nodes'
        with pytest.raises(ImageMessageError, match=match) as error:
            convert(bad)
        assert error.value.kind == kind


def test_compressed_jpeg_and_png() -> None:
    for fmt in ("PNG", "JPEG"):
        buf = io.BytesIO()
        Image.fromarray(RGB).save(buf, format=fmt)
        out = message_to_rgb(SimpleNamespace(format=fmt.lower(), data=buf.getvalue()))
        assert out.shape == RGB.shape
        if fmt == "PNG":
            np.testing.assert_array_equal(out, RGB)
    with pytest.raises(ImageMessageError) as error:
        compressed_to_rgb(SimpleNamespace(format="jpeg", data=b"not a jpeg"))
    assert error.value.kind == "undecodable compressed image"
    assert "not a known image format" in str(error.value)
    assert "BytesIO" not in str(error.value)  # Pillow's text named an object address
    with pytest.raises(ImageMessageError, match="no data"):
        compressed_to_rgb(SimpleNamespace(format="jpeg", data=b""))


def test_compressed_depth_images_are_named() -> None:
    """compressed_depth_image_transport's format (a 12-byte header, then a 16-bit PNG) was
    called undecodable data; it is a depth image, which place recognition does not use."""
    buf = io.BytesIO()
    Image.fromarray(np.full((4, 4), 900, np.uint16)).save(buf, format="PNG")
    with pytest.raises(ImageMessageError) as error:
        compressed_to_rgb(SimpleNamespace(format="16UC1; compressedDepth",
                                          data=bytes(12) + buf.getvalue()))
    assert error.value.kind == "unsupported encoding"
    assert "'16UC1; compressedDepth' is a depth image" in str(error.value)
    assert "colour or grey images" in str(error.value)


@pytest.mark.parametrize("pad", [0, 3])
def test_eight_bit_messages_pass_as_they_are(pad: int) -> None:
    """rgb8 / bgr8 / mono8 go to the model in their own channel order (reordered after the
    resize); they describe the same as the RGB conversion. Others are converted to RGB."""
    from vpr_edge.images import as_rgb_frame
    from vpr_edge.ros_image import message_to_frame

    bgr = np.ascontiguousarray(RGB[..., ::-1])
    for encoding, pixels, order in [("rgb8", RGB, "RGB"), ("bgr8", bgr, "BGR"),
                                    ("8UC3", bgr, "BGR"), ("mono8", RGB[..., 0], "RGB")]:
        message = msg(np.ascontiguousarray(pixels), encoding, pad)
        frame, got_order = message_to_frame(message)
        assert got_order == order
        np.testing.assert_array_equal(frame, pixels)  # no conversion on the full frame
        np.testing.assert_array_equal(as_rgb_frame(frame, order), image_to_rgb(message))
    rgba = np.dstack([RGB, np.full(RGB.shape[:2], 9, np.uint8)])
    frame, order = message_to_frame(msg(rgba, "rgba8", pad))
    assert order == "RGB"
    np.testing.assert_array_equal(frame, RGB)
    jpeg = io.BytesIO()
    Image.fromarray(RGB).save(jpeg, format="PNG")
    frame, order = message_to_frame(SimpleNamespace(format="png", data=jpeg.getvalue()))
    assert order == "RGB"
    np.testing.assert_array_equal(frame, RGB)
