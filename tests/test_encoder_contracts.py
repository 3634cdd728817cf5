"""Encoders state their contract (channels, strides, pixel statistics, text widths), and
everything that normalises pictures reads the statistics from the built model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from reference_models import build_model, list_models
from reference_models.encoders import BertTextEncoder, ClipTextEncoder, ClipVisionEncoder, SwinEncoder, pixel_statistics

ROOT = Path(__file__).resolve().parents[1]

# Places that normalise pictures for a model (or show them un-normalised).
READERS = ["reference_models/training/data.py", "reference_models/training/pictures.py", "reference_models/evaluate.py", "reference_models/study/runner.py"]


def test_vision_encoders_state_the_channels_and_strides_they_produce():
    swin = SwinEncoder(64, embed_dim=8, depths=(1, 1, 1), num_heads=(1, 1, 2), window_size=4)
    maps = swin(torch.zeros(1, 3, 64, 64))
    assert swin.out_channels == tuple(m.shape[1] for m in maps) == (8, 16, 32)
    assert swin.strides == tuple(64 // m.shape[-1] for m in maps) == (4, 8, 16)

    clip = ClipVisionEncoder(32, width=16, layers=3, heads=2, patch_size=8, embed_dim=8)
    maps, _ = clip(torch.zeros(1, 3, 32, 32))
    assert clip.out_channels == tuple(m.shape[1] for m in maps) == (16, 16, 16)
    assert clip.strides == tuple(32 // m.shape[-1] for m in maps) == (8, 8, 8)


def test_text_encoders_state_their_word_and_sentence_widths():
    ids = torch.randint(1, 90, (2, 5))
    for encoder in (
        BertTextEncoder(24, num_layers=1, num_heads=2, intermediate=32, vocab_size=100),
        ClipTextEncoder(32, layers=1, heads=2, vocab_size=100, context_length=8, embed_dim=16),
    ):
        features = encoder(ids)
        assert (encoder.out_dim, encoder.sentence_dim) == (features.words.shape[-1], features.sentence.shape[-1])


@pytest.mark.parametrize("name", [n for n in list_models() if n.endswith("_tiny")])
def test_every_tiny_model_gives_its_vision_encoders_pixel_statistics(name):
    model = build_model(name)
    encoders = [m for m in model.modules() if isinstance(m, (SwinEncoder, ClipVisionEncoder))]
    assert encoders, name
    assert pixel_statistics(model) == (tuple(type(encoders[0]).pixel_mean), tuple(type(encoders[0]).pixel_std))
    expected_mean = 0.48145466 if isinstance(encoders[0], ClipVisionEncoder) else 0.485
    assert pixel_statistics(model)[0][0] == expected_mean


def test_a_model_without_a_vision_encoder_is_refused_in_one_line():
    with pytest.raises(ValueError, match=r"^model: no part of this Linear states its pixel_mean and pixel_std"):
        pixel_statistics(torch.nn.Linear(2, 2))


def test_readers_take_the_statistics_from_the_model_not_from_constants():
    # the numbers live in data.transforms (the datasets' defaults) and the encoders carry them
    for path in sorted((ROOT / "reference_models").rglob("*.py")):
        if path.parent.name not in ("data", "encoders"):
            text = path.read_text()
            assert not re.search(r"IMAGENET_(MEAN|STD)|CLIP_(MEAN|STD)|vision_encoder ==", text), path
    for path in READERS:
        assert "pixel_statistics" in (ROOT / path).read_text() or "pixel_stats" in (ROOT / path).read_text(), path


def test_training_data_is_normalised_with_what_the_encoder_states(monkeypatch):
    from reference_models.training import TrainConfig
    from reference_models.training.data import build_datasets

    model = build_model("lavt_tiny")
    # the identity normalisation: the samples hold the raw pixels, in [0, 1]
    monkeypatch.setattr(SwinEncoder, "pixel_mean", (0.0, 0.0, 0.0))
    monkeypatch.setattr(SwinEncoder, "pixel_std", (1.0, 1.0, 1.0))
    train_set, _ = build_datasets(TrainConfig(train_size=2, val_size=2).resolved(), model)
    image = train_set[0]["image"]
    assert image.min() >= 0 and image.max() <= 1 and image.max() > 0.5


def test_both_clip_towers_are_built_by_one_function(monkeypatch):
    from reference_models.encoders import clip

    built = []
    original = clip._open_clip_tower
    monkeypatch.setattr(clip, "_open_clip_tower", lambda part, *a, **k: built.append(part) or original(part, *a, **k))
    vision = ClipVisionEncoder(32, width=16, layers=1, heads=2, patch_size=8, embed_dim=8)
    text = ClipTextEncoder(32, layers=1, heads=2, vocab_size=100, context_length=8, embed_dim=16)
    assert built == ["vision", "text"]
    # open_clip's own module names: checkpoints written before load unchanged
    assert {"visual.conv1.weight", "visual.class_embedding"} <= set(vision.state_dict())
    assert {"text.token_embedding.weight", "text.text_projection"} <= set(text.state_dict())
