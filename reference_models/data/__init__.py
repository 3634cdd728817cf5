"""Data for referring image segmentation: the REFER datasets, a procedural benchmark, tokenizers.

- :mod:`~reference_models.data.synthetic`: :class:`SyntheticReferDataset` (generated on the
  fly, levels 1-4) and :func:`export_refer` (writes it in the REFER layout).
- :mod:`~reference_models.data.refer`: :class:`ReferDataset` over RefCOCO/RefCOCO+/RefCOCOg/
  RefCLEF (and exported synthetic data) in the REFER layout.
- :mod:`~reference_models.data.tokenizers`: word-level, local BERT WordPiece and CLIP BPE
  tokenizers with one output format.
- :mod:`~reference_models.data.transforms`, :mod:`~reference_models.data.masks`: resizing,
  letterboxing and its inverse, normalisation; COCO polygons and RLE.
- :mod:`~reference_models.data.samples`: the shared sample keys and :func:`collate`.
- :mod:`~reference_models.data.images`: :func:`load_image`, the one way pictures are read.
- :mod:`~reference_models.data.errors`: :class:`DataError` (bad data, one line naming the
  file) and :class:`BadSampleError` (one sample that cannot be read).
- :mod:`~reference_models.data.ceiling`: the text-blind ceiling of the synthetic levels.
"""

from __future__ import annotations

import importlib
from typing import Any

# Names are imported lazily (PEP 562) so ``python -m reference_models.data.synthetic`` does
# not find its own module already imported by the package, and importing the package stays cheap.
_SOURCES = {
    "SyntheticReferDataset": "synthetic",
    "export_refer": "synthetic",
    "LEVELS": "synthetic",
    "DEFAULT_LEVEL": "synthetic",
    "ReferDataset": "refer",
    "DATASET_SPLITS": "refer",
    "CorruptImageError": "errors",
    "DataError": "errors",
    "BadSampleError": "errors",
    "load_image": "images",
    "BadPickleError": "safe_pickle",
    "UnsafePickleError": "safe_pickle",
    "load_plain_pickle": "safe_pickle",
    "SAMPLE_KEYS": "samples",
    "collate": "samples",
    "Tokenizer": "tokenizers",
    "TokenizedText": "tokenizers",
    "WordTokenizer": "tokenizers",
    "BertTokenizer": "tokenizers",
    "ClipTokenizer": "tokenizers",
    "build_tokenizer": "tokenizers",
    "bundled_bert_path": "tokenizers",
    "IMAGENET_MEAN": "transforms",
    "IMAGENET_STD": "transforms",
    "CLIP_MEAN": "transforms",
    "CLIP_STD": "transforms",
    "ContentBox": "transforms",
    "normalize": "transforms",
    "denormalize": "transforms",
    "to_original_size": "transforms",
    "polygons_to_mask": "masks",
    "rle_encode": "masks",
    "rle_decode": "masks",
    "segmentation_to_mask": "masks",
}

__all__ = [
    "SyntheticReferDataset",
    "export_refer",
    "LEVELS",
    "DEFAULT_LEVEL",
    "ReferDataset",
    "DATASET_SPLITS",
    "CorruptImageError",
    "DataError",
    "BadSampleError",
    "load_image",
    "BadPickleError",
    "UnsafePickleError",
    "load_plain_pickle",
    "SAMPLE_KEYS",
    "collate",
    "Tokenizer",
    "TokenizedText",
    "WordTokenizer",
    "BertTokenizer",
    "ClipTokenizer",
    "build_tokenizer",
    "bundled_bert_path",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CLIP_MEAN",
    "CLIP_STD",
    "ContentBox",
    "normalize",
    "denormalize",
    "to_original_size",
    "polygons_to_mask",
    "rle_encode",
    "rle_decode",
    "segmentation_to_mask",
]


def __getattr__(name: str) -> Any:
    if name in _SOURCES:
        value = getattr(importlib.import_module(f".{_SOURCES[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
