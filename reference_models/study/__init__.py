"""Measured studies of the papers' ablations: ``python -m reference_models.study``.

One concern per module:

- :mod:`~reference_models.study.plan`: :class:`StudySettings`, which rows and seeds a study
  runs, the run folders and each table's default row;
- :mod:`~reference_models.study.runner`: one row and seed, trained (or resumed) and evaluated;
- :mod:`~reference_models.study.results`: aggregation over seeds, differences from the
  default row, direction agreement, ``results.json``;
- :mod:`~reference_models.study.report`: ``results.md`` and ``results.png``;
- :mod:`~reference_models.study.cli`: the command line and the loop over runs.

Example:
    >>> from reference_models.study import QUICK_SETTINGS, plan_study
    >>> [row.row for row in plan_study(["sadlr/table4c"], QUICK_SETTINGS).rows]
    ['sum', 'replace']
"""

from .plan import DEFAULT_SETTINGS, QUICK_SETTINGS, StudyPlan, StudySettings, default_row, plan_study
from .results import aggregate, direction
from .cli import main, run_study

__all__ = [
    "StudySettings", "StudyPlan", "DEFAULT_SETTINGS", "QUICK_SETTINGS", "plan_study", "default_row",
    "aggregate", "direction", "run_study", "main",
]
