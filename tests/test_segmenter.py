"""``reference_models.Segmenter``, and ``predict`` built on it.

The models are untrained ``lavt_tiny`` saved as a training run (the project's own
checkpoint writer, as ``test_cli_eval_predict`` does) and as a ``save_pretrained`` folder:
what is tested is which file is read, how pictures come in and masks go out, and what a user
is told, not accuracy.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from test_cli_eval_predict import _save_run

from reference_models import Segmenter, build_model
from reference_models.checkpoint import CheckpointError
from reference_models.data.readable import UnreadableTextWarning
from reference_models.segmenter import as_picture, resolve_pretrained_path
from reference_models.train import TrainConfig


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("lavt_tiny")


@pytest.fixture(scope="module")
def segmenter(model):
    return Segmenter(model, device="cpu")


@pytest.fixture
def picture() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))


def _perturbed(model, scale: float = 0.05):
    """A copy of ``model`` with other weights: tells two checkpoints apart by their output."""
    other = build_model("lavt_tiny")
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        for parameter in other.parameters():
            parameter.add_(scale * torch.randn_like(parameter))
    return other


# -- paths -------------------------------------------------------------------------------------


def test_the_three_kinds_of_path_load_the_same_model(tmp_path, model, segmenter, picture):
    run = _save_run(tmp_path / "run", model, TrainConfig())
    folder = model.save_pretrained(tmp_path / "pretrained")
    expected = segmenter(picture, "the red circle").probability
    for path in (run, run / "best.pt", run / "last.pt", folder, str(folder)):
        loaded = Segmenter.from_pretrained(path, device="cpu")
        torch.testing.assert_close(loaded(picture, "the red circle").probability, expected, msg=str(path))


def test_a_run_folder_stands_for_its_best_checkpoint_else_its_last(tmp_path, model, segmenter, picture):
    run = _save_run(tmp_path / "run", model, TrainConfig(), names=("best.pt",))
    _save_run(run, _perturbed(model), TrainConfig(), names=("last.pt",))
    assert resolve_pretrained_path(run) == run / "best.pt"
    best = segmenter(picture, "the red circle").probability
    assert torch.equal(Segmenter.from_pretrained(run, device="cpu")(picture, "the red circle").probability, best)
    (run / "best.pt").unlink()
    assert resolve_pretrained_path(run) == run / "last.pt"
    assert not torch.equal(Segmenter.from_pretrained(run, device="cpu")(picture, "the red circle").probability, best)


def test_paths_that_hold_no_model_are_named(tmp_path, model):
    with pytest.raises(FileNotFoundError, match=r"^path: .*missing not found; expected a save_pretrained folder"):
        resolve_pretrained_path(tmp_path / "missing")
    folder = model.save_pretrained(tmp_path / "pretrained")
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"^path: .*pretrained has a config.json but no model.safetensors"):
        Segmenter.from_pretrained(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="found neither"):
        Segmenter.from_pretrained(tmp_path / "empty")


def test_a_damaged_checkpoint_is_refused_as_evaluate_refuses_it(tmp_path, model):
    best = _save_run(tmp_path / "run", model, TrainConfig(), names=("best.pt",)) / "best.pt"
    data = bytearray(best.read_bytes())
    data[len(data) // 2] ^= 0x10  # tensors lie uncompressed in the middle of the zip
    best.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt checkpoint"):
        Segmenter.from_pretrained(best, device="cpu")


def test_device_and_dtype_are_checked(model):
    with pytest.raises(ValueError, match=r"^device: expected 'cpu', 'cuda', 'cuda:N' or 'mps'; got 'gpu'"):
        Segmenter(model, device="gpu")
    with pytest.raises(ValueError, match=r"^dtype: expected torch.float32, torch.float16 or torch.bfloat16; got torch.int64"):
        Segmenter(model, device="cpu", dtype=torch.int64)


def test_bfloat16_returns_float32_probabilities_close_to_float32(picture):
    torch.manual_seed(0)
    full = Segmenter(build_model("lavt_tiny"), device="cpu")(picture, "the red circle")
    torch.manual_seed(0)
    half = Segmenter(build_model("lavt_tiny"), device="cpu", dtype=torch.bfloat16)(picture, "the red circle")
    assert half.probability.dtype == torch.float32
    assert (half.probability - full.probability).abs().max() < 0.05


# -- pictures in, masks out --------------------------------------------------------------------


def test_every_picture_type_gives_the_same_result_at_the_pictures_size(tmp_path, segmenter, picture):
    array = np.array(picture)  # a writable copy: torch.from_numpy warns on read-only arrays
    path = tmp_path / "p.png"
    picture.save(path)
    chw = torch.from_numpy(array).permute(2, 0, 1)
    expected = segmenter(picture, "the red circle")
    assert expected.mask.shape == (30, 40) and expected.mask.dtype == torch.bool
    assert expected.probability.shape == (30, 40) and expected.probability.dtype == torch.float32
    for image in (array, path, str(path), chw, chw.float() / 255, picture.convert("RGBA")):
        torch.testing.assert_close(segmenter(image, "the red circle").probability, expected.probability)


def test_a_path_is_read_upright_as_its_exif_orientation_says(tmp_path, segmenter, picture):
    exif = Image.Exif()
    exif[0x0112] = 6  # turn 90 degrees clockwise to show
    path = tmp_path / "turned.jpg"
    picture.save(path, exif=exif.tobytes(), quality=95)
    from_path = segmenter(path, "the red circle")
    assert from_path.mask.shape == (40, 30)
    upright = Image.open(path).transpose(Image.Transpose.ROTATE_270)
    torch.testing.assert_close(from_path.probability, segmenter(upright, "the red circle").probability)
    # a PIL image is taken as its pixels are stored: the mask lies on those pixels
    assert segmenter(Image.open(path), "the red circle").mask.shape == (30, 40)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((30, 40, 3), np.float32), r"^image: expected an \(h, w, 3\) uint8 RGB array; got float32 of shape \(30, 40, 3\)"),
        (np.zeros((30, 40), np.uint8), r"^image: expected an \(h, w, 3\) uint8 RGB array"),
        (torch.zeros(30, 40, 3, dtype=torch.uint8), r"^image: expected a \(3, h, w\) tensor \(channels first, RGB\); got shape \(30, 40, 3\)"),
        (torch.randn(3, 30, 40), r"^image: a floating tensor must hold values in \[0, 1\] \(not normalised\)"),
        (torch.zeros(3, 30, 40, dtype=torch.int32), r"^image: expected a uint8 or floating tensor; got torch.int32"),
        (42, r"^image: expected a PIL image, a path, an \(h, w, 3\) uint8 array or a \(3, h, w\) tensor; got int"),
    ],
)
def test_pictures_of_the_wrong_kind_are_one_line_errors(image, message):
    with pytest.raises(ValueError, match=message):
        as_picture(image)


def test_threshold_follows_evaluates_convention(segmenter, picture):
    result = segmenter(picture, "the red circle")
    assert torch.equal(result.mask, result.probability > 0.5)
    cut = float(result.probability.median())
    assert torch.equal(segmenter(picture, "the red circle", threshold=cut).mask, result.probability > cut)
    with pytest.raises(ValueError, match=r"^threshold: expected a probability strictly between 0 and 1; got 1.5"):
        segmenter(picture, "the red circle", threshold=1.5)


# -- lists and batches -------------------------------------------------------------------------


def test_lists_run_in_batches_with_the_results_of_single_calls(segmenter, capsys):
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (20 + 5 * i, 30, 3), dtype=np.uint8) for i in range(5)]
    texts = ["the red circle", "the blue square", "the big star", "the left box", "the top ball"]
    results = segmenter(images, texts, batch_size=2, progress=True)
    assert [r.mask.shape[0] for r in results] == [20, 25, 30, 35, 40]
    for image, text, result in zip(images, texts, results):
        torch.testing.assert_close(result.probability, segmenter(image, text).probability, atol=1e-5, rtol=1e-4)
    assert "segment" in capsys.readouterr().err  # the progress bar
    one_picture = segmenter(images[0], texts[:3])
    assert [r.tokens[2] for r in one_picture] == ["red", "blue", "big"]
    assert len(segmenter(images[:3], "the red circle")) == 3


def test_list_mistakes_name_the_argument(segmenter, picture):
    with pytest.raises(ValueError, match=r"^text: expected one sentence per image \(2\), or one sentence for all; got 3"):
        segmenter([picture, picture], ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"^text\[1\]: expected a non-empty sentence; got ' '"):
        segmenter(picture, ["the ball", " "])
    with pytest.raises(ValueError, match=r"^image\[1\]: expected a PIL image"):
        segmenter([picture, None], "the ball")
    with pytest.raises(ValueError, match=r"^batch_size: expected an int >= 1; got 0"):
        segmenter(picture, "the ball", batch_size=0)
    with pytest.raises(ValueError, match=r"^text: expected at least one; got an empty list"):
        segmenter(picture, [])


# -- sentences the model cannot read -----------------------------------------------------------


def test_segmenter_warns_about_words_it_cannot_read(segmenter, picture):
    with pytest.warns(UnreadableTextWarning, match=r"^text: the model cannot read 'crimson' \(outside its tokenizer's vocabulary"):
        result = segmenter(picture, "the crimson ball")
    assert result.unreadable == ["crimson"] and result.tokens == ["[CLS]", "the", "[UNK]", "ball", "[SEP]"]
    with pytest.warns(UnreadableTextWarning, match=r"^text\[1\]: '\?!' has no word the model can read"):
        segmenter(picture, ["the ball", "?!"])
    with pytest.warns(UnreadableTextWarning, match=r"^text is 34 tokens long \(special tokens included\); the model reads 20"):
        segmenter(picture, " ".join(["the red circle left of the blue square"] * 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert segmenter(picture, "the red ball").unreadable == []


# -- predict -----------------------------------------------------------------------------------


def test_predict_says_which_words_the_model_cannot_read(tmp_path, model, capsys):
    from reference_models.predict import main as predict_main

    run = _save_run(tmp_path / "run", model, TrainConfig(), names=("best.pt",))
    image = tmp_path / "photo.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(image)
    argv = ["--checkpoint", str(run), "--image", str(image), "--out", str(tmp_path / "o.png"), "--device", "cpu", "--overwrite"]
    assert predict_main([*argv, "--text", "the crimson ball"]) == 0
    err = capsys.readouterr().err
    assert "predict: warning: --text: the model cannot read 'crimson' (outside its tokenizer's vocabulary" in err
    assert predict_main([*argv, "--text", "\u200b\u200b"]) == 0
    assert "warning: --text: '\\u200b\\u200b' has no word the model can read" in capsys.readouterr().err
    assert predict_main([*argv, "--text", "the red ball"]) == 0
    assert "warning" not in capsys.readouterr().err
