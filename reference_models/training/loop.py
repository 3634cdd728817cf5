"""The optimisation loop: forward, loss, backward, gradient accumulation, AMP, DDP, schedule.

One batch goes ``train_epoch`` -> ``forward_model(images, input_ids, attention_mask)`` ->
``model.loss(output, mask)`` -> backward (scaled for fp16, divided by the accumulation
group) -> on the group's last micro-batch, the optimizer and schedule step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from .checkpoints import Progress
from .config import TrainConfig
from .data import constant_text
from .distributed import DistInfo, wrap_ddp
from .optim import build_optimizer, build_scheduler
from .precision import autocast_for, to_device

__all__ = ["Optimisation", "StepHooks", "build_optimisation", "steps_of", "train_epoch"]


@dataclass
class Optimisation:
    """What trains the model.

    Attributes:
        model: the model itself (its ``loss``, its ``state_dict``).
        train_model: the model as the backward pass sees it (DDP-wrapped on several processes).
        forward_model: what the batches go through (``train_model``, compiled with ``--compile``).
        optimizer: the optimizer.
        scheduler: the per-step learning-rate schedule.
        scaler: the fp16 gradient scaler (a no-op otherwise).
    """

    model: nn.Module
    train_model: nn.Module
    forward_model: Callable[..., Any]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler


def steps_of(cfg: TrainConfig, sampler_length: int) -> tuple[int, int, int]:
    """``(batches_per_epoch, steps_per_epoch, total_steps)`` of a run (``--max-steps`` applied).

    Args:
        cfg: the resolved training configuration.
        sampler_length: samples per epoch of this process.

    Example:
        >>> from reference_models.training import TrainConfig
        >>> steps_of(TrainConfig(epochs=2, batch_size=8, grad_accum=2), 40)
        (5, 3, 6)
    """
    batches_per_epoch = math.ceil(sampler_length / cfg.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.grad_accum)
    total_steps = steps_per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    return batches_per_epoch, steps_per_epoch, total_steps


def build_optimisation(model: nn.Module, cfg: TrainConfig, device: torch.device, dist_info: DistInfo, steps_per_epoch: int) -> Optimisation:
    """Wrap the model for DDP and compile, and build its optimizer, schedule and scaler.

    Args:
        model: the model to train (on its device).
        cfg: the resolved training configuration.
        device: the model's device.
        dist_info: this process's place in the job.
        steps_per_epoch: optimizer steps per epoch (the step schedule's milestones).
    """
    train_model = model
    if dist_info.world > 1:
        train_model = wrap_ddp(model, device)
    forward_model = torch.compile(train_model) if cfg.compile else train_model
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch, steps_per_epoch * cfg.epochs)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
    return Optimisation(model, train_model, forward_model, optimizer, scheduler, scaler)


def _group_size(cfg: TrainConfig, batch_in_epoch: int, batches_per_epoch: int) -> int:
    """Micro-batches in the accumulation group of this batch (the epoch's last may be short)."""
    if batch_in_epoch // cfg.grad_accum < batches_per_epoch // cfg.grad_accum:
        return cfg.grad_accum
    return batches_per_epoch % cfg.grad_accum


class StepHooks(Protocol):
    """What the loop asks of the run around each step (see :class:`~reference_models.training.run`)."""

    def on_batch(self, batch: dict[str, Any]) -> None:
        """A micro-batch arrived (the run records the samples it had to skip)."""

    def at_boundary(self, non_finite: torch.Tensor) -> tuple[bool, bool]:
        """Before the optimizer step: ``(skip this step, stop after it)``, agreed by every process."""

    def on_step(self, loss: torch.Tensor) -> None:
        """An optimizer step was taken (logging, timed checkpoints)."""

    def on_skipped(self) -> None:
        """A step was skipped for a non-finite loss or gradient."""


def _grads_finite(model: nn.Module) -> torch.Tensor:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return torch.tensor(True)
    return torch.stack([torch.isfinite(g).all() for g in grads]).all()


def train_epoch(
    opt: Optimisation, loader, progress: Progress, *, cfg: TrainConfig, device: torch.device, dist_info: DistInfo,
    batches_per_epoch: int, total_steps: int, tokenizer, hooks: StepHooks, bar,
) -> str:
    """Train on ``loader`` (the rest of one epoch), updating ``progress``.

    A group of micro-batches whose loss (or, without fp16's scaler, gradient) is not finite
    gives no optimizer step: its gradients are dropped, and the step counter stays. Under
    fp16 the gradient scaler already skips steps whose gradients overflow, and lowers its
    scale: that is part of fp16 training, not a fault.

    Args:
        opt: what trains.
        loader: this epoch's batches (those not yet trained on).
        progress: the counters, updated per micro-batch and step.
        cfg: the training configuration.
        device: where the batches go.
        dist_info: this process's place in the job.
        batches_per_epoch: micro-batches in a full epoch.
        total_steps: the step at which the run ends.
        tokenizer: for the text-blind control's constant sentence.
        hooks: the run's callbacks around each step.
        bar: the epoch's progress bar.

    Returns:
        ``"done"`` (the run reached ``total_steps``), ``"stop"`` (the hooks asked to stop,
        after a complete step) or ``"epoch"`` (the epoch's batches ran out).
    """
    micro = 0
    non_finite_loss = torch.zeros((), dtype=torch.bool, device=device)
    for batch in loader:
        hooks.on_batch(batch)
        if cfg.text_blind:
            batch = constant_text(batch, tokenizer)
        batch = to_device(batch, device)
        micro += 1
        final_micro = micro % cfg.grad_accum == 0 or progress.batch_in_epoch + 1 == batches_per_epoch
        group = _group_size(cfg, progress.batch_in_epoch, batches_per_epoch)
        sync = nullcontext() if final_micro or dist_info.world == 1 else opt.train_model.no_sync()
        with sync:
            with autocast_for(cfg, device):
                out = opt.forward_model(batch["image"], batch["input_ids"], batch["attention_mask"])
                loss = opt.model.loss(out, batch["mask"])
            opt.scaler.scale(loss / group).backward()
        non_finite_loss |= ~torch.isfinite(loss.detach())
        progress.batch_in_epoch += 1
        bar.update()
        if not final_micro:
            continue
        non_finite = non_finite_loss if cfg.amp == "fp16" else non_finite_loss | ~_grads_finite(opt.model).to(device)
        skip, stop = hooks.at_boundary(non_finite)
        non_finite_loss = torch.zeros_like(non_finite_loss)
        if skip:
            opt.optimizer.zero_grad(set_to_none=True)
            hooks.on_skipped()
        else:
            opt.scaler.step(opt.optimizer)
            opt.scaler.update()
            opt.optimizer.zero_grad(set_to_none=True)
            opt.scheduler.step()
            progress.step += 1
            hooks.on_step(loss.detach())
        if progress.step >= total_steps:
            return "done"
        if stop:
            return "stop"
    return "epoch"
