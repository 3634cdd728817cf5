"""What a training run depends on: :class:`TrainConfig`, the papers' recipes, and how a
resumed run reconciles the command line with the configuration it saved."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import parse_overrides
from ..registry import get_config

__all__ = ["DEFAULT_MODEL", "RECIPES", "recipe_for", "TrainConfig", "flag_of", "resume_config"]

DEFAULT_MODEL = "lavt_sadlr_tiny"

#: Each paper's optimisation recipe, by architecture (``sadlr`` also covers LAVT, VLT and
#: LTS); ``tiny`` is the fast CPU recipe of every ``_tiny`` model. :func:`recipe_for` picks one.
RECIPES: dict[str, dict[str, Any]] = {
    # SADLR Sec. 4.1 (and LAVT): AdamW 5e-5, wd 1e-2, poly, 40 epochs, batch 32, 480 px.
    "sadlr": {"optimizer": "adamw", "lr": 5e-5, "weight_decay": 1e-2, "schedule": "poly", "epochs": 40, "batch_size": 32},
    # ASDA Sec. 4.2: Adam 5e-5, 30 epochs, lr x0.1 at epochs 18 and 25, batch 28, 416 px.
    "asda": {"optimizer": "adam", "lr": 5e-5, "weight_decay": 0.0, "schedule": "step", "milestones": (18, 25), "epochs": 30, "batch_size": 28},
    # S2RM Sec. IV: AdamW 5e-5, wd 0.01, poly, 40 epochs, batch 32, 512 px.
    "s2rm": {"optimizer": "adamw", "lr": 5e-5, "weight_decay": 1e-2, "schedule": "poly", "epochs": 40, "batch_size": 32},
    # Embedded default, measured on 2 CPU cores: ~1000 steps of fresh generated samples; one
    # intra-op thread leaves the second core to the data workers (two threads fighting other
    # processes for two cores ran ~10x slower per step here).
    "tiny": {"optimizer": "adamw", "lr": 2e-3, "weight_decay": 1e-2, "schedule": "poly", "epochs": 4, "batch_size": 32, "threads": 1},
}


def recipe_for(model: str) -> dict[str, Any]:
    """The recipe a model trains with by default.

    Args:
        model: a registered model name; ``_tiny`` models get ``RECIPES["tiny"]``, the others
            their architecture's recipe (SADLR's for LAVT, VLT and LTS).
    """
    # the registry check comes first: a "_tiny" suffix alone names no model
    architecture = get_config(model).architecture
    if model.endswith("_tiny"):
        return RECIPES["tiny"]
    return RECIPES.get(architecture, RECIPES["sadlr"])


#: The smallest value of each integer field (``None`` fields are checked once set).
_AT_LEAST = {
    "train_size": 1, "val_size": 1, "image_size": 1, "epochs": 1, "batch_size": 1, "grad_accum": 1, "max_steps": 1,
    "log_every": 1, "threads": 1, "save_every": 0, "workers": 0, "grid_samples": 0, "max_bad_samples": 0, "max_bad_steps": 1,
}


_SCALARS = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "None": (type(None),)}


def _matches(value: Any, annotation: str) -> bool:
    """Whether ``value`` has the type the annotation string names (``int | None``, ``tuple[int, ...]``)."""
    for option in annotation.split(" | "):
        if option.startswith("tuple[") and isinstance(value, tuple):
            item = option[len("tuple["):].split(",")[0]
            if all(_matches(v, item) for v in value):
                return True
        elif isinstance(value, _SCALARS.get(option, ())) and (option == "bool" or not isinstance(value, bool)):
            return True
    return False


def _check_type(name: str, value: Any, annotation: str) -> None:
    if not _matches(value, annotation):
        raise ValueError(f"{flag_of(name)}: expected {annotation}; got {value!r}")


def flag_of(field: str) -> str:
    """The command-line flag that sets a :class:`TrainConfig` field.

    Args:
        field: the field's name.

    Example:
        >>> flag_of("split_by"), flag_of("model_args")
        ('--split-by', '--model-arg')
    """
    return "--model-arg" if field == "model_args" else "--" + field.replace("_", "-")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (saved in ``config.json`` and every checkpoint).

    ``None`` fields take the model's recipe (:data:`RECIPES`). Each field is the
    command-line flag of the same name (``split_by`` is ``--split-by``).

    Attributes:
        model: registry name (see :func:`reference_models.list_models`).
        data: ``"synthetic"`` or ``"refer:ROOT"`` (a REFER-layout folder).
        dataset: ``refcoco``, ``refcoco+``, ``refcocog``, ``refclef`` or ``synthetic`` (REFER data;
            None once resolved for the generated benchmark, which has no such name).
        split_by: the split authors (``unc``, ``umd``, ``google``, ``berkeley``; None once
            resolved for the generated benchmark).
        val_split: the split validated after every epoch.
        level: synthetic difficulty level (None: the standard level, which the resolved
            configuration names).
        train_size: synthetic training samples per epoch.
        val_size: synthetic validation samples.
        image_size: override the model's input size.
        epochs: passes over the training set.
        batch_size: samples per process and micro-batch.
        optimizer: ``"adam"`` or ``"adamw"``.
        lr: initial learning rate.
        weight_decay: weight decay (never on norms, biases and position tables).
        schedule: ``"poly"`` (per step), ``"step"`` (x0.1 at ``milestones``) or ``"constant"``.
        poly_power: exponent of the poly schedule.
        milestones: epochs at which the ``step`` schedule divides the rate by 10.
        amp: autocast precision, ``"none"``, ``"bf16"`` or ``"fp16"`` (with a gradient scaler).
        grad_accum: micro-batches per optimizer step.
        workers: DataLoader worker processes.
        threads: intra-op CPU threads (None: the recipe's; torch's choice when it has none).
        seed: seeds the model, the data order and the synthetic data.
        max_steps: stop after this many optimizer steps.
        save_every: also write ``last.pt`` every this many steps (0: once per epoch).
        log_every: steps between rows of ``metrics.jsonl``.
        grid_samples: validation samples drawn in ``samples.png``.
        text_blind: control run: every sentence replaced by the same constant one.
        vision_weights: local vision checkpoint (timm Swin or open_clip).
        text_weights: local BERT directory or open_clip checkpoint.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        compile: run the model through :func:`torch.compile`.
        sync_bn: convert BatchNorm to SyncBatchNorm when training on several GPUs.
        model_args: ``"KEY=VALUE"`` model config overrides (``--model-arg``).
        checkpoint_minutes: also write ``last.pt`` at the first step after this many minutes
            since the last one (0: never by time).
        max_bad_samples: samples whose pictures cannot be decoded that the run skips (each
            listed in ``bad_samples.jsonl``) before it stops, resumably.
        max_bad_steps: steps in a row with a non-finite loss or gradient, each skipped,
            before the run stops (keeping the last good checkpoint).
        experiment: a paper's ablation row (:func:`reference_models.experiments.list_experiments`).
            Its model (at tiny size while ``model`` is left at its default), its config
            overrides (under ``--model-arg``, which wins) and its training fields (where the
            field is left at its default) apply; an unavailable row is refused.
        freeze: model parts left untrained, as dotted module names (``backbone``,
            ``text_encoder.bert.embeddings``): their parameters get no gradient and are left
            out of the optimizer (``--freeze backbone,text_encoder``).
        backbone_lr_scale: the vision backbone's learning rate as a multiple of ``lr``
            (ASDA's released code: 0.1).
        init_from: a :meth:`~reference_models.base.RISModel.save_pretrained` folder the run
            starts from (``python -m reference_models.convert`` writes one): its
            ``config.json`` is the model's (``model`` left at its default takes the folder's
            model name, another one must equal it; ``--model-arg`` changes fields) and its
            weights are loaded strictly before the first step.
        grad_checkpointing: checkpoint the encoders' blocks and the heavy parts (aligner blocks, CASG stages, refiner iterations)
            (:meth:`~reference_models.base.RISModel.set_grad_checkpointing`): the same
            gradients for less activation memory and more time.
        tf32: TensorFloat-32 for float32 matrix products and convolutions on CUDA
            (``--no-tf32``: full float32); nothing on a CPU.
        fused_optimizer: the fused (single-kernel) Adam/AdamW when the parameters are on
            CUDA (``--no-fused-optimizer``: torch's default implementation).
        cudnn_benchmark: let cuDNN time its algorithms for the fixed input size on the first
            steps (``--no-cudnn-benchmark``).
    """

    model: str = DEFAULT_MODEL
    data: str = "synthetic"
    dataset: str | None = "refcoco"
    split_by: str | None = "unc"
    val_split: str = "val"
    level: int | None = None
    train_size: int = 8000
    val_size: int = 500
    image_size: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    optimizer: str | None = None
    lr: float | None = None
    weight_decay: float | None = None
    schedule: str | None = None
    poly_power: float = 0.9
    milestones: tuple[int, ...] | None = None
    amp: str = "none"
    grad_accum: int = 1
    workers: int = 2
    threads: int | None = None
    seed: int = 0
    max_steps: int | None = None
    save_every: int = 0
    log_every: int = 10
    grid_samples: int = 6
    text_blind: bool = False
    vision_weights: str | None = None
    text_weights: str | None = None
    device: str = "auto"
    compile: bool = False
    sync_bn: bool = True
    model_args: tuple[str, ...] = ()
    checkpoint_minutes: float = 15.0
    max_bad_samples: int = 10
    max_bad_steps: int = 5
    experiment: str | None = None
    freeze: tuple[str, ...] = ()
    backbone_lr_scale: float = 1.0
    init_from: str | None = None
    grad_checkpointing: bool = False
    tf32: bool = True
    fused_optimizer: bool = True
    cudnn_benchmark: bool = True

    def __post_init__(self) -> None:
        # Messages name the command-line flag: that is where most users set these fields.
        for f in dataclasses.fields(self):
            _check_type(f.name, getattr(self, f.name), f.type)
        if self.amp not in ("none", "bf16", "fp16"):
            raise ValueError(f"--amp: expected 'none', 'bf16' or 'fp16'; got {self.amp!r}")
        if self.optimizer not in (None, "adam", "adamw"):
            raise ValueError(f"--optimizer: expected 'adam' or 'adamw'; got {self.optimizer!r}")
        if self.schedule not in (None, "poly", "step", "constant"):
            raise ValueError(f"--schedule: expected 'poly', 'step' or 'constant'; got {self.schedule!r}")
        for name, low in _AT_LEAST.items():
            value = getattr(self, name)
            if value is not None and value < low:
                raise ValueError(f"{flag_of(name)}: expected >= {low}; got {value}")
        # not (x > 0) also refuses NaN, which argparse's float() accepts
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"--lr: expected a positive number; got {self.lr}")
        if not (math.isfinite(self.backbone_lr_scale) and self.backbone_lr_scale >= 0):
            raise ValueError(f"--backbone-lr-scale: expected a number >= 0; got {self.backbone_lr_scale}")
        if any(not part or part.strip(".") != part or " " in part for part in self.freeze):
            raise ValueError(f"--freeze: expected dotted module names such as backbone,text_encoder.embeddings; got {','.join(self.freeze)!r}")
        for name in ("weight_decay", "poly_power"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{flag_of(name)}: expected a number >= 0; got {value}")
        if not (math.isfinite(self.checkpoint_minutes) and self.checkpoint_minutes >= 0):
            raise ValueError(f"--checkpoint-minutes: expected a number >= 0; got {self.checkpoint_minutes}")
        if self.milestones is not None and any(m < 1 for m in self.milestones):
            raise ValueError(f"--milestones: expected epochs >= 1; got {' '.join(map(str, self.milestones))}")
        if not (self.data == "synthetic" or self.data.startswith("refer:")):
            raise ValueError(f"--data: expected 'synthetic' or 'refer:ROOT'; got {self.data!r}")
        if self.experiment is not None:
            _experiment_of(self.experiment)  # refuses an unknown or unavailable row now

    def model_overrides(self) -> dict[str, Any]:
        """The experiment's config overrides, then ``model_args`` (``"key=value"`` strings,
        values JSON or plain text), which win."""
        experiment = {} if self.experiment is None else dict(_experiment_of(self.experiment).overrides)
        return {**experiment, **parse_overrides(self.model_args)}

    def resolved(self) -> TrainConfig:
        """Apply the experiment and ``init_from``'s model name, fill every ``None`` recipe
        field from the model's recipe, and name the data actually used.

        On the generated benchmark the REFER options say nothing (``dataset`` and
        ``split_by`` become None) and ``level`` names the level the run trains at, so a
        run's ``config.json`` records its data, not the REFER defaults.

        Example:
            >>> cfg = TrainConfig().resolved()
            >>> cfg.data, cfg.dataset, cfg.split_by, cfg.level
            ('synthetic', None, None, 1)
        """
        self = _with_init_model(_with_experiment(self))
        recipe = recipe_for(self.model)
        values = {k: v for k, v in recipe.items() if getattr(self, k, None) is None}
        if values.get("milestones") is None and self.milestones is None:
            values["milestones"] = tuple(recipe.get("milestones", ()))
        if self.data == "synthetic":
            from ..data.scenes import DEFAULT_LEVEL

            values.update(dataset=None, split_by=None, level=DEFAULT_LEVEL if self.level is None else self.level)
        return dataclasses.replace(self, **values)

    def to_dict(self) -> dict[str, Any]:
        """The fields as ``{name: value}`` (what a run's ``config.json`` holds; :meth:`from_dict` reads it)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """The configuration :meth:`to_dict` wrote (lists become tuples).

        Args:
            data: ``{field: value}``.

        Raises:
            ValueError: a key that is no field (named), or a value the fields refuse.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        # dropping a setting silently would resume a different run than the one saved
        unknown = sorted(str(k) for k in data if k not in names)
        if unknown:
            raise ValueError(f"unknown settings {', '.join(unknown)} (written by another version, or edited?)")
        values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()}
        # a run saved before a switch existed ran without it
        return cls(**{**_SAVED_BEFORE, **values})


def _experiment_of(name: str):
    """The available experiment ``name``; errors name ``--experiment``."""
    from ..experiments import get_experiment

    try:
        experiment = get_experiment(name)
    except ValueError as err:
        raise ValueError(f"--experiment: {str(err).removeprefix('name: ')}") from None
    if not experiment.available:
        raise ValueError(f"--experiment: {name} is not available: {experiment.reason}")
    return experiment


def _with_experiment(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with its experiment's model and training fields where ``cfg`` leaves them at
    their defaults (the values a user did not choose)."""
    if cfg.experiment is None:
        return cfg
    experiment = _experiment_of(cfg.experiment)
    defaults = TrainConfig()
    values = {k: v for k, v in experiment.train_overrides.items() if getattr(cfg, k) == getattr(defaults, k)}
    if cfg.model == DEFAULT_MODEL:
        values["model"] = experiment.model_name("tiny")
    return dataclasses.replace(cfg, **values)


def init_model_config(folder: str):
    """The :class:`~reference_models.config.ModelConfig` of ``--init-from``'s folder.

    Args:
        folder: a ``save_pretrained`` folder.

    Raises:
        ValueError: the folder holds no readable ``config.json`` (one line, naming the flag).
    """
    from ..config import ModelConfig

    path = Path(folder) / "config.json"
    try:
        return ModelConfig.load(path)
    except (OSError, ValueError) as err:
        raise ValueError(f"--init-from: {err}") from None
    except (TypeError, AttributeError, RecursionError) as err:
        # a file of JSON that is no object of fields ([], null, 5, or nested past Python's stack)
        raise ValueError(f"--init-from: {path}: expected a JSON object of model config fields ({type(err).__name__}: {str(err)[:100]})") from None


def _with_init_model(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with ``--init-from``'s model name where ``--model`` was left at its default."""
    if cfg.init_from is None:
        return cfg
    from ..outputs import check_name

    # the name comes from a file and names the run folder (runs/<name>-<time>): a plain,
    # registered name only, never a path
    name = check_name(init_model_config(cfg.init_from).name, what=f"--init-from: {Path(cfg.init_from) / 'config.json'}'s name")
    try:
        get_config(name)
    except ValueError:
        raise ValueError(f"--init-from: {Path(cfg.init_from) / 'config.json'} names {name!r}, which is no registered model") from None
    if cfg.model == DEFAULT_MODEL and name != DEFAULT_MODEL:
        return dataclasses.replace(cfg, model=name)
    if cfg.model != name:
        raise ValueError(f"--init-from: {cfg.init_from} holds a {name!r} model; --model says {cfg.model!r} (leave --model out)")
    return cfg


# Settings of the machine and of fault handling, not of the run: a resumed run takes them
# from the command line (a run started on a GPU can continue on a CPU, with other worker and
# thread counts; one stopped for bad samples can continue with a higher --max-bad-samples;
# one that ran out of memory can continue with --grad-checkpointing, which leaves the
# gradients as they were). Those not given keep their saved values. ``tf32`` changes the
# arithmetic, so like ``amp`` it stays as saved.
_MACHINE_FIELDS = (
    "device", "workers", "threads", "compile", "checkpoint_minutes", "max_bad_samples", "max_bad_steps",
    "grad_checkpointing", "fused_optimizer", "cudnn_benchmark",
)

# Switches whose command-line flag turns the field off.
_OFF_SWITCHES = {"sync_bn": "--no-sync-bn", "tf32": "--no-tf32", "fused_optimizer": "--no-fused-optimizer", "cudnn_benchmark": "--no-cudnn-benchmark"}

#: The values of the switches added later, for a configuration saved before them.
_SAVED_BEFORE = {"grad_checkpointing": False, "tf32": False, "fused_optimizer": False, "cudnn_benchmark": False}


def _shown(value: Any) -> str:
    """A configuration value as a warning shows it (``none`` for unset or empty)."""
    if isinstance(value, tuple):
        return " ".join(map(str, value)) or "none"
    return "none" if value is None else str(value)


def _given_option(name: str, value: Any, saved: Any) -> str:
    """``--lr 0.1 (saved: 0.002)``; a switch by its flag (``--no-sync-bn on (saved: off)``)."""
    if isinstance(value, bool):
        flag = _OFF_SWITCHES.get(name, flag_of(name))
        on = value != (name in _OFF_SWITCHES)  # the state of the flag, not of the field
        return f"{flag} {'on' if on else 'off'} (saved: {'on' if saved != (name in _OFF_SWITCHES) else 'off'})"
    return f"{flag_of(name)} {_shown(value)} (saved: {_shown(saved)})"


def _given_names(cfg: TrainConfig, given: Iterable[str] | None) -> list[str]:
    if given is not None:
        return list(given)
    defaults = TrainConfig()
    return [f.name for f in dataclasses.fields(cfg) if getattr(cfg, f.name) != getattr(defaults, f.name)]


def _ignored_on_resume(cfg: TrainConfig, saved: TrainConfig, given: Iterable[str]) -> list[str]:
    """The run settings the caller set that the saved configuration overrules."""
    return [
        _given_option(name, getattr(cfg, name), getattr(saved, name))
        for name in given
        if name not in _MACHINE_FIELDS and getattr(cfg, name) != getattr(saved, name)
    ]




def resume_config(cfg: TrainConfig, saved: TrainConfig, given: Iterable[str] | None) -> tuple[TrainConfig, list[str]]:
    """The configuration a resumed run continues with, and the given options it ignores.

    The saved configuration wins, except the settings of the machine and of fault handling
    (``device``, ``workers``, ``threads``, ``compile``, ``grad_checkpointing``,
    ``fused_optimizer``, ``cudnn_benchmark``, ...), which the caller may change; those not
    given keep their saved values.

    Args:
        cfg: the configuration the caller asked for.
        saved: the configuration the run saved in its checkpoint.
        given: the fields of ``cfg`` the caller set (default: those that differ from the
            defaults).

    Returns:
        ``(config, ignored)``: ``ignored`` names each overruled option as its flag, value and
        saved value (``--lr 0.1 (saved: 0.002)``).
    """
    given_names = _given_names(cfg, given)
    ignored = _ignored_on_resume(cfg, saved, given_names)
    return dataclasses.replace(saved, **{n: getattr(cfg, n) for n in _MACHINE_FIELDS if n in given_names}), ignored
