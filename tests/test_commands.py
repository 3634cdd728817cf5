"""Every ``python -m reference_models...`` command has a real ``--help`` and refuses unknown flags.

One subprocess runs every command (``runpy``, as ``python -m`` does) twice: with ``--help``,
which must print a usage naming the command and exit 0 without doing anything else, and
with an unknown flag (after the arguments a command requires, so that the flag is what is
refused), which must exit 2 naming the flag before anything runs. It runs in a temporary
folder so that a command that wrongly ran would write there, not in the repository.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: ``(module, arguments before the flag)``: the arguments a command requires, so that only
#: the unknown flag can be what it refuses.
COMMANDS = [
    ("reference_models.train", []),
    ("reference_models.evaluate", ["--checkpoint", "missing.pt"]),
    ("reference_models.predict", ["--checkpoint", "missing.pt", "--image", "a.png", "--text", "a mug", "--out", "b.png"]),
    ("reference_models.bench", ["flops"]),
    ("reference_models.bench", ["latency"]),
    ("reference_models.bench", ["layers"]),
    ("reference_models.bench", ["train"]),
    ("reference_models.bench", ["gpu"]),
    ("reference_models.convert", ["lavt", "missing.pth", "--out", "out"]),
    ("reference_models.experiments", []),
    ("reference_models.study", ["sadlr/table4c"]),
    ("reference_models.study.page", []),
    ("reference_models.data.synthetic", ["--out", "out"]),
    ("reference_models.data.export", ["--out", "out"]),
    ("reference_models.data.ceiling", []),
    ("reference_models.models", []),
]

_DRIVER = """
import contextlib, io, json, runpy, sys, warnings
warnings.simplefilter("ignore")
results = []
for module, argv in json.loads(sys.argv[1]):
    out, err, code = io.StringIO(), io.StringIO(), 0
    sys.argv = [module] + argv
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    results.append({"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()})
print(json.dumps(results))
"""


def _entry_points() -> set[str]:
    """Every module of reference_models that runs as ``python -m``."""
    found = set()
    for path in (ROOT / "reference_models").rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        if path.name == "__main__.py":
            found.add(module.removesuffix(".__main__"))
        elif re.search(r'^if __name__ == "__main__":', path.read_text(), re.M):
            found.add(module)
    return found


@pytest.fixture(scope="module")
def answers(tmp_path_factory) -> dict[tuple[str, str], dict]:
    runs = []
    for module, required in COMMANDS:
        runs.append((module, required[:1] + ["--help"] if module == "reference_models.bench" else ["--help"]))
        runs.append((module, [*required, "--no-such-flag"]))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", _DRIVER, json.dumps(runs)], cwd=tmp_path_factory.mktemp("commands"),
        env=env, capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.splitlines()[-1])
    return {(module, " ".join(argv)): result for (module, argv), result in zip(runs, results)}


def test_every_entry_point_is_walked():
    assert _entry_points() == {module for module, _ in COMMANDS}


_IDS = [f"{m} {' '.join(r[:1])}".strip() for m, r in COMMANDS]


@pytest.mark.parametrize(("module", "required"), COMMANDS, ids=_IDS)
def test_help_is_a_usage_and_does_nothing_else(answers, module, required):
    argv = required[:1] + ["--help"] if module == "reference_models.bench" else ["--help"]
    result = answers[module, " ".join(argv)]
    assert result["code"] == 0, result["stderr"][-2000:]
    assert result["stdout"].startswith(f"usage: python -m {module}"), result["stdout"][:300]
    assert "options:" in result["stdout"] and "``" not in result["stdout"]


@pytest.mark.parametrize(("module", "required"), COMMANDS, ids=_IDS)
def test_an_unknown_flag_is_refused_before_anything_runs(answers, module, required):
    result = answers[module, " ".join([*required, "--no-such-flag"])]
    assert result["code"] == 2, (result["stdout"][-1000:], result["stderr"][-1000:])
    assert "unrecognized arguments: --no-such-flag" in result["stderr"], result["stderr"][-1000:]
    assert result["stdout"] == ""


# -- what some commands print -----------------------------------------------------------------


def test_synthetic_help_says_sentences_per_ref_is_an_upper_bound(answers):
    usage = " ".join(answers["reference_models.data.synthetic", "--help"]["stdout"].split())
    assert "--sentences-per-ref SENTENCES_PER_REF at most this many sentences per target" in usage


def test_study_list_counts_the_runs_and_estimates_the_time(tmp_path, capsys):
    from reference_models.study.cli import main

    assert main(["sadlr/table4c", "--seeds", "2", "--steps", "100", "--list", "--out", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert len(out.split()) == 4  # the run folders, one a line, as before
    summary = err.strip().splitlines()[-1]
    assert re.fullmatch(r"4 runs \(2 rows x 2 seeds, 0 already finished\), each 100 steps of 32 at 64 px: "
                        r"roughly \d+ min on 2 CPU cores \(less on a GPU\)", summary), summary


def test_bench_gpu_dry_run_heads_the_coparser_rows():
    from reference_models.bench import gpu

    lines: list[str] = []
    gpu.run_gpu_check(gpu.dry_plan(parts=("coparser",)), echo=lines.append)
    title = next(i for i, line in enumerate(lines) if line.startswith("coparser: "))
    assert lines[title + 1].split()[:3] == ["part", "h=w", "c"] and set(lines[title + 2].strip()) == {"-"}
    assert lines[title + 3].split()[0] == "coparse"


def test_a_compile_without_dynamo_claims_no_compile_time():
    from reference_models.bench import gpu

    row = {"model": "lavt_sadlr_tiny", "batch": 2, "step_ms": 50.0, "samples_per_s": 40.0, "peak_mib": 3.0,
           "status": "ok", "compile": True, "dynamo": False, "compile_s": 0.0}
    assert "compiled in" not in gpu._format_row("train", row) and "dynamo off" in gpu._format_row("train", row)
    assert "compiled in 12.5 s" in gpu._format_row("train", {**row, "dynamo": True, "compile_s": 12.5})
