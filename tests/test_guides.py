"""The guides' code runs and their commands are valid.

- Every ```` ```python ```` block of a guide runs, in order, in one namespace per guide
  (the "plug a layer" guide is all code); a ```` ```text ```` block right after a Python
  block is the output that block must print.
- Every guide and the README: each ``python -m reference_models.<tool> ...`` line of a
  ```` ```bash ```` block (also behind ``torchrun``) is parsed by that tool's own argument
  parser, so a renamed flag, a wrong choice or a missing required argument fails here.
- The scripts under ``docs/examples/`` (the front page's example) and the README's Python
  blocks run.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import re
import shlex
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
GUIDES = ROOT / "docs" / "guides"

_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)


def fenced_blocks(text: str) -> list[tuple[str, str, int, int]]:
    """``(language, code, start, end)`` of every fenced block of a Markdown text."""
    return [(m.group(1), m.group(2), m.start(), m.end()) for m in _FENCE.finditer(text)]


def python_steps(text: str) -> list[tuple[str, str | None]]:
    """``(code, expected output or None)`` for each Python block, in order."""
    blocks = fenced_blocks(text)
    steps = []
    for i, (language, code, _, end) in enumerate(blocks):
        if language != "python":
            continue
        expected = None
        if i + 1 < len(blocks):
            next_language, next_code, next_start, _ = blocks[i + 1]
            if next_language == "text" and not text[end:next_start].strip():
                expected = next_code
        steps.append((code, expected))
    return steps


EXECUTED_GUIDES = sorted(p.name for p in GUIDES.glob("*.md") if "```python" in p.read_text())


def test_the_plug_in_guides_are_executed():
    for guide in ("plug_a_layer.md", "clip_model.md", "export.md"):
        assert guide in EXECUTED_GUIDES
        assert len(python_steps((GUIDES / guide).read_text())) >= 4, guide


@pytest.mark.parametrize("guide", EXECUTED_GUIDES)
def test_guide_code_runs_and_prints_what_the_page_says(guide):
    text = (GUIDES / guide).read_text()
    steps = python_steps(text)
    namespace: dict = {"__name__": f"guide_{Path(guide).stem}"}
    torch.manual_seed(0)
    for number, (code, expected) in enumerate(steps, 1):
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(code, f"{guide} (python block {number})", "exec"), namespace)
        if expected is not None:
            assert printed.getvalue().strip() == expected.strip(), f"{guide}, python block {number}: printed output differs"


# -- commands ----------------------------------------------------------------------------------


class _Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__("parser captured")
        self.parser = parser


def tool_parser(module_name: str) -> argparse.ArgumentParser:
    """The parser a tool's ``main`` builds, caught at its ``parse_args`` call (nothing runs)."""
    module = importlib.import_module(module_name)

    def capture(self, *args, **kwargs):
        raise _Captured(self)

    original = argparse.ArgumentParser.parse_args
    argparse.ArgumentParser.parse_args = capture
    try:
        module.main([])
    except _Captured as captured:
        return captured.parser
    finally:
        argparse.ArgumentParser.parse_args = original
    raise AssertionError(f"{module_name}.main never parsed its arguments")


def guide_commands() -> list[tuple[str, str, list[str]]]:
    """``(page, module, argv)`` of every ``python -m reference_models...`` command in a bash block.

    The pages are the guides and the README.
    """
    found = []
    for path in [*sorted(GUIDES.glob("*.md")), ROOT / "README.md"]:
        for language, code, _, _ in fenced_blocks(path.read_text()):
            if language not in ("bash", "sh", "console"):
                continue
            for line in code.replace("\\\n", " ").splitlines():
                words = shlex.split(line.split(" #", 1)[0], comments=False)
                if "-m" not in words:
                    continue
                module = words[words.index("-m") + 1]
                if module.startswith("reference_models"):
                    found.append((path.name, module, words[words.index("-m") + 2 :]))
    return found


COMMANDS = guide_commands()


def test_guides_have_commands():
    modules = {module for _, module, _ in COMMANDS}
    assert {"reference_models.train", "reference_models.evaluate", "reference_models.data.synthetic"} <= modules


@pytest.mark.parametrize(("guide", "module", "argv"), COMMANDS, ids=[f"{g}:{' '.join(a)[:60]}" for g, _, a in COMMANDS])
def test_guide_command_parses(guide, module, argv):
    parser = tool_parser(module)
    error = io.StringIO()
    try:
        with contextlib.redirect_stderr(error):
            parser.parse_args(argv)
    except SystemExit:
        pytest.fail(f"{guide}: `python -m {module} {' '.join(argv)}` is rejected: {error.getvalue().strip()}")


def test_command_check_rejects_a_wrong_flag():
    parser = tool_parser("reference_models.train")
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
        parser.parse_args(["--modle", "lavt_tiny"])
    assert parser.parse_args(["--model", "lavt_tiny"]).model == "lavt_tiny"


def test_output_blocks_are_paired_with_their_code():
    text = "```python\nprint(1)\n```\n\n```text\n1\n```\n\nprose\n\n```python\nx = 2\n```\n\nprose\n\n```text\nnot output\n```\n"
    assert python_steps(text) == [("print(1)\n", "1\n"), ("x = 2\n", None)]


EXAMPLES = sorted((ROOT / "docs" / "examples").glob("*.py"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_docs_example_scripts_run(example):
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(example.read_text(), str(example), "exec"), {"__name__": "__main__"})


def test_readme_python_blocks_run():
    text = (ROOT / "README.md").read_text()
    steps = python_steps(text)
    assert steps, "README.md: expected a Python example"
    namespace: dict = {"__name__": "readme"}
    for number, (code, _) in enumerate(steps, 1):
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(code, f"README.md (python block {number})", "exec"), namespace)
