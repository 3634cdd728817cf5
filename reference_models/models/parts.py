"""The plug-in parts every baseline can take: a neck on the coarsest map and a pyramid decoder.

A neck fuses the words into the coarsest (stride-32) visual map before the decoder: S2RM's
:class:`~rislayers.SpatialRecurrentCoparser`, the tile-and-concatenate baseline
(:class:`~rislayers.TileConcatFusion`) or LAVT's :class:`~rislayers.PixelWordAttention` (added
to the map, as the coparser's product is). A pyramid decoder turns the four maps into the
stride-4 map the head reads: S2RM's :class:`~rislayers.CASGDecoder` or the
:class:`~rislayers.FPNDecoder` baseline. Each is built from its part config and wired by what
the built module states (``out_channels``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from rislayers import CASGDecoder, FPNDecoder, PixelWordAttention, SpatialRecurrentCoparser, TileConcatFusion
from rislayers.casg import CASGStageOptions
from rislayers.functional import masked_mean

from ..config import CasgConfig, CoparserConfig, FpnConfig, PwamNeckConfig, TileConcatConfig
from ..encoders import TextFeatures

__all__ = ["build_neck", "run_neck", "build_pyramid_decoder", "run_pyramid_decoder"]


def build_neck(
    part: CoparserConfig | TileConcatConfig | PwamNeckConfig,
    dim: int,
    text_dim: int,
    *,
    size: int,
    norm: str,
) -> nn.Module:
    """The neck a part config describes, for a ``dim``-channel map of ``size x size``.

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
    part: CasgConfig | FpnConfig, dims: Sequence[int], text_dim: int, *, norm: str, num_classes: int | None
) -> nn.Module:
    """CASG (with its Table V-VI options) or the FPN baseline over a pyramid of ``dims``, finest first.

    The FPN is as wide as the finest map, the width of CASG's finest stage, so both hand the
    head a map of the same width (their ``out_channels``).

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
    return decoder(list(maps), masked_mean(text.words, text.word_mask))
