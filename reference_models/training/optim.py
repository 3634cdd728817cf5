"""The optimizer and learning-rate schedule of a training run (the papers' recipes)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .config import TrainConfig

__all__ = ["param_groups", "build_optimizer", "build_scheduler"]

_NO_DECAY = ("relative_position_bias_table", "absolute_pos_embed", "positional_embedding", "class_embedding", "pos_embed")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """LAVT's grouping: no weight decay on norms, biases and position tables.

    Args:
        model: the model (frozen parameters are left out).
        weight_decay: the decay of the other parameters.
    """
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or any(k in name for k in _NO_DECAY) else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The recipe's Adam or AdamW over :func:`param_groups`.

    Args:
        model: the model to train.
        cfg: the resolved training configuration (``optimizer``, ``lr``, ``weight_decay``).
    """
    groups = param_groups(model, cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    raise ValueError(f"--optimizer: expected 'adam' or 'adamw'; got {cfg.optimizer!r}")


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int, total_steps: int):
    """The per-step learning-rate schedule: poly to zero, x0.1 at milestones, or constant.

    Args:
        optimizer: the optimizer to schedule.
        cfg: the resolved training configuration (``schedule``, ``poly_power``, ``milestones``).
        steps_per_epoch: optimizer steps per epoch (milestones are in epochs).
        total_steps: the steps of all epochs (where poly reaches zero).
    """
    if cfg.schedule == "poly":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: max(0.0, 1 - s / max(1, total_steps)) ** cfg.poly_power)
    if cfg.schedule == "step":
        edges = [m * steps_per_epoch for m in cfg.milestones or ()]
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.1 ** sum(s >= e for e in edges))
    if cfg.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    raise ValueError(f"--schedule: expected 'poly', 'step' or 'constant'; got {cfg.schedule!r}")
