"""Every ablation row of the three papers, by name: ``"<paper>/<table>/<row>"``.

- :mod:`~reference_models.experiments.catalogue`: :class:`Experiment` and the functions to
  list, look up and build them;
- :mod:`~reference_models.experiments.sadlr`, :mod:`~reference_models.experiments.asda`,
  :mod:`~reference_models.experiments.s2rm`: each paper's tables, with its figures;
- :mod:`~reference_models.experiments.plugins`: this project's rows of the plug-ins on the
  baselines no paper put them on;
- :mod:`~reference_models.experiments.page`: the generated guide page listing them all.

Example:
    >>> from reference_models.experiments import list_experiments, get_experiment
    >>> len(list_experiments("asda"))
    24
    >>> get_experiment("sadlr/table3/lavt-c").reason
    "needs CGAN's module (Luo et al. 2020), which this project does not build"
"""

from . import catalogue
from .catalogue import *  # noqa: F403  (the API is the catalogue module's)

__all__ = list(catalogue.__all__)
