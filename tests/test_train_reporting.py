"""What a training run tells its user (first lines, units, recorded data, epochs that run,
samples.png) and how its parts are laid out (the text-blind transform, the loop's state,
the run's attributes)."""

from __future__ import annotations

import ast
import inspect
import json
import re
from pathlib import Path

import numpy as np
import torch

from reference_models.training import TrainConfig, main, train

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--train-size", "8", "--val-size", "4", "--batch-size", "4", "--workers", "0", "--grid-samples", "2", "--threads", "1"]


def test_a_run_says_what_it_does_reports_percent_and_records_its_data(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CI", raising=False)  # the progress bars on, as a person sees them
    # 2 steps an epoch; --max-steps 3 ends the run in its second epoch of 5
    assert main([*QUICK, "--epochs", "5", "--max-steps", "3", "--out", str(tmp_path / "run")]) == 0
    out, err = capsys.readouterr()
    first = err.replace("\r", "\n").splitlines()[:4]
    assert first[0] == f"run folder: {tmp_path / 'run'}"
    assert first[1].startswith("model: lavt_sadlr_tiny (") and first[1].endswith("M parameters) on cpu")
    assert first[2] == "data: the generated benchmark at level 1 (seed 0): 8 training and 4 validation samples"
    assert first[3].startswith("steps: 3 in 2 epoch(s) of 2 (batch 4)")
    # the bars count the epochs that run, not --epochs
    assert re.findall(r"epoch \d/(\d)", err) and set(re.findall(r"epoch \d/(\d)", err)) == {"2"}

    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["units"].startswith("fractions")
    lines = out.splitlines()
    assert set(summary["val"]) >= {"oIoU", "mIoU", "P@0.5"}
    figures = ", ".join(f"{key} {100 * value:.2f}" for key, value in summary["val"].items())
    assert lines[-1] == f"val {figures} (percent); best val oIoU {100 * summary['best_val_oIoU']:.2f}"
    assert lines[-2].startswith("lavt_sadlr_tiny: 3 steps (1 full epoch) in ")

    config = json.loads((tmp_path / "run" / "config.json").read_text())["train"]
    assert (config["data"], config["dataset"], config["split_by"], config["level"]) == ("synthetic", None, None, 1)

    # resuming a longer run: the message counts the epochs that will run
    state_path = tmp_path / "run" / "last.pt"
    from reference_models.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(state_path)
    state["train_config"]["max_steps"] = 5
    save_checkpoint(state, state_path)
    capsys.readouterr()
    assert main(["--out", str(tmp_path / "run"), "--resume"]) == 0
    assert f"resuming {tmp_path / 'run'} from step 3 of 5 (epoch 2 of 3)" in capsys.readouterr().err


def test_validation_lines_print_percent(tmp_path, capsys):
    train(TrainConfig(train_size=4, val_size=4, batch_size=4, epochs=1, workers=0, grid_samples=0), tmp_path, progress=True)
    line = next(x for x in capsys.readouterr().err.replace("\r", "\n").splitlines() if x.startswith("epoch 1: "))
    assert line.endswith("(percent)") and re.search(r"oIoU \d+\.\d\d,", line)


def test_text_blind_is_a_dataset_transform_that_keeps_the_sentence():
    from reference_models import build_model
    from reference_models.base import build_tokenizer
    from reference_models.training.data import build_datasets

    model = build_model("lavt_tiny")
    cfg = TrainConfig(train_size=3, val_size=2, text_blind=True).resolved()
    train_set, val_set = build_datasets(cfg, model)
    plain, _ = build_datasets(TrainConfig(train_size=3, val_size=2).resolved(), model)
    constant = build_tokenizer(model.config)("object")
    for dataset in (train_set, val_set):
        for i in range(len(dataset)):
            assert torch.equal(dataset[i]["input_ids"], constant.input_ids)
            assert torch.equal(dataset[i]["attention_mask"], constant.attention_mask)
    assert train_set[0]["sentence"] == plain[0]["sentence"] and torch.equal(train_set[0]["image"], plain[0]["image"])
    # nothing in the optimisation loop or validation knows of the control
    for module in ("loop", "validation"):
        assert "text_blind" not in (ROOT / "reference_models" / "training" / f"{module}.py").read_text()


def test_the_loop_takes_a_state_object_and_the_run_sets_every_attribute_in_init():
    from reference_models.training import loop, run

    assert list(inspect.signature(loop.train_epoch).parameters) == ["state", "loader", "hooks"]
    tree = ast.parse(inspect.getsource(run._Run))
    assigned: dict[str, set[str]] = {}
    for method in (n for n in tree.body[0].body if isinstance(n, ast.FunctionDef)):
        for node in ast.walk(method):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else []
            if isinstance(node, ast.withitem) and node.optional_vars is not None:
                targets = [node.optional_vars]
            for target in targets:
                # self.x = ..., and self.x inside a, self.x = ...; not self.x.y = ...
                for t in target.elts if isinstance(target, ast.Tuple) else [target]:
                    if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self":
                        assigned.setdefault(method.name, set()).add(t.attr)
    in_init = assigned.pop("__init__")
    outside = {name: sorted(attrs - in_init) for name, attrs in assigned.items() if attrs - in_init}
    assert not outside, f"attributes first set outside __init__: {outside}"


def _kept(iou: float, red: bool = False) -> dict:
    image = torch.zeros(3, 8, 8)
    if red:
        image[0] = 1.0
    target = np.zeros((8, 8), bool)
    target[2:6, 2:6] = True
    return {"image": image, "sentence": "the red square", "target": target, "predictions": [target.copy()], "iou": iou, "rank": "best"}


def test_samples_show_a_legend_each_iou_and_the_worst_beside_the_best():
    from reference_models.training.pictures import sample_figure
    from reference_models.training.validation import KeptSamples

    kept = KeptSamples(4)
    for i, iou in enumerate([0.5, 0.9, 0.1, 0.7, 0.3, 0.95]):
        kept.consider(iou, lambda i=i: _kept(iou))
    rows = kept.rows()
    assert [(r["rank"], r["iou"]) for r in rows] == [("best", 0.95), ("best", 0.9), ("worst", 0.1), ("worst", 0.3)]

    fig = sample_figure(rows, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["ground truth", "prediction"]
    labels = [row_axes.get_ylabel() for row_axes in np.array(fig.axes).reshape(4, 3)[:, 0]]
    assert labels == ["best 1\nIoU 95.0", "best 2\nIoU 90.0", "worst 1\nIoU 10.0", "worst 2\nIoU 30.0"]
    assert fig.axes[2].get_xlabel() == "IoU 100.0"  # each prediction panel's own IoU


def test_a_small_validation_set_keeps_each_sample_once():
    from reference_models.training.validation import KeptSamples

    kept = KeptSamples(6)
    for i, iou in enumerate([0.2, 0.8, 0.5]):
        kept.consider(iou, lambda i=i: {"id": i})
    assert [(r["id"], r["rank"]) for r in kept.rows()] == [(1, "best"), (2, "best"), (0, "best")]


def test_the_prediction_tint_shows_on_every_object_colour_red_included():
    from reference_models.data.lexicon import COLOURS
    from reference_models.training.pictures import prediction_panel

    for name, colour in COLOURS.items():
        picture = np.broadcast_to(np.array(colour, np.uint8), (4, 4, 3)).copy()
        tinted = prediction_panel(picture, np.ones((4, 4), bool))[0, 0].astype(int)
        # a red tint moved the benchmark's red by 30 (sum over channels): not to be seen
        assert np.abs(tinted - np.array(colour)).sum() > 90, name
