"""One row and seed of a study: train it (or finish it) and evaluate it.

A run folder is in one of four states, told apart by the files it holds:

- *finished*: ``summary.json`` and :data:`EVALUATION_FILE` holding every measurement its
  model has (:func:`expected_measurements`): its figures are read back;
- *trained*: ``summary.json`` only (stopped while evaluating), or an evaluation written
  before a measurement of its model existed (``by_iteration`` for SADLR, ``selection`` for
  ASDA): it is evaluated again, never retrained;
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

__all__ = [
    "EVALUATION_FILE", "MEASUREMENTS", "run_state", "expected_measurements", "read_evaluation", "train_config",
    "evaluate_run", "run_one", "write_atomic", "record_problem",
]

#: The file of a run folder that holds its evaluation, ``{"split", "checkpoint", "samples",
#: "seed" (the validation set's), "metrics": {...}}``, plus ``"by_iteration"`` (SADLR models)
#: and ``"selection"`` (ASDA models) as :func:`reference_models.evaluate.evaluate` returns them.
EVALUATION_FILE = "evaluation.json"

#: The measurements beside the metrics that an evaluation records when its model has them.
MEASUREMENTS = ("by_iteration", "selection")


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


def expected_measurements(folder: Path) -> tuple[str, ...]:
    """The measurements of :data:`MEASUREMENTS` that the run's model has, read from its ``config.json``.

    ``"by_iteration"`` for a model whose head is SADLR's refiner, ``"selection"`` for an
    ASDA one; none when the folder has no readable ``config.json``. Run folders written
    before the configuration was composed (a flat ``"plugin"`` key) are read too.

    Args:
        folder: the run folder.
    """
    try:
        model = json.loads((Path(folder) / "config.json").read_bytes()).get("model")
    except (OSError, ValueError, AttributeError, RecursionError):  # missing, damaged, deeply nested, not an object
        return ()
    if not isinstance(model, dict):
        return ()
    head = model.get("head")
    refiner = (isinstance(head, dict) and head.get("kind") == "sadlr") or model.get("plugin") == "sadlr"
    has = {"by_iteration": refiner, "selection": model.get("architecture") == "asda"}
    return tuple(name for name in MEASUREMENTS if has[name])


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _selection_problem(selection: Any) -> str | None:
    if not isinstance(selection, dict):
        return f"selection: expected an object; got {type(selection).__name__}"
    for level, entry in selection.items():
        if level == "sensitivity_from":
            continue
        counts = entry.get("counts") if isinstance(entry, dict) else None
        if not isinstance(counts, dict) or not all(_is_number(n) for n in counts.values()):
            return f"selection.{level}: expected {{\"counts\": {{layer: samples}}, ...}}; got {entry!r:.80}"
        for key in ("entropy", "sentence_sensitivity"):
            if entry.get(key) is not None and not _is_number(entry[key]):
                return f"selection.{level}.{key}: expected a number or null; got {entry[key]!r:.40}"
    return None


def record_problem(record: Any) -> str | None:
    """What is wrong with a run's figures (an :data:`EVALUATION_FILE` or a ``results.json`` run), or ``None``.

    A run's figures are ``{"metrics": {name: number}}`` with ``oIoU`` among them, plus
    ``by_iteration`` (a list of ``{name: number}``) and ``selection`` (``{level: {"counts",
    "entropy", "sentence_sensitivity"}}``) when its model has them.

    Args:
        record: the value read from the file.

    Example:
        >>> record_problem({"metrics": {"oIoU": 0.5}, "by_iteration": [{"oIoU": 0.4}]}) is None
        True
        >>> record_problem({"metrics": {"oIoU": "0.5"}})
        "metrics.oIoU: expected a number; got '0.5'"
        >>> record_problem({"metrics": {"oIoU": 0.5}, "by_iteration": {"oIoU": 0.4}})
        'by_iteration: expected a list of {metric: number}; got dict'
    """
    metrics = record.get("metrics") if isinstance(record, dict) else None
    if not isinstance(metrics, dict) or "oIoU" not in metrics:
        return f"expected {{\"metrics\": {{\"oIoU\": ..., ...}}, ...}}; got {type(record).__name__} {str(record)[:60]}"
    for name, value in metrics.items():
        if not _is_number(value):
            return f"metrics.{name}: expected a number; got {value!r:.40}"
    iterations = record.get("by_iteration")
    if iterations is not None and not (
        isinstance(iterations, list) and all(isinstance(it, dict) and all(map(_is_number, it.values())) for it in iterations)
    ):
        return f"by_iteration: expected a list of {{metric: number}}; got {type(iterations).__name__}"
    return None if record.get("selection") is None else _selection_problem(record["selection"])


def read_evaluation(folder: Path) -> dict[str, Any] | None:
    """The run's :data:`EVALUATION_FILE`, or ``None`` when it is missing or unreadable.

    An unreadable one (truncated, nested too deeply, or with figures of the wrong types:
    :func:`record_problem`) leaves the run *trained*, so the study evaluates it again and
    replaces the file: a damaged file never becomes a figure.

    Args:
        folder: the run folder.
    """
    try:
        record = json.loads((Path(folder) / EVALUATION_FILE).read_bytes())
    except (OSError, ValueError, RecursionError):
        return None
    return None if record_problem(record) else record


def run_state(folder: Path) -> str:
    """``"finished"``, ``"trained"``, ``"interrupted"`` or ``"empty"`` (see the module's notes).

    Args:
        folder: the run folder (it need not exist).
    """
    folder = Path(folder)
    if (folder / "summary.json").is_file():
        record = read_evaluation(folder)
        complete = record is not None and all(name in record for name in expected_measurements(folder))
        return "finished" if complete else "trained"
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
        workers=settings.workers, device=settings.device, grid_samples=0 if settings.quick else 6, lr=settings.lr,
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
        The evaluation's record (:data:`EVALUATION_FILE`'s content): ``metrics`` holds
        :class:`rislayers.RISMetrics`' keys (fractions), ``by_iteration`` and ``selection``
        are there when the model has them.
    """
    from torch.utils.data import DataLoader

    from ..base import build_tokenizer
    from ..checkpoint import load_model_and_train_config
    from ..data.samples import collate
    from ..data.synthetic import SyntheticReferDataset
    from ..devices import pick_device
    from ..encoders import pixel_statistics
    from ..evaluate import evaluate

    model, _ = load_model_and_train_config(Path(folder) / "last.pt")
    config = model.config
    mean, std = pixel_statistics(model)
    data = SyntheticReferDataset(
        settings.split, level=settings.level, image_size=config.image_size, length=settings.eval_size,
        seed=settings.eval_seed, tokenizer=build_tokenizer(config), mean=mean, std=std, keep_original_mask=True,
    )
    loader = DataLoader(data, batch_size=min(32, settings.eval_size), num_workers=settings.workers, collate_fn=collate)
    measured = evaluate(model, loader, device=pick_device(settings.device), progress=False)
    metrics = {key: float(value) for key, value in measured.items() if isinstance(value, (int, float))}
    record = {"split": settings.split, "checkpoint": "last.pt", "samples": settings.eval_size, "seed": settings.eval_seed, "metrics": metrics}
    record.update({name: measured[name] for name in MEASUREMENTS if name in measured})
    write_atomic(Path(folder) / EVALUATION_FILE, json.dumps(record, indent=2) + "\n")
    return record


def run_one(experiment: Experiment, seed: int, settings: StudySettings, folder: Path) -> tuple[dict[str, Any], str]:
    """Bring one run to *finished* from whatever state its folder is in.

    Args:
        experiment: the row.
        seed: the run's seed.
        settings: the study's settings.
        folder: the run folder (see :func:`~reference_models.study.plan.run_folder`).

    Returns:
        ``(record, what)``: the evaluation's record (:func:`evaluate_run`) and what was done
        (``"kept"``, ``"evaluated"``, ``"resumed"`` or ``"trained"``).
    """
    folder = Path(folder)
    state = run_state(folder)
    if state == "finished":
        return read_evaluation(folder), "kept"
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
