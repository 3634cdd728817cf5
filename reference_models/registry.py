"""A small registry: every reference model by name, in ``_tiny`` and ``_base`` sizes."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from .config import ModelConfig

__all__ = [
    "register_architecture",
    "register_model",
    "build_model",
    "build_from_config",
    "build_for_loading",
    "list_models",
    "get_config",
    "registered_preset",
]

_ARCHITECTURES: dict[str, Callable[[ModelConfig], object]] = {}
_CONFIGS: dict[str, ModelConfig] = {}
# the flat options each registered config was made from, read again when a part is chosen
# later by name: the tiny refiner on a tiny model, not the paper's
_PRESETS: dict[str, dict[str, Any]] = {}


def register_architecture(name: str):
    """Class decorator: ``@register_architecture("lavt")`` makes configs of that architecture buildable.

    Args:
        name: the ``ModelConfig.architecture`` value the decorated class builds; the class
            is called with the config.
    """

    def wrap(cls):
        _ARCHITECTURES[name] = cls
        return cls

    return wrap


def register_model(config: ModelConfig, *, preset: dict[str, Any] | None = None) -> ModelConfig:
    """Register a named configuration (its ``name`` field is the registry key).

    Args:
        config: the configuration; a name already registered raises ``ValueError``.
        preset: the flat options the configuration was made from (``refiner_hidden=(16, 32)``
            ...), including those its parts do not read: a part chosen later by name
            (``head=sadlr``) takes its sizes from them, so ``lavt_tiny`` with ``head=sadlr``
            is ``lavt_sadlr_tiny``.
    """
    if config.name in _CONFIGS:
        raise ValueError(f"name: {config.name!r} is already registered")
    _CONFIGS[config.name] = config
    _PRESETS[config.name] = dict(preset or {})
    return config


def registered_preset(name: str) -> dict[str, Any]:
    """The flat options a registered configuration was made from (``{}`` for other names).

    Args:
        name: a config's ``name``.
    """
    _ensure_loaded()
    return dict(_PRESETS.get(name, {}))


def _ensure_loaded() -> None:
    from . import models  # noqa: F401  (registers everything on import)


def list_models() -> list[str]:
    """All registered model names, sorted."""
    _ensure_loaded()
    return sorted(_CONFIGS)


def get_config(name: str) -> ModelConfig:
    """The registered configuration of ``name``.

    Args:
        name: a name from :func:`list_models`; an unknown one raises ``ValueError``
            listing the available names.
    """
    _ensure_loaded()
    if name not in _CONFIGS:
        close = difflib.get_close_matches(str(name), list(_CONFIGS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"name: unknown model {name!r}{hint}; available: {', '.join(sorted(_CONFIGS))}")
    return _CONFIGS[name]


def resolve_text_config(config: ModelConfig) -> ModelConfig:
    """Copy a local BERT directory's sizes into the config, so the saved config rebuilds it,
    and use that directory's tokenizer.

    ``text.dim`` must already agree with the directory (a mismatch is a clear ValueError).
    """
    text = config.text
    if text.kind != "bert" or text.weights is None:
        return config
    import dataclasses
    import json
    from pathlib import Path

    path = Path(text.weights) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path.parent}: not a Hugging Face model directory (no config.json)")
    hf = json.loads(path.read_text())
    if not isinstance(hf, dict):
        raise ValueError(f"{path}: expected a JSON object of BERT settings")
    if hf.get("hidden_size") != text.dim:
        raise ValueError(
            f"text_dim: {text.dim} does not match {path.parent}'s hidden_size {hf.get('hidden_size')}; "
            f"pass text_dim={hf.get('hidden_size')}"
        )
    resolved = dataclasses.replace(
        text,
        tokenizer="bert",  # a pretrained BERT reads its own WordPiece ids
        layers=hf["num_hidden_layers"],
        heads=hf["num_attention_heads"],
        intermediate=hf["intermediate_size"],
        vocab_size=hf["vocab_size"],
    )
    return dataclasses.replace(config, text=resolved)


def build_from_config(config: ModelConfig):
    """Build the model a config describes (random init except for the weights files it names).

    Args:
        config: any configuration, registered or not.
    """
    _ensure_loaded()
    config = resolve_text_config(config)
    if config.architecture not in _ARCHITECTURES:
        raise ValueError(f"architecture: {config.architecture!r} has no implementation; known: {sorted(_ARCHITECTURES)}")
    return _ARCHITECTURES[config.architecture](config)


def build_model(name: str, **overrides):
    """Build a registered model, optionally changing config fields.

    Args:
        name: a name from :func:`list_models` (``lavt_sadlr_tiny``, ``asda_base``, ...).
        **overrides: options to change, by flat name (``image_size=96``,
            ``text_weights="/weights/bert-base-uncased"``, ``refiner_iters=2``), dotted name
            (``**{"refiner.iters": 2}``) or slot choice; an option no part of the model reads
            is refused.

    Example:
        >>> from reference_models import build_model
        >>> model = build_model("lavt_sadlr_tiny", image_size=64)
        >>> model.config.image_size
        64
    """
    return build_from_config(get_config(name).replace(**overrides))


def build_for_loading(config: ModelConfig, **overrides):
    """Build a model whose weights will be loaded from a checkpoint right after.

    The encoders' pretrained files (``vision_weights``, ``text_weights``) are not read, since
    the checkpoint holds those weights, but the returned ``model.config`` keeps their paths:
    the tokenizer of a BERT model lives in its ``text_weights`` folder.

    Args:
        config: the saved configuration.
        **overrides: config fields to change (e.g. ``image_size``).
    """
    import dataclasses

    config = config.replace(**overrides)
    unread = dataclasses.replace(
        config, vision=dataclasses.replace(config.vision, weights=None), text=dataclasses.replace(config.text, weights=None)
    )
    model = build_from_config(unread)
    model.config = dataclasses.replace(
        model.config,
        vision=dataclasses.replace(model.config.vision, weights=config.vision.weights),
        text=dataclasses.replace(model.config.text, weights=config.text.weights),
    )
    return model
