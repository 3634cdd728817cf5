"""LAVT (Yang et al., CVPR 2022), written from its paper, with an optional SADLR head.

Language enters the Swin backbone after every stage (pixel-word attention + language gate,
from :mod:`rislayers.pixel_word`), and a simple top-down decoder turns the four multimodal
maps into a stride-4 map of ``decoder_dim`` channels. The baseline classifies that map with
a 1x1 conv; ``lavt_sadlr`` refines it with :class:`rislayers.DynamicQueryRefiner` instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from einops import rearrange
from torch import nn

from rislayers import LanguageGate, PixelWordAttention

from ..base import RISModel, SegmentationOutput, build_swin, build_text_encoder, foreground_logit, upsample_to
from ..config import ModelConfig
from ..registry import register_architecture
from .heads import SegmentationHead

__all__ = ["LAVT", "ConvBNReLU", "SimpleDecoder"]


class ConvBNReLU(nn.Sequential):
    """3x3 (or ``kernel``) convolution, BatchNorm, ReLU.

    Args:
        in_dim: input channels.
        out_dim: output channels.
        kernel: square kernel size (odd; padded to keep the size).

    Shape:
        - input: ``(b, in_dim, h, w)``
        - output: ``(b, out_dim, h, w)``
    """

    def __init__(self, in_dim: int, out_dim: int, kernel: int = 3) -> None:
        super().__init__(
            nn.Conv2d(in_dim, out_dim, kernel, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(out_dim),
            nn.ReLU(inplace=True),
        )


class SimpleDecoder(nn.Module):
    """LAVT's decoder: from the coarsest map, repeatedly upsample, concatenate the next finer
    map, and apply two 3x3 conv-BN-ReLU, ending at the finest (stride-4) resolution.

    Args:
        in_dims: channels of the maps, finest first.
        dim: hidden width (LAVT: 512, half of Swin-B's stage-4 channels).

    Shape:
        - feats: maps finest first, ``(b, in_dims[i], h_i, w_i)``
        - output: ``(b, dim, h_0, w_0)``
    """

    def __init__(self, in_dims: Sequence[int], dim: int) -> None:
        super().__init__()
        in_dims = list(in_dims)
        blocks = []
        prev = in_dims[-1]
        for skip in reversed(in_dims[:-1]):
            blocks.append(nn.Sequential(ConvBNReLU(prev + skip, dim), ConvBNReLU(dim, dim)))
            prev = dim
        self.blocks = nn.ModuleList(blocks)
        self.dim = dim

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        x = feats[-1]
        for block, skip in zip(self.blocks, reversed(feats[:-1])):
            x = block(torch.cat([upsample_to(x, skip.shape[-2:]), skip], dim=1))
        return x


@register_architecture("lavt")
class LAVT(RISModel):
    """LAVT with a 2-class classifier, or SADLR's refiner when ``config.plugin == "sadlr"``.

    Args:
        config: a :class:`~reference_models.config.ModelConfig` with ``architecture="lavt"``.

    Shape:
        - images: ``(b, 3, H, W)``
        - input_ids, attention_mask: ``(b, l)``
        - output: :class:`~reference_models.base.SegmentationOutput`, logits ``(b, 1, H, W)``
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.text_encoder = build_text_encoder(config)
        self.backbone = build_swin(config)
        dims = self.backbone.dims
        self.fusions = nn.ModuleList(PixelWordAttention(d, config.text_dim, dropout=0.0) for d in dims)
        self.gates = nn.ModuleList(LanguageGate(d) for d in dims)
        self.decoder = SimpleDecoder(dims, config.decoder_dim)
        self.head = SegmentationHead(config.decoder_dim, config.text_dim, config)

    def encode(self, images: torch.Tensor, text) -> list[torch.Tensor]:
        """The four multimodal maps (finest first), language fused inside the backbone."""
        x = self.backbone.stem(images)
        maps = []
        for i in range(self.backbone.num_stages):
            x = self.backbone.run_stage(i, x)
            vis = rearrange(x, "b h w c -> b c h w")
            fused = self.fusions[i](vis, text.words, text.word_mask)
            x = rearrange(self.gates[i](vis, fused), "b c h w -> b h w c")
            maps.append(self.backbone.to_nchw(i, rearrange(fused, "b c h w -> b h w c")))
        return maps

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> SegmentationOutput:
        self.check_inputs(images, input_ids, attention_mask)
        text = self.encode_text(input_ids, attention_mask)
        feats = self.decoder(self.encode(images, text))
        logits = self.head(feats, text)
        final = upsample_to(foreground_logit(logits[-1]), images.shape[-2:])
        return SegmentationOutput(logits=final, aux_logits=logits)

    def loss(self, output: SegmentationOutput, target: torch.Tensor) -> torch.Tensor:
        return self.head.loss(output.aux_logits, target)
