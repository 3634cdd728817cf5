"""Measurement helpers shared by ``python -m reference_models.bench`` and ``benchmarks/``.

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

The S2RM coparser comparison ("gemm" vs the literal "shift", issue #3) lives here too, so
that ``benchmarks/coparser.py`` and the ``layers`` section print the same measurement.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from .devices import resolve_device

__all__ = [
    "MIB",
    "DTYPES",
    "IMPLEMENTATIONS",
    "cpu_name",
    "environment",
    "format_environment",
    "resolve_device",
    "autocast",
    "synchronize",
    "median_seconds",
    "interleaved_seconds",
    "quiet_stderr",
    "peak_bytes",
    "total",
    "make_steps",
    "measure_steps",
    "coparser_steps",
    "coparser_rows",
    "coparser_header",
    "format_coparser_row",
    "coparser_targets",
]

MIB = 2.0**20
"""Bytes in a MiB; every memory column of the benchmarks is in MiB."""

DTYPES = {"float32": None, "bf16": torch.bfloat16}
"""``--dtype`` choices and the autocast dtype each means (``None``: no autocast)."""

IMPLEMENTATIONS = ("gemm", "shift")
"""The two :class:`~rislayers.SpatialRecurrentCoparser` implementations compared."""


def cpu_name() -> str:
    """The CPU's model name (from ``/proc/cpuinfo`` where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device | str = "cpu", dtype: str = "float32") -> dict[str, Any]:
    """What a measurement ran on: machine, software, device, dtype, threads and date.

    Args:
        device: the device measured on.
        dtype: ``"float32"`` or ``"bf16"`` (bf16 autocast).

    Example:
        >>> env = environment()
        >>> env["device"], env["dtype"]
        ('cpu', 'float32')
    """
    device = torch.device(device)
    name = "cpu"
    if device.type == "cuda":
        name = f"cuda ({torch.cuda.get_device_name(device)})"
    return {
        "host": platform.node(),
        "cpu": cpu_name(),
        "logical_cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": name,
        "dtype": dtype,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def format_environment(section: str, env: Mapping[str, Any]) -> str:
    """The one-line header every benchmark section prints first.

    Args:
        section: the section's name.
        env: a dict from :func:`environment`.
    """
    return (
        f"# {section} | {env['host']} | {env['cpu']}, {env['logical_cpus']} logical CPUs | "
        f"torch {env['torch']} | {env['threads']} threads | device {env['device']} | {env['dtype']} | {env['date']}"
    )


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


def coparser_steps(part: str, implementation: str, *, size: int, dim: int, batch: int, text_dim: int, words: int, device=None):
    """(forward, forward+backward, clear_grads) of one coparser configuration.

    Args:
        part: ``"coparse"`` (the coparsing step alone, Eq. 5-8, on ``(b, n, c)`` inputs) or
            ``"layer"`` (the whole layer, Eq. 1-10 and the fusion, a third of the words padding).
        implementation: ``"gemm"`` or ``"shift"``.
        size: map size ``h = w``.
        dim: visual channels ``c``.
        batch: batch size ``b``.
        text_dim: word channels ``d``.
        words: words per sentence ``l``.
        device: where to build and run it.
    """
    from rislayers.coparser import SpatialRecurrentCoparser

    torch.manual_seed(0)
    device = torch.device(device or "cpu")
    layer = SpatialRecurrentCoparser(dim, text_dim, size=(size, size), implementation=implementation, device=device).train()
    n = size * size
    if part == "coparse":
        inputs = [torch.randn(batch, n, dim, device=device, requires_grad=True) for _ in range(2)]

        def run():
            return layer.coparse(*inputs)
    elif part == "layer":
        vis = torch.randn(batch, dim, size, size, device=device, requires_grad=True)
        text = torch.randn(batch, words, text_dim, device=device, requires_grad=True)
        lengths = torch.arange(batch, device=device) % words + max(1, words - words // 3)
        mask = torch.arange(words, device=device)[None, :] < lengths.clamp(max=words)[:, None]
        inputs = [vis, text]

        def run():
            return layer(vis, text, mask)
    else:
        raise ValueError(f"part: expected 'coparse' or 'layer'; got {part!r}")
    return make_steps(layer, run, inputs, device=device)


def coparser_rows(
    parts: Sequence[str],
    sizes: Sequence[int],
    dims: Sequence[int],
    *,
    batch: int,
    text_dim: int = 768,
    words: int = 20,
    warmup: int = 1,
    repeats: int = 5,
    device=None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Measure "gemm" and "shift" side by side for every part, size and channel count.

    Each row holds, per implementation, the forward and forward+backward times (ms) and
    peak extra memory (MiB), plus the ratio shift/gemm of each (``x_*``).

    Args:
        parts: ``"coparse"`` and/or ``"layer"``.
        sizes: map sizes ``h = w``.
        dims: channel counts ``c``.
        batch: batch size.
        text_dim: word channels (``"layer"`` part).
        words: words per sentence (``"layer"`` part).
        warmup: untimed runs before timing.
        repeats: timed runs (median).
        device: where to run.
        on_row: called with each row as soon as it is measured (to print progress).
    """
    rows = []
    for part in parts:
        for size in sizes:
            for dim in dims:
                res = {}
                for impl in IMPLEMENTATIONS:
                    steps = coparser_steps(part, impl, size=size, dim=dim, batch=batch, text_dim=text_dim, words=words, device=device)
                    res[impl] = measure_steps(*steps, warmup=warmup, repeats=repeats, device=device)
                row: dict[str, Any] = {"part": part, "size": size, "dim": dim, "batch": batch}
                for key, scale in (("fwd", 1e3), ("fb", 1e3), ("mem_fwd", 1 / MIB), ("mem_fb", 1 / MIB)):
                    gemm, shift = res["gemm"][key], res["shift"][key]
                    row[f"{key}_gemm"] = round(gemm * scale, 3)
                    row[f"{key}_shift"] = round(shift * scale, 3)
                    row[f"x_{key}"] = round(shift / max(gemm, 1e-12 if key in ("fwd", "fb") else 1), 3)
                rows.append(row)
                if on_row is not None:
                    on_row(row)
    return rows


def coparser_header() -> str:
    """Column titles of the coparser comparison, then a rule."""
    header = (
        f"{'part':8} {'h=w':>3} {'c':>4} | {'fwd gemm':>9} {'shift':>9} {'x':>6} | {'f+b gemm':>9} {'shift':>9} {'x':>6} | "
        f"{'pk fwd gemm':>11} {'shift':>9} {'x':>6} | {'pk f+b gemm':>11} {'shift':>9} {'x':>6}"
    )
    return header + "\n" + "-" * len(header)


def format_coparser_row(row: Mapping[str, Any]) -> str:
    """One line of the coparser comparison (times in ms, peaks in MiB, x = shift/gemm).

    Args:
        row: a row from :func:`coparser_rows`.
    """
    return (
        f"{row['part']:8} {row['size']:>3} {row['dim']:>4} | "
        f"{row['fwd_gemm']:9.2f} {row['fwd_shift']:9.2f} {row['x_fwd']:6.1f} | "
        f"{row['fb_gemm']:9.2f} {row['fb_shift']:9.2f} {row['x_fb']:6.1f} | "
        f"{row['mem_fwd_gemm']:11.1f} {row['mem_fwd_shift']:9.1f} {row['x_mem_fwd']:6.1f} | "
        f"{row['mem_fb_gemm']:11.1f} {row['mem_fb_shift']:9.1f} {row['x_mem_fb']:6.1f}"
    )


def coparser_targets(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, bool]] | None:
    """Issue #3's acceptance checks at h = w = 16, c = 768, batch 8 (None if not measured).

    Args:
        rows: rows from :func:`coparser_rows`.

    Returns:
        ``(check, passed)`` pairs: the coparsing step at least 3x faster and 2x smaller in
        peak memory under "gemm", forward and forward+backward; the whole layer faster.
    """
    by_key = {(r["part"], r["size"], r["dim"], r["batch"]): r for r in rows}
    c, layer = by_key.get(("coparse", 16, 768, 8)), by_key.get(("layer", 16, 768, 8))
    if c is None or layer is None:
        return None
    return [
        ("coparse fwd >= 3x faster", c["x_fwd"] >= 3),
        ("coparse fwd+bwd >= 3x faster", c["x_fb"] >= 3),
        ("coparse peak fwd >= 2x smaller", c["x_mem_fwd"] >= 2),
        ("coparse peak fwd+bwd >= 2x smaller", c["x_mem_fb"] >= 2),
        ("layer fwd faster", layer["x_fwd"] > 1),
        ("layer fwd+bwd faster", layer["x_fb"] > 1),
    ]
