"""Configs, folders and checkpoints written before the composed configuration still work.

The fixtures in ``tests/fixtures/legacy`` were written by the flat ``ModelConfig`` (commit
7329266; see their README): each must rebuild the same model with the same logits, the killed
run must resume to the uninterrupted run's weights, and the finished run must evaluate as it did.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from reference_models import RISModel
from reference_models.checkpoint import load_model

LEGACY = Path(__file__).parent / "fixtures" / "legacy"
ROOT = Path(__file__).resolve().parents[1]
CASES = sorted(p.name for p in LEGACY.iterdir() if (p / "model.safetensors").is_file())


@pytest.fixture(scope="module")
def batch():
    return torch.load(LEGACY / "inputs.pt", weights_only=True)


@pytest.fixture(scope="module")
def expected():
    return torch.load(LEGACY / "logits.pt", weights_only=True)


def test_every_case_has_logits(expected):
    assert len(CASES) >= 15 and set(CASES) == set(expected)


@pytest.mark.parametrize("case", CASES)
def test_saved_folder_loads_and_computes_the_same(case, batch, expected):
    model = RISModel.from_pretrained(LEGACY / case).eval()
    with torch.no_grad():
        logits = model(batch["images"], batch["input_ids"], batch["attention_mask"]).logits
    assert torch.allclose(logits, expected[case], atol=1e-5, rtol=0), (logits - expected[case]).abs().max()


def test_old_checkpoint_loads_as_its_model(batch):
    model = load_model(LEGACY / "run_finished" / "best.pt")
    state = torch.load(LEGACY / "run_final_weights.pt", weights_only=True)
    assert set(model.state_dict()) == set(state)


@pytest.mark.parametrize("where", ["run_finished", "run_finished/best.pt", "lavt_sadlr_tiny"])
def test_from_pretrained_takes_a_run_folder_a_checkpoint_or_a_saved_folder(where, batch):
    model = RISModel.from_pretrained(LEGACY / where).eval()
    with torch.no_grad():
        logits = model(batch["images"], batch["input_ids"], batch["attention_mask"]).logits
    assert logits.shape == (2, 1, 64, 64) and torch.isfinite(logits).all()
    if where.startswith("run_finished"):  # the run folder means its best.pt
        expected = load_model(LEGACY / "run_finished" / "best.pt").state_dict()
        assert all(torch.equal(value, expected[key]) for key, value in model.state_dict().items())


def _run(module: str, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", f"reference_models.{module}", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env={"OMP_NUM_THREADS": "1", **__import__("os").environ})


@pytest.mark.slow
def test_killed_old_run_resumes_to_the_uninterrupted_weights(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(LEGACY / "run_killed", run)
    result = _run("train", "--out", str(run), "--resume", "--workers", "0")
    assert result.returncode == 0, result.stderr[-3000:]
    final = torch.load(run / "last.pt", weights_only=False)["model"]
    expected = torch.load(LEGACY / "run_final_weights.pt", weights_only=True)
    assert final.keys() == expected.keys()
    for key in expected:
        assert torch.equal(final[key], expected[key]), key


@pytest.mark.slow
def test_old_checkpoint_evaluates_as_before(tmp_path):
    out = tmp_path / "eval.json"
    result = _run(
        "evaluate", "--checkpoint", str(LEGACY / "run_finished" / "best.pt"), "--size", "16", "--workers", "0",
        "--threshold", "0.3", "--json", str(out),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    got, before = json.loads(out.read_text())["val"], json.loads((LEGACY / "run_finished_eval.json").read_text())["val"]
    for key in ("oIoU", "mIoU", "P@0.5"):
        assert got[key] == pytest.approx(before[key], abs=1e-6), key
