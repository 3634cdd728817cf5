"""ASDA's Scale-Wise Feature Aggregator (SFA): fuse three levels into one coarse map.

Implements Eq. 4-5 of "Adaptive Selection based Referring Image Segmentation" (ASDA,
ACM MM 2024): the top layer is modulated by the sentence, the middle and low layers are
shrunk to 1/2 and 1/4 of the map and merged top-down at a narrow width, FPN-style
(:class:`ScaleWiseAggregator`). :class:`PublishedScaleWiseAggregator` is the released
code's much wider variant, which enlarges the lower levels instead.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .shapes import check_shape, positive_int

__all__ = ["ScaleWiseAggregator", "PublishedScaleWiseAggregator"]

_DOWNSAMPLE_MODES = ("max", "avg")
_UPSAMPLE_MODES = ("nearest", "bilinear")


def _check_levels(layer: nn.Module, high: torch.Tensor, mid: torch.Tensor, low: torch.Tensor, sentence: torch.Tensor) -> None:
    """The checks of an aggregator's ``(high, mid, low, sentence)``: three maps of one size and a sentence."""
    dtype = layer.text_proj.weight.dtype
    axes = check_shape(high, "b c h w", name="high", c=layer.dim, floating=True, dtype=dtype)
    check_shape(mid, "b c h w", name="mid", bound=axes, floating=True, dtype=dtype)
    check_shape(low, "b c h w", name="low", bound=axes, floating=True, dtype=dtype)
    check_shape(sentence, "b d", name="sentence", bound=axes, d=layer.text_dim, floating=True, dtype=dtype)


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
    ViTDet that SFA cites (max pooling for its smaller scale), ``"avg"`` averages. The
    published code does not pool the inputs: it enlarges the middle and low levels with
    transposed convolutions, merges at 1x, 2x and 4x the grid and max-pools the OUTPUT
    back to the grid (:class:`PublishedScaleWiseAggregator`). ``upsample_mode`` defaults
    to ``"nearest"``, the FPN top-down convention the published code uses. ``proj`` is a plain Linear from the sentence to ``dim`` (Eq. 4 multiplies
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
        _check_levels(self, high, mid, low, sentence)

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


def _conv_bn_leaky(in_dim: int, out_dim: int, kernel_size: int, factory: dict) -> nn.Sequential:
    # No conv bias: the BatchNorm after it subtracts the mean.
    return nn.Sequential(
        nn.Conv2d(in_dim, out_dim, kernel_size, padding=kernel_size // 2, bias=False, **factory),
        nn.BatchNorm2d(out_dim, **factory),
        nn.LeakyReLU(),
    )


class PublishedScaleWiseAggregator(nn.Module):
    """The released code's SFA: levels enlarged by transposed convs, merged wide, max-pooled back.

    Same inputs and output as :class:`ScaleWiseAggregator`, but the middle and low levels
    are made LARGER (2x and 4x the grid) rather than smaller, the top-down path runs at
    ``hidden_dim`` (512) instead of 32 channels, and the result is max-pooled back to the
    grid. With ``*`` element-wise, ``CBL`` a convolution + BatchNorm + LeakyReLU block and
    ``Up`` nearest 2x upsampling::

        F_G   = F_H * Linear(f_E)                                       at h
        M     = ConvT2x(F_M)                                            at 2h
        L     = ConvT2x(LeakyReLU(BN(ConvT2x(F_L))))                    at 4h
        P_G   = CBL1x1(F_G);  P_M = CBL1x1(M) + Up(P_G);  P_L = CBL1x1(L) + Up(P_M)
        O_k   = MaxPool(CBL3x3(P_k)) to h,  k = G, M, L
        coarse = Conv1x1(Cat(O_G, O_M, O_L))                            -> dim, at h

    The layer follows a description of the released code; the details it leaves open are
    our choices: the transposed
    convolutions have kernel 2 and stride 2 (one per 2x, exact sizes for any grid) and keep
    ``dim`` channels; the two of the low level have a BatchNorm + LeakyReLU between them
    (two linear maps in a row would be one); the three 3x3 output convolutions are CBL
    blocks like the projections; each level's output is max-pooled to the grid (kernel =
    stride = its scale) and the three are concatenated and projected by a plain 1x1
    convolution with bias, so the output is a linear map like ``ScaleWiseAggregator``'s
    (CRIS's neck concatenates its levels the same way); LeakyReLU keeps torch's default
    slope 0.01.

    The cost is large: about 49 GMACs at ``dim=768``, ``text_dim=512``, ``hidden_dim=512``
    on a 26x26 grid (ViT-B/16 at 416 px), most of it in the 3x3 output convolutions at 2x
    and 4x the grid. BatchNorm in training mode needs more than one value per channel, so
    training on a batch of one ``1x1`` grid fails; such inputs run in eval mode.

    Args:
        dim: visual channels ``c`` of the three levels and of the output.
        text_dim: channels ``d`` of the sentence vector.
        hidden_dim: width of the projections and of the top-down path (512 in the code).
        device: device of the parameters.
        dtype: dtype of the parameters.

    Shape:
        - high, mid, low: ``(b, c, h, w)`` each (``F_H``, ``F_M``, ``F_L``)
        - sentence: ``(b, d)``
        - output: ``(b, c, h, w)``, the size of ``high`` (``F_coarse``)

    Example:
        >>> import torch
        >>> sfa = PublishedScaleWiseAggregator(32, 16, hidden_dim=8).eval()
        >>> high, mid, low = (torch.randn(2, 32, 13, 13) for _ in range(3))
        >>> sfa(high, mid, low, torch.randn(2, 16)).shape
        torch.Size([2, 32, 13, 13])
    """

    def __init__(
        self,
        dim: int,
        text_dim: int,
        *,
        hidden_dim: int = 512,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.dim = positive_int("dim", dim)
        self.text_dim = positive_int("text_dim", text_dim)
        self.hidden_dim = positive_int("hidden_dim", hidden_dim)
        self.text_proj = nn.Linear(text_dim, dim, **factory)
        self.mid_up = nn.ConvTranspose2d(dim, dim, 2, stride=2, **factory)
        self.low_up = nn.Sequential(
            nn.ConvTranspose2d(dim, dim, 2, stride=2, bias=False, **factory),
            nn.BatchNorm2d(dim, **factory),
            nn.LeakyReLU(),
            nn.ConvTranspose2d(dim, dim, 2, stride=2, **factory),
        )
        # Coarse to fine: the sentence-modulated grid, the 2x level, the 4x level.
        self.lateral = nn.ModuleList(_conv_bn_leaky(dim, hidden_dim, 1, factory) for _ in range(3))
        self.output = nn.ModuleList(_conv_bn_leaky(hidden_dim, hidden_dim, 3, factory) for _ in range(3))
        self.project = nn.Conv2d(3 * hidden_dim, dim, 1, **factory)

    def extra_repr(self) -> str:
        return f"hidden_dim={self.hidden_dim}"

    @property
    def output_names(self) -> tuple[str, ...]:
        """Name of the output, for ``torch.onnx.export(..., output_names=...)``."""
        return ("coarse",)

    def forward(self, high: torch.Tensor, mid: torch.Tensor, low: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        """Fuse the three levels with the sentence into the coarse map, as the released code does.

        Args:
            high: the highest-level map ``F_H``.
            mid: the selected middle-level map ``F_M``, the size of ``high``.
            low: the selected low-level map ``F_L``, the size of ``high``.
            sentence: the sentence vector ``f_E``.

        Returns:
            The coarse map, same size as ``high``.
        """
        _check_levels(self, high, mid, low, sentence)

        global_feats = high * rearrange(self.text_proj(sentence), "b c -> b c 1 1")  # Eq. 4
        levels = (global_feats, self.mid_up(mid), self.low_up(low))  # at 1x, 2x, 4x the grid
        merged = None
        outputs = []
        for scale, level, lateral, output in zip((1, 2, 4), levels, self.lateral, self.output):
            merged = lateral(level) if merged is None else lateral(level) + F.interpolate(merged, scale_factor=2.0)
            refined = output(merged)
            outputs.append(refined if scale == 1 else F.max_pool2d(refined, scale))
        return self.project(torch.cat(outputs, dim=1))
