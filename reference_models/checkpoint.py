"""Training checkpoints: written atomically, read with ``weights_only=True``, clear on damage.

A checkpoint is one ``.pt`` file holding the model weights, the optimizer, scheduler and
gradient-scaler states, the random-number states, the step counters, and both configs
(model and training) as plain dicts, so that ``--resume`` continues exactly and
``evaluate``/``predict`` can rebuild the model from the file alone.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import torch

from .config import ModelConfig
from .weights import WeightsError, atomic_save, load_weights

__all__ = [
    "CheckpointError",
    "RUN_CHECKPOINTS",
    "save_checkpoint",
    "load_checkpoint",
    "find_checkpoint",
    "load_model",
    "load_model_and_train_config",
]

RUN_CHECKPOINTS = ("best.pt", "last.pt")
"""The checkpoints a training run folder stands for, in the order they are preferred."""

_ZIP_MAGIC = b"PK\x03\x04"


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


def _unreadable(path: Path) -> str:
    """Why ``torch.load`` failed on ``path``, in words a user can act on."""
    with path.open("rb") as handle:
        head = handle.read(len(_ZIP_MAGIC))
    if head and head != _ZIP_MAGIC:
        return f"{path}: not a checkpoint (cannot read it as a torch zip file)"
    if head and zipfile.is_zipfile(path):
        return f"{path}: not a checkpoint (a zip file torch cannot read as tensors and plain values)"
    # an empty file or a zip without its central directory: a write that never finished
    return f"{path}: cannot read checkpoint (the file is truncated or corrupt)"


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (safe: ``weights_only=True``).

    Args:
        path: a run's ``last.pt`` or ``best.pt``.

    Returns:
        The saved dict (``model``, ``model_config``, ``train_config``, optimizer states, ...),
        on the CPU.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: truncated or corrupt file, or a file that is not a checkpoint; a
            one-line message that names the file (torch's own error is chained).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError:
        raise  # the system's message already names the file
    except Exception as err:  # truncated zip (torch may raise OSError), foreign format, pickled objects
        # torch's own messages run to several lines and advise weights_only=False, which would
        # run arbitrary code from the file: keep them for debugging, show a short line instead
        raise CheckpointError(_unreadable(path)) from err
    if not isinstance(state, dict) or "model" not in state or "model_config" not in state:
        raise CheckpointError(f"{path}: not a reference_models training checkpoint (no 'model'/'model_config')")
    return state


def _is_run_config(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and {"model", "train"} <= data.keys()


def find_checkpoint(path: str | os.PathLike) -> Path:
    """The file or folder a ``--checkpoint PATH`` argument stands for.

    A training run folder (``config.json`` with ``"model"`` and ``"train"``, or no
    ``config.json`` but a ``best.pt``/``last.pt``) stands for its ``best.pt``, else its
    ``last.pt``; a ``.pt`` file or a ``save_pretrained`` folder stands for itself.

    Args:
        path: a ``.pt`` file, a ``save_pretrained`` folder or a training run folder.

    Returns:
        The ``.pt`` file or ``save_pretrained`` folder to load.

    Raises:
        FileNotFoundError: a run folder without ``best.pt`` or ``last.pt``, or a folder that
            is neither kind.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as run:
        ...     _ = (Path(run) / "last.pt").write_bytes(b"")
        ...     print(find_checkpoint(run).name)
        last.pt
    """
    path = Path(path)
    if not path.is_dir():
        return path
    config = path / "config.json"
    run = _is_run_config(config)
    if run or not config.is_file():
        for name in RUN_CHECKPOINTS:
            if (path / name).is_file():
                return path / name
        if run:
            raise FileNotFoundError(f"{path}: a training run folder without best.pt or last.pt (no checkpoint written yet?)")
        raise FileNotFoundError(
            f"{path}: expected a training run folder (with best.pt or last.pt) or a save_pretrained folder "
            "(with config.json and model.safetensors); found neither"
        )
    return path


def load_model(path: str | os.PathLike, *, strict: bool = True, **overrides: Any):
    """Rebuild a model from a training checkpoint (``.pt``), a run folder or a ``save_pretrained`` folder.

    Args:
        path: ``last.pt``/``best.pt`` of a run, a run folder (its ``best.pt``, else
            ``last.pt``; see :func:`find_checkpoint`), or a folder with ``config.json`` and
            ``model.safetensors``.
        strict: fail on any mismatched key.
        **overrides: model config fields to change (e.g. ``image_size``).
    """
    return load_model_and_train_config(path, strict=strict, **overrides)[0]


def load_model_and_train_config(path: str | os.PathLike, *, strict: bool = True, **overrides: Any) -> tuple[Any, dict[str, Any] | None]:
    """:func:`load_model`, plus the training configuration the checkpoint was written with.

    Reads the file once, so a tool can default its data options to what the model was
    trained on.

    Args:
        path: as for :func:`load_model`.
        strict: fail on any mismatched key.
        **overrides: model config fields to change (e.g. ``image_size``).

    Returns:
        ``(model, train_config)``: ``train_config`` is the checkpoint's
        :class:`~reference_models.train.TrainConfig` as a dict, or ``None`` for a
        ``save_pretrained`` folder or a checkpoint written without one.
    """
    from .base import RISModel
    from .registry import build_for_loading

    path = find_checkpoint(path)
    if path.is_dir():
        return RISModel.from_pretrained(path, strict=strict, **overrides), None
    state = load_checkpoint(path)
    model = build_for_loading(ModelConfig.from_dict(state["model_config"]), **overrides)
    try:
        load_weights(model, state["model"], strict=strict)
    except WeightsError as err:
        raise CheckpointError(f"{path}: {err}") from err
    train_config = state.get("train_config")
    return model, dict(train_config) if isinstance(train_config, dict) else None
