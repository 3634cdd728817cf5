"""``python -m reference_models.bench gpu``: the dry run of the GPU check, its guards and flags.

The dry run is the GPU check's own code on the CPU at tiny sizes, so CI runs every part of
it. The guard tests replace the measurement of a unit with one that fails, hangs or
crashes, and check what the rows and the JSON file say; no time is asserted.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import time

import pytest
import torch

from reference_models import list_models
from reference_models.bench import gpu, main
from reference_models.bench.guard import BudgetSpent, guarded
from reference_models.bench.report import _driver_versions, cuda_environment

real_step_check = gpu.training_step_check


def _rows(saved: dict, part: str) -> list[dict]:
    return saved["parts"][part]["rows"]


def test_dry_run_measures_every_part(tmp_path, capsys):
    path = tmp_path / "gpu.json"
    # An hour's budget: on a loaded machine too, every unit runs to its end (no timed outcome).
    assert main(["gpu", "--dry-run", "--budget", "3600", "--json", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("# gpu | ") and out[1].startswith("# dry run")
    assert out[-1].startswith("gpu check: 31 ok in ")
    saved = json.loads(path.read_text())
    assert saved["finished"] and saved["dry_run"] and list(saved["parts"]) == list(gpu.PARTS)
    assert set(saved["cuda"]) >= {"gpu", "driver", "driver_cuda", "cuda_build", "cudnn", "torch"}

    steps = _rows(saved, "steps")
    assert [row["model"] for row in steps] == [n.replace("_base", "_tiny") for n in list_models() if n.endswith("_base")]
    for row in steps:
        assert row["status"] == "ok" and row["loss_finite"] and row["grads_finite"], row
        assert row["batch"] == 2 and row["dtype"] == "bf16" and row["step_ms"] > 0 and row["peak_mib"] >= 0

    latency = _rows(saved, "latency")
    plugins = [row for row in latency if row["baseline"] is not None]
    assert [(row["model"], row["dtype"]) for row in plugins] == [
        (f"{system}_sadlr_tiny", dtype) for dtype in ("float32", "bf16") for system in ("lavt", "vlt", "lts")
    ]
    assert [row["paper_increase"] for row in plugins[:3]] == [0.130, 0.143, 0.146]
    assert all(row["increase"] == pytest.approx(row["ratio"] - 1, abs=1e-3) for row in plugins)
    assert len(latency) == 12 and all(len(row["times_ms"]) == 2 for row in latency)

    assert [(row["part"], row["size"], row["dim"]) for row in _rows(saved, "coparser")] == [("coparse", 4, 8), ("layer", 4, 8)]
    eager, compiled = _rows(saved, "train")
    assert (eager["compile"], compiled["compile"]) == (False, True)
    assert eager["compile_s"] is None and compiled["compile_s"] >= 0 and compiled["dynamo"] is False
    assert eager["model"] == compiled["model"] == "lavt_sadlr_tiny" and compiled["samples_per_s"] > 0


def test_plans_cover_the_papers_sizes_and_share_the_budget():
    full = gpu.full_plan("cuda")
    assert full.step_models == tuple(n for n in list_models() if n.endswith("_base")) and full.step_batch == 2
    assert full.latency_models == ("lavt_sadlr_base", "vlt_sadlr_base", "lts_sadlr_base")
    assert (full.train_model, full.train_batch, full.compile_dynamo) == ("lavt_sadlr_base", 8, True)
    assert (full.coparser_sizes, full.coparser_dims, full.coparser_batch) == ((16,), (768, 1024), 8)
    assert list(full.budgets()) == list(gpu.PARTS) and sum(full.budgets().values()) == pytest.approx(480)
    some = gpu.dry_plan(budget=10, parts=("train", "steps"))
    assert list(some.budgets()) == ["steps", "train"] and sum(some.budgets().values()) == pytest.approx(10)
    assert all(name.endswith("_tiny") for name in gpu.dry_plan().step_models)


def test_a_failing_unit_is_reported_and_the_rest_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gpu, "_base_models", lambda: ("lavt_base", "lts_base"))

    def check(name, device, **kwargs):
        if name == "lavt_tiny":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_step_check(name, device, **kwargs)

    monkeypatch.setattr(gpu, "training_step_check", check)
    path = tmp_path / "gpu.json"
    assert main(["gpu", "--dry-run", "--parts", "steps", "--json", str(path)]) == 1
    rows = _rows(json.loads(path.read_text()), "steps")
    assert [(row["model"], row["status"]) for row in rows] == [("lavt_tiny", "error"), ("lts_tiny", "ok")]
    assert rows[0]["error"] == "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert "model=lavt_tiny: ERROR: OutOfMemoryError" in capsys.readouterr().out


def test_a_unit_past_its_budget_is_interrupted_and_the_next_skipped(monkeypatch):
    started = []

    def hang(name, device, **kwargs):
        started.append(name)
        time.sleep(60)

    monkeypatch.setattr(gpu, "training_step_check", hang)
    plan = dataclasses.replace(gpu.dry_plan(budget=0.5, parts=("steps",)), step_models=("first", "second"))
    results = gpu.run_gpu_check(plan, echo=lambda line: None)
    rows = _rows(results, "steps")
    assert [row["status"] for row in rows] == ["interrupted", "skipped"] and started == ["first"]
    assert rows[0]["error"].startswith("interrupted: its time budget ran out")


def test_an_interruption_wrapped_by_another_error_still_reads_as_one():
    def compile_like():
        try:
            time.sleep(60)
        except BudgetSpent as err:
            raise RuntimeError("backend compiler failed") from err

    (row,) = guarded({"variant": "compiled"}, compile_like, time.perf_counter() + 0.3, torch.device("cpu"))
    assert row["status"] == "interrupted" and row["variant"] == "compiled"
    (row,) = guarded({"variant": "late"}, compile_like, time.perf_counter() - 1, torch.device("cpu"))
    assert row["status"] == "skipped"


def test_json_keeps_what_was_measured_when_the_run_crashes(tmp_path, monkeypatch):
    def crash(name, device, **kwargs):
        if name == "second":
            raise KeyboardInterrupt  # not an error of one unit: the run itself stops
        return real_step_check("lts_tiny", device, **kwargs)

    monkeypatch.setattr(gpu, "training_step_check", crash)
    plan = dataclasses.replace(gpu.dry_plan(parts=("steps", "coparser")), step_models=("first", "second"))
    path = tmp_path / "gpu.json"
    with pytest.raises(KeyboardInterrupt):
        gpu.run_gpu_check(plan, path, echo=lambda line: None)
    saved = json.loads(path.read_text())
    assert not saved["finished"] and [row["status"] for row in _rows(saved, "steps")] == ["ok"]
    assert "coparser" not in saved["parts"] and not list(tmp_path.glob("*.partial"))


def test_header_names_the_gpu_driver_and_versions(monkeypatch):
    fake = {"gpu": "NVIDIA H200", "gpu_memory_gib": 139.8, "compute_capability": "9.0", "driver": "580.95",
            "driver_cuda": "13.0", "cuda_build": "13.0", "cudnn": 92400, "torch": torch.__version__}
    monkeypatch.setattr(gpu, "cuda_environment", lambda device: fake)
    _, cuda, lines = gpu._header(dataclasses.replace(gpu.dry_plan(), dry_run=False))
    assert cuda == fake
    for part in ("NVIDIA H200 (139.8 GiB, compute capability 9.0)", "driver 580.95 (CUDA 13.0)", "cuDNN 92400", torch.__version__):
        assert part in lines[1]


def test_driver_versions_come_from_nvidia_smi(tmp_path, monkeypatch):
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho '| NVIDIA-SMI 580.95.05   Driver Version: 580.95.05   CUDA Version: 13.0 |'\n")
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert _driver_versions() == ("580.95.05", "13.0")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert _driver_versions() == (None, None)
    assert cuda_environment("cpu")["driver"] is None and cuda_environment("cpu")["torch"] == torch.__version__


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["gpu", "--dry-run", "--budget", "0"], "--budget: expected a positive number of seconds; got 0.0"),
        (["gpu", "--dry-run", "--device", "cuda"], "--device: the dry run runs on the CPU; drop --device cuda or --dry-run"),
        (["gpu", "--device", "cpu"], "--device: the GPU check needs a CUDA device; got 'cpu' \\(--dry-run runs it on the CPU\\)"),
        (["gpu", "--dry-run", "--threads", "0"], "--threads: expected a positive integer; got 0"),
    ],
)
def test_gpu_flag_errors_come_before_any_output(argv, message, capsys):
    with pytest.raises(ValueError, match=message):
        main(argv)
    assert capsys.readouterr().out == ""


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has a CUDA device")
def test_without_cuda_the_error_points_at_the_dry_run(capsys):
    with pytest.raises(ValueError, match="--device: 'cuda' requested but torch.cuda.is_available\\(\\) is False; --dry-run runs"):
        main(["gpu"])
    assert capsys.readouterr().out == ""
    with pytest.raises(SystemExit):
        main(["gpu", "--parts", "everything"])
