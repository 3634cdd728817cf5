"""LAVT (Yang et al., CVPR 2022), written from its paper, with an optional SADLR head.

Language enters the Swin backbone after every stage (pixel-word attention + language gate,
from :mod:`rislayers.pixel_word`), and a simple top-down decoder turns the four multimodal
maps into a stride-4 map of ``decoder_dim`` channels. The baseline classifies that map with
a 1x1 conv; ``lavt_sadlr`` refines it with :class:`rislayers.DynamicQueryRefiner` instead.

Three configuration fields read LAVT's published code where it differs from this one, so its
released weights load and compute what they computed there (``python -m
reference_models.convert lavt``): ``pwam_norm_affine=False`` (PWAM's instance norms without
scale and shift), ``decoder_align_corners=True`` (its bilinear resizes) and
``lavt_last_gate=True`` (its last-stage language gate, built but never read).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from einops import rearrange
from torch import nn

from rislayers import LanguageGate, PixelWordAttention
from rislayers.norms import norm2d

from ..base import RISModel, SegmentationOutput, build_swin, build_text_encoder, foreground_logit, upsample_to
from ..config import AlignerConfig, ClassifierHeadConfig, LavtConfig, LavtDecoderConfig
from ..registry import register_architecture
from .heads import SegmentationHead
from .parts import AlignerDecoder, build_neck, build_pyramid_decoder, run_neck, run_pyramid_decoder

__all__ = ["LAVT", "ConvBNReLU", "SimpleDecoder"]


class ConvBNReLU(nn.Sequential):
    """3x3 (or ``kernel``) convolution, a norm (BatchNorm by default), ReLU.

    Args:
        in_dim: input channels.
        out_dim: output channels.
        kernel: square kernel size (odd; padded to keep the size).
        norm: ``"batch"`` or ``"group"`` (:func:`rislayers.norms.norm2d`).

    Shape:
        - input: ``(b, in_dim, h, w)``
        - output: ``(b, out_dim, h, w)``
    """

    def __init__(self, in_dim: int, out_dim: int, kernel: int = 3, *, norm: str = "batch") -> None:
        super().__init__(
            nn.Conv2d(in_dim, out_dim, kernel, padding=kernel // 2, bias=False),
            norm2d(norm, out_dim),
            nn.ReLU(inplace=True),
        )


class SimpleDecoder(nn.Module):
    """LAVT's decoder: from the coarsest map, repeatedly upsample, concatenate the next finer
    map, and apply two 3x3 conv-BN-ReLU, ending at the finest (stride-4) resolution.

    Args:
        in_dims: channels of the maps, finest first.
        dim: hidden width (LAVT: 512, half of Swin-B's stage-4 channels).
        align_corners: bilinear upsampling with ``align_corners=True`` (LAVT's code).
        norm: the convolutions' norm, ``"batch"`` or ``"group"``.

    Shape:
        - feats: maps finest first, ``(b, in_dims[i], h_i, w_i)``
        - output: ``(b, dim, h_0, w_0)``

    Example:
        >>> import torch
        >>> decoder = SimpleDecoder([8, 16], 12, align_corners=True)
        >>> decoder([torch.randn(2, 8, 8, 8), torch.randn(2, 16, 4, 4)]).shape
        torch.Size([2, 12, 8, 8])
    """

    def __init__(self, in_dims: Sequence[int], dim: int, *, align_corners: bool = False, norm: str = "batch") -> None:
        super().__init__()
        in_dims = list(in_dims)
        blocks = []
        prev = in_dims[-1]
        for skip in reversed(in_dims[:-1]):
            blocks.append(nn.Sequential(ConvBNReLU(prev + skip, dim, norm=norm), ConvBNReLU(dim, dim, norm=norm)))
            prev = dim
        self.blocks = nn.ModuleList(blocks)
        self.dim = dim
        #: channels of the decoded map.
        self.out_channels = dim
        self.align_corners = align_corners

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        x = feats[-1]
        for block, skip in zip(self.blocks, reversed(feats[:-1])):
            x = block(torch.cat([upsample_to(x, skip.shape[-2:], align_corners=self.align_corners), skip], dim=1))
        return x


def _drop_unused_gate_hook(module: LAVT, state: dict[str, torch.Tensor], prefix: str, *_) -> None:
    module.drop_unused_gate(state, prefix)


@register_architecture("lavt")
class LAVT(RISModel):
    """LAVT with a 2-class classifier, or SADLR's refiner as its head.

    The last stage's language gate is not built unless ``config.fusion.last_gate``: its
    output would be the backbone stream of a fifth stage, which does not exist. Weights saved
    with it (by earlier versions, or LAVT's releases) still load into a model without it:
    :meth:`drop_unused_gate` removes those keys, with a note.

    Args:
        config: a :class:`~reference_models.config.LavtConfig`.

    Shape:
        - images: ``(b, 3, H, W)``
        - input_ids, attention_mask: ``(b, l)``
        - output: :class:`~reference_models.base.SegmentationOutput`, logits ``(b, 1, H, W)``
    """

    def __init__(self, config: LavtConfig) -> None:
        super().__init__(config)
        self.text_encoder = build_text_encoder(config.text)
        self.backbone = build_swin(config.vision, config.image_size)
        dims, text_dim = self.backbone.dims, self.text_encoder.out_dim
        fusion, decoder = config.fusion, config.decoder
        self.fusions = nn.ModuleList(PixelWordAttention(d, text_dim, dropout=0.0, norm_affine=fusion.norm_affine) for d in dims)
        self.gates = nn.ModuleList(LanguageGate(d) for d in (dims if fusion.last_gate else dims[:-1]))
        self.neck = None
        if config.neck is not None:  # a plug-in on the stride-32 map, built before the decoder
            size = config.image_size // self.backbone.strides[-1]
            self.neck = build_neck(config.neck, dims[-1], text_dim, size=size, norm=config.norm)
        self.align_corners = isinstance(decoder, LavtDecoderConfig) and decoder.align_corners
        if isinstance(decoder, LavtDecoderConfig):
            self.decoder = SimpleDecoder(dims, decoder.dim, align_corners=decoder.align_corners, norm=config.norm)
        elif isinstance(decoder, AlignerConfig):  # ASDA's aligner over the stride-32 multimodal map and the words
            predicts = isinstance(config.head, ClassifierHeadConfig)
            stride = self.backbone.strides[-1]
            self.decoder = AlignerDecoder(decoder, dims[-1], text_dim, stride=stride, norm=config.norm, predicts=predicts)
        else:  # a plug-in decoder over the four multimodal maps (CASG or FPN)
            self.decoder = build_pyramid_decoder(decoder, dims, text_dim, norm=config.norm, num_classes=None)
        from_logit = isinstance(self.decoder, AlignerDecoder) and self.decoder.predicts
        self.head = SegmentationHead(
            self.decoder.out_channels, text_dim, config.head, align_corners=self.align_corners, from_logit=from_logit, norm=config.norm
        )
        if not fusion.last_gate:
            self.register_load_state_dict_pre_hook(_drop_unused_gate_hook)

    def drop_unused_gate(self, state: dict[str, torch.Tensor], prefix: str = "") -> list[str]:
        """Remove the last stage's gate weights from ``state`` (in place) when this model has none.

        Earlier versions built that gate (as LAVT's code does) although nothing reads its
        output, so it never trained; its weights are dropped with a one-time note. Runs
        before every ``load_state_dict``.

        Args:
            state: a state dict of this model (or of a model holding it under ``prefix``).
            prefix: the model's key prefix in ``state``.

        Returns:
            The keys removed.
        """
        if len(self.gates) == self.backbone.num_stages:
            return []
        stale = [key for key in state if key.startswith(f"{prefix}gates.{len(self.gates)}.")]
        for key in stale:
            del state[key]
        if stale:
            warnings.warn(
                f"LAVT: ignoring the weights of the last stage's language gate ({stale[0]}, ...): its output is "
                "never read (pass lavt_last_gate=true to keep them)",
                stacklevel=2,
            )
        return stale

    def encode(self, images: torch.Tensor, text) -> list[torch.Tensor]:
        """The four multimodal maps (finest first), language fused inside the backbone."""
        x = self.backbone.stem(images)
        maps = []
        for i in range(self.backbone.num_stages):
            x = self.backbone.run_stage(i, x)
            vis = rearrange(x, "b h w c -> b c h w")
            fused = self.fusions[i](vis, text.words, text.word_mask)
            if i + 1 < self.backbone.num_stages:  # the gated stream only feeds the next stage
                x = rearrange(self.gates[i](vis, fused), "b c h w -> b h w c")
            maps.append(self.backbone.to_nchw(i, rearrange(fused, "b c h w -> b h w c")))
        return maps

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> SegmentationOutput:
        self.check_inputs(images, input_ids, attention_mask)
        text = self.encode_text(input_ids, attention_mask)
        maps = self.encode(images, text)
        if self.neck is not None:
            maps[-1] = run_neck(self.neck, maps[-1], text)
        logits = self.head(self._decode(maps, text), text)
        final = upsample_to(foreground_logit(logits[-1]), images.shape[-2:], align_corners=self.align_corners)
        return SegmentationOutput(logits=final, aux_logits=logits)

    def _decode(self, maps: list[torch.Tensor], text) -> torch.Tensor:
        """The decoder's stride-4 output: LAVT's own, the aligner's (from the coarsest map) or a pyramid one's."""
        if isinstance(self.decoder, SimpleDecoder):
            return self.decoder(maps)
        if isinstance(self.decoder, AlignerDecoder):
            return self.decoder(maps[-1], text)
        return run_pyramid_decoder(self.decoder, maps, text)

    def loss(self, output: SegmentationOutput, target: torch.Tensor) -> torch.Tensor:
        return self.head.loss(output.aux_logits, target)
