"""The model a run trains: built fresh from its configuration, or rebuilt from ``last.pt``,
with the parts ``--freeze`` names left untrained."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ..checkpoint import CheckpointError
from ..config import ModelConfig
from ..registry import build_for_loading, build_from_config, get_config
from ..weights import WeightsError, load_weights
from .config import TrainConfig
from .optim import freeze_modules

__all__ = ["build_run_model"]


def _build_fresh(model_config: ModelConfig, flag: str) -> nn.Module:
    """Build a model to train, refusing an input size its vision encoder cannot take.

    Runs no forward pass: timm's Swin only checks the size there, after the run folder
    would exist, so the check is made here.

    Args:
        model_config: the configuration to build.
        flag: how errors name the size (``--image-size`` when that flag set it).
    """
    from ..encoders.swin import SwinEncoder

    try:
        model = build_from_config(model_config)
    except ValueError as err:
        # the encoders' own size checks (CLIP's patch, S2RM's stride 32) say "image_size"
        if str(err).startswith("image_size:"):
            raise ValueError(f"{flag}:{str(err).removeprefix('image_size:')}") from None
        raise
    for module in model.modules():
        if isinstance(module, SwinEncoder):
            patch = module.swin.patch_embed.patch_size[0]
            if model_config.image_size % patch:
                raise ValueError(f"{flag}: expected a multiple of {patch} (Swin's patch size); got {model_config.image_size}")
    return model



def _model_overrides(cfg: TrainConfig) -> dict[str, Any]:
    """``--model-arg`` and the flags that set model config fields."""
    overrides: dict[str, Any] = cfg.model_overrides()
    for name in ("image_size", "vision_weights", "text_weights"):
        if getattr(cfg, name) is not None:
            overrides[name] = getattr(cfg, name)
    return overrides


def _resumed_model(state: dict[str, Any], source: str) -> nn.Module:
    try:
        model = build_for_loading(ModelConfig.from_dict(state["model_config"]))
    except (TypeError, ValueError, KeyError) as err:
        raise CheckpointError(f"{source}: its model_config cannot be built ({err})") from None
    try:
        load_weights(model, state["model"])
    except WeightsError as err:
        name = state["model_config"].get("name", "?")
        raise CheckpointError(f"{source}: its weights are not those of its model {name!r} ({str(err).partition('; ')[2]})") from None
    return model


def build_run_model(cfg: TrainConfig, state: dict[str, Any] | None, *, source: str = "last.pt") -> nn.Module:
    """The model of a fresh run (``state`` None) or of the checkpoint ``state`` resumes.

    Args:
        cfg: the resolved training configuration.
        state: the ``last.pt`` being resumed, if any.
        source: the file ``state`` came from, for error messages.

    Raises:
        CheckpointError: the resumed checkpoint's model cannot be built or does not fit its
            weights (one line naming ``source``).
        ValueError: a ``--freeze`` name that is not in the model.
    """
    model = _resumed_model(state, source) if state is not None else _fresh_model(cfg)
    freeze_modules(model, cfg.freeze)
    return model


def _fresh_model(cfg: TrainConfig) -> nn.Module:
    if cfg.init_from is not None:
        return _initialised_model(cfg)
    model_config = get_config(cfg.model).replace(**_model_overrides(cfg))
    if cfg.data != "synthetic" and model_config.text.tokenizer == "word":
        # the generated benchmark's vocabulary cannot spell real sentences; tiny models
        # share BERT's vocabulary size, so they switch to its WordPiece ids
        model_config = model_config.replace(tokenizer="bert")
    return _build_fresh(model_config, "--image-size" if cfg.image_size is not None else "image_size")


def _initialised_model(cfg: TrainConfig) -> nn.Module:
    """The model of ``--init-from``: the folder's config (with ``--model-arg``) and weights."""
    from ..base import WEIGHTS_NAME
    from .config import init_model_config

    model_config = init_model_config(cfg.init_from).replace(**_model_overrides(cfg))
    model = _build_fresh(model_config, "--image-size" if cfg.image_size is not None else "image_size")
    try:
        load_weights(model, Path(cfg.init_from) / WEIGHTS_NAME)
    except (WeightsError, FileNotFoundError) as err:
        raise ValueError(f"--init-from: {err}") from None
    return model
