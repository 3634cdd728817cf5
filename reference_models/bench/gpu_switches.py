"""The ``switches`` part of the GPU check: what each of ``train``'s GPU defaults does.

Each switch is measured on the check's training model (``lavt_sadlr_base``; the dry run's
``lavt_sadlr_tiny``) at the ``steps`` part's batch, both settings in interleaved rounds:

- ``tf32``: float32 steps with TensorFloat-32 on and off (``--no-tf32``);
- ``grad_checkpointing``: bf16 steps without and with activation checkpointing
  (:func:`~.checkpointing.checkpointing_pair`: time, kept activations, peak);
- ``fused_optimizer``: float32 steps with the fused and torch's default AdamW;
- ``fit``: the largest bf16 batch :mod:`~.memory`'s estimate gives the lent card, then a step
  at that batch, its measured memory beside the estimate (CUDA's own peak; the dry run, on
  the CPU, measures at most batch 4).
"""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Callable
from typing import Any

import torch

from .checkpointing import checkpointing_pair
from .measure import MIB, interleaved_seconds, synchronize
from .memory import GIB, largest_batch, measure_step_memory, memory_fit, model_and_optimizer, predicted_bytes, training_step
from .models import model_inputs

__all__ = ["switch_units", "format_switch_row", "ESTIMATE_TOLERANCE"]

ESTIMATE_TOLERANCE = 0.15
"""How far the memory estimate may be from the measured step before the ``fit`` row fails."""

#: the dry run's largest measured batch (its card is imaginary)
_DRY_BATCH = 4


@contextlib.contextmanager
def _backend_kept():
    """Restore the process-wide TF32 and cuDNN switches a unit changes."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    new_api = hasattr(matmul, "fp32_precision") and hasattr(getattr(cudnn, "conv", None), "fp32_precision")
    saved = (matmul.fp32_precision, cudnn.conv.fp32_precision) if new_api else (matmul.allow_tf32, cudnn.allow_tf32)
    benchmark = cudnn.benchmark
    try:
        yield
    finally:
        if new_api:
            matmul.fp32_precision, cudnn.conv.fp32_precision = saved
        else:
            matmul.allow_tf32, cudnn.allow_tf32 = saved
        cudnn.benchmark = benchmark


def _pair_rows(plan, switch: str, steps: dict[bool, Callable[[], None]], device: torch.device, dtype: str) -> list[dict]:
    times = interleaved_seconds({str(k): v for k, v in steps.items()}, warmup=1, repeats=plan.train_steps, device=device)
    off, on = (statistics.median(times[str(flag)]) for flag in (False, True))
    return [
        {"switch": switch, "on": flag, "model": plan.train_model, "batch": plan.step_batch, "dtype": dtype,
         "step_ms": round(1e3 * (on if flag else off), 1), "time_ratio": round(on / off, 3) if flag else None, "status": "ok"}
        for flag in (False, True)
    ]


def _steps(plan, device: torch.device, dtype: str):
    model, optimizer = model_and_optimizer(plan.train_model, device, None, False)
    inputs = model_inputs(model.config, plan.step_batch, device)
    target = torch.rand(plan.step_batch, model.config.image_size, model.config.image_size, device=device) > 0.5
    return model, optimizer, inputs, target


def tf32_unit(plan) -> list[dict]:
    """float32 steps with TF32 on and off, interleaved (on a CPU both are the same: no TF32)."""
    from ..training.config import TrainConfig
    from ..training.precision import apply_backend_settings

    device = torch.device(plan.device)
    model, optimizer, inputs, target = _steps(plan, device, "float32")
    forward_backward, update = training_step(model, optimizer, inputs, target, device, "float32")

    def variant(enable: bool):
        def step():
            apply_backend_settings(TrainConfig(tf32=enable), device)
            forward_backward()
            update()

        return step

    with _backend_kept():
        rows = _pair_rows(plan, "tf32", {False: variant(False), True: variant(True)}, device, "float32")
    return [dict(row, applied=device.type == "cuda") for row in rows]


def fused_unit(plan) -> list[dict]:
    """float32 steps with torch's default and the fused AdamW, interleaved, on the same model."""
    device = torch.device(plan.device)
    model, _, inputs, target = _steps(plan, device, "float32")
    optimizers = {flag: torch.optim.AdamW(model.parameters(), lr=1e-6, fused=flag) for flag in (False, True)}

    def variant(flag: bool):
        forward_backward, update = training_step(model, optimizers[flag], inputs, target, device, "float32")

        def step():
            forward_backward()
            update()

        return step

    return _pair_rows(plan, "fused_optimizer", {flag: variant(flag) for flag in (False, True)}, device, "float32")


def checkpointing_unit(plan) -> list[dict]:
    """bf16 steps without and with activation checkpointing (:func:`checkpointing_pair`)."""
    rows = checkpointing_pair(plan.train_model, batch=plan.step_batch, steps=plan.train_steps, warmup=1, device=plan.device, dtype="bf16")
    off = rows[0]["step_ms"]
    return [
        {"switch": "grad_checkpointing", "on": row["grad_checkpointing"], "time_ratio": round(row["step_ms"] / off, 3) if row["grad_checkpointing"] else None,
         **{k: v for k, v in row.items() if k != "grad_checkpointing"}, "status": "ok"}
        for row in rows
    ]


def _measured_total(name: str, batch: int, device: torch.device) -> float:
    """Bytes a bf16 training step at ``batch`` takes: CUDA's peak, or on a CPU weights,
    optimizer state and the profiled peaks of the step."""
    model, optimizer = model_and_optimizer(name, device, None, False)
    if device.type != "cuda":
        point = measure_step_memory(model, optimizer, batch, device, "bf16")
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        return weights + point["optimizer_bytes"] + max(point["peak_bytes"], point["update_bytes"])
    inputs = model_inputs(model.config, batch, device)
    target = torch.rand(batch, model.config.image_size, model.config.image_size, device=device) > 0.5
    forward_backward, update = training_step(model, optimizer, inputs, target, device, "bf16")
    forward_backward()
    update()
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    forward_backward()
    update()
    synchronize(device)
    return float(torch.cuda.max_memory_allocated(device))


def fit_unit(plan) -> dict[str, Any]:
    """The largest bf16 batch of the lent card by the estimate, and a step measured at it."""
    device = torch.device(plan.device)
    row = memory_fit(plan.train_model, batches=(1, 2), device=device, dtype="bf16")
    card_gib = torch.cuda.get_device_properties(device).total_memory / GIB if device.type == "cuda" else None
    batch = largest_batch(row, card_gib) if card_gib is not None else _DRY_BATCH
    if card_gib is None:
        batch = min(batch, _DRY_BATCH)
    predicted = predicted_bytes(row, batch)
    measured = _measured_total(plan.train_model, batch, device) if batch else None
    error = None if not measured else round(predicted / measured - 1, 3)
    return {
        "switch": "fit", "model": plan.train_model, "dtype": "bf16", "card_gib": None if card_gib is None else round(card_gib, 1),
        "largest_batch": batch, "per_image_mib": round(row["per_image_bytes"] / MIB, 1),
        "predicted_mib": round(predicted / MIB, 1), "measured_mib": None if measured is None else round(measured / MIB, 1),
        "estimate_error": error, "status": "ok" if error is not None and abs(error) <= ESTIMATE_TOLERANCE else "failed",
    }


def switch_units(plan) -> list[tuple[dict, Callable[[], Any]]]:
    """The part's units: a label and the zero-argument measurement of each.

    Args:
        plan: the GPU check's plan (its ``train_model``, ``step_batch``, ``train_steps``, ``device``).
    """
    return [
        ({"switch": "tf32"}, lambda: tf32_unit(plan)),
        ({"switch": "grad_checkpointing"}, lambda: checkpointing_unit(plan)),
        ({"switch": "fused_optimizer"}, lambda: fused_unit(plan)),
        ({"switch": "fit"}, lambda: fit_unit(plan)),
    ]


def format_switch_row(row: dict[str, Any]) -> str:
    """One printed line of the part.

    Args:
        row: a row of one of :func:`switch_units`' units.

    Example:
        >>> format_switch_row({"switch": "tf32", "on": True, "model": "m", "batch": 2, "dtype": "float32", "step_ms": 5.0,
        ...                    "time_ratio": 0.5})
        '  m                  tf32               on  batch 2 float32: step 5.0 ms (x0.50 of off)'
    """
    if row["switch"] == "fit":
        card = "the dry run's cap" if row["card_gib"] is None else f"a {row['card_gib']} GiB card"
        measured = "n/a" if row["measured_mib"] is None else f"{row['measured_mib']:.0f} MiB"
        return (
            f"  {row['model']:<18} fit: batch {row['largest_batch']} on {card} (bf16, {row['per_image_mib']:.0f} MiB per image) | "
            f"estimate {row['predicted_mib']:.0f} MiB, measured {measured} ({_percent(row['estimate_error'])})"
        )
    ratio = f" (x{row['time_ratio']:.2f} of off)" if row["time_ratio"] is not None else ""
    extra = f" | activations {row['activation_mib']:.0f} MiB, peak {row['peak_mib']:.0f} MiB" if "activation_mib" in row else ""
    return (
        f"  {row['model']:<18} {row['switch']:<18} {'on' if row['on'] else 'off':<3} batch {row['batch']} {row['dtype']}: "
        f"step {row['step_ms']:.1f} ms{ratio}{extra}"
    )


def _percent(error: float | None) -> str:
    return "no step" if error is None else f"{100 * error:+.1f} %"
