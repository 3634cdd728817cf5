"""Activation (gradient) checkpointing of the heavy layers (private: the switch is public).

A layer that mixes in :class:`GradCheckpointing` gains timm's switch,
``set_grad_checkpointing(enable)``, and runs its heavy blocks through
:meth:`GradCheckpointing._checkpointed`: while the layer trains with gradients recorded,
each block keeps only its inputs in the forward pass and runs again in the backward pass
to rebuild what its gradient needs, trading time for activation memory. The checkpoint is
torch's non-reentrant one with the random-number state preserved, so dropout draws the
same masks in the recomputation and the loss and gradients equal a plain step's.

One thing the recomputation would change besides time: a BatchNorm inside a block would
update its running statistics a second time (the momentum applied twice, the batch count
advanced twice). They are put back after the recomputation, so a checkpointed step leaves
the same buffers as a plain one. Under :func:`torch.compile` the compiler owns the
recomputation (its backward graph mutates no buffer), so nothing is put back there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["GradCheckpointing"]

_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def _running_buffers(block: Any) -> list[torch.Tensor]:
    """The running statistics a training-mode BatchNorm in ``block`` (a module or one's method) would update."""
    owner = getattr(block, "__self__", block)
    modules = owner.modules() if isinstance(owner, nn.Module) else ()
    return [
        buffer
        for module in modules
        if isinstance(module, _BATCH_NORMS) and module.training and module.track_running_stats
        for buffer in (module.running_mean, module.running_var, module.num_batches_tracked)
        if buffer is not None
    ]


def _compiling() -> bool:
    """Whether :func:`torch.compile` is tracing (``torch.compiler.is_compiling`` is newer than torch 2.1)."""
    is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    return bool(is_compiling is not None and is_compiling())


@contextlib.contextmanager
def _restored(buffers: list[torch.Tensor]) -> Iterator[None]:
    """Run the body, then put ``buffers`` back as they were when it started."""
    before = [buffer.clone() for buffer in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in zip(buffers, before):
                buffer.copy_(value)


class GradCheckpointing:
    """Mixin of an ``nn.Module``: the ``set_grad_checkpointing`` switch and the call it governs.

    ``grad_checkpointing`` is off by default; it is a plain attribute, not part of the
    state dict, so weights saved with either setting load into the other.
    """

    grad_checkpointing: bool = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Checkpoint the layer's heavy blocks while it trains with gradients recorded (timm's name).

        The blocks (named in the layer's docstring) then keep only their inputs and run
        again in the backward pass: less activation memory, more time, the same loss and
        gradients. Evaluation, ``torch.no_grad`` and inference are unaffected. Layers
        nested inside this one are switched with it.

        Args:
            enable: switch it on (True) or off.

        Example:
            >>> from rislayers import DynamicQueryRefiner
            >>> refiner = DynamicQueryRefiner(8, 4, hidden_dims=(4,))
            >>> refiner.set_grad_checkpointing()
            >>> refiner.grad_checkpointing
            True
        """
        if not isinstance(enable, bool):
            raise ValueError(f"enable: expected a bool; got {enable!r}")
        for module in self.modules():  # type: ignore[attr-defined]  (mixed into an nn.Module)
            if isinstance(module, GradCheckpointing):
                module.grad_checkpointing = enable

    def _checkpointed(self, block: Callable[..., Any], *args: Any) -> Any:
        """``block(*args)``, checkpointed when switched on, training and recording gradients."""
        if not (self.grad_checkpointing and self.training and torch.is_grad_enabled()):  # type: ignore[attr-defined]
            return block(*args)
        buffers = [] if _compiling() else _running_buffers(block)
        if not buffers:
            return checkpoint(block, *args, use_reentrant=False, preserve_rng_state=True)

        def contexts() -> tuple[contextlib.AbstractContextManager, contextlib.AbstractContextManager]:
            return contextlib.nullcontext(), _restored(buffers)

        return checkpoint(block, *args, use_reentrant=False, preserve_rng_state=True, context_fn=contexts)
