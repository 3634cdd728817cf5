"""The variants of ASDA's aligner: the released code's blocks, and the one-channel ablations.

Each is its own class because it changes what the layer builds or what its outputs mean
(ASDA Table 2): :class:`PublishedDualBranchAligner` (the released code's attention blocks),
:class:`SingleBranchAligner` (row (e)) and :class:`VisualOnlyAligner` (rows (a)-(d)), and
the one-channel ones with the released blocks. All share
:class:`~rislayers.aligner.DualBranchAligner`'s forward and outputs
(:class:`~rislayers.aligner.AlignerOutput`).
"""

from __future__ import annotations

from typing import Literal

import torch

from .aligner import _WordGuidedAligner

__all__ = [
    "PublishedDualBranchAligner",
    "SingleBranchAligner",
    "PublishedSingleBranchAligner",
    "VisualOnlyAligner",
    "PublishedVisualOnlyAligner",
]


class PublishedDualBranchAligner(_WordGuidedAligner):
    """:class:`~rislayers.aligner.DualBranchAligner` with the released code's attention blocks (ASDA's code, not its paper).

    The blocks of ``model/transformer.py`` of swagger-coder/ASDA. The coarse map is
    rectified (ReLU) first; each visual block is a post-norm transformer encoder layer,
    ``x = LN(x + Attn(x + pos, x + pos, x))`` then ``x = LN(x + MLP(x))``, with the MLP's
    hidden width equal to ``dim``, and the stack still ends with the final LayerNorm (the
    code's encoder has one after its post-norm layers); the position code counts raw
    positions ``1..h`` and ``1..w`` (DETR's sine code without normalisation). The word block
    is the code's post-norm one: the words pass ``ReLU(Linear(., no bias))`` to ``dim``;
    queries, keys and values each pass ``ReLU(Linear)`` before the attention's own
    projections, then ``x = LN(x + Attn)`` and ``LN(x + MLP(x))`` (``mlp_ratio`` sizes this
    MLP only: 4, the code's 2048 at 512). Everything else, outputs included, is
    :class:`~rislayers.aligner.DualBranchAligner`'s.

    Args:
        dim: as in :class:`~rislayers.aligner.DualBranchAligner`.
        text_dim: as in :class:`~rislayers.aligner.DualBranchAligner`.
        num_masks: as in :class:`~rislayers.aligner.DualBranchAligner`.
        num_layers: as in :class:`~rislayers.aligner.DualBranchAligner`.
        num_heads: as in :class:`~rislayers.aligner.DualBranchAligner`.
        upsample_steps: as in :class:`~rislayers.aligner.DualBranchAligner`.
        mlp_ratio: hidden width of the word block's MLP, as a multiple of ``dim``.
        decoder_dim: as in :class:`~rislayers.aligner.DualBranchAligner`.
        norm: as in :class:`~rislayers.aligner.DualBranchAligner`.
        upsample_mode: as in :class:`~rislayers.aligner.DualBranchAligner`.
        word_mask: as in :class:`~rislayers.aligner.DualBranchAligner` (``False`` is the released code).
        output_bias: as in :class:`~rislayers.aligner.DualBranchAligner` (``False`` is the released code).
        dropout: as in :class:`~rislayers.aligner.DualBranchAligner` (0.1 in the released code).
        device: device of the parameters.
        dtype: dtype of the parameters.

    Shape:
        As :class:`~rislayers.aligner.DualBranchAligner`.

    Example:
        >>> import torch
        >>> aligner = PublishedDualBranchAligner(32, 16, num_masks=8, num_heads=4, upsample_steps=2)
        >>> out = aligner(torch.randn(2, 32, 5, 6), torch.randn(2, 7, 16))
        >>> out.logits.shape, out.masks.shape, out.coefficients.shape
        (torch.Size([2, 1, 20, 24]), torch.Size([2, 8, 20, 24]), torch.Size([2, 8]))
    """

    _published = True


class SingleBranchAligner(_WordGuidedAligner):
    """One branch, as in CRIS and ReSTR: the word-fused map decoded to one logit (ASDA Table 2 (e)).

    ``F_A`` (the self-attended coarse map of :class:`~rislayers.aligner.DualBranchAligner`) attends to the
    words with the same word-attention block, and the segmentation decoder reads that
    ``F_fine``; a 1x1 conv gives one channel. ``logits`` is that raw channel (the mask
    head's own bias plays the offset's part), ``masks`` its sigmoid and ``coefficients`` an
    empty ``(b, 0)`` tensor; no coefficient head is built.

    Args:
        dim: as in :class:`~rislayers.aligner.DualBranchAligner`.
        text_dim: as in :class:`~rislayers.aligner.DualBranchAligner`.
        num_layers: as in :class:`~rislayers.aligner.DualBranchAligner`.
        num_heads: as in :class:`~rislayers.aligner.DualBranchAligner`.
        upsample_steps: as in :class:`~rislayers.aligner.DualBranchAligner`.
        mlp_ratio: as in :class:`~rislayers.aligner.DualBranchAligner`.
        decoder_dim: as in :class:`~rislayers.aligner.DualBranchAligner`.
        norm: as in :class:`~rislayers.aligner.DualBranchAligner`.
        upsample_mode: as in :class:`~rislayers.aligner.DualBranchAligner`.
        word_mask: as in :class:`~rislayers.aligner.DualBranchAligner`.
        dropout: as in :class:`~rislayers.aligner.DualBranchAligner`.
        device: device of the parameters.
        dtype: dtype of the parameters.

    Shape:
        - feats: ``(b, c, h, w)``; words ``(b, l, d)``; word_mask ``(b, l)`` or ``None``
        - output: :class:`~rislayers.aligner.AlignerOutput` with logits and masks ``(b, 1, h*2^s, w*2^s)`` and
          coefficients ``(b, 0)``

    Example:
        >>> import torch
        >>> single = SingleBranchAligner(32, 16, num_heads=4, upsample_steps=2)
        >>> out = single(torch.randn(2, 32, 5, 6), torch.randn(2, 7, 16))
        >>> out.logits.shape, out.masks.shape, out.coefficients.shape
        (torch.Size([2, 1, 20, 24]), torch.Size([2, 1, 20, 24]), torch.Size([2, 0]))
    """

    _branches = "single"

    def __init__(
        self,
        dim: int,
        text_dim: int,
        *,
        num_layers: int = 2,
        num_heads: int = 8,
        upsample_steps: int = 3,
        mlp_ratio: float = 4.0,
        decoder_dim: int | None = None,
        norm: Literal["batch", "group", "none"] = "batch",
        upsample_mode: Literal["nearest", "bilinear"] = "nearest",
        word_mask: bool = True,
        dropout: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            dim, text_dim, num_layers=num_layers, num_heads=num_heads, upsample_steps=upsample_steps,
            mlp_ratio=mlp_ratio, decoder_dim=decoder_dim, norm=norm, upsample_mode=upsample_mode,
            word_mask=word_mask, dropout=dropout, device=device, dtype=dtype,
        )


class PublishedSingleBranchAligner(SingleBranchAligner):
    """:class:`SingleBranchAligner` with the released code's blocks (see :class:`PublishedDualBranchAligner`).

    Args:
        dim: as in :class:`SingleBranchAligner`.
        text_dim: as in :class:`SingleBranchAligner`.
        num_layers: as in :class:`SingleBranchAligner`.
        num_heads: as in :class:`SingleBranchAligner`.
        upsample_steps: as in :class:`SingleBranchAligner`.
        mlp_ratio: hidden width of the word block's MLP, as a multiple of ``dim``.
        decoder_dim: as in :class:`SingleBranchAligner`.
        norm: as in :class:`SingleBranchAligner`.
        upsample_mode: as in :class:`SingleBranchAligner`.
        word_mask: as in :class:`SingleBranchAligner`.
        dropout: as in :class:`SingleBranchAligner`.
        device: device of the parameters.
        dtype: dtype of the parameters.

    Shape:
        As :class:`SingleBranchAligner`.

    Example:
        >>> import torch
        >>> single = PublishedSingleBranchAligner(32, 16, num_heads=4, upsample_steps=1)
        >>> single(torch.randn(2, 32, 5, 6), torch.randn(2, 7, 16)).logits.shape
        torch.Size([2, 1, 10, 12])
    """

    _published = True


class VisualOnlyAligner(_WordGuidedAligner):
    """The segmentation decoder without words: ``F_A`` decoded to one logit (ASDA Table 2 (a)-(d)).

    The self-attended coarse map of :class:`~rislayers.aligner.DualBranchAligner` goes straight to the
    segmentation decoder, with the outputs of :class:`SingleBranchAligner`. Neither a word
    block nor a coefficient head is built; the words are still checked (one call signature
    for every aligner) but never reach the output.

    Args:
        dim: as in :class:`~rislayers.aligner.DualBranchAligner`.
        text_dim: channels ``d`` of the words it is called with (checked, not read).
        num_layers: as in :class:`~rislayers.aligner.DualBranchAligner`.
        num_heads: as in :class:`~rislayers.aligner.DualBranchAligner`.
        upsample_steps: as in :class:`~rislayers.aligner.DualBranchAligner`.
        mlp_ratio: as in :class:`~rislayers.aligner.DualBranchAligner` (the visual blocks' MLP).
        decoder_dim: as in :class:`~rislayers.aligner.DualBranchAligner`.
        norm: as in :class:`~rislayers.aligner.DualBranchAligner`.
        upsample_mode: as in :class:`~rislayers.aligner.DualBranchAligner`.
        dropout: as in :class:`~rislayers.aligner.DualBranchAligner`.
        device: device of the parameters.
        dtype: dtype of the parameters.

    Shape:
        As :class:`SingleBranchAligner`.

    Example:
        >>> import torch
        >>> visual = VisualOnlyAligner(32, 16, num_heads=4, upsample_steps=2)
        >>> visual(torch.randn(2, 32, 5, 6), torch.randn(2, 7, 16)).masks.shape
        torch.Size([2, 1, 20, 24])
    """

    _branches = "visual"

    def __init__(
        self,
        dim: int,
        text_dim: int,
        *,
        num_layers: int = 2,
        num_heads: int = 8,
        upsample_steps: int = 3,
        mlp_ratio: float = 4.0,
        decoder_dim: int | None = None,
        norm: Literal["batch", "group", "none"] = "batch",
        upsample_mode: Literal["nearest", "bilinear"] = "nearest",
        dropout: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            dim, text_dim, num_layers=num_layers, num_heads=num_heads, upsample_steps=upsample_steps,
            mlp_ratio=mlp_ratio, decoder_dim=decoder_dim, norm=norm, upsample_mode=upsample_mode,
            dropout=dropout, device=device, dtype=dtype,
        )


class PublishedVisualOnlyAligner(VisualOnlyAligner):
    """:class:`VisualOnlyAligner` with the released code's visual blocks (see :class:`PublishedDualBranchAligner`).

    Args:
        dim: as in :class:`VisualOnlyAligner`.
        text_dim: as in :class:`VisualOnlyAligner`.
        num_layers: as in :class:`VisualOnlyAligner`.
        num_heads: as in :class:`VisualOnlyAligner`.
        upsample_steps: as in :class:`VisualOnlyAligner`.
        mlp_ratio: not read: the released visual blocks' MLP is ``dim`` wide (accepted so the
            one-channel classes share a signature).
        decoder_dim: as in :class:`VisualOnlyAligner`.
        norm: as in :class:`VisualOnlyAligner`.
        upsample_mode: as in :class:`VisualOnlyAligner`.
        dropout: as in :class:`VisualOnlyAligner`.
        device: device of the parameters.
        dtype: dtype of the parameters.

    Shape:
        As :class:`SingleBranchAligner`.

    Example:
        >>> import torch
        >>> visual = PublishedVisualOnlyAligner(32, 16, num_heads=4, upsample_steps=1)
        >>> visual(torch.randn(2, 32, 5, 6), torch.randn(2, 7, 16)).logits.shape
        torch.Size([2, 1, 10, 12])
    """

    _published = True
