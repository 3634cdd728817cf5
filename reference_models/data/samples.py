"""The sample dictionary shared by every dataset, and the collate function for it.

Every dataset returns the same keys (:data:`SAMPLE_KEYS`, plus ``orig_mask`` when asked for),
so training and evaluation code never branch on the data source:

========================  ===============  =====================================================
key                       type / shape     meaning
========================  ===============  =====================================================
``image``                 (3, H, W) f32    normalised model input
``input_ids``             (l,) int64       token ids, padding 0
``attention_mask``        (l,) int64       1 on real tokens
``mask``                  (H, W) bool      target at input resolution (nearest-resized)
``sentence``              str              the referring expression
``orig_size``             (2,) int64       original ``(height, width)``
``content_box``           (4,) int64       ``(top, left, height, width)`` of the picture in
                                           the input (see ``transforms.to_original_size``)
``image_id``              int              image id
``ref_id``                int              referred object (ref) id
``sent_id``               int              sentence id
``orig_mask``             (h, w) bool      target at original size (``keep_original_mask``)
========================  ===============  =====================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from .tokenizers import Tokenizer
from .transforms import ResizeMode, normalize, resize_image, resize_mask

__all__ = ["SAMPLE_KEYS", "make_sample", "collate"]

SAMPLE_KEYS: tuple[str, ...] = (
    "image",
    "input_ids",
    "attention_mask",
    "mask",
    "sentence",
    "orig_size",
    "content_box",
    "image_id",
    "ref_id",
    "sent_id",
)


def make_sample(
    image: Image.Image,
    mask: np.ndarray,
    sentence: str,
    *,
    tokenizer: Tokenizer,
    image_size: int,
    resize: ResizeMode,
    mean: Sequence[float],
    std: Sequence[float],
    image_id: int,
    ref_id: int,
    sent_id: int,
    keep_original_mask: bool,
) -> dict[str, Any]:
    """Resize, normalise and tokenize one (image, mask, sentence) triple into a sample dict.

    Args:
        image: the original RGB picture.
        mask: ``(h, w)`` bool target at original size.
        sentence: the referring expression.
        tokenizer: any tokenizer of :mod:`reference_models.data.tokenizers`.
        image_size: side of the square model input.
        resize: ``"square"`` or ``"letterbox"``.
        mean: normalisation mean.
        std: normalisation standard deviation.
        image_id: image id.
        ref_id: ref id.
        sent_id: sentence id.
        keep_original_mask: also return ``orig_mask``.

    Returns:
        The sample dict (keys in the module docstring).

    Example:
        >>> from reference_models.data.tokenizers import WordTokenizer
        >>> s = make_sample(Image.new("RGB", (40, 30)), np.zeros((30, 40), bool), "the red circle",
        ...                 tokenizer=WordTokenizer(), image_size=32, resize="letterbox",
        ...                 mean=(0.5,) * 3, std=(0.5,) * 3, image_id=0, ref_id=0, sent_id=0,
        ...                 keep_original_mask=False)
        >>> s["image"].shape, s["mask"].shape, s["content_box"].tolist()
        (torch.Size([3, 32, 32]), torch.Size([32, 32]), [4, 0, 24, 32])
    """
    if mask.shape != (image.height, image.width):
        raise ValueError(f"mask: shape {mask.shape} does not match the image size {(image.height, image.width)}")
    fill = tuple(int(round(255 * m)) for m in mean)
    resized, box = resize_image(image, image_size, mode=resize, fill=fill)
    tokens = tokenizer(sentence)
    sample: dict[str, Any] = {
        "image": normalize(resized, mean, std),
        "input_ids": tokens.input_ids,
        "attention_mask": tokens.attention_mask,
        "mask": torch.from_numpy(resize_mask(mask, image_size, mode=resize)),
        "sentence": sentence,
        "orig_size": torch.tensor([image.height, image.width], dtype=torch.int64),
        "content_box": torch.tensor(list(box), dtype=torch.int64),
        "image_id": int(image_id),
        "ref_id": int(ref_id),
        "sent_id": int(sent_id),
    }
    if keep_original_mask:
        sample["orig_mask"] = torch.from_numpy(np.ascontiguousarray(mask, dtype=bool))
    return sample


def collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch sample dicts: stack equal-shape tensors, ints become a tensor, the rest lists.

    ``orig_mask`` (different sizes per image) and ``sentence`` stay lists.

    Args:
        samples: sample dicts with the same keys.

    Returns:
        The batch dict.

    Example:
        >>> batch = collate([{"image": torch.zeros(3, 4, 4), "sentence": "a", "ref_id": 1}] * 2)
        >>> batch["image"].shape, batch["sentence"], batch["ref_id"].tolist()
        (torch.Size([2, 3, 4, 4]), ['a', 'a'], [1, 1])
    """
    if not samples:
        raise ValueError("samples: expected at least one sample")
    keys = list(samples[0])
    for index, sample in enumerate(samples):
        if list(sample) != keys:
            raise ValueError(f"samples[{index}]: keys {sorted(sample)} differ from samples[0]'s {sorted(keys)}")
    batch: dict[str, Any] = {}
    for key in keys:
        values = [sample[key] for sample in samples]
        first = values[0]
        if isinstance(first, torch.Tensor) and all(v.shape == first.shape for v in values):
            batch[key] = torch.stack(values)
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            batch[key] = torch.tensor(values, dtype=torch.int64)
        else:
            batch[key] = values
    return batch
