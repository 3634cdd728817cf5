"""The plug-in matrix: `python -m reference_models.models` prints it and the docs page matches it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from reference_models.models.matrix import BASELINES, SLOT_VALUES, format_matrix, plugin_matrix

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "guides" / "plugin_matrix.md"


def _rows(markdown: str) -> list[list[str]]:
    """The table's rows, without the GMACs column (the page may record them, the test does not count them)."""
    rows = []
    for line in markdown.splitlines():
        if line.startswith("| ") and not line.startswith("| baseline"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            rows.append(cells[:5] + cells[6:])
    return rows


def test_the_page_matches_the_matrix():
    expected = _rows(format_matrix(plugin_matrix(), markdown=True))
    assert len(expected) == len(BASELINES) * sum(len(v) for v in SLOT_VALUES.values())
    assert _rows(PAGE.read_text()) == expected, "regenerate: python -m reference_models.models --markdown"


def test_every_cell_the_issue_names_is_built_or_says_why_not():
    cells = {(c.baseline.split("_")[0], c.slot, c.value): c for c in plugin_matrix()}
    for baseline in ("lavt", "vlt", "lts"):
        for value in ("coparser", "tile_concat", "pwam"):
            assert cells[baseline, "neck", value].built
        assert cells[baseline, "head", "sadlr"].built
    for baseline in ("lavt", "lts"):
        assert all(cells[baseline, "decoder", value].built for value in ("casg", "fpn", "aligner"))
    # VLT's released reading (its base size) hands a decoder response maps alone: every plug-in is refused
    assert all("query.response='spatial'" in cells["vlt", "decoder", value].reason for value in ("casg", "fpn", "aligner"))
    assert cells["s2rm", "head", "sadlr"].built and cells["asda", "head", "sadlr"].built
    refused = [c for c in cells.values() if not c.built]
    assert refused and all(c.reason and "\n" not in c.reason for c in refused)


def test_the_command_prints_the_matrix():
    result = subprocess.run(
        [sys.executable, "-m", "reference_models.models", "--models", "lavt_tiny"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["baseline", "slot", "value", "built"] and len(lines) == 1 + sum(len(v) for v in SLOT_VALUES.values())
