"""The tables of the docs page "Results on the generated benchmark", from the recorded studies.

The recorded studies live in ``docs/results/<paper>-<table>.json`` (with the ``.md`` and
``.png`` a study writes). The page ``docs/guides/results.md`` carries a written reading of
each; its tables are rendered from the JSON files between marker comments, so the figures
on the page are always the recorded ones::

    <!-- study: s2rm-table4 -->
    ... rendered here ...
    <!-- end study -->

A block may name pairs of rows to test against each other besides the default row, as
``row:reference`` experiment-name tails within the study's table (SADLR Table 3's
baselines with and without the refiner)::

    <!-- study: sadlr-table3 compare: lts-s:lts vlt-s:vlt -->

``python -m reference_models.study.page`` re-renders every block in place (a test checks
that the page is current).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .report import comparison_lines, percent, table_lines, tables_of

__all__ = ["RESULTS_DIR", "PAGE", "render_study", "render_page", "refresh_recorded", "main"]

_ROOT = Path(__file__).resolve().parents[2]
#: Where the recorded studies are committed.
RESULTS_DIR = _ROOT / "docs" / "results"
#: The page whose tables are rendered.
PAGE = _ROOT / "docs" / "guides" / "results.md"

_BLOCK = re.compile(r"(<!-- study: (?P<name>[\w-]+)(?: compare: (?P<pairs>[\w:. -]+?))? -->\n)(?P<body>.*?)(<!-- end study -->)", re.S)


def _rate(settings: Mapping[str, Any]) -> str:
    return "" if settings.get("lr") is None else f" at learning rate {settings['lr']:g}"


def _settings_line(settings: Mapping[str, Any], runs: int) -> str:
    return (
        f"Level {settings['level']}, {settings['image_size']} px, {settings['steps']} steps of batch "
        f"{settings['batch_size']}{_rate(settings)}, {runs} runs; evaluated on {settings['eval_size']} validation expressions. "
        f"Text-blind ceiling: mIoU {percent(settings.get('text_blind_ceiling_mIoU'))}. "
        f"Figures in percent; Δ is the row minus the table's default row, tested as the page's introduction says; "
        f"{{{{download}}}}`JSON <../results/{{name}}.json>`, {{{{download}}}}`every metric <../results/{{name}}.md>`."
    )


def _pairs(rows: list[Mapping[str, Any]], spec: str | None) -> list[tuple[str, str]]:
    """``"a:b c:d"`` as full experiment names, each tail completed with the rows' table prefix."""
    if not spec:
        return []
    prefix = rows[0]["experiment"].rsplit("/", 1)[0] + "/"
    return [(prefix + a, prefix + b) for a, b in (pair.split(":") for pair in spec.split())]


def render_study(name: str, results: Mapping[str, Any], metric: str = "mIoU", compare: str | None = None) -> str:
    """The block of one recorded study: its settings, one table per paper table, the
    comparisons asked for, its picture.

    Args:
        name: the file stem, e.g. ``"s2rm-table4"``.
        results: the study's ``results.json``.
        metric: the metric of the tables (every paper reports ``mIoU`` or can be compared on it).
        compare: pairs of rows to test against each other, ``"row:reference ..."``
            (name tails within the study's first table).

    Example:
        >>> row = {"experiment": "sadlr/table4c/sum", "paper": "sadlr", "table": "table4c", "row": "sum",
        ...        "default": "sadlr/table4c/sum", "reported": {"mIoU": 0.76},
        ...        "metrics": {"mIoU": {"mean": 0.5, "std": 0.01, "runs": [0.49, 0.51]}}}
        >>> settings = {"level": 1, "image_size": 64, "steps": 500, "batch_size": 16, "eval_size": 500,
        ...             "text_blind_ceiling_mIoU": 0.22}
        >>> print(render_study("sadlr-table4c", {"settings": settings, "rows": [row]}).splitlines()[4])
        | sum (default) | 76.00 | 50.00 ± 1.00 (2) | +0.00 | +0.00 | – | – | – |
    """
    runs = sum(len(row["metrics"].get(metric, {}).get("runs", [])) for row in results["rows"])
    lines = [_settings_line(results["settings"], runs).format(name=name), ""]
    for rows in tables_of(results).values():
        lines += table_lines(rows, metric)
        lines.append("")
    if pairs := _pairs(results["rows"], compare):
        lines += comparison_lines(results["rows"], pairs, metric)
        lines.append("")
    lines.append(f"![{name}](../results/{name}.png)")
    return "\n".join(lines) + "\n"


def render_page(text: str, results_dir: Path = RESULTS_DIR) -> str:
    """``text`` with every study block re-rendered from ``results_dir/<name>.json``.

    Args:
        text: the page's markdown.
        results_dir: the folder of the recorded studies.

    Raises:
        FileNotFoundError: a block names a study that has no JSON file.
    """

    def block(match: re.Match) -> str:
        path = Path(results_dir) / f"{match['name']}.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the page shows study {match['name']!r}, which has no recorded results")
        results = json.loads(path.read_text())
        return match.group(1) + render_study(match["name"], results, compare=match["pairs"]) + match.group(5)

    return _BLOCK.sub(block, text)


def refresh_recorded(name: str, results_dir: Path = RESULTS_DIR) -> list[Path]:
    """Rewrite a recorded study's tests (``differences``), its ``.md`` and its ``.png`` from its JSON.

    For a ``results.json`` copied in from a study run by older code (without
    ``differences``, or with another report format): the runs and settings are kept.

    Args:
        name: the file stem, e.g. ``"s2rm-table5"``.
        results_dir: the folder of the recorded studies.

    Returns:
        The three files written.
    """
    import tempfile

    from .report import markdown_report, write_plot
    from .results import with_differences
    from .runner import write_atomic

    path = Path(results_dir) / f"{name}.json"
    results = with_differences(json.loads(path.read_text()))
    write_atomic(path, json.dumps(results, indent=2) + "\n")
    write_atomic(path.with_suffix(".md"), markdown_report(results))
    with tempfile.TemporaryDirectory() as folder:
        write_atomic(path.with_suffix(".png"), write_plot(results, Path(folder)).read_bytes())
    return [path, path.with_suffix(".md"), path.with_suffix(".png")]


def main(argv: list[str] | None = None) -> int:
    """Re-render the page's study blocks in place (``python -m reference_models.study.page``).

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``); see ``--help``.
    """
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m reference_models.study.page",
        description=f"Re-render the study tables of {PAGE.relative_to(_ROOT)} in place from the recorded "
        f"studies in {RESULTS_DIR.relative_to(_ROOT)}/*.json (the written readings between them are kept).",
    )
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if the page is not current")
    parser.add_argument(
        "--refresh", nargs="+", metavar="NAME", default=(),
        help="first rewrite these recorded studies' tests, .md and .png from their JSON (after copying a study's results.json in)",
    )
    args = parser.parse_args(argv)
    for name in args.refresh:
        print(f"refreshed {', '.join(str(p.name) for p in refresh_recorded(name))}")
    text = PAGE.read_text()
    rendered = render_page(text)
    if args.check:
        print(f"{PAGE}: {'current' if rendered == text else 'out of date: run python -m reference_models.study.page'}")
        return 0 if rendered == text else 1
    if rendered != text:
        PAGE.write_text(rendered)
    print(f"{PAGE}: {len(_BLOCK.findall(rendered))} study tables {'updated' if rendered != text else 'already current'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
