"""Which process of a ``torchrun`` job this is (one process, rank 0, without torchrun)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DistInfo", "init_distributed", "shutdown_distributed", "unused_parameters", "wrap_ddp"]


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job.

    Attributes:
        rank: global rank.
        world: number of processes.
        local_rank: rank on this machine (the GPU it uses).
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """The process that writes the run folder and prints."""
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the ``torchrun`` process group (NCCL on GPUs, Gloo on CPUs), if there is one.

    Args:
        device: this process's device (it picks the backend).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank=rank, world=world, local_rank=local)


def shutdown_distributed() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def unused_parameters(model: nn.Module, *, batch: int = 2) -> list[str]:
    """The trainable parameters one training step of ``model`` leaves out of its loss's graph.

    A dry step on a random batch at the model's own sizes (``config.image_size``,
    ``vocab_size``, ``max_words``), in training mode: the random numbers and the buffers
    (BatchNorm's running statistics) are restored afterwards and no ``.grad`` is touched, so
    the run that follows is the one it would have been.

    Args:
        model: a reference model (its ``config`` and ``loss``), on its device.
        batch: samples of the dry step (BatchNorm needs two).

    Returns:
        The names of the parameters that got no gradient, in ``named_parameters`` order.

    Example:
        >>> from reference_models import build_model
        >>> unused_parameters(build_model("lavt_sadlr_tiny"))
        []
    """
    config = model.config
    device = next(model.parameters()).device
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    was_training = model.training
    forked = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=forked):
            size, words = config.image_size, config.text.max_words
            images = torch.randn(batch, 3, size, size, device=device)
            input_ids = torch.randint(1, config.text.vocab_size, (batch, words), device=device)
            attention_mask = torch.ones(batch, words, dtype=torch.long, device=device)
            target = torch.rand(batch, size, size, device=device) > 0.5
            model.train()
            loss = model.loss(model(images, input_ids, attention_mask), target)
            grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    finally:
        model.train(was_training)
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
    return [name for (name, _), grad in zip(named, grads) if grad is None]


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in :class:`~torch.nn.parallel.DistributedDataParallel` for this process's device.

    ``find_unused_parameters`` costs a graph traversal every step and makes DDP warn when
    nothing is unused, so it is asked for only when a dry step (:func:`unused_parameters`)
    finds a parameter out of the loss's graph (an encoder's unused pooler, ASDA's selector
    with ``gradient="none"``). Every process takes the same decision. Call it with the
    process group joined, on every process.

    Args:
        model: the model to train (on ``device``).
        device: this process's device.

    Returns:
        The :class:`~torch.nn.parallel.DistributedDataParallel` wrapper of ``model``.
    """
    try:
        unused = bool(unused_parameters(model))
    except Exception:  # a model the dry step cannot feed: DDP's safe setting, with its warning
        unused = True
    flag = torch.tensor([int(unused)], device=device if device.type == "cuda" else "cpu")
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=bool(flag.item())
    )
