"""A study's figures: the runs of each row aggregated, each row set against its table's
default row, in the paper and in ours, and ``results.json``.

``results.json`` holds::

    {"settings": {..., "text_blind_ceiling_mIoU": x},
     "rows": [{"experiment", "paper", "table", "row", "default", "reported",
               "metrics": {"oIoU": {"mean", "std", "runs": [...]}, ...}}],
     "skipped": [{"experiment", "reason"}]}
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..experiments import Experiment
from .plan import DEFAULT_ROW_RULE, StudyPlan, default_row
from .runner import write_atomic

__all__ = ["aggregate", "direction", "text_blind_ceiling_of", "row_record", "study_results", "difference", "write_results_json"]


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


def direction(paper: float | None, ours: float | None, noise: float = 0.0) -> str:
    """Whether our difference from the default row goes the paper's way.

    Args:
        paper: the paper's difference (row minus default row).
        ours: our difference (means).
        noise: our difference's standard error; a smaller ``|ours|`` is only noise.

    Returns:
        ``"agrees"``, ``"disagrees"``, ``"agrees (within noise)"``,
        ``"disagrees (within noise)"``, ``"no difference"`` (ours is exactly 0), or ``""`` when either is missing or the paper's is 0
        (the default row itself).

    Example:
        >>> direction(-0.01, -0.002), direction(-0.01, 0.03), direction(0.01, -0.001, noise=0.02)
        ('agrees', 'disagrees', 'disagrees (within noise)')
    """
    if paper is None or ours is None or paper == 0:
        return ""
    if ours == 0:
        return "no difference"
    verdict = "agrees" if (paper > 0) == (ours > 0) else "disagrees"
    return f"{verdict} (within noise)" if abs(ours) <= noise else verdict


def difference(row: Mapping[str, Any], base: Mapping[str, Any] | None, metric: str) -> dict[str, Any]:
    """A row's differences from its table's default row for one metric.

    Args:
        row: a row of ``results.json``.
        base: the default row's entry (``None`` when it is not in the study).
        metric: e.g. ``"oIoU"``.

    Returns:
        ``{"paper", "ours", "noise", "direction"}``: ``noise`` is the standard error of our
        difference, ``sqrt(s1**2/n1 + s2**2/n2)`` (0 with one seed).

    Example:
        >>> row = {"reported": {"oIoU": 0.73}, "metrics": {"oIoU": {"mean": 0.4, "std": 0.0, "runs": [0.4]}}}
        >>> base = {"reported": {"oIoU": 0.74}, "metrics": {"oIoU": {"mean": 0.5, "std": 0.0, "runs": [0.5]}}}
        >>> difference(row, base, "oIoU")
        {'paper': -0.01, 'ours': -0.1, 'noise': 0.0, 'direction': 'agrees'}
    """
    paper = ours = None
    noise = 0.0
    if base is not None:
        if metric in row["reported"] and metric in base["reported"]:
            paper = round(row["reported"][metric] - base["reported"][metric], 6)
        mine, theirs = row["metrics"].get(metric), base["metrics"].get(metric)
        if mine and theirs and mine["mean"] is not None and theirs["mean"] is not None:
            ours = round(mine["mean"] - theirs["mean"], 6)
            noise = round(math.sqrt(mine["std"] ** 2 / len(mine["runs"]) + theirs["std"] ** 2 / len(theirs["runs"])), 6)
    return {"paper": paper, "ours": ours, "noise": noise, "direction": direction(paper, ours, noise)}


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


def row_record(experiment: Experiment, runs: Iterable[Mapping[str, float]], split: str = "val") -> dict[str, Any]:
    """A row of ``results.json``: the paper's figures and ours aggregated over its runs.

    Args:
        experiment: the row.
        runs: the metrics of each finished seed, in seed order.
        split: the split of the paper's figures.
    """
    runs = list(runs)
    keys = [k for k in (runs[0] if runs else {}) if all(k in r for r in runs)]
    base = default_row(experiment.paper, experiment.table)
    return {
        "experiment": experiment.name, "paper": experiment.paper, "table": experiment.table, "row": experiment.row,
        "default": base.name, "reported": dict(experiment.reported.get(split, {})),
        "metrics": {k: aggregate([r[k] for r in runs]) for k in keys},
    }


def study_results(plan: StudyPlan, measured: Mapping[str, Sequence[Mapping[str, float]]], ceiling: Mapping[str, float]) -> dict[str, Any]:
    """The whole of ``results.json`` for what has been measured so far.

    Args:
        plan: the study's plan.
        measured: ``{experiment name: [metrics of each finished seed]}``; rows without a
            finished run are listed with empty metrics.
        ceiling: :func:`text_blind_ceiling_of`'s figures.
    """
    return {
        "settings": {**plan.settings.to_dict(), **ceiling, "default_row_rule": DEFAULT_ROW_RULE},
        "rows": [row_record(row, measured.get(row.name, []), plan.settings.split) for row in plan.rows],
        "skipped": [{"experiment": row.name, "reason": reason} for row, reason in plan.skipped],
    }


def write_results_json(results: Mapping[str, Any], out: Path) -> Path:
    """Write ``out/results.json`` atomically.

    Args:
        results: :func:`study_results`' dict.
        out: the study folder.
    """
    path = Path(out) / "results.json"
    write_atomic(path, json.dumps(results, indent=2) + "\n")
    return path
