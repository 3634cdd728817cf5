"""``bench train --grad-checkpointing``: what activation checkpointing saves and what it costs.

One model, one optimizer, one batch: training steps with checkpointing off and on, timed
in interleaved rounds (:func:`~.measure.interleaved_seconds`, so drift of a shared machine
hits both alike), then each variant's memory: the activations the forward pass keeps for
the backward pass (:class:`~.memory.SavedActivations`) and the peak extra memory of the
forward and backward passes (:func:`~.measure.peak_bytes`). The goal (issue 27): at most
:data:`GOAL_KEPT` of the activations kept, at most :data:`GOAL_TIME` the step's time.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..devices import resolve_device
from .measure import MIB, interleaved_seconds, peak_bytes
from .memory import model_and_optimizer, training_step
from .models import model_inputs

__all__ = ["GOAL_KEPT", "GOAL_TIME", "checkpointing_pair", "checkpointing_table", "checkpointing_header", "format_checkpointing_row"]

GOAL_KEPT = 0.45
"""The most of a step's activation memory checkpointing may keep."""

GOAL_TIME = 1.35
"""The most a step may take with checkpointing, as a multiple of its time without."""


def checkpointing_pair(
    name: str, *, batch: int = 2, steps: int = 3, warmup: int = 1, device: str | torch.device = "cpu",
    dtype: str = "float32", image_size: int | None = None,
) -> list[dict[str, Any]]:
    """Two rows, checkpointing off then on, of one model's training step.

    Args:
        name: a registry name.
        batch: samples per step.
        steps: timed interleaved rounds (the median step time of each variant).
        warmup: untimed steps of each variant first.
        device: where it runs.
        dtype: ``"float32"`` or ``"bf16"`` autocast.
        image_size: override the model's input size.

    Returns:
        ``[off, on]``; the ``on`` row also holds ``activation_kept`` and ``peak_kept`` (on /
        off), ``time_ratio`` (median / median), ``paired_time_ratio`` (median of the rounds'
        ratios) and ``goal_met``.
    """
    device = torch.device(device)
    model, optimizer = model_and_optimizer(name, device, image_size, False)
    config = model.config
    inputs = model_inputs(config, batch, device)
    target = torch.rand(batch, config.image_size, config.image_size, device=device) > 0.5
    saved: list[int] = []
    forward_backward, update = training_step(model, optimizer, inputs, target, device, dtype, saved)

    def variant(enable: bool) -> Callable[[], None]:
        def step() -> None:
            model.set_grad_checkpointing(enable)
            forward_backward()
            update()

        return step

    times = interleaved_seconds({"off": variant(False), "on": variant(True)}, warmup=warmup, repeats=steps, device=device)
    rows = []
    for enable in (False, True):
        model.set_grad_checkpointing(enable)
        peak = peak_bytes(forward_backward, device)
        update()
        seconds = times["on" if enable else "off"]
        rows.append({
            "model": name, "input": config.image_size, "batch": batch, "dtype": dtype, "grad_checkpointing": enable,
            "step_ms": round(statistics.median(seconds) * 1e3, 1), "activation_mib": round(saved[-1] / MIB, 1),
            "peak_mib": round(peak / MIB, 1), "times_ms": [round(s * 1e3, 1) for s in seconds],
        })
    off, on = rows
    on["activation_kept"] = round(on["activation_mib"] / off["activation_mib"], 3)
    on["peak_kept"] = round(on["peak_mib"] / off["peak_mib"], 3)
    on["time_ratio"] = round(on["step_ms"] / off["step_ms"], 3)
    on["paired_time_ratio"] = round(statistics.median(a / b for a, b in zip(times["on"], times["off"])), 3)
    on["goal_met"] = on["activation_kept"] <= GOAL_KEPT and on["time_ratio"] <= GOAL_TIME
    return rows


def checkpointing_table(
    names: Sequence[str], *, on_row: Callable[[dict], None] | None = None, progress: bool = True, **options: Any
) -> list[dict[str, Any]]:
    """:func:`checkpointing_pair` of every model, each row handed to ``on_row`` as it comes.

    Args:
        names: registry names.
        on_row: called with each row (e.g. to print it).
        progress: report each model's time on stderr.
        **options: :func:`checkpointing_pair`'s options.
    """
    options["device"] = resolve_device(str(options.get("device", "cpu")))
    rows = []
    for name in names:
        start = time.perf_counter()
        for row in checkpointing_pair(name, **options):
            rows.append(row)
            if on_row is not None:
                on_row(row)
        if progress:
            print(f"  measured {name} in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return rows


def checkpointing_header() -> str:
    """The column names of :func:`format_checkpointing_row`."""
    return (
        f"{'model':<18} {'input':>5} {'batch':>5} {'ckpt':>4} {'step ms':>9} {'activ MiB':>9} {'peak MiB':>9} "
        f"{'activ kept':>10} {'peak kept':>9} {'time x':>7} {'goal':>4}"
    )


def format_checkpointing_row(row: dict[str, Any]) -> str:
    """One variant's line; the checkpointed one carries the ratios to the plain one.

    Args:
        row: a row of :func:`checkpointing_pair`.

    Example:
        >>> row = {"model": "m", "input": 8, "batch": 2, "grad_checkpointing": True, "step_ms": 13.0, "activation_mib": 4.0,
        ...        "peak_mib": 6.0, "activation_kept": 0.4, "peak_kept": 0.6, "time_ratio": 1.3, "goal_met": True}
        >>> format_checkpointing_row(row).split()[-4:]
        ['40.0%', '60.0%', '1.30', 'yes']
    """
    ratios = ""
    if row["grad_checkpointing"]:
        ratios = (
            f" {100 * row['activation_kept']:>9.1f}% {100 * row['peak_kept']:>8.1f}% {row['time_ratio']:>7.2f} "
            f"{'yes' if row['goal_met'] else 'NO':>4}"
        )
    return (
        f"{row['model']:<18} {row['input']:>5} {row['batch']:>5} {'on' if row['grad_checkpointing'] else 'off':>4} "
        f"{row['step_ms']:>9.1f} {row['activation_mib']:>9.1f} {row['peak_mib']:>9.1f}{ratios}"
    )
