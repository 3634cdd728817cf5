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

from ._conv_blocks import _choice
from .norms import norm2d
from .shapes import check_shape, positive_int

__all__ = ["ScaleWiseAggregator", "PublishedScaleWiseAggregator"]

_DOWNSAMPLE_MODES = ("max", "avg")
_UPSAMPLE_MODES = ("nearest", "bilinear")


def _check_levels(
    layer: nn.Module, high: torch.Tensor, mid: torch.Tensor, low: torch.Tensor, sentence: torch.Tensor, *, dtype: torch.dtype
) -> None:
    """The checks of an aggregator's ``(high, mid, low, sentence)``: three maps of one size and a sentence."""
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
    to ``"nearest"``, the FPN top-down convention the published code uses. ``proj`` is a
    plain Linear from the sentence to ``dim`` (Eq. 4 multiplies ``f_H`` by ``f_E``
    directly, which needs equal widths).

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
    def out_channels(self) -> int:
        """Channels of the coarse map, ``dim``, those of the levels."""
        return self.dim

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
        _check_levels(self, high, mid, low, sentence, dtype=self.text_proj.weight.dtype)

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


# The released code's conv blocks use BatchNorm momentum 0.999 in PyTorch's convention (a
# TensorFlow decay misread), so the running statistics are almost those of the last batch;
# kept so a run reproduces its evaluation behaviour. Its sentence fusion keeps torch's 0.1.
_CODE_BN_MOMENTUM = 0.999
_CODE_LEAKY_SLOPE = 0.1


def _conv_bn_leaky(in_dim: int, out_dim: int, kernel_size: int, norm: str, factory: dict) -> nn.Sequential:
    # No conv bias: the norm after it subtracts the mean.
    return nn.Sequential(
        nn.Conv2d(in_dim, out_dim, kernel_size, padding=kernel_size // 2, bias=False, **factory),
        norm2d(norm, out_dim, momentum=_CODE_BN_MOMENTUM, **factory),
        nn.LeakyReLU(_CODE_LEAKY_SLOPE),
    )


def _enlarge(in_dim: int, out_dim: int, factory: dict) -> nn.ConvTranspose2d:
    """A 2x enlargement: kernel 2, stride 2, so every output size is exactly twice the input."""
    return nn.ConvTranspose2d(in_dim, out_dim, 2, stride=2, **factory)


class PublishedScaleWiseAggregator(nn.Module):
    """The released code's SFA: levels enlarged by transposed convs, merged wide, max-pooled back.

    Same inputs as :class:`ScaleWiseAggregator`, but the middle and low levels are made
    LARGER (2x and 4x the grid) rather than smaller, the top-down path runs at
    ``hidden_dim`` (512) channels instead of 32, only the finest level is kept and it is
    max-pooled back to the grid; the output is ``hidden_dim`` wide (the released code
    feeds it to its aligner as is). With ``*`` element-wise, ``CBL`` a convolution +
    BatchNorm + LeakyReLU(0.1) block, ``BL`` BatchNorm + LeakyReLU(0.1), ``T`` a transposed
    convolution (kernel 2, stride 2, with bias) and ``Up`` nearest 2x upsampling::

        F_G = BL(CBL1x1(F_H) * LeakyReLU(BN1d(Linear(f_E))))            dim, at h
        S_G = CBL3x3(CBL1x1(F_G))                                       at h
        S_M = CBL3x3(CBL1x1(T(F_M)))             T: dim -> dim/2,       at 2h
        S_L = CBL3x3(CBL1x1(T(GELU(BN(T(F_L))))))  dim -> dim/2 -> dim/4, at 4h
        P_G = CBL1x1(S_G);  P_M = CBL1x1(S_M) + Up(P_G);  P_L = CBL1x1(S_L) + Up(P_M)
        coarse = MaxPool4x4(CBL3x3(P_L))                                hidden_dim, at h

    ``F_G`` is the code's sentence fusion (``Simple_fusion`` in ``model/model.py``, at
    ``fusion_dim = dim``); the rest is its ``SFA`` (``model/modules.py``), whose stages
    (``1x1`` to ``hidden_dim`` then ``3x3``), lateral ``1x1`` blocks and top-down sum
    follow ViTDet's simple feature pyramid. The code also builds a 3x3 output block for
    the coarse level and runs one on ``P_M``, but reads neither: only the one on ``P_L``
    is built here, so every parameter trains (about 6.4 GMACs fewer at 416 px). The
    conv blocks' BatchNorms (``visual_proj`` among them) use the code's momentum 0.999
    (running statistics close to the last batch's); the ``BatchNorm1d`` after the sentence's
    Linear and ``fusion_norm`` use torch's 0.1, as in the code.

    The cost is large: about 67 GMACs at ``dim=768``, ``text_dim=512``,
    ``hidden_dim=512`` on a 26x26 grid (ViT-B/16 at 416 px), most of it in the two 3x3
    blocks at 4x the grid. BatchNorm in training mode needs more than one value per
    channel, so training on a batch of one fails (the sentence's ``BatchNorm1d``); use
    ``eval()`` for single samples.

    Args:
        dim: visual channels ``c`` of the three levels (at least 4: the low level narrows
            to ``dim // 4``).
        text_dim: channels ``d`` of the sentence vector.
        hidden_dim: width of the top-down path and of the output (512 in the code).
        norm: the 2-D norms: ``"batch"`` (the code's) or ``"group"``
            (:func:`~rislayers.norms.norm2d`; the sentence's ``BatchNorm1d`` stays). No
            ``"none"``: the convs before the norms have no bias.
        device: device of the parameters.
        dtype: dtype of the parameters.

    Shape:
        - high, mid, low: ``(b, c, h, w)`` each (``F_H``, ``F_M``, ``F_L``)
        - sentence: ``(b, d)``
        - output: ``(b, hidden_dim, h, w)``, the size of ``high`` (``F_coarse``)

    Example:
        >>> import torch
        >>> sfa = PublishedScaleWiseAggregator(32, 16, hidden_dim=8).eval()
        >>> high, mid, low = (torch.randn(2, 32, 13, 13) for _ in range(3))
        >>> sfa(high, mid, low, torch.randn(2, 16)).shape
        torch.Size([2, 8, 13, 13])
    """

    def __init__(
        self,
        dim: int,
        text_dim: int,
        *,
        hidden_dim: int = 512,
        norm: str = "batch",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.dim = positive_int("dim", dim)
        if dim < 4:
            raise ValueError(f"dim: expected an integer >= 4 (the low level narrows to dim // 4); got {dim!r}")
        self.text_dim = positive_int("text_dim", text_dim)
        self.hidden_dim = self.out_dim = positive_int("hidden_dim", hidden_dim)
        norm = _choice("norm", norm, ("batch", "group"))
        # Eq. 4 as the code's sentence fusion.
        self.visual_proj = _conv_bn_leaky(dim, dim, 1, norm, factory)
        self.text_proj = nn.Sequential(
            nn.Linear(text_dim, dim, **factory), nn.BatchNorm1d(dim, **factory), nn.LeakyReLU(_CODE_LEAKY_SLOPE)
        )
        self.fusion_norm = nn.Sequential(norm2d(norm, dim, **factory), nn.LeakyReLU(_CODE_LEAKY_SLOPE))
        # One stage per level, coarse to fine: the grid, 2x, 4x.
        self.stages = nn.ModuleList(
            [
                nn.Sequential(_conv_bn_leaky(dim, hidden_dim, 1, norm, factory), _conv_bn_leaky(hidden_dim, hidden_dim, 3, norm, factory)),
                nn.Sequential(
                    _enlarge(dim, dim // 2, factory),
                    _conv_bn_leaky(dim // 2, hidden_dim, 1, norm, factory),
                    _conv_bn_leaky(hidden_dim, hidden_dim, 3, norm, factory),
                ),
                nn.Sequential(
                    _enlarge(dim, dim // 2, factory),
                    norm2d(norm, dim // 2, momentum=_CODE_BN_MOMENTUM, **factory),
                    nn.GELU(),
                    _enlarge(dim // 2, dim // 4, factory),
                    _conv_bn_leaky(dim // 4, hidden_dim, 1, norm, factory),
                    _conv_bn_leaky(hidden_dim, hidden_dim, 3, norm, factory),
                ),
            ]
        )
        self.lateral = nn.ModuleList(_conv_bn_leaky(hidden_dim, hidden_dim, 1, norm, factory) for _ in range(3))
        self.output = _conv_bn_leaky(hidden_dim, hidden_dim, 3, norm, factory)

    def extra_repr(self) -> str:
        return f"hidden_dim={self.hidden_dim}"

    @property
    def out_channels(self) -> int:
        """Channels of the coarse map, ``hidden_dim``."""
        return self.hidden_dim

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
            The coarse map, ``hidden_dim`` wide, the size of ``high``.
        """
        _check_levels(self, high, mid, low, sentence, dtype=self.visual_proj[0].weight.dtype)

        sentence_map = rearrange(self.text_proj(sentence), "b c -> b c 1 1")
        global_feats = self.fusion_norm(self.visual_proj(high) * sentence_map)  # Eq. 4
        merged = None
        for stage, lateral, level in zip(self.stages, self.lateral, (global_feats, mid, low)):
            lateral_feats = lateral(stage(level))
            merged = lateral_feats if merged is None else lateral_feats + F.interpolate(merged, scale_factor=2.0)
        return F.max_pool2d(self.output(merged), 4)  # the 4x level, back to the grid
