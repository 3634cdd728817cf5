"""ASDA (Adaptive Selection with Dual Alignment, ACM MM 2024), composed from rislayers.

How the paper's features flow (Sec. 3, Fig. 2), and where each goes here:

- CLIP ViT-B/16 (12 layers) gives every layer's patch map ``F_V^(i)`` and class token
  ``f_C^(i)``, both ``clip_width`` (768) wide, from the residual stream (no ``ln_post``, as
  in the published code). CLIP's text tower gives the word features ``f_T`` (its final
  layer after ``ln_final``, ``text_dim`` wide) and the sentence feature ``f_E`` (the [EOS]
  activation, projected by ``text_projection`` to ``clip_embed_dim``, CLIP's joint space).
- AFS (Eq. 1-3): one :class:`~rislayers.AdaptiveLayerSelector` picks the low-level map
  ``F_L`` among layers 4-6 and another the mid-level map ``F_M`` among layers 7-9
  (``config.selector_layers``, 1-based, inclusive), scoring each layer's class token
  against ``f_E``. The high-level map ``F_H`` is always the last layer.
- SFA (Eq. 4-5): :class:`~rislayers.ScaleWiseAggregator` fuses ``F_H * f_E`` with ``F_M``
  (at 1/2) and ``F_L`` (at 1/4) through a 32-channel top-down path and restores the ViT
  width: ``F_coarse`` is ``(b, clip_width, h, w)``.
- A 1x1 convolution projects ``F_coarse`` to ``decoder_dim``, the aligner's width (512 in
  ``asda_base``, the published code's; the paper writes every width as ``C`` and never
  states it). It is the identity when ``decoder_dim == clip_width``, and with
  ``asda_aggregator="published"``, whose output is already ``decoder_dim`` wide.
- WGDA (Eq. 6-10): :class:`~rislayers.DualBranchAligner` decodes ``aligner_masks`` (32)
  response masks from ``F_coarse`` (``transformer_layers`` = ``n`` = 2 self-attention
  blocks, then 3 x (2x upsample, 3x3 conv)) and mixes them with coefficients from the
  pixels' cross-attention to ``f_T``. Its logit map is 8x the ViT grid: 208x208 for a 416
  input (stride 2), bilinearly upsampled to the input size for ``logits``.

The ablations of the paper's Tables 2-5 are config fields: ``asda_selection`` (``"fixed"``:
``asda_fixed_layers``, CRIS's hand-picked layers 6 and 9; ``"top"``: the last layer alone),
``asda_fusion="concat"`` (:class:`~rislayers.ConcatProjectFusion`, CRIS's concatenation and
projection), ``aligner_branches`` (``"single"``, ``"visual"``), ``selector_head`` (Table 5),
``transformer_layers`` and ``aligner_masks`` (Tables 3-4).

The published code's defects are fixed by the layers, each with the published behaviour one
field away: the word padding mask is honoured (``aligner_word_mask=False`` ignores it), the
selector learns (``selector_gradient="straight_through"``; ``"none"`` is the published
behaviour, ``"soft"`` a probability-weighted blend), and the mask coefficients are pooled
over space (size-agnostic) instead of read by ``Linear(26*26*32, 32)``. One departure from
the paper as well: the aligner adds a learned logit offset to Eq. 10, without which the
logit cannot pass 0 once every coefficient turns negative (``aligner_output_bias=False`` is
Eq. 10 as written; see :class:`~rislayers.DualBranchAligner`). The published code's
other readings are options too: ``asda_loss="bce_dice"`` (its focal loss at ``alpha=-1,
gamma=0``), ``selector_text="layer_eos"`` (each layer scored against the text layer of the
same depth), ``asda_aggregator="published"`` and ``aligner_blocks="published"``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from rislayers import (
    AdaptiveLayerSelector,
    ConcatProjectFusion,
    PublishedScaleWiseAggregator,
    ScaleWiseAggregator,
    SelectionOutput,
    check_shape,
    dice_loss,
    sigmoid_focal_loss,
)

from ..base import RISModel, SegmentationOutput, build_clip_vision, build_text_encoder, foreground_logit, upsample_to
from ..config import AdaptiveSelectorConfig, AsdaConfig, ConcatFusionConfig, FixedLayersConfig, TopLayerConfig
from ..encoders import TextFeatures
from ..registry import register_architecture
from .heads import SegmentationHead
from .parts import build_aligner

__all__ = ["ASDA", "LayerSelection"]

# The paper's fixed sizes that have no config field (Sec. 3.3-3.4, 4.2).
AGGREGATOR_HIDDEN = 32  # SFA's reduced width ("we boldly reduce the channel dimension to 32")
ALIGNER_UPSAMPLE_STEPS = 3  # Eq. 7: i = 1, 2, 3
FOCAL_ALPHA = 0.25  # RetinaNet's focal-loss defaults (the paper cites Lin et al. unchanged)
FOCAL_GAMMA = 2.0

LayerRange = tuple[int, int]


class LayerSelection(NamedTuple):
    """Which encoder layers ASDA's selectors chose for each sample.

    With ``asda_selection="fixed"`` the layers are ``asda_fixed_layers`` and each
    probability row is ``[1.0]`` (one candidate); with ``"top"`` no low or mid layer is
    read, and both report the last ViT layer (the only one the fusion reads), again with
    probabilities ``[1.0]``.

    Attributes:
        low_layer: the chosen low-level layer ``L`` as a 1-based ViT layer number, ``(b,)``.
        mid_layer: the chosen mid-level layer ``M`` (1-based), ``(b,)``.
        low_probs: selection probabilities over the low-level candidates, ``(b, k_low)``.
        mid_probs: selection probabilities over the mid-level candidates, ``(b, k_mid)``.
    """

    low_layer: torch.Tensor
    mid_layer: torch.Tensor
    low_probs: torch.Tensor
    mid_probs: torch.Tensor


def _layer_groups(config: AsdaConfig) -> tuple[LayerRange, LayerRange]:
    """The low and mid candidate ranges (1-based, inclusive) of the configured selection."""
    selector, depth = config.selector, config.vision.layers
    if isinstance(selector, TopLayerConfig):
        return (depth, depth), (depth, depth)
    if isinstance(selector, FixedLayersConfig):
        low, mid = selector.layers
        return (low, low), (mid, mid)
    low, mid = selector.layers  # checked against the ViT's depth by AsdaConfig
    return tuple(low), tuple(mid)


def _build_selector(config: AsdaConfig, layers: LayerRange, text_dim: int) -> AdaptiveLayerSelector:
    selector = config.selector
    return AdaptiveLayerSelector(
        config.vision.width,
        text_dim,
        num_candidates=layers[1] - layers[0] + 1,
        gradient=selector.gradient,
        head=selector.head,
        # The released code scores its per-layer [EOS] tokens as they are and projects only
        # the class tokens; the paper's sentence f_E gets the design's adapter.
        project_text=selector.text != "layer_eos",
    )


def _build_aggregator(config: AsdaConfig, sentence_dim: int) -> nn.Module:
    """What makes ``F_coarse`` from the ViT levels and the sentence (its ``out_channels``)."""
    width = config.vision.width
    if isinstance(config.aggregator, ConcatFusionConfig):
        levels = 1 if isinstance(config.selector, TopLayerConfig) else 3
        return ConcatProjectFusion([width] * levels, sentence_dim, width, norm=config.norm)
    if config.aggregator.reading == "published":
        # The released SFA works at, and hands over, the aligner's width (its out_channels=do, 512).
        return PublishedScaleWiseAggregator(width, sentence_dim, hidden_dim=config.aligner.dim, norm=config.norm)
    return ScaleWiseAggregator(width, sentence_dim, hidden_dim=AGGREGATOR_HIDDEN)


def _build_aligner(config: AsdaConfig, text_dim: int, *, branches: str | None = None) -> nn.Module:
    """The configured aligner class; ``branches="visual"`` builds its coarse-to-fine branch
    alone, for a head of its own (SADLR's refiner reads its ``decode``)."""
    return build_aligner(config.aligner, text_dim, norm=config.norm, upsample_steps=ALIGNER_UPSAMPLE_STEPS, branches=branches)


@register_architecture("asda")
class ASDA(RISModel):
    """ASDA: CLIP ViT + adaptive layer selection + scale-wise aggregation + dual-branch aligner.

    See the module docstring for the feature flow. ``forward`` also records the layers
    chosen for the batch in :attr:`last_selection` (detached); :meth:`select_layers` runs
    only the encoders and the selectors.

    Config fields used: ``image_size``; ``clip_width``, ``clip_layers``, ``clip_heads``,
    ``clip_patch``, ``clip_embed_dim``, ``vision_weights`` (the ViT, which must be
    ``vision_encoder="clip"``); the ``text_*`` fields (CLIP's text tower, or BERT);
    ``asda_selection`` with ``selector_layers``, ``selector_gradient``, ``selector_head``
    and ``selector_text`` (AFS) or ``asda_fixed_layers``; ``asda_fusion``,
    ``asda_aggregator`` and ``norm`` (``F_coarse``); ``decoder_dim`` (the aligner's width);
    ``transformer_layers`` (the aligner's self-attention depth ``n``); ``aligner_masks``
    (``N_c``), ``aligner_branches``, ``aligner_word_mask``, ``aligner_blocks``,
    ``aligner_output_bias``;
    ``asda_loss`` and ``focal_weight`` (the loss).

    Args:
        config: a :class:`~reference_models.config.AsdaConfig`.

    Attributes:
        last_selection (LayerSelection | None): the low and mid layers the selectors chose
            in the latest forward (detached), None before the first one.

    Shape:
        - images: ``(b, 3, image_size, image_size)``
        - input_ids, attention_mask: ``(b, l)``
        - output: :class:`~reference_models.base.SegmentationOutput` with logits
          ``(b, 1, H, W)`` and ``aux_logits = [aligner logits (b, 1, 8 * H / p, 8 * W / p)]``

    Example:
        >>> import torch
        >>> from reference_models import build_model
        >>> model = build_model("asda_tiny").eval()
        >>> ids = torch.randint(1, 1000, (2, 6))
        >>> out = model(torch.randn(2, 3, 64, 64), ids, torch.ones(2, 6, dtype=torch.long))
        >>> out.logits.shape, out.aux_logits[0].shape
        (torch.Size([2, 1, 64, 64]), torch.Size([2, 1, 64, 64]))
        >>> model.last_selection.low_layer.shape
        torch.Size([2])
        >>> fixed = build_model("asda_tiny", asda_selection="fixed", asda_fixed_layers=(5, 8)).eval()
        >>> _ = fixed(torch.randn(2, 3, 64, 64), ids)
        >>> fixed.last_selection.low_layer.tolist(), fixed.last_selection.mid_layer.tolist()
        ([5, 5], [8, 8])
    """

    def __init__(self, config: AsdaConfig) -> None:
        super().__init__(config)
        self.low_range, self.mid_range = _layer_groups(config)
        self.text_encoder = build_text_encoder(config.text)
        self.backbone = build_clip_vision(config.vision, config.image_size)
        # CLIP's sentence feature is projected into the joint space; BERT's [CLS] is not.
        sentence_dim, word_dim = self.text_encoder.sentence_dim, self.text_encoder.out_dim
        adaptive = isinstance(config.selector, AdaptiveSelectorConfig)
        self.layer_eos = adaptive and config.selector.text == "layer_eos"
        # The published code scores each layer against the text tower's unprojected stream.
        selector_text_dim = word_dim if self.layer_eos else sentence_dim
        self.low_selector = _build_selector(config, self.low_range, selector_text_dim) if adaptive else None
        self.mid_selector = _build_selector(config, self.mid_range, selector_text_dim) if adaptive else None
        self.aggregator = _build_aggregator(config, sentence_dim)
        self.scale_wise = not isinstance(config.aggregator, ConcatFusionConfig)
        self.top_only = isinstance(config.selector, TopLayerConfig)
        coarse_dim, dim = self.aggregator.out_channels, config.aligner.dim
        self.neck = nn.Identity() if dim == coarse_dim else nn.Conv2d(coarse_dim, dim, 1)
        self.head = None
        if config.head is None:
            self.aligner = _build_aligner(config, word_dim)
        else:  # SADLR's refiner reads the aligner's decoded map: the aligner's words and masks are not built
            self.aligner = _build_aligner(config, word_dim, branches="visual")
            self.head = SegmentationHead(self.aligner.decoded_channels, word_dim, config.head, norm=config.norm)
        self.pixel_loss = config.loss.loss
        self.focal_weight = config.loss.focal_weight
        self.last_selection: LayerSelection | None = None

    # -- pieces ----------------------------------------------------------------------
    def _encode(
        self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> tuple[TextFeatures, torch.Tensor | None, list[torch.Tensor], torch.Tensor]:
        """Both encoders: text features, each text layer's [EOS] (or None), ViT maps, class tokens."""
        self.check_inputs(images, input_ids, attention_mask)
        # The ViT's position table is fixed to the configured grid.
        size = self.config.image_size
        check_shape(images, "b 3 H W", name="images", H=size, W=size)
        if self.layer_eos:
            text, layer_eos = self.text_encoder.forward_with_layer_eos(input_ids, attention_mask)
        else:
            text, layer_eos = self.encode_text(input_ids, attention_mask), None
        maps, cls_tokens = self.backbone(images)
        return text, layer_eos, maps, cls_tokens

    def _select(
        self, maps: list[torch.Tensor], cls_tokens: torch.Tensor, sentence: torch.Tensor, layer_eos: torch.Tensor | None
    ) -> tuple[SelectionOutput, SelectionOutput]:
        """Eq. 1-3: the low- and mid-level selections (1-based ranges -> 0-based slices)."""
        if self.low_selector is None:  # "fixed" or "top": one candidate each
            return self._single_candidate(maps, self.low_range[0]), self._single_candidate(maps, self.mid_range[0])
        picks = []
        for selector, (first, last) in ((self.low_selector, self.low_range), (self.mid_selector, self.mid_range)):
            # "layer_eos": one text vector per candidate, the text layer of the same depth
            text = sentence if layer_eos is None else layer_eos[:, first - 1 : last]
            picks.append(selector(maps[first - 1 : last], cls_tokens[:, first - 1 : last], text))
        return picks[0], picks[1]

    @staticmethod
    def _single_candidate(maps: list[torch.Tensor], layer: int) -> SelectionOutput:
        batch = maps[0].shape[0]
        probs = maps[0].new_ones(batch, 1)
        index = torch.zeros(batch, dtype=torch.long, device=maps[0].device)
        return SelectionOutput(maps[layer - 1], probs, index)

    def _as_layers(self, low: SelectionOutput, mid: SelectionOutput, *, detach: bool) -> LayerSelection:
        low_probs, mid_probs = (low.probs.detach(), mid.probs.detach()) if detach else (low.probs, mid.probs)
        return LayerSelection(low.index + self.low_range[0], mid.index + self.mid_range[0], low_probs, mid_probs)

    def _fuse(self, high: torch.Tensor, mid: torch.Tensor, low: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        """``F_coarse``: SFA (Eq. 4-5) or the concatenate-and-project fusion of Table 2 (a)-(c)."""
        if self.scale_wise:
            return self.aggregator(high, mid, low, sentence)
        levels = [high] if self.top_only else [high, mid, low]
        return self.aggregator(levels, sentence)

    def select_layers(
        self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> LayerSelection:
        """Run the encoders and the two selectors only: which layers ASDA would use.

        Args:
            images: ``(b, 3, H, W)`` at ``config.image_size``.
            input_ids: ``(b, l)`` token ids.
            attention_mask: ``(b, l)``, 1 for real tokens; ``None`` means all real.

        Returns:
            :class:`LayerSelection` (probabilities keep their graph, for auxiliary losses).
        """
        text, layer_eos, maps, cls_tokens = self._encode(images, input_ids, attention_mask)
        return self._as_layers(*self._select(maps, cls_tokens, text.sentence, layer_eos), detach=False)

    # -- the model -------------------------------------------------------------------
    def forward(
        self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> SegmentationOutput:
        text, layer_eos, maps, cls_tokens = self._encode(images, input_ids, attention_mask)
        low, mid = self._select(maps, cls_tokens, text.sentence, layer_eos)  # AFS, Eq. 1-3
        self.last_selection = self._as_layers(low, mid, detach=True)
        coarse = self._fuse(maps[-1], mid.features, low.features, text.sentence)  # SFA, Eq. 4-5
        if self.head is not None:  # SADLR's refiner in place of Eq. 8-10
            iterations = self.head(self.aligner.decode(self.neck(coarse)), text)
            final = upsample_to(foreground_logit(iterations[-1]), images.shape[-2:])
            return SegmentationOutput(logits=final, aux_logits=iterations)
        aligned = self.aligner(self.neck(coarse), text.words, text.word_mask)  # WGDA, Eq. 6-10
        logits = upsample_to(aligned.logits, images.shape[-2:])
        return SegmentationOutput(logits=logits, aux_logits=[aligned.logits])

    def loss(self, output: SegmentationOutput, target: torch.Tensor) -> torch.Tensor:
        """``focal_weight * focal + dice`` on the aligner's logits at their own resolution.

        The paper supervises "through a linear combination of focal loss and dice loss";
        the published code weights both by 1 and compares its 208x208 output (stride 2 at
        416) with the mask resized to 208x208, so the target is resized (nearest) to the
        aligner's resolution here rather than the logits upsampled. Focal uses RetinaNet's
        ``alpha=0.25, gamma=2``; Dice is the single-class (foreground) soft Dice. With
        ``asda_loss="bce_dice"`` the first term is the published code's: its focal loss
        called with ``alpha=-1, gamma=0``, which is the plain binary cross-entropy (the
        pixel mean, still scaled by ``focal_weight``).

        Args:
            output: this model's output.
            target: the ground-truth mask ``(b, H, W)``, bool or {0, 1}.

        With SADLR's refiner as the head, its own loss on every iteration instead.

        Returns:
            A scalar float32 loss.
        """
        if self.head is not None:
            return self.head.loss(output.aux_logits, target)
        logits = output.aux_logits[0]
        check_shape(target, "b H W", name="target", b=logits.shape[0])
        size = tuple(logits.shape[-2:])
        if tuple(target.shape[-2:]) != size:
            target = F.interpolate(target[:, None].float(), size=size, mode="nearest")[:, 0]
        target = target > 0.5
        if self.pixel_loss == "bce_dice":
            pixels = sigmoid_focal_loss(logits, target, alpha=-1.0, gamma=0.0)
        else:
            pixels = sigmoid_focal_loss(logits, target, alpha=FOCAL_ALPHA, gamma=FOCAL_GAMMA)
        return self.focal_weight * pixels + dice_loss(logits, target, classes="foreground")
