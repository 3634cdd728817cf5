"""What the front pages promise: the README lists every guide, and code blocks fit the page."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_lists_every_guide():
    readme = (ROOT / "README.md").read_text()
    linked = set(re.findall(r"\]\(docs/guides/([\w-]+\.md)\)", readme))
    guides = {path.name for path in (ROOT / "docs" / "guides").glob("*.md")}
    assert guides - linked == set(), "README.md does not list these guides"
    assert linked - guides == set(), "README.md links guides that do not exist"


def test_the_theme_wraps_commands_and_scrolls_wide_output():
    conf = runpy.run_path(str(ROOT / "docs" / "conf.py"))
    assert conf["html_theme"] == "alabaster"  # the rule below is written for its layout
    css = "\n".join((ROOT / "docs" / folder / name).read_text() for folder in conf["html_static_path"] for name in conf["html_css_files"])
    rules = {selector.strip(): body for selectors, body in re.findall(r"([^{}]+)\{([^}]*)\}", re.sub(r"/\*.*?\*/", "", css, flags=re.S))
             for selector in selectors.split(",")}
    assert "pre-wrap" in rules["div.highlight-bash pre"] and "pre-wrap" in rules["div.highlight-python pre"]
    assert "overflow-x: auto" in rules["div.highlight pre"]


def test_the_tools_page_lists_no_name_twice():
    import sys

    sys.path.insert(0, str(ROOT / "docs" / "_ext"))
    import risdocs

    # reference_models.train re-exports reference_models.training's names, one after the other
    for page in [ROOT / "docs" / "api" / "tools.rst"]:
        listed: dict = {}
        seen: dict[str, str] = {}
        for line in page.read_text().splitlines():
            if not line.startswith(".. public-module::"):
                continue
            module = line.split("::", 1)[1].strip()
            for entry in risdocs._module_lines(module, listed):
                if match := re.match(r"- ``\w+``: :py:\w+:`([\w.]+)`", entry):
                    assert match[1] not in seen, f"{page.name}: {match[1]} listed under {seen[match[1]]} and {module}"
                    seen[match[1]] = module
