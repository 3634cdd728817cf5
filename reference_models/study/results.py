"""A study's figures: the runs of each row aggregated, each row set against its table's
default row, in the paper and in ours, and ``results.json``.

``results.json`` holds::

    {"settings": {..., "text_blind_ceiling_mIoU": x},
     "rows": [{"experiment", "paper", "table", "row", "default", "reported",
               "metrics": {"oIoU": {"mean", "std", "runs": [...]}, ...},
               "runs": [{"seed", "metrics", "by_iteration"?, "selection"?}, ...],
               "by_iteration": [{"oIoU": {"mean", "std", "runs"}, ...}, ...],   # SADLR rows
               "selection": {"low": {"counts", "entropy", "sentence_sensitivity"},
                             "mid": {...}, "sensitivity_from"}},             # ASDA rows
               "differences": {"oIoU": {"paper", "ours", "interval", "verdict"}, "mIoU": ...}}],
     "skipped": [{"experiment", "reason"}]}

``differences`` sets each row against its table's default row with a 95 % confidence
interval and the verdict it allows (:mod:`~reference_models.study.intervals`).

``runs`` keeps each finished seed's own figures, so a ``results.json`` alone can seed a
later continuation of the study (see :mod:`~reference_models.study.cli`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..experiments import Experiment
from .intervals import difference_interval, verdict
from .plan import DEFAULT_ROW_RULE, StudyPlan, default_row
from .runner import write_atomic

__all__ = [
    "aggregate", "direction", "text_blind_ceiling_of", "run_entry", "row_record", "iterations_of", "selection_of",
    "study_results", "difference", "write_results_json", "runs_of_row", "code_commit", "seed_figures",
    "with_differences", "DIFFERENCE_METRICS",
]

#: The metrics whose differences from the default row ``results.json`` tests.
DIFFERENCE_METRICS = ("oIoU", "mIoU")


def aggregate(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (0 for one run) and the runs themselves.

    Args:
        values: one figure per seed (none gives ``None`` mean and std).

    Example:
        >>> aggregate([0.5, 0.7])
        {'mean': 0.6, 'std': 0.141421, 'runs': [0.5, 0.7]}
        >>> aggregate([0.25])["std"]
        0.0
    """
    runs = [float(v) for v in values]
    if not runs:
        return {"mean": None, "std": None, "runs": []}
    mean = sum(runs) / len(runs)
    std = math.sqrt(sum((v - mean) ** 2 for v in runs) / (len(runs) - 1)) if len(runs) > 1 else 0.0
    return {"mean": round(mean, 6), "std": round(std, 6), "runs": runs}


#: A row's verdict against its paper (see :func:`~reference_models.study.intervals.verdict`).
direction = verdict


def seed_figures(row: Mapping[str, Any], metric: str) -> dict[int, float]:
    """``{seed: figure}`` of one metric over a ``results.json`` row's finished runs.

    Args:
        row: a row of ``results.json`` (older rows without ``runs`` count their n figures
            as seeds 0 .. n-1, as :func:`runs_of_row` does).
        metric: e.g. ``"mIoU"``.

    Example:
        >>> seed_figures({"runs": [{"seed": 3, "metrics": {"mIoU": 0.5}}, {"seed": 4, "metrics": {}}]}, "mIoU")
        {3: 0.5}
    """
    return {seed: run["metrics"][metric] for seed, run in runs_of_row(row).items() if metric in run["metrics"]}


def difference(row: Mapping[str, Any], base: Mapping[str, Any] | None, metric: str) -> dict[str, Any]:
    """A row's differences from its table's default row for one metric, with the test behind its verdict.

    Args:
        row: a row of ``results.json``.
        base: the default row's entry (``None`` when it is not in the study).
        metric: e.g. ``"oIoU"``.

    Returns:
        ``{"paper", "ours", "interval", "verdict"}``: ``ours`` is the difference of the
        means, ``interval`` :func:`~reference_models.study.intervals.difference_interval`'s
        95 % interval (paired by seed, or Welch's; ``None`` with fewer than two seeds a row)
        and ``verdict`` what it says of the paper's difference
        (:func:`~reference_models.study.intervals.verdict`).

    Example:
        >>> def row(name, paper, runs):
        ...     return {"experiment": name, "reported": {"oIoU": paper}, "metrics": {"oIoU": aggregate(runs)},
        ...             "runs": [{"seed": k, "metrics": {"oIoU": v}} for k, v in enumerate(runs)]}
        >>> found = difference(row("t/x", 0.73, [0.40, 0.42, 0.41]), row("t/full", 0.74, [0.50, 0.53, 0.52]), "oIoU")
        >>> found["paper"], found["ours"], found["interval"]["test"], found["verdict"]
        (-0.01, -0.106667, 'paired', 'agrees')
    """
    paper = ours = interval = None
    if base is not None:
        if metric in row["reported"] and metric in base["reported"]:
            paper = round(row["reported"][metric] - base["reported"][metric], 6)
        mine, theirs = row["metrics"].get(metric), base["metrics"].get(metric)
        if mine and theirs and mine["mean"] is not None and theirs["mean"] is not None:
            ours = round(mine["mean"] - theirs["mean"], 6)
            interval = difference_interval(seed_figures(row, metric), seed_figures(base, metric))
    is_default = base is not None and row.get("experiment") == base.get("experiment")
    if is_default:
        interval = None
    return {"paper": paper, "ours": ours, "interval": interval, "verdict": "" if base is None else verdict(paper, interval, is_default=is_default)}


def with_differences(results: Mapping[str, Any], metrics: Sequence[str] = DIFFERENCE_METRICS) -> dict[str, Any]:
    """``results`` with each row's ``differences``: ``{metric: difference(...)}`` against its default row.

    Args:
        results: a ``results.json`` dict (its rows' ``differences``, if any, are recomputed).
        metrics: the metrics tested, those a row has.

    Example:
        >>> rows = [{"experiment": "t/a", "default": "t/b", "reported": {}, "metrics": {"mIoU": aggregate([0.4, 0.5])},
        ...          "runs": [{"seed": 0, "metrics": {"mIoU": 0.4}}, {"seed": 1, "metrics": {"mIoU": 0.5}}]},
        ...         {"experiment": "t/b", "default": "t/b", "reported": {}, "metrics": {"mIoU": aggregate([0.6, 0.8])},
        ...          "runs": [{"seed": 0, "metrics": {"mIoU": 0.6}}, {"seed": 1, "metrics": {"mIoU": 0.8}}]}]
        >>> tested = with_differences({"rows": rows})["rows"]
        >>> tested[0]["differences"]["mIoU"]["verdict"], tested[1]["differences"]["mIoU"]["verdict"]
        ('unresolved', '')
    """
    by_name = {row["experiment"]: row for row in results["rows"]}
    rows = []
    for row in results["rows"]:
        base = by_name.get(row["default"])
        tested = {metric: difference(row, base, metric) for metric in metrics if metric in row["metrics"]}
        rows.append({**row, "differences": tested})
    return {**results, "rows": rows}


def text_blind_ceiling_of(level: int, image_size: int, samples: int, seed: int) -> dict[str, float]:
    """The best text-blind rule's mIoU and oIoU at the study's level and size.

    Args:
        level: the synthetic level.
        image_size: picture side.
        samples: validation expressions scored.
        seed: their seed.
    """
    from ..data.ceiling import text_blind_ceiling

    scores = text_blind_ceiling(level, samples=samples, image_size=image_size, seed=seed)
    return {
        "text_blind_ceiling_mIoU": round(max(s["mIoU"] for s in scores.values()), 6),
        "text_blind_ceiling_oIoU": round(max(s["oIoU"] for s in scores.values()), 6),
    }


def run_entry(record: Mapping[str, Any], seed: int | None = None) -> dict[str, Any]:
    """One finished run as ``results.json`` keeps it: ``{"seed", "metrics", ...}``.

    Args:
        record: the run's evaluation record (:data:`~reference_models.study.runner.EVALUATION_FILE`'s
            content) or, as earlier studies passed them, its metrics alone.
        seed: the run's seed (``None``: unknown).

    Example:
        >>> run_entry({"split": "val", "metrics": {"oIoU": 0.5}, "by_iteration": [{"oIoU": 0.5}]}, 2)
        {'seed': 2, 'metrics': {'oIoU': 0.5}, 'by_iteration': [{'oIoU': 0.5}]}
        >>> run_entry({"oIoU": 0.5})
        {'seed': None, 'metrics': {'oIoU': 0.5}}
    """
    from .runner import MEASUREMENTS

    if not isinstance(record.get("metrics"), Mapping):
        record = {"metrics": record}
    entry = {"seed": seed, "metrics": {k: float(v) for k, v in record["metrics"].items() if isinstance(v, (int, float))}}
    entry.update({name: record[name] for name in MEASUREMENTS if record.get(name)})
    return entry


def iterations_of(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]] | None:
    """Each SADLR iteration's metrics aggregated over the runs that measured them.

    Args:
        runs: :func:`run_entry` dicts; those without ``by_iteration``, or with another
            number of iterations than the first that has them, are left out.

    Returns:
        ``[{metric: aggregate}, ...]`` first iteration first, or ``None`` when no run has them.

    Example:
        >>> runs = [{"by_iteration": [{"oIoU": 0.2}, {"oIoU": 0.4}]}, {"by_iteration": [{"oIoU": 0.3}, {"oIoU": 0.6}]}]
        >>> [entry["oIoU"]["mean"] for entry in iterations_of(runs)]
        [0.25, 0.5]
    """
    measured = [run["by_iteration"] for run in runs if run.get("by_iteration")]
    if not measured:
        return None
    measured = [iterations for iterations in measured if len(iterations) == len(measured[0])]
    return [
        {key: aggregate([iterations[i][key] for iterations in measured]) for key in measured[0][i] if all(key in it[i] for it in measured)}
        for i in range(len(measured[0]))
    ]


def selection_of(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """ASDA's layer choices over the runs that measured them: counts summed, entropy and
    sentence sensitivity aggregated (runs without a figure left out of its aggregate).

    Args:
        runs: :func:`run_entry` dicts.

    Returns:
        ``{"low": {"counts", "entropy", "sentence_sensitivity"}, "mid": ..., "sensitivity_from"}``,
        or ``None`` when no run has a selection.

    Example:
        >>> low = {"counts": {"4": 3, "5": 1}, "entropy": 0.5, "sentence_sensitivity": 0.25}
        >>> both = selection_of([{"selection": {"low": low, "sensitivity_from": "image_id"}}] * 2)
        >>> both["low"]["counts"], both["low"]["entropy"]["mean"], both["sensitivity_from"]
        ({'4': 6, '5': 2}, 0.5, 'image_id')
    """
    from ..evaluation_extras import SELECTION_LEVELS

    measured = [run["selection"] for run in runs if run.get("selection")]
    if not measured:
        return None
    result: dict[str, Any] = {}
    for level in SELECTION_LEVELS:
        entries = [selection[level] for selection in measured if level in selection]
        if not entries:
            continue
        counts: dict[str, int] = {}
        for entry in entries:
            for layer, n in entry["counts"].items():
                counts[layer] = counts.get(layer, 0) + int(n)
        result[level] = {
            "counts": dict(sorted(counts.items(), key=lambda item: int(item[0]))),
            **{key: aggregate([e[key] for e in entries if e.get(key) is not None]) for key in ("entropy", "sentence_sensitivity")},
        }
    result["sensitivity_from"] = measured[0].get("sensitivity_from")
    return result


def _as_entry(run: Mapping[str, Any]) -> dict[str, Any]:
    """A run entry from an entry, an evaluation record (whose ``seed`` is the validation set's) or metrics."""
    is_entry = isinstance(run.get("metrics"), Mapping) and "split" not in run and "checkpoint" not in run
    return run_entry(run, run.get("seed") if is_entry else None)


def row_record(experiment: Experiment, runs: Iterable[Mapping[str, Any]], split: str = "val") -> dict[str, Any]:
    """A row of ``results.json``: the paper's figures and ours aggregated over its runs.

    Args:
        experiment: the row.
        runs: each finished seed, in seed order: :func:`run_entry` dicts (or, as earlier
            callers passed them, metrics alone).
        split: the split of the paper's figures.
    """
    runs = [_as_entry(run) for run in runs]
    metrics = [run["metrics"] for run in runs]
    keys = [k for k in (metrics[0] if metrics else {}) if all(k in m for m in metrics)]
    base = default_row(experiment.paper, experiment.table)
    record = {
        "experiment": experiment.name, "paper": experiment.paper, "table": experiment.table, "row": experiment.row,
        "default": base.name, "reported": dict(experiment.reported.get(split, {})),
        "metrics": {k: aggregate([m[k] for m in metrics]) for k in keys},
        "runs": runs,
    }
    if (iterations := iterations_of(runs)) is not None:
        record["by_iteration"] = iterations
    if (selection := selection_of(runs)) is not None:
        record["selection"] = selection
    return record


def runs_of_row(row: Mapping[str, Any]) -> dict[int, dict[str, Any]]:
    """``{seed: run entry}`` of a ``results.json`` row, for runs whose folders are gone.

    A row written before ``runs`` existed holds only each metric's ``runs`` list: its n
    figures are the seeds 0 .. n-1 (a study runs seed by seed, so a row's finished runs are
    its first seeds).

    Args:
        row: a row of ``results.json``.

    Example:
        >>> runs_of_row({"metrics": {"oIoU": {"mean": 0.5, "std": 0.0, "runs": [0.4, 0.6]}, "mIoU": {"runs": [0.3, 0.5]}}})
        {0: {'seed': 0, 'metrics': {'oIoU': 0.4, 'mIoU': 0.3}}, 1: {'seed': 1, 'metrics': {'oIoU': 0.6, 'mIoU': 0.5}}}
    """
    if isinstance(row.get("runs"), list):
        return {int(run["seed"]): run_entry(run, int(run["seed"])) for run in row["runs"] if isinstance(run, Mapping) and isinstance(run.get("seed"), int)}
    lists = {key: entry.get("runs") for key, entry in (row.get("metrics") or {}).items() if isinstance(entry, Mapping)}
    lists = {key: values for key, values in lists.items() if isinstance(values, list)}
    count = min((len(values) for values in lists.values()), default=0)
    return {seed: {"seed": seed, "metrics": {key: float(values[seed]) for key, values in lists.items()}} for seed in range(count)}


def code_commit() -> str | None:
    """The git commit of the code that runs the study, so ``results.json`` says what it measured.

    Returns:
        The commit's 40 hex digits, followed by ``"+changes"`` when the checkout's
        ``rislayers`` or ``reference_models`` differ from it, or ``None`` outside a git
        checkout (an installed package).

    Example:
        >>> commit = code_commit()
        >>> commit is None or len(commit.split("+")[0]) == 40
        True
    """
    import subprocess

    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=30)
        changes = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--", "rislayers", "reference_models"],
            capture_output=True, text=True, check=True, timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+changes" if changes.stdout.strip() else "")


def study_results(plan: StudyPlan, measured: Mapping[str, Sequence[Mapping[str, Any]]], ceiling: Mapping[str, float]) -> dict[str, Any]:
    """The whole of ``results.json`` for what has been measured so far.

    Args:
        plan: the study's plan.
        measured: ``{experiment name: [each finished seed's run entry]}`` (see
            :func:`row_record`); rows without a finished run are listed with empty metrics.
        ceiling: :func:`text_blind_ceiling_of`'s figures.

    ``settings["commit"]`` is :func:`code_commit`: the code of the invocation that wrote the
    file (runs kept from an earlier ``results.json`` may have run at another).
    """
    return with_differences({
        "settings": {**plan.settings.to_dict(), **ceiling, "default_row_rule": DEFAULT_ROW_RULE, "commit": code_commit()},
        "rows": [row_record(row, measured.get(row.name, []), plan.settings.split) for row in plan.rows],
        "skipped": [{"experiment": row.name, "reason": reason} for row, reason in plan.skipped],
    })


def write_results_json(results: Mapping[str, Any], out: Path) -> Path:
    """Write ``out/results.json`` atomically.

    Args:
        results: :func:`study_results`' dict.
        out: the study folder.
    """
    path = Path(out) / "results.json"
    write_atomic(path, json.dumps(results, indent=2) + "\n")
    return path
