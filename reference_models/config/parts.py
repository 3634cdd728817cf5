"""One small frozen config per part of a reference model.

Each part config holds only what its part reads, checks its own values where it is defined,
and knows its flat names: the single-level ``ModelConfig`` field names used before the
configuration was composed (``refiner_iters`` is :class:`RefinerHeadConfig`'s ``iters``), so
the names in the README, the catalogue and the recorded studies keep working.

A slot that can hold one of several parts (the vision encoder, the head, S2RM's neck ...)
tells them apart by ``kind``, the ``"kind"`` key of the part in ``config.json``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from . import checks

__all__ = [
    "PartConfig", "SwinConfig", "ClipVisionConfig", "BertConfig", "ClipTextConfig",
    "ClassifierHeadConfig", "RefinerHeadConfig", "VISION_PARTS", "TEXT_PARTS", "HEAD_PARTS",
]


def as_tuples(value: Any) -> Any:
    """JSON lists as tuples, at every depth (``[[4, 6], [7, 9]]`` -> ``((4, 6), (7, 9))``)."""
    if isinstance(value, list):
        return tuple(as_tuples(v) for v in value)
    return value


@dataclass(frozen=True)
class PartConfig:
    """Base of the part configs: ``kind``, the flat names, and (de)serialisation.

    Subclasses set ``kind`` (their name in ``config.json``), ``flat_names`` (field -> the
    flat ``ModelConfig`` name of before) and override :meth:`check`.
    """

    kind: ClassVar[str] = ""
    #: other names a dotted override may use for this part's slot (``refiner.iters``).
    aliases: ClassVar[tuple[str, ...]] = ()
    flat_names: ClassVar[dict[str, str]] = {}

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise a one-line ``ValueError`` naming the first wrong field."""

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def to_dict(self) -> dict[str, Any]:
        """``{"kind": ..., field: value, ...}``, JSON-ready (tuples become lists)."""
        values = {name: _jsonable(getattr(self, name)) for name in self.field_names()}
        return {"kind": self.kind, **values}

    @classmethod
    def from_values(cls, values: dict[str, Any], *, where: str) -> PartConfig:
        """Build from a ``config.json`` part (without its ``kind``); unknown keys are refused."""
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"{where}: unknown keys {unknown} for a {cls.kind!r} part; valid keys are {list(cls.field_names())}")
        return cls(**{key: as_tuples(value) for key, value in values.items()})


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


# -- encoders -------------------------------------------------------------------------------
@dataclass(frozen=True)
class SwinConfig(PartConfig):
    """A Swin image encoder (timm's layout; Swin-B by default).

    Args:
        embed_dim: stage-1 channels (128 for Swin-B, 96 for Swin-T).
        depths: blocks per stage.
        heads: attention heads per stage.
        window: window size.
        windows: ``"timm"`` (shift, then pad; no shift on a map no larger than one window) or
            ``"segmentation"`` (pad to whole windows, then shift: LAVT's code). The same weights
            either way; at 480 px they differ in the last (15 x 15) stage only.
        drop_path: stochastic-depth rate (0.2 for the papers' Swin-B, 0 for tiny).
        weights: a local timm checkpoint, or None for random init.
    """

    kind: ClassVar[str] = "swin"
    flat_names: ClassVar[dict[str, str]] = {
        "embed_dim": "swin_embed_dim", "depths": "swin_depths", "heads": "swin_heads", "window": "swin_window",
        "windows": "swin_windows", "drop_path": "drop_path", "weights": "vision_weights",
    }
    embed_dim: int = 128
    depths: tuple[int, ...] = (2, 2, 18, 2)
    heads: tuple[int, ...] = (4, 8, 16, 32)
    window: int = 12
    windows: str = "timm"
    drop_path: float = 0.2
    weights: str | None = None

    def check(self) -> None:
        checks.count("embed_dim", self.embed_dim, limit="width")
        checks.counts("depths", self.depths, limit="depth", example="[2, 2, 6, 2]")
        checks.counts("heads", self.heads, limit="heads", example="[3, 6, 12, 24]")
        if len(self.depths) != len(self.heads):
            raise ValueError(
                f"depths, heads: expected one depth and one head count per Swin stage; got {len(self.depths)} "
                f"depths {self.depths} and {len(self.heads)} head counts {self.heads}"
            )
        if self.embed_dim * 2 ** (len(self.depths) - 1) > checks.SIZE_LIMITS["width"]:
            raise ValueError(f"embed_dim: {self.embed_dim} doubles past {checks.SIZE_LIMITS['width']} channels in {len(self.depths)} stages")
        checks.count("window", self.window, limit="small")
        checks.choice("windows", self.windows, ("timm", "segmentation"))
        checks.number("drop_path", self.drop_path, upper=1.0)
        checks.optional_path("weights", self.weights)


@dataclass(frozen=True)
class ClipVisionConfig(PartConfig):
    """A CLIP ViT image encoder (open_clip's layout; ViT-B/16 by default).

    Args:
        width: ViT width.
        layers: ViT depth.
        heads: attention heads.
        patch: patch size.
        embed_dim: joint embedding size (the image projection's output).
        activation: the MLP activation, ``"quick_gelu"`` (OpenAI's weights) or ``"gelu"``
            (open_clip's default). It has no weights, so it must match the checkpoint's training.
        weights: a local open_clip checkpoint, or None for random init.
    """

    kind: ClassVar[str] = "clip"
    flat_names: ClassVar[dict[str, str]] = {
        "width": "clip_width", "layers": "clip_layers", "heads": "clip_heads", "patch": "clip_patch",
        "embed_dim": "clip_embed_dim", "activation": "clip_activation", "weights": "vision_weights",
    }
    width: int = 768
    layers: int = 12
    heads: int = 12
    patch: int = 16
    embed_dim: int = 512
    activation: str = "gelu"
    weights: str | None = None

    def check(self) -> None:
        checks.count("width", self.width, limit="width")
        checks.count("layers", self.layers, limit="depth")
        checks.count("heads", self.heads, limit="heads")
        checks.count("patch", self.patch, limit="small")
        checks.count("embed_dim", self.embed_dim, limit="width")
        checks.choice("activation", self.activation, ("gelu", "quick_gelu"))
        checks.optional_path("weights", self.weights)


_TOKENIZERS = ("bert", "clip", "word")


@dataclass(frozen=True)
class BertConfig(PartConfig):
    """A BERT text encoder (transformers; BERT-base by default) and its tokenizer.

    Args:
        dim: hidden size.
        layers: depth.
        heads: attention heads.
        intermediate: MLP width.
        vocab_size: vocabulary size.
        max_words: tokens per sentence, [CLS] and [SEP] included.
        tokenizer: ``"bert"`` (WordPiece of ``weights`` or the bundled bert-base-uncased
            vocabulary), ``"clip"`` (CLIP BPE) or ``"word"`` (the generated benchmark's words).
        dropout: hidden and attention dropout (0.1 as pretrained; 0 for tiny).
        weights: a local Hugging Face folder, or None for random init.
    """

    kind: ClassVar[str] = "bert"
    flat_names: ClassVar[dict[str, str]] = {
        "dim": "text_dim", "layers": "text_layers", "heads": "text_heads", "intermediate": "text_intermediate",
        "vocab_size": "vocab_size", "max_words": "max_words", "tokenizer": "tokenizer", "dropout": "text_dropout",
        "weights": "text_weights",
    }
    dim: int = 768
    layers: int = 12
    heads: int = 12
    intermediate: int = 3072
    vocab_size: int = 30522
    max_words: int = 20
    tokenizer: str = "bert"
    dropout: float = 0.1
    weights: str | None = None

    def check(self) -> None:
        checks.count("dim", self.dim, limit="width")
        checks.count("layers", self.layers, limit="depth")
        checks.count("heads", self.heads, limit="heads")
        checks.count("intermediate", self.intermediate, limit="width", minimum=1)
        checks.count("vocab_size", self.vocab_size, limit="vocab")
        checks.count("max_words", self.max_words, limit="words")
        checks.choice("tokenizer", self.tokenizer, _TOKENIZERS)
        checks.number("dropout", self.dropout, upper=1.0)
        checks.optional_path("weights", self.weights)


#: CLIP's BPE vocabulary size: a tower of this vocabulary keeps CLIP's 77 positions.
CLIP_VOCAB = 49408
CLIP_CONTEXT = 77


@dataclass(frozen=True)
class ClipTextConfig(PartConfig):
    """A CLIP text tower (open_clip's layout) and its tokenizer.

    Args:
        dim: width.
        layers: depth.
        heads: attention heads.
        vocab_size: vocabulary size (49408 for CLIP's BPE).
        max_words: tokens per sentence, [SOS] and [EOS] included.
        context_length: positions of the tower (77 in CLIP's weights; at least ``max_words``).
        tokenizer: as :class:`BertConfig`'s.
        embed_dim: joint embedding size (the text projection's output).
        activation: the MLP activation (as :class:`ClipVisionConfig`'s).
        weights: a local open_clip checkpoint, or None for random init.
    """

    kind: ClassVar[str] = "clip"
    flat_names: ClassVar[dict[str, str]] = {
        "dim": "text_dim", "layers": "text_layers", "heads": "text_heads", "vocab_size": "vocab_size",
        "max_words": "max_words", "tokenizer": "tokenizer", "embed_dim": "clip_embed_dim",
        "activation": "clip_activation", "weights": "text_weights",
    }
    dim: int = 512
    layers: int = 12
    heads: int = 8
    vocab_size: int = CLIP_VOCAB
    max_words: int = 17
    context_length: int = CLIP_CONTEXT
    tokenizer: str = "clip"
    embed_dim: int = 512
    activation: str = "gelu"
    weights: str | None = None

    @staticmethod
    def context_for(max_words: int, vocab_size: int) -> int:
        """The positions a tower of this vocabulary had before the field existed."""
        return max(max_words, CLIP_CONTEXT) if vocab_size == CLIP_VOCAB else max_words

    def check(self) -> None:
        checks.count("dim", self.dim, limit="width")
        checks.count("layers", self.layers, limit="depth")
        checks.count("heads", self.heads, limit="heads")
        checks.count("vocab_size", self.vocab_size, limit="vocab")
        checks.count("max_words", self.max_words, limit="words")
        checks.count("context_length", self.context_length, limit="words", minimum=self.max_words)
        checks.choice("tokenizer", self.tokenizer, _TOKENIZERS)
        checks.count("embed_dim", self.embed_dim, limit="width")
        checks.choice("activation", self.activation, ("gelu", "quick_gelu"))
        checks.optional_path("weights", self.weights)


# -- heads ----------------------------------------------------------------------------------
_HEAD_LOSSES = ("dice", "weighted_ce")


@dataclass(frozen=True)
class ClassifierHeadConfig(PartConfig):
    """The baselines' 1x1 classifier on the decoder map.

    Args:
        loss: ``"dice"`` (SADLR's setting for every baseline) or ``"weighted_ce"`` (LAVT's
            cross-entropy weighted 0.9 / 1.1).
    """

    kind: ClassVar[str] = "classifier"
    flat_names: ClassVar[dict[str, str]] = {"loss": "head_loss"}
    loss: str = "dice"

    def check(self) -> None:
        checks.choice("loss", self.loss, _HEAD_LOSSES)


@dataclass(frozen=True)
class RefinerHeadConfig(PartConfig):
    """SADLR's :class:`~rislayers.DynamicQueryRefiner` in place of the classifier.

    Args:
        iters: refinement iterations.
        hidden: dynamic-layer widths.
        repeats: repeats of ``hidden``.
        update: query update, ``"sum"`` or ``"replace"``.
        pooling: mask pooling, ``"hard"`` or ``"soft"``.
        loss_weights: per-iteration loss weights (one per iteration).
        loss: as :class:`ClassifierHeadConfig`'s, on every iteration.
    """

    kind: ClassVar[str] = "sadlr"
    aliases: ClassVar[tuple[str, ...]] = ("refiner",)
    flat_names: ClassVar[dict[str, str]] = {
        "iters": "refiner_iters", "hidden": "refiner_hidden", "repeats": "refiner_repeats", "update": "refiner_update",
        "pooling": "refiner_pooling", "loss_weights": "loss_weights", "loss": "head_loss",
    }
    iters: int = 3
    hidden: tuple[int, ...] = (128, 512)
    repeats: int = 1
    update: str = "sum"
    pooling: str = "hard"
    loss_weights: tuple[float, ...] = (0.15, 0.15, 0.7)
    loss: str = "dice"

    def check(self) -> None:
        checks.count("iters", self.iters, limit="small")
        checks.counts("hidden", self.hidden, limit="width", example="[128, 512]")
        checks.count("repeats", self.repeats, limit="small")
        checks.choice("update", self.update, ("sum", "replace"))
        checks.choice("pooling", self.pooling, ("hard", "soft"))
        weights = self.loss_weights
        if not isinstance(weights, tuple) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 and v == v and v != float("inf") for v in weights
        ):
            raise ValueError(f"loss_weights: expected a list of non-negative numbers; got {weights!r}")
        if len(weights) != self.iters:
            raise ValueError(f"loss_weights: expected one weight per refiner iteration ({self.iters}); got {weights}")
        checks.choice("loss", self.loss, _HEAD_LOSSES)


VISION_PARTS = (SwinConfig, ClipVisionConfig)
TEXT_PARTS = (BertConfig, ClipTextConfig)
HEAD_PARTS = (ClassifierHeadConfig, RefinerHeadConfig)
