"""SADLR's tables (Yang et al., AAAI 2023): Table 3 (three baselines, + CGAN, + SADLR) and
Table 4 (a)-(c) (iterations, kernel structure, query update), all on RefCOCO val at
480x480 with Swin-B and BERT-base.

Decisions:

- Table 4 (a): the paper searched each iteration count's loss weights (the last >= 0.5, the
  rest equal, summing to 1) and publishes only the default's (0.15, 0.15, 0.7). The other
  counts keep 0.7 on the last iteration and share 0.3 equally; one iteration takes 1.0.
  Zero iterations is the baseline itself, LAVT.
- Table 4 (b): ``[a]`` is one dynamic layer of width ``a`` (``refiner_hidden=(a,)``),
  ``[a, b]`` two, and ``[a, b] x k`` repeats the pair (``refiner_repeats=k``).
- The default rows of the tables are one model at the paper's size, but not at the tiny
  size: Table 4 (b)'s [128, 512] row sets ``refiner_hidden=(128, 512)`` while the tiny
  refiner of Table 3's LAVT + S, 4 (a)'s 3 and 4 (c)'s sum has widths (16, 32). At the tiny
  size, compare Table 4 (b)'s rows with its own [128, 512] row, not with the other tables'.
- Table 4 (a): the refiner shares its parameters across iterations, so 1 to 4 iterations
  are models of one size (``lavt_sadlr_tiny``: 1,576,801 parameters each, the refiner's
  35,010); they differ in how often the refiner is applied and in ``loss_weights``.
"""

from __future__ import annotations

from .catalogue import Experiment, figures

__all__ = ["EXPERIMENTS"]

_METRICS = "P@0.5 P@0.6 P@0.7 P@0.8 P@0.9 oIoU mIoU"
_CGAN = "CGAN's module (Luo et al. 2020)"


def _row(table: str, slug: str, row: str, model: str, percents: str, **fields) -> Experiment:
    return Experiment(
        name=f"sadlr/{table}/{slug}", paper="sadlr", table=table, row=row, model=model,
        reported={"val": figures(_METRICS, percents)}, **fields,
    )


def _table3() -> list[Experiment]:
    # (baseline, its FLOPs and row figures; + CGAN; + SADLR), as printed in Table 3
    rows = (
        ("lts", "LTS", 133.3, "82.10 77.51 70.94 58.54 27.14 70.84 71.92",
         143.3, "84.52 80.72 74.89 61.57 29.13 71.39 73.57", 139.4, "85.20 81.79 76.39 64.92 32.28 72.22 74.49"),
        ("vlt", "VLT", 142.6, "83.80 79.96 74.10 60.52 25.60 70.31 72.62",
         152.7, "80.33 76.33 69.94 56.32 22.80 66.41 69.62", 148.6, "85.00 81.85 76.17 62.44 27.81 71.64 73.90"),
        ("lavt", "LAVT", 197.4, "85.49 82.00 76.44 65.65 35.16 73.12 75.30",
         207.5, "85.14 81.37 75.98 64.57 34.35 72.56 75.05", 203.5, "86.90 83.68 78.76 67.93 37.36 74.24 76.52"),
    )
    out = []
    for slug, label, gmacs, base, cgan_gmacs, cgan, sadlr_gmacs, sadlr in rows:
        out += [
            _row("table3", slug, label, slug, base, reported_gmacs=gmacs, description=f"{label}, the baseline"),
            _row("table3", f"{slug}-c", f"{label} + C", slug, cgan, reported_gmacs=cgan_gmacs,
                 description=f"{label} + CGAN", unbuilt=_CGAN),
            _row("table3", f"{slug}-s", f"{label} + S", f"{slug}_sadlr", sadlr, reported_gmacs=sadlr_gmacs,
                 description=f"{label} + SADLR"),
        ]
    return out


def _table4a() -> list[Experiment]:
    weights = {1: (1.0,), 2: (0.3, 0.7), 3: (0.15, 0.15, 0.7), 4: (0.1, 0.1, 0.1, 0.7)}
    percents = {
        0: "85.49 82.00 76.44 65.65 35.16 73.12 75.30",
        1: "85.44 82.01 76.68 65.92 35.86 73.22 75.41",
        2: "86.63 83.63 78.48 67.83 37.04 73.99 76.32",
        3: "86.90 83.68 78.76 67.93 37.36 74.24 76.52",
        4: "86.64 83.12 77.77 68.01 36.87 73.56 76.09",
    }
    out = [_row("table4a", "0", "0", "lavt", percents[0], description="no iteration: the LAVT baseline")]
    for n in (1, 2, 3, 4):
        out.append(_row(
            "table4a", str(n), str(n), "lavt_sadlr", percents[n],
            overrides={"refiner_iters": n, "loss_weights": weights[n]},
            description=f"{n} iteration{'s' if n > 1 else ''}" + (" (default)" if n == 3 else ""),
        ))
    return out


def _table4b() -> list[Experiment]:
    rows = (
        ("128", "[128]", (128,), 1, "86.26 82.84 77.74 67.36 36.69 72.98 75.87"),
        ("256", "[256]", (256,), 1, "86.50 83.27 78.38 67.37 37.16 73.62 76.22"),
        ("64-256", "[64, 256]", (64, 256), 1, "87.00 83.88 78.33 67.75 37.02 73.76 76.34"),
        ("512", "[512]", (512,), 1, "86.33 83.21 78.27 67.53 36.73 73.56 76.02"),
        ("128-512", "[128, 512]", (128, 512), 1, "86.90 83.68 78.76 67.93 37.36 74.24 76.52"),
        ("128-512-x2", "[128, 512] × 2", (128, 512), 2, "86.47 83.27 78.09 67.19 36.87 73.70 76.12"),
    )
    out = []
    for slug, label, hidden, repeats, percents in rows:
        overrides = {"refiner_hidden": hidden} | ({"refiner_repeats": repeats} if repeats > 1 else {})
        out.append(_row(
            "table4b", slug, label, "lavt_sadlr", percents, overrides=overrides,
            description=f"dynamic layers of widths {label}" + (" (default)" if slug == "128-512" else ""),
        ))
    return out


def _table4c() -> list[Experiment]:
    return [
        _row("table4c", "sum", "sum", "lavt_sadlr", "86.90 83.68 78.76 67.93 37.36 74.24 76.52",
             overrides={"refiner_update": "sum"}, description="Q_{i+1} = Q_i + O_i (default)"),
        _row("table4c", "replace", "replace", "lavt_sadlr", "86.52 83.48 78.36 67.09 37.35 73.19 76.14",
             overrides={"refiner_update": "replace"}, description="Q_{i+1} = O_i"),
    ]


EXPERIMENTS: tuple[Experiment, ...] = (*_table3(), *_table4a(), *_table4b(), *_table4c())
