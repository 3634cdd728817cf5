"""Where a batch's tensors go and in which precision the model runs on them."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch

from .config import TrainConfig

__all__ = ["to_device", "autocast_for"]


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Move the batch's tensors to ``device`` (other values, e.g. sentences, stay).

    Args:
        batch: a collated batch.
        device: where its tensors go.
    """
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def autocast_for(cfg: TrainConfig, device: torch.device):
    """The autocast context of ``cfg.amp`` (a no-op context for ``"none"``).

    Args:
        cfg: the training configuration.
        device: the device autocast applies to.
    """
    if cfg.amp == "none":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if cfg.amp == "bf16" else torch.float16)
