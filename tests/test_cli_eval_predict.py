"""``python -m reference_models.evaluate`` and ``predict``: data defaults, devices, paths, errors.

The checkpoints here are an untrained ``lavt_sadlr_tiny`` saved with the project's own
:func:`save_checkpoint` (no training run): what is tested is which file is read, which data
is built and which error a user sees, not accuracy.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reference_models import build_model
from reference_models.checkpoint import CheckpointError, find_checkpoint, load_checkpoint, load_model_and_train_config, save_checkpoint
from reference_models.cli import run
from reference_models.data.tokenizers import WordTokenizer
from reference_models.evaluate import main as evaluate_main
from reference_models.predict import main as predict_main
from reference_models.predict import predict, token_count
from reference_models.train import TrainConfig

FAST = ["--size", "2", "--batch-size", "2", "--workers", "0", "--device", "cpu"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("lavt_sadlr_tiny")


def _save_run(folder: Path, model, train: TrainConfig | None, names=("best.pt", "last.pt")) -> Path:
    """A run folder as training leaves it: config.json plus checkpoints holding both configs."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {"model": model.state_dict(), "model_config": model.config.to_dict()}
    if train is not None:
        state["train_config"] = train.to_dict()
        (folder / "config.json").write_text(json.dumps({"train": train.to_dict(), "model": model.config.to_dict()}))
    for name in names:
        save_checkpoint(state, folder / name)
    return folder


@pytest.fixture
def spy_data(monkeypatch):
    """Records the data options each evaluated split was built with."""
    import reference_models.evaluate as evaluate_module

    calls: list[dict] = []
    real = evaluate_module._dataset

    def recording(model_config, **options):
        calls.append(options)
        return real(model_config, **options)

    monkeypatch.setattr(evaluate_module, "_dataset", recording)
    return calls


@pytest.fixture
def photo(tmp_path) -> Path:
    path = tmp_path / "photo.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(path)
    return path


# -- evaluate: data defaults from the checkpoint ----------------------------------------------


def test_evaluate_uses_the_training_level_and_seed_unless_given(tmp_path, model, spy_data, capsys):
    run_dir = _save_run(tmp_path / "run", model, TrainConfig(level=3, seed=5))
    assert evaluate_main(["--checkpoint", str(run_dir / "best.pt"), *FAST]) == 0
    assert (spy_data[-1]["data"], spy_data[-1]["level"], spy_data[-1]["seed"]) == ("synthetic", 3, 5)
    err = capsys.readouterr().err
    assert f"evaluating {run_dir / 'best.pt'} on synthetic level 3 (seed 5, 2 samples), split val" in err
    assert "(--data, --level, --seed from the checkpoint's training config)" in err

    assert evaluate_main(["--checkpoint", str(run_dir / "best.pt"), "--level", "2", "--seed", "1", *FAST]) == 0
    assert (spy_data[-1]["level"], spy_data[-1]["seed"]) == (2, 1)
    assert "(--data from the checkpoint's training config)" in capsys.readouterr().err


def test_evaluate_standard_level_run_and_save_pretrained_folder_get_level_one(tmp_path, model, spy_data, capsys):
    run_dir = _save_run(tmp_path / "run", model, TrainConfig())  # level None: the standard level
    assert evaluate_main(["--checkpoint", str(run_dir / "last.pt"), *FAST]) == 0
    assert spy_data[-1]["level"] == 1

    folder = model.save_pretrained(tmp_path / "pretrained")
    assert evaluate_main(["--checkpoint", str(folder), *FAST]) == 0
    assert (spy_data[-1]["data"], spy_data[-1]["level"], spy_data[-1]["seed"]) == ("synthetic", 1, 0)
    assert "at the default: the checkpoint holds no training config" in capsys.readouterr().err


def test_evaluate_on_a_refer_export_takes_dataset_and_data_from_the_checkpoint(tmp_path, model, spy_data, capsys):
    from reference_models.data.synthetic import export_refer

    root = tmp_path / "refer"
    export_refer(root, counts={"train": 1, "val": 2, "test": 1}, image_size=64, progress=False)
    run_dir = _save_run(tmp_path / "run", model, TrainConfig(data=f"refer:{root}", dataset="synthetic"))
    # the user repeats --data but not --dataset: refcoco would not be found in this export
    assert evaluate_main(["--checkpoint", str(run_dir / "best.pt"), "--data", f"refer:{root}", *FAST]) == 0
    assert spy_data[-1]["dataset"] == "synthetic"
    assert evaluate_main(["--checkpoint", str(run_dir / "best.pt"), *FAST]) == 0
    assert (spy_data[-1]["data"], spy_data[-1]["dataset"], spy_data[-1]["split_by"]) == (f"refer:{root}", "synthetic", "unc")
    assert "(--data, --dataset, --split-by from the checkpoint's training config)" in capsys.readouterr().err


def test_evaluate_names_a_training_data_folder_that_is_not_here(tmp_path, model):
    run_dir = _save_run(tmp_path / "run", model, TrainConfig(data=f"refer:{tmp_path / 'elsewhere'}", dataset="refcocog", split_by="umd"))
    with pytest.raises(FileNotFoundError, match=r"--data: the checkpoint was trained on 'refer:.*elsewhere', which is not here"):
        evaluate_main(["--checkpoint", str(run_dir / "best.pt"), *FAST])


def test_evaluate_help_states_the_defaults(capsys):
    with pytest.raises(SystemExit):
        evaluate_main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: the checkpoint's training level, else 1)" in text
    assert "(default: 500)" in text and "(default: the checkpoint's training data, else synthetic)" in text


# -- run folders ----------------------------------------------------------------------------


def test_a_run_folder_stands_for_its_best_then_last_checkpoint(tmp_path, model):
    both = _save_run(tmp_path / "both", model, TrainConfig())
    assert find_checkpoint(both) == both / "best.pt"
    only_last = _save_run(tmp_path / "last", model, TrainConfig(), names=("last.pt",))
    assert find_checkpoint(only_last) == only_last / "last.pt"
    pretrained = model.save_pretrained(tmp_path / "pretrained")
    assert find_checkpoint(pretrained) == pretrained
    loaded, train = load_model_and_train_config(both)
    assert train["model"] == "lavt_sadlr_tiny" and loaded.config == model.config
    empty_run = _save_run(tmp_path / "empty", model, TrainConfig(), names=())
    with pytest.raises(FileNotFoundError, match="empty: a training run folder without best.pt or last.pt"):
        find_checkpoint(empty_run)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(FileNotFoundError, match="nothing: expected a training run folder .* found neither"):
        find_checkpoint(tmp_path / "nothing")


def test_evaluate_and_predict_accept_a_run_folder(tmp_path, model, photo, capsys):
    run_dir = _save_run(tmp_path / "run1", model, TrainConfig())
    assert evaluate_main(["--checkpoint", str(run_dir), *FAST]) == 0
    assert f"{run_dir}: a training run folder; evaluating its best.pt" in capsys.readouterr().err
    out = tmp_path / "pred.png"
    assert predict_main(["--checkpoint", str(run_dir), "--image", str(photo), "--text", "the red circle", "--out", str(out), "--device", "cpu"]) == 0
    assert f"{run_dir}: a training run folder; using its best.pt" in capsys.readouterr().err
    assert out.is_file() and (tmp_path / "pred_mask.png").is_file()


# -- devices ---------------------------------------------------------------------------------


@pytest.mark.parametrize("tool", ["evaluate", "predict"])
def test_a_bad_device_is_refused_before_anything_is_loaded(tool, tmp_path, photo):
    # the checkpoint does not exist: a device error proves the device was checked first
    args = ["--checkpoint", str(tmp_path / "missing.pt")]
    main = evaluate_main
    if tool == "predict":
        args += ["--image", str(photo), "--text", "x", "--out", str(tmp_path / "o.png")]
        main = predict_main
    with pytest.raises(ValueError, match=r"^--device: .*'gpu'"):
        main([*args, "--device", "gpu"])
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"^--device: 'cuda' requested but torch.cuda.is_available\(\) is False"):
            main([*args, "--device", "cuda"])
    with pytest.raises(ValueError, match=r"^--device: 'cuda:99' requested but"):
        main([*args, "--device", "cuda:99"])


# -- damaged checkpoints ----------------------------------------------------------------------


def _one_line_error(capsys, path: Path) -> str:
    code = run(lambda: evaluate_main(["--checkpoint", str(path), "--device", "cpu"]), "evaluate")
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "weights_only" not in err and "issue" not in err
    return err.strip()


def test_damaged_and_foreign_checkpoints_are_one_short_line(tmp_path, model, capsys):
    good = _save_run(tmp_path / "run", model, TrainConfig()) / "best.pt"
    truncated = tmp_path / "best.pt"
    truncated.write_bytes(good.read_bytes()[:5000])
    assert _one_line_error(capsys, truncated) == f"evaluate: error: {truncated}: cannot read checkpoint (the file is truncated or corrupt)"
    png = tmp_path / "photo.png"
    Image.new("RGB", (8, 8)).save(png)
    assert _one_line_error(capsys, png) == f"evaluate: error: {png}: not a checkpoint (cannot read it as a torch zip file)"
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    assert _one_line_error(capsys, empty).endswith("empty.pt: cannot read checkpoint (the file is truncated or corrupt)")
    pickled = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), pickled)  # a pickled object, which weights_only refuses
    assert _one_line_error(capsys, pickled).endswith("module.pt: not a checkpoint (a zip file torch cannot read as tensors and plain values)")
    archive = tmp_path / "archive.pt"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("notes.txt", "hello")
    assert "archive.pt: not a checkpoint" in _one_line_error(capsys, archive)


def test_load_errors_keep_torchs_exception_for_debugging(tmp_path):
    png = tmp_path / "photo.png"
    Image.new("RGB", (8, 8)).save(png)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(png)
    assert info.value.__cause__ is not None


# -- predict: text and paths ------------------------------------------------------------------


@pytest.fixture
def checkpoint(tmp_path, model) -> Path:
    return _save_run(tmp_path / "run", model, TrainConfig()) / "best.pt"


def _predict(checkpoint: Path, image: Path, out: Path, text: str = "the red circle", *extra: str) -> int:
    return predict_main(["--checkpoint", str(checkpoint), "--image", str(image), "--text", text, "--out", str(out), "--device", "cpu", *extra])


@pytest.mark.parametrize("text", ["", "   ", "\t\n"])
def test_predict_refuses_an_empty_sentence(text, checkpoint, photo, tmp_path, model):
    with pytest.raises(ValueError, match="^--text: expected a non-empty sentence"):
        _predict(checkpoint, photo, tmp_path / "o.png", text)
    with pytest.raises(ValueError, match="^sentence: expected a non-empty sentence"):
        predict(model, Image.open(photo).convert("RGB"), text)


def test_predict_warns_when_the_sentence_is_cut(checkpoint, photo, tmp_path, capsys):
    long = " ".join(["the red circle left of the blue square"] * 4)  # 32 words
    assert _predict(checkpoint, photo, tmp_path / "long.png", long) == 0
    err = capsys.readouterr().err
    assert "warning: --text is 34 tokens long (special tokens included); the model reads 20, so it was cut to 20 tokens" in err
    assert _predict(checkpoint, photo, tmp_path / "short.png") == 0
    assert "warning" not in capsys.readouterr().err


def test_token_count_counts_past_the_limit():
    assert token_count(WordTokenizer(max_length=5), "a b c d e f") == 8
    assert token_count(WordTokenizer(max_length=20), "red") == 3


def test_predict_never_overwrites_the_input_image(checkpoint, photo, tmp_path):
    before = photo.read_bytes()
    with pytest.raises(ValueError, match=r"^--out: would overwrite the input image .*photo.png"):
        _predict(checkpoint, photo, photo, "x", "--overwrite")
    # the same file by another spelling
    with pytest.raises(ValueError, match=r"^--out: would overwrite the input image"):
        _predict(checkpoint, photo, tmp_path / "." / "sub" / ".." / "photo.png", "x", "--overwrite")
    assert photo.read_bytes() == before


def test_predict_refuses_the_mask_of_out_landing_on_the_image(checkpoint, tmp_path):
    # the mask file of --out pic.png is pic_mask.png
    image = tmp_path / "pic_mask.png"
    Image.new("RGB", (20, 20), (10, 200, 10)).save(image)
    before = image.read_bytes()
    with pytest.raises(ValueError, match=r"^--out: would overwrite the input image .*pic_mask.png with the mask"):
        _predict(checkpoint, image, tmp_path / "pic.png", "x", "--overwrite")
    assert image.read_bytes() == before


@pytest.mark.parametrize("name", ["xnoext", "x.gif", "x.txt"])
def test_predict_requires_an_image_suffix_for_out(name, checkpoint, photo, tmp_path):
    with pytest.raises(ValueError, match=rf"^--out: expected a file ending in .png, .jpg or .jpeg; got '.*{name}'"):
        _predict(checkpoint, photo, tmp_path / name)


def test_predict_writes_jpeg_overlays(checkpoint, photo, tmp_path):
    assert _predict(checkpoint, photo, tmp_path / "x.JPG") == 0
    with Image.open(tmp_path / "x.JPG") as picture, Image.open(tmp_path / "x_mask.png") as mask:
        assert picture.format == "JPEG" and picture.size == mask.size == (40, 30)


def test_predict_says_when_image_is_a_folder(checkpoint, tmp_path):
    (tmp_path / "pictures").mkdir()
    with pytest.raises(ValueError, match=r"^--image: .*pictures is a folder; expected an image file"):
        _predict(checkpoint, tmp_path / "pictures", tmp_path / "o.png")


def test_predict_keeps_existing_outputs_unless_overwrite(checkpoint, photo, tmp_path):
    out, mask = tmp_path / "o.png", tmp_path / "o_mask.png"
    out.write_bytes(b"mine")
    with pytest.raises(ValueError, match=r"^--out: /.*o.png already exists; pass --overwrite to replace it"):
        _predict(checkpoint, photo, out)
    assert out.read_bytes() == b"mine"
    out.unlink()
    mask.write_bytes(b"mine")
    with pytest.raises(ValueError, match=r"^--out: its mask file .*o_mask.png already exists; pass --overwrite"):
        _predict(checkpoint, photo, out)
    assert mask.read_bytes() == b"mine" and not out.exists()
    assert _predict(checkpoint, photo, out, "the red circle", "--overwrite") == 0
    with Image.open(mask) as written:
        assert written.size == (40, 30) and set(np.unique(np.asarray(written)).tolist()) <= {0, 255}


# -- evaluate: threshold and expression length -------------------------------------------------


class _FixedLogits(torch.nn.Module):
    """Returns the same logits for every batch: one row per sample, as given."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, images, input_ids, attention_mask):
        from types import SimpleNamespace

        return SimpleNamespace(logits=self.logits[: images.shape[0], None])


def _batch(masks: torch.Tensor, sentences: list[str]) -> dict:
    b = masks.shape[0]
    return {"image": torch.zeros(b, 3, 1, 4), "input_ids": torch.zeros(b, 2, dtype=torch.long),
            "attention_mask": torch.ones(b, 2, dtype=torch.long), "mask": masks, "sentence": sentences}


def test_evaluate_threshold_is_on_the_foreground_probability():
    from reference_models.evaluate import evaluate, logit_threshold

    # probabilities 0.2, 0.45, 0.55, 0.8 along one row; the target is the two right pixels
    probs = torch.tensor([[[0.2, 0.45, 0.55, 0.8]]])
    model = _FixedLogits(torch.logit(probs))
    batch = _batch(torch.tensor([[[False, False, True, True]]]), ["the two on the right"])
    oiou = {t: evaluate(model, [batch], protocol="resized", threshold=t)["oIoU"] for t in (0.1, 0.3, 0.5, 0.7, 0.9)}
    # predicted: 4 pixels (IoU 2/4), 3 (2/3), 2 (exact), 1 (1/2), none (0)
    assert oiou == pytest.approx({0.1: 0.5, 0.3: 2 / 3, 0.5: 1.0, 0.7: 0.5, 0.9: 0.0})
    assert logit_threshold(0.5) == 0.0
    for bad in (0.0, 1.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="threshold: expected a probability strictly between 0 and 1"):
            evaluate(model, [batch], protocol="resized", threshold=bad)


def test_evaluate_reports_oiou_by_expression_length():
    from reference_models.evaluate import LENGTH_BUCKETS, _table, evaluate, length_bucket

    assert [length_bucket(s) for s in ("cat", "  red  cat ", "the red cat", "a b c d", "a b c d e", " ".join("w" * 30))] == [
        "1", "2", "3-4", "3-4", "5-20", "5-20"]
    # four samples of one row of 4 pixels; the prediction is the left two pixels everywhere
    model = _FixedLogits(torch.tensor([[[5.0, 5.0, -5.0, -5.0]]]).repeat(4, 1, 1))
    masks = torch.tensor([[[True, True, False, False]], [[True, False, False, False]], [[False, False, True, True]], [[True, True, True, False]]])
    sentences = ["left", "the far left", "right two", "left three"]
    result = evaluate(model, [_batch(masks, sentences)], protocol="resized", length_buckets=LENGTH_BUCKETS)
    assert result["oIoU_by_length"] == {
        "1": {"oIoU": 1.0, "samples": 1},            # exact
        "2": {"oIoU": pytest.approx(2 / 7), "samples": 2},  # I = 0 + 2, U = 4 + 3
        "3-4": {"oIoU": 0.5, "samples": 1},          # I = 1, U = 2
        "5-20": {"oIoU": None, "samples": 0},
    }
    table = _table({"val": result})
    assert "oIoU by expression length" in table and "100.00 (1)" in table and "28.57 (2)" in table
    assert "oIoU_by_length" not in evaluate(model, [_batch(masks, sentences)], protocol="resized")


def test_evaluate_cli_threshold_and_lengths_in_the_json(tmp_path, model, capsys):
    run_dir = _save_run(tmp_path / "run", model, TrainConfig())
    out = tmp_path / "m.json"
    assert evaluate_main(["--checkpoint", str(run_dir), *FAST, "--threshold", "0.7", "--json", str(out)]) == 0
    results = json.loads(out.read_text())["val"]
    assert set(results["oIoU_by_length"]) == {"1", "2", "3-4", "5-20"}
    assert sum(b["samples"] for b in results["oIoU_by_length"].values()) == 2
    assert "oIoU by expression length" in capsys.readouterr().out
    with pytest.raises(ValueError, match="--threshold: expected a probability"):
        evaluate_main(["--checkpoint", str(run_dir), *FAST, "--threshold", "1"])


# -- evaluate: SADLR iterations and the protocols on the command line ---------------------------


@pytest.mark.parametrize("protocol", ["original", "resized"])
def test_evaluate_cli_prints_and_writes_every_sadlr_iteration(protocol, tmp_path, model, capsys):
    run_dir = _save_run(tmp_path / "run", model, TrainConfig())
    out = tmp_path / "m.json"
    assert evaluate_main(["--checkpoint", str(run_dir), *FAST, "--protocol", protocol, "--json", str(out)]) == 0
    results = json.loads(out.read_text())["val"]
    iterations = results["by_iteration"]
    assert len(iterations) == model.config.head.iters
    assert iterations[-1] == {key: results[key] for key in iterations[-1]}
    assert "selection" not in results  # no layer selector in LAVT
    printed = capsys.readouterr().out
    assert "SADLR: the mask of each refinement iteration (the last is the prediction)" in printed


def test_evaluate_help_describes_both_protocols(capsys):
    with pytest.raises(SystemExit):
        evaluate_main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "resized: LAVT's test.py, the prediction at the model's input size against the mask nearest-resized to it" in text
    assert "original: score at each image's own size" in text
