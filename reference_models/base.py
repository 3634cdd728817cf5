"""The base class of every reference model: one output contract, save/load, encoders by config."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .config import BertConfig, ClipTextConfig, ClipVisionConfig, ModelConfig, SwinConfig
from .encoders import BertTextEncoder, ClipTextEncoder, ClipVisionEncoder, SwinEncoder, TextFeatures
from .weights import atomic_save, load_weights

__all__ = ["SegmentationOutput", "RISModel", "build_text_encoder", "build_swin", "build_clip_vision", "foreground_logit", "upsample_to", "build_tokenizer"]

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


def build_text_encoder(text: BertConfig | ClipTextConfig) -> nn.Module:
    """The text encoder a text part config asks for (BERT or CLIP text tower).

    Args:
        text: its sizes, ``max_words`` and ``weights`` (a local directory or checkpoint, or
            None for random init).
    """
    if text.kind == "bert":
        return BertTextEncoder(
            text.dim,
            num_layers=text.layers,
            num_heads=text.heads,
            intermediate=text.intermediate,
            vocab_size=text.vocab_size,
            max_words=text.max_words,
            dropout=text.dropout,
            weights=text.weights,
        )
    return ClipTextEncoder(
        text.dim,
        layers=text.layers,
        heads=text.heads,
        vocab_size=text.vocab_size,
        context_length=text.context_length,
        embed_dim=text.embed_dim,
        activation=text.activation,
        weights=text.weights,
    )


def build_tokenizer(config: ModelConfig):
    """The tokenizer that matches a model's text encoder (``config.text.tokenizer``).

    Args:
        config: reads the text part's ``tokenizer``, ``max_words`` and, for BERT, ``weights``
            (whose vocabulary wins over the bundled bert-base-uncased one).
    """
    from .data.tokenizers import BertTokenizer, ClipTokenizer, WordTokenizer, bundled_bert_path

    text = config.text
    if text.tokenizer == "clip":
        return ClipTokenizer(max_length=text.max_words)
    if text.tokenizer == "word":
        tokenizer = WordTokenizer(max_length=text.max_words)
        if tokenizer.vocab_size > text.vocab_size:
            raise ValueError(f"vocab_size: {text.vocab_size} is smaller than the word tokenizer's {tokenizer.vocab_size}")
        return tokenizer
    directory = text.weights if text.kind == "bert" and text.weights else bundled_bert_path()
    return BertTokenizer(directory, max_length=text.max_words)


def build_swin(vision: SwinConfig, image_size: int) -> SwinEncoder:
    """The Swin image encoder a vision part config asks for.

    Args:
        vision: its sizes, window layout, ``drop_path`` and ``weights`` (a local timm
            checkpoint, or None for random init).
        image_size: the input size in pixels.
    """
    return SwinEncoder(
        image_size,
        embed_dim=vision.embed_dim,
        depths=vision.depths,
        num_heads=vision.heads,
        window_size=vision.window,
        drop_path_rate=vision.drop_path,
        weights=vision.weights,
        windows=vision.windows,
    )


def build_clip_vision(vision: ClipVisionConfig, image_size: int) -> ClipVisionEncoder:
    """The CLIP ViT image encoder a vision part config asks for.

    Args:
        vision: its sizes, ``activation`` and ``weights`` (a local open_clip checkpoint, or
            None for random init).
        image_size: the input size in pixels.
    """
    return ClipVisionEncoder(
        image_size,
        width=vision.width,
        layers=vision.layers,
        heads=vision.heads,
        patch_size=vision.patch,
        embed_dim=vision.embed_dim,
        activation=vision.activation,
        weights=vision.weights,
    )


#: the vocabulary each tokenizer writes ids from, where it is fixed (BERT's bundled one, CLIP's BPE).
_TOKENIZER_VOCAB = {"bert": 30522, "clip": 49408}


def _check_tokenizer_fits(text: BertConfig | ClipTextConfig) -> None:
    """Refuse a tokenizer whose ids the text encoder's embedding cannot hold (an IndexError at
    the first step otherwise). A BERT folder's own vocabulary was copied into the config."""
    needed = _TOKENIZER_VOCAB.get(text.tokenizer)
    if text.tokenizer == "bert" and text.weights is not None:
        needed = None
    if needed is not None and text.vocab_size < needed:
        raise ValueError(
            f"tokenizer: {text.tokenizer!r} writes ids up to {needed - 1}, but the text encoder's vocab_size is "
            f"{text.vocab_size}; pass a tokenizer of its vocabulary or vocab_size >= {needed}"
        )


class RISModel(nn.Module):
    """Base class of the reference models.

    Subclasses implement ``forward`` (returning :class:`SegmentationOutput`) and
    :meth:`loss`. This class gives them the input checks, ``save_pretrained`` /
    ``from_pretrained`` (config JSON + safetensors), and :meth:`encode_text`.

    Args:
        config: the model's frozen configuration. It records how the model was built (and
            is what :meth:`save_pretrained` writes): the parts read it when they are built,
            so assigning another config to ``model.config`` later changes nothing the model
            computes; build a new model instead.

    Shape:
        - images: ``(b, 3, H, W)`` normalised pictures, ``H = W = config.image_size``
        - input_ids: ``(b, l)`` token ids, ``l <= config.text.max_words``
        - attention_mask: ``(b, l)``, 1 (or True) on real tokens; ``None`` means all real
        - output: :class:`SegmentationOutput` with logits ``(b, 1, H, W)``
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        #: the registry name the model was built as (shown by ``repr``).
        self.model_name = config.name
        #: the longest sentence, in tokens, that its tokenizer gives it.
        self.max_words = config.text.max_words
        _check_tokenizer_fits(config.text)

    def extra_repr(self) -> str:
        return f"name={self.model_name!r}"

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

    def set_grad_checkpointing(self, enable: bool = True) -> list[str]:
        """Switch activation checkpointing of every part that offers it (timm's name).

        Each outermost submodule with a ``set_grad_checkpointing`` method (the Swin, CLIP
        and BERT encoders; any layer that gains one) is switched; its own children are left
        to it. Checkpointed blocks keep only their inputs and run again in the backward
        pass, with the random-number state preserved: the same loss and gradients for less
        activation memory and more time.

        Args:
            enable: switch it on (True) or off.

        Returns:
            The dotted names of the parts switched.

        Example:
            >>> from reference_models import build_model
            >>> sorted(build_model("lavt_tiny").set_grad_checkpointing())
            ['backbone', 'text_encoder']
        """
        switched: list[str] = []
        pending = list(self.named_children())
        while pending:
            name, module = pending.pop(0)
            if callable(getattr(module, "set_grad_checkpointing", None)):
                module.set_grad_checkpointing(enable)
                switched.append(name)
            else:
                pending.extend((f"{name}.{child}", sub) for child, sub in module.named_children())
        return switched

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
    def from_pretrained(cls, path: str | os.PathLike, *, strict: bool = True, **overrides) -> RISModel:
        """Rebuild a trained model from any of the three places one is kept.

        Args:
            path: a folder written by :meth:`save_pretrained` (``config.json`` and
                ``model.safetensors``), a training run folder (its ``best.pt``, else
                ``last.pt``) or a checkpoint file; checkpoints are verified as ``evaluate`` does.
            strict: raise on any missing, unexpected or mis-shaped key (default).
            **overrides: config options to change (e.g. ``image_size``).
        """
        from .checkpoint import load_model
        from .registry import build_for_loading
        from .segmenter import resolve_pretrained_path

        found = resolve_pretrained_path(path)
        if found.is_file():
            return load_model(found, strict=strict, **overrides)
        config = ModelConfig.load(found / CONFIG_NAME)
        weights = found / WEIGHTS_NAME
        if not weights.is_file():
            raise FileNotFoundError(f"{weights}: weights file not found")
        model = build_for_loading(config, **overrides)
        load_weights(model, weights, strict=strict)
        return model
