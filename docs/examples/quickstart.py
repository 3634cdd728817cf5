"""The front page's example: one layer, random inputs, the shapes it returns (run by tests/test_guides.py)."""

import torch

from rislayers import DynamicQueryRefiner

refiner = DynamicQueryRefiner(512, 768)  # visual channels, text channels
feats, words = torch.randn(2, 512, 30, 30), torch.randn(2, 20, 768)
word_mask = torch.ones(2, 20, dtype=torch.bool)  # True on real tokens
out = refiner(feats, words, word_mask)
print(out.logits[-1].shape)  # torch.Size([2, 2, 30, 30]): the last iteration's 2-class logits
assert out.logits[-1].shape == (2, 2, 30, 30)
