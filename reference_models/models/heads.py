"""The prediction head shared by the three baselines: a 1x1 classifier or SADLR's refiner.

SADLR (Sec. 3) plugs into a baseline by removing its final 2-class classifier and feeding
the decoder's stride-4 map to :class:`rislayers.DynamicQueryRefiner`; nothing else of the
baseline changes. This module is that switch, so LAVT, VLT, LTS (and S2RM) get the plug-in
from one place.
"""

from __future__ import annotations

import torch
from torch import nn

from rislayers import DeepSupervisionLoss, DynamicQueryRefiner, dice_loss

from ..config import ModelConfig
from ..encoders import TextFeatures

__all__ = ["SegmentationHead"]


class SegmentationHead(nn.Module):
    """2-class logits from a decoder map: ``plugin=None`` -> 1x1 conv, ``"sadlr"`` -> refiner.

    Args:
        dim: channels of the decoder map.
        text_dim: channels of the word features (used by the refiner).
        config: supplies ``plugin`` and the ``refiner_*`` options and ``loss_weights``.

    Shape:
        - feats: ``(b, c, h, w)``
        - output: list of 2-class logits ``(b, 2, h, w)``: one for the classifier, one per
          refinement iteration for SADLR (the last is the prediction)
    """

    def __init__(self, dim: int, text_dim: int, config: ModelConfig) -> None:
        super().__init__()
        self.plugin = config.plugin
        if config.plugin == "sadlr":
            self.refiner = DynamicQueryRefiner(
                dim,
                text_dim,
                num_iters=config.refiner_iters,
                hidden_dims=config.refiner_hidden,
                repeats=config.refiner_repeats,
                update=config.refiner_update,
                pooling=config.refiner_pooling,
            )
            self.criterion = DeepSupervisionLoss(config.loss_weights)
        else:
            self.classifier = nn.Conv2d(dim, 2, kernel_size=1)

    def forward(self, feats: torch.Tensor, text: TextFeatures) -> list[torch.Tensor]:
        if self.plugin == "sadlr":
            return list(self.refiner(feats, text.words, text.word_mask).logits)
        return [self.classifier(feats)]

    def loss(self, logits: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        """SADLR: iteration-weighted 2-class Dice; baseline: 2-class Dice (SADLR Table 3 setting)."""
        if self.plugin == "sadlr":
            return self.criterion(logits, target)
        return DeepSupervisionLoss((1.0,))(logits[-1:], target)
