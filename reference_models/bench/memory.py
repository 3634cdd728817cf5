"""``bench memory``: how many images a card holds for one training step, known before renting it.

The memory of a training step is

``weights + optimizer state + max(fixed + per_image * b, update)``

at batch ``b``: the peak extra memory of the forward and backward passes (activations kept
for the backward pass, the gradients it produces, temporaries) grows along a line in ``b``;
the optimizer's update needs the gradients and its own temporaries, whatever the batch.
Both are read as :func:`~.measure.peak_bytes` reads them: on CUDA the allocator's high-water
mark, on a CPU every allocation and free of PyTorch's CPU allocator recorded by the
profiler (a tracked allocator, not the noisy process RSS). The step is measured at two
batch sizes (after one warm-up step, which creates the optimizer's state); the line through
the two forward-and-backward peaks is the estimate (its slope at least that of the kept
activations: at small batches the gradients can set the peak, which then grows more
slowly than it will once the activations dominate). The activations alone are
also counted, as the bytes of the distinct tensors autograd saves for the backward pass
(``torch.autograd.graph.saved_tensors_hooks``, parameters left out).

A card of ``N`` GB holds ``N`` GiB (what ``nvidia-smi`` shows for 12 ... 80 GB cards); the
largest batch is the one whose estimate fits in that less the stated margin: a share of the
card (the caching allocator's fragmentation, cuDNN's workspaces) and the CUDA context.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .measure import MIB, autocast, peak_bytes, synchronize
from .models import build_on, model_inputs

__all__ = [
    "CARDS_GB",
    "MEMORY_MODELS",
    "DEFAULT_MARGIN",
    "CONTEXT_GIB",
    "SavedActivations",
    "model_and_optimizer",
    "training_step",
    "measure_step_memory",
    "memory_fit",
    "predicted_bytes",
    "largest_batch",
    "memory_table",
    "format_memory",
]

CARDS_GB = (12, 16, 24, 40, 80)
"""The cards of the table, in GB (GiB as the driver reports them)."""

MEMORY_MODELS = ("lavt_sadlr_base", "asda_base", "s2rm_base")
"""The three papers' systems at their paper sizes, the default models of ``bench memory``."""

DEFAULT_MARGIN = 0.15
"""The share of a card left free, for the caching allocator's fragmentation and cuDNN's workspaces."""

CONTEXT_GIB = 1.0
"""Memory the CUDA context and its libraries take before the first tensor, left free too."""

GIB = 2.0**30


class SavedActivations:
    """Counts the bytes of the tensors autograd saves for the backward pass while active.

    Each storage is counted once (views of one tensor share it); parameters, which a
    layer saves to compute its input's gradient, are not activations and are left out.

    Args:
        model: whose parameters are left out.

    Example:
        >>> layer = torch.nn.Linear(4, 4)
        >>> with SavedActivations(layer) as saved:
        ...     out = layer(torch.ones(2, 4, requires_grad=True)).relu()
        >>> saved.bytes  # the input (saved by the product) and the ReLU's output
        64
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self._parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self._storages: dict[int, int] = {}
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda tensor: tensor)

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in self._parameters:
            self._storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    @property
    def bytes(self) -> int:
        return sum(self._storages.values())

    def __enter__(self) -> SavedActivations:
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)


def training_step(
    model, optimizer, inputs, target, device: torch.device, dtype: str, saved: list[int] | None = None
) -> tuple[Callable[[], None], Callable[[], None]]:
    """One optimisation step as the training loop takes it, as two zero-argument callables.

    The first runs the forward and the model's loss under ``dtype``'s autocast and the
    backward; the second the optimizer's update, then sets the gradients to None (so the
    next step allocates them again, as ``train`` does).

    Args:
        model: the reference model (its ``loss``).
        optimizer: stepped after the backward.
        inputs: ``(images, input_ids, attention_mask)``.
        target: ``(b, H, W)`` bool mask.
        device: where it computes (for autocast).
        dtype: ``"float32"`` or ``"bf16"``.
        saved: when given, the bytes of the activations the forward kept are appended to it.
    """

    def forward_backward() -> None:
        counter = SavedActivations(model)
        with autocast(device, dtype), counter if saved is not None else contextlib.nullcontext():
            loss = model.loss(model(*inputs), target)
        if saved is not None:
            saved.append(counter.bytes)
        loss.backward()

    def update() -> None:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return forward_backward, update


def _state_bytes(optimizer: torch.optim.Optimizer) -> int:
    return sum(t.numel() * t.element_size() for state in optimizer.state.values() for t in state.values() if torch.is_tensor(t))


def measure_step_memory(model, optimizer, batch: int, device: torch.device, dtype: str = "float32", *, warmup: bool = True) -> dict[str, int]:
    """The step's peak extra memory and kept activations at ``batch`` (after one warm-up step).

    Args:
        model: the reference model, on ``device``, in training mode.
        optimizer: its optimizer (its state is created by the warm-up step).
        batch: samples.
        device: where it computes.
        dtype: ``"float32"`` or ``"bf16"`` autocast.
        warmup: take the warm-up step (needed once: it creates the optimizer's state and
            the allocator's first blocks).

    Returns:
        ``{"batch", "peak_bytes"`` (forward and backward), ``"update_bytes"`` (the gradients
        and the optimizer's temporaries), ``"activation_bytes", "optimizer_bytes"}``.
    """
    config = model.config
    inputs = model_inputs(config, batch, device)
    target = torch.rand(batch, config.image_size, config.image_size, device=device) > 0.5
    saved: list[int] = []
    forward_backward, update = training_step(model, optimizer, inputs, target, device, dtype, saved)
    if warmup:
        forward_backward()
        update()
    synchronize(device)
    peak = peak_bytes(forward_backward, device)
    grads = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)
    update_peak = grads + peak_bytes(update, device)
    return {
        "batch": batch, "peak_bytes": peak, "update_bytes": update_peak, "activation_bytes": saved[-1],
        "optimizer_bytes": _state_bytes(optimizer),
    }


def model_and_optimizer(name: str, device: torch.device, image_size: int | None, grad_checkpointing: bool):
    """A model built on ``device`` in training mode, checkpointing as asked, and its recipe's
    optimizer (with ``train``'s defaults: fused on CUDA).

    Args:
        name: a registry name.
        device: where it is built.
        image_size: override its input size.
        grad_checkpointing: switch activation checkpointing on.
    """
    from ..registry import get_config
    from ..training.config import TrainConfig
    from ..training.optim import build_optimizer

    config = get_config(name)
    if image_size is not None:
        config = config.replace(image_size=image_size)
    torch.manual_seed(0)
    model = build_on(config, device).train()
    model.set_grad_checkpointing(grad_checkpointing)
    return model, build_optimizer(model, TrainConfig(model=name).resolved())


def memory_fit(
    name: str, *, batches: Sequence[int] = (1, 2), device: str | torch.device = "cpu", dtype: str = "float32",
    grad_checkpointing: bool = False, image_size: int | None = None,
) -> dict[str, Any]:
    """Measure a model's training step at two batch sizes and fit the line through them.

    Args:
        name: a registry name.
        batches: the two batch sizes measured.
        device: where it runs.
        dtype: ``"float32"`` or ``"bf16"`` autocast.
        grad_checkpointing: with activation checkpointing.
        image_size: override the model's input size.

    Returns:
        A row: the model, ``weights_bytes``, ``optimizer_bytes``, ``fixed_bytes`` and
        ``per_image_bytes`` of the step's line, ``activation_per_image_bytes`` and the
        ``measured`` points (see :func:`predicted_bytes`).
    """
    low, high = sorted(batches)
    if not 1 <= low < high:
        raise ValueError(f"batches: expected two different sizes >= 1; got {' '.join(map(str, batches))}")
    device = torch.device(device)
    model, optimizer = model_and_optimizer(name, device, image_size, grad_checkpointing)
    points = [measure_step_memory(model, optimizer, b, device, dtype, warmup=b == low) for b in (low, high)]
    # At small batches the backward pass's peak can be set by the gradients rather than the
    # activations, and grows more slowly than it will: the slope is the larger of the two.
    activation_slope = (points[1]["activation_bytes"] - points[0]["activation_bytes"]) / (high - low)
    per_image = max((points[1]["peak_bytes"] - points[0]["peak_bytes"]) / (high - low), activation_slope)
    return {
        "model": name,
        "input": model.config.image_size,
        "dtype": dtype,
        "grad_checkpointing": grad_checkpointing,
        "weights_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
        "optimizer_bytes": points[-1]["optimizer_bytes"],
        "fixed_bytes": points[0]["peak_bytes"] - per_image * low,
        "update_bytes": max(p["update_bytes"] for p in points),
        "per_image_bytes": per_image,
        "activation_per_image_bytes": activation_slope,
        "measured": points,
    }


def predicted_bytes(row: dict[str, Any], batch: int) -> float:
    """The estimated memory of a training step at ``batch``: weights, optimizer state, and the
    larger of the forward-and-backward line and the update.

    Args:
        row: from :func:`memory_fit`.
        batch: samples per step.

    Example:
        >>> row = {"weights_bytes": 10, "optimizer_bytes": 20, "fixed_bytes": 5, "per_image_bytes": 100, "update_bytes": 50}
        >>> predicted_bytes(row, 3), predicted_bytes(row, 0)
        (335, 80)
    """
    step = max(row["fixed_bytes"] + row["per_image_bytes"] * batch, row.get("update_bytes", 0))
    return row["weights_bytes"] + row["optimizer_bytes"] + step


def largest_batch(row: dict[str, Any], card_gb: float, *, margin: float = DEFAULT_MARGIN, context_gib: float = CONTEXT_GIB) -> int:
    """The largest batch per process whose estimate fits a card with the margin left free.

    Args:
        row: from :func:`memory_fit`.
        card_gb: the card's memory in GB (GiB as the driver reports it).
        margin: the share of the card left free.
        context_gib: the CUDA context, left free too.

    Returns:
        The batch; 0 when not even one image fits.

    Example:
        >>> row = {"weights_bytes": 2**30, "optimizer_bytes": 2**31, "fixed_bytes": 0, "per_image_bytes": 2**30, "update_bytes": 2**30}
        >>> largest_batch(row, 12)  # 12 * 0.85 - 1 = 9.2 GiB usable, 3 GiB fixed
        6
    """
    usable = card_gb * GIB * (1 - margin) - context_gib * GIB
    if predicted_bytes(row, 1) > usable:
        return 0
    if row["per_image_bytes"] <= 0:
        return sys.maxsize
    room = usable - row["weights_bytes"] - row["optimizer_bytes"] - row["fixed_bytes"]
    return max(1, math.floor(room / row["per_image_bytes"]))


def memory_table(
    names: Sequence[str] | None = None, *, batches: Sequence[int] = (1, 2), device: str | torch.device = "cpu",
    dtype: str = "float32", grad_checkpointing: bool = False, image_size: int | None = None,
    on_row: Callable[[dict], None] | None = None,
) -> list[dict[str, Any]]:
    """:func:`memory_fit` of every model, each row handed to ``on_row`` as it comes.

    Args:
        names: registry names (default :data:`MEMORY_MODELS`).
        batches: the two batch sizes measured.
        device: where it runs.
        dtype: ``"float32"`` or ``"bf16"`` autocast.
        grad_checkpointing: with activation checkpointing.
        image_size: override the models' input size.
        on_row: called with each row.
    """
    rows = []
    for name in names or MEMORY_MODELS:
        start = time.perf_counter()
        row = memory_fit(name, batches=batches, device=device, dtype=dtype, grad_checkpointing=grad_checkpointing, image_size=image_size)
        row["seconds"] = round(time.perf_counter() - start, 1)
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows


def memory_header(cards: Sequence[float] = CARDS_GB) -> str:
    """The column names of :func:`format_memory_row`."""
    fits = " ".join(f"{f'{c:g} GB':>6}" for c in cards)
    return f"{'model':<18} {'input':>5} {'ckpt':>4} {'weights':>8} {'optim':>8} {'fixed':>8} {'per img':>8} {'act/img':>8} {'update':>8} | {fits}"


def _shown_batch(batch: int) -> str:
    return str(batch) if batch < 100_000 else "any"


def format_memory_row(row: dict[str, Any], cards: Sequence[float] = CARDS_GB, *, margin: float = DEFAULT_MARGIN) -> str:
    """One model's line: its memory (MiB) and the largest batch per card."""
    fits = " ".join(f"{_shown_batch(largest_batch(row, c, margin=margin)):>6}" for c in cards)
    keys = ("weights_bytes", "optimizer_bytes", "fixed_bytes", "per_image_bytes", "activation_per_image_bytes", "update_bytes")
    mib = {k: row[k] / MIB for k in keys}
    return (
        f"{row['model']:<18} {row['input']:>5} {'on' if row['grad_checkpointing'] else 'off':>4} {mib['weights_bytes']:>8.0f} "
        f"{mib['optimizer_bytes']:>8.0f} {mib['fixed_bytes']:>8.0f} {mib['per_image_bytes']:>8.0f} "
        f"{mib['activation_per_image_bytes']:>8.0f} {mib['update_bytes']:>8.0f} | {fits}"
    )


def format_memory(rows: list[dict[str, Any]], cards: Sequence[float] = CARDS_GB, *, margin: float = DEFAULT_MARGIN) -> str:
    """The whole table of :func:`memory_table`'s rows.

    Args:
        rows: from :func:`memory_table`.
        cards: the cards' memory in GB.
        margin: the share of each card left free.

    Example:
        >>> row = {"model": "m", "input": 8, "grad_checkpointing": False, "weights_bytes": 2**30, "optimizer_bytes": 2**31,
        ...        "fixed_bytes": 0, "per_image_bytes": 2**30, "activation_per_image_bytes": 2**29, "update_bytes": 2**30}
        >>> print(format_memory([row], cards=(12,)).splitlines()[-1])
        m                      8  off     1024     2048        0     1024      512     1024 |      6
    """
    header = memory_header(cards)
    return "\n".join([header, "-" * len(header)] + [format_memory_row(r, cards, margin=margin) for r in rows])
