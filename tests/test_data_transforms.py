"""Resize, letterbox (and its inverse) and normalisation on Pillow and torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from reference_models.data.transforms import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    ContentBox,
    content_box,
    denormalize,
    normalize,
    resize_image,
    resize_mask,
    to_original_size,
)


@given(height=st.integers(1, 300), width=st.integers(1, 300), size=st.integers(1, 96))
def test_letterbox_box_keeps_aspect_and_centres(height, width, size):
    box = content_box(height, width, size, mode="letterbox")
    assert max(box.height, box.width) == size
    assert 1 <= min(box.height, box.width) <= size
    assert abs(box.height / box.width - height / width) <= (height / width) * (1 / min(box.height, box.width)) + 1e-9
    assert box.top == (size - box.height) // 2 and box.left == (size - box.width) // 2


def test_square_box_is_whole_input():
    assert content_box(30, 70, 48) == ContentBox(0, 0, 48, 48)


def test_letterbox_pads_with_the_mean_and_places_content():
    image = Image.new("RGB", (60, 30), (200, 10, 10))
    out, box = resize_image(image, 40, mode="letterbox")
    pixels = np.asarray(out)
    assert box == ContentBox(10, 0, 20, 40)
    fill = tuple(round(255 * m) for m in IMAGENET_MEAN)
    assert (pixels[:10] == fill).all() and (pixels[30:] == fill).all()
    assert (pixels[10:30] == (200, 10, 10)).all()
    # Padding normalises to zero.
    assert normalize(out)[:, :10].abs().max() < 0.01


def test_mask_letterbox_matches_image_box():
    mask = np.ones((30, 60), dtype=bool)
    out = resize_mask(mask, 40, mode="letterbox")
    assert out.dtype == bool and out.shape == (40, 40)
    assert out[10:30].all() and not out[:10].any() and not out[30:].any()


def test_resize_to_same_size_is_identity():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    out, box = resize_image(Image.fromarray(pixels), 32)
    assert np.array_equal(np.asarray(out), pixels) and box == ContentBox(0, 0, 32, 32)
    mask = rng.random((32, 32)) < 0.5
    assert np.array_equal(resize_mask(mask, 32), mask)


@pytest.mark.parametrize("mode", ["square", "letterbox"])
def test_inverse_recovers_a_mask_at_original_size(mode):
    # Upsampling by integer factors makes nearest-neighbour resizing exactly invertible.
    original = np.random.default_rng(1).random((24, 48)) < 0.5
    size = 48  # square: rows x2, columns x1; letterbox: scale 1 with 12 rows of padding
    resized = resize_mask(original, size, mode=mode)
    box = content_box(*original.shape, size, mode=mode)
    back = to_original_size(torch.from_numpy(resized), box, original.shape, interpolation="nearest")
    assert back.dtype == torch.bool and back.shape == original.shape
    assert torch.equal(back, torch.from_numpy(original))


def test_inverse_of_logits_is_bilinear_and_keeps_dtype():
    logits = torch.randn(2, 1, 32, 32)
    out = to_original_size(logits, torch.tensor([8, 0, 16, 32]), torch.tensor([20, 40]))
    assert out.shape == (2, 1, 20, 40) and out.dtype == torch.float32
    # A constant inside the content box stays constant after the inverse.
    flat = torch.zeros(1, 32, 32)
    flat[:, 8:24] = 3.0
    assert torch.allclose(to_original_size(flat, (8, 0, 16, 32), (20, 40)), torch.full((1, 20, 40), 3.0))


def test_inverse_rejects_a_box_outside_the_prediction():
    with pytest.raises(ValueError, match="box"):
        to_original_size(torch.zeros(8, 8), (4, 0, 8, 8), (10, 10))


@pytest.mark.parametrize(("mean", "std"), [(IMAGENET_MEAN, (0.229, 0.224, 0.225)), (CLIP_MEAN, CLIP_STD)])
def test_normalize_round_trip(mean, std):
    pixels = np.random.default_rng(2).integers(0, 256, size=(5, 6, 3), dtype=np.uint8)
    tensor = normalize(Image.fromarray(pixels), mean, std)
    assert tensor.shape == (3, 5, 6) and tensor.dtype == torch.float32
    expected = (pixels[0, 0] / 255.0 - np.array(mean)) / np.array(std)
    assert np.allclose(tensor[:, 0, 0].numpy(), expected, atol=1e-5)
    assert torch.equal(denormalize(tensor, mean, std).permute(1, 2, 0), torch.from_numpy(pixels))


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="mode"):
        content_box(10, 10, 8, mode="crop")
    with pytest.raises(ValueError, match="image"):
        normalize(np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="mask"):
        resize_mask(np.zeros((2, 2, 2), dtype=bool), 4)
