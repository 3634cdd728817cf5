"""What a study runs: its settings, its rows and seeds, and where each run lives.

A study trains every available row of the named tables at the tiny size, once per seed,
with one set of :class:`StudySettings` for all of them, so the rows differ only in what the
papers' ablations change. Rows the catalogue cannot build yet are kept aside with their
reason (:attr:`StudyPlan.skipped`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..experiments import Experiment, list_experiments, get_experiment, select_experiments

__all__ = ["StudySettings", "DEFAULT_SETTINGS", "QUICK_SETTINGS", "StudyPlan", "plan_study", "row_slug", "run_folder", "default_row", "DEFAULT_ROW_RULE"]


@dataclass(frozen=True)
class StudySettings:
    """The settings every run of a study shares (recorded in ``results.json``).

    Attributes:
        level: the generated benchmark's difficulty level.
        steps: optimizer steps per run (one epoch of fresh samples, so the schedule ends there).
        image_size: the models' input side in pixels.
        batch_size: samples per step.
        val_size: validation samples the training run scores itself on at its end.
        eval_size: validation expressions each run is evaluated on (the same for every run).
        eval_seed: the seed of that validation set (every seed's model sees the same one).
        seeds: runs per row, seeds ``0 .. seeds - 1``.
        workers: DataLoader worker processes.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ...
        split: the split the paper's figure is read from and ours evaluated on.
        quick: the smoke size (``--quick``).
        lr: the learning rate of every run (``None``: the tiny recipe's).
    """

    level: int = 1
    steps: int = 1000
    image_size: int = 64
    batch_size: int = 32
    val_size: int = 100
    eval_size: int = 500
    eval_seed: int = 0
    seeds: int = 3
    workers: int = 2
    device: str = "auto"
    split: str = "val"
    quick: bool = False
    lr: float | None = None

    def __post_init__(self) -> None:
        for name in ("level", "steps", "image_size", "batch_size", "val_size", "eval_size", "seeds"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"--{name.replace('_', '-')}: expected an integer >= 1; got {value!r}")
        rate = self.lr
        if rate is not None and (isinstance(rate, bool) or not (isinstance(rate, (int, float)) and math.isfinite(rate) and rate > 0)):
            raise ValueError(f"--lr: expected a positive number; got {self.lr!r}")
        if self.eval_seed < 0 or self.workers < 0:
            raise ValueError(f"--eval-seed/--workers: expected integers >= 0; got {self.eval_seed}, {self.workers}")

    @property
    def train_size(self) -> int:
        """Training samples, exactly ``steps`` batches, so each run is one epoch of fresh samples."""
        return self.steps * self.batch_size

    def to_dict(self) -> dict[str, Any]:
        """The settings as ``results.json`` records them (``train_size`` included)."""
        return {**dataclasses.asdict(self), "train_size": self.train_size, "size": "tiny"}

    def run_identity(self) -> dict[str, Any]:
        """The settings a finished run depends on: a study folder keeps them fixed.

        The number of seeds, the workers and the device may change between invocations
        (more seeds add runs; the others do not change what a run computes).
        """
        return {k: v for k, v in self.to_dict().items() if k not in ("seeds", "workers", "device")}


#: The full study's settings, level 1 (the easiest level, where a tiny model learns to read
#: the sentence within a CPU-sized budget), 1000 steps of batch 32 (the tiny recipe's
#: measured budget), 64 px, 3 seeds.
DEFAULT_SETTINGS = StudySettings()

#: The smoke size of ``--quick``, two steps of four samples, a handful of evaluations, one
#: seed. It checks the machinery, not the papers.
QUICK_SETTINGS = StudySettings(steps=2, batch_size=4, val_size=4, eval_size=8, seeds=1, workers=0, quick=True)


@dataclass(frozen=True)
class StudyPlan:
    """The rows a study trains, the rows it skips and the settings it uses.

    Attributes:
        rows: the available experiments, in the catalogue's order.
        skipped: ``(experiment, reason)`` for each named row that cannot be built now.
        settings: the shared :class:`StudySettings`.
    """

    rows: tuple[Experiment, ...]
    skipped: tuple[tuple[Experiment, str], ...]
    settings: StudySettings

    def runs(self) -> list[tuple[Experiment, int]]:
        """Every ``(experiment, seed)`` of the study, seed by seed (all rows of seed 0 first,
        so a study stopped early has one measurement of every row before it has two of any)."""
        return [(row, seed) for seed in range(self.settings.seeds) for row in self.rows]


def plan_study(names: list[str], settings: StudySettings = DEFAULT_SETTINGS) -> StudyPlan:
    """The plan of a study over experiment names or table prefixes.

    Args:
        names: experiment names (``"sadlr/table4c/sum"``) or prefixes (``"sadlr/table4c"``,
            ``"asda"``); an unknown one raises ``ValueError`` naming ``NAME`` with the
            nearest names of the catalogue.
        settings: the shared settings.

    Example:
        >>> plan = plan_study(["sadlr/table4c"], QUICK_SETTINGS)
        >>> [row.name for row in plan.rows], len(plan.runs())
        (['sadlr/table4c/sum', 'sadlr/table4c/replace'], 2)
    """
    if not names:
        raise ValueError("NAME: expected at least one experiment name or table prefix (e.g. sadlr/table4c)")
    chosen = select_experiments(list(names), argument="NAME")
    order = {name: index for index, name in enumerate(list_experiments())}
    chosen.sort(key=lambda e: order[e.name])
    rows = tuple(e for e in chosen if e.available)
    skipped = tuple((e, e.reason) for e in chosen if not e.available)
    return StudyPlan(rows=rows, skipped=skipped, settings=settings)


def row_slug(experiment: Experiment) -> str:
    """The folder name of a row's runs: its name with ``/`` as ``-``.

    Args:
        experiment: the row.

    Example:
        >>> row_slug(get_experiment("sadlr/table4b/64-256"))
        'sadlr-table4b-64-256'
    """
    return experiment.name.replace("/", "-")


def run_folder(out: Path, experiment: Experiment, seed: int) -> Path:
    """``out/runs/<row-slug>/seed-<seed>``: the run folder of one row and seed.

    Args:
        out: the study folder.
        experiment: the row.
        seed: the run's seed.
    """
    return Path(out) / "runs" / row_slug(experiment) / f"seed-{seed}"


#: How :func:`default_row` picks each table's reference row (recorded in ``results.json``).
DEFAULT_ROW_RULE = "the row marked (default) or (full), or called full; else the table's last row"


def _is_marked_default(experiment: Experiment) -> bool:
    slug = experiment.name.rsplit("/", 1)[1]
    text = experiment.description.lower()
    return "(default)" in text or "(full)" in text or slug == "full"


def default_row(paper: str, table: str) -> Experiment:
    """The row of a table that the others are compared with: the paper's default/full system.

    The rule: the row the catalogue marks ``(default)`` or ``(full)`` in its description, or
    whose slug is ``full``; failing that, the table's last row (the papers print their full
    system last: SADLR Table 3's LAVT + SADLR, S2RM Table 2's Swin-B, S2RM Table 7's S2RM +
    CASG).

    Args:
        paper: ``"sadlr"``, ``"asda"`` or ``"s2rm"``.
        table: the table, e.g. ``"table4a"``.

    Example:
        >>> default_row("sadlr", "table4a").name, default_row("s2rm", "table7").name
        ('sadlr/table4a/3', 's2rm/table7/s2rm-casg')
    """
    rows = [get_experiment(n) for n in list_experiments(paper) if n.split("/")[1] == table]
    if not rows:
        raise ValueError(f"table: {paper} has no table {table!r}")
    marked = [row for row in rows if _is_marked_default(row)]
    return marked[0] if marked else rows[-1]

