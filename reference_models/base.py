"""The base class of every reference model: one output contract, save/load, encoders by config."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .encoders import BertTextEncoder, ClipTextEncoder, ClipVisionEncoder, SwinEncoder, TextFeatures
from .weights import atomic_save, load_weights

__all__ = ["SegmentationOutput", "RISModel", "build_text_encoder", "build_swin", "build_clip_vision", "foreground_logit", "upsample_to", "use_group_norm", "build_tokenizer"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class SegmentationOutput(NamedTuple):
    """What every reference model returns.

    Attributes:
        logits: foreground logit at the input resolution ``(b, 1, H, W)``; ``logits > 0``
            is the predicted mask.
        aux_logits: extra predictions for deep supervision (e.g. SADLR's earlier
            iterations, LTS's localization map), each ``(b, k, h', w')``; their meaning is
            model-specific and the model's :meth:`RISModel.loss` knows how to use them.
    """

    logits: torch.Tensor
    aux_logits: list[torch.Tensor]


def foreground_logit(logits: torch.Tensor) -> torch.Tensor:
    """A 1-channel foreground logit from 1- or 2-class logits (``l1 - l0`` for 2 classes).

    Args:
        logits: ``(b, 1, h, w)`` or ``(b, 2, h, w)`` scores.

    Returns:
        ``(b, 1, h, w)``: positive where the foreground wins.
    """
    return logits[:, 1:2] - logits[:, 0:1] if logits.shape[1] == 2 else logits


def upsample_to(x: torch.Tensor, size: tuple[int, int], *, align_corners: bool = False) -> torch.Tensor:
    """Bilinear resize to ``size`` (no-op when already there).

    Args:
        x: ``(b, k, h, w)`` maps.
        size: the target ``(height, width)``.
        align_corners: the corner pixels' centres of input and output coincide (LAVT's code,
            ``ModelConfig.decoder_align_corners``); ``False`` scales by the size ratio.
    """
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)


def build_text_encoder(config: ModelConfig) -> nn.Module:
    """The text encoder a config asks for (BERT or CLIP text tower).

    Args:
        config: reads ``text_encoder``, the ``text_*`` sizes, ``vocab_size``, ``max_words``
            and ``text_weights`` (a local directory or checkpoint, or None for random init).
    """
    if config.text_encoder == "bert":
        return BertTextEncoder(
            config.text_dim,
            num_layers=config.text_layers,
            num_heads=config.text_heads,
            intermediate=config.text_intermediate,
            vocab_size=config.vocab_size,
            max_words=config.max_words,
            dropout=config.text_dropout,
            weights=config.text_weights,
        )
    return ClipTextEncoder(
        config.text_dim,
        layers=config.text_layers,
        heads=config.text_heads,
        vocab_size=config.vocab_size,
        context_length=max(config.max_words, 77 if config.vocab_size == 49408 else config.max_words),
        embed_dim=config.clip_embed_dim,
        activation=config.clip_activation,
        weights=config.text_weights,
    )


def build_tokenizer(config: ModelConfig):
    """The tokenizer that matches a model's text encoder (``config.tokenizer``).

    Args:
        config: reads ``tokenizer``, ``max_words`` and, for BERT, ``text_weights`` (whose
            vocabulary wins over the bundled bert-base-uncased one).
    """
    from .data.tokenizers import BertTokenizer, ClipTokenizer, WordTokenizer, bundled_bert_path

    if config.tokenizer == "clip":
        return ClipTokenizer(max_length=config.max_words)
    if config.tokenizer == "word":
        tokenizer = WordTokenizer(max_length=config.max_words)
        if tokenizer.vocab_size > config.vocab_size:
            raise ValueError(f"vocab_size: {config.vocab_size} is smaller than the word tokenizer's {tokenizer.vocab_size}")
        return tokenizer
    directory = config.text_weights if config.text_encoder == "bert" and config.text_weights else bundled_bert_path()
    return BertTokenizer(directory, max_length=config.max_words)


def build_swin(config: ModelConfig) -> SwinEncoder:
    """The Swin image encoder a config asks for.

    Args:
        config: reads ``image_size``, the ``swin_*`` sizes and window layout, ``drop_path``
            and ``vision_weights`` (a local timm checkpoint, or None for random init).
    """
    return SwinEncoder(
        config.image_size,
        embed_dim=config.swin_embed_dim,
        depths=config.swin_depths,
        num_heads=config.swin_heads,
        window_size=config.swin_window,
        drop_path_rate=config.drop_path,
        weights=config.vision_weights,
        windows=config.swin_windows,
    )


def use_group_norm(module: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm2d`` inside ``module`` by a ``GroupNorm`` of up to 32 groups.

    Applied at build time when ``config.norm == "group"``, so every architecture gets the
    option from one place instead of a flag threaded through each decoder.

    Args:
        module: changed in place (and returned).
    """
    import math

    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            groups = math.gcd(32, child.num_features)
            setattr(module, name, nn.GroupNorm(groups, child.num_features, eps=child.eps, affine=child.affine))
        else:
            use_group_norm(child)
    return module


def build_clip_vision(config: ModelConfig) -> ClipVisionEncoder:
    """The CLIP ViT image encoder a config asks for.

    Args:
        config: reads ``image_size``, the ``clip_*`` sizes, ``clip_activation`` and
            ``vision_weights`` (a local open_clip checkpoint, or None for random init).
    """
    return ClipVisionEncoder(
        config.image_size,
        width=config.clip_width,
        layers=config.clip_layers,
        heads=config.clip_heads,
        patch_size=config.clip_patch,
        embed_dim=config.clip_embed_dim,
        activation=config.clip_activation,
        weights=config.vision_weights,
    )


class RISModel(nn.Module):
    """Base class of the reference models.

    Subclasses implement ``forward`` (returning :class:`SegmentationOutput`) and
    :meth:`loss`. This class gives them the input checks, ``save_pretrained`` /
    ``from_pretrained`` (config JSON + safetensors), and :meth:`encode_text`.

    Args:
        config: the model's frozen configuration.

    Shape:
        - images: ``(b, 3, H, W)`` normalised pictures, ``H = W = config.image_size``
        - input_ids: ``(b, l)`` token ids, ``l <= config.max_words``
        - attention_mask: ``(b, l)``, 1 (or True) on real tokens; ``None`` means all real
        - output: :class:`SegmentationOutput` with logits ``(b, 1, H, W)``
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config

    # -- shared pieces -------------------------------------------------------------------
    def check_inputs(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> None:
        """Validate the three model inputs with ShapeErrors naming the argument."""
        from rislayers import check_shape

        axes = check_shape(images, "b 3 H W", name="images")
        check_shape(input_ids, "b l", name="input_ids", bound=axes)
        if attention_mask is not None:
            check_shape(attention_mask, "b l", name="attention_mask", bound=axes)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> TextFeatures:
        """Run the model's text encoder: word features, their mask and a sentence vector.

        Args:
            input_ids: ``(b, l)`` token ids.
            attention_mask: ``(b, l)``, nonzero on real tokens; None means all real.
        """
        return self.text_encoder(input_ids, attention_mask)

    def loss(self, output: SegmentationOutput, target: torch.Tensor) -> torch.Tensor:
        """The paper's training loss for this model (``target``: ``(b, H, W)`` bool)."""
        raise NotImplementedError

    # -- persistence -----------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` (atomically)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        atomic_save(state, directory / WEIGHTS_NAME, save=lambda obj, path: save_file(obj, path))
        atomic_save(
            json.dumps(self.config.to_dict(), indent=2) + "\n",
            directory / CONFIG_NAME,
            save=lambda text, path: Path(path).write_text(text),
        )
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, *, strict: bool = True, **overrides) -> RISModel:
        """Rebuild a model saved by :meth:`save_pretrained`.

        Args:
            directory: the folder holding ``config.json`` and ``model.safetensors``.
            strict: raise on any missing, unexpected or mis-shaped key (default).
            **overrides: config fields to change (e.g. ``image_size``).
        """
        from .registry import build_for_loading

        directory = Path(directory)
        config = ModelConfig.load(directory / CONFIG_NAME)
        weights = directory / WEIGHTS_NAME
        if not weights.is_file():
            raise FileNotFoundError(f"{weights}: weights file not found")
        model = build_for_loading(config, **overrides)
        load_weights(model, weights, strict=strict)
        return model
