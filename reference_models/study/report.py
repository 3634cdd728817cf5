"""A study's report: ``results.md`` (one table per paper table and metric, plus the SADLR
rows' figures per iteration and the ASDA rows' layer choices) and ``results.png`` (our
means with error bars beside the paper's figures, both sets of differences from the default
row, and our figure per SADLR iteration)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .results import difference
from .runner import write_atomic

__all__ = ["REPORT_METRICS", "VERDICT_RULE", "percent", "interval_cells", "table_lines", "comparison_lines", "tables_of", "iteration_lines", "selection_lines", "markdown_report", "write_markdown", "write_plot"]

#: The metrics the report shows, in this order, where the paper reports them.
REPORT_METRICS = ("oIoU", "mIoU")

#: How a verdict follows from its interval, as the report and the results page state it.
VERDICT_RULE = (
    "*95 % CI*: the confidence interval of our Δ, *paired* (Student's t on the per-seed differences, "
    "n - 1 degrees of freedom) when the row and the default row ran the same seeds, *Welch*'s otherwise; "
    "*p*: the two-sided p-value of a zero difference. *verdict*: *agrees* or *disagrees* with the paper's "
    "sign only when the interval excludes zero, *unresolved* when it holds zero (or a row has one seed); "
    "*higher* / *lower* in tables without paper figures."
)


def percent(value: float | None, *, signed: bool = False) -> str:
    """A fraction as a percentage with two decimals, the way every table of the report shows it.

    Args:
        value: the fraction (``0.5`` is 50 %); ``None`` when there is no figure.
        signed: write a ``+`` before positive values (for differences).

    Returns:
        The figure without a percent sign, or ``"–"`` for ``None``.

    Example:
        >>> percent(0.12345), percent(0.05, signed=True), percent(None)
        ('12.35', '+5.00', '–')
    """
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


def interval_cells(diff: Mapping[str, Any]) -> tuple[str, str]:
    """The 95 % interval of a difference and its test, as the report's tables show them.

    Args:
        diff: :func:`~reference_models.study.results.difference`'s dict.

    Returns:
        ``("[low, high]", "paired, p 0.024")`` in points, or dashes without an interval.

    Example:
        >>> interval = {"test": "welch", "low": -0.012, "high": 0.034, "p": 0.31}
        >>> interval_cells({"interval": interval})
        ('[-1.20, +3.40]', 'Welch, p 0.31')
        >>> interval_cells({"interval": None})
        ('–', '–')
    """
    interval = diff.get("interval")
    if not interval:
        return "–", "–"
    test = "paired" if interval["test"] == "paired" else "Welch"
    return f"[{percent(interval['low'], signed=True)}, {percent(interval['high'], signed=True)}]", f"{test}, p {interval['p']:#.2g}"


def table_lines(rows: Sequence[Mapping[str, Any]], metric: str) -> list[str]:
    """A Markdown table of one paper table's rows for ``metric``: the paper's figure, ours
    (mean ± std over the runs, and their number), both differences from the default row, our
    difference's 95 % interval and its test, and the verdict the interval allows.

    Args:
        rows: one paper table's rows of ``results.json``, in their order.
        metric: e.g. ``"mIoU"``.

    Returns:
        The table's lines, and a note below it when the table's default row is not in the study.

    Example:
        >>> row = {"experiment": "t/sum", "row": "sum", "default": "t/sum", "reported": {"mIoU": 0.76},
        ...        "metrics": {"mIoU": {"mean": 0.5, "std": 0.01, "runs": [0.49, 0.51]}}}
        >>> table_lines([row], "mIoU")[2]
        '| sum (default) | 76.00 | 50.00 ± 1.00 (2) | +0.00 | +0.00 | – | – | – |'
    """
    by_name = {row["experiment"]: row for row in rows}
    lines = [
        f"| row | paper {metric} | ours {metric} (mean ± std, n) | paper Δ | ours Δ | ours Δ, 95 % CI | test | verdict |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for row in rows:
        ours = row["metrics"].get(metric)
        diff = difference(row, by_name.get(row["default"]), metric)
        measured = "–" if not ours or ours["mean"] is None else f"{percent(ours['mean'])} ± {percent(ours['std'])} ({len(ours['runs'])})"
        label = row["row"] + (" (default)" if row["experiment"] == row["default"] else "")
        interval, test = interval_cells(diff)
        lines.append(
            f"| {label} | {percent(row['reported'].get(metric))} | {measured} | {percent(diff['paper'], signed=True)} "
            f"| {percent(diff['ours'], signed=True)} | {interval} | {test} | {diff['verdict'] or '–'} |"
        )
    if rows and rows[0]["default"] not in by_name:
        lines.append(f"\nThe default row {rows[0]['default']} is not in this study, so the differences are blank.")
    return lines


def comparison_lines(rows: Sequence[Mapping[str, Any]], pairs: Sequence[tuple[str, str]], metric: str) -> list[str]:
    """A Markdown table of chosen pairs of rows, each tested like a row against the default:
    ``row - reference`` in the paper and in ours, our 95 % interval, its test and the verdict.

    Args:
        rows: one study's rows of ``results.json``.
        pairs: ``(row, reference)`` experiment names, e.g. SADLR Table 3's
            ``("sadlr/table3/lts-s", "sadlr/table3/lts")``.
        metric: e.g. ``"mIoU"``.

    Raises:
        KeyError: a pair names a row the study does not hold.

    Example:
        >>> def row(name, label, paper, runs):
        ...     return {"experiment": name, "row": label, "default": "t/b", "reported": {"mIoU": paper},
        ...             "metrics": {"mIoU": {"mean": sum(runs) / len(runs), "std": 0.0, "runs": runs}},
        ...             "runs": [{"seed": k, "metrics": {"mIoU": v}} for k, v in enumerate(runs)]}
        >>> rows = [row("t/a", "A", 0.70, [0.40, 0.52]), row("t/b", "B", 0.72, [0.50, 0.60])]
        >>> comparison_lines(rows, [("t/b", "t/a")], "mIoU")[2]
        '| B − A | +2.00 | +9.00 | [-3.71, +21.71] | paired, p 0.070 | unresolved |'
    """
    by_name = {row["experiment"]: row for row in rows}
    lines = [
        f"| comparison | paper Δ {metric} | ours Δ | ours Δ, 95 % CI | test | verdict |",
        "|---|---:|---:|---:|---|---|",
    ]
    for name, reference in pairs:
        row, other = by_name[name], by_name[reference]
        diff = difference(row, other, metric)
        interval, test = interval_cells(diff)
        lines.append(
            f"| {row['row']} − {other['row']} | {percent(diff['paper'], signed=True)} | {percent(diff['ours'], signed=True)} "
            f"| {interval} | {test} | {diff['verdict'] or '–'} |"
        )
    return lines


def _mean_std(entry: Mapping[str, Any] | None, *, scale: float = 100.0, digits: int = 2) -> str:
    if not entry or entry.get("mean") is None:
        return "–"
    return f"{scale * entry['mean']:.{digits}f} ± {scale * entry['std']:.{digits}f}"


def iteration_lines(rows: Sequence[Mapping[str, Any]], metric: str) -> list[str]:
    """A Markdown table of our ``metric`` per SADLR iteration (mean ± std over seeds).

    Args:
        rows: one paper table's rows; those without ``by_iteration`` (no SADLR) show dashes.
        metric: e.g. ``"oIoU"``.

    Returns:
        The table's lines, none when no row has iterations.

    Example:
        >>> row = {"row": "3", "by_iteration": [{"oIoU": {"mean": 0.2, "std": 0.0}}, {"oIoU": {"mean": 0.3, "std": 0.01}}]}
        >>> iteration_lines([row], "oIoU")[2]
        '| 3 | 20.00 ± 0.00 | 30.00 ± 1.00 |'
    """
    depth = max((len(row.get("by_iteration") or []) for row in rows), default=0)
    if not depth:
        return []
    lines = ["| row | " + " | ".join(f"iteration {i}" for i in range(1, depth + 1)) + " |", "|---|" + "---:|" * depth]
    for row in rows:
        iterations = list(row.get("by_iteration") or [])
        cells = [_mean_std(iterations[i].get(metric)) if i < len(iterations) else "–" for i in range(depth)]
        lines.append(f"| {row['row']} | " + " | ".join(cells) + " |")
    return lines


def selection_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """A Markdown table of the ASDA rows' layer choices: each layer's share of the samples,
    the selector's mean entropy (nats) and its sentence sensitivity (percent), mean ± std.

    Args:
        rows: one paper table's rows; those without ``selection`` are left out.

    Returns:
        The table's lines, none when no row has a selection.

    Example:
        >>> level = {"counts": {"4": 3, "6": 1}, "entropy": {"mean": 0.5, "std": 0.1}, "sentence_sensitivity": {"mean": 0.25, "std": 0.0}}
        >>> selection_lines([{"row": "f", "selection": {"low": level}}])[2]
        '| f | 4: 75%, 6: 25% | 0.500 ± 0.100 | 25.00 ± 0.00 | – | – | – |'
    """
    from ..evaluation_extras import SELECTION_LEVELS, layer_shares

    chosen = [row for row in rows if row.get("selection")]
    if not chosen:
        return []
    header = " | ".join(f"{level} layers | {level} entropy (nats) | {level} sensitivity (%)" for level in SELECTION_LEVELS)
    lines = [f"| row | {header} |", "|---|" + "---|---:|---:|" * len(SELECTION_LEVELS)]
    for row in chosen:
        cells = []
        for level in SELECTION_LEVELS:
            entry = row["selection"].get(level)
            if entry is None:
                cells += ["–"] * 3
                continue
            cells += [layer_shares(entry["counts"]), _mean_std(entry.get("entropy"), scale=1.0, digits=3), _mean_std(entry.get("sentence_sensitivity"))]
        lines.append(f"| {row['row']} | " + " | ".join(cells) + " |")
    return lines


def _extra_sections(table: str, rows: Sequence[Mapping[str, Any]]) -> list[str]:
    out: list[str] = []
    for metric in _metrics_of(rows):
        if lines := iteration_lines(rows, metric):
            out += [f"## {table}: {metric} by SADLR iteration", "", "Our mask after each refinement iteration (the last is the prediction).", "", *lines, ""]
    if lines := selection_lines(rows):
        out += [
            f"## {table}: layers chosen by AFS", "",
            "Each layer's share of the validation samples (counts over every seed), the mean entropy of the "
            "selector's probabilities, and the share of pictures whose chosen layer differs between two of their "
            "expressions (sentence sensitivity), mean ± std over seeds.", "", *lines, "",
        ]
    return out


def markdown_report(results: Mapping[str, Any]) -> str:
    """``results.md``'s text: the settings, then a table per paper table and metric.

    Args:
        results: the study's results (``results.json``'s dict).
    """
    s = results["settings"]
    rate = "" if s.get("lr") is None else f" at learning rate {s['lr']:g}"
    out = [
        "# Study results", "",
        f"Generated benchmark level {s['level']}, {s['image_size']} px, tiny models, {s['steps']} steps of batch "
        f"{s['batch_size']}{rate}, {s['seeds']} seed(s); evaluated on {s['eval_size']} {s['split']} expressions "
        f"(seed {s['eval_seed']}){' (quick: a smoke test, not a measurement)' if s.get('quick') else ''}.",
        f"Text-blind ceiling at this level: mIoU {percent(s.get('text_blind_ceiling_mIoU'))}, "
        f"oIoU {percent(s.get('text_blind_ceiling_oIoU'))}. Figures in percent.", "",
        f"Δ: the row minus its table's default row ({s.get('default_row_rule', '')}). {VERDICT_RULE}",
        *([f"Code: commit {s['commit']} (the invocation that wrote this file)."] if s.get("commit") else []), "",
    ]
    for table, rows in tables_of(results).items():
        for metric in _metrics_of(rows):
            out += [f"## {table}: {metric}", "", *table_lines(rows, metric), ""]
        out += _extra_sections(table, rows)
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
    """Our mean ± std per row above, each row's difference from the default below; the
    paper's figures on twin axes (their scale differs), left out when it printed none (our
    own tables), so no empty axis pretends to hold them."""
    import numpy as np

    by_name = {row["experiment"]: row for row in rows}
    x = np.arange(len(rows))
    labels = [row["row"] for row in rows]
    ours = [row["metrics"].get(metric, {}).get("mean") for row in rows]
    stds = [row["metrics"].get(metric, {}).get("std") or 0.0 for row in rows]
    paper = [row["reported"].get(metric) for row in rows]
    diffs = [difference(row, by_name.get(row["default"]), metric) for row in rows]
    with_paper = any(v is not None for v in paper)
    top, bottom = axes
    shift, width = (0.1, 0.38) if with_paper else (0.0, 0.6)
    top.errorbar(x - shift, [np.nan if v is None else 100 * v for v in ours], yerr=[100 * s for s in stds], fmt="o", color="C0", capsize=4, label="ours")
    top.set_ylabel(f"ours {metric} (%)", color="C0")
    top.set_title(f"{table}: {metric}" + ("" if with_paper else " (no paper figures)"))
    low = [100 * ((d["ours"] or 0) - (d["interval"]["low"] if d["interval"] else (d["ours"] or 0))) for d in diffs]
    high = [100 * ((d["interval"]["high"] if d["interval"] else (d["ours"] or 0)) - (d["ours"] or 0)) for d in diffs]
    bottom.bar(x - (width / 2 if with_paper else 0), [100 * (d["ours"] or 0) for d in diffs], width, yerr=[low, high], color="C0", capsize=3)
    _symmetric(bottom, [100 * (d["ours"] or 0) + h for d, h in zip(diffs, high)] + [100 * (d["ours"] or 0) - lo for d, lo in zip(diffs, low)])
    bottom.axhline(0, color="grey", linewidth=0.8)
    bottom.set_ylabel("ours Δ vs default, 95 % CI (pt)", color="C0")
    bottom.set_xticks(x, labels, rotation=30, ha="right")
    top.set_xticks(x, labels, rotation=30, ha="right")
    if not with_paper:
        return
    twin, twin_bottom = top.twinx(), bottom.twinx()
    twin.plot(x + shift, [np.nan if v is None else 100 * v for v in paper], "s", color="C1", label="paper")
    twin.set_ylabel(f"paper {metric} (%)", color="C1")
    twin_bottom.bar(x + width / 2, [100 * (d["paper"] or 0) for d in diffs], width, color="C1")
    _symmetric(twin_bottom, [100 * (d["paper"] or 0) for d in diffs])
    twin_bottom.set_ylabel("paper Δ (pt)", color="C1")
    top.legend(handles=[*top.get_legend_handles_labels()[0], *twin.get_legend_handles_labels()[0]], loc="best", fontsize="small")


def _draw_iterations(axis, table: str, rows: Sequence[Mapping[str, Any]], metric: str) -> None:
    """Our metric after each SADLR iteration, one line (mean ± std) per row."""
    drawn = [row for row in rows if row.get("by_iteration")]
    if not drawn:
        axis.set_axis_off()
        return
    for row in drawn:
        entries = [it.get(metric) or {} for it in row["by_iteration"]]
        means = [float("nan") if e.get("mean") is None else 100 * e["mean"] for e in entries]
        axis.errorbar(range(1, len(entries) + 1), means, yerr=[100 * (e.get("std") or 0.0) for e in entries], marker="o", capsize=3, label=row["row"])
    axis.set_xlabel("SADLR iteration")
    axis.set_ylabel(f"ours {metric} (%)")
    axis.set_title(f"{table}: {metric} by iteration")
    axis.set_xticks(range(1, max(len(row["by_iteration"]) for row in drawn) + 1))
    axis.legend(loc="best", fontsize="small")


def write_plot(results: Mapping[str, Any], out: Path, metric: str = "oIoU") -> Path:
    """Write ``out/results.png``: per table, our mean ± std beside the paper's figure (two
    axes: the scales differ), below it both differences from the default row, and, when a
    row has SADLR iterations, a third panel with our figure after each iteration.

    Args:
        results: the study's results.
        out: the study folder.
        metric: the metric drawn.
    """
    # a Figure of its own, not pyplot: no global backend or figure state is touched
    from matplotlib.figure import Figure

    tables = tables_of(results) or {"(no rows)": []}
    width = max(6.0, max(len(rows) for rows in tables.values()) * 1.1 + 3)
    with_iterations = any(row.get("by_iteration") for rows in tables.values() for row in rows)
    figure = Figure(figsize=(width * len(tables), 10.5 if with_iterations else 7))
    grid = figure.subplots(3 if with_iterations else 2, len(tables), squeeze=False)
    for column, (table, rows) in enumerate(tables.items()):
        _draw_table(grid[:2, column], table, rows, metric)
        if with_iterations:
            _draw_iterations(grid[2, column], table, rows, metric)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    path = Path(out) / "results.png"
    write_atomic(path, buffer.getvalue())
    return path
