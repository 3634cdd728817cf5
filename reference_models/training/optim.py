"""The optimizer and learning-rate schedule of a training run (the papers' recipes), and the
parts of the model a run leaves untrained (``--freeze``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .config import TrainConfig

__all__ = ["freeze_modules", "param_groups", "build_optimizer", "fused_applies", "build_scheduler"]

_NO_DECAY = ("relative_position_bias_table", "absolute_pos_embed", "positional_embedding", "class_embedding", "pos_embed")

#: The module every reference model keeps its vision encoder in (``--backbone-lr-scale``).
BACKBONE = "backbone"


def _children_of(model: nn.Module, path: str) -> str:
    """``"'text_encoder' holds: bert"`` for the deepest module of ``path`` that exists."""
    module, found = model, []
    for part in path.split("."):
        children = dict(module.named_children())
        if part not in children:
            break
        module = children[part]
        found.append(part)
    where = f"{'.'.join(found)!r} holds" if found else "the model's top-level parts are"
    return f"{where}: {', '.join(name for name, _ in module.named_children()) or 'no submodules'}"


def freeze_modules(model: nn.Module, names: Sequence[str]) -> list[str]:
    """Leave parts of a model untrained: their parameters get ``requires_grad=False``.

    :func:`param_groups` then leaves them out of the optimizer, so neither the steps nor
    weight decay change them. Buffers (BatchNorm statistics) still update in training mode.

    Args:
        model: the model (changed in place).
        names: dotted module names (``backbone``, ``text_encoder.bert.embeddings``,
            ``text_encoder.bert.encoder.layer.10``) or parameter names.

    Returns:
        The names of the parameters frozen.

    Raises:
        ValueError: a name that is not in the model (one line, listing the children of the
            deepest part of it that exists), or nothing left to train.

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
        >>> freeze_modules(net, ["0"])
        ['0.weight', '0.bias']
    """
    frozen: list[str] = []
    for name in names:
        try:
            target = model.get_submodule(name)
            params = [(f"{name}.{key}", p) for key, p in target.named_parameters()]
        except AttributeError:
            try:
                params = [(name, model.get_parameter(name))]
            except AttributeError:
                raise ValueError(f"--freeze: no module {name!r} in the model; {_children_of(model, name)}") from None
        for key, param in params:
            param.requires_grad_(False)
            frozen.append(key)
    if names and not any(p.requires_grad for p in model.parameters()):
        raise ValueError(f"--freeze: {','.join(names)} leaves no parameter to train")
    return frozen


def param_groups(model: nn.Module, weight_decay: float, *, lr: float | None = None, backbone_lr_scale: float = 1.0) -> list[dict[str, Any]]:
    """LAVT's grouping: no weight decay on norms, biases and position tables.

    Args:
        model: the model (frozen parameters are left out).
        weight_decay: the decay of the other parameters.
        lr: the base learning rate (needed when ``backbone_lr_scale`` is not 1).
        backbone_lr_scale: with another value than 1, the parameters of ``model.backbone``
            get groups of their own whose ``lr`` is ``lr * backbone_lr_scale`` (empty groups
            are left out); with 1, two groups (decay, no decay) as before.
    """
    split = backbone_lr_scale != 1.0
    if split and not isinstance(getattr(model, BACKBONE, None), nn.Module):
        parts = ", ".join(name for name, _ in model.named_children())
        raise ValueError(f"--backbone-lr-scale: the model has no {BACKBONE!r} module to scale; its parts are: {parts}")
    if split and lr is None:
        raise ValueError("lr: expected the base learning rate with backbone_lr_scale; got None")
    buckets: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            decay = not (param.ndim <= 1 or any(k in name for k in _NO_DECAY))
            buckets.setdefault((split and name.startswith(f"{BACKBONE}."), decay), []).append(param)
    if not split:
        return [
            {"params": buckets.get((False, True), []), "weight_decay": weight_decay},
            {"params": buckets.get((False, False), []), "weight_decay": 0.0},
        ]
    return [
        {"params": params, "weight_decay": weight_decay if decay else 0.0, **({"lr": lr * backbone_lr_scale} if in_backbone else {})}
        for (in_backbone, decay), params in sorted(buckets.items())
    ]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The recipe's Adam or AdamW over :func:`param_groups`.

    With ``cfg.fused_optimizer`` and every trained parameter on CUDA, the fused
    implementation (one kernel for all parameters); elsewhere torch's default one.

    Args:
        model: the model to train, on its device.
        cfg: the resolved training configuration (``optimizer``, ``lr``, ``weight_decay``,
            ``backbone_lr_scale``, ``fused_optimizer``).
    """
    groups = param_groups(model, cfg.weight_decay, lr=cfg.lr, backbone_lr_scale=cfg.backbone_lr_scale)
    options = {"fused": True} if cfg.fused_optimizer and fused_applies(model) else {}
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, **options)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, **options)
    raise ValueError(f"--optimizer: expected 'adam' or 'adamw'; got {cfg.optimizer!r}")


def fused_applies(model: nn.Module) -> bool:
    """Whether the fused Adam/AdamW can run on ``model``: every trained parameter floating
    point and on a CUDA device.

    Args:
        model: the model, on its device.

    Example:
        >>> fused_applies(nn.Linear(2, 2))  # on the CPU
        False
    """
    params = [p for p in model.parameters() if p.requires_grad]
    return bool(params) and all(p.is_cuda and p.is_floating_point() for p in params)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int, total_steps: int):
    """The per-step learning-rate schedule: poly to zero, x0.1 at milestones, or constant.

    Each group's rate follows the schedule from its own starting value, so a scaled backbone
    keeps its ratio to the rest.

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
