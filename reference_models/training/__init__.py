"""Training reference models: ``python -m reference_models.train``.

One concern per module, in the order a batch meets them:

- :mod:`~reference_models.training.cli`: the flags and ``main``;
- :mod:`~reference_models.training.config`: :class:`TrainConfig` and the papers' recipes;
- :mod:`~reference_models.training.run`: :func:`train`, one run from checks to summary;
- :mod:`~reference_models.training.run_folder`: claiming the folder, ``config.json``, ``metrics.jsonl``;
- :mod:`~reference_models.training.data`: datasets, the resumable sampler;
- :mod:`~reference_models.training.model`: the model of a fresh or resumed run;
- :mod:`~reference_models.training.loop`: forward, loss, backward, accumulation, AMP, DDP, schedule;
- :mod:`~reference_models.training.optim`: optimizer and learning-rate schedule;
- :mod:`~reference_models.training.validation`: validation metrics during training;
- :mod:`~reference_models.training.checkpoints`: what ``last.pt``/``best.pt`` hold, resuming;
- :mod:`~reference_models.training.pictures`: ``curves.png`` and ``samples.png``.
"""

from .config import DEFAULT_MODEL, RECIPES, TrainConfig, recipe_for
from .data import ShardedResumableSampler
from .run import train
from .cli import main  # noqa: E402  (needs train)

__all__ = ["TrainConfig", "RECIPES", "DEFAULT_MODEL", "recipe_for", "train", "main", "ShardedResumableSampler"]
