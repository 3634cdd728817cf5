"""LTS (Jing et al., CVPR 2021), "locate then segment", with an optional SADLR head.

Three Swin maps (strides 8, 16, 32) are each multiplied by a projection of the sentence
(tile and multiply), brought to stride 16, concatenated with the 8 coordinate channels and
fused by a 1x1 conv into one cross-modal map. *Locate*: a relevance filter, a 3x3 kernel
generated from the sentence, is convolved with that map to give a localization heatmap; a
transformer encoder over the cross-modal tokens (the heatmap embedded into them) refines
it. The heatmap is trained as a position prior (:func:`localization_target`). *Segment*:
the prior (its sigmoid) is concatenated with the refined cross-modal map and a light
convolutional network with skip connections from the stride-8 and stride-4 Swin maps
produces the stride-4 map of ``decoder_dim`` channels that the 1x1 classifier (or SADLR's
refiner, ``lts_sadlr``) turns into a mask.

SADLR Table 3 retrains LTS with Swin-B + BERT-base at 480 (the original used DarkNet-53 +
Bi-GRU at 416), so the sizes below are ours, chosen to match that table's cost (133.3
GMACs): with Swin-B + BERT-base this model counts 131.7 GMACs at 480 (+SADLR: 137.6).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from rislayers import check_shape
from rislayers.functional import coord_features, sine_position_encoding_2d

from ..base import RISModel, SegmentationOutput, build_swin, build_text_encoder, foreground_logit, upsample_to
from ..config import AlignerConfig, ClassifierHeadConfig, LtsConfig, OwnDecoderConfig
from ..registry import register_architecture
from .heads import SegmentationHead
from .parts import AlignerDecoder, build_neck, build_pyramid_decoder, run_neck, run_pyramid_decoder
from .lavt import ConvBNReLU
from .vlt import FFN_RATIO, TransformerLayer, attention_heads

__all__ = ["LTS", "RelevanceFilter", "localization_target", "LOCALIZATION_WEIGHT", "LOCALIZATION_STRIDE"]

# Weight of the localization (position prior) loss beside the segmentation Dice loss: the
# paper sums the two; equal weighting is our choice.
LOCALIZATION_WEIGHT = 1.0
# The cross-modal map and the localization heatmap live at stride 16 of the input.
LOCALIZATION_STRIDE = 16


def localization_target(target: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The position-prior target of LTS's heatmap: the mask's coverage of each heatmap cell.

    The ground-truth mask is area-averaged to the heatmap's ``size``: each cell holds the
    fraction of its pixels inside the referred object (1 deep inside, fractional on the
    boundary, 0 elsewhere), a soft, normalised map of where the object is. An empty mask
    gives an all-zero target.

    Args:
        target: ground-truth mask ``(b, H, W)`` (bool or 0/1).
        size: the heatmap's ``(h, w)``.

    Shape:
        - output: ``(b, 1, h, w)`` float in ``[0, 1]``

    Example:
        >>> mask = torch.zeros(1, 8, 8, dtype=torch.bool)
        >>> mask[0, :4, :2] = True
        >>> localization_target(mask, (2, 2)).flatten().tolist()
        [0.5, 0.0, 0.0, 0.0]
    """
    check_shape(target, "b H W", name="target")
    return F.adaptive_avg_pool2d(rearrange(target.float(), "b H W -> b 1 H W"), size)


class RelevanceFilter(nn.Module):
    """LTS's relevance filtering: a ``k x k`` kernel (and bias) generated from the sentence,
    convolved with the cross-modal map, gives a one-channel relevance (heatmap) logit.

    Each sample is convolved with its own kernel (a grouped convolution over the batch).
    The response is scaled by ``1/sqrt(c k^2)`` so the logit starts near unit scale.

    Args:
        dim: channels ``c`` of the cross-modal map.
        text_dim: sentence channels ``d``.
        kernel_size: ``k`` (odd).

    Shape:
        - feats: ``(b, c, h, w)``
        - sentence: ``(b, d)``
        - output: ``(b, 1, h, w)``

    Example:
        >>> RelevanceFilter(32, 24)(torch.randn(2, 32, 6, 6), torch.randn(2, 24)).shape
        torch.Size([2, 1, 6, 6])
    """

    def __init__(self, dim: int, text_dim: int, *, kernel_size: int = 3) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size: expected a positive odd integer; got {kernel_size}")
        self.dim, self.text_dim, self.kernel_size = dim, text_dim, kernel_size
        self.generate = nn.Linear(text_dim, dim * kernel_size * kernel_size + 1)

    def forward(self, feats: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        axes = check_shape(feats, "b c h w", name="feats", c=self.dim)
        check_shape(sentence, "b d", name="sentence", bound=axes, d=self.text_dim)
        k, b = self.kernel_size, axes["b"]
        params = self.generate(sentence)
        kernels = rearrange(params[:, :-1], "b (c i j) -> b c i j", c=self.dim, i=k, j=k)
        stacked = rearrange(feats, "b c h w -> 1 (b c) h w")
        response = F.conv2d(stacked, kernels, params[:, -1], padding=k // 2, groups=b)
        return rearrange(response, "1 b h w -> b 1 h w") / (self.dim * k * k) ** 0.5


@register_architecture("lts")
class LTS(RISModel):
    """LTS with a 2-class classifier, or SADLR's refiner as its head.

    Uses ``decoder_dim`` (``C``: the cross-modal, transformer and segmentation width; a
    multiple of 4 for the sine position encoding) and ``transformer_layers`` (depth of the
    localization encoder). Heads: :func:`~reference_models.models.vlt.attention_heads`;
    MLP width ``FFN_RATIO * C``; no dropout.

    Steps: Swin maps of strides 8, 16, 32 -> 1x1 conv-BN-ReLU to ``C`` each -> times
    ``tanh(Linear_i(sentence))`` tiled -> resized to stride 16 (area pooling down, bilinear
    up) -> concatenated with the coordinate map -> 1x1 conv-BN-ReLU: the cross-modal map
    ``F`` (stride 16). Locate: ``R = RelevanceFilter(F, sentence)``; tokens ``F + Linear(R)``
    with a sine position encoding through the encoder give ``T``; the localization logit is
    ``R + conv1x1(T)``. Segment: ``cat(T, sigmoid(localization))`` upsampled to stride 8,
    concatenated with the stride-8 Swin map, 3x3 conv-BN-ReLU to ``C``; upsampled to stride
    4, concatenated with the stride-4 Swin map, 3x3 conv-BN-ReLU to ``C/2`` and 1x1
    conv-BN-ReLU to ``C``: ``(b, C, H/4, W/4)``.

    The localization logit is ``aux_logits[0]`` (``(b, 1, H/16, W/16)``); the head's 2-class
    logits follow (one per SADLR iteration; the last is the prediction). :meth:`loss` adds
    ``LOCALIZATION_WEIGHT`` times the binary cross-entropy between the localization logit
    and :func:`localization_target` of the mask.

    Args:
        config: a :class:`~reference_models.config.LtsConfig`.

    Shape:
        - images: ``(b, 3, H, W)`` with ``H, W`` multiples of 32
        - input_ids, attention_mask: ``(b, l)``
        - output: :class:`~reference_models.base.SegmentationOutput`, logits ``(b, 1, H, W)``

    Example:
        >>> from reference_models import build_model
        >>> model = build_model("lts_tiny").eval()
        >>> ids = torch.randint(1, 100, (2, 6))
        >>> out = model(torch.randn(2, 3, 64, 64), ids, torch.ones(2, 6, dtype=torch.long))
        >>> out.logits.shape, out.aux_logits[0].shape, out.aux_logits[-1].shape
        (torch.Size([2, 1, 64, 64]), torch.Size([2, 1, 4, 4]), torch.Size([2, 2, 16, 16]))
    """

    localization_weight: float = LOCALIZATION_WEIGHT

    def __init__(self, config: LtsConfig) -> None:
        super().__init__(config)
        dim, norm = config.locate.dim, config.norm
        if dim % 4 != 0:
            raise ValueError(f"decoder_dim: LTS needs a multiple of 4 (2-D sine position encoding); got {dim}")
        self.text_encoder = build_text_encoder(config.text)
        self.backbone = build_swin(config.vision, config.image_size)
        dims, text_dim = self.backbone.out_channels, self.text_encoder.out_dim
        self.level_proj = nn.ModuleList(ConvBNReLU(d, dim, kernel=1, norm=norm) for d in dims[1:])
        self.level_text = nn.ModuleList(nn.Linear(text_dim, dim) for _ in dims[1:])
        self.cross_modal = ConvBNReLU(len(dims[1:]) * dim + 8, dim, kernel=1, norm=norm)
        self.relevance = RelevanceFilter(dim, text_dim)
        self.heat_embed = nn.Linear(1, dim)
        self.encoder = nn.ModuleList(
            TransformerLayer(dim, num_heads=attention_heads(dim), ffn_dim=FFN_RATIO * dim) for _ in range(config.locate.layers)
        )
        self.localize = nn.Conv2d(dim, 1, kernel_size=1)
        if isinstance(config.decoder, OwnDecoderConfig):
            self.segment = nn.ModuleList(
                [
                    ConvBNReLU(dim + 1 + dims[1], dim, norm=norm),
                    # The light stride-4 stage: a half-width 3x3 conv, then a 1x1 back to C so the
                    # head (or SADLR's refiner) reads a C-channel map as on LAVT.
                    nn.Sequential(ConvBNReLU(dim + dims[0], dim // 2, norm=norm), ConvBNReLU(dim // 2, dim, kernel=1, norm=norm)),
                ]
            )
            decoded = dim
        elif isinstance(config.decoder, AlignerConfig):  # ASDA's aligner over the located map and the words
            predicts = isinstance(config.head, ClassifierHeadConfig)
            self.segment = AlignerDecoder(config.decoder, dim + 1, text_dim, stride=LOCALIZATION_STRIDE, norm=norm, predicts=predicts)
            decoded = self.segment.out_channels
        else:  # a plug-in decoder: the located map (with its localization) takes the stride-16 place
            pyramid = (dims[0], dims[1], dim + 1, dims[3])
            self.segment = build_pyramid_decoder(config.decoder, pyramid, text_dim, norm=norm, num_classes=None)
            decoded = self.segment.out_channels
        from_logit = isinstance(self.segment, AlignerDecoder) and self.segment.predicts
        self.head = SegmentationHead(decoded, text_dim, config.head, from_logit=from_logit, norm=norm)
        self.neck = None
        if config.neck is not None:  # a plug-in on the stride-32 map, after LTS's own modules
            size = config.image_size // self.backbone.strides[-1]
            self.neck = build_neck(config.neck, dims[-1], text_dim, size=size, norm=norm)

    def cross_modal_map(self, pyramid: list[torch.Tensor], sentence: torch.Tensor) -> torch.Tensor:
        """The stride-16 cross-modal map ``F`` from the stride-8/16/32 maps and the sentence."""
        size = pyramid[2].shape[-2:]
        levels = []
        for proj, text, vis in zip(self.level_proj, self.level_text, pyramid[1:]):
            fused = proj(vis) * rearrange(torch.tanh(text(sentence)), "b c -> b c 1 1")
            if fused.shape[-1] > size[-1]:
                fused = F.adaptive_avg_pool2d(fused, size)
            levels.append(upsample_to(fused, size))
        coords = coord_features(sentence.shape[0], *size, device=sentence.device, dtype=levels[0].dtype)
        return self.cross_modal(torch.cat([*levels, coords], dim=1))

    def locate(self, feats: torch.Tensor, sentence: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Relevance filtering refined by the encoder: (localization logit, refined map ``T``)."""
        _, c, h, w = feats.shape
        relevance = self.relevance(feats, sentence)
        tokens = rearrange(feats, "b c h w -> b (h w) c") + self.heat_embed(rearrange(relevance, "b 1 h w -> b (h w) 1"))
        pos = rearrange(sine_position_encoding_2d(h, w, c, device=feats.device, dtype=feats.dtype), "c h w -> 1 (h w) c")
        for layer in self.encoder:
            tokens = layer(tokens, pos)
        refined = rearrange(tokens, "b (h w) c -> b c h w", h=h, w=w)
        return relevance + self.localize(refined), refined

    def forward(
        self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> SegmentationOutput:
        self.check_inputs(images, input_ids, attention_mask)
        text = self.encode_text(input_ids, attention_mask)
        pyramid = list(self.backbone(images))
        if self.neck is not None:
            pyramid[-1] = run_neck(self.neck, pyramid[-1], text)
        localization, refined = self.locate(self.cross_modal_map(pyramid, text.sentence), text.sentence)
        x = torch.cat([refined, torch.sigmoid(localization)], dim=1)
        if isinstance(self.segment, nn.ModuleList):
            for conv, skip in zip(self.segment, (pyramid[1], pyramid[0])):
                x = conv(torch.cat([upsample_to(x, skip.shape[-2:]), skip], dim=1))
        elif isinstance(self.segment, AlignerDecoder):
            x = self.segment(x, text)
        else:
            x = run_pyramid_decoder(self.segment, [pyramid[0], pyramid[1], x, pyramid[3]], text)
        logits = self.head(x, text)
        final = upsample_to(foreground_logit(logits[-1]), images.shape[-2:])
        return SegmentationOutput(logits=final, aux_logits=[localization, *logits])

    def loss(self, output: SegmentationOutput, target: torch.Tensor) -> torch.Tensor:
        """2-class Dice on the prediction (iteration-weighted for SADLR) plus the weighted
        binary cross-entropy of the localization heatmap against :func:`localization_target`."""
        localization, *logits = output.aux_logits
        prior = localization_target(target, tuple(localization.shape[-2:])).to(localization.dtype)
        located = F.binary_cross_entropy_with_logits(localization, prior)
        return self.head.loss(logits, target) + self.localization_weight * located
