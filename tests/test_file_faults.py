"""Fault injection with small generated files (issue 25, items 3 to 5): names read from
files, checkpoints of the wrong types under a valid digest, counters out of range, releases
with tensors that would convert silently wrong, counts that measure nothing, data with no
target at all. Each probe must end in one line naming the file or flag, or a warning.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from reference_models import build_model
from reference_models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from reference_models.cli import run
from reference_models.train import TrainConfig, train

TINY = {"train_size": 16, "val_size": 8, "batch_size": 8, "workers": 0, "grid_samples": 0}


# -- item 3: no path from a file's contents -----------------------------------------------------


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return build_model("lavt_sadlr_tiny").save_pretrained(tmp_path_factory.mktemp("start") / "start")


def _with_name(pretrained: Path, folder: Path, name) -> Path:
    folder.mkdir()
    (folder / "model.safetensors").symlink_to(pretrained / "model.safetensors")
    config = json.loads((pretrained / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "name": name}))
    return folder


@pytest.mark.parametrize("name", ["../../escaped_tiny", "/tmp/absolute_tiny", "nested/x_tiny", "unregistered_tiny"])
def test_init_from_names_no_folder_after_a_name_from_its_file(pretrained, tmp_path, monkeypatch, capsys, name):
    from reference_models.train import main

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # the default run folder is runs/<name>-<time> under the working folder
    source = _with_name(pretrained, tmp_path / "source", name)
    code = run(lambda: main(["--init-from", str(source), *"--train-size 16 --val-size 8 --max-steps 1 --workers 0".split()]), "train")
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("train: error: --init-from: "), err
    assert "config.json" in err
    assert list(work.iterdir()) in ([], [work / "runs"]) and not list((work / "runs").glob("*")) if (work / "runs").exists() else True
    assert not list(tmp_path.glob("**/escaped_tiny*")) and not list(Path("/tmp").glob("absolute_tiny-*"))


def test_a_tiny_suffix_does_not_skip_the_registry():
    from reference_models.training.config import recipe_for

    with pytest.raises(ValueError, match="unknown model 'anything_tiny'"):
        recipe_for("anything_tiny")


@pytest.mark.parametrize("text", ["[]", "null", "5", "[" * 100_000 + "]" * 100_000])
def test_init_from_a_config_json_that_is_no_object_is_one_line(tmp_path, text):
    from reference_models.training.config import init_model_config

    (tmp_path / "config.json").write_text(text)
    with pytest.raises(ValueError, match=r"^--init-from: .*config.json") as caught:
        init_model_config(str(tmp_path))
    assert "\n" not in str(caught.value)


# -- item 5: checkpoints of the wrong types under a valid digest ----------------------------------


def _plain_state() -> dict:
    return {"model": {"w": torch.zeros(2)}, "model_config": {"name": "lavt_sadlr_tiny"}, "train_config": {}}


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"model": [1, 2]}, "'model' is not a dict of named tensors"),
        ({"model": {"w": 5}}, "'model' is not a dict of named tensors"),
        ({"model": {3: torch.zeros(1)}}, "'model' is not a dict of named tensors"),
        ({"model_config": [1]}, "'model_config' is not a dict of settings"),
        ({"model_config": "lavt"}, "'model_config' is not a dict of settings"),
        ({"train_config": 5}, "'train_config' is not a dict of settings"),
    ],
)
def test_checkpoint_entries_of_the_wrong_type_are_one_line(tmp_path, change, expected):
    path = save_checkpoint({**_plain_state(), **change}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match=rf"^{path}: its {expected}"):
        load_checkpoint(path)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("run")
    train(TrainConfig(max_steps=1, **TINY), folder, progress=False)
    return folder, load_checkpoint(folder / "last.pt")


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"step": -5}, "its 'step' is not a whole number"),
        ({"epoch": 1e30}, "its 'epoch' is not a whole number"),
        ({"epoch": 10**30}, "its 'epoch' is not a whole number"),
        ({"batch_in_epoch": True}, "its 'batch_in_epoch' is not a whole number"),
        ({"best": math.nan}, "its 'best' is not a finite number"),
        ({"optimizer": [1]}, "its 'optimizer' is not a state dict"),
        ({"rng": {"torch": "seed", "python": (3, (1,), None)}}, "its 'rng' is not the random-number state"),
        ({"rng": 7}, "its 'rng' is not the random-number state"),
        ({"last_val": 3}, "its 'last_val' is not a dict"),
    ],
)
def test_resume_refuses_counters_and_states_of_the_wrong_type(finished_run, tmp_path, change, expected):
    _, state = finished_run
    save_checkpoint({**state, **change}, tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match=rf"^{tmp_path / 'last.pt'}: {expected}"):
        train(TrainConfig(max_steps=1, **TINY), tmp_path, resume=True, progress=False)


def test_resume_refuses_unknown_train_config_keys(finished_run, tmp_path):
    _, state = finished_run
    save_checkpoint({**state, "train_config": {**state["train_config"], "learning_rat": 0.1}}, tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match=r"its train_config is not valid \(unknown settings learning_rat "):
        train(TrainConfig(max_steps=1, **TINY), tmp_path, resume=True, progress=False)


# -- item 4: convert lavt refuses tensors that would convert wrong --------------------------------


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda t: t.long(), "not real floating-point numbers"),
        (lambda t: t > 0, "not real floating-point numbers"),
        (lambda t: t.to(torch.complex64), "not real floating-point numbers"),
        (lambda t: t.index_fill(0, torch.tensor([0]), math.nan), "NaN or infinite"),
        (lambda t: t.index_fill(0, torch.tensor([0]), math.inf), "NaN or infinite"),
    ],
)
def test_convert_refuses_non_float_and_non_finite_weights_by_name(tmp_path, make, expected):
    from reference_models.convert import ConversionError, convert_lavt
    from tests.fixtures_lavt import lavt_model_state, save_release

    model = lavt_model_state()
    key = "classifier.conv1_4.weight" if "classifier.conv1_4.weight" in model else next(k for k in model if k.endswith(".weight"))
    model[key] = make(model[key])
    path = save_release(tmp_path / "bad.pth", model=model)
    with pytest.raises(ConversionError, match=rf"{expected}.*{key}"):
        convert_lavt(path, tmp_path / "out", overrides={"image_size": 64})
    assert not (tmp_path / "out").exists()


# -- item 4: bench counts that measure nothing ----------------------------------------------------


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["latency", "--repeats", "-3"], "--repeats: expected an integer >= 1; got -3"),
        (["latency", "--warmup", "-1"], "--warmup: expected an integer >= 0; got -1"),
        (["layers", "--batch", "0"], "--batch: expected an integer >= 1; got 0"),
        (["layers", "--repeats", "0"], "--repeats: expected an integer >= 1; got 0"),
        (["layers", "--coparser-sizes", "0"], "--coparser-sizes: expected positive integers; got 0"),
        (["train", "--steps", "0"], "--steps: expected an integer >= 1; got 0"),
        (["train", "--batch", "-1"], "--batch: expected an integer >= 1; got -1"),
    ],
)
def test_bench_refuses_counts_that_measure_nothing_before_printing(argv, expected, capsys):
    from reference_models.bench import main

    code = run(lambda: main(argv), "bench")
    captured = capsys.readouterr()
    assert code == 2 and captured.out == "" and captured.err.strip() == f"bench: error: {expected}"


# -- item 4: data whose every target is empty ----------------------------------------------------


def test_evaluate_warns_when_every_target_is_empty():
    from torch.utils.data import DataLoader

    from reference_models.base import build_tokenizer
    from reference_models.data.samples import collate
    from reference_models.data.synthetic import SyntheticReferDataset
    from reference_models.evaluate import EmptyTargetsWarning, evaluate

    model = build_model("lavt_sadlr_tiny")
    data = SyntheticReferDataset("val", length=2, image_size=model.config.image_size, tokenizer=build_tokenizer(model.config), no_target_prob=1.0)
    with pytest.warns(EmptyTargetsWarning, match="every target mask is empty"):
        evaluate(model, DataLoader(data, batch_size=2, collate_fn=collate), protocol="resized")
    some = SyntheticReferDataset("val", length=2, image_size=model.config.image_size, tokenizer=build_tokenizer(model.config))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", EmptyTargetsWarning)
        evaluate(model, DataLoader(some, batch_size=2, collate_fn=collate), protocol="resized")


# -- item 5: the data.synthetic command ------------------------------------------------------------


def test_synthetic_export_into_proc_is_one_line(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "reference_models.data.synthetic", "--out", "/proc/rislayers-export", "--count", "1", "--quiet"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m reference_models.data.synthetic: error: "), result.stderr
    assert "/proc/rislayers-export" in lines[0]


def test_a_full_disk_mid_export_is_one_line_and_the_rerun_goes_through(tmp_path, monkeypatch, capsys):
    import errno

    from PIL import Image

    from reference_models.data.export import main

    real_save, saved = Image.Image.save, []

    def full_after_two(self, path, *args, **kwargs):
        if len(saved) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        saved.append(path)
        return real_save(self, path, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", full_after_two)
    argv = ["--out", str(tmp_path / "data"), "--count", "5", "--quiet"]
    code = run(lambda: main(argv), "synthetic")
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "no space left on device writing" in err and "train_000002.png" in err, err
    monkeypatch.undo()
    # the half export (pictures, no annotation files) does not block the rerun, without --overwrite
    assert main(argv) == 0
    assert (tmp_path / "data" / "synthetic" / "instances.json").is_file()
    with pytest.raises(SystemExit) as stopped:  # a finished export still needs --overwrite
        main(argv)
    assert stopped.value.code == 2 and "already holds an export" in capsys.readouterr().err
