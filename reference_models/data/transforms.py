"""Image and mask transforms on Pillow and torch only: square resize, letterbox, normalisation.

Every resize records where the original picture lies inside the model input as a
:class:`ContentBox` ``(top, left, height, width)``, so :func:`to_original_size` can map a
prediction back to the original resolution (the CRIS/ASDA evaluation protocol) whether the
image was stretched to a square (the box is the whole input) or letterboxed (the box excludes
the padding).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CLIP_MEAN",
    "CLIP_STD",
    "ResizeMode",
    "ContentBox",
    "content_box",
    "resize_image",
    "resize_mask",
    "normalize",
    "denormalize",
    "to_original_size",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# OpenAI CLIP's preprocessing statistics (used by CRIS, ASDA and other CLIP-based models).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

ResizeMode = Literal["square", "letterbox"]
_MODES = ("square", "letterbox")


class ContentBox(NamedTuple):
    """Where the original image lies inside the resized model input, in input pixels.

    Attributes:
        top: first row of the picture (0 unless letterboxed).
        left: first column of the picture.
        height: rows the picture covers.
        width: columns the picture covers.
    """

    top: int
    left: int
    height: int
    width: int


def content_box(height: int, width: int, size: int, *, mode: ResizeMode = "square") -> ContentBox:
    """The placement of an ``height x width`` image inside a ``size x size`` input.

    ``square`` stretches the image over the whole input. ``letterbox`` keeps the aspect ratio:
    the longer side becomes ``size`` and the shorter one is centred with padding.

    Args:
        height: original height.
        width: original width.
        size: side of the square model input.
        mode: ``"square"`` or ``"letterbox"``.

    Returns:
        The :class:`ContentBox`.

    Example:
        >>> content_box(300, 600, 480, mode="letterbox")
        ContentBox(top=120, left=0, height=240, width=480)
    """
    if mode not in _MODES:
        raise ValueError(f"mode: expected one of {_MODES}; got {mode!r}")
    if height <= 0 or width <= 0 or size <= 0:
        raise ValueError(f"height, width, size: expected positive sizes; got ({height}, {width}, {size})")
    if mode == "square":
        return ContentBox(0, 0, size, size)
    scale = size / max(height, width)
    new_height = min(size, max(1, round(height * scale)))
    new_width = min(size, max(1, round(width * scale)))
    return ContentBox((size - new_height) // 2, (size - new_width) // 2, new_height, new_width)


def _mean_fill(mean: Sequence[float]) -> tuple[int, int, int]:
    return tuple(int(round(255 * m)) for m in mean)  # type: ignore[return-value]


def resize_image(
    image: Image.Image,
    size: int,
    *,
    mode: ResizeMode = "square",
    fill: Sequence[int] | None = None,
) -> tuple[Image.Image, ContentBox]:
    """Resize an RGB image to ``size x size`` (bilinear), stretched or letterboxed.

    Args:
        image: a Pillow image (converted to RGB).
        size: output side.
        mode: ``"square"`` or ``"letterbox"``.
        fill: letterbox padding colour (default: the ImageNet mean, which normalises to 0).

    Returns:
        ``(resized image, content box)``.

    Example:
        >>> out, box = resize_image(Image.new("RGB", (40, 20)), 32, mode="letterbox")
        >>> out.size, box
        ((32, 32), ContentBox(top=8, left=0, height=16, width=32))
    """
    image = image.convert("RGB")
    box = content_box(image.height, image.width, size, mode=mode)
    if (image.height, image.width) == (box.height, box.width):
        content = image.copy()
    else:
        content = image.resize((box.width, box.height), Image.Resampling.BILINEAR)
    if mode == "square":
        return content, box
    canvas = Image.new("RGB", (size, size), tuple(fill) if fill is not None else _mean_fill(IMAGENET_MEAN))
    canvas.paste(content, (box.left, box.top))
    return canvas, box


def resize_mask(mask: np.ndarray, size: int, *, mode: ResizeMode = "square") -> np.ndarray:
    """Resize a boolean mask like :func:`resize_image` resizes its image (nearest neighbour).

    Args:
        mask: ``(h, w)`` array, nonzero = foreground.
        size: output side.
        mode: ``"square"`` or ``"letterbox"`` (padding is background).

    Returns:
        A ``(size, size)`` bool array.

    Example:
        >>> resize_mask(np.ones((20, 40), dtype=bool), 32, mode="letterbox").sum()
        np.int64(512)
    """
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"mask: expected a 2-D (h, w) array; got shape {array.shape}")
    box = content_box(array.shape[0], array.shape[1], size, mode=mode)
    content = array.astype(bool)
    if content.shape != (box.height, box.width):
        picture = Image.fromarray(content.astype(np.uint8) * 255, mode="L")
        content = np.asarray(picture.resize((box.width, box.height), Image.Resampling.NEAREST)) > 127
    if mode == "square":
        return content
    out = np.zeros((size, size), dtype=bool)
    out[box.top : box.top + box.height, box.left : box.left + box.width] = content
    return out


def normalize(
    image: Image.Image | np.ndarray,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """Convert an RGB uint8 image to a normalised float32 ``(3, H, W)`` tensor.

    Args:
        image: a Pillow RGB image or a ``(H, W, 3)`` uint8 array.
        mean: per-channel mean of [0, 1] pixel values.
        std: per-channel standard deviation.

    Returns:
        ``(x / 255 - mean) / std`` as a ``(3, H, W)`` float32 tensor.

    Example:
        >>> normalize(Image.new("RGB", (5, 4))).shape
        torch.Size([3, 4, 5])
    """
    array = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"image: expected an RGB uint8 (H, W, 3) image; got {array.dtype} {array.shape}")
    tensor = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).to(torch.float32).div_(255.0)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return tensor.sub_(mean_t).div_(std_t)


def denormalize(
    image: torch.Tensor,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """Invert :func:`normalize`: ``(..., 3, H, W)`` float -> uint8 in [0, 255] (for pictures).

    Args:
        image: normalised image(s).
        mean: the mean used by :func:`normalize`.
        std: the standard deviation used by :func:`normalize`.

    Returns:
        A uint8 tensor of the same shape.

    Example:
        >>> denormalize(torch.zeros(2, 3, 4, 4)).shape
        torch.Size([2, 3, 4, 4])
    """
    if image.dim() < 3 or image.shape[-3] != 3:
        raise ValueError(f"image: expected (..., 3, H, W); got {tuple(image.shape)}")
    mean_t = torch.tensor(mean, dtype=torch.float32, device=image.device).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=image.device).view(3, 1, 1)
    pixels = (image.float() * std_t + mean_t) * 255.0
    return pixels.round().clamp(0, 255).to(torch.uint8)


def to_original_size(
    prediction: torch.Tensor,
    box: Sequence[int] | torch.Tensor,
    original_size: Sequence[int] | torch.Tensor,
    *,
    interpolation: Literal["bilinear", "nearest"] = "bilinear",
) -> torch.Tensor:
    """Map a prediction at model-input resolution back onto the original image.

    Crops the content box (dropping letterbox padding) and resizes to ``original_size``.
    Use ``bilinear`` on logits/probabilities and threshold afterwards (CRIS's protocol), or
    ``nearest`` on boolean masks.

    Args:
        prediction: ``(..., H, W)`` logits, probabilities or a mask.
        box: the sample's content box ``(top, left, height, width)``.
        original_size: ``(height, width)`` of the original image.
        interpolation: ``"bilinear"`` or ``"nearest"``.

    Returns:
        ``(..., height, width)``; bool in, bool out.

    Example:
        >>> to_original_size(torch.zeros(1, 32, 32), (8, 0, 16, 32), (20, 40)).shape
        torch.Size([1, 20, 40])
    """
    if interpolation not in ("bilinear", "nearest"):
        raise ValueError(f"interpolation: expected 'bilinear' or 'nearest'; got {interpolation!r}")
    if prediction.dim() < 2:
        raise ValueError(f"prediction: expected (..., H, W); got {tuple(prediction.shape)}")
    top, left, height, width = (int(v) for v in (box.tolist() if isinstance(box, torch.Tensor) else box))
    if isinstance(original_size, torch.Tensor):
        original_size = original_size.tolist()
    out_h, out_w = (int(v) for v in original_size)
    in_h, in_w = prediction.shape[-2:]
    if top < 0 or left < 0 or height <= 0 or width <= 0 or top + height > in_h or left + width > in_w:
        raise ValueError(f"box: {(top, left, height, width)} does not fit a {in_h}x{in_w} prediction")
    crop = prediction[..., top : top + height, left : left + width]
    lead = crop.shape[:-2]
    flat = crop.reshape(-1, 1, height, width)
    if interpolation == "nearest":
        # "nearest-exact" samples pixel centres, matching Pillow's NEAREST used by resize_mask.
        resized = F.interpolate(flat.float(), size=(out_h, out_w), mode="nearest-exact")
    else:
        resized = F.interpolate(flat.float(), size=(out_h, out_w), mode="bilinear", align_corners=False)
    resized = resized.reshape(*lead, out_h, out_w)
    if prediction.dtype == torch.bool:
        return resized > 0.5
    return resized.to(prediction.dtype) if prediction.is_floating_point() else resized.round().to(prediction.dtype)
