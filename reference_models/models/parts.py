"""The plug-in parts every baseline can take: a neck on the coarsest map and a decoder.

A neck fuses the words into the coarsest (stride-32) visual map before the decoder: S2RM's
:class:`~rislayers.SpatialRecurrentCoparser`, the tile-and-concatenate baseline
(:class:`~rislayers.TileConcatFusion`) or LAVT's :class:`~rislayers.PixelWordAttention` (added
to the map, as the coparser's product is). A pyramid decoder turns the four maps into the
stride-4 map the head reads: S2RM's :class:`~rislayers.CASGDecoder` or the
:class:`~rislayers.FPNDecoder` baseline. :class:`AlignerDecoder` is ASDA's
:class:`~rislayers.DualBranchAligner` as a decoder: it reads one coarse map and the words.
Each is built from its part config and wired by what the built module states
(``out_channels``, ``predicts``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from rislayers import (
    CASGDecoder, DualBranchAligner, FPNDecoder, PixelWordAttention, PublishedDualBranchAligner,
    PublishedSingleBranchAligner, PublishedVisualOnlyAligner, SingleBranchAligner, SpatialRecurrentCoparser,
    TileConcatFusion, VisualOnlyAligner,
)
from rislayers.casg import CASGStageOptions
from rislayers.functional import masked_mean

from ..config import AlignerConfig, CasgConfig, CoparserConfig, FpnConfig, PartConfig, PwamNeckConfig, TileConcatConfig
from ..encoders import TextFeatures
from ..registry import user_part_module

__all__ = [
    "build_neck", "run_neck", "build_pyramid_decoder", "run_pyramid_decoder", "build_aligner", "AlignerDecoder",
    "ALIGNER_HEADS", "DECODED_STRIDE",
]

#: Heads of the aligner's attention (ASDA's published code's nhead=8), wherever it is built.
ALIGNER_HEADS = 8
#: The stride of the map every decoder hands the head (the baselines' own decoders' stride 4).
DECODED_STRIDE = 4


def build_neck(
    part: CoparserConfig | TileConcatConfig | PwamNeckConfig | PartConfig,
    dim: int,
    text_dim: int,
    *,
    size: int,
    norm: str,
) -> nn.Module:
    """The neck a part config describes, for a ``dim``-channel map of ``size x size``.

    A neck of one's own (:func:`~reference_models.register_part`) is built with the same
    arguments and must state ``out_channels == dim``.

    Args:
        part: the neck's part config.
        dim: channels of the coarsest map.
        text_dim: width of the word features.
        size: side of the coarsest map (the coparser is built for it).
        norm: the convolution norm.

    Example:
        >>> neck = build_neck(TileConcatConfig(), 16, 8, size=2, norm="batch")
        >>> run_neck(neck, torch.randn(2, 16, 2, 2), TextFeatures(torch.randn(2, 3, 8), None, torch.randn(2, 8))).shape
        torch.Size([2, 16, 2, 2])
    """
    user = user_part_module(part)
    if user is not None:
        return _stating_width(user(dim, text_dim, part, size=size, norm=norm), part, dim)
    if isinstance(part, CoparserConfig):
        return SpatialRecurrentCoparser(
            dim, text_dim, size=size, pos_dim=part.pos_dim, directions=part.directions, balance=part.balance,
            shift=part.shift, implementation=part.implementation, norm=norm,
        )
    if isinstance(part, TileConcatConfig):
        return TileConcatFusion(dim, text_dim, norm=norm)
    return PixelWordAttention(dim, text_dim, norm_affine=part.norm_affine)


def run_neck(neck: nn.Module, vis: torch.Tensor, text: TextFeatures) -> torch.Tensor:
    """The coarsest map with the words fused in (PWAM's product is added to the map, as the
    coparser adds its own inside).

    Args:
        neck: a module from :func:`build_neck`.
        vis: the coarsest map ``(b, c, h, w)``.
        text: the words and their mask.

    Returns:
        The fused map, ``vis``'s shape.
    """
    fused = neck(vis, text.words, text.word_mask)
    return vis + fused if isinstance(neck, PixelWordAttention) else fused


def build_pyramid_decoder(
    part: CasgConfig | FpnConfig | PartConfig, dims: Sequence[int], text_dim: int, *, norm: str, num_classes: int | None
) -> nn.Module:
    """CASG (with its Table V-VI options) or the FPN baseline over a pyramid of ``dims``, finest first.

    The FPN is as wide as the finest map, the width of CASG's finest stage, so both hand the
    head a map of the same width (their ``out_channels``). A decoder of one's own
    (:func:`~reference_models.register_part`) is built with ``dims``, ``text_dim``, its config
    and ``norm``, and states its ``out_channels``.

    Args:
        part: the decoder's part config.
        dims: channels of the maps, finest first.
        text_dim: width of the word features (CASG reads their mean).
        norm: the convolution norm.
        num_classes: channels of a final classifier, or None to return the decoded map.

    Example:
        >>> decoder = build_pyramid_decoder(FpnConfig(), (8, 16, 32, 64), 8, norm="group", num_classes=None)
        >>> decoder.out_channels
        8
    """
    dims = tuple(dims)
    user = user_part_module(part)
    if user is not None:
        if num_classes is not None:
            raise ValueError(f"decoder: {part.kind} hands the head a map; this model needs a decoder that classifies ({num_classes} channels)")
        return _stating_width(user(dims, text_dim, part, norm=norm), part)
    if isinstance(part, FpnConfig):
        return FPNDecoder(dims, dim=dims[0], num_classes=num_classes, norm=norm)
    stage = CASGStageOptions(
        gate=part.activation, channel_attention=part.channel, spatial_attention=part.spatial, language=part.language
    )
    return CASGDecoder(dims, text_dim, num_classes=num_classes, num_stages=part.stages, norm=norm, stage=stage)


def run_pyramid_decoder(decoder: nn.Module, maps: Sequence[torch.Tensor], text: TextFeatures) -> torch.Tensor:
    """Decode ``maps`` (finest first); CASG also reads the mean of the real words (S2RM's ``AvgP(T)``).

    Args:
        decoder: a module from :func:`build_pyramid_decoder`.
        maps: the pyramid, finest first.
        text: the words and their mask.

    Returns:
        The decoded map (or the classifier's logits).
    """
    if isinstance(decoder, FPNDecoder):
        return decoder(list(maps))
    if isinstance(decoder, CASGDecoder):
        return decoder(list(maps), masked_mean(text.words, text.word_mask))
    return decoder(list(maps), text.words, text.word_mask)  # one of one's own


def _stating_width(module: nn.Module, part: PartConfig, width: int | None = None) -> nn.Module:
    """A part of one's own, checked to state its ``out_channels`` (``width`` where the model needs it)."""
    out = getattr(module, "out_channels", None)
    if not isinstance(out, int) or isinstance(out, bool) or out < 1 or (width is not None and out != width):
        needed = f"{width}, the channels of the map it gets" if width is not None else "a positive integer"
        raise ValueError(f"{part.kind}: its module must state out_channels = {needed}; got {out!r}")
    return module


# (branches, blocks) -> the aligner class: the paper's, its Table 2 variants, and the released code's.
_ALIGNERS = {
    ("dual", "pre_norm"): DualBranchAligner, ("dual", "published"): PublishedDualBranchAligner,
    ("single", "pre_norm"): SingleBranchAligner, ("single", "published"): PublishedSingleBranchAligner,
    ("visual", "pre_norm"): VisualOnlyAligner, ("visual", "published"): PublishedVisualOnlyAligner,
}


def build_aligner(part: AlignerConfig, text_dim: int, *, norm: str, upsample_steps: int, branches: str | None = None) -> nn.Module:
    """The aligner class ``part`` names (its branches and blocks), as ASDA builds it.

    Args:
        part: the aligner's part config.
        text_dim: width of the word features.
        norm: the convolution norm.
        upsample_steps: 2x upsamplings of its coarse-to-fine branch.
        branches: ``"visual"`` builds the coarse-to-fine branch alone, for a head of its own
            (SADLR's refiner reads its ``decode``); None: ``part.branches``.

    Example:
        >>> aligner = build_aligner(AlignerConfig(dim=32, masks=4, layers=1), 16, norm="group", upsample_steps=2)
        >>> type(aligner).__name__, aligner.decoded_channels
        ('DualBranchAligner', 16)
    """
    branches = part.branches if branches is None else branches
    cls = _ALIGNERS[branches, part.blocks]
    # The mask bases and the logit offset are the dual branch's; the one-channel variants'
    # mask head has a bias of its own, and the visual-only one reads no words.
    options = {}
    if branches != "visual":
        options["word_mask"] = part.word_mask
    if branches == "dual":
        options.update(num_masks=part.masks, output_bias=part.output_bias)
    return cls(
        part.dim, text_dim, num_layers=part.layers, num_heads=ALIGNER_HEADS, upsample_steps=upsample_steps, norm=norm, **options,
    )


class AlignerDecoder(nn.Module):
    """ASDA's aligner as a baseline's decoder: one coarse multimodal map and the words, to stride 4.

    The map (the one the baseline's own decoder starts from: LAVT's and VLT's stride-32
    multimodal map after the neck, LTS's located stride-16 map) is projected to the aligner's
    width by a 1x1 convolution (the identity when the widths agree, as in ASDA), and the
    aligner's coarse-to-fine branch upsamples it to stride 4 (``log2(stride / 4)`` steps),
    where the other decoders hand over their maps. With ``predicts`` the aligner's word-guided
    mask assembly is the output: one foreground logit, the prediction itself. Without it the
    coarse-to-fine branch alone is (:meth:`~rislayers.DualBranchAligner.decode`), for a head
    of its own (SADLR's refiner, as on ASDA); the words then go to that head.

    Args:
        part: the aligner's part config.
        in_channels: channels of the coarse map.
        text_dim: width of the word features.
        stride: the coarse map's stride (4 times a power of 2).
        norm: the convolution norm.
        predicts: output the aligner's logit (the classifier's place) or its decoded map.

    Shape:
        - coarse: ``(b, in_channels, h, w)``
        - output: ``(b, out_channels, h * stride / 4, w * stride / 4)``: 1 channel (a logit) with
          ``predicts``, else the aligner's ``decoded_channels``

    Example:
        >>> decoder = AlignerDecoder(AlignerConfig(dim=32, masks=4, layers=1), 24, 16, stride=16, norm="group", predicts=True)
        >>> words = TextFeatures(torch.randn(2, 5, 16), torch.ones(2, 5, dtype=torch.bool), torch.randn(2, 16))
        >>> decoder(torch.randn(2, 24, 3, 3), words).shape, decoder.out_channels
        (torch.Size([2, 1, 12, 12]), 1)
    """

    def __init__(
        self, part: AlignerConfig, in_channels: int, text_dim: int, *, stride: int, norm: str, predicts: bool
    ) -> None:
        super().__init__()
        steps = math.log2(stride / DECODED_STRIDE) if stride >= DECODED_STRIDE else -1.0
        if steps < 0 or steps != int(steps):
            raise ValueError(f"stride: the aligner upsamples by powers of 2 to stride {DECODED_STRIDE}; expected 4, 8, 16, 32 ...; got {stride}")
        self.proj = nn.Identity() if in_channels == part.dim else nn.Conv2d(in_channels, part.dim, 1)
        self.aligner = build_aligner(part, text_dim, norm=norm, upsample_steps=int(steps), branches=None if predicts else "visual")
        #: whether the output is the foreground logit (the prediction) rather than a decoded map.
        self.predicts = predicts
        #: channels of the output.
        self.out_channels = self.aligner.out_channels if predicts else self.aligner.decoded_channels

    def forward(self, coarse: torch.Tensor, text: TextFeatures) -> torch.Tensor:
        coarse = self.proj(coarse)
        if self.predicts:
            return self.aligner(coarse, text.words, text.word_mask).logits
        return self.aligner.decode(coarse)
