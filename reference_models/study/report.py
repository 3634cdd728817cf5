"""A study's report: ``results.md`` (one table per paper table and metric) and
``results.png`` (our means with error bars beside the paper's figures, and both sets of
differences from the default row)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .results import difference
from .runner import write_atomic

__all__ = ["REPORT_METRICS", "tables_of", "markdown_report", "write_markdown", "write_plot"]

#: The metrics the report shows, in this order, where the paper reports them.
REPORT_METRICS = ("oIoU", "mIoU")


def _percent(value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{100 * value:+.2f}" if signed else f"{100 * value:.2f}"


def tables_of(results: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The rows of ``results.json`` grouped by ``"<paper>/<table>"``, in their order.

    Args:
        results: the study's results.
    """
    tables: dict[str, list[dict[str, Any]]] = {}
    for row in results["rows"]:
        tables.setdefault(f"{row['paper']}/{row['table']}", []).append(row)
    return tables


def _metrics_of(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    reported = {k for row in rows for k in row["reported"]}
    return [m for m in REPORT_METRICS if m in reported] or [m for m in REPORT_METRICS if any(m in r["metrics"] for r in rows)]


def _table_lines(rows: Sequence[Mapping[str, Any]], metric: str) -> list[str]:
    by_name = {row["experiment"]: row for row in rows}
    lines = [
        f"| row | paper {metric} | ours {metric} (mean ± std, n) | paper Δ | ours Δ | direction |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        ours = row["metrics"].get(metric)
        base = by_name.get(row["default"])
        diff = difference(row, base, metric)
        measured = "–" if not ours or ours["mean"] is None else f"{_percent(ours['mean'])} ± {_percent(ours['std'])} ({len(ours['runs'])})"
        label = row["row"] + (" (default)" if row["experiment"] == row["default"] else "")
        lines.append(
            f"| {label} | {_percent(row['reported'].get(metric))} | {measured} | {_percent(diff['paper'], signed=True)} "
            f"| {_percent(diff['ours'], signed=True)} | {diff['direction'] or '–'} |"
        )
    if rows and rows[0]["default"] not in by_name:
        lines.append(f"\nThe default row {rows[0]['default']} is not in this study, so the differences are blank.")
    return lines


def markdown_report(results: Mapping[str, Any]) -> str:
    """``results.md``'s text: the settings, then a table per paper table and metric.

    Args:
        results: the study's results (``results.json``'s dict).
    """
    s = results["settings"]
    out = [
        "# Study results", "",
        f"Generated benchmark level {s['level']}, {s['image_size']} px, tiny models, {s['steps']} steps of batch "
        f"{s['batch_size']}, {s['seeds']} seed(s); evaluated on {s['eval_size']} {s['split']} expressions "
        f"(seed {s['eval_seed']}){' (quick: a smoke test, not a measurement)' if s.get('quick') else ''}.",
        f"Text-blind ceiling at this level: mIoU {_percent(s.get('text_blind_ceiling_mIoU'))}, "
        f"oIoU {_percent(s.get('text_blind_ceiling_oIoU'))}. Figures in percent.", "",
        f"Δ: the row minus its table's default row ({s.get('default_row_rule', '')}). *direction*: whether our Δ has "
        "the paper's sign; *within noise* when |our Δ| is at most its standard error.", "",
    ]
    for table, rows in tables_of(results).items():
        for metric in _metrics_of(rows):
            out += [f"## {table}: {metric}", "", *_table_lines(rows, metric), ""]
    if results.get("skipped"):
        out += ["## Skipped rows", ""] + [f"- {r['experiment']}: {r['reason']}" for r in results["skipped"]] + [""]
    return "\n".join(out)


def write_markdown(results: Mapping[str, Any], out: Path) -> Path:
    """Write ``out/results.md`` atomically.

    Args:
        results: the study's results.
        out: the study folder.
    """
    path = Path(out) / "results.md"
    write_atomic(path, markdown_report(results))
    return path


def _symmetric(axis, values: Sequence[float | None]) -> None:
    """Limits symmetric about 0, so the zero lines of twin axes coincide."""
    top = max([abs(v) for v in values if v is not None] or [0.0]) * 1.15 or 0.01
    axis.set_ylim(-top, top)


def _draw_table(axes, table: str, rows: Sequence[Mapping[str, Any]], metric: str) -> None:
    import numpy as np

    by_name = {row["experiment"]: row for row in rows}
    x = np.arange(len(rows))
    labels = [row["row"] for row in rows]
    ours = [row["metrics"].get(metric, {}).get("mean") for row in rows]
    stds = [row["metrics"].get(metric, {}).get("std") or 0.0 for row in rows]
    paper = [row["reported"].get(metric) for row in rows]
    top, bottom = axes
    twin = top.twinx()
    top.errorbar(x - 0.1, [np.nan if v is None else 100 * v for v in ours], yerr=[100 * s for s in stds], fmt="o", color="C0", capsize=4, label="ours")
    twin.plot(x + 0.1, [np.nan if v is None else 100 * v for v in paper], "s", color="C1", label="paper")
    top.set_ylabel(f"ours {metric} (%)", color="C0")
    twin.set_ylabel(f"paper {metric} (%)", color="C1")
    top.set_title(f"{table}: {metric}")
    diffs = [difference(row, by_name.get(row["default"]), metric) for row in rows]
    twin_bottom = bottom.twinx()
    width = 0.38
    bottom.bar(x - width / 2, [100 * (d["ours"] or 0) for d in diffs], width, yerr=[100 * d["noise"] for d in diffs], color="C0", capsize=3)
    twin_bottom.bar(x + width / 2, [100 * (d["paper"] or 0) for d in diffs], width, color="C1")
    _symmetric(bottom, [100 * ((d["ours"] or 0) + d["noise"]) for d in diffs] + [100 * ((d["ours"] or 0) - d["noise"]) for d in diffs])
    _symmetric(twin_bottom, [100 * (d["paper"] or 0) for d in diffs])
    bottom.axhline(0, color="grey", linewidth=0.8)
    bottom.set_ylabel("ours Δ vs default (pt)", color="C0")
    twin_bottom.set_ylabel("paper Δ (pt)", color="C1")
    bottom.set_xticks(x, labels, rotation=30, ha="right")
    top.set_xticks(x, labels, rotation=30, ha="right")
    top.legend(handles=[*top.get_legend_handles_labels()[0], *twin.get_legend_handles_labels()[0]], loc="best", fontsize="small")


def write_plot(results: Mapping[str, Any], out: Path, metric: str = "oIoU") -> Path:
    """Write ``out/results.png``: per table, our mean ± std beside the paper's figure (two
    axes: the scales differ), and below, both differences from the default row.

    Args:
        results: the study's results.
        out: the study folder.
        metric: the metric drawn.
    """
    # a Figure of its own, not pyplot: no global backend or figure state is touched
    from matplotlib.figure import Figure

    tables = tables_of(results) or {"(no rows)": []}
    width = max(6.0, max(len(rows) for rows in tables.values()) * 1.1 + 3)
    figure = Figure(figsize=(width * len(tables), 7))
    grid = figure.subplots(2, len(tables), squeeze=False)
    for column, (table, rows) in enumerate(tables.items()):
        _draw_table(grid[:, column], table, rows, metric)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    path = Path(out) / "results.png"
    write_atomic(path, buffer.getvalue())
    return path
