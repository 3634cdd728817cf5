"""The optimisation loop: forward, loss, backward, gradient accumulation, AMP, DDP, schedule.

One batch, from the command line to the loss: ``reference_models.train`` ->
:func:`~reference_models.training.run.train` builds the run (model, data, this module's
:class:`Optimisation`) and, epoch by epoch, hands :func:`train_epoch` the epoch's batches
(:meth:`~reference_models.training.data.RunData.train_loader`; the text-blind control is
already in the samples) with a :class:`LoopState`. Here each batch goes to the device ->
``forward_model(images, input_ids, attention_mask)`` -> ``model.loss(output, mask)`` ->
backward (scaled for fp16, divided by the accumulation group) -> on the group's last
micro-batch, the optimizer and schedule step. The run only hears of it through
:class:`StepHooks` (logging, checkpoints, when to stop).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import torch
from torch import nn

from .checkpoints import Progress
from .config import TrainConfig
from .distributed import DistInfo, wrap_ddp
from .optim import build_optimizer, build_scheduler
from .precision import autocast_for, to_device

__all__ = ["Optimisation", "StepPlan", "LoopState", "StepHooks", "build_optimisation", "steps_of", "train_epoch"]


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

    def gradient_sync(self, final_micro: bool) -> AbstractContextManager:
        """Where DDP averages gradients: on a group's last micro-batch only (``no_sync`` before)."""
        if final_micro or not isinstance(self.train_model, nn.parallel.DistributedDataParallel):
            return nullcontext()
        return self.train_model.no_sync()


class StepPlan(NamedTuple):
    """How long a run is, in micro-batches, optimizer steps and epochs (``--max-steps`` applied).

    Attributes:
        batches_per_epoch: micro-batches of a full epoch on this process.
        steps_per_epoch: optimizer steps of a full epoch.
        total_steps: the step at which the run ends.
        epochs: the epochs that run at all (fewer than ``--epochs`` when ``--max-steps``
            ends the run first): what the progress bars and messages count.
    """

    batches_per_epoch: int
    steps_per_epoch: int
    total_steps: int
    epochs: int


def steps_of(cfg: TrainConfig, sampler_length: int) -> StepPlan:
    """The :class:`StepPlan` of a run.

    Args:
        cfg: the resolved training configuration.
        sampler_length: samples per epoch of this process.

    Example:
        >>> from reference_models.training import TrainConfig
        >>> tuple(steps_of(TrainConfig(epochs=2, batch_size=8, grad_accum=2), 40))
        (5, 3, 6, 2)
        >>> steps_of(TrainConfig(epochs=5, batch_size=8, max_steps=7), 40).epochs
        2
    """
    batches_per_epoch = math.ceil(sampler_length / cfg.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.grad_accum)
    total_steps = steps_per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    epochs = min(cfg.epochs, math.ceil(total_steps / steps_per_epoch)) if steps_per_epoch else 0
    return StepPlan(batches_per_epoch, steps_per_epoch, total_steps, epochs)


@dataclass
class LoopState:
    """Everything :func:`train_epoch` reads and updates, in one small object.

    Attributes:
        opt: what trains (model, optimizer, schedule, scaler).
        progress: the counters, updated per micro-batch and step.
        plan: the run's length.
        cfg: the training configuration (``grad_accum``, ``amp``).
        device: where the batches go.
    """

    opt: Optimisation
    progress: Progress
    plan: StepPlan
    cfg: TrainConfig
    device: torch.device


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


def _group_size(grad_accum: int, batch_in_epoch: int, batches_per_epoch: int) -> int:
    """Micro-batches in the accumulation group of this batch (the epoch's last may be short)."""
    if batch_in_epoch // grad_accum < batches_per_epoch // grad_accum:
        return grad_accum
    return batches_per_epoch % grad_accum


class StepHooks(Protocol):
    """What the loop asks of the run around each step (see :class:`~reference_models.training.run`)."""

    def on_batch(self, batch: dict[str, Any]) -> None:
        """A micro-batch arrived (the run records the samples it had to skip, moves its bar)."""

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


def _forward_backward(state: LoopState, batch: dict[str, Any], group: int, final_micro: bool) -> torch.Tensor:
    """One micro-batch: forward, loss, and its share of the group's gradient; returns the loss."""
    opt = state.opt
    batch = to_device(batch, state.device)
    with opt.gradient_sync(final_micro):
        with autocast_for(state.cfg, state.device):
            out = opt.forward_model(batch["image"], batch["input_ids"], batch["attention_mask"])
            loss = opt.model.loss(out, batch["mask"])
        opt.scaler.scale(loss / group).backward()
    return loss


def _optimizer_step(opt: Optimisation) -> None:
    opt.scaler.step(opt.optimizer)
    opt.scaler.update()
    opt.optimizer.zero_grad(set_to_none=True)
    opt.scheduler.step()


def train_epoch(state: LoopState, loader: Iterable[dict[str, Any]], hooks: StepHooks) -> str:
    """Train on ``loader`` (the rest of one epoch), updating ``state.progress``.

    A group of micro-batches whose loss (or, without fp16's scaler, gradient) is not finite
    gives no optimizer step: its gradients are dropped, and the step counter stays. Under
    fp16 the gradient scaler already skips steps whose gradients overflow, and lowers its
    scale: that is part of fp16 training, not a fault.

    Args:
        state: what trains, the counters and the run's length.
        loader: this epoch's batches (those not yet trained on).
        hooks: the run's callbacks around each step.

    Returns:
        ``"done"`` (the run reached its last step), ``"stop"`` (the hooks asked to stop,
        after a complete step) or ``"epoch"`` (the epoch's batches ran out).
    """
    progress, plan, accum = state.progress, state.plan, state.cfg.grad_accum
    micro = 0
    non_finite_loss = torch.zeros((), dtype=torch.bool, device=state.device)
    for batch in loader:
        hooks.on_batch(batch)
        micro += 1
        final_micro = micro % accum == 0 or progress.batch_in_epoch + 1 == plan.batches_per_epoch
        group = _group_size(accum, progress.batch_in_epoch, plan.batches_per_epoch)
        loss = _forward_backward(state, batch, group, final_micro)
        non_finite_loss |= ~torch.isfinite(loss.detach())
        progress.batch_in_epoch += 1
        if not final_micro:
            continue
        non_finite = non_finite_loss if state.cfg.amp == "fp16" else non_finite_loss | ~_grads_finite(state.opt.model).to(state.device)
        skip, stop = hooks.at_boundary(non_finite)
        non_finite_loss = torch.zeros_like(non_finite_loss)
        if skip:
            state.opt.optimizer.zero_grad(set_to_none=True)
            hooks.on_skipped()
        else:
            _optimizer_step(state.opt)
            progress.step += 1
            hooks.on_step(loss.detach())
        if progress.step >= plan.total_steps:
            return "done"
        if stop:
            return "stop"
    return "epoch"
