"""The prediction head shared by the three baselines: a 1x1 classifier or SADLR's refiner.

SADLR (Sec. 3) plugs into a baseline by removing its final 2-class classifier and feeding
the decoder's stride-4 map to :class:`rislayers.DynamicQueryRefiner`; nothing else of the
baseline changes. This module is that switch, so LAVT, VLT, LTS (and S2RM) get the plug-in
from one place, and the loss on those logits: SADLR's 2-class Dice (its Table 3 trains every
baseline with it) or LAVT's class-weighted cross-entropy (``head_loss="weighted_ce"``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rislayers import DeepSupervisionLoss, DynamicQueryRefiner, check_shape, dice_loss

from ..base import upsample_to
from ..config import ClassifierHeadConfig, PartConfig, RefinerHeadConfig
from ..encoders import TextFeatures
from ..registry import user_part_module

__all__ = ["SegmentationHead", "weighted_cross_entropy"]

#: LAVT's class weights (background, foreground) in its training criterion.
LAVT_CLASS_WEIGHTS = (0.9, 1.1)


def weighted_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """LAVT's loss: 2-class cross-entropy weighted 0.9 (background) and 1.1 (foreground).

    Averaged over the pixels with PyTorch's weighted mean (divided by the summed weights of
    the pixels' classes), in float32.

    Args:
        logits: ``(b, 2, h, w)`` background and foreground scores.
        target: ``(b, h, w)``, bool or {0, 1}, at the logits' size.

    Returns:
        A float32 scalar.

    Example:
        >>> import torch
        >>> logits = torch.zeros(1, 2, 2, 2)  # 50/50 everywhere: the loss is log 2
        >>> round(weighted_cross_entropy(logits, torch.ones(1, 2, 2, dtype=torch.bool)).item(), 4)
        0.6931
    """
    if logits.dim() != 4 or logits.shape[1] != 2:
        raise ValueError(f"logits: expected (b, 2, h, w) background and foreground scores; got shape {tuple(logits.shape)}")
    weight = torch.tensor(LAVT_CLASS_WEIGHTS, dtype=torch.float32, device=logits.device)
    return F.cross_entropy(logits.float(), target.long(), weight=weight)


class SegmentationHead(nn.Module):
    """2-class logits from a decoder map: the 1x1 classifier or SADLR's refiner.

    Args:
        dim: channels of the decoder map.
        text_dim: channels of the word features (used by the refiner).
        config: the head part: :class:`~reference_models.config.ClassifierHeadConfig`,
            :class:`~reference_models.config.RefinerHeadConfig` (its iterations, widths,
            loss weights and loss), or a head of one's own
            (:func:`~reference_models.register_part`: built as ``Module(dim, text_dim,
            config, norm=norm)``, it returns 2-class logits and trains with the 2-class Dice).
        norm: the convolution norm handed to a head of one's own.
        align_corners: how the logits are upsampled to the target for the loss, as the model
            upsamples its prediction (LAVT's code: ``True``).
        from_logit: the decoder already predicts (ASDA's aligner as the decoder: ``feats`` is
            its one foreground logit): no classifier is built, and the logit ``l`` is read as
            the 2-class pair ``(0, l)``, which the classifier's loss takes. Only with the
            classifier's config: a refiner needs a decoded map.

    Shape:
        - feats: ``(b, c, h, w)`` (``c = 1`` with ``from_logit``)
        - output: list of 2-class logits ``(b, 2, h, w)``: one for the classifier, one per
          refinement iteration for SADLR (the last is the prediction)

    Example:
        >>> head = SegmentationHead(1, 8, ClassifierHeadConfig(), from_logit=True)
        >>> text = TextFeatures(torch.randn(2, 3, 8), None, torch.randn(2, 8))
        >>> [tuple(l.shape) for l in head(torch.randn(2, 1, 4, 4), text)], len(list(head.parameters()))
        ([(2, 2, 4, 4)], 0)
    """

    def __init__(
        self,
        dim: int,
        text_dim: int,
        config: ClassifierHeadConfig | RefinerHeadConfig | PartConfig,
        *,
        align_corners: bool = False,
        from_logit: bool = False,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        self.refines = isinstance(config, RefinerHeadConfig)
        user = user_part_module(config)
        if from_logit and (self.refines or user is not None or dim != 1):
            raise ValueError(f"from_logit: a decoder that predicts hands the classifier's loss one logit channel; got {config.kind} on {dim} channels")
        self.from_logit = from_logit
        self.align_corners = align_corners
        ours = isinstance(config, (ClassifierHeadConfig, RefinerHeadConfig))
        loss = weighted_cross_entropy if ours and config.loss == "weighted_ce" else dice_loss
        self.criterion = DeepSupervisionLoss(config.loss_weights if self.refines else (1.0,), loss=loss)
        self.user_head = None if user is None else user(dim, text_dim, config, norm=norm)
        if self.refines:
            self.refiner = DynamicQueryRefiner(
                dim,
                text_dim,
                num_iters=config.iters,
                hidden_dims=config.hidden,
                repeats=config.repeats,
                update=config.update,
                pooling=config.pooling,
            )
        elif not from_logit and user is None:
            self.classifier = nn.Conv2d(dim, 2, kernel_size=1)

    def forward(self, feats: torch.Tensor, text: TextFeatures) -> list[torch.Tensor]:
        if self.refines:
            return list(self.refiner(feats, text.words, text.word_mask).logits)
        if self.from_logit:  # background 0, foreground l: softmax gives sigmoid(l), l1 - l0 gives l
            return [torch.cat([torch.zeros_like(feats), feats], dim=1)]
        if self.user_head is not None:
            logits = self.user_head(feats, text.words, text.word_mask)
            check_shape(logits, "b 2 h w", name=f"{type(self.user_head).__name__} output (2-class logits)", b=feats.shape[0])
            return [logits]
        return [self.classifier(feats)]

    def loss(self, logits: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        """``head_loss`` (2-class Dice or LAVT's weighted cross-entropy) at the target's size:
        SADLR's iterations weighted by ``loss_weights``, the baseline's classifier alone."""
        predictions = logits if self.refines else logits[-1:]
        if self.align_corners:  # otherwise the criterion upsamples, with align_corners=False
            predictions = [upsample_to(p.float(), tuple(target.shape[-2:]), align_corners=True) for p in predictions]
        return self.criterion(predictions, target)
