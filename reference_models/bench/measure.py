"""Timing and memory measurement shared by every section and by ``benchmarks/``.

Timing: :func:`median_seconds` (one step, warm-up then the median of repeated runs) and
:func:`interleaved_seconds` (several steps measured in alternating order, so that slow
drift of the machine hits each of them equally). On CUDA the device is synchronised before
and after every timed run, so a time covers the kernels and not only their launch.

Peak memory: :func:`peak_bytes`. On CUDA it is the allocator's high-water mark during the
step (``torch.cuda.max_memory_allocated``) minus what was allocated before it. On CPU there
is no allocator high-water mark to read, and the process RSS mixes in the allocator's
caching and earlier work; so the step runs once under
``torch.profiler.profile(profile_memory=True)``, which records every allocation and free
made through PyTorch's CPU allocator (all threads) with a timestamp. The maximum of the
running sum of those events, in time order, is the peak number of bytes of tensor storage
the step had live on top of what existed before it: inputs and parameters are allocated
beforehand and not counted; activations, temporaries and the gradients produced are. On
both devices the figure is therefore the step's *extra* memory, the part that grows with
batch size and that an implementation controls.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch

__all__ = [
    "MIB",
    "DTYPES",
    "autocast",
    "synchronize",
    "median_seconds",
    "interleaved_seconds",
    "quiet_stderr",
    "peak_bytes",
    "total",
    "make_steps",
    "measure_steps",
]

MIB = 2.0**20
"""Bytes in a MiB; every memory column of the benchmarks is in MiB."""

DTYPES = {"float32": None, "bf16": torch.bfloat16}
"""``--dtype`` choices and the autocast dtype each means (``None``: no autocast)."""


def autocast(device: torch.device, dtype: str):
    """The autocast context of ``--dtype``: bf16 autocast, or nothing for float32.

    Args:
        device: the device computed on (its type picks the autocast backend).
        dtype: a key of :data:`DTYPES`.
    """
    target = DTYPES[dtype]
    if target is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=target)


def synchronize(device: torch.device | str | None) -> None:
    """Wait for the device's queued work (a no-op on CPU).

    Args:
        device: the device, or ``None`` for nothing to wait for.
    """
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _timed(step: Callable[[], Any], device) -> float:
    synchronize(device)
    start = time.perf_counter()
    step()
    synchronize(device)
    return time.perf_counter() - start


def median_seconds(step: Callable[[], Any], *, warmup: int, repeats: int, device=None) -> float:
    """Median wall time of ``step`` over ``repeats`` runs after ``warmup`` untimed runs.

    Args:
        step: zero-argument callable.
        warmup: untimed runs first.
        repeats: timed runs (at least one is made).
        device: synchronised around each run when it is a CUDA device.

    Example:
        >>> median_seconds(lambda: None, warmup=1, repeats=3) >= 0
        True
    """
    for _ in range(warmup):
        step()
    return statistics.median(_timed(step, device) for _ in range(max(1, repeats)))


def interleaved_seconds(
    steps: Mapping[str, Callable[[], Any]], *, warmup: int, repeats: int, device=None
) -> dict[str, list[float]]:
    """Every run time of several steps measured in alternating order (A B, B A, A B, ...).

    Each step is warmed up ``warmup`` times, then round ``r`` runs every step once, in the
    given order for even ``r`` and reversed for odd ``r``, so that neither drift of the
    machine nor the position in a round favours one step.

    Args:
        steps: name -> zero-argument callable.
        warmup: untimed runs of each step first.
        repeats: timed rounds.
        device: synchronised around each run when it is a CUDA device.

    Returns:
        name -> list of ``repeats`` times in seconds.

    Example:
        >>> times = interleaved_seconds({"a": lambda: None, "b": lambda: None}, warmup=0, repeats=3)
        >>> sorted(times), len(times["a"])
        (['a', 'b'], 3)
    """
    names = list(steps)
    for _ in range(warmup):
        for name in names:
            steps[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(max(1, repeats)):
        for name in names if round_index % 2 == 0 else reversed(names):
            times[name].append(_timed(steps[name], device))
    return times


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Discard what C++ code writes to stderr (the profiler logs every start and stop)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_bytes(step: Callable[[], Any], device=None) -> int:
    """Peak live tensor bytes allocated by ``step`` beyond what existed before it.

    Args:
        step: the zero-argument callable to measure (run once).
        device: the device it computes on; CUDA reads the allocator, anything else profiles
            the CPU allocator (see the module docstring).
    """
    if device is not None and torch.device(device).type == "cuda":
        synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        synchronize(device)
        return max(0, torch.cuda.max_memory_allocated(device) - before)
    from torch.profiler import ProfilerActivity, profile

    with quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def total(output: Any) -> torch.Tensor:
    """Sum of every floating-point tensor that carries a gradient in a (nested) output.

    A stand-in loss: back-propagating it reaches every parameter that any output depends on.

    Args:
        output: a tensor, or sequences / mappings of them (a NamedTuple result included).

    Example:
        >>> x = torch.ones(2, requires_grad=True)
        >>> total((x * 2, [x], torch.zeros(3)))
        tensor(6., grad_fn=<SumBackward0>)
    """
    if isinstance(output, torch.Tensor):
        if output.is_floating_point() and output.requires_grad:
            return output.float().sum()
        return torch.zeros(())
    if isinstance(output, Mapping):
        output = list(output.values())
    if isinstance(output, Sequence) and not isinstance(output, str):
        parts = [total(item) for item in output]
        return torch.stack([p.to(parts[0].device) for p in parts]).sum() if parts else torch.zeros(())
    return torch.zeros(())


def make_steps(module: torch.nn.Module, run: Callable[[], Any], tensors: Sequence[torch.Tensor], *, device=None, dtype: str = "float32"):
    """(forward, forward+backward, clear_grads) closures around ``run``.

    ``forward`` runs under ``torch.no_grad`` (inference); ``forward_backward`` clears the
    gradients of ``tensors`` and of the module's parameters, then back-propagates
    :func:`total` of the output (a training step without the optimizer).

    Args:
        module: the module ``run`` calls (its parameters' gradients are cleared).
        run: zero-argument callable returning the module's output.
        tensors: the inputs that require gradients.
        device: the device, for autocast.
        dtype: ``"float32"`` or ``"bf16"`` (autocast).
    """
    device = torch.device(device or "cpu")

    def clear_grads():
        for tensor in list(tensors) + list(module.parameters()):
            tensor.grad = None

    def forward():
        with torch.no_grad(), autocast(device, dtype):
            run()

    def forward_backward():
        clear_grads()
        with autocast(device, dtype):
            loss = total(run())
        loss.backward()

    return forward, forward_backward, clear_grads


def measure_steps(forward, forward_backward, clear_grads, *, warmup: int, repeats: int, device=None, memory: bool = True) -> dict[str, float | None]:
    """Median times (s) and peak extra memory (bytes) of a forward and a forward+backward.

    Args:
        forward: the inference step (from :func:`make_steps`).
        forward_backward: the training step.
        clear_grads: resets the gradients between measurements.
        warmup: untimed runs before timing each step.
        repeats: timed runs (median).
        device: synchronised around runs and read for memory when it is a CUDA device.
        memory: also measure the peak extra memory of each step (one more run each).

    Returns:
        ``{"fwd", "fb", "mem_fwd", "mem_fb"}``; the memory entries are ``None`` when
        ``memory`` is False.
    """
    result: dict[str, float | None] = {
        "fwd": median_seconds(forward, warmup=warmup, repeats=repeats, device=device),
        "fb": median_seconds(forward_backward, warmup=warmup, repeats=repeats, device=device),
        "mem_fwd": None,
        "mem_fb": None,
    }
    if memory:
        clear_grads()
        result["mem_fwd"] = peak_bytes(forward, device)
        clear_grads()
        result["mem_fb"] = peak_bytes(forward_backward, device)
    clear_grads()
    return result
