"""Training checkpoints: written atomically, read with ``weights_only=True``, clear on damage.

A checkpoint is one ``.pt`` file holding the model weights, the optimizer, scheduler and
gradient-scaler states, the random-number states, the step counters, and both configs
(model and training) as plain dicts, so that ``--resume`` continues exactly and
``evaluate``/``predict`` can rebuild the model from the file alone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .config import ModelConfig
from .weights import WeightsError, atomic_save, load_weights

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "load_model"]


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, corrupt or not a checkpoint."""


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` to ``path`` atomically (a crash mid-write keeps the previous file).

    Args:
        state: tensors and plain Python values (what ``torch.load(weights_only=True)`` reads).
        path: the ``.pt`` file to write; its folder must exist.

    Returns:
        ``path``.
    """
    path = Path(path)
    atomic_save(state, path)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (safe: ``weights_only=True``).

    Args:
        path: a run's ``last.pt`` or ``best.pt``.

    Returns:
        The saved dict (``model``, ``model_config``, ``train_config``, optimizer states, ...),
        on the CPU.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: truncated or corrupt file, or a file that is not a checkpoint;
            the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, bad pickle, foreign format
        raise CheckpointError(
            f"{path}: cannot read checkpoint ({type(err).__name__}: {err}); the file is truncated or corrupt"
        ) from err
    if not isinstance(state, dict) or "model" not in state or "model_config" not in state:
        raise CheckpointError(f"{path}: not a reference_models training checkpoint (no 'model'/'model_config')")
    return state


def load_model(path: str | os.PathLike, *, strict: bool = True, **overrides: Any):
    """Rebuild a model from a training checkpoint (``.pt``) or a ``save_pretrained`` folder.

    Args:
        path: ``last.pt``/``best.pt`` of a run, or a folder with ``config.json`` and
            ``model.safetensors``.
        strict: fail on any mismatched key.
        **overrides: model config fields to change (e.g. ``image_size``).
    """
    from .base import RISModel
    from .registry import build_for_loading

    path = Path(path)
    if path.is_dir():
        return RISModel.from_pretrained(path, strict=strict, **overrides)
    state = load_checkpoint(path)
    model = build_for_loading(ModelConfig.from_dict(state["model_config"]), **overrides)
    try:
        load_weights(model, state["model"], strict=strict)
    except WeightsError as err:
        raise CheckpointError(f"{path}: {err}") from err
    return model
