"""Every ablation row of the three papers as a named, buildable experiment.

An :class:`Experiment` is one row of one table: the registry model it starts from, the
:class:`~reference_models.config.ModelConfig` fields it changes, the
:class:`~reference_models.training.config.TrainConfig` fields its paper changed for it, and
the paper's figures for that row. Names read ``"<paper>/<table>/<row>"``, e.g.
``"sadlr/table4b/64-256"``.

Availability is computed each time it is asked, never stored: a row is available when every
field it overrides is a flat option the model configuration reads
(``reference_models.config.LEGACY_DEFAULTS``: ``refiner_iters``, ``aligner_masks`` ...)
and it needs no module this project does not build (CGAN, ACM). A row whose fields land later becomes
available without any change here.

The row of each table that is the paper's full system changes only fields that exist now,
so it runs today; the other rows spell out what they change.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "PAPERS",
    "SIZES",
    "Experiment",
    "list_experiments",
    "get_experiment",
    "select_experiments",
    "build_experiment",
    "register_experiment",
    "figures",
]

#: The papers, in the order :func:`list_experiments` lists them, then ``"plugins"``: this
#: project's study of the plug-ins on the baselines no paper put them on.
PAPERS = ("sadlr", "asda", "s2rm", "plugins")

#: The sizes :func:`build_experiment` takes: ``tiny`` (CPU, random init) or ``base`` (the
#: size the paper ran that row at).
SIZES = ("tiny", "base")


def figures(metrics: str, percents: str) -> dict[str, float]:
    """A row of a paper's table, read as percentages, as ``{metric: fraction}``.

    Args:
        metrics: the metric names, space-separated, in the table's column order.
        percents: the row's figures as printed in the paper (percent), space-separated.

    Example:
        >>> figures("P@0.5 oIoU", "85.49 73.12")
        {'P@0.5': 0.8549, 'oIoU': 0.7312}
    """
    names, values = metrics.split(), percents.split()
    if len(names) != len(values):
        raise ValueError(f"percents: expected {len(names)} figures for {names}; got {len(values)}: {values}")
    # rounded so 0.8549 stays 0.8549, not 0.8549000000000001
    return {name: round(float(value) / 100, 6) for name, value in zip(names, values)}


def _config_fields() -> frozenset[str]:
    """The option names the model configuration takes: the flat ones (``refiner_iters``,
    ``aligner_masks`` ...), the slots (``head``) and the dotted ones (``head.iters``, ``refiner.iters``)."""
    from ..config import CONFIG_CLASSES, LEGACY_DEFAULTS

    names = set(LEGACY_DEFAULTS)
    for cls in CONFIG_CLASSES.values():
        for slot, options in cls.all_slots().items():
            names.add(slot)
            for part in (p for p in options if p is not None):
                prefixes = (slot,) if slot in ("vision", "text") else (slot, part.kind, *part.aliases)
                names.update(f"{prefix}.{name}" for prefix in prefixes for name in part.field_names())
    return frozenset(names)


@dataclass(frozen=True)
class Experiment:
    """One row of one ablation table.

    Args:
        name: ``"<paper>/<table>/<row-slug>"``.
        paper: ``"sadlr"``, ``"asda"`` or ``"s2rm"``.
        table: the table, e.g. ``"table4b"``.
        row: the paper's row label, e.g. ``"[64, 256]"``, ``"(c)"`` or ``"-D2&3"``.
        model: the registry name without its size suffix, e.g. ``"lavt_sadlr"``.
        overrides: the :class:`~reference_models.config.ModelConfig` fields the row changes.
        train_overrides: the :class:`~reference_models.training.config.TrainConfig` fields
            the paper changed for this row (ASDA's 10-epoch Tables 3-5).
        reported: the paper's figures, ``{split: {metric: fraction}}``, with the metric keys
            of :class:`rislayers.RISMetrics` (``"oIoU"``, ``"mIoU"``, ``"P@0.5"``, ...).
        reported_gmacs: the paper's FLOPs for the row (G multiply-accumulates), if given.
        description: what the row is, in the paper's words.
        base_size: the registry size suffix of the paper's own run (``"base"``, or
            ``"swint"`` for S2RM's Swin-T rows).
        unbuilt: a module from another paper the row needs and this project does not build.

    Example:
        >>> from reference_models.experiments import get_experiment
        >>> experiment = get_experiment("sadlr/table4b/64-256")
        >>> experiment.row, experiment.model, experiment.overrides
        ('[64, 256]', 'lavt_sadlr', {'refiner_hidden': (64, 256)})
        >>> experiment.reported["val"]["oIoU"], experiment.available
        (0.7376, True)
    """

    name: str
    paper: str
    table: str
    row: str
    model: str
    overrides: dict[str, Any] = field(default_factory=dict, hash=False)
    train_overrides: dict[str, Any] = field(default_factory=dict, hash=False)
    reported: dict[str, dict[str, float]] = field(default_factory=dict, hash=False)
    reported_gmacs: float | None = None
    description: str = ""
    base_size: str = "base"
    unbuilt: str | None = None

    @property
    def missing_fields(self) -> tuple[str, ...]:
        """The overridden fields :class:`~reference_models.config.ModelConfig` does not have yet."""
        known = _config_fields()
        return tuple(key for key in self.overrides if key not in known)

    @property
    def reason(self) -> str | None:
        """Why the row cannot be built now (``None`` when it can)."""
        if self.unbuilt is not None:
            return f"needs {self.unbuilt}, which this project does not build"
        if self.missing_fields:
            return f"needs ModelConfig fields {', '.join(self.missing_fields)} (not built yet)"
        return None

    @property
    def available(self) -> bool:
        """Whether :func:`build_experiment` can build the row now."""
        return self.reason is None

    def model_name(self, size: str = "tiny") -> str:
        """The registry name the row builds at ``size``.

        Args:
            size: ``"tiny"`` or ``"base"`` (the paper's own size, e.g. ``s2rm_swint``).

        Example:
            >>> from reference_models.experiments import get_experiment
            >>> get_experiment("s2rm/table6/no-d3").model_name("base")
            's2rm_swint'
        """
        if size not in SIZES:
            raise ValueError(f"size: expected one of {SIZES}; got {size!r}")
        return f"{self.model}_{self.base_size if size == 'base' else 'tiny'}"


#: Rows registered by users' modules (:func:`register_experiment`), after the papers'.
_REGISTERED: dict[str, Experiment] = {}


def _catalogue() -> dict[str, Experiment]:
    # imported here: the paper modules import Experiment from this one
    from . import asda, plugins, s2rm, sadlr

    rows = [*sadlr.EXPERIMENTS, *asda.EXPERIMENTS, *s2rm.EXPERIMENTS, *plugins.EXPERIMENTS]
    return {**{experiment.name: experiment for experiment in rows}, **_REGISTERED}


def register_experiment(experiment: Experiment) -> Experiment:
    """Add a row of one's own to the catalogue, so the study tool trains it by name.

    With a part of one's own (:func:`reference_models.register_part`), a module that registers
    ``"mine/lavt/alone"`` and ``"mine/lavt/gated"`` (the latter with ``overrides={"neck":
    "gated_neck"}`` and the former's description marked ``(default)``) is studied by
    ``python -m reference_models.study --import MODULE mine/lavt``.

    Args:
        experiment: the row; its name is ``"<group>/<table>/<row>"`` with ``paper`` and
            ``table`` its first two parts, the group not one of :data:`PAPERS`, the name not
            taken.

    Example:
        >>> row = register_experiment(Experiment(name="mine/lavt/alone", paper="mine", table="lavt", row="LAVT",
        ...                                      model="lavt", description="LAVT alone (default)"))
        >>> get_experiment("mine/lavt/alone").model_name("tiny")
        'lavt_tiny'
        >>> del _REGISTERED["mine/lavt/alone"]
    """
    if not isinstance(experiment, Experiment):
        raise ValueError(f"experiment: expected an Experiment; got {type(experiment).__name__}")
    parts = experiment.name.split("/")
    if len(parts) != 3 or not all(parts) or (parts[0], parts[1]) != (experiment.paper, experiment.table):
        raise ValueError(f"experiment.name: expected '<paper>/<table>/<row>' matching paper and table; got {experiment.name!r}")
    if experiment.paper in PAPERS:
        raise ValueError(f"experiment.paper: {experiment.paper!r} is one of the catalogue's own groups {PAPERS}; choose another")
    if experiment.name in _catalogue():
        raise ValueError(f"experiment.name: {experiment.name!r} is already in the catalogue")
    _REGISTERED[experiment.name] = experiment
    return experiment


def list_experiments(paper: str | None = None) -> list[str]:
    """Every experiment's name, in the papers' table and row order.

    Args:
        paper: only this paper's (``"sadlr"``, ``"asda"`` or ``"s2rm"``); ``None``: all.

    Example:
        >>> list_experiments("sadlr")[:3]
        ['sadlr/table3/lts', 'sadlr/table3/lts-c', 'sadlr/table3/lts-s']
    """
    groups = (*PAPERS, *dict.fromkeys(e.paper for e in _REGISTERED.values()))
    if paper is not None and paper not in groups:
        raise ValueError(f"paper: expected one of {groups}; got {paper!r}")
    return [name for name, experiment in _catalogue().items() if paper in (None, experiment.paper)]


def get_experiment(name: str) -> Experiment:
    """The experiment called ``name``.

    Args:
        name: a name from :func:`list_experiments`; an unknown one raises ``ValueError``
            with the nearest names.

    Example:
        >>> get_experiment("asda/table4/nc16").overrides
        {'aligner_masks': 16}
    """
    catalogue = _catalogue()
    if name not in catalogue:
        close = difflib.get_close_matches(str(name), list(catalogue), n=3)
        hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
        raise ValueError(f"name: unknown experiment {name!r}{hint}; see reference_models.experiments.list_experiments()")
    return catalogue[name]


def select_experiments(patterns: list[str], *, argument: str = "--experiment") -> list[Experiment]:
    """The experiments that a list of names or prefixes (``"sadlr/table3"``, ``"asda"``) names.

    Args:
        patterns: exact names or ``/``-separated prefixes, each naming at least one row.
        argument: what the error message calls the argument.

    Example:
        >>> [e.row for e in select_experiments(["sadlr/table4c"])]
        ['sum', 'replace']
    """
    catalogue = _catalogue()
    chosen: dict[str, Experiment] = {}
    for pattern in patterns:
        prefix = pattern.rstrip("/")
        matches = [e for n, e in catalogue.items() if n == prefix or n.startswith(prefix + "/")]
        if not matches:
            tables = sorted({n.rsplit("/", 1)[0] for n in catalogue} | set(catalogue))
            close = difflib.get_close_matches(prefix, tables, n=3)
            hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
            raise ValueError(f"{argument}: no experiment is called or starts with {pattern!r}{hint}")
        chosen.update((e.name, e) for e in matches)
    return list(chosen.values())


def build_experiment(name: str, size: str = "tiny", **overrides: Any):
    """Build the model of one row (random init unless the overrides name weights files).

    Args:
        name: a name from :func:`list_experiments`.
        size: ``"tiny"`` (CPU) or ``"base"`` (the paper's size for that row).
        **overrides: further :class:`~reference_models.config.ModelConfig` fields, applied
            after the row's own.

    Example:
        >>> model = build_experiment("sadlr/table4a/2", image_size=64)
        >>> model.config.head.iters, model.config.head.loss_weights
        (2, (0.3, 0.7))
    """
    from ..registry import build_model

    experiment = get_experiment(name)
    model_name = experiment.model_name(size)
    if not experiment.available:
        raise ValueError(f"name: experiment {name!r} is not available: {experiment.reason}")
    return build_model(model_name, **{**experiment.overrides, **overrides})
