"""The last silent loads and tracebacks of issue 25 (items 4 and 5), each one line now.

- weights whose kind (floating, integer, bool, complex) differs from the model's, or floating
  weights holding NaN or infinity, in a ``model.safetensors`` or any state dict: refused,
  naming the file and the first key;
- a run folder whose ``config.json`` is not a JSON object (``[]``, ``5``, deeply nested,
  truncated): one line naming it, in ``find_checkpoint``, ``load_model`` and ``evaluate``;
- a study's ``study.json`` or ``results.json`` that is truncated or has values of the wrong
  types: one line naming the file; a damaged ``evaluation.json`` is evaluated again;
- ``python -m reference_models.data.export`` wrapped like every other command.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from reference_models import RISModel, build_model
from reference_models.checkpoint import find_checkpoint, load_model
from reference_models.cli import run
from reference_models.weights import WeightsError, load_weights

ROOT = Path(__file__).resolve().parents[1]
DEEP = "[" * 100_000 + "]" * 100_000


# -- item 4: weights of the wrong kind, and non-finite weights -----------------------------------


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return build_model("lavt_tiny").save_pretrained(tmp_path_factory.mktemp("pretrained") / "model")


def _edited(pretrained: Path, folder: Path, edit) -> tuple[Path, str]:
    """A copy of ``pretrained`` whose weights went through ``edit(state) -> key changed``."""
    folder.mkdir()
    (folder / "config.json").write_bytes((pretrained / "config.json").read_bytes())
    state = load_file(str(pretrained / "model.safetensors"))
    key = edit(state)
    save_file(state, str(folder / "model.safetensors"))
    return folder, key


def _first(state: dict[str, torch.Tensor], floating: bool) -> str:
    return next(k for k, v in state.items() if v.is_floating_point() == floating and v.numel() > int(floating))


def _to_int(state):
    key = _first(state, floating=True)
    state[key] = state[key].round().to(torch.int32)
    return key


def _to_bool(state):
    key = _first(state, floating=True)
    state[key] = state[key] > 0
    return key


def _index_to_float(state):
    key = _first(state, floating=False)  # an integer buffer (a norm's num_batches_tracked)
    state[key] = state[key].float()
    return key


def _nan(state):
    key = _first(state, floating=True)
    state[key] = state[key].clone()
    state[key].view(-1)[0] = float("nan")
    return key


def _inf(state):
    key = _first(state, floating=True)
    state[key] = torch.full_like(state[key], float("-inf"))
    return key


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (_to_int, "kind differs from the model's"),
        (_to_bool, "kind differs from the model's"),
        (_index_to_float, "kind differs from the model's"),
        (_nan, "NaN or infinite values"),
        (_inf, "NaN or infinite values"),
    ],
    ids=["int", "bool", "float-index", "nan", "inf"],
)
def test_model_safetensors_of_the_wrong_kind_or_non_finite_is_refused_by_name(pretrained, tmp_path, edit, words):
    folder, key = _edited(pretrained, tmp_path / "edited", edit)
    for load in (RISModel.from_pretrained, load_model, lambda path: RISModel.from_pretrained(path, strict=False)):
        with pytest.raises(WeightsError) as info:
            load(folder)
        message = str(info.value)
        assert message.startswith(f"{folder / 'model.safetensors'}: refusing weights") and "\n" not in message, message
        assert words in message and f": {key}" in message, message


def test_evaluate_refuses_int_weights_in_one_line(pretrained, tmp_path, capsys):
    from reference_models.evaluate import main

    folder, key = _edited(pretrained, tmp_path / "edited", _to_int)
    code = run(lambda: main(["--checkpoint", str(folder), "--size", "2", "--workers", "0"]), "evaluate")
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith(f"evaluate: error: {folder / 'model.safetensors'}: ") and key in err and "int32" in err, err


def test_a_state_dict_of_another_float_precision_still_loads():
    layer = torch.nn.Linear(3, 2)
    load_weights(layer, {k: v.to(torch.float16) for k, v in torch.nn.Linear(3, 2).state_dict().items()})
    assert layer.weight.dtype == torch.float32


def test_complex_weights_are_refused():
    layer = torch.nn.Linear(2, 1)
    state = {"weight": torch.ones(1, 2, dtype=torch.complex64), "bias": torch.zeros(1)}
    with pytest.raises(WeightsError, match=r"^state dict: refusing weights whose kind .*: weight \(complex64 where the model holds float32\)"):
        load_weights(layer, state)


# -- item 5: a run folder whose config.json is not an object -------------------------------------


@pytest.mark.parametrize("content", ["[]", "5", "null", '"run"', DEEP, '{"model": {"name": "lavt_tiny"}, "tr', "\udcff"],
                         ids=["list", "int", "null", "string", "deep", "truncated", "not-utf8"])
def test_a_run_folder_with_a_config_that_is_not_an_object_is_one_line(tmp_path, capsys, content):
    from reference_models.evaluate import main

    run_folder = tmp_path / "run"
    run_folder.mkdir()
    (run_folder / "config.json").write_bytes(content.encode("utf-8", "surrogateescape"))
    (run_folder / "best.pt").write_bytes(b"")
    config = run_folder / "config.json"
    for call in (find_checkpoint, load_model):
        with pytest.raises(ValueError) as info:
            call(run_folder)
        message = str(info.value)
        assert message.startswith(f"{config}: ") and "\n" not in message and len(message) < 400, message
        assert f"pass the checkpoint file ({run_folder / 'best.pt'})" in message
    code = run(lambda: main(["--checkpoint", str(run_folder)]), "evaluate")
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith(f"evaluate: error: {config}: ") and len(err.splitlines()) == 1, err


def test_a_save_pretrained_folder_with_a_list_for_config_is_named(pretrained, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes((pretrained / "model.safetensors").read_bytes())
    (folder / "config.json").write_text("[]")
    with pytest.raises(ValueError, match=rf"^{folder / 'config.json'}: expected a JSON object; got list$"):
        RISModel.from_pretrained(folder)


# -- item 5: study files of the wrong types, half written ----------------------------------------


def _study(out: Path, capsys) -> str:
    from reference_models.study.cli import main

    with pytest.raises(SystemExit) as stop:  # refused by the parser, before anything trains
        main(["sadlr/table4c/replace", "--quick", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(err.splitlines()) == 1 and not (out / "runs").exists(), err
    return err


@pytest.mark.parametrize("content", ['{"level": 1, "ste', "[]", "5", DEEP], ids=["truncated", "list", "int", "deep"])
def test_a_damaged_study_json_is_named(tmp_path, capsys, content):
    out = tmp_path / "study"
    out.mkdir()
    (out / "study.json").write_text(content)
    assert _study(out, capsys).startswith(f"python -m reference_models.study: error: --out: {out / 'study.json'}: ")


def _settings() -> dict:
    from reference_models.study.plan import QUICK_SETTINGS

    return QUICK_SETTINGS.run_identity()


@pytest.mark.parametrize(
    ("results", "says"),
    [
        (DEEP, "not readable as JSON"),
        ("[]", "expected a JSON object; got list"),
        ({"settings": 5, "rows": []}, "settings: expected an object"),
        ({"rows": [5]}, "rows[0]: expected an object"),
        ({"rows": [{"experiment": "sadlr/table4c/replace", "runs": [{"seed": 0, "metrics": {"oIoU": "high"}}]}]},
         "runs[0]: metrics.oIoU: expected a number"),
        ({"rows": [{"experiment": "sadlr/table4c/replace", "runs": [{"seed": "0", "metrics": {"oIoU": 0.5}}]}]},
         "runs[0]: seed: expected an integer"),
        ({"rows": [{"experiment": "sadlr/table4c/replace", "runs": [{"seed": 0, "metrics": {"oIoU": 0.5}, "by_iteration": 5}]}]},
         "runs[0]: by_iteration: expected a list"),
        ({"rows": [{"experiment": "asda/table2/f", "runs": [{"seed": 0, "metrics": {"oIoU": 0.5}, "selection": {"low": 3}}]}]},
         "runs[0]: selection.low: expected"),
        ({"rows": [{"experiment": "sadlr/table4c/replace", "metrics": {"oIoU": {"runs": ["x"]}}}]}, "its runs cannot be read"),
    ],
    ids=["deep", "list", "settings", "row", "metric", "seed", "by-iteration", "selection", "old-row"],
)
def test_a_results_json_of_the_wrong_types_is_named(tmp_path, capsys, results, says):
    out = tmp_path / "study"
    out.mkdir()
    if isinstance(results, dict):
        results = json.dumps({"settings": _settings(), **results})
    (out / "results.json").write_text(results)
    err = _study(out, capsys)
    assert err.startswith(f"python -m reference_models.study: error: --out: {out / 'results.json'} is not a study's results.json (")
    assert says in err, err


@pytest.mark.parametrize("content", [DEEP, '{"metrics": {"oIoU": "high"}}', '{"metrics": {"oIoU": 0.5}, "by_iteration": {}}', '{"metr'])
def test_a_damaged_evaluation_json_leaves_the_run_to_evaluate_again(tmp_path, content):
    from reference_models.study.runner import EVALUATION_FILE, read_evaluation, run_state

    (tmp_path / "summary.json").write_text("{}")
    (tmp_path / EVALUATION_FILE).write_text(content)
    assert read_evaluation(tmp_path) is None and run_state(tmp_path) == "trained"


@pytest.mark.parametrize("config", [DEEP, '{"model": [1]}', '{"model": "lavt"}', "[]"])
def test_a_damaged_run_config_expects_no_measurement(tmp_path, config):
    from reference_models.study.runner import expected_measurements

    (tmp_path / "config.json").write_text(config)
    assert expected_measurements(tmp_path) == ()


def test_the_recorded_studies_still_read(tmp_path):
    from reference_models.study.cli import recorded_runs
    from reference_models.study.plan import DEFAULT_SETTINGS, plan_study

    for path in sorted((ROOT / "docs" / "results").glob("*.json")):
        out = tmp_path / path.stem
        out.mkdir()
        (out / "results.json").write_bytes(path.read_bytes())
        names = [row["experiment"] for row in json.loads(path.read_text())["rows"]]
        assert recorded_runs(plan_study(names, DEFAULT_SETTINGS), out), path.name


# -- item 5: data.export as a command ------------------------------------------------------------


def test_data_export_errors_are_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = subprocess.run(
        [sys.executable, "-m", "reference_models.data.export", "--out", str(blocker / "data"), "--count", "1", "--quiet"],
        cwd=tmp_path, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.startswith("python -m reference_models.data.export: error: ") and str(blocker) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
