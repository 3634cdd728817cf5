"""The layers alone: a wheel built from the repository needs torch and einops, nothing else.

The wheel is built from a copy of the sources (so the shared working tree gets no ``build/``
folder), unpacked, and its rislayers run by ``tests/layers_alone.py`` in a process where the
extras' packages cannot be imported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for package in ("rislayers", "reference_models"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("dist")
    # setuptools' PEP 517 backend, as `pip wheel --no-deps --no-build-isolation .` calls it
    build = "import sys; from setuptools import build_meta; print(build_meta.build_wheel(sys.argv[1]))"
    done = subprocess.run([sys.executable, "-c", build, str(out)], cwd=source, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return out / done.stdout.strip().splitlines()[-1]


def _metadata(wheel: Path):
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return Parser().parsestr(archive.read(name).decode())


def test_the_wheels_base_requirements_are_torch_and_einops(wheel):
    requirements = _metadata(wheel).get_all("Requires-Dist")
    base = [r for r in requirements if "extra ==" not in r]
    names = sorted(r.split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower() for r in base)
    assert names == ["einops", "torch"], base
    # the models extra is where the rest went
    assert any(r.startswith("timm") and 'extra == "models"' in r for r in requirements)


def test_every_layer_runs_from_the_wheel_without_the_extras(wheel, tmp_path):
    unpacked = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(unpacked)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "layers_alone.py"), str(unpacked)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.splitlines()[-1])
    assert Path(report["rislayers"]).is_relative_to(unpacked), report["rislayers"]
    assert report["no_inputs"] == [], f"tests/layers_alone.py has no inputs for {report['no_inputs']}"
    assert len(report["ran"]) >= 14 and "DynamicQueryRefiner" in report["ran"]
    assert {"oIoU", "mIoU", "P@0.5"} <= set(report["metrics"])
    assert report["loaded"] == []
    # reference_models is in the wheel too; without its extra it says, in one line, what to install
    message = report["reference_models"]
    assert message is not None and "\n" not in message
    assert 'pip install "rislayers[models]"' in message and "timm" in message
