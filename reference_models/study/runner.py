"""One row and seed of a study: train it (or finish it) and evaluate it.

A run folder is in one of four states, told apart by the files it holds:

- *finished*: ``summary.json`` and :data:`EVALUATION_FILE`: its figures are read back;
- *trained*: ``summary.json`` only (stopped while evaluating): it is evaluated;
- *interrupted*: ``last.pt`` without ``summary.json``: training resumes from it
  (:func:`~reference_models.training.train` with ``resume=True``);
- *empty* or *broken* (no ``last.pt``: killed before its first checkpoint): it is removed
  and trained afresh.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ..experiments import Experiment
from ..training import TrainConfig, train
from ..training.run_folder import LOCK_FILE, RunLock
from .plan import StudySettings

__all__ = ["EVALUATION_FILE", "run_state", "train_config", "evaluate_run", "run_one", "write_atomic"]

#: The file of a run folder that holds its evaluation, ``{"split", "checkpoint", "samples",
#: "seed", "metrics": {...}}``.
EVALUATION_FILE = "evaluation.json"


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write ``path`` whole or not at all (a temporary file, then a rename).

    Args:
        path: the file.
        data: its content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data.encode() if isinstance(data, str) else data)
    temporary.replace(path)


def run_state(folder: Path) -> str:
    """``"finished"``, ``"trained"``, ``"interrupted"`` or ``"empty"`` (see the module's notes).

    Args:
        folder: the run folder (it need not exist).
    """
    folder = Path(folder)
    if (folder / "summary.json").is_file():
        return "finished" if (folder / EVALUATION_FILE).is_file() else "trained"
    if (folder / "last.pt").is_file():
        return "interrupted"
    return "empty"


def train_config(experiment: Experiment, seed: int, settings: StudySettings) -> TrainConfig:
    """The training configuration of one row and seed.

    The row's own training fields (ASDA's 10 epochs) are overruled by the study's budget:
    every row trains ``settings.steps`` steps, so the rows stay comparable.

    Args:
        experiment: the row (available).
        seed: the run's seed (model, data order and training samples).
        settings: the study's settings.

    Example:
        >>> from reference_models.experiments import get_experiment
        >>> from reference_models.study.plan import QUICK_SETTINGS
        >>> cfg = train_config(get_experiment("sadlr/table4c/replace"), 1, QUICK_SETTINGS)
        >>> cfg.experiment, cfg.seed, cfg.max_steps, cfg.image_size
        ('sadlr/table4c/replace', 1, 2, 64)
    """
    return TrainConfig(
        model=experiment.model_name("tiny"), experiment=experiment.name, data="synthetic", level=settings.level,
        train_size=settings.train_size, val_size=settings.val_size, image_size=settings.image_size,
        epochs=1, max_steps=settings.steps, batch_size=settings.batch_size, seed=seed,
        workers=settings.workers, device=settings.device, grid_samples=0 if settings.quick else 6,
    )


def _clear(folder: Path) -> None:
    """Remove a run folder that holds no checkpoint (refusing one a live run holds)."""
    if (folder / LOCK_FILE).exists():
        RunLock(folder).release()  # raises, naming the process, while another run trains there
    shutil.rmtree(folder)


def evaluate_run(folder: Path, settings: StudySettings) -> dict[str, Any]:
    """Evaluate a run's ``last.pt`` on the study's validation set; writes :data:`EVALUATION_FILE`.

    The final model is scored, not ``best.pt``: choosing the checkpoint on the validation
    set would flatter every row. Every run sees the same expressions (``eval_seed``), so
    seeds differ only in training.

    Args:
        folder: the run folder.
        settings: the study's settings (level, ``eval_size``, ``eval_seed``, device).

    Returns:
        The metrics (fractions), :class:`rislayers.RISMetrics`' keys.
    """
    from torch.utils.data import DataLoader

    from ..base import build_tokenizer
    from ..checkpoint import load_model_and_train_config
    from ..data.samples import collate
    from ..data.synthetic import SyntheticReferDataset
    from ..data.transforms import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD
    from ..devices import pick_device
    from ..evaluate import evaluate

    model, _ = load_model_and_train_config(Path(folder) / "last.pt")
    config = model.config
    mean, std = (CLIP_MEAN, CLIP_STD) if config.vision_encoder == "clip" else (IMAGENET_MEAN, IMAGENET_STD)
    data = SyntheticReferDataset(
        settings.split, level=settings.level, image_size=config.image_size, length=settings.eval_size,
        seed=settings.eval_seed, tokenizer=build_tokenizer(config), mean=mean, std=std, keep_original_mask=True,
    )
    loader = DataLoader(data, batch_size=min(32, settings.eval_size), num_workers=settings.workers, collate_fn=collate)
    metrics = evaluate(model, loader, device=pick_device(settings.device), progress=False)
    metrics = {key: float(value) for key, value in metrics.items() if isinstance(value, (int, float))}
    record = {"split": settings.split, "checkpoint": "last.pt", "samples": settings.eval_size, "seed": settings.eval_seed, "metrics": metrics}
    write_atomic(Path(folder) / EVALUATION_FILE, json.dumps(record, indent=2) + "\n")
    return metrics


def run_one(experiment: Experiment, seed: int, settings: StudySettings, folder: Path) -> tuple[dict[str, float], str]:
    """Bring one run to *finished* from whatever state its folder is in.

    Args:
        experiment: the row.
        seed: the run's seed.
        settings: the study's settings.
        folder: the run folder (see :func:`~reference_models.study.plan.run_folder`).

    Returns:
        ``(metrics, what)``: the evaluation's metrics and what was done (``"kept"``,
        ``"evaluated"``, ``"resumed"`` or ``"trained"``).
    """
    folder = Path(folder)
    state = run_state(folder)
    if state == "finished":
        return json.loads((folder / EVALUATION_FILE).read_text())["metrics"], "kept"
    if state == "trained":
        return evaluate_run(folder, settings), "evaluated"
    cfg = train_config(experiment, seed, settings)
    if state == "interrupted":
        # the machine settings may differ from the killed invocation's; the rest is saved
        train(cfg, folder, resume=True, progress=False, given=("device", "workers"))
        return evaluate_run(folder, settings), "resumed"
    if folder.exists():
        _clear(folder)
    train(cfg, folder, progress=False)
    return evaluate_run(folder, settings), "trained"
