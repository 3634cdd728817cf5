"""The one place where rislayers builds 2-D normalisations.

Every layer that normalises a feature map takes ``norm="batch" | "group" | "none"`` and builds
it here, at construction time, so a model chooses its norm once and passes it down; nothing
swaps modules in a built model. ``"group"`` is what swapping each ``BatchNorm2d`` for a
``GroupNorm`` would give (same channels, eps and affine), so state dicts and outputs match
those of a swapped model.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["NORMS", "norm2d", "group_count"]

NORMS = ("batch", "group", "none")
"""The accepted values of every layer's ``norm`` argument."""

# GroupNorm's usual 32 groups, reduced to a divisor of the channel count.
_MAX_GROUPS = 32


def group_count(channels: int) -> int:
    """Groups of the ``"group"`` norm: ``gcd(32, channels)``, the largest power of two up to 32 dividing ``channels``.

    Args:
        channels: channels ``c`` of the map.

    Example:
        >>> group_count(64), group_count(48), group_count(20)
        (32, 16, 4)
    """
    return math.gcd(_MAX_GROUPS, channels)


def norm2d(
    kind: str,
    channels: int,
    *,
    eps: float = 1e-5,
    momentum: float = 0.1,
    affine: bool = True,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """A normalisation of ``(b, c, h, w)`` maps: BatchNorm, GroupNorm or none.

    Args:
        kind: ``"batch"`` (``nn.BatchNorm2d``; the samples of a batch interact in training
            mode), ``"group"`` (``nn.GroupNorm`` with :func:`group_count` groups,
            batch-independent) or ``"none"`` (``nn.Identity``).
        channels: channels ``c``.
        eps: added to the variance (both norms).
        momentum: running-statistics momentum (``"batch"`` only; GroupNorm keeps none).
        affine: learnable per-channel scale and shift.
        device: device of the parameters.
        dtype: dtype of the parameters.

    Returns:
        The module; its output has the input's shape.

    Raises:
        ValueError: ``kind`` is not one of :data:`NORMS`, or ``channels`` is not a positive integer.

    Shape:
        - input: ``(b, c, h, w)``
        - output: ``(b, c, h, w)``

    Example:
        >>> gn = norm2d("group", 48)
        >>> type(gn).__name__, gn.num_groups
        ('GroupNorm', 16)
        >>> bn = norm2d("batch", 8, momentum=0.999)
        >>> type(bn).__name__, bn.momentum
        ('BatchNorm2d', 0.999)
    """
    if kind not in NORMS:
        raise ValueError(f"norm: expected one of {NORMS}; got {kind!r}")
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ValueError(f"channels: expected a positive integer; got {channels!r}")
    factory = {"device": device, "dtype": dtype}
    if kind == "batch":
        return nn.BatchNorm2d(channels, eps=eps, momentum=momentum, affine=affine, **factory)
    if kind == "group":
        return nn.GroupNorm(group_count(channels), channels, eps=eps, affine=affine, **factory)
    return nn.Identity()
