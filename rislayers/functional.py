"""Stateless helpers shared by the layers: masked pooling and position features.

The pooling helpers accumulate in float32 whatever the input dtype (under
:class:`torch.autocast` too) and return the input dtype: a float16 sum over a 120 x 120 map
overflows (65504 is float16's largest value), and so does a count of 256 x 256 positions.
Padded words are selected away with ``torch.where``, never multiplied by zero, so a NaN
or inf in a padding slot cannot reach the result.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange

from ._compat import accumulation_dtype, float32_region
from .shapes import check_mask, check_shape

__all__ = [
    "masked_mean",
    "masked_softmax",
    "masked_avg_pool2d",
    "zero_padding",
    "coord_features",
    "sine_position_encoding_2d",
]

# Large enough that an empty mask divides 0 by it (giving 0), small enough never to bias a
# real average: weights are probabilities or 0/1, so any non-empty sum is >= ~1e-6.
_EPS = 1e-6


def masked_mean(words: torch.Tensor, word_mask: torch.Tensor | None = None, *, eps: float = _EPS) -> torch.Tensor:
    """Mean of the real (unpadded) words of each sentence.

    A sentence with no real word averages to a zero vector, never NaN, and whatever the
    padding slots hold (NaN and inf included) never reaches the result.

    Args:
        words: word features.
        word_mask: bool, True for real tokens; ``None`` means every token is real. The
            negation of :class:`torch.nn.MultiheadAttention`'s ``key_padding_mask`` (pass
            ``~key_padding_mask``).
        eps: lower bound of the divisor.

    Shape:
        - words: ``(b, l, d)``
        - word_mask: ``(b, l)``
        - output: ``(b, d)``

    Example:
        >>> import torch
        >>> words = torch.randn(2, 5, 16)
        >>> mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
        >>> masked_mean(words, mask).shape
        torch.Size([2, 16])
    """
    axes = check_shape(words, "b l d", name="words", floating=True)
    check_mask(word_mask, name="word_mask", bound=axes)
    return _masked_mean(words, word_mask, eps=eps)


def _masked_mean(words: torch.Tensor, word_mask: torch.Tensor | None, *, eps: float = _EPS) -> torch.Tensor:
    """:func:`masked_mean` without the input checks (the calling layer made them)."""
    compute = accumulation_dtype(words.dtype)
    with float32_region(words.device):
        if word_mask is None:
            return words.to(compute).mean(dim=1).to(words.dtype)
        total = zero_padding(words.to(compute), word_mask).sum(dim=1)
        count = word_mask.sum(dim=1, keepdim=True).to(compute).clamp_min(eps)
        return (total / count).to(words.dtype)


def masked_softmax(scores: torch.Tensor, word_mask: torch.Tensor | None, *, dim: int = -1) -> torch.Tensor:
    """Softmax over the words of attention scores, padding words excluded, in at least float32.

    The one masked softmax of every rislayers layer that attends over words. Padding words
    get weight exactly 0 whatever their score (NaN and inf included). A sentence with no
    real word gets all-zero weights, never NaN: its scores are filled with the dtype's most
    negative finite value (not ``-inf``), softmaxed to a finite uniform row (so gradients
    stay finite), then zeroed where the mask is False.

    Args:
        scores: attention scores; axis 0 is the batch ``b`` and axis ``dim`` the words ``l``.
        word_mask: bool, True for real tokens; ``None`` means every token is real (a plain
            softmax). The negation of a ``key_padding_mask``.
        dim: the words' axis of ``scores``.

    Returns:
        The weights, ``scores``'s shape, in float32 for half and bfloat16 scores (float64
        stays float64): cast them to the values' dtype before gathering.

    Shape:
        - scores: ``(b, ..., l, ...)`` with the words on ``dim``
        - word_mask: ``(b, l)``
        - output: ``scores``'s shape

    Example:
        >>> import torch
        >>> mask = torch.tensor([[True, True, False], [False, False, False]])
        >>> masked_softmax(torch.zeros(2, 4, 3), mask)[:, 0].tolist()
        [[0.5, 0.5, 0.0], [0.0, 0.0, 0.0]]
    """
    if word_mask is not None:
        dim = dim % scores.dim()
        check_shape(word_mask, "b l", name="word_mask", b=scores.shape[0], l=scores.shape[dim])
    return _masked_softmax(scores, word_mask, dim=dim)


def _masked_softmax(scores: torch.Tensor, word_mask: torch.Tensor | None, *, dim: int = -1) -> torch.Tensor:
    """:func:`masked_softmax` without the input checks (the calling layer made them)."""
    scores = scores.to(accumulation_dtype(scores.dtype))
    if word_mask is None:
        return scores.softmax(dim=dim)
    # word_mask (b, l) broadcast to the scores: 1 on every axis but the batch and the words.
    view = [1] * scores.dim()
    view[0], view[dim] = word_mask.shape[0], word_mask.shape[1]
    keep = word_mask.reshape(view)
    weights = scores.masked_fill(~keep, torch.finfo(scores.dtype).min).softmax(dim=dim)
    return torch.where(keep, weights, torch.zeros((), dtype=weights.dtype, device=weights.device))


def zero_padding(words: torch.Tensor, word_mask: torch.Tensor | None) -> torch.Tensor:
    """``words`` with every padded position set to 0 (selected away, so NaN and inf go too).

    Args:
        words: word features.
        word_mask: bool, True for real tokens; ``None`` returns ``words`` unchanged.

    Shape:
        - words: ``(b, l, d)``
        - word_mask: ``(b, l)``
        - output: ``(b, l, d)``

    Example:
        >>> import torch
        >>> words = torch.tensor([[[1.0], [float("nan")]]])
        >>> zero_padding(words, torch.tensor([[True, False]])).flatten().tolist()
        [1.0, 0.0]
    """
    if word_mask is None:
        return words
    return torch.where(word_mask.unsqueeze(-1), words, torch.zeros((), dtype=words.dtype, device=words.device))


def masked_avg_pool2d(feats: torch.Tensor, weights: torch.Tensor, *, eps: float = _EPS) -> torch.Tensor:
    """Weighted spatial average of a feature map: ``sum(w * x) / sum(w)`` over ``h, w``.

    Used to pool features under a (hard or soft) mask. An all-zero mask pools to a zero
    vector, never NaN, and its gradient stays finite. Sums and the count accumulate in
    float32 for half and bfloat16 inputs (also under autocast); the result has ``feats``'s
    dtype.

    Args:
        feats: feature map.
        weights: non-negative weights per position (a 0/1 mask or probabilities); a
            ``(b, 1, h, w)`` tensor is accepted too.
        eps: lower bound of the divisor.

    Shape:
        - feats: ``(b, c, h, w)``
        - weights: ``(b, h, w)`` or ``(b, 1, h, w)``
        - output: ``(b, c)``

    Example:
        >>> import torch
        >>> feats = torch.randn(2, 8, 4, 4)
        >>> masked_avg_pool2d(feats, torch.zeros(2, 4, 4)).shape
        torch.Size([2, 8])
    """
    axes = check_shape(feats, "b c h w", name="feats", floating=True)
    if isinstance(weights, torch.Tensor) and weights.dim() == 4:
        check_shape(weights, "b 1 h w", name="weights", bound=axes)
        weights = weights[:, 0]
    else:
        check_shape(weights, "b h w", name="weights", bound=axes)
    compute = accumulation_dtype(feats.dtype)
    with float32_region(feats.device):
        weights = rearrange(weights, "b h w -> b (h w) 1").to(compute)
        total = torch.bmm(rearrange(feats, "b c h w -> b c (h w)").to(compute), weights)
        count = weights.sum(dim=1).clamp_min(eps)
        return (rearrange(total, "b c 1 -> b c") / count).to(feats.dtype)


def coord_features(
    batch: int,
    height: int,
    width: int,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """The 8-channel spatial coordinate map used throughout the RIS literature.

    For each cell the channels are ``x_min, y_min, x_max, y_max, x_center, y_center,
    1/w, 1/h`` with coordinates normalised to ``[-1, 1]`` (the cell's left/top edge, its
    right/bottom edge and its centre), as concatenated to visual features by RMI, CMSA
    and LTS (and by :class:`~rislayers.CASGStage` with ``coord="recombine"``).

    Args:
        batch: batch size ``b`` of the output (the map is the same for every sample).
        height: ``h``.
        width: ``w``.
        device: device of the output.
        dtype: dtype of the output (default: torch's default float dtype).

    Shape:
        - output: ``(b, 8, h, w)``

    Example:
        >>> coord_features(2, 3, 5).shape
        torch.Size([2, 8, 3, 5])
    """
    for arg, value in (("batch", batch), ("height", height), ("width", width)):
        if int(value) < 1:
            raise ValueError(f"{arg}: expected a positive integer; got {value}")
    dtype = dtype or torch.get_default_dtype()
    xs = torch.arange(width, device=device, dtype=dtype)
    ys = torch.arange(height, device=device, dtype=dtype)
    x_min = xs / width * 2 - 1
    x_max = (xs + 1) / width * 2 - 1
    y_min = ys / height * 2 - 1
    y_max = (ys + 1) / height * 2 - 1
    row = lambda v: v.view(1, width).expand(height, width)  # noqa: E731
    col = lambda v: v.view(height, 1).expand(height, width)  # noqa: E731
    planes = [
        row(x_min),
        col(y_min),
        row(x_max),
        col(y_max),
        row((x_min + x_max) / 2),
        col((y_min + y_max) / 2),
        torch.full((height, width), 1.0 / width, device=device, dtype=dtype),
        torch.full((height, width), 1.0 / height, device=device, dtype=dtype),
    ]
    coords = torch.stack(planes, dim=0)
    return coords.unsqueeze(0).expand(batch, -1, -1, -1).contiguous()


def sine_position_encoding_2d(
    height: int,
    width: int,
    dim: int,
    *,
    temperature: float = 10000.0,
    normalize: bool = True,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Fixed 2-D sine/cosine position encoding (the DETR form).

    The first ``dim/2`` channels encode the row (y), the last ``dim/2`` the column (x);
    within each half, sines and cosines of geometrically spaced frequencies alternate.

    Args:
        height: ``h``.
        width: ``w``.
        dim: number of channels ``c``; must be divisible by 4.
        temperature: the base of the frequency progression.
        normalize: scale positions to ``[0, 2*pi]`` so the encoding does not depend on the
            map size (useful when a layer runs at several resolutions).
        device: device of the output.
        dtype: dtype of the output (computed in float32, then cast).

    Shape:
        - output: ``(c, h, w)``

    Example:
        >>> sine_position_encoding_2d(4, 6, 32).shape
        torch.Size([32, 4, 6])
    """
    if dim <= 0 or dim % 4 != 0:
        raise ValueError(f"dim: expected a positive multiple of 4; got {dim}")
    if height < 1 or width < 1:
        raise ValueError(f"height, width: expected positive integers; got {height}, {width}")
    half = dim // 2
    ys = torch.arange(1, height + 1, device=device, dtype=torch.float32)
    xs = torch.arange(1, width + 1, device=device, dtype=torch.float32)
    if normalize:
        ys = ys / height * 2 * math.pi
        xs = xs / width * 2 * math.pi
    steps = torch.arange(half, device=device, dtype=torch.float32)
    freqs = temperature ** (2 * torch.div(steps, 2, rounding_mode="floor") / half)

    def encode(pos: torch.Tensor) -> torch.Tensor:
        angles = pos[:, None] / freqs  # (len, half)
        return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=2).flatten(1)

    pos_y = rearrange(encode(ys), "h c -> c h 1").expand(half, height, width)
    pos_x = rearrange(encode(xs), "w c -> c 1 w").expand(half, height, width)
    return torch.cat((pos_y, pos_x), dim=0).to(dtype or torch.get_default_dtype())
