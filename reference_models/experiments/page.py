"""The guide page ``docs/guides/experiments.md``, generated from the catalogue.

``python -m reference_models.experiments > docs/guides/experiments.md`` rewrites it; a test
checks the committed page is what :func:`page_text` writes now, so a row that becomes
available (its config fields landed) shows on the page once it is regenerated.
"""

from __future__ import annotations

from .catalogue import PAPERS, Experiment, get_experiment, list_experiments

__all__ = ["experiments_table", "page_text"]

_TITLES = {
    "sadlr": "SADLR (Yang et al., AAAI 2023): RefCOCO val, Swin-B + BERT-base, 480 px",
    "asda": "ASDA (ACM MM 2024): RefCOCO, CLIP ViT-B/16, 416 px; its IoU is a mean IoU",
    "s2rm": "S2RM: RefCOCO val, BERT-base, 512 px; ablations on Swin-T",
    "plugins": "The plug-in matrix: each plug-in on baselines no paper put it on (this project's rows)",
}

_INTRO = """# Every ablation row, by name

Each row of the three papers' ablation tables is an experiment named
`<paper>/<table>/<row>`: the registry model it starts from, the config fields it changes,
the training changes its paper made (ASDA trained Tables 3-5 for 10 epochs) and the
paper's figures for the row. Train one, measure its cost, or build it in Python:

```bash
python -m reference_models.train --experiment sadlr/table4b/64-256 --size base --data refer:/data/refer --vision-weights /weights/swin_base_patch4_window12_384_22k.pth --text-weights /weights/bert-base-uncased
python -m reference_models.train --experiment sadlr/table4b/64-256 --out runs/sadlr-64-256
python -m reference_models.bench flops --experiment sadlr/table3
python -m reference_models.evaluate --checkpoint runs/sadlr-64-256 --threshold 0.5 --json val.json
```

```python
from reference_models.experiments import build_experiment, get_experiment

experiment = get_experiment("sadlr/table4b/64-256")
model = build_experiment(experiment.name, size="tiny")
print(experiment.row, experiment.overrides, model.config.head.hidden)
```

```text
[64, 256] {'refiner_hidden': (64, 256)} (64, 256)
```

`--size tiny` (the default) trains the CPU-sized model; `--size base` the paper's size for
that row (`s2rm_swint` for S2RM's Swin-T ablations). Every flag given on the command line
wins over the experiment's: `--model`, `--epochs`, `--model-arg KEY=VALUE`. The run's
`config.json` records the experiment. `evaluate` prints oIoU by expression length (S2RM
Table III's 1, 2, 3-4 and 5-20 words) beside the usual metrics, and `--threshold` moves the
foreground probability cut.

ASDA's `fixes` table is this project's, not the paper's: the published code's behaviours
(`selector_gradient=none`, `aligner_word_mask=false`, `asda_loss=bce_dice`) beside the
defaults that fix them, and Eq. 10 as written (`aligner_output_bias=false`) beside our logit
offset; no paper printed its rows, so they have no figure.

A row is available when every config field it changes exists; rows that need a component
not built yet, or a module from another paper (CGAN, ACM), say why. The paper's figure is
its headline metric for the row on RefCOCO val (oIoU; ASDA's IoU, a mean IoU), with the
FLOPs where the paper gives them; `get_experiment(name).reported` holds every figure.

This page is generated: `python -m reference_models.experiments > docs/guides/experiments.md`.
"""


def _figure(experiment: Experiment) -> str:
    if not experiment.reported:  # a table of this project's (ASDA's "fixes"), not a paper's
        return "- (not a paper's row)"
    val = experiment.reported["val"]
    metric = next(m for m in ("oIoU", "mIoU", "P@0.5") if m in val)
    text = f"{metric} {100 * val[metric]:.2f}"
    if experiment.reported_gmacs is not None:
        text += f", {experiment.reported_gmacs:.1f} GFLOPs"
    return text


def experiments_table(paper: str) -> str:
    """One paper's experiments as a Markdown table.

    Args:
        paper: ``"sadlr"``, ``"asda"`` or ``"s2rm"``.

    Example:
        >>> print(experiments_table("sadlr").splitlines()[2])
        | 3 | LTS | `lts_base` | `--experiment sadlr/table3/lts` | oIoU 70.84, 133.3 GFLOPs | yes |
    """
    lines = ["| Table | Row | Model (base) | Command | Paper | Available |", "|---|---|---|---|---|---|"]
    for name in list_experiments(paper):
        e = get_experiment(name)
        table = e.table.removeprefix("table")
        status = "yes" if e.available else f"no: {e.reason}"
        lines.append(f"| {table} | {e.row} | `{e.model_name('base')}` | `--experiment {e.name}` | {_figure(e)} | {status} |")
    return "\n".join(lines)


def page_text() -> str:
    """The whole page: the introduction, then one table per paper."""
    sections = [_INTRO]
    for paper in PAPERS:
        count = len(list_experiments(paper))
        available = sum(get_experiment(n).available for n in list_experiments(paper))
        sections.append(f"## {_TITLES[paper]}\n\n{available} of {count} rows available.\n\n{experiments_table(paper)}\n")
    return "\n".join(sections)
