"""What a training checkpoint holds, and putting a resumed run back where it stopped.

The file format (atomic write, safe load) is :mod:`reference_models.checkpoint`'s; this
module decides what goes in: the weights, and for ``last.pt`` the optimizer, scheduler,
gradient-scaler and random-number states and the counters that let ``--resume`` continue
exactly.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import CheckpointError, load_checkpoint, save_checkpoint

__all__ = ["RESUME_KEYS", "Progress", "rng_state", "set_rng_state", "load_resume_state", "save_training_checkpoint"]

#: What ``last.pt`` holds beyond the weights (``best.pt`` does not: it is for evaluating).
RESUME_KEYS = ("optimizer", "scheduler", "scaler", "rng", "train_config")


@dataclass
class Progress:
    """Where a run stands: the counters every checkpoint saves.

    Attributes:
        step: optimizer steps taken.
        epoch: epochs finished.
        batch_in_epoch: micro-batches of the current epoch already trained on.
        best: the best validation oIoU so far (-1 before the first validation).
        seconds: training time of earlier sessions of this run (a resumed run adds its own).
        last_val: the latest validation metrics.
        bad_samples: unreadable samples skipped so far (all processes).
        skipped_steps: steps skipped for a non-finite loss or gradient so far.
    """

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best: float = -1.0
    seconds: float = 0.0
    last_val: dict[str, float] = field(default_factory=dict)
    bad_samples: int = 0
    skipped_steps: int = 0

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Progress:
        """The counters saved in a checkpoint."""
        return cls(
            step=state["step"], epoch=state["epoch"], batch_in_epoch=state["batch_in_epoch"], best=state["best"],
            seconds=state.get("seconds", 0.0), last_val=dict(state.get("last_val", {})),
            bad_samples=state.get("bad_samples", 0), skipped_steps=state.get("skipped_steps", 0),
        )


def rng_state() -> dict[str, Any]:
    """The random-number states a resumed run restores (torch, Python, this process's GPU)."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        # this process's GPU only: ranks draw identically, and another node may have fewer GPUs
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved.

    Args:
        state: the dict :func:`rng_state` returned.
    """
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def load_resume_state(out_dir: Path) -> dict[str, Any]:
    """Read ``out_dir/last.pt``, refusing a weights-only file such as a ``best.pt``.

    Args:
        out_dir: the run folder.

    Raises:
        ValueError: the file holds weights only.
        reference_models.checkpoint.CheckpointError: the file is damaged or not a checkpoint.
    """
    path = out_dir / "last.pt"
    state = load_checkpoint(path)
    missing = [key for key in RESUME_KEYS if key not in state]
    if missing:
        raise ValueError(
            f"--resume: {path} holds weights only (no {', '.join(missing)}), like a best.pt; "
            "resuming needs the last.pt the run itself wrote"
        )
    if not isinstance(state["train_config"], dict):
        raise CheckpointError(f"{path}: its train_config is not a dict of settings")
    _check_resume_types(state, path)
    return state


#: The counters of a checkpoint, each a whole number in [0, this]: more steps than any run takes.
_MOST = 10**12


def _check_resume_types(state: dict[str, Any], path: Path) -> None:
    """Refuse counters, RNG states and optimizer states of the wrong type or range, in one
    line: under a valid digest they are what the writer wrote, but a hand-edited or foreign
    file would otherwise resume at step -5, or at epoch 1e30 with "nothing to do"."""
    for key in ("step", "epoch", "batch_in_epoch", "bad_samples", "skipped_steps", "world"):
        value = state.get(key, 0 if key not in ("step", "epoch", "batch_in_epoch") else None)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MOST:
            raise CheckpointError(f"{path}: its {key!r} is not a whole number in [0, {_MOST}]; got {value!r}")
    for key in ("best", "seconds"):
        value = state.get(key, 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise CheckpointError(f"{path}: its {key!r} is not a finite number; got {value!r}")
    if not isinstance(state.get("last_val", {}), dict):
        raise CheckpointError(f"{path}: its 'last_val' is not a dict of metrics")
    for key in ("optimizer", "scheduler", "scaler"):
        if not isinstance(state[key], dict):
            raise CheckpointError(f"{path}: its {key!r} is not a state dict; got {type(state[key]).__name__}")
    rng = state["rng"]
    tensors_ok = isinstance(rng, dict) and all(
        isinstance(rng.get(k), torch.Tensor) and rng[k].dtype == torch.uint8 for k in ("torch", "cuda") if k in rng or k == "torch"
    )
    python = rng.get("python") if isinstance(rng, dict) else None
    if not tensors_ok or not (isinstance(python, tuple) and len(python) == 3 and isinstance(python[1], tuple)):
        raise CheckpointError(f"{path}: its 'rng' is not the random-number state a run saves (torch bytes and Python's state)")


def save_training_checkpoint(
    path: Path, *, model, optimizer, scheduler, scaler, progress: Progress, seconds: float, world: int,
    train_config: dict[str, Any], model_config: dict[str, Any], resumable: bool = True,
) -> None:
    """Write a checkpoint of the run (``resumable=False``: weights and configurations only).

    Args:
        path: the ``.pt`` file.
        model: the unwrapped model.
        optimizer: its optimizer.
        scheduler: the learning-rate schedule.
        scaler: the gradient scaler.
        progress: the counters.
        seconds: training time so far, this session included.
        world: the number of processes (a resume must use the same).
        train_config: the run's :class:`~reference_models.training.TrainConfig` as a dict.
        model_config: the model's configuration as a dict.
        resumable: also save what ``--resume`` needs.
    """
    # best.pt is for evaluating and predicting: without the optimizer's moments it is
    # about a third of last.pt's size (Adam keeps two extra copies of the weights).
    resume_state = (
        {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": rng_state()}
        if resumable
        else {}
    )
    counters = dataclasses.asdict(progress)
    counters["seconds"] = seconds
    save_checkpoint(
        {"model": model.state_dict(), **resume_state, **counters, "world": world, "train_config": train_config, "model_config": model_config},
        path,
    )
