from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vpr_edge.errors import ImageDecodeError, InvalidInputError
from vpr_edge.images import as_rgb_frame, decode_image, load_image, resize


def test_load_real_jpeg(corridor_dir: Path) -> None:
    img = load_image(corridor_dir / "ref" / "0000000.jpg")
    assert img.dtype == np.uint8 and img.shape == (120, 160, 3)
    assert 10 < img.mean() < 245 and img.std() > 5


def test_truncated_and_missing_files_raise_decode_error(tmp_path: Path, corridor_dir: Path) -> None:
    data = (corridor_dir / "ref" / "0000000.jpg").read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageDecodeError, match="cut.jpg"):
        load_image(cut)
    with pytest.raises(ImageDecodeError, match="not found"):
        load_image(tmp_path / "absent.jpg")
    with pytest.raises(ImageDecodeError, match="a folder, not an image file"):
        load_image(tmp_path)  # was "truncated, damaged or not an image"
    (tmp_path / "loop.jpg").symlink_to("loop.jpg")  # also "truncated, damaged or not an ..."
    with pytest.raises(ImageDecodeError, match="loop.jpg: a loop of symbolic links"):
        load_image(tmp_path / "loop.jpg")
    text = tmp_path / "notes.jpg"
    text.write_text("hello")
    with pytest.raises(ImageDecodeError, match="cannot decode"):
        load_image(text)
    with pytest.raises(ImageDecodeError):
        decode_image(data[:100])


def test_bgr_and_mono_frames_become_rgb() -> None:
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 0] = 200
    assert as_rgb_frame(rgb[:, :, ::-1], "BGR")[0, 0].tolist() == [200, 0, 0]
    mono = np.full((4, 5), 7, np.uint8)
    assert as_rgb_frame(mono).shape == (4, 5, 3)
    assert as_rgb_frame(mono[:, :, None])[1, 1].tolist() == [7, 7, 7]
    strided = np.zeros((8, 10, 3), np.uint8)[::2, ::2]
    assert as_rgb_frame(strided).flags["C_CONTIGUOUS"]


@pytest.mark.parametrize(
    "frame, words",
    [
        (np.zeros((4, 5, 3), np.float32), "uint8"),
        (np.zeros((4, 5), np.uint16), "16-bit"),
        (np.zeros((4, 5, 4), np.uint8), "drop the alpha"),
        (np.zeros((3, 5, 6), np.uint8), "transpose"),
        (np.zeros((0, 5, 3), np.uint8), "empty"),
        (np.zeros((2, 4, 5, 3), np.uint8), "HxWx3"),
        ([[1, 2], [3, 4]], "numpy array"),
    ],
)
def test_bad_frames_are_refused(frame: object, words: str) -> None:
    with pytest.raises(InvalidInputError, match=words):
        as_rgb_frame(frame)  # type: ignore[arg-type]


def test_resize_is_antialiased_and_exact_size() -> None:
    checker = (np.indices((64, 64)).sum(axis=0) % 2 * 255).astype(np.uint8)
    small = resize(np.repeat(checker[:, :, None], 3, axis=2), 8, 16)
    assert small.shape == (8, 16, 3)
    # an aliasing resize would return pure black/white pixels; antialiasing gives grey
    assert 100 < small.mean() < 155 and small.std() < 40


@pytest.mark.parametrize("resizer", ["opencv", "pillow"])
@pytest.mark.parametrize("size", [(480, 640), (240, 320), (120, 160)])
def test_resize_into_a_batch_row(size: tuple[int, int], resizer: str,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from vpr_edge import images

    if resizer == "opencv":
        pytest.importorskip("cv2")
    else:
        monkeypatch.setattr(images, "_CV2", [None])
    frame = np.random.default_rng(1).integers(0, 256, (*size, 3), dtype=np.uint8)
    batch = np.zeros((2, 240, 320, 3), dtype=np.uint8)
    got = resize(frame, 240, 320, out=batch[1])
    assert np.shares_memory(got, batch) and not batch[0].any()
    np.testing.assert_array_equal(batch[1], resize(frame, 240, 320))
    with pytest.raises(ValueError, match="C-contiguous uint8"):
        resize(frame, 240, 320, out=batch[:, :, :, 0])


@pytest.mark.parametrize("size", [(480, 640), (540, 960), (100, 130)])
def test_opencv_and_pillow_resizers_agree(gardens_point_dir: Path, size: tuple[int, int],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("cv2")
    from PIL import Image

    from vpr_edge import images

    src = load_image(gardens_point_dir / "day_left" / "Image010.jpg")
    src = np.asarray(Image.fromarray(src).resize(size[::-1]))
    with_cv2 = resize(src, 240, 320).astype(float)
    monkeypatch.setattr(images, "_CV2", [None])
    assert images.resizer_name() == "pillow"
    with_pil = resize(src, 240, 320).astype(float)
    assert with_cv2.shape == with_pil.shape == (240, 320, 3)
    assert np.abs(with_cv2 - with_pil).mean() < 1.0


@pytest.mark.parametrize("shape", [(100, 10000), (4320, 50), (640, 200)])
def test_a_frame_shrinking_one_way_and_growing_the_other_is_averaged_not_sampled(
        shape: tuple[int, int], monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenCV resized such frames with INTER_LINEAR alone, which samples the shrinking side:
    a 10000x100 panorama of a real frame came out 21 grey levels from Pillow's on average
    (up to 165). Now it averages that side first, as Pillow's filter does (4.9)."""
    pytest.importorskip("cv2")
    from vpr_edge import images

    texture = np.random.default_rng(5).integers(0, 256, (*shape, 3), dtype=np.uint8)
    with_cv2 = resize(texture, 240, 320).astype(float)
    monkeypatch.setattr(images, "_CV2", [None])
    with_pil = resize(texture, 240, 320).astype(float)
    # (on this noise, mean differences 3.4-7.9 grey levels; 24-39 before)
    assert np.abs(with_cv2 - with_pil).mean() < 12
    assert with_cv2.std() < 40  # noise averaged towards grey (std 11-35), not sampled (43-49)


@pytest.mark.parametrize("mode, value, scaled, suffix", [
    ("I;16", 40000, True, ".png"), ("I;16", 40000, True, ".pgm"),  # (a 16-bit PGM opens as "I")
    ("I", 70000, False, ".tif"), ("F", 0.5, False, ".tif")])
def test_wide_pixel_files_are_scaled_or_refused_not_clipped(tmp_path: Path, mode: str, value,
                                                            scaled: bool, suffix: str) -> None:
    """Pillow's RGB conversion clips 16-bit and float pixels (a 16-bit mono PNG came back
    almost all white, a float TIFF of 0.5 all black). 16-bit grey keeps its top 8 bits, as
    16-bit ROS images and Pillow's own 16-bit colour do (files were refused, so `map build`
    of a 16-bit grey camera's PNGs failed on every frame); 32-bit and float are refused."""
    from PIL import Image

    path = tmp_path / f"frame{suffix}"
    Image.new(mode, (32, 24), value).save(path)
    if scaled:
        for image in (load_image(path), decode_image(path.read_bytes())):
            assert image.shape == (24, 32, 3) and (image == 40000 >> 8).all()
    refusals = [lambda: load_image(path, scale_16bit=False),
                lambda: decode_image(path.read_bytes(), scale_16bit=False)]
    for refused in refusals if scaled else [lambda: load_image(path),
                                            lambda: decode_image(path.read_bytes())]:
        with pytest.raises(ImageDecodeError, match="16-bit, 32-bit or float") as raised:
            refused()
        # its own message, not "cannot decode ...: truncated, damaged" (the file is fine)
        assert "truncated" not in str(raised.value) and "expected a complete" not in \
            str(raised.value) and str(raised.value).count(str(path)) <= 1


def test_huge_image_files_are_decode_errors(tmp_path: Path, monkeypatch) -> None:
    """Beyond Pillow's decompression-bomb limit or our side limit: an ImageDecodeError
    (a VprEdgeError), not Pillow's own exception; nothing is decoded."""
    from PIL import Image

    from vpr_edge import images

    path = tmp_path / "wide.png"
    Image.new("RGB", (400, 10)).save(path)
    monkeypatch.setattr(images, "MAX_SIDE", 300)
    with pytest.raises(ImageDecodeError, match="300-pixel limit") as raised:
        load_image(path)
    assert "truncated" not in str(raised.value)
    monkeypatch.setattr(images, "MAX_SIDE", 16384)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4000 pixels: over twice that
    with pytest.raises(ImageDecodeError, match="decompression bomb") as raised:
        load_image(path)
    assert "Pillow refuses image files of that many pixels" in str(raised.value)
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        decode_image(path.read_bytes())


@pytest.mark.parametrize("resizer", ["opencv", "pillow"])
@pytest.mark.parametrize("model_order", ["RGB", "BGR"])
def test_prepare_frame_converts_channels_after_resizing(resizer: str, model_order: str,
                                                        monkeypatch) -> None:
    """Reordering or repeating channels after the resize gives the very pixels of doing it
    first (on the full frame, a copy the size of the camera frame), in every combination."""
    from vpr_edge import images

    if resizer == "opencv":
        pytest.importorskip("cv2")
    else:
        monkeypatch.setattr(images, "_CV2", [None])
    rgb = np.random.default_rng(3).integers(0, 256, (97, 131, 3), dtype=np.uint8)
    mono = rgb[:, :, 1].copy()

    def first_convert(frame: np.ndarray, order: str) -> np.ndarray:
        small = resize(as_rgb_frame(frame, order), 24, 32)
        return small[:, :, ::-1] if model_order == "BGR" else small

    for frame, order in [(rgb, "RGB"), (np.ascontiguousarray(rgb[:, :, ::-1]), "BGR"),
                         (rgb[:, :, ::-1], "BGR"), (mono, "RGB"), (mono[:, :, None], "BGR")]:
        want = first_convert(frame, order)
        got = images.prepare_frame(frame, order, 24, 32, model_order)
        np.testing.assert_array_equal(got, want)
        out = np.empty((24, 32, 3), np.uint8)
        assert images.prepare_frame(frame, order, 24, 32, model_order, out=out) is out
        np.testing.assert_array_equal(out, want)


def _turned_jpeg(upright: np.ndarray, path: Path) -> bytes:
    """A JPEG of ``upright`` as a phone stores it held sideways: the pixels turned 90 degrees
    counter-clockwise and EXIF orientation 6 ("turn 90 degrees clockwise to show")."""
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.ascontiguousarray(np.rot90(upright, 1))).save(
        path, "JPEG", quality=95, exif=exif)
    return path.read_bytes()


def test_exif_orientation_is_applied_as_opencv_does(tmp_path: Path, corridor_dir: Path) -> None:
    upright = load_image(corridor_dir / "ref" / "0000000.jpg")  # 120x160, no orientation
    data = _turned_jpeg(upright, tmp_path / "sideways.jpg")
    for got in (load_image(tmp_path / "sideways.jpg"), decode_image(data)):
        assert got.shape == upright.shape
        assert np.abs(got.astype(int) - upright).mean() < 4  # JPEG re-encoding only
    cv2 = pytest.importorskip("cv2")
    by_opencv = cv2.imread(str(tmp_path / "sideways.jpg"))[:, :, ::-1]
    assert by_opencv.shape == upright.shape
    assert np.abs(by_opencv.astype(int) - load_image(tmp_path / "sideways.jpg")).mean() < 2


def test_older_pillows_16bit_png_mode_is_scaled_too() -> None:
    """Pillow before 10.4 opens a 16-bit grey PNG in mode "I" (32-bit), not "I;16": the
    compressed-image path must scale it as well."""
    from PIL import Image

    from vpr_edge import images

    wide = np.array([[0, 255, 256, 40000, 65535]], dtype=np.int32)
    img = Image.fromarray(wide, mode="I")
    img.format = "PNG"
    out = images._rgb_of(img, "test", scale_16bit=True)
    assert out[0, :, 0].tolist() == [0, 0, 1, 156, 255] and out.shape == (1, 5, 3)


def test_an_image_file_it_may_not_read_is_not_called_damaged(tmp_path: Path, monkeypatch
                                                             ) -> None:
    """It said "the file is truncated, damaged or not an image"."""
    from PIL import Image

    path = tmp_path / "frame.png"
    Image.new("RGB", (8, 6)).save(path)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Image, "open", denied)
    with pytest.raises(ImageDecodeError, match="no permission to read.*chmod a\\+r") as raised:
        load_image(path)
    assert "damaged" not in str(raised.value)


@pytest.mark.parametrize("mode", ["L", "I;16"])
def test_a_turned_uncompressed_tiff_loads_upright_from_its_path(tmp_path: Path, mode: str) -> None:
    """Pillow 13 maps an uncompressed TIFF it opens by name, and laid a grey or 16-bit one
    with EXIF orientation 6 out at the turned size: scrambled pixels (cosine 0.25 to the
    upright frame), while the same bytes decoded right."""
    from PIL import Image

    rng = np.random.default_rng(0)
    upright = rng.integers(0, 256, (30, 50), dtype=np.uint8)
    stored = np.ascontiguousarray(np.rot90(upright, 1))  # a camera held sideways
    exif = Image.Exif()
    exif[0x0112] = 6  # "turn 90 degrees clockwise to show"
    pixels = stored if mode == "L" else stored.astype(np.uint16) << 8
    path = tmp_path / "sideways.tif"
    Image.fromarray(pixels).save(path, exif=exif)  # uncompressed: Pillow's default
    want = np.repeat(upright[:, :, None], 3, axis=2)
    assert np.array_equal(load_image(path), want)
    assert np.array_equal(decode_image(path.read_bytes()), want)


def test_a_tiff_of_pixels_pillow_cannot_read_is_named_as_such(tmp_path: Path) -> None:
    """A float32 RGB TIFF (OpenCV writes them) was "truncated, damaged or not an image"."""
    cv2 = pytest.importorskip("cv2")
    path = tmp_path / "float.tif"
    assert cv2.imwrite(str(path), np.random.default_rng(0).random((8, 8, 3), np.float32))
    with pytest.raises(ImageDecodeError, match=r"float\.tif: a TIFF whose pixels Pillow cannot "
                                               r"read \(32-bit or float colour"):
        load_image(path)
