"""CRIS's "concatenation and projection" neck, the multi-level fusion of ASDA's Table 2 (a)-(c).

CRIS (Wang et al., 2022) fuses its encoder levels with the sentence by modulating the
high-level map with the projected sentence, concatenating it with the other levels and
projecting back with a convolution. ASDA's ablation uses this block as its baseline fusion:
row (a) on the top layer alone (``F_H * f_E``), rows (b) and (c) on the top layer with a
manually assigned or adaptively selected low and middle layer, where the full model has its
Scale-Wise Feature Aggregator.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ._conv_blocks import _NORMS, _ConvNormAct, _choice, _dims_tuple
from .shapes import ShapeError, check_shape, positive_int

__all__ = ["ConcatProjectFusion"]


class ConcatProjectFusion(nn.Module):
    """Modulate the high-level map by the sentence, concatenate all levels, project (CRIS neck).

    With ``*`` element-wise and ``maps = [F_H, F_2, ..., F_k]`` (the high-level map first)::

        F_G   = F_H * Linear(f_E)                          text_dim -> dims[0]
        fused = ReLU(Norm(Conv1x1(Cat(F_G, Up(F_2), ..., Up(F_k)))))   -> out_dim

    ``Up`` resizes a map to the size of ``F_H`` (bilinear, ``align_corners=False``) and is
    skipped where the sizes already agree, so ViT levels of one grid pass unchanged. With a
    single map the block is ``proj(F_H * f_E)``, ASDA's Table 2 (a) baseline.

    Only the high-level map meets the sentence, as in CRIS and in ASDA's Eq. 4: the lower
    levels add visual detail, and the projection learns how much of each to keep. The 1x1
    convolution has no bias unless ``norm="none"`` (a normalisation subtracting the mean
    would cancel it).

    Args:
        dims: channels of each map, the high-level map first (one or more).
        text_dim: channels ``d`` of the sentence vector.
        out_dim: channels of the output.
        norm: ``"batch"`` (CRIS), ``"group"`` (gcd(out_dim, 32) groups; batch-independent in
            training mode, for tiny batches) or ``"none"``.
        device: device of the parameters.
        dtype: dtype of the parameters.

    Shape:
        - maps: a sequence of ``len(dims)`` maps, ``maps[i]`` ``(b, dims[i], h_i, w_i)``
        - sentence: ``(b, d)``
        - output: ``(b, out_dim, h_0, w_0)``

    Example:
        >>> import torch
        >>> fusion = ConcatProjectFusion((32, 16, 16), 24, 48)
        >>> maps = [torch.randn(2, 32, 13, 13), torch.randn(2, 16, 13, 13), torch.randn(2, 16, 26, 26)]
        >>> fusion(maps, torch.randn(2, 24)).shape
        torch.Size([2, 48, 13, 13])
    """

    def __init__(
        self,
        dims: Sequence[int],
        text_dim: int,
        out_dim: int,
        *,
        norm: Literal["batch", "group", "none"] = "batch",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.dims = _dims_tuple("dims", dims)
        self.text_dim = positive_int("text_dim", text_dim)
        self.out_dim = positive_int("out_dim", out_dim)
        self.norm = _choice("norm", norm, _NORMS)
        self.text_proj = nn.Linear(self.text_dim, self.dims[0], **factory)
        self.proj = _ConvNormAct(sum(self.dims), self.out_dim, 1, self.norm, **factory)

    def extra_repr(self) -> str:
        return f"dims={self.dims}, text_dim={self.text_dim}, out_dim={self.out_dim}, norm={self.norm!r}"

    @property
    def out_channels(self) -> int:
        """Channels of the fused map, ``out_dim``."""
        return self.out_dim

    @property
    def output_names(self) -> tuple[str, ...]:
        """Name of the output, for ``torch.onnx.export(..., output_names=...)``."""
        return ("fused",)

    def _check(self, maps: Sequence[torch.Tensor], sentence: torch.Tensor) -> None:
        count = len(self.dims)
        if isinstance(maps, torch.Tensor) or not isinstance(maps, Sequence) or len(maps) != count:
            got = f"length {len(maps)}" if isinstance(maps, Sequence) else type(maps).__name__
            raise ShapeError(
                f"maps: expected a sequence of {count} maps (b, c_i, h_i, w_i) with c_i = {self.dims}, "
                f"the high-level map first; got {got}"
            )
        dtype = self.text_proj.weight.dtype
        axes = check_shape(maps[0], "b c h w", name="maps[0]", c=self.dims[0], floating=True, dtype=dtype)
        for i in range(1, count):
            check_shape(maps[i], "b c h w", name=f"maps[{i}]", bound={"b": axes["b"]}, c=self.dims[i], floating=True, dtype=dtype)
        check_shape(sentence, "b d", name="sentence", bound={"b": axes["b"]}, d=self.text_dim, floating=True, dtype=dtype)

    def forward(self, maps: Sequence[torch.Tensor], sentence: torch.Tensor) -> torch.Tensor:
        """Fuse the sentence into the high-level map and project all levels into one map.

        Args:
            maps: the levels, the high-level map ``F_H`` first; the others may have any size.
            sentence: the sentence vector ``f_E``.

        Returns:
            The fused map at the size of ``maps[0]``.
        """
        self._check(maps, sentence)
        high = maps[0]
        size = high.shape[-2:]
        parts = [high * rearrange(self.text_proj(sentence), "b c -> b c 1 1")]
        for level in maps[1:]:
            if level.shape[-2:] != size:
                level = F.interpolate(level, size=size, mode="bilinear", align_corners=False)
            parts.append(level)
        return self.proj(torch.cat(parts, dim=1))
