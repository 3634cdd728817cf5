"""The plug-in matrix: every plug-in part on every baseline, built or refused, with its cost.

Each baseline (``lavt``, ``vlt``, ``lts``, ``s2rm``, ``asda``) is tried with each value of each
slot: ``head`` (``classifier``, ``sadlr``), ``decoder`` (``own``, ``casg``, ``fpn``, ``aligner``)
and ``neck`` (``none``, ``coparser``, ``tile_concat``, ``pwam``). A cell is *built* when the
composed configuration accepts the part (its parameters are counted on the meta device, so at
the base size without allocating it; ``macs=True`` also counts its multiply-accumulates with
:func:`~reference_models.bench.flops.count_macs`, which builds it for real), or *refused* with
the configuration's one-line reason. ``python -m reference_models.models`` prints it;
``--markdown`` writes the docs page's table; ``--import MODULE`` adds the parts of one's own
that the module registers (:func:`~reference_models.register_part`) to their slots.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch

from ..cli import add_import_option, import_modules
from ..registry import registered_parts

__all__ = ["SLOT_VALUES", "BASELINES", "Cell", "plugin_matrix", "format_matrix", "main"]

#: The values each slot is tried with ("own" is the baseline's own part, "none" an empty slot).
SLOT_VALUES = {
    "head": ("classifier", "sadlr"),
    "decoder": ("own", "casg", "fpn", "aligner"),
    "neck": ("none", "coparser", "tile_concat", "pwam"),
}
#: The baselines, by the registry name of their base size.
BASELINES = ("lavt_base", "vlt_base", "lts_base", "s2rm_base", "asda_base")


@dataclass(frozen=True)
class Cell:
    """One baseline with one slot value.

    Attributes:
        baseline: the registry name.
        slot: ``head``, ``decoder`` or ``neck``.
        value: the slot's value.
        built: whether the configuration accepts it.
        params_m: parameters in millions (built cells).
        gmacs: multiply-accumulates in billions at the model's input size (with ``macs=True``).
        reason: why it is refused (refused cells).
    """

    baseline: str
    slot: str
    value: str
    built: bool
    params_m: float | None = None
    gmacs: float | None = None
    reason: str = ""


def _config(baseline: str, slot: str, value: str):
    from ..registry import get_config

    config = get_config(baseline)
    if value == "own":  # through the config, as --model-arg decoder=own goes
        return config.replace(decoder="own")
    current = getattr(config, slot, "absent")
    kind = getattr(current, "kind", None if current is None else "absent")
    if kind == value or (value == "none" and current is None) or (value == "classifier" and kind == "classifier"):
        return config
    return config.replace(**{slot: None if value == "none" else value})


def plugin_matrix(*, baselines=BASELINES, macs: bool = False, slot_values: dict[str, tuple[str, ...]] | None = None) -> list[Cell]:
    """Every baseline with every slot value.

    Args:
        baselines: registry names to try.
        macs: also count each built cell's multiply-accumulates (builds it; slow at base size).
        slot_values: the values tried per slot (default :data:`SLOT_VALUES`; :func:`main`
            adds the kinds of one's own parts that ``--import`` registered).

    Returns:
        One :class:`Cell` per baseline, slot and value.

    Example:
        >>> cells = plugin_matrix(baselines=("lavt_tiny",))
        >>> [(c.slot, c.value) for c in cells if c.built][:3]
        [('head', 'classifier'), ('head', 'sadlr'), ('decoder', 'own')]
    """
    from ..bench.flops import count_macs
    from ..registry import build_from_config

    cells = []
    for baseline in baselines:
        for slot, values in (SLOT_VALUES if slot_values is None else slot_values).items():
            for value in values:
                try:
                    config = _config(baseline, slot, value)
                except ValueError as err:
                    cells.append(Cell(baseline, slot, value, False, reason=str(err)))
                    continue
                with torch.device("meta"):
                    model = build_from_config(config)
                params = sum(p.numel() for p in model.parameters()) / 1e6
                gmacs = None
                if macs:
                    torch.manual_seed(0)
                    with torch.no_grad():
                        gmacs = count_macs(build_from_config(config).eval(), config.image_size, config.text.max_words)
                cells.append(Cell(baseline, slot, value, True, round(params, 2), None if gmacs is None else round(gmacs, 1)))
    return cells


def format_matrix(cells: list[Cell], *, markdown: bool = False) -> str:
    """The matrix as a text table (or a Markdown one), one row per cell.

    Args:
        cells: from :func:`plugin_matrix`.
        markdown: a Markdown table instead of aligned text.
    """
    header = ("baseline", "slot", "value", "built", "params (M)", "GMACs", "why not")
    rows = [
        (c.baseline, c.slot, c.value, "yes" if c.built else "no", "" if c.params_m is None else f"{c.params_m:.2f}",
         "" if c.gmacs is None else f"{c.gmacs:.1f}", c.reason)
        for c in cells
    ]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        lines.append("  ".join(str(v).ljust(w) for v, w in zip(row, widths)) + "  " + row[-1])
    return "\n".join(line.rstrip() for line in lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m reference_models.models [--macs] [--markdown] [--models NAME ...]``.

    Args:
        argv: the command-line arguments (None: ``sys.argv``).
    """
    parser = argparse.ArgumentParser(
        prog="python -m reference_models.models",
        description="Print the plug-in matrix: every plug-in part on every baseline, built or refused, "
        "with its parameters (and, with --macs, its multiply-accumulates at the base size).",
    )
    parser.add_argument("--models", nargs="+", default=list(BASELINES), metavar="NAME", help="baselines (registry names)")
    parser.add_argument("--macs", action="store_true", help="also count MACs (builds every cell: minutes on a CPU)")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table (the docs page's)")
    add_import_option(parser)
    args = parser.parse_args(argv)
    import_modules(args.imports)
    own = registered_parts()
    values = {slot: (*kinds, *own.get(slot, ())) for slot, kinds in SLOT_VALUES.items()}
    print(format_matrix(plugin_matrix(baselines=tuple(args.models), macs=args.macs, slot_values=values), markdown=args.markdown))
    return 0
