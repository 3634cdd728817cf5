"""ASDA's Scale-Wise Feature Aggregator (SFA): fuse three levels into one coarse map.

Implements Eq. 4-5 of "Adaptive Selection based Referring Image Segmentation" (ASDA,
ACM MM 2024): the top layer is modulated by the sentence, the middle and low layers are
shrunk to 1/2 and 1/4 of the map and merged top-down at a narrow width, FPN-style.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .shapes import check_shape

__all__ = ["ScaleWiseAggregator"]

_DOWNSAMPLE_MODES = ("max", "avg")
_UPSAMPLE_MODES = ("nearest", "bilinear")


def _half(size: tuple[int, int]) -> tuple[int, int]:
    # Ceil keeps every border row and column of an odd map (13 -> 7, not 6).
    return (size[0] + 1) // 2, (size[1] + 1) // 2


class ScaleWiseAggregator(nn.Module):
    """Merge the high, middle and low encoder levels with the sentence (ASDA SFA, Eq. 4-5).

    With ``*`` element-wise and all 1x1/3x3 convolutions learned::

        F_G   = F_H * proj(f_E)                                    (Eq. 4)
        F~_M  = down(F_M) to h/2,  F~_L = down(F_L) to h/4
        F'_L  = up(reduce(F~_L))             hidden_dim, at h/2   (Eq. 5)
        F'_M  = lateral_M(F~_M) + F'_L       hidden_dim, at h/2
        coarse = agg(lateral_G(F_G) + up(F'_M))    dim, at h

    ``reduce`` and the laterals are 1x1 convolution + ReLU blocks (the paper's
    ``Phi_lateral``); ``reduce`` followed by the 2x upsampling is the paper's ``Phi_up``,
    reducing channels before upsampling, which equals the other order for nearest
    upsampling and is cheaper. ``agg`` is a 3x3 convolution back to ``dim`` channels.

    Sizes are explicit rather than fixed factors so odd maps work: for an ``h x w`` input
    the middle level is resized to ``ceil(h/2) x ceil(w/2)`` and the low level to half of
    that again (13x13 -> 7x7 -> 4x4 for ViT-B/16 at 208 px, 26x26 -> 13x13 -> 7x7 at
    416 px); upsampling goes back to exactly those sizes.

    Paper ambiguities, as options: the paper only says the low and middle levels are
    "downsampled"; ``downsample="max"`` (default) follows the simple feature pyramid of
    ViTDet that SFA cites and the published code's max pooling, ``"avg"`` averages.
    ``upsample_mode`` defaults to ``"nearest"``, the FPN top-down convention the published
    code uses. ``proj`` is a plain Linear from the sentence to ``dim`` (Eq. 4 multiplies
    ``f_H`` by ``f_E`` directly, which needs equal widths).

    Args:
        dim: visual channels ``c`` of the three levels and of the output.
        text_dim: channels ``d`` of the sentence vector.
        hidden_dim: the narrow width of the top-down path (32 in the paper).
        downsample: ``"max"`` or ``"avg"`` adaptive pooling to the smaller levels' sizes.
        upsample_mode: ``"nearest"`` or ``"bilinear"``.
        device: device of the parameters.
        dtype: dtype of the parameters.

    Shape:
        - high: ``(b, c, h, w)`` (``F_H``, the last encoder layer)
        - mid: ``(b, c, h, w)`` (``F_M``)
        - low: ``(b, c, h, w)`` (``F_L``)
        - sentence: ``(b, d)``
        - output: ``(b, c, h, w)`` (``F_coarse``)

    Example:
        >>> import torch
        >>> sfa = ScaleWiseAggregator(32, 16, hidden_dim=8)
        >>> high, mid, low = (torch.randn(2, 32, 13, 13) for _ in range(3))
        >>> sfa(high, mid, low, torch.randn(2, 16)).shape
        torch.Size([2, 32, 13, 13])
    """

    def __init__(
        self,
        dim: int,
        text_dim: int,
        *,
        hidden_dim: int = 32,
        downsample: Literal["max", "avg"] = "max",
        upsample_mode: Literal["nearest", "bilinear"] = "nearest",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("text_dim", text_dim), ("hidden_dim", hidden_dim)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive integer; got {value!r}")
        if downsample not in _DOWNSAMPLE_MODES:
            raise ValueError(f"downsample: expected one of {_DOWNSAMPLE_MODES}; got {downsample!r}")
        if upsample_mode not in _UPSAMPLE_MODES:
            raise ValueError(f"upsample_mode: expected one of {_UPSAMPLE_MODES}; got {upsample_mode!r}")
        factory = {"device": device, "dtype": dtype}
        self.dim = dim
        self.text_dim = text_dim
        self.hidden_dim = hidden_dim
        self.downsample = downsample
        self.upsample_mode = upsample_mode
        self.text_proj = nn.Linear(text_dim, dim, **factory)
        self.low_reduce = nn.Sequential(nn.Conv2d(dim, hidden_dim, 1, **factory), nn.ReLU())
        self.mid_lateral = nn.Sequential(nn.Conv2d(dim, hidden_dim, 1, **factory), nn.ReLU())
        self.global_lateral = nn.Sequential(nn.Conv2d(dim, hidden_dim, 1, **factory), nn.ReLU())
        self.aggregate = nn.Conv2d(hidden_dim, dim, 3, padding=1, **factory)

    def extra_repr(self) -> str:
        return f"downsample={self.downsample!r}, upsample_mode={self.upsample_mode!r}"

    def _down(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if self.downsample == "max":
            return F.adaptive_max_pool2d(x, size)
        return F.adaptive_avg_pool2d(x, size)

    def _up(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if self.upsample_mode == "bilinear":
            return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return F.interpolate(x, size=size, mode="nearest")

    @property
    def output_names(self) -> tuple[str, ...]:
        """Name of the output, for ``torch.onnx.export(..., output_names=...)``."""
        return ("coarse",)

    def forward(self, high: torch.Tensor, mid: torch.Tensor, low: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        """Fuse the three levels with the sentence into the coarse map ``F_coarse``.

        Args:
            high: the highest-level map ``F_H``.
            mid: the selected middle-level map ``F_M``.
            low: the selected low-level map ``F_L``.
            sentence: the sentence vector ``f_E``.

        Returns:
            The coarse map, same size as ``high``.
        """
        dtype = self.text_proj.weight.dtype
        axes = check_shape(high, "b c h w", name="high", c=self.dim, floating=True, dtype=dtype)
        check_shape(mid, "b c h w", name="mid", bound=axes, floating=True, dtype=dtype)
        check_shape(low, "b c h w", name="low", bound=axes, floating=True, dtype=dtype)
        check_shape(sentence, "b d", name="sentence", bound=axes, d=self.text_dim, floating=True, dtype=dtype)

        full_size = (high.shape[-2], high.shape[-1])
        mid_size = _half(full_size)
        low_size = _half(mid_size)

        global_feats = high * rearrange(self.text_proj(sentence), "b c -> b c 1 1")  # Eq. 4
        low_small = self._down(low, low_size)
        mid_small = self._down(mid, mid_size)
        low_up = self._up(self.low_reduce(low_small), mid_size)  # Eq. 5, F'_L
        mid_fused = self.mid_lateral(mid_small) + low_up  # Eq. 5, F'_M
        merged = self.global_lateral(global_feats) + self._up(mid_fused, full_size)
        return self.aggregate(merged)  # Eq. 5, F_coarse
