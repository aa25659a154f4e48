"""Decode, check and resize camera frames (numpy + Pillow; no torch).

Every path into a model goes through here, in training, export validation and on the robot,
so all of them resize the same way. Frames are ``uint8`` arrays: ``HxWx3`` (RGB, or BGR when
asked) or ``HxW`` mono. Anything else is refused with an :class:`InvalidInputError` that says
what was wrong and what to pass instead.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Union

import numpy as np

from .errors import ImageDecodeError, InvalidInputError

PathLike = Union[str, "os.PathLike[str]"]

#: Largest frame side accepted (pixels); bigger frames are almost certainly a mistake.
MAX_SIDE = 16384
#: Colour orders a caller can declare for a 3-channel frame.
COLOUR_ORDERS = ("RGB", "BGR")


#: Why Pillow refused a huge image file (its decompression-bomb pixel limit, not MAX_SIDE).
_TOO_MANY_PIXELS = ("Pillow refuses image files of that many pixels (a guard against "
                    "decompression bombs); decode it yourself and pass the array, or downscale "
                    "the file")


def load_image(path: PathLike, *, scale_16bit: bool = True) -> np.ndarray:
    """Read an image file as ``uint8 HxWx3`` RGB, turned upright as its EXIF orientation says
    (as ``cv2.imread`` does). 16-bit grey pixels keep their top 8 bits (``>> 8``), as 16-bit
    colour ones do and as 16-bit ROS images do: a thermal camera's full range maps to 0..255,
    a depth image in millimetres comes out nearly black (``scale_16bit=False`` refuses them
    instead). 32-bit and float pixels are refused (converting would clip them).

    Raises :class:`ImageDecodeError` for a missing, unreadable, truncated or non-image file.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        # opened from a file object, not by name: Pillow maps an uncompressed file it opens
        # by name, and Pillow 13 lays a turned TIFF (EXIF orientation 5-8) out with the
        # turned size there, scrambled (cosine 0.25 to the upright frame)
        with open(path, "rb") as fh, Image.open(fh) as img:
            return _rgb_of(img, str(path), scale_16bit)
    except FileNotFoundError as exc:
        raise ImageDecodeError(f"{path}: image file not found") from exc
    except IsADirectoryError as exc:
        raise ImageDecodeError(f"{path}: a folder, not an image file (give the image files "
                               "in it)") from exc
    except PermissionError as exc:
        raise ImageDecodeError(f"{path}: no permission to read the image file; run as a user "
                               "who may read it, or chmod a+r it") from exc
    except ImageDecodeError:  # _rgb_of's own, complete message (16-bit pixels, size)
        raise
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"{path}: {exc}; {_TOO_MANY_PIXELS}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        if getattr(exc, "errno", None) == errno.ELOOP:
            raise ImageDecodeError(f"{path}: a loop of symbolic links (a link to itself, or "
                                   "links that name each other); point it at the image file "
                                   "or remove it") from exc
        if isinstance(exc, UnidentifiedImageError) and _is_tiff(path):
            raise ImageDecodeError(
                f"{path}: a TIFF whose pixels Pillow cannot read (32-bit or float colour, or an "
                "unusual layout); save the frames as 8-bit (or 16-bit) images") from exc
        raise ImageDecodeError(
            f"{path}: cannot decode image ({exc}); the file is truncated, damaged or not an "
            "image (JPEG/PNG/BMP/... expected)"
        ) from exc


def _is_tiff(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
    except OSError:
        return False


def decode_image(data: bytes, *, scale_16bit: bool = True) -> np.ndarray:
    """Decode encoded image bytes (JPEG, PNG, ...) to ``uint8 HxWx3`` RGB, turned upright as
    their EXIF orientation says; 16-bit, 32-bit and float pixels as in :func:`load_image`
    (``>> 8`` for 16-bit grey is also what the PNGs ROS's ``compressed`` transport makes of
    a ``mono16`` camera need)."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            return _rgb_of(img, f"{len(data)} bytes of image data", scale_16bit)
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"{exc}; {_TOO_MANY_PIXELS}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        # (Pillow's "cannot identify image file <_io.BytesIO object at 0x...>" names no file)
        why = "not a known image format" if isinstance(exc, UnidentifiedImageError) else exc
        raise ImageDecodeError(
            f"cannot decode {len(data)} bytes of image data ({why}); expected a complete "
            "JPEG or PNG"
        ) from exc


#: Pillow modes of 16-bit mono pixels, and all those (with 32-bit ones) that its RGB
#: conversion clips rather than scales
_16BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_WIDE_MODES = (*_16BIT_MODES, "I", "F")


def _rgb_of(img, what: str, scale_16bit: bool = False) -> np.ndarray:
    """An opened Pillow image as ``uint8 HxWx3`` RGB: checked, then decoded."""
    if max(img.size) > MAX_SIDE:
        raise ImageDecodeError(f"{what}: {img.size[0]}x{img.size[1]} pixels exceeds the "
                               f"{MAX_SIDE}-pixel limit per side")
    # (Pillow before 10.4 opens a 16-bit grey PNG as "I", 32-bit, with values up to 65535,
    # and a 16-bit PGM still comes as "I": formats with nothing wider than 16 bits)
    if scale_16bit and (img.mode in _16BIT_MODES
                        or (img.mode == "I" and img.format in ("PNG", "PPM"))):
        img.load()
        top = (np.asarray(_upright(img)).clip(0, 65535) >> 8).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(top[:, :, None], 3, axis=2))
    if img.mode in _WIDE_MODES:  # 16-bit mono (depth, thermal) or float pixels
        raise ImageDecodeError(
            f"{what}: {img.mode!r} pixels (16-bit, 32-bit or float), but vpr-edge takes 8-bit "
            "frames and converting would clip them; save the frames as 8-bit images, or "
            "load them yourself and scale to 0..255 (e.g. np.asarray(Image.open(path)) >> 8 "
            "for 16 bits), then .astype(np.uint8)")
    img.load()
    upright = _upright(img)  # (convert() copies even an RGB image: 625 MB more for 16k x 10k)
    return np.asarray(upright if upright.mode == "RGB" else upright.convert("RGB"))


#: The EXIF tag that says how a camera's pixels must be turned to be upright.
EXIF_ORIENTATION = 0x0112


def _upright(img):
    """``img`` turned as its EXIF orientation says (phones and many cameras store pixels as
    the sensor read them and record the turn). ``cv2.imread`` and image viewers apply it, so
    a map built from files must too, or frames of the same scene arrive turned by 90 degrees
    depending on how they were loaded. Images without the tag come back as they are."""
    import struct

    from PIL import ImageOps

    try:
        orientation = img.getexif().get(EXIF_ORIENTATION, 1)
        return img if orientation in (1, None) else ImageOps.exif_transpose(img)
    except (OSError, ValueError, SyntaxError, TypeError, KeyError, struct.error):
        return img  # a damaged EXIF block is no reason to refuse the pixels


def as_rgb_frame(frame: np.ndarray, colour_order: str = "RGB") -> np.ndarray:
    """Check a frame and return it as a C-contiguous ``uint8 HxWx3`` RGB array.

    Accepts ``uint8`` ``HxWx3`` in ``colour_order`` (``"RGB"`` or ``"BGR"``), ``HxWx1`` or
    ``HxW`` mono. Float frames are refused (convert with ``np.clip(x * 255, 0, 255)
    .astype(np.uint8)`` if they are 0..1), as are empty or absurdly large frames.
    """
    frame, layout = checked_frame(frame, colour_order)
    if layout == "mono":
        return np.repeat(frame[:, :, None], 3, axis=2)
    if layout == "BGR":
        return reorder_channels(frame)
    return frame


def reorder_channels(pixels: np.ndarray, order: tuple[int, ...] = (2, 1, 0)) -> np.ndarray:
    """A new C-contiguous ``uint8 HxWx3`` array of ``pixels[:, :, order]`` (default: BGR <->
    RGB). numpy's ``pixels[:, :, ::-1]`` copy or fancy indexing takes 2-3 ms for a 640x480
    frame; OpenCV (when installed) takes 0.02 ms, three channel copies 0.4 ms."""
    cv2 = _opencv()
    if (cv2 is not None and tuple(order) == (2, 1, 0) and pixels.ndim == 3
            and pixels.shape[2] == 3 and pixels.flags.c_contiguous):
        return cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
    out = np.empty((*pixels.shape[:2], 3), dtype=np.uint8)
    for i, channel in enumerate(order):
        out[:, :, i] = pixels[:, :, channel]
    return out


def prepare_frame(frame: np.ndarray, colour_order: str, height: int, width: int,
                  model_order: str = "RGB", out: np.ndarray | None = None) -> np.ndarray:
    """A frame as a model takes it: checked (:func:`checked_frame`), resized to ``height x
    width``, in ``model_order`` (``uint8 HxWx3``; written into ``out`` when given).

    Channels are reordered (BGR <-> RGB) or repeated (mono) after the resize, at the model's
    size, not on the full frame: a 640x480 BGR or mono camera frame costs no full-size copy.
    """
    frame, layout = checked_frame(frame, colour_order)
    if layout == model_order:
        return resize(frame, height, width, out=out)
    small = resize(frame, height, width)
    if layout != "mono":
        converted = reorder_channels(small)
        if out is None:
            return converted
        out[...] = converted
        return out
    if out is None:
        out = np.empty((height, width, 3), dtype=np.uint8)
    out[...] = small[:, :, None]
    return out


def checked_frame(frame: np.ndarray, colour_order: str = "RGB") -> tuple[np.ndarray, str]:
    """Check a frame; return it (C-contiguous; a copy only if it was not) with its layout:
    ``"RGB"`` or ``"BGR"`` (``HxWx3``, as ``colour_order`` declares) or ``"mono"`` (``HxW``).
    Raises :class:`InvalidInputError` as :func:`as_rgb_frame` describes."""
    if colour_order not in COLOUR_ORDERS:
        raise InvalidInputError(
            f"colour_order must be one of {COLOUR_ORDERS}, got {colour_order!r}"
        )
    if not isinstance(frame, np.ndarray):
        raise InvalidInputError(
            f"a frame must be a numpy array (or a file path), got {type(frame).__name__}"
        )
    if frame.dtype != np.uint8:
        hint = ""
        if np.issubdtype(frame.dtype, np.floating):
            hint = (
                "; for 0..1 floats use np.clip(frame * 255, 0, 255).astype(np.uint8) "
                "after checking for NaN/inf"
            )
        elif frame.dtype == np.uint16:
            hint = "; for 16-bit mono use (frame >> 8).astype(np.uint8) or scale to your range"
        raise InvalidInputError(f"frames must be uint8, got {frame.dtype}{hint}")
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[:, :, 0]
    if frame.ndim != 2 and (frame.ndim != 3 or frame.shape[2] != 3):
        hint = ""
        if frame.ndim == 3 and frame.shape[2] == 4:
            hint = "; for RGBA/BGRA (ROS rgba8, bgra8) drop the alpha: frame[:, :, :3]"
        elif frame.ndim == 3 and frame.shape[0] in (1, 3):
            hint = "; for a channels-first CxHxW array use frame.transpose(1, 2, 0)"
        raise InvalidInputError(
            f"a frame must be HxWx3 (colour) or HxW (mono), got shape {frame.shape}{hint}"
        )
    height, width = frame.shape[:2]
    if height == 0 or width == 0:
        raise InvalidInputError(f"empty frame of shape {frame.shape}")
    if max(height, width) > MAX_SIDE:
        raise InvalidInputError(
            f"frame of {width}x{height} pixels exceeds the {MAX_SIDE}-pixel limit per side"
        )
    return np.ascontiguousarray(frame), "mono" if frame.ndim == 2 else colour_order


def resize(frame: np.ndarray, height: int, width: int, *, out: np.ndarray | None = None
           ) -> np.ndarray:
    """Resize an ``uint8 HxWx3`` (or ``HxW`` mono) frame to ``height x width``.

    Shrinking averages the source pixels each output pixel covers (an area/box filter, so
    nothing aliases); enlarging is bilinear. OpenCV does it when it is installed (the
    ``verify`` extra; about 20x faster than Pillow for a 640x480 frame), Pillow otherwise.
    For a whole-number shrink (640x480 -> 320x240) both average exactly the pixels each
    output covers and agree to rounding (tested). For other factors Pillow's box filter
    weighs a source pixel that an output pixel covers in part fully or not at all, where
    OpenCV weighs it by the part covered: a mean difference of 1-1.6 grey levels, up to
    75-86 at sharp edges (321x241, 330x250 frames). A frame that shrinks one way and grows
    the other (a 200x640 portrait frame, a 10000x100 panorama, to 320x240) is averaged along
    the shrinking side and enlarged bilinearly along the other (OpenCV: ``INTER_AREA`` on
    that side, then ``INTER_LINEAR``; Pillow: its bilinear filter, which widens along a
    shrinking side): mean differences 0.5-4.9 grey levels, up to about 36. Descriptors
    follow (the same frame scored 0.92-0.998 cosine with the demo model; 0.983-0.988 for
    those three shapes, 0.89-0.95 before OpenCV averaged first). Training, export
    validation and the robot all call this function; for identical pixels everywhere,
    install OpenCV on all of them
    (``Localizer.info()["preprocessing"]["resizer"]`` says which one runs; a map records
    the library that resized its frames, and ``Localizer`` warns when it differs).

    ``out``: a C-contiguous ``uint8 height x width x 3`` array to write the result into (and
    return), e.g. a row of the model's input batch: OpenCV then writes it there directly.
    """
    if out is not None and (out.shape != (height, width, 3) or out.dtype != np.uint8
                            or not out.flags.c_contiguous):
        raise ValueError(f"out must be a C-contiguous uint8 array of shape {(height, width, 3)}"
                         f", got {out.dtype} {out.shape}")
    if frame.shape[0] == height and frame.shape[1] == width:
        if out is None:
            return frame
        out[...] = frame
        return out
    shrinking = height <= frame.shape[0] and width <= frame.shape[1]
    cv2 = _opencv()
    if cv2 is not None:
        if not shrinking and (height < frame.shape[0] or width < frame.shape[1]):
            # shrinks one way, grows the other: average along the shrinking side first
            # (INTER_LINEAR alone samples it, aliasing a 10000x100 panorama badly)
            frame = cv2.resize(frame, (min(width, frame.shape[1]), min(height, frame.shape[0])),
                               interpolation=cv2.INTER_AREA)
        flag = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        result = cv2.resize(frame, (width, height), dst=out, interpolation=flag)
    else:
        from PIL import Image

        flag = Image.BOX if shrinking else Image.BILINEAR
        result = np.asarray(Image.fromarray(frame).resize((width, height), flag))
    if out is None:
        return result
    if not np.may_share_memory(result, out):  # Pillow (OpenCV wrote into out)
        out[...] = result
    return out


def resizer_name() -> str:
    """Which library :func:`resize` uses here (``"opencv"`` or ``"pillow"``)."""
    return "opencv" if _opencv() is not None else "pillow"


_CV2: list = []


def _opencv():
    """OpenCV's module, or None when it is not installed (looked up once)."""
    if not _CV2:
        try:
            import cv2
        except ImportError:
            cv2 = None
        _CV2.append(cv2)
    return _CV2[0]
