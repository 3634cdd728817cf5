"""``bench latency``: forward time of whole models, each plug-in beside its baseline.

One forward pass (batch 1, the paper's input size, ``torch.inference_mode``) of every
``_base`` (or ``--size tiny``) model; each plug-in system is measured in the same run as
its baseline, the two interleaved (A B, B A, ...), and stands beside it as a ratio.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Sequence

import torch

from ..devices import resolve_device
from .measure import MIB, autocast, interleaved_seconds, peak_bytes
from .models import build_on, model_inputs
from .report import optional

__all__ = ["LATENCY_SYSTEMS", "latency_models", "latency_table", "format_latency"]

LATENCY_SYSTEMS = ("lavt", "lavt_sadlr", "vlt", "vlt_sadlr", "lts", "lts_sadlr", "asda", "s2rm", "s2rm_sadlr")
"""The systems the ``latency`` section measures by default (with ``_base`` or ``_tiny``)."""


def _baseline_of(name: str) -> str | None:
    """The baseline a plug-in system is compared with (``lavt_sadlr_base`` -> ``lavt_base``)."""
    return name.replace("_sadlr", "") if "_sadlr" in name else None


def latency_models(size: str = "base") -> list[str]:
    """The default ``latency`` models of a size (registered or not: missing ones are skipped).

    Args:
        size: ``"base"`` or ``"tiny"``.

    Example:
        >>> latency_models("tiny")[:2]
        ['lavt_tiny', 'lavt_sadlr_tiny']
    """
    names = [f"{system}_{size}" for system in LATENCY_SYSTEMS]
    if size == "base":
        names.append("s2rm_swint")
    return names


def _latency_groups(names: Sequence[str], available: set[str]) -> tuple[list[list[str]], list[str]]:
    """Group each plug-in with its baseline (added when registered); report unknown names."""
    groups: dict[str, list[str]] = {}
    skipped = []
    for name in names:
        if name not in available:
            skipped.append(name)
            continue
        base = _baseline_of(name)
        key = base if base in available else name
        group = groups.setdefault(key, [])
        if key != name and key not in group:
            group.insert(0, key)
        if name not in group:
            group.append(name)
    return list(groups.values()), skipped


def _prepare_model(model: torch.nn.Module, device: torch.device, *, channels_last: bool, compile: bool):
    model = model.eval().to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return torch.compile(model) if compile else model


def _group_steps(group: Sequence[str], device: torch.device, dtype: str, *, channels_last: bool, compile: bool):
    """One inference step per model of a group, with each model's config and size (M params)."""
    from ..registry import get_config

    steps, configs, params = {}, {}, {}
    for name in group:
        torch.manual_seed(0)
        model = build_on(get_config(name), device)
        params[name] = sum(p.numel() for p in model.parameters()) / 1e6
        configs[name] = model.config
        prepared = _prepare_model(model, device, channels_last=channels_last, compile=compile)
        inputs = model_inputs(model.config, 1, device, channels_last=channels_last)

        def step(model=prepared, inputs=inputs):
            with torch.inference_mode(), autocast(device, dtype):
                model(*inputs)

        steps[name] = step
    return steps, configs, params


def _latency_row(name: str, times: dict[str, list[float]], config, params_m: float, peak: float | None) -> dict:
    """A table row from the group's round times; a plug-in carries its ratios to the baseline."""
    own = times[name]
    row = {
        "model": name,
        "baseline": None,
        "input": config.image_size,
        "params_m": round(params_m, 2),
        "median_ms": round(statistics.median(own) * 1e3, 2),
        "min_ms": round(min(own) * 1e3, 2),
        "max_ms": round(max(own) * 1e3, 2),
        "times_ms": [round(t * 1e3, 2) for t in own],
        "ratio": None,
        "paired_ratio": None,
        "peak_mib": None if peak is None else round(peak / MIB, 1),
    }
    base = _baseline_of(name)
    if base in times:
        row["baseline"] = base
        row["ratio"] = round(statistics.median(own) / statistics.median(times[base]), 3)
        # Per-round ratios cancel drift that is slower than one round.
        row["paired_ratio"] = round(statistics.median(t / b for t, b in zip(own, times[base])), 3)
    return row


def latency_table(
    names: Sequence[str] | None = None,
    *,
    size: str = "base",
    device: str | torch.device = "cpu",
    dtype: str = "float32",
    channels_last: bool = False,
    compile: bool = False,
    repeats: int = 5,
    warmup: int = 1,
    memory: bool = True,
    progress: bool = True,
) -> tuple[list[dict], list[str]]:
    """Forward latency at batch 1 and the paper's input size; plug-ins beside their baselines.

    Args:
        names: registry names (default :func:`latency_models` of ``size``); a plug-in's
            baseline is added when it is registered, so that the ratio is measured in the
            same run.
        size: ``"base"`` or ``"tiny"``, for the default names.
        device: ``"cpu"`` or ``"cuda"``.
        dtype: ``"float32"`` or ``"bf16"`` (autocast).
        channels_last: convert the models and images to channels-last memory format.
        compile: wrap each model in ``torch.compile`` (default settings); warm-up compiles.
        repeats: timed rounds (each round runs every model of a group once).
        warmup: untimed runs of each model first (at least one with ``compile``).
        memory: measure peak extra memory with one more forward per model.
        progress: report each group's time on stderr.

    Returns:
        ``(rows, skipped)``: one dict per measured model, and the names not registered.
    """
    from ..registry import list_models

    device = resolve_device(str(device))
    names = list(names) if names else latency_models(size)
    groups, skipped = _latency_groups(names, set(list_models()))
    if compile:
        warmup = max(1, warmup)
    rows = []
    for group in groups:
        start = time.perf_counter()
        steps, configs, params = _group_steps(group, device, dtype, channels_last=channels_last, compile=compile)
        times = interleaved_seconds(steps, warmup=warmup, repeats=repeats, device=device)
        for name in group:
            peak = peak_bytes(steps[name], device) if memory else None
            rows.append(_latency_row(name, times, configs[name], params[name], peak))
        del steps
        if progress:
            print(f"  measured {', '.join(group)} in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return rows, skipped


def format_latency(rows: list[dict]) -> str:
    """The ``latency`` table: times, ratios to the baseline and peak memory of each model.

    Args:
        rows: rows from :func:`latency_table`.
    """
    header = (
        f"{'model':<18} {'input':>5} {'params(M)':>9} {'median ms':>10} {'min ms':>9} {'max ms':>9} "
        f"{'vs baseline':>11} {'paired':>7} {'peak MiB':>9}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['model']:<18} {r['input']:>5} {r['params_m']:>9.1f} {r['median_ms']:>10.1f} {r['min_ms']:>9.1f} "
            f"{r['max_ms']:>9.1f} {optional(r['ratio'], '>11.3f'):>11} {optional(r['paired_ratio'], '>7.3f'):>7} "
            f"{optional(r['peak_mib'], '>9.1f'):>9}"
        )
    return "\n".join(lines)
