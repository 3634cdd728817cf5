"""Reading pictures: any Pillow mode to 8-bit RGB, EXIF orientation, errors that name the file.

:func:`load_image` is the one function that turns a picture file into the RGB image the models
see, in training and evaluation (:class:`~reference_models.data.refer.ReferDataset`) and in
``python -m reference_models.predict``:

- It decodes the whole file, so a truncated or damaged picture fails here, with a
  :class:`~reference_models.data.errors.CorruptImageError` naming the file, and never later
  as a half-grey image: Pillow's global ``ImageFile.LOAD_TRUNCATED_IMAGES``, which another
  library may have switched on, is held off while decoding.
- :func:`to_rgb` converts every mode by scaling its range onto 0..255, where Pillow's own
  ``convert("RGB")`` clips some (a 16-bit PNG would become white): 16-bit and 32-bit
  greyscale (``I;16``, ``I;16B``, ``I``) by their full range, float (``F``) by [0, 1] when the
  values lie there, CMYK without ink overflow, palettes with their transparency; anything
  with transparency is laid over white, as a viewer shows it.
- ``exif_orientation=True`` turns the picture as its EXIF orientation tag says (as
  Pillow's ``ImageOps.exif_transpose`` does). Predict does this, because the sentence a user
  types describes the picture as their viewer shows it. The REFER datasets do not: their
  annotations and sentences were made on the pixels as stored (see ``docs/guides/datasets.md``).

- A picture of more than :data:`MAX_PIXELS` pixels is refused from its header, before a
  pixel is decoded (:class:`PictureTooLargeError`): a 140 kB PNG can declare 12000 x 12000
  pixels, which decode to 144 MB a channel and take gigabytes on their way to a model.

Colour profiles (ICC) are not applied, as in the COCO toolchain.
"""

from __future__ import annotations

import os
import struct
import threading
import warnings
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageFile

from .errors import CorruptImageError, one_line

__all__ = [
    "ImageHeader",
    "MAX_PIXELS",
    "PictureTooLargeError",
    "read_orientation",
    "load_image",
    "read_header",
    "to_rgb",
    "DECODE_ERRORS",
]

#: The most pixels :func:`load_image` decodes: 8192 x 8192 (64 megapixels; COCO's pictures have
#: under 0.4, a phone's camera 12 to 50). Pillow itself only warns up to 179 megapixels.
MAX_PIXELS = 8192 * 8192

# What Pillow's format plugins raise on damaged bytes (besides OSError and its
# UnidentifiedImageError): parsers use SyntaxError, struct and zlib errors, and index or key
# errors on malformed tables. MemoryError is left alone: it says more about the machine.
DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, IndexError, KeyError, TypeError,
    Image.DecompressionBombError,
)

_ORIENTATION_TAG = 0x0112
# EXIF orientation -> the transpose that shows the picture upright (2-8; 1 is upright already).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_STRICT = threading.Lock()


class PictureTooLargeError(CorruptImageError):
    """A picture whose header declares more pixels than allowed (refused before decoding)."""


class ImageHeader(NamedTuple):
    """What a picture file's header says, read without decoding the pixels.

    Attributes:
        width: stored width in pixels.
        height: stored height.
        mode: the Pillow mode (``"RGB"``, ``"L"``, ``"I;16"``, ...).
        format: the file format (``"JPEG"``, ``"PNG"``, ...).
        orientation: the EXIF orientation (1-8) when the header holds EXIF data, else 1.
    """

    width: int
    height: int
    mode: str
    format: str
    orientation: int

    @property
    def upright_size(self) -> tuple[int, int]:
        """``(width, height)`` once turned upright by :attr:`orientation` (5-8 swap them)."""
        return (self.height, self.width) if self.orientation in (5, 6, 7, 8) else (self.width, self.height)


def read_header(path: str | os.PathLike[str]) -> ImageHeader:
    """Open a picture's header only (fast: no pixel is decoded).

    Args:
        path: the picture file.

    Returns:
        The :class:`ImageHeader`.

    Raises:
        FileNotFoundError: the file is missing.
        CorruptImageError: the header cannot be read (not a picture, cut before its size).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     Image.new("L", (4, 3)).save(f"{tmp}/a.png")
        ...     read_header(f"{tmp}/a.png")
        ImageHeader(width=4, height=3, mode='L', format='PNG', orientation=1)
    """
    file = _existing(path)
    try:
        with Image.open(file) as picture:
            # Only EXIF already read with the header: asking a PNG for more would decode it.
            orientation = read_orientation(picture) if "exif" in picture.info else 1
            return ImageHeader(picture.width, picture.height, picture.mode, str(picture.format), orientation)
    except DECODE_ERRORS as error:
        raise CorruptImageError(f"{file}: cannot read the picture's header ({_describe(error)})") from None


def read_orientation(picture: Image.Image) -> int:
    """The picture's EXIF orientation (1-8; 1 when absent, unreadable or out of range).

    Args:
        picture: an opened picture.

    Example:
        >>> exif = Image.Exif()
        >>> exif[0x0112] = 6
        >>> picture = Image.new("RGB", (4, 2))
        >>> picture.info["exif"] = exif.tobytes()
        >>> read_orientation(picture), read_orientation(Image.new("RGB", (4, 2)))
        (6, 1)
    """
    try:
        value = picture.getexif().get(_ORIENTATION_TAG, 1)
    except DECODE_ERRORS:
        return 1  # a malformed EXIF block: show the pixels as stored
    return value if isinstance(value, int) and value in _UPRIGHT else 1


def load_image(path: str | os.PathLike[str], *, exif_orientation: bool = True, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open, fully decode and convert a picture to 8-bit RGB, with errors that name the file.

    Args:
        path: the picture file.
        exif_orientation: turn the picture upright as its EXIF orientation tag says (the
            REFER loader passes False: its annotations are on the stored pixels).
        max_pixels: refuse a picture whose header declares more pixels than this, before
            decoding any (:data:`MAX_PIXELS` by default).

    Returns:
        The decoded RGB image.

    Raises:
        FileNotFoundError: the file is missing.
        CorruptImageError: the file cannot be decoded (truncated, damaged, not a picture, a
            mode that cannot be shown in RGB); :class:`PictureTooLargeError` when it has more
            than ``max_pixels`` pixels.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     Image.fromarray(np.full((2, 3), 65535, np.uint16)).save(f"{tmp}/deep.png")
        ...     load_image(f"{tmp}/deep.png").getpixel((0, 0))
        (255, 255, 255)
    """
    file = _existing(path)
    try:
        with _opened(file) as picture:
            if picture.width * picture.height > max_pixels:
                raise PictureTooLargeError(
                    f"{file}: refusing a picture of {picture.width} x {picture.height} pixels before decoding it; "
                    f"at most {max_pixels:,} pixels are read ({_megapixels(max_pixels)}); scale it down first"
                )
            _decode(picture)
            turn = _UPRIGHT.get(read_orientation(picture)) if exif_orientation else None
            rgb = to_rgb(picture)
    except PictureTooLargeError:
        raise
    except DECODE_ERRORS as error:
        raise CorruptImageError(f"{file}: cannot decode the picture ({_describe(error)})") from None
    return rgb.transpose(turn) if turn is not None else rgb


def _opened(file: Path) -> Image.Image:
    """``Image.open`` without Pillow's warning about large pictures: the caller bounds them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(file)


def _megapixels(count: int) -> str:
    side = int(count**0.5)
    return f"{side} x {side}" if side * side == count else f"{count / 1e6:g} megapixels"


def _existing(path: str | os.PathLike[str]) -> Path:
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{file}: image file not found")
    return file


def _describe(error: BaseException) -> str:
    return one_line(f"{type(error).__name__}: {error}", 200)


def _decode(picture: Image.Image) -> None:
    """Decode every pixel now; a truncated file raises even if Pillow was told to pad it."""
    if not ImageFile.LOAD_TRUNCATED_IMAGES:
        picture.load()
        return
    # Another library switched Pillow to fill truncated files with grey. Hold that off while
    # this file decodes (the lock keeps two threads from restoring each other's value).
    with _STRICT:
        saved = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            picture.load()
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = saved


def to_rgb(picture: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB by scaling its range, never by clipping it.

    - ``1``, ``L``, ``RGB``, ``YCbCr``, ``RGBX``...: as Pillow converts them.
    - ``I;16`` (any byte order): value / 257. ``I`` (32-bit): the same when every value lies in
      0..65535 (16-bit files read as ``I``), else its own minimum..maximum onto 0..255.
    - ``F``: value * 255 when every value lies in [0, 1], else minimum..maximum; NaN as 0.
    - ``CMYK``: ``(255 - C) * (255 - K) / 255`` per channel (no ICC profile).
    - ``P`` (palette), ``PA``, ``LA``, ``RGBA``...: transparency laid over white.

    Args:
        picture: a decoded Pillow image.

    Returns:
        An RGB image of the same size.

    Raises:
        ValueError: a mode Pillow cannot turn into RGB (the message names the mode).

    Example:
        >>> deep = Image.fromarray(np.array([[0, 32896, 65535]], np.uint16))
        >>> deep.mode, np.asarray(to_rgb(deep))[0, :, 0].tolist()
        ('I;16', [0, 128, 255])
        >>> np.asarray(to_rgb(Image.new("CMYK", (1, 1), (128, 0, 0, 128))))[0, 0].tolist()
        [63, 127, 127]
    """
    mode = picture.mode
    if mode == "RGB":
        return picture.copy()
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_scaled_grey(np.asarray(picture), mode), mode="L").convert("RGB")
    if mode == "CMYK":
        ink = np.asarray(picture).astype(np.uint32)
        paper = 255 - ink[..., 3:4]
        rgb = ((255 - ink[..., :3]) * paper + 127) // 255
        return Image.fromarray(rgb.astype(np.uint8), mode="RGB")
    if mode == "P" and "transparency" not in picture.info:
        return picture.convert("RGB")
    if mode in ("P", "PA", "LA", "RGBA", "RGBa"):
        rgba = picture.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    try:
        return picture.convert("RGB")
    except ValueError as error:
        raise ValueError(f"cannot show a {mode} picture in RGB ({one_line(error, 120)})") from None


def _scaled_grey(values: np.ndarray, mode: str) -> np.ndarray:
    """16/32-bit integer or float greyscale onto uint8 0..255 (see :func:`to_rgb`)."""
    if mode.startswith("I;16"):
        return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)
    data = np.nan_to_num(values.astype(np.float64), nan=0.0)
    if mode == "I" and (data.size == 0 or (data.min() >= 0 and data.max() <= 65535)):
        return ((data + 128) // 257).astype(np.uint8)
    if mode == "F" and (data.size == 0 or (data.min() >= 0 and data.max() <= 1)):
        return np.rint(data * 255).astype(np.uint8)
    finite = data[np.isfinite(data)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if high <= low:
        return np.zeros(data.shape, dtype=np.uint8)
    return np.rint((np.clip(data, low, high) - low) * (255.0 / (high - low))).astype(np.uint8)
