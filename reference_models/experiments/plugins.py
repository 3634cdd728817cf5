"""The plug-in matrix's study rows: each paper's plug-in on baselines no paper put it on.

This project's tables, not a paper's (``reported`` is empty, so a row's verdict is *higher*,
*lower* or *unresolved* against its table's default row). One table per baseline; its
default row is the baseline alone, and each other row changes one slot by its option:

- ``head-sadlr``: SADLR's refiner as the head (``head=sadlr``), on all five baselines (on
  ASDA it reads the aligner's decoded map in place of the mask-coefficient assembly);
- ``decoder-casg``: S2RM's CASG decoder in place of the baseline's own (``decoder=casg``),
  on the Swin baselines LAVT, VLT and LTS (S2RM has it already; ASDA has no pyramid);
- ``neck-coparser``: S2RM's coparser on the coarsest map (``neck=coparser``), on LAVT, VLT
  and LTS.

CASG on VLT reads the pyramid that VLT's first reading modulates (``vlt_response=modulate``,
the tiny VLT's reading), so that row names it too: at the base size it changes VLT's
released reading as well. At the tiny size a part chosen by name takes the tiny model's sizes (``lavt_tiny`` with
``head=sadlr`` is ``lavt_sadlr_tiny``), so ``plugins/lavt/head-sadlr`` trains the model of
``sadlr/table3/lavt-s``.
"""

from __future__ import annotations

from .catalogue import Experiment

__all__ = ["EXPERIMENTS"]

_LABELS = {"lavt": "LAVT", "vlt": "VLT", "lts": "LTS", "s2rm": "S2RM", "asda": "ASDA"}
_SWIN_BASELINES = ("lavt", "vlt", "lts")
_PLUGINS = (
    ("head-sadlr", "+ SADLR head", {"head": "sadlr"}, "SADLR's refiner as the head"),
    ("decoder-casg", "+ CASG decoder", {"decoder": "casg"}, "S2RM's CASG in place of the baseline's decoder"),
    ("neck-coparser", "+ coparser neck", {"neck": "coparser"}, "S2RM's coparser on the stride-32 map"),
)


def _table(baseline: str) -> list[Experiment]:
    label = _LABELS[baseline]
    rows = [Experiment(
        name=f"plugins/{baseline}/alone", paper="plugins", table=baseline, row=label, model=baseline,
        description=f"{label} alone, as registered (default)",
    )]
    for slug, row, overrides, what in _PLUGINS:
        if slug != "head-sadlr" and baseline not in _SWIN_BASELINES:
            continue
        if slug == "decoder-casg" and baseline == "vlt":
            overrides = {**overrides, "vlt_response": "modulate"}
        rows.append(Experiment(
            name=f"plugins/{baseline}/{slug}", paper="plugins", table=baseline, row=f"{label} {row}",
            model=baseline, overrides=dict(overrides), description=f"{label} with {what}",
        ))
    return rows


EXPERIMENTS: tuple[Experiment, ...] = tuple(row for baseline in _LABELS for row in _table(baseline))
