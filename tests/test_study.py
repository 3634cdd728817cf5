"""python -m reference_models.study: the files it writes, resuming, aggregation, errors.

Studies run at ``--quick`` size (two steps of four samples) on the two rows of SADLR
Table 4 (c); the one end-to-end study is shared by the tests that read its files.
"""

from __future__ import annotations

import json
import math
import re
import shutil
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


def _row(reported: float, runs: list[float], name: str = "t/row") -> dict:
    return {
        "experiment": name, "reported": {"oIoU": reported}, "metrics": {"oIoU": aggregate(runs)},
        "runs": [{"seed": seed, "metrics": {"oIoU": value}} for seed, value in enumerate(runs)],
    }


def test_verdicts_follow_the_interval_on_constructed_numbers():
    base = _row(0.74, [0.50, 0.52, 0.54], name="t/full")
    worse = difference(_row(0.73, [0.40, 0.41, 0.42]), base, "oIoU")
    assert worse["paper"] == pytest.approx(-0.01) and worse["ours"] == pytest.approx(-0.11)
    assert worse["interval"]["test"] == "paired" and worse["interval"]["high"] < 0
    assert worse["verdict"] == "agrees"
    better = difference(_row(0.73, [0.60, 0.61, 0.62]), base, "oIoU")
    assert better["verdict"] == "disagrees"
    # a gap whose interval holds zero is unresolved, whatever its sign
    noisy = difference(_row(0.73, [0.40, 0.60, 0.53]), base, "oIoU")
    assert noisy["interval"]["low"] < 0 < noisy["interval"]["high"] and noisy["verdict"] == "unresolved"
    assert difference(base, base, "oIoU")["verdict"] == ""  # the default row itself
    assert difference(base, None, "oIoU") == {"paper": None, "ours": None, "interval": None, "verdict": ""}
    one_seed = difference(_row(0.73, [0.10]), base, "oIoU")
    assert one_seed["interval"] is None and one_seed["verdict"] == "unresolved"
    assert direction(0.01, {"low": 0.001, "high": 0.02}) == "agrees"


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


# -- measurements beside the metrics: SADLR iterations, ASDA selections ----------------------


def test_sadlr_runs_record_every_iteration_in_each_file(study):
    folder = study / "runs" / "sadlr-table4c-sum" / "seed-0"
    evaluation = json.loads((folder / runner.EVALUATION_FILE).read_text())
    assert len(evaluation["by_iteration"]) == 3 and "selection" not in evaluation
    assert evaluation["by_iteration"][-1] == {k: evaluation["metrics"][k] for k in evaluation["by_iteration"][-1]}
    results = json.loads((study / "results.json").read_text())
    for row in results["rows"]:
        assert [run["seed"] for run in row["runs"]] == [0]
        assert len(row["by_iteration"]) == 3
        last = row["by_iteration"][-1]["oIoU"]
        assert last == row["metrics"]["oIoU"] and set(last) == {"mean", "std", "runs"}
    text = (study / "results.md").read_text()
    assert "## sadlr/table4c: oIoU by SADLR iteration" in text and "| row | iteration 1 | iteration 2 | iteration 3 |" in text
    assert "layers chosen by AFS" not in text


def _copy(study: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(study, out)
    return out


def test_an_evaluation_without_its_models_measurements_is_redone_not_retrained(study, tmp_path, monkeypatch, capsys):
    out = _copy(study, tmp_path)
    folder = out / "runs" / "sadlr-table4c-replace" / "seed-0"
    record = json.loads((folder / runner.EVALUATION_FILE).read_text())
    record.pop("by_iteration")  # as the study wrote it before by_iteration existed
    (folder / runner.EVALUATION_FILE).write_text(json.dumps(record))
    assert runner.run_state(folder) == "trained"
    checkpoint = (folder / "last.pt").stat().st_mtime_ns
    calls = _count_trains(monkeypatch)
    assert main([TABLE, "--quick", "--out", str(out)]) == 0
    assert calls == [] and (folder / "last.pt").stat().st_mtime_ns == checkpoint
    assert "sadlr/table4c/replace seed 0: evaluated" in capsys.readouterr().err
    redone = json.loads((folder / runner.EVALUATION_FILE).read_text())
    assert len(redone["by_iteration"]) == 3 and redone["metrics"] == record["metrics"]
    assert runner.run_state(folder) == "finished"


def _trained_asda_folder(folder: Path) -> Path:
    """A run folder as training leaves it, for an untrained asda_tiny (no training run)."""
    import torch

    from reference_models import build_model
    from reference_models.checkpoint import save_checkpoint
    from reference_models.training import TrainConfig

    torch.manual_seed(0)
    model = build_model("asda_tiny")
    train = TrainConfig(model="asda_tiny").to_dict()
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"train": train, "model": model.config.to_dict()}))
    save_checkpoint({"model": model.state_dict(), "model_config": model.config.to_dict(), "train_config": train}, folder / "last.pt")
    (folder / "summary.json").write_text("{}")
    return folder


def test_asda_runs_record_their_layer_selection(tmp_path):
    folder = _trained_asda_folder(tmp_path / "run")
    assert runner.expected_measurements(folder) == ("selection",)
    record = runner.evaluate_run(folder, QUICK_SETTINGS)
    assert record == json.loads((folder / runner.EVALUATION_FILE).read_text())
    assert "by_iteration" not in record and record["selection"]["sensitivity_from"] == "image_id"
    assert sum(record["selection"]["low"]["counts"].values()) == QUICK_SETTINGS.eval_size
    assert runner.run_state(folder) == "finished"
    stripped = {k: v for k, v in record.items() if k != "selection"}
    (folder / runner.EVALUATION_FILE).write_text(json.dumps(stripped))
    assert runner.run_state(folder) == "trained"


def test_iterations_and_selections_aggregate_over_seeds():
    from reference_models.study.results import iterations_of, run_entry, selection_of

    runs = [
        run_entry({"metrics": {"oIoU": 0.3}, "by_iteration": [{"oIoU": 0.1}, {"oIoU": 0.3}],
                   "selection": {"low": {"counts": {"4": 2, "5": 2}, "entropy": 0.4, "sentence_sensitivity": 0.5}, "sensitivity_from": "image_id"}}, 0),
        run_entry({"metrics": {"oIoU": 0.5}, "by_iteration": [{"oIoU": 0.3}, {"oIoU": 0.5}],
                   "selection": {"low": {"counts": {"5": 4}, "entropy": 0.2, "sentence_sensitivity": None}, "sensitivity_from": "image_id"}}, 1),
        run_entry({"metrics": {"oIoU": 0.7}}, 2),  # evaluated before the measurements existed
    ]
    first, last = iterations_of(runs)
    assert first["oIoU"]["mean"] == pytest.approx(0.2) and first["oIoU"]["runs"] == [0.1, 0.3]
    assert last["oIoU"]["std"] == pytest.approx(math.sqrt(0.02), abs=1e-6)  # aggregate rounds to 6 places
    low = selection_of(runs)["low"]
    assert low["counts"] == {"4": 2, "5": 6}
    assert low["entropy"]["mean"] == pytest.approx(0.3) and low["sentence_sensitivity"]["runs"] == [0.5]
    assert iterations_of(runs[2:]) is None and selection_of(runs[2:]) is None


def test_the_report_shows_iterations_and_selections(tmp_path):
    from reference_models.experiments import get_experiment
    from reference_models.study.report import markdown_report, write_plot
    from reference_models.study.results import row_record, run_entry

    selection = {"low": {"counts": {"4": 1, "6": 3}, "entropy": 0.25, "sentence_sensitivity": 0.5},
                 "mid": {"counts": {"8": 4}, "entropy": 0.0, "sentence_sensitivity": 0.0}, "sensitivity_from": "image_id"}
    rows = [
        row_record(get_experiment("sadlr/table4a/2"), [run_entry({"metrics": {"oIoU": 0.4, "mIoU": 0.3}, "by_iteration": [{"oIoU": 0.2, "mIoU": 0.1}, {"oIoU": 0.4, "mIoU": 0.3}]}, 0)]),
        row_record(get_experiment("asda/table2/f"), [run_entry({"metrics": {"oIoU": 0.5, "mIoU": 0.4}, "selection": selection}, 0)]),
    ]
    results = {"settings": {**QUICK_SETTINGS.to_dict(), "default_row_rule": ""}, "rows": rows, "skipped": []}
    text = markdown_report(results)
    assert "## sadlr/table4a: oIoU by SADLR iteration" in text and "| 2 | 20.00 ± 0.00 | 40.00 ± 0.00 |" in text
    assert "## asda/table2: layers chosen by AFS" in text
    assert "| (f) | 4: 25%, 6: 75% | 0.250 ± 0.000 | 50.00 ± 0.00 | 8: 100% | 0.000 ± 0.000 | 0.00 ± 0.00 |" in text
    assert write_plot(results, tmp_path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_picture_draws_paper_axes_only_for_tables_with_paper_figures():
    from matplotlib.figure import Figure

    from reference_models.experiments import get_experiment
    from reference_models.study.report import _draw_table
    from reference_models.study.results import row_record, run_entry

    def axes_drawn(names):
        rows = [row_record(get_experiment(n), [run_entry({"metrics": {"oIoU": 0.4, "mIoU": 0.3}}, 0)]) for n in names]
        figure = Figure()
        _draw_table(figure.subplots(2, 1), "t", rows, "mIoU")
        return [axis.get_ylabel() for axis in figure.axes]

    ours_only = axes_drawn(["asda/fixes/straight-through", "asda/fixes/none"])  # our table: no paper figures
    assert ours_only == ["ours mIoU (%)", "ours Δ vs default, 95 % CI (pt)"]
    with_paper = axes_drawn(["asda/table2/e", "asda/table2/f"])
    assert with_paper == ["ours mIoU (%)", "ours Δ vs default, 95 % CI (pt)", "paper mIoU (%)", "paper Δ (pt)"]


# -- continuing from results.json alone --------------------------------------------------------


def _results_only(study: Path, tmp_path: Path, edit=None) -> Path:
    out = tmp_path / "seeded"
    out.mkdir()
    results = json.loads((study / "results.json").read_text())
    if edit is not None:
        edit(results)
    (out / "results.json").write_text(json.dumps(results))
    return out


def test_a_study_continues_from_its_results_json_alone(study, tmp_path, monkeypatch):
    before = json.loads((study / "results.json").read_text())["rows"]
    out = _results_only(study, tmp_path)
    calls = _count_trains(monkeypatch)
    assert main([TABLE, "--quick", "--out", str(out)]) == 0
    assert calls == [] and not (out / "runs").exists()
    after = json.loads((out / "results.json").read_text())["rows"]
    assert [row["runs"] for row in after] == [row["runs"] for row in before]
    assert [row["metrics"] for row in after] == [row["metrics"] for row in before]
    assert "sadlr/table4c: oIoU by SADLR iteration" in (out / "results.md").read_text()


def test_a_run_missing_from_results_json_is_trained_and_older_rows_count_as_first_seeds(study, tmp_path, monkeypatch):
    def edit(results):
        sum_row, replace_row = results["rows"]
        del sum_row["runs"], sum_row["by_iteration"]  # written before rows kept their runs
        replace_row["runs"] = []

    out = _results_only(study, tmp_path, edit)
    calls = _count_trains(monkeypatch)
    assert main([TABLE, "--quick", "--out", str(out)]) == 0
    assert calls == ["sadlr/table4c/replace seed 0"]
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [run["seed"] for run in rows[0]["runs"]] == [0] and "by_iteration" not in rows[0]["runs"][0]
    assert [len(row["metrics"]["oIoU"]["runs"]) for row in rows] == [1, 1]


def test_a_results_json_of_other_settings_or_unreadable_is_refused(study, tmp_path, capsys):
    out = _results_only(study, tmp_path, lambda results: results["settings"].update(steps=7))
    with pytest.raises(SystemExit):
        main([TABLE, "--quick", "--out", str(out)])
    assert "results.json holds a study with other settings (steps 7 -> 2)" in capsys.readouterr().err
    (out / "results.json").write_text("{not json")
    with pytest.raises(SystemExit):
        main([TABLE, "--quick", "--out", str(out)])
    assert "results.json is not a study's results.json" in capsys.readouterr().err.strip().splitlines()[-1]


def test_the_results_page_shows_the_recorded_studies_as_recorded():
    # docs/guides/results.md renders its tables from docs/results/*.json: regenerate with
    # python -m reference_models.study.page
    from reference_models.study.page import PAGE, RESULTS_DIR, render_page

    text = PAGE.read_text()
    shown = re.findall(r"<!-- study: ([\w-]+)[^>]*-->", text)
    assert shown, "the page shows no recorded study"
    assert sorted(shown) == sorted(p.stem for p in RESULTS_DIR.glob("*.json")), "every recorded study is on the page once"
    assert render_page(text) == text, "docs/guides/results.md is stale: run python -m reference_models.study.page"
    for name in shown:
        assert (RESULTS_DIR / f"{name}.md").is_file() and (RESULTS_DIR / f"{name}.png").is_file(), name


def test_a_page_block_of_a_study_without_results_is_refused(tmp_path):
    from reference_models.study.page import render_page

    with pytest.raises(FileNotFoundError, match="nowhere.json: the page shows study 'nowhere'"):
        render_page("<!-- study: nowhere -->\n<!-- end study -->\n", tmp_path)


def test_a_study_learning_rate_reaches_every_run_and_is_recorded():
    from reference_models.experiments import get_experiment
    from reference_models.study.plan import StudySettings
    from reference_models.study.runner import train_config

    settings = StudySettings(lr=5e-4)
    cfg = train_config(get_experiment("asda/table2/f"), 1, settings)
    assert cfg.resolved().lr == 5e-4
    assert train_config(get_experiment("asda/table2/f"), 1, StudySettings()).resolved().lr == 2e-3  # the tiny recipe's
    assert settings.run_identity()["lr"] == 5e-4
    with pytest.raises(ValueError, match=r"^--lr: expected a positive number; got -1"):
        StudySettings(lr=-1)
