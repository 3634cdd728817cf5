"""The tile-and-concatenate fusion of early RIS work, S2RM's Table IV baseline.

Hu et al. (2016) and its followers fuse a sentence with a visual map by tiling the sentence
vector over every position, concatenating it to the visual channels and mixing the two with
a convolution. S2RM's ablation (Table IV, "W. Tile & Concat.") puts this block where its
coparser goes, to measure what the coparser adds.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ._conv_blocks import _choice
from .functional import _masked_mean, zero_padding
from .norms import norm2d
from .shapes import check_words_inputs, positive_int

__all__ = ["TileConcatFusion"]


class TileConcatFusion(nn.Module):
    """Tile the sentence over the map, concatenate, project: ``ReLU(BN(Conv1x1(Cat(V, Tile(s)))))``.

    ``s`` is the mean of the real words (``AvgP(T)``, as S2RM's Eq. 1 reads the sentence;
    padding never reaches it, and a sentence of padding only gives ``s = 0``). The 1x1 conv
    maps the ``c + d`` concatenated channels back to ``c`` (no bias: BatchNorm follows), so
    the block drops in wherever a ``(feats, words, word_mask) -> (b, c, h, w)`` fusion goes.
    The output replaces the visual map (no residual): the baseline has nothing else to
    carry the visual channels through.

    The conv of a concatenation is the sum of the convs of its parts, so the tiled sentence
    is never materialised: its part of the conv is one ``(b, d) x (d, c)`` product added to
    every position (the parameters are those of ``Conv2d(c + d, c, 1)``).

    Args:
        dim: channels ``c`` of the visual map (and of the output).
        text_dim: channels ``d`` of the word features.
        norm: ``"batch"`` (the baseline's ``BN``) or ``"group"`` (:func:`~rislayers.norms.norm2d`;
            batch-independent). No ``"none"``: the conv has no bias.
        device: device of the parameters.
        dtype: dtype of the parameters.

    Shape:
        - feats: ``(b, c, h, w)``
        - words: ``(b, l, d)``
        - word_mask: ``(b, l)`` bool, True = real token; ``None`` = all real (pass
          ``~key_padding_mask`` if you hold PyTorch's True-on-padding mask)
        - output: ``(b, c, h, w)``

    Example:
        >>> import torch
        >>> fusion = TileConcatFusion(32, 24)
        >>> mask = torch.tensor([[True, True, False], [True, True, True]])
        >>> fusion(torch.randn(2, 32, 5, 6), torch.randn(2, 3, 24), mask).shape
        torch.Size([2, 32, 5, 6])
        >>> fusion.proj.in_channels
        56
    """

    def __init__(self, dim: int, text_dim: int, *, norm: str = "batch", device=None, dtype=None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.dim = positive_int("dim", dim)
        self.text_dim = positive_int("text_dim", text_dim)
        self.proj = nn.Conv2d(self.dim + self.text_dim, self.dim, 1, bias=False, **factory)
        self.norm = norm2d(_choice("norm", norm, ("batch", "group")), self.dim, **factory)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, text_dim={self.text_dim}"

    @property
    def out_channels(self) -> int:
        """Channels of the fused map, ``dim``, those of ``feats``."""
        return self.dim

    @property
    def output_names(self) -> tuple[str, ...]:
        """Name of the output, for ``torch.onnx.export(..., output_names=...)``."""
        return ("fused",)

    def forward(self, feats: torch.Tensor, words: torch.Tensor, word_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Fuse the sentence into every position of the map.

        Args:
            feats: the visual map.
            words: word features.
            word_mask: bool, True for real tokens; ``None`` means every token is real.

        Returns:
            The fused map, the shape and dtype of ``feats``.
        """
        dtype = self.proj.weight.dtype
        check_words_inputs(self, feats, words, word_mask, dim=self.dim, text_dim=self.text_dim, dtype=dtype)
        sentence = _masked_mean(zero_padding(words, word_mask), word_mask)  # AvgP(T), (b, d)
        w_vis, w_text = self.proj.weight.flatten(1).split((self.dim, self.text_dim), dim=1)
        projected = F.conv2d(feats, rearrange(w_vis, "o c -> o c 1 1"))
        projected = projected + rearrange(F.linear(sentence, w_text), "b c -> b c 1 1")
        return F.relu(self.norm(projected))
