"""Train a reference model: ``python -m reference_models.train``.

With no arguments it trains the embedded default, ``lavt_sadlr_tiny`` on the generated
benchmark, on the CPU, in a few minutes, and writes into ``runs/<model>-<time>/``:

- ``config.json``: the training and model configurations,
- ``metrics.jsonl``: one JSON row per logged step (loss, lr) and per validation,
- ``last.pt`` / ``best.pt``: atomic checkpoints (best by validation oIoU; ``best.pt`` holds
  the weights and configurations only, ``last.pt`` also what resuming needs),
- ``curves.png`` and ``samples.png``: loss/metric curves and a grid of validation samples
  (one column per refinement iteration for SADLR models, as the paper's Fig. 5),
- ``summary.json``: ``{"model", "val": {"oIoU", "mIoU", "P@0.5", ...}, "seconds", ...}``.

The same command trains the papers' systems on real data, across GPUs with ``torchrun``::

    torchrun --nproc_per_node 8 -m reference_models.train --model lavt_sadlr_base \\
        --data refer:/data/refer --dataset refcoco --split-by unc --text-weights /weights/bert-base-uncased \\
        --vision-weights /weights/swin_base_patch4_window12_384_22k.pth --amp bf16

``--resume`` continues a killed run exactly from ``last.pt`` (same data order, same random
numbers), and every flag not given takes the recipe of the model's paper (see :data:`~reference_models.training.RECIPES`).
"""

from __future__ import annotations

from .training import DEFAULT_MODEL, RECIPES, ShardedResumableSampler, TrainConfig, main, recipe_for, train

__all__ = ["TrainConfig", "RECIPES", "DEFAULT_MODEL", "recipe_for", "train", "main", "ShardedResumableSampler"]

if __name__ == "__main__":
    from .cli import run

    raise SystemExit(run(main, "python -m reference_models.train"))
