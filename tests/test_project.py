"""Project-level contracts: dependencies of rislayers, README vs CI, public names."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import rislayers

ROOT = Path(__file__).resolve().parents[1]


def test_import_pulls_in_only_torch_and_einops():
    code = (
        "import sys\n"
        "import torch, einops\n"
        "before = {m.split('.')[0] for m in sys.modules}\n"
        "import rislayers\n"
        "after = {m.split('.')[0] for m in sys.modules}\n"
        "print(sorted(after - before))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['rislayers']"


def test_declared_dependencies_are_torch_and_einops():
    text = (ROOT / "pyproject.toml").read_text()
    deps = re.search(r"^dependencies = \[(.*?)\]", text, re.M | re.S).group(1)
    names = sorted(re.findall(r'"([A-Za-z0-9_.-]+)', deps))
    assert names == ["einops", "torch"]


def _readme_block(heading: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split(f"## {heading}", 1)[1]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    return [line for line in block.strip().splitlines() if line.strip()]


def test_ci_runs_the_readme_commands():
    setup, test = _readme_block("Set-up"), _readme_block("Tests")
    assert len(setup) == 1 and len(test) == 1, "README must give one set-up and one test command"
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert setup[0] in ci_lines
    assert test[0] in ci_lines
    assert ci_lines.index(setup[0]) < ci_lines.index(test[0])


def test_all_names_resolve():
    for name in rislayers.__all__:
        assert hasattr(rislayers, name), name
