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
  states it). It is the identity when ``decoder_dim == clip_width``.
- WGDA (Eq. 6-10): :class:`~rislayers.DualBranchAligner` decodes ``aligner_masks`` (32)
  response masks from ``F_coarse`` (``transformer_layers`` = ``n`` = 2 self-attention
  blocks, then 3 x (2x upsample, 3x3 conv)) and mixes them with coefficients from the
  pixels' cross-attention to ``f_T``. Its logit map is 8x the ViT grid: 208x208 for a 416
  input (stride 2), bilinearly upsampled to the input size for ``logits``.

The published code's defects are fixed by the layers: the word padding mask is honoured,
the selector learns (``config.selector_gradient="straight_through"``; ``"none"`` is the
published behaviour, ``"soft"`` a probability-weighted blend), and the mask coefficients
are pooled over space (size-agnostic) instead of read by ``Linear(26*26*32, 32)``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from rislayers import (
    AdaptiveLayerSelector,
    DualBranchAligner,
    ScaleWiseAggregator,
    SelectionOutput,
    check_shape,
    dice_loss,
    sigmoid_focal_loss,
)

from ..base import RISModel, SegmentationOutput, build_clip_vision, build_text_encoder, upsample_to
from ..config import ModelConfig
from ..registry import register_architecture

__all__ = ["ASDA", "LayerSelection"]

# The paper's fixed sizes that have no config field (Sec. 3.3-3.4, 4.2).
AGGREGATOR_HIDDEN = 32  # SFA's reduced width ("we boldly reduce the channel dimension to 32")
ALIGNER_HEADS = 8  # heads of WGDA's attention (the published code's nhead=8)
ALIGNER_UPSAMPLE_STEPS = 3  # Eq. 7: i = 1, 2, 3
FOCAL_ALPHA = 0.25  # RetinaNet's focal-loss defaults (the paper cites Lin et al. unchanged)
FOCAL_GAMMA = 2.0


class LayerSelection(NamedTuple):
    """Which encoder layers ASDA's selectors chose for each sample.

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


def _layer_groups(config: ModelConfig) -> tuple[tuple[int, int], tuple[int, int]]:
    """Validate ``selector_layers``: two 1-based inclusive ranges (low, then mid) inside the ViT."""
    groups = config.selector_layers
    valid = (
        isinstance(groups, (tuple, list))
        and len(groups) == 2
        and all(
            isinstance(group, (tuple, list))
            and len(group) == 2
            and all(isinstance(v, int) for v in group)
            and 1 <= group[0] <= group[1] <= config.clip_layers
            for group in groups
        )
    )
    if not valid:
        raise ValueError(
            f"selector_layers: expected two 1-based inclusive ranges (low, mid) within "
            f"1..clip_layers={config.clip_layers}, e.g. ((4, 6), (7, 9)); got {groups!r}"
        )
    return (tuple(groups[0]), tuple(groups[1]))


@register_architecture("asda")
class ASDA(RISModel):
    """ASDA: CLIP ViT + adaptive layer selection + scale-wise aggregation + dual-branch aligner.

    See the module docstring for the feature flow. ``forward`` also records the layers
    chosen for the batch in :attr:`last_selection` (detached); :meth:`select_layers` runs
    only the encoders and the selectors.

    Config fields used: ``image_size``; ``clip_width``, ``clip_layers``, ``clip_heads``,
    ``clip_patch``, ``clip_embed_dim``, ``vision_weights`` (the ViT, which must be
    ``vision_encoder="clip"``); the ``text_*`` fields (CLIP's text tower, or BERT);
    ``selector_layers`` and ``selector_gradient`` (AFS); ``decoder_dim`` (the aligner's
    width); ``transformer_layers`` (the aligner's self-attention depth ``n``);
    ``aligner_masks`` (``N_c``); ``focal_weight`` (the loss).

    Args:
        config: a :class:`~reference_models.config.ModelConfig` with ``architecture="asda"``.

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
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        if config.vision_encoder != "clip":
            raise ValueError(f"vision_encoder: ASDA is built on CLIP's ViT; expected 'clip', got {config.vision_encoder!r}")
        self.low_range, self.mid_range = _layer_groups(config)
        width = config.clip_width
        # CLIP's sentence feature is projected into the joint space; BERT's [CLS] is not.
        sentence_dim = config.clip_embed_dim if config.text_encoder == "clip" else config.text_dim

        self.text_encoder = build_text_encoder(config)
        self.backbone = build_clip_vision(config)
        self.low_selector = AdaptiveLayerSelector(
            width, sentence_dim, num_candidates=self.low_range[1] - self.low_range[0] + 1, gradient=config.selector_gradient
        )
        self.mid_selector = AdaptiveLayerSelector(
            width, sentence_dim, num_candidates=self.mid_range[1] - self.mid_range[0] + 1, gradient=config.selector_gradient
        )
        self.aggregator = ScaleWiseAggregator(width, sentence_dim, hidden_dim=AGGREGATOR_HIDDEN)
        self.neck = nn.Identity() if config.decoder_dim == width else nn.Conv2d(width, config.decoder_dim, 1)
        self.aligner = DualBranchAligner(
            config.decoder_dim,
            config.text_dim,
            num_masks=config.aligner_masks,
            num_layers=config.transformer_layers,
            num_heads=ALIGNER_HEADS,
            upsample_steps=ALIGNER_UPSAMPLE_STEPS,
        )
        self.last_selection: LayerSelection | None = None

    # -- pieces ----------------------------------------------------------------------
    def _select(
        self, maps: list[torch.Tensor], cls_tokens: torch.Tensor, sentence: torch.Tensor
    ) -> tuple[SelectionOutput, SelectionOutput]:
        """Eq. 1-3: the low- and mid-level selections (1-based ranges -> 0-based slices)."""
        (low_first, low_last), (mid_first, mid_last) = self.low_range, self.mid_range
        low = self.low_selector(maps[low_first - 1 : low_last], cls_tokens[:, low_first - 1 : low_last], sentence)
        mid = self.mid_selector(maps[mid_first - 1 : mid_last], cls_tokens[:, mid_first - 1 : mid_last], sentence)
        return low, mid

    def _as_layers(self, low: SelectionOutput, mid: SelectionOutput, *, detach: bool) -> LayerSelection:
        low_probs, mid_probs = (low.probs.detach(), mid.probs.detach()) if detach else (low.probs, mid.probs)
        return LayerSelection(low.index + self.low_range[0], mid.index + self.mid_range[0], low_probs, mid_probs)

    def _check_images(self, images: torch.Tensor) -> None:
        # The ViT's position table is fixed to the configured grid.
        size = self.config.image_size
        check_shape(images, "b 3 H W", name="images", H=size, W=size)

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
        self.check_inputs(images, input_ids, attention_mask)
        self._check_images(images)
        text = self.encode_text(input_ids, attention_mask)
        maps, cls_tokens = self.backbone(images)
        return self._as_layers(*self._select(maps, cls_tokens, text.sentence), detach=False)

    # -- the model -------------------------------------------------------------------
    def forward(
        self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> SegmentationOutput:
        self.check_inputs(images, input_ids, attention_mask)
        self._check_images(images)
        text = self.encode_text(input_ids, attention_mask)
        maps, cls_tokens = self.backbone(images)
        low, mid = self._select(maps, cls_tokens, text.sentence)  # AFS, Eq. 1-3
        self.last_selection = self._as_layers(low, mid, detach=True)
        coarse = self.aggregator(maps[-1], mid.features, low.features, text.sentence)  # SFA, Eq. 4-5
        aligned = self.aligner(self.neck(coarse), text.words, text.word_mask)  # WGDA, Eq. 6-10
        logits = upsample_to(aligned.logits, images.shape[-2:])
        return SegmentationOutput(logits=logits, aux_logits=[aligned.logits])

    def loss(self, output: SegmentationOutput, target: torch.Tensor) -> torch.Tensor:
        """``focal_weight * focal + dice`` on the aligner's logits at their own resolution.

        The paper supervises "through a linear combination of focal loss and dice loss";
        the published code weights both by 1 and compares its 208x208 output (stride 2 at
        416) with the mask resized to 208x208, so the target is resized (nearest) to the
        aligner's resolution here rather than the logits upsampled. Focal uses RetinaNet's
        ``alpha=0.25, gamma=2``; Dice is the single-class (foreground) soft Dice.

        Args:
            output: this model's output.
            target: the ground-truth mask ``(b, H, W)``, bool or {0, 1}.

        Returns:
            A scalar float32 loss.
        """
        logits = output.aux_logits[0]
        check_shape(target, "b H W", name="target", b=logits.shape[0])
        size = tuple(logits.shape[-2:])
        if tuple(target.shape[-2:]) != size:
            target = F.interpolate(target[:, None].float(), size=size, mode="nearest")[:, 0]
        target = target > 0.5
        focal = sigmoid_focal_loss(logits, target, alpha=FOCAL_ALPHA, gamma=FOCAL_GAMMA)
        return self.config.focal_weight * focal + dice_loss(logits, target, classes="foreground")
