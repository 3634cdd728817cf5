"""The S2RM coparser comparison: implementation "gemm" against the literal "shift" (issue #3).

For every map size ``h = w`` and channel count ``c`` the two implementations of
:class:`~rislayers.SpatialRecurrentCoparser` are measured side by side, on the coparsing
step alone (``"coparse"``, Eq. 5-8) and on the whole layer (``"layer"``, Eq. 1-10 and the
fusion): forward and forward+backward time and peak extra memory
(:mod:`reference_models.bench.measure`), and the ratio shift/gemm of each. The ``layers``
section, the ``gpu`` check and ``benchmarks/coparser.py`` all print this measurement.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from .measure import MIB, make_steps, measure_steps

__all__ = [
    "IMPLEMENTATIONS",
    "coparser_steps",
    "coparser_rows",
    "coparser_header",
    "format_coparser_row",
    "coparser_targets",
]

IMPLEMENTATIONS = ("gemm", "shift")
"""The two :class:`~rislayers.SpatialRecurrentCoparser` implementations compared."""


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
