"""Frozen model configurations, serialisable to JSON.

One flat dataclass describes every reference model: the baseline architecture, the
plug-in on top of it, the encoders and their sizes, and the plug-ins' options. Flat keeps
``build_model("lavt_sadlr_tiny", image_size=96, text_weights="path/to/bert")`` simple and
makes ``config.json`` readable; fields that an architecture does not use are ignored by it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ModelConfig", "ARCHITECTURES", "PLUGINS", "parse_overrides"]

ARCHITECTURES = ("lavt", "vlt", "lts", "asda", "s2rm")
PLUGINS = (None, "sadlr")
VISION_ENCODERS = ("swin", "clip")
TEXT_ENCODERS = ("bert", "clip")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a reference model (weights aside).

    Args:
        name: the registry name it was built from (informational).
        architecture: one of ``lavt``, ``vlt``, ``lts``, ``asda``, ``s2rm``.
        plugin: ``None`` or ``"sadlr"`` (DynamicQueryRefiner replaces the baseline classifier).
        image_size: square input size in pixels.
        vision_encoder: ``"swin"`` (timm) or ``"clip"`` (open_clip ViT).
        swin_embed_dim: Swin stage-1 channels (128 for Swin-B, 96 for Swin-T).
        swin_depths: blocks per Swin stage.
        swin_heads: attention heads per Swin stage.
        swin_window: Swin window size.
        clip_width: CLIP ViT width.
        clip_layers: CLIP ViT depth.
        clip_heads: CLIP ViT heads.
        clip_patch: CLIP ViT patch size.
        clip_embed_dim: CLIP joint embedding size (text projection output).
        vision_weights: local checkpoint for the vision encoder (timm or open_clip file).
        drop_path: Swin's stochastic-depth rate (0.2 for the papers' Swin-B, 0 for tiny).
        text_encoder: ``"bert"`` (transformers) or ``"clip"`` (open_clip text tower).
        text_dim: text hidden size (768 for BERT-base).
        text_layers: text transformer depth.
        text_heads: text attention heads.
        text_intermediate: text MLP width.
        vocab_size: text vocabulary size.
        max_words: maximum tokens per sentence (20 for BERT, 17/22 for CLIP).
        tokenizer: ``"bert"`` (WordPiece of ``text_weights`` or the bundled bert-base-uncased
            vocabulary), ``"clip"`` (CLIP BPE) or ``"word"`` (the generated benchmark's
            word-level vocabulary; tiny models). Saved with the model so evaluation and
            prediction tokenize exactly as training did.
        text_weights: local directory (BERT) or checkpoint (CLIP) for the text encoder.
        text_dropout: BERT's hidden and attention dropout (0.1 as pretrained; 0 for tiny).
        norm: the convolution norm of the decoders: ``"batch"`` (the papers) or ``"group"``
            (per-sample statistics, e.g. for tiny per-GPU batches or exact DDP parity on CPU,
            where SyncBatchNorm is unavailable).
        decoder_dim: the decoder width: the baselines' stride-4 map that SADLR refines
            (LAVT: 512), and ASDA's aligner width.
        num_queries: VLT's generated queries.
        transformer_layers: depth of VLT's and LTS's transformers, and of ASDA's aligner
            self-attention.
        refiner_iters: SADLR iterations.
        refiner_hidden: SADLR dynamic-layer widths.
        refiner_repeats: SADLR repeats of ``refiner_hidden``.
        refiner_update: SADLR query update, ``"sum"`` or ``"replace"``.
        refiner_pooling: SADLR mask pooling, ``"hard"`` or ``"soft"``.
        loss_weights: SADLR per-iteration loss weights.
        selector_layers: ASDA candidate layer groups (1-based, inclusive ranges).
        selector_gradient: ASDA selection gradient mode.
        aligner_masks: ASDA number of mask bases.
        s2rm_pos_dim: S2RM position channels.
        focal_weight: ASDA focal-loss weight beside Dice.
    """

    name: str = "custom"
    architecture: str = "lavt"
    plugin: str | None = None
    image_size: int = 480
    # vision
    vision_encoder: str = "swin"
    swin_embed_dim: int = 128
    swin_depths: tuple[int, ...] = (2, 2, 18, 2)
    swin_heads: tuple[int, ...] = (4, 8, 16, 32)
    swin_window: int = 12
    clip_width: int = 768
    clip_layers: int = 12
    clip_heads: int = 12
    clip_patch: int = 16
    clip_embed_dim: int = 512
    vision_weights: str | None = None
    drop_path: float = 0.2
    # text
    text_encoder: str = "bert"
    text_dim: int = 768
    text_layers: int = 12
    text_heads: int = 12
    text_intermediate: int = 3072
    vocab_size: int = 30522
    max_words: int = 20
    tokenizer: str = "bert"
    text_weights: str | None = None
    text_dropout: float = 0.1
    # baselines
    norm: str = "batch"
    decoder_dim: int = 512
    num_queries: int = 16
    transformer_layers: int = 2
    # SADLR
    refiner_iters: int = 3
    refiner_hidden: tuple[int, ...] = (128, 512)
    refiner_repeats: int = 1
    refiner_update: str = "sum"
    refiner_pooling: str = "hard"
    loss_weights: tuple[float, ...] = (0.15, 0.15, 0.7)
    # ASDA
    selector_layers: tuple[tuple[int, int], ...] = ((4, 6), (7, 9))
    selector_gradient: str = "straight_through"
    aligner_masks: int = 32
    focal_weight: float = 1.0
    # S2RM
    s2rm_pos_dim: int = 8

    def __post_init__(self) -> None:
        choices = {
            "architecture": ARCHITECTURES,
            "plugin": PLUGINS,
            "vision_encoder": VISION_ENCODERS,
            "text_encoder": TEXT_ENCODERS,
            "refiner_update": ("sum", "replace"),
            "refiner_pooling": ("hard", "soft"),
            "selector_gradient": ("straight_through", "soft", "none"),
            "norm": ("batch", "group"),
            "tokenizer": ("bert", "clip", "word"),
        }
        for key, allowed in choices.items():
            value = getattr(self, key)
            if value not in allowed:
                raise ValueError(f"{key}: expected one of {allowed}; got {value!r}")
        for key in ("image_size", "text_dim", "decoder_dim", "max_words", "vocab_size", "refiner_iters"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{key}: expected a positive integer; got {value!r}")
        if self.plugin == "sadlr" and len(self.loss_weights) != self.refiner_iters:
            raise ValueError(
                f"loss_weights: expected one weight per refiner iteration ({self.refiner_iters}); "
                f"got {self.loss_weights}"
            )

    # -- (de)serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Rebuild a config from :meth:`to_dict` output; unknown keys raise ``ValueError``."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"config: unknown keys {unknown}; valid keys are {sorted(known)}")
        values = {}
        for key, value in data.items():
            if isinstance(value, list):
                value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
            values[key] = value
        return cls(**values)

    def replace(self, **overrides: Any) -> ModelConfig:
        """A copy with some fields changed; unknown names raise ``ValueError`` listing valid ones."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"overrides: unknown config keys {unknown}; valid keys are {sorted(known)}")
        return dataclasses.replace(self, **overrides)

    def save(self, path: str | Path) -> None:
        """Write the config as indented JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ModelConfig:
        """Read a config written by :meth:`save`, with a clear error for a bad file."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no model config here (expected config.json)") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from None
        return cls.from_dict(data)


def parse_overrides(items: Sequence[str], *, name: str = "model_args") -> dict[str, Any]:
    """Parse ``"KEY=VALUE"`` strings (the CLIs' ``--model-arg``) into config overrides.

    Values are read as JSON where they parse (``3``, ``0.5``, ``true``, ``[2, 2, 6, 2]``) and
    kept as text otherwise (``norm=group``); JSON lists become tuples, as the config's
    sequence fields are. The keys are checked later, by the config that receives them.

    Args:
        items: the ``KEY=VALUE`` strings, in order (a repeated key keeps the last value).
        name: what the error messages call the argument.

    Returns:
        ``{key: value}``.

    Example:
        >>> parse_overrides(["swin_window=12", "norm=group", "swin_depths=[2, 2, 6, 2]"])
        {'swin_window': 12, 'norm': 'group', 'swin_depths': (2, 2, 6, 2)}
    """
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{name}: expected KEY=VALUE; got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        if isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        overrides[key] = value
    return overrides
