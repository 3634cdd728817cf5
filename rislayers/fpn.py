"""A plain feature-pyramid (FPN) decoder, S2RM's Table IV decoder baseline.

S2RM ablates its fusion with "FPN structure to decode the referent appearance ... borrowed
from [50]" (Lin et al., "Feature Pyramid Networks for Object Detection", 2017), and Table VII
compares fusions on it. Lin et al. give the top-down pathway: a 1x1 lateral conv per stage,
the coarser merged map upsampled and added, a 3x3 conv on each merged map. A mask needs one
map, so the four 3x3 outputs are resized to the finest stage and summed (the merge of the
semantic-segmentation branch of Panoptic FPN, without its extra upsampling convs) before the
classifier; ``merge="finest"`` reads the finest output alone instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ._conv_blocks import _NORMS, _check_pyramid, _ConvNormAct, _choice, _dims_tuple
from .shapes import ShapeError, check_shape, positive_int

__all__ = ["FPNDecoder"]

_MERGES = ("sum", "finest")


class FPNDecoder(nn.Module):
    """Top-down FPN over four stages, then a classifier at 4x the finest resolution.

    With ``L_k = Lateral_k(V_k)`` (1x1 conv -> norm -> ReLU to ``dim``)::

        P_4 = L_4;   P_k = L_k + Up(P_{k+1})        # top-down, k = 3, 2, 1
        O_k = Smooth_k(P_k)                          # 3x3 conv -> norm -> ReLU
        F   = sum_k Up(O_k)  ("sum")   or   O_1  ("finest")
        logits = Up4(Conv1x1(F))

    ``Up`` is bilinear resizing to the exact size of the finer map, so pyramids whose sizes
    do not halve exactly work. The output contract is :class:`~rislayers.CASGDecoder`'s:
    ``(b, num_classes, 4*h1, 4*w1)`` logits, or the decoded map ``(b, dim, h1, w1)`` with
    ``num_classes=None`` (and from :meth:`forward_features`). Language enters only through
    the fused coarsest map the caller passes; the decoder itself reads no sentence.

    Args:
        in_dims: channels ``(c1, c2, c3, c4)`` of the four maps, high resolution first.
        dim: width of the pyramid (Lin et al.: 256).
        num_classes: output channels (1 = one foreground logit); ``None`` builds no classifier.
        merge: ``"sum"`` (every level's output, resized and added) or ``"finest"`` (``O_1``;
            the 3x3 convs of the coarser levels are then not built, as nothing reads them).
        norm: ``"batch"``, ``"group"`` (gcd(c, 32) groups) or ``"none"`` (conv bias).
        align_corners: passed to every bilinear resizing.
        device: device of the parameters.
        dtype: dtype of the parameters.

    Shape:
        - features: ``[V1 (b, c1, h1, w1), V2, V3, V4 (b, c4, h4, w4)]``, high resolution
          first (no map larger than the one before it)
        - output: ``(b, num_classes, 4*h1, 4*w1)``; ``(b, dim, h1, w1)`` with ``num_classes=None``

    Example:
        >>> import torch
        >>> decoder = FPNDecoder((16, 32, 64, 128), dim=24)
        >>> features = [torch.randn(2, c, 32 // 2**i, 32 // 2**i) for i, c in enumerate((16, 32, 64, 128))]
        >>> decoder(features).shape
        torch.Size([2, 1, 128, 128])
        >>> decoder.forward_features(features).shape
        torch.Size([2, 24, 32, 32])
    """

    def __init__(
        self,
        in_dims: Sequence[int],
        *,
        dim: int = 256,
        num_classes: int | None = 1,
        merge: Literal["sum", "finest"] = "sum",
        norm: Literal["batch", "group", "none"] = "batch",
        align_corners: bool = False,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.in_dims = _dims_tuple("in_dims", in_dims, 4)
        self.dim = positive_int("dim", dim)
        self.num_classes = None if num_classes is None else positive_int("num_classes", num_classes)
        self.merge = _choice("merge", merge, _MERGES)
        self.norm = _choice("norm", norm, _NORMS)
        self.align_corners = bool(align_corners)
        self.lateral = nn.ModuleList(_ConvNormAct(c, self.dim, 1, self.norm, **factory) for c in self.in_dims)
        smoothed = 4 if self.merge == "sum" else 1
        self.smooth = nn.ModuleList(_ConvNormAct(self.dim, self.dim, 3, self.norm, **factory) for _ in range(smoothed))
        self.head = None if num_classes is None else nn.Conv2d(self.dim, num_classes, 1, **factory)

    def extra_repr(self) -> str:
        return f"in_dims={self.in_dims}, dim={self.dim}, num_classes={self.num_classes}, merge={self.merge!r}"

    @property
    def out_channels(self) -> int:
        """Channels of what :meth:`forward` returns, ``num_classes``, or ``dim`` without a classifier."""
        return self.dim if self.num_classes is None else self.num_classes

    @property
    def output_names(self) -> tuple[str, ...]:
        """Name of the output (``"logits"``, or ``"features"`` without a classifier), for ONNX export."""
        return ("logits",) if self.head is not None else ("features",)

    def _resize(self, x: torch.Tensor, size: torch.Size) -> torch.Tensor:
        if x.shape[-2:] == size:
            return x
        return F.interpolate(x, size=size, mode="bilinear", align_corners=self.align_corners)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Decode the pyramid into mask logits at 4x the resolution of ``V1``.

        Args:
            features: ``[V1, V2, V3, V4]``, high resolution first (in S2RM the last is the
                fused ``F_4^cross``).

        Returns:
            Logits ``(b, num_classes, 4*h1, 4*w1)``; without a classifier, the decoded map.
        """
        decoded = self.forward_features(features)
        if self.head is None:
            return decoded
        height, width = decoded.shape[-2:]
        logits = self.head(decoded)
        return F.interpolate(logits, size=(4 * height, 4 * width), mode="bilinear", align_corners=self.align_corners)

    def forward_features(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """The merged pyramid ``F`` at the size of ``V1`` (no classifier).

        Args:
            features: ``[V1, V2, V3, V4]``, high resolution first.

        Returns:
            ``(b, dim, h1, w1)``.
        """
        if isinstance(features, torch.Tensor) or not isinstance(features, Sequence) or len(features) != 4:
            got = f"length {len(features)}" if isinstance(features, Sequence) else type(features).__name__
            raise ShapeError(
                f"features: expected a sequence of 4 maps [V1, V2, V3, V4] (b, c_k, h_k, w_k) with "
                f"c_k = {self.in_dims}; got {got}"
            )
        dtype = self.lateral[0][0].weight.dtype
        check_shape(features[0], "b c h w", name="features[0]", c=self.in_dims[0], floating=True, dtype=dtype)
        batch = features[0].shape[0]
        for k in (1, 2, 3):
            check_shape(
                features[k], "b c h w", name=f"features[{k}]", bound={"b": batch}, c=self.in_dims[k], floating=True, dtype=dtype
            )
        _check_pyramid(features, "[V1, V2, V3, V4]")
        merged = self.lateral[3](features[3])  # P_4
        pyramid = [merged]
        for k in (2, 1, 0):
            lateral = self.lateral[k](features[k])
            merged = lateral + self._resize(merged, lateral.shape[-2:])  # P_k
            pyramid.append(merged)
        size = features[0].shape[-2:]
        if self.merge == "finest":
            return self.smooth[0](pyramid[-1])
        # pyramid is coarse-to-fine; smooth[k] belongs to level k (finest first).
        outputs = [self.smooth[3 - i](p) for i, p in enumerate(pyramid)]
        return sum(self._resize(o, size) for o in outputs)
