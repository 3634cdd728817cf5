"""The Sphinx site builds offline, nitpicky and warning-free, and documents every public name.

The site is built once per session (``-W -n``: warnings are errors and every cross-reference
must resolve, with no network) and the tests below read the build: its ``objects.inv``
(what the API reference documents) and its HTML (Shape sections, links into PyTorch).
"""

from __future__ import annotations

import importlib
import io
import posixpath
import re
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from sphinx.util.inventory import InventoryFile

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path[:0] = [str(DOCS), str(DOCS / "_ext")]

import make_torch_inventory  # noqa: E402
import risdocs  # noqa: E402


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    cmd = [sys.executable, "-m", "sphinx", "-W", "-n", "--keep-going", "-q", "-b", "html", str(DOCS), str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def load_inventory(data: bytes, uri: str) -> dict[str, dict[str, str]]:
    """``{role: {name: address}}`` of an objects.inv (any Sphinx version's reader)."""
    loaded = InventoryFile.load(io.BytesIO(data), uri, posixpath.join)
    return {role: {name: getattr(item, "uri", None) or item[2] for name, item in items.items()} for role, items in loaded.items()}


@pytest.fixture(scope="module")
def documented(site) -> set[str]:
    inventory = load_inventory((site / "objects.inv").read_bytes(), "")
    return {name for role, items in inventory.items() if role.startswith("py:") for name in items}


def test_sphinx_build_nitpicky_and_warning_free(site):
    assert (site / "index.html").exists()
    for page in ("api/layers.html", "api/models.html", "api/data.html", "guides/plug_a_layer.html", "guides/clip_model.html", "guides/export.html"):
        assert (site / page).exists(), page


def test_every_public_name_is_in_the_api_reference(documented):
    missing = []
    for module_name in risdocs.all_modules():
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", ()):
            target = risdocs.canonical_name(module_name, name)
            if target is not None and target not in documented:
                missing.append(f"{module_name}.{name} (documented as {target})")
    assert not missing, "not in the API reference: " + ", ".join(missing)


def test_every_module_has_a_place_in_the_api_pages():
    text = "\n".join(page.read_text() for page in (DOCS / "api").glob("*.rst"))
    listed = {line.split("::", 1)[1].strip() for line in text.splitlines() if line.startswith(".. public-module::")}
    assert set(risdocs.all_modules()) <= listed, sorted(set(risdocs.all_modules()) - listed)


def test_shape_sections_render_as_field_lists(site):
    html = (site / "api" / "layers.html").read_text()
    start = html.index('id="rislayers.refiner.DynamicQueryRefiner"')
    section = html[start : html.index("Example", start)]
    assert "Shape<span" in section
    # the bullets of the docstring became entries named after the tensors
    for tensor in ("feats", "words", "word_mask"):
        assert f"<strong>{tensor}</strong>" in section, tensor
    assert "<strong>output" in section
    assert "<strong>- " not in html


def test_torch_and_python_links_point_at_their_real_sites(site):
    html = (site / "api" / "layers.html").read_text()
    assert 'href="https://pytorch.org/docs/stable/tensors.html#torch.Tensor"' in html
    assert 'href="https://pytorch.org/docs/stable/generated/torch.nn.Module.html#torch.nn.Module"' in html
    data = (site / "api" / "data.html").read_text()
    assert 'href="https://docs.python.org/3/library/collections.abc.html#collections.abc.Sequence"' in data
    assert 'href="https://docs.python.org/3/library/pathlib.html#pathlib.Path"' in data


def test_reexported_spellings_resolve(site):
    # rislayers.CASGStage (a re-export) links to the class documented in rislayers.casg
    html = (site / "api" / "helpers.html").read_text()
    assert 'href="layers.html#rislayers.casg.CASGStage"' in html


def _inventory_text(data: bytes) -> str:
    """Header and decompressed body (zlib builds may compress the same text differently)."""
    header_end = 0
    for _ in range(4):
        header_end = data.index(b"\n", header_end) + 1
    return (data[:header_end] + zlib.decompress(data[header_end:])).decode()


def test_committed_inventories_are_what_the_script_writes(tmp_path):
    written = make_torch_inventory.write_all(tmp_path)
    assert {p.name for p in written} == {p.name for p in (DOCS / "_inventories").glob("*.inv")}
    for path in written:
        committed = _inventory_text((DOCS / "_inventories" / path.name).read_bytes())
        assert committed == _inventory_text(path.read_bytes()), f"rerun python docs/make_torch_inventory.py ({path.name})"


def test_local_inventories_load_and_hold_real_addresses():
    torch_inv = load_inventory(make_torch_inventory.inventory_bytes("torch"), "https://pytorch.org/docs/stable/")
    assert torch_inv["py:class"]["torch.Tensor"] == "https://pytorch.org/docs/stable/tensors.html#torch.Tensor"
    # the spelling autodoc writes for nn.Module points at the same page
    module = torch_inv["py:class"]["torch.nn.modules.module.Module"]
    assert module == "https://pytorch.org/docs/stable/generated/torch.nn.Module.html#torch.nn.Module"
    python_inv = load_inventory(make_torch_inventory.inventory_bytes("python"), "https://docs.python.org/3/")
    assert python_inv["py:class"]["pathlib.Path"] == "https://docs.python.org/3/library/pathlib.html#pathlib.Path"


def test_conf_reads_inventories_from_files_not_the_network():
    namespace: dict = {"__file__": str(DOCS / "conf.py")}
    exec(compile((DOCS / "conf.py").read_text(), str(DOCS / "conf.py"), "exec"), namespace)
    assert namespace["nitpicky"] is True
    for key, (url, inventory) in namespace["intersphinx_mapping"].items():
        assert url.startswith("https://"), key
        assert (DOCS / inventory).is_file(), f"{key}: {inventory} missing"


def test_every_torch_alias_points_at_a_listed_name():
    for key, inventory in make_torch_inventory.INVENTORIES.items():
        for alias, name in inventory.aliases.items():
            assert name in inventory.entries, f"{key}: alias {alias} -> {name}, which is not listed"


def test_docstring_examples_run_as_doctests():
    # every ">>>" example of both packages runs in the test suite (pytest --doctest-modules)
    text = (ROOT / "pyproject.toml").read_text()
    options = text.split("[tool.pytest.ini_options]", 1)[1].split("\n[", 1)[0]
    addopts = re.search(r'^addopts = "(.*)"', options, re.M).group(1)
    testpaths = re.search(r"^testpaths = \[(.*)\]", options, re.M).group(1)
    assert "--doctest-modules" in addopts.split()
    assert '"rislayers"' in testpaths and '"reference_models"' in testpaths
