"""Turn the many shapes an image can arrive in into one RGB :class:`PIL.Image.Image`.

Vision processors (CLIP, ViT, LLaVA...) all expect RGB PIL images, but callers hand
us paths, raw bytes off an HTTP request, already-open PIL images and numpy arrays in
assorted dtypes and channel counts. :func:`load_image` normalises all of them and
turns every way they can be wrong into :class:`~ipfs_accelerate._exceptions.InvalidInput`
before any model work starts.
"""

from __future__ import annotations

import io
import logging
import os
import struct
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, TypeAlias

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .._exceptions import InvalidInput
from .remote import refuse_remote_path

__all__ = ["DEFAULT_MAX_SIDE", "ImageSource", "load_image", "load_images"]

logger = logging.getLogger(__name__)

#: Longest side an image is shrunk to by default. Processors resize to a few hundred
#: pixels anyway; this only bounds the memory a huge photo can take on the way there.
DEFAULT_MAX_SIDE = 4096

#: What :func:`load_image` accepts.
ImageSource: TypeAlias = str | os.PathLike | bytes | bytearray | memoryview | Image.Image | np.ndarray

# 16-bit and 32-bit integer greyscale modes: PIL's own convert("RGB") clips them at 255
# (a 16-bit scan comes out almost all white), so they are rescaled by hand.
_WIDE_INT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_WHITE = (255, 255, 255)


def load_image(source: Any, *, max_side: int = DEFAULT_MAX_SIDE) -> Image.Image:
    """Load one image as an RGB PIL image.

    Args:
        source: a file path (``str`` or ``os.PathLike``), the raw bytes of an encoded
            image file (``bytes``, ``bytearray`` or ``memoryview``), a PIL image, or a
            numpy array shaped ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)``
            (channels last) of dtype ``uint8``, or floating point with values in [0, 1].
        max_side: the longest side of the returned image; larger images are shrunk,
            keeping their aspect ratio. Smaller images are never enlarged.

    Returns:
        A new, fully decoded RGB image, independent of any file (the caller's PIL image
        is not modified). EXIF orientation is applied; transparency is composited on
        white; palette, greyscale, 16-bit, CMYK and other modes are converted to RGB.

    Raises:
        InvalidInput: the path does not exist; the bytes are not an image, or are
            corrupt or truncated; the image is 0 pixels wide or high; it trips PIL's
            decompression-bomb limit; the array has a bad shape, dtype or values;
            the source is of an unsupported type; or ``max_side`` is not a positive int.
    """
    _check_max_side(max_side)
    if isinstance(source, Image.Image):
        image = _from_pil(source)
    elif isinstance(source, np.ndarray):
        image = _from_array(source)
    elif isinstance(source, (str, os.PathLike)):
        refuse_remote_path(source, what="image")
        image = _from_path(source, max_side)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise InvalidInput("image data is empty (0 bytes)")
        image = _decode(io.BytesIO(data), "image data", max_side)
    else:
        raise InvalidInput(
            f"unsupported image source of type {type(source).__name__}; expected a "
            "file path, encoded image bytes, a PIL image or a numpy array"
        )
    return _bound_size(image, max_side)


def load_images(sources: Sequence[Any], *, max_side: int = DEFAULT_MAX_SIDE) -> list[Image.Image]:
    """Load several images with :func:`load_image`.

    Args:
        sources: a list or tuple of anything :func:`load_image` accepts, or a numpy
            array shaped ``(N, H, W[, C])`` holding a batch of images.
        max_side: passed to :func:`load_image` for every image.

    Returns:
        The RGB images, in order. Their sizes may differ.

    Raises:
        InvalidInput: ``sources`` is empty or not a list; or an item is invalid, in
            which case the message starts with that item's index.
    """
    if isinstance(sources, np.ndarray):
        if sources.ndim not in (3, 4):
            raise InvalidInput(f"an image batch array must be shaped (N, H, W) or (N, H, W, C), got {sources.shape}")
        items: Sequence[Any] = list(sources)
    elif isinstance(sources, (list, tuple)):
        items = sources
    else:
        # A lone str/bytes/image is a sequence-like trap (iterating a path gives characters).
        raise InvalidInput(
            f"load_images expects a list of images, got {type(sources).__name__}; use load_image for a single image"
        )
    if len(items) == 0:
        raise InvalidInput("no images given: the list of images is empty")
    images = []
    for index, item in enumerate(items):
        try:
            images.append(load_image(item, max_side=max_side))
        except InvalidInput as exc:
            raise InvalidInput(f"image {index}: {exc}") from exc
    return images


# --------------------------------------------------------------------------- sources


def _check_max_side(max_side: Any) -> None:
    if isinstance(max_side, bool) or not isinstance(max_side, (int, np.integer)) or max_side < 1:
        raise InvalidInput(f"max_side must be a positive integer, got {max_side!r}")


def _from_path(source: str | os.PathLike, max_side: int) -> Image.Image:
    path = Path(os.fspath(source))
    if not path.exists():
        raise InvalidInput(f"image file not found: {path}")
    if not path.is_file():
        raise InvalidInput(f"image path is not a file: {path}")
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise InvalidInput(f"cannot read image file {path}: {exc}") from exc
    with handle:
        return _decode(handle, f"image file {path}", max_side)


def _decode(stream: IO[bytes], what: str, max_side: int) -> Image.Image:
    """Open, fully decode and normalise an encoded image read from ``stream``."""
    try:
        # PIL only warns between MAX_IMAGE_PIXELS and twice that; a header claiming that
        # many pixels is far more likely a decompression bomb than a real photo, so the
        # warning is promoted to an error and reported like the hard limit.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(stream) as opened:
                _check_dimensions(opened.size, what)
                if opened.format == "JPEG" and max(opened.size) > max_side:
                    # JPEG can decode straight at 1/2, 1/4 or 1/8 scale: a huge photo
                    # then never exists at full size in memory. draft() keeps the
                    # result at least max_side, so the exact resize still happens later.
                    opened.draft(None, (max_side, max_side))
                # Image.open only reads the header; load() forces the full decode so
                # truncated or corrupt pixel data is detected here, not in a processor.
                opened.load()
                return _to_rgb(_apply_exif_orientation(opened))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidInput(f"{what} is too large to decode safely (possible decompression bomb): {exc}") from exc
    except UnidentifiedImageError as exc:
        raise InvalidInput(f"{what} is not a recognised image format") from exc
    except InvalidInput:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, struct.error) as exc:
        # PIL reports truncation and corruption through this grab-bag of types
        # (struct.error comes from plugins parsing malformed headers).
        raise InvalidInput(f"{what} is corrupt or truncated and cannot be decoded: {exc}") from exc


def _from_pil(source: Image.Image) -> Image.Image:
    _check_dimensions(source.size, "image")
    try:
        # A lazily opened image has not decoded its pixels yet; do it now so a truncated
        # file fails here with a clear message.
        source.load()
        return _to_rgb(_apply_exif_orientation(source))
    except InvalidInput:
        raise
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InvalidInput(f"the PIL image cannot be decoded (corrupt or truncated): {exc}") from exc


def _from_array(array: np.ndarray) -> Image.Image:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise InvalidInput(
            f"an image array must be shaped (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) "
            f"with channels last, got shape {array.shape}"
        )
    height, width = array.shape[:2]
    _check_dimensions((width, height), "image array")
    if array.dtype == np.uint8:
        pixels = array
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise InvalidInput("image array contains NaN or infinite values")
        low, high = float(array.min()), float(array.max())
        if low < 0.0 or high > 1.0:
            raise InvalidInput(
                f"a float image array must hold values in [0, 1], got [{low:g}, {high:g}]; scale it or pass uint8"
            )
        pixels = np.rint(array.astype(np.float32) * 255.0).astype(np.uint8)
    else:
        raise InvalidInput(f"an image array must be uint8, or float with values in [0, 1]; got dtype {array.dtype}")
    # fromarray infers L / RGB / RGBA from the shape of uint8 data; it needs C-contiguous
    # memory, which slices and transposes are not.
    image = Image.fromarray(np.ascontiguousarray(pixels))
    return _to_rgb(image)


# --------------------------------------------------------------------------- helpers


def _check_dimensions(size: tuple[int, int], what: str) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise InvalidInput(f"{what} is empty: {width}x{height} pixels")


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    """Rotate/flip per the EXIF orientation tag; always returns a new image."""
    try:
        transposed = ImageOps.exif_transpose(image)
    except Exception as exc:  # noqa: BLE001 - broken EXIF must not reject good pixels
        logger.debug("ignoring unreadable EXIF orientation: %s", exc)
        transposed = None
    return transposed if transposed is not None else image.copy()


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB; transparency is composited on white."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _WIDE_INT_MODES:
        return _wide_grey_to_rgb(image)
    if mode == "F":
        values = np.asarray(image, dtype=np.float32)
        values = np.nan_to_num(values, nan=0.0, posinf=255.0, neginf=0.0)
        # Float images written from [0, 1] data are common; scale them up, else clip.
        if values.size and values.max() <= 1.0:
            values = values * 255.0
        return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8)).convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode in ("P", "L", "RGB") and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_WHITE, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    # L, 1, P, CMYK, YCbCr, LAB, HSV: PIL's conversions are right for these.
    return image.convert("RGB")


def _wide_grey_to_rgb(image: Image.Image) -> Image.Image:
    values = np.asarray(image).astype(np.float64)
    if image.mode == "I" and values.size and values.max() <= 255 and values.min() >= 0:
        scaled = values  # an 8-bit image that merely lives in a 32-bit container
    else:
        scaled = np.clip(values, 0, 65535) / 257.0  # 65535 / 257 == 255 exactly
    return Image.fromarray(np.rint(scaled).astype(np.uint8)).convert("RGB")


def _bound_size(image: Image.Image, max_side: int) -> Image.Image:
    width, height = image.size
    longest = max(width, height)
    if longest <= max_side:
        return image
    scale = max_side / longest
    new_size = (max(1, min(max_side, round(width * scale))), max(1, min(max_side, round(height * scale))))
    # reducing_gap first box-reduces by an integer factor, then LANCZOS finishes: much
    # faster on huge images and visually indistinguishable.
    return image.resize(new_size, Image.Resampling.LANCZOS, reducing_gap=3.0)
