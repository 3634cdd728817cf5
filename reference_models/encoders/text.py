"""The common output of every text encoder."""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["TextFeatures"]


class TextFeatures(NamedTuple):
    """Word and sentence features of a batch of sentences.

    Attributes:
        words: per-token features ``(b, l, d)``.
        word_mask: ``(b, l)`` bool, True for real tokens.
        sentence: one vector per sentence ``(b, d)`` ([CLS] for BERT, [EOS] for CLIP).
    """

    words: torch.Tensor
    word_mask: torch.Tensor
    sentence: torch.Tensor
