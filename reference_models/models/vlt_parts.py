"""VLT's released-code reading of how the balanced query answers reach its mask decoder.

``ModelConfig.vlt_response="spatial"``. In VLT's TensorFlow release (``model/transfromer_model.py``,
``ref_tf``; ``model/vlt_model.py``, ``vlt_transformer`` and ``vlt_postproc``) the transformer
runs at stride 16; each decoder answer, scaled by its query-balance confidence, is mapped to
an ``h x w`` response map, and the mask decoder reads the ``k`` maps alone: 3x3 convs at
stride 16, then one after each 2x upsampling. :class:`QueryResponseMaps` and
:class:`ResponseDecoder` are those two steps, written from that description; the model that
uses them is :class:`reference_models.models.vlt.VLT`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from rislayers import ShapeError, check_shape
from rislayers.functional import sine_position_encoding_2d

from ..base import upsample_to
from .lavt import ConvBNReLU

__all__ = ["QueryResponseMaps", "ResponseDecoder", "RESPONSE_TOP_CONVS"]

# 3x3 conv-BN-ReLU layers of vlt_response="spatial" at stride 16, before the first
# upsampling: VLT's code has one after the response maps and two more in its mask decoder.
RESPONSE_TOP_CONVS = 3


class QueryResponseMaps(nn.Module):
    """VLT's released reading of the balanced answers: one ``h x w`` response map per query.

    Each answer is scaled by its confidence and read out at every position ``p`` of the
    transformer's map as ``relu(<answer, w_p> + b_p)``. VLT's code reads it out with a fully
    connected layer to ``h * w`` outputs, one weight vector per position, which fixes the
    input size; here ``w_p`` and ``b_p`` are linear in the 2-D sine position encoding of
    ``p``, so the same layer serves every size (and, where the ``h * w`` encodings are
    linearly independent, can express any per-position layer).

    Args:
        dim: answer width ``c`` (a multiple of 4, for the position encoding).

    Shape:
        - responses: ``(b, k, c)``; confidence: ``(b, k)``
        - output: ``(b, k, h, w)``, non-negative

    Example:
        >>> maps = QueryResponseMaps(32)
        >>> maps(torch.randn(2, 4, 32), torch.rand(2, 4), size=(5, 6)).shape
        torch.Size([2, 4, 5, 6])
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim < 4 or dim % 4 != 0:
            raise ValueError(f"dim: expected a positive multiple of 4 (2-D sine position encoding); got {dim}")
        self.dim = dim
        self.position_weight = nn.Linear(dim, dim)
        self.position_bias = nn.Linear(dim, 1)

    def forward(self, responses: torch.Tensor, confidence: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        axes = check_shape(responses, "b k c", name="responses", c=self.dim)
        check_shape(confidence, "b k", name="confidence", bound=axes)
        h, w = size
        pos = sine_position_encoding_2d(h, w, self.dim, device=responses.device, dtype=responses.dtype)
        pos = rearrange(pos, "c h w -> (h w) c")
        weighted = responses * rearrange(confidence, "b k -> b k 1")
        maps = torch.einsum("bkc,nc->bkn", weighted, self.position_weight(pos))
        maps = F.relu(maps + rearrange(self.position_bias(pos), "n 1 -> 1 1 n"))
        return rearrange(maps, "b k (h w) -> b k h w", h=h, w=w)


class ResponseDecoder(nn.Module):
    """VLT's released mask decoder: 3x3 conv-BN-ReLU layers on the response maps alone.

    ``top_convs`` layers at the input resolution (the first from the ``k`` maps to ``dim``
    channels), then, for each requested size, a bilinear upsampling and one more layer. No
    backbone map joins in (VLT's code has such a concatenation commented out).

    Args:
        in_dim: channels of the input (``k`` response maps).
        dim: output and hidden width.
        top_convs: layers before the first upsampling.
        steps: upsamplings, each followed by one layer.
        norm: the convolutions' norm, ``"batch"`` or ``"group"``.

    Shape:
        - maps: ``(b, in_dim, h, w)``; sizes: ``steps`` ``(height, width)``, coarse to fine
        - output: ``(b, dim, *sizes[-1])``

    Example:
        >>> dec = ResponseDecoder(4, 16, top_convs=2, steps=2)
        >>> dec(torch.randn(1, 4, 4, 4), [(8, 8), (16, 16)]).shape
        torch.Size([1, 16, 16, 16])
    """

    def __init__(self, in_dim: int, dim: int, *, top_convs: int, steps: int, norm: str = "batch") -> None:
        super().__init__()
        if top_convs < 1:
            raise ValueError(f"top_convs: expected a positive integer; got {top_convs}")
        if steps < 0:
            raise ValueError(f"steps: expected a non-negative integer; got {steps}")
        self.in_dim = in_dim
        #: channels of the decoded map.
        self.out_channels = dim
        self.top = nn.Sequential(ConvBNReLU(in_dim, dim, norm=norm), *(ConvBNReLU(dim, dim, norm=norm) for _ in range(top_convs - 1)))
        self.steps = nn.ModuleList(ConvBNReLU(dim, dim, norm=norm) for _ in range(steps))

    def forward(self, maps: torch.Tensor, sizes: Sequence[tuple[int, int]]) -> torch.Tensor:
        check_shape(maps, "b c h w", name="maps", c=self.in_dim)
        if len(sizes) != len(self.steps):
            expected = f"{len(self.steps)} (height, width) pairs, coarse to fine"
            raise ShapeError(f"sizes: expected {expected}; got {len(sizes)}")
        x = self.top(maps)
        for layer, size in zip(self.steps, sizes):
            x = layer(upsample_to(x, tuple(size)))
        return x
