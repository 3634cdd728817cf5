"""The convolution block and option checks shared by the decoders.

Private to rislayers: :mod:`rislayers.casg`, :mod:`rislayers.concat_fusion` and the other
decoders build their convs from :class:`_ConvNormAct` and validate their constructor
arguments with :func:`_choice` and :func:`_dims_tuple`, so every decoder accepts the same
``norm`` values and words its errors the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .norms import NORMS as _NORMS
from .norms import norm2d
from .shapes import ShapeError, shape_checks_enabled


def _choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    """Validate a string option of a constructor.

    Args:
        name: the argument's name, used in the error message.
        value: the value given.
        choices: the accepted values.

    Returns:
        ``value``, unchanged.

    Raises:
        ValueError: ``value`` is not one of ``choices``.
    """
    if value not in choices:
        raise ValueError(f"{name}: expected one of {choices}; got {value!r}")
    return value  # type: ignore[return-value]


def _dims_tuple(name: str, value: object, length: int | None = None) -> tuple[int, ...]:
    """Validate a sequence of channel counts given to a constructor.

    Args:
        name: the argument's name, used in the error message.
        value: the value given; a non-empty sequence of positive ``int`` (not bools, not a string).
        length: the required number of entries; ``None`` accepts any number.

    Returns:
        ``value`` as a tuple.

    Raises:
        ValueError: naming the argument and the value.
    """
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"{name}: expected a sequence of positive integers; got {value!r}")
    dims = tuple(value)
    if length is not None and len(dims) != length:
        raise ValueError(f"{name}: expected {length} positive integers; got {value!r}")
    if not dims or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in dims):
        raise ValueError(f"{name}: expected a non-empty sequence of positive integers; got {value!r}")
    return dims


def _check_pyramid(features: Sequence[torch.Tensor], layout: str) -> None:
    """Refuse a pyramid given coarsest first: no map may be larger than the one before it.

    Args:
        features: the maps, high resolution first.
        layout: how the argument is described in the error, e.g. ``"[V1, V2, V3, V4]"``.

    Raises:
        ShapeError: naming ``features``, the expected order and the sizes given.
    """
    if not shape_checks_enabled():
        return
    sizes = [tuple(f.shape[-2:]) for f in features]
    if any(h > ph or w > pw for (ph, pw), (h, w) in zip(sizes, sizes[1:])):
        got = ", ".join(f"{h}x{w}" for h, w in sizes)
        raise ShapeError(
            f"features: expected {layout} high resolution first (each map no larger than the one before); "
            f"got sizes {got}"
        )


class _ConvNormAct(nn.Sequential):
    """Conv2d -> norm -> ReLU, the paper's ``Conv`` (it writes ``Conv_BN_ReLU`` in S2RM).

    Args:
        in_dim: input channels.
        out_dim: output channels.
        kernel_size: kernel of the conv (odd keeps the size: the padding is ``kernel_size // 2``).
        norm: one of ``_NORMS``; the conv has a bias only with ``"none"``, since a
            normalisation subtracting the mean would cancel it.
        device: device of the parameters.
        dtype: dtype of the parameters.
    """

    def __init__(self, in_dim: int, out_dim: int, kernel_size: int, norm: str, *, device=None, dtype=None):
        factory = {"device": device, "dtype": dtype}
        layers: list[nn.Module] = [
            nn.Conv2d(in_dim, out_dim, kernel_size, padding=kernel_size // 2, bias=norm == "none", **factory)
        ]
        if norm != "none":  # no Identity: the ReLU keeps index 1, as in state dicts saved before
            layers.append(norm2d(norm, out_dim, **factory))
        layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)
