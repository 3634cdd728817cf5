"""CLIP ViT image tower and text tower (open_clip), with every layer's tokens exposed."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..data.transforms import CLIP_MEAN, CLIP_STD
from ..weights import WeightsError, load_weights
from .checkpointing import checkpointed
from .text import TextFeatures

__all__ = ["ClipVisionEncoder", "ClipTextEncoder", "CLIP_ACTIVATIONS", "activation_hint"]

# The MLP activation of the CLIP towers. OpenAI trained its CLIP models with QuickGELU
# (x * sigmoid(1.702 x)); open_clip's default is nn.GELU, which is what LAION-style
# checkpoints were trained with. The activation has no weights, so the file cannot say
# which one it needs: running the wrong one still loads, and silently shifts every feature.
CLIP_ACTIVATIONS = ("gelu", "quick_gelu")


def _check_activation(activation: str) -> bool:
    """``activation`` as open_clip's ``quick_gelu`` flag, or a one-line error naming it."""
    if activation not in CLIP_ACTIVATIONS:
        raise ValueError(f"activation: expected one of {CLIP_ACTIVATIONS}; got {activation!r}")
    return activation == "quick_gelu"


def activation_hint(path: str | os.PathLike) -> tuple[str, str] | None:
    """What a CLIP weights file says about the activation it was trained with, if anything.

    The hints, strongest first: an ``open_clip_config.json`` beside the file (how open_clip
    and the Hugging Face hub ship a checkpoint; its ``model_cfg.quick_gelu`` is the answer
    either way), then a file name containing ``quickgelu``/``quick_gelu`` or ``openai``
    (open_clip's names for OpenAI's weights, which all use QuickGELU). A name alone never
    implies GELU: most files are simply called ``open_clip_pytorch_model.bin``.

    Args:
        path: the weights file.

    Returns:
        ``(activation, reason)``, or None when nothing in or beside the file says.
    """
    path = Path(path)
    sidecar = path.parent / "open_clip_config.json"
    if sidecar.is_file():
        try:
            data = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            data = None
        model_cfg = data.get("model_cfg", data) if isinstance(data, dict) else None
        if isinstance(model_cfg, dict) and "vision_cfg" in model_cfg:
            quick = bool(model_cfg.get("quick_gelu", False))  # open_clip's default is GELU
            return ("quick_gelu" if quick else "gelu"), f"{sidecar} has quick_gelu={str(quick).lower()}"
    name = path.name.lower()
    for marker in ("quickgelu", "quick_gelu", "openai"):
        if marker in name:
            return "quick_gelu", f"its name contains {marker!r} (OpenAI's weights use QuickGELU)"
    return None


def _refuse_mismatched_activation(path: str | os.PathLike, activation: str) -> None:
    """Refuse, rather than warn, when a file's hint disagrees with the configured activation.

    A warning would scroll past while every feature of the run is computed with the wrong
    nonlinearity; the fix (setting ``clip_activation``) is one flag.
    """
    hint = activation_hint(path)
    if hint is not None and hint[0] != activation:
        raise WeightsError(
            f"{path}: trained with {hint[0]} ({hint[1]}) but clip_activation={activation!r}; "
            f"pass --model-arg clip_activation={hint[0]}"
        )


def _open_clip_tower(part: str, embed_dim: int, activation: str, **sizes: int) -> nn.Module:
    """open_clip's vision or text tower, built the one way both CLIP encoders build theirs.

    The module is open_clip's own, so its state-dict keys are those of open_clip's
    checkpoints (the ``visual.*`` keys, or the text half).

    Args:
        part: ``"vision"`` or ``"text"``.
        embed_dim: the joint embedding size the tower projects to.
        activation: the MLP activation (:data:`CLIP_ACTIVATIONS`).
        **sizes: the fields of open_clip's ``CLIPVisionCfg`` or ``CLIPTextCfg``.

    Example:
        >>> tower = _open_clip_tower("text", 16, "gelu", width=32, heads=2, layers=1, vocab_size=100, context_length=8)
        >>> type(tower).__name__, tower.positional_embedding.shape
        ('TextTransformer', torch.Size([8, 32]))
    """
    from open_clip import model as open_clip_model

    quick_gelu = _check_activation(activation)
    if part == "vision":
        tower = open_clip_model._build_vision_tower(embed_dim, open_clip_model.CLIPVisionCfg(**sizes), quick_gelu=quick_gelu)
    else:
        tower = open_clip_model._build_text_tower(embed_dim, open_clip_model.CLIPTextCfg(**sizes), quick_gelu=quick_gelu)
    _sequence_first(tower.transformer)
    return tower


def _sequence_first(transformer: nn.Module) -> None:
    """Make open_clip's ``Transformer`` run its blocks on ``(tokens, batch, width)``, as OpenAI's CLIP does.

    open_clip builds its blocks batch-first, and ``nn.MultiheadAttention`` then transposes
    its input: its input projection reads a non-contiguous tensor, which costs a copy, a
    matrix product and a separate bias addition where the sequence-first layout takes one
    fused ``addmm`` (and as much again in the backward pass). A ViT-B/16 block at 416 px,
    batch 2, trained about 3 % slower batch-first on a 2-core CPU, with the same values.
    Both flags are open_clip's and torch's own: ``Transformer.forward`` transposes for
    ``batch_first=False``, so open_clip's forward still takes batch-first tokens. Blocks
    whose attention is not ``nn.MultiheadAttention`` are left batch-first.

    Example:
        >>> from open_clip.transformer import Transformer
        >>> transformer = Transformer(8, layers=1, heads=2)
        >>> _sequence_first(transformer)
        >>> transformer(torch.zeros(3, 5, 8)).shape, transformer.resblocks[0].attn.batch_first
        (torch.Size([3, 5, 8]), False)
    """
    blocks = list(transformer.resblocks)
    if all(isinstance(getattr(block, "attn", None), nn.MultiheadAttention) for block in blocks):
        transformer.batch_first = False
        for block in blocks:
            block.attn.batch_first = False


def _load_tower(tower: nn.Module, path: str | os.PathLike, *, activation: str, strict: bool, transform) -> None:
    """Load a local open_clip checkpoint into ``tower``, refusing one trained with another
    activation (:func:`activation_hint`); ``transform`` keeps the tower's keys."""
    _refuse_mismatched_activation(path, activation)
    load_weights(tower, path, strict=strict, transform=transform)


def _resize_grid(pos: torch.Tensor, grid: int) -> torch.Tensor:
    """Bicubically resize a ``(1 + n, c)`` ViT position table to a ``grid x grid`` map."""
    cls, table = pos[:1], pos[1:]
    old = int(math.isqrt(table.shape[0]))
    if old == grid:
        return pos
    table = rearrange(table, "(h w) c -> 1 c h w", h=old)
    table = F.interpolate(table.float(), size=(grid, grid), mode="bicubic", align_corners=False).to(pos.dtype)
    return torch.cat([cls, rearrange(table, "1 c h w -> (h w) c")], dim=0)


class _TowerCheckpointing:
    """Activation checkpointing of the open_clip tower an encoder holds as ``_tower``.

    open_clip's own switch (``set_grad_checkpointing``) is the one flag: its ``Transformer``
    reads it, and so do the encoders' layer-by-layer loops, which checkpoint through
    :func:`~reference_models.encoders.checkpointing.checkpointed` (non-reentrant,
    random-number state preserved).
    """

    _tower: str

    @property
    def grad_checkpointing(self) -> bool:
        return bool(getattr(self, self._tower).transformer.grad_checkpointing)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Checkpoint every residual block of the tower while gradients are recorded.

        Args:
            enable: switch it on (True) or off.

        Example:
            >>> encoder = ClipTextEncoder(8, layers=1, heads=1, vocab_size=10, context_length=4, embed_dim=8)
            >>> encoder.set_grad_checkpointing()
            >>> encoder.grad_checkpointing
            True
        """
        getattr(self, self._tower).set_grad_checkpointing(bool(enable))


class ClipVisionEncoder(_TowerCheckpointing, nn.Module):
    """open_clip's ViT, returning the patch tokens and class token of every layer.

    ASDA selects among intermediate layers, so :meth:`forward` returns one
    ``(b, c, h, w)`` patch map and one ``(b, c)`` class token per transformer layer, all
    taken from the residual stream (no ``ln_post``, no projection to the joint embedding).

    Args:
        image_size: square input size (ASDA: 416, with the 224 position table resized).
        width: transformer width (ViT-B: 768).
        layers: depth (ViT-B: 12).
        heads: attention heads (ViT-B: 12).
        patch_size: patch size (16).
        embed_dim: joint embedding size (512 for ViT-B/16).
        activation: the MLP activation, ``"quick_gelu"`` (OpenAI's weights, open_clip's
            ``ViT-B-16-quickgelu``) or ``"gelu"`` (open_clip's default); it must be the one
            the weights were trained with.
        weights: a local open_clip checkpoint of the whole CLIP model (``visual.*`` keys are
            used) or of the vision tower alone.
        strict: fail on any mismatched key.

    Attributes:
        pixel_mean: the per-channel mean its inputs are normalised with (OpenAI CLIP's);
            the one place training, evaluation, prediction, pictures and studies take it
            from (:func:`~reference_models.encoders.pixel_statistics`).
        pixel_std: the per-channel standard deviation, likewise.
        out_channels: channels of each layer's map (``width`` for every layer).
        strides: input pixels per map pixel of each layer (``patch_size`` for every layer).
        grad_checkpointing: whether each residual block is checkpointed while gradients
            are recorded (:meth:`set_grad_checkpointing`).

    Shape:
        - images: ``(b, 3, H, W)``
        - output: ``(maps, cls_tokens)``: ``layers`` maps ``(b, width, H/p, W/p)`` and
          ``(b, layers, width)``

    Example:
        >>> encoder = ClipVisionEncoder(32, width=16, layers=2, heads=2, patch_size=8, embed_dim=8)
        >>> encoder.out_channels, encoder.strides
        ((16, 16), (8, 8))
        >>> maps, cls_tokens = encoder(torch.zeros(1, 3, 32, 32))
        >>> tuple(maps[-1].shape), tuple(cls_tokens.shape)
        ((1, 16, 4, 4), (1, 2, 16))
    """

    pixel_mean: tuple[float, float, float] = CLIP_MEAN
    pixel_std: tuple[float, float, float] = CLIP_STD
    _tower = "visual"

    def __init__(
        self,
        image_size: int = 416,
        *,
        width: int = 768,
        layers: int = 12,
        heads: int = 12,
        patch_size: int = 16,
        embed_dim: int = 512,
        activation: str = "gelu",
        weights: str | os.PathLike | None = None,
        strict: bool = True,
    ) -> None:
        super().__init__()
        _check_activation(activation)  # named before the size, as it always was
        if image_size % patch_size:
            raise ValueError(f"image_size: expected a multiple of patch_size={patch_size}; got {image_size}")
        self.visual = _open_clip_tower(
            "vision", embed_dim, activation, layers=layers, width=width, head_width=width // heads, patch_size=patch_size, image_size=image_size
        )
        self.activation = activation
        self.width, self.layers, self.patch_size = width, layers, patch_size
        self.out_channels: tuple[int, ...] = (width,) * layers
        self.strides: tuple[int, ...] = (patch_size,) * layers
        self.grid = image_size // patch_size
        if weights is not None:
            self.load_pretrained(weights, strict=strict)

    def load_pretrained(self, path: str | os.PathLike, *, strict: bool = True) -> None:
        """Load a local open_clip checkpoint, resizing the position table to this grid.

        Args:
            path: the checkpoint; refused when it hints at another activation
                (:func:`activation_hint`).
            strict: fail on any missing, unexpected or mis-shaped key.
        """
        def adapt(state: dict[str, torch.Tensor], module: nn.Module) -> dict[str, torch.Tensor]:
            if any(k.startswith("visual.") for k in state):
                state = {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
            if "positional_embedding" in state:
                state["positional_embedding"] = _resize_grid(state["positional_embedding"], self.grid)
            return state

        _load_tower(self.visual, path, activation=self.activation, strict=strict, transform=adapt)

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Every layer's patch map and class token.

        Args:
            images: ``(b, 3, H, W)`` CLIP-normalised pictures.

        Returns:
            ``(maps, cls_tokens)``: a list of ``layers`` maps ``(b, width, H/p, W/p)`` and
            the class tokens ``(b, layers, width)``.
        """
        v = self.visual
        x = v.conv1(images)
        b = x.shape[0]
        # Tokens first, batch second: the layout the blocks run in (_sequence_first).
        x = rearrange(x, "b c h w -> (h w) b c", h=self.grid, w=self.grid)
        cls = v.class_embedding.to(x.dtype).expand(1, b, -1)
        x = torch.cat([cls, x], dim=0) + v.positional_embedding.to(x.dtype)[:, None]
        x = v.ln_pre(x)
        maps, cls_tokens = [], []
        batch_first = getattr(v.transformer, "batch_first", True)
        keep_input_only = self.grad_checkpointing
        for block in v.transformer.resblocks:
            if batch_first:
                x = checkpointed(block, x.transpose(0, 1), enabled=keep_input_only).transpose(0, 1)
            else:
                x = checkpointed(block, x, enabled=keep_input_only)
            # Each map is laid out channels-last (one copy), the layout it had when the blocks
            # ran batch-first, so the convolutions that read it keep their fast path.
            patches = rearrange(x[1:], "(h w) b c -> b c h w", h=self.grid, w=self.grid)
            maps.append(patches.contiguous(memory_format=torch.channels_last))
            cls_tokens.append(x[0])
        return maps, torch.stack(cls_tokens, dim=1)


class ClipTextEncoder(_TowerCheckpointing, nn.Module):
    """open_clip's text transformer returning word features and the [EOS] sentence feature.

    CLIP's attention is causal, so a real token never sees the padding after it. The
    sentence feature is taken at the last real token (the [EOS] for CLIP's tokenizer),
    found from ``attention_mask`` rather than CLIP's "largest token id" trick, so any
    vocabulary works; it is projected to the joint embedding.

    Args:
        width: transformer width (ViT-B/16's text tower: 512).
        layers: depth (12).
        heads: heads (8).
        vocab_size: vocabulary size (CLIP BPE: 49408).
        context_length: position table length (>= the tokenizer's max length).
        embed_dim: joint embedding size (512).
        activation: the MLP activation, ``"quick_gelu"`` or ``"gelu"``, as for
            :class:`ClipVisionEncoder`.
        weights: a local open_clip checkpoint of the whole CLIP model.
        strict: fail on any mismatched key.

    Attributes:
        out_dim: width of the word features (``width``).
        sentence_dim: width of the sentence feature (``embed_dim``).
        grad_checkpointing: whether each residual block is checkpointed while gradients
            are recorded (:meth:`set_grad_checkpointing`).

    Shape:
        - input_ids: ``(b, l)`` with ``l <= context_length``
        - output: :class:`TextFeatures` with words ``(b, l, width)`` and sentence ``(b, embed_dim)``
    """

    _tower = "text"

    def __init__(
        self,
        width: int = 512,
        *,
        layers: int = 12,
        heads: int = 8,
        vocab_size: int = 49408,
        context_length: int = 77,
        embed_dim: int = 512,
        activation: str = "gelu",
        weights: str | os.PathLike | None = None,
        strict: bool = True,
    ) -> None:
        super().__init__()
        self.text = _open_clip_tower(
            "text", embed_dim, activation, context_length=context_length, vocab_size=vocab_size, width=width, heads=heads, layers=layers
        )
        self.activation = activation
        self.dim, self.embed_dim, self.context_length = width, embed_dim, context_length
        self.out_dim, self.sentence_dim = width, embed_dim
        if weights is not None:
            self.load_pretrained(weights, strict=strict)

    def load_pretrained(self, path: str | os.PathLike, *, strict: bool = True) -> None:
        """Load the text half of a local open_clip checkpoint.

        Args:
            path: the checkpoint; refused when it hints at another activation
                (:func:`activation_hint`).
            strict: fail on any missing, unexpected or mis-shaped key.
        """
        def adapt(state: dict[str, torch.Tensor], module: nn.Module) -> dict[str, torch.Tensor]:
            return {k: v for k, v in state.items() if not k.startswith("visual.") and k != "logit_scale"}

        _load_tower(self.text, path, activation=self.activation, strict=strict, transform=adapt)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> TextFeatures:
        """Word features (after ``ln_final``) and the projected [EOS] sentence feature.

        Args:
            input_ids: ``(b, l)`` token ids.
            attention_mask: ``(b, l)``, nonzero on real tokens; None means all real.
        """
        return self._encode(input_ids, attention_mask, keep_layers=False)[0]

    def forward_with_layer_eos(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[TextFeatures, torch.Tensor]:
        """:meth:`forward`'s features and every layer's [EOS] activation.

        The [EOS] (last real) token of each layer's residual stream, before ``ln_final`` and
        the projection (both are trained on the last layer's stream only): what ASDA's
        released code scores the ViT layer of the same depth against.

        Args:
            input_ids: ``(b, l)`` token ids.
            attention_mask: ``(b, l)``, nonzero on real tokens; None means all real.

        Returns:
            ``(features, layer_eos)``: :class:`TextFeatures` and ``(b, layers, width)``.

        Example:
            >>> import torch
            >>> encoder = ClipTextEncoder(32, layers=3, heads=2, vocab_size=100, context_length=8, embed_dim=16)
            >>> features, layer_eos = encoder.forward_with_layer_eos(torch.randint(1, 100, (2, 5)))
            >>> features.sentence.shape, layer_eos.shape
            (torch.Size([2, 16]), torch.Size([2, 3, 32]))
        """
        return self._encode(input_ids, attention_mask, keep_layers=True)

    def _encode(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, *, keep_layers: bool
    ) -> tuple[TextFeatures, torch.Tensor | None]:
        t = self.text
        b, l = input_ids.shape
        if l > self.context_length:
            raise ValueError(f"input_ids: at most {self.context_length} tokens; got {l}")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        last = attention_mask.long().sum(dim=1).clamp_min(1) - 1
        batch = torch.arange(b, device=input_ids.device)
        x = t.token_embedding(input_ids) + t.positional_embedding[:l].to(t.token_embedding.weight.dtype)
        causal = torch.full((l, l), float("-inf"), device=x.device, dtype=x.dtype).triu(1)
        layer_eos = None
        if keep_layers:
            # The blocks one by one, as open_clip's Transformer.forward runs them, tokens first
            # when they run so (_sequence_first).
            batch_first = getattr(t.transformer, "batch_first", True)
            per_layer = []
            keep_input_only = self.grad_checkpointing
            x = x if batch_first else x.transpose(0, 1).contiguous()
            for block in t.transformer.resblocks:
                x = checkpointed(block, x, attn_mask=causal, enabled=keep_input_only)
                per_layer.append(x[batch, last] if batch_first else x[last, batch])
            layer_eos = torch.stack(per_layer, dim=1)
            x = x if batch_first else x.transpose(0, 1)
        else:
            x = t.transformer(x, attn_mask=causal)
        words = t.ln_final(x)
        eos = words[batch, last]
        proj = t.text_projection
        sentence = proj(eos) if isinstance(proj, nn.Linear) else eos @ proj
        return TextFeatures(words=words, word_mask=attention_mask.bool(), sentence=sentence), layer_eos
