"""python -m reference_models.study: the files it writes, resuming, aggregation, errors.

Studies run at ``--quick`` size (two steps of four samples) on the two rows of SADLR
Table 4 (c); the one end-to-end study is shared by the tests that read its files.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from reference_models.study import aggregate, direction, main, plan_study, QUICK_SETTINGS
from reference_models.study import runner
from reference_models.study.plan import default_row, run_folder
from reference_models.study.results import difference

TABLE = "sadlr/table4c"
ROWS = ("sadlr/table4c/sum", "sadlr/table4c/replace")


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("study") / "table4c"
    assert main([TABLE, "--quick", "--out", str(out)]) == 0
    return out


def _count_trains(monkeypatch, fail_on: int | None = None) -> list[str]:
    """Replace the runner's train with one that records its calls (and can fail on one)."""
    calls: list[str] = []
    real = runner.train

    def counting(cfg, out_dir, **kwargs):
        calls.append(f"{cfg.experiment} seed {cfg.seed}" + (" (resumed)" if kwargs.get("resume") else ""))
        if fail_on is not None and len(calls) == fail_on:
            raise KeyboardInterrupt("killed")
        return real(cfg, out_dir, **kwargs)

    monkeypatch.setattr(runner, "train", counting)
    return calls


def test_the_three_files_have_the_documented_structure(study):
    results = json.loads((study / "results.json").read_text())
    settings = results["settings"]
    assert settings["quick"] and settings["steps"] == QUICK_SETTINGS.steps and settings["level"] == 1
    assert 0 < settings["text_blind_ceiling_mIoU"] < 0.3
    assert [row["experiment"] for row in results["rows"]] == list(ROWS)
    for row in results["rows"]:
        assert row["reported"]["oIoU"] > 0.7 and row["default"] == "sadlr/table4c/sum"
        for metric in ("oIoU", "mIoU", "P@0.5"):
            entry = row["metrics"][metric]
            assert set(entry) == {"mean", "std", "runs"} and len(entry["runs"]) == 1
            assert 0 <= entry["mean"] <= 1 and entry["std"] == 0
    text = (study / "results.md").read_text()
    assert "| sum (default) | 74.24 |" in text and "| replace | 73.19 |" in text and "-1.05" in text
    assert (study / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ROWS:
        folder = study / "runs" / name.replace("/", "-") / "seed-0"
        assert runner.run_state(folder) == "finished"
        assert json.loads((folder / runner.EVALUATION_FILE).read_text())["samples"] == QUICK_SETTINGS.eval_size


def test_a_finished_study_trains_nothing_again(study, monkeypatch):
    before = {p: p.stat().st_mtime_ns for p in study.glob("runs/*/*/last.pt")}
    calls = _count_trains(monkeypatch)
    assert main([TABLE, "--quick", "--out", str(study)]) == 0
    assert calls == []
    assert {p: p.stat().st_mtime_ns for p in study.glob("runs/*/*/last.pt")} == before
    assert len(before) == 2


def test_an_interrupted_study_continues_with_only_the_missing_runs(tmp_path, monkeypatch):
    out = tmp_path / "study"
    real = runner.train
    calls = _count_trains(monkeypatch, fail_on=2)
    with pytest.raises(KeyboardInterrupt):
        main([TABLE, "--quick", "--out", str(out)])
    assert calls == ["sadlr/table4c/sum seed 0", "sadlr/table4c/replace seed 0"]
    # what the first run measured is already in the results
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [len(row["metrics"].get("oIoU", {"runs": []})["runs"]) for row in rows] == [1, 0]
    monkeypatch.setattr(runner, "train", real)
    calls = _count_trains(monkeypatch)
    assert main([TABLE, "--quick", "--out", str(out)]) == 0
    assert calls == ["sadlr/table4c/replace seed 0"]
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [len(row["metrics"]["oIoU"]["runs"]) for row in rows] == [1, 1]


def test_a_run_killed_after_its_checkpoint_is_resumed_and_one_without_is_restarted(study, tmp_path, monkeypatch):
    plan = plan_study([ROWS[1]], QUICK_SETTINGS)
    folder = run_folder(tmp_path, plan.rows[0], 0)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")  # killed before its first checkpoint
    calls = _count_trains(monkeypatch)
    runner.run_one(plan.rows[0], 0, QUICK_SETTINGS, folder)
    assert calls == ["sadlr/table4c/replace seed 0"] and runner.run_state(folder) == "finished"
    (folder / "summary.json").unlink()  # killed after last.pt, before the summary
    (folder / runner.EVALUATION_FILE).unlink()
    assert runner.run_state(folder) == "interrupted"
    _, what = runner.run_one(plan.rows[0], 0, QUICK_SETTINGS, folder)
    assert what == "resumed" and calls[-1].endswith("(resumed)") and runner.run_state(folder) == "finished"


def test_aggregation_over_seeds():
    entry = aggregate([0.4, 0.5, 0.6])
    assert entry["mean"] == pytest.approx(0.5) and entry["std"] == pytest.approx(0.1)
    assert entry["runs"] == [0.4, 0.5, 0.6]
    assert aggregate([0.3]) == {"mean": 0.3, "std": 0.0, "runs": [0.3]}
    assert aggregate([]) == {"mean": None, "std": None, "runs": []}


def _row(reported: float, runs: list[float]) -> dict:
    return {"reported": {"oIoU": reported}, "metrics": {"oIoU": aggregate(runs)}}


def test_direction_agreement_on_constructed_numbers():
    base = _row(0.74, [0.50, 0.52, 0.54])
    worse = difference(_row(0.73, [0.40, 0.41, 0.42]), base, "oIoU")
    assert worse["paper"] == pytest.approx(-0.01) and worse["ours"] == pytest.approx(-0.11)
    assert worse["direction"] == "agrees"
    better = difference(_row(0.73, [0.60, 0.61, 0.62]), base, "oIoU")
    assert better["direction"] == "disagrees"
    # a gap smaller than its standard error is flagged as noise
    noisy = difference(_row(0.73, [0.40, 0.60, 0.53]), base, "oIoU")
    assert noisy["noise"] == pytest.approx(math.sqrt(0.02**2 / 3 + aggregate([0.4, 0.6, 0.53])["std"] ** 2 / 3), abs=1e-6)
    assert noisy["direction"] == "agrees (within noise)"
    assert difference(base, base, "oIoU")["direction"] == ""  # the default row itself
    assert difference(base, None, "oIoU") == {"paper": None, "ours": None, "noise": 0.0, "direction": ""}
    assert direction(0.01, 0.0) == "no difference"


def test_default_rows_follow_the_documented_rule():
    assert default_row("sadlr", "table4b").name == "sadlr/table4b/128-512"  # marked (default)
    assert default_row("asda", "table2").name == "asda/table2/f"  # marked (full)
    assert default_row("s2rm", "table6").name == "s2rm/table6/full"  # called full
    assert default_row("sadlr", "table3").name == "sadlr/table3/lavt-s"  # the last row


def test_unavailable_rows_are_skipped_with_their_reason():
    plan = plan_study(["sadlr/table3/lts", "sadlr/table3/lts-c"], QUICK_SETTINGS)
    assert [row.name for row in plan.rows] == ["sadlr/table3/lts"]
    assert [(row.name, "CGAN" in reason) for row, reason in plan.skipped] == [("sadlr/table3/lts-c", True)]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["sadlr/tabel4c", "--quick"], "did you mean 'sadlr/table4c'"),
        (["sadlr/table4c", "--seeds", "0"], "--seeds: expected an integer >= 1"),
        (["sadlr/table4c", "--sede", "2"], "unrecognized arguments: --sede"),
        ([], "NAME: expected at least one"),
        (["sadlr/table3/lts-c"], "NAME: none of the rows named is available"),
    ],
)
def test_bad_names_and_flags_give_one_line(argv, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2
    assert expected in err[-1] and err[-1].startswith("python -m reference_models.study: error:")
    assert len([line for line in err if not line.startswith("skipping ")]) == 1


def test_other_settings_in_the_same_folder_are_refused(study, capsys):
    with pytest.raises(SystemExit):
        main([TABLE, "--quick", "--steps", "3", "--out", str(study)])
    assert "holds a study with other settings (steps 2 -> 3, " in capsys.readouterr().err


def test_the_module_runs_as_a_command(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "reference_models.study", "sadlr/table4c", "--quick", "--list", "--out", str(tmp_path)],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(tmp_path / "runs" / r.replace("/", "-") / "seed-0") for r in ROWS]
