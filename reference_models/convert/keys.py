"""Where each tensor of a LAVT release goes in our ``lavt`` model, and which ones it drops.

LAVT's ``model`` state dict holds its multimodal Swin (``backbone.*``: the Microsoft Swin of
the segmentation code, with a PWAM ``fusion`` and a ``res_gate`` inside every stage and a
``norm{i}`` per output) and its decoder (``classifier.*``, ``SimpleDecoding``); its BERT is
saved beside it (``bert_model``) or, in the ``lavt_one`` layout, inside it
(``text_encoder.*``). The names below were read from LAVT's code (``lib/backbone.py``,
``lib/mask_predictor.py``, ``lib/_utils.py``, ``train.py``); the rules are ours.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

import torch

__all__ = ["Mapped", "map_lavt_key", "TEXT_PREFIX"]

#: Where our models keep the Hugging Face BERT.
TEXT_PREFIX = "text_encoder.bert."

_STAGE = r"backbone\.layers\.(\d+)"
_PWAM = _STAGE + r"\.fusion"

# The convolutions whose bias cannot change LAVT's output (see PixelWordAttention): the
# query's and the attended feature's feed an instance norm, which removes any per-channel
# constant; the key's adds the same score to every real word of a pixel; the value's adds
# one constant to every gathered vector, which the next norm removes.
_DEAD_BIAS = "a bias that cannot change LAVT's output (an instance norm or the word softmax removes it)"


class Mapped(NamedTuple):
    """Where one LAVT tensor goes.

    Args:
        key: our state-dict key, or ``None`` when the tensor is dropped.
        tensor: the value, in our layout.
        reason: why it is dropped (empty otherwise).
    """

    key: str | None
    tensor: torch.Tensor
    reason: str = ""


def _decoder(match: re.Match) -> str:
    """``classifier.conv1_4`` -> ``decoder.blocks.0.0.0``: LAVT's level 4 is our first block
    (it fuses stage 4 into stage 3), ``conv1``/``bn1`` its first ConvBNReLU, conv then BN."""
    kind, layer, level, rest = match.groups()
    return f"decoder.blocks.{4 - int(level)}.{int(layer) - 1}.{0 if kind == 'conv' else 1}.{rest}"


def _next_stage(match: re.Match) -> str:
    """LAVT merges patches at the end of stage ``i``; timm at the start of stage ``i + 1``."""
    return f"backbone.swin.layers.{int(match[1]) + 1}.downsample.{match[2]}"


_Target = str | Callable[[re.Match], str] | None

# (pattern, target, why it is dropped when the target is None); the first match wins.
_RULES: tuple[tuple[str, _Target, str], ...] = (
    (r"backbone\.patch_embed\.(.+)", r"backbone.swin.patch_embed.\1", ""),
    (_STAGE + r"\.blocks\.\d+\.attn\.relative_position_index", None, "a buffer our Swin rebuilds"),
    (_STAGE + r"\.blocks\.(\d+)\.(.+)", r"backbone.swin.layers.\1.blocks.\2.\3", ""),
    (_STAGE + r"\.downsample\.(.+)", _next_stage, ""),
    (_PWAM + r"\.vis_project\.0\.(weight|bias)", r"fusions.\1.vis_proj.0.\2", ""),
    (_PWAM + r"\.project_mm\.0\.(weight|bias)", r"fusions.\1.out_proj.0.\2", ""),
    (_PWAM + r"\.image_lang_att\.f_query\.0\.weight", r"fusions.\1.query.weight", ""),
    (_PWAM + r"\.image_lang_att\.f_key\.0\.weight", r"fusions.\1.key.weight", ""),
    (_PWAM + r"\.image_lang_att\.f_value\.0\.weight", r"fusions.\1.value.weight", ""),
    (_PWAM + r"\.image_lang_att\.W\.0\.weight", r"fusions.\1.gathered_proj.weight", ""),
    (_PWAM + r"\.image_lang_att\.(f_query|f_key|f_value|W)\.0\.bias", None, _DEAD_BIAS),
    (_STAGE + r"\.res_gate\.0\.weight", r"gates.\1.hidden.weight", ""),
    (_STAGE + r"\.res_gate\.2\.weight", r"gates.\1.out.weight", ""),
    (r"backbone\.norm(\d+)\.(weight|bias)", r"backbone.out_norms.\1.\2", ""),
    (r"classifier\.(conv|bn)([12])_([234])\.(.+)", _decoder, ""),
    (r"text_encoder\.pooler\..+", None, "BERT's pooler, which LAVT never reads"),
    (r"text_encoder\.embeddings\.position_ids", None, "a buffer BERT rebuilds"),
    (r"text_encoder\.(.+)", TEXT_PREFIX + r"\1", ""),
)
_COMPILED = tuple((re.compile(pattern), target, reason) for pattern, target, reason in _RULES)
_CLASSIFIER = re.compile(r"classifier\.conv1_1\.(weight|bias)")


def map_lavt_key(key: str, tensor: torch.Tensor, *, refiner: bool) -> Mapped | None:
    """Our name for one tensor of a LAVT release (BERT's keys prefixed ``text_encoder.``).

    Args:
        key: the key in LAVT's ``model`` state dict, or ``text_encoder.`` + a ``bert_model`` key.
        tensor: its value; LAVT's 1x1 ``Conv1d`` weights ``(out, in, 1)`` become ``Linear``
            weights ``(out, in)``.
        refiner: the target model has SADLR's refiner instead of LAVT's 2-class classifier
            (which is then dropped).

    Returns:
        Where it goes, or ``None`` for a key no rule knows (the caller reports it).

    Example:
        >>> import torch
        >>> mapped = map_lavt_key("backbone.layers.0.downsample.reduction.weight", torch.zeros(2, 4), refiner=False)
        >>> mapped.key
        'backbone.swin.layers.1.downsample.reduction.weight'
    """
    match = _CLASSIFIER.fullmatch(key)
    if match:
        if refiner:
            return Mapped(None, tensor, "LAVT's 2-class classifier, which SADLR's refiner replaces")
        return Mapped(f"head.classifier.{match[1]}", tensor)
    for pattern, target, reason in _COMPILED:
        match = pattern.fullmatch(key)
        if match is None:
            continue
        if target is None:
            return Mapped(None, tensor, reason)
        name = target(match) if callable(target) else match.expand(target)
        if name.startswith("fusions.") and tensor.dim() == 3 and tensor.shape[-1] == 1:
            tensor = tensor[..., 0]
        return Mapped(name, tensor)
    return None
